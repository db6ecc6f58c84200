//! Alloc and free (data path), DPDK `rte_mempool_get/put` with `rte_mempool_cache`, and
//! `rte_pktmbuf_free_bulk`.
//!
//! On a registered lcore every operation starts in the lcore's own cache slot: a stack of
//! free buffer indices plus a length that only this thread writes (plain stores, no
//! read-modify-write, no lock). Only when the stack runs empty does an alloc refill it from
//! the backend, and only when it reaches the flush threshold (1.5 x `cache_size`) does a
//! free flush it; both are one bulk copy under one lock and leave the stack half a
//! `cache_size` deep, so a core that allocates and frees in bursts stays in its cache.
//! Unregistered threads go to the backend for every call (one lock per call, or per run
//! of one pool's buffers in a bulk free).
//!
//! The bulk paths resolve the calling thread's lcore (a TLS read) once per call, and its
//! cache slot once per pool run; the per-buffer work is an index copy and, on alloc, the
//! header reset.

use std::ptr::NonNull;
use std::sync::atomic::Ordering;

use crate::mbuf::{Mbuf, MbufHdr, MbufMeta, REARM_OFFSET};
use crate::pool::{LcoreCache, PoolInner};
use crate::{current_lcore, MbufArray, Mempool};

/// Indices moved per backend lock on the unregistered bulk path.
const BACKEND_CHUNK: usize = 64;

/// A pool's layout, for `take_with`.
#[derive(Clone, Copy)]
struct Carve {
    base: *mut u8,
    stride: usize,
    rearm: u64,
}

impl PoolInner {
    /// Lcore `lcore`'s cache slot, if it is a registered lcore and caches are on.
    #[inline]
    pub(crate) fn slot(&self, lcore: Option<usize>) -> Option<&LcoreCache> {
        if self.cache_cap == 0 {
            return None;
        }
        self.caches.get(lcore?).map(|c| &**c)
    }

    /// The calling thread's cache slot, if it is a registered lcore and caches are on.
    #[inline]
    fn my_cache(&self) -> Option<&LcoreCache> {
        self.slot(current_lcore())
    }

    /// What `take` needs, copied out of the pool so a loop keeps it in registers (the
    /// header stores could otherwise alias the pool's fields).
    #[inline]
    fn carve(&self) -> Carve {
        Carve {
            base: self.base.as_ptr(),
            stride: self.stride,
            rearm: self.rearm,
        }
    }

    /// Hands out buffer `index`, reset, as an `Mbuf`.
    ///
    /// # Safety
    /// `index` must have just been removed from the backend or the caller's cache slot, so
    /// that no one else owns it.
    #[inline]
    unsafe fn take(&self, index: u32) -> Mbuf {
        // SAFETY: forwarded; `carve` is this pool's.
        unsafe { self.take_with(self.carve(), index) }
    }

