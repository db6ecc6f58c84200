//! The startup cleanup: before its first join, the controller leaves what an earlier
//! instance on its port left at the SA.
//!
//! Memberships at the SA outlive the process that made them: one killed (`kill -9`, a
//! crash, a power cut of the host while the fabric stays up) never leaves its groups,
//! and the SA keeps forwarding them to the port. The owner lock (`crate::owner`) makes
//! this controller the only one of its partition on the port, so whatever the port
//! holds in the partition now is nobody's: it is left before anything is joined.
//!
//! A round lists the port's memberships in the partition (MCMemberRecord GetTable,
//! component mask PortGID | P_Key) and leaves each group listed, one JoinState bit per
//! Delete: OpenSM zeroes JoinState in answers to requests without an SM_Key (IBA
//! p923), and a Delete naming a bit not held is refused without leaving anything, so
//! each bit an IPoIB interface ever joins with (FullMember, SendOnlyFullMember) is left
//! on its own; a refusal with ERR_REQ_INVALID says the bit was not held. An answer
//! holds one MAD of records (three), so rounds repeat until a listing shows no group
//! not already handled. A group listed again after its leaves holds bits ibpoll never
//! joins with (not ours): it is given up, counted and logged.
//!
//! Bounded: the whole cleanup ends within `cleanup_max`, a listing or leave is tried
//! `leave_tries` times, and what could not be done is counted (`cleanup_failed`) and
//! logged; the interface then comes up anyway. RoCE has no SA: the cleanup ends at
//! once.

use std::collections::VecDeque;

use ibpoll_dev::Nanos;
use ibpoll_wire::mcmember::JoinState;
use ibpoll_wire::Gid;

use super::Controller;
use crate::link::sa::IPOIB_JOIN_STATES;
use crate::link::{ListStart, MgidList, Tid};

/// One stale membership bit to leave.
#[derive(Debug, Clone, Copy)]
struct StaleBit {
    mgid: Gid,
    bit: JoinState,
    /// Tries so far.
    tries: u8,
}

/// A running cleanup.
#[derive(Debug)]
pub(crate) struct Run {
    started: Nanos,
    /// The listing in flight.
    listing: Option<Tid>,
    /// Tries of the current listing that went unanswered.
    list_tries: u8,
    /// Leaves to send.
    todo: VecDeque<StaleBit>,
    /// Leaves in flight.
    inflight: Vec<(Tid, StaleBit)>,
    /// Groups whose leaves were sent.
    handled: Vec<Gid>,
    /// Groups given up on.
    given_up: Vec<Gid>,
    rounds: u32,
    /// Counts at the start, for the summary.
    found: u64,
    left: u64,
    failed: u64,
}

/// Where the startup cleanup stands.
#[derive(Debug)]
pub(crate) enum Cleanup {
    /// Waits for the port to be usable.
    Pending,
    /// Running.
    Running(Box<Run>),
    /// Over (or disabled): joins may go out.
    Done,
}

impl Cleanup {
    pub(crate) fn new(enabled: bool) -> Cleanup {
        if enabled {
            Cleanup::Pending
        } else {
            Cleanup::Done
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        matches!(self, Cleanup::Done)
    }
}

impl Controller {
    /// Whether the cleanup may send anything now: the port usable, no flush.
    fn cleanup_may_run(&self) -> bool {
        self.port_active && self.admin_up && self.flush.is_none() && !self.qp_move_pending
    }

    /// Starts the cleanup when the port is usable, and drives it. Returns the work done.
    pub(super) fn cleanup_progress(&mut self, now: Nanos) -> usize {
        match &self.cleanup {
            Cleanup::Done => return 0,
            Cleanup::Pending if !self.cleanup_may_run() => return 0,
            Cleanup::Pending => {
                self.stats.cleanup_runs += 1;
                tracing::info!(
                    pkey = %self.cfg.pkey,
                    port_gid = %self.port_gid,
                    "ibpoll-ctrl: looking for memberships an earlier instance on this port left at the SA"
                );
                self.cleanup = Cleanup::Running(Box::new(Run {
                    started: now,
                    listing: None,
                    list_tries: 0,
                    todo: VecDeque::new(),
                    inflight: Vec::new(),
                    handled: Vec::new(),
                    given_up: Vec::new(),
                    rounds: 0,
                    found: self.stats.cleanup_found,
                    left: self.stats.cleanup_left,
                    failed: self.stats.cleanup_failed,
                }));
            }
            Cleanup::Running(_) => {}
        }
        let may_run = self.cleanup_may_run();
        let Cleanup::Running(run) = &mut self.cleanup else {
            unreachable!("started above");
        };
        if now.saturating_sub(run.started) >= self.cfg.cleanup_max {
            let txns = self.link.txns_mut();
            for tid in run
                .listing
                .take()
                .into_iter()
                .chain(run.inflight.iter().map(|(t, _)| *t))
            {
                txns.abandon(tid);
            }
            self.stats.cleanup_failed += 1;
            tracing::warn!(
                pkey = %self.cfg.pkey,
                "ibpoll-ctrl: the startup cleanup ran out of time (cleanup_max); the SA may still hold memberships an earlier instance left"
            );
            self.cleanup_end(now);
            return 1;
        }
        if !may_run {
            return 0;
        }
        let mut work = 0;
        while let Some(b) = run.todo.front().copied() {
            let Some((tid, _)) = self
                .link
                .start_leave(now, b.mgid, b.bit, true, &mut self.stats)
            else {
                break;
            };
            run.todo.pop_front();
            run.inflight.push((tid, b));
            work += 1;
        }
        if run.listing.is_none() && run.todo.is_empty() && run.inflight.is_empty() {
            match self.link.start_list(now, self.cfg.pkey, &mut self.stats) {
                ListStart::Started(tid) => {
                    run.listing = Some(tid);
                    run.rounds += 1;
                    work += 1;
                }
                ListStart::Later => {}
                ListStart::NotApplicable => {
                    self.cleanup = Cleanup::Done;
                    return work + 1;
                }
            }
        }
        work
    }

