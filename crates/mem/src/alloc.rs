//! Alloc and free (data path), DPDK `rte_mempool_get/put` with `rte_mempool_cache`.
//!
//! On a registered lcore every operation starts in the lcore's own cache slot: a stack of
//! free buffer indices plus a length that only this thread writes (plain stores, no
//! read-modify-write, no lock). Only when the stack runs empty does an alloc refill it from
//! the backend, and only when it reaches the flush threshold (1.5 x `cache_size`) does a
//! free flush it; both are one bulk copy under one lock and leave the stack half a
//! `cache_size` deep, so a core that allocates and frees in bursts stays in its cache.
//! Unregistered threads go to the backend for every call (one lock per call).

use std::ptr::NonNull;
use std::sync::atomic::Ordering;

#[cfg(debug_assertions)]
use crate::mbuf::STATE_FREE;
use crate::mbuf::{Mbuf, MbufMeta, STATE_IN_USE};
use crate::pool::{LcoreCache, PoolInner};
use crate::{current_lcore, Mempool};

/// Indices moved per backend lock on the unregistered bulk path.
const BACKEND_CHUNK: usize = 64;

impl PoolInner {
    /// The calling thread's cache slot, if it is a registered lcore and caches are on.
    #[inline]
    fn my_cache(&self) -> Option<&LcoreCache> {
        if self.cache_cap == 0 {
            return None;
        }
        self.caches.get(current_lcore()?).map(|c| &**c)
    }

    /// Hands out buffer `index`, reset, as an `Mbuf`.
    ///
    /// # Safety
    /// `index` must have just been removed from the backend or the caller's cache slot, so
    /// that no one else owns it.
    #[inline]
    unsafe fn take(&self, index: u32) -> Mbuf {
        debug_assert!(index < self.n_bufs);
        // SAFETY: `index < n_bufs`, so the header is inside the mapping; the buffer is free
        // and was just removed from the free lists, so we are its only user.
        unsafe {
            let hdr = self.hdrs.as_ptr().add(index as usize);
            #[cfg(debug_assertions)]
            self.debug_check_hdr(hdr, index, STATE_FREE);
            (*hdr).data_off = (*hdr).headroom;
            (*hdr).data_len = 0;
            (*hdr).meta = MbufMeta::default();
            (*hdr).state = STATE_IN_USE;
            Mbuf::from_hdr(NonNull::new_unchecked(hdr))
        }
    }

    /// Moves up to `want` indices from the backend into `objs[len..]`; returns the new
    /// length.
    #[inline(never)]
    fn refill(&self, objs: &mut [u32], len: usize, want: usize) -> usize {
        let want = want.min(objs.len() - len);
        let mut b = self.lock_backend();
        let n = want.min(b.free.len());
        let start = b.free.len() - n;
        objs[len..len + n].copy_from_slice(&b.free[start..]);
        b.free.truncate(start);
        b.refills += 1;
        len + n
    }

