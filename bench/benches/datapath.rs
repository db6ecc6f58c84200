//! A data lcore's per-packet work between `rx_burst` and `tx_burst`, without the NIC:
//! [`ibpoll::burst::classify`] of a received packet, stripping its IPoIB header, and
//! [`ibpoll::burst::Resolver::resolve`] against the published snapshot (the IPoIB
//! header written back, the destination looked up, the descriptor built), one snapshot
//! per burst of 32 as the lcore does. The snapshot is the real one: a controller on the
//! simulated fabric joined 10,000 IPv4 groups and the broadcast group through the
//! embedded SA, and resolved 8 neighbours by ARP and PathRecord.
//!
//! The descriptor's buffer is the next burst's received packet (resolve leaves the
//! IPoIB header in place), so no buffer is allocated or freed in the loop.
//!
//! * `classify_resolve/unicast_1`: 32 packets to one next hop (pktgen's and l3fwd's
//!   common case: the per-burst table finds it after the first packet);
//! * `classify_resolve/unicast_8`: to 8 next hops in turn;
//! * `classify_resolve/mcast_4`: to 4 groups of the 10,000 in turn;
//! * `classify_resolve/mcast_32_of_10k`: 32 different groups per burst, drawn over the
//!   10,000 (every packet a hash lookup in the big table; the worst case);
//! * `classify/ipv4`: classification alone, the baseline.
//!
//! Time per burst; criterion's throughput line gives packets per second, so the time
//! per packet is its inverse.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ibpoll::burst::{classify, Class, Resolver};
use ibpoll::{Dest, LcoreCounters};
use ibpoll_bench::ctrl_host::{group, CtrlHost};
use ibpoll_mem::Mbuf;
use ibpoll_wire::ipoib;

const GROUPS: u32 = 10_000;
const NEIGHBOURS: u8 = 8;
const BURST: usize = 32;
/// IP packet size (64-byte IPv4/UDP, as pktgen's default).
const SIZE: usize = 64;

fn host() -> CtrlHost {
    let mut h = CtrlHost::with_ipv4(GROUPS as usize, 64, Some([10, 0, 0, 1]));
    h.join(GROUPS);
    h.join_all(Duration::from_secs(120))
        .expect("the controller joins every group");
    for i in 0..NEIGHBOURS {
        h.resolve_neighbour([10, 0, 0, 10 + i], Duration::from_secs(10))
            .expect("the controller resolves the neighbour");
    }
    h
}

/// A received 64-byte IPv4/UDP packet: IPoIB header, then the IP packet.
fn packet(h: &CtrlHost) -> Mbuf {
    let mut m = h.pool.alloc().expect("a buffer");
    let d = m.append(ipoib::HEADER_LEN + SIZE).expect("room");
    d[..2].copy_from_slice(&ipoib::EtherType::IPV4.0.to_be_bytes());
    let ip = &mut d[ipoib::HEADER_LEN..];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(SIZE as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    m
}

/// One burst: classify, strip, resolve; the descriptor's buffer goes back in its slot.
#[inline]
fn burst(
    h: &mut CtrlHost,
    counters: &LcoreCounters,
    pkts: &mut [Option<Mbuf>; BURST],
    dests: &[Dest; BURST],
) {
    let core = &mut h.cores[0];
    core.reader.quiescent();
    let snap = core.reader.get();
    let mut r = Resolver::new(snap, &mut core.requests, counters);
    for (slot, dest) in pkts.iter_mut().zip(dests) {
        let Some(mut m) = slot.take() else {
            continue;
        };
        if classify(m.data()) != Class::Ip {
            panic!("not classified as IP");
        }
        m.adj(ipoib::HEADER_LEN);
        let Some(mut d) = r.resolve(m, *dest) else {
            panic!("{dest:?} did not resolve");
        };
        black_box((d.ah, d.remote_qpn, d.remote_qkey));
        *slot = d.mbuf.take();
    }
}

fn datapath(c: &mut Criterion) {
    let mut h = host();
    let counters = LcoreCounters::default();
    let mut pkts: [Option<Mbuf>; BURST] = std::array::from_fn(|_| Some(packet(&h)));
    let next_hop = |i: usize| Dest::NextHop([10, 0, 0, 10 + (i % usize::from(NEIGHBOURS)) as u8]);
    let ipv4 = |i: u32| match group(i) {
        ibpoll::GroupAddr::Ipv4(ip) => Dest::Group(ibpoll::GroupAddr::Ipv4(ip)),
        g => Dest::Group(g),
    };
    let cases: [(&str, [Dest; BURST]); 4] = [
        ("unicast_1", [next_hop(0); BURST]),
        ("unicast_8", std::array::from_fn(next_hop)),
        ("mcast_4", std::array::from_fn(|i| ipv4(i as u32 % 4))),
        (
            "mcast_32_of_10k",
            // A multiplicative walk over the 10,000 groups.
            std::array::from_fn(|i| ipv4((i as u32).wrapping_mul(2_654_435_761) % GROUPS)),
        ),
    ];

    let mut g = c.benchmark_group("classify_resolve");
    g.throughput(Throughput::Elements(BURST as u64));
    for (name, dests) in &cases {
        // Every packet resolves: nothing goes to the control core or is dropped.
        burst(&mut h, &counters, &mut pkts, dests);
        assert!(
            pkts.iter().all(Option::is_some),
            "{name}: a packet was lost"
        );
        g.bench_function(*name, |b| {
            b.iter(|| burst(&mut h, &counters, &mut pkts, dests));
        });
    }
    g.finish();
    let s = counters.read();
    assert_eq!(
        s.tx_link_down + s.tx_malformed + s.tx_too_long + s.to_ctrl_mcast + s.to_ctrl_resolve,
        0,
        "every packet resolved: {s:?}"
    );

    let mut g = c.benchmark_group("classify");
    g.throughput(Throughput::Elements(BURST as u64));
    g.bench_function("ipv4", |b| {
        b.iter(|| {
            for m in pkts.iter().flatten() {
                black_box(classify(black_box(m.data())));
            }
        });
    });
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