    /// `take` with the pool's layout already loaded.
    ///
    /// # Safety
    /// As `take`, and `c` comes from `self.carve()`.
    #[inline(always)]
    unsafe fn take_with(&self, c: Carve, index: u32) -> Mbuf {
        debug_assert!(index < self.n_bufs);
        // SAFETY: `index < n_bufs` (it was on a free list), so the header is inside the
        // mapping at `base + index * stride`, 64-byte aligned (so the rearm word, at an
        // 8-aligned offset inside it, is aligned); the buffer was just removed from the
        // free lists, so we are its only user.
        unsafe {
            let hdr = c.base.add(index as usize * c.stride).cast::<MbufHdr>();
            #[cfg(debug_assertions)]
            self.debug_mark_in_use(hdr, index);
            hdr.cast::<u8>()
                .add(REARM_OFFSET)
                .cast::<u64>()
                .write(c.rearm);
            (*hdr).meta = MbufMeta::default();
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

    /// Moves up to `chunk.len()` indices from the backend into `chunk`; returns how many.
    fn pop_backend(&self, chunk: &mut [u32]) -> usize {
        let mut b = self.lock_backend();
        let n = chunk.len().min(b.free.len());
        let start = b.free.len() - n;
        chunk[..n].copy_from_slice(&b.free[start..]);
        b.free.truncate(start);
        n
    }

    #[cold]
    fn count_fail(&self, n: usize) {
        // Relaxed: a statistic with no partner; only the exhaustion path pays for it.
        self.alloc_fail.fetch_add(n as u64, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn get(&self) -> Option<Mbuf> {
        self.get_on(self.my_cache())
    }

    /// One buffer from `slot` (refilled from the backend when empty) or, without a slot,
    /// from the backend.
    ///
    /// `slot` must be the slot of the lcore id the calling thread holds (or `None`).
    #[inline]
    pub(crate) fn get_on(&self, slot: Option<&LcoreCache>) -> Option<Mbuf> {
        let index = match slot {
            Some(c) => {
                // SAFETY: the caller passes the slot of the lcore id this thread holds.
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
                // Release: pairs with the Acquire loads in `Owner::drop`.
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
            let n = self.pop_backend(&mut chunk[..want]);
            // Reversed: the top of the free stack first, the order `get` would give.
            for (&index, slot) in chunk[..n].iter().rev().zip(slots.by_ref()) {
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

    /// Appends up to `n` reset buffers to `out` (fewer when `out` has less room), taking
    /// them from `slot` (refilled once when short) or, without a slot, from the backend;
    /// a burst larger than the slot holds takes what the slot has and the rest from the
    /// backend. Returns how many; a shortfall from an empty pool is counted in
    /// `alloc_fail`, one from a full `out` is not.
    ///
    /// `slot` must be the slot of the lcore id the calling thread holds (or `None`).
    #[inline]
    pub(crate) fn get_into(
        &self,
        slot: Option<&LcoreCache>,
        out: &mut MbufArray,
        n: usize,
    ) -> usize {
        let n = n.min(out.room());
        if n == 0 {
            return 0;
        }
        let got = match slot {
            Some(c) => {
                // SAFETY: the caller passes the slot of the lcore id this thread holds.
                let objs = unsafe { c.objs_mut() };
                // Relaxed: this thread is the only writer of `len`.
                let mut len = c.len.load(Ordering::Relaxed) as usize;
                if len < n && n <= objs.len() {
                    len = self.refill(objs, len, n - len + self.cache_size as usize / 2);
                }
                let got = n.min(len);
                let dst = out.spare_ptr();
                let carve = self.carve();
                // Popped from the top of the stack, the order `get` would give.
                for (k, &index) in objs[len - got..len].iter().rev().enumerate() {
                    // SAFETY: `index` is popped off our slot (`len` drops below it right
                    // after); `k < got <= out.room()`, so slot `k` of the spare part
                    // exists.
                    unsafe { dst.add(k).write(self.take_with(carve, index)) };
                }
                len -= got;
                // SAFETY: the `got` slots after `out.len()` were just written.
                unsafe { out.set_len(out.len() + got) };
                // Release: pairs with the Acquire loads in `Owner::drop`.
                c.len.store(len as u32, Ordering::Release);
                if got < n && n > objs.len() {
                    got + self.get_into_backend(out, n - got)
                } else {
                    got
                }
            }
            None => self.get_into_backend(out, n),
        };
        if got < n {
            self.count_fail(n - got);
        }
        got
    }

    /// `get_into` straight from the backend, one lock per `BACKEND_CHUNK` buffers.
    #[inline(never)]
    fn get_into_backend(&self, out: &mut MbufArray, n: usize) -> usize {
        let mut got = 0;
        while got < n {
            let mut chunk = [0u32; BACKEND_CHUNK];
            let want = (n - got).min(BACKEND_CHUNK);
            let k = self.pop_backend(&mut chunk[..want]);
            // Reversed: the top of the free stack first, the order `get` would give.
            for &index in chunk[..k].iter().rev() {
                // SAFETY: `index` was just removed from the backend.
                let m = unsafe { self.take(index) };
                // `k <= n - got <= out.room()`: it fits.
                let pushed = out.push(m);
                debug_assert!(pushed.is_ok());
            }
            got += k;
            if k < want {
                break;
            }
        }
        got
    }

    /// Returns buffer `index` (its header already marked free) to the calling thread's
    /// cache, or to the backend.
    ///
    /// The last access to the pool is the publishing step: the Release store of the
    /// cache's `len`, or the backend lock's release. After it the pool may be freed by a
    /// concurrent `Owner::drop` (see there), so nothing may follow it.
    #[inline]
    pub(crate) fn put(&self, index: u32) {
        self.put_on(self.my_cache(), index);
    }

    /// `put` into `slot`, which must be the slot of the lcore id the calling thread holds
    /// (or `None`: the backend). The same last-access rule applies.
    #[inline]
    pub(crate) fn put_on(&self, slot: Option<&LcoreCache>, index: u32) {
        match slot {
            Some(c) => {
                // SAFETY: the caller passes the slot of the lcore id this thread holds.
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

    /// Moves `objs[keep..len]` to the backend, keeping half a `cache_size`; returns the
    /// cache's new length. The caller still owns a buffer of this pool (the one that
    /// did not fit), so the pool stays alive past the unlock.
    #[inline(never)]
    fn flush_keep(&self, c: &LcoreCache, objs: &[u32], len: usize) -> usize {
        let keep = self.cache_size as usize / 2;
        // Lower the count before the buffers reach the backend, so `Owner::drop` can never
        // count them in both places. Release: pairs with its Acquire loads.
        c.len.store(keep as u32, Ordering::Release);
        let mut b = self.lock_backend();
        b.free.extend_from_slice(&objs[keep..len]);
        b.flushes += 1;
        debug_assert!(b.free.len() <= self.n_bufs as usize);
        keep
    }

    /// Frees the leading run of `ms` that belongs to this pool into `slot` (flushing to
    /// the backend when it reaches its threshold) or, without a slot, into the backend
    /// under one lock. Returns the run's length (at least 1).
    ///
    /// As with `put`, the publishing step (the Release store of the slot's `len`, or the
    /// unlock) is the last access to the pool: later buffers in `ms` that belong to this
    /// pool again keep it alive for the next run.
    ///
    /// # Safety
    /// `ms` is not empty and `ms[0]` belongs to this pool; `slot` is the slot of the lcore
    /// id the calling thread holds (or `None`). The caller gives up ownership of the
    /// first returned-count `Mbuf`s of `ms`: it must forget them, never drop or use them.
    #[inline]
    pub(crate) unsafe fn put_run(&self, slot: Option<&LcoreCache>, ms: &[Mbuf]) -> usize {
        let me: *const PoolInner = self;
        let Some(c) = slot else {
            // SAFETY: forwarded from the caller.
            return unsafe { self.put_run_backend(ms) };
        };
        // SAFETY: the caller passes the slot of the lcore id this thread holds.
        let objs = unsafe { c.objs_mut() };
        // Relaxed: this thread is the only writer of `len`.
        let mut len = c.len.load(Ordering::Relaxed) as usize;
        let mut k = 0;
        loop {
            // As many as the slot takes before its flush threshold, without a check per
            // buffer; the run ends at the first buffer of another pool.
            let n = (ms.len() - k).min(objs.len() - len);
            let mut copied = 0;
            for (slot, m) in objs[len..len + n].iter_mut().zip(&ms[k..k + n]) {
                let hdr = m.hdr_ptr();
                // SAFETY: `m` is an `Mbuf` the caller still owns, so its header is valid.
                let (pool, index) = unsafe { ((*hdr).pool, (*hdr).index) };
                if pool != me {
                    break;
                }
                #[cfg(debug_assertions)]
                self.debug_mark_free(hdr, index);
                *slot = index;
                copied += 1;
            }
            len += copied;
            k += copied;
            if copied < n || k == ms.len() {
                break;
            }
            // The slot is at its threshold and the run goes on: flush (we still own
            // `ms[k]`, so the pool stays alive).
            len = self.flush_keep(c, objs, len);
        }
        // Release: pairs with the Acquire loads in `Owner::drop`; publishes the run as
        // home. Last access to the pool for this run.
        c.len.store(len as u32, Ordering::Release);
        k
    }

    /// `put_run` without a cache slot: the run goes to the backend under one lock.
    ///
    /// # Safety
    /// As `put_run`.
    #[inline(never)]
    unsafe fn put_run_backend(&self, ms: &[Mbuf]) -> usize {
        let me: *const PoolInner = self;
        let mut b = self.lock_backend();
        let mut k = 0;
        while let Some(m) = ms.get(k) {
            let hdr = m.hdr_ptr();
            // SAFETY: `m` is an `Mbuf` the caller still owns, so its header is valid.
            let (pool, index) = unsafe { ((*hdr).pool, (*hdr).index) };
            if pool != me {
                break;
            }
            #[cfg(debug_assertions)]
            self.debug_mark_free(hdr, index);
            b.free.push(index);
            k += 1;
        }
        debug_assert!(b.free.len() <= self.n_bufs as usize);
        // The guard's drop (unlock) is the last access to the pool for this run.
        k
    }
}

/// Frees every `Mbuf` in `ms` (DPDK `rte_pktmbuf_free_bulk`): each run of consecutive
/// buffers of one pool is one put into `lcore`'s cache slot of that pool (or one backend
/// lock when `lcore` is `None` or the pool has no caches). `known` is a pool whose slot
/// the caller resolved already (an `LcoreMem`'s): its runs skip the lookup.
///
/// # Safety
/// `lcore` is the lcore id the calling thread holds, or `None`, and `known`'s slot is
/// that lcore's slot of that pool. The caller gives up ownership of every `Mbuf` in
/// `ms`: it must forget them, never drop or use them.
#[inline]
pub(crate) unsafe fn free_bulk(
    ms: &[Mbuf],
    lcore: Option<usize>,
    known: Option<(&PoolInner, Option<&LcoreCache>)>,
) {
    let mut rest = ms;
    while let Some(first) = rest.first() {
        let pool = first.pool();
        let slot = match known {
            Some((p, slot)) if std::ptr::eq(p, pool) => slot,
            _ => pool.slot(lcore),
        };
        // SAFETY: `rest` is not empty and starts with a buffer of `pool`; the slot is
        // `lcore`'s, which this thread holds (caller); ownership of `rest` is ours to
        // give up.
        let n = unsafe { pool.put_run(slot, rest) };
        rest = &rest[n..];
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
    /// shortfall in `PoolStats::alloc_fail`. `Some` slots are left alone. The `Option`
    /// slot API of contract v1; bursts use `alloc_bulk_into` and an `MbufArray`.
    #[inline]
    pub fn alloc_bulk(&self, out: &mut [Option<Mbuf>]) -> usize {
        self.inner().get_bulk(out)
    }

    /// Appends up to `n` reset buffers to `out` and returns how many: `n`, or fewer when
    /// `out` has less room (not counted) or the pool runs dry (the shortfall is counted
    /// in `PoolStats::alloc_fail`). On a registered lcore this is one operation on its
    /// cache slot for the whole burst (and at most one backend refill).
    #[inline]
    pub fn alloc_bulk_into(&self, out: &mut MbufArray, n: usize) -> usize {
        let inner = self.inner();
        inner.get_into(inner.my_cache(), out, n)
    }
}
