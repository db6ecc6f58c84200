//! The IPv6 header (RFC 8200 section 3), the upper-layer checksum over its pseudo-header
//! (RFC 8200 section 8.1), and the addresses neighbour discovery over IPoIB needs (RFC
//! 4291: the all-nodes group, solicited-node groups).
//!
//! ```text
//!  bytes 0-3: version (4 bits) = 6, traffic class (8), flow label (20)
//!  bytes 4-5: payload length   byte 6: next header   byte 7: hop limit
//!  bytes 8-23: source address   bytes 24-39: destination address
//! ```
//!
//! Addresses are plain `[u8; 16]` in network order, as IPv4 addresses are `[u8; 4]`
//! elsewhere in this crate. Extension headers are not parsed: `next_header` is the
//! header's own field, and its payload is what follows the 40 bytes.

use crate::{be16, be32, put_be16, put_be32, Error, Result};

mod field {
    use crate::Field;

    pub const VER_TC_FLOW: Field = 0..4;
    pub const LENGTH: Field = 4..6;
    pub const NXT_HDR: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC_ADDR: Field = 8..24;
    pub const DST_ADDR: Field = 24..40;
}

/// Bytes of the IPv6 header.
pub const HEADER_LEN: usize = field::DST_ADDR.end;

/// Next header 17: UDP (IANA protocol numbers).
pub const NEXT_HEADER_UDP: u8 = 17;
/// Next header 58: ICMPv6 (RFC 4443).
pub const NEXT_HEADER_ICMPV6: u8 = 58;

/// `::`, the unspecified address (RFC 4291 section 2.5.2).
pub const UNSPECIFIED: [u8; 16] = [0; 16];
/// `ff02::1`, the link-local all-nodes group (RFC 4291 section 2.7.1).
pub const ALL_NODES: [u8; 16] = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01];

/// Whether `a` is a multicast address (`ff00::/8`, RFC 4291 section 2.7).
pub const fn is_multicast(a: &[u8; 16]) -> bool {
    a[0] == 0xff
}

/// Whether `a` is `::`.
pub const fn is_unspecified(a: &[u8; 16]) -> bool {
    u128::from_be_bytes(*a) == 0
}

/// The solicited-node group of `a`: `ff02::1:ffXX:XXXX`, the low 24 bits of `a` after
/// the prefix `ff02:0:0:0:0:1:ff00::/104` (RFC 4291 section 2.7.1).
pub const fn solicited_node(a: &[u8; 16]) -> [u8; 16] {
    [
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, a[13], a[14], a[15],
    ]
}

