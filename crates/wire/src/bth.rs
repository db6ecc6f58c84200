//! Base Transport Header (IBA vol 1, 9.2): 12 bytes in every IBA transport packet, after
//! the LRH (LNH = 2) or the GRH (LNH = 3).
//!
//! ```text
//!  byte 0: OpCode           byte 1: SE(1) M(1) PadCnt(2) TVer(4)
//!  bytes 2-3: P_Key         byte 4: Resv8a (FECN, BECN, 6 reserved; see below)
//!  bytes 5-7: DestQP        byte 8: A(1) rsv(7)        bytes 9-11: PSN
//! ```
//!
//! PadCnt is the number of pad bytes (0-3) at the end of the payload that round it up to
//! a multiple of 4. Resv8a is a variant field (switches may set it; the ICRC masks it):
//! IBA's congestion control annex (A10) and RoCE put FECN in its bit 7 and BECN in bit 6.
//! [`Repr`] leaves it out and `emit` writes 0. [`Packet::payload`] is everything after the
//! 12 bytes.

use crate::{be16, be32, put_be16, put_be32, Error, PKey, Qpn, Result};

mod field {
    use crate::Field;

    pub const OPCODE: usize = 0;
    /// SE(1) M(1) PadCnt(2) TVer(4).
    pub const FLAGS: usize = 1;
    pub const P_KEY: Field = 2..4;
    pub const RESV8A: usize = 4;
    /// Resv8a then the 24-bit DestQP.
    pub const DEST_QP: Field = 4..8;
    /// A(1) rsv(7) then the 24-bit PSN.
    pub const A_PSN: Field = 8..12;
}

/// Bytes of a BTH.
pub const HEADER_LEN: usize = field::A_PSN.end;
/// The only transport header version IBA defines.
pub const TRANSPORT_VERSION: u8 = 0;
/// The largest PSN (24 bits).
pub const PSN_MAX: u32 = 0x00FF_FFFF;

const SE: u8 = 0x80;
const MIG_REQ: u8 = 0x40;
const FECN: u8 = 0x80;
const BECN: u8 = 0x40;
const ACK_REQ: u32 = 0x8000_0000;

/// A BTH opcode: transport service in the top 3 bits, operation in the low 5 (IBA 9.2.1,
/// table 38).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpCode(pub u8);

impl OpCode {
    /// Unreliable Datagram SEND Only: the opcode of every IPoIB datagram-mode packet.
    pub const UD_SEND_ONLY: OpCode = OpCode(0x64);
    /// Unreliable Datagram SEND Only with Immediate.
    pub const UD_SEND_ONLY_WITH_IMMEDIATE: OpCode = OpCode(0x65);
    /// The transport service bits for Unreliable Datagram (0b011 << 5).
    pub const TRANSPORT_UD: u8 = 0x60;

    /// The transport service bits (top 3 bits).
    pub const fn transport(self) -> u8 {
        self.0 & 0xE0
    }

    /// True for an Unreliable Datagram opcode.
    pub const fn is_ud(self) -> bool {
        self.transport() == Self::TRANSPORT_UD
    }
}

