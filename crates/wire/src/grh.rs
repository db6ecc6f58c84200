//! Global Route Header (IBA vol 1, 8.3): 40 bytes laid out like an IPv6 header, present
//! when LRH.LNH = 3 and in the first 40 bytes of every UD receive buffer.
//!
//! ```text
//!  bytes 0-3:  IPVer(4)=6 TClass(8) FlowLabel(20)
//!  bytes 4-5:  PayLen      byte 6: NxtHdr (0x1B = IBA transport)   byte 7: HopLmt
//!  bytes 8-23: SGID        bytes 24-39: DGID
//! ```
//!
//! PayLen counts the bytes after the GRH through the ICRC. [`Packet::check_len`] does not
//! hold the buffer to it: a UD receive buffer holds the GRH as the HCA wrote it, followed
//! by the payload only (no BTH, DETH or ICRC), so PayLen exceeds what follows there.
//! [`Packet::payload`] is everything after the 40 bytes.

use crate::{be16, be32, put_be16, put_be32, Error, Gid, Result};

mod field {
    use crate::Field;

    /// IPVer(4) TClass(8) FlowLabel(20).
    pub const VER_TC_FLOW: Field = 0..4;
    pub const PAY_LEN: Field = 4..6;
    pub const NXT_HDR: usize = 6;
    pub const HOP_LMT: usize = 7;
    pub const SGID: Field = 8..24;
    pub const DGID: Field = 24..40;
}

/// Bytes of a GRH.
pub const HEADER_LEN: usize = field::DGID.end;
/// The IPVer a GRH carries.
pub const IP_VERSION: u8 = 6;
/// NxtHdr for an IBA transport packet (a BTH follows).
pub const NXT_HDR_IBA: u8 = 0x1B;
/// The largest flow label (20 bits).
pub const FLOW_LABEL_MAX: u32 = 0x000F_FFFF;

/// A read/write view of a GRH at the start of a buffer.
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

    /// `Err(Truncated)` if the buffer is shorter than 40 bytes, `Err(Malformed)` if IPVer is
    /// not 6. After `Ok`, no accessor panics.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.ip_version() != IP_VERSION {
            return Err(Error::Malformed);
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn word0(&self) -> u32 {
        be32(self.buffer.as_ref(), field::VER_TC_FLOW.start)
    }

    /// IPVer (6).
    pub fn ip_version(&self) -> u8 {
        (self.word0() >> 28) as u8
    }

    /// Traffic class.
    pub fn traffic_class(&self) -> u8 {
        (self.word0() >> 20) as u8
    }

    /// Flow label (20 bits).
    pub fn flow_label(&self) -> u32 {
        self.word0() & FLOW_LABEL_MAX
    }

    /// PayLen: bytes after the GRH through the ICRC.
    pub fn payload_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::PAY_LEN.start)
    }

    /// NxtHdr ([`NXT_HDR_IBA`] for IBA transport).
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NXT_HDR]
    }

    /// HopLmt.
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LMT]
    }

    /// Source GID.
    pub fn sgid(&self) -> Gid {
        let mut g = [0u8; 16];
        g.copy_from_slice(&self.buffer.as_ref()[field::SGID]);
        Gid(g)
    }

    /// Destination GID.
    pub fn dgid(&self) -> Gid {
        let mut g = [0u8; 16];
        g.copy_from_slice(&self.buffer.as_ref()[field::DGID]);
        Gid(g)
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// Everything after the 40-byte GRH.
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn set_word0(&mut self, v: u32) {
        put_be32(self.buffer.as_mut(), field::VER_TC_FLOW.start, v);
    }

    /// Sets IPVer (low 4 bits).
    pub fn set_ip_version(&mut self, v: u8) {
        let w = (self.word0() & 0x0FFF_FFFF) | (u32::from(v & 0x0F) << 28);
        self.set_word0(w);
    }

    /// Sets the traffic class.
    pub fn set_traffic_class(&mut self, tc: u8) {
        let w = (self.word0() & 0xF00F_FFFF) | (u32::from(tc) << 20);
        self.set_word0(w);
    }

    /// Sets the flow label (low 20 bits).
    pub fn set_flow_label(&mut self, fl: u32) {
        let w = (self.word0() & !FLOW_LABEL_MAX) | (fl & FLOW_LABEL_MAX);
        self.set_word0(w);
    }

    /// Sets PayLen.
    pub fn set_payload_len(&mut self, len: u16) {
        put_be16(self.buffer.as_mut(), field::PAY_LEN.start, len);
    }

    /// Sets NxtHdr.
    pub fn set_next_header(&mut self, v: u8) {
        self.buffer.as_mut()[field::NXT_HDR] = v;
    }

    /// Sets HopLmt.
    pub fn set_hop_limit(&mut self, v: u8) {
        self.buffer.as_mut()[field::HOP_LMT] = v;
    }

    /// Sets the source GID.
    pub fn set_sgid(&mut self, gid: Gid) {
        self.buffer.as_mut()[field::SGID].copy_from_slice(&gid.0);
    }

    /// Sets the destination GID.
    pub fn set_dgid(&mut self, gid: Gid) {
        self.buffer.as_mut()[field::DGID].copy_from_slice(&gid.0);
    }

    /// Everything after the GRH, mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// A parsed GRH.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Traffic class.
    pub traffic_class: u8,
    /// Flow label (20 bits).
    pub flow_label: u32,
    /// PayLen: bytes after the GRH through the ICRC.
    pub payload_len: u16,
    /// NxtHdr ([`NXT_HDR_IBA`] for IBA transport).
    pub next_header: u8,
    /// HopLmt.
    pub hop_limit: u8,
    /// Source GID.
    pub sgid: Gid,
    /// Destination GID.
    pub dgid: Gid,
}

