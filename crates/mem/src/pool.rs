//! `Mempool` set-up, teardown and statistics (control path). The alloc/free fast path is
//! in `alloc.rs`.

use std::cell::UnsafeCell;
use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use crossbeam_utils::CachePadded;

use crate::mbuf::{rearm_word, Mbuf, MbufHdr, MbufMeta, HDR_LEN};
#[cfg(debug_assertions)]
use crate::mbuf::{STATE_FREE, STATE_IN_USE};
use crate::mmap::Mapping;
use crate::{Error, MempoolConfig, MAX_LCORES};

/// Number of pool ids (`Mempool::id` is below it): at most this many pools live at once.
pub const POOL_IDS_MAX: usize = 1 << 16;

pub(crate) fn round_up(x: u64, to: u64) -> u64 {
    x.div_ceil(to) * to
}

/// Bytes from one pool element to the next: a 64-byte header, then headroom and data
/// room, rounded up to a multiple of 64 so every header (and buffer) is line aligned.
pub(crate) fn element_stride(buf_len: u64) -> u64 {
    round_up(HDR_LEN as u64 + buf_len, 64)
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
    /// The pool's id, unique among live pools (leaked ones included).
    pub(crate) id: u16,
    /// Element 0: the header of buffer `i` is at `base + i * stride`, its buffer 64
    /// bytes later. The start of the mapping.
    pub(crate) base: NonNull<u8>,
    /// Bytes per element (`element_stride`).
    pub(crate) stride: usize,
    /// The data window of a fresh buffer as one word (`mbuf::rearm_word`).
    pub(crate) rearm: u64,
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
    /// The handles' shared owner, for [`Mempool::of`]: upgrades while any handle lives.
    owner: Weak<Owner>,
}

// SAFETY: the raw header pointer and the `UnsafeCell` cache slots are only accessed under
// the rules stated on them: a header by the pool while its buffer is home (under the
// backend lock or by the owning lcore) and by its `Mbuf` while out; a cache slot only by
// the thread holding its lcore id. Everything else is atomics or a `Mutex`.
unsafe impl Send for PoolInner {}
// SAFETY: as for `Send`.
unsafe impl Sync for PoolInner {}

impl PoolInner {
    /// The header of buffer `index`.
    ///
    /// # Safety
    /// `index < n_bufs`.
    #[inline]
    pub(crate) unsafe fn hdr(&self, index: u32) -> *mut MbufHdr {
        debug_assert!(index < self.n_bufs);
        // SAFETY: `index < n_bufs` (caller), and `n_bufs` elements of `stride` bytes lie
        // inside the mapping from `base` on (`Mempool::new`).
        unsafe {
            self.base
                .as_ptr()
                .add(index as usize * self.stride)
                .cast::<MbufHdr>()
        }
    }

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

    /// Checks that `hdr` is buffer `index` of this pool in state `from`, then moves it to
    /// `to`. Debug builds only: release builds neither store nor check the state.
    #[cfg(debug_assertions)]
    fn debug_transition(&self, hdr: *mut MbufHdr, index: u32, from: u32, to: u32) {
        assert!(
            index < self.n_bufs,
            "mempool {:?}: buffer index {index} out of range 0..{}",
            self.name,
            self.n_bufs
        );
        assert_eq!(
            hdr.cast_const(),
            self.base
                .as_ptr()
                .wrapping_add(index as usize * self.stride)
                .cast::<MbufHdr>()
                .cast_const(),
            "mempool {:?}: header of buffer {index} is not where it belongs",
            self.name
        );
        // SAFETY: `hdr` is this pool's header `index` (checked above); the caller owns the
        // buffer (an `Mbuf` being freed, or an index just removed from the free lists).
        unsafe {
            assert_eq!(
                (*hdr).state,
                from,
                "mempool {:?}: buffer {index} in the wrong state (double free or corruption)",
                self.name
            );
            (*hdr).state = to;
        }
    }

    /// An `Mbuf` of this pool is being freed: check it is out, mark it free.
    #[cfg(debug_assertions)]
    pub(crate) fn debug_mark_free(&self, hdr: *mut MbufHdr, index: u32) {
        self.debug_transition(hdr, index, STATE_IN_USE, STATE_FREE);
    }

    /// Buffer `index` is being handed out: check it is home, mark it out.
    #[cfg(debug_assertions)]
    pub(crate) fn debug_mark_in_use(&self, hdr: *mut MbufHdr, index: u32) {
        self.debug_transition(hdr, index, STATE_FREE, STATE_IN_USE);
    }
}

/// Every live pool, so an `LcoreGuard` can flush its slot in each of them, and the ids in
/// use. Lock order: `POOLS`, then a pool's backend.
static POOLS: Mutex<Registry> = Mutex::new(Registry {
    live: Vec::new(),
    ids: Vec::new(),
});

