//! `Mempool` set-up, teardown and statistics (control path). The alloc/free fast path is
//! in `alloc.rs`.

use std::cell::UnsafeCell;
use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crossbeam_utils::CachePadded;

use crate::mbuf::{MbufHdr, MbufMeta, STATE_FREE};
use crate::mmap::Mapping;
use crate::{Error, MempoolConfig, MAX_LCORES};

pub(crate) fn round_up(x: u64, to: u64) -> u64 {
    x.div_ceil(to) * to
}

/// The shared free list behind the lcore caches. Every move in or out is a bulk copy
/// under one lock acquisition.
pub(crate) struct Backend {
    /// Indices of free buffers; capacity `n_bufs`, so it never reallocates.
    pub(crate) free: Vec<u32>,
    /// Bulk moves backend -> lcore cache.
    pub(crate) refills: u64,
    /// Bulk moves lcore cache -> backend.
    pub(crate) flushes: u64,
}

/// One lcore's private stack of free buffer indices in one pool (DPDK
/// `rte_mempool_cache`).
pub(crate) struct LcoreCache {
    /// Entries of `objs` in use. Written only by the slot's owner (the thread holding the
    /// lcore id) with plain stores, never a read-modify-write; read by anyone for
    /// statistics and by the pool's teardown (see `Owner::drop`).
    pub(crate) len: AtomicU32,
    /// Capacity `PoolInner::cache_cap`. Touched only by the slot's owner.
    objs: UnsafeCell<Box<[u32]>>,
}

impl LcoreCache {
    /// The slot's index stack.
    ///
    /// # Safety
    /// The caller must be the thread that holds this slot's lcore id (see `lcore.rs`), and
    /// must not hold another reference from this function at the same time.
    #[inline]
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn objs_mut(&self) -> &mut [u32] {
        // SAFETY: the caller is the slot's only user (lcore id uniqueness) and holds no
        // other reference into it.
        unsafe { &mut *self.objs.get() }
    }
}

/// A pool's shared state. Lives at a fixed address (boxed) that every buffer header points
/// back to; freed only when every buffer is home (see `Owner::drop`).
pub(crate) struct PoolInner {
    pub(crate) name: String,
    pub(crate) hdrs: NonNull<MbufHdr>,
    pub(crate) n_bufs: u32,
    pub(crate) buf_len: u32,
    /// Configured cache size; the refill and flush targets are half of it.
    pub(crate) cache_size: u32,
    /// Flush threshold: a cache holds at most this many (0: caches disabled).
    pub(crate) cache_cap: u32,
    pub(crate) map: Mapping,
    pub(crate) backend: CachePadded<Mutex<Backend>>,
    pub(crate) caches: Box<[CachePadded<LcoreCache>]>,
    pub(crate) alloc_fail: CachePadded<AtomicU64>,
}

// SAFETY: the raw header pointer and the `UnsafeCell` cache slots are only accessed under
// the rules stated on them: a header by the pool while its buffer is home (under the
// backend lock or by the owning lcore) and by its `Mbuf` while out; a cache slot only by
// the thread holding its lcore id. Everything else is atomics or a `Mutex`.
unsafe impl Send for PoolInner {}
// SAFETY: as for `Send`.
unsafe impl Sync for PoolInner {}

impl PoolInner {
    #[inline]
    pub(crate) fn lock_backend(&self) -> MutexGuard<'_, Backend> {
        // The critical sections cannot panic (no allocation, bounded copies), but stay
        // usable if a panic ever poisons the lock.
        self.backend.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Buffers home: in the backend or in any lcore cache.
    fn home(&self) -> (usize, usize) {
        let backend = self.lock_backend().free.len();
        let cached = self
            .caches
            .iter()
            // Relaxed: a statistics snapshot, no partner.
            .map(|c| c.len.load(Ordering::Relaxed) as usize)
            .sum();
        (backend, cached)
    }

