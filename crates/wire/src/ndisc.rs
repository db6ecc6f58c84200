//! ICMPv6 Neighbor Solicitation and Neighbor Advertisement (RFC 4861 sections 4.3 and
//! 4.4) over IPoIB, with the 24-byte IPoIB link-layer address option (RFC 4391 section
//! 9.1.1, see [`crate::ndisc_option`]), from the ICMPv6 header on:
//!
//! ```text
//!  byte 0: type (135 NS, 136 NA)   byte 1: code 0   bytes 2-3: ICMPv6 checksum
//!  bytes 4-7: NS: reserved 0; NA: flags R (0x80) S (0x40) O (0x20), then reserved 0
//!  bytes 8-23: target address
//!  bytes 24..: options (an NS carries the source's link-layer address, an NA the
//!              target's)
//! ```
//!
//! The checksum covers the IPv6 pseudo-header (RFC 4443 section 2.3, RFC 8200 section
//! 8.1), so [`Repr::parse`] and [`Repr::emit`] take the IPv6 source and destination.
//! `parse` applies the message checks of RFC 4861 sections 7.1.1 and 7.1.2 that the
//! message and its addresses decide (checksum, code 0, length, a target that is not
//! multicast, no option of length 0, an address option in the IPoIB form, no source
//! address option from the unspecified address, no Solicited flag to a multicast
//! destination); the hop limit of 255 and the next header are the IPv6 header's, checked
//! by the caller.

use crate::ipoib::HwAddr;
use crate::ipv6::{self, NEXT_HEADER_ICMPV6};
use crate::ndisc_option::{
    self as option, TYPE_SOURCE_LINK_LAYER_ADDR, TYPE_TARGET_LINK_LAYER_ADDR,
};
use crate::{be16, put_be16, Error, Result};

mod field {
    use crate::Field;

    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Field = 2..4;
    pub const FLAGS: usize = 4;
    pub const RESERVED: Field = 4..8;
    pub const TARGET: Field = 8..24;
}

/// Bytes of a solicitation or advertisement without options.
pub const MESSAGE_LEN: usize = field::TARGET.end;
/// ICMPv6 type 135: Neighbor Solicitation.
pub const TYPE_NEIGHBOR_SOLICIT: u8 = 135;
/// ICMPv6 type 136: Neighbor Advertisement.
pub const TYPE_NEIGHBOR_ADVERT: u8 = 136;
/// The hop limit every neighbour-discovery packet is sent with and must arrive with
/// (RFC 4861 sections 7.1.1, 7.1.2: proof that it did not cross a router).
pub const HOP_LIMIT: u8 = 255;

/// Whether the IPv6 packet `ip` (from its header on) looks like a Neighbor Solicitation
/// or Advertisement: version 6, next header ICMPv6 (no extension header), hop limit 255
/// and ICMPv6 type 135 or 136. The data path's cheap test (four byte reads), which
/// decides that a packet goes to the control core; the control core checks the rest
/// ([`Repr::parse`]).
#[inline]
pub fn is_neighbor_discovery(ip: &[u8]) -> bool {
    ip.len() > ipv6::HEADER_LEN
        && ip[0] >> 4 == 6
        && ip[6] == NEXT_HEADER_ICMPV6
        && ip[7] == HOP_LIMIT
        && matches!(
            ip[ipv6::HEADER_LEN],
            TYPE_NEIGHBOR_SOLICIT | TYPE_NEIGHBOR_ADVERT
        )
}

/// The flags of a Neighbor Advertisement (RFC 4861 section 4.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct NeighborFlags(pub u8);

impl NeighborFlags {
    /// R: the sender is a router.
    pub const ROUTER: NeighborFlags = NeighborFlags(0x80);
    /// S: sent in answer to a solicitation.
    pub const SOLICITED: NeighborFlags = NeighborFlags(0x40);
    /// O: the advertisement overrides a cached link-layer address.
    pub const OVERRIDE: NeighborFlags = NeighborFlags(0x20);

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: NeighborFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Both sets of flags.
    pub const fn union(self, other: NeighborFlags) -> NeighborFlags {
        NeighborFlags(self.0 | other.0)
    }
}

