//! Local Route Header (IBA vol 1, 7.7): the 8 bytes every InfiniBand packet starts with.
//!
//! ```text
//!  byte 0: VL(4) LVer(4)      byte 1: SL(4) rsv(2) LNH(2)
//!  bytes 2-3: DLID            bytes 4-5: rsv(5) PktLen(11)
//!  bytes 6-7: SLID
//! ```
//!
//! PktLen counts 4-byte words from the first byte of the LRH to the last byte of the ICRC
//! (the VCRC is not counted). A [`Packet`] view therefore spans at least `PktLen * 4`
//! bytes; [`Packet::payload`] is what lies between the LRH and the ICRC (the GRH/BTH and
//! everything after them, pad bytes included). Reserved bits are ignored on receive and
//! written as 0.

use crate::{be16, crc, put_be16, Error, Field, Lid, Result};

mod field {
    use crate::Field;

    /// VL (high nibble) and LVer (low nibble).
    pub const VL_LVER: usize = 0;
    /// SL (high nibble), 2 reserved bits, LNH (low 2 bits).
    pub const SL_LNH: usize = 1;
    pub const DLID: Field = 2..4;
    /// 5 reserved bits, then the 11-bit PktLen.
    pub const PKT_LEN: Field = 4..6;
    pub const SLID: Field = 6..8;
}

/// Bytes of an LRH.
pub const HEADER_LEN: usize = field::SLID.end;
/// The only link version IBA defines.
pub const LINK_VERSION: u8 = 0;
/// The largest PktLen the 11-bit field holds, in 4-byte words.
pub const PKT_LEN_MAX: u16 = 0x07FF;
/// VL 15 carries subnet management traffic (SMPs).
pub const VL_MANAGEMENT: u8 = 15;

const PKT_LEN_MASK: u16 = PKT_LEN_MAX;

/// Link Next Header: what follows the LRH.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Lnh {
    /// Raw packet, no IBA transport (no ICRC).
    Raw = 0,
    /// Raw IPv6 or other non-IBA payload (no ICRC).
    IpNonIba = 1,
    /// IBA local: a BTH follows the LRH.
    IbaLocal = 2,
    /// IBA global: a GRH follows the LRH.
    IbaGlobal = 3,
}

impl Lnh {
    /// The LNH in the low 2 bits of `bits` (LRH byte 1); the other bits are ignored.
    pub const fn from_bits(bits: u8) -> Lnh {
        match bits & 0x3 {
            0 => Lnh::Raw,
            1 => Lnh::IpNonIba,
            2 => Lnh::IbaLocal,
            _ => Lnh::IbaGlobal,
        }
    }

    /// The 2-bit code.
    pub const fn bits(self) -> u8 {
        self as u8
    }

    /// Whether the packet carries an ICRC (IBA transport packets do, raw ones do not).
    pub const fn has_icrc(self) -> bool {
        matches!(self, Lnh::IbaLocal | Lnh::IbaGlobal)
    }

    /// Bytes of ICRC this kind of packet carries.
    pub const fn icrc_len(self) -> usize {
        if self.has_icrc() {
            crc::ICRC_LEN
        } else {
            0
        }
    }
}

