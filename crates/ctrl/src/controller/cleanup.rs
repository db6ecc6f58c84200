//! The startup cleanup: before its first join, the controller leaves what an earlier
//! instance on its port left at the SA.
//!
//! Memberships at the SA outlive the process that made them: one killed (`kill -9`, a
//! crash, a host reset while the fabric stays up) never leaves its groups, and the SA
//! keeps forwarding them to the port. The owner lock (`crate::owner`) makes this
//! controller the only one of its partition on the port, so whatever the port holds in
//! the partition and the controller does not is nobody's.
//!
//! A round lists the port's memberships in the partition (MCMemberRecord GetTable,
//! component mask PortGID | P_Key; OpenSM answers one record per group, JoinState
//! zeroed for a request without an SM_Key, IBA p923) and hands each group listed that
//! the controller does not hold to the multicast state machine as an obligation: an
//! unsubscribed group holding an `Unconfirmed` token for the JoinState bits IPoIB joins
//! with (FullMember, SendOnlyFullMember). The state machine leaves it as it leaves a
//! join that timed out: one bit per Delete (a Delete naming a bit not held is refused
//! and leaves nothing; ERR_REQ_INVALID then says it was not held), retried, through
//! flushes, never dropped. A group the interface wants (the broadcast group, a
//! subscription made before the link came up) gets the token too and is left first,
//! then joined (were its leave abandoned, its join would absorb the token: the SA
//! merges the bits and its answer names them all). One answer holds three records, so
//! the next round's listing goes out once this round's leaves ended, until a listing
//! shows nothing new. A group listed again after its bits were left holds bits ibpoll
//! never joins with: not ours; it is left alone, counted and logged.
//!
//! No join goes out while the cleanup runs at start-up (leaves do), so a new membership
//! is never mistaken for a stale one, and every listed group is stale: each round sees
//! the next ones. A listing unanswered or refused for now is asked again at once (an SA
//! that answers no listing answers no join either); one refused as unsupported ends the
//! cleanup. Bounded: after `cleanup_max` (of time the port was usable: Active, the
//! interface up, no flush) joins go out whatever the cleanup's state
//! (counted in `cleanup_failed`, logged), and the cleanup goes on in the background
//! until a listing shows nothing new. In the background it is best effort: without RMPP
//! a listing holds the port's first three memberships by MGID, and once the interface
//! holds memberships of its own, those may hide stale ones that sort after them. RoCE
//! has no SA: the cleanup ends at once.

use ibpoll_dev::Nanos;
use ibpoll_wire::mad::Status;
use ibpoll_wire::mcmember::JoinState;
use ibpoll_wire::Gid;

use super::Controller;
use crate::link::sa::IPOIB_JOIN_STATES;
use crate::link::{ListStart, MgidList, Tid};
use crate::mcast::{Group, GroupKind, GroupState, RetryAt, Unconfirmed};

/// A running cleanup.
#[derive(Debug)]
pub(crate) struct Run {
    started: Nanos,
    /// Time the port was usable (Active, interface up, no flush) since the start, as of
    /// `seen`: what `cleanup_max` bounds.
    usable: Nanos,
    seen: Nanos,
    /// The first run, at start-up: joins wait for it.
    blocking: bool,
    /// The listing in flight.
    listing: Option<Tid>,
    /// Tries of the current listing that went unanswered.
    list_tries: u8,
    /// Groups handed to the state machine, or found already owed.
    handled: Vec<Gid>,
    /// Groups left alone (bits ibpoll does not join with).
    given_up: Vec<Gid>,
    rounds: u32,
    /// `cleanup_found` and `cleanup_failed` at the start, for the summary.
    found: u64,
    failed: u64,
}

/// Where the startup cleanup stands.
#[derive(Debug)]
pub(crate) enum Cleanup {
    /// Waits for the port to be usable.
    Pending,
    /// Running.
    Running(Box<Run>),
    /// Over (or disabled).
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

    /// Whether joins must wait: the first cleanup has not ended.
    pub(crate) fn blocks_joins(&self) -> bool {
        match self {
            Cleanup::Pending => true,
            Cleanup::Running(r) => r.blocking,
            Cleanup::Done => false,
        }
    }

    /// Whether a cleanup runs or waits to run.
    pub(crate) fn is_running(&self) -> bool {
        !matches!(self, Cleanup::Done)
    }
}

/// Whether a listed membership of `mgid` is nobody's: the controller has no group for it,
/// or one that is Idle without an obligation (a group it wants and has not joined yet).
/// Not when the controller holds or will hold it itself (a join in flight, Joined, a
/// leave in flight) or already owes it (an `Unconfirmed` token: left, or absorbed by
/// its join).
fn stale(groups: &crate::table::GroupTable, mgid: &Gid) -> bool {
    groups.get(mgid).is_none_or(|g| {
        matches!(
            g.state,
            GroupState::Idle {
                unconfirmed: None,
                ..
            }
        )
    })
}

