//! The IPv4 and UDP headers of the sockets' datagrams: parsed in place on receive, and
//! written into the headroom in front of a payload on send. smoltcp's wire types
//! (`Ipv4Packet`, `UdpPacket`) read and write the fields and the RFC 1071 checksums
//! (RFC 791 header checksum; RFC 768 UDP checksum over the pseudo-header, where 0 means
//! "none" and a computed 0 is sent as 0xffff).

use std::net::{Ipv4Addr, SocketAddrV4};

use ibpoll_mem::Mbuf;
use smoltcp::wire::{IpAddress, IpProtocol, Ipv4Packet, UdpPacket};

/// Bytes of the IPv4 header (no options) and the UDP header that
/// [`encapsulate`] prepends.
pub const HEADERS_LEN: usize = IPV4_LEN + UDP_LEN;
const IPV4_LEN: usize = 20;
const UDP_LEN: usize = 8;
/// The largest UDP payload in one IPv4 datagram.
pub const PAYLOAD_MAX: usize = 65535 - HEADERS_LEN;

/// A received datagram's addressing and where its payload lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Parsed {
    pub(crate) src: SocketAddrV4,
    pub(crate) dst: SocketAddrV4,
    /// IPv4 header (options included) and UDP header.
    pub(crate) headers_len: usize,
    /// The UDP payload's length (from the UDP length field).
    pub(crate) payload_len: usize,
}

/// The addressing of the IPv4/UDP datagram at the front of `d`, if it is one the
/// sockets take: IPv4 with a valid header length, not a fragment, protocol UDP, and
/// IPv4 total length and UDP length that fit the data and each other. Anything else
/// is left to the application.
#[inline]
pub(crate) fn parse(d: &[u8]) -> Option<Parsed> {
    let ip = Ipv4Packet::new_checked(d).ok()?;
    if ip.next_header() != IpProtocol::Udp || ip.more_frags() || ip.frag_offset() != 0 {
        return None;
    }
    let ihl = usize::from(ip.header_len());
    let total = usize::from(ip.total_len());
    let udp = UdpPacket::new_checked(&d[ihl..total]).ok()?;
    let udp_len = usize::from(udp.len());
    Some(Parsed {
        src: SocketAddrV4::new(ip.src_addr(), udp.src_port()),
        dst: SocketAddrV4::new(ip.dst_addr(), udp.dst_port()),
        headers_len: ihl + UDP_LEN,
        payload_len: udp_len - UDP_LEN,
    })
}

/// Whether the IPv4 header checksum and the UDP checksum (when the sender computed
/// one) of the datagram at the front of `d`, which [`parse`] accepted, are right.
pub(crate) fn checksums_ok(d: &[u8], p: &Parsed) -> bool {
    let ip = Ipv4Packet::new_unchecked(d);
    if !ip.verify_checksum() {
        return false;
    }
    let ihl = usize::from(ip.header_len());
    let udp = UdpPacket::new_unchecked(&d[ihl..ihl + UDP_LEN + p.payload_len]);
    udp.verify_checksum(&IpAddress::Ipv4(*p.src.ip()), &IpAddress::Ipv4(*p.dst.ip()))
}

/// Why a payload could not be made a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncapError {
    /// The buffer's headroom is smaller than the 28 bytes of headers (plus the 4 of the
    /// IPoIB header the stack prepends later).
    NoHeadroom,
    /// The payload is longer than an IPv4 datagram can carry ([`PAYLOAD_MAX`]).
    TooLong,
}

/// What [`encapsulate`] writes besides the addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderFields {
    /// IPv4 time to live.
    pub ttl: u8,
    /// IPv4 identification.
    pub ident: u16,
    /// Compute the UDP checksum (RFC 768); without it the field is 0, "no checksum",
    /// which IPv4 allows (the InfiniBand ICRC still covers the datagram on the wire).
    pub udp_checksum: bool,
}

