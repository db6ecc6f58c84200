//! The management datagram (MAD): 256 bytes, of which the first 24 are the common header
//! every management class shares (IBA 13.4.2, OpenSM `ib_mad_t`).
//!
//! ```text
//!  0       BaseVersion (1)
//!  1       MgmtClass
//!  2       ClassVersion
//!  3       R (bit 7) | Method (bits 6..0)
//!  4..6    Status
//!  6..8    ClassSpecific
//!  8..16   TransactionID
//! 16..18   AttributeID
//! 18..20   Reserved
//! 20..24   AttributeModifier
//! 24..256  class-specific data (for the SA: `sa` module)
//! ```
//!
//! Contract: [`Packet::check_len`] requires the 24-byte common header; once it has
//! succeeded no accessor panics. [`Packet::data`] is whatever follows, up to the buffer's
//! end (a MAD on the wire is always [`MAD_LEN`] bytes, a truncated one is the caller's).

use core::fmt;

use crate::{be16, be32, be64, put_be16, put_be32, put_be64, Error, Result};

/// Length of every MAD on the wire.
pub const MAD_LEN: usize = 256;
/// Length of the common MAD header.
pub const HEADER_LEN: usize = 24;
/// The only MAD base version defined by IBA.
pub const BASE_VERSION: u8 = 1;
/// The SA class version (IBA 15.2.1.1, OpenSM binds the SA with class version 2).
pub const SA_CLASS_VERSION: u8 = 2;

mod field {
    use crate::Field;

    pub const BASE_VERSION: usize = 0;
    pub const MGMT_CLASS: usize = 1;
    pub const CLASS_VERSION: usize = 2;
    pub const METHOD: usize = 3;
    pub const STATUS: Field = 4..6;
    pub const CLASS_SPECIFIC: Field = 6..8;
    pub const TRANSACTION_ID: Field = 8..16;
    pub const ATTRIBUTE_ID: Field = 16..18;
    pub const RESERVED: Field = 18..20;
    pub const ATTRIBUTE_MODIFIER: Field = 20..24;
}

/// A management class (IBA 13.4.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MgmtClass(pub u8);

impl MgmtClass {
    /// Subnet management, LID routed.
    pub const SUBN_LID_ROUTED: MgmtClass = MgmtClass(0x01);
    /// Subnet administration.
    pub const SUBN_ADM: MgmtClass = MgmtClass(0x03);
    /// Performance management.
    pub const PERF: MgmtClass = MgmtClass(0x04);
    /// Subnet management, directed route.
    pub const SUBN_DIRECTED_ROUTE: MgmtClass = MgmtClass(0x81);
}

/// A MAD method byte, response bit (`R`, 0x80) included (IBA 13.4.5, 15.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Method(pub u8);

impl Method {
    /// `Get()`.
    pub const GET: Method = Method(0x01);
    /// `Set()`.
    pub const SET: Method = Method(0x02);
    /// `Send()`.
    pub const SEND: Method = Method(0x03);
    /// `Trap()`.
    pub const TRAP: Method = Method(0x05);
    /// `Report()`.
    pub const REPORT: Method = Method(0x06);
    /// `TrapRepress()`.
    pub const TRAP_REPRESS: Method = Method(0x07);
    /// `SubnAdmGetTable()`.
    pub const GET_TABLE: Method = Method(0x12);
    /// `SubnAdmGetTraceTable()`.
    pub const GET_TRACE_TABLE: Method = Method(0x13);
    /// `SubnAdmGetMulti()`.
    pub const GET_MULTI: Method = Method(0x14);
    /// `SubnAdmDelete()`.
    pub const DELETE: Method = Method(0x15);
    /// `GetResp()`, the answer to `Get()` and `Set()`.
    pub const GET_RESP: Method = Method(0x81);
    /// `ReportResp()`.
    pub const REPORT_RESP: Method = Method(0x86);
    /// `SubnAdmGetTableResp()`.
    pub const GET_TABLE_RESP: Method = Method(0x92);
    /// `SubnAdmGetMultiResp()`.
    pub const GET_MULTI_RESP: Method = Method(0x94);
    /// `SubnAdmDeleteResp()`.
    pub const DELETE_RESP: Method = Method(0x95);
    /// The response bit.
    pub const RESPONSE_BIT: u8 = 0x80;