/// A refusal that says the SA does not do the listing at all.
fn unsupported(status: Status) -> bool {
    status == Status::UNSUP_METHOD
        || status == Status::UNSUP_METHOD_ATTR
        || status == Status::UNSUP_CLASS_VERSION
}

/// The JoinState bits an IPoIB interface ever holds.
fn ipoib_bits() -> JoinState {
    IPOIB_JOIN_STATES
        .iter()
        .fold(JoinState::NONE, |acc, b| acc | *b)
}

impl Controller {
    /// Whether the cleanup may send a listing now: the interface up, no flush. Not
    /// only while the port is Active: a listing to an unreachable SA fails and is asked
    /// again, as a flush's leaves are, so the cleanup is done as soon as the SA can be
    /// reached.
    fn cleanup_may_run(&self) -> bool {
        self.admin_up && self.flush.is_none() && !self.qp_move_pending && !self.device_dead
    }

    /// Starts the cleanup when the port is usable, and drives it. Returns the work done.
    pub(super) fn cleanup_progress(&mut self, now: Nanos) -> usize {
        let may_run = self.cleanup_may_run();
        match self.cleanup {
            Cleanup::Pending if may_run => {}
            Cleanup::Running(_) => return self.cleanup_drive(now, may_run),
            _ => return 0,
        }
        self.stats.cleanup_runs += 1;
        tracing::info!(
            pkey = %self.cfg.pkey,
            port_gid = %self.port_gid,
            "ibpoll-ctrl: looking for memberships an earlier instance on this port left at the SA"
        );
        self.cleanup = Cleanup::Running(Box::new(Run {
            started: now,
            usable: Nanos::ZERO,
            seen: now,
            blocking: true,
            listing: None,
            list_tries: 0,
            handled: Vec::new(),
            given_up: Vec::new(),
            rounds: 0,
            found: self.stats.cleanup_found,
            failed: self.stats.cleanup_failed,
        }));
        1 + self.cleanup_drive(now, may_run)
    }

    /// Stops blocking joins after `cleanup_max` of usable time; retries what this round
    /// owes at the pace of `sa_timeout`; sends the next round's listing once this
    /// round's leaves ended.
    fn cleanup_drive(&mut self, now: Nanos, may_run: bool) -> usize {
        let usable = self.port_active && self.leaves_allowed();
        let Cleanup::Running(run) = &mut self.cleanup else {
            return 0;
        };
        if usable {
            run.usable = run.usable.saturating_add(now.saturating_sub(run.seen));
        }
        run.seen = now;
        if run.blocking && run.usable >= self.cfg.cleanup_max {
            run.blocking = false;
            self.stats.cleanup_failed += 1;
            tracing::warn!(
                pkey = %self.cfg.pkey,
                "ibpoll-ctrl: the startup cleanup ran out of time (cleanup_max); joining, and going on with it meanwhile"
            );
        }
        if !may_run || run.listing.is_some() {
            return 0;
        }
        // A leave of what this round owes that was given up for now (every try lost or
        // refused) waits `backoff_s_max` in the state machine; the cleanup, which waits
        // for it, has it tried again at the pace of one SA timeout.
        let soon = now.saturating_add(self.cfg.sa_timeout);
        for m in &run.handled {
            let Some(g) = self.groups.get(m) else {
                continue;
            };
            let due_late = matches!(
                g.state,
                GroupState::Idle { unconfirmed: Some(_), retry_at: RetryAt::At(t), .. } if t > soon
            );
            if due_late && (g.remove_after_leave || g.leave_first) {
                if let Some(GroupState::Idle { retry_at, .. }) =
                    self.groups.get_mut(m).map(|g| &mut g.state)
                {
                    *retry_at = RetryAt::At(soon);
                }
            }
        }
        // This round's groups must be gone from the SA before the next listing, or it
        // shows them again (it holds the first records only): those the state machine
        // leaves, until their leaves ended.
        let settling = run.handled.iter().any(|m| {
            self.groups.get(m).is_some_and(|g| match g.state {
                GroupState::Leaving { .. } => true,
                GroupState::Idle {
                    unconfirmed: Some(_),
                    ..
                } => g.remove_after_leave || g.leave_first,
                _ => false,
            })
        });
        if settling {
            return 0;
        }
        match self.link.start_list(now, self.cfg.pkey, &mut self.stats) {
            ListStart::Started(tid) => {
                run.listing = Some(tid);
                run.rounds += 1;
                1
            }
            ListStart::Later => 0,
            ListStart::NotApplicable => {
                self.cleanup = Cleanup::Done;
                1
            }
        }
    }

