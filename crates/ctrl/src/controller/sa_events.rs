//! SA transactions' answers and timeouts, dispatched to the multicast state machine and
//! to path resolution. The SA client matches each answer to its transaction; a handler
//! acts only when the group (or neighbour) still waits on that very transaction.

use ibpoll_dev::Nanos;

use super::Controller;
use crate::mcast::Membership;
use crate::sa::{SaEvent, TxnKind};
use crate::subs::JoinStatus;

impl Controller {
    pub(super) fn sa_poll(&mut self, now: Nanos) -> usize {
        let mut events = std::mem::take(&mut self.sa_events);
        events.clear();
        let n = self.sa.poll(now, &mut self.stats, &mut events);
        for ev in events.drain(..) {
            self.on_sa_event(ev, now);
        }
        self.sa_events = events;
        n
    }

    fn on_sa_event(&mut self, ev: SaEvent, now: Nanos) {
        match ev {
            SaEvent::Joined { tid, mgid, granted } => {
                self.on_joined(tid, mgid, Membership::new(granted), now)
            }
            SaEvent::JoinRefused { tid, mgid, status } => {
                if self.joining_tid(&mgid) == Some(tid) {
                    tracing::warn!(
                        pkey = %self.cfg.pkey,
                        %mgid,
                        sa_status = format_args!("{:#06x}", status.0),
                        "ibpoll-ctrl: the SA refused the join"
                    );
                    self.note_join_failure(
                        mgid,
                        JoinStatus::Refused {
                            sa_status: status.0,
                        },
                    );
                }
                self.on_join_failed(tid, mgid, None, now)
            }
            SaEvent::Timeout {
                tid,
                kind: TxnKind::Join(mgid),
                join_state,
            } => {
                if self.joining_tid(&mgid) == Some(tid) {
                    tracing::warn!(
                        pkey = %self.cfg.pkey,
                        %mgid,
                        "ibpoll-ctrl: the join timed out (no answer from the SA)"
                    );
                    self.note_join_failure(mgid, JoinStatus::TimedOut);
                }
                self.on_join_failed(tid, mgid, Some(join_state), now)
            }
            SaEvent::Left { tid, mgid, .. } => self.on_leave_done(tid, mgid, now),
            SaEvent::LeaveRefused { tid, mgid, status } => {
                if self.leaving_tid(&mgid) == Some(tid) {
                    tracing::warn!(
                        pkey = %self.cfg.pkey,
                        %mgid,
                        sa_status = format_args!("{:#06x}", status.0),
                        "ibpoll-ctrl: the SA refused the leave"
                    );
                }
                self.on_leave_timeout(tid, mgid, now)
            }
            SaEvent::Timeout {
                tid,
                kind: TxnKind::Leave(mgid),
                ..
            } => self.on_leave_timeout(tid, mgid, now),
            SaEvent::Path { tid, ip, path } => self.on_path(tid, ip, Some(path), now),
            SaEvent::PathRefused { tid, ip }
            | SaEvent::Timeout {
                tid,
                kind: TxnKind::Path(ip),
                ..
            } => self.on_path(tid, ip, None, now),
        }
    }

    /// Remembers how a group's join failed, for its subscriptions' status.
    fn note_join_failure(&mut self, mgid: ibpoll_wire::Gid, how: JoinStatus) {
        if let Some(g) = self.groups.get_mut(&mgid) {
            g.last_failure = Some(how);
        }
    }
}
