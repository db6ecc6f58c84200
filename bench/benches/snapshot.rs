//! A data core's group lookup in the published snapshot, among 10,000 Joined groups.
//!
//! The snapshot is the real one: a controller on the simulated fabric joins 10,000 IPv4
//! groups (and the broadcast group) through the embedded SA, and the benchmark reads what
//! it published through a data core's `Reader`, as the data path does.
//!
//! * `lookup/10k_hit`: `Snapshot::group` for a Joined MGID, cycling through 4,096 MGIDs
//!   spread over the 10,000 groups (so the table does not sit in L1);
//! * `lookup/10k_miss`: the same for MGIDs that are not Joined;
//! * `lookup/1_hit`: the baseline, the broadcast group in a snapshot of one group;
//! * `lookup/10k_ipv4_burst32`: what a data core does per burst of 32 IPv4 multicast
//!   packets: a quiescent point, one `Reader::get`, then per packet the IPv4 -> MGID
//!   mapping and the lookup. Time per burst; the throughput line is per packet.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ibpoll_bench::ctrl_host::{group, CtrlHost};
use ibpoll_ctrl::GroupAddr;
use ibpoll_wire::Gid;

const GROUPS: u32 = 10_000;
const PROBES: usize = 4096;
const BURST: usize = 32;

fn joined(groups: u32) -> CtrlHost {
    let mut h = CtrlHost::new(groups as usize, 64);
    h.join(groups);
    h.join_all(Duration::from_secs(120))
        .expect("the controller joins every group");
    assert_eq!(h.ctl.snapshot().group_count(), groups as usize + 1);
    h
}

/// `PROBES` group indices spread over `0..GROUPS` (a multiplicative walk, no RNG needed).
fn probe_indices() -> Vec<u32> {
    (0..PROBES as u32)
        .map(|i| i.wrapping_mul(2_654_435_761) % GROUPS)
        .collect()
}

fn ipv4(i: u32) -> [u8; 4] {
    match group(i) {
        GroupAddr::Ipv4(ip) => ip,
        GroupAddr::Mgid(_) | GroupAddr::Ipv6(_) => unreachable!("bench groups are IPv4"),
    }
}

fn lookup(c: &mut Criterion) {
    let mut big = joined(GROUPS);
    let small = joined(0);
    let idx = probe_indices();
    let hits: Vec<Gid> = idx
        .iter()
        .map(|&i| big.ctl.mgid_of(group(i)).expect("mgid"))
        .collect();
    // Groups past the joined range: valid MGIDs of the partition, not in the table.
    let misses: Vec<Gid> = idx
        .iter()
        .map(|&i| big.ctl.mgid_of(group(GROUPS + i)).expect("mgid"))
        .collect();
    let ips: Vec<[u8; 4]> = idx.iter().map(|&i| ipv4(i)).collect();
    let bcast = small
        .ctl
        .snapshot()
        .broadcast()
        .expect("broadcast Joined")
        .mgid;

    let mut g = c.benchmark_group("lookup");
    g.throughput(Throughput::Elements(1));
    {
        let snap = big.cores[0].reader.get();
        assert!(hits.iter().all(|m| snap.group(m).is_some()));
        assert!(misses.iter().all(|m| snap.group(m).is_none()));
        let mut k = 0usize;
        g.bench_function("10k_hit", |b| {
            b.iter(|| {
                k = (k + 1) % PROBES;
                black_box(snap).group(black_box(&hits[k])).map(|e| e.mlid)
            })
        });
        g.bench_function("10k_miss", |b| {
            b.iter(|| {
                k = (k + 1) % PROBES;
                black_box(snap).group(black_box(&misses[k])).map(|e| e.mlid)
            })
        });
    }
    {
        let snap = small.cores[0].reader.get();
        g.bench_function("1_hit", |b| {
            b.iter(|| black_box(snap).group(black_box(&bcast)).map(|e| e.mlid))
        });
    }
    g.throughput(Throughput::Elements(BURST as u64));
    let reader = &mut big.cores[0].reader;
    let mut k = 0usize;
    g.bench_function("10k_ipv4_burst32", |b| {
        b.iter(|| {
            let reader = black_box(&mut *reader);
            reader.quiescent();
            let snap = reader.get();
            let mut found = 0u32;
            for _ in 0..BURST {
                k = (k + 1) % PROBES;
                let mgid = snap.ipv4_mgid(black_box(ips[k]));
                found += u32::from(snap.group(&mgid).is_some());
            }
            found
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = lookup
}
criterion_main!(benches);
