//! A receive queue's posted buffers: a bounded single-producer, single-consumer ring of
//! filled buffers (DPDK `rte_ring` in SP/SC mode, with the producer's cached view of the
//! consumer index).
//!
//! Who is the single producer and the single consumer:
//! - the producer is the switch, which runs only under the fabric lock: successive
//!   producers (the send bursts of any lcore) are serialised, and ordered, by that mutex;
//! - the consumer is the lcore that owns the receive queue (`SimRxQueue`, `&mut self`),
//!   or, once that queue is gone, the QP's teardown under the fabric lock.
//!
//! The producer publishes each buffer with one Release store of `tail` (a plain store on
//! x86) and reads the consumer's `head` only when its cached copy says the ring is full;
//! the consumer takes a whole burst with one Acquire load of `tail` and one Release
//! store of `head`. No read-modify-write on either side.
//!
//! The ring is generic over its element (`Mbuf` by default) only so that
//! `tests/loom_ring.rs` can model-check this very code, under `--cfg loom`, with a small
//! payload that records its drops instead of buffers from a mempool.

use std::mem::MaybeUninit;

use crossbeam::utils::CachePadded;
use ibpoll_mem::Mbuf;

use self::sync::{AtomicUsize, Ordering, Slot};

/// The atomics and the slot cell this ring uses: `std`'s in normal builds, loom's under
/// `--cfg loom`, so that `tests/loom_ring.rs` checks the orderings and every slot access.
mod sync {
    #[cfg(loom)]
    pub(super) use loom::sync::atomic::{AtomicUsize, Ordering};
    #[cfg(not(loom))]
    pub(super) use std::sync::atomic::{AtomicUsize, Ordering};

    /// One slot's cell. Access goes through `with`/`with_mut` (loom's `UnsafeCell` API),
    /// which under loom record each read and write so that one not ordered by
    /// happens-before with another fails the model.
    pub(super) struct Slot<T> {
        #[cfg(loom)]
        cell: loom::cell::UnsafeCell<T>,
        #[cfg(not(loom))]
        cell: std::cell::UnsafeCell<T>,
    }

    impl<T> Slot<T> {
        pub(super) fn new(value: T) -> Self {
            Slot {
                #[cfg(loom)]
                cell: loom::cell::UnsafeCell::new(value),
                #[cfg(not(loom))]
                cell: std::cell::UnsafeCell::new(value),
            }
        }

        /// Runs `f` with a pointer for reading the slot.
        #[inline]
        pub(super) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
            #[cfg(loom)]
            return self.cell.with(f);
            #[cfg(not(loom))]
            return f(self.cell.get());
        }

        /// Runs `f` with a pointer for writing the slot.
        #[inline]
        pub(super) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            #[cfg(loom)]
            return self.cell.with_mut(f);
            #[cfg(not(loom))]
            return f(self.cell.get());
        }
    }
}

/// The producer's indices (one cache line).
#[derive(Debug)]
struct Producer {
    /// Next slot to fill. Written by the producer only.
    tail: AtomicUsize,
    /// The producer's last view of `Consumer::head`. Touched by the producer only
    /// (Relaxed: the fabric lock orders successive producers).
    head_seen: AtomicUsize,
}

/// A bounded SPSC ring of filled receive buffers.
pub struct InboxRing<T = Mbuf> {
    slots: Box<[Slot<MaybeUninit<T>>]>,
    mask: usize,
    prod: CachePadded<Producer>,
    /// Next slot to take. Written by the consumer only.
    head: CachePadded<AtomicUsize>,
}

// SAFETY: a slot is written only by the producer while it is outside `head..tail` (free),
// and read only by the consumer while inside (filled); the Release/Acquire pairs on
// `tail` and `head` hand each slot over (see `push` and `pop_burst`). Elements move from
// the producer's thread to the consumer's, hence `T: Send`.
unsafe impl<T: Send> Sync for InboxRing<T> {}
// SAFETY: the ring owns its elements, which are `Send`.
unsafe impl<T: Send> Send for InboxRing<T> {}

impl<T> InboxRing<T> {
    /// A ring of `capacity` slots (a power of two).
    pub fn new(capacity: usize) -> InboxRing<T> {
        assert!(capacity.is_power_of_two(), "ring capacity {capacity}");
        InboxRing {
            slots: (0..capacity)
                .map(|_| Slot::new(MaybeUninit::uninit()))
                .collect(),
            mask: capacity - 1,
            prod: CachePadded::new(Producer {
                tail: AtomicUsize::new(0),
                head_seen: AtomicUsize::new(0),
            }),
            head: CachePadded::new(AtomicUsize::new(0)),
        }
    }

