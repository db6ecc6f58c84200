//! Port events and the flush they start (the kernel's `ipoib_ib_dev_flush_*`): drain
//! the joins and path queries in flight, leave every group, end within `flush_max`, then
//! what the level asks (revalidate paths, re-read the P_Key index).

use ibpoll_dev::{Nanos, PortEvent, PortState};

use super::subscribe::detach_lanes;
use super::{Controller, CtrlEvent, Flush, FlushLevel};
use crate::link::TxnKind;
use crate::mcast::{Backoff, GroupKind, GroupState, RetryAt, Unconfirmed};
use crate::table::Change;

/// Port events handled per poll.
const PORT_EVENTS_PER_POLL: usize = 16;

impl Controller {
    pub(super) fn port_events(&mut self, now: Nanos) -> usize {
        let mut n = 0;
        while n < PORT_EVENTS_PER_POLL {
            let Some(ev) = self.port.poll_event() else {
                break;
            };
            n += 1;
            let attr = self.port.attr();
            self.port_active = attr.state == PortState::Active && !self.device_dead;
            self.link.port_changed(&attr);
            self.port_gid = self.link.port_gid();
            match ev {
                PortEvent::DeviceFatal => {
                    // Every resource of the device is dead: down for good (leaves are
                    // still tried; the SA may hold memberships of this port).
                    self.device_dead = true;
                    self.port_active = false;
                    self.stats.device_fatal += 1;
                    tracing::error!(
                        port = attr.port_num,
                        "ibpoll: device fatal error; the interface stays down"
                    );
                }
                PortEvent::QpFatal { qpn } => {
                    self.stats.qp_errors += 1;
                    tracing::error!(%qpn, "ibpoll: a UD QP of the interface went to the error state");
                }
                _ => {}
            }
            let level = flush_level_of(ev);
            if level == FlushLevel::Light {
                tracing::info!(
                    pkey = %self.cfg.pkey,
                    event = ?ev,
                    groups = self.groups.len(),
                    "ibpoll-ctrl: the subnet manager restarted or asked to reregister; rejoining every group"
                );
            } else {
                tracing::info!(pkey = %self.cfg.pkey, event = ?ev, "ibpoll-ctrl: port event");
            }
            self.start_flush(level, now);
        }
        n
    }

    /// Starts a flush, or raises the level of the running one.
    pub(crate) fn start_flush(&mut self, level: FlushLevel, now: Nanos) {
        match level {
            FlushLevel::Light => self.stats.flushes_light += 1,
            FlushLevel::Normal => self.stats.flushes_normal += 1,
            FlushLevel::Heavy => self.stats.flushes_heavy += 1,
        }
        let f = match self.flush {
            Some(mut f) => {
                f.level = f.level.max(level);
                f
            }
            None => {
                tracing::info!(
                    pkey = %self.cfg.pkey,
                    ?level,
                    groups = self.groups.len(),
                    "ibpoll-ctrl: flush started"
                );
                // No group is published while a flush runs.
                self.changes.push(Change::AllGroups);
                // Nor reported joined; failures before it are history.
                self.forget_join_failures();
                self.subs.touch_all();
                Flush {
                    level,
                    started: now,
                    leaving: false,
                }
            }
        };
        self.flush = Some(f);
        // The next publish drops every group (see `publish`).
        self.dirty = true;
        if f.level >= FlushLevel::Normal {
            self.set_link(false);
            self.drop_neighbours();
        }
    }

