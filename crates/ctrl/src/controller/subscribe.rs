//! The data cores' subscriptions (see `subs`): a group is wanted while a subscription
//! names it (or `join_group` did), and attached to the QP of each lane whose
//! subscriptions name it; each subscription's status is reported on its data core's
//! board after every poll that may have changed it.

use ibpoll_dev::Nanos;
use ibpoll_wire::mcmember::JoinState;
use ibpoll_wire::{Gid, Lid, Qpn};

use super::Controller;
use crate::mcast::{Group, GroupKind, GroupState};
use crate::ring::GroupAddr;
use crate::subs::{JoinStatus, SubSlot};

impl Controller {
    /// `Request::Subscribe` from data core `core`.
    pub(super) fn subscribe(&mut self, core: usize, group: GroupAddr, slot: SubSlot, now: Nanos) {
        let Some(mgid) = self.mgid_of(group) else {
            self.stats.subscriptions_refused += 1;
            self.subs.report_one(core, slot, JoinStatus::NotAGroup);
            return;
        };
        if let Err(status) = self.want_group(mgid, now) {
            self.stats.subscriptions_refused += 1;
            self.subs.report_one(core, slot, status);
            return;
        }
        let Some((first, replaced)) = self.subs.add(core, slot, mgid) else {
            // No such data core or slot: nothing a data core of ours can send.
            return;
        };
        if let Some(r) = replaced.filter(|r| r.mgid != mgid) {
            self.after_unsubscribe(core, r.mgid, r, now);
        }
        self.stats.subscriptions += 1;
        if first {
            self.attach_lane_if_joined(mgid, core);
        }
        let status = self
            .groups
            .get(&mgid)
            .map_or(JoinStatus::Pending, |g| self.sub_status(g));
        self.subs.report_one(core, slot, status);
    }

    /// `Request::Unsubscribe` from data core `core`.
    pub(super) fn unsubscribe(&mut self, core: usize, slot: SubSlot, now: Nanos) {
        if !self.subs.is_current(core, slot) {
            return;
        }
        if let Some(r) = self.subs.remove(core, slot.index()) {
            self.stats.unsubscriptions += 1;
            self.after_unsubscribe(core, r.mgid, r, now);
        }
    }

    fn after_unsubscribe(&mut self, core: usize, mgid: Gid, r: crate::subs::Removed, now: Nanos) {
        if !r.group_still_subscribed && !self.groups.get(&mgid).is_some_and(|g| g.admin) {
            self.unwant_group(mgid, now);
            return;
        }
        if !r.core_still_subscribed {
            self.detach_lane_unless_needed(mgid, core);
        }
    }

    /// The group is wanted (a subscription or `join_group`): a full-member join follows
    /// once the broadcast group is Joined. `Err` when it cannot be.
    pub(super) fn want_group(&mut self, mgid: Gid, now: Nanos) -> Result<(), JoinStatus> {
        if let Some(g) = self.groups.get_mut(&mgid) {
            g.remove_after_leave = false;
            if g.kind == GroupKind::SendOnly {
                // Upgrade: `schedule_joins` leaves the send-only membership, then the
                // group joins as a full member.
                g.kind = GroupKind::Full;
            }
            return Ok(());
        }
        if self.groups.len() >= self.cfg.groups_max {
            return Err(JoinStatus::TableFull);
        }
        self.groups.insert(Group::new(mgid, GroupKind::Full, now));
        Ok(())
    }

    /// No one wants the group any more: it is left (if Joined) and removed.
    pub(super) fn unwant_group(&mut self, mgid: Gid, now: Nanos) {
        if mgid == self.bcast_mgid {
            return;
        }
        let Some(g) = self.groups.get_mut(&mgid) else {
            return;
        };
        g.remove_after_leave = true;
        match g.state {
            GroupState::Joined { .. } => {
                self.begin_leave(mgid, now, true);
            }
            GroupState::Idle { .. } => self.remove_idle_group(mgid),
            // Joining: removed once the answer (or timeout) has come and been left;
            // Leaving: removed when the leave ends.
            _ => {}
        }
    }

    /// The lanes whose QP a full membership of `g` attaches: those with subscriptions,
    /// and the lane an MGID hash picks when `join_group` wants it (or nothing else does).
    pub(super) fn attach_mask(&self, g: &Group) -> u64 {
        let subscribed = self.subs.cores_of(&g.mgid) & self.lanes_mask();
        if g.admin || subscribed == 0 {
            subscribed | self.hash_lane_bit(&g.mgid)
        } else {
            subscribed
        }
    }

    /// Attaches the QPs of `mask`'s lanes to a group just joined; returns the lanes
    /// attached (failures are counted).
    pub(super) fn attach_lanes(&mut self, mask: u64, mgid: &Gid, mlid: Lid) -> u64 {
        let mut done = 0;
        for lane in lanes_in(mask) {
            let qpn = self.lane_qpns[lane];
            if self.port.attach_mcast(qpn, mgid, mlid).is_ok() {
                done |= 1 << lane;
            } else {
                self.stats.qp_errors += 1;
            }
        }
        done
    }

