//! Per-group state: an enum, not a set of flags.
//!
//! ```text
//! Idle    { backoff, retry_at, unconfirmed }  not a member; join when allowed and due
//! Joining { tid, deadline }                   SA Set in flight; no membership exists yet
//! Joined  { membership, entry }               member; `membership` is a non-Clone token
//! Leaving { tid, deadline, tries, leave }     SA Delete in flight
//! ```
//!
//! A [`Membership`] can only be made from a [`JoinGranted`], which only the SA client
//! makes, from a TID-matched join answer with status OK. It is neither `Clone` nor
//! `Copy`. Leaving *consumes* it (`Membership::leave`), so a group can be left at most
//! once per successful join, and never without one.
//!
//! A join that timed out may still have been granted (its answer was lost). Its group
//! goes back to Idle holding an [`Unconfirmed`] token, made only from that timeout; a
//! flush consumes it into one leave of exactly the JoinState bits the join asked for.
//! Such a Delete is harmless when the SA never granted the join (it answers with an
//! error status and acts on nothing), and necessary when it did: otherwise the SA would
//! keep a membership this port does not know it holds. A later successful join of the
//! same group supersedes the token: the SA merges JoinState bits of one port and its
//! answer names them all, so the membership that then exists (and its one leave) covers
//! exactly what the SA holds. A leave that cannot be completed (every try lost or
//! refused) turns back into an `Unconfirmed` token: the obligation is never dropped.
//!
//! The token cannot be copied:
//!
//! ```compile_fail
//! fn needs_clone<T: Clone>() {}
//! needs_clone::<ibpoll_ctrl::Membership>();
//! ```
//!
//! nor made outside this crate:
//!
//! ```compile_fail
//! let m = ibpoll_ctrl::Membership { record: Default::default(), join_state: Default::default() };
//! ```

use std::collections::VecDeque;
use std::sync::Arc;

use ibpoll_dev::Nanos;
use ibpoll_mem::Mbuf;
use ibpoll_wire::mcmember::{self, JoinState};
use ibpoll_wire::Gid;

use crate::link::{JoinGranted, Tid};
use crate::snapshot::McastEntry;
use crate::subs::JoinStatus;
use crate::table::GroupIndex;

/// Why this port is in a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupKind {
    /// The partition's broadcast group: joined first, as a full member.
    Broadcast,
    /// A group the interface receives (the application subscribed): full member.
    Full,
    /// A group packets are sent to without receiving: SendOnlyFullMember, created by the
    /// first packet, removed when unused.
    SendOnly,
}

impl GroupKind {
    pub(crate) fn join_state(self) -> JoinState {
        match self {
            GroupKind::Broadcast | GroupKind::Full => JoinState::FULL_MEMBER,
            GroupKind::SendOnly => JoinState::SEND_ONLY_FULL_MEMBER,
        }
    }
}

/// Proof of a granted join. Not `Clone`, not `Copy`; made only from a [`JoinGranted`].
#[derive(Debug)]
pub struct Membership {
    record: mcmember::Repr,
    join_state: JoinState,
}

impl Membership {
    pub(crate) fn new(granted: JoinGranted) -> Membership {
        Membership {
            record: granted.record,
            join_state: granted.join_state,
        }
    }

    /// The group's record as the SA answered it.
    pub fn record(&self) -> &mcmember::Repr {
        &self.record
    }

    /// The JoinState bits this membership holds.
    pub fn join_state(&self) -> JoinState {
        self.join_state
    }

    /// Takes over the obligation of a timed-out join of the same group. The membership
    /// already names every bit the SA holds for the port (from the answer, which the SA
    /// merges), the timed-out join's included if it was granted; adding its bits
    /// unconditionally would make the leave name bits the SA never granted, which it
    /// refuses without leaving anything (found by `ibpoll-simtest`).
    pub(crate) fn absorb(&mut self, u: Unconfirmed) {
        assert_eq!(u.mgid, self.record.mgid);
    }

    /// Consumes the membership into the leave that ends it.
    pub(crate) fn leave(self) -> Leave {
        Leave {
            mgid: self.record.mgid,
            join_state: self.join_state,
            confirmed: true,
        }
    }
}

/// A join that timed out: the SA may hold it. Not `Clone`, not `Copy`.
#[derive(Debug)]
pub struct Unconfirmed {
    mgid: Gid,
    join_state: JoinState,
}

impl Unconfirmed {
    pub(crate) fn from_timeout(mgid: Gid, join_state: JoinState) -> Unconfirmed {
        Unconfirmed { mgid, join_state }
    }

    /// The token of this and another timed-out join of the same group.
    pub(crate) fn with(mut self, js: JoinState) -> Unconfirmed {
        self.join_state |= js;
        self
    }

    /// Consumes the token into a leave of the bits the join asked for.
    pub(crate) fn leave(self) -> Leave {
        Leave {
            mgid: self.mgid,
            join_state: self.join_state,
            confirmed: false,
        }
    }
}

/// What a Leaving group is ending: made only by consuming a [`Membership`] or an
/// [`Unconfirmed`]. Not `Clone`.
#[derive(Debug)]
pub struct Leave {
    pub(crate) mgid: Gid,
    pub(crate) join_state: JoinState,
    pub(crate) confirmed: bool,
}

impl Leave {
    /// The group.
    pub fn mgid(&self) -> Gid {
        self.mgid
    }

    /// The JoinState bits being left.
    pub fn join_state(&self) -> JoinState {
        self.join_state
    }

    /// Whether the join being undone was confirmed by the SA (false: it timed out).
    pub fn confirmed(&self) -> bool {
        self.confirmed
    }