    /// True if the `R` bit is set.
    pub const fn is_response(self) -> bool {
        self.0 & Self::RESPONSE_BIT != 0
    }

    /// The method that answers this one: `R` set, and `Set()` answered by `GetResp()`
    /// (IBA 13.4.5 table 104; OpenSM `osm_sa_respond`).
    pub const fn response(self) -> Method {
        if self.0 == Self::SET.0 {
            Self::GET_RESP
        } else {
            Method(self.0 | Self::RESPONSE_BIT)
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:02x}", self.0)
    }
}

/// The MAD status field (IBA 13.4.7 table 105; SA class codes in bits 15..8,
/// IBA 15.2.1.1 table 184). Values as OpenSM's `ib_types.h` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Status(pub u16);

impl Status {
    /// Success.
    pub const OK: Status = Status(0x0000);
    /// Busy, MAD discarded (`IB_MAD_STATUS_BUSY`).
    pub const BUSY: Status = Status(0x0001);
    /// Redirect required (`IB_MAD_STATUS_REDIRECT`).
    pub const REDIRECT: Status = Status(0x0002);
    /// Bad (unsupported) base or class version (`IB_MAD_STATUS_UNSUP_CLASS_VER`).
    pub const UNSUP_CLASS_VERSION: Status = Status(0x0004);
    /// Method not supported (`IB_MAD_STATUS_UNSUP_METHOD`).
    pub const UNSUP_METHOD: Status = Status(0x0008);
    /// Method/attribute combination not supported (`IB_MAD_STATUS_UNSUP_METHOD_ATTR`).
    pub const UNSUP_METHOD_ATTR: Status = Status(0x000C);
    /// One or more attribute fields invalid (`IB_MAD_STATUS_INVALID_FIELD`).
    pub const INVALID_FIELD: Status = Status(0x001C);
    /// SA: not enough resources (`IB_SA_MAD_STATUS_NO_RESOURCES`).
    pub const ERR_NO_RESOURCES: Status = Status(0x0100);
    /// SA: invalid request (`IB_SA_MAD_STATUS_REQ_INVALID`).
    pub const ERR_REQ_INVALID: Status = Status(0x0200);
    /// SA: no matching records (`IB_SA_MAD_STATUS_NO_RECORDS`).
    pub const ERR_NO_RECORDS: Status = Status(0x0300);
    /// SA: more than one record for a `Get()` (`IB_SA_MAD_STATUS_TOO_MANY_RECORDS`).
    pub const ERR_TOO_MANY_RECORDS: Status = Status(0x0400);
    /// SA: invalid GID (`IB_SA_MAD_STATUS_INVALID_GID`).
    pub const ERR_REQ_INVALID_GID: Status = Status(0x0500);
    /// SA: insufficient components in the component mask (`IB_SA_MAD_STATUS_INSUF_COMPS`).
    pub const ERR_REQ_INSUFFICIENT_COMPONENTS: Status = Status(0x0600);
    /// SA: request denied (`IB_SA_MAD_STATUS_DENIED`).
    pub const ERR_REQ_DENIED: Status = Status(0x0700);

    /// True for success.
    pub const fn is_ok(self) -> bool {
        self.0 == 0
    }
}

impl From<u16> for Status {
    fn from(v: u16) -> Status {
        Status(v)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:04x}", self.0)
    }
}

/// An attribute identifier (IBA 13.4.8, 15.2.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct AttributeId(pub u16);

impl AttributeId {
    /// ClassPortInfo.
    pub const CLASS_PORT_INFO: AttributeId = AttributeId(0x0001);
    /// Notice.
    pub const NOTICE: AttributeId = AttributeId(0x0002);
    /// InformInfo (OpenSM `IB_MAD_ATTR_INFORM_INFO`; 0x0031 is ServiceRecord).
    pub const INFORM_INFO: AttributeId = AttributeId(0x0003);
    /// NodeRecord.
    pub const NODE_RECORD: AttributeId = AttributeId(0x0011);
    /// PortInfoRecord.
    pub const PORT_INFO_RECORD: AttributeId = AttributeId(0x0012);
    /// ServiceRecord.
    pub const SERVICE_RECORD: AttributeId = AttributeId(0x0031);
    /// P_KeyTableRecord.
    pub const PKEY_TABLE_RECORD: AttributeId = AttributeId(0x0033);
    /// PathRecord.
    pub const PATH_RECORD: AttributeId = AttributeId(0x0035);
    /// MCMemberRecord.
    pub const MCMEMBER_RECORD: AttributeId = AttributeId(0x0038);
    /// MultiPathRecord.
    pub const MULTIPATH_RECORD: AttributeId = AttributeId(0x003A);
    /// InformInfoRecord.
    pub const INFORM_INFO_RECORD: AttributeId = AttributeId(0x00F3);
}

