//! Expiry, once a second: send-only groups unused for `sendonly_idle` (DESIGN rule 7)
//! and neighbours.

use ibpoll_dev::Nanos;

use super::Controller;
use crate::mcast::GroupState;

impl Controller {
    /// Runs [`Controller::expire`] when its second is due.
    pub(super) fn expire_due(&mut self, now: Nanos) -> usize {
        if now < self.next_expiry_check {
            return 0;
        }
        self.next_expiry_check = now.saturating_add(Nanos::from_secs(1));
        self.expire(now)
    }

    /// Leaves send-only groups unused for `sendonly_idle` (DESIGN rule 7) and ages
    /// neighbours.
    fn expire(&mut self, now: Nanos) -> usize {
        let mut n = 0;
        if self.flush.is_none() {
            // Only Joined send-only groups can expire (the table's index of them).
            self.reindex();
            self.scratch.clear();
            self.scratch
                .extend(self.groups.send_only_joined().iter().copied());
            let mut expired = 0;
            for i in 0..self.scratch.len() {
                let mgid = self.scratch[i];
                let Some(g) = self.groups.get_mut(&mgid) else {
                    continue;
                };
                if let GroupState::Joined { entry, .. } = &g.state {
                    if self.nh.take_used(entry.nh()) {
                        g.last_used = now;
                    } else if now.saturating_sub(g.last_used) >= self.cfg.sendonly_idle {
                        self.scratch[expired] = mgid;
                        expired += 1;
                    }
                }
            }
            self.scratch.truncate(expired);
            for i in 0..self.scratch.len() {
                let mgid = self.scratch[i];
                if self.begin_leave(mgid, now, true) {
                    self.stats.mcast_expired += 1;
                    n += 1;
                }
            }
        }
        n + self.neigh_expire(now)
    }
}
