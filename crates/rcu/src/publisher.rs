//! The control core's side: publish a snapshot, reclaim the ones no reader can still hold.

use std::collections::VecDeque;
use std::fmt;
use std::ptr::NonNull;

use crate::domain::{Domain, Retired, OFFLINE};
use crate::error::Full;
use crate::setup::Registry;
use crate::sync::{fence, Arc, Ordering};

/// What a [`Publisher`] has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublisherStats {
    /// Snapshots published (not counting the initial one).
    pub published: u64,
    /// Snapshots freed by `reclaim` (including its calls from `publish`).
    pub reclaimed: u64,
    /// `publish` calls that found the retire list full and handed their snapshot back.
    pub publish_full: u64,
    /// Reclaimed snapshots kept for [`Publisher::take_reclaimed`] instead of being
    /// dropped (counted in `reclaimed` too).
    pub recycled: u64,
}

/// The one writer of a domain: swaps in new snapshots and frees old ones once every online
/// reader has passed a quiescent point. Not `Clone`; `Send`, so it can live on any core.
///
/// Dropping it frees what it can; snapshots still held back are handed to the domain and
/// freed when the last reader goes.
pub struct Publisher<T> {
    domain: Arc<Domain<T>>,
    /// Retired snapshots, oldest first; tokens strictly increase front to back.
    retired: VecDeque<Retired<T>>,
    retired_max: usize,
    /// The last token this publisher stored (the publisher is the only writer of it).
    token: u64,
    /// Reclaimed snapshots kept for reuse, oldest first; at most `recycle_max`.
    recycled: VecDeque<Box<T>>,
    recycle_max: usize,
    stats: PublisherStats,
}

impl<T> Publisher<T> {
    pub(crate) fn new(domain: Arc<Domain<T>>, retired_max: usize) -> Self {
        Publisher {
            domain,
            retired: VecDeque::with_capacity(retired_max),
            retired_max,
            token: 0,
            recycled: VecDeque::new(),
            recycle_max: 0,
            stats: PublisherStats::default(),
        }
    }

    /// Keeps up to `recycle_max` reclaimed snapshots for [`take_reclaimed`](Self::take_reclaimed)
    /// instead of dropping them (0, the default: drop every reclaimed snapshot). A
    /// publisher that rewrites reclaimed snapshots in place and publishes them again with
    /// [`publish_box`](Self::publish_box) allocates nothing per publish. When more are
    /// reclaimed than fit, the oldest are dropped. Allocates the list once, here.
    pub fn set_recycle_max(&mut self, recycle_max: usize) {
        self.recycle_max = recycle_max;
        while self.recycled.len() > recycle_max {
            self.recycled.pop_front();
        }
        self.recycled
            .reserve_exact(recycle_max.saturating_sub(self.recycled.len()));
    }

    /// A reclaimed snapshot that no reader holds or can load any more, the most recently
    /// published one first; only while [`set_recycle_max`](Self::set_recycle_max) keeps
    /// some. The caller owns it: it may change it and publish it again.
    pub fn take_reclaimed(&mut self) -> Option<Box<T>> {
        self.recycled.pop_back()
    }

    /// The oldest retired snapshot that readers may still hold (the next one `reclaim`
    /// frees), if any: for a publisher that tracks what each snapshot it may get back
    /// from [`take_reclaimed`](Self::take_reclaimed) contains.
    pub fn pending_oldest(&self) -> Option<&T> {
        let oldest = self.retired.front()?;
        // SAFETY: a retired snapshot is freed or handed out only by `reclaim(&mut self)`
        // (or our drop), which the returned borrow of `self` excludes; readers only read
        // it, and this is a read.
        Some(unsafe { oldest.snapshot.as_ref() })
    }

    /// Makes `snapshot` the one readers get from now on and retires the previous one,
    /// then reclaims what it can. Returns how many retired snapshots are still pending.
    ///
    /// Never blocks. When `Config::retired_max` snapshots are pending even after a
    /// reclaim, nothing is published, [`PublisherStats::publish_full`] counts it, and the
    /// snapshot comes back in [`Full`]: some reader neither quiesces nor is offline.
    pub fn publish(&mut self, snapshot: T) -> Result<usize, Full<T>> {
        if self.is_full() {
            return Err(Full {
                snapshot,
                retired_max: self.retired_max,
            });
        }
        self.publish_box(Box::new(snapshot)).map_err(|full| Full {
            snapshot: *full.snapshot,
            retired_max: full.retired_max,
        })
    }

