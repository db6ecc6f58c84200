//! IPv6 neighbour discovery over IPoIB (RFC 4861 sections 7.2.2 to 7.2.5; RFC 4391
//! section 9.1: the 20-byte link-layer address in a 24-byte option): what ARP is to
//! IPv4, with the same neighbour table behind it (`neigh`).
//!
//! * An interface with an IPv6 address is a full member of the all-nodes group
//!   (`ff02::1`) and of its address's solicited-node group (`ff02::1:ffXX:XXXX`), both
//!   mapped to MGIDs with the IPv6 signature 0x601B; they are joined after the
//!   broadcast group like any subscription, and `leave_group` does not remove them.
//! * A packet for an unresolved IPv6 next hop waits in the neighbour's queue (at most
//!   `neigh_queue_max`, as for IPv4) while a Neighbor Solicitation goes to the target's
//!   solicited-node group, from our address, with our link-layer address; up to
//!   `arp_tries` of them, `arp_interval` apart. The group is sent to as any other: a
//!   send-only join on the first packet (DESIGN rule 4), removed when unused.
//! * A solicitation for our address is answered by a unicast Neighbor Advertisement
//!   (Solicited and Override set) with our link-layer address, sent once the path to
//!   the solicitor is resolved; the solicitor is learnt as a neighbour on the way (RFC
//!   4861 section 7.2.3). One from `::` (another node's duplicate address detection for
//!   our address) is answered to the all-nodes group (section 7.2.4).
//! * An advertisement for a neighbour in the table gives its hardware address; then a
//!   PathRecord query and an address handle, as for ARP. Advertisements for unknown
//!   targets are ignored (section 7.2.5).
//!
//! Every packet is checked as RFC 4861 section 7.1 says (hop limit 255, checksum, code,
//! lengths, options) before anything is learnt from it; a bad one is a counted drop.
//! Not implemented: our own duplicate address detection, unsolicited advertisements on
//! link up, router discovery and redirects, and neighbour unreachability detection
//! beyond the table's ageing.

use std::net::IpAddr;

use ibpoll_dev::Nanos;
use ibpoll_mem::Mbuf;
use ibpoll_wire::ipoib::{self, HwAddr};
use ibpoll_wire::ndisc::{self, NeighborFlags};
use ibpoll_wire::{ipv6, Gid};

use crate::controller::Controller;
use crate::mgid::McastMap;
use crate::ring::GroupAddr;
use crate::CtrlConfig;

/// The MGIDs of the groups an interface with an IPv6 address is a full member of: the
/// all-nodes group and its solicited-node group (none without an address).
pub(crate) fn own_groups(cfg: &CtrlConfig, map: McastMap) -> impl Iterator<Item = Gid> {
    cfg.ipv6
        .into_iter()
        .flat_map(move |a| [ipv6::ALL_NODES, ipv6::solicited_node(&a)].map(|g| map.ipv6(g)))
}

/// A neighbour-discovery packet that passed the checks of RFC 4861 section 7.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NdPacket {
    /// The IPv6 source.
    pub(crate) src: [u8; 16],
    /// The IPv6 destination.
    pub(crate) dst: [u8; 16],
    /// The message.
    pub(crate) repr: ndisc::Repr,
}

/// Parses an IPoIB packet as a Neighbor Solicitation or Advertisement: IPv6 ethertype,
/// an IPv6 header whose next header is ICMPv6 (no extension header) and whose hop limit
/// is 255, then the message (see [`ndisc::Repr::parse`]). `None` when anything is wrong.
pub(crate) fn parse_nd(data: &[u8]) -> Option<NdPacket> {
    let hdr = ipoib::Packet::new_checked(data).ok()?;
    if hdr.ethertype() != ipoib::EtherType::IPV6 {
        return None;
    }
    let ip = ipv6::Packet::new_checked(hdr.payload()).ok()?;
    let r = ipv6::Repr::parse(&ip).ok()?;
    if r.next_header != ipv6::NEXT_HEADER_ICMPV6 || r.hop_limit != ndisc::HOP_LIMIT {
        return None;
    }
    let msg = ndisc::Packet::new_checked(ip.payload()).ok()?;
    let repr = ndisc::Repr::parse(&r.src_addr, &r.dst_addr, &msg).ok()?;
    Some(NdPacket {
        src: r.src_addr,
        dst: r.dst_addr,
        repr,
    })
}

