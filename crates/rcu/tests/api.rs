//! Single-threaded contract tests: what publish, quiescent, offline and drop do to
//! reclamation, the bounds, and that every snapshot is dropped exactly once.
#![cfg(not(loom))]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use ibpoll_rcu::{Config, Error, Publisher, Reader, Registry};

/// A snapshot that counts its drops.
#[derive(Debug)]
struct Snap {
    id: u64,
    drops: Arc<AtomicUsize>,
}

impl Drop for Snap {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::Relaxed);
    }
}

struct Fixture {
    drops: Arc<AtomicUsize>,
    publisher: Publisher<Snap>,
    registry: Registry<Snap>,
}

impl Fixture {
    fn new(readers_max: usize, retired_max: usize) -> Self {
        let drops = Arc::new(AtomicUsize::new(0));
        let (publisher, registry) = ibpoll_rcu::with_config(
            Snap {
                id: 0,
                drops: drops.clone(),
            },
            Config {
                readers_max,
                retired_max,
            },
        )
        .expect("config is valid");
        Fixture {
            drops,
            publisher,
            registry,
        }
    }

    fn snap(&self, id: u64) -> Snap {
        Snap {
            id,
            drops: self.drops.clone(),
        }
    }

    fn publish(&mut self, id: u64) -> usize {
        let snap = self.snap(id);
        self.publisher.publish(snap).expect("retire list has room")
    }

    fn drops(&self) -> usize {
        self.drops.load(Ordering::Relaxed)
    }
}

#[test]
fn reader_sees_initial_then_published() {
    let mut f = Fixture::new(2, 8);
    let mut reader = f.registry.register().unwrap();
    assert_eq!(reader.get().id, 0);
    assert_eq!(f.publisher.current().id, 0);
    f.publish(1);
    assert_eq!(f.publisher.current().id, 1);
    // `get` sees the new pointer at once; quiescent only announces it.
    assert_eq!(reader.get().id, 1);
    reader.quiescent();
    assert_eq!(reader.token(), 1);
    assert_eq!(reader.get().id, 1);
}

#[test]
fn no_readers_frees_at_once() {
    let mut f = Fixture::new(2, 8);
    for id in 1..=10 {
        assert_eq!(f.publish(id), 0);
    }
    assert_eq!(f.drops(), 10);
    assert_eq!(f.publisher.stats().published, 10);
    assert_eq!(f.publisher.stats().reclaimed, 10);
}

#[test]
fn quiescing_reader_lets_old_snapshots_go() {
    let mut f = Fixture::new(2, 8);
    let mut reader = f.registry.register().unwrap();
    assert_eq!(
        f.publish(1),
        1,
        "reader registered at token 0 may hold snapshot 0"
    );
    reader.quiescent();
    assert_eq!(f.publisher.reclaim(), 0);
    assert_eq!(f.drops(), 1);
    // Without a new publish, quiescent changes nothing and nothing is pending.
    reader.quiescent();
    assert_eq!(f.publisher.pending(), 0);
}

#[test]
fn stalled_reader_holds_back_only_what_is_newer_than_its_token() {
    let mut f = Fixture::new(2, 16);
    let mut stalled = f.registry.register().unwrap();
    let mut busy = f.registry.register().unwrap();
    f.publish(1);
    f.publish(2);
    stalled.quiescent(); // last quiescent point: token 2
    for id in 3..=7 {
        f.publish(id);
        busy.quiescent();
    }
    // Retired at tokens 1..=7; the stalled reader has passed 1 and 2 only.
    assert_eq!(f.publisher.reclaim(), 5);
    assert_eq!(f.drops(), 2);
    for id in 8..=10 {
        assert_eq!(f.publish(id), 5 + (id as usize - 7), "pending grows");
    }
    stalled.quiescent();
    assert_eq!(f.publisher.reclaim(), 3, "busy last saw token 7");
    busy.quiescent();
    assert_eq!(f.publisher.reclaim(), 0);
    assert_eq!(f.drops(), 10);
}