impl fmt::Display for AttributeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:04x}", self.0)
    }
}

/// A read/write view of a MAD's common header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking its length.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer, checking that it holds the common header.
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// `Err(Truncated)` if the buffer is shorter than the common header.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// BaseVersion.
    pub fn base_version(&self) -> u8 {
        self.buffer.as_ref()[field::BASE_VERSION]
    }

    /// MgmtClass.
    pub fn mgmt_class(&self) -> MgmtClass {
        MgmtClass(self.buffer.as_ref()[field::MGMT_CLASS])
    }

    /// ClassVersion.
    pub fn class_version(&self) -> u8 {
        self.buffer.as_ref()[field::CLASS_VERSION]
    }

    /// The method byte, `R` bit included.
    pub fn method(&self) -> Method {
        Method(self.buffer.as_ref()[field::METHOD])
    }

    /// Status.
    pub fn status(&self) -> Status {
        Status(be16(self.buffer.as_ref(), field::STATUS.start))
    }

    /// ClassSpecific.
    pub fn class_specific(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CLASS_SPECIFIC.start)
    }

    /// TransactionID.
    pub fn transaction_id(&self) -> u64 {
        be64(self.buffer.as_ref(), field::TRANSACTION_ID.start)
    }

    /// AttributeID.
    pub fn attribute_id(&self) -> AttributeId {
        AttributeId(be16(self.buffer.as_ref(), field::ATTRIBUTE_ID.start))
    }

    /// The reserved 16 bits after AttributeID.
    pub fn reserved(&self) -> u16 {
        be16(self.buffer.as_ref(), field::RESERVED.start)
    }

    /// AttributeModifier.
    pub fn attribute_modifier(&self) -> u32 {
        be32(self.buffer.as_ref(), field::ATTRIBUTE_MODIFIER.start)
    }

    /// The class-specific bytes after the common header (up to the buffer's end).
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets BaseVersion.
    pub fn set_base_version(&mut self, v: u8) {
        self.buffer.as_mut()[field::BASE_VERSION] = v;
    }

    /// Sets MgmtClass.
    pub fn set_mgmt_class(&mut self, v: MgmtClass) {
        self.buffer.as_mut()[field::MGMT_CLASS] = v.0;
    }

    /// Sets ClassVersion.
    pub fn set_class_version(&mut self, v: u8) {
        self.buffer.as_mut()[field::CLASS_VERSION] = v;
    }

    /// Sets the method byte (`R` bit included).
    pub fn set_method(&mut self, v: Method) {
        self.buffer.as_mut()[field::METHOD] = v.0;
    }

    /// Sets Status.
    pub fn set_status(&mut self, v: Status) {
        put_be16(self.buffer.as_mut(), field::STATUS.start, v.0);
    }

    /// Sets ClassSpecific.
    pub fn set_class_specific(&mut self, v: u16) {
        put_be16(self.buffer.as_mut(), field::CLASS_SPECIFIC.start, v);
    }

    /// Sets TransactionID.
    pub fn set_transaction_id(&mut self, v: u64) {
        put_be64(self.buffer.as_mut(), field::TRANSACTION_ID.start, v);
    }

    /// Sets AttributeID.
    pub fn set_attribute_id(&mut self, v: AttributeId) {
        put_be16(self.buffer.as_mut(), field::ATTRIBUTE_ID.start, v.0);
    }

    /// Sets the reserved 16 bits.
    pub fn set_reserved(&mut self, v: u16) {
        put_be16(self.buffer.as_mut(), field::RESERVED.start, v);
    }

    /// Sets AttributeModifier.
    pub fn set_attribute_modifier(&mut self, v: u32) {
        put_be32(self.buffer.as_mut(), field::ATTRIBUTE_MODIFIER.start, v);
    }

    /// The class-specific bytes after the common header, mutable.
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

