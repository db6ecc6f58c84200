//! pktgen's datagrams: IPv4/UDP or IPv6/UDP of exactly `--size` bytes (IP header
//! included, the 4-byte IPoIB header not), then the payload `MAGIC (4) | timestamp ns
//! (8)` and zero padding.
//!
//! IPv4: 20 bytes of header (checksum included), 8 of UDP with checksum 0 (none, as
//! IPv4 allows). IPv6 (RFC 8200): 40 bytes of header, hop limit 64, 8 of UDP with its
//! checksum over the pseudo-header (mandatory in IPv6, section 8.1). Per flow a template
//! of the first bytes is built once; per packet the template is copied, the timestamp
//! written and, for IPv6, the padding zeroed and the UDP checksum adjusted for the
//! timestamp's four 16-bit words (RFC 1624), so that a packet costs a copy, not a
//! header construction or a checksum over its whole length.

use ibpoll::{Dest, GroupAddr};
use ibpoll_mem::Mbuf;
use ibpoll_wire::ipv6;

/// IPv4 (20) + UDP (8) headers.
pub const HEADERS_LEN: usize = 28;
/// IPv6 (40) + UDP (8) headers.
pub const HEADERS6_LEN: usize = 48;
/// Bytes of the magic and the timestamp after the headers.
const PAYLOAD_MIN: usize = 12;
/// The smallest IPv4 packet that holds the headers, the magic and the timestamp.
pub const PACKET_MIN: usize = HEADERS_LEN + PAYLOAD_MIN;
/// The smallest IPv6 packet that holds the headers, the magic and the timestamp.
pub const PACKET6_MIN: usize = HEADERS6_LEN + PAYLOAD_MIN;
/// Marks pktgen's datagrams.
const MAGIC: [u8; 4] = *b"IBpg";
/// The UDP destination port of pktgen's datagrams.
pub const UDP_PORT: u16 = 9000;
/// The hop limit (TTL) pktgen sends with.
const HOP_LIMIT: u8 = 64;

/// An address of either IP version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ip {
    /// IPv4.
    V4([u8; 4]),
    /// IPv6.
    V6([u8; 16]),
}

impl Ip {
    /// Where the stack sends to this address as a next hop (unicast) or group.
    pub fn dest(self) -> Dest {
        match self {
            Ip::V4(a) if a[0] >> 4 == 0xe => Dest::Group(GroupAddr::Ipv4(a)),
            Ip::V4(a) => Dest::NextHop(a),
            Ip::V6(a) if a[0] == 0xff => Dest::Group(GroupAddr::Ipv6(a)),
            Ip::V6(a) => Dest::NextHop6(a),
        }
    }

    /// This address as a multicast group (for subscriptions).
    pub fn group(self) -> GroupAddr {
        match self {
            Ip::V4(a) => GroupAddr::Ipv4(a),
            Ip::V6(a) => GroupAddr::Ipv6(a),
        }
    }
}

impl std::fmt::Display for Ip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ip::V4(a) => std::net::Ipv4Addr::from(*a).fmt(f),
            Ip::V6(a) => std::net::Ipv6Addr::from(*a).fmt(f),
        }
    }
}

/// The first bytes of every datagram of one flow: headers (checksums included) and
/// magic; the timestamp is written per packet.
#[derive(Debug, Clone, Copy)]
pub struct Template {
    bytes: [u8; PACKET6_MIN],
    /// Bytes of `bytes` in use: [`PACKET_MIN`] or [`PACKET6_MIN`].
    len: usize,
}

impl Template {
    /// The template of `size`-byte datagrams from `src` to `dst` with UDP source port
    /// `src_port`. Both addresses have the same version.
    pub fn new(size: usize, src: Ip, dst: Ip, src_port: u16) -> Template {
        let mut t = Template {
            bytes: [0; PACKET6_MIN],
            len: 0,
        };
        match (src, dst) {
            (Ip::V4(s), Ip::V4(d)) => t.v4(size, s, d, src_port),
            (Ip::V6(s), Ip::V6(d)) => t.v6(size, s, d, src_port),
            _ => panic!("a flow from {src} to {dst} mixes IP versions"),
        }
        t
    }

    fn v4(&mut self, size: usize, src: [u8; 4], dst: [u8; 4], src_port: u16) {
        let d = &mut self.bytes;
        d[0] = 0x45;
        d[2..4].copy_from_slice(&(size as u16).to_be_bytes());
        d[8] = HOP_LIMIT;
        d[9] = 17; // UDP
        d[12..16].copy_from_slice(&src);
        d[16..20].copy_from_slice(&dst);
        let sum = ip_checksum(&d[..20]);
        d[10..12].copy_from_slice(&sum.to_be_bytes());
        d[20..22].copy_from_slice(&src_port.to_be_bytes());
        d[22..24].copy_from_slice(&UDP_PORT.to_be_bytes());
        d[24..26].copy_from_slice(&((size - 20) as u16).to_be_bytes());
        // UDP checksum 0: none (IPv4).
        d[HEADERS_LEN..HEADERS_LEN + 4].copy_from_slice(&MAGIC);
        self.len = PACKET_MIN;
    }

