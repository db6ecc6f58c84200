//! The leaving half of the multicast state machine: unsubscriptions, SA Deletes (one
//! JoinState bit at a time for a membership the SA never confirmed), their retries, and
//! what becomes of a group once its leave ended.

use ibpoll_dev::Nanos;
use ibpoll_wire::mcmember::JoinState;
use ibpoll_wire::Gid;

use super::subscribe::detach_lanes;
use super::Controller;
use crate::link::Tid;
use crate::mcast::{Backoff, GroupKind, GroupState, Leave, RetryAt, Unconfirmed};
use crate::ring::GroupAddr;

impl Controller {
    /// Unsubscribes what [`join_group`](Self::join_group) subscribed: the group is left
    /// (if Joined) and removed, unless sockets of the data cores still subscribe to it
    /// (see [`Request::Subscribe`](crate::Request::Subscribe)).
    pub fn leave_group(&mut self, group: GroupAddr) {
        let now = self.clock.now();
        let Some(mgid) = self.mgid_of(group) else {
            return;
        };
        // The broadcast group and the IPv6 groups neighbour discovery needs stay.
        if mgid == self.bcast_mgid || self.is_nd_group(&mgid) {
            return;
        }
        let Some(g) = self.groups.get_mut(&mgid) else {
            return;
        };
        g.admin = false;
        if !self.subs.has(&mgid) {
            self.unwant_group(mgid, now);
            return;
        }
        // The sockets keep it: only the lane attached for `join_group` goes, unless
        // they need it.
        let Some(g) = self.groups.get(&mgid) else {
            return;
        };
        let extra = g.attached & !self.attach_mask(g);
        if let GroupState::Joined { entry, .. } = &g.state {
            let mlid = entry.mlid;
            detach_lanes(&*self.port, &self.lane_qpns, extra, &mgid, mlid);
            if let Some(g) = self.groups.get_mut(&mgid) {
                g.attached &= !extra;
            }
        }
    }

    /// Joined|Idle(unconfirmed) -> Leaving. Consumes the token. Returns whether a leave
    /// went out (false: nothing to leave, or no room in the window).
    pub(crate) fn begin_leave(&mut self, mgid: Gid, now: Nanos, remove_after: bool) -> bool {
        if !self.link.txns().has_room() {
            self.stats.sa_window_full += 1;
            return false;
        }
        let Some(g) = self.groups.get_mut(&mgid) else {
            return false;
        };
        let old = std::mem::replace(&mut g.state, GroupState::idle_now(now));
        let leave = match old {
            GroupState::Joined { membership, entry } => {
                // The snapshot drops the entry at the next publish; its address handle
                // is destroyed once every data core has moved past it.
                let attached = std::mem::take(&mut g.attached);
                detach_lanes(&*self.port, &self.lane_qpns, attached, &mgid, entry.mlid);
                self.subs.touch(mgid);
                self.dirty = true;
                membership.leave()
            }
            GroupState::Idle {
                unconfirmed: Some(u),
                ..
            } => {
                self.stats.leaves_unconfirmed += 1;
                u.leave()
            }
            other => {
                g.state = other;
                return false;
            }
        };
        g.remove_after_leave |= remove_after;
        self.send_leave(mgid, leave, 1, now);
        true
    }

    pub(super) fn send_leave(&mut self, mgid: Gid, leave: Leave, tries: u8, now: Nanos) {
        // A Delete must name only bits the port holds, or the SA refuses it and leaves
        // nothing (o15-0.1.14). A confirmed membership names exactly what the SA said it
        // holds; an unconfirmed one may name bits of several timed-out joins, of which
        // the SA may hold any subset: those are left one bit per Delete.
        let join_state = delete_join_state(&leave);
        // Leaves bypass the window check here: the caller checked for room, and a retry
        // reuses the slot its timed-out try just freed.
        let started = self
            .link
            .start_leave(now, leave.mgid, join_state, &mut self.stats);
        let Some(g) = self.groups.get_mut(&mgid) else {
            return;
        };
        g.state = match started {
            Some((tid, deadline)) => GroupState::Leaving {
                tid,
                deadline,
                tries,
                leave,
            },
            // No room (cannot happen after a timeout freed a slot): keep the obligation
            // as an unconfirmed membership, so the flush tries again.
            None => GroupState::Idle {
                backoff: Backoff::default(),
                retry_at: RetryAt::At(now),
                unconfirmed: Some(Unconfirmed::from_timeout(leave.mgid, leave.join_state)),
            },
        };
    }

    pub(super) fn leaving_tid(&self, mgid: &Gid) -> Option<Tid> {
        match self.groups.get(mgid).map(|g| &g.state) {
            Some(GroupState::Leaving { tid, .. }) => Some(*tid),
            _ => None,
        }
    }

