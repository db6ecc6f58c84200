//! ARP over IPoIB (RFC 4391 section 4; RFC 826 framing): 56 bytes after the IPoIB header
//! with EtherType 0x0806.
//!
//! ```text
//!  bytes 0-1: hardware type 32     bytes 2-3: protocol 0x0800
//!  byte 4: hlen 20   byte 5: plen 4   bytes 6-7: operation (1 request, 2 reply)
//!  bytes 8-27: sender hardware address (IPoIB [`HwAddr`])   bytes 28-31: sender IPv4
//!  bytes 32-51: target hardware address                    bytes 52-55: target IPv4
//! ```
//!
//! The field table assumes hlen 20 and plen 4, so [`Packet::check_len`] rejects other
//! lengths; [`Repr::parse`] also rejects hardware types other than InfiniBand, protocols
//! other than IPv4 and operations other than request and reply.

use crate::ipoib::HwAddr;
use crate::{be16, put_be16, Error, Result};

mod field {
    use crate::Field;

    pub const HTYPE: Field = 0..2;
    pub const PTYPE: Field = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Field = 6..8;
    pub const SHA: Field = 8..28;
    pub const SPA: Field = 28..32;
    pub const THA: Field = 32..52;
    pub const TPA: Field = 52..56;
}

/// Bytes of an IPoIB ARP packet.
pub const PACKET_LEN: usize = field::TPA.end;
/// ARP hardware type for InfiniBand (IANA ARP parameters; RFC 4391 section 4).
pub const HARDWARE_TYPE_INFINIBAND: u16 = 32;
/// ARP protocol type for IPv4.
pub const PROTOCOL_TYPE_IPV4: u16 = 0x0800;
/// Hardware address length: an IPoIB [`HwAddr`].
pub const HARDWARE_LEN: u8 = HwAddr::LEN as u8;
/// Protocol address length: IPv4.
pub const PROTOCOL_LEN: u8 = 4;

/// An ARP operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Who has the target IP? (1)
    Request,
    /// The sender has the sender IP. (2)
    Reply,
    /// Any other code (RARP, InARP, ...), which this crate does not handle.
    Unknown(u16),
}

impl From<u16> for Operation {
    fn from(v: u16) -> Operation {
        match v {
            1 => Operation::Request,
            2 => Operation::Reply,
            other => Operation::Unknown(other),
        }
    }
}

impl From<Operation> for u16 {
    fn from(op: Operation) -> u16 {
        match op {
            Operation::Request => 1,
            Operation::Reply => 2,
            Operation::Unknown(other) => other,
        }
    }
}

fn ipv4_at(b: &[u8], range: crate::Field) -> [u8; 4] {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[range]);
    a
}

fn hwaddr_at(b: &[u8], range: crate::Field) -> HwAddr {
    let mut a = [0u8; HwAddr::LEN];
    a.copy_from_slice(&b[range]);
    HwAddr::from_bytes(a)
}

