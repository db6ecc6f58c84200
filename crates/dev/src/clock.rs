use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// A point in time in nanoseconds on a monotonic clock with an arbitrary origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Nanos(pub u64);

impl Nanos {
    /// Zero.
    pub const ZERO: Nanos = Nanos(0);

    /// `ms` milliseconds.
    pub const fn from_millis(ms: u64) -> Nanos {
        Nanos(ms * 1_000_000)
    }

    /// `s` seconds.
    pub const fn from_secs(s: u64) -> Nanos {
        Nanos(s * 1_000_000_000)
    }

    /// `self + d`, saturating.
    pub const fn saturating_add(self, d: Nanos) -> Nanos {
        Nanos(self.0.saturating_add(d.0))
    }

    /// `self - earlier`, or zero.
    pub const fn saturating_sub(self, earlier: Nanos) -> Nanos {
        Nanos(self.0.saturating_sub(earlier.0))
    }

    /// As a `Duration`.
    pub const fn as_duration(self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.0)
    }
}

/// Where time comes from. Drivers and the control plane read time only through this,
/// so tests can replace it with virtual time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now.
    fn now(&self) -> Nanos;
}

/// The real monotonic clock.
#[derive(Debug)]
pub struct MonotonicClock {
    origin: Instant,
}

impl MonotonicClock {
    /// A clock whose zero is now.
    pub fn new() -> MonotonicClock {
        MonotonicClock {
            origin: Instant::now(),
        }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        MonotonicClock::new()
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> Nanos {
        Nanos(self.origin.elapsed().as_nanos() as u64)
    }
}

/// Virtual time that only moves when told to (deterministic simulation).
#[derive(Debug, Default)]
pub struct VirtualClock {
    now: AtomicU64,
}

impl VirtualClock {
    /// A virtual clock at zero.
    pub fn new() -> VirtualClock {
        VirtualClock::default()
    }

    /// Moves time forward to `t` (never backwards).
    pub fn advance_to(&self, t: Nanos) {
        // Relaxed: the simulator drives time from one thread; fetch_max keeps it monotonic.
        self.now.fetch_max(t.0, Ordering::Relaxed);
    }

    /// Moves time forward by `d`.
    pub fn advance(&self, d: Nanos) {
        // Relaxed: as above.
        self.now.fetch_add(d.0, Ordering::Relaxed);
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> Nanos {
        // Relaxed: pairs with nothing; virtual time carries no data.
        Nanos(self.now.load(Ordering::Relaxed))
    }
}