    /// Whether every slot is filled, as the producer sees it (a consumer may be taking
    /// buffers at the same moment; then the answer is stale by that many).
    ///
    /// # Safety
    /// Only the producer may call this (the caller holds the fabric lock).
    #[inline]
    pub unsafe fn is_full(&self) -> bool {
        // Relaxed: only producers write these, and the fabric lock orders them.
        let tail = self.prod.tail.load(Ordering::Relaxed);
        let seen = self.prod.head_seen.load(Ordering::Relaxed);
        if tail.wrapping_sub(seen) <= self.mask {
            return false;
        }
        // Acquire: pairs with the Release store of `head` in `pop_burst`: the slots the
        // consumer gave back are no longer read.
        let head = self.head.load(Ordering::Acquire);
        self.prod.head_seen.store(head, Ordering::Relaxed);
        tail.wrapping_sub(head) > self.mask
    }

    /// Appends `m`; gives it back when the ring is full.
    ///
    /// # Safety
    /// Only the producer may call this (the caller holds the fabric lock).
    #[inline]
    pub unsafe fn push(&self, m: T) -> Result<(), T> {
        // SAFETY: the caller is the producer.
        if unsafe { self.is_full() } {
            return Err(m);
        }
        // Relaxed: only producers write `tail`, ordered by the fabric lock.
        let tail = self.prod.tail.load(Ordering::Relaxed);
        // SAFETY: `p` is the slot at `tail`, outside `head..tail` (not full, checked
        // above), so the consumer does not read it, and we are the only producer.
        self.slots[tail & self.mask].with_mut(|p| unsafe { (*p).write(m) });
        // Release: pairs with the Acquire load of `tail` in `pop_burst`: the slot's
        // contents are visible before the consumer can see it filled.
        self.prod
            .tail
            .store(tail.wrapping_add(1), Ordering::Release);
        Ok(())
    }

    /// Moves up to `out.len()` buffers, oldest first, into `out[0..n]` and returns `n`.
    ///
    /// # Safety
    /// Only the consumer may call this: the owner of the receive queue, or, once it is
    /// gone, the QP's teardown under the fabric lock.
    #[inline]
    pub unsafe fn pop_burst(&self, out: &mut [Option<T>]) -> usize {
        // Relaxed: only the consumer writes `head`.
        let head = self.head.load(Ordering::Relaxed);
        // Acquire: pairs with the Release store in `push`.
        let tail = self.prod.tail.load(Ordering::Acquire);
        let n = tail.wrapping_sub(head).min(out.len());
        for (i, slot) in out[..n].iter_mut().enumerate() {
            let at = head.wrapping_add(i) & self.mask;
            // SAFETY: `at` is inside `head..tail`: filled by `push` (made visible by the
            // Acquire above) and read exactly once, here, before `head` moves past it.
            *slot = Some(self.slots[at].with(|p| unsafe { (*p).assume_init_read() }));
        }
        if n > 0 {
            // Release: pairs with the Acquire load in `is_full`: we are done with these
            // slots before the producer may fill them again.
            self.head.store(head.wrapping_add(n), Ordering::Release);
        }
        n
    }

    /// Hands up to `max` buffers, oldest first, to `f` and returns how many.
    ///
    /// # Safety
    /// As `pop_burst`.
    #[inline]
    pub unsafe fn pop_with(&self, max: usize, mut f: impl FnMut(T)) -> usize {
        // Relaxed: only the consumer writes `head`.
        let head = self.head.load(Ordering::Relaxed);
        // Acquire: pairs with the Release store in `push`.
        let tail = self.prod.tail.load(Ordering::Acquire);
        let n = tail.wrapping_sub(head).min(max);
        for i in 0..n {
            let at = head.wrapping_add(i) & self.mask;
            // SAFETY: as in `pop_burst`: `at` is inside `head..tail`, filled and made
            // visible by the Acquire above, read exactly once.
            f(self.slots[at].with(|p| unsafe { (*p).assume_init_read() }));
        }
        if n > 0 {
            // Release: pairs with the Acquire load in `is_full`, as in `pop_burst`.
            self.head.store(head.wrapping_add(n), Ordering::Release);
        }
        n
    }

    /// Drops every buffer in the ring and returns how many there were.
    ///
    /// # Safety
    /// As `pop_burst`.
    pub unsafe fn clear(&self) -> usize {
        // SAFETY: forwarded to the caller.
        unsafe { self.pop_with(usize::MAX, drop) }
    }
}

