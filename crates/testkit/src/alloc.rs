//! A global allocator that counts allocations on the threads that ask for it, for tests
//! that check a path allocates nothing.
//!
//! Every call is forwarded unchanged to [`System`]; counting touches only an atomic and
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

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

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

// SAFETY: every call is forwarded unchanged to the system allocator; counting touches
// only an atomic and a const thread-local.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
