//! Transactions in flight, whatever carries them: TIDs, a deadline each, a bounded
//! window, and a memory of recent ends to tell late answers from duplicates.
//!
//! Both link layers run their work as transactions the controller waits on (an SA MAD
//! on InfiniBand, a local step on RoCE), so the multicast state machine is the same for
//! both: a group is `Joining { tid }` until the transaction with that TID ends.
//!
//! TIDs: the MAD transport owns TransactionID bits 32..63 (the kernel's umad writes its
//! agent there, ibsim its client slot; see `ibpoll_dev::MadChannel`), so the counter
//! lives in the low 32 bits and answers are matched on them only.

use std::collections::VecDeque;

use ibpoll_dev::Nanos;
use ibpoll_wire::mcmember::JoinState;

use super::{LinkEvent, TxnKind};
use crate::CtrlStats;

/// A transaction ID: the low 32 bits of the MAD's TransactionID, the part the client
/// owns.
pub(crate) type Tid = u32;

/// One transaction in flight.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Txn {
    pub(crate) tid: Tid,
    pub(crate) kind: TxnKind,
    pub(crate) deadline: Nanos,
    /// The JoinState bits a join or leave names (none for other kinds).
    pub(crate) join_state: JoinState,
}

/// How a recent transaction ended, to tell late answers from duplicates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Answered,
    TimedOut,
}

/// Recent transaction ends kept (bounded).
const RECENT_MAX: usize = 1024;

/// The transactions in flight of one controller.
#[derive(Debug)]
pub(crate) struct Txns {
    tid_first: Tid,
    tid_next: Tid,
    window: usize,
    timeout: Nanos,
    inflight: Vec<Txn>,
    recent: VecDeque<(Tid, Ended)>,
}

impl Txns {
    /// A table of at most `window` transactions, each given `timeout`; TIDs start at
    /// `tid_first`.
    pub(crate) fn new(tid_first: Tid, window: usize, timeout: Nanos) -> Txns {
        Txns {
            tid_first,
            tid_next: tid_first,
            window,
            timeout,
            inflight: Vec::with_capacity(window),
            recent: VecDeque::with_capacity(RECENT_MAX),
        }
    }

    /// Room for one more transaction.
    pub(crate) fn has_room(&self) -> bool {
        self.inflight.len() < self.window
    }

    /// Transactions that can still start before the window is full.
    pub(crate) fn room(&self) -> usize {
        self.window.saturating_sub(self.inflight.len())
    }

    /// Transactions in flight.
    pub(crate) fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// Transactions in flight of a kind matching `f`.
    pub(crate) fn in_flight_where(&self, f: impl Fn(&TxnKind) -> bool) -> usize {
        self.inflight.iter().filter(|t| f(&t.kind)).count()
    }

    /// Registers a new transaction: `(tid, deadline)`, or `None` when the window is full
    /// (counted; the caller tries again on a later poll).
    pub(crate) fn begin(
        &mut self,
        now: Nanos,
        kind: TxnKind,
        join_state: JoinState,
        stats: &mut CtrlStats,
    ) -> Option<(Tid, Nanos)> {
        if !self.has_room() {
            stats.sa_window_full += 1;
            return None;
        }
        let tid = self.tid_next;
        self.tid_next = self.tid_next.wrapping_add(1);
        let deadline = now.saturating_add(self.timeout);
        self.inflight.push(Txn {
            tid,
            kind,
            deadline,
            join_state,
        });
        Some((tid, deadline))
    }

    /// The transaction `tid` in flight, if any.
    pub(crate) fn get(&self, tid: Tid) -> Option<&Txn> {
        self.inflight.iter().find(|t| t.tid == tid)
    }

    /// Ends transaction `tid` with an answer; `None` (nothing changed) if it is not in
    /// flight.
    pub(crate) fn answered(&mut self, tid: Tid) -> Option<Txn> {
        let i = self.inflight.iter().position(|t| t.tid == tid)?;
        let t = self.inflight.swap_remove(i);
        self.remember(tid, Ended::Answered);
        Some(t)
    }

