//! The joining half of the multicast state machine: subscriptions, the joins that are
//! due (broadcast group first, DESIGN rules 1 and 2), and the SA's answers to them
//! (Joining -> Joined, or back to Idle with backoff).

use std::sync::Arc;

use ibpoll_dev::Nanos;
use ibpoll_wire::mcmember::{self, JoinState};
use ibpoll_wire::{Gid, Qpn};

use super::subscribe::detach_lanes;
use super::Controller;
use crate::link::{JoinRequest, Tid};
use crate::mcast::{Backoff, GroupKind, GroupState, Membership, RetryAt, Unconfirmed};
use crate::nh::NhSlot;
use crate::reaper::AhGuard;
use crate::ring::GroupAddr;
use crate::snapshot::McastEntry;

impl Controller {
    /// Subscribes the interface to a group (it will receive it): a full-member join,
    /// sent once the broadcast group is Joined. False if the table is full or the address
    /// is not a multicast group of this partition.
    pub fn join_group(&mut self, group: GroupAddr) -> bool {
        let now = self.clock.now();
        let Some(mgid) = self.mgid_of(group) else {
            self.stats.mcast_bad_group += 1;
            return false;
        };
        if self.want_group(mgid, now).is_err() {
            self.stats.mcast_table_full += 1;
            return false;
        }
        if let Some(g) = self.groups.get_mut(&mgid) {
            g.admin = true;
        }
        true
    }

    /// Whether leaves may go out (and joins, once the startup cleanup ended).
    pub(super) fn leaves_allowed(&self) -> bool {
        self.port_active
            && self.admin_up
            && self.flush.is_none()
            && self.pkey_index.is_some()
            && !self.qp_move_pending
    }

    /// Sends the joins that are due: the broadcast group first, the others only once it
    /// is Joined (DESIGN rule 1), all only while allowed (rule 2) and the window has room.
    /// Reads only the groups due now (the table's indexes), never the whole table.
    pub(super) fn schedule_joins(&mut self, now: Nanos) -> usize {
        if !self.leaves_allowed() {
            return 0;
        }
        self.reindex();
        let bcast_joined = matches!(
            self.groups.get(&self.bcast_mgid).map(|g| &g.state),
            Some(GroupState::Joined { .. })
        );
        let mut n = self.leaves_due(now, bcast_joined);
        if self.cleanup.blocks_joins() {
            // What an earlier instance left is left first (see `cleanup`).
            return n;
        }
        if !bcast_joined {
            let due = matches!(
                self.groups[&self.bcast_mgid].state,
                GroupState::Idle { retry_at: RetryAt::At(t), .. } if t <= now
            );
            if due && self.link.txns().has_room() {
                self.send_join(self.bcast_mgid, now);
                return n + 1;
            }
            return n;
        }
        // The joins due, earliest first, as many as the window takes.
        self.scratch.clear();
        let room = self.link.txns().room();
        let bcast = self.bcast_mgid;
        self.scratch.extend(
            self.groups
                .join_due(now)
                .filter(|m| *m != bcast)
                .take(room + 1),
        );
        for i in 0..self.scratch.len() {
            if !self.link.txns().has_room() {
                self.stats.sa_window_full += 1;
                break;
            }
            let mgid = self.scratch[i];
            self.send_join(mgid, now);
            n += 1;
        }
        n
    }

    /// The leaves `schedule_joins` sends instead of joins. Groups left behind by
    /// `leave_group` (or expired) that still hold an `Unconfirmed` token are not joined
    /// again: their leave is tried again. So is a group unsubscribed while its join was
    /// in flight, Joined when the window had no room for its leave. And a send-only
    /// membership of a group the interface now subscribes to is left first (once the
    /// broadcast group is Joined); the group then rejoins as a full member.
    fn leaves_due(&mut self, now: Nanos, bcast_joined: bool) -> usize {
        if !self.groups.has_leave_due(now) {
            return 0;
        }
        let mut n = 0;
        self.scratch.clear();
        self.scratch.extend(self.groups.leave_due(now));
        for i in 0..self.scratch.len() {
            let mgid = self.scratch[i];
            let Some(g) = self.groups.get(&mgid) else {
                continue;
            };
            if g.remove_after_leave {
                self.remove_idle_group(mgid);
                if self.groups.contains_key(&mgid) && self.begin_leave(mgid, now, true) {
                    n += 1;
                }
            } else if (g.leave_first || bcast_joined) && self.begin_leave(mgid, now, false) {
                n += 1;
            }
        }
        self.reindex();
        n
    }

