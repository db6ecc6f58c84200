//! [`SpscRing`]: the ring, shared between one producer and one consumer whose roles the
//! caller guarantees (`unsafe` operations).

use std::mem::MaybeUninit;

use crossbeam_utils::CachePadded;

use crate::sync::{AtomicUsize, Ordering, Slot};

/// The producer's indices (one cache line).
#[derive(Debug)]
struct ProducerIdx {
    /// Next slot to fill. Written by the producer only.
    tail: AtomicUsize,
    /// The producer's last view of `SpscRing::head`. Touched by the producer only
    /// (Relaxed: successive producers, if the role passes between threads, are ordered
    /// by whatever hands the role over, e.g. a lock).
    head_seen: AtomicUsize,
}

/// A bounded single-producer single-consumer ring of `T`s.
///
/// Roles: at any moment one thread is the producer (it calls [`push`](Self::push),
/// [`push_from`](Self::push_from), [`free`](Self::free), [`is_full`](Self::is_full)) and
/// one is the consumer ([`pop_with`](Self::pop_with), [`clear`](Self::clear)). A role
/// may pass from one thread to another only through something that orders the two (a
/// lock, a join, a parked-queue handshake). [`channel`](crate::channel) gives the roles
/// to two owned halves instead, with safe operations.
pub struct SpscRing<T> {
    slots: Box<[Slot<MaybeUninit<T>>]>,
    mask: usize,
    prod: CachePadded<ProducerIdx>,
    /// Next slot to take. Written by the consumer only.
    head: CachePadded<AtomicUsize>,
}

// SAFETY: a slot is written only by the producer while it is outside `head..tail` (free),
// and read only by the consumer while inside (filled); the Release/Acquire pairs on
// `tail` and `head` hand each slot over (see `push_from` and `pop_with`). Elements move
// from the producer's thread to the consumer's, hence `T: Send`.
unsafe impl<T: Send> Sync for SpscRing<T> {}
// SAFETY: the ring owns its elements, which are `Send`.
unsafe impl<T: Send> Send for SpscRing<T> {}

impl<T> SpscRing<T> {
    /// A ring of `capacity` slots, rounded up to a power of two (at least 1).
    pub fn new(capacity: usize) -> SpscRing<T> {
        let capacity = capacity.max(1).next_power_of_two();
        SpscRing {
            slots: (0..capacity)
                .map(|_| Slot::new(MaybeUninit::uninit()))
                .collect(),
            mask: capacity - 1,
            prod: CachePadded::new(ProducerIdx {
                tail: AtomicUsize::new(0),
                head_seen: AtomicUsize::new(0),
            }),
            head: CachePadded::new(AtomicUsize::new(0)),
        }
    }

    /// How many slots the ring has.
    pub fn capacity(&self) -> usize {
        self.mask + 1
    }

    /// How many elements the ring holds, as any thread sees it: exact when neither end
    /// is moving, a recent value otherwise.
    pub fn len(&self) -> usize {
        // Relaxed: an estimate; it orders nothing.
        let head = self.head.load(Ordering::Relaxed);
        let tail = self.prod.tail.load(Ordering::Relaxed);
        tail.wrapping_sub(head).min(self.capacity())
    }

    /// Whether the ring holds nothing (as [`len`](Self::len)).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many elements the producer may push now, reading the consumer's index only
    /// when the cached view says fewer than `want` slots are free. A consumer taking
    /// elements at the same moment makes the answer low by that many, never high.
    ///
    /// # Safety
    /// Only the producer may call this.
    #[inline]
    pub unsafe fn free(&self, want: usize) -> usize {
        // Relaxed: only the producer writes these (see `ProducerIdx`).
        let tail = self.prod.tail.load(Ordering::Relaxed);
        let seen = self.prod.head_seen.load(Ordering::Relaxed);
        let free = self.capacity() - tail.wrapping_sub(seen);
        if free >= want {
            return free;
        }
        // Acquire: pairs with the Release store of `head` in `pop_with`: the slots the
        // consumer gave back are no longer read.
        let head = self.head.load(Ordering::Acquire);
        self.prod.head_seen.store(head, Ordering::Relaxed);
        self.capacity() - tail.wrapping_sub(head)
    }

    /// Whether every slot is filled, as the producer sees it.
    ///
    /// # Safety
    /// Only the producer may call this.
    #[inline]
    pub unsafe fn is_full(&self) -> bool {
        // SAFETY: forwarded to the caller.
        unsafe { self.free(1) == 0 }
    }

    /// Appends `m`; gives it back when the ring is full.
    ///
    /// # Safety
    /// Only the producer may call this.
    #[inline]
    pub unsafe fn push(&self, m: T) -> Result<(), T> {
        let mut m = Some(m);
        // SAFETY: forwarded to the caller. `next` is called at most once (max 1).
        let n = unsafe { self.push_from(1, || m.take().expect("called at most once")) };
        match m {
            Some(m) if n == 0 => Err(m),
            _ => Ok(()),
        }
    }