    /// A lane subscribed to a group already Joined: attach its QP now.
    fn attach_lane_if_joined(&mut self, mgid: Gid, lane: usize) {
        if lane >= self.lane_qpns.len() || self.flush.is_some() {
            return;
        }
        let Some(g) = self.groups.get(&mgid) else {
            return;
        };
        let GroupState::Joined { entry, .. } = &g.state else {
            return;
        };
        if entry.send_only || g.attached & 1 << lane != 0 {
            return;
        }
        let (mlid, qpn) = (entry.mlid, self.lane_qpns[lane]);
        let ok = self.port.attach_mcast(qpn, &mgid, mlid).is_ok();
        if !ok {
            self.stats.qp_errors += 1;
        }
        if let Some(g) = self.groups.get_mut(&mgid) {
            g.attached |= u64::from(ok) << lane;
        }
    }

    /// A lane's last subscription to a group that stays went: detach its QP, unless the
    /// group is attached there for `join_group`.
    fn detach_lane_unless_needed(&mut self, mgid: Gid, lane: usize) {
        let Some(g) = self.groups.get(&mgid) else {
            return;
        };
        let keep = self.attach_mask(g);
        let GroupState::Joined { entry, .. } = &g.state else {
            return;
        };
        let bit = 1u64.checked_shl(lane as u32).unwrap_or(0);
        if g.attached & bit == 0 || keep & bit != 0 {
            return;
        }
        let (mlid, qpn) = (entry.mlid, self.lane_qpns[lane]);
        let _ = self.port.detach_mcast(qpn, &mgid, mlid);
        if let Some(g) = self.groups.get_mut(&mgid) {
            g.attached &= !bit;
        }
    }

    fn lanes_mask(&self) -> u64 {
        match self.lane_qpns.len() {
            n if n >= 64 => u64::MAX,
            n => (1u64 << n) - 1,
        }
    }

    fn hash_lane_bit(&self, mgid: &Gid) -> u64 {
        let qpn = self.lane_qpn_for(mgid);
        let lane = self.lane_qpns.iter().position(|q| *q == qpn).unwrap_or(0);
        1 << lane
    }

    /// How `g`'s subscriptions stand.
    pub(super) fn sub_status(&self, g: &Group) -> JoinStatus {
        if self.flush.is_none() {
            if let GroupState::Joined { membership, .. } = &g.state {
                if membership.join_state().contains(JoinState::FULL_MEMBER) {
                    return JoinStatus::Joined;
                }
            }
        }
        g.last_failure.unwrap_or(JoinStatus::Pending)
    }

    /// Reports the status of every subscription whose group may have changed.
    pub(super) fn sync_subs(&mut self) {
        let mut dirty = std::mem::take(&mut self.sub_scratch);
        self.subs.take_dirty(&mut dirty);
        for mgid in &dirty {
            let status = self
                .groups
                .get(mgid)
                .map_or(JoinStatus::Pending, |g| self.sub_status(g));
            self.subs.report(mgid, status);
        }
        self.sub_scratch = dirty;
    }

    /// A flush starts: the subscribed groups' last join failures are history.
    pub(super) fn forget_join_failures(&mut self) {
        let mut gids = std::mem::take(&mut self.sub_scratch);
        gids.clear();
        gids.extend(self.subs.groups());
        for mgid in &gids {
            if let Some(g) = self.groups.get_mut(mgid) {
                g.last_failure = None;
            }
        }
        self.sub_scratch = gids;
    }

    /// The status of the subscriptions to `group` (as a data core would read it), if the
    /// group is in the table.
    pub fn join_status(&self, group: GroupAddr) -> Option<JoinStatus> {
        let mgid = self.mgid_of(group)?;
        self.groups.get(&mgid).map(|g| self.sub_status(g))
    }

    /// The lanes whose QP is attached to `group` now, one bit each (lane `i`: bit `i`).
    pub fn attached_lanes(&self, group: GroupAddr) -> u64 {
        self.mgid_of(group)
            .and_then(|m| self.groups.get(&m))
            .map_or(0, |g| g.attached)
    }
}

/// Detaches the QPs of `mask`'s lanes from a group (the leave or flush that ends its
/// membership).
pub(super) fn detach_lanes(
    port: &dyn ibpoll_dev::Port,
    lane_qpns: &[Qpn],
    mask: u64,
    mgid: &Gid,
    mlid: Lid,
) {
    for lane in lanes_in(mask) {
        if let Some(qpn) = lane_qpns.get(lane) {
            let _ = port.detach_mcast(*qpn, mgid, mlid);
        }
    }
}

/// The lanes whose bit is set in `mask`.
fn lanes_in(mask: u64) -> impl Iterator<Item = usize> {
    (0..64).filter(move |i| mask & (1 << i) != 0)
}