/// A read/write view of a BTH at the start of a buffer.
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

    /// `Err(Truncated)` if the buffer is shorter than 12 bytes, `Err(Malformed)` if TVer is
    /// not 0. After `Ok`, no accessor panics.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.transport_version() != TRANSPORT_VERSION {
            return Err(Error::Malformed);
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// OpCode.
    pub fn opcode(&self) -> OpCode {
        OpCode(self.buffer.as_ref()[field::OPCODE])
    }

    /// SE: the responder should raise a solicited event.
    pub fn solicited_event(&self) -> bool {
        self.flags() & SE != 0
    }

    /// M (MigReq): path migration state.
    pub fn mig_req(&self) -> bool {
        self.flags() & MIG_REQ != 0
    }

    /// PadCnt: pad bytes (0-3) at the end of the payload.
    pub fn pad_count(&self) -> u8 {
        (self.flags() >> 4) & 0x3
    }

    /// TVer (0).
    pub fn transport_version(&self) -> u8 {
        self.flags() & 0x0F
    }

    /// P_Key.
    pub fn pkey(&self) -> PKey {
        PKey(be16(self.buffer.as_ref(), field::P_KEY.start))
    }

    /// FECN (bit 7 of Resv8a).
    pub fn fecn(&self) -> bool {
        self.buffer.as_ref()[field::RESV8A] & FECN != 0
    }

    /// BECN (bit 6 of Resv8a).
    pub fn becn(&self) -> bool {
        self.buffer.as_ref()[field::RESV8A] & BECN != 0
    }

    /// DestQP.
    pub fn dest_qpn(&self) -> Qpn {
        Qpn::from_bits(be32(self.buffer.as_ref(), field::DEST_QP.start))
    }

    /// A: the requester asks for an acknowledgement.
    pub fn ack_req(&self) -> bool {
        be32(self.buffer.as_ref(), field::A_PSN.start) & ACK_REQ != 0
    }

    /// PSN (24 bits).
    pub fn psn(&self) -> u32 {
        be32(self.buffer.as_ref(), field::A_PSN.start) & PSN_MAX
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// Everything after the 12-byte BTH (extended headers, payload, pad and whatever the
    /// buffer holds after them).
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn set_flag(&mut self, at: usize, bit: u8, on: bool) {
        let b = &mut self.buffer.as_mut()[at];
        *b = if on { *b | bit } else { *b & !bit };
    }

    /// Sets the OpCode.
    pub fn set_opcode(&mut self, op: OpCode) {
        self.buffer.as_mut()[field::OPCODE] = op.0;
    }

    /// Sets SE.
    pub fn set_solicited_event(&mut self, on: bool) {
        self.set_flag(field::FLAGS, SE, on);
    }

    /// Sets M.
    pub fn set_mig_req(&mut self, on: bool) {
        self.set_flag(field::FLAGS, MIG_REQ, on);
    }

    /// Sets PadCnt (low 2 bits).
    pub fn set_pad_count(&mut self, pad: u8) {
        let b = &mut self.buffer.as_mut()[field::FLAGS];
        *b = (*b & !0x30) | ((pad & 0x3) << 4);
    }

    /// Sets TVer (low 4 bits).
    pub fn set_transport_version(&mut self, tver: u8) {
        let b = &mut self.buffer.as_mut()[field::FLAGS];
        *b = (*b & 0xF0) | (tver & 0x0F);
    }

    /// Sets the P_Key.
    pub fn set_pkey(&mut self, pkey: PKey) {
        put_be16(self.buffer.as_mut(), field::P_KEY.start, pkey.0);
    }

    /// Sets FECN.
    pub fn set_fecn(&mut self, on: bool) {
        self.set_flag(field::RESV8A, FECN, on);
    }

    /// Sets BECN.
    pub fn set_becn(&mut self, on: bool) {
        self.set_flag(field::RESV8A, BECN, on);
    }

    /// Sets DestQP (Resv8a is kept).
    pub fn set_dest_qpn(&mut self, qpn: Qpn) {
        let b = self.buffer.as_mut();
        let w = (be32(b, field::DEST_QP.start) & !Qpn::MAX) | qpn.get();
        put_be32(b, field::DEST_QP.start, w);
    }

    /// Sets A.
    pub fn set_ack_req(&mut self, on: bool) {
        let b = self.buffer.as_mut();
        let w = be32(b, field::A_PSN.start);
        let w = if on { w | ACK_REQ } else { w & !ACK_REQ };
        put_be32(b, field::A_PSN.start, w);
    }

    /// Sets the PSN (low 24 bits; A and the reserved bits are kept).
    pub fn set_psn(&mut self, psn: u32) {
        let b = self.buffer.as_mut();
        let w = (be32(b, field::A_PSN.start) & !PSN_MAX) | (psn & PSN_MAX);
        put_be32(b, field::A_PSN.start, w);
    }

    /// Everything after the BTH, mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// A parsed BTH (Resv8a and the reserved bits are not kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// OpCode.
    pub opcode: OpCode,
    /// SE.
    pub solicited_event: bool,
    /// M (MigReq).
    pub mig_req: bool,
    /// PadCnt (0-3).
    pub pad_count: u8,
    /// P_Key.
    pub pkey: PKey,
    /// DestQP.
    pub dest_qpn: Qpn,
    /// A.
    pub ack_req: bool,
    /// PSN (24 bits).
    pub psn: u32,
}