impl Repr {
    /// Parses a checked GRH.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&T>) -> Result<Repr> {
        packet.check_len()?;
        Ok(Repr {
            traffic_class: packet.traffic_class(),
            flow_label: packet.flow_label(),
            payload_len: packet.payload_len(),
            next_header: packet.next_header(),
            hop_limit: packet.hop_limit(),
            sgid: packet.sgid(),
            dgid: packet.dgid(),
        })
    }

    /// Bytes `emit` writes.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the GRH (IPVer 6; flow label bits above 20 are dropped).
    ///
    /// # Panics
    /// If the buffer is shorter than [`HEADER_LEN`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        let w = (u32::from(IP_VERSION) << 28)
            | (u32::from(self.traffic_class) << 20)
            | (self.flow_label & FLOW_LABEL_MAX);
        packet.set_word0(w);
        packet.set_payload_len(self.payload_len);
        packet.set_next_header(self.next_header);
        packet.set_hop_limit(self.hop_limit);
        packet.set_sgid(self.sgid);
        packet.set_dgid(self.dgid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use proptest::prelude::*;

    // A GRH of an IPoIB broadcast from port GID fe80::2:c903:0:1 (Mellanox OUI 00:02:c9 in
    // the port GUID) to the IPv4 broadcast MGID of the default partition,
    // ff12:401b:ffff::ffff:ffff (RFC 4391 section 4 / kernel ipoib ipv4_bcast_addr), laid
    // out per IBA vol 1, 8.3 (fig. 10): IPVer 6, TClass 0, FlowLabel 0, PayLen 84
    // (BTH 12 + DETH 8 + IPoIB 4 + ARP 56 + ICRC 4), NxtHdr 0x1B, HopLmt 0 (link-local).
    #[rustfmt::skip]
    const FIXTURE: [u8; 40] = [
        0x60, 0x00, 0x00, 0x00, 0x00, 0x54, 0x1b, 0x00,
        0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x02, 0xc9, 0x03, 0x00, 0x00, 0x00, 0x01,
        0xff, 0x12, 0x40, 0x1b, 0xff, 0xff, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff,
    ];

    fn repr() -> Repr {
        Repr {
            traffic_class: 0,
            flow_label: 0,
            payload_len: 84,
            next_header: NXT_HDR_IBA,
            hop_limit: 0,
            sgid: Gid::new(Gid::DEFAULT_SUBNET_PREFIX, 0x0002_c903_0000_0001),
            dgid: Gid([
                0xff, 0x12, 0x40, 0x1b, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff,
            ]),
        }
    }

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&FIXTURE[..]).unwrap();
        assert_eq!(p.ip_version(), 6);
        assert_eq!(p.traffic_class(), 0);
        assert_eq!(p.flow_label(), 0);
        assert_eq!(p.payload_len(), 84);
        assert_eq!(p.next_header(), NXT_HDR_IBA);
        assert_eq!(p.hop_limit(), 0);
        assert_eq!(p.sgid(), repr().sgid);
        assert_eq!(p.dgid(), repr().dgid);
        assert!(p.payload().is_empty());
    }

    #[test]
    fn bit_fields_do_not_overlap() {
        // TClass 0xAB, FlowLabel 0xCDEF1 -> 6A BC DE F1 (IPv6 layout, RFC 8200 section 3).
        let mut b = FIXTURE;
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_traffic_class(0xAB);
        p.set_flow_label(0xFCDEF1);
        assert_eq!(&b[..4], &[0x6A, 0xBC, 0xDE, 0xF1]);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(
            (p.ip_version(), p.traffic_class(), p.flow_label()),
            (6, 0xAB, 0xCDEF1)
        );
    }

    #[test]
    fn construct_and_emit() {
        let mut b = [0xEEu8; 40];
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_ip_version(6);
        p.set_traffic_class(0);
        p.set_flow_label(0);
        p.set_payload_len(84);
        p.set_next_header(NXT_HDR_IBA);
        p.set_hop_limit(0);
        p.set_sgid(repr().sgid);
        p.set_dgid(repr().dgid);
        assert_eq!(b, FIXTURE);
        let mut b = [0xEEu8; 40];
        repr().emit(&mut Packet::new_unchecked(&mut b[..]));
        assert_eq!(b, FIXTURE);
        assert_eq!(repr().buffer_len(), 40);
    }

    #[test]
    fn parse() {
        assert_eq!(
            Repr::parse(&Packet::new_unchecked(&FIXTURE[..])),
            Ok(repr())
        );
        assert_eq!(
            Packet::new_checked(&FIXTURE[..39]).err(),
            Some(Error::Truncated)
        );
        let mut b = FIXTURE;
        b[0] = 0x40; // IPVer 4
        assert_eq!(
            Repr::parse(&Packet::new_unchecked(&b[..])),
            Err(Error::Malformed)
        );
    }

    fn any_gid() -> impl Strategy<Value = Gid> {
        any::<[u8; 16]>().prop_map(Gid)
    }

    proptest! {
        #[test]
        fn emit_parse_round_trip(
            tc in any::<u8>(), fl in 0u32..=FLOW_LABEL_MAX, len in any::<u16>(),
            nh in any::<u8>(), hl in any::<u8>(), sgid in any_gid(), dgid in any_gid(),
        ) {
            let r = Repr {
                traffic_class: tc, flow_label: fl, payload_len: len, next_header: nh,
                hop_limit: hl, sgid, dgid,
            };
            let mut b = [0u8; HEADER_LEN + 3];
            r.emit(&mut Packet::new_unchecked(&mut b[..]));
            let p = Packet::new_checked(&b[..]).unwrap();
            prop_assert_eq!(Repr::parse(&p), Ok(r));
            prop_assert_eq!(p.payload().len(), 3);
        }

        #[test]
        fn parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(p) = Packet::new_checked(&data[..]) {
                let _ = (p.flow_label(), p.sgid(), p.dgid(), p.payload());
                prop_assert!(Repr::parse(&p).is_ok());
            }
        }
    }
}