#[test]
fn full_retire_list_hands_the_snapshot_back_then_recovers() {
    let mut f = Fixture::new(1, 4);
    let mut reader = f.registry.register().unwrap();
    for id in 1..=4 {
        assert_eq!(f.publish(id), id as usize);
    }
    let snap = f.snap(5);
    let full = f.publisher.publish(snap).unwrap_err();
    assert_eq!(full.retired_max(), 4);
    assert!(full.to_string().contains("Reader::quiescent"), "{full}");
    assert_eq!(f.publisher.stats().publish_full, 1);
    assert_eq!(f.publisher.pending(), 4, "bounded");
    assert_eq!(f.publisher.current().id, 4, "nothing was published");
    assert_eq!(reader.get().id, 4);
    let snap = full.into_snapshot();
    assert_eq!(snap.id, 5);
    reader.quiescent();
    assert_eq!(f.publisher.publish(snap).unwrap(), 1);
    assert_eq!(f.drops(), 4);
}

#[test]
fn offline_reader_does_not_block_reclamation() {
    let mut f = Fixture::new(2, 4);
    let reader = f.registry.register().unwrap();
    let offline = reader.offline();
    for id in 1..=20 {
        assert_eq!(f.publish(id), 0);
    }
    assert_eq!(f.drops(), 20);
    let mut reader = offline.online();
    assert_eq!(reader.token(), 20);
    assert_eq!(reader.get().id, 20);
    assert_eq!(
        f.publish(21),
        1,
        "online again: holds back what it may read"
    );
    reader.quiescent();
    assert_eq!(f.publisher.reclaim(), 0);
}

#[test]
fn offline_while_comes_back_online_even_after_a_panic() {
    let mut f = Fixture::new(1, 4);
    let mut reader = f.registry.register().unwrap();
    let pending = reader.offline_while(|| f.publish(1));
    assert_eq!(pending, 0, "offline during the publish");
    assert_eq!(reader.token(), 1, "online again at the current token");
    assert_eq!(f.publish(2), 1, "and holding back again");
    reader.quiescent();

    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        reader.offline_while(|| panic!("blocking call failed"))
    }));
    assert!(result.is_err());
    assert_eq!(f.publish(3), 1, "online again after the panic");
    assert_eq!(reader.get().id, 3);
}

#[test]
fn slots_exhausted_is_a_typed_error_and_slots_are_reused() {
    let f = Fixture::new(2, 4);
    let a = f.registry.register().unwrap();
    let b = f.registry.register().unwrap();
    assert_ne!(a.slot(), b.slot());
    assert_eq!(f.registry.registered(), 2);
    let err = f.registry.register().unwrap_err();
    assert_eq!(err, Error::ReadersExhausted { readers_max: 2 });
    assert!(err.to_string().contains("readers_max"), "{err}");
    let freed = a.slot();
    drop(a);
    let c = f.registry.register().unwrap();
    assert_eq!(c.slot(), freed);
    // An offline reader keeps its slot.
    let _c = c.offline();
    assert!(f.registry.register().is_err());
}

#[test]
fn bad_config_is_rejected_with_the_field_named() {
    for (readers_max, retired_max, field) in [
        (0, 4, "readers_max"),
        (65, 4, "readers_max"),
        (4, 0, "retired_max"),
    ] {
        let err = ibpoll_rcu::with_config(
            0u8,
            Config {
                readers_max,
                retired_max,
            },
        )
        .unwrap_err();
        match &err {
            Error::BadConfig { field: f, .. } => assert_eq!(*f, field),
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains(field), "{err}");
    }
    assert!(ibpoll_rcu::new(0u8, ibpoll_rcu::READERS_MAX).is_ok());
}

#[test]
fn all_slots_of_a_full_domain_work() {
    let (mut publisher, registry) = ibpoll_rcu::new(0u64, ibpoll_rcu::READERS_MAX).unwrap();
    let mut readers: Vec<Reader<u64>> = (0..ibpoll_rcu::READERS_MAX)
        .map(|_| registry.register().unwrap())
        .collect();
    assert!(registry.register().is_err());
    publisher.publish(1).unwrap();
    for reader in &mut readers[..63] {
        reader.quiescent();
    }
    assert_eq!(publisher.reclaim(), 1, "slot 63 holds it back");
    readers[63].quiescent();
    assert_eq!(publisher.reclaim(), 0);
}

