//! The data path: one [`Forwarder`] per lcore. Per packet: check the IPv4 header, drop
//! what must not be forwarded (counted by reason), look the destination up, decrement
//! the TTL with an incremental checksum update (RFC 1624), and push the very buffer it
//! arrived in on the outgoing interface, to the next hop the control plane resolves.
//! No allocation, lock, system call or atomic read-modify-write per packet: the
//! counters are single-writer [`Counter`]s and the table is read-only.

use std::sync::Arc;

use ibpoll::{App, Dest, LcoreCtx, TxBuffer, IFACES_MAX};
use ibpoll_dev::Counter;
use ibpoll_mem::Mbuf;

use crate::lpm::RouteTable;

/// One lcore's forwarding counters: one writer (the lcore), any number of live readers.
///
/// Conservation: `rx == forwarded + tx_refused + not_ipv4 + malformed + ttl_expired +
/// no_route + to_local + not_unicast`; every packet counted in a drop reason is also in
/// the stack's `app_dropped`, and `tx_refused` in the stack's `tx_buffer_full` /
/// `tx_no_iface`.
#[derive(Debug, Default)]
#[repr(C, align(64))]
pub struct FwdCounters {
    /// IP packets handed to the forwarder.
    pub rx: Counter,
    /// Packets pushed on their outgoing interface.
    pub forwarded: Counter,
    /// Packets the stack's send buffer refused (full, or no such interface).
    pub tx_refused: Counter,
    /// IPv6 packets (not forwarded).
    pub not_ipv4: Counter,
    /// IPv4 headers that fail RFC 1812's checks (length, IHL, total length).
    pub malformed: Counter,
    /// Packets whose TTL was 0 or 1 (dropped; no ICMP Time Exceeded is sent).
    pub ttl_expired: Counter,
    /// Packets no route matched.
    pub no_route: Counter,
    /// Packets to one of the forwarder's own addresses (it has no local stack).
    pub to_local: Counter,
    /// Packets to a multicast, broadcast or zero address (not forwarded).
    pub not_unicast: Counter,
}

impl FwdCounters {
    /// A copy of the counters.
    pub fn read(&self) -> FwdStats {
        FwdStats {
            rx: self.rx.get(),
            forwarded: self.forwarded.get(),
            tx_refused: self.tx_refused.get(),
            not_ipv4: self.not_ipv4.get(),
            malformed: self.malformed.get(),
            ttl_expired: self.ttl_expired.get(),
            no_route: self.no_route.get(),
            to_local: self.to_local.get(),
            not_unicast: self.not_unicast.get(),
        }
    }
}

/// A copy of forwarding counters (see [`FwdCounters`] for each field); `+=` sums lcores.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct FwdStats {
    pub rx: u64,
    pub forwarded: u64,
    pub tx_refused: u64,
    pub not_ipv4: u64,
    pub malformed: u64,
    pub ttl_expired: u64,
    pub no_route: u64,
    pub to_local: u64,
    pub not_unicast: u64,
}

impl FwdStats {
    /// Packets the forwarder dropped, every reason summed (`tx_refused` included).
    pub fn dropped(&self) -> u64 {
        self.tx_refused
            + self.not_ipv4
            + self.malformed
            + self.ttl_expired
            + self.no_route
            + self.to_local
            + self.not_unicast
    }