impl Repr {
    /// A UD SEND Only header as IPoIB sends it: no SE, M or A, PadCnt for `payload_len`.
    pub const fn ud_send_only(pkey: PKey, dest_qpn: Qpn, psn: u32, payload_len: usize) -> Repr {
        Repr {
            opcode: OpCode::UD_SEND_ONLY,
            solicited_event: false,
            mig_req: false,
            pad_count: pad_count_for(payload_len),
            pkey,
            dest_qpn,
            ack_req: false,
            psn: psn & PSN_MAX,
        }
    }

    /// Parses a checked BTH.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&T>) -> Result<Repr> {
        packet.check_len()?;
        Ok(Repr {
            opcode: packet.opcode(),
            solicited_event: packet.solicited_event(),
            mig_req: packet.mig_req(),
            pad_count: packet.pad_count(),
            pkey: packet.pkey(),
            dest_qpn: packet.dest_qpn(),
            ack_req: packet.ack_req(),
            psn: packet.psn(),
        })
    }

    /// Bytes `emit` writes.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the BTH: TVer 0, Resv8a and reserved bits 0; PadCnt and PSN masked to their
    /// widths.
    ///
    /// # Panics
    /// If the buffer is shorter than [`HEADER_LEN`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        let mut flags = ((self.pad_count & 0x3) << 4) | TRANSPORT_VERSION;
        if self.solicited_event {
            flags |= SE;
        }
        if self.mig_req {
            flags |= MIG_REQ;
        }
        let b = packet.buffer.as_mut();
        b[field::OPCODE] = self.opcode.0;
        b[field::FLAGS] = flags;
        put_be16(b, field::P_KEY.start, self.pkey.0);
        put_be32(b, field::DEST_QP.start, self.dest_qpn.get());
        let ack = if self.ack_req { ACK_REQ } else { 0 };
        put_be32(b, field::A_PSN.start, ack | (self.psn & PSN_MAX));
    }
}

