//! The state the publisher and the readers share, and its layout.
//!
//! Three groups of cache lines, written by different cores:
//! * [`Head`]: the current snapshot and the token. Written only by the publisher, once per
//!   publish; read by every reader every loop iteration, so it stays shared in their caches
//!   between publishes.
//! * one [`Slot`] per reader: written only by its reader (when the token changed), read by
//!   the publisher when it reclaims. One line each, so readers never false-share.
//! * the registration bitmap: written only when a reader registers or goes away.

use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::{Mutex, PoisonError};

use crossbeam_utils::CachePadded;

use crate::error::Error;
use crate::sync::{fence, AtomicPtr, AtomicU64, Ordering};

/// The most readers one domain can have (the registration bitmap is one `u64`).
pub const READERS_MAX: usize = 64;

/// Default for [`Config::retired_max`](crate::Config::retired_max).
pub const RETIRED_MAX_DEFAULT: usize = 64;

/// A reader slot's value while its reader is offline or the slot is free. Greater than any
/// token, so the minimum over all slots is the token every online reader has passed.
pub(crate) const OFFLINE: u64 = u64::MAX;

/// One reader's announcement: the last token it observed at a quiescent point, or
/// [`OFFLINE`].
pub(crate) type Slot = CachePadded<AtomicU64>;

// A slot owns whole cache lines (128 bytes on x86_64: the adjacent-line prefetcher pairs
// lines), so a reader's store never invalidates a line another reader or the head lives on.
const _: () = assert!(std::mem::align_of::<Slot>() >= 64);
const _: () = assert!(std::mem::size_of::<Slot>() % 64 == 0);
const _: () = assert!(READERS_MAX <= u64::BITS as usize);
// The head's two words share one line: a reader's loop touches one line of shared state.
#[cfg(not(loom))]
const _: () = assert!(std::mem::size_of::<Head<()>>() <= 64);

/// What readers poll: written by the publisher only.
pub(crate) struct Head<T> {
    /// The snapshot readers get now; always a pointer from `Box::into_raw`, never null.
    pub(crate) current: AtomicPtr<T>,
    /// Bumped by one after every swap of `current`.
    pub(crate) token: AtomicU64,
}

/// A snapshot taken out of `current`, waiting until every online reader has observed
/// `token` (the token published right after it was swapped out).
pub(crate) struct Retired<T> {
    pub(crate) snapshot: NonNull<T>,
    pub(crate) token: u64,
}

// SAFETY: a `Retired<T>` owns its snapshot like a `Box<T>` does (it was made by
// `Box::into_raw` and is freed once, by `free`); the only other access is shared reads by
// readers, which `T: Sync` allows from any thread.
unsafe impl<T: Send + Sync> Send for Retired<T> {}
// SAFETY: `Retired` has no `&self` methods that touch the snapshot.
unsafe impl<T: Send + Sync> Sync for Retired<T> {}

impl<T> Retired<T> {
    /// Drops the snapshot.
    ///
    /// # Safety
    ///
    /// No reader may still hold a reference to it: every reader's slot was `OFFLINE` or
    /// `>= self.token` after the publisher's `SeqCst` fence (see `Publisher::reclaim`), or
    /// no reader exists any more.
    pub(crate) unsafe fn free(self) {
        // SAFETY: the pointer came from `Box::into_raw` and `Retired` is not `Clone`, so
        // this is its only free; no reader holds it, by this function's contract.
        drop(unsafe { self.into_box() });
    }

    /// Hands the snapshot back as the `Box` it was published from, for the publisher to
    /// reuse (write and publish again) instead of freeing it.
    ///
    /// # Safety
    ///
    /// As for [`free`](Self::free): no reader may still hold a reference to it. The
    /// publisher's writes to the box then happen after every reader's reads of it (the
    /// Release stores to the slots and the Acquire loads in `Publisher::reclaim`), and a
    /// reader sees them only through the Release swap of a later publish.
    pub(crate) unsafe fn into_box(self) -> Box<T> {
        // SAFETY: the pointer came from `Box::into_raw` and `Retired` is not `Clone`, so
        // this is the only `Box` made from it; no reader holds it, by this function's
        // contract.
        unsafe { Box::from_raw(self.snapshot.as_ptr()) }
    }
}

/// The shared state of one snapshot domain; every handle holds an `Arc` to it.
pub(crate) struct Domain<T> {
    pub(crate) head: CachePadded<Head<T>>,
    /// `readers_max` slots; a free slot holds `OFFLINE`.
    pub(crate) slots: Box<[Slot]>,
    /// Bit `i` set: slot `i` belongs to a live reader.
    registered: CachePadded<AtomicU64>,
    /// Snapshots the publisher could not free before it was dropped. Freed by our `Drop`,
    /// which runs when no reader exists any more.
    pub(crate) orphans: Mutex<Vec<Retired<T>>>,
    /// We own `T`s: dropck and auto traits (`Send`/`Sync` only when `T` is) follow `T`.
    _owns: PhantomData<T>,
}

