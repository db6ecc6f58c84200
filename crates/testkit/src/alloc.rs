//! A global allocator that counts allocations on the threads that ask for it, for tests
//! that check a path allocates nothing, and keeps the heap's outstanding bytes and
//! allocations (every thread), for tests that check a flood costs no memory.
//!
//! Every call is forwarded unchanged to [`System`]; counting touches only atomics and
//! a const thread-local (no destructor, no lazy initialisation), so it is safe from
//! inside the allocator and during thread teardown. A global allocator is chosen by the
//! final binary, so each test binary declares it itself:
//!
//! ```text
//! use ibpoll_testkit::alloc::{self, CountingAlloc};
//!
//! #[global_allocator]
//! static GLOBAL: CountingAlloc = CountingAlloc;
//!
//! alloc::reset_allocs();
//! alloc::count_this_thread(true);
//! // ... the path under test ...
//! alloc::count_this_thread(false);
//! assert_eq!(alloc::allocs(), 0);
//! ```
//!
//! Only allocations (`alloc`, `alloc_zeroed`, `realloc`) are counted, not frees. Without
//! `CountingAlloc` as the global allocator the count stays 0.
//!
//! The heap figures ([`heap`], [`peak_live_bytes`]) are process-wide: every allocation
//! and free of every thread moves them, so a test reads them at points where the
//! threads it does not control are quiet (one test at a time in its binary).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// The counting allocator: [`System`], plus a count of the allocations made on threads
/// that called [`count_this_thread`]`(true)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CountingAlloc;

thread_local! {
    /// Whether allocations on this thread are counted (const, no destructor: readable
    /// from inside the allocator and during thread teardown).
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

/// Allocations on counted threads since the start or the last [`reset_allocs`].
static ALLOCS: AtomicU64 = AtomicU64::new(0);
/// Bytes allocated and not freed yet, every thread.
static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);
/// Allocations not freed yet, every thread.
static LIVE_ALLOCS: AtomicI64 = AtomicI64::new(0);
/// The highest `LIVE_BYTES` since the start or the last [`reset_peak`].
static PEAK_BYTES: AtomicI64 = AtomicI64::new(0);

/// What the heap holds at one moment: bytes and allocations not freed yet, on every
/// thread (0 unless `CountingAlloc` is the global allocator).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Heap {
    /// Bytes allocated and not freed.
    pub bytes: i64,
    /// Allocations not freed.
    pub allocs: i64,
}

impl Heap {
    /// What `self` holds more than `earlier` (negative: less).
    pub fn since(self, earlier: Heap) -> Heap {
        Heap {
            bytes: self.bytes - earlier.bytes,
            allocs: self.allocs - earlier.allocs,
        }
    }
}

/// The heap's outstanding bytes and allocations now, every thread.
pub fn heap() -> Heap {
    // Relaxed: counters that publish no other data; a test reads them after
    // synchronising with the threads that moved them (or while those are quiet).
    Heap {
        bytes: LIVE_BYTES.load(Ordering::Relaxed),
        allocs: LIVE_ALLOCS.load(Ordering::Relaxed),
    }
}

/// The most bytes outstanding at once since the start or the last [`reset_peak`].
pub fn peak_live_bytes() -> i64 {
    // Relaxed: as in `heap`.
    PEAK_BYTES.load(Ordering::Relaxed)
}

/// Starts a new peak from what is outstanding now.
pub fn reset_peak() {
    // Relaxed: as in `heap`.
    PEAK_BYTES.store(LIVE_BYTES.load(Ordering::Relaxed), Ordering::Relaxed);
}

/// Switches counting on or off for allocations made on the current thread.
pub fn count_this_thread(on: bool) {
    COUNTED.with(|c| c.set(on));
}

/// Allocations counted so far, on all threads. A count from other threads is complete
/// once the test has synchronised with them after they stopped counting.
pub fn allocs() -> u64 {
    // Relaxed: the count publishes no other data. On the counting thread program order
    // suffices; counts from other threads are read after synchronising with them.
    ALLOCS.load(Ordering::Relaxed)
}

/// Sets the count back to 0.
pub fn reset_allocs() {
    // Relaxed: as in `allocs`.
    ALLOCS.store(0, Ordering::Relaxed);
}

fn count() {
    if COUNTED.try_with(Cell::get).unwrap_or(false) {
        // Relaxed: a counter; `allocs` reads it.
        ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

/// Notes `bytes` more outstanding in `allocs` more allocations (negative: freed).
fn outstanding(bytes: i64, allocs: i64) {
    // Relaxed: counters; `heap` and `peak_live_bytes` read them.
    let now = LIVE_BYTES.fetch_add(bytes, Ordering::Relaxed) + bytes;
    LIVE_ALLOCS.fetch_add(allocs, Ordering::Relaxed);
    if bytes > 0 {
        PEAK_BYTES.fetch_max(now, Ordering::Relaxed);
    }
}

/// A size as the signed byte count the heap figures use (sizes fit: `Layout` keeps them
/// at most `isize::MAX`).
fn size(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

// SAFETY: every call is forwarded unchanged to the system allocator; counting touches
// only an atomic and a const thread-local.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            outstanding(size(layout.size()), 1);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
        outstanding(-size(layout.size()), -1);
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            outstanding(size(layout.size()), 1);
        }
        p
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // The block moved or grew in place: the old size is freed, the new one held.
            outstanding(size(new_size) - size(layout.size()), 0);
        }
        p
    }
}