/// Whether `a` is a solicited-node group (`ff02::1:ff00:0/104`).
pub const fn is_solicited_node(a: &[u8; 16]) -> bool {
    let p = solicited_node(&[0; 16]);
    let mut i = 0;
    while i < 13 {
        if a[i] != p[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The one's-complement sum (RFC 1071) of `data` added to `sum`, not yet folded; an odd
/// last byte counts as its high half.
pub(crate) fn sum_be16(mut sum: u32, data: &[u8]) -> u32 {
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        sum = sum.wrapping_add(u32::from(u16::from_be_bytes([w[0], w[1]])));
        // Fold now and then so that a 64 KiB datagram cannot overflow.
        if sum & 0x8000_0000 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
    }
    if let [b] = words.remainder() {
        sum = sum.wrapping_add(u32::from(*b) << 8);
    }
    sum
}

/// Folds a one's-complement sum to 16 bits.
pub(crate) const fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The one's-complement sum of the IPv6 pseudo-header (RFC 8200 section 8.1): source,
/// destination, the upper-layer packet length (32 bits), three zero bytes and the next
/// header. Not folded, not complemented.
pub fn pseudo_header_sum(src: &[u8; 16], dst: &[u8; 16], next_header: u8, len: u32) -> u32 {
    let mut sum = sum_be16(0, src);
    sum = sum_be16(sum, dst);
    sum = sum.wrapping_add(len >> 16).wrapping_add(len & 0xffff);
    sum.wrapping_add(u32::from(next_header))
}

/// The upper-layer checksum of `data` (an ICMPv6 message or a UDP datagram whose own
/// checksum field reads zero) sent from `src` to `dst` (RFC 8200 section 8.1): the
/// complement of the one's-complement sum of the pseudo-header and `data`. For UDP a
/// result of 0 is sent as 0xffff (RFC 8200 section 8.1, RFC 768); ICMPv6 sends it as is.
///
/// Over data whose checksum field holds a correct checksum the same sum gives 0 (see
/// [`checksum_ok`]).
pub fn upper_layer_checksum(src: &[u8; 16], dst: &[u8; 16], next_header: u8, data: &[u8]) -> u16 {
    let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    !fold(sum_be16(
        pseudo_header_sum(src, dst, next_header, len),
        data,
    ))
}

/// Whether `data` (checksum field included) carries a correct upper-layer checksum.
pub fn checksum_ok(src: &[u8; 16], dst: &[u8; 16], next_header: u8, data: &[u8]) -> bool {
    upper_layer_checksum(src, dst, next_header, data) == 0
}

/// A read/write view of an IPv6 header at the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it; accessors may panic until
    /// [`check_len`](Self::check_len) succeeds.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer after [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// `Err(Truncated)` if the buffer is shorter than the 40-byte header or than the
    /// header plus its payload length. After `Ok`, no accessor panics (the buffer may be
    /// longer: [`payload`](Packet::payload) ends where the payload length says).
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN || len < HEADER_LEN + usize::from(self.payload_len()) {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The version field (6 for IPv6).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[0] >> 4
    }

    /// The traffic class.
    pub fn traffic_class(&self) -> u8 {
        (be16(self.buffer.as_ref(), 0) >> 4) as u8
    }

    /// The 20-bit flow label.
    pub fn flow_label(&self) -> u32 {
        be32(self.buffer.as_ref(), field::VER_TC_FLOW.start) & 0x000f_ffff
    }

    /// The payload length (bytes after this header, extension headers included).
    pub fn payload_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH.start)
    }

    /// The next header (the protocol of the payload, or an extension header).
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NXT_HDR]
    }

    /// The hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// The source address.
    pub fn src_addr(&self) -> [u8; 16] {
        addr_at(self.buffer.as_ref(), field::SRC_ADDR)
    }

    /// The destination address.
    pub fn dst_addr(&self) -> [u8; 16] {
        addr_at(self.buffer.as_ref(), field::DST_ADDR)
    }
}

fn addr_at(b: &[u8], range: crate::Field) -> [u8; 16] {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[range]);
    a
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The payload: the `payload_len` bytes after the header.
    pub fn payload(&self) -> &'a [u8] {
        let b = self.buffer.as_ref();
        &b[HEADER_LEN..HEADER_LEN + usize::from(self.payload_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the version, traffic class and flow label (the flow label's high bits are
    /// cut to 20).
    pub fn set_ver_tc_flow(&mut self, version: u8, traffic_class: u8, flow_label: u32) {
        let v = u32::from(version & 0x0f) << 28
            | u32::from(traffic_class) << 20
            | (flow_label & 0x000f_ffff);
        put_be32(self.buffer.as_mut(), field::VER_TC_FLOW.start, v);
    }

    /// Sets the payload length.
    pub fn set_payload_len(&mut self, v: u16) {
        put_be16(self.buffer.as_mut(), field::LENGTH.start, v);
    }

    /// Sets the next header.
    pub fn set_next_header(&mut self, v: u8) {
        self.buffer.as_mut()[field::NXT_HDR] = v;
    }

    /// Sets the hop limit.
    pub fn set_hop_limit(&mut self, v: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = v;
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, a: [u8; 16]) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&a);
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, a: [u8; 16]) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&a);
    }

    /// The payload, mutably (up to the end of the buffer).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// A parsed IPv6 header. Traffic class and flow label are not kept: `emit` writes 0
