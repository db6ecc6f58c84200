//! The ends of link-layer transactions (SA answers and timeouts on InfiniBand, local
//! answers on RoCE), dispatched to the multicast state machine, to path resolution and
//! to the startup cleanup. The link layer matches each answer to its transaction; a
//! handler acts only when the group (or neighbour) still waits on that very transaction.

use ibpoll_dev::Nanos;

use super::Controller;
use crate::link::{LinkEvent, TxnKind};
use crate::mcast::Membership;
use crate::subs::JoinStatus;

impl Controller {
    pub(super) fn link_poll(&mut self, now: Nanos) -> usize {
        let mut events = std::mem::take(&mut self.link_events);
        events.clear();
        let n = self.link.poll(now, &mut self.stats, &mut events);
        for ev in events.drain(..) {
            self.on_link_event(ev, now);
        }
        self.link_events = events;
        n
    }

    fn on_link_event(&mut self, ev: LinkEvent, now: Nanos) {
        match ev {
            LinkEvent::Joined { tid, mgid, granted } => {
                self.on_joined(tid, mgid, Membership::new(granted), now)
            }
            LinkEvent::JoinRefused { tid, mgid, status } => {
                if self.joining_tid(&mgid) == Some(tid) {
                    tracing::warn!(
                        pkey = %self.cfg.pkey,
                        %mgid,
                        sa_status = format_args!("{:#06x}", status.0),
                        "ibpoll-ctrl: the join was refused"
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
            LinkEvent::Timeout {
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
            LinkEvent::Left { tid, mgid } => self.on_leave_done(tid, mgid, now),
            LinkEvent::LeaveRefused { tid, mgid, status } => {
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
            LinkEvent::Timeout {
                tid,
                kind: TxnKind::Leave(mgid),
                ..
            } => self.on_leave_timeout(tid, mgid, now),
            LinkEvent::Path { tid, ip, ah } => self.on_path(tid, ip, Some(ah), now),
            LinkEvent::PathRefused { tid, ip }
            | LinkEvent::Timeout {
                tid,
                kind: TxnKind::Path(ip),
                ..
            } => self.on_path(tid, ip, None, now),
            LinkEvent::Memberships { tid, found } => self.on_listed(tid, Ok(found), now),
            LinkEvent::ListRefused { tid, status } => self.on_listed(tid, Err(Some(status)), now),
            LinkEvent::Timeout {
                tid,
                kind: TxnKind::Memberships,
                ..
            } => self.on_listed(tid, Err(None), now),
        }
    }

    /// Remembers how a group's join failed, for its subscriptions' status.
    fn note_join_failure(&mut self, mgid: ibpoll_wire::Gid, how: JoinStatus) {
        if let Some(g) = self.groups.get_mut(&mgid) {
            g.last_failure = Some(how);
        }
    }
}