    /// A listing ended: the groups listed, or why not (`Err(None)`: unanswered,
    /// `Err(Some(status))`: refused).
    pub(super) fn on_listed(
        &mut self,
        tid: Tid,
        found: Result<MgidList, Option<Status>>,
        now: Nanos,
    ) {
        let Cleanup::Running(run) = &mut self.cleanup else {
            return;
        };
        if run.listing != Some(tid) {
            return;
        }
        run.listing = None;
        let found = match found {
            Ok(found) => found,
            // An SA that does not do GetTable of MCMemberRecord: nothing to wait for.
            Err(Some(status)) if unsupported(status) => {
                self.stats.cleanup_failed += 1;
                tracing::warn!(
                    pkey = %self.cfg.pkey,
                    sa_status = format_args!("{:#06x}", status.0),
                    "ibpoll-ctrl: the SA does not list a port's memberships; no startup cleanup"
                );
                self.cleanup_end(now);
                return;
            }
            // Unanswered, or refused for now (busy, no resources): asked again by the
            // next poll, until cleanup_max.
            Err(_) => {
                run.list_tries = run.list_tries.saturating_add(1);
                if run.list_tries == self.cfg.leave_tries {
                    tracing::warn!(
                        pkey = %self.cfg.pkey,
                        tries = run.list_tries,
                        "ibpoll-ctrl: the SA does not answer the listing of this port's memberships; asking again until cleanup_max"
                    );
                }
                return;
            }
        };
        run.list_tries = 0;
        let (new, no_room) = self.owe_listed(&found, now);
        let Cleanup::Running(run) = &self.cleanup else {
            unreachable!("running above");
        };
        // A round that owed nothing ends the cleanup: the listing shows nothing new, or
        // the group table is full of groups the interface keeps (counted).
        if new == 0 {
            if no_room > 0 {
                self.stats.cleanup_failed += 1;
                tracing::warn!(
                    pkey = %self.cfg.pkey,
                    "ibpoll-ctrl: the group table is full: memberships an earlier instance left stay at the SA"
                );
            }
            self.cleanup_end(now);
        } else if run.rounds as usize > 2 * self.cfg.groups_max + 2 {
            // Bounded whatever the SA answers.
            self.stats.cleanup_failed += 1;
            self.cleanup_end(now);
        }
    }

    /// Owes every group of a listing that is nobody's; returns how many were owed and
    /// how many wait for room in the group table.
    fn owe_listed(&mut self, found: &MgidList, now: Nanos) -> (usize, usize) {
        let (mut new, mut no_room) = (0, 0);
        for &mgid in found.as_slice() {
            let Cleanup::Running(run) = &mut self.cleanup else {
                break;
            };
            if run.given_up.contains(&mgid) || !stale(&self.groups, &mgid) {
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
            if !self.groups.contains_key(&mgid) && self.groups.len() >= self.cfg.groups_max {
                // No room to owe it now: a later round, once the table has room.
                no_room += 1;
                continue;
            }
            run.handled.push(mgid);
            self.stats.cleanup_found += 1;
            new += 1;
            self.owe_stale(mgid, now);
        }
        (new, no_room)
    }

    /// Hands a stale membership to the state machine: an `Unconfirmed` token for the
    /// bits IPoIB joins with, on the group if the interface has it (Idle: left first,
    /// then joined), else on a new unsubscribed group that is left and removed.
    fn owe_stale(&mut self, mgid: Gid, now: Nanos) {
        tracing::info!(
            pkey = %self.cfg.pkey,
            %mgid,
            "ibpoll-ctrl: a membership an earlier instance on this port left; leaving it"
        );
        let token = Unconfirmed::from_timeout(mgid, ipoib_bits());
        if let Some(g) = self.groups.get_mut(&mgid) {
            if let GroupState::Idle { unconfirmed, .. } = &mut g.state {
                if unconfirmed.is_none() {
                    *unconfirmed = Some(token);
                    g.leave_first = true;
                }
            }
            return;
        }
        let mut g = Group::new(mgid, GroupKind::SendOnly, now);
        if let GroupState::Idle { unconfirmed, .. } = &mut g.state {
            *unconfirmed = Some(token);
        }
        g.remove_after_leave = true;
        self.groups.insert(g);
    }

    fn cleanup_end(&mut self, now: Nanos) {
        if let Cleanup::Running(run) = &self.cleanup {
            tracing::info!(
                pkey = %self.cfg.pkey,
                rounds = run.rounds,
                found = self.stats.cleanup_found - run.found,
                failed = self.stats.cleanup_failed - run.failed,
                ms = now.saturating_sub(run.started).0 / 1_000_000,
                "ibpoll-ctrl: startup cleanup done"
            );
        }
        self.cleanup = Cleanup::Done;
    }
}