/// A read/write view of an LRH at the start of a packet buffer.
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

    /// Checks that the buffer holds the LRH and the `PktLen * 4` bytes it announces.
    ///
    /// `Err(Truncated)` if the buffer is shorter than either; `Err(Malformed)` if LVer is
    /// not 0 or PktLen is too small for the LRH (plus the ICRC, for an IBA packet). After
    /// `Ok`, no accessor panics.
    pub fn check_len(&self) -> Result<()> {
        let data = self.buffer.as_ref();
        if data.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.link_version() != LINK_VERSION {
            return Err(Error::Malformed);
        }
        let len = self.packet_len();
        if len < HEADER_LEN + self.lnh().icrc_len() {
            return Err(Error::Malformed);
        }
        if data.len() < len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Virtual lane (0-15); switches may rewrite it hop by hop.
    pub fn vl(&self) -> u8 {
        self.buffer.as_ref()[field::VL_LVER] >> 4
    }

    /// Link version (0).
    pub fn link_version(&self) -> u8 {
        self.buffer.as_ref()[field::VL_LVER] & 0x0F
    }

    /// Service level (0-15).
    pub fn sl(&self) -> u8 {
        self.buffer.as_ref()[field::SL_LNH] >> 4
    }

    /// What follows the LRH.
    pub fn lnh(&self) -> Lnh {
        Lnh::from_bits(self.buffer.as_ref()[field::SL_LNH])
    }

    /// Destination LID.
    pub fn dlid(&self) -> Lid {
        Lid(be16(self.buffer.as_ref(), field::DLID.start))
    }

    /// The PktLen field: 4-byte words from the LRH through the ICRC.
    pub fn pkt_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::PKT_LEN.start) & PKT_LEN_MASK
    }

    /// PktLen in bytes: the LRH through the ICRC.
    pub fn packet_len(&self) -> usize {
        usize::from(self.pkt_len()) * 4
    }

    /// Source LID.
    pub fn slid(&self) -> Lid {
        Lid(be16(self.buffer.as_ref(), field::SLID.start))
    }

    fn payload_range(&self) -> Field {
        HEADER_LEN..self.packet_len() - self.lnh().icrc_len()
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The bytes between the LRH and the ICRC (GRH or BTH onwards, pad included).
    pub fn payload(&self) -> &'a [u8] {
        let range = self.payload_range();
        &self.buffer.as_ref()[range]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the virtual lane (low 4 bits of `vl`).
    pub fn set_vl(&mut self, vl: u8) {
        let b = &mut self.buffer.as_mut()[field::VL_LVER];
        *b = (*b & 0x0F) | (vl << 4);
    }

    /// Sets the link version (low 4 bits).
    pub fn set_link_version(&mut self, lver: u8) {
        let b = &mut self.buffer.as_mut()[field::VL_LVER];
        *b = (*b & 0xF0) | (lver & 0x0F);
    }

    /// Sets the service level (low 4 bits of `sl`).
    pub fn set_sl(&mut self, sl: u8) {
        let b = &mut self.buffer.as_mut()[field::SL_LNH];
        *b = (*b & 0x0F) | (sl << 4);
    }

    /// Sets the link next header.
    pub fn set_lnh(&mut self, lnh: Lnh) {
        let b = &mut self.buffer.as_mut()[field::SL_LNH];
        *b = (*b & !0x03) | lnh.bits();
    }

    /// Sets the destination LID.
    pub fn set_dlid(&mut self, lid: Lid) {
        put_be16(self.buffer.as_mut(), field::DLID.start, lid.0);
    }

    /// Sets PktLen in words (low 11 bits; the reserved bits are cleared).
    pub fn set_pkt_len(&mut self, words: u16) {
        put_be16(
            self.buffer.as_mut(),
            field::PKT_LEN.start,
            words & PKT_LEN_MASK,
        );
    }

    /// Sets the source LID.
    pub fn set_slid(&mut self, lid: Lid) {
        put_be16(self.buffer.as_mut(), field::SLID.start, lid.0);
    }

    /// The bytes between the LRH and the ICRC, mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let range = self.payload_range();
        &mut self.buffer.as_mut()[range]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// A parsed LRH.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Virtual lane (0-15).
    pub vl: u8,
    /// Service level (0-15).
    pub sl: u8,
    /// What follows.
    pub lnh: Lnh,
    /// Destination LID.
    pub dlid: Lid,
    /// Source LID.
    pub slid: Lid,
    /// Bytes between the LRH and the ICRC (headers, payload and pad); a multiple of 4.
    pub payload_len: usize,
}