/// A parsed common MAD header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// MgmtClass.
    pub mgmt_class: MgmtClass,
    /// ClassVersion.
    pub class_version: u8,
    /// Method, `R` bit included.
    pub method: Method,
    /// Status.
    pub status: Status,
    /// ClassSpecific.
    pub class_specific: u16,
    /// TransactionID.
    pub transaction_id: u64,
    /// AttributeID.
    pub attribute_id: AttributeId,
    /// AttributeModifier.
    pub attribute_modifier: u32,
}

impl Repr {
    /// Parses the common header. `Malformed` for a BaseVersion other than 1 (the rest of
    /// the layout is then unknown); everything else is taken as it is.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr> {
        packet.check_len()?;
        if packet.base_version() != BASE_VERSION {
            return Err(Error::Malformed);
        }
        Ok(Repr {
            mgmt_class: packet.mgmt_class(),
            class_version: packet.class_version(),
            method: packet.method(),
            status: packet.status(),
            class_specific: packet.class_specific(),
            transaction_id: packet.transaction_id(),
            attribute_id: packet.attribute_id(),
            attribute_modifier: packet.attribute_modifier(),
        })
    }

    /// Length of the emitted header.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header (BaseVersion 1, reserved 0) into `packet`, whose length the
    /// caller has checked.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_base_version(BASE_VERSION);
        packet.set_mgmt_class(self.mgmt_class);
        packet.set_class_version(self.class_version);
        packet.set_method(self.method);
        packet.set_status(self.status);
        packet.set_class_specific(self.class_specific);
        packet.set_transaction_id(self.transaction_id);
        packet.set_attribute_id(self.attribute_id);
        packet.set_reserved(0);
        packet.set_attribute_modifier(self.attribute_modifier);
    }
}

