//! One neighbour-discovery option (RFC 4861 section 4.6), and the IPoIB form of the
//! source and target link-layer address options (RFC 4391 section 9.1.1).
//!
//! ```text
//!  byte 0: type   byte 1: length in units of 8 bytes (0 is invalid)   bytes 2..: data
//!
//!  IPoIB link-layer address option (24 bytes, length 3):
//!  byte 0: type (1 source, 2 target)   byte 1: 3   bytes 2-3: reserved, 0
//!  bytes 4-23: the 20-byte IPoIB hardware address ([`HwAddr`])
//! ```
//!
//! The two reserved bytes are the Linux kernel's `ndisc_addr_option_pad()` for
//! `ARPHRD_INFINIBAND` (net/ipv6/ndisc.c): the 20-byte address plus type and length
//! would leave 2 bytes of padding at the end; RFC 4391 puts them before the address so
//! that it starts 4-byte aligned. An address option of any other length is not an IPoIB
//! address (the kernel's `ndisc_opt_addr_data()` refuses it the same way).

use crate::ipoib::HwAddr;
use crate::{Error, Result};

mod field {
    use crate::Field;

    pub const TYPE: usize = 0;
    pub const LENGTH: usize = 1;
    pub const PAD: Field = 2..4;
    pub const LLADDR: Field = 4..24;
}

/// Option type 1: the sender's link-layer address (in solicitations).
pub const TYPE_SOURCE_LINK_LAYER_ADDR: u8 = 1;
/// Option type 2: the target's link-layer address (in advertisements).
pub const TYPE_TARGET_LINK_LAYER_ADDR: u8 = 2;
/// Bytes of the IPoIB link-layer address option.
pub const LINK_LAYER_OPTION_LEN: usize = field::LLADDR.end;
/// Its length field: 3 units of 8 bytes.
pub const LINK_LAYER_OPTION_UNITS: u8 = (LINK_LAYER_OPTION_LEN / 8) as u8;

