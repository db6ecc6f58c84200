//! Lcore registration and the per-lcore caches: id uniqueness, refill/flush in bulk,
//! flush on unregister, and buffers crossing threads without leaking.
//!
//! Lcore ids are process-wide, so each test here uses its own.

use std::sync::Barrier;
use std::thread;

use crossbeam::channel;
use ibpoll_mem::{current_lcore, register_lcore, Error, Mbuf, Mempool, MempoolConfig, MAX_LCORES};

fn pool(name: &str, n_bufs: u32, cache_size: u32) -> Mempool {
    Mempool::new(MempoolConfig {
        data_room: 512,
        cache_size,
        ..MempoolConfig::new(name, n_bufs)
    })
    .expect("pool")
}

#[test]
fn lcore_ids_are_unique() {
    assert!(matches!(
        register_lcore(MAX_LCORES),
        Err(Error::LcoreOutOfRange {
            lcore_id: 64,
            max: 64
        })
    ));
    assert_eq!(current_lcore(), None);
    let g = register_lcore(10).unwrap();
    assert_eq!(g.lcore_id(), 10);
    assert_eq!(current_lcore(), Some(10));
    // This thread cannot take a second id.
    match register_lcore(11) {
        Err(
            e @ Error::ThreadAlreadyRegistered {
                lcore_id: 11,
                current: 10,
            },
        ) => {
            assert!(e.to_string().contains("already registered as lcore 10"))
        }
        other => panic!("{other:?}"),
    }
    // Another thread cannot take ours, but can take a free one.
    thread::scope(|s| {
        s.spawn(|| {
            match register_lcore(10) {
                Err(e @ Error::LcoreTaken { lcore_id: 10 }) => {
                    assert!(e.to_string().contains("another thread"))
                }
                other => panic!("{other:?}"),
            }
            assert_eq!(current_lcore(), None);
            let g = register_lcore(11).unwrap();
            assert_eq!(current_lcore(), Some(11));
            drop(g);
            assert_eq!(current_lcore(), None);
        });
    });
    drop(g);
    assert_eq!(current_lcore(), None);
    // Released ids can be taken again, by any thread.
    thread::spawn(|| register_lcore(10).map(drop).unwrap())
        .join()
        .unwrap();
    let g = register_lcore(10).unwrap();
    drop(g);
}

#[test]
fn racing_registrations_get_one_winner() {
    for _ in 0..20 {
        let barrier = Barrier::new(4);
        let wins: usize = thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        let r = register_lcore(12);
                        // Hold the id until everyone has tried.
                        barrier.wait();
                        usize::from(r.is_ok())
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(wins, 1);
    }
}

#[test]
fn cache_refills_and_flushes_in_bulk() {
    let _g = register_lcore(20).unwrap();
    // cache_size 8: refill to 4, flush threshold 12, flush down to 4.
    let p = pool("bulk-moves", 64, 8);
    let m = p.alloc().unwrap();
    let s = p.stats();
    assert_eq!(s.backend_refills, 1);
    assert_eq!((s.in_use, s.cached, s.backend), (1, 3, 60));
    // Allocating and freeing within the cache touches the backend no more.
    for _ in 0..100 {
        let a = p.alloc().unwrap();
        let b = p.alloc().unwrap();
        drop((a, b));
    }
    assert_eq!(p.stats().backend_refills, 1);
    assert_eq!(p.stats().backend_flushes, 0);
    drop(m);
    // 32 out, then back: refills on the way out, a flush once the cache holds 12.
    let out: Vec<Mbuf> = (0..32).map(|_| p.alloc().unwrap()).collect();
    let refills = p.stats().backend_refills;
    assert!(refills > 1);
    drop(out);
    let s = p.stats();
    assert!(s.backend_flushes >= 1);
    assert!(s.cached <= 12, "{s:?}");
    assert_eq!(s.in_use, 0);
    assert_eq!(s.cached + s.backend, 64);
}

#[test]
fn unregister_flushes_every_pool() {
    let a = pool("flush-a", 32, 8);
    let b = pool("flush-b", 32, 8);
    thread::scope(|s| {
        s.spawn(|| {
            let _g = register_lcore(21).unwrap();
            drop((a.alloc().unwrap(), b.alloc().unwrap()));
            assert!(a.stats().cached > 0 && b.stats().cached > 0);
        });
    });
    for p in [&a, &b] {
        let s = p.stats();
        assert_eq!((s.cached, s.backend, s.in_use), (0, 32, 0), "{s:?}");
    }
}

#[test]
fn cached_buffers_of_a_dropped_pool_are_home() {
    // A pool whose buffers sit in an lcore cache when its last handle goes is freed,
    // not leaked; the lcore's later unregister must not touch it.
    let g = register_lcore(22).unwrap();
    let p = pool("cached-drop", 16, 8);
    drop(p.alloc().unwrap());
    assert!(p.stats().cached > 0);
    drop(p);
    drop(g);
}

/// Producers on lcores allocate, fill and send; consumers (some registered, some not)
/// check and drop. The pool is smaller than the traffic, so buffers recycle across
/// threads through caches and backend; at the end everything is home.
#[test]
fn no_leak_across_threads() {
    const PRODUCERS: usize = 4;
    const PER_PRODUCER: usize = 20_000;
    let p = pool("threads", 1024, 32);
    let (tx, rx) = channel::bounded::<Mbuf>(256);
    thread::scope(|s| {
        for id in 0..PRODUCERS {
            let (p, tx) = (p.clone(), tx.clone());
            s.spawn(move || {
                let _g = register_lcore(30 + id).unwrap();
                let mut sent = 0;
                let mut burst: [Option<Mbuf>; 8] = Default::default();
                while sent < PER_PRODUCER {
                    let n = p.alloc_bulk(&mut burst);
                    if n == 0 {
                        thread::yield_now();
                        continue;
                    }
                    for slot in burst.iter_mut() {
                        let Some(mut m) = slot.take() else { continue };
                        let tag = (id * PER_PRODUCER + sent) as u64;
                        m.append(8).unwrap().copy_from_slice(&tag.to_le_bytes());
                        m.meta_mut().user = tag;
                        m.meta_mut().queue = id as u16;
                        tx.send(m).unwrap();
                        sent += 1;
                    }
                }
            });
        }
        drop(tx);
        for c in 0..3 {
            let (p, rx) = (p.clone(), rx.clone());
            s.spawn(move || {
                // Consumers 0 and 1 are lcores, consumer 2 uses the backend.
                let _g = (c < 2).then(|| register_lcore(40 + c).unwrap());
                let mut got = 0usize;
                for m in rx.iter() {
                    assert_eq!(m.len(), 8);
                    assert_eq!(
                        u64::from_le_bytes(m.data().try_into().unwrap()),
                        m.meta().user
                    );
                    got += 1;
                    if got % 3 == 0 {
                        // Allocate on this side too (a copy), so buffers also leave
                        // from consumer caches and the backend.
                        if let Some(mut copy) = p.alloc() {
                            copy.append(8).unwrap().copy_from_slice(m.data());
                            drop(m);
                            assert_eq!(copy.len(), 8);
                        }
                    }
                }
            });
        }
    });
    let s = p.stats();
    assert_eq!(s.in_use, 0, "{s:?}");
    assert_eq!(s.cached, 0, "guards flushed their caches: {s:?}");
    assert_eq!(s.backend, 1024);
    assert_eq!(p.available(), p.capacity());
}
