//! alloc_bulk + drop of bursts of 32: on a registered lcore (cache fast path) and on an
//! unregistered thread (backend only). Criterion reports time per iteration = per burst.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use ibpoll_mem::{register_lcore, HugepagePolicy, Mbuf, Mempool, MempoolConfig};

const BURST: usize = 32;

fn pool() -> Mempool {
    Mempool::new(MempoolConfig {
        hugepages: HugepagePolicy::Prefer,
        ..MempoolConfig::new("bench", 8192)
    })
    .expect("bench pool")
}

fn burst(c: &mut Criterion, name: &str, pool: &Mempool) {
    let mut bufs: [Option<Mbuf>; BURST] = [const { None }; BURST];
    c.bench_function(name, |b| {
        b.iter(|| {
            let n = pool.alloc_bulk(&mut bufs);
            assert_eq!(n, BURST);
            for slot in bufs.iter_mut() {
                drop(slot.take());
            }
        })
    });
}

fn benches(c: &mut Criterion) {
    let p = pool();
    burst(c, "alloc_bulk32_drop/backend_only", &p);
    {
        let _lcore = register_lcore(0).expect("lcore 0");
        burst(c, "alloc_bulk32_drop/lcore_cache", &p);
    }
    assert_eq!(p.in_use(), 0);
}

criterion_group! {
    name = mempool;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = benches
}
criterion_main!(mempool);
