//! `LcoreMem`: one pool's cache slot of one lcore, resolved once (DPDK's
//! `rte_mempool_default_cache` looked up once per loop, not once per call).
//!
//! Bulk calls on a `Mempool` find the calling thread's slot with a TLS read and a few
//! checks per call; a handle made once per lcore and pool skips them. It borrows the
//! lcore's `LcoreGuard`, which is neither `Send` nor `Sync`, so the handle can neither
//! leave the lcore's thread nor outlive its registration: the slot's single-user rule
//! (see `lcore.rs`) holds for as long as the handle exists.

use std::marker::PhantomData;
use std::ptr::NonNull;

use crate::alloc::free_bulk;
use crate::pool::LcoreCache;
use crate::{LcoreGuard, Mbuf, MbufArray, Mempool};

/// A pool's cache slot on this lcore; see the module docs. Made by
/// [`Mempool::lcore_handle`].
///
/// Not `Send`: it borrows the lcore's guard.
///
/// ```compile_fail
/// use ibpoll_mem::{register_lcore, Mempool, MempoolConfig};
/// let pool = Mempool::new(MempoolConfig::new("p", 64)).unwrap();
/// let guard = register_lcore(0).unwrap();
/// let mem = pool.lcore_handle(&guard);
/// fn send<T: Send>(_: &T) {}
/// send(&mem); // error: `LcoreMem` is not `Send`
/// ```
///
/// Nor can it outlive the guard:
///
/// ```compile_fail
/// use ibpoll_mem::{register_lcore, Mempool, MempoolConfig};
/// let pool = Mempool::new(MempoolConfig::new("p", 64)).unwrap();
/// let guard = register_lcore(0).unwrap();
/// let mem = pool.lcore_handle(&guard);
/// drop(guard); // error: `guard` is borrowed by `mem`
/// drop(mem);
/// ```
#[derive(Debug)]
pub struct LcoreMem<'g> {
    pool: Mempool,
    /// `pool`'s slot of `lcore_id`; `None` when the pool has no caches. Points into the
    /// pool, which `pool` keeps alive.
    slot: Option<NonNull<LcoreCache>>,
    lcore_id: usize,
    _guard: PhantomData<&'g LcoreGuard>,
}

impl Mempool {
    /// A handle to this pool's cache slot of the lcore `guard` holds, for bulk calls
    /// that skip the per-call lookup (see [`LcoreMem`]). Works with caches off too
    /// (`cache_size` 0): then every call goes to the backend.
    pub fn lcore_handle<'g>(&self, guard: &'g LcoreGuard) -> LcoreMem<'g> {
        let lcore_id = guard.lcore_id();
        LcoreMem {
            slot: self.inner().slot(Some(lcore_id)).map(NonNull::from),
            pool: self.clone(),
            lcore_id,
            _guard: PhantomData,
        }
    }
}

impl LcoreMem<'_> {
    #[inline]
    fn slot(&self) -> Option<&LcoreCache> {
        // SAFETY: the slot lives in the pool, which `self.pool` keeps alive; it is this
        // lcore's, held by this thread for as long as the borrowed guard lives.
        self.slot.map(|s| unsafe { s.as_ref() })
    }

    /// The pool.
    pub fn pool(&self) -> &Mempool {
        &self.pool
    }

    /// The lcore whose slot this is.
    pub fn lcore_id(&self) -> usize {
        self.lcore_id
    }

    /// `Mempool::alloc_bulk_into` without the per-call lookup.
    #[inline]
    pub fn alloc_bulk(&mut self, out: &mut MbufArray, n: usize) -> usize {
        self.pool.inner().get_into(self.slot(), out, n)
    }

    /// Frees every buffer in `ms` in bulk (as `MbufArray::clear`): this pool's into the
    /// resolved slot, other pools' into this lcore's slot of theirs.
    #[inline]
    pub fn free_bulk(&mut self, ms: &mut MbufArray) {
        let (lcore, known) = (self.lcore_id, (self.pool.inner(), self.slot()));
        ms.free_tail_with(0, |tail| {
            // SAFETY: this thread holds `lcore` (the borrowed guard) and `known` is its
            // slot of `self.pool`; `tail` is ours to give up.
            unsafe { free_bulk(tail, Some(lcore), Some(known)) }
        });
    }

    /// `Mempool::alloc` without the per-call lookup.
    #[inline]
    pub fn alloc(&mut self) -> Option<Mbuf> {
        self.pool.inner().get_on(self.slot())
    }
}