impl Controller {
    /// A packet for an IPv6 next hop the data core had no neighbour for.
    pub(crate) fn resolve6_request(&mut self, ip: [u8; 16], mbuf: Mbuf, now: Nanos) {
        if ipv6::is_multicast(&ip) {
            self.mcast_request(GroupAddr::Ipv6(ip), mbuf, now);
            return;
        }
        if self.cfg.ipv6.is_none() {
            // No address to solicit from (nor to be answered at).
            self.stats.nd_no_address += 1;
            return;
        }
        self.resolve_request(IpAddr::from(ip), mbuf, now);
    }

    /// Whether `mgid` is one of the groups neighbour discovery keeps this interface in.
    pub(crate) fn is_nd_group(&self, mgid: &Gid) -> bool {
        own_groups(&self.cfg, self.map).any(|g| g == *mgid)
    }

    /// A received Neighbor Solicitation or Advertisement (data from the IPoIB header
    /// on).
    pub(crate) fn nd_input(&mut self, mbuf: Mbuf, now: Nanos) {
        let Some(nd) = parse_nd(mbuf.data()) else {
            self.stats.nd_malformed += 1;
            return;
        };
        drop(mbuf);
        let Some(own) = self.cfg.ipv6 else {
            self.stats.nd_ignored += 1;
            return;
        };
        match nd.repr {
            ndisc::Repr::NeighborSolicit {
                target_addr,
                lladdr,
            } if target_addr == own => self.solicited(nd.src, lladdr, own, now),
            ndisc::Repr::NeighborAdvert {
                target_addr,
                lladdr: Some(hw),
                ..
            } if target_addr != own => self.advertised(target_addr, hw),
            ndisc::Repr::NeighborAdvert { target_addr, .. } if target_addr == own => {
                tracing::warn!(
                    pkey = %self.cfg.pkey,
                    address = %std::net::Ipv6Addr::from(own),
                    from = %std::net::Ipv6Addr::from(nd.src),
                    "ibpoll-ctrl: another node advertises this interface's IPv6 address"
                );
                self.stats.nd_ignored += 1;
            }
            _ => self.stats.nd_ignored += 1,
        }
    }

    /// A solicitation for our address `own` from `src`.
    fn solicited(&mut self, src: [u8; 16], lladdr: Option<HwAddr>, own: [u8; 16], now: Nanos) {
        if ipv6::is_unspecified(&src) {
            // Another node's duplicate address detection: tell every node (RFC 4861
            // section 7.2.4: not Solicited, to all-nodes).
            self.send_advert(own, ipv6::ALL_NODES, NeighborFlags::OVERRIDE, now);
            return;
        }
        // On IPoIB a unicast answer needs the solicitor's QPN and GID: without its
        // link-layer address there is nothing to send to.
        let Some(hw) = lladdr.filter(|h| *h != self.hwaddr() && !h.is_multicast()) else {
            self.stats.nd_ignored += 1;
            return;
        };
        if !self.learn_from(IpAddr::from(src), hw, now) {
            return;
        }
        let flags = NeighborFlags::SOLICITED.union(NeighborFlags::OVERRIDE);
        self.send_advert(own, src, flags, now);
    }

    /// An advertisement of `target` at `hw`: learnt if the target is a neighbour we
    /// know (an entry waiting for it, or one whose address moved).
    fn advertised(&mut self, target: [u8; 16], hw: HwAddr) {
        let ip = IpAddr::from(target);
        if !self.neighbours.contains_key(&ip) || hw == self.hwaddr() || hw.is_multicast() {
            self.stats.nd_ignored += 1;
            return;
        }
        self.learn(ip, hw);
    }

    /// An advertisement of our address `own` to `dst` (a neighbour, queued until its
    /// path is known, or the all-nodes group).
    fn send_advert(&mut self, own: [u8; 16], dst: [u8; 16], flags: NeighborFlags, now: Nanos) {
        let repr = ndisc::Repr::NeighborAdvert {
            flags,
            target_addr: own,
            lladdr: Some(self.hwaddr()),
        };
        let Some(m) = self.build_nd(own, dst, &repr) else {
            return;
        };
        self.stats.nd_adverts_sent += 1;
        if ipv6::is_multicast(&dst) {
            self.mcast_request(GroupAddr::Ipv6(dst), m, now);
        } else {
            self.resolve_request(IpAddr::from(dst), m, now);
        }
    }

