//! The SA client: MAD transactions with TID matching, a deadline each, and a bounded
//! window of transactions in flight.
//!
//! Answers are read from QP1 by the controller's own `poll`, on the control core, and
//! turned into [`SaEvent`]s that the controller applies to its state right there: there is
//! no callback thread, so an answer can never run concurrently with anything else the
//! controller does (a flush included).
//!
//! An answer is applied only if its TID names a transaction still in flight. Anything
//! else is ignored and counted: late (the transaction already timed out), duplicate (it
//! was already answered), unknown (a TID this client never used), malformed.
//!
//! TIDs: the MAD transport owns TransactionID bits 32..63 (the kernel's umad writes its
//! agent there, ibsim its client slot; see `ibpoll_dev::MadChannel`), so the client's
//! transaction counter lives in the low 32 bits, sent with the high bits zero, and
//! answers are matched on the low 32 bits only.

use std::collections::VecDeque;
use std::fmt;
use std::net::IpAddr;

use ibpoll_dev::{MadAddr, MadChannel, Nanos, PortAttr};
use ibpoll_wire::mad::{Method, MgmtClass, Status};
use ibpoll_wire::mcmember::{self, JoinState};
use ibpoll_wire::sa::{Attribute, ComponentMask, SaMad};
use ibpoll_wire::{path_record, Gid, QKey, Qpn};

use crate::CtrlStats;

/// A transaction ID: the low 32 bits of the MAD's TransactionID, the part the client
/// owns.
pub(crate) type Tid = u32;

/// What a transaction is for; the controller finds its object by this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TxnKind {
    /// MCMemberRecord Set for a group.
    Join(Gid),
    /// MCMemberRecord Delete for a group.
    Leave(Gid),
    /// PathRecord Get for a neighbour (by IP address).
    Path(IpAddr),
}

#[derive(Debug, Clone, Copy)]
struct Txn {
    tid: Tid,
    kind: TxnKind,
    deadline: Nanos,
    join_state: JoinState,
}

/// A join the SA granted: the only way to make a
/// [`Membership`](crate::mcast::Membership). Its fields are private to this module, so
/// nothing but a successful, TID-matched join answer can produce one.
#[derive(Debug)]
pub struct JoinGranted {
    pub(crate) record: mcmember::Repr,
    pub(crate) join_state: JoinState,
}

/// What the SA client tells the controller.
#[derive(Debug)]
pub(crate) enum SaEvent {
    /// A join answered OK.
    Joined {
        tid: Tid,
        mgid: Gid,
        granted: JoinGranted,
    },
    /// A join refused by the SA (it did not act on it).
    JoinRefused { tid: Tid, mgid: Gid, status: Status },
    /// A leave answered OK, or refused with ERR_REQ_INVALID (the port holds no such
    /// membership): either way the SA holds none for those bits now.
    Left { tid: Tid, mgid: Gid },
    /// A leave refused with any other status (busy, no resources ...): the SA did not
    /// act on it and may still hold the membership; it is tried again like a lost one.
    LeaveRefused { tid: Tid, mgid: Gid, status: Status },
    /// A path query answered OK.
    Path {
        tid: Tid,
        ip: IpAddr,
        path: path_record::Repr,
    },
    /// A path query refused.
    PathRefused { tid: Tid, ip: IpAddr },
    /// A transaction reached its deadline.
    Timeout {
        tid: Tid,
        kind: TxnKind,
        join_state: JoinState,
    },
}

/// How a recent transaction ended, to tell late answers from duplicates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Answered,
    TimedOut,
}

/// Recent transaction ends kept (bounded).
const RECENT_MAX: usize = 1024;

/// The SA client of one port.
pub(crate) struct SaClient {
    chan: Box<dyn MadChannel>,
    to: MadAddr,
    tid_first: Tid,
    tid_next: Tid,
    window: usize,
    timeout: Nanos,
    inflight: Vec<Txn>,
    recent: VecDeque<(Tid, Ended)>,
}

impl fmt::Debug for SaClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaClient")
            .field("to", &self.to)
            .field("in_flight", &self.inflight.len())
            .field("window", &self.window)
            .finish()
    }
}

/// MADs read per poll.
pub(crate) const RECV_PER_POLL: usize = 64;

impl SaClient {
    pub(crate) fn new(
        chan: Box<dyn MadChannel>,
        attr: &PortAttr,
        window: usize,
        timeout: Nanos,
    ) -> Self {
        // TIDs start at a value derived from the port GUID, so that answers meant for an
        // earlier client on this port are unlikely to be taken for ours.
        let tid_first = (((attr.gid.guid() & 0xffff) as u32) << 16) | 1;
        SaClient {
            chan,
            to: sa_addr(attr),
            tid_first,
            tid_next: tid_first,
            window,
            timeout,
            inflight: Vec::with_capacity(window),
            recent: VecDeque::with_capacity(RECENT_MAX),
        }
    }

