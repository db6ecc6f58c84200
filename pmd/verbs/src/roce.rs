//! The 40-byte GRH area of a UD receive buffer on a RoCE v2 port, made into the GRH the
//! driver contract promises.
//!
//! On InfiniBand (and RoCE v1) the HCA writes the packet's GRH there. On RoCE v2 it
//! writes the packet's IP header instead (verbs' rule, kept by every provider): an IPv6
//! header fills the 40 bytes; an IPv4 header takes the last 20, after 20 undefined
//! bytes. Which one it is, the completion does not say; rdma-core tells them apart in
//! `get_grh_header_version` (libibverbs/verbs.c, used by `ibv_init_ah_from_wc`), and so
//! does this module, with the same rule. The IP header is then rewritten in place into
//! the GRH it stands for: IPv4 addresses as IPv4-mapped GIDs (`::ffff:a.b.c.d`, the GIDs a
//! RoCE v2 port has for them), TOS as the traffic class, TTL as the hop limit, the
//! payload length counted from the BTH (the UDP header left out) and next header 0x1B.
//! An IPv4 header has no flow label: it reads 0.

use ibpoll_wire::grh;

/// Bytes of the GRH area.
pub(crate) const GRH_AREA: usize = 40;

/// Where an IPv4 header starts in the GRH area.
const IPV4_AT: usize = 20;
/// UDP's header, between the IP header and the BTH on RoCE v2.
const UDP_LEN: u16 = 8;
/// IP protocol / IPv6 next header of UDP.
const PROTO_UDP: u8 = 17;

/// What the HCA wrote in the GRH area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NetHeader {
    /// An IPv6 header or an InfiniBand GRH (IP version 6 in the first nibble).
    V6,
    /// An IPv4 header in bytes 20..40.
    V4,
    /// Neither.
    Unknown,
}

/// rdma-core's `get_grh_header_version`: version 6 in the first word is IPv6 (or a
/// GRH), unless bytes 20..40 are an IPv4 header with IHL 5 and a correct checksum; a
/// first word of another version with an IPv4 version nibble at byte 20 is IPv4.
pub(crate) fn net_header(area: &[u8; GRH_AREA]) -> NetHeader {
    let v6 = area[0] >> 4 == 6;
    let ip4 = &area[IPV4_AT..];
    let v4_version = ip4[0] >> 4 == 4;
    if !v6 {
        return if v4_version {
            NetHeader::V4
        } else {
            NetHeader::Unknown
        };
    }
    if ip4[0] & 0x0f != 5 {
        return NetHeader::V6;
    }
    if ipv4_checksum_ok(ip4) {
        NetHeader::V4
    } else {
        NetHeader::V6
    }
}