    /// [`publish`](Self::publish) for a snapshot already in a `Box` (one from
    /// [`take_reclaimed`](Self::take_reclaimed), say): allocates nothing.
    pub fn publish_box(&mut self, snapshot: Box<T>) -> Result<usize, Full<Box<T>>> {
        if self.is_full() {
            return Err(Full {
                snapshot,
                retired_max: self.retired_max,
            });
        }
        let new = Box::into_raw(snapshot);
        // Release: pairs with the Acquire load in `Reader::get`: a reader that loads `new`
        // sees the snapshot fully built. No Acquire needed on the old value: only this
        // publisher (or `new()`, before it) ever stored `current`.
        let old = self.domain.head.current.swap(new, Ordering::Release);
        let old = NonNull::new(old).expect("current snapshot pointer is never null");
        self.token += 1;
        // Release: pairs with the Acquire loads of `token` in `Reader::quiescent` and
        // `Domain::online`: a reader that sees this token (or a later one) then loads
        // `current` gets `new` or later, never `old`. A store, not a read-modify-write:
        // this publisher is the token's only writer.
        self.domain.head.token.store(self.token, Ordering::Release);
        if let Some(newest) = self.retired.back() {
            // Tokens increase front to back: `reclaim` stops at the first one too new.
            debug_assert!(newest.token < self.token);
        }
        self.retired.push_back(Retired {
            snapshot: old,
            token: self.token,
        });
        self.stats.published += 1;
        Ok(self.reclaim())
    }

    /// Whether `retired_max` snapshots wait even after a reclaim (counted).
    fn is_full(&mut self) -> bool {
        if self.retired.len() >= self.retired_max && self.reclaim() >= self.retired_max {
            self.stats.publish_full += 1;
            return true;
        }
        false
    }

    /// Frees every retired snapshot that no reader can still hold: those retired at a
    /// token that every online reader has observed at a quiescent point. Returns how many
    /// are still pending. A few loads per registered slot; no lock.
    pub fn reclaim(&mut self) -> usize {
        if self.retired.is_empty() {
            return 0;
        }
        // SeqCst: pairs with the SeqCst fence in `Domain::online` (a reader coming online
        // or registering). Either its fence comes first in the single total order and the
        // slot loads below see its token, or ours comes first and its loads of `current`
        // see every swap made before this point, so it cannot hold what we free below.
        fence(Ordering::SeqCst);
        let mut passed = OFFLINE;
        for slot in self.domain.slots.iter() {
            // Acquire: pairs with the Release stores in `Reader::quiescent` and
            // `Domain::online` / `Domain::offline`: the reader's reads of a snapshot
            // before it announced this value happen before any free we base on it.
            passed = passed.min(slot.load(Ordering::Acquire));
        }
        while let Some(oldest) = self.retired.front() {
            if oldest.token > passed {
                break;
            }
            let oldest = self.retired.pop_front().expect("front exists");
            self.stats.reclaimed += 1;
            if self.recycle_max == 0 {
                // SAFETY: every slot was OFFLINE or >= `oldest.token` after the fence
                // above, which is `Retired::free`'s contract: an online reader that
                // observed that token loads `current` only after the swap that retired
                // this snapshot, and its reads from before happen before this free
                // (Release/Acquire on its slot).
                unsafe { oldest.free() };
                continue;
            }
            if self.recycled.len() == self.recycle_max {
                // Keep the newest: they differ least from what is published now.
                self.recycled.pop_front();
            }
            // SAFETY: as for `free` above: no reader holds it or can load it again (it
            // is no longer `current`), and their reads happen before this point. It is
            // published again only through the Release swap in `publish_box`.
            self.recycled.push_back(unsafe { oldest.into_box() });
            self.stats.recycled += 1;
        }
        self.retired.len()
    }

    /// Retired snapshots not yet freed.
    pub fn pending(&self) -> usize {
        self.retired.len()
    }

    /// The snapshot readers get now: the last one published (or the initial one).
    pub fn current(&self) -> &T {
        // Relaxed: only this publisher stores `current`, so it reads its own last store.
        let current = self.domain.head.current.load(Ordering::Relaxed);
        // SAFETY: `current` is never retired while it is current, and only
        // `publish(&mut self)` replaces it, which the returned borrow of `self` excludes;
        // the domain (our `Arc`) owns it meanwhile.
        unsafe { &*current }
    }

    /// The last token published: how many snapshots have been published.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// Counters since creation.
    pub fn stats(&self) -> PublisherStats {
        self.stats
    }

    /// A registry for this domain, to register readers with.
    pub fn registry(&self) -> Registry<T> {
        Registry::new(self.domain.clone())
    }
}

impl<T> Drop for Publisher<T> {
    fn drop(&mut self) {
        if self.reclaim() == 0 {
            return;
        }
        // Readers still hold some of these back: the domain frees them once the last
        // reader (the last `Arc`) is gone.
        let mut orphans = self
            .domain
            .orphans
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        orphans.extend(self.retired.drain(..));
    }
}

impl<T> fmt::Debug for Publisher<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("token", &self.token)
            .field("pending", &self.retired.len())
            .field("retired_max", &self.retired_max)
            .field("recycled", &self.recycled.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}
