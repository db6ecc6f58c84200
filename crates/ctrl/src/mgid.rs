//! How an interface names its multicast groups: the MGID an IPv4 group maps to, the
//! broadcast group, and which GIDs are groups of the interface at all. It differs by
//! link layer, and the data cores need it too (the snapshot carries it).
//!
//! - InfiniBand (IPoIB, RFC 4391 section 4): `ff1S:401b:PPPP::` + the group's low 28
//!   bits; the broadcast group `ff12:401b:PPPP::ffff:ffff`.
//! - RoCE v2: the IPv4-mapped IPv6 address of the group, `::ffff:a.b.c.d`, which is
//!   what the kernel's rdma_cm joins for an IPv4 group on a RoCE v2 port
//!   (`cma_iboe_set_mgid`, drivers/infiniband/core/cma.c: bytes 0..10 zero for
//!   `IB_GID_TYPE_ROCE_UDP_ENCAP`, `ff0e` only for RoCE v1, bytes 10..12 `ffff`, the
//!   address in 12..16); the HCA driver joins the mapped IP multicast group on the
//!   netdev. RoCE has no broadcast: the broadcast group of an ibpoll interface on RoCE
//!   is the all-hosts group 224.0.0.1 ([`ROCE_BROADCAST_GROUP`]), which every IPv4 host
//!   belongs to, is never routed (link-local, TTL 1), and needs no IGMP report. ARP
//!   requests go there, exactly as they go to the broadcast group on InfiniBand.

use ibpoll_wire::ipoib::{self, McastScope};
use ibpoll_wire::{Gid, PKey};

/// The IPv4 group an ibpoll interface on RoCE uses as its broadcast group: all hosts.
pub const ROCE_BROADCAST_GROUP: [u8; 4] = [224, 0, 0, 1];

/// The IPv4-mapped GID of `ip` (`::ffff:a.b.c.d`): a RoCE v2 port's GID for an IPv4
/// address of its netdev (the kernel's `rdma_ip2gid`), and the MGID of an IPv4 group.
pub const fn ipv4_mapped_gid(ip: [u8; 4]) -> Gid {
    Gid([
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, ip[0], ip[1], ip[2], ip[3],
    ])
}

/// The IPv4 address inside an IPv4-mapped GID, if it is one.
pub fn ipv4_of_mapped(gid: &Gid) -> Option<[u8; 4]> {
    let b = &gid.0;
    (b[..10] == [0; 10] && b[10] == 0xff && b[11] == 0xff).then(|| [b[12], b[13], b[14], b[15]])
}

/// How one interface names its multicast groups. Copied into every snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum McastMap {
    /// InfiniBand: IPoIB MGIDs in partition `pkey`, IPv4 groups with `scope`.
    Ipoib {
        /// The interface's partition.
        pkey: PKey,
        /// The scope of IPv4 group MGIDs.
        scope: McastScope,
    },
    /// RoCE v2: IPv4-mapped GIDs; the broadcast group is 224.0.0.1.
    RoceV2,
}

impl McastMap {
    /// The broadcast group's MGID.
    pub fn broadcast(self) -> Gid {
        match self {
            McastMap::Ipoib { pkey, .. } => ipoib::broadcast_mgid(pkey),
            McastMap::RoceV2 => ipv4_mapped_gid(ROCE_BROADCAST_GROUP),
        }
    }

    /// The MGID of IPv4 group `group` (any address; callers check it is multicast).
    pub fn ipv4(self, group: [u8; 4]) -> Gid {
        match self {
            McastMap::Ipoib { pkey, scope } => ipoib::ipv4_mcast_mgid(group, pkey, scope),
            McastMap::RoceV2 => ipv4_mapped_gid(group),
        }
    }

    /// The MGID of IPv6 group `group` (callers check it is multicast): on InfiniBand
    /// the IPoIB MGID with the IPv6 signature 0x601B (RFC 4391 section 4), on RoCE the
    /// group's address itself (what rdma_cm joins for an IPv6 group).
    pub fn ipv6(self, group: [u8; 16]) -> Gid {
        match self {
            McastMap::Ipoib { pkey, scope } => ipoib::ipv6_mcast_mgid(group, pkey, scope),
            McastMap::RoceV2 => Gid(group),
        }
    }

    /// Whether `mgid` names a multicast group this interface may join: on InfiniBand a
    /// multicast GID whose IPoIB P_Key (if it has one) is the interface's partition; on
    /// RoCE an IPv4-mapped 224.0.0.0/4 address or an IPv6 multicast address.
    pub fn is_group(self, mgid: &Gid) -> bool {
        match self {
            McastMap::Ipoib { pkey, .. } => {
                mgid.is_multicast()
                    && ipoib::mgid_pkey(mgid).is_none_or(|p| p.base() == pkey.base())
            }
            McastMap::RoceV2 => {
                mgid.is_multicast() || ipv4_of_mapped(mgid).is_some_and(|ip| ip[0] & 0xf0 == 0xe0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roce_v2_groups_are_ipv4_mapped_as_rdma_cm_maps_them() {
        // cma_iboe_set_mgid for IB_GID_TYPE_ROCE_UDP_ENCAP: ::ffff:239.1.2.3.
        let want = Gid([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 239, 1, 2, 3]);
        assert_eq!(McastMap::RoceV2.ipv4([239, 1, 2, 3]), want);
        assert_eq!(ipv4_of_mapped(&want), Some([239, 1, 2, 3]));
        assert!(McastMap::RoceV2.is_group(&want));
        assert_eq!(
            McastMap::RoceV2.broadcast().to_string(),
            "0:0:0:0:0:ffff:e000:1"
        );
        // A unicast mapped address, an InfiniBand GID: not groups on RoCE.
        assert!(!McastMap::RoceV2.is_group(&ipv4_mapped_gid([10, 0, 0, 1])));
        assert!(!McastMap::RoceV2.is_group(&Gid::new(Gid::DEFAULT_SUBNET_PREFIX, 1)));
        assert_eq!(
            ipv4_of_mapped(&Gid::new(Gid::DEFAULT_SUBNET_PREFIX, 1)),
            None
        );
    }

    #[test]
    fn ipoib_groups_stay_in_their_partition() {
        let m = McastMap::Ipoib {
            pkey: PKey::DEFAULT,
            scope: McastScope::LINK_LOCAL,
        };
        assert_eq!(m.broadcast(), ipoib::broadcast_mgid(PKey::DEFAULT));
        assert!(m.is_group(&m.ipv4([239, 1, 1, 1])));
        let other = ipoib::broadcast_mgid(PKey(0x8001));
        assert!(!m.is_group(&other));
        assert!(!m.is_group(&ipv4_mapped_gid([239, 1, 1, 1])));
    }
}
