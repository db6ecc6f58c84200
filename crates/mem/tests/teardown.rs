//! The last handle's drop unmaps the pool when every buffer is home, and leaks it when
//! one is out. Observed through /proc/self/maps, so this binary holds a single test.

use ibpoll_mem::{register_lcore, HugepagePolicy, MemRegion, Mempool, MempoolConfig};

fn mapped(r: MemRegion) -> bool {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines().any(|l| {
        let range = l.split_whitespace().next().unwrap();
        let (a, b) = range.split_once('-').unwrap();
        let (a, b) = (
            usize::from_str_radix(a, 16).unwrap(),
            usize::from_str_radix(b, 16).unwrap(),
        );
        a <= r.addr && r.addr + r.len <= b
    })
}

fn pool(name: &str) -> Mempool {
    Mempool::new(MempoolConfig {
        data_room: 1024,
        cache_size: 8,
        hugepages: HugepagePolicy::Never,
        ..MempoolConfig::new(name, 64)
    })
    .unwrap()
}

#[test]
fn unmapped_when_home_leaked_when_out() {
    // All home (some in this lcore's cache): unmapped.
    let g = register_lcore(0).unwrap();
    let p = pool("home");
    let r = p.region();
    let out: Vec<_> = (0..20).map(|_| p.alloc().unwrap()).collect();
    drop(out);
    assert!(p.stats().cached > 0);
    assert!(mapped(r));
    drop(p);
    assert!(!mapped(r), "pool with every buffer home was not unmapped");
    drop(g);

    // One buffer out: leaked, buffer still valid.
    let p = pool("out");
    let r = p.region();
    let mut m = p.alloc().unwrap();
    drop(p);
    assert!(mapped(r), "pool with a buffer out was unmapped");
    m.append(1024).unwrap().fill(3);
    assert!(m.data().iter().all(|&b| b == 3));
    drop(m);
}