    /// Appends up to `max` elements, each made by one call of `next` (called only for
    /// a slot that is free), and publishes them together; returns how many.
    ///
    /// # Safety
    /// Only the producer may call this.
    #[inline]
    pub unsafe fn push_from(&self, max: usize, mut next: impl FnMut() -> T) -> usize {
        // SAFETY: forwarded to the caller.
        let n = unsafe { self.free(max) }.min(max);
        if n == 0 {
            return 0;
        }
        // Relaxed: only the producer writes `tail`.
        let tail = self.prod.tail.load(Ordering::Relaxed);
        for i in 0..n {
            let at = tail.wrapping_add(i) & self.mask;
            let value = next();
            // SAFETY: `at` is among the `n` slots after `tail`, outside `head..tail` (free,
            // checked by `free` above, whose Acquire load ordered the consumer's last
            // read of them before this write), and we are the only producer.
            self.slots[at].with_mut(|p| unsafe { (*p).write(value) });
        }
        // Release: pairs with the Acquire load of `tail` in `pop_with`: the slots'
        // contents are visible before the consumer can see them filled.
        self.prod
            .tail
            .store(tail.wrapping_add(n), Ordering::Release);
        n
    }

    /// Hands up to `max` elements, oldest first, to `f` and returns how many.
    ///
    /// # Safety
    /// Only the consumer may call this.
    #[inline]
    pub unsafe fn pop_with(&self, max: usize, mut f: impl FnMut(T)) -> usize {
        // Relaxed: only the consumer writes `head`.
        let head = self.head.load(Ordering::Relaxed);
        // Acquire: pairs with the Release store in `push_from`.
        let tail = self.prod.tail.load(Ordering::Acquire);
        let n = tail.wrapping_sub(head).min(max);
        // Publishes the consumer's progress once, when the loop ends or when `f`
        // panics: each slot read stays read, never read again (by `clear` or `drop`).
        let mut done = Publish {
            head: &self.head,
            from: head,
            at: head,
        };
        for i in 0..n {
            let at = head.wrapping_add(i) & self.mask;
            // SAFETY: `at` is inside `head..tail`: filled by `push_from` (made visible by
            // the Acquire above) and read exactly once, here, before `head` moves past it.
            let value = self.slots[at].with(|p| unsafe { (*p).assume_init_read() });
            done.at = head.wrapping_add(i + 1);
            f(value);
        }
        n
    }

    /// Drops every element in the ring and returns how many there were.
    ///
    /// # Safety
    /// Only the consumer may call this.
    pub unsafe fn clear(&self) -> usize {
        // SAFETY: forwarded to the caller.
        unsafe { self.pop_with(usize::MAX, drop) }
    }
}

/// Stores the consumer's index when dropped.
struct Publish<'a> {
    head: &'a AtomicUsize,
    /// Its value before.
    from: usize,
    /// Its value to be.
    at: usize,
}

impl Drop for Publish<'_> {
    fn drop(&mut self) {
        // Release: pairs with the Acquire load of `head` in `free`: we are done with the
        // slots before `at` before the producer may fill them again. (Skipped when
        // nothing was taken: the store would change nothing.)
        if self.at != self.from {
            self.head.store(self.at, Ordering::Release);
        }
    }
}

impl<T> Drop for SpscRing<T> {
    fn drop(&mut self) {
        // SAFETY: `&mut self`: no producer or consumer is left.
        unsafe { self.clear() };
    }
}

impl<T> std::fmt::Debug for SpscRing<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpscRing")
            .field("capacity", &self.capacity())
            .field("head", &self.head.load(Ordering::Relaxed))
            .field("tail", &self.prod.tail.load(Ordering::Relaxed))
            .finish()
    }
}

// Not under loom: these use `std` threads, and loom's atomics work only inside a model.
#[cfg(all(test, not(loom)))]
mod tests {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::sync::atomic::AtomicUsize as StdAtomic;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// An element that counts its drops in `drops[value]`.
    #[derive(Debug)]
    struct Item {
        value: usize,
        drops: Arc<Vec<StdAtomic>>,
    }

    impl Drop for Item {
        fn drop(&mut self) {
            self.drops[self.value].fetch_add(1, Ordering::Relaxed);
        }
    }

    fn drops(n: usize) -> Arc<Vec<StdAtomic>> {
        Arc::new((0..n).map(|_| StdAtomic::new(0)).collect())
    }

    fn item(d: &Arc<Vec<StdAtomic>>, value: usize) -> Item {
        Item {
            value,
            drops: d.clone(),
        }
    }

    fn dropped_once(d: &[StdAtomic]) -> bool {
        d.iter().all(|c| c.load(Ordering::Relaxed) == 1)
    }

    #[test]
    fn capacity_is_a_power_of_two() {
        assert_eq!(SpscRing::<u8>::new(0).capacity(), 1);
        assert_eq!(SpscRing::<u8>::new(5).capacity(), 8);
        assert_eq!(SpscRing::<u8>::new(64).capacity(), 64);
    }