    /// Moves everything in lcore `lcore_id`'s cache back to the backend.
    ///
    /// # Safety
    /// The calling thread must hold `lcore_id`.
    pub(crate) unsafe fn flush_slot(&self, lcore_id: usize) {
        let Some(c) = self.caches.get(lcore_id) else {
            return;
        };
        // Relaxed: the caller is the only writer of `len`.
        let len = c.len.load(Ordering::Relaxed) as usize;
        if len == 0 {
            return;
        }
        // SAFETY: the caller holds `lcore_id`, so this thread is the slot's only user.
        let objs = unsafe { c.objs_mut() };
        // Release, and before the push: the buffers leave the cache's count before they
        // enter the backend's, so a concurrent `Owner::drop` never counts one twice.
        c.len.store(0, Ordering::Release);
        let mut b = self.lock_backend();
        b.free.extend_from_slice(&objs[..len]);
        b.flushes += 1;
        debug_assert!(b.free.len() <= self.n_bufs as usize);
    }

    #[cfg(debug_assertions)]
    pub(crate) fn debug_check_hdr(&self, hdr: *const MbufHdr, index: u32, state: u32) {
        assert!(
            index < self.n_bufs,
            "mempool {:?}: buffer index {index} out of range 0..{}",
            self.name,
            self.n_bufs
        );
        assert_eq!(
            hdr,
            self.hdrs.as_ptr().wrapping_add(index as usize).cast_const(),
            "mempool {:?}: header of buffer {index} is not where it belongs",
            self.name
        );
        // SAFETY: `hdr` is this pool's header `index` (checked above); the caller owns it.
        let actual = unsafe { (*hdr).state };
        assert_eq!(
            actual, state,
            "mempool {:?}: buffer {index} in the wrong state (double free or corruption)",
            self.name
        );
    }
}

/// Every live pool, so an `LcoreGuard` can flush its slot in each of them. Lock order:
/// `POOLS`, then a pool's backend.
static POOLS: Mutex<Vec<PoolPtr>> = Mutex::new(Vec::new());

#[derive(Clone, Copy, PartialEq, Eq)]
struct PoolPtr(NonNull<PoolInner>);

// SAFETY: a `PoolPtr` in `POOLS` points to a live `PoolInner`, which is `Sync`; entries
// are removed under the `POOLS` lock before the pool is freed.
unsafe impl Send for PoolPtr {}

/// Pools torn down with buffers still out: leaked on purpose, but kept reachable here so
/// a leak checker (LeakSanitizer) reports them as retained, not lost.
static ORPHANS: Mutex<Vec<PoolPtr>> = Mutex::new(Vec::new());

fn pools() -> MutexGuard<'static, Vec<PoolPtr>> {
    POOLS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Flushes lcore `lcore_id`'s cache in every live pool (from `LcoreGuard::drop`, on the
/// thread that holds the id).
pub(crate) fn flush_lcore_everywhere(lcore_id: usize) {
    let pools = pools();
    for p in pools.iter() {
        // SAFETY: entries of `POOLS` are live while we hold its lock (teardown removes them
        // under it first), and the caller, `LcoreGuard::drop`, holds `lcore_id`.
        unsafe { p.0.as_ref().flush_slot(lcore_id) };
    }
}

/// The last `Mempool` handle's drop tears the pool down.
struct Owner(NonNull<PoolInner>);

// SAFETY: `PoolInner` is `Send + Sync`; `Owner` is just its owning pointer.
unsafe impl Send for Owner {}
// SAFETY: as for `Send`.
unsafe impl Sync for Owner {}