    pub(super) fn on_leave_done(&mut self, tid: Tid, mgid: Gid, now: Nanos) {
        if self.leaving_tid(&mgid) != Some(tid) {
            return;
        }
        self.stats.leaves_done += 1;
        tracing::info!(pkey = %self.cfg.pkey, %mgid, "ibpoll-ctrl: left group");
        // An unconfirmed leave names one JoinState bit per Delete (see `send_leave`):
        // go on with the bits left.
        let g = self.groups.get_mut(&mgid).expect("checked above");
        if let GroupState::Leaving { leave, .. } = &g.state {
            let rest = leave.join_state.difference(lowest_bit(leave.join_state));
            if !leave.confirmed && !rest.is_empty() {
                let GroupState::Leaving { mut leave, .. } =
                    std::mem::replace(&mut g.state, GroupState::idle_now(now))
                else {
                    unreachable!("matched above");
                };
                leave.join_state = rest;
                self.send_leave(mgid, leave, 1, now);
                return;
            }
        }
        self.after_leave(mgid, now);
    }

    pub(super) fn on_leave_timeout(&mut self, tid: Tid, mgid: Gid, now: Nanos) {
        if self.leaving_tid(&mgid) != Some(tid) {
            return;
        }
        let g = self.groups.get_mut(&mgid).expect("checked above");
        let GroupState::Leaving { tries, leave, .. } =
            std::mem::replace(&mut g.state, GroupState::idle_now(now))
        else {
            unreachable!("checked above");
        };
        if tries < self.cfg.leave_tries && !self.no_leave_retries {
            self.send_leave(mgid, leave, tries + 1, now);
        } else {
            // Every try was lost or refused: the SA may still hold the membership. The
            // obligation is kept as an `Unconfirmed` token (a leave that did not happen
            // must not be forgotten, or the SA keeps the membership for good): the
            // running flush, which must end in bounded time, does not try it again; the
            // next flush does, or `schedule_joins` for an unsubscribed group after the
            // longest backoff.
            self.stats.leaves_abandoned += 1;
            tracing::warn!(
                pkey = %self.cfg.pkey,
                %mgid,
                tries,
                "ibpoll-ctrl: every try to leave the group was lost or refused; the next flush tries again"
            );
            let retry = Nanos::from_secs(self.cfg.backoff_s_max);
            let g = self.groups.get_mut(&mgid).expect("checked above");
            g.state = GroupState::Idle {
                backoff: Backoff::default(),
                retry_at: RetryAt::At(now.saturating_add(retry)),
                unconfirmed: Some(leave.into_unconfirmed()),
            };
            g.leave_deferred = self.flush.is_some();
            // A stale membership that cannot be left first is absorbed by the join.
            g.leave_first = false;
        }
    }

    /// Leaving ended: back to Idle, or out of the table.
    fn after_leave(&mut self, mgid: Gid, now: Nanos) {
        let Some(g) = self.groups.get_mut(&mgid) else {
            return;
        };
        g.state = GroupState::idle_now(now);
        let remove = mgid != self.bcast_mgid
            && g.queue.is_empty()
            && (g.remove_after_leave || (g.kind == GroupKind::SendOnly && self.flush.is_none()));
        if remove {
            self.groups.remove(&mgid, &mut self.changes);
        } else if let Some(g) = self.groups.get_mut(&mgid) {
            g.remove_after_leave = false;
            g.leave_first = false;
        }
    }

    /// Removes an Idle group (no token left), counting its queue. Other states stay.
    pub(super) fn remove_idle_group(&mut self, mgid: Gid) {
        // The broadcast group and the IPv6 groups neighbour discovery needs stay.
        if mgid == self.bcast_mgid || self.is_nd_group(&mgid) {
            return;
        }
        let removable = matches!(
            self.groups.get(&mgid).map(|g| &g.state),
            Some(GroupState::Idle {
                unconfirmed: None,
                ..
            })
        );
        if removable {
            if let Some(g) = self.groups.remove(&mgid, &mut self.changes) {
                self.stats.mcast_flush_dropped += g.queue.len() as u64;
            }
        }
    }
}

/// The lowest JoinState bit of `js` (none if empty).
fn lowest_bit(js: JoinState) -> JoinState {
    let b = js.bits();
    JoinState::from_bits_truncate(b & b.wrapping_neg())
}

/// The JoinState a Delete for `leave` names: all of a confirmed membership's bits, one
/// bit of an unconfirmed one's at a time (see `send_leave`).
fn delete_join_state(leave: &Leave) -> JoinState {
    if leave.confirmed {
        leave.join_state
    } else {
        lowest_bit(leave.join_state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_bit_takes_one_join_state_bit() {
        assert_eq!(lowest_bit(JoinState::NONE), JoinState::NONE);
        assert_eq!(lowest_bit(JoinState::ALL), JoinState::FULL_MEMBER);
        let two = JoinState::NON_MEMBER | JoinState::SEND_ONLY_FULL_MEMBER;
        assert_eq!(lowest_bit(two), JoinState::NON_MEMBER);
    }

    #[test]
    fn only_an_unconfirmed_leave_goes_one_bit_at_a_time() {
        let mgid = Gid::new(Gid::DEFAULT_SUBNET_PREFIX, 1);
        let both = JoinState::FULL_MEMBER | JoinState::SEND_ONLY_FULL_MEMBER;
        let confirmed = Leave {
            mgid,
            join_state: both,
            confirmed: true,
        };
        assert_eq!(delete_join_state(&confirmed), both);
        let unconfirmed = Unconfirmed::from_timeout(mgid, both).leave();
        assert_eq!(delete_join_state(&unconfirmed), JoinState::FULL_MEMBER);
    }
}
