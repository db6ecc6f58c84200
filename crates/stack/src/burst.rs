//! The per-packet steps of a data lcore's burst: [`classify`] a received packet and
//! [`Resolver::resolve`] a packet to send against one snapshot.
//!
//! The lcores run these; they are public so that benchmarks (bench/benches/datapath.rs)
//! and applications that drive queues from a loop of their own run the very same code.
//! Neither allocates, locks, makes a system call or does an atomic read-modify-write:
//! counting is single-writer [`Counter`](ibpoll_dev::Counter) load + store, and marking
//! a snapshot entry used is a plain store when it is already marked.

use ibpoll_ctrl::{GroupAddr, Request, RequestSender, Snapshot};
use ibpoll_dev::{AddressHandle, TxDesc};
use ibpoll_mem::Mbuf;
use ibpoll_wire::ipoib::{self, EtherType};
use ibpoll_wire::{QKey, Qpn};

use crate::app::Dest;
use crate::stats::LcoreCounters;

/// What a received packet is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// IPv4 (version 4, IHL >= 5, at least 20 bytes) or IPv6 (version 6, at least 40
    /// bytes): for the application, after stripping [`ipoib::HEADER_LEN`] bytes.
    Ip,
    /// ARP over IPoIB: for the control core.
    Arp,
    /// Too short for its IPoIB header, or an IP header that does not fit its ethertype.
    Malformed,
    /// An ethertype IPoIB does not carry here.
    Unknown,
}

/// Classifies a received packet by its IPoIB header (`d`: the data from the IPoIB
/// header on).
#[inline]
pub fn classify(d: &[u8]) -> Class {
    let Ok(h) = ipoib::Packet::new_checked(d) else {
        return Class::Malformed;
    };
    let ip = h.payload();
    match h.ethertype() {
        EtherType::IPV4 => {
            if ip.len() >= 20 && ip[0] >> 4 == 4 && ip[0] & 0x0f >= 5 {
                Class::Ip
            } else {
                Class::Malformed
            }
        }
        EtherType::IPV6 => {
            if ip.len() >= 40 && ip[0] >> 4 == 6 {
                Class::Ip
            } else {
                Class::Malformed
            }
        }
        EtherType::ARP => Class::Arp,
        _ => Class::Unknown,
    }
}

/// Slots of the per-burst table of resolved destinations (a power of two).
const RESOLVED_SLOTS: usize = 8;

/// A destination resolved against the burst's snapshot: where packets to it go. The
/// [`Resolver`] borrows the snapshot, so this cannot outlive the address handle.
#[derive(Clone, Copy)]
struct Resolved {
    dest: Dest,
    ah: AddressHandle,
    qpn: Qpn,
    qkey: QKey,
}

/// The slot of `dest` in the resolved table: a few address bytes, so that the next
/// hops and groups of one subnet spread.
#[inline]
fn resolved_slot(dest: &Dest) -> usize {
    let b = match dest {
        Dest::NextHop(ip) => ip[3] ^ ip[2].rotate_left(3),
        Dest::Group(GroupAddr::Ipv4(ip)) => ip[3] ^ ip[2].rotate_left(3) ^ 0x5,
        Dest::Group(GroupAddr::Mgid(g)) => g.0[15] ^ g.0[14].rotate_left(3) ^ 0x3,
    };
    usize::from(b) & (RESOLVED_SLOTS - 1)
}

/// Resolves the packets of one burst against one snapshot: each becomes a send
/// descriptor, a request to the control core (with its packet), or a counted drop.
///
/// It remembers the destinations it already found (a small direct-mapped table), so a
/// burst to a few destinations looks each up once, not once per packet. It borrows the
/// snapshot, so neither it nor what it found can outlive it; a descriptor it returns
/// must be handed to `tx_burst` before the next quiescent point (the address handle
/// lives as long as the snapshot that named it).
pub struct Resolver<'a> {
    snap: &'a Snapshot,
    requests: &'a mut RequestSender,
    c: &'a LcoreCounters,
    resolved: [Option<Resolved>; RESOLVED_SLOTS],
}

