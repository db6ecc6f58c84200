//! Lcore registration (DPDK `rte_lcore_id`): binds a thread to one of `MAX_LCORES` cache
//! slots that every pool keeps.
//!
//! The contract that makes the per-lcore caches sound: **an lcore id is held by at most
//! one thread at a time**. `register_lcore` claims the id with a compare-exchange on a
//! process-wide table, so two threads can never both hold it, and `LcoreGuard` (which is
//! neither `Send` nor `Clone`) gives it back on the thread that claimed it. A pool touches
//! the non-atomic part of cache slot `i` only from the thread whose thread-local lcore id
//! is `i`, so each slot has one user at a time; a slot passes from one thread to the next
//! through the Release store in `LcoreGuard::drop` and the Acquire compare-exchange in
//! `register_lcore`.

use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::Error;

/// Number of lcore ids, and of cache slots in every pool.
pub const MAX_LCORES: usize = 64;

/// Thread-local marker for "no lcore".
const NO_LCORE: usize = usize::MAX;

/// `LCORE_HELD[i]` is true while some thread holds lcore id `i`.
static LCORE_HELD: [AtomicBool; MAX_LCORES] = [const { AtomicBool::new(false) }; MAX_LCORES];

thread_local! {
    /// This thread's lcore id, `NO_LCORE` when unregistered. `const` and without a
    /// destructor, so reading it is a plain TLS load and works during thread teardown.
    static LCORE_ID: Cell<usize> = const { Cell::new(NO_LCORE) };
}

/// The calling thread's lcore id, if it registered one.
#[inline]
pub fn current_lcore() -> Option<usize> {
    let id = LCORE_ID.with(Cell::get);
    (id != NO_LCORE).then_some(id)
}

/// Binds the calling thread to lcore id `lcore_id` (`< MAX_LCORES`), so pool operations on
/// this thread use that id's private cache slot.
///
/// Fails if the id is out of range, held by another thread, or if this thread already
/// holds an id. Dropping the guard flushes this thread's cached buffers back to every
/// live pool and releases the id.
pub fn register_lcore(lcore_id: usize) -> Result<LcoreGuard, Error> {
    if lcore_id >= MAX_LCORES {
        return Err(Error::LcoreOutOfRange {
            lcore_id,
            max: MAX_LCORES,
        });
    }
    if let Some(current) = current_lcore() {
        return Err(Error::ThreadAlreadyRegistered { lcore_id, current });
    }
    // Acquire: pairs with the Release store in `LcoreGuard::drop` of the id's previous
    // holder, so everything it did to the id's cache slots happens-before our use of them.
    if LCORE_HELD[lcore_id]
        .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        return Err(Error::LcoreTaken { lcore_id });
    }
    LCORE_ID.with(|c| c.set(lcore_id));
    Ok(LcoreGuard {
        lcore_id,
        _not_send: PhantomData,
    })
}

/// Holds an lcore id for the calling thread; see `register_lcore`.
///
/// Not `Send`: it must be dropped on the thread that registered, since dropping flushes
/// that thread's cache slots. A guard that is forgotten (`mem::forget`, or a thread that
/// exits without unwinding its stack) keeps its id taken for good, and the buffers in
/// its caches stay there: sound, but lost to the other lcores.
#[derive(Debug)]
#[must_use = "dropping the guard unregisters the lcore at once"]
pub struct LcoreGuard {
    lcore_id: usize,
    _not_send: PhantomData<*const ()>,
}

impl LcoreGuard {
    /// The id this guard holds.
    pub fn lcore_id(&self) -> usize {
        self.lcore_id
    }
}

impl Drop for LcoreGuard {
    fn drop(&mut self) {
        debug_assert_eq!(current_lcore(), Some(self.lcore_id));
        crate::pool::flush_lcore_everywhere(self.lcore_id);
        LCORE_ID.with(|c| c.set(NO_LCORE));
        // Release: pairs with the Acquire compare-exchange in `register_lcore`; the next
        // holder of this id sees every write this thread made to the id's cache slots.
        LCORE_HELD[self.lcore_id].store(false, Ordering::Release);
    }
}