    /// Drives a running flush: drain joins and path queries, then leave everything, then
    /// end (bounded by `flush_max` however silent the SA is).
    pub(super) fn flush_progress(&mut self, now: Nanos) -> usize {
        let Some(mut f) = self.flush else {
            return 0;
        };
        let mut work = 0;
        if now.saturating_sub(f.started) >= self.cfg.flush_max {
            work += self.flush_abandon(now);
            self.flush_end(f.level, now);
            return work + 1;
        }
        if !f.leaving {
            let draining = self
                .link
                .txns()
                .in_flight_where(|k| matches!(k, TxnKind::Join(_) | TxnKind::Path(_)));
            if draining > 0 {
                return 0;
            }
            f.leaving = true;
            self.flush = Some(f);
            work += 1;
        }
        // Leave every Joined group (exactly once: the token is consumed) and every group
        // whose join timed out (the SA may hold it), as the window allows, in MGID order.
        self.reindex();
        self.scratch.clear();
        let room = self.link.txns().room();
        self.scratch
            .extend(self.groups.flush_leave().iter().take(room).copied());
        for i in 0..self.scratch.len() {
            if !self.link.txns().has_room() {
                break;
            }
            let mgid = self.scratch[i];
            if self.begin_leave(mgid, now, false) {
                work += 1;
            }
        }
        // Still to leave, and leaves in flight.
        self.reindex();
        let pending = self.groups.flush_leave().len() + self.groups.leaving();
        if pending == 0 {
            self.flush_end(f.level, now);
            work += 1;
        }
        work
    }

    /// `flush_max` passed with transactions still open (the window had to be cycled
    /// more often than the time allowed). Their transactions are abandoned (answers to
    /// them will count as late), but no obligation to leave is dropped: whatever may
    /// still be held at the SA stays as an `Unconfirmed` token for the next flush.
    fn flush_abandon(&mut self, now: Nanos) -> usize {
        let mut n = 0;
        self.scratch.clear();
        self.scratch.extend(self.groups.keys().copied());
        // In MGID order, so that a simulated run replays exactly.
        self.scratch.sort_unstable();
        for i in 0..self.scratch.len() {
            let mgid = self.scratch[i];
            let Some(g) = self.groups.get_mut(&mgid) else {
                continue;
            };
            let old = std::mem::replace(&mut g.state, GroupState::idle_now(now));
            let unconfirmed = match old {
                GroupState::Idle { unconfirmed, .. } => unconfirmed,
                GroupState::Joining {
                    tid, unconfirmed, ..
                } => {
                    self.link.txns_mut().abandon(tid);
                    n += 1;
                    unconfirmed.or(Some(Unconfirmed::from_timeout(mgid, g.kind.join_state())))
                }
                GroupState::Leaving { tid, leave, .. } => {
                    self.link.txns_mut().abandon(tid);
                    n += 1;
                    Some(leave.into_unconfirmed())
                }
                GroupState::Joined { membership, entry } => {
                    let attached = std::mem::take(&mut g.attached);
                    detach_lanes(&*self.port, &self.lane_qpns, attached, &mgid, entry.mlid);
                    self.dirty = true;
                    n += 1;
                    Some(membership.leave().into_unconfirmed())
                }
            };
            g.state = GroupState::Idle {
                backoff: Backoff::default(),
                retry_at: RetryAt::At(now),
                unconfirmed,
            };
        }
        self.stats.flush_abandoned += 1;
        tracing::warn!(
            pkey = %self.cfg.pkey,
            "ibpoll-ctrl: the flush ran out of time (flush_max); what the SA may still hold is left by the next flush"
        );
        n
    }

    fn flush_end(&mut self, level: FlushLevel, now: Nanos) {
        if let Some(f) = self.flush {
            tracing::info!(
                pkey = %self.cfg.pkey,
                ?level,
                ms = now.saturating_sub(f.started).0 / 1_000_000,
                "ibpoll-ctrl: flush ended"
            );
        }
        self.flush = None;
        // Groups are published again.
        self.changes.push(Change::AllGroups);
        self.subs.touch_all();
        self.remove_flushed_groups(level);
        self.reset_idle_groups(now);
        match level {
            FlushLevel::Light => self.revalidate_neighbours(),
            FlushLevel::Normal => {}
            FlushLevel::Heavy => {
                let attr = self.port.attr();
                self.pkey_index = attr.pkey_index(self.cfg.pkey);
                match self.pkey_index {
                    Some(pkey_index) => {
                        self.qp_move_pending = true;
                        self.push_event(CtrlEvent::RebuildQp { pkey_index });
                    }
                    None => self.stats.pkey_missing += 1,
                }
            }
        }
        self.dirty = true;
    }

