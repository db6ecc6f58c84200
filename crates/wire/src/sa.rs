//! The subnet administration (SA) MAD: the common MAD header, then the RMPP header,
//! SM_Key, AttributeOffset and ComponentMask, then 200 bytes of SA data
//! (IBA 15.2.1.1 figure 196, OpenSM `ib_sa_mad_t`).
//!
//! ```text
//!   0..24   common MAD header (`mad` module)
//!  24       RMPPVersion
//!  25       RMPPType
//!  26       RRespTime (bits 7..3) | RMPPFlags (bits 2..0)
//!  27       RMPPStatus
//!  28..32   Data1 (SegmentNumber)
//!  32..36   Data2 (PayloadLength / NewWindowLast)
//!  36..44   SM_Key
//!  44..46   AttributeOffset (in units of 8 bytes)
//!  46..48   Reserved
//!  48..56   ComponentMask
//!  56..256  SA data (the attribute record(s))
//! ```
//!
//! Contract: [`Packet::check_len`] requires a full [`MAD_LEN`]-byte MAD; once it has
//! succeeded no accessor panics. [`SaMad`] builds and parses a whole SA MAD (headers and
//! one MCMemberRecord or PathRecord) without allocating; the simulated SA and the SA
//! client both use it.

use core::ops::{BitAnd, BitOr, BitOrAssign, Not};

use crate::mad::{self, AttributeId, Method, MgmtClass, Status, MAD_LEN, SA_CLASS_VERSION};
use crate::{be16, be32, be64, mcmember, path_record, put_be16, put_be32, put_be64, Error, Result};

/// Offset of the SA data (the record) from the start of the MAD.
pub const DATA_OFFSET: usize = 56;
/// Length of the SA data area.
pub const DATA_LEN: usize = MAD_LEN - DATA_OFFSET;
/// Length of the SA header after the common MAD header (RMPP .. ComponentMask).
pub const SA_HEADER_LEN: usize = DATA_OFFSET - mad::HEADER_LEN;

mod field {
    use crate::Field;

    pub const RMPP_VERSION: usize = 24;
    pub const RMPP_TYPE: usize = 25;
    pub const RMPP_RTIME_FLAGS: usize = 26;
    pub const RMPP_STATUS: usize = 27;
    pub const RMPP_DATA1: Field = 28..32;
    pub const RMPP_DATA2: Field = 32..36;
    pub const SM_KEY: Field = 36..44;
    pub const ATTRIBUTE_OFFSET: Field = 44..46;
    pub const RESERVED: Field = 46..48;
    pub const COMPONENT_MASK: Field = 48..56;
    pub const DATA: Field = 56..256;
}

/// The 2-bit selector in front of MTU, Rate and PacketLifeTime (IBA 15.2.5.16).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(u8)]
pub enum Selector {
    /// Greater than the value given.
    #[default]
    GreaterThan = 0,
    /// Less than the value given.
    LessThan = 1,
    /// Exactly the value given.
    Exactly = 2,
    /// The largest available (smallest for PacketLifeTime).
    Best = 3,
}

impl Selector {
    /// The selector in the top two bits of `byte`.
    pub const fn from_byte(byte: u8) -> Selector {
        match byte >> 6 {
            0 => Selector::GreaterThan,
            1 => Selector::LessThan,
            2 => Selector::Exactly,
            _ => Selector::Best,
        }
    }

    /// `selector << 6 | value & 0x3F`.
    pub const fn pack(self, value: u8) -> u8 {
        ((self as u8) << 6) | (value & 0x3F)
    }
}

/// An SA ComponentMask: which record components a request specifies (IBA 15.2.4).
/// The bit constants live next to each record (`mcmember::mask`, `path_record::mask`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ComponentMask(pub u64);

impl ComponentMask {
    /// No component.
    pub const NONE: ComponentMask = ComponentMask(0);

    /// True if every bit of `other` is set here.
    pub const fn contains(self, other: ComponentMask) -> bool {
        self.0 & other.0 == other.0
    }

    /// True if any bit of `other` is set here.
    pub const fn intersects(self, other: ComponentMask) -> bool {
        self.0 & other.0 != 0
    }

    /// The union.
    pub const fn union(self, other: ComponentMask) -> ComponentMask {
        ComponentMask(self.0 | other.0)
    }
}