    #[test]
    fn fifo_bounded_and_wraps() {
        let r = SpscRing::new(4);
        let mut next = 0u32;
        let mut expect = 0u32;
        for round in 0..10 {
            // SAFETY: this thread is the only producer and consumer.
            unsafe {
                for _ in 0..4 {
                    assert!(r.push(next).is_ok());
                    next += 1;
                }
                assert!(r.is_full());
                assert_eq!(r.len(), 4);
                assert_eq!(r.push(999), Err(999));
                let mut got = Vec::new();
                let n = r.pop_with(1 + round % 3, |v| got.push(v));
                assert_eq!(n, 1 + round % 3);
                let n2 = r.pop_with(8, |v| got.push(v));
                assert_eq!(n + n2, 4);
                for v in got {
                    assert_eq!(v, expect);
                    expect += 1;
                }
                assert!(!r.is_full());
                assert_eq!(r.pop_with(8, |_| unreachable!()), 0);
            }
        }
    }

    #[test]
    fn push_from_takes_what_fits_and_calls_next_only_for_free_slots() {
        let r = SpscRing::new(8);
        let mut calls = 0;
        // SAFETY: this thread is the only producer and consumer.
        unsafe {
            assert_eq!(
                r.push_from(5, || {
                    calls += 1;
                    calls
                }),
                5
            );
            assert_eq!(
                r.push_from(5, || {
                    calls += 1;
                    calls
                }),
                3
            );
            assert_eq!(calls, 8, "next is called once per slot filled");
            assert_eq!(r.push_from(5, || unreachable!()), 0);
            assert_eq!(r.free(1), 0);
            let mut got = Vec::new();
            r.pop_with(2, |v| got.push(v));
            assert_eq!(got, [1, 2]);
            assert_eq!(r.free(1), 2, "the producer sees the consumer's progress");
        }
    }

    #[test]
    fn drop_drops_what_is_left_once() {
        let d = drops(5);
        let r = SpscRing::new(8);
        for v in 0..5 {
            // SAFETY: the only producer.
            unsafe { r.push(item(&d, v)).unwrap() };
        }
        // SAFETY: the only consumer.
        unsafe { r.pop_with(2, drop) };
        drop(r);
        assert!(dropped_once(&d));
    }

    #[test]
    fn a_panicking_consumer_loses_only_what_it_was_handed() {
        let d = drops(6);
        let r = SpscRing::new(8);
        for v in 0..6 {
            // SAFETY: the only producer.
            unsafe { r.push(item(&d, v)).unwrap() };
        }
        let mut seen = Vec::new();
        let caught = catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: the only consumer.
            unsafe {
                r.pop_with(6, |it| {
                    seen.push(it.value);
                    assert!(it.value < 2, "the consumer panics on the third");
                })
            }
        }));
        assert!(caught.is_err());
        assert_eq!(seen, [0, 1, 2]);
        assert_eq!(r.len(), 3, "3, 4 and 5 stay");
        let mut rest = Vec::new();
        // SAFETY: the only consumer.
        unsafe { r.pop_with(8, |it| rest.push(it.value)) };
        assert_eq!(rest, [3, 4, 5]);
        drop(r);
        assert!(dropped_once(&d), "each dropped exactly once");
    }

    #[test]
    fn halves_on_two_threads_see_everything_in_order() {
        const N: u64 = 200_000;
        let (mut tx, mut rx) = crate::channel::<u64>(64);
        let producer = std::thread::spawn(move || {
            let mut v = 0;
            while v < N {
                let n = tx.push_from(((N - v) as usize).min(7), || {
                    v += 1;
                    v
                });
                if n == 0 {
                    std::thread::yield_now();
                }
            }
        });
        let mut expect = 1;
        while expect <= N {
            if rx.pop_with(32, |v| {
                assert_eq!(v, expect, "FIFO");
                expect += 1;
            }) == 0
            {
                std::thread::yield_now();
            }
        }
        producer.join().unwrap();
        assert!(rx.is_empty());
    }

    #[test]
    fn producers_under_a_lock_and_one_consumer_see_everything_in_order() {
        const PER_PRODUCER: u32 = 20_000;
        let r = Arc::new(SpscRing::<u32>::new(64));
        let lock = Arc::new(Mutex::new(()));
        let producers: Vec<_> = (0..2u32)
            .map(|id| {
                let (r, lock) = (r.clone(), lock.clone());
                std::thread::spawn(move || {
                    let mut v = 0;
                    while v < PER_PRODUCER {
                        let _g = lock.lock().unwrap();
                        // SAFETY: producers hold `lock`, which orders them.
                        if unsafe { r.push(id << 24 | v) }.is_ok() {
                            v += 1;
                        }
                    }
                })
            })
            .collect();
        let mut next = [0u32; 2];
        while next.iter().sum::<u32>() < 2 * PER_PRODUCER {
            // SAFETY: this thread is the only consumer.
            unsafe {
                r.pop_with(32, |t| {
                    let (id, v) = ((t >> 24) as usize, t & 0xFF_FFFF);
                    assert_eq!(v, next[id], "producer {id}'s elements arrive in order");
                    next[id] += 1;
                })
            };
        }
        for t in producers {
            t.join().unwrap();
        }
    }
}
