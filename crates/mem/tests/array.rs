//! `MbufArray` order semantics, bulk alloc into it, bulk free out of it (every buffer
//! home again, mixed pools, cache flushes on the way), and the `LcoreMem` handle.
//!
//! Lcore ids are process-wide, so each test here uses its own.

use ibpoll_mem::{register_lcore, HugepagePolicy, Mbuf, MbufArray, Mempool, MempoolConfig};

fn pool(name: &str, n_bufs: u32, cache_size: u32) -> Mempool {
    Mempool::new(MempoolConfig {
        data_room: 128,
        cache_size,
        hugepages: HugepagePolicy::Never,
        ..MempoolConfig::new(name, n_bufs)
    })
    .expect("pool")
}

/// An array of `n` buffers tagged 0..n (`meta.user`), front to back.
fn tagged(p: &Mempool, n: usize, cap: usize) -> MbufArray {
    let mut a = MbufArray::with_capacity(cap);
    assert_eq!(p.alloc_bulk_into(&mut a, n), n);
    for (i, m) in a.as_mut_slice().iter_mut().enumerate() {
        m.meta_mut().user = i as u64;
    }
    a
}

fn tags(a: &MbufArray) -> Vec<u64> {
    a.as_slice().iter().map(|m| m.meta().user).collect()
}

fn tag(m: &Mbuf) -> u64 {
    m.meta().user
}

#[test]
fn push_pop_index_and_capacity() {
    let p = pool("order", 8, 0);
    let mut a = MbufArray::with_capacity(3);
    assert_eq!((a.len(), a.capacity(), a.room()), (0, 3, 3));
    assert!(a.is_empty() && !a.is_full());
    assert!(a.pop().is_none());
    for t in 0..3 {
        let mut m = p.alloc().unwrap();
        m.meta_mut().user = t;
        a.push(m).unwrap();
    }
    assert!(a.is_full() && a.room() == 0);
    let mut extra = p.alloc().unwrap();
    extra.meta_mut().user = 99;
    let back = a.push(extra).unwrap_err();
    assert_eq!(tag(&back), 99, "a full array gives the buffer back");
    drop(back);
    assert_eq!(tags(&a), [0, 1, 2]);
    assert_eq!(tag(&a[1]), 1);
    a[1].meta_mut().user = 11;
    assert_eq!(tag(a.get(1).unwrap()), 11);
    a.get_mut(2).unwrap().meta_mut().user = 22;
    assert!(a.get(3).is_none() && a.get_mut(3).is_none());
    assert_eq!(tag(&a.pop().unwrap()), 22);
    assert_eq!(tags(&a), [0, 11]);
    assert_eq!(p.in_use(), 2);
    let dbg = format!("{a:?}");
    assert!(
        dbg.contains("len: 2") && dbg.contains("capacity: 3"),
        "{dbg}"
    );
}

#[test]
fn swap_remove_and_take() {
    let p = pool("remove", 8, 0);
    let mut a = tagged(&p, 6, 8);
    // swap_remove: the last moves into the hole.
    assert_eq!(tag(&a.swap_remove(1)), 1);
    assert_eq!(tags(&a), [0, 5, 2, 3, 4]);
    // The last one itself.
    assert_eq!(tag(&a.swap_remove(4)), 4);
    assert_eq!(tags(&a), [0, 5, 2, 3]);
    // take: order kept.
    assert_eq!(tag(&a.take(1)), 5);
    assert_eq!(tags(&a), [0, 2, 3]);
    assert_eq!(tag(&a.take(2)), 3);
    assert_eq!(tags(&a), [0, 2]);
    assert_eq!(p.in_use(), 2);
}

#[test]
#[should_panic(expected = "index 2 out of range for length 2")]
fn swap_remove_out_of_range_panics() {
    let p = pool("remove-oob", 4, 0);
    let mut a = tagged(&p, 2, 4);
    a.swap_remove(2);
}

#[test]
#[should_panic(expected = "index 0 out of range for length 0")]
fn take_out_of_range_panics() {
    let mut a = MbufArray::with_capacity(4);
    a.take(0);
}