/// The error answer to a request, as OpenSM's `osm_sa_send_error` builds it: the whole
/// request echoed with `status`, the method answered (`Set()` by `GetResp()`, others with
/// the `R` bit) and, for the SA class, SM_Key zeroed and AttributeOffset zeroed for
/// `SubnAdmGetTable()`. `None` if `req` is not a request (a response, or a BaseVersion
/// other than 1).
pub fn error_response(req: &[u8; MAD_LEN], status: impl Into<Status>) -> Option<[u8; MAD_LEN]> {
    let mut out = *req;
    let mut p = Packet::new_unchecked(&mut out[..]);
    let method = p.method();
    if p.base_version() != BASE_VERSION || method.is_response() {
        return None;
    }
    p.set_status(status.into());
    p.set_method(method.response());
    if p.mgmt_class() == MgmtClass::SUBN_ADM {
        // ib_sa_mad_t: sm_key at 36..44, attr_offset at 44..46.
        out[36..44].fill(0);
        if method == Method::GET_TABLE {
            out[44..46].fill(0);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    // A SubnAdmGet(PathRecord) header laid out by hand from OpenSM's `ib_mad_t`
    // (include/iba/ib_types.h: base_ver, mgmt_class, class_ver, method, status,
    // class_spec, trans_id, attr_id, resv, attr_mod) and IBA 13.4.2 figure 145.
    const GET_PATH_RECORD: [u8; 24] = [
        0x01, 0x03, 0x02, 0x01, // base 1, SubnAdm, class version 2, Get
        0x00, 0x00, 0x00, 0x00, // status, class specific
        0x00, 0x00, 0x00, 0x00, 0x12, 0x34, 0x56, 0x78, // TID
        0x00, 0x35, 0x00, 0x00, // PathRecord, reserved
        0x00, 0x00, 0x00, 0x00, // attribute modifier
    ];

    fn repr() -> Repr {
        Repr {
            mgmt_class: MgmtClass::SUBN_ADM,
            class_version: SA_CLASS_VERSION,
            method: Method::GET,
            status: Status::OK,
            class_specific: 0,
            transaction_id: 0x1234_5678,
            attribute_id: AttributeId::PATH_RECORD,
            attribute_modifier: 0,
        }
    }

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&GET_PATH_RECORD[..]).unwrap();
        assert_eq!(p.base_version(), 1);
        assert_eq!(p.mgmt_class(), MgmtClass::SUBN_ADM);
        assert_eq!(p.class_version(), 2);
        assert_eq!(p.method(), Method::GET);
        assert_eq!(p.transaction_id(), 0x1234_5678);
        assert_eq!(p.attribute_id(), AttributeId::PATH_RECORD);
        assert!(p.data().is_empty());
    }

    #[test]
    fn construct() {
        let mut buf = [0xAAu8; 24];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        repr().emit(&mut p);
        assert_eq!(buf, GET_PATH_RECORD);
    }

    #[test]
    fn parse() {
        let p = Packet::new_unchecked(&GET_PATH_RECORD[..]);
        assert_eq!(Repr::parse(&p), Ok(repr()));
    }

    #[test]
    fn truncated_and_bad_version() {
        assert_eq!(
            Packet::new_checked(&GET_PATH_RECORD[..23]).unwrap_err(),
            Error::Truncated
        );
        let mut b = GET_PATH_RECORD;
        b[0] = 2;
        assert_eq!(
            Repr::parse(&Packet::new_unchecked(&b[..])),
            Err(Error::Malformed)
        );
    }

    #[test]
    fn response_methods_follow_iba() {
        assert_eq!(Method::SET.response(), Method::GET_RESP);
        assert_eq!(Method::GET.response(), Method::GET_RESP);
        assert_eq!(Method::DELETE.response(), Method::DELETE_RESP);
        assert_eq!(Method::GET_TABLE.response(), Method::GET_TABLE_RESP);
        assert_eq!(Method::REPORT.response(), Method::REPORT_RESP);
        assert!(Method::DELETE_RESP.is_response());
    }

    #[test]
    fn error_response_echoes_the_request() {
        let mut req = [0u8; MAD_LEN];
        req[..24].copy_from_slice(&GET_PATH_RECORD);
        req[3] = Method::SET.0;
        req[36..44].fill(0x11);
        req[100] = 0x5A;
        let resp = error_response(&req, 0x0200u16).unwrap();
        assert_eq!(resp[3], 0x81);
        assert_eq!(&resp[4..6], &[0x02, 0x00]);
        assert_eq!(&resp[36..44], &[0; 8]);
        assert_eq!(resp[100], 0x5A);
        assert_eq!(&resp[8..24], &req[8..24]);
        assert_eq!(error_response(&resp, Status::OK), None);
    }

    #[test]
    fn status_values_match_opensm() {
        // include/iba/ib_types.h IB_MAD_STATUS_* / IB_SA_MAD_STATUS_*.
        assert_eq!(Status::UNSUP_CLASS_VERSION.0, 0x0004);
        assert_eq!(Status::UNSUP_METHOD.0, 0x0008);
        assert_eq!(Status::UNSUP_METHOD_ATTR.0, 0x000C);
        assert_eq!(Status::INVALID_FIELD.0, 0x001C);
        assert_eq!(Status::ERR_NO_RESOURCES.0, 0x0100);
        assert_eq!(Status::ERR_REQ_INVALID.0, 0x0200);
        assert_eq!(Status::ERR_NO_RECORDS.0, 0x0300);
        assert_eq!(Status::ERR_TOO_MANY_RECORDS.0, 0x0400);
        assert_eq!(Status::ERR_REQ_INVALID_GID.0, 0x0500);
        assert_eq!(Status::ERR_REQ_INSUFFICIENT_COMPONENTS.0, 0x0600);
    }

    #[cfg(not(miri))]
    mod prop {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn emit_parse_round_trip(class in any::<u8>(), cv in any::<u8>(), m in any::<u8>(),
                                     st in any::<u16>(), cs in any::<u16>(), tid in any::<u64>(),
                                     attr in any::<u16>(), modifier in any::<u32>()) {
                let r = Repr {
                    mgmt_class: MgmtClass(class), class_version: cv, method: Method(m),
                    status: Status(st), class_specific: cs, transaction_id: tid,
                    attribute_id: AttributeId(attr), attribute_modifier: modifier,
                };
                let mut buf = [0u8; MAD_LEN];
                r.emit(&mut Packet::new_unchecked(&mut buf[..]));
                prop_assert_eq!(Repr::parse(&Packet::new_unchecked(&buf[..])), Ok(r));
            }

            #[test]
            fn parse_arbitrary_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
                if let Ok(p) = Packet::new_checked(&bytes[..]) {
                    let _ = Repr::parse(&p);
                    let _ = (p.reserved(), p.data().len());
                }
            }
        }
    }
}