    /// Idle -> Joining.
    fn send_join(&mut self, mgid: Gid, now: Nanos) {
        let Some(g) = self.groups.get(&mgid) else {
            return;
        };
        let req = JoinRequest {
            mgid,
            kind: g.kind,
            pkey: self.cfg.pkey,
            bcast_record: self.bcast_record.as_ref(),
        };
        let Some((tid, deadline)) = self.link.start_join(now, &req, &mut self.stats) else {
            return;
        };
        tracing::debug!(pkey = %self.cfg.pkey, %mgid, ?tid, kind = ?g.kind, "ibpoll-ctrl: join sent");
        let g = self.groups.get_mut(&mgid).expect("looked up above");
        // The failures so far and a timed-out join's token go with the new try.
        let (backoff, unconfirmed) =
            match std::mem::replace(&mut g.state, GroupState::idle_now(now)) {
                GroupState::Idle {
                    backoff,
                    unconfirmed,
                    ..
                } => (backoff, unconfirmed),
                _ => (Backoff::default(), None),
            };
        g.state = GroupState::Joining {
            tid,
            deadline,
            backoff,
            unconfirmed,
        };
    }

    pub(super) fn joining_tid(&self, mgid: &Gid) -> Option<Tid> {
        match self.groups.get(mgid).map(|g| &g.state) {
            Some(GroupState::Joining { tid, .. }) => Some(*tid),
            _ => None,
        }
    }

    /// Joining -> Joined. Runs on the control core, in `poll`: nothing else runs at the
    /// same time, a flush included.
    pub(super) fn on_joined(
        &mut self,
        tid: Tid,
        mgid: Gid,
        mut membership: Membership,
        now: Nanos,
    ) {
        if self.joining_tid(&mgid) != Some(tid) {
            // Cannot happen: the SA client hands out an answer only for a transaction in
            // flight, and a Joining group is the only holder of its TID.
            panic!("join answer for a group not Joining with that TID");
        }
        // An earlier timed-out join of this group may have been granted with other
        // JoinState bits: the answer names every bit the port now holds (the SA merges
        // them), so the leave of this membership covers exactly those.
        if let Some(GroupState::Joining { unconfirmed, .. }) =
            self.groups.get_mut(&mgid).map(|g| &mut g.state)
        {
            if let Some(u) = unconfirmed.take() {
                membership.absorb(u);
            }
        }
        self.stats.joins_ok += 1;
        let rec = *membership.record();
        tracing::info!(
            pkey = %self.cfg.pkey,
            %mgid,
            mlid = format_args!("{:#06x}", rec.mlid.0),
            join_state = ?membership.join_state(),
            "ibpoll-ctrl: joined group"
        );
        let kind = self.groups[&mgid].kind;
        if mgid == self.bcast_mgid {
            // Every QP of the interface sends and receives with the broadcast group's
            // Q_Key (the lanes' and the control core's).
            let qpns: Vec<Qpn> = self.qpns().collect();
            for qpn in qpns {
                if self.port.set_qp_qkey(qpn, rec.qkey).is_err() {
                    self.stats.qp_errors += 1;
                }
            }
            self.bcast_record = Some(rec);
        }
        let Some((ah, slot, qpn)) = self.attach_joined(&rec, kind) else {
            // A membership without a handle is useless: leave it (the token is
            // consumed; the answer just freed a window slot) and retry later.
            self.send_leave(mgid, membership.leave(), 1, now);
            return;
        };
        let entry = Arc::new(McastEntry::new(
            mgid,
            rec.mlid,
            rec.qkey,
            kind == GroupKind::SendOnly,
            qpn,
            ah,
            slot,
        ));
        let g = self.groups.get_mut(&mgid).expect("checked above");
        g.state = GroupState::Joined {
            membership,
            entry: entry.clone(),
        };
        g.last_used = now;
        g.last_failure = None;
        self.subs.touch(mgid);
        self.dirty = true;
        self.after_joined(mgid, &entry, now);
    }