impl BitOr for ComponentMask {
    type Output = ComponentMask;
    fn bitor(self, rhs: ComponentMask) -> ComponentMask {
        self.union(rhs)
    }
}

impl BitOrAssign for ComponentMask {
    fn bitor_assign(&mut self, rhs: ComponentMask) {
        self.0 |= rhs.0;
    }
}

impl Not for ComponentMask {
    type Output = ComponentMask;
    fn not(self) -> ComponentMask {
        ComponentMask(!self.0)
    }
}

impl BitAnd for ComponentMask {
    type Output = ComponentMask;
    fn bitand(self, rhs: ComponentMask) -> ComponentMask {
        ComponentMask(self.0 & rhs.0)
    }
}

/// The RMPP header (IBA 13.6.2.1); all zero for the single-packet methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RmppRepr {
    /// RMPPVersion.
    pub version: u8,
    /// RMPPType.
    pub rmpp_type: u8,
    /// RRespTime (5 bits) and RMPPFlags (3 bits) as one byte.
    pub rtime_flags: u8,
    /// RMPPStatus.
    pub status: u8,
    /// Data1 (SegmentNumber).
    pub data1: u32,
    /// Data2 (PayloadLength / NewWindowLast).
    pub data2: u32,
}

/// A read/write view of a whole SA MAD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking its length.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer, checking that it holds a whole MAD.
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// `Err(Truncated)` if the buffer is shorter than a MAD.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < MAD_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The common MAD header of the same bytes.
    pub fn mad(&self) -> mad::Packet<&[u8]> {
        mad::Packet::new_unchecked(self.buffer.as_ref())
    }

    /// RMPPVersion.
    pub fn rmpp_version(&self) -> u8 {
        self.buffer.as_ref()[field::RMPP_VERSION]
    }

    /// RMPPType.
    pub fn rmpp_type(&self) -> u8 {
        self.buffer.as_ref()[field::RMPP_TYPE]
    }

    /// RRespTime and RMPPFlags.
    pub fn rmpp_rtime_flags(&self) -> u8 {
        self.buffer.as_ref()[field::RMPP_RTIME_FLAGS]
    }

    /// RMPPStatus.
    pub fn rmpp_status(&self) -> u8 {
        self.buffer.as_ref()[field::RMPP_STATUS]
    }

    /// RMPP Data1.
    pub fn rmpp_data1(&self) -> u32 {
        be32(self.buffer.as_ref(), field::RMPP_DATA1.start)
    }

    /// RMPP Data2.
    pub fn rmpp_data2(&self) -> u32 {
        be32(self.buffer.as_ref(), field::RMPP_DATA2.start)
    }

    /// SM_Key.
    pub fn sm_key(&self) -> u64 {
        be64(self.buffer.as_ref(), field::SM_KEY.start)
    }

    /// AttributeOffset, in units of 8 bytes.
    pub fn attribute_offset(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ATTRIBUTE_OFFSET.start)
    }

    /// The reserved 16 bits before ComponentMask.
    pub fn reserved(&self) -> u16 {
        be16(self.buffer.as_ref(), field::RESERVED.start)
    }

    /// ComponentMask.
    pub fn component_mask(&self) -> ComponentMask {
        ComponentMask(be64(self.buffer.as_ref(), field::COMPONENT_MASK.start))
    }

    /// The 200-byte SA data area.
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[field::DATA]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// The common MAD header of the same bytes, mutable.
    pub fn mad_mut(&mut self) -> mad::Packet<&mut [u8]> {
        mad::Packet::new_unchecked(self.buffer.as_mut())
    }

    /// Sets the RMPP header.
    pub fn set_rmpp(&mut self, r: &RmppRepr) {
        let b = self.buffer.as_mut();
        b[field::RMPP_VERSION] = r.version;
        b[field::RMPP_TYPE] = r.rmpp_type;
        b[field::RMPP_RTIME_FLAGS] = r.rtime_flags;
        b[field::RMPP_STATUS] = r.status;
        put_be32(b, field::RMPP_DATA1.start, r.data1);
        put_be32(b, field::RMPP_DATA2.start, r.data2);
    }

    /// Sets SM_Key.
    pub fn set_sm_key(&mut self, v: u64) {
        put_be64(self.buffer.as_mut(), field::SM_KEY.start, v);
    }

    /// Sets AttributeOffset (units of 8 bytes).
    pub fn set_attribute_offset(&mut self, v: u16) {
        put_be16(self.buffer.as_mut(), field::ATTRIBUTE_OFFSET.start, v);
    }

    /// Sets the reserved 16 bits.
    pub fn set_reserved(&mut self, v: u16) {
        put_be16(self.buffer.as_mut(), field::RESERVED.start, v);
    }

    /// Sets ComponentMask.
    pub fn set_component_mask(&mut self, v: ComponentMask) {
        put_be64(self.buffer.as_mut(), field::COMPONENT_MASK.start, v.0);
    }

    /// The SA data area, mutable.
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::DATA]
    }
}

