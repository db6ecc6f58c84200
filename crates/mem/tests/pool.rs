//! Pool behaviour on unregistered threads and on lcores: exhaustion, return on drop,
//! bulk fills, zero-copy addresses, config errors, teardown with buffers out.
//!
//! Lcore ids are process-wide, so each test here uses its own.

use ibpoll_mem::{
    register_lcore, Error, HugepagePolicy, Mbuf, Mempool, MempoolConfig, HUGEPAGE_SIZE,
};

fn small(name: &str, n_bufs: u32, cache_size: u32) -> Mempool {
    Mempool::new(MempoolConfig {
        data_room: 256,
        cache_size,
        ..MempoolConfig::new(name, n_bufs)
    })
    .expect("pool")
}

fn exhaust(pool: &Mempool) {
    let all: Vec<Mbuf> = (0..pool.capacity())
        .map(|_| pool.alloc().expect("buffer"))
        .collect();
    assert_eq!(pool.in_use(), pool.capacity());
    assert_eq!(pool.available(), 0);
    assert_eq!(pool.stats().alloc_fail, 0);
    assert!(pool.alloc().is_none());
    assert!(pool.alloc().is_none());
    assert_eq!(pool.stats().alloc_fail, 2);
    let mut burst: [Option<Mbuf>; 4] = Default::default();
    assert_eq!(pool.alloc_bulk(&mut burst), 0);
    assert_eq!(pool.stats().alloc_fail, 6);
    drop(all);
    assert_eq!(pool.in_use(), 0);
    assert_eq!(pool.available(), pool.capacity());
}

#[test]
fn exhaustion_unregistered() {
    let pool = small("exhaust-unreg", 8, 4);
    exhaust(&pool);
}

#[test]
fn exhaustion_on_lcore() {
    let _g = register_lcore(1).unwrap();
    let pool = small("exhaust-lcore", 8, 4);
    exhaust(&pool);
    // Buffers freed on this lcore wait in its cache (flush threshold 6), the rest in the
    // backend; all of them count as available.
    let s = pool.stats();
    assert_eq!(s.cached + s.backend, 8);
    assert!(s.cached > 0);
    pool.flush_cache();
    assert_eq!(pool.stats().cached, 0);
    assert_eq!(pool.stats().backend, 8);
}

#[test]
fn exhaustion_no_cache() {
    let _g = register_lcore(2).unwrap();
    let pool = small("exhaust-nocache", 3, 0);
    exhaust(&pool);
    assert_eq!(pool.stats().cached, 0);
}

#[test]
fn return_on_drop_and_reset_on_alloc() {
    let pool = small("drop", 4, 0);
    let mut m = pool.alloc().unwrap();
    assert_eq!(pool.in_use(), 1);
    assert_eq!(m.headroom(), 128);
    assert_eq!(m.len(), 0);
    assert!(m.is_empty());
    assert_eq!(m.tailroom(), 256);
    assert_eq!(m.buf_len(), pool.buf_len());
    m.append(10).unwrap().fill(7);
    m.meta_mut().user = 99;
    m.meta_mut().flags = ibpoll_mem::MBUF_F_GRH;
    let index = m.index();
    drop(m);
    assert_eq!(pool.in_use(), 0);
    // The same buffer comes back (LIFO backend), reset.
    let m = pool.alloc().unwrap();
    assert_eq!(m.index(), index);
    assert_eq!(m.len(), 0);
    assert_eq!(m.data_offset(), 128);
    assert_eq!(*m.meta(), ibpoll_mem::MbufMeta::default());
}

#[test]
fn alloc_bulk_fills_none_slots_partially() {
    for lcore in [None, Some(3)] {
        let _g = lcore.map(|id| register_lcore(id).unwrap());
        let pool = small("bulk", 5, 2);
        let keep = pool.alloc().unwrap();
        let keep_index = keep.index();
        let mut out: [Option<Mbuf>; 6] = Default::default();
        out[1] = Some(keep);
        // 4 buffers left for 5 empty slots: slots 0, 2, 3, 4 filled, slot 5 short.
        assert_eq!(pool.alloc_bulk(&mut out), 4);
        assert_eq!(out[1].as_ref().unwrap().index(), keep_index);
        assert!(out[..5].iter().all(Option::is_some));
        assert!(out[5].is_none());
        assert_eq!(pool.stats().alloc_fail, 1);
        assert_eq!(pool.in_use(), 5);
        // Nothing to fill: no failure counted.
        assert_eq!(pool.alloc_bulk(&mut out[..5]), 0);
        assert_eq!(pool.stats().alloc_fail, 1);
        let mut idx: Vec<u32> = out[..5]
            .iter()
            .map(|m| m.as_ref().unwrap().index())
            .collect();
        idx.sort_unstable();
        idx.dedup();
        assert_eq!(idx.len(), 5, "every buffer handed out once");
        out.iter_mut().for_each(|s| drop(s.take()));
        assert_eq!(pool.in_use(), 0);
    }
}