    /// Follows the subnet manager (after a port event).
    pub(crate) fn set_port(&mut self, attr: &PortAttr) {
        self.to = sa_addr(attr);
    }

    /// Room for one more transaction.
    pub(crate) fn has_room(&self) -> bool {
        self.inflight.len() < self.window
    }

    /// Transactions that can still start before the window is full.
    pub(crate) fn room(&self) -> usize {
        self.window.saturating_sub(self.inflight.len())
    }

    /// Transactions in flight.
    pub(crate) fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// Transactions in flight of a kind matching `f`.
    pub(crate) fn in_flight_where(&self, f: impl Fn(&TxnKind) -> bool) -> usize {
        self.inflight.iter().filter(|t| f(&t.kind)).count()
    }

    /// Starts a transaction: `(tid, deadline)`, or `None` when the window is full
    /// (counted; the caller tries again on a later poll). A MAD the channel refuses is
    /// counted and still registered, so it ends by timing out like a lost one.
    pub(crate) fn start(
        &mut self,
        now: Nanos,
        method: Method,
        mask: ComponentMask,
        attribute: Attribute,
        kind: TxnKind,
        stats: &mut CtrlStats,
    ) -> Option<(Tid, Nanos)> {
        if !self.has_room() {
            stats.sa_window_full += 1;
            return None;
        }
        let tid = self.tid_next;
        self.tid_next = self.tid_next.wrapping_add(1);
        let join_state = match &attribute {
            Attribute::McMember(r) => r.join_state,
            _ => JoinState::NONE,
        };
        let mad = SaMad::request(method, u64::from(tid), mask, attribute).to_bytes();
        if self.chan.send(&mad, self.to).is_err() {
            stats.sa_send_errors += 1;
        }
        match kind {
            TxnKind::Join(_) => stats.sa_joins_sent += 1,
            TxnKind::Leave(_) => stats.sa_leaves_sent += 1,
            TxnKind::Path(_) => stats.sa_paths_sent += 1,
        }
        let deadline = now.saturating_add(self.timeout);
        self.inflight.push(Txn {
            tid,
            kind,
            deadline,
            join_state,
        });
        Some((tid, deadline))
    }

    /// Forgets a transaction without an answer (a flush that gave up): a later answer
    /// counts as late.
    pub(crate) fn abandon(&mut self, tid: Tid) {
        if let Some(i) = self.inflight.iter().position(|t| t.tid == tid) {
            self.inflight.swap_remove(i);
            self.remember(tid, Ended::TimedOut);
        }
    }

    fn remember(&mut self, tid: Tid, how: Ended) {
        if self.recent.len() == RECENT_MAX {
            self.recent.pop_front();
        }
        self.recent.push_back((tid, how));
    }

    /// Reads answers and expires transactions; each outcome is pushed to `out` (at most
    /// `RECV_PER_POLL` plus the window). Returns how many MADs and timeouts it handled.
    pub(crate) fn poll(
        &mut self,
        now: Nanos,
        stats: &mut CtrlStats,
        out: &mut Vec<SaEvent>,
    ) -> usize {
        let mut work = 0;
        for _ in 0..RECV_PER_POLL {
            let Some((bytes, _from)) = self.chan.recv() else {
                break;
            };
            work += 1;
            if let Some(ev) = self.answer(&bytes, stats) {
                out.push(ev);
            }
        }
        let mut i = 0;
        while i < self.inflight.len() {
            if self.inflight[i].deadline <= now {
                let t = self.inflight.swap_remove(i);
                self.remember(t.tid, Ended::TimedOut);
                stats.sa_timeouts += 1;
                work += 1;
                out.push(SaEvent::Timeout {
                    tid: t.tid,
                    kind: t.kind,
                    join_state: t.join_state,
                });
            } else {
                i += 1;
            }
        }
        work
    }

