//! Loom models of the SPSC ring (`src/spsc.rs`, through the halves of `src/halves.rs`):
//! one producer and one consumer, the ring wrapping around, a batch published at once,
//! and the ring dropped with elements left inside.
//!
//! Run: `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p ibpoll-ring
//! --test loom --release` (its own target dir, so the loom build does not evict the
//! normal one). The models themselves run in well under a second.
//!
//! Under `--cfg loom` the ring's slots are `loom::cell::UnsafeCell`s: loom fails the model
//! when the producer's write of a slot and the consumer's read of it are not ordered by
//! happens-before, whether or not the interleaving it tried put them in the right order. So
//! a slot read before it is published, or refilled while the consumer may still be
//! reading it, fails the model. The models also check FIFO order and that every element
//! is received or dropped exactly once.
//!
//! The elements are `Item`s that count their drops. Their drop counters are
//! `std` atomics on purpose: test bookkeeping, read after every thread was joined, that
//! should not add interleavings for loom to explore.
#![cfg(loom)]

use std::sync::atomic::{AtomicUsize, Ordering};

use loom::thread;

use ibpoll_ring::{channel, Producer};

/// Element `value`; bumps `drops[value]` when dropped.
#[derive(Debug)]
struct Item {
    value: usize,
    drops: std::sync::Arc<Vec<AtomicUsize>>,
}

impl Drop for Item {
    fn drop(&mut self) {
        // Relaxed: read after every thread was joined.
        self.drops[self.value].fetch_add(1, Ordering::Relaxed);
    }
}

fn counters(n: usize) -> std::sync::Arc<Vec<AtomicUsize>> {
    std::sync::Arc::new((0..n).map(|_| AtomicUsize::new(0)).collect())
}

fn assert_each_dropped_once(drops: &[AtomicUsize]) {
    for (v, d) in drops.iter().enumerate() {
        assert_eq!(d.load(Ordering::Relaxed), 1, "item {v} dropped once");
    }
}

/// Pushes `values` in order, one at a time, retrying (and yielding to the consumer)
/// while the ring is full.
fn produce(
    tx: &mut Producer<Item>,
    values: std::ops::Range<usize>,
    drops: &std::sync::Arc<Vec<AtomicUsize>>,
) {
    for value in values {
        let mut item = Item {
            value,
            drops: drops.clone(),
        };
        while let Err(back) = tx.push(item) {
            item = back;
            thread::yield_now();
        }
    }
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    // No preemption bound: these models are small enough for loom to explore them in full
    // (a few thousand executions at most, well under a second). Each of these mutants
    // fails them: the Release store of `tail` in `push_from` or of `head` when
    // `pop_with` publishes, or the Acquire load of `tail` in `pop_with` or of `head` in
    // `free`, made Relaxed; `free` letting the producer overwrite the oldest slot.
    builder.preemption_bound = None;
    builder.check(f);
}

/// Three items through a ring of two: the producer fills it, waits while it is full, and
/// refills slot 0 after the consumer has given it back. The consumer receives 0, 1, 2 in
/// order, each exactly once, and reads no slot before it was written.
#[test]
fn producer_and_consumer_wrap_around() {
    model(|| {
        const N: usize = 3;
        let drops = counters(N);
        let (mut tx, mut rx) = channel::<Item>(2);
        let producer = {
            let drops = drops.clone();
            thread::spawn(move || produce(&mut tx, 0..N, &drops))
        };
        let mut got = Vec::new();
        while got.len() < N {
            let before = got.len();
            let n = rx.pop_with(2, |item| got.push(item.value));
            assert_eq!(got.len() - before, n, "pop_with hands over what it counts");
            assert!(n <= 2, "pop_with takes at most max");
            if n == 0 {
                thread::yield_now();
            }
        }
        producer.join().unwrap();
        assert_eq!(got, [0, 1, 2], "FIFO, each item once");
        assert_eq!(rx.pop_with(2, drop), 0, "nothing left");
        drop(rx);
        assert_each_dropped_once(&drops);
    });
}

/// The ring dropped with items inside, by whichever thread lets go of it last, while the
/// consumer has taken some: every item is dropped exactly once, either by the consumer or
/// by the ring's `Drop`, and the ones taken are the oldest, in order.
#[test]
fn drop_with_items_inside_drops_each_once() {
    model(|| {
        const N: usize = 3;
        let drops = counters(N);
        let (mut tx, mut rx) = channel::<Item>(4);
        let producer = {
            let drops = drops.clone();
            thread::spawn(move || produce(&mut tx, 0..N, &drops))
        };
        let mut out = Vec::new();
        // Wait for a first burst: then one to two items are still inside (or on their way)
        // when the ring goes. (A single try would mostly find the ring empty, and loom's
        // DPOR would not try the producer's stores before this thread's load.)
        let n = loop {
            let n = rx.pop_with(2, |item| out.push(item));
            if n > 0 {
                break n;
            }
            thread::yield_now();
        };
        let got: Vec<usize> = out.iter().map(|m| m.value).collect();
        assert_eq!(got, (0..n).collect::<Vec<_>>(), "the oldest, in order");
        drop(out);
        drop(rx);
        producer.join().unwrap();
        assert_each_dropped_once(&drops);
    });
}

/// Four items pushed as batches (`push_from`) into a ring of two, taken one at a time:
/// a batch is published with one store, and the consumer never sees a slot of it before
/// that store, nor the producer refill a slot before the consumer let go of it.
#[test]
fn batches_are_published_whole() {
    model(|| {
        const N: usize = 4;
        let drops = counters(N);
        let (mut tx, mut rx) = channel::<Item>(2);
        let producer = {
            let drops = drops.clone();
            thread::spawn(move || {
                let mut next = 0;
                while next < N {
                    let n = tx.push_from(N - next, || {
                        next += 1;
                        Item {
                            value: next - 1,
                            drops: drops.clone(),
                        }
                    });
                    if n == 0 {
                        thread::yield_now();
                    }
                }
            })
        };
        let mut got = Vec::new();
        while got.len() < N {
            if rx.pop_with(1, |item| got.push(item.value)) == 0 {
                thread::yield_now();
            }
        }
        producer.join().unwrap();
        assert_eq!(got, [0, 1, 2, 3], "FIFO across batches");
        drop(rx);
        assert_each_dropped_once(&drops);
    });
}