    /// Attaches the QPs of the group's lanes to a group just joined (unless it is
    /// send-only: see `attach_mask`) and makes the group's address handle and next-hop
    /// slot. `None` (counted) when either cannot be made: the attachments are undone.
    fn attach_joined(
        &mut self,
        rec: &mcmember::Repr,
        kind: GroupKind,
    ) -> Option<(Arc<AhGuard>, NhSlot, Qpn)> {
        let mask = match self.groups.get(&rec.mgid) {
            Some(g) if kind != GroupKind::SendOnly => self.attach_mask(g),
            _ => 0,
        };
        let attached = self.attach_lanes(mask, &rec.mgid, rec.mlid);
        if let Some(g) = self.groups.get_mut(&rec.mgid) {
            g.attached = attached;
        }
        let made = match self.port.create_ah(&self.link.group_ah(rec)) {
            Ok(ah) => {
                self.stats.ah_created += 1;
                let guard = self.ah_guard(ah);
                // Without a slot the guard retires the handle again at once.
                NhSlot::new(&self.nh).map(|slot| (guard, slot))
            }
            Err(_) => None,
        };
        if made.is_none() {
            self.stats.ah_errors += 1;
            detach_lanes(&*self.port, &self.lane_qpns, attached, &rec.mgid, rec.mlid);
            if let Some(g) = self.groups.get_mut(&rec.mgid) {
                g.attached = 0;
            }
        }
        // The QP the entry names: the lowest lane attached, else the hash's pick.
        let qpn = match attached.trailing_zeros() as usize {
            i if i < self.lane_qpns.len() => self.lane_qpns[i],
            _ => self.lane_qpn_for(&rec.mgid),
        };
        made.map(|(guard, slot)| (guard, slot, qpn))
    }

    /// What follows a group's join: nothing during a flush (the flush leaves it; its
    /// queue waits for the rejoin), its leave if it was unsubscribed meanwhile, else the
    /// link up (broadcast group) and the packets it queued sent.
    fn after_joined(&mut self, mgid: Gid, entry: &Arc<McastEntry>, now: Nanos) {
        if self.flush.is_some() {
            return;
        }
        let g = self.groups.get_mut(&mgid).expect("just joined");
        if g.remove_after_leave {
            // `leave_group` came while the join was in flight: leave it now (or, with
            // the window full, from `schedule_joins`).
            self.begin_leave(mgid, now, true);
            return;
        }
        let queue = std::mem::take(&mut g.queue);
        if mgid == self.bcast_mgid {
            self.set_link(true);
        }
        for m in queue {
            self.stats.mcast_sent_from_queue += 1;
            self.send_mcast(entry, m);
        }
    }

