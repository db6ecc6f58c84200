//! The data path: one [`Forwarder`] per lcore. Per packet: check the IPv4 header, drop
//! what must not be forwarded (counted by reason), look the destination up (unicast:
//! the LPM table; multicast: the [`MrouteTable`] by ingress interface and group),
//! decrement the TTL with an incremental checksum update (RFC 1624), and push the very
//! buffer it arrived in on the outgoing interface, to the next hop (unicast) or the
//! group (multicast) that interface's control plane resolves. IPv6 goes the same way
//! (`fwd6`): its own tables, the hop limit decremented, no header checksum to update.
//! No allocation, lock, system call or atomic read-modify-write per packet: the
//! counters are single-writer [`Counter`](ibpoll_dev::Counter)s and the table is read-only.

use std::sync::Arc;

use ibpoll::{App, Dest, GroupAddr, LcoreCtx, NhId, Tx, IFACES_MAX};
use ibpoll_mem::{Mbuf, MbufArray};

use crate::lpm::RouteTable;
use crate::mroute::MrouteTable;
use crate::mroute6::MrouteTable6;
use crate::route6::RouteTable6;

ibpoll_dev::counters! {
    /// One lcore's forwarding counters: one writer (the lcore), any number of live readers.
    ///
    /// Conservation: `rx == forwarded + tx_refused + malformed + ttl_expired +
    /// no_route + to_local + not_unicast + mcast_ttl_expired + mcast_no_route`; every packet
    /// counted in a drop reason is also in the stack's `app_dropped`, and `tx_refused` in
    /// the stack's `tx_buffer_full` / `tx_no_iface`. `mcast_forwarded` is the multicast
    /// part of `forwarded`.
    #[repr(C, align(64))]
    pub struct FwdCounters;
    /// A copy of forwarding counters (see [`FwdCounters`]); `+=` sums lcores, `drops()`
    /// lists every drop reason (`tx_refused` included) and `dropped()` sums them.
    pub struct FwdStats {
        /// IP packets handed to the forwarder.
        rx,
        /// Packets pushed on their outgoing interface.
        forwarded,
        /// Packets the stack's send buffer refused (full, or no such interface).
        tx_refused,
        /// IPv4 headers that fail RFC 1812's checks (length, IHL, total length), IPv6
        /// headers shorter than 40 bytes or whose payload length overruns the packet, and
        /// packets of another IP version.
        malformed,
        /// Packets whose TTL (IPv6: hop limit) was 0 or 1 (dropped; no ICMP Time
        /// Exceeded is sent).
        ttl_expired,
        /// Packets no route matched.
        no_route,
        /// Packets to one of the forwarder's own addresses (it has no local stack).
        to_local,
        /// Packets to the broadcast address, to 0.0.0.0/8, or (without multicast routes
        /// from their interface) to a multicast group: not forwarded. IPv6: also packets
        /// from or to a link-local address, from a multicast or the unspecified address,
        /// or to the unspecified or loopback address (RFC 4291 sections 2.5.2, 2.5.3,
        /// 2.5.6).
        not_unicast,
        /// Of `forwarded`, packets sent to a multicast group.
        mcast_forwarded,
        /// Multicast packets a route matched whose TTL was 0 or 1 (dropped).
        mcast_ttl_expired,
        /// Multicast packets no multicast route forwards from the interface they came in
        /// on (link-local 224.0.0.0/24 included: it is never forwarded). Counted here only
        /// when the interface has multicast routes; otherwise in `not_unicast`.
        mcast_no_route,
    }
    drops: [
        tx_refused,
        malformed,
        ttl_expired,
        no_route,
        to_local,
        not_unicast,
        mcast_ttl_expired,
        mcast_no_route,
    ]
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
#[inline(always)]
pub fn decrement_ttl(ip: &mut [u8]) {
    let Some(w) = ip.get_mut(8..12) else {
        return;
    };
    let old = u16::from_be_bytes([w[0], w[1]]);
    let new = old - 0x100;
    let hc = u16::from_be_bytes([w[2], w[3]]);
    w[0] -= 1;
    w[2..4].copy_from_slice(&checksum_adjust(hc, old, new).to_be_bytes());
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
    /// Send it on `iface` to the IPv4 multicast group `group` (the TTL is already
    /// decremented); the interface's control plane makes the send-only join.
    ForwardGroup {
        /// The outgoing interface.
        iface: usize,
        /// The group (the packet's destination).
        group: [u8; 4],
    },
    /// Send the IPv6 packet on `iface` to `next_hop` (the hop limit is already
    /// decremented; IPv6 has no header checksum).
    Forward6 {
        /// The outgoing interface.
        iface: usize,
        /// The address to resolve on it (neighbour discovery).
        next_hop: [u8; 16],
    },
    /// Send the IPv6 packet on `iface` to the multicast group `group` (the hop limit is
    /// already decremented).
    ForwardGroup6 {
        /// The outgoing interface.
        iface: usize,
        /// The group (the packet's destination).
        group: [u8; 16],
    },
    /// Drop it (already counted).
    Drop,
}

/// The forwarder of one lcore: an [`App`] for a multi-interface [`ibpoll::Stack`].
#[derive(Debug)]
pub struct Forwarder {
    table: Arc<RouteTable>,
    /// Multicast routes (empty: multicast is dropped as `not_unicast`).
    mroutes: Arc<MrouteTable>,
    /// Bit `i` set: interface `i` has multicast routes.
    mcast_ifaces: u64,
    /// The forwarder's own addresses (host order), one per interface with an address;
    /// the unused slots hold 0 (0.0.0.0, never forwarded).
    local: [u32; IFACES_MAX],
    counters: Arc<FwdCounters>,
    /// IPv6 routes (empty: every IPv6 packet is `no_route`).
    pub(crate) table6: Arc<RouteTable6>,
    /// The forwarder's own IPv6 addresses.
    pub(crate) local6: [[u8; 16]; IFACES_MAX],
    pub(crate) n_local6: usize,
    /// IPv6 multicast routes, and the interfaces that have some (bit `i`).
    pub(crate) mroutes6: Arc<MrouteTable6>,
    pub(crate) mcast6_ifaces: u64,
}

impl Forwarder {
    /// A forwarder routing by `table`; packets to one of `local` (its own addresses)
    /// are dropped and counted (`to_local`). Counters go to `counters` (one set per
    /// lcore: they are single-writer).
    pub fn new(table: Arc<RouteTable>, local: &[[u8; 4]], counters: Arc<FwdCounters>) -> Forwarder {
        let mut l = [0u32; IFACES_MAX];
        for (d, s) in l.iter_mut().zip(local) {
            *d = u32::from_be_bytes(*s);
        }
        Forwarder {
            table,
            mroutes: Arc::default(),
            mcast_ifaces: 0,
            local: l,
            counters,
            table6: Arc::default(),
            local6: [[0; 16]; IFACES_MAX],
            n_local6: 0,
            mroutes6: Arc::default(),
            mcast6_ifaces: 0,
        }
    }

    /// Forwards IPv6 too: unicast by `table6`; packets to one of `local6` (its own IPv6
    /// addresses) are dropped and counted (`to_local`).
    pub fn with_ipv6(mut self, table6: Arc<RouteTable6>, local6: &[[u8; 16]]) -> Forwarder {
        self.n_local6 = local6.len().min(IFACES_MAX);
        self.local6[..self.n_local6].copy_from_slice(&local6[..self.n_local6]);
        self.table6 = table6;
        self
    }

    /// Forwards IPv6 multicast by `mroutes6` (the groups must be subscribed to on their
    /// ingress interfaces, as [`start_on`](crate::start_on) does).
    pub fn with_mroutes6(mut self, mroutes6: Arc<MrouteTable6>) -> Forwarder {
        self.mcast6_ifaces = mroutes6
            .routes()
            .iter()
            .filter(|r| r.from < 64)
            .fold(0, |m, r| m | 1 << r.from);
        self.mroutes6 = mroutes6;
        self
    }

    /// Forwards multicast by `mroutes` too (the groups must be subscribed to on their
    /// ingress interfaces, as [`start_on`](crate::start_on) does).
    pub fn with_mroutes(mut self, mroutes: Arc<MrouteTable>) -> Forwarder {
        self.mcast_ifaces = mroutes
            .routes()
            .iter()
            .filter(|r| r.from < 64)
            .fold(0, |m, r| m | 1 << r.from);
        self.mroutes = mroutes;
        self
    }

    /// The live counters.
    pub fn counters(&self) -> &Arc<FwdCounters> {
        &self.counters
    }

    /// [`route_from`](Self::route_from) for a packet that came in on interface 0.
    #[inline]
    pub fn route(&self, ip: &mut [u8]) -> Verdict {
        self.route_from(0, ip)
    }

    /// Decides for one packet that came in on interface `from` and whose data starts at
    /// its IP header, rewriting the TTL and checksum in place when it is forwarded, and
    /// counts the outcome in the live counters (except `forwarded`/`mcast_forwarded`/
    /// `tx_refused`, which the caller counts after the push).
    pub fn route_from(&self, from: usize, ip: &mut [u8]) -> Verdict {
        let mut st = FwdStats::default();
        let v = self.route_counted(from, ip, &mut st);
        self.counters.publish(&mut st);
        v
    }

    /// [`route_from`](Self::route_from), counting into a per-burst tally `c` that the
    /// caller publishes once per burst.
    #[inline(always)]
    pub fn route_counted(&self, from: usize, ip: &mut [u8], c: &mut FwdStats) -> Verdict {
        c.rx += 1;
        // RFC 1812 5.2.2: length, version, IHL, total length.
        match ip.first().map(|b| b >> 4) {
            Some(6) => return self.route6(from, ip, c),
            Some(4) if ip.len() >= 20 => {}
            _ => {
                c.malformed += 1;
                return Verdict::Drop;
            }
        }
        let len = ip.len();
        // Cannot fail: at least 20 bytes, checked above.
        let Some(h) = ip.first_chunk_mut::<20>() else {
            c.malformed += 1;
            return Verdict::Drop;
        };
        let hlen = usize::from(h[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
        if hlen < 20 || total < hlen || total > len {
            c.malformed += 1;
            return Verdict::Drop;
        }
        let dst = [h[16], h[17], h[18], h[19]];
        let d = u32::from_be_bytes(dst);
        if d >> 28 == 0xe && from < 64 && self.mcast_ifaces & (1 << from) != 0 {
            return self.route_group(from, d, h, c);
        }
        if d >> 28 == 0xe || d == u32::MAX || d >> 24 == 0 {
            c.not_unicast += 1;
            return Verdict::Drop;
        }
        // Every slot, unused ones included: those hold 0.0.0.0, which `d` is not (0/8
        // is refused above); a fixed-length compare has no loop.
        if self.local.contains(&d) {
            c.to_local += 1;
            return Verdict::Drop;
        }
        if h[8] <= 1 {
            c.ttl_expired += 1;
            return Verdict::Drop;
        }
        let Some(hop) = self.table.lookup_u32(d) else {
            c.no_route += 1;
            return Verdict::Drop;
        };
        decrement_ttl(h);
        Verdict::Forward {
            iface: hop.iface,
            next_hop: hop.next_hop(dst),
        }
    }

    /// A multicast packet (header checked) to group `g` that came in on `from`.
    #[inline]
    fn route_group(&self, from: usize, g: u32, ip: &mut [u8], c: &mut FwdStats) -> Verdict {
        // Link-local groups (224.0.0.0/24) are never forwarded; the table refuses
        // routes for them, so a lookup misses.
        let Some(to) = self.mroutes.lookup_u32(from, g) else {
            c.mcast_no_route += 1;
            return Verdict::Drop;
        };
        // Never back out the interface it came in on (the table refuses such routes).
        debug_assert_ne!(to, from);
        if ip[8] <= 1 {
            c.mcast_ttl_expired += 1;
            return Verdict::Drop;
        }
        decrement_ttl(ip);
        Verdict::ForwardGroup {
            iface: to,
            group: g.to_be_bytes(),
        }
    }
}

impl App for Forwarder {
    #[inline]
    fn on_burst(&mut self, ctx: &LcoreCtx, rx: &mut MbufArray, tx: &mut Tx) {
        let mut st = FwdStats::default();
        // The last IPv4 next hop resolved in this burst: a burst's packets mostly share
        // one (interface, next hop), resolved once and pushed by id.
        let mut last: Option<(usize, [u8; 4], NhId)> = None;
        // In arrival order; the dropped ones stay for the stack to free in bulk (and
        // count as `app_dropped`).
        rx.filter_map_from(0, |mut m| {
            let (iface, dest, group) = match self.route_counted(ctx.iface, m.data_mut(), &mut st) {
                // The buffer it came in, zero copy: the stack rewrites the IPoIB header
                // in its headroom.
                Verdict::Forward { iface, next_hop } => {
                    st.count_push(0, push_v4(tx, &mut last, iface, next_hop, m));
                    return None;
                }
                // Zero copy as for unicast; the egress interface's control plane holds
                // the first packets while it makes the send-only join.
                Verdict::ForwardGroup { iface, group } => {
                    (iface, Dest::Group(GroupAddr::Ipv4(group)), 1)
                }
                Verdict::Forward6 { iface, next_hop } => (iface, Dest::NextHop6(next_hop), 0),
                Verdict::ForwardGroup6 { iface, group } => {
                    (iface, Dest::Group(GroupAddr::Ipv6(group)), 1)
                }
                Verdict::Drop => return Some(m),
            };
            st.count_push(group, tx.push(iface, m, dest));
            None
        });
        self.counters.publish(&mut st);
    }
}

impl FwdStats {
    /// Counts one push's outcome (`group`: 1 for a multicast packet).
    #[inline]
    fn count_push(&mut self, group: u64, queued: bool) {
        if queued {
            self.forwarded += 1;
            self.mcast_forwarded += group;
        } else {
            self.tx_refused += 1;
        }
    }
}

/// Pushes an IPv4 packet on `iface` to `next_hop` by next-hop id, resolving the id only
/// when `last` (this burst's last resolved next hop) is another one; as `tx.push` in
/// every case: a next hop the snapshot does not have (or no longer has) goes through
/// `tx.push`, which hands it to the control core.
#[inline]
fn push_v4(
    tx: &mut Tx,
    last: &mut Option<(usize, [u8; 4], NhId)>,
    iface: usize,
    next_hop: [u8; 4],
    m: Mbuf,
) -> bool {
    let id = match *last {
        Some((i, h, id)) if i == iface && h == next_hop => Some(id),
        _ => {
            let id = tx.resolve(iface, Dest::NextHop(next_hop));
            *last = id.map(|id| (iface, next_hop, id));
            id
        }
    };
    let Some(id) = id else {
        return tx.push(iface, m, Dest::NextHop(next_hop));
    };
    match tx.push_nh(iface, m, id) {
        Ok(queued) => queued,
        Err(m) => {
            *last = None;
            tx.push(iface, m, Dest::NextHop(next_hop))
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

    fn packet(dst: [u8; 4], ttl: u8) -> [u8; 28] {
        let mut p = [0u8; 28];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&28u16.to_be_bytes());
        p[8] = ttl;
        p[9] = 17;
        p[12..16].copy_from_slice(&[10, 1, 0, 2]);
        p[16..20].copy_from_slice(&dst);
        let sum = ipv4_checksum(&p[..20]);
        p[10..12].copy_from_slice(&sum.to_be_bytes());
        p
    }

    #[test]
    fn multicast_verdicts() {
        use crate::mroute::{MRoute, MrouteTable};
        let table = Arc::new(RouteTable::new(&[]).unwrap());
        let mt = MrouteTable::new(&[MRoute::new([239, 1, 0, 0], 24, 0, 1)], 2).unwrap();
        let c = Arc::new(FwdCounters::default());
        let f = Forwarder::new(table, &[], c.clone()).with_mroutes(Arc::new(mt));
        // Forwarded from 0 to 1, TTL decremented, checksum still right.
        let mut p = packet([239, 1, 0, 7], 64);
        assert_eq!(
            f.route_from(0, &mut p),
            Verdict::ForwardGroup {
                iface: 1,
                group: [239, 1, 0, 7]
            }
        );
        assert_eq!(p[8], 63);
        assert_eq!(u16::from_be_bytes([p[10], p[11]]), ipv4_checksum(&p[..20]));
        // TTL 1 and 0: dropped.
        for ttl in [0, 1] {
            assert_eq!(
                f.route_from(0, &mut packet([239, 1, 0, 7], ttl)),
                Verdict::Drop
            );
        }
        // TTL 2 leaves with 1.
        let mut p = packet([239, 1, 0, 7], 2);
        assert!(matches!(
            f.route_from(0, &mut p),
            Verdict::ForwardGroup { .. }
        ));
        assert_eq!(p[8], 1);
        // Not covered, link-local: no multicast route.
        assert_eq!(
            f.route_from(0, &mut packet([239, 2, 0, 1], 64)),
            Verdict::Drop
        );
        assert_eq!(
            f.route_from(0, &mut packet([224, 0, 0, 1], 64)),
            Verdict::Drop
        );
        // Interface 1 has no multicast routes (the group never goes back to 0 from it).
        assert_eq!(
            f.route_from(1, &mut packet([239, 1, 0, 7], 64)),
            Verdict::Drop
        );
        let s = c.read();
        assert_eq!(s.rx, 7);
        assert_eq!(s.mcast_ttl_expired, 2);
        assert_eq!(s.mcast_no_route, 2);
        assert_eq!(s.not_unicast, 1);
        assert_eq!(s.dropped(), 5);
    }
}