    /// A listing ended: `found` the groups listed, `None` when it went unanswered.
    pub(super) fn on_listed(&mut self, tid: Tid, found: Option<MgidList>, now: Nanos) {
        let Cleanup::Running(run) = &mut self.cleanup else {
            return;
        };
        if run.listing != Some(tid) {
            return;
        }
        run.listing = None;
        let Some(found) = found else {
            run.list_tries += 1;
            if run.list_tries >= self.cfg.leave_tries {
                self.stats.cleanup_failed += 1;
                tracing::warn!(
                    pkey = %self.cfg.pkey,
                    tries = run.list_tries,
                    "ibpoll-ctrl: the SA did not answer the listing of this port's memberships; going on without the cleanup"
                );
                self.cleanup_end(now);
            }
            return;
        };
        run.list_tries = 0;
        let mut new = 0;
        for &mgid in found.as_slice() {
            if run.given_up.contains(&mgid) {
                continue;
            }
            if run.handled.contains(&mgid) {
                run.given_up.push(mgid);
                self.stats.cleanup_failed += 1;
                tracing::warn!(
                    pkey = %self.cfg.pkey,
                    %mgid,
                    "ibpoll-ctrl: the port is still a member after its FullMember and SendOnlyFullMember bits were left: a membership ibpoll does not make; left alone"
                );
                continue;
            }
            run.handled.push(mgid);
            self.stats.cleanup_found += 1;
            new += 1;
            tracing::info!(
                pkey = %self.cfg.pkey,
                %mgid,
                "ibpoll-ctrl: leaving a membership an earlier instance on this port left"
            );
            run.todo
                .extend(IPOIB_JOIN_STATES.iter().map(|&bit| StaleBit {
                    mgid,
                    bit,
                    tries: 0,
                }));
        }
        // Bounded: at most one round per group a controller of this configuration can
        // hold, and one to see the table empty.
        if new == 0 || run.rounds as usize > self.cfg.groups_max {
            self.cleanup_end(now);
        }
    }

    /// A stale membership's leave ended: `held` says whether the SA held the bit, `None`
    /// when it was refused or went unanswered (tried again, then given up).
    pub(super) fn on_stale_leave(&mut self, tid: Tid, mgid: Gid, held: Option<bool>, _now: Nanos) {
        let Cleanup::Running(run) = &mut self.cleanup else {
            return;
        };
        let Some(i) = run.inflight.iter().position(|(t, _)| *t == tid) else {
            return;
        };
        let (_, b) = run.inflight.swap_remove(i);
        debug_assert_eq!(b.mgid, mgid);
        match held {
            Some(true) => self.stats.cleanup_left += 1,
            Some(false) => {}
            None if b.tries + 1 < self.cfg.leave_tries => run.todo.push_back(StaleBit {
                tries: b.tries + 1,
                ..b
            }),
            None => {
                if !run.given_up.contains(&mgid) {
                    run.given_up.push(mgid);
                    self.stats.cleanup_failed += 1;
                }
                tracing::warn!(
                    pkey = %self.cfg.pkey,
                    %mgid,
                    join_state = ?b.bit,
                    "ibpoll-ctrl: every try to leave a membership an earlier instance left was refused or lost"
                );
            }
        }
    }

    fn cleanup_end(&mut self, now: Nanos) {
        if let Cleanup::Running(run) = &self.cleanup {
            tracing::info!(
                pkey = %self.cfg.pkey,
                rounds = run.rounds,
                found = self.stats.cleanup_found - run.found,
                bits_left = self.stats.cleanup_left - run.left,
                failed = self.stats.cleanup_failed - run.failed,
                ms = now.saturating_sub(run.started).0 / 1_000_000,
                "ibpoll-ctrl: startup cleanup done"
            );
        }
        self.cleanup = Cleanup::Done;
    }
}
