//! Alloc + free of bursts of 32: `Option` slots with a drop per buffer (the old path),
//! and `MbufArray` with bulk free (per call, and through an `LcoreMem` handle), on a
//! registered lcore (cache fast path) and on an unregistered thread (backend only).
//! Criterion reports time per iteration = per burst. Instruction counts of the same
//! bursts: `examples/burst_ir.rs`.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use ibpoll_mem::{register_lcore, HugepagePolicy, Mbuf, MbufArray, Mempool, MempoolConfig};

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

fn burst_array(c: &mut Criterion, name: &str, pool: &Mempool) {
    let mut arr = MbufArray::with_capacity(BURST);
    c.bench_function(name, |b| {
        b.iter(|| {
            assert_eq!(pool.alloc_bulk_into(&mut arr, BURST), BURST);
            arr.clear();
        })
    });
}

fn benches(c: &mut Criterion) {
    let p = pool();
    burst(c, "alloc_bulk32_drop/backend_only", &p);
    burst_array(c, "alloc_bulk_into32_clear/backend_only", &p);
    {
        let lcore = register_lcore(0).expect("lcore 0");
        burst(c, "alloc_bulk32_drop/lcore_cache", &p);
        burst_array(c, "alloc_bulk_into32_clear/lcore_cache", &p);
        let mut mem = p.lcore_handle(&lcore);
        let mut arr = MbufArray::with_capacity(BURST);
        c.bench_function("lcore_mem_alloc32_free32/lcore_cache", |b| {
            b.iter(|| {
                assert_eq!(mem.alloc_bulk(&mut arr, BURST), BURST);
                mem.free_bulk(&mut arr);
            })
        });
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