#[test]
fn drain_front_partial_consumption() {
    let p = pool("drain", 16, 0);
    let mut a = tagged(&p, 8, 8);
    // Ask for 5, consume 3: the 2 not yielded stay, in front of the rest.
    let mut d = a.drain_front(5);
    assert_eq!(d.len(), 5);
    let got: Vec<u64> = d.by_ref().take(3).map(|m| tag(&m)).collect();
    assert_eq!(got, [0, 1, 2]);
    assert_eq!(d.len(), 2);
    drop(d);
    assert_eq!(tags(&a), [3, 4, 5, 6, 7]);
    assert_eq!(p.in_use(), 5, "the 3 consumed were dropped by the consumer");
    // Consume all asked for.
    let got: Vec<u64> = a.drain_front(2).map(|m| tag(&m)).collect();
    assert_eq!(got, [3, 4]);
    assert_eq!(tags(&a), [5, 6, 7]);
    // More than held: clamped.
    let mut kept = MbufArray::with_capacity(8);
    for m in a.drain_front(100) {
        kept.push(m).unwrap();
    }
    assert!(a.is_empty());
    assert_eq!(tags(&kept), [5, 6, 7]);
    // Nothing consumed: nothing changes.
    drop(kept.drain_front(3));
    assert_eq!(tags(&kept), [5, 6, 7]);
    // The array is usable afterwards: room is back.
    assert_eq!(p.alloc_bulk_into(&mut kept, 10), 5);
    assert!(kept.is_full());
}

#[test]
fn truncate_clear_and_drop_free_in_bulk() {
    for lcore in [None, Some(50)] {
        let _g = lcore.map(|id| register_lcore(id).unwrap());
        let p = pool("bulk-free", 64, 8);
        let mut a = tagged(&p, 40, 64);
        assert_eq!(p.in_use(), 40);
        a.truncate(50);
        assert_eq!(a.len(), 40, "truncate past the end is a no-op");
        a.truncate(30);
        assert_eq!(p.in_use(), 30);
        assert_eq!(tags(&a), (0..30).collect::<Vec<_>>());
        a.clear();
        assert!(a.is_empty());
        assert_eq!(p.in_use(), 0);
        // 40 frees into a cache that flushes at 12: several flushes inside one call.
        let flushes = p.stats().backend_flushes;
        let a = tagged(&p, 40, 64);
        drop(a);
        assert_eq!(p.in_use(), 0);
        let s = p.stats();
        if lcore.is_some() {
            assert!(s.backend_flushes >= flushes + 3, "{s:?}");
            assert!(s.cached <= 12, "{s:?}");
        } else {
            assert_eq!(s.cached, 0, "{s:?}");
        }
        assert_eq!(s.cached + s.backend, 64);
    }
}

#[test]
fn mixed_pools_in_one_array() {
    for lcore in [None, Some(51)] {
        let _g = lcore.map(|id| register_lcore(id).unwrap());
        let a = pool("mixed-a", 32, 4);
        let b = pool("mixed-b", 32, 0); // no caches: its runs go to the backend
        let c = pool("mixed-c", 32, 8);
        let mut arr = MbufArray::with_capacity(32);
        // Runs: a a b c c c a b b a, then a long run of c.
        for p in [&a, &a, &b, &c, &c, &c, &a, &b, &b, &a] {
            arr.push(p.alloc().unwrap()).unwrap();
        }
        assert_eq!(c.alloc_bulk_into(&mut arr, 20), 20);
        let ids: Vec<u16> = arr.as_slice().iter().map(Mbuf::pool_id).collect();
        assert_eq!(ids[..4], [a.id(), a.id(), b.id(), c.id()]);
        assert_eq!((a.in_use(), b.in_use(), c.in_use()), (4, 3, 23));
        arr.truncate(5);
        assert_eq!((a.in_use(), b.in_use(), c.in_use()), (2, 1, 2));
        drop(arr);
        for p in [&a, &b, &c] {
            let s = p.stats();
            assert_eq!(
                (s.in_use, s.cached + s.backend),
                (0, 32),
                "{}: {s:?}",
                p.name()
            );
        }
    }
}

