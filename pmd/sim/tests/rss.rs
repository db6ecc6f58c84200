//! Receive-side scaling, an opt-in capability of the simulator
//! ([`FabricConfig::with_rss`]): a QP with several receive queues spreads flows over all
//! of them by a flow hash, and keeps every packet of one flow on one queue. Without it,
//! the simulator answers as an InfiniBand HCA does through verbs: one receive queue per
//! QPN.

mod common;

use std::collections::BTreeMap;

use common::{Host, QpOpts};
use ibpoll_dev::TxDst;
use ibpoll_pmd_sim::{FabricConfig, SimFabric};
use ibpoll_wire::{ipoib, QKey};

#[test]
fn flows_spread_over_every_queue_and_each_flow_stays_on_one() {
    const QUEUES: u16 = 4;
    const FLOWS: u16 = 64;
    const PER_FLOW: u32 = 8;
    let f = SimFabric::new(FabricConfig::default().with_rss(QUEUES));
    let mut a = Host::new(&f, "a");
    assert_eq!(a.port.ud_caps().rx_queues_per_qpn, QUEUES);
    let mut b = Host::with(
        &f,
        "b",
        &QpOpts {
            rx_queues: QUEUES,
            ..QpOpts::default()
        },
        1024,
    );
    let ah = a.ah(b.lid());
    for round in 0..PER_FLOW {
        let descs = (0..FLOWS)
            .map(|flow| {
                let udp = common::ipv4_udp(
                    [10, 0, 0, 1],
                    [10, 0, 0, 2],
                    40_000 + flow,
                    5000,
                    &round.to_be_bytes(),
                );
                let dst = TxDst {
                    ah,
                    qpn: b.qp.qpn,
                    qkey: QKey::IPOIB_DEFAULT,
                };
                (a.packet(ipoib::EtherType::IPV4, &udp), dst)
            })
            .collect();
        a.qp.send(descs);
    }

    // Source port -> (queues it arrived on, RSS hashes it carried).
    let mut seen: BTreeMap<u16, (Vec<usize>, Vec<u32>)> = BTreeMap::new();
    let mut per_queue = [0usize; QUEUES as usize];
    for (q, count) in per_queue.iter_mut().enumerate() {
        for m in b.qp.recv_queue(q) {
            let ip = common::body(&m);
            let sport = u16::from_be_bytes([ip[20], ip[21]]);
            let e = seen.entry(sport).or_default();
            e.0.push(q);
            e.1.push(m.meta().rss_hash);
            assert_eq!(usize::from(m.meta().queue), q, "meta.queue names the queue");
            *count += 1;
        }
    }
    assert_eq!(seen.len(), usize::from(FLOWS), "every flow arrived");
    for (sport, (queues, hashes)) in &seen {
        assert_eq!(
            queues.len(),
            PER_FLOW as usize,
            "flow {sport}: all its packets"
        );
        assert!(
            queues.iter().all(|q| *q == queues[0]),
            "flow {sport} was split over queues {queues:?}"
        );
        assert!(hashes.iter().all(|h| *h == hashes[0]));
    }
    assert!(
        per_queue.iter().all(|n| *n > 0),
        "every queue got flows: {per_queue:?}"
    );
    // 64 flows over 4 queues: no queue should be left with almost nothing or take most.
    assert!(
        per_queue
            .iter()
            .all(|n| (4 * PER_FLOW as usize..=40 * PER_FLOW as usize).contains(n)),
        "flows are spread: {per_queue:?}"
    );
    assert_eq!(f.stats().dropped(), 0);
}

#[test]
fn without_the_rss_capability_a_qpn_has_one_receive_queue() {
    let two = QpOpts {
        rx_queues: 2,
        ..QpOpts::default()
    };
    let f = SimFabric::new(FabricConfig::default());
    let a = Host::new(&f, "a");
    let caps = a.port.ud_caps();
    assert_eq!(
        caps.rx_queues_per_qpn, 1,
        "the default is a verbs HCA's answer"
    );
    assert!(!caps.send_qps_share_qpn);
    match a.port.create_ud_qp(&common::qp_config(&a.pool, &two)) {
        Err(e @ ibpoll_dev::Error::QpConfig { field, value, .. }) => {
            assert_eq!((field, value), ("rx_queues", 2));
            assert!(e.to_string().contains("rx_queues"), "{e}");
        }
        other => panic!("rx_queues 2 without RSS: {other:?}"),
    }

    // With the capability, the same configuration is accepted.
    let f = SimFabric::new(FabricConfig::default().with_rss(2));
    let b = Host::new(&f, "b");
    let qp = b
        .port
        .create_ud_qp(&common::qp_config(&b.pool, &two))
        .expect("two receive queues with RSS");
    assert_eq!(qp.rx.len(), 2);
}