    /// Joining -> Idle with backoff (and, after a timeout, an Unconfirmed token).
    pub(super) fn on_join_failed(
        &mut self,
        tid: Tid,
        mgid: Gid,
        timed_out: Option<JoinState>,
        now: Nanos,
    ) {
        if self.joining_tid(&mgid) != Some(tid) {
            return;
        }
        self.stats.joins_failed += 1;
        self.subs.touch(mgid);
        tracing::debug!(pkey = %self.cfg.pkey, %mgid, "ibpoll-ctrl: join failed; backing off");
        let max_s = self.cfg.backoff_s_max;
        let so_max = self.cfg.sendonly_failures_max;
        let g = self.groups.get_mut(&mgid).expect("checked above");
        let GroupState::Joining {
            backoff,
            unconfirmed,
            ..
        } = std::mem::replace(&mut g.state, GroupState::idle_now(now))
        else {
            unreachable!("checked above");
        };
        let backoff = Backoff {
            failures: backoff.failures + 1,
        };
        let unconfirmed = unconfirmed_after(mgid, unconfirmed, timed_out);
        let at = now.saturating_add(backoff.delay(max_s));
        let retry_at = if g.kind == GroupKind::SendOnly && backoff.failures >= so_max {
            self.stats.mcast_sendonly_dropped += g.queue.len() as u64;
            g.queue.clear();
            RetryAt::NextPacket(at)
        } else {
            RetryAt::At(at)
        };
        // A send-only group parked until its next packet whose join timed out may be
        // held at the SA: it is left now (and removed once left, as a flush's end does
        // with such a group), not when a packet or a flush comes, which may be never. A
        // packet meanwhile waits in its queue for the rejoin after the leave.
        if matches!(retry_at, RetryAt::NextPacket(_)) && unconfirmed.is_some() {
            g.remove_after_leave = true;
        }
        let unsubscribed = g.remove_after_leave;
        g.state = GroupState::Idle {
            backoff,
            retry_at,
            unconfirmed,
        };
        if mgid == self.bcast_mgid && self.flush.is_none() {
            // The link stayed up across a light flush, but the broadcast group could not
            // be joined again: it is up only while the broadcast group is Joined.
            self.set_link(false);
        }
        if unsubscribed {
            // `leave_group` came while the join was in flight: nothing to leave unless
            // the join timed out (then `schedule_joins` leaves what the SA may hold).
            self.remove_idle_group(mgid);
            self.leave_when_due(mgid);
        }
    }

    /// An unsubscribed group still holding an `Unconfirmed` token: `schedule_joins`
    /// leaves it (instead of joining it) as soon as it may.
    fn leave_when_due(&mut self, mgid: Gid) {
        if let Some(GroupState::Idle { retry_at, .. }) =
            self.groups.get_mut(&mgid).map(|g| &mut g.state)
        {
            let at = match *retry_at {
                RetryAt::At(t) | RetryAt::NextPacket(t) => t,
            };
            *retry_at = RetryAt::At(at.min(self.clock.now()));
        }
    }
}

/// What the SA may hold after a failed join: the token of an earlier timed-out join,
/// and this join's JoinState bits if it timed out (a refusal grants nothing). Two
/// timed-out joins (of different JoinState bits, after an upgrade from send-only): the
/// SA may hold either, the token covers both.
fn unconfirmed_after(
    mgid: Gid,
    earlier: Option<Unconfirmed>,
    timed_out: Option<JoinState>,
) -> Option<Unconfirmed> {
    match (earlier, timed_out) {
        (Some(u), Some(js)) => Some(u.with(js)),
        (Some(u), None) => Some(u),
        (None, Some(js)) => Some(Unconfirmed::from_timeout(mgid, js)),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MGID: Gid = Gid([
        0xff, 0x12, 0x40, 0x1b, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0xe0, 0, 0, 1,
    ]);

    #[test]
    fn a_timed_out_join_leaves_a_token_a_refused_one_does_not() {
        let full = JoinState::FULL_MEMBER;
        let send_only = JoinState::SEND_ONLY_FULL_MEMBER;
        assert!(unconfirmed_after(MGID, None, None).is_none());
        let u = unconfirmed_after(MGID, None, Some(full)).unwrap().leave();
        assert_eq!(
            (u.mgid(), u.join_state(), u.confirmed()),
            (MGID, full, false)
        );
        // A refusal keeps the earlier token as it is.
        let earlier = Unconfirmed::from_timeout(MGID, send_only);
        let u = unconfirmed_after(MGID, Some(earlier), None)
            .unwrap()
            .leave();
        assert_eq!(u.join_state(), send_only);
        // A second timeout: the token covers both joins' bits.
        let earlier = Unconfirmed::from_timeout(MGID, send_only);
        let u = unconfirmed_after(MGID, Some(earlier), Some(full))
            .unwrap()
            .leave();
        assert_eq!(u.join_state(), full | send_only);
    }
}