/// A parsed SA header: common MAD header plus the SA-specific part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// The common MAD header.
    pub mad: mad::Repr,
    /// The RMPP header.
    pub rmpp: RmppRepr,
    /// SM_Key.
    pub sm_key: u64,
    /// AttributeOffset (units of 8 bytes).
    pub attribute_offset: u16,
    /// ComponentMask.
    pub component_mask: ComponentMask,
}

impl Repr {
    /// Parses the headers of a whole SA MAD. Neither the class nor the class version
    /// is judged here: the SA answers those with a status.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr> {
        packet.check_len()?;
        let mad = mad::Repr::parse(&packet.mad())?;
        Ok(Repr {
            mad,
            rmpp: RmppRepr {
                version: packet.rmpp_version(),
                rmpp_type: packet.rmpp_type(),
                rtime_flags: packet.rmpp_rtime_flags(),
                status: packet.rmpp_status(),
                data1: packet.rmpp_data1(),
                data2: packet.rmpp_data2(),
            },
            sm_key: packet.sm_key(),
            attribute_offset: packet.attribute_offset(),
            component_mask: packet.component_mask(),
        })
    }

    /// Length of the emitted headers (the SA data follows).
    pub const fn buffer_len(&self) -> usize {
        DATA_OFFSET
    }

    /// Writes both headers (reserved fields zero) into a checked packet.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        self.mad.emit(&mut packet.mad_mut());
        packet.set_rmpp(&self.rmpp);
        packet.set_sm_key(self.sm_key);
        packet.set_attribute_offset(self.attribute_offset);
        packet.set_reserved(0);
        packet.set_component_mask(self.component_mask);
    }
}

/// The attribute an [`SaMad`] carries in its SA data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Attribute {
    /// An MCMemberRecord (AttributeID 0x0038).
    McMember(mcmember::Repr),
    /// A PathRecord (AttributeID 0x0035).
    PathRecord(path_record::Repr),
    /// An attribute this crate does not decode; the SA data is not interpreted.
    Other,
}

impl Attribute {
    /// The AttributeID that goes with this attribute (`None` for [`Attribute::Other`]).
    pub const fn id(&self) -> Option<AttributeId> {
        match self {
            Attribute::McMember(_) => Some(AttributeId::MCMEMBER_RECORD),
            Attribute::PathRecord(_) => Some(AttributeId::PATH_RECORD),
            Attribute::Other => None,
        }
    }

    /// AttributeOffset for one record of this attribute, as OpenSM computes it
    /// (`ib_get_attr_offset(sizeof(record))`: 56 / 8 = 7 for MCMemberRecord with its
    /// 4 pad bytes, 64 / 8 = 8 for PathRecord).
    pub const fn attribute_offset(&self) -> u16 {
        match self {
            Attribute::McMember(_) => (mcmember::RECORD_SIZE / 8) as u16,
            Attribute::PathRecord(_) => (path_record::RECORD_LEN / 8) as u16,
            Attribute::Other => 0,
        }
    }
}

/// A whole SA MAD: headers and one record. Build requests with [`SaMad::request`],
/// turn them into bytes with [`SaMad::to_bytes`], read any SA MAD with [`SaMad::parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SaMad {
    /// The headers.
    pub header: Repr,
    /// The record in the SA data.
    pub attribute: Attribute,
}