impl Drop for Owner {
    /// Frees the pool if every buffer is home, else leaks it (see the crate docs).
    ///
    /// Why counting is enough. No `Mempool` handle is left, so no thread can allocate: from
    /// now on buffers only come home (an `Mbuf` drop into a cache or the backend, or a
    /// cache flush into the backend). Every earlier allocation happened-before this drop
    /// (the `Arc`'s Release decrement and Acquire fence). We hold the backend lock while
    /// reading the cache lengths, so no flush can complete meanwhile, and a flush lowers a
    /// cache's length *before* pushing to the backend: a buffer is never counted twice. A
    /// buffer being returned is counted only by the final Release store of its cache's
    /// length (paired with the Acquire loads below) or by the backend lock's release; that is the returning thread's last touch of the pool. So a
    /// count equal to `n_bufs` proves no buffer is out and no thread is still inside the
    /// pool. A count too low (a buffer out, or in transit right now) leaks: never UB.
    fn drop(&mut self) {
        let mut pools = pools();
        // SAFETY: the pool is live: it is freed only below, by this, its only owner.
        let inner = unsafe { self.0.as_ref() };
        let backend = inner.lock_backend();
        let mut home = backend.free.len();
        for c in inner.caches.iter() {
            // Acquire: pairs with the Release stores of `len` in `put` and `flush_slot`.
            home += c.len.load(Ordering::Acquire) as usize;
        }
        drop(backend);
        pools.retain(|&p| p != PoolPtr(self.0));
        drop(pools);
        let n_bufs = inner.n_bufs as usize;
        if home == n_bufs {
            // SAFETY: `self.0` came from `Box::into_raw` in `Mempool::new`; no handle, no
            // `Mbuf` and no `POOLS` entry refers to it any more (argued above).
            drop(unsafe { Box::from_raw(self.0.as_ptr()) });
        } else {
            ORPHANS
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(PoolPtr(self.0));
            tracing::error!(
                pool = %inner.name,
                outstanding = n_bufs.saturating_sub(home),
                len = inner.map.len(),
                "last handle of a mempool dropped while buffers are still out: leaking its \
                 memory so they stay valid"
            );
        }
    }
}

/// The whole mapping of a pool, to register once as an RDMA memory region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemRegion {
    /// First byte.
    pub addr: usize,
    /// Length in bytes (a multiple of 2 MiB).
    pub len: usize,
    /// Whether 2 MiB hugetlb pages back it.
    pub hugepages: bool,
}

impl MemRegion {
    /// Whether `addr..addr + len` lies inside the region.
    pub fn contains(&self, addr: usize, len: usize) -> bool {
        addr >= self.addr
            && addr
                .checked_add(len)
                .is_some_and(|e| e <= self.addr + self.len)
    }
}

/// A snapshot of a pool's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Buffers in the pool.
    pub capacity: usize,
    /// Buffers out as `Mbuf`s (see `Mempool::in_use`).
    pub in_use: usize,
    /// Free buffers in the shared backend.
    pub backend: usize,
    /// Free buffers held in lcore caches, summed over lcores.
    pub cached: usize,
    /// Buffers asked for and not given: one per `alloc` returning `None`, the shortfall
    /// of each `alloc_bulk`.
    pub alloc_fail: u64,
    /// Bulk moves from the backend into an lcore cache.
    pub backend_refills: u64,
    /// Bulk moves from an lcore cache into the backend.
    pub backend_flushes: u64,
}

/// A pool of fixed-size packet buffers in one hugepage mapping. Cheap to clone; clones
/// share the pool. `Send + Sync`.
#[derive(Clone)]
pub struct Mempool {
    /// Same pointer as `_owner.0`, kept here so the fast path skips the `Arc` indirection.
    inner: NonNull<PoolInner>,
    _owner: Arc<Owner>,
}

