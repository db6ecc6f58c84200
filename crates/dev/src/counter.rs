use std::sync::atomic::{AtomicU64, Ordering};

/// A statistics counter with one writer and any number of readers.
///
/// The owner (one lcore) adds with a relaxed load and a relaxed store, not a
/// read-modify-write: there is no other writer to race with, so the hot path pays no
/// locked instruction. Readers on other threads see a recent value through a relaxed
/// load; counters order nothing, so no ordering is needed on either side.
#[derive(Debug, Default)]
#[repr(transparent)]
pub struct Counter(AtomicU64);

impl Counter {
    /// A counter at zero.
    pub const fn new() -> Counter {
        Counter(AtomicU64::new(0))
    }

    /// Adds `n`. Only the counter's single writer may call this.
    #[inline]
    pub fn add(&self, n: u64) {
        // Relaxed: statistics only; the single-writer rule makes load+store exact.
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    /// Adds one. Only the counter's single writer may call this.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// The current value (relaxed: a recent value, not synchronised with anything).
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Adds `n` when several threads may write: a read-modify-write, for counters that
    /// are bumped off the hot path (e.g. by a simulated fabric on behalf of a queue).
    #[inline]
    pub fn add_shared(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
}
