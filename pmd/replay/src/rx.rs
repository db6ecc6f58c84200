//! The receive path: what the wrapped queue received, then a full burst of replayed
//! frames, each copied into a fresh buffer of the QP's pool (the NIC's copy).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ibpoll_dev::{RxCounters, RxQueue};
use ibpoll_mem::{MbufArray, MbufMeta, Mempool};

use crate::frames::Frames;
use crate::port::QueueCounters;

/// Where a receive queue stands in its stream.
#[derive(Debug)]
pub(crate) struct StreamCursor {
    pub(crate) frames: Arc<Frames>,
    /// The next frame to replay.
    pub(crate) next: usize,
    /// Frames the stream may still replay (`u64::MAX`: no limit), shared by its queues.
    pub(crate) budget: Arc<AtomicU64>,
    /// The most frames one burst replays.
    pub(crate) burst: usize,
    /// The completion metadata of every replayed frame.
    pub(crate) meta: MbufMeta,
}

impl StreamCursor {
    /// Claims up to `want` frames of the budget.
    #[inline]
    fn claim(&self, want: usize) -> usize {
        // Relaxed: the budget orders nothing; it only counts.
        let b = self.budget.load(Ordering::Relaxed);
        if b == u64::MAX {
            return want;
        }
        // A limited run (a warm-up, a test): a read-modify-write per burst.
        let mut claimed = 0;
        let _ = self
            .budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                if b == u64::MAX {
                    claimed = want;
                    return None;
                }
                claimed = (b.min(want as u64)) as usize;
                (claimed > 0).then(|| b - claimed as u64)
            });
        claimed
    }

    /// Gives back frames claimed but not replayed.
    #[cold]
    fn unclaim(&self, n: usize) {
        let _ = self
            .budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                (b != u64::MAX).then(|| b.saturating_add(n as u64).min(u64::MAX - 1))
            });
    }
}

/// A receive queue of a replay port.
#[derive(Debug)]
pub(crate) struct ReplayRxQueue {
    inner: Box<dyn RxQueue>,
    stream: Option<StreamCursor>,
    pool: Mempool,
    /// The wrapped queue's counters: this lcore, the single writer of `packets` and
    /// `bytes`, adds the frames to them.
    counters: Arc<RxCounters>,
    replay: Arc<QueueCounters>,
}

impl ReplayRxQueue {
    pub(crate) fn new(
        inner: Box<dyn RxQueue>,
        stream: Option<StreamCursor>,
        pool: Mempool,
        replay: Arc<QueueCounters>,
    ) -> ReplayRxQueue {
        ReplayRxQueue {
            counters: inner.counters(),
            inner,
            stream,
            pool,
            replay,
        }
    }
}

impl RxQueue for ReplayRxQueue {
    #[inline]
    fn rx_burst(&mut self, pkts: &mut MbufArray) -> usize {
        let n = self.inner.rx_burst(pkts);
        let Some(s) = &mut self.stream else {
            return n;
        };
        let want = s.claim(pkts.room().min(s.burst));
        if want == 0 {
            return n;
        }
        let start = pkts.len();
        let got = self.pool.alloc_bulk_into(pkts, want);
        if got < want {
            s.unclaim(want - got);
            self.replay.nombuf.add((want - got) as u64);
            // Shared: a driver may count the wrapped queue's shortages from elsewhere
            // (the simulator's switch does).
            self.counters.nombuf.add_shared((want - got) as u64);
        }
        let (frames, count) = (&*s.frames, s.frames.len());
        let mut next = s.next;
        let mut bytes = 0u64;
        for m in &mut pkts.as_mut_slice()[start..] {
            let f = frames.get(next);
            next = if next + 1 == count { 0 } else { next + 1 };
            // Cannot fail: `create_ud_qp` checked that every frame fits a fresh buffer.
            if let Some(d) = m.append(f.len()) {
                d.copy_from_slice(f);
            }
            *m.meta_mut() = s.meta;
            bytes += f.len() as u64;
        }
        s.next = next;
        // This lcore is the only writer of these (the wrapped queue's included: it
        // runs on this lcore, inside this call).
        self.counters.packets.add(got as u64);
        self.counters.bytes.add(bytes);
        self.replay.replayed.add(got as u64);
        self.replay.replayed_bytes.add(bytes);
        n + got
    }

    fn counters(&self) -> Arc<RxCounters> {
        self.counters.clone()
    }
}