struct Registry {
    /// Pools with a handle left (not torn down yet).
    live: Vec<PoolPtr>,
    /// Bit `i` of word `i / 64`: id `i` is taken, by a live pool or by a leaked one (its
    /// buffers are still out and carry the id, so a PMD's key for it must stay valid).
    ids: Vec<u64>,
}

impl Registry {
    /// The lowest free id, now taken; `None` when all `POOL_IDS_MAX` are.
    fn take_id(&mut self) -> Option<u16> {
        let word = match self.ids.iter().position(|&w| w != u64::MAX) {
            Some(w) => w,
            None if self.ids.len() < POOL_IDS_MAX / 64 => {
                self.ids.push(0);
                self.ids.len() - 1
            }
            None => return None,
        };
        let bit = self.ids[word].trailing_ones() as usize;
        self.ids[word] |= 1 << bit;
        u16::try_from(word * 64 + bit).ok()
    }

    fn give_back_id(&mut self, id: u16) {
        let (word, bit) = (usize::from(id) / 64, usize::from(id) % 64);
        debug_assert!(self.ids[word] & (1 << bit) != 0, "pool id {id} freed twice");
        self.ids[word] &= !(1 << bit);
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct PoolPtr(NonNull<PoolInner>);

// SAFETY: a `PoolPtr` in `POOLS` points to a live `PoolInner`, which is `Sync`; entries
// are removed under the `POOLS` lock before the pool is freed.
unsafe impl Send for PoolPtr {}

/// Pools torn down with buffers still out: leaked on purpose, but kept reachable here so
/// a leak checker (LeakSanitizer) reports them as retained, not lost.
static ORPHANS: Mutex<Vec<PoolPtr>> = Mutex::new(Vec::new());

fn pools() -> MutexGuard<'static, Registry> {
    POOLS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Flushes lcore `lcore_id`'s cache in every live pool (from `LcoreGuard::drop`, on the
/// thread that holds the id).
pub(crate) fn flush_lcore_everywhere(lcore_id: usize) {
    let pools = pools();
    for p in pools.live.iter() {
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
        pools.live.retain(|&p| p != PoolPtr(self.0));
        let n_bufs = inner.n_bufs as usize;
        if home == n_bufs {
            // The id is free again: no buffer carries it any more.
            pools.give_back_id(inner.id);
            drop(pools);
            // SAFETY: `self.0` came from `Box::into_raw` in `Mempool::new`; no handle, no
            // `Mbuf` and no `POOLS` entry refers to it any more (argued above).
            drop(unsafe { Box::from_raw(self.0.as_ptr()) });
        } else {
            // The leaked pool keeps its id: its outstanding buffers still carry it.
            drop(pools);
            ORPHANS
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(PoolPtr(self.0));
            tracing::error!(
                pool = %inner.name,
                id = inner.id,
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
    /// Validates `cfg`, maps the memory, takes a pool id, lays out the elements (header,
    /// headroom, data room) and puts every buffer in the backend.
    pub fn new(cfg: MempoolConfig) -> Result<Mempool, Error> {
        cfg.validate()?;
        let n_bufs = cfg.n_bufs;
        let buf_len = cfg.headroom + cfg.data_room;
        let stride = element_stride(u64::from(buf_len)) as usize;
        let map = Mapping::new(&cfg.name, stride * n_bufs as usize, cfg.hugepages)?;
        let Some(id) = pools().take_id() else {
            return Err(Error::TooManyPools {
                pool: cfg.name,
                max: POOL_IDS_MAX,
            });
        };
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
        let base = NonNull::new(map.addr()).expect("mmap address is non-null");
        // The owner is made with the pool, so the pool can name it (`Mempool::of`).
        let owner = Arc::new_cyclic(|weak: &Weak<Owner>| {
            let inner = Box::new(PoolInner {
                name: cfg.name,
                id,
                base,
                stride,
                rearm: rearm_word(cfg.headroom),
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
                owner: weak.clone(),
            });
            Owner(NonNull::from(Box::leak(inner)))
        });
        let inner = owner.0;
        for index in 0..n_bufs {
            // SAFETY: `inner` is live and `index < n_bufs`, so the header lies inside the
            // fresh mapping (`n_bufs * stride` bytes were mapped, 2 MiB aligned, and
            // `stride` is a multiple of 64); nothing else refers to it yet.
            unsafe {
                inner.as_ref().hdr(index).write(MbufHdr {
                    pool: inner.as_ptr(),
                    data_off: cfg.headroom,
                    data_len: 0,
                    index,
                    buf_len,
                    headroom: cfg.headroom,
                    pool_id: id,
                    #[cfg(debug_assertions)]
                    state: STATE_FREE,
                    meta: MbufMeta::default(),
                });
            }
        }
        pools().live.push(PoolPtr(inner));
        // SAFETY: `inner` is live; we only read its fields for the log line.
        let i = unsafe { inner.as_ref() };
        tracing::debug!(
            pool = %i.name,
            id,
            n_bufs,
            buf_len,
            cache_size = i.cache_size,
            region_len = i.map.len(),
            hugepages = i.map.hugepages(),
            "mempool created"
        );
        Ok(Mempool {
            inner,
            _owner: owner,
        })
    }

    #[inline]
    pub(crate) fn inner(&self) -> &PoolInner {
        // SAFETY: the `Arc<Owner>` we hold keeps the pool alive at least as long as `self`.
        unsafe { self.inner.as_ref() }
    }

    /// The pool `m` belongs to, as a new handle; `None` when no handle of it is left (a
    /// pool whose last handle was dropped while buffers were out). For a PMD that meets a
    /// pool first in a send and registers it then.
    pub fn of(m: &Mbuf) -> Option<Mempool> {
        let inner = m.pool();
        let owner = inner.owner.upgrade()?;
        Some(Mempool {
            inner: owner.0,
            _owner: owner,
        })
    }

    /// The configured name.
    pub fn name(&self) -> &str {
        &self.inner().name
    }

    /// The pool's id: small (the lowest free one when the pool was created, below
    /// `POOL_IDS_MAX`), unique among live pools, and reused once a pool is torn down with
    /// every buffer home. A pool leaked with buffers out keeps its id. Every buffer's
    /// `Mbuf::pool_id` is this, so a PMD keeps one memory key per pool in a table
    /// indexed by it.
    pub fn id(&self) -> u16 {
        self.inner().id
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

    /// The whole mapping (every element: header, headroom, data room), for one-time
    /// memory-region registration.
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

impl fmt::Debug for Mempool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.inner();
        f.debug_struct("Mempool")
            .field("name", &inner.name)
            .field("id", &inner.id)
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
        // Hot fields first, the data window as one 8-byte word; the metadata ends the
        // line (debug builds add the state word in front of it).
        assert_eq!(offset_of!(MbufHdr, pool), 0);
        assert_eq!(offset_of!(MbufHdr, data_off), 8);
        assert_eq!(offset_of!(MbufHdr, data_len), 12);
        assert!(offset_of!(MbufHdr, meta) + std::mem::size_of::<MbufMeta>() <= 64);
        assert_eq!(std::mem::size_of::<MbufHdr>(), HDR_LEN);
        assert_eq!(std::mem::size_of::<CachePadded<LcoreCache>>() % 64, 0);
    }

    #[test]
    fn a_buffer_names_its_pool_while_a_handle_lives() {
        let p = pool(4, 0);
        let m = p.alloc().unwrap();
        let raw = m.as_raw();
        let q = Mempool::of(&m).expect("a handle lives");
        assert_eq!(
            (q.id(), q.name(), q.region()),
            (p.id(), p.name(), p.region())
        );
        assert_eq!(q.in_use(), 1, "the same pool, not a copy");
        assert_eq!(m.into_raw(), raw, "as_raw is the word into_raw gives");
        // SAFETY: `raw` came from into_raw just above and is taken back once.
        let m = unsafe { Mbuf::from_raw(raw) };
        drop((p, q));
        // Every handle is gone while the buffer is out: the pool is leaked, not named.
        assert!(Mempool::of(&m).is_none());
    }

    #[test]
    fn stride_is_header_plus_buffer_in_lines() {
        assert_eq!(element_stride(228), 320); // 64 + 228 = 292 -> 320
        assert_eq!(element_stride(128 + 4096), 64 + 4224);
        assert_eq!(element_stride(45), 128);
        assert_eq!(element_stride(64), 128);
    }

    #[test]
    fn ids_lowest_free_first_and_reused() {
        let mut r = Registry {
            live: Vec::new(),
            ids: Vec::new(),
        };
        assert_eq!(r.take_id(), Some(0));
        assert_eq!(r.take_id(), Some(1));
        assert_eq!(r.take_id(), Some(2));
        r.give_back_id(1);
        assert_eq!(r.take_id(), Some(1));
        assert_eq!(r.take_id(), Some(3));
        // Exhaust the id space: the last is 65535, then none.
        let mut last = 3;
        while let Some(id) = r.take_id() {
            assert_eq!(u32::from(id), last + 1);
            last = u32::from(id);
        }
        assert_eq!(last as usize, POOL_IDS_MAX - 1);
        r.give_back_id(70);
        assert_eq!(r.take_id(), Some(70));
        assert_eq!(r.take_id(), None);
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
        // Element 0 at the start of the mapping: its header, then its buffer.
        assert_eq!(inner.base.as_ptr() as usize, p.region().addr);
        assert_eq!(m.buf_addr(), p.region().addr + 64);
        let m2 = p.alloc().unwrap();
        assert_eq!(m2.buf_addr() - m.buf_addr(), 320); // round_up(64 + 128 + 100, 64)
        assert_eq!(inner.stride, 320);
        // SAFETY: index 9 < n_bufs.
        let last = unsafe { inner.hdr(9) } as usize;
        assert!(last + 64 + 228 <= p.region().addr + p.region().len);
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