impl<T> Drop for InboxRing<T> {
    fn drop(&mut self) {
        // SAFETY: `&mut self`: no producer or consumer is left.
        unsafe { self.clear() };
    }
}

impl<T> std::fmt::Debug for InboxRing<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboxRing")
            .field("capacity", &(self.mask + 1))
            .field("head", &self.head.load(Ordering::Relaxed))
            .field("tail", &self.prod.tail.load(Ordering::Relaxed))
            .finish()
    }
}

// Not under loom: these use `std` threads, and loom's atomics work only inside a model.
#[cfg(all(test, not(loom)))]
mod tests {
    use std::sync::{Arc, Mutex};

    use ibpoll_mem::{HugepagePolicy, Mempool, MempoolConfig};

    use super::*;

    fn pool(n_bufs: u32) -> Mempool {
        Mempool::new(MempoolConfig {
            name: "ring".to_owned(),
            n_bufs,
            cache_size: 0,
            hugepages: HugepagePolicy::Never,
            ..MempoolConfig::default()
        })
        .unwrap()
    }

    fn tagged(p: &Mempool, v: u32) -> Mbuf {
        let mut m = p.alloc().unwrap();
        m.append(4).unwrap().copy_from_slice(&v.to_be_bytes());
        m
    }

    fn tag(m: &Mbuf) -> u32 {
        u32::from_be_bytes(m.data()[..4].try_into().unwrap())
    }

    #[test]
    fn fifo_bounded_and_wraps() {
        let p = pool(64);
        let r = InboxRing::new(4);
        let mut out: [Option<Mbuf>; 8] = Default::default();
        let mut next = 0;
        let mut expect = 0;
        for round in 0..10 {
            // SAFETY: this thread is the only producer and consumer.
            unsafe {
                for _ in 0..4 {
                    assert!(r.push(tagged(&p, next)).is_ok());
                    next += 1;
                }
                assert!(r.is_full());
                let extra = r.push(tagged(&p, 999)).unwrap_err();
                assert_eq!(tag(&extra), 999);
                let n = r.pop_burst(&mut out[..1 + round % 3]);
                assert_eq!(n, 1 + round % 3);
                let n2 = r.pop_burst(&mut out[n..]);
                assert_eq!(n + n2, 4);
                for m in out.iter_mut().take(4) {
                    assert_eq!(tag(&m.take().unwrap()), expect);
                    expect += 1;
                }
                assert!(!r.is_full());
                assert_eq!(r.pop_burst(&mut out), 0);
            }
        }
        assert_eq!(p.in_use(), 0);
    }

    #[test]
    fn drop_returns_what_is_left() {
        let p = pool(8);
        let r = InboxRing::new(8);
        for v in 0..5 {
            // SAFETY: the only producer.
            unsafe { r.push(tagged(&p, v)).unwrap() };
        }
        assert_eq!(p.in_use(), 5);
        drop(r);
        assert_eq!(p.in_use(), 0);
    }

    #[test]
    fn producers_under_a_lock_and_one_consumer_see_everything_in_order() {
        const PER_PRODUCER: u32 = 20_000;
        let p = pool(1024);
        let r = Arc::new(InboxRing::new(64));
        let lock = Arc::new(Mutex::new(()));
        let producers: Vec<_> = (0..2u32)
            .map(|id| {
                let (r, lock, p) = (r.clone(), lock.clone(), p.clone());
                std::thread::spawn(move || {
                    let mut v = 0;
                    while v < PER_PRODUCER {
                        let Some(mut m) = p.alloc() else {
                            std::thread::yield_now();
                            continue;
                        };
                        m.append(4)
                            .unwrap()
                            .copy_from_slice(&(id << 24 | v).to_be_bytes());
                        let _g = lock.lock().unwrap();
                        // SAFETY: producers hold `lock`.
                        if unsafe { r.push(m) }.is_ok() {
                            v += 1;
                        }
                    }
                })
            })
            .collect();
        let mut next = [0u32; 2];
        let mut out: [Option<Mbuf>; 32] = Default::default();
        while next.iter().sum::<u32>() < 2 * PER_PRODUCER {
            // SAFETY: this thread is the only consumer.
            let n = unsafe { r.pop_burst(&mut out) };
            for m in out[..n].iter_mut() {
                let t = tag(&m.take().unwrap());
                let (id, v) = ((t >> 24) as usize, t & 0xFF_FFFF);
                assert_eq!(v, next[id], "producer {id}'s buffers arrive in order");
                next[id] += 1;
            }
        }
        for t in producers {
            t.join().unwrap();
        }
        assert_eq!(p.in_use(), 0);
    }
}
