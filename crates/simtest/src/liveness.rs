//! The liveness check: a membership the controller gave up is gone at the SA in bounded
//! time, while faults are on, not only after the final flush.
//!
//! A host *gives up* a membership when its controller no longer means to keep it
//! ([`Controller::means_to_keep`](ibpoll_ctrl::Controller::means_to_keep) is false: the
//! group is Leaving, holds an `Unconfirmed` obligation, is Joined but unsubscribed or
//! under a flush, or is gone from the table) while the SA still holds it. From the first
//! step that sees this, an *episode* runs until the SA no longer holds it or a step sees
//! the controller mean to keep it again, or finds that it sent a join for it (a rejoin
//! settles an obligation: the SA merges it into the new membership).
//!
//! An episode longer than [`Sim::leave_bound`](crate::Sim::leave_bound) breaks the check,
//! unless the fault schedule explains it: at least `leave_tries` of the host's requests
//! for that group, sent during the episode, failed because of it: lost, refused by an injected error, not
//! sendable (the port was not Active) or unanswered before their deadline (the answer
//! lost or delayed past `sa_timeout`). Then the controller did what rule 6 asks and
//! keeps the obligation for its next chance, which the end check
//! ([`Sim::finish`](crate::Sim::finish)) settles. A flush abandoned at `flush_max` during
//! the episode explains it too: rule 5 bounds a flush's time, not its leaves, and what it
//! could not leave is owed to the next one.
//!
//! And an episode is timed only while the SA was reachable for the host: the time during
//! which some SA transaction of the host (any request: a join, a leave, a path query)
//! was running that the fault schedule made fail is taken off (the union of their
//! `[sent, sent + sa_timeout]` spans). That is the SA being unreachable "for that long":
//! its answers lost or late, requests lost or refused, the port down, and a window full
//! of such transactions, which holds back this group's own requests too.

use std::collections::BTreeMap;

use ibpoll_dev::Nanos;
use ibpoll_wire::Gid;

use crate::obs::{Obs, RequestLedger};
use crate::sim::Host;

#[derive(Debug, Clone, Copy)]
struct Episode {
    since: Nanos,
    /// The host's requests for the group when the episode started.
    requests_at_start: RequestLedger,
    /// The controller's count of abandoned flushes when the episode started.
    flushes_abandoned: u64,
    /// The host's time with failing SA transactions when the episode started.
    failing_at_start: Nanos,
    /// The fault schedule explained it: no longer timed.
    excused: bool,
}

/// The running episodes, by (host, MGID).
#[derive(Debug, Default)]
pub(crate) struct Liveness {
    episodes: BTreeMap<(usize, Gid), Episode>,
    /// The request ledger as of the previous check: an episode seen first now started
    /// after it, and its first request may have gone out in the same step.
    requests_before: BTreeMap<(usize, Gid), RequestLedger>,
    /// Episodes the fault schedule explained.
    pub(crate) excused: u64,
    /// The longest episode that ended or still runs unexcused.
    pub(crate) longest: Nanos,
}

impl Liveness {
    /// Updates the episodes after a step and panics on one past `bound(host)`.
    pub(crate) fn check(
        &mut self,
        now: Nanos,
        hosts: &[Host],
        obs: &Obs,
        bound: impl Fn(usize) -> Nanos,
    ) {
        let mut seen = BTreeMap::new();
        for host in hosts {
            let h = host.index;
            for (mgid, js) in obs.held_by(h) {
                if host.ctl.means_to_keep(&mgid) {
                    continue;
                }
                let requests = obs.requests.get(&(h, mgid)).copied().unwrap_or_default();
                let before = self.requests_before.get(&(h, mgid)).copied();
                if before.unwrap_or_default().joins != requests.joins {
                    // The controller sent a join for it since the last check (refused or
                    // lost at once, it never showed as Joining): it meant to keep it, and
                    // a new episode starts now.
                    self.episodes.remove(&(h, mgid));
                }
                let abandoned = host.ctl.stats().flush_abandoned;
                let e = *self.episodes.entry((h, mgid)).or_insert(Episode {
                    since: now,
                    requests_at_start: before.unwrap_or_default(),
                    flushes_abandoned: abandoned,
                    failing_at_start: obs.sa_failing[h],
                    excused: false,
                });
                seen.insert((h, mgid), ());
                if e.excused {
                    continue;
                }
                // Time while some transaction of the host was failing by the fault
                // schedule does not count: the SA was unreachable for it (and a window
                // full of failing transactions holds back this group's requests too).
                let failing = obs.sa_failing[h].saturating_sub(e.failing_at_start);
                let took = now.saturating_sub(e.since).saturating_sub(failing);
                let failed = requests.failed() - e.requests_at_start.failed();
                if failed >= u64::from(host.cfg.leave_tries) || abandoned > e.flushes_abandoned {
                    self.excused += 1;
                    if let Some(e) = self.episodes.get_mut(&(h, mgid)) {
                        e.excused = true;
                    }
                    continue;
                }
                self.longest = self.longest.max(took);
                let bound = bound(h);
                assert!(
                    took <= bound,
                    "host {h}: the SA still holds {mgid} ({js:?}) {took:?} after the controller \
                     gave it up (bound {bound:?}); the controller has {:?}; requests for it since: {} \
                     sent, {} failed by the fault schedule, {} acted on",
                    host.ctl.group_state(ibpoll_ctrl::GroupAddr::Mgid(mgid)),
                    requests.sent - e.requests_at_start.sent,
                    failed,
                    requests.acted - e.requests_at_start.acted,
                );
            }
        }
        self.episodes.retain(|k, _| seen.contains_key(k));
        if self.requests_before != obs.requests {
            self.requests_before.clone_from(&obs.requests);
        }
    }
}