// SAFETY: `PoolInner` is `Send + Sync` and outlives every handle (the `Arc<Owner>`).
unsafe impl Send for Mempool {}
// SAFETY: as for `Send`.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// Validates `cfg`, maps the memory, lays out the headers and buffers and puts every
    /// buffer in the backend.
    pub fn new(cfg: MempoolConfig) -> Result<Mempool, Error> {
        cfg.validate()?;
        let n_bufs = cfg.n_bufs;
        let buf_len = cfg.headroom + cfg.data_room;
        let stride = round_up(u64::from(buf_len), 64) as usize;
        let hdr_bytes = n_bufs as usize * std::mem::size_of::<MbufHdr>();
        let data_start = round_up(hdr_bytes as u64, 4096) as usize;
        let total = data_start + stride * n_bufs as usize;
        let map = Mapping::new(&cfg.name, total, cfg.hugepages)?;

        let cache_cap = if cfg.cache_size == 0 {
            0
        } else {
            // DPDK's flush threshold: 1.5 x the cache size.
            (cfg.cache_size + cfg.cache_size / 2).min(n_bufs)
        };
        let caches = (0..MAX_LCORES)
            .map(|_| {
                CachePadded::new(LcoreCache {
                    len: AtomicU32::new(0),
                    objs: UnsafeCell::new(vec![0; cache_cap as usize].into_boxed_slice()),
                })
            })
            .collect();
        let mut free = Vec::with_capacity(n_bufs as usize);
        // Reversed, so the first allocations come out as 0, 1, 2, ...
        free.extend((0..n_bufs).rev());
        let hdrs = NonNull::new(map.addr().cast::<MbufHdr>()).expect("mmap address is non-null");
        let inner = Box::new(PoolInner {
            name: cfg.name,
            hdrs,
            n_bufs,
            buf_len,
            cache_size: cfg.cache_size,
            cache_cap,
            map,
            backend: CachePadded::new(Mutex::new(Backend {
                free,
                refills: 0,
                flushes: 0,
            })),
            caches,
            alloc_fail: CachePadded::new(AtomicU64::new(0)),
        });
        let inner = NonNull::from(Box::leak(inner));
        for i in 0..n_bufs as usize {
            // SAFETY: header `i` and buffer `i` lie inside the fresh mapping (`total` bytes
            // were mapped: headers at 0, buffers from `data_start`, both 64-byte aligned as
            // the mapping is 2 MiB aligned); nothing else refers to them yet.
            unsafe {
                let buf_addr = map_addr(inner).add(data_start + i * stride);
                hdrs.as_ptr().add(i).write(MbufHdr {
                    pool: inner.as_ptr(),
                    buf_addr,
                    index: i as u32,
                    buf_len,
                    data_off: cfg.headroom,
                    data_len: 0,
                    headroom: cfg.headroom,
                    state: STATE_FREE,
                    meta: MbufMeta::default(),
                });
            }
        }
        pools().push(PoolPtr(inner));
        // SAFETY: `inner` is live; we only read its fields for the log line.
        let i = unsafe { inner.as_ref() };
        tracing::debug!(
            pool = %i.name,
            n_bufs,
            buf_len,
            cache_size = i.cache_size,
            region_len = i.map.len(),
            hugepages = i.map.hugepages(),
            "mempool created"
        );
        Ok(Mempool {
            inner,
            _owner: Arc::new(Owner(inner)),
        })
    }

    #[inline]
    pub(crate) fn inner(&self) -> &PoolInner {
        // SAFETY: the `Arc<Owner>` we hold keeps the pool alive at least as long as `self`.
        unsafe { self.inner.as_ref() }
    }

    /// The configured name.
    pub fn name(&self) -> &str {
        &self.inner().name
    }

    /// Number of buffers.
    pub fn capacity(&self) -> usize {
        self.inner().n_bufs as usize
    }

    /// Buffers out as `Mbuf`s: `capacity - available`.
    ///
    /// Buffers parked in lcore caches are free, not in use, and each cache's fill level is
    /// readable from any thread, so no flush is needed: the figure is exact whenever no
    /// thread is allocating or freeing from this pool at the same moment. While they are,
    /// it can be high by the buffers in flight between a cache and the backend.
    pub fn in_use(&self) -> usize {
        let (backend, cached) = self.inner().home();
        self.capacity().saturating_sub(backend + cached)
    }

    /// Free buffers: backend plus every lcore cache. Buffers cached by other lcores count,
    /// though only those lcores can allocate them until they flush.
    pub fn available(&self) -> usize {
        let (backend, cached) = self.inner().home();
        backend + cached
    }

    /// Size of each buffer: headroom + data room.
    pub fn buf_len(&self) -> usize {
        self.inner().buf_len as usize
    }

    /// The whole mapping (headers and buffers), for one-time memory-region registration.
    pub fn region(&self) -> MemRegion {
        let map = &self.inner().map;
        MemRegion {
            addr: map.addr() as usize,
            len: map.len(),
            hugepages: map.hugepages(),
        }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> PoolStats {
        let inner = self.inner();
        let (backend, refills, flushes) = {
            let b = inner.lock_backend();
            (b.free.len(), b.refills, b.flushes)
        };
        let cached: usize = inner
            .caches
            .iter()
            // Relaxed: a statistics snapshot, no partner.
            .map(|c| c.len.load(Ordering::Relaxed) as usize)
            .sum();
        PoolStats {
            capacity: inner.n_bufs as usize,
            in_use: (inner.n_bufs as usize).saturating_sub(backend + cached),
            backend,
            cached,
            // Relaxed: a statistic, no partner.
            alloc_fail: inner.alloc_fail.load(Ordering::Relaxed),
            backend_refills: refills,
            backend_flushes: flushes,
        }
    }

    /// Returns the calling lcore's cached buffers of this pool to the backend, so other
    /// threads can allocate them. A no-op on an unregistered thread.
    pub fn flush_cache(&self) {
        if let Some(id) = crate::current_lcore() {
            // SAFETY: `current_lcore` says this thread holds `id`.
            unsafe { self.inner().flush_slot(id) };
        }
    }
}

