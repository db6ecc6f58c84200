//! Sends a wrapper has taken from its caller and holds until it completes them, over the
//! wrapped send queue: the machinery [`Backpressure`](crate::Backpressure) and
//! [`FaultInjector`](crate::FaultInjector) share.
//!
//! A send the wrapper took is *waiting* until it is due, then either handed to the inner
//! queue or, if the wrapper drops it (a lost packet, a send the wrapper refuses to pass
//! on), freed. Either way it is then *in flight* until it completes: a dropped send at
//! once, a handed one when the inner queue's own `completed()` passes it. Completions are
//! counted in posting order, as the contract requires: a send completes only after every
//! send taken before it. So the wrapper's `completed()` never runs ahead of the driver's,
//! and an address handle is never reported free while the driver may still read it.

use std::collections::VecDeque;

use ibpoll_dev::{TxDst, TxQueue};
use ibpoll_mem::{Mbuf, MbufArray};

/// One send taken from the caller, not yet handed on.
#[derive(Debug)]
struct Waiting {
    m: Mbuf,
    dst: TxDst,
    /// The tick from which it may be handed on.
    due: u64,
    /// Free it instead of handing it on.
    drop: bool,
}

/// The sends a wrapper holds, and the wrapped queue they go to.
#[derive(Debug)]
pub(crate) struct Held {
    inner: Box<dyn TxQueue>,
    waiting: VecDeque<Waiting>,
    /// Handed on or dropped, in posting order, not yet known complete: the inner
    /// queue's sequence number of a handed send (`None` for a dropped one) and where it
    /// went.
    in_flight: VecDeque<(Option<u64>, TxDst)>,
    /// Sends handed to the inner queue so far.
    handed: u64,
    /// The inner queue's `completed()` when it was wrapped.
    inner_base: u64,
    /// Sends completed, as this wrapper reports them.
    completed: u64,
    /// Sends taken and not yet completed, at most.
    depth: usize,
    /// Reused for each hand-over, so that no burst allocates.
    stage: MbufArray,
    stage_dst: Vec<TxDst>,
}

impl Held {
    /// Holds at most `depth` sends (taken and not completed) in front of `inner`.
    pub(crate) fn new(mut inner: Box<dyn TxQueue>, depth: usize) -> Held {
        let depth = depth.max(1);
        let inner_base = inner.completed();
        Held {
            inner,
            waiting: VecDeque::with_capacity(depth),
            in_flight: VecDeque::with_capacity(depth),
            handed: 0,
            inner_base,
            completed: 0,
            depth,
            stage: MbufArray::with_capacity(depth),
            stage_dst: Vec::with_capacity(depth),
        }
    }

    /// The wrapped queue.
    pub(crate) fn inner(&self) -> &dyn TxQueue {
        &*self.inner
    }

    /// How many more sends fit.
    pub(crate) fn room(&self) -> usize {
        self.depth - self.outstanding()
    }

    /// Sends taken and not yet completed.
    pub(crate) fn outstanding(&self) -> usize {
        self.waiting.len() + self.in_flight.len()
    }

    /// Sends completed so far (as of the last [`poll`](Self::poll)).
    pub(crate) fn completed(&self) -> u64 {
        self.completed
    }

    /// Takes a send, to be handed on (or freed, if `drop`) from tick `due` on. The
    /// caller checked [`room`](Self::room).
    pub(crate) fn take(&mut self, m: Mbuf, dst: TxDst, due: u64, drop: bool) {
        debug_assert!(self.room() > 0, "take beyond the depth");
        self.waiting.push_back(Waiting { m, dst, due, drop });
    }

    /// Hands on (or frees) the waiting sends due by tick `now`, in order, until one is
    /// not due or the inner queue refuses; what it refuses waits for the next pump.
    pub(crate) fn pump(&mut self, now: u64) {
        loop {
            while let Some(w) = self.waiting.front() {
                if w.due > now || !w.drop {
                    break;
                }
                let w = self.waiting.pop_front().expect("front exists");
                self.in_flight.push_back((None, w.dst));
                // `w.m` drops here: the wrapper completes this send by freeing it.
            }
            while let Some(w) = self.waiting.front() {
                if w.due > now || w.drop || self.stage.is_full() {
                    break;
                }
                let w = self.waiting.pop_front().expect("front exists");
                // Cannot fail: the stage holds `depth`, the most ever waiting.
                let _ = self.stage.push(w.m);
                self.stage_dst.push(w.dst);
            }
            if self.stage.is_empty() {
                return;
            }
            let n = self.inner.tx_burst(&mut self.stage, &self.stage_dst);
            for dst in self.stage_dst.drain(..n) {
                self.in_flight.push_back((Some(self.handed), dst));
                self.handed += 1;
            }
            if !self.stage.is_empty() {
                self.unstage(now);
                return;
            }
        }
    }

    /// Puts what the inner queue refused back at the front of the waiting sends, in
    /// order.
    fn unstage(&mut self, now: u64) {
        while let Some(m) = self.stage.pop() {
            let dst = self
                .stage_dst
                .pop()
                .expect("one destination per staged send");
            self.waiting.push_front(Waiting {
                m,
                dst,
                due: now,
                drop: false,
            });
        }
        debug_assert!(self.stage_dst.is_empty());
    }

    /// Polls the inner queue and completes, in order, the sends it completed and the
    /// dropped ones behind them; `on_complete` sees each one's destination. Returns the
    /// completion count.
    pub(crate) fn poll(&mut self, mut on_complete: impl FnMut(&TxDst)) -> u64 {
        let inner_done = self.inner.completed().wrapping_sub(self.inner_base);
        while let Some(&(seq, dst)) = self.in_flight.front() {
            if seq.is_some_and(|s| s >= inner_done) {
                break;
            }
            self.in_flight.pop_front();
            self.completed += 1;
            on_complete(&dst);
        }
        self.completed
    }

    /// The destinations of every send taken and not completed (for a wrapper's
    /// bookkeeping when the queue goes away).
    pub(crate) fn outstanding_dsts(&self) -> impl Iterator<Item = &TxDst> {
        self.in_flight
            .iter()
            .map(|(_, d)| d)
            .chain(self.waiting.iter().map(|w| &w.dst))
    }
}
