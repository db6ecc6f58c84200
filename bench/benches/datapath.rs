//! Time per burst of a data lcore's classify + resolve, without the NIC (see
//! `ibpoll_bench::datapath` for the fixture and the cases): `classify_resolve/<case>`
//! for every case, and `classify/ipv4` (classification alone) as the baseline.
//! Criterion's throughput line is in packets per second.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ibpoll_bench::datapath::{dests, Fixture, BURST, CASES};

fn datapath(c: &mut Criterion) {
    let mut f = Fixture::new();
    let mut g = c.benchmark_group("classify_resolve");
    g.throughput(Throughput::Elements(BURST as u64));
    for name in CASES {
        let d = dests(name).expect("a known case");
        f.burst(&d);
        g.bench_function(name, |b| b.iter(|| f.burst(&d)));
    }
    g.finish();
    f.check().expect("every packet resolved");

    let mut g = c.benchmark_group("classify");
    g.throughput(Throughput::Elements(BURST as u64));
    g.bench_function("ipv4", |b| b.iter(|| f.classify_only()));
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = datapath
}
criterion_main!(benches);
