//! Datagram Extended Transport Header (IBA vol 1, 9.3.3): 8 bytes after the BTH of every
//! UD packet, carrying what a datagram receiver needs to check and answer it.
//!
//! ```text
//!  bytes 0-3: Q_Key        byte 4: reserved        bytes 5-7: SrcQP
//! ```
//!
//! The receiving QP drops the packet unless Q_Key matches its own (IBA 10.2.4). The
//! reserved byte is ignored on receive and written as 0. [`Packet::payload`] is everything
//! after the 8 bytes.

use crate::{be32, put_be32, Error, QKey, Qpn, Result};

mod field {
    use crate::Field;

    pub const Q_KEY: Field = 0..4;
    /// The reserved byte then the 24-bit SrcQP.
    pub const SRC_QP: Field = 4..8;
}

/// Bytes of a DETH.
pub const HEADER_LEN: usize = field::SRC_QP.end;

/// A read/write view of a DETH at the start of a buffer.
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

    /// `Err(Truncated)` if the buffer is shorter than 8 bytes. After `Ok`, no accessor
    /// panics.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Q_Key.
    pub fn qkey(&self) -> QKey {
        QKey(be32(self.buffer.as_ref(), field::Q_KEY.start))
    }

    /// SrcQP: the sender's QPN, where an answer goes.
    pub fn src_qpn(&self) -> Qpn {
        Qpn::from_bits(be32(self.buffer.as_ref(), field::SRC_QP.start))
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// Everything after the 8-byte DETH.
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the Q_Key.
    pub fn set_qkey(&mut self, qkey: QKey) {
        put_be32(self.buffer.as_mut(), field::Q_KEY.start, qkey.0);
    }

    /// Sets SrcQP and clears the reserved byte.
    pub fn set_src_qpn(&mut self, qpn: Qpn) {
        put_be32(self.buffer.as_mut(), field::SRC_QP.start, qpn.get());
    }

    /// Everything after the DETH, mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// A parsed DETH.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Q_Key.
    pub qkey: QKey,
    /// SrcQP.
    pub src_qpn: Qpn,
}

impl Repr {
    /// Parses a checked DETH.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&T>) -> Result<Repr> {
        packet.check_len()?;
        Ok(Repr {
            qkey: packet.qkey(),
            src_qpn: packet.src_qpn(),
        })
    }

    /// Bytes `emit` writes.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the DETH (reserved byte 0).
    ///
    /// # Panics
    /// If the buffer is shorter than [`HEADER_LEN`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_qkey(self.qkey);
        packet.set_src_qpn(self.src_qpn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use proptest::prelude::*;

    // IPoIB datagram: Q_Key 0x00000B1B, the Q_Key OpenSM gives the IPoIB broadcast group
    // (opensm osm_prtn_config / RFC 4391 section 4 tells senders to use the broadcast
    // group's Q_Key), from QPN 0x48. Layout per IBA vol 1, 9.3.3 (fig. 27).
    const IPOIB: [u8; 8] = [0x00, 0x00, 0x0b, 0x1b, 0x00, 0x00, 0x00, 0x48];
    // A GSI MAD: Q_Key 0x80010000 (IBA 10.5.2.2 well-known QP1 Q_Key, kernel
    // include/rdma/ib_mad.h IB_QP1_QKEY) from QP1.
    const GSI: [u8; 8] = [0x80, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01];

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&IPOIB[..]).unwrap();
        assert_eq!(p.qkey(), QKey::IPOIB_DEFAULT);
        assert_eq!(p.src_qpn(), Qpn::new(0x48).unwrap());
        assert!(p.payload().is_empty());
        let p = Packet::new_checked(&GSI[..]).unwrap();
        assert_eq!(p.qkey(), QKey::GSI);
        assert!(p.qkey().is_controlled());
        assert_eq!(p.src_qpn(), Qpn::GSI);
    }

    #[test]
    fn construct_and_emit() {
        let mut b = [0xFFu8; 8];
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_qkey(QKey::GSI);
        p.set_src_qpn(Qpn::GSI);
        assert_eq!(b, GSI);
        let r = Repr {
            qkey: QKey::IPOIB_DEFAULT,
            src_qpn: Qpn::new(0x48).unwrap(),
        };
        let mut b = [0xFFu8; 8];
        r.emit(&mut Packet::new_unchecked(&mut b[..]));
        assert_eq!(b, IPOIB);
        assert_eq!(
            Repr::parse(&Packet::new_checked(&IPOIB[..]).unwrap()),
            Ok(r)
        );
    }

    #[test]
    fn reserved_byte_ignored_and_short_rejected() {
        let mut b = IPOIB;
        b[4] = 0xAB;
        let r = Repr::parse(&Packet::new_unchecked(&b[..])).unwrap();
        assert_eq!(r.src_qpn, Qpn::new(0x48).unwrap());
        assert_eq!(Packet::new_checked(&b[..7]).err(), Some(Error::Truncated));
    }

    proptest! {
        #[test]
        fn emit_parse_round_trip(qkey in any::<u32>(), qpn in 0u32..=Qpn::MAX) {
            let r = Repr { qkey: QKey(qkey), src_qpn: Qpn::from_bits(qpn) };
            let mut b = [0u8; HEADER_LEN];
            r.emit(&mut Packet::new_unchecked(&mut b[..]));
            prop_assert_eq!(Repr::parse(&Packet::new_checked(&b[..]).unwrap()), Ok(r));
        }

        #[test]
        fn parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..16)) {
            if let Ok(p) = Packet::new_checked(&data[..]) {
                let _ = p.payload();
                prop_assert!(Repr::parse(&p).is_ok());
            }
        }
    }
}
