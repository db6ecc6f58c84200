//! What one snapshot read costs a data core, QSBR against the alternatives.
//!
//! Each iteration obtains the current snapshot and reads one word of it:
//! * `qsbr/get`: `Reader::get` alone (the reader never announces anything);
//! * `qsbr/quiescent+get`: a quiescent point per read (a loop iteration per read);
//! * `qsbr/burst32`: one quiescent point per 32 reads, what a data core does per burst;
//!   criterion's time is per burst of 32, its throughput line per read;
//! * `crossbeam-epoch/pin+load`: `epoch::pin()` and an `Atomic::load` per read;
//! * `arc-swap/load`: `ArcSwap::load` per read.
//!
//! No publisher runs concurrently: this is the uncontended fast path.

use std::hint::black_box;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use crossbeam_epoch as epoch;

const BURST: usize = 32;

struct Table {
    mlid: [u64; 8],
}

fn table() -> Table {
    Table { mlid: [0xc001; 8] }
}

fn qsbr(c: &mut Criterion) {
    let (_publisher, registry) = ibpoll_rcu::new(table(), 4).expect("domain");
    let mut reader = registry.register().expect("reader");

    let mut group = c.benchmark_group("qsbr");
    group.throughput(Throughput::Elements(1));
    group.bench_function("get", |b| b.iter(|| black_box(&reader).get().mlid[0]));
    group.bench_function("quiescent+get", |b| {
        b.iter(|| {
            let reader = black_box(&mut reader);
            reader.quiescent();
            reader.get().mlid[0]
        })
    });
    group.throughput(Throughput::Elements(BURST as u64));
    group.bench_function("burst32", |b| {
        b.iter(|| {
            let reader = black_box(&mut reader);
            reader.quiescent();
            let mut sum = 0u64;
            for _ in 0..BURST {
                sum = sum.wrapping_add(black_box(&*reader).get().mlid[0]);
            }
            sum
        })
    });
    group.finish();
}

fn alternatives(c: &mut Criterion) {
    let mut group = c.benchmark_group("alternatives");
    group.throughput(Throughput::Elements(1));

    let current = epoch::Atomic::new(table());
    group.bench_function("crossbeam-epoch/pin+load", |b| {
        b.iter(|| {
            let guard = epoch::pin();
            let shared = black_box(&current).load(Ordering::Acquire, &guard);
            // SAFETY: `current` is never swapped in this benchmark and is freed below,
            // after the last guard.
            unsafe { shared.deref() }.mlid[0]
        })
    });

    let swap = ArcSwap::from(Arc::new(table()));
    group.bench_function("arc-swap/load", |b| {
        b.iter(|| black_box(&swap).load().mlid[0])
    });
    group.finish();

    // SAFETY: no guard is alive and nothing else refers to `current` any more.
    drop(unsafe { current.into_owned() });
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = qsbr, alternatives
}
criterion_main!(benches);