#[test]
fn dropping_everything_frees_everything_publisher_first() {
    let mut f = Fixture::new(2, 8);
    let mut reader = f.registry.register().unwrap();
    for id in 1..=5 {
        f.publish(id);
    }
    assert_eq!(f.drops(), 0, "the reader holds all of them back");
    let Fixture {
        drops,
        publisher,
        registry,
    } = f;
    drop(publisher);
    assert_eq!(drops.load(Ordering::Relaxed), 0, "still held back");
    reader.quiescent();
    assert_eq!(
        reader.get().id,
        5,
        "readers keep working without a publisher"
    );
    let late = registry.register().unwrap();
    drop(registry);
    drop(reader);
    assert_eq!(drops.load(Ordering::Relaxed), 0, "a reader is left");
    drop(late);
    assert_eq!(drops.load(Ordering::Relaxed), 6, "5 retired + current");
}

#[test]
fn dropping_everything_frees_everything_readers_first() {
    let mut f = Fixture::new(2, 8);
    let reader = f.registry.register().unwrap();
    for id in 1..=5 {
        f.publish(id);
    }
    drop(reader);
    assert_eq!(f.publisher.pending(), 5, "reclaim has not run since");
    let drops = f.drops.clone();
    drop(f);
    assert_eq!(drops.load(Ordering::Relaxed), 6);
}

#[test]
fn handles_are_send_and_registry_is_sync() {
    fn send<S: Send>() {}
    fn send_sync<S: Send + Sync>() {}
    send::<Reader<Snap>>();
    send::<ibpoll_rcu::OfflineReader<Snap>>();
    send::<Publisher<Snap>>();
    send_sync::<Registry<Snap>>();
}

#[test]
fn recycled_snapshots_come_back_newest_first_and_only_once_readers_moved_on() {
    let mut f = Fixture::new(2, 8);
    f.publisher.set_recycle_max(2);
    let mut reader = f.registry.register().unwrap();
    f.publish(1);
    f.publish(2);
    f.publish(3);
    assert!(
        f.publisher.take_reclaimed().is_none(),
        "the reader may hold 0, 1 and 2"
    );
    assert_eq!(f.publisher.pending_oldest().map(|s| s.id), Some(0));
    reader.quiescent();
    assert_eq!(f.publisher.reclaim(), 0);
    assert_eq!(f.publisher.pending_oldest().map(|s| s.id), None);
    // Three reclaimed, two kept (the newest); the oldest was dropped.
    assert_eq!(f.drops(), 1);
    assert_eq!(f.publisher.stats().reclaimed, 3);
    assert_eq!(f.publisher.stats().recycled, 3);
    let mut newest = f.publisher.take_reclaimed().expect("kept");
    assert_eq!(newest.id, 2);
    // Rewritten in place and published again: no allocation, readers see the new value.
    newest.id = 4;
    assert_eq!(f.publisher.publish_box(newest).expect("room"), 1);
    assert_eq!(reader.get().id, 4);
    assert_eq!(f.publisher.take_reclaimed().map(|s| s.id), Some(1));
    assert!(f.publisher.take_reclaimed().is_none());
    assert_eq!(f.drops(), 2, "taken and dropped by the test");
    drop(reader);
    drop(f.publisher);
    drop(f.registry);
    // Snapshots 0, 1, 2 (rewritten as 4) and 3: each dropped once.
    assert_eq!(f.drops.load(Ordering::Relaxed), 4);
}

#[test]
fn publish_box_hands_the_box_back_when_full() {
    let mut f = Fixture::new(1, 1);
    f.publisher.set_recycle_max(1);
    let _stalled = f.registry.register().unwrap();
    f.publish(1);
    let full = f
        .publisher
        .publish_box(Box::new(f.snap(2)))
        .expect_err("retire list full");
    assert_eq!(full.retired_max(), 1);
    assert_eq!(full.into_snapshot().id, 2);
    assert_eq!(f.publisher.stats().publish_full, 1);
}