    /// A Neighbor Solicitation for `target` to its solicited-node group.
    pub(crate) fn send_solicitation(&mut self, target: [u8; 16], now: Nanos) {
        let Some(src) = self.cfg.ipv6 else {
            return;
        };
        let dst = ipv6::solicited_node(&target);
        let repr = ndisc::Repr::NeighborSolicit {
            target_addr: target,
            lladdr: Some(self.hwaddr()),
        };
        let Some(m) = self.build_nd(src, dst, &repr) else {
            return;
        };
        self.stats.nd_solicits_sent += 1;
        self.mcast_request(GroupAddr::Ipv6(dst), m, now);
    }

    /// An IPoIB packet: IPv6 header (hop limit 255) and the message, checksum included.
    fn build_nd(&mut self, src: [u8; 16], dst: [u8; 16], repr: &ndisc::Repr) -> Option<Mbuf> {
        let len = repr.buffer_len();
        let Some(mut m) = self.pool.alloc() else {
            self.stats.tx_nombuf += 1;
            return None;
        };
        let Some(d) = m.append(ipoib::HEADER_LEN + ipv6::HEADER_LEN + len) else {
            self.stats.tx_nombuf += 1;
            return None;
        };
        let (hdr, rest) = d.split_at_mut(ipoib::HEADER_LEN);
        ipoib::Repr {
            ethertype: ipoib::EtherType::IPV6,
        }
        .emit(&mut ipoib::Packet::new_unchecked(hdr));
        let (ip, msg) = rest.split_at_mut(ipv6::HEADER_LEN);
        ipv6::Repr {
            src_addr: src,
            dst_addr: dst,
            next_header: ipv6::NEXT_HEADER_ICMPV6,
            payload_len: len as u16,
            hop_limit: ndisc::HOP_LIMIT,
        }
        .emit(&mut ipv6::Packet::new_unchecked(ip));
        repr.emit(&src, &dst, &mut ndisc::Packet::new_unchecked(msg));
        Some(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ibpoll_wire::{PKey, Qpn};

    const A: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
    const B: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x12, 2];

    fn packet(src: [u8; 16], dst: [u8; 16], hop_limit: u8, repr: &ndisc::Repr) -> Vec<u8> {
        let len = repr.buffer_len();
        let mut b = vec![0u8; 4 + 40 + len];
        b[..2].copy_from_slice(&[0x86, 0xdd]);
        ipv6::Repr {
            src_addr: src,
            dst_addr: dst,
            next_header: 58,
            payload_len: len as u16,
            hop_limit,
        }
        .emit(&mut ipv6::Packet::new_unchecked(&mut b[4..]));
        repr.emit(&src, &dst, &mut ndisc::Packet::new_unchecked(&mut b[44..]));
        b
    }

    fn map(cfg: &CtrlConfig) -> McastMap {
        McastMap::Ipoib {
            pkey: cfg.pkey,
            scope: cfg.scope,
        }
    }

    #[test]
    fn own_groups_are_all_nodes_and_solicited_node() {
        assert_eq!(
            own_groups(&CtrlConfig::default(), map(&CtrlConfig::default())).count(),
            0
        );
        let cfg = CtrlConfig {
            ipv6: Some(B),
            pkey: PKey(0x8001),
            ..CtrlConfig::default()
        };
        let g: Vec<String> = own_groups(&cfg, map(&cfg)).map(|g| g.to_string()).collect();
        assert_eq!(
            g,
            ["ff12:601b:8001:0:0:0:0:1", "ff12:601b:8001:0:0:1:ff00:1202"]
        );
    }

    #[test]
    fn only_checked_packets_parse() {
        let hw = HwAddr::new(0, Qpn::new(0x48).unwrap(), Gid::new(0xfe80 << 48, 1));
        let ns = ndisc::Repr::NeighborSolicit {
            target_addr: B,
            lladdr: Some(hw),
        };
        let sn = ipv6::solicited_node(&B);
        let good = packet(A, sn, 255, &ns);
        assert_eq!(
            parse_nd(&good),
            Some(NdPacket {
                src: A,
                dst: sn,
                repr: ns
            })
        );
        // Hop limit 254: it crossed a router (RFC 4861 section 7.1.1).
        assert_eq!(parse_nd(&packet(A, sn, 254, &ns)), None);
        // Not ICMPv6, not IPv6, truncated, a bad checksum.
        let mut b = good.clone();
        b[4 + 6] = 17;
        assert_eq!(parse_nd(&b), None);
        let mut b = good.clone();
        b[1] = 0x00;
        assert_eq!(parse_nd(&b), None);
        assert_eq!(parse_nd(&good[..good.len() - 1]), None);
        let mut b = good;
        b[60] ^= 0x40;
        assert_eq!(parse_nd(&b), None);
    }
}