impl std::fmt::Debug for Resolver<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("generation", &self.snap.generation)
            .field(
                "resolved",
                &self
                    .resolved
                    .iter()
                    .flatten()
                    .map(|r| r.dest)
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl<'a> Resolver<'a> {
    /// A resolver for one burst: misses go to the control core through `requests`,
    /// drops and hand-overs are counted in `counters`.
    #[inline]
    pub fn new(
        snap: &'a Snapshot,
        requests: &'a mut RequestSender,
        counters: &'a LcoreCounters,
    ) -> Resolver<'a> {
        Resolver {
            snap,
            requests,
            c: counters,
            resolved: [None; RESOLVED_SLOTS],
        }
    }

    /// Resolves one packet whose data starts at its IP header: prepends the IPoIB
    /// header in the headroom and returns its send descriptor, or hands it to the
    /// control core (a neighbour or group not in the snapshot: `to_ctrl_resolve`,
    /// `to_ctrl_mcast`, or `tx_ctrl_full` when the ring is full) or drops it
    /// (`tx_link_down`, `tx_malformed`, `tx_too_long`), counted, and returns `None`.
    #[inline]
    pub fn resolve(&mut self, mut m: Mbuf, dest: Dest) -> Option<TxDesc> {
        let c = self.c;
        let snap = self.snap;
        if !snap.link_up {
            c.tx_link_down.inc();
            return None;
        }
        let ethertype = match m.data().first().map(|b| b >> 4) {
            Some(4) => EtherType::IPV4,
            Some(6) => EtherType::IPV6,
            _ => {
                c.tx_malformed.inc();
                return None;
            }
        };
        if m.len() > snap.mtu {
            c.tx_too_long.inc();
            return None;
        }
        let Some(h) = m.prepend(ipoib::HEADER_LEN) else {
            c.tx_malformed.inc();
            return None;
        };
        ipoib::Repr { ethertype }.emit(&mut ipoib::Packet::new_unchecked(h));
        let slot = resolved_slot(&dest);
        if let Some(r) = &self.resolved[slot] {
            if r.dest == dest {
                return Some(desc(m, r));
            }
        }
        let (group, next_hop) = match dest {
            Dest::Group(g) => (Some(g), [0; 4]),
            Dest::NextHop([255, 255, 255, 255]) => {
                let Some(b) = &snap.broadcast else {
                    c.tx_link_down.inc();
                    return None;
                };
                let r = Resolved {
                    dest,
                    ah: b.ah(),
                    qpn: Qpn::MULTICAST,
                    qkey: b.qkey,
                };
                return Some(desc(m, &r));
            }
            Dest::NextHop(ip) if ip[0] & 0xf0 == 0xe0 => (Some(GroupAddr::Ipv4(ip)), [0; 4]),
            Dest::NextHop(ip) => (None, ip),
        };
        // Found: marked used once per burst (the control core looks at the mark once per
        // second, to age send-only groups and neighbours).
        let r = if let Some(g) = group {
            let mgid = match g {
                GroupAddr::Mgid(mgid) => mgid,
                GroupAddr::Ipv4(ip) => snap.ipv4_mgid(ip),
            };
            let Some(e) = snap.group(&mgid) else {
                match self.requests.send(Request::Mcast { group: g, mbuf: m }) {
                    Ok(()) => c.to_ctrl_mcast.inc(),
                    Err(_req) => c.tx_ctrl_full.inc(),
                }
                return None;
            };
            e.mark_used();
            Resolved {
                dest,
                ah: e.ah(),
                qpn: Qpn::MULTICAST,
                qkey: e.qkey,
            }
        } else {
            let Some(n) = snap.neighbour(&next_hop) else {
                match self.requests.send(Request::Resolve { next_hop, mbuf: m }) {
                    Ok(()) => c.to_ctrl_resolve.inc(),
                    Err(_req) => c.tx_ctrl_full.inc(),
                }
                return None;
            };
            n.mark_used();
            Resolved {
                dest,
                ah: n.ah(),
                qpn: n.qpn(),
                qkey: n.qkey,
            }
        };
        self.resolved[slot] = Some(r);
        Some(desc(m, &r))
    }
}

#[inline]
fn desc(m: Mbuf, r: &Resolved) -> TxDesc {
    TxDesc {
        mbuf: Some(m),
        ah: r.ah,
        remote_qpn: r.qpn,
        remote_qkey: r.qkey,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolved_slots_spread_a_subnets_next_hops_and_groups() {
        // One next hop and four groups (pktgen's direct traffic) take five slots.
        let mut dests = vec![Dest::NextHop([10, 0, 0, 2])];
        dests.extend((1..=4).map(|i| Dest::Group(GroupAddr::Ipv4([239, 1, 0, i]))));
        let mut slots: Vec<usize> = dests.iter().map(resolved_slot).collect();
        slots.sort_unstable();
        slots.dedup();
        assert_eq!(slots.len(), dests.len(), "{slots:?}");
        // Consecutive next hops fill the table.
        let mut slots: Vec<usize> = (1..=RESOLVED_SLOTS as u8)
            .map(|i| resolved_slot(&Dest::NextHop([10, 0, 0, i])))
            .collect();
        slots.sort_unstable();
        slots.dedup();
        assert_eq!(slots.len(), RESOLVED_SLOTS);
    }

    #[test]
    fn classify_by_ethertype_and_version() {
        let mut v4 = [0u8; 24];
        v4[..2].copy_from_slice(&[0x08, 0x00]);
        v4[4] = 0x45;
        assert_eq!(classify(&v4), Class::Ip);
        v4[4] = 0x65;
        assert_eq!(classify(&v4), Class::Malformed);
        assert_eq!(classify(&v4[..10]), Class::Malformed);
        assert_eq!(classify(&[0x08]), Class::Malformed);
        let mut v6 = [0u8; 44];
        v6[..2].copy_from_slice(&[0x86, 0xdd]);
        v6[4] = 0x60;
        assert_eq!(classify(&v6), Class::Ip);
        assert_eq!(classify(&[0x08, 0x06, 0, 0]), Class::Arp);
        assert_eq!(classify(&[0x88, 0xcc, 0, 0]), Class::Unknown);
    }
}
