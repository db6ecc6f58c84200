//! Pool ids: small, unique among live pools, reused after a pool is torn down with every
//! buffer home, kept by a pool leaked with buffers out; every buffer carries its pool's.
//! Its own binary (one test) because ids are process-wide and handed out lowest first.

use ibpoll_mem::{HugepagePolicy, MbufArray, Mempool, MempoolConfig, POOL_IDS_MAX};

fn pool(name: &str) -> Mempool {
    Mempool::new(MempoolConfig {
        data_room: 64,
        cache_size: 0,
        hugepages: HugepagePolicy::Never,
        ..MempoolConfig::new(name, 8)
    })
    .unwrap()
}

#[test]
fn ids_unique_reused_and_carried() {
    let a = pool("a");
    let b = pool("b");
    let c = pool("c");
    // The first pools of the process take the lowest ids.
    assert_eq!([a.id(), b.id(), c.id()], [0, 1, 2]);
    assert_eq!(a.clone().id(), a.id(), "clones share the pool and its id");
    assert!(format!("{a:?}").contains("id: 0"));

    // Every buffer carries its pool's id, also when mixed in one array.
    let mut arr = MbufArray::with_capacity(8);
    for p in [&a, &b, &c, &b] {
        assert_eq!(p.alloc_bulk_into(&mut arr, 2), 2);
    }
    let ids: Vec<u16> = arr.as_slice().iter().map(|m| m.pool_id()).collect();
    assert_eq!(ids, [0, 0, 1, 1, 2, 2, 1, 1]);
    assert_eq!(a.alloc().unwrap().pool_id(), 0);
    drop(arr);

    // A pool torn down with every buffer home gives its id back; the lowest is reused.
    drop(b);
    let d = pool("d");
    assert_eq!(d.id(), 1);
    let e = pool("e");
    assert_eq!(e.id(), 3);

    // A pool torn down with a buffer out is leaked and keeps its id: the buffer still
    // names it, and a PMD's key for it must stay valid.
    let m = c.alloc().unwrap();
    drop(c);
    let f = pool("f");
    assert_eq!(f.id(), 4, "the leaked pool's id 2 is not reused");
    assert_eq!(m.pool_id(), 2);
    drop(m);
    let g = pool("g");
    assert_eq!(g.id(), 5, "still not: the pool stays leaked");

    // Many live pools: all ids distinct and below the bound.
    let many: Vec<Mempool> = (0..100).map(|i| pool(&format!("many{i}"))).collect();
    let mut ids: Vec<u16> = many.iter().map(Mempool::id).collect();
    ids.extend([a.id(), d.id(), e.id(), f.id(), g.id()]);
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 105);
    assert!(ids.iter().all(|&id| usize::from(id) < POOL_IDS_MAX));
    // Dropping them frees their ids for reuse, lowest first.
    drop(many);
    assert_eq!(pool("h").id(), 6);
}