#[test]
fn alloc_bulk_into_limits() {
    for lcore in [None, Some(52)] {
        let _g = lcore.map(|id| register_lcore(id).unwrap());
        let p = pool("into", 10, 4);
        let mut a = MbufArray::with_capacity(6);
        a.push(p.alloc().unwrap()).unwrap();
        // Room for 5: asking 8 gives 5 and is not a pool failure.
        assert_eq!(p.alloc_bulk_into(&mut a, 8), 5);
        assert_eq!(p.stats().alloc_fail, 0);
        assert!(a.is_full());
        assert_eq!(p.alloc_bulk_into(&mut a, 0), 0);
        // 4 left in the pool: asking 6 gives 4, and 2 are counted.
        let mut b = MbufArray::with_capacity(6);
        assert_eq!(p.alloc_bulk_into(&mut b, 6), 4);
        assert_eq!(p.stats().alloc_fail, 2);
        assert_eq!(p.in_use(), 10);
        // Every buffer handed out once, reset.
        let mut idx: Vec<u32> = a
            .as_slice()
            .iter()
            .chain(b.as_slice())
            .map(Mbuf::index)
            .collect();
        idx.sort_unstable();
        idx.dedup();
        assert_eq!(idx.len(), 10);
        for m in b.as_slice() {
            assert_eq!((m.len(), m.data_offset()), (0, 128));
            assert_eq!(*m.meta(), ibpoll_mem::MbufMeta::default());
        }
        drop((a, b));
        assert_eq!(p.in_use(), 0);
    }
}

#[test]
fn alloc_bulk_into_more_than_a_cache_holds() {
    let _g = register_lcore(53).unwrap();
    let p = pool("into-big", 256, 8); // flush threshold 12
    let mut a = MbufArray::with_capacity(200);
    assert_eq!(p.alloc_bulk_into(&mut a, 150), 150);
    assert_eq!(p.in_use(), 150);
    // Reset and in pop order: the first buffers come out as 0, 1, 2, ...
    assert_eq!(a[0].index(), 0);
    assert_eq!(a[1].index(), 1);
    drop(a);
    assert_eq!(p.in_use(), 0);
}

#[test]
fn alloc_reuses_freed_buffers_reset() {
    let _g = register_lcore(54).unwrap();
    let p = pool("reuse", 16, 8);
    let mut a = MbufArray::with_capacity(4);
    assert_eq!(p.alloc_bulk_into(&mut a, 4), 4);
    for m in a.as_mut_slice() {
        m.append(10).unwrap().fill(1);
        m.prepend(4).unwrap();
        m.meta_mut().src_qpn = 7;
    }
    a.clear();
    assert_eq!(p.alloc_bulk_into(&mut a, 4), 4);
    for m in a.as_slice() {
        assert_eq!((m.len(), m.data_offset()), (0, 128));
        assert_eq!(m.meta().src_qpn, 0);
    }
}

#[test]
fn move_to_and_extend_from() {
    let p = pool("move", 16, 0);
    let mut a = tagged(&p, 5, 5);
    let mut b = MbufArray::with_capacity(2);
    a.move_to(1, &mut b).unwrap();
    assert_eq!(tags(&a), [0, 4, 2, 3]);
    assert_eq!(tags(&b), [1]);
    assert!(a.move_to(4, &mut b).is_err(), "out of range");
    a.move_to(0, &mut b).unwrap();
    assert!(a.move_to(0, &mut b).is_err(), "other is full");
    assert_eq!(tags(&a), [3, 4, 2]);
    assert_eq!(tags(&b), [1, 0]);
    // extend_from: as many as fit, from the front, order kept; the rest moves up.
    let mut c = MbufArray::with_capacity(4);
    assert_eq!(c.extend_from(&mut a), 3);
    assert!(a.is_empty());
    assert_eq!(c.extend_from(&mut b), 1);
    assert_eq!(tags(&c), [3, 4, 2, 1]);
    assert_eq!(tags(&b), [0]);
    assert_eq!(c.extend_from(&mut b), 0, "c is full");
    assert_eq!(a.extend_from(&mut b), 1);
    assert_eq!(tags(&a), [0]);
    assert_eq!(p.in_use(), 5);
}

