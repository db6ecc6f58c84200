//! Request checks and answers (OpenSM `osm_sa_mad_ctrl.c`, `osm_sa_respond`,
//! `osm_sa_send_error`): which MADs are dropped, which get an error status, and how a
//! successful answer is laid out.

use ibpoll_wire::mad::{self, AttributeId, Method, MgmtClass, Status, MAD_LEN};
use ibpoll_wire::sa::{self, Attribute, SaMad};
use ibpoll_wire::{mcmember, path_record, Gid};

use super::{Answer, PathEnd, Requester, SubnetAdmin};

/// RMPP flags Active | First | Last, as OpenSM sets them for a one-packet GetTableResp.
const RMPP_FLAGS_SINGLE: u8 = 0x07;
/// RMPP type DATA.
const RMPP_TYPE_DATA: u8 = 1;

impl SubnetAdmin {
    /// Checks the MAD and hands a request to its attribute's handler.
    pub(super) fn dispatch(
        &mut self,
        req: &[u8; MAD_LEN],
        from: &Requester,
        oracle: &dyn Fn(&Gid) -> Option<PathEnd>,
    ) -> Option<[u8; MAD_LEN]> {
        // A bad base version leaves the layout unknown: the MAD layer drops it.
        let m = SaMad::parse(req).ok()?;
        let h = &m.header;
        if h.mad.mgmt_class != MgmtClass::SUBN_ADM || h.mad.method.is_response() {
            return None;
        }
        // C15-0.1.5 (osm_sa_mad_ctrl.c ERR 1A04): a wrong SM_Key is discarded.
        if h.sm_key != 0 && h.sm_key != self.cfg.sa_key {
            tracing::debug!(sm_key = h.sm_key, "SA: MAD with a foreign SM_Key dropped");
            return None;
        }
        let method = h.mad.method;
        // osm_sa_mad_ctrl.c ERR 1A05: other methods are dropped unanswered.
        if ![Method::GET, Method::GET_TABLE, Method::SET, Method::DELETE].contains(&method) {
            return None;
        }
        *self.stats.by_method.entry(method.0).or_default() += 1;
        if h.mad.class_version != mad::SA_CLASS_VERSION {
            return Some(error_response(req, Status::UNSUP_CLASS_VERSION));
        }
        let outcome = match (h.mad.attribute_id, m.attribute) {
            (AttributeId::MCMEMBER_RECORD, Attribute::McMember(rec)) => {
                self.mcmember(method, h.component_mask, h.sm_key != 0, &rec, from, oracle)
            }
            (AttributeId::PATH_RECORD, Attribute::PathRecord(rec)) => {
                self.path_record(method, h.component_mask, &rec, from, oracle)
            }
            (id, _) if known_to_opensm(id) => Err(Status::UNSUP_METHOD_ATTR),
            // osm_sa_mad_ctrl.c ERR 1A01: unknown attributes are dropped.
            _ => return None,
        };
        Some(match outcome {
            Ok(answer) => self.respond(req, method, answer),
            Err(status) => error_response(req, status),
        })
    }

    /// OpenSM `osm_sa_respond`.
    fn respond(&self, req: &[u8; MAD_LEN], method: Method, answer: Answer) -> [u8; MAD_LEN] {
        let n = match &answer {
            Answer::McMember(v) => v.len(),
            Answer::PathRecord(v) => v.len(),
        };
        if method == Method::GET && n > 1 {
            return error_response(req, Status::ERR_TOO_MANY_RECORDS);
        }
        if method == Method::GET && n == 0 {
            return error_response(req, Status::ERR_NO_RECORDS);
        }
        let mut out = [0u8; MAD_LEN];
        out[..sa::DATA_OFFSET].copy_from_slice(&req[..sa::DATA_OFFSET]);
        if method == Method::GET_TABLE {
            // One packet: RMPP DATA with Active | First | Last (osm_sa_respond without
            // vendor RMPP); the rest of the RMPP header is the request's.
            out[25] = RMPP_TYPE_DATA;
            out[26] = RMPP_FLAGS_SINGLE;
        }
        let mut p = sa::Packet::new_unchecked(&mut out[..]);
        p.mad_mut().set_method(method.response());
        p.set_sm_key(0);
        let size = match &answer {
            Answer::McMember(_) => mcmember::RECORD_SIZE,
            Answer::PathRecord(_) => path_record::RECORD_LEN,
        };
        // One MAD only: like OpenSM built without vendor RMPP, trim to what fits.
        let n = n.min(sa::DATA_LEN / size);
        p.set_attribute_offset(if n > 0 { (size / 8) as u16 } else { 0 });
        let data = p.data_mut();
        match answer {
            Answer::McMember(v) => {
                for (i, r) in v.iter().take(n).enumerate() {
                    let at = i * size;
                    r.emit(&mut mcmember::Packet::new_unchecked(
                        &mut data[at..at + size],
                    ));
                }
            }
            Answer::PathRecord(v) => {
                for (i, r) in v.iter().take(n).enumerate() {
                    let at = i * size;
                    r.emit(&mut path_record::Packet::new_unchecked(
                        &mut data[at..at + size],
                    ));
                }
            }
        }
        out
    }
}
/// The error answer (OpenSM `osm_sa_send_error`): the request echoed with `status`.
fn error_response(req: &[u8; MAD_LEN], status: Status) -> [u8; MAD_LEN] {
    // Only requests reach this point, so the wire helper always answers.
    mad::error_response(req, status).unwrap_or(*req)
}