impl Repr {
    /// Parses a checked LRH.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&T>) -> Result<Repr> {
        packet.check_len()?;
        Ok(Repr {
            vl: packet.vl(),
            sl: packet.sl(),
            lnh: packet.lnh(),
            dlid: packet.dlid(),
            slid: packet.slid(),
            payload_len: packet.payload_range().len(),
        })
    }

    /// Bytes of the header `emit` writes.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Bytes PktLen covers: LRH, payload and ICRC (the VCRC comes on top).
    pub const fn packet_len(&self) -> usize {
        HEADER_LEN + self.payload_len + self.lnh.icrc_len()
    }

    /// Writes the LRH (the payload is the caller's).
    ///
    /// # Panics
    /// If the buffer is shorter than [`HEADER_LEN`], or `payload_len` is not a multiple of 4
    /// or makes the packet longer than [`PKT_LEN_MAX`] words.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        let len = self.packet_len();
        assert!(
            self.payload_len % 4 == 0 && len / 4 <= usize::from(PKT_LEN_MAX),
            "LRH payload_len {} is not a multiple of 4 or too long",
            self.payload_len
        );
        let b = packet.buffer.as_mut();
        b[field::VL_LVER] = (self.vl << 4) | LINK_VERSION;
        b[field::SL_LNH] = (self.sl << 4) | self.lnh.bits();
        // The assert bounds len / 4 by PKT_LEN_MAX, so the cast is exact.
        packet.set_pkt_len((len / 4) as u16);
        packet.set_dlid(self.dlid);
        packet.set_slid(self.slid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use proptest::prelude::*;
    use std::vec::Vec;

    // An IPoIB broadcast ARP request as a native IB local packet, built from the IBA layout
    // (vol 1, fig. 8 / 7.7) with the field values iPXE writes in ib_packet.c `ib_push`
    // (vl_lver = vl << 4; sl_lnh = sl << 4 | lnh; length = htons(len >> 2)):
    // VL 0, LVer 0, SL 0, LNH 2 (BTH follows), DLID 0xC000 (the first MLID OpenSM hands
    // out), PktLen 0x17 words = 92 bytes (LRH 8 + BTH 12 + DETH 8 + IPoIB 4 + RFC 4391 ARP
    // 56 + ICRC 4), SLID 0x0001.
    const FIXTURE: [u8; 8] = [0x00, 0x02, 0xc0, 0x00, 0x00, 0x17, 0x00, 0x01];

    fn frame() -> Vec<u8> {
        let mut f = FIXTURE.to_vec();
        f.resize(0x17 * 4, 0xAA);
        f
    }

    #[test]
    fn deconstruct() {
        let f = frame();
        let p = Packet::new_checked(&f[..]).unwrap();
        assert_eq!(p.vl(), 0);
        assert_eq!(p.link_version(), 0);
        assert_eq!(p.sl(), 0);
        assert_eq!(p.lnh(), Lnh::IbaLocal);
        assert_eq!(p.dlid(), Lid(0xC000));
        assert_eq!(p.pkt_len(), 0x17);
        assert_eq!(p.packet_len(), 92);
        assert_eq!(p.slid(), Lid(1));
        assert_eq!(p.payload().len(), 12 + 8 + 4 + 56);
    }

    #[test]
    fn construct() {
        let mut b = [0xFFu8; 8];
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_vl(0);
        p.set_link_version(0);
        p.set_sl(0);
        p.set_lnh(Lnh::IbaLocal);
        p.set_dlid(Lid(0xC000));
        p.set_pkt_len(0x17);
        p.set_slid(Lid(1));
        // The two reserved bits of byte 1 keep what was there: only emit clears them.
        assert_eq!(b[1], 0x0E);
        let mut b = [0xFFu8; 8];
        repr().emit(&mut Packet::new_unchecked(&mut b[..]));
        assert_eq!(b, FIXTURE);
    }

    fn repr() -> Repr {
        Repr {
            vl: 0,
            sl: 0,
            lnh: Lnh::IbaLocal,
            dlid: Lid(0xC000),
            slid: Lid(1),
            payload_len: 80,
        }
    }

    #[test]
    fn parse_and_emit() {
        let f = frame();
        let r = Repr::parse(&Packet::new_checked(&f[..]).unwrap()).unwrap();
        assert_eq!(r, repr());
        assert_eq!(r.packet_len(), 92);
        assert_eq!(r.buffer_len(), HEADER_LEN);
    }

    #[test]
    fn vl15_smp_fields() {
        // A subnet management packet as described in IBA 7.7 / 3.5.8: VL15, SL 0, LNH 2,
        // permissive DLID 0xFFFF.
        let b = [0xF0, 0x02, 0xFF, 0xFF, 0x00, 0x48, 0x00, 0x05];
        let mut f = b.to_vec();
        f.resize(0x48 * 4, 0);
        let p = Packet::new_checked(&f[..]).unwrap();
        assert_eq!(p.vl(), VL_MANAGEMENT);
        assert_eq!(p.dlid(), Lid::PERMISSIVE);
        assert_eq!(p.packet_len(), 288);
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(
            Packet::new_checked(&FIXTURE[..7]).err(),
            Some(Error::Truncated)
        );
        // PktLen says 92 bytes, only 8 here.
        assert_eq!(
            Packet::new_checked(&FIXTURE[..]).err(),
            Some(Error::Truncated)
        );
        let mut f = frame();
        f[0] = 0x01; // LVer 1
        assert_eq!(Packet::new_checked(&f[..]).err(), Some(Error::Malformed));
        let mut f = frame();
        f[5] = 2; // PktLen 8 bytes: no room for the ICRC of an IBA packet
        assert_eq!(Packet::new_checked(&f[..]).err(), Some(Error::Malformed));
        f[1] = 0x00; // raw: an LRH alone is a (useless but) valid length
        assert!(Packet::new_checked(&f[..]).is_ok());
        // Reserved bits are ignored.
        let mut f = frame();
        f[1] |= 0x0C;
        f[4] |= 0xF8;
        assert_eq!(
            Repr::parse(&Packet::new_checked(&f[..]).unwrap()),
            Ok(repr())
        );
    }

    fn any_repr() -> impl Strategy<Value = Repr> {
        (
            0u8..16,
            0u8..16,
            0u8..4,
            any::<u16>(),
            any::<u16>(),
            0usize..=2045,
        )
            .prop_map(|(vl, sl, lnh, dlid, slid, words)| {
                let lnh = Lnh::from_bits(lnh);
                let max_words = (usize::from(PKT_LEN_MAX) * 4 - HEADER_LEN - lnh.icrc_len()) / 4;
                Repr {
                    vl,
                    sl,
                    lnh,
                    dlid: Lid(dlid),
                    slid: Lid(slid),
                    payload_len: words.min(max_words) * 4,
                }
            })
    }

    proptest! {
        #[test]
        fn emit_parse_round_trip(r in any_repr()) {
            let mut b = std::vec![0u8; r.packet_len()];
            r.emit(&mut Packet::new_unchecked(&mut b[..]));
            let p = Packet::new_checked(&b[..]).unwrap();
            prop_assert_eq!(Repr::parse(&p), Ok(r));
            prop_assert_eq!(p.payload().len(), r.payload_len);
        }

        #[test]
        fn parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..96)) {
            if let Ok(p) = Packet::new_checked(&data[..]) {
                let _ = (p.vl(), p.sl(), p.lnh(), p.dlid(), p.slid(), p.payload());
                let r = Repr::parse(&p).unwrap();
                prop_assert_eq!(r.packet_len(), p.packet_len());
            }
        }
    }
}