impl SaMad {
    /// A request with class SubnAdm, class version 2, status 0, zero RMPP header and
    /// SM_Key, AttributeOffset 0, and the AttributeID of `attribute`
    /// (0 for [`Attribute::Other`]).
    pub fn request(
        method: Method,
        transaction_id: u64,
        component_mask: ComponentMask,
        attribute: Attribute,
    ) -> SaMad {
        SaMad {
            header: Repr {
                mad: mad::Repr {
                    mgmt_class: MgmtClass::SUBN_ADM,
                    class_version: SA_CLASS_VERSION,
                    method,
                    status: Status::OK,
                    class_specific: 0,
                    transaction_id,
                    attribute_id: attribute.id().unwrap_or_default(),
                    attribute_modifier: 0,
                },
                rmpp: RmppRepr::default(),
                sm_key: 0,
                attribute_offset: 0,
                component_mask,
            },
            attribute,
        }
    }

    /// Parses a whole SA MAD. The record is decoded for MCMemberRecord and PathRecord;
    /// any other AttributeID gives [`Attribute::Other`].
    pub fn parse(buffer: &[u8]) -> Result<SaMad> {
        let packet = Packet::new_checked(buffer)?;
        let header = Repr::parse(&packet)?;
        let attribute = match header.mad.attribute_id {
            AttributeId::MCMEMBER_RECORD => {
                let p = mcmember::Packet::new_checked(packet.data())?;
                Attribute::McMember(mcmember::Repr::parse(&p)?)
            }
            AttributeId::PATH_RECORD => {
                let p = path_record::Packet::new_checked(packet.data())?;
                Attribute::PathRecord(path_record::Repr::parse(&p)?)
            }
            _ => Attribute::Other,
        };
        Ok(SaMad { header, attribute })
    }

    /// Emits into a buffer of at least [`MAD_LEN`] bytes; SA data after the record is
    /// zeroed. `Err(Truncated)` if the buffer is short.
    pub fn emit(&self, buffer: &mut [u8]) -> Result<()> {
        let mut packet = Packet::new_checked(buffer)?;
        self.header.emit(&mut packet);
        let data = packet.data_mut();
        data.fill(0);
        match &self.attribute {
            Attribute::McMember(r) => r.emit(&mut mcmember::Packet::new_unchecked(data)),
            Attribute::PathRecord(r) => r.emit(&mut path_record::Packet::new_unchecked(data)),
            Attribute::Other => {}
        }
        Ok(())
    }

    /// The MAD as bytes.
    pub fn to_bytes(&self) -> [u8; MAD_LEN] {
        let mut out = [0u8; MAD_LEN];
        // Cannot fail: the buffer is exactly MAD_LEN long.
        let _ = self.emit(&mut out);
        out
    }