    fn v6(&mut self, size: usize, src: [u8; 16], dst: [u8; 16], src_port: u16) {
        let udp_len = size - ipv6::HEADER_LEN;
        ipv6::Repr {
            src_addr: src,
            dst_addr: dst,
            next_header: ipv6::NEXT_HEADER_UDP,
            payload_len: udp_len as u16,
            hop_limit: HOP_LIMIT,
        }
        .emit(&mut ipv6::Packet::new_unchecked(&mut self.bytes[..]));
        let d = &mut self.bytes[ipv6::HEADER_LEN..];
        d[0..2].copy_from_slice(&src_port.to_be_bytes());
        d[2..4].copy_from_slice(&UDP_PORT.to_be_bytes());
        d[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
        d[8..12].copy_from_slice(&MAGIC);
        // The checksum of the whole datagram with a zero timestamp and zero padding
        // (built once per flow; the padding adds nothing but its length).
        let mut whole = vec![0u8; udp_len];
        whole[..PAYLOAD_MIN + 8].copy_from_slice(&d[..PAYLOAD_MIN + 8]);
        let c = udp_checksum_field(ipv6::upper_layer_checksum(
            &src,
            &dst,
            ipv6::NEXT_HEADER_UDP,
            &whole,
        ));
        d[6..8].copy_from_slice(&c.to_be_bytes());
        self.len = PACKET6_MIN;
    }

    /// Whether the datagrams are IPv6.
    fn is_v6(&self) -> bool {
        self.len == PACKET6_MIN
    }
}

/// A computed UDP checksum as sent: 0 goes as 0xffff (RFC 768, RFC 8200 section 8.1).
fn udp_checksum_field(c: u16) -> u16 {
    if c == 0 {
        0xffff
    } else {
        c
    }
}

/// RFC 1624 (eqn. 3) for data whose words `added` went from zero to their value: the
/// checksum `c` becomes `~(~c + sum of added)`.
fn checksum_add(c: u16, added: &[u8]) -> u16 {
    let mut sum = u32::from(!c);
    for w in added.chunks_exact(2) {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    udp_checksum_field(!(sum as u16))
}

/// Writes a pktgen datagram of `size` bytes into `m` (an empty buffer) from its flow's
/// template, stamped with `stamp`. False if it does not fit.
#[inline]
pub fn build(m: &mut Mbuf, size: usize, t: &Template, stamp: u64) -> bool {
    let Some(d) = m.append(size) else {
        return false;
    };
    d[..t.len].copy_from_slice(&t.bytes[..t.len]);
    let at = t.len - 8;
    d[at..t.len].copy_from_slice(&stamp.to_be_bytes());
    if t.is_v6() {
        // The padding is covered by the checksum: zero, as in the template's sum.
        d[t.len..].fill(0);
        let c = u16::from_be_bytes([d[46], d[47]]);
        let c = checksum_add(c, &stamp.to_be_bytes());
        d[46..48].copy_from_slice(&c.to_be_bytes());
    }
    true
}

/// The Internet checksum of an IPv4 header whose checksum field reads zero.
pub fn ip_checksum(h: &[u8]) -> u16 {
    let mut sum = 0u32;
    for w in h.chunks_exact(2) {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The timestamp of a pktgen datagram, `None` if it is not one (an IPv6 one must carry
/// a right UDP checksum: what crossed the forwarder arrived intact).
#[inline]
pub fn parse(d: &[u8]) -> Option<u64> {
    let at = match d.first().map(|b| b >> 4) {
        Some(4) if d.len() >= PACKET_MIN && d[0] == 0x45 && d[9] == 17 => HEADERS_LEN,
        Some(6) if d.len() >= PACKET6_MIN && d[6] == ipv6::NEXT_HEADER_UDP => {
            let ip = ipv6::Packet::new_checked(d).ok()?;
            let (src, dst) = (ip.src_addr(), ip.dst_addr());
            if !ipv6::checksum_ok(&src, &dst, ipv6::NEXT_HEADER_UDP, ip.payload()) {
                return None;
            }
            HEADERS6_LEN
        }
        _ => return None,
    };
    if d[at..at + 4] != MAGIC {
        return None;
    }
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&d[at + 4..at + 12]);
    Some(u64::from_be_bytes(ts))
}

/// Turns a received datagram (checked by [`parse`]) into its echo in place: addresses
/// swapped, TTL / hop limit reset, the IPv4 header checksum recomputed (the UDP
/// checksum does not change: the pseudo-header's sum is the same either way). Returns
/// where it goes: back to its source through `next_hop`.
pub fn echo_in_place(d: &mut [u8], next_hop: Ip) -> Dest {
    if d[0] >> 4 == 6 {
        for i in 0..16 {
            d.swap(8 + i, 24 + i);
        }
        d[7] = HOP_LIMIT;
    } else {
        for i in 0..4 {
            d.swap(12 + i, 16 + i);
        }
        d[8] = HOP_LIMIT;
        d[10] = 0;
        d[11] = 0;
        let sum = ip_checksum(&d[..20]);
        d[10..12].copy_from_slice(&sum.to_be_bytes());
    }
    next_hop.dest()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ibpoll_mem::{HugepagePolicy, Mempool, MempoolConfig};

    const A6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
    const B6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1];

    fn pool() -> Mempool {
        Mempool::new(MempoolConfig {
            name: "pktgen-packet-test".into(),
            n_bufs: 16,
            data_room: 4096 + 128,
            cache_size: 0,
            hugepages: HugepagePolicy::Never,
            ..MempoolConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn checksum_of_a_known_header() {
        // RFC 1071 example header (Wikipedia's IPv4 checksum example).
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(ip_checksum(&h), 0xb861);
    }

    #[test]
    fn ipv4_templates_are_valid_datagrams_that_parse_back() {
        let t = Template::new(64, Ip::V4([10, 0, 0, 1]), Ip::V4([10, 0, 0, 9]), 10_001);
        let d = &t.bytes[..t.len];
        // The header checksum verifies: the sum over the header with it is 0xffff.
        assert_eq!(ip_checksum(&d[..20]), 0);
        assert_eq!(&d[12..16], &[10, 0, 0, 1]);
        assert_eq!(&d[16..20], &[10, 0, 0, 9]);
        assert_eq!(u16::from_be_bytes([d[2], d[3]]), 64);
        assert_eq!(u16::from_be_bytes([d[20], d[21]]), 10_001);
        assert_eq!(u16::from_be_bytes([d[24], d[25]]), 44);
        let mut m = pool().alloc().unwrap();
        assert!(build(&mut m, 64, &t, 1234));
        assert_eq!(parse(m.data()), Some(1234));
    }

    #[test]
    fn ipv6_datagrams_carry_a_right_udp_checksum_whatever_the_stamp_and_the_buffer() {
        let pool = pool();
        for size in [PACKET6_MIN, 64, 1500, 4092] {
            let t = Template::new(size, Ip::V6(A6), Ip::V6(B6), 10_002);
            for stamp in [0u64, 1, 0xffff_ffff_ffff_ffff, 0x0123_4567_89ab_cdef] {
                let mut m = pool.alloc().unwrap();
                // A reused buffer: stale bytes where the padding goes.
                m.append(size).unwrap().fill(0xa5);
                assert!(m.trim(size));
                assert!(build(&mut m, size, &t, stamp));
                let d = m.data();
                assert_eq!(d.len(), size);
                let ip = ipv6::Packet::new_checked(d).unwrap();
                let r = ipv6::Repr::parse(&ip).unwrap();
                assert_eq!((r.src_addr, r.dst_addr, r.hop_limit), (A6, B6, 64));
                assert_eq!(usize::from(r.payload_len), size - 40);
                assert!(
                    ipv6::checksum_ok(&A6, &B6, 17, ip.payload()),
                    "size {size} stamp {stamp:#x}"
                );
                assert_eq!(parse(d), Some(stamp));
                // A flipped payload bit fails the checksum: not ours.
                let mut bad = d.to_vec();
                bad[size - 1] ^= 1;
                assert_eq!(parse(&bad), None);
            }
        }
    }

    #[test]
    fn echoes_go_back_with_a_right_checksum() {
        let pool = pool();
        let t = Template::new(80, Ip::V6(A6), Ip::V6(B6), 10_003);
        let mut m = pool.alloc().unwrap();
        assert!(build(&mut m, 80, &t, 77));
        let d = m.data_mut();
        d[7] = 3; // hops used on the way
        assert_eq!(echo_in_place(d, Ip::V6(A6)), Dest::NextHop6(A6));
        assert_eq!((&d[8..24], &d[24..40], d[7]), (&B6[..], &A6[..], 64));
        assert_eq!(parse(d), Some(77));
        let t = Template::new(64, Ip::V4([10, 0, 0, 1]), Ip::V4([10, 0, 0, 2]), 1);
        let mut m = pool.alloc().unwrap();
        assert!(build(&mut m, 64, &t, 5));
        let d = m.data_mut();
        assert_eq!(
            echo_in_place(d, Ip::V4([10, 0, 0, 1])),
            Dest::NextHop([10, 0, 0, 1])
        );
        assert_eq!(ip_checksum(&d[..20]), 0);
        assert_eq!(parse(d), Some(5));
    }

    #[test]
    fn destinations_by_address_kind() {
        assert_eq!(
            Ip::V4([239, 1, 0, 1]).dest(),
            Dest::Group(GroupAddr::Ipv4([239, 1, 0, 1]))
        );
        let g = [0xff, 0x05, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1];
        assert_eq!(Ip::V6(g).dest(), Dest::Group(GroupAddr::Ipv6(g)));
        assert_eq!(Ip::V6(A6).dest(), Dest::NextHop6(A6));
        assert_eq!(Ip::V6(A6).to_string(), "fd00:0:0:1::1");
    }
}