/// The PadCnt for a payload of `payload_len` bytes: the pad that makes it a multiple of 4.
pub const fn pad_count_for(payload_len: usize) -> u8 {
    ((4 - payload_len % 4) % 4) as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use proptest::prelude::*;

    // Captured on a ConnectX-4 Lx: a RoCEv2 CNP, bytes 0x2a..0x36 of the frame in scapy's
    // test/contrib/roce.uts ("RoCE CNP captured on ConnectX-4 Lx"):
    // 0x0020:  .... .... .... .... .... 8100 ffff 4000
    // 0x0030:  0118 0000 0000
    // OpCode 0x81 (CNP), flags 0, P_Key 0xffff, Resv8a 0x40 (BECN), DestQP 0x000118,
    // A 0, PSN 0.
    const CNP: [u8; 12] = [
        0x81, 0x00, 0xff, 0xff, 0x40, 0x00, 0x01, 0x18, 0x00, 0x00, 0x00, 0x00,
    ];

    // scapy test/contrib/roce.uts, "RoCE layer": BTH(opcode='UC_SEND_ONLY', migreq=1,
    // padcount=2, pkey=0xffff, dqpn=211, psn=13571856) -> 24 60 ffff 00 0000d3 00 cf1710.
    const UC: [u8; 12] = [
        0x24, 0x60, 0xff, 0xff, 0x00, 0x00, 0x00, 0xd3, 0x00, 0xcf, 0x17, 0x10,
    ];

    // UD SEND Only to the multicast QPN as IPoIB sends to a group (IBA 9.2, table 38 opcode
    // 0x64; QPN 0xFFFFFF per IBA 10.5.2.1 / kernel IB_MULTICAST_QPN), P_Key 0xffff, PSN 0.
    const UD_MCAST: [u8; 12] = [
        0x64, 0x00, 0xff, 0xff, 0x00, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00,
    ];

    #[test]
    fn deconstruct_captured_cnp() {
        let p = Packet::new_checked(&CNP[..]).unwrap();
        assert_eq!(p.opcode(), OpCode(0x81));
        assert!(!p.solicited_event() && !p.mig_req());
        assert_eq!(p.pad_count(), 0);
        assert_eq!(p.transport_version(), 0);
        assert_eq!(p.pkey(), PKey::DEFAULT);
        assert!(!p.fecn());
        assert!(p.becn());
        assert_eq!(p.dest_qpn(), Qpn::new(0x118).unwrap());
        assert!(!p.ack_req());
        assert_eq!(p.psn(), 0);
        assert!(p.payload().is_empty());
        // Resv8a is not part of the Repr; emit writes 0 there.
        let r = Repr::parse(&p).unwrap();
        let mut b = [0u8; 12];
        r.emit(&mut Packet::new_unchecked(&mut b[..]));
        let mut expect = CNP;
        expect[4] = 0;
        assert_eq!(b, expect);
    }

    #[test]
    fn uc_example_round_trip() {
        let r = Repr::parse(&Packet::new_checked(&UC[..]).unwrap()).unwrap();
        assert_eq!(
            r,
            Repr {
                opcode: OpCode(0x24),
                solicited_event: false,
                mig_req: true,
                pad_count: 2,
                pkey: PKey(0xffff),
                dest_qpn: Qpn::new(211).unwrap(),
                ack_req: false,
                psn: 13_571_856,
            }
        );
        let mut b = [0u8; 12];
        r.emit(&mut Packet::new_unchecked(&mut b[..]));
        assert_eq!(b, UC);
        assert_eq!(pad_count_for(20), 0); // that packet's payload was 18 + 2 pad
        assert_eq!(pad_count_for(18), 2);
    }

    #[test]
    fn construct_ud_multicast() {
        let mut b = [0xFFu8; 12];
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_opcode(OpCode::UD_SEND_ONLY);
        p.set_solicited_event(false);
        p.set_mig_req(false);
        p.set_pad_count(0);
        p.set_transport_version(0);
        p.set_pkey(PKey::DEFAULT);
        p.set_fecn(false);
        p.set_becn(false);
        p.set_dest_qpn(Qpn::MULTICAST);
        b[4] = 0; // the 6 reserved bits of Resv8a
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_ack_req(false);
        p.set_psn(0);
        b[8] = 0; // the 7 reserved bits after A
        assert_eq!(b, UD_MCAST);
        let r = Repr::ud_send_only(PKey::DEFAULT, Qpn::MULTICAST, 0, 60);
        let mut b = [0xFFu8; 12];
        r.emit(&mut Packet::new_unchecked(&mut b[..]));
        assert_eq!(b, UD_MCAST);
        assert!(OpCode::UD_SEND_ONLY.is_ud());
        assert!(!OpCode(0x24).is_ud());
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(
            Packet::new_checked(&UD_MCAST[..11]).err(),
            Some(Error::Truncated)
        );
        let mut b = UD_MCAST;
        b[1] = 0x01; // TVer 1
        assert_eq!(Packet::new_checked(&b[..]).err(), Some(Error::Malformed));
    }

    fn any_repr() -> impl Strategy<Value = Repr> {
        (
            any::<u8>(),
            any::<bool>(),
            any::<bool>(),
            0u8..4,
            any::<u16>(),
            0u32..=Qpn::MAX,
            any::<bool>(),
            0u32..=PSN_MAX,
        )
            .prop_map(|(op, se, m, pad, pkey, qpn, a, psn)| Repr {
                opcode: OpCode(op),
                solicited_event: se,
                mig_req: m,
                pad_count: pad,
                pkey: PKey(pkey),
                dest_qpn: Qpn::from_bits(qpn),
                ack_req: a,
                psn,
            })
    }

    proptest! {
        #[test]
        fn emit_parse_round_trip(r in any_repr()) {
            let mut b = [0u8; HEADER_LEN];
            r.emit(&mut Packet::new_unchecked(&mut b[..]));
            prop_assert_eq!(Repr::parse(&Packet::new_checked(&b[..]).unwrap()), Ok(r));
        }

        #[test]
        fn parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..24)) {
            if let Ok(p) = Packet::new_checked(&data[..]) {
                let _ = (p.fecn(), p.becn(), p.payload());
                prop_assert!(Repr::parse(&p).is_ok());
            }
        }
    }
}
