//! The SA transport of an InfiniBand port: SA MADs over the port's MAD channel (QP1),
//! and the answers turned into [`LinkEvent`]s.
//!
//! Answers are read by the controller's own `poll`, on the control core: there is no
//! callback thread, so an answer can never run concurrently with anything else the
//! controller does (a flush included). An answer is applied only if its TID names a
//! transaction still in flight and it has the shape of an answer to it; anything else is
//! ignored and counted: late, duplicate, unknown, malformed.

use std::fmt;

use ibpoll_dev::{Mad, MadAddr, MadChannel, PortAttr};
use ibpoll_wire::mad::{Method, MgmtClass, Status};
use ibpoll_wire::mcmember::{self, JoinState};
use ibpoll_wire::sa::{self, Attribute, ComponentMask, SaMad};
use ibpoll_wire::{path_record, PKey, QKey, Qpn};

use super::txn::Txn;
use super::{JoinGranted, LinkEvent, MgidList, TxnKind};
use crate::CtrlStats;

/// The MAD channel to the SA and where the SA is.
pub(crate) struct SaTransport {
    chan: Box<dyn MadChannel>,
    to: MadAddr,
}

impl fmt::Debug for SaTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaTransport").field("to", &self.to).finish()
    }
}

impl SaTransport {
    pub(crate) fn new(chan: Box<dyn MadChannel>, attr: &PortAttr) -> SaTransport {
        SaTransport {
            chan,
            to: sa_addr(attr),
        }
    }

    /// Follows the subnet manager (after a port event).
    pub(crate) fn set_port(&mut self, attr: &PortAttr) {
        self.to = sa_addr(attr);
    }

    /// Sends one request with TID `tid` (the transport's bits 32..63 zero). A MAD the
    /// channel refuses is counted; its transaction then ends by timing out.
    pub(crate) fn send(
        &mut self,
        tid: u32,
        method: Method,
        mask: ComponentMask,
        attribute: Attribute,
        stats: &mut CtrlStats,
    ) {
        let mad = SaMad::request(method, u64::from(tid), mask, attribute).to_bytes();
        if self.chan.send(&mad, self.to).is_err() {
            stats.sa_send_errors += 1;
        }
    }

    /// The next MAD received, if any.
    pub(crate) fn recv(&mut self) -> Option<Mad> {
        self.chan.recv().map(|(m, _)| m)
    }
}

fn sa_addr(attr: &PortAttr) -> MadAddr {
    MadAddr {
        lid: attr.sm_lid,
        qpn: Qpn::GSI,
        qkey: QKey::GSI,
        sl: attr.sm_sl,
        pkey_index: 0,
    }
}

/// A received MAD as far as matching needs it: an SA response, and the TID bits the
/// client owns. `None` (counted malformed) for anything else.
pub(crate) fn response_tid(bytes: &Mad, stats: &mut CtrlStats) -> Option<(u32, SaMad)> {
    let Ok(mad) = SaMad::parse(bytes) else {
        stats.sa_malformed += 1;
        return None;
    };
    let h = &mad.header.mad;
    if h.mgmt_class != MgmtClass::SUBN_ADM || !h.method.is_response() {
        stats.sa_malformed += 1;
        return None;
    }
    // Bits 32..63 are the transport's.
    Some((h.transaction_id as u32, mad))
}