/// Makes the payload in `m`'s data window a UDP datagram from `src` to `dst`: prepends
/// an IPv4 header (no options, Don't Fragment) and a UDP header in the buffer's
/// headroom, with the IPv4 header checksum and, if asked, the UDP checksum. On error
/// the buffer is unchanged.
///
/// ```
/// use std::net::{Ipv4Addr, SocketAddrV4};
/// use ibpoll::udp::{encapsulate, HeaderFields, HEADERS_LEN};
/// use ibpoll::{Mempool, MempoolConfig};
///
/// let pool = Mempool::new(MempoolConfig { n_bufs: 64, cache_size: 0, ..MempoolConfig::default() })?;
/// let mut m = pool.alloc().expect("a buffer");
/// m.append(5).unwrap().copy_from_slice(b"hello");
/// let src = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 7000);
/// let dst = SocketAddrV4::new(Ipv4Addr::new(239, 1, 0, 1), 7001);
/// let fields = HeaderFields { ttl: 1, ident: 0, udp_checksum: true };
/// encapsulate(&mut m, src, dst, fields).expect("headroom");
/// assert_eq!(m.len(), HEADERS_LEN + 5);
/// assert_eq!(m.data()[0], 0x45); // IPv4, 20-byte header
/// assert_eq!(m.data()[9], 17); // UDP
/// # Ok::<(), ibpoll::mem::Error>(())
/// ```
pub fn encapsulate(
    m: &mut Mbuf,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    fields: HeaderFields,
) -> Result<(), EncapError> {
    let payload_len = m.len();
    if payload_len > PAYLOAD_MAX {
        return Err(EncapError::TooLong);
    }
    let h = m.prepend(HEADERS_LEN).ok_or(EncapError::NoHeadroom)?;
    let (ip_buf, udp_buf) = h.split_at_mut(IPV4_LEN);
    let mut ip = Ipv4Packet::new_unchecked(ip_buf);
    ip.set_version(4);
    ip.set_header_len(IPV4_LEN as u8);
    ip.set_dscp(0);
    ip.set_ecn(0);
    // Cannot overflow: checked against PAYLOAD_MAX above.
    ip.set_total_len((HEADERS_LEN + payload_len) as u16);
    ip.set_ident(fields.ident);
    ip.clear_flags();
    ip.set_dont_frag(true);
    ip.set_frag_offset(0);
    ip.set_hop_limit(fields.ttl);
    ip.set_next_header(IpProtocol::Udp);
    ip.set_src_addr(*src.ip());
    ip.set_dst_addr(*dst.ip());
    ip.fill_checksum();
    let mut udp = UdpPacket::new_unchecked(&mut udp_buf[..UDP_LEN]);
    udp.set_src_port(src.port());
    udp.set_dst_port(dst.port());
    udp.set_len((UDP_LEN + payload_len) as u16);
    udp.set_checksum(0);
    if fields.udp_checksum {
        // The checksum covers the payload, which follows the header in the buffer.
        let d = &mut m.data_mut()[IPV4_LEN..];
        UdpPacket::new_unchecked(d)
            .fill_checksum(&IpAddress::Ipv4(*src.ip()), &IpAddress::Ipv4(*dst.ip()));
    }
    Ok(())
}

/// Whether `ip` is an IPv4 multicast group address (224.0.0.0/4).
pub(crate) fn is_group(ip: Ipv4Addr) -> bool {
    ip.is_multicast()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ibpoll_mem::{Mempool, MempoolConfig};

    fn pool() -> Mempool {
        Mempool::new(MempoolConfig {
            n_bufs: 64,
            cache_size: 0,
            hugepages: ibpoll_mem::HugepagePolicy::Never,
            ..MempoolConfig::default()
        })
        .unwrap()
    }

    /// "hi\n" from 10.0.0.1:40000 to 10.0.0.2:7001 (ident 0x1234, DF, TTL 64), laid
    /// out field by field from RFC 791 and RFC 768; tshark 4.0 decodes it (link type
    /// RAW) with `ip.check_checksum` and `udp.check_checksum` on and calls both
    /// checksums, 0x1498 and 0xc1d2, correct.
    const FIXTURE: [u8; 31] = [
        0x45, 0x00, 0x00, 0x1f, 0x12, 0x34, 0x40, 0x00, 0x40, 0x11, 0x14, 0x98, 10, 0, 0, 1, 10, 0,
        0, 2, 0x9c, 0x40, 0x1b, 0x59, 0x00, 0x0b, 0xc1, 0xd2, b'h', b'i', b'\n',
    ];

    #[test]
    fn encapsulate_writes_the_rfc_layout() {
        let p = pool();
        let mut m = p.alloc().unwrap();
        m.append(3).unwrap().copy_from_slice(b"hi\n");
        let src = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 40000);
        let dst = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 7001);
        let f = HeaderFields {
            ttl: 64,
            ident: 0x1234,
            udp_checksum: true,
        };
        encapsulate(&mut m, src, dst, f).unwrap();
        assert_eq!(m.data(), &FIXTURE[..]);
    }

    #[test]
    fn parse_and_verify_the_fixture() {
        let p = parse(&FIXTURE).expect("a UDP datagram");
        assert_eq!(p.src, "10.0.0.1:40000".parse().unwrap());
        assert_eq!(p.dst, "10.0.0.2:7001".parse().unwrap());
        assert_eq!((p.headers_len, p.payload_len), (28, 3));
        assert!(checksums_ok(&FIXTURE, &p));
        let mut bad = FIXTURE;
        bad[30] ^= 1;
        assert!(!checksums_ok(&bad, &p));
        // No UDP checksum (0) is accepted.
        let mut none = FIXTURE;
        none[26..28].fill(0);
        none[30] ^= 1;
        assert!(checksums_ok(&none, &p));
    }

    #[test]
    fn parse_leaves_what_is_not_a_whole_udp_datagram() {
        let mut frag = FIXTURE;
        frag[6] = 0x20; // More Fragments
        assert!(parse(&frag).is_none());
        let mut tcp = FIXTURE;
        tcp[9] = 6;
        assert!(parse(&tcp).is_none());
        assert!(parse(&FIXTURE[..27]).is_none());
        let mut long_udp = FIXTURE;
        long_udp[25] = 0x0c; // UDP length beyond the IPv4 total length
        assert!(parse(&long_udp).is_none());
    }

    #[test]
    fn without_headroom_nothing_changes() {
        let p = pool();
        let mut m = p.alloc().unwrap();
        assert!(m.set_data(10, 4));
        let any = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1);
        let f = HeaderFields {
            ttl: 1,
            ident: 0,
            udp_checksum: false,
        };
        assert_eq!(
            encapsulate(&mut m, any, any, f),
            Err(EncapError::NoHeadroom)
        );
        assert_eq!((m.data_offset(), m.len()), (10, 4));
    }
}
