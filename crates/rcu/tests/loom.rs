//! Loom model of the snapshot protocol: publish + read + reclaim with one writer and two
//! readers, readers going offline and online, registration racing with reclaim, and
//! reclaimed snapshots rewritten in place and published again (recycling).
//!
//! Run: `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p ibpoll-rcu
//! --test loom --release` (its own target dir, so the loom build does not evict the normal
//! one). About 30 s on 2 cores.
//!
//! The payload's value lives in a `loom::cell::UnsafeCell`; its `Drop` writes it (poison)
//! and a reader reads it. Loom fails the model when that write and a read are not ordered
//! by happens-before, i.e. when the publisher could free a snapshot a reader may still
//! read, whether or not the interleaving it tried put the free first. Readers also assert
//! they never see the poison, and every model ends by checking that every snapshot was
//! dropped exactly once.
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

use ibpoll_rcu::{Config, Publisher, Reader, Registry};

const POISON: u64 = u64::MAX;

struct Snap {
    value: UnsafeCell<u64>,
    drops: Arc<AtomicUsize>,
}

// SAFETY: readers only read `value`; the one write is in `Drop`, and loom checks that it
// happens after every read (that is what this model tests).
unsafe impl Sync for Snap {}

impl Snap {
    fn new(value: u64, drops: &Arc<AtomicUsize>) -> Self {
        Snap {
            value: UnsafeCell::new(value),
            drops: drops.clone(),
        }
    }

    fn read(&self) -> u64 {
        // SAFETY: shared read; loom reports it if it races with the write in `drop`.
        let value = self.value.with(|p| unsafe { *p });
        assert_ne!(value, POISON, "reader observed a freed snapshot");
        value
    }
}

impl Drop for Snap {
    fn drop(&mut self) {
        // SAFETY: `&mut self`; loom checks it against the readers' `with` accesses.
        self.value.with_mut(|p| unsafe { *p = POISON });
        // Relaxed: a count read after every thread was joined.
        self.drops.fetch_add(1, Ordering::Relaxed);
    }
}

fn domain(drops: &Arc<AtomicUsize>) -> (Publisher<Snap>, Registry<Snap>) {
    ibpoll_rcu::with_config(
        Snap::new(0, drops),
        Config {
            readers_max: 2,
            retired_max: 4,
        },
    )
    .unwrap()
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    // Bounded preemptions keep the state space small (bound 2: ~30 s; bound 3: ~6 min on
    // 2 cores). Bound 2 catches each of these mutants: either SeqCst fence removed, or
    // any of the Release/Acquire orderings of publish, quiescent, get, offline relaxed.
    builder.preemption_bound = Some(2);
    builder.check(f);
}

/// Reads, quiesces, reads again: snapshots never go backwards and are never freed under
/// the reader.
fn read_quiesce_read(mut reader: Reader<Snap>) {
    let first = reader.get().read();
    reader.quiescent();
    let second = reader.get().read();
    assert!(second >= first);
}

#[test]
fn publish_read_reclaim_two_readers() {
    model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let (mut publisher, registry) = domain(&drops);
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let reader = registry.register().unwrap();
                thread::spawn(move || read_quiesce_read(reader))
            })
            .collect();
        publisher.publish(Snap::new(1, &drops)).unwrap();
        publisher.publish(Snap::new(2, &drops)).unwrap();
        publisher.reclaim();
        for reader in readers {
            reader.join().unwrap();
        }
        drop(publisher);
        drop(registry);
        assert_eq!(drops.load(Ordering::Relaxed), 3);
    });
}

/// A reader goes offline and comes back online while the writer publishes and reclaims:
/// the online path's store-load fence against the publisher's fence.
#[test]
fn offline_online_races_with_reclaim() {
    model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let (mut publisher, registry) = domain(&drops);
        let idler = registry.register().unwrap();
        let busy = registry.register().unwrap();
        let idler = thread::spawn(move || {
            let offline = idler.offline();
            let mut reader = offline.online();
            reader.get().read();
            reader.quiescent();
            reader.get().read();
        });
        let busy = thread::spawn(move || {
            let mut reader = busy;
            reader.quiescent();
            reader.get().read();
        });
        publisher.publish(Snap::new(1, &drops)).unwrap();
        publisher.reclaim();
        publisher.publish(Snap::new(2, &drops)).unwrap();
        publisher.reclaim();
        idler.join().unwrap();
        busy.join().unwrap();
        assert_eq!(publisher.reclaim(), 0, "no reader left");
        assert_eq!(drops.load(Ordering::Relaxed), 2);
        drop(publisher);
        drop(registry);
        assert_eq!(drops.load(Ordering::Relaxed), 3);
    });
}

/// Registration (which is going online) on the reader's own thread, racing with publish
/// and reclaim; the publisher is dropped while the reader may still hold a retired
/// snapshot, which must then be freed with the last reader.
#[test]
fn register_races_with_reclaim_and_publisher_drop() {
    model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let (mut publisher, registry) = domain(&drops);
        let reader = thread::spawn(move || {
            let mut reader = registry.register().unwrap();
            reader.get().read();
            reader.quiescent();
            reader.get().read();
        });
        publisher.publish(Snap::new(1, &drops)).unwrap();
        publisher.reclaim();
        publisher.publish(Snap::new(2, &drops)).unwrap();
        drop(publisher);
        reader.join().unwrap();
        assert_eq!(drops.load(Ordering::Relaxed), 3);
    });
}

/// Recycling: the publisher takes back a reclaimed snapshot, rewrites it in place and
/// publishes it again while readers read and quiesce. Loom fails the model if the rewrite
/// is not ordered after every read of the old contents (the same condition as a free),
/// and readers must see the rewritten value whole, through the publish, never a torn or
/// older one after a newer.
#[test]
fn recycle_rewrite_and_republish() {
    model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let (mut publisher, registry) = domain(&drops);
        publisher.set_recycle_max(1);
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let mut reader = registry.register().unwrap();
                thread::spawn(move || {
                    let first = reader.get().read();
                    reader.quiescent();
                    let second = reader.get().read();
                    reader.quiescent();
                    let third = reader.get().read();
                    assert!(first <= second && second <= third);
                })
            })
            .collect();
        publisher.publish(Snap::new(1, &drops)).unwrap();
        publisher.publish(Snap::new(2, &drops)).unwrap();
        publisher.reclaim();
        if let Some(snap) = publisher.take_reclaimed() {
            // SAFETY: the publisher owns the box; loom checks this write against the
            // readers' earlier reads of the same snapshot.
            snap.value.with_mut(|p| unsafe { *p = 3 });
            publisher.publish_box(snap).unwrap();
        }
        for reader in readers {
            reader.join().unwrap();
        }
        publisher.reclaim();
        drop(publisher);
        drop(registry);
        assert_eq!(
            drops.load(Ordering::Relaxed),
            3,
            "each snapshot dropped once"
        );
    });
}