    /// A leave that could not be completed (flush deadline): the SA may still hold the
    /// membership.
    pub(crate) fn into_unconfirmed(self) -> Unconfirmed {
        Unconfirmed {
            mgid: self.mgid,
            join_state: self.join_state,
        }
    }
}

/// Join retry backoff: 2, 4, 8, 16, 16 ... seconds (DESIGN rule 3), reset on success.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Backoff {
    /// Failures since the last success.
    pub failures: u32,
}

impl Backoff {
    /// The delay before the next try after `failures` failures.
    pub fn delay(self, max_s: u64) -> Nanos {
        if self.failures == 0 {
            return Nanos::ZERO;
        }
        let s = 1u64
            .checked_shl(self.failures.min(63))
            .unwrap_or(u64::MAX)
            .min(max_s);
        Nanos::from_secs(s)
    }
}

/// When an Idle group tries again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAt {
    /// At this time (or as soon after as joins are allowed and the window has room).
    At(Nanos),
    /// A send-only group that failed too often: only when a packet asks for it, and not
    /// before this time.
    NextPacket(Nanos),
}

/// The state of one group.
#[derive(Debug)]
pub enum GroupState {
    /// Not a member.
    Idle {
        /// Failures so far.
        backoff: Backoff,
        /// When to try again.
        retry_at: RetryAt,
        /// A timed-out join the SA may hold.
        unconfirmed: Option<Unconfirmed>,
    },
    /// A join is in flight; no membership exists yet.
    Joining {
        /// Its transaction.
        tid: Tid,
        /// Its deadline.
        deadline: Nanos,
        /// Failures before this try.
        backoff: Backoff,
        /// A token from an earlier timed-out join, kept until this one succeeds.
        unconfirmed: Option<Unconfirmed>,
    },
    /// A member. `entry` holds the address handle (in an `Arc<AhGuard>`) and is what the
    /// snapshots publish.
    Joined {
        /// The proof of the join.
        membership: Membership,
        /// The published entry (address handle, MLID, Q_Key).
        entry: Arc<McastEntry>,
    },
    /// A leave is in flight.
    Leaving {
        /// Its transaction.
        tid: Tid,
        /// Its deadline.
        deadline: Nanos,
        /// Tries so far (DESIGN rule 6: at most 3).
        tries: u8,
        /// What is being left.
        leave: Leave,
    },
}

/// The coarse state, for tests and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupPhase {
    /// Idle.
    Idle,
    /// Joining.
    Joining,
    /// Joined.
    Joined,
    /// Leaving.
    Leaving,
}

impl GroupState {
    pub(crate) fn idle_now(now: Nanos) -> GroupState {
        GroupState::Idle {
            backoff: Backoff::default(),
            retry_at: RetryAt::At(now),
            unconfirmed: None,
        }
    }

    /// The coarse state.
    pub fn phase(&self) -> GroupPhase {
        match self {
            GroupState::Idle { .. } => GroupPhase::Idle,
            GroupState::Joining { .. } => GroupPhase::Joining,
            GroupState::Joined { .. } => GroupPhase::Joined,
            GroupState::Leaving { .. } => GroupPhase::Leaving,
        }
    }
}

/// One multicast group of the table.
#[derive(Debug)]
pub(crate) struct Group {
    pub(crate) mgid: Gid,
    pub(crate) kind: GroupKind,
    pub(crate) state: GroupState,
    /// Packets waiting for the join (at most `mcast_queue_max`).
    pub(crate) queue: VecDeque<Mbuf>,
    /// Last time a packet for the group was seen (control side or data-path mark).
    pub(crate) last_used: Nanos,
    /// Remove the group once its leave ends (expired send-only group, unsubscribed).
    pub(crate) remove_after_leave: bool,
    /// Holds an `Unconfirmed` token for a membership an earlier instance on the port
    /// left (startup cleanup): it is left before the group is joined, so that the next
    /// listing of the port's memberships sees past it.
    pub(crate) leave_first: bool,
    /// Its leave was abandoned during the running flush (every try lost or refused):
    /// the flush does not try again; the next one does.
    pub(crate) leave_deferred: bool,
    /// Subscribed through [`Controller::join_group`](crate::Controller::join_group)
    /// (rather than only by data cores' sockets).
    pub(crate) admin: bool,
    /// The lanes whose QP is attached to the group now, one bit each.
    pub(crate) attached: u64,
    /// How the last join failed, until one succeeds or a flush starts.
    pub(crate) last_failure: Option<JoinStatus>,
    /// Where the group stood at the last `GroupTable::reindex` (owned by the table).
    pub(crate) index: GroupIndex,
    /// Written since the last reindex and on the table's list for it (owned by the
    /// table).
    pub(crate) noted: bool,
}

impl Group {
    pub(crate) fn new(mgid: Gid, kind: GroupKind, now: Nanos) -> Group {
        Group {
            mgid,
            kind,
            state: GroupState::idle_now(now),
            queue: VecDeque::new(),
            last_used: now,
            remove_after_leave: false,
            leave_first: false,
            leave_deferred: false,
            admin: false,
            attached: 0,
            last_failure: None,
            index: GroupIndex::default(),
            noted: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_2_4_8_16_16() {
        let d: Vec<u64> = (1..=6)
            .map(|failures| Backoff { failures }.delay(16).0 / 1_000_000_000)
            .collect();
        assert_eq!(d, [2, 4, 8, 16, 16, 16]);
        assert_eq!(Backoff::default().delay(16), Nanos::ZERO);
        assert_eq!(Backoff { failures: 200 }.delay(16), Nanos::from_secs(16));
    }
}
