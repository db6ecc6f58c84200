//! Real threads: continuous publishing under concurrent readers that check every snapshot
//! they read is intact; every snapshot is freed by the end.
#![cfg(not(loom))]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;

use ibpoll_rcu::{Config, Publisher, Reader};

const WORDS: usize = 16;
const POISON: u64 = 0xdead_dead_dead_dead;

/// A snapshot whose contents a reader can check, and whose drop poisons them (so a
/// use-after-free shows as a failed check even without ASan) and counts.
struct Table {
    id: u64,
    words: Box<[u64; WORDS]>,
    drops: Arc<AtomicUsize>,
}

impl Table {
    fn new(id: u64, drops: &Arc<AtomicUsize>) -> Self {
        let mut words = Box::new([0u64; WORDS]);
        for (i, w) in words.iter_mut().enumerate() {
            *w = id.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ i as u64;
        }
        Table {
            id,
            words,
            drops: drops.clone(),
        }
    }

    fn check(&self) -> u64 {
        assert_ne!(self.id, POISON, "read a freed snapshot");
        for (i, w) in self.words.iter().enumerate() {
            assert_eq!(
                *w,
                self.id.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ i as u64,
                "snapshot {} torn or freed",
                self.id
            );
        }
        self.id
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        self.id = POISON;
        self.words.fill(POISON);
        self.drops.fetch_add(1, Ordering::Relaxed);
    }
}

/// Publishes `count` tables, retrying (after a reclaim) when the retire list is full.
fn publish_all(publisher: &mut Publisher<Table>, drops: &Arc<AtomicUsize>, count: u64) {
    for id in 1..=count {
        let mut table = Table::new(id, drops);
        loop {
            match publisher.publish(table) {
                Ok(_) => break,
                Err(full) => {
                    table = full.into_snapshot();
                    thread::yield_now();
                }
            }
        }
    }
}

/// A data core: quiescent + one get per "burst", several reads of the snapshot per burst.
fn poll_loop(mut reader: Reader<Table>, stop: &AtomicBool, offline_every: Option<u64>) -> u64 {
    let mut last = 0;
    let mut iterations = 0u64;
    while !stop.load(Ordering::Relaxed) {
        reader.quiescent();
        let table = reader.get();
        for _ in 0..4 {
            let id = table.check();
            assert!(id >= last, "snapshots went backwards: {id} after {last}");
            last = id;
        }
        iterations += 1;
        if let Some(every) = offline_every {
            if iterations % every == 0 {
                // Idle for a moment, as a core with nothing to do would.
                let offline = reader.offline();
                thread::yield_now();
                reader = offline.online();
            }
        }
        if iterations % 64 == 0 {
            // Two cores shared by everyone: let the publisher run.
            thread::yield_now();
        }
    }
    iterations
}

fn run(readers: usize, offline_every: Option<u64>, publishes: u64, retired_max: usize) {
    let drops = Arc::new(AtomicUsize::new(0));
    let (mut publisher, registry) = ibpoll_rcu::with_config(
        Table::new(0, &drops),
        Config {
            readers_max: readers,
            retired_max,
        },
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(readers + 1));
    let handles: Vec<_> = (0..readers)
        .map(|i| {
            let reader = registry.register().unwrap();
            let stop = stop.clone();
            let start = start.clone();
            // The last reader idles now and then.
            let offline_every = if i + 1 == readers {
                offline_every
            } else {
                None
            };
            thread::spawn(move || {
                start.wait();
                poll_loop(reader, &stop, offline_every)
            })
        })
        .collect();
    start.wait();
    publish_all(&mut publisher, &drops, publishes);
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        assert!(h.join().expect("reader panicked") > 0);
    }
    assert_eq!(registry.registered(), 0);
    assert_eq!(
        publisher.reclaim(),
        0,
        "no reader left: everything reclaimable"
    );
    assert_eq!(drops.load(Ordering::Relaxed) as u64, publishes);
    assert_eq!(publisher.stats().reclaimed, publishes);
    drop(publisher);
    drop(registry);
    assert_eq!(drops.load(Ordering::Relaxed) as u64, publishes + 1);
}

#[test]
fn continuous_publishing_two_readers() {
    run(2, None, 20_000, 8);
}

#[test]
fn continuous_publishing_three_readers_one_going_offline() {
    run(3, Some(16), 20_000, 8);
}

#[test]
fn continuous_publishing_small_retire_list() {
    run(3, Some(7), 5_000, 1);
}

/// A reader thread that stops quiescing holds back exactly what is newer than its last
/// token, the bound holds, and reclamation resumes once it quiesces again.
#[test]
fn stalled_reader_thread_blocks_then_releases() {
    let drops = Arc::new(AtomicUsize::new(0));
    let (mut publisher, registry) = ibpoll_rcu::with_config(
        Table::new(0, &drops),
        Config {
            readers_max: 2,
            retired_max: 16,
        },
    )
    .unwrap();
    let reader = registry.register().unwrap();
    let (to_reader, from_main) = std::sync::mpsc::channel::<()>();
    let (to_main, from_reader) = std::sync::mpsc::channel::<u64>();
    let handle = thread::spawn(move || {
        let mut reader = reader;
        reader.quiescent();
        to_main.send(reader.get().check()).unwrap();
        // Stalled: no quiescent point until told.
        from_main.recv().unwrap();
        reader.quiescent();
        to_main.send(reader.get().check()).unwrap();
        from_main.recv().unwrap();
    });
    assert_eq!(from_reader.recv().unwrap(), 0);
    let mut full = 0;
    for id in 1..=40 {
        match publisher.publish(Table::new(id, &drops)) {
            Ok(pending) => assert!(pending <= 16),
            Err(_) => full += 1,
        }
    }
    assert_eq!(publisher.pending(), 16, "bounded at retired_max");
    assert_eq!(full, 24);
    assert_eq!(drops.load(Ordering::Relaxed), 24, "the refused ones only");
    to_reader.send(()).unwrap();
    assert_eq!(from_reader.recv().unwrap(), 16);
    assert_eq!(publisher.reclaim(), 0, "resumed once the reader quiesced");
    to_reader.send(()).unwrap();
    handle.join().unwrap();
    drop(publisher);
    drop(registry);
    assert_eq!(drops.load(Ordering::Relaxed), 41);
}