impl<T> Domain<T> {
    pub(crate) fn new(initial: T, readers_max: usize) -> Self {
        let slots = (0..readers_max)
            .map(|_| CachePadded::new(AtomicU64::new(OFFLINE)))
            .collect();
        Domain {
            head: CachePadded::new(Head {
                current: AtomicPtr::new(Box::into_raw(Box::new(initial))),
                token: AtomicU64::new(0),
            }),
            slots,
            registered: CachePadded::new(AtomicU64::new(0)),
            orphans: Mutex::new(Vec::new()),
            _owns: PhantomData,
        }
    }

    pub(crate) fn readers_max(&self) -> usize {
        self.slots.len()
    }

    /// Live readers (online or offline).
    pub(crate) fn registered(&self) -> usize {
        // Relaxed: a statistic; nothing is read through it.
        self.registered.load(Ordering::Relaxed).count_ones() as usize
    }

    /// Claims a free slot; it still holds `OFFLINE`.
    pub(crate) fn claim_slot(&self) -> Result<usize, Error> {
        let readers_max = self.readers_max();
        let mask = if readers_max == READERS_MAX {
            u64::MAX
        } else {
            (1u64 << readers_max) - 1
        };
        // Relaxed: only a first guess; the compare_exchange below decides.
        let mut bits = self.registered.load(Ordering::Relaxed);
        loop {
            let free = !bits & mask;
            if free == 0 {
                return Err(Error::ReadersExhausted { readers_max });
            }
            let index = free.trailing_zeros() as usize;
            // Acquire: pairs with the Release `fetch_and` in `release_slot`, so the
            // previous owner's last store to the slot (OFFLINE) is ordered before ours
            // and can never overwrite them.
            match self.registered.compare_exchange_weak(
                bits,
                bits | (1u64 << index),
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(index),
                Err(now) => bits = now,
            }
        }
    }

    /// Gives slot `index` back; its reader has gone offline.
    pub(crate) fn release_slot(&self, index: usize) {
        // Release: pairs with the Acquire `compare_exchange` in `claim_slot`.
        let before = self
            .registered
            .fetch_and(!(1u64 << index), Ordering::Release);
        debug_assert!(
            before & (1u64 << index) != 0,
            "slot {index} was not claimed"
        );
    }

    /// Announces that the reader of slot `index` is online: from the fence on, the
    /// publisher keeps every snapshot this reader may load. Returns the token stored.
    pub(crate) fn online(&self, index: usize) -> u64 {
        // Acquire: pairs with the Release store of `token` in `Publisher::publish`: once
        // we have seen token t, our loads of `current` return the snapshot published at t
        // or a later one, never one retired at a token <= t.
        let token = self.head.token.load(Ordering::Acquire);
        // Release: pairs with the Acquire loads of the slots in `Publisher::reclaim`; what
        // this reader did before (while it was last online) happens before any free that
        // the publisher bases on this value.
        self.slots[index].store(token, Ordering::Release);
        // SeqCst: pairs with the SeqCst fence in `Publisher::reclaim` (store-load, as in
        // Dekker's algorithm; DPDK's rte_rcu_qsbr_thread_online has the same barrier).
        // Either this fence comes first in the single total order and the publisher's slot
        // loads see our store (it holds back everything we may read), or the publisher's
        // fence comes first and our later loads of `current` see every swap it made
        // before it, so we cannot load anything it is about to free.
        fence(Ordering::SeqCst);
        token
    }

    /// Announces that the reader of slot `index` holds no snapshot and will not load one
    /// until `online` again.
    pub(crate) fn offline(&self, index: usize) {
        // Release: pairs with the Acquire loads of the slots in `Publisher::reclaim`:
        // every read of a snapshot this reader made happens before a free that the
        // publisher bases on seeing OFFLINE.
        self.slots[index].store(OFFLINE, Ordering::Release);
    }
}

impl<T> Drop for Domain<T> {
    fn drop(&mut self) {
        // Acquire: pairs with the Release swap in `Publisher::publish`; `&mut self` means
        // no handle exists any more, so this is belt and braces.
        let current = self.head.current.load(Ordering::Acquire);
        // SAFETY: `current` came from `Box::into_raw` (in `new` or `publish`) and was
        // never retired; no reader exists (each holds an `Arc` to us), so nobody holds it.
        drop(unsafe { Box::from_raw(current) });
        let orphans = self
            .orphans
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        for retired in orphans.drain(..) {
            // SAFETY: no reader exists any more (each holds an `Arc` to us).
            unsafe { retired.free() };
        }
    }
}