/// RFC 791/1071: the ones'-complement sum of the header's 16-bit words, its checksum
/// included, is all ones.
fn ipv4_checksum_ok(h: &[u8]) -> bool {
    let mut sum: u32 = h
        .chunks_exact(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum == 0xffff
}

/// The IPv4-mapped GID of an IPv4 address.
pub(crate) fn ipv4_mapped(ip: [u8; 4]) -> [u8; 16] {
    let mut g = [0u8; 16];
    g[10] = 0xff;
    g[11] = 0xff;
    g[12..].copy_from_slice(&ip);
    g
}

/// The IPv4 address of an IPv4-mapped GID.
pub(crate) fn mapped_ipv4(gid: &[u8; 16]) -> Option<[u8; 4]> {
    let prefix = gid[..10].iter().all(|&b| b == 0) && gid[10] == 0xff && gid[11] == 0xff;
    prefix.then(|| [gid[12], gid[13], gid[14], gid[15]])
}

/// Whether a destination GID names a multicast group: an MGID (first byte 0xFF, IPv6
/// multicast included) or the IPv4-mapped GID of an IPv4 multicast address (224/4).
pub(crate) fn gid_is_multicast(gid: &[u8; 16]) -> bool {
    gid[0] == 0xff || mapped_ipv4(gid).is_some_and(|ip| ip[0] & 0xf0 == 0xe0)
}

/// Rewrites the RoCE v2 IP header in `area` into the GRH it stands for (see the module
/// docs); a GRH (next header 0x1B) is left as it is. Returns false when the area holds
/// neither (it is then not a GRH).
pub(crate) fn normalize(area: &mut [u8; GRH_AREA]) -> bool {
    match net_header(area) {
        NetHeader::V4 => {
            let ip4 = &area[IPV4_AT..];
            if ip4[9] != PROTO_UDP {
                return false;
            }
            let total = u16::from_be_bytes([ip4[2], ip4[3]]);
            let repr = grh::Repr {
                traffic_class: ip4[1],
                flow_label: 0,
                payload_len: total.saturating_sub(20 + UDP_LEN),
                next_header: grh::NXT_HDR_IBA,
                hop_limit: ip4[8],
                sgid: ibpoll_wire::Gid(ipv4_mapped([ip4[12], ip4[13], ip4[14], ip4[15]])),
                dgid: ibpoll_wire::Gid(ipv4_mapped([ip4[16], ip4[17], ip4[18], ip4[19]])),
            };
            repr.emit(&mut grh::Packet::new_unchecked(&mut area[..]));
            true
        }
        NetHeader::V6 => {
            let mut p = grh::Packet::new_unchecked(&mut area[..]);
            if p.next_header() == PROTO_UDP {
                let len = p.payload_len().saturating_sub(UDP_LEN);
                p.set_payload_len(len);
                p.set_next_header(grh::NXT_HDR_IBA);
            }
            p.next_header() == grh::NXT_HDR_IBA
        }
        NetHeader::Unknown => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The IPv4 header of Wikipedia's "IPv4 header checksum" example (a UDP datagram
    /// from 192.168.0.1 to 192.168.0.199, checksum 0xB861), whose checksum rdma-core's
    /// rule must accept.
    const IPV4: [u8; 20] = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00,
        0x01, 0xc0, 0xa8, 0x00, 0xc7,
    ];

    fn v4_area(first: u8) -> [u8; GRH_AREA] {
        let mut a = [0u8; GRH_AREA];
        a[0] = first;
        a[IPV4_AT..].copy_from_slice(&IPV4);
        a
    }

    #[test]
    fn ipv4_behind_20_undefined_bytes_becomes_a_grh_with_mapped_gids() {
        // The undefined bytes may even start with a 6: the checksum decides.
        for first in [0x00, 0x60, 0xab] {
            let mut a = v4_area(first);
            assert_eq!(net_header(&a), NetHeader::V4, "first byte {first:#x}");
            assert!(normalize(&mut a));
            let g = grh::Repr::parse(&grh::Packet::new_checked(&a[..]).unwrap()).unwrap();
            assert_eq!(g.sgid.0, ipv4_mapped([192, 168, 0, 1]));
            assert_eq!(g.dgid.0, ipv4_mapped([192, 168, 0, 199]));
            assert_eq!(g.hop_limit, 0x40, "TTL");
            assert_eq!(g.traffic_class, 0);
            assert_eq!(g.flow_label, 0);
            assert_eq!(g.next_header, grh::NXT_HDR_IBA);
            assert_eq!(g.payload_len, 0x73 - 28, "from the BTH on");
            assert!(!gid_is_multicast(&g.dgid.0));
        }
    }

    #[test]
    fn a_bad_checksum_under_version_6_is_an_ipv6_header() {
        let mut a = v4_area(0x60);
        a[IPV4_AT + 10] ^= 1;
        assert_eq!(net_header(&a), NetHeader::V6);
    }

    #[test]
    fn roce_v2_ipv6_loses_its_udp_header_and_a_grh_is_kept() {
        let mut a = [0u8; GRH_AREA];
        a[0] = 0x60;
        a[4..6].copy_from_slice(&100u16.to_be_bytes());
        a[6] = PROTO_UDP;
        a[7] = 64;
        a[24] = 0xff; // an IPv6 multicast destination
        assert!(normalize(&mut a));
        assert_eq!(u16::from_be_bytes([a[4], a[5]]), 92);
        assert_eq!(a[6], grh::NXT_HDR_IBA);
        assert!(gid_is_multicast(a[24..40].try_into().unwrap()));
        let kept = a;
        assert!(normalize(&mut a), "a GRH stays one");
        assert_eq!(a, kept);
        let mut junk = [0u8; GRH_AREA];
        assert!(!normalize(&mut junk));
    }

    #[test]
    fn ipv4_multicast_is_multicast_once_mapped() {
        assert!(gid_is_multicast(&ipv4_mapped([239, 1, 2, 3])));
        assert!(gid_is_multicast(&ipv4_mapped([224, 0, 0, 1])));
        assert!(!gid_is_multicast(&ipv4_mapped([127, 0, 0, 1])));
        assert!(!gid_is_multicast(&ipv4_mapped([240, 0, 0, 1])));
        assert_eq!(
            mapped_ipv4(&ipv4_mapped([10, 0, 0, 2])),
            Some([10, 0, 0, 2])
        );
        let mut not_mapped = ipv4_mapped([10, 0, 0, 2]);
        not_mapped[0] = 0xfe;
        assert_eq!(mapped_ipv4(&not_mapped), None);
    }
}