#[test]
fn retain_mut_frees_the_rest_in_bulk() {
    let _g = register_lcore(55).unwrap();
    let p = pool("retain", 16, 4);
    let mut a = tagged(&p, 10, 10);
    let mut seen = Vec::new();
    a.retain_mut(|m| {
        seen.push(tag(m));
        m.meta_mut().flags = 1;
        tag(m) % 3 == 0
    });
    assert_eq!(
        seen,
        (0..10).collect::<Vec<_>>(),
        "each visited once, in order"
    );
    assert_eq!(tags(&a), [0, 3, 6, 9]);
    assert!(a.as_slice().iter().all(|m| m.meta().flags == 1));
    assert_eq!(p.in_use(), 4);
}

#[test]
fn partition_into_moves_exceptions_in_order() {
    let p = pool("partition", 16, 0);
    let mut a = tagged(&p, 8, 8);
    let mut exc = MbufArray::with_capacity(8);
    exc.push(p.alloc().unwrap()).unwrap();
    exc[0].meta_mut().user = 100;
    let moved = a.partition_into(&mut exc, |m| tag(m) % 4 != 1);
    assert_eq!(moved, 2);
    assert_eq!(tags(&a), [0, 2, 3, 4, 6, 7]);
    assert_eq!(tags(&exc), [100, 1, 5]);
    assert_eq!(p.in_use(), 9);
}

#[test]
fn prefetch_any_index() {
    let p = pool("prefetch", 4, 0);
    let a = tagged(&p, 2, 4);
    // Hints only: in range, past the end, far out.
    a.prefetch(0);
    a.prefetch(1);
    a.prefetch(2);
    a.prefetch(usize::MAX);
    a[0].prefetch();
    assert_eq!(tags(&a), [0, 1]);
}

#[test]
fn array_crosses_threads() {
    fn send<T: Send>(_: &T) {}
    let p = pool("send", 32, 8);
    let a = tagged(&p, 16, 16);
    send(&a);
    // Filled on an lcore, freed in bulk on another lcore's thread.
    std::thread::spawn(move || {
        let _g = register_lcore(56).unwrap();
        assert_eq!(tags(&a), (0..16).collect::<Vec<_>>());
        drop(a);
    })
    .join()
    .unwrap();
    let s = p.stats();
    assert_eq!((s.in_use, s.cached, s.backend), (0, 0, 32), "{s:?}");
}

#[test]
fn lcore_handle_alloc_and_free() {
    let g = register_lcore(57).unwrap();
    let p = pool("handle", 64, 8);
    let other = pool("handle-other", 16, 4);
    let mut mem = p.lcore_handle(&g);
    assert_eq!(mem.lcore_id(), 57);
    assert_eq!(mem.pool().name(), "handle");
    let mut a = MbufArray::with_capacity(40);
    assert_eq!(mem.alloc_bulk(&mut a, 32), 32);
    assert_eq!(p.in_use(), 32);
    // Buffers of another pool in the same array go home to their pool.
    assert_eq!(other.alloc_bulk_into(&mut a, 5), 5);
    a.push(mem.alloc().unwrap()).unwrap();
    assert_eq!((p.in_use(), other.in_use()), (33, 5));
    mem.free_bulk(&mut a);
    assert!(a.is_empty());
    assert_eq!((p.in_use(), other.in_use()), (0, 0));
    // The buffers sit in this lcore's caches, up to the flush threshold.
    assert!(p.stats().cached > 0 && p.stats().cached <= 12);
    // Exhaustion through the handle is counted like any other.
    assert_eq!(mem.alloc_bulk(&mut a, 40), 40);
    assert_eq!(mem.alloc_bulk(&mut a, 1), 0);
    let mut b = MbufArray::with_capacity(40);
    assert_eq!(mem.alloc_bulk(&mut b, 30), 24);
    assert!(mem.alloc().is_none());
    assert_eq!(p.stats().alloc_fail, 7);
    drop(mem);
    drop((a, b));
    assert_eq!(p.in_use(), 0);
    drop(g);
    assert_eq!(p.stats().cached, 0, "unregistering flushed the slot");
}

#[test]
fn lcore_handle_without_caches() {
    let g = register_lcore(58).unwrap();
    let p = pool("handle-nocache", 8, 0);
    let mut mem = p.lcore_handle(&g);
    let mut a = MbufArray::with_capacity(8);
    assert_eq!(mem.alloc_bulk(&mut a, 8), 8);
    mem.free_bulk(&mut a);
    let s = p.stats();
    assert_eq!((s.in_use, s.cached, s.backend), (0, 0, 8));
}