    /// Matches one received MAD to its transaction.
    fn answer(&mut self, bytes: &[u8], stats: &mut CtrlStats) -> Option<SaEvent> {
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
        let tid = h.transaction_id as u32;
        let Some(i) = self.inflight.iter().position(|t| t.tid == tid) else {
            match self.recent.iter().rev().find(|(t, _)| *t == tid) {
                Some((_, Ended::Answered)) => stats.sa_duplicate_answers += 1,
                Some((_, Ended::TimedOut)) => stats.sa_late_answers += 1,
                None if tid.wrapping_sub(self.tid_first)
                    < self.tid_next.wrapping_sub(self.tid_first) =>
                {
                    stats.sa_late_answers += 1
                }
                None => stats.sa_unknown_answers += 1,
            }
            return None;
        };
        let txn = self.inflight[i];
        let status = h.status;
        let expected = match txn.kind {
            TxnKind::Leave(_) => Method::DELETE_RESP,
            TxnKind::Join(_) | TxnKind::Path(_) => Method::GET_RESP,
        };
        let ev = match (txn.kind, mad.attribute) {
            _ if h.method != expected => None,
            (TxnKind::Join(mgid), Attribute::McMember(rec)) if status.is_ok() => (rec.mgid == mgid)
                .then_some(SaEvent::Joined {
                    tid,
                    mgid,
                    granted: JoinGranted {
                        record: rec,
                        // The answer carries every JoinState bit the port now holds in
                        // the group (the SA merges them): that is what its leave must
                        // name, no more (a Delete of bits not held is refused and acts
                        // on nothing) and no less.
                        join_state: if rec.join_state.contains(txn.join_state) {
                            rec.join_state
                        } else {
                            txn.join_state
                        },
                    },
                }),
            (TxnKind::Join(mgid), _) if !status.is_ok() => {
                Some(SaEvent::JoinRefused { tid, mgid, status })
            }
            (TxnKind::Leave(mgid), _) if status.is_ok() || status == Status::ERR_REQ_INVALID => {
                Some(SaEvent::Left { tid, mgid })
            }
            (TxnKind::Leave(mgid), _) => Some(SaEvent::LeaveRefused { tid, mgid, status }),
            (TxnKind::Path(ip), Attribute::PathRecord(path)) if status.is_ok() => {
                Some(SaEvent::Path { tid, ip, path })
            }
            (TxnKind::Path(ip), _) if !status.is_ok() => Some(SaEvent::PathRefused { tid, ip }),
            _ => None,
        };
        match ev {
            Some(ev) => {
                self.inflight.swap_remove(i);
                self.remember(tid, Ended::Answered);
                stats.sa_answers += 1;
                if !status.is_ok() {
                    stats.sa_error_answers += 1;
                }
                Some(ev)
            }
            None => {
                // A matching TID with the wrong shape: not trusted; the transaction runs
                // on to its deadline.
                stats.sa_malformed += 1;
                None
            }
        }
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

/// Component mask of a path query.
pub(crate) fn path_mask() -> ComponentMask {
    use path_record::mask::*;
    DGID | SGID | NUMB_PATH | PKEY
}

#[cfg(test)]
mod tests {
    use super::*;
    use ibpoll_dev::{Mad, PortState};
    use ibpoll_wire::mad::Status;
    use ibpoll_wire::{IbMtu, Lid, PKey, Rate};
    use std::sync::{Arc, Mutex};

    /// A channel whose inbox the test fills and whose sent MADs it reads.
    #[derive(Debug, Default, Clone)]
    struct Fake {
        sent: Arc<Mutex<Vec<Mad>>>,
        inbox: Arc<Mutex<VecDeque<Mad>>>,
    }

    impl MadChannel for Fake {
        fn send(&mut self, mad: &Mad, _to: MadAddr) -> Result<(), ibpoll_dev::Error> {
            self.sent.lock().unwrap().push(*mad);
            Ok(())
        }
        fn recv(&mut self) -> Option<(Mad, MadAddr)> {
            let m = self.inbox.lock().unwrap().pop_front()?;
            Some((
                m,
                MadAddr {
                    lid: Lid(1),
                    qpn: Qpn::GSI,
                    qkey: QKey::GSI,
                    sl: 0,
                    pkey_index: 0,
                },
            ))
        }
    }

    fn attr() -> PortAttr {
        let mut a = PortAttr::new(1);
        a.state = PortState::Active;
        a.lid = Lid(2);
        a.sm_lid = Lid(1);
        a.gid = Gid::new(Gid::DEFAULT_SUBNET_PREFIX, 0x1234);
        a.gids = vec![a.gid];
        a.pkeys = vec![PKey::DEFAULT];
        a.max_mtu = IbMtu::Mtu4096;
        a.active_mtu = IbMtu::Mtu4096;
        a.rate = Rate::GBPS_10;
        a
    }

    fn answer_to(req: &Mad, status: u16) -> Mad {
        let mut m = SaMad::parse(req).unwrap();
        m.header.mad.method = m.header.mad.method.response();
        if m.header.mad.method == Method::SET.response() {
            m.header.mad.method = Method::GET_RESP;
        }
        m.header.mad.status = Status(status);
        m.to_bytes()
    }

    fn join(sa: &mut SaClient, now: Nanos, stats: &mut CtrlStats, mgid: Gid) -> Option<Tid> {
        let rec = mcmember::Repr {
            mgid,
            join_state: JoinState::FULL_MEMBER,
            ..mcmember::Repr::default()
        };
        sa.start(
            now,
            Method::SET,
            broadcast_join_mask(),
            Attribute::McMember(rec),
            TxnKind::Join(mgid),
            stats,
        )
        .map(|(t, _)| t)
    }

    #[test]
    fn answers_matched_by_tid_and_odd_ones_counted() {
        let fake = Fake::default();
        let mut sa = SaClient::new(Box::new(fake.clone()), &attr(), 2, Nanos::from_secs(1));
        let mut stats = CtrlStats::default();
        let mgid = ibpoll_wire::ipoib::broadcast_mgid(PKey::DEFAULT);
        let t1 = join(&mut sa, Nanos::ZERO, &mut stats, mgid).unwrap();
        let _t2 = join(&mut sa, Nanos::ZERO, &mut stats, mgid).unwrap();
        assert!(
            join(&mut sa, Nanos::ZERO, &mut stats, mgid).is_none(),
            "window of 2"
        );
        assert_eq!(stats.sa_window_full, 1);

        let req1 = fake.sent.lock().unwrap()[0];
        let ok = answer_to(&req1, 0);
        let mut unknown = SaMad::parse(&ok).unwrap();
        unknown.header.mad.transaction_id = 0xdead;
        {
            let mut inbox = fake.inbox.lock().unwrap();
            inbox.push_back(ok);
            inbox.push_back(ok); // duplicate
            inbox.push_back(unknown.to_bytes());
            inbox.push_back([0xff; 256]); // garbage
            inbox.push_back(req1); // a request, not an answer
        }
        let mut out = Vec::new();
        sa.poll(Nanos::ZERO, &mut stats, &mut out);
        assert_eq!(out.len(), 1);
        assert!(matches!(out[0], SaEvent::Joined { tid, .. } if tid == t1));
        assert_eq!(stats.sa_duplicate_answers, 1);
        assert_eq!(stats.sa_unknown_answers, 1);
        assert_eq!(stats.sa_malformed, 2);

        // The second times out; its late answer is counted and ignored.
        out.clear();
        sa.poll(Nanos::from_secs(1), &mut stats, &mut out);
        assert!(matches!(out[0], SaEvent::Timeout { .. }));
        let req2 = fake.sent.lock().unwrap()[1];
        fake.inbox.lock().unwrap().push_back(answer_to(&req2, 0));
        out.clear();
        sa.poll(Nanos::from_secs(2), &mut stats, &mut out);
        assert!(out.is_empty());
        assert_eq!(stats.sa_late_answers, 1);
        assert_eq!(sa.in_flight(), 0);
    }

    #[test]
    fn answers_match_on_the_low_32_bits_whatever_the_transport_wrote_above() {
        let fake = Fake::default();
        let mut sa = SaClient::new(Box::new(fake.clone()), &attr(), 4, Nanos::from_secs(1));
        let mut stats = CtrlStats::default();
        let mgid = ibpoll_wire::ipoib::broadcast_mgid(PKey::DEFAULT);
        let t = join(&mut sa, Nanos::ZERO, &mut stats, mgid).unwrap();
        let req = fake.sent.lock().unwrap()[0];
        let sent = SaMad::parse(&req).unwrap().header.mad.transaction_id;
        assert_eq!(
            sent >> 32,
            0,
            "the client leaves bits 32..63 to the transport"
        );
        assert_eq!(sent as u32, t);
        // umad writes its agent id into bits 32..63; the answer echoes it.
        let mut ans = SaMad::parse(&answer_to(&req, 0)).unwrap();
        ans.header.mad.transaction_id |= 0x0003_0017_0000_0000;
        // Same high bits, another low half: not ours.
        let mut other = ans;
        other.header.mad.transaction_id ^= 0x8000;
        fake.inbox.lock().unwrap().push_back(other.to_bytes());
        fake.inbox.lock().unwrap().push_back(ans.to_bytes());
        let mut out = Vec::new();
        sa.poll(Nanos::ZERO, &mut stats, &mut out);
        assert_eq!(out.len(), 1);
        assert!(matches!(out[0], SaEvent::Joined { tid, .. } if tid == t));
        assert_eq!(stats.sa_unknown_answers, 1);
    }

    #[test]
    fn error_status_is_a_refusal() {
        let fake = Fake::default();
        let mut sa = SaClient::new(Box::new(fake.clone()), &attr(), 64, Nanos::from_secs(1));
        let mut stats = CtrlStats::default();
        let mgid = ibpoll_wire::ipoib::broadcast_mgid(PKey::DEFAULT);
        join(&mut sa, Nanos::ZERO, &mut stats, mgid).unwrap();
        let req = fake.sent.lock().unwrap()[0];
        fake.inbox
            .lock()
            .unwrap()
            .push_back(answer_to(&req, 0x0100));
        let mut out = Vec::new();
        sa.poll(Nanos::ZERO, &mut stats, &mut out);
        assert!(matches!(out[0], SaEvent::JoinRefused { .. }));
        assert_eq!(stats.sa_error_answers, 1);
    }
}