    /// Send-only groups go with the flush (the kernel's mcast_dev_flush), and so do
    /// unsubscribed ones; what they still queued is counted.
    fn remove_flushed_groups(&mut self, level: FlushLevel) {
        self.scratch.clear();
        self.scratch.extend(
            self.groups
                .values()
                .filter(|g| {
                    goes_with_flush(g.kind, !g.queue.is_empty(), g.remove_after_leave, level)
                })
                .map(|g| g.mgid),
        );
        // In MGID order, not the hash map's: what is freed, and in which order, is the
        // same on every run (the simulator replays seeds bit for bit).
        self.scratch.sort_unstable();
        for i in 0..self.scratch.len() {
            let mgid = self.scratch[i];
            self.remove_idle_group(mgid);
        }
    }

    /// Every Idle group may join again at once, with its backoff reset.
    fn reset_idle_groups(&mut self, now: Nanos) {
        for g in self.groups.values_mut() {
            g.leave_deferred = false;
            if let GroupState::Idle { unconfirmed, .. } = &mut g.state {
                // Keep what the SA may still hold (an abandoned leave or flush): a
                // subscribed group's rejoin settles it, an unsubscribed or send-only one
                // without packets is left again by `schedule_joins`.
                let unconfirmed = unconfirmed.take();
                if unconfirmed.is_some() && g.kind == GroupKind::SendOnly && g.queue.is_empty() {
                    g.remove_after_leave = true;
                }
                g.state = GroupState::Idle {
                    backoff: Backoff::default(),
                    retry_at: RetryAt::At(now),
                    unconfirmed,
                };
            }
        }
    }
}

/// Whether the end of a flush of `level` removes a group: an unsubscribed group, or a
/// send-only one, except that after a light flush (a subnet-manager restart) the link is
/// still up, so a send-only group with packets queued meanwhile is rejoined and sends
/// them, rather than dropping them.
fn goes_with_flush(kind: GroupKind, queued: bool, unsubscribed: bool, level: FlushLevel) -> bool {
    let keep = level == FlushLevel::Light && queued;
    (kind == GroupKind::SendOnly && !keep) || unsubscribed
}

/// The flush a port event starts.
fn flush_level_of(ev: PortEvent) -> FlushLevel {
    match ev {
        PortEvent::ClientReregister | PortEvent::SmChange => FlushLevel::Light,
        PortEvent::PkeyChange => FlushLevel::Heavy,
        // Active, Error, LidChange, GidChange (a new source GID: paths and the hardware
        // address change), a fatal device or QP error (down, then up when it can), and
        // anything a newer driver reports.
        _ => FlushLevel::Normal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_events_start_the_kernels_flush_levels() {
        let light = [PortEvent::ClientReregister, PortEvent::SmChange];
        let normal = [
            PortEvent::Active,
            PortEvent::Error,
            PortEvent::LidChange,
            PortEvent::GidChange,
            PortEvent::DeviceFatal,
        ];
        assert!(light
            .iter()
            .all(|e| flush_level_of(*e) == FlushLevel::Light));
        assert!(normal
            .iter()
            .all(|e| flush_level_of(*e) == FlushLevel::Normal));
        assert_eq!(flush_level_of(PortEvent::PkeyChange), FlushLevel::Heavy);
        // A running flush is raised, never lowered (`start_flush` takes the max).
        assert!(FlushLevel::Light < FlushLevel::Normal && FlushLevel::Normal < FlushLevel::Heavy);
    }

    #[test]
    fn send_only_and_unsubscribed_groups_go_with_the_flush() {
        use FlushLevel::{Heavy, Light, Normal};
        use GroupKind::{Broadcast, Full, SendOnly};
        for level in [Light, Normal, Heavy] {
            // Subscribed groups stay; unsubscribed ones go, whatever they queued.
            for kind in [Broadcast, Full] {
                assert!(!goes_with_flush(kind, false, false, level));
                assert!(!goes_with_flush(kind, true, false, level));
                assert!(goes_with_flush(kind, true, true, level));
            }
            assert!(goes_with_flush(SendOnly, false, false, level));
        }
        // Only a light flush keeps a send-only group's queued packets for the rejoin.
        assert!(!goes_with_flush(SendOnly, true, false, Light));
        assert!(goes_with_flush(SendOnly, true, false, Normal));
        assert!(goes_with_flush(SendOnly, true, false, Heavy));
        assert!(goes_with_flush(SendOnly, true, true, Light));
    }
}