/// A read/write view of an IPoIB ARP packet at the start of a buffer.
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

    /// `Err(Truncated)` if the buffer is shorter than 56 bytes; `Err(Malformed)` if hlen is
    /// not 20 or plen not 4 (the fixed field table would misplace the addresses). After
    /// `Ok`, no accessor panics.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < PACKET_LEN {
            return Err(Error::Truncated);
        }
        if self.hardware_len() != HARDWARE_LEN || self.protocol_len() != PROTOCOL_LEN {
            return Err(Error::Malformed);
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Hardware type (32 for InfiniBand).
    pub fn hardware_type(&self) -> u16 {
        be16(self.buffer.as_ref(), field::HTYPE.start)
    }

    /// Protocol type (0x0800 for IPv4).
    pub fn protocol_type(&self) -> u16 {
        be16(self.buffer.as_ref(), field::PTYPE.start)
    }

    /// Hardware address length (20).
    pub fn hardware_len(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }

    /// Protocol address length (4).
    pub fn protocol_len(&self) -> u8 {
        self.buffer.as_ref()[field::PLEN]
    }

    /// Operation.
    pub fn operation(&self) -> Operation {
        Operation::from(be16(self.buffer.as_ref(), field::OPER.start))
    }

    /// Sender hardware address.
    pub fn source_hwaddr(&self) -> HwAddr {
        hwaddr_at(self.buffer.as_ref(), field::SHA)
    }

    /// Sender IPv4 address.
    pub fn source_ip(&self) -> [u8; 4] {
        ipv4_at(self.buffer.as_ref(), field::SPA)
    }

    /// Target hardware address (zero in a request).
    pub fn target_hwaddr(&self) -> HwAddr {
        hwaddr_at(self.buffer.as_ref(), field::THA)
    }

    /// Target IPv4 address.
    pub fn target_ip(&self) -> [u8; 4] {
        ipv4_at(self.buffer.as_ref(), field::TPA)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the hardware type.
    pub fn set_hardware_type(&mut self, v: u16) {
        put_be16(self.buffer.as_mut(), field::HTYPE.start, v);
    }

    /// Sets the protocol type.
    pub fn set_protocol_type(&mut self, v: u16) {
        put_be16(self.buffer.as_mut(), field::PTYPE.start, v);
    }

    /// Sets the hardware address length.
    pub fn set_hardware_len(&mut self, v: u8) {
        self.buffer.as_mut()[field::HLEN] = v;
    }

    /// Sets the protocol address length.
    pub fn set_protocol_len(&mut self, v: u8) {
        self.buffer.as_mut()[field::PLEN] = v;
    }

    /// Sets the operation.
    pub fn set_operation(&mut self, op: Operation) {
        put_be16(self.buffer.as_mut(), field::OPER.start, op.into());
    }

    /// Sets the sender hardware address.
    pub fn set_source_hwaddr(&mut self, a: HwAddr) {
        self.buffer.as_mut()[field::SHA].copy_from_slice(a.as_bytes());
    }

    /// Sets the sender IPv4 address.
    pub fn set_source_ip(&mut self, ip: [u8; 4]) {
        self.buffer.as_mut()[field::SPA].copy_from_slice(&ip);
    }

    /// Sets the target hardware address.
    pub fn set_target_hwaddr(&mut self, a: HwAddr) {
        self.buffer.as_mut()[field::THA].copy_from_slice(a.as_bytes());
    }

    /// Sets the target IPv4 address.
    pub fn set_target_ip(&mut self, ip: [u8; 4]) {
        self.buffer.as_mut()[field::TPA].copy_from_slice(&ip);
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// A parsed IPoIB ARP request or reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Request or reply (`emit` writes `Unknown` codes as they are; `parse` rejects them).
    pub operation: Operation,
    /// Sender hardware address.
    pub source_hwaddr: HwAddr,
    /// Sender IPv4 address.
    pub source_ip: [u8; 4],
    /// Target hardware address.
    pub target_hwaddr: HwAddr,
    /// Target IPv4 address.
    pub target_ip: [u8; 4],
}

impl Repr {
    /// Parses a checked packet.
    ///
    /// `Err(Unsupported)` for a hardware type other than 32, a protocol other than IPv4, or
    /// an operation other than request and reply; the errors of
    /// [`Packet::check_len`] otherwise.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&T>) -> Result<Repr> {
        packet.check_len()?;
        if packet.hardware_type() != HARDWARE_TYPE_INFINIBAND
            || packet.protocol_type() != PROTOCOL_TYPE_IPV4
        {
            return Err(Error::Unsupported);
        }
        let operation = match packet.operation() {
            op @ (Operation::Request | Operation::Reply) => op,
            Operation::Unknown(_) => return Err(Error::Unsupported),
        };
        Ok(Repr {
            operation,
            source_hwaddr: packet.source_hwaddr(),
            source_ip: packet.source_ip(),
            target_hwaddr: packet.target_hwaddr(),
            target_ip: packet.target_ip(),
        })
    }

    /// Bytes `emit` writes.
    pub const fn buffer_len(&self) -> usize {
        PACKET_LEN
    }

    /// Writes the whole packet.
    ///
    /// # Panics
    /// If the buffer is shorter than [`PACKET_LEN`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_hardware_type(HARDWARE_TYPE_INFINIBAND);
        packet.set_protocol_type(PROTOCOL_TYPE_IPV4);
        packet.set_hardware_len(HARDWARE_LEN);
        packet.set_protocol_len(PROTOCOL_LEN);
        packet.set_operation(self.operation);
        packet.set_source_hwaddr(self.source_hwaddr);
        packet.set_source_ip(self.source_ip);
        packet.set_target_hwaddr(self.target_hwaddr);
        packet.set_target_ip(self.target_ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Gid, Qpn};
    extern crate std;
    use proptest::prelude::*;

    // "Who has 10.0.0.2? Tell 10.0.0.1", laid out per RFC 4391 section 4 (ar$hrd 32,
    // ar$pro 0x0800, ar$hln 20, ar$pln 4, ar$op 1) with the RFC 826 field order. The
    // sender is QPN 0x48 on port GID fe80::2:c903:0:1 with the connected-mode flag; the
    // target hardware address is zero, as Linux arp_create() leaves it in a request.
    #[rustfmt::skip]
    const REQUEST: [u8; 56] = [
        0x00, 0x20, 0x08, 0x00, 0x14, 0x04, 0x00, 0x01,
        0x80, 0x00, 0x00, 0x48, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x02, 0xc9, 0x03, 0x00, 0x00, 0x00, 0x01,
        0x0a, 0x00, 0x00, 0x01,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x0a, 0x00, 0x00, 0x02,
    ];

    fn sender() -> HwAddr {
        HwAddr::new(
            HwAddr::FLAG_CONNECTED_MODE,
            Qpn::new(0x48).unwrap(),
            Gid::new(Gid::DEFAULT_SUBNET_PREFIX, 0x0002_c903_0000_0001),
        )
    }

    fn request() -> Repr {
        Repr {
            operation: Operation::Request,
            source_hwaddr: sender(),
            source_ip: [10, 0, 0, 1],
            target_hwaddr: HwAddr::default(),
            target_ip: [10, 0, 0, 2],
        }
    }

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&REQUEST[..]).unwrap();
        assert_eq!(p.hardware_type(), 32);
        assert_eq!(p.protocol_type(), 0x0800);
        assert_eq!(p.hardware_len(), 20);
        assert_eq!(p.protocol_len(), 4);
        assert_eq!(p.operation(), Operation::Request);
        assert_eq!(p.source_hwaddr(), sender());
        assert_eq!(p.source_ip(), [10, 0, 0, 1]);
        assert_eq!(p.target_hwaddr(), HwAddr::default());
        assert_eq!(p.target_ip(), [10, 0, 0, 2]);
    }

    #[test]
    fn construct_parse_emit() {
        let mut b = [0xFFu8; 56];
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_hardware_type(32);
        p.set_protocol_type(0x0800);
        p.set_hardware_len(20);
        p.set_protocol_len(4);
        p.set_operation(Operation::Request);
        p.set_source_hwaddr(sender());
        p.set_source_ip([10, 0, 0, 1]);
        p.set_target_hwaddr(HwAddr::default());
        p.set_target_ip([10, 0, 0, 2]);
        assert_eq!(b, REQUEST);
        assert_eq!(
            Repr::parse(&Packet::new_checked(&REQUEST[..]).unwrap()),
            Ok(request())
        );
        let mut b = [0xFFu8; 56];
        request().emit(&mut Packet::new_unchecked(&mut b[..]));
        assert_eq!(b, REQUEST);
        assert_eq!(request().buffer_len(), 56);
        // The reply comes from 10.0.0.2 and is addressed to the requester (opcode 2).
        let reply = Repr {
            operation: Operation::Reply,
            source_hwaddr: HwAddr::new(
                0,
                Qpn::new(0x49).unwrap(),
                Gid::new(Gid::DEFAULT_SUBNET_PREFIX, 2),
            ),
            source_ip: [10, 0, 0, 2],
            target_hwaddr: sender(),
            target_ip: [10, 0, 0, 1],
        };
        let mut b = [0u8; 56];
        reply.emit(&mut Packet::new_unchecked(&mut b[..]));
        assert_eq!(b[6..8], [0x00, 0x02]);
        assert_eq!(Repr::parse(&Packet::new_unchecked(&b[..])), Ok(reply));
    }

    #[test]
    fn rejects_other_kinds() {
        assert_eq!(
            Packet::new_checked(&REQUEST[..55]).err(),
            Some(Error::Truncated)
        );
        // Ethernet ARP (htype 1, hlen 6): the lengths give it away first.
        let mut b = REQUEST;
        b[1] = 0x01;
        b[4] = 6;
        assert_eq!(
            Repr::parse(&Packet::new_unchecked(&b[..])),
            Err(Error::Malformed)
        );
        let mut b = REQUEST;
        b[5] = 16;
        assert_eq!(Packet::new_checked(&b[..]).err(), Some(Error::Malformed));
        let mut b = REQUEST;
        b[1] = 0x01; // htype 1 with IPoIB lengths
        assert_eq!(
            Repr::parse(&Packet::new_unchecked(&b[..])),
            Err(Error::Unsupported)
        );
        let mut b = REQUEST;
        b[2] = 0x86; // protocol 0x86dd
        b[3] = 0xdd;
        assert_eq!(
            Repr::parse(&Packet::new_unchecked(&b[..])),
            Err(Error::Unsupported)
        );
        let mut b = REQUEST;
        b[7] = 8; // InARP request
        assert_eq!(
            Packet::new_unchecked(&b[..]).operation(),
            Operation::Unknown(8)
        );
        assert_eq!(
            Repr::parse(&Packet::new_unchecked(&b[..])),
            Err(Error::Unsupported)
        );
    }

    fn any_hwaddr() -> impl Strategy<Value = HwAddr> {
        any::<[u8; 20]>().prop_map(HwAddr::from_bytes)
    }

    proptest! {
        #[test]
        fn emit_parse_round_trip(
            reply in any::<bool>(), sha in any_hwaddr(), spa in any::<[u8; 4]>(),
            tha in any_hwaddr(), tpa in any::<[u8; 4]>(),
        ) {
            let r = Repr {
                operation: if reply { Operation::Reply } else { Operation::Request },
                source_hwaddr: sha, source_ip: spa, target_hwaddr: tha, target_ip: tpa,
            };
            let mut b = [0u8; PACKET_LEN];
            r.emit(&mut Packet::new_unchecked(&mut b[..]));
            prop_assert_eq!(Repr::parse(&Packet::new_checked(&b[..]).unwrap()), Ok(r));
        }

        #[test]
        fn parse_never_panics(mut data in proptest::collection::vec(any::<u8>(), 0..64)) {
            // Make the lengths right half of the time so the deeper checks run too.
            if data.len() > 5 && data[0] & 1 == 0 {
                data[4] = 20;
                data[5] = 4;
            }
            if let Ok(p) = Packet::new_checked(&data[..]) {
                let _ = (p.operation(), p.source_hwaddr(), p.target_ip());
                let _ = Repr::parse(&p);
            }
        }
    }
}