/// The mapping's base address, read through the raw pool pointer.
///
/// # Safety
/// `inner` must point to a live `PoolInner`.
unsafe fn map_addr(inner: NonNull<PoolInner>) -> *mut u8 {
    // SAFETY: the caller guarantees `inner` is live.
    unsafe { inner.as_ref().map.addr() }
}

impl fmt::Debug for Mempool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.inner();
        f.debug_struct("Mempool")
            .field("name", &inner.name)
            .field("capacity", &inner.n_bufs)
            .field("buf_len", &inner.buf_len)
            .field("cache_size", &inner.cache_size)
            .field("region", &self.region())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(debug_assertions)]
    use crate::mbuf::Mbuf;
    use crate::HugepagePolicy;
    use std::mem::offset_of;

    fn pool(n_bufs: u32, cache_size: u32) -> Mempool {
        Mempool::new(MempoolConfig {
            data_room: 100,
            cache_size,
            hugepages: HugepagePolicy::Never,
            ..MempoolConfig::new("unit", n_bufs)
        })
        .unwrap()
    }

    #[test]
    fn header_layout() {
        // Hot fields first; the metadata fills the rest of the cache line.
        assert_eq!(offset_of!(MbufHdr, pool), 0);
        assert_eq!(offset_of!(MbufHdr, buf_addr), 8);
        assert_eq!(offset_of!(MbufHdr, data_off), 24);
        assert_eq!(offset_of!(MbufHdr, meta), 40);
        assert_eq!(std::mem::size_of::<CachePadded<LcoreCache>>() % 64, 0);
    }

    #[test]
    fn flush_threshold_is_one_and_a_half_cache_sizes() {
        assert_eq!(pool(4096, 256).inner().cache_cap, 384);
        assert_eq!(pool(8, 1).inner().cache_cap, 1);
        assert_eq!(pool(8, 8).inner().cache_cap, 8);
        assert_eq!(pool(8, 0).inner().cache_cap, 0);
    }

    #[test]
    fn layout_in_mapping() {
        let p = pool(10, 0);
        let inner = p.inner();
        let m = p.alloc().unwrap();
        // Headers at the start of the mapping, buffers from the next 4 KiB boundary on.
        assert_eq!(inner.hdrs.as_ptr() as usize, p.region().addr);
        assert_eq!(m.buf_addr(), p.region().addr + 4096);
        let m2 = p.alloc().unwrap();
        assert_eq!(m2.buf_addr() - m.buf_addr(), 256); // round_up(128 + 100, 64)
    }

    #[cfg(debug_assertions)]
    #[test]
    #[should_panic(expected = "wrong state (double free")]
    fn debug_catches_double_free_through_raw() {
        let p = pool(4, 0);
        let raw = p.alloc().unwrap().into_raw();
        // SAFETY: deliberately breaks `from_raw`'s contract (twice) to show the debug
        // check; the first drop returns the buffer, the second panics before touching
        // the free list.
        drop(unsafe { Mbuf::from_raw(raw) });
        // SAFETY: see above.
        drop(unsafe { Mbuf::from_raw(raw) });
    }

    #[test]
    fn round_up_works() {
        assert_eq!(round_up(0, 64), 0);
        assert_eq!(round_up(1, 64), 64);
        assert_eq!(round_up(228, 64), 256);
    }
}