/// Attributes OpenSM's SA dispatches (osm_sa_mad_ctrl.c) that this SA does not
/// implement: answered ERR 0x000C rather than dropped.
fn known_to_opensm(id: AttributeId) -> bool {
    matches!(
        id.0,
        0x0001
            | 0x0003
            | 0x0011
            | 0x0012
            | 0x0013
            | 0x0014
            | 0x0015
            | 0x0017
            | 0x0018
            | 0x0020
            | 0x0030
            | 0x0031
            | 0x0033
            | 0x0036
            | 0x00F3
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sa::testutil::*;
    use ibpoll_wire::mcmember::JoinState;
    use ibpoll_wire::path_record::mask as prm;
    use ibpoll_wire::sa::{ComponentMask, RmppRepr};
    use ibpoll_wire::QKey;

    #[test]
    fn unsupported_methods_and_attributes() {
        let mut sa = sa();
        let q = path_record::Repr {
            dgid: gid(2),
            sgid: gid(1),
            ..Default::default()
        };
        // PathRecord Set: method/attribute combination unsupported (ERR 1F17).
        let m = send(&mut sa, 1, &path_req(Method::SET, prm::DGID, q));
        assert_eq!(status(&m), Status::UNSUP_METHOD_ATTR);
        assert_eq!(m.header.mad.method, Method::GET_RESP);
        // ClassPortInfo: OpenSM has it, this SA answers 0x000C.
        let mut cpi = SaMad::request(Method::GET, 1, ComponentMask::NONE, Attribute::Other);
        cpi.header.mad.attribute_id = AttributeId::CLASS_PORT_INFO;
        assert_eq!(
            status(&send(&mut sa, 1, &cpi.to_bytes())),
            Status::UNSUP_METHOD_ATTR
        );
        // An attribute OpenSM does not know, a Report, a response, a foreign SM_Key,
        // another class, another base version: dropped.
        let mut unknown = cpi;
        unknown.header.mad.attribute_id = AttributeId(0x1234);
        let mut report = cpi;
        report.header.mad.method = Method::REPORT;
        let mut response = cpi;
        response.header.mad.method = Method::GET_RESP;
        let mut keyed = cpi;
        keyed.header.sm_key = 0xdead;
        let mut class = cpi;
        class.header.mad.mgmt_class = MgmtClass::PERF;
        for m in [unknown, report, response, keyed, class] {
            assert_eq!(sa.handle(&m.to_bytes(), &host(1), &oracle), None);
        }
        let mut b = cpi.to_bytes();
        b[0] = 2;
        assert_eq!(sa.handle(&b, &host(1), &oracle), None);
        // Class version 1: bad version.
        let mut v1 = cpi;
        v1.header.mad.class_version = 1;
        assert_eq!(
            status(&send(&mut sa, 1, &v1.to_bytes())),
            Status::UNSUP_CLASS_VERSION
        );
        let s = sa.stats();
        assert_eq!(s.dropped, 6);
        assert_eq!(s.by_status.get(&0x000C), Some(&2));
    }

    #[test]
    fn error_answers_echo_the_request() {
        let mut sa = sa();
        let (mask, mut rec) = ipoib_rec(BCAST, gid(1), JoinState::FULL_MEMBER);
        rec.qkey = QKey(1);
        let mut m = SaMad::request(Method::SET, 9, mask, Attribute::McMember(rec));
        m.header.sm_key = 1;
        m.header.rmpp = RmppRepr {
            version: 1,
            ..RmppRepr::default()
        };
        let req = m.to_bytes();
        let resp = sa.handle(&req, &host(1), &oracle).unwrap();
        let mut want = req;
        want[3] = 0x81;
        want[4..6].copy_from_slice(&[0x02, 0x00]);
        want[36..44].fill(0);
        assert_eq!(resp, want);
    }
}