/// A read/write view of a solicitation or advertisement at the start of a buffer (the
/// ICMPv6 message: the IPv6 payload).
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

    /// `Err(Truncated)` if the buffer is shorter than the 24 bytes before the options
    /// (RFC 4861: "ICMP length (derived from the IP length) is 24 or more octets").
    /// After `Ok`, no accessor panics.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < MESSAGE_LEN {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The ICMPv6 type.
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// The ICMPv6 code (0).
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// The ICMPv6 checksum field.
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// The advertisement flags (the first reserved byte of a solicitation).
    pub fn flags(&self) -> NeighborFlags {
        NeighborFlags(self.buffer.as_ref()[field::FLAGS])
    }

    /// The target address.
    pub fn target_addr(&self) -> [u8; 16] {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::TARGET]);
        a
    }

    /// Whether the checksum is right for a message (the whole buffer) from `src` to
    /// `dst`.
    pub fn verify_checksum(&self, src: &[u8; 16], dst: &[u8; 16]) -> bool {
        ipv6::checksum_ok(src, dst, NEXT_HEADER_ICMPV6, self.buffer.as_ref())
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The options after the fixed part.
    pub fn options(&self) -> &'a [u8] {
        &self.buffer.as_ref()[MESSAGE_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the ICMPv6 type.
    pub fn set_msg_type(&mut self, v: u8) {
        self.buffer.as_mut()[field::TYPE] = v;
    }

    /// Sets the ICMPv6 code.
    pub fn set_code(&mut self, v: u8) {
        self.buffer.as_mut()[field::CODE] = v;
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, v: u16) {
        put_be16(self.buffer.as_mut(), field::CHECKSUM.start, v);
    }

    /// Sets the flags byte and zeroes the rest of the reserved word.
    pub fn set_flags(&mut self, f: NeighborFlags) {
        let b = self.buffer.as_mut();
        b[field::RESERVED].fill(0);
        b[field::FLAGS] = f.0;
    }

    /// Sets the target address.
    pub fn set_target_addr(&mut self, a: [u8; 16]) {
        self.buffer.as_mut()[field::TARGET].copy_from_slice(&a);
    }

    /// The options, mutably (up to the end of the buffer).
    pub fn options_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[MESSAGE_LEN..]
    }

    /// Computes the checksum of the message (the whole buffer) from `src` to `dst` and
    /// writes it.
    pub fn fill_checksum(&mut self, src: &[u8; 16], dst: &[u8; 16]) {
        self.set_checksum(0);
        let c = ipv6::upper_layer_checksum(src, dst, NEXT_HEADER_ICMPV6, self.buffer.as_ref());
        self.set_checksum(c);
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// A parsed solicitation or advertisement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Repr {
    /// "What is the link-layer address of `target_addr`?", with the sender's own.
    NeighborSolicit {
        /// The address being resolved.
        target_addr: [u8; 16],
        /// The source link-layer address option (absent from duplicate address
        /// detection, whose source is `::`).
        lladdr: Option<HwAddr>,
    },
    /// "`target_addr` is at `lladdr`."
    NeighborAdvert {
        /// R, S and O.
        flags: NeighborFlags,
        /// The address advertised.
        target_addr: [u8; 16],
        /// The target link-layer address option.
        lladdr: Option<HwAddr>,
    },
}

/// The first option of `wanted` type in `options`, checking every option on the way
/// (first one wins, as the kernel's `ndisc_parse_options()` keeps the first of each).
fn find_lladdr(options: &[u8], wanted: u8) -> Result<Option<HwAddr>> {
    let mut rest = options;
    let mut found = None;
    while !rest.is_empty() {
        let opt = option::Packet::new_checked(rest)?;
        if opt.option_type() == wanted && found.is_none() {
            found = match option::Repr::parse(&opt)? {
                option::Repr::SourceLinkLayerAddr(a) | option::Repr::TargetLinkLayerAddr(a) => {
                    Some(a)
                }
                option::Repr::Unknown { .. } => None,
            };
        }
        rest = &rest[opt.option_len()..];
    }
    Ok(found)
}

impl Repr {
    /// Parses the message of an IPv6 packet from `src` to `dst` (the whole buffer is the
    /// ICMPv6 message). `Err(Unsupported)` for other ICMPv6 types; `Err(Malformed)` when
    /// the checksum is wrong or a check of RFC 4861 section 7.1 fails (see the module
    /// docs); the errors of [`Packet::check_len`] and of the options otherwise.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(
        src: &[u8; 16],
        dst: &[u8; 16],
        packet: &Packet<&T>,
    ) -> Result<Repr> {
        packet.check_len()?;
        let t = packet.msg_type();
        if t != TYPE_NEIGHBOR_SOLICIT && t != TYPE_NEIGHBOR_ADVERT {
            return Err(Error::Unsupported);
        }
        if !packet.verify_checksum(src, dst) || packet.code() != 0 {
            return Err(Error::Malformed);
        }
        let target_addr = packet.target_addr();
        if ipv6::is_multicast(&target_addr) {
            return Err(Error::Malformed);
        }
        if t == TYPE_NEIGHBOR_SOLICIT {
            let lladdr = find_lladdr(packet.options(), TYPE_SOURCE_LINK_LAYER_ADDR)?;
            // Duplicate address detection: from ::, to a solicited-node group, and no
            // source address to learn.
            if ipv6::is_unspecified(src) && (lladdr.is_some() || !ipv6::is_solicited_node(dst)) {
                return Err(Error::Malformed);
            }
            return Ok(Repr::NeighborSolicit {
                target_addr,
                lladdr,
            });
        }
        let flags = packet.flags();
        if ipv6::is_multicast(dst) && flags.contains(NeighborFlags::SOLICITED) {
            return Err(Error::Malformed);
        }
        let lladdr = find_lladdr(packet.options(), TYPE_TARGET_LINK_LAYER_ADDR)?;
        Ok(Repr::NeighborAdvert {
            flags: NeighborFlags(flags.0 & 0xe0),
            target_addr,
            lladdr,
        })
    }

    /// Bytes `emit` writes: 24, and 24 more for a link-layer address option.
    pub const fn buffer_len(&self) -> usize {
        let lladdr = match self {
            Repr::NeighborSolicit { lladdr, .. } | Repr::NeighborAdvert { lladdr, .. } => lladdr,
        };
        MESSAGE_LEN
            + if lladdr.is_some() {
                option::LINK_LAYER_OPTION_LEN
            } else {
                0
            }
    }

    /// Writes the message for an IPv6 packet from `src` to `dst`, checksum included.
    /// The checksum covers exactly [`buffer_len`](Self::buffer_len) bytes: the IPv6
    /// payload length must be that.
    ///
    /// # Panics
    /// If the buffer is shorter than [`buffer_len`](Self::buffer_len).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        src: &[u8; 16],
        dst: &[u8; 16],
        packet: &mut Packet<T>,
    ) {
        let len = self.buffer_len();
        let mut p = Packet::new_unchecked(&mut packet.buffer.as_mut()[..len]);
        let (t, flags, target, opt) = match *self {
            Repr::NeighborSolicit {
                target_addr,
                lladdr,
            } => (
                TYPE_NEIGHBOR_SOLICIT,
                NeighborFlags(0),
                target_addr,
                lladdr.map(option::Repr::SourceLinkLayerAddr),
            ),
            Repr::NeighborAdvert {
                flags,
                target_addr,
                lladdr,
            } => (
                TYPE_NEIGHBOR_ADVERT,
                flags,
                target_addr,
                lladdr.map(option::Repr::TargetLinkLayerAddr),
            ),
        };
        p.set_msg_type(t);
        p.set_code(0);
        p.set_flags(flags);
        p.set_target_addr(target);
        if let Some(o) = opt {
            o.emit(&mut option::Packet::new_unchecked(p.options_mut()));
        }
        p.fill_checksum(src, dst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Gid, Qpn};
    extern crate std;
    use proptest::prelude::*;

    pub(crate) const A: [u8; 16] = [
        0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x00, 0x02, 0xc9, 0x03, 0x00, 0x00, 0x00, 0x01,
    ];
    pub(crate) const B: [u8; 16] = [
        0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x00, 0x02, 0xc9, 0x03, 0x00, 0x00, 0x00, 0x02,
    ];

    // fe80::2:c903:0:1 (QPN 0x48) asks the solicited-node group of fe80::2:c903:0:2
    // for its address (RFC 4861 section 4.3 with the RFC 4391 section 9.1.1 option).
    // Checksum 0xa2aa: RFC 1071's sum over the RFC 8200 section 8.1 pseudo-header
    // (computed apart from this crate with Python's struct module, and accepted by
    // smoltcp's Icmpv6Packet::verify_checksum and by tshark: tests/ndisc_crosscheck.rs).
    #[rustfmt::skip]
    pub(crate) const NS: [u8; 48] = [
        0x87, 0x00, 0xa2, 0xaa, 0x00, 0x00, 0x00, 0x00,
        0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x00, 0x02, 0xc9, 0x03, 0x00, 0x00, 0x00, 0x02,
        0x01, 0x03, 0x00, 0x00,
        0x80, 0x00, 0x00, 0x48, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x02, 0xc9, 0x03, 0x00, 0x00, 0x00, 0x01,
    ];

    fn hw_a() -> HwAddr {
        HwAddr::new(
            HwAddr::FLAG_CONNECTED_MODE,
            Qpn::new(0x48).unwrap(),
            Gid::new(Gid::DEFAULT_SUBNET_PREFIX, 0x0002_c903_0000_0001),
        )
    }

    fn ns_bytes() -> [u8; 48] {
        NS
    }

    #[test]
    fn solicitation_deconstruct_construct() {
        let dst = ipv6::solicited_node(&B);
        let b = ns_bytes();
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.msg_type(), 135);
        assert_eq!(p.code(), 0);
        assert_eq!(p.target_addr(), B);
        assert_eq!(p.options().len(), 24);
        assert_eq!(p.checksum(), 0xa2aa);
        assert!(p.verify_checksum(&A, &dst));
        let r = Repr::parse(&A, &dst, &p).unwrap();
        assert_eq!(
            r,
            Repr::NeighborSolicit {
                target_addr: B,
                lladdr: Some(hw_a())
            }
        );
        let mut out = [0xFFu8; 48];
        r.emit(&A, &dst, &mut Packet::new_unchecked(&mut out[..]));
        assert_eq!(out, b);
        assert_eq!(r.buffer_len(), 48);
        // The checksum depends on the pseudo-header: another destination fails it.
        assert_eq!(Repr::parse(&A, &B, &p), Err(Error::Malformed));
    }

    #[test]
    fn advertisement_round_trip() {
        let r = Repr::NeighborAdvert {
            flags: NeighborFlags::SOLICITED.union(NeighborFlags::OVERRIDE),
            target_addr: B,
            lladdr: Some(hw_a()),
        };
        let mut b = [0u8; 48];
        r.emit(&B, &A, &mut Packet::new_unchecked(&mut b[..]));
        assert_eq!(&b[..2], &[136, 0]);
        assert_eq!(&b[4..8], &[0x60, 0, 0, 0]);
        assert_eq!(&b[24..28], &[2, 3, 0, 0]);
        assert_eq!(
            Repr::parse(&B, &A, &Packet::new_checked(&b[..]).unwrap()),
            Ok(r)
        );
        // Solicited to a multicast destination is not allowed (RFC 4861 7.1.2).
        let mut m = [0u8; 48];
        r.emit(&B, &ipv6::ALL_NODES, &mut Packet::new_unchecked(&mut m[..]));
        assert_eq!(
            Repr::parse(&B, &ipv6::ALL_NODES, &Packet::new_unchecked(&m[..])),
            Err(Error::Malformed)
        );
        // Without the option.
        let bare = Repr::NeighborAdvert {
            flags: NeighborFlags::OVERRIDE,
            target_addr: B,
            lladdr: None,
        };
        let mut b = [0u8; 24];
        bare.emit(&B, &ipv6::ALL_NODES, &mut Packet::new_unchecked(&mut b[..]));
        assert_eq!(
            Repr::parse(&B, &ipv6::ALL_NODES, &Packet::new_checked(&b[..]).unwrap()),
            Ok(bare)
        );
    }

    fn reparse(mut b: [u8; 48], src: [u8; 16], dst: [u8; 16]) -> Result<Repr> {
        Packet::new_unchecked(&mut b[..]).fill_checksum(&src, &dst);
        Repr::parse(&src, &dst, &Packet::new_checked(&b[..])?)
    }

    #[test]
    fn rfc4861_checks() {
        let dst = ipv6::solicited_node(&B);
        assert_eq!(Packet::new_checked(&NS[..23]).err(), Some(Error::Truncated));
        // A flipped bit: the checksum fails.
        let mut b = ns_bytes();
        b[40] ^= 1;
        assert_eq!(
            Repr::parse(&A, &dst, &Packet::new_unchecked(&b[..])),
            Err(Error::Malformed)
        );
        // Code 1.
        let mut b = NS;
        b[1] = 1;
        assert_eq!(reparse(b, A, dst), Err(Error::Malformed));
        // A multicast target.
        let mut b = NS;
        b[8..24].copy_from_slice(&ipv6::ALL_NODES);
        assert_eq!(reparse(b, A, dst), Err(Error::Malformed));
        // An option of length 0.
        let mut b = NS;
        b[25] = 0;
        assert_eq!(reparse(b, A, dst), Err(Error::Malformed));
        // An Ethernet-sized source address option: not an IPoIB one.
        let mut b = NS;
        b[25] = 1;
        assert!(reparse(b, A, dst).is_err());
        // Duplicate address detection with a source address option.
        assert_eq!(reparse(NS, ipv6::UNSPECIFIED, dst), Err(Error::Malformed));
        // ... and without it, to the solicited-node group: fine.
        let dad = Repr::NeighborSolicit {
            target_addr: B,
            lladdr: None,
        };
        let mut out = [0u8; 24];
        dad.emit(
            &ipv6::UNSPECIFIED,
            &dst,
            &mut Packet::new_unchecked(&mut out[..]),
        );
        assert_eq!(
            Repr::parse(&ipv6::UNSPECIFIED, &dst, &Packet::new_unchecked(&out[..])),
            Ok(dad)
        );
        // Other ICMPv6 types (an echo request).
        let mut b = NS;
        b[0] = 128;
        assert_eq!(reparse(b, A, dst), Err(Error::Unsupported));
        // Unknown options are skipped; the first address option wins.
        let mut long = [0u8; 80];
        long[..24].copy_from_slice(&NS[..24]);
        long[24..32].copy_from_slice(&[14, 1, 1, 2, 3, 4, 5, 6]); // a nonce
        long[32..56].copy_from_slice(&NS[24..]);
        long[56..80].copy_from_slice(&NS[24..]);
        long[63] = 0x99;
        Packet::new_unchecked(&mut long[..]).fill_checksum(&A, &dst);
        assert_eq!(
            Repr::parse(&A, &dst, &Packet::new_checked(&long[..]).unwrap()),
            Ok(Repr::NeighborSolicit {
                target_addr: B,
                lladdr: Some(hw_a())
            })
        );
    }

    #[test]
    fn the_data_path_test_picks_neighbour_discovery() {
        let dst = ipv6::solicited_node(&B);
        let mut b = [0u8; 88];
        ipv6::Repr {
            src_addr: A,
            dst_addr: dst,
            next_header: NEXT_HEADER_ICMPV6,
            payload_len: 48,
            hop_limit: HOP_LIMIT,
        }
        .emit(&mut ipv6::Packet::new_unchecked(&mut b[..]));
        b[40..].copy_from_slice(&NS);
        assert!(is_neighbor_discovery(&b));
        assert!(!is_neighbor_discovery(&b[..40]));
        for (at, v) in [(0, 0x45), (6, 17), (7, 64), (40, 128)] {
            let mut c = b;
            c[at] = v;
            assert!(!is_neighbor_discovery(&c), "byte {at} = {v}");
        }
    }

    fn any_hwaddr() -> impl Strategy<Value = HwAddr> {
        any::<[u8; 20]>().prop_map(HwAddr::from_bytes)
    }

    proptest! {
        #[test]
        fn emit_parse_round_trip(
            advert in any::<bool>(), flags in 0u8..8, target in any::<[u8; 16]>(),
            lladdr in proptest::option::of(any_hwaddr()), src in any::<[u8; 16]>(),
            dst in any::<[u8; 16]>(),
        ) {
            prop_assume!(!ipv6::is_multicast(&target) && !ipv6::is_unspecified(&src));
            let r = if advert {
                let mut f = NeighborFlags(flags << 5);
                if ipv6::is_multicast(&dst) {
                    f = NeighborFlags(f.0 & !NeighborFlags::SOLICITED.0);
                }
                Repr::NeighborAdvert { flags: f, target_addr: target, lladdr }
            } else {
                Repr::NeighborSolicit { target_addr: target, lladdr }
            };
            let mut b = [0u8; 48];
            let len = r.buffer_len();
            r.emit(&src, &dst, &mut Packet::new_unchecked(&mut b[..len]));
            prop_assert_eq!(Repr::parse(&src, &dst, &Packet::new_checked(&b[..len]).unwrap()), Ok(r));
        }

        #[test]
        fn parse_never_panics(
            data in proptest::collection::vec(any::<u8>(), 0..96), src in any::<[u8; 16]>(),
            dst in any::<[u8; 16]>(), fix in any::<bool>(),
        ) {
            let mut data = data;
            if fix && data.len() >= MESSAGE_LEN {
                // A right checksum half of the time, so the deeper checks run too.
                data[0] = if data[1] & 1 == 0 { 135 } else { 136 };
                Packet::new_unchecked(&mut data[..]).fill_checksum(&src, &dst);
            }
            if let Ok(p) = Packet::new_checked(&data[..]) {
                let _ = (p.flags(), p.target_addr(), p.options());
                if let Ok(r) = Repr::parse(&src, &dst, &p) {
                    prop_assert!(r.buffer_len() <= data.len());
                }
            }
        }
    }
}