    /// Total length on the wire.
    pub const fn buffer_len(&self) -> usize {
        MAD_LEN
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcmember::{mask as mcm, JoinState};
    use crate::{Gid, Lid, PKey, QKey, Rate};

    const BCAST: Gid = Gid([
        0xff, 0x12, 0x40, 0x1b, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff,
    ]);

    #[test]
    fn offsets_match_opensm_ib_sa_mad_t() {
        // OpenSM include/iba/ib_types.h ib_sa_mad_t: 24-byte ib_mad_t, rmpp_version,
        // rmpp_type, rmpp_flags, rmpp_status, seg_num(32), paylen_newwin(32),
        // sm_key(64), attr_offset(16), resv3(16), comp_mask(64), data[200];
        // IB_SA_MAD_HDR_SIZE = sizeof(ib_sa_mad_t) - IB_SA_DATA_SIZE = 56.
        assert_eq!(DATA_OFFSET, 56);
        assert_eq!(DATA_LEN, 200);
        assert_eq!(field::SM_KEY, 36..44);
        assert_eq!(field::ATTRIBUTE_OFFSET, 44..46);
        assert_eq!(field::COMPONENT_MASK, 48..56);
    }

    #[test]
    fn selector_packing() {
        // OpenSM osm_prtn_add_mcgroup: mtu = 4 | (2 << 6) = 0x84, rate = 3 | (2 << 6) = 0x83.
        assert_eq!(Selector::Exactly.pack(4), 0x84);
        assert_eq!(Selector::Exactly.pack(3), 0x83);
        assert_eq!(Selector::from_byte(0x84), Selector::Exactly);
        assert_eq!(Selector::from_byte(0xC5), Selector::Best);
    }

    fn join_request() -> SaMad {
        let rec = mcmember::Repr {
            mgid: BCAST,
            port_gid: Gid::new(Gid::DEFAULT_SUBNET_PREFIX, 0x0002_c903_0000_1234),
            join_state: JoinState::FULL_MEMBER,
            ..mcmember::Repr::default()
        };
        SaMad::request(
            Method::SET,
            0x0000_0001_0000_002a,
            mcm::MGID | mcm::PORT_GID | mcm::JOIN_STATE,
            Attribute::McMember(rec),
        )
    }

    #[test]
    fn request_bytes() {
        let b = join_request().to_bytes();
        // Common header: base 1, SubnAdm, class version 2, SubnAdmSet.
        assert_eq!(&b[0..4], &[0x01, 0x03, 0x02, 0x02]);
        assert_eq!(&b[8..16], &[0, 0, 0, 1, 0, 0, 0, 0x2a]);
        assert_eq!(&b[16..18], &[0x00, 0x38]);
        // ComponentMask MGID | PortGID | JoinState = 0x10003.
        assert_eq!(&b[48..56], &[0, 0, 0, 0, 0, 0x01, 0x00, 0x03]);
        assert_eq!(&b[56..72], BCAST.as_bytes());
        // JoinState FullMember in the low nibble of byte 48 of the record.
        assert_eq!(b[56 + 48], 0x01);
        assert!(b[56 + 52..].iter().all(|&x| x == 0));
    }

    #[test]
    fn parse_round_trip() {
        let req = join_request();
        let b = req.to_bytes();
        assert_eq!(SaMad::parse(&b), Ok(req));
        assert_eq!(SaMad::parse(&b[..255]), Err(Error::Truncated));
    }

    #[test]
    fn other_attributes_are_not_decoded() {
        let mut req = join_request();
        req.header.mad.attribute_id = AttributeId::CLASS_PORT_INFO;
        req.attribute = Attribute::Other;
        let b = req.to_bytes();
        assert_eq!(SaMad::parse(&b).unwrap().attribute, Attribute::Other);
    }

    #[test]
    fn path_record_request() {
        let pr = path_record::Repr {
            dgid: Gid::new(Gid::DEFAULT_SUBNET_PREFIX, 2),
            sgid: Gid::new(Gid::DEFAULT_SUBNET_PREFIX, 1),
            numb_path: 1,
            pkey: PKey::DEFAULT,
            ..path_record::Repr::default()
        };
        let m = SaMad::request(
            Method::GET,
            7,
            path_record::mask::DGID | path_record::mask::SGID,
            Attribute::PathRecord(pr),
        );
        let b = m.to_bytes();
        assert_eq!(&b[16..18], &[0x00, 0x35]);
        assert_eq!(SaMad::parse(&b), Ok(m));
        let _ = (Lid(1), QKey(0), Rate::GBPS_10);
    }

    #[cfg(not(miri))]
    mod prop {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn header_round_trip(m in any::<u8>(), tid in any::<u64>(), st in any::<u16>(),
                                 v in any::<u8>(), t in any::<u8>(), f in any::<u8>(), s in any::<u8>(),
                                 d1 in any::<u32>(), d2 in any::<u32>(), key in any::<u64>(),
                                 off in any::<u16>(), cm in any::<u64>(), attr in any::<u16>()) {
                let mut r = SaMad::request(Method(m), tid, ComponentMask(cm), Attribute::Other);
                r.header.mad.status = Status(st);
                r.header.mad.attribute_id = AttributeId(attr);
                r.header.rmpp = RmppRepr { version: v, rmpp_type: t, rtime_flags: f, status: s, data1: d1, data2: d2 };
                r.header.sm_key = key;
                r.header.attribute_offset = off;
                let b = r.to_bytes();
                let h = Repr::parse(&Packet::new_checked(&b[..]).unwrap()).unwrap();
                prop_assert_eq!(h, r.header);
            }

            #[test]
            fn parse_arbitrary_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
                let _ = SaMad::parse(&bytes);
                if let Ok(p) = Packet::new_checked(&bytes[..]) {
                    let _ = (p.reserved(), p.rmpp_data2(), p.data().len(), Repr::parse(&p));
                }
            }
        }
    }
}