#[test]
fn bulk_bigger_than_cache_uses_backend() {
    let _g = register_lcore(4).unwrap();
    let pool = small("bulk-big", 64, 4);
    let mut out: Vec<Option<Mbuf>> = (0..40).map(|_| None).collect();
    assert_eq!(pool.alloc_bulk(&mut out), 40);
    assert_eq!(pool.in_use(), 40);
    drop(out);
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn buffers_are_distinct_aligned_and_in_region() {
    let pool = small("zero-copy", 100, 0);
    let region = pool.region();
    assert_eq!(region.addr % HUGEPAGE_SIZE, 0);
    assert_eq!(region.len % HUGEPAGE_SIZE, 0);
    let mut bufs: Vec<Mbuf> = (0..100).map(|_| pool.alloc().unwrap()).collect();
    let mut addrs: Vec<usize> = bufs.iter().map(Mbuf::buf_addr).collect();
    addrs.sort_unstable();
    for w in addrs.windows(2) {
        assert!(w[1] - w[0] >= pool.buf_len(), "buffers overlap");
    }
    for m in &mut bufs {
        assert_eq!(m.buf_addr() % 64, 0);
        assert!(region.contains(m.buf_addr(), m.buf_len()));
        assert_eq!(m.buf().as_ptr() as usize, m.buf_addr());
        assert_eq!(m.data().as_ptr() as usize, m.buf_addr() + m.data_offset());
        let tag = m.index() as u8;
        m.buf_mut().fill(tag);
    }
    for m in &bufs {
        assert!(
            m.buf().iter().all(|&b| b == m.index() as u8),
            "buffer written through another"
        );
    }
}

/// Each buffer sits right behind its 64-byte header (`into_raw` is the header's address),
/// elements are a whole number of cache lines apart, and writing a whole buffer leaves
/// every header (the next element's included) intact.
#[test]
fn header_is_next_to_its_buffer() {
    for (headroom, data_room) in [(128, 256), (44, 1), (64, 2048), (100, 30)] {
        let pool = Mempool::new(MempoolConfig {
            headroom,
            data_room,
            cache_size: 0,
            hugepages: HugepagePolicy::Never,
            ..MempoolConfig::new("contiguous", 50)
        })
        .unwrap();
        let region = pool.region();
        let stride = (64 + headroom + data_room).div_ceil(64) as usize * 64;
        let addrs: Vec<(usize, usize)> = (0..50)
            .map(|_| {
                let m = pool.alloc().unwrap();
                (m.buf_addr(), m.into_raw())
            })
            .collect();
        let mut bufs = Vec::new();
        for (i, &(addr, raw)) in addrs.iter().enumerate() {
            assert_eq!(raw + 64, addr, "header + 64 == buf_addr");
            // Element i at base + i * stride: header and data in one contiguous element.
            assert_eq!(raw, region.addr + i * stride);
            // SAFETY: `raw` comes from `into_raw` and is used once.
            let mut m = unsafe { Mbuf::from_raw(raw) };
            assert_eq!(m.index() as usize, i);
            assert!(region.contains(raw, 64 + m.buf_len()));
            m.meta_mut().user = 0x1000 + i as u64;
            m.set_data(0, 0);
            bufs.push(m);
        }
        for m in &mut bufs {
            m.buf_mut().fill(0xee);
        }
        for (i, m) in bufs.iter().enumerate() {
            assert_eq!(m.meta().user, 0x1000 + i as u64, "header {i} overwritten");
            assert_eq!((m.data_offset(), m.len()), (0, 0));
            assert!(m.buf().iter().all(|&b| b == 0xee));
        }
        drop(bufs);
        assert_eq!(pool.in_use(), 0);
    }
}

#[test]
fn into_raw_round_trip() {
    let pool = small("raw", 2, 0);
    let mut m = pool.alloc().unwrap();
    m.append(3).unwrap().copy_from_slice(b"abc");
    let addr = m.buf_addr();
    let raw = m.into_raw();
    assert_eq!(pool.in_use(), 1);
    // SAFETY: `raw` comes from `into_raw` and is used once.
    let m = unsafe { Mbuf::from_raw(raw) };
    assert_eq!(m.buf_addr(), addr);
    assert_eq!(m.data(), b"abc");
    drop(m);
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn clones_share_the_pool() {
    let pool = small("clones", 4, 0);
    let other = pool.clone();
    let m = other.alloc().unwrap();
    assert_eq!(pool.in_use(), 1);
    drop(other);
    drop(m);
    assert_eq!(pool.in_use(), 0);
    assert_eq!(pool.name(), "clones");
}

#[test]
fn mbuf_sizes() {
    assert_eq!(std::mem::size_of::<Mbuf>(), 8);
    assert_eq!(std::mem::size_of::<Option<Mbuf>>(), 8);
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Mbuf>();
    send_sync::<Mempool>();
}

fn bad(cfg: MempoolConfig) -> (&'static str, String) {
    match Mempool::new(cfg) {
        Err(e @ Error::BadConfig { field, .. }) => (field, e.to_string()),
        other => panic!("expected BadConfig, got {other:?}"),
    }
}

#[test]
fn config_errors_are_typed() {
    let base = MempoolConfig::new("cfg", 16);
    let (f, msg) = bad(MempoolConfig {
        n_bufs: 0,
        ..base.clone()
    });
    assert_eq!(f, "n_bufs");
    assert!(
        msg.contains("\"cfg\"") && msg.contains("at least 1"),
        "{msg}"
    );
    let (f, msg) = bad(MempoolConfig {
        headroom: 43,
        ..base.clone()
    });
    assert_eq!(f, "headroom");
    assert!(msg.contains(">= 44") && msg.contains("GRH"), "{msg}");
    assert_eq!(
        bad(MempoolConfig {
            headroom: 1 << 20,
            ..base.clone()
        })
        .0,
        "headroom"
    );
    assert_eq!(
        bad(MempoolConfig {
            data_room: 0,
            ..base.clone()
        })
        .0,
        "data_room"
    );
    assert_eq!(
        bad(MempoolConfig {
            data_room: u32::MAX - 100,
            ..base.clone()
        })
        .0,
        "data_room"
    );
    assert_eq!(
        bad(MempoolConfig {
            n_bufs: u32::MAX,
            ..base.clone()
        })
        .0,
        "n_bufs"
    );
    assert_eq!(
        bad(MempoolConfig {
            cache_size: 513,
            n_bufs: 1024,
            ..base.clone()
        })
        .0,
        "cache_size"
    );
    assert_eq!(
        bad(MempoolConfig {
            cache_size: 17,
            ..base.clone()
        })
        .0,
        "cache_size"
    );
    // 16 M buffers of 1 MiB: 16 TiB.
    let (f, msg) = bad(MempoolConfig {
        n_bufs: 1 << 24,
        data_room: (1 << 20) - 128,
        ..base.clone()
    });
    assert_eq!(f, "n_bufs");
    assert!(msg.contains("1 TiB"), "{msg}");
    // The smallest legal pool works.
    let p = Mempool::new(MempoolConfig {
        n_bufs: 1,
        headroom: 44,
        data_room: 1,
        cache_size: 1,
        hugepages: HugepagePolicy::Never,
        ..base
    })
    .unwrap();
    assert_eq!(p.buf_len(), 45);
    assert!(!p.region().hugepages);
}

#[test]
fn mmap_failure_is_typed() {
    // Only where the kernel refuses a mapping far beyond RAM + swap at mmap time.
    let overcommit = std::fs::read_to_string("/proc/sys/vm/overcommit_memory").unwrap_or_default();
    if !matches!(overcommit.trim(), "0" | "2") {
        eprintln!("skipped: vm.overcommit_memory = {overcommit:?} would accept a 512 GiB mapping");
        return;
    }
    // Legal config, but 512 GiB cannot be populated on a test machine.
    let r = Mempool::new(MempoolConfig {
        n_bufs: 1 << 19,
        data_room: (1 << 20) - 128,
        cache_size: 0,
        hugepages: HugepagePolicy::Never,
        ..MempoolConfig::new("huge", 1)
    });
    match r {
        Err(Error::Mmap {
            len, ref source, ..
        }) => {
            assert!(len >= 1 << 39);
            assert!(source.raw_os_error().is_some());
        }
        Ok(_) => eprintln!("skipped: this machine mapped 512 GiB"),
        Err(e) => panic!("expected Mmap, got {e:?}"),
    }
}

#[test]
fn pool_dropped_while_mbuf_alive_is_sound() {
    let pool = small("orphan", 4, 2);
    let mut m = pool.alloc().unwrap();
    m.append(5).unwrap().copy_from_slice(b"hello");
    let region = pool.region();
    drop(pool); // logs an error and leaks the pool
                // The buffer is still ours and still mapped.
    assert!(region.contains(m.buf_addr(), m.buf_len()));
    assert_eq!(m.data(), b"hello");
    m.prepend(4).unwrap().copy_from_slice(b"IPoI");
    assert_eq!(m.data(), b"IPoIhello");
    drop(m); // returns into the leaked pool: no crash
}

#[test]
fn pool_dropped_while_mbuf_alive_on_other_thread() {
    let (tx, rx) = crossbeam::channel::bounded::<Mbuf>(1);
    let t = std::thread::spawn(move || {
        let _g = register_lcore(5).unwrap();
        let mut m = rx.recv().unwrap();
        m.data_mut().fill(1);
        drop(m); // into lcore 5's cache of a leaked pool
    });
    let pool = small("orphan-thread", 4, 2);
    let mut m = pool.alloc().unwrap();
    m.append(100).unwrap();
    drop(pool);
    tx.send(m).unwrap();
    t.join().unwrap();
}