    /// Every drop reason with its count, in a fixed order.
    pub fn drops(&self) -> [(&'static str, u64); 7] {
        [
            ("tx_refused", self.tx_refused),
            ("not_ipv4", self.not_ipv4),
            ("malformed", self.malformed),
            ("ttl_expired", self.ttl_expired),
            ("no_route", self.no_route),
            ("to_local", self.to_local),
            ("not_unicast", self.not_unicast),
        ]
    }
}

impl std::ops::AddAssign for FwdStats {
    fn add_assign(&mut self, o: FwdStats) {
        self.rx += o.rx;
        self.forwarded += o.forwarded;
        self.tx_refused += o.tx_refused;
        self.not_ipv4 += o.not_ipv4;
        self.malformed += o.malformed;
        self.ttl_expired += o.ttl_expired;
        self.no_route += o.no_route;
        self.to_local += o.to_local;
        self.not_unicast += o.not_unicast;
    }
}

/// RFC 1624 (eqn. 3): the Internet checksum `hc` after one 16-bit word of the summed
/// data changed from `old` to `new`: `HC' = ~(~HC + ~m + m')`, in one's complement.
#[inline]
pub fn checksum_adjust(hc: u16, old: u16, new: u16) -> u16 {
    let mut sum = u32::from(!hc) + u32::from(!old) + u32::from(new);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// The Internet checksum of an IPv4 header, computed in full (the checksum field,
/// bytes 10..12, counts as zero). `header` is the header only (IHL * 4 bytes).
pub fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum = 0u32;
    for (i, w) in header.chunks(2).enumerate() {
        if i == 5 {
            continue;
        }
        let hi = u32::from(w[0]) << 8;
        sum += hi | w.get(1).map_or(0, |&b| u32::from(b));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Decrements the TTL of the IPv4 header at the start of `ip` (at least 20 bytes) and
/// updates its checksum incrementally (RFC 1624); the TTL must be at least 1.
#[inline]
pub fn decrement_ttl(ip: &mut [u8]) {
    let old = u16::from_be_bytes([ip[8], ip[9]]);
    ip[8] -= 1;
    let new = u16::from_be_bytes([ip[8], ip[9]]);
    let hc = u16::from_be_bytes([ip[10], ip[11]]);
    ip[10..12].copy_from_slice(&checksum_adjust(hc, old, new).to_be_bytes());
}

/// What the forwarder decided for one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send it on `iface` to `next_hop` (the TTL is already decremented).
    Forward {
        /// The outgoing interface.
        iface: usize,
        /// The address to resolve on it.
        next_hop: [u8; 4],
    },
    /// Drop it (already counted).
    Drop,
}

/// The forwarder of one lcore: an [`App`] for a multi-interface [`ibpoll::Stack`].
#[derive(Debug)]
pub struct Forwarder {
    table: Arc<RouteTable>,
    /// The forwarder's own addresses (host order), one per interface with an address.
    local: [u32; IFACES_MAX],
    n_local: usize,
    counters: Arc<FwdCounters>,
}

impl Forwarder {
    /// A forwarder routing by `table`; packets to one of `local` (its own addresses)
    /// are dropped and counted (`to_local`). Counters go to `counters` (one set per
    /// lcore: they are single-writer).
    pub fn new(table: Arc<RouteTable>, local: &[[u8; 4]], counters: Arc<FwdCounters>) -> Forwarder {
        let mut l = [0u32; IFACES_MAX];
        let n_local = local.len().min(IFACES_MAX);
        for (d, s) in l.iter_mut().zip(local) {
            *d = u32::from_be_bytes(*s);
        }
        Forwarder {
            table,
            local: l,
            n_local,
            counters,
        }
    }

    /// The live counters.
    pub fn counters(&self) -> &Arc<FwdCounters> {
        &self.counters
    }

    /// Decides for one packet whose data starts at its IP header, rewriting the TTL and
    /// checksum in place when it is forwarded, and counts the outcome (except
    /// `forwarded`/`tx_refused`, which the caller counts after the push).
    #[inline]
    pub fn route(&self, ip: &mut [u8]) -> Verdict {
        let c = &*self.counters;
        c.rx.inc();
        // RFC 1812 5.2.2: length, version, IHL, total length.
        if ip.len() < 20 {
            c.malformed.inc();
            return Verdict::Drop;
        }
        match ip[0] >> 4 {
            4 => {}
            6 => {
                c.not_ipv4.inc();
                return Verdict::Drop;
            }
            _ => {
                c.malformed.inc();
                return Verdict::Drop;
            }
        }
        let hlen = usize::from(ip[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        if hlen < 20 || total < hlen || total > ip.len() {
            c.malformed.inc();
            return Verdict::Drop;
        }
        let dst = [ip[16], ip[17], ip[18], ip[19]];
        let d = u32::from_be_bytes(dst);
        if d >> 28 == 0xe || d == u32::MAX || d >> 24 == 0 {
            c.not_unicast.inc();
            return Verdict::Drop;
        }
        if self.local[..self.n_local].contains(&d) {
            c.to_local.inc();
            return Verdict::Drop;
        }
        if ip[8] <= 1 {
            c.ttl_expired.inc();
            return Verdict::Drop;
        }
        let Some(hop) = self.table.lookup_u32(d) else {
            c.no_route.inc();
            return Verdict::Drop;
        };
        decrement_ttl(ip);
        Verdict::Forward {
            iface: hop.iface,
            next_hop: hop.next_hop(dst),
        }
    }
}

impl App for Forwarder {
    #[inline]
    fn on_burst(&mut self, _ctx: &LcoreCtx, rx: &mut [Option<Mbuf>], tx: &mut TxBuffer) {
        for slot in rx {
            let Some(m) = slot else { continue };
            match self.route(m.data_mut()) {
                Verdict::Forward { iface, next_hop } => {
                    let Some(m) = slot.take() else { continue };
                    // The buffer it came in, zero copy: the stack rewrites the IPoIB
                    // header in its headroom.
                    if tx.push_on(iface, m, Dest::NextHop(next_hop)) {
                        self.counters.forwarded.inc();
                    } else {
                        self.counters.tx_refused.inc();
                    }
                }
                // Left in its slot: the stack frees it and counts `app_dropped`.
                Verdict::Drop => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1624_example() {
        // RFC 1624 section 4: HC = 0xDD2F, m = 0x5555 -> m' = 0x3285 gives 0x0000.
        assert_eq!(checksum_adjust(0xdd2f, 0x5555, 0x3285), 0x0000);
    }
}