    /// Counts an answer whose TID names no transaction in flight: late (it timed out),
    /// duplicate (already answered) or unknown (never used).
    pub(crate) fn count_stray(&self, tid: Tid, stats: &mut CtrlStats) {
        match self.recent.iter().rev().find(|(t, _)| *t == tid) {
            Some((_, Ended::Answered)) => stats.sa_duplicate_answers += 1,
            Some((_, Ended::TimedOut)) => stats.sa_late_answers += 1,
            None if tid.wrapping_sub(self.tid_first)
                < self.tid_next.wrapping_sub(self.tid_first) =>
            {
                stats.sa_late_answers += 1
            }
            None => stats.sa_unknown_answers += 1,
        }
    }

    /// Forgets a transaction without an answer (a flush that gave up): a later answer
    /// counts as late.
    pub(crate) fn abandon(&mut self, tid: Tid) {
        if let Some(i) = self.inflight.iter().position(|t| t.tid == tid) {
            self.inflight.swap_remove(i);
            self.remember(tid, Ended::TimedOut);
        }
    }

    /// Ends every transaction whose deadline has come, each as a [`LinkEvent::Timeout`]
    /// pushed to `out`. Returns how many.
    pub(crate) fn expire(
        &mut self,
        now: Nanos,
        stats: &mut CtrlStats,
        out: &mut Vec<LinkEvent>,
    ) -> usize {
        let mut n = 0;
        let mut i = 0;
        while i < self.inflight.len() {
            if self.inflight[i].deadline <= now {
                let t = self.inflight.swap_remove(i);
                self.remember(t.tid, Ended::TimedOut);
                stats.sa_timeouts += 1;
                n += 1;
                out.push(LinkEvent::Timeout {
                    tid: t.tid,
                    kind: t.kind,
                    join_state: t.join_state,
                });
            } else {
                i += 1;
            }
        }
        n
    }

    fn remember(&mut self, tid: Tid, how: Ended) {
        if self.recent.len() == RECENT_MAX {
            self.recent.pop_front();
        }
        self.recent.push_back((tid, how));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ibpoll_wire::Gid;

    #[test]
    fn the_window_bounds_transactions_and_ends_are_remembered() {
        let mut t = Txns::new(100, 2, Nanos::from_secs(1));
        let mut stats = CtrlStats::default();
        let g = Gid::new(Gid::DEFAULT_SUBNET_PREFIX, 1);
        let (a, da) = t
            .begin(
                Nanos::ZERO,
                TxnKind::Join(g),
                JoinState::FULL_MEMBER,
                &mut stats,
            )
            .unwrap();
        assert_eq!((a, da), (100, Nanos::from_secs(1)));
        let (b, _) = t
            .begin(
                Nanos::ZERO,
                TxnKind::Leave(g),
                JoinState::FULL_MEMBER,
                &mut stats,
            )
            .unwrap();
        assert!(t
            .begin(
                Nanos::ZERO,
                TxnKind::Path([1u8; 4].into()),
                JoinState::NONE,
                &mut stats
            )
            .is_none());
        assert_eq!((stats.sa_window_full, t.room()), (1, 0));
        assert_eq!(t.in_flight_where(|k| matches!(k, TxnKind::Join(_))), 1);
        assert_eq!(t.answered(a).map(|x| x.tid), Some(a));
        assert!(t.answered(a).is_none());
        t.count_stray(a, &mut stats);
        assert_eq!(stats.sa_duplicate_answers, 1);
        let mut out = Vec::new();
        assert_eq!(t.expire(Nanos::from_secs(1), &mut stats, &mut out), 1);
        assert!(matches!(out[0], LinkEvent::Timeout { tid, .. } if tid == b));
        t.count_stray(b, &mut stats);
        t.count_stray(7, &mut stats);
        assert_eq!((stats.sa_late_answers, stats.sa_unknown_answers), (1, 1));
        assert_eq!(t.in_flight(), 0);
    }
}