/// The event an answer ends transaction `txn` with, or `None` when it does not have
/// the shape of an answer to it (not trusted: the transaction runs on to its deadline).
pub(crate) fn decode(txn: &Txn, mad: &SaMad, bytes: &Mad, pkey: PKey) -> Option<LinkEvent> {
    let h = &mad.header.mad;
    let status = h.status;
    let tid = txn.tid;
    let expected = match txn.kind {
        TxnKind::Leave(_) => Method::DELETE_RESP,
        TxnKind::Memberships => Method::GET_TABLE_RESP,
        TxnKind::Join(_) | TxnKind::Path(_) => Method::GET_RESP,
    };
    if h.method != expected {
        return None;
    }
    let left = status.is_ok() || status == Status::ERR_REQ_INVALID;
    match (txn.kind, mad.attribute) {
        (TxnKind::Join(mgid), Attribute::McMember(rec)) if status.is_ok() => {
            (rec.mgid == mgid).then_some(LinkEvent::Joined {
                tid,
                mgid,
                granted: JoinGranted {
                    record: rec,
                    // The answer carries every JoinState bit the port now holds in the
                    // group (the SA merges them): that is what its leave must name, no
                    // more (a Delete of bits not held is refused and acts on nothing)
                    // and no less.
                    join_state: if rec.join_state.contains(txn.join_state) {
                        rec.join_state
                    } else {
                        txn.join_state
                    },
                },
            })
        }
        (TxnKind::Join(mgid), _) if !status.is_ok() => {
            Some(LinkEvent::JoinRefused { tid, mgid, status })
        }
        (TxnKind::Leave(mgid), _) if left => Some(LinkEvent::Left { tid, mgid }),
        (TxnKind::Leave(mgid), _) => Some(LinkEvent::LeaveRefused { tid, mgid, status }),
        (TxnKind::Path(ip), Attribute::PathRecord(p)) if status.is_ok() => Some(LinkEvent::Path {
            tid,
            ip,
            ah: ibpoll_dev::AhAttr {
                dlid: p.dlid,
                sl: p.sl,
                src_path_bits: 0,
                static_rate: p.rate,
                grh: None,
            },
        }),
        (TxnKind::Path(ip), _) if !status.is_ok() => Some(LinkEvent::PathRefused { tid, ip }),
        (TxnKind::Memberships, _) if status == Status::ERR_NO_RECORDS => {
            Some(LinkEvent::Memberships {
                tid,
                found: MgidList::default(),
            })
        }
        (TxnKind::Memberships, _) if status.is_ok() => Some(LinkEvent::Memberships {
            tid,
            found: listed_mgids(bytes, pkey)?,
        }),
        (TxnKind::Memberships, _) => Some(LinkEvent::ListRefused { tid, status }),
        _ => None,
    }
}

/// The MGIDs of the MCMemberRecords of a GetTableResp: records in partition `pkey`
/// (what the listing asked for) with a multicast MGID. A transport may leave bytes
/// after the last record undefined (OpenSM does not clear its answer buffer), so a
/// record counts only if it is what a match must look like. `None` for a malformed
/// table.
fn listed_mgids(bytes: &Mad, pkey: PKey) -> Option<MgidList> {
    let p = sa::Packet::new_checked(&bytes[..]).ok()?;
    let stride = usize::from(p.attribute_offset()) * 8;
    let mut found = MgidList::default();
    if stride == 0 {
        return Some(found);
    }
    if stride < mcmember::RECORD_LEN {
        return None;
    }
    for rec in p.data().chunks_exact(stride).take(super::MGIDS_PER_LIST) {
        let Ok(r) = mcmember::Packet::new_checked(rec).and_then(|r| mcmember::Repr::parse(&r))
        else {
            break;
        };
        if r.pkey == pkey && r.mgid.is_multicast() {
            found.push(r.mgid);
        }
    }
    Some(found)
}

/// Component mask of the broadcast join (RFC 4391 §5; the kernel's
/// `ipoib_mcast_join` for the broadcast group).
pub(crate) fn broadcast_join_mask() -> ComponentMask {
    use mcmember::mask::*;
    MGID | PORT_GID | PKEY | JOIN_STATE
}

/// Component mask of every other join: the broadcast group's parameters are copied in.
pub(crate) fn group_join_mask() -> ComponentMask {
    use mcmember::mask::*;
    MGID | PORT_GID
        | PKEY
        | JOIN_STATE
        | QKEY
        | MTU_SELECTOR
        | MTU
        | TCLASS
        | RATE_SELECTOR
        | RATE
        | SL
        | FLOW_LABEL
        | HOP_LIMIT
}

/// Component mask of a leave.
pub(crate) fn leave_mask() -> ComponentMask {
    use mcmember::mask::*;
    MGID | PORT_GID | JOIN_STATE
}

/// Component mask of the listing of a port's memberships in one partition: every
/// group with a membership of PortGID (OpenSM answers one record per group, JoinState
/// and PortGID zeroed for a request without an SM_Key, IBA p923), whose P_Key is the
/// partition's.
pub(crate) fn list_mask() -> ComponentMask {
    use mcmember::mask::*;
    PORT_GID | PKEY
}

/// Component mask of a path query.
pub(crate) fn path_mask() -> ComponentMask {
    use path_record::mask::*;
    DGID | SGID | NUMB_PATH | PKEY
}

/// The JoinState bits an IPoIB interface ever holds (FullMember for what it receives,
/// SendOnlyFullMember for what it only sends to): what a stale membership is left with,
/// one bit per Delete (a Delete naming a bit not held is refused and leaves nothing).
pub(crate) const IPOIB_JOIN_STATES: [JoinState; 2] =
    [JoinState::FULL_MEMBER, JoinState::SEND_ONLY_FULL_MEMBER];