    #[cold]
    fn count_fail(&self, n: usize) {
        // Relaxed: a statistic with no partner; only the exhaustion path pays for it.
        self.alloc_fail.fetch_add(n as u64, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn get(&self) -> Option<Mbuf> {
        let index = match self.my_cache() {
            Some(c) => {
                // SAFETY: `my_cache` returned the slot of the lcore id this thread holds.
                let objs = unsafe { c.objs_mut() };
                // Relaxed: this thread is the only writer of `len`.
                let mut len = c.len.load(Ordering::Relaxed) as usize;
                if len == 0 {
                    len = self.refill(objs, 0, (self.cache_size as usize / 2).max(1));
                    if len == 0 {
                        self.count_fail(1);
                        return None;
                    }
                }
                len -= 1;
                let index = objs[len];
                // Release: pairs with the Acquire loads in `Owner::drop` (as every store
                // to `len` does); `len <= cache_cap`, a u32.
                c.len.store(len as u32, Ordering::Release);
                index
            }
            None => self.get_backend()?,
        };
        // SAFETY: `index` was just removed from our cache slot or the backend.
        Some(unsafe { self.take(index) })
    }

    /// `get` on an unregistered thread (or with caches off); out of line like
    /// `put_backend`.
    #[inline(never)]
    fn get_backend(&self) -> Option<u32> {
        let index = self.lock_backend().free.pop();
        if index.is_none() {
            self.count_fail(1);
        }
        index
    }

    #[inline]
    pub(crate) fn get_bulk(&self, out: &mut [Option<Mbuf>]) -> usize {
        let need = out.iter().filter(|s| s.is_none()).count();
        if need == 0 {
            return 0;
        }
        let filled = match self.my_cache() {
            Some(c) if need <= self.cache_cap as usize => {
                // SAFETY: `my_cache` returned the slot of the lcore id this thread holds.
                let objs = unsafe { c.objs_mut() };
                // Relaxed: this thread is the only writer of `len`.
                let mut len = c.len.load(Ordering::Relaxed) as usize;
                if len < need {
                    len = self.refill(objs, len, need - len + self.cache_size as usize / 2);
                }
                let n = need.min(len);
                for slot in out.iter_mut().filter(|s| s.is_none()).take(n) {
                    len -= 1;
                    // SAFETY: index `len` is popped off our slot right here.
                    *slot = Some(unsafe { self.take(objs[len]) });
                }
                c.len.store(len as u32, Ordering::Release);
                n
            }
            _ => self.get_bulk_backend(out, need),
        };
        if filled < need {
            self.count_fail(need - filled);
        }
        filled
    }

    /// `get_bulk` straight from the backend, one lock per `BACKEND_CHUNK` buffers.
    fn get_bulk_backend(&self, out: &mut [Option<Mbuf>], need: usize) -> usize {
        let mut slots = out.iter_mut().filter(|s| s.is_none());
        let mut filled = 0;
        while filled < need {
            let mut chunk = [0u32; BACKEND_CHUNK];
            let want = (need - filled).min(BACKEND_CHUNK);
            let n = {
                let mut b = self.lock_backend();
                let n = want.min(b.free.len());
                let start = b.free.len() - n;
                chunk[..n].copy_from_slice(&b.free[start..]);
                b.free.truncate(start);
                n
            };
            for (&index, slot) in chunk[..n].iter().zip(slots.by_ref()) {
                // SAFETY: `index` was just removed from the backend.
                *slot = Some(unsafe { self.take(index) });
            }
            filled += n;
            if n < want {
                break;
            }
        }
        filled
    }

    /// Returns buffer `index` (its header already marked free) to the calling thread's
    /// cache, or to the backend.
    ///
    /// The last access to the pool is the publishing step: the Release store of the
    /// cache's `len`, or the backend lock's release. After it the pool may be freed by a
    /// concurrent `Owner::drop` (see there), so nothing may follow it.
    #[inline]
    pub(crate) fn put(&self, index: u32) {
        match self.my_cache() {
            Some(c) => {
                // SAFETY: `my_cache` returned the slot of the lcore id this thread holds.
                let objs = unsafe { c.objs_mut() };
                // Relaxed: this thread is the only writer of `len`.
                let len = c.len.load(Ordering::Relaxed) as usize;
                if len < objs.len() {
                    objs[len] = index;
                    // Release: pairs with the Acquire loads in `Owner::drop`; publishes
                    // the buffer as home. Last access to the pool.
                    c.len.store(len as u32 + 1, Ordering::Release);
                } else {
                    self.flush_put(c, objs, index);
                }
            }
            None => self.put_backend(index),
        }
    }

    /// `put` on an unregistered thread (or with caches off): one lock per buffer. Out of
    /// line so the cache fast path stays small.
    #[inline(never)]
    fn put_backend(&self, index: u32) {
        let mut b = self.lock_backend();
        b.free.push(index);
        debug_assert!(b.free.len() <= self.n_bufs as usize);
        // The guard's drop (unlock) is the last access to the pool.
    }

    /// The cache is at its flush threshold: move all but half a `cache_size` of it, and
    /// `index`, to the backend in one lock.
    #[inline(never)]
    fn flush_put(&self, c: &LcoreCache, objs: &[u32], index: u32) {
        let keep = self.cache_size as usize / 2;
        // Lower the count before the buffers reach the backend, so `Owner::drop` can never
        // count them in both places. Release: pairs with its Acquire loads.
        c.len.store(keep as u32, Ordering::Release);
        let mut b = self.lock_backend();
        b.free.extend_from_slice(&objs[keep..]);
        b.free.push(index);
        b.flushes += 1;
        debug_assert!(b.free.len() <= self.n_bufs as usize);
        // The guard's drop (unlock) is the last access to the pool.
    }
}

impl Mempool {
    /// One buffer, reset (data at the headroom, length 0, metadata zeroed); `None` when
    /// the pool is exhausted, counted in `PoolStats::alloc_fail`.
    #[inline]
    pub fn alloc(&self) -> Option<Mbuf> {
        self.inner().get()
    }

    /// Fills the `None` slots of `out`, front to back, with reset buffers and returns how
    /// many it filled. When the pool runs dry it fills what it can and counts the
    /// shortfall in `PoolStats::alloc_fail`. `Some` slots are left alone.
    #[inline]
    pub fn alloc_bulk(&self, out: &mut [Option<Mbuf>]) -> usize {
        self.inner().get_bulk(out)
    }
}