/// A read/write view of one option at the start of a buffer (the buffer may continue
/// with further options).
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

    /// `Err(Truncated)` if the buffer is shorter than the type and length bytes or than
    /// the option's length; `Err(Malformed)` for a length of 0 (RFC 4861 section 4.6:
    /// "Nodes MUST silently discard an ND packet that contains an option with length
    /// zero"). After `Ok`, no accessor panics.
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() <= field::LENGTH {
            return Err(Error::Truncated);
        }
        if b[field::LENGTH] == 0 {
            return Err(Error::Malformed);
        }
        if b.len() < self.option_len() {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The option type.
    pub fn option_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// The length field, in units of 8 bytes.
    pub fn length(&self) -> u8 {
        self.buffer.as_ref()[field::LENGTH]
    }

    /// Bytes of the option, type and length included.
    pub fn option_len(&self) -> usize {
        usize::from(self.length()) * 8
    }

    /// The IPoIB link-layer address, when the option has the 24-byte IPoIB form
    /// (whatever its type).
    pub fn link_layer_addr(&self) -> Option<HwAddr> {
        if self.length() != LINK_LAYER_OPTION_UNITS {
            return None;
        }
        HwAddr::from_slice(&self.buffer.as_ref()[field::LLADDR])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the option type.
    pub fn set_option_type(&mut self, v: u8) {
        self.buffer.as_mut()[field::TYPE] = v;
    }

    /// Sets the length field (units of 8 bytes).
    pub fn set_length(&mut self, v: u8) {
        self.buffer.as_mut()[field::LENGTH] = v;
    }

    /// Writes the IPoIB link-layer address and zeroes the two reserved bytes before it.
    pub fn set_link_layer_addr(&mut self, a: HwAddr) {
        let b = self.buffer.as_mut();
        b[field::PAD].fill(0);
        b[field::LLADDR].copy_from_slice(a.as_bytes());
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// A parsed option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Repr {
    /// Type 1 in the IPoIB form.
    SourceLinkLayerAddr(HwAddr),
    /// Type 2 in the IPoIB form.
    TargetLinkLayerAddr(HwAddr),
    /// Any other option (prefix information, MTU, nonce, ...): skipped by its length.
    Unknown {
        /// Its type.
        option_type: u8,
        /// Its length field (units of 8 bytes).
        length: u8,
    },
}

impl Repr {
    /// Parses a checked option. `Err(Malformed)` for a source or target link-layer
    /// address option that is not 24 bytes long (not an IPoIB address); the errors of
    /// [`Packet::check_len`] otherwise.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&T>) -> Result<Repr> {
        packet.check_len()?;
        let t = packet.option_type();
        match t {
            TYPE_SOURCE_LINK_LAYER_ADDR | TYPE_TARGET_LINK_LAYER_ADDR => {
                let a = packet.link_layer_addr().ok_or(Error::Malformed)?;
                Ok(if t == TYPE_SOURCE_LINK_LAYER_ADDR {
                    Repr::SourceLinkLayerAddr(a)
                } else {
                    Repr::TargetLinkLayerAddr(a)
                })
            }
            _ => Ok(Repr::Unknown {
                option_type: t,
                length: packet.length(),
            }),
        }
    }

    /// Bytes `emit` writes: 24 for an address, the length field's for another option.
    pub const fn buffer_len(&self) -> usize {
        match self {
            Repr::SourceLinkLayerAddr(_) | Repr::TargetLinkLayerAddr(_) => LINK_LAYER_OPTION_LEN,
            Repr::Unknown { length, .. } => *length as usize * 8,
        }
    }

    /// Writes the option: an address in the IPoIB form; for another option only its
    /// type and length (the data is the caller's).
    ///
    /// # Panics
    /// If the buffer is shorter than [`buffer_len`](Self::buffer_len) (and at least 2).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        match *self {
            Repr::SourceLinkLayerAddr(a) | Repr::TargetLinkLayerAddr(a) => {
                let t = if matches!(self, Repr::SourceLinkLayerAddr(_)) {
                    TYPE_SOURCE_LINK_LAYER_ADDR
                } else {
                    TYPE_TARGET_LINK_LAYER_ADDR
                };
                packet.set_option_type(t);
                packet.set_length(LINK_LAYER_OPTION_UNITS);
                packet.set_link_layer_addr(a);
            }
            Repr::Unknown {
                option_type,
                length,
            } => {
                packet.set_option_type(option_type);
                packet.set_length(length);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Gid, Qpn};
    extern crate std;
    use proptest::prelude::*;

    // A source link-layer address option for QPN 0x48 on port GID fe80::2:c903:0:1 with
    // the connected-mode flag, laid out per RFC 4391 section 9.1.1 (as the kernel's
    // __ndisc_fill_addr_option() writes it for ARPHRD_INFINIBAND: type, length 3, two
    // zero bytes of padding, the 20-byte address).
    #[rustfmt::skip]
    pub(crate) const SLLAO: [u8; 24] = [
        0x01, 0x03, 0x00, 0x00,
        0x80, 0x00, 0x00, 0x48, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x02, 0xc9, 0x03, 0x00, 0x00, 0x00, 0x01,
    ];

    fn hw() -> HwAddr {
        HwAddr::new(
            HwAddr::FLAG_CONNECTED_MODE,
            Qpn::new(0x48).unwrap(),
            Gid::new(Gid::DEFAULT_SUBNET_PREFIX, 0x0002_c903_0000_0001),
        )
    }

    #[test]
    fn deconstruct_construct() {
        let p = Packet::new_checked(&SLLAO[..]).unwrap();
        assert_eq!(p.option_type(), TYPE_SOURCE_LINK_LAYER_ADDR);
        assert_eq!(p.length(), 3);
        assert_eq!(p.option_len(), 24);
        assert_eq!(p.link_layer_addr(), Some(hw()));
        assert_eq!(Repr::parse(&p), Ok(Repr::SourceLinkLayerAddr(hw())));
        let mut b = [0xFFu8; 24];
        Repr::SourceLinkLayerAddr(hw()).emit(&mut Packet::new_unchecked(&mut b[..]));
        assert_eq!(b, SLLAO);
        let mut t = SLLAO;
        t[0] = 2;
        let mut b = [0xFFu8; 24];
        let r = Repr::TargetLinkLayerAddr(hw());
        r.emit(&mut Packet::new_unchecked(&mut b[..]));
        assert_eq!(b, t);
        assert_eq!(r.buffer_len(), 24);
        assert_eq!(Repr::parse(&Packet::new_checked(&t[..]).unwrap()), Ok(r));
    }

    #[test]
    fn rejects_bad_options() {
        assert_eq!(
            Packet::new_checked(&[1u8][..]).err(),
            Some(Error::Truncated)
        );
        assert_eq!(
            Packet::new_checked(&SLLAO[..23]).err(),
            Some(Error::Truncated)
        );
        let mut zero = SLLAO;
        zero[1] = 0;
        assert_eq!(Packet::new_checked(&zero[..]).err(), Some(Error::Malformed));
        // An Ethernet-sized address option (length 1): not an IPoIB address.
        let eth = [1u8, 1, 0, 0x11, 0x22, 0x33, 0x44, 0x55];
        let p = Packet::new_checked(&eth[..]).unwrap();
        assert_eq!(p.link_layer_addr(), None);
        assert_eq!(Repr::parse(&p), Err(Error::Malformed));
        // Other options pass by their length.
        let mtu = [5u8, 1, 0, 0, 0, 0, 0x07, 0xfc];
        assert_eq!(
            Repr::parse(&Packet::new_checked(&mtu[..]).unwrap()),
            Ok(Repr::Unknown {
                option_type: 5,
                length: 1
            })
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(p) = Packet::new_checked(&data[..]) {
                let _ = p.link_layer_addr();
                if let Ok(r) = Repr::parse(&p) {
                    prop_assert!(r.buffer_len() <= data.len());
                }
            }
        }
    }
}