/// for both (RFC 8200 section 6: a source that does not label its flows sends 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// The source address.
    pub src_addr: [u8; 16],
    /// The destination address.
    pub dst_addr: [u8; 16],
    /// The next header.
    pub next_header: u8,
    /// The payload length.
    pub payload_len: u16,
    /// The hop limit.
    pub hop_limit: u8,
}

impl Repr {
    /// Parses a checked header. `Err(Malformed)` unless the version is 6; the errors of
    /// [`Packet::check_len`] otherwise.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&T>) -> Result<Repr> {
        packet.check_len()?;
        if packet.version() != 6 {
            return Err(Error::Malformed);
        }
        Ok(Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            next_header: packet.next_header(),
            payload_len: packet.payload_len(),
            hop_limit: packet.hop_limit(),
        })
    }

    /// Bytes `emit` writes (the header only).
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header.
    ///
    /// # Panics
    /// If the buffer is shorter than [`HEADER_LEN`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_ver_tc_flow(6, 0, 0);
        packet.set_payload_len(self.payload_len);
        packet.set_next_header(self.next_header);
        packet.set_hop_limit(self.hop_limit);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use proptest::prelude::*;

    // An IPv6 header for a Neighbor Solicitation from fe80::2:c903:0:1 to the
    // solicited-node group of fe80::2:c903:0:2 (RFC 4861 section 4.3: hop limit 255),
    // payload 48 bytes (24 of NS, 24 of the IPoIB link-layer option), next header 58.
    #[rustfmt::skip]
    const NS_HDR: [u8; 40] = [
        0x60, 0x00, 0x00, 0x00, 0x00, 0x30, 0x3a, 0xff,
        0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x00, 0x02, 0xc9, 0x03, 0x00, 0x00, 0x00, 0x01,
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, 0x00, 0x00, 0x02,
    ];

    const SRC: [u8; 16] = [
        0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x00, 0x02, 0xc9, 0x03, 0x00, 0x00, 0x00, 0x01,
    ];
    const TARGET: [u8; 16] = [
        0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x00, 0x02, 0xc9, 0x03, 0x00, 0x00, 0x00, 0x02,
    ];

    fn ns_repr() -> Repr {
        Repr {
            src_addr: SRC,
            dst_addr: solicited_node(&TARGET),
            next_header: NEXT_HEADER_ICMPV6,
            payload_len: 48,
            hop_limit: 255,
        }
    }

    #[test]
    fn deconstruct_construct() {
        let mut full = [0u8; 88];
        full[..40].copy_from_slice(&NS_HDR);
        let p = Packet::new_checked(&full[..]).unwrap();
        assert_eq!(p.version(), 6);
        assert_eq!((p.traffic_class(), p.flow_label()), (0, 0));
        assert_eq!(p.payload_len(), 48);
        assert_eq!(p.next_header(), 58);
        assert_eq!(p.hop_limit(), 255);
        assert_eq!(p.src_addr(), SRC);
        assert_eq!(p.payload().len(), 48);
        assert_eq!(Repr::parse(&p), Ok(ns_repr()));
        let mut b = [0xAAu8; 40];
        ns_repr().emit(&mut Packet::new_unchecked(&mut b[..]));
        assert_eq!(b, NS_HDR);
        // Traffic class and flow label land where RFC 8200 puts them.
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_ver_tc_flow(6, 0xb8, 0x12345);
        assert_eq!(&b[..4], &[0x6b, 0x81, 0x23, 0x45]);
        let p = Packet::new_unchecked(&b[..]);
        assert_eq!((p.traffic_class(), p.flow_label()), (0xb8, 0x12345));
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(
            Packet::new_checked(&NS_HDR[..39]).err(),
            Some(Error::Truncated)
        );
        // The payload length promises 48 bytes that are not there.
        assert_eq!(
            Packet::new_checked(&NS_HDR[..]).err(),
            Some(Error::Truncated)
        );
        let mut b = [0u8; 40];
        b[0] = 0x45;
        assert_eq!(
            Repr::parse(&Packet::new_checked(&b[..]).unwrap()),
            Err(Error::Malformed)
        );
    }

    #[test]
    fn addresses() {
        // RFC 4291 section 2.7.1: 4037::01:800:200E:8C6C -> FF02::1:FF0E:8C6C.
        let a = [
            0x40, 0x37, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x08, 0x00, 0x20, 0x0e, 0x8c, 0x6c,
        ];
        assert_eq!(
            solicited_node(&a),
            [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, 0x0e, 0x8c, 0x6c]
        );
        assert!(is_solicited_node(&solicited_node(&a)));
        assert!(!is_solicited_node(&ALL_NODES));
        assert!(is_multicast(&ALL_NODES) && !is_multicast(&a));
        assert!(is_unspecified(&UNSPECIFIED) && !is_unspecified(&a));
    }

    #[test]
    fn checksum_of_a_known_datagram() {
        // A UDP datagram checked by hand against RFC 8200 section 8.1 and RFC 1071:
        // ::1 -> ::2, ports 1 -> 2, length 10, payload "hi". The pseudo-header sums to
        // 1 + 2 + 10 + 17 = 0x1e, the datagram to 1 + 2 + 10 + 0x6869 = 0x6876: 0x6894.
        let mut src = [0u8; 16];
        src[15] = 1;
        let mut dst = [0u8; 16];
        dst[15] = 2;
        let mut d = [0, 1, 0, 2, 0, 10, 0, 0, b'h', b'i'];
        let c = upper_layer_checksum(&src, &dst, NEXT_HEADER_UDP, &d);
        assert_eq!(c, !0x6894u16);
        d[6..8].copy_from_slice(&c.to_be_bytes());
        assert!(checksum_ok(&src, &dst, NEXT_HEADER_UDP, &d));
        d[9] ^= 1;
        assert!(!checksum_ok(&src, &dst, NEXT_HEADER_UDP, &d));
        // An odd length pads with a zero byte.
        assert_eq!(fold(sum_be16(0, &[0x12, 0x34, 0x56])), 0x6834);
    }

    proptest! {
        #[test]
        fn emit_parse_round_trip(
            src in any::<[u8; 16]>(), dst in any::<[u8; 16]>(), nh in any::<u8>(),
            len in 0u16..64, hl in any::<u8>(),
        ) {
            let r = Repr { src_addr: src, dst_addr: dst, next_header: nh, payload_len: len, hop_limit: hl };
            let mut b = [0u8; 104];
            r.emit(&mut Packet::new_unchecked(&mut b[..]));
            let p = Packet::new_checked(&b[..]).unwrap();
            prop_assert_eq!(Repr::parse(&p), Ok(r));
            prop_assert_eq!(p.payload().len(), usize::from(len));
        }

        #[test]
        fn parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..96)) {
            if let Ok(p) = Packet::new_checked(&data[..]) {
                let _ = (p.payload(), p.flow_label(), p.traffic_class());
                let _ = Repr::parse(&p);
            }
        }

        #[test]
        fn checksum_verifies_what_it_filled(
            src in any::<[u8; 16]>(), dst in any::<[u8; 16]>(),
            mut data in proptest::collection::vec(any::<u8>(), 4..200),
        ) {
            data[2] = 0;
            data[3] = 0;
            let c = upper_layer_checksum(&src, &dst, NEXT_HEADER_ICMPV6, &data);
            data[2..4].copy_from_slice(&c.to_be_bytes());
            prop_assert!(checksum_ok(&src, &dst, NEXT_HEADER_ICMPV6, &data));
        }
    }
}
