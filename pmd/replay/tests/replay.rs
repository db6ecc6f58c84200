//! What a replay port does: full bursts of replayed frames after the wrapped queue's
//! packets, copied into fresh buffers of the QP's pool; data sends freed and counted,
//! control sends through the wrapped port; budgets; completions that wait for the
//! wrapped queue's.

mod common;

use std::sync::Arc;

use common::{frames, pool, ReplayFixture};
use ibpoll_dev::{AhAttr, Port, TxDst, UdQp, UdQpConfig};
use ibpoll_devtest::{Backpressure, BackpressureConfig};
use ibpoll_mem::{Mbuf, MbufArray, Mempool, MempoolConfig};
use ibpoll_pmd_replay::ReplayPort;
use ibpoll_wire::{ipoib, QKey};

const QKEY: QKey = QKey::IPOIB_DEFAULT;

fn qp(port: &Arc<ReplayPort>, pool: &Mempool, pkey_index: u16, rx: u32) -> UdQp {
    let mut cfg = UdQpConfig::new(pool.clone(), pkey_index, QKEY);
    cfg.rx_ring_size = rx;
    cfg.tx_ring_size = 256;
    port.create_ud_qp(&cfg).expect("a valid QP")
}

fn dst_to(from: &Arc<ReplayPort>, to: &Arc<ReplayPort>, qp: &UdQp) -> TxDst {
    let ah = from
        .create_ah(&AhAttr {
            dlid: to.attr().lid,
            sl: 0,
            src_path_bits: 0,
            static_rate: ibpoll_wire::Rate::GBPS_10,
            grh: None,
        })
        .expect("an AH");
    TxDst {
        ah,
        qpn: qp.qpn,
        qkey: QKEY,
    }
}

/// A packet with ethertype `et` and `seq`.
fn packet(pool: &Mempool, et: ipoib::EtherType, seq: u32) -> Mbuf {
    let mut m = pool.alloc().expect("a free buffer");
    let d = m.append(28).expect("room");
    d.fill(0);
    d[..2].copy_from_slice(&et.0.to_be_bytes());
    d[4] = 0x45;
    d[24..28].copy_from_slice(&seq.to_be_bytes());
    m
}

fn array(ms: Vec<Mbuf>) -> MbufArray {
    let mut a = MbufArray::with_capacity(ms.len().max(1));
    for m in ms {
        a.push(m).expect("sized");
    }
    a
}

#[test]
fn every_burst_is_full_of_fresh_copies_in_order() {
    let f = ReplayFixture::streaming();
    let p = pool("rx", 256);
    let mut q = qp(&f.ports[0], &p, 0, 64);
    let want = frames();
    let mut a = MbufArray::with_capacity(32);
    let mut seen = 0;
    for round in 0..5 {
        assert_eq!(q.rx[0].rx_burst(&mut a), 32, "a full burst, round {round}");
        for m in a.as_slice() {
            assert_eq!(
                m.data(),
                want.get(seen % want.len()),
                "frame {seen}, in order"
            );
            assert_eq!(m.pool_id(), p.id(), "a buffer of the QP's pool");
            assert!(m.data_offset() >= 40, "a GRH area before the data");
            assert_eq!(m.meta().src_qpn, 0x1234);
            assert_eq!(m.meta().flags, 0);
            seen += 1;
        }
        let addrs: Vec<usize> = a.as_slice().iter().map(Mbuf::buf_addr).collect();
        let mut uniq = addrs.clone();
        uniq.sort_unstable();
        uniq.dedup();
        assert_eq!(uniq.len(), 32, "each frame its own buffer");
        a.clear();
    }
    let c = q.rx[0].counters();
    assert_eq!((c.packets.get(), c.bytes.get()), (160, 160 * 68));
    assert_eq!(f.ports[0].stats().replayed, 160);
    assert_eq!(p.in_use(), 0);
    // A partial room is filled, and an array that is full takes nothing.
    let mut small = MbufArray::with_capacity(5);
    small.push(p.alloc().unwrap()).unwrap();
    assert_eq!(q.rx[0].rx_burst(&mut small), 4);
    assert_eq!(q.rx[0].rx_burst(&mut small), 0);
}

#[test]
fn the_wrapped_queues_packets_come_first_and_other_partitions_are_plain() {
    let f = ReplayFixture::streaming();
    let p = pool("p", 512);
    let mut streaming = qp(&f.ports[1], &p, 0, 64);
    let mut plain = qp(&f.ports[1], &p, 1, 64);
    let sender = qp(&f.ports[0], &p, 0, 0);
    let mut tx = sender.tx;
    let dst = dst_to(&f.ports[0], &f.ports[1], &streaming);
    let mut pkts = array(
        (0..3)
            .map(|s| packet(&p, ipoib::EtherType::ARP, s))
            .collect(),
    );
    assert_eq!(tx.tx_burst(&mut pkts, &[dst; 3]), 3);
    assert_eq!(
        f.ports[0].stats().to_inner,
        3,
        "ARP goes to the wrapped port"
    );
    let mut a = MbufArray::with_capacity(32);
    assert_eq!(streaming.rx[0].rx_burst(&mut a), 32);
    let ets: Vec<u16> = a
        .as_slice()
        .iter()
        .map(|m| u16::from_be_bytes([m.data()[0], m.data()[1]]))
        .collect();
    assert_eq!(&ets[..3], &[0x0806; 3], "the ARP packets first");
    assert!(ets[3..].iter().all(|&e| e == 0x0800), "then replayed IPv4");
    a.clear();
    assert_eq!(plain.rx[0].rx_burst(&mut a), 0, "no stream on 0x8001");
}

#[test]
fn data_sends_are_freed_and_counted() {
    let f = ReplayFixture::streaming();
    let p = pool("p", 512);
    let mut receiver = qp(&f.ports[1], &p, 1, 64);
    let sender = qp(&f.ports[0], &p, 0, 0);
    let mut tx = sender.tx;
    let dst = dst_to(&f.ports[0], &f.ports[1], &receiver);
    let before = f.fabric.stats().sent;
    let mut pkts = array(
        (0..40)
            .map(|s| packet(&p, ipoib::EtherType::IPV4, s))
            .collect(),
    );
    assert_eq!(tx.tx_burst(&mut pkts, &[dst; 40]), 40);
    assert!(pkts.is_empty());
    assert_eq!(tx.completed(), 40);
    let s = f.ports[0].stats();
    assert_eq!((s.freed, s.freed_bytes, s.to_inner), (40, 40 * 28, 0));
    assert_eq!(f.fabric.stats().sent, before, "nothing reached the switch");
    assert_eq!(p.in_use(), 0);
    // A mixed burst: the IPv6 and IPv4 freed, the ARP sent (on 0x8001: no stream).
    let mut mixed = array(vec![
        packet(&p, ipoib::EtherType::IPV4, 1),
        packet(&p, ipoib::EtherType::ARP, 2),
        packet(&p, ipoib::EtherType::IPV6, 3),
    ]);
    let mut cfg = UdQpConfig::new(p.clone(), 1, QKEY);
    cfg.rx_ring_size = 0;
    let mut tx1 = f.ports[0].create_ud_qp(&cfg).unwrap().tx;
    assert_eq!(tx1.tx_burst(&mut mixed, &[dst; 3]), 3);
    let mut a = MbufArray::with_capacity(8);
    assert_eq!(receiver.rx[0].rx_burst(&mut a), 1, "the ARP arrived");
    assert_eq!(
        u32::from_be_bytes(a[0].data()[24..28].try_into().unwrap()),
        2
    );
    let s = f.ports[0].stats();
    assert_eq!((s.freed, s.to_inner), (42, 1));
    assert_eq!(tx1.completed(), 3);
    assert_eq!(tx1.counters().completed.get(), 3);
}

#[test]
fn a_budget_limits_the_stream_and_pause_stops_it() {
    let f = ReplayFixture::streaming();
    let p = pool("p", 512);
    let mut q = qp(&f.ports[0], &p, 0, 64);
    let mut a = MbufArray::with_capacity(32);
    f.controls[0].run_for(100);
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(q.rx[0].rx_burst(&mut a));
        a.clear();
    }
    assert_eq!(got, [32, 32, 32, 4, 0]);
    f.controls[0].run();
    assert_eq!(q.rx[0].rx_burst(&mut a), 32);
    a.clear();
    f.controls[0].pause();
    assert_eq!(q.rx[0].rx_burst(&mut a), 0);
    assert_eq!(f.ports[0].stats().replayed, 132);
}

#[test]
fn a_stream_burst_bounds_each_poll() {
    let f = ReplayFixture::paused();
    let p = pool("p", 256);
    let mut s = ibpoll_pmd_replay::Stream::new(ibpoll_wire::PKey::DEFAULT, frames());
    s.burst = 8;
    let port = ReplayPort::new(f.ports[1].clone(), vec![s]);
    let mut cfg = UdQpConfig::new(p.clone(), 0, QKEY);
    cfg.rx_ring_size = 64;
    let mut q = port.create_ud_qp(&cfg).unwrap();
    let mut a = MbufArray::with_capacity(32);
    assert_eq!(q.rx[0].rx_burst(&mut a), 8);
    assert_eq!(q.rx[0].rx_burst(&mut a), 8, "appended");
    assert_eq!(a.len(), 16);
}

#[test]
fn a_dry_pool_shortens_the_burst_and_is_counted() {
    let f = ReplayFixture::streaming();
    let p = pool("small", 40);
    let mut q = qp(&f.ports[0], &p, 0, 32);
    let mut a = MbufArray::with_capacity(64);
    assert_eq!(q.rx[0].rx_burst(&mut a), 40, "what the pool had");
    assert_eq!(q.rx[0].rx_burst(&mut a), 0);
    assert_eq!(q.rx[0].counters().nombuf.get(), 24 + 24);
    assert_eq!(f.ports[0].stats().nombuf, 48);
    a.clear();
    assert_eq!(q.rx[0].rx_burst(&mut a), 40, "and resumes");
}

#[test]
fn frames_that_do_not_fit_the_pool_are_refused() {
    let f = ReplayFixture::streaming();
    let small = Mempool::new(MempoolConfig {
        data_room: 64,
        cache_size: 0,
        hugepages: ibpoll_mem::HugepagePolicy::Never,
        ..MempoolConfig::new("tiny", 64)
    })
    .unwrap();
    let mut cfg = UdQpConfig::new(small.clone(), 0, QKEY);
    cfg.rx_ring_size = 32;
    cfg.tx_ring_size = 32;
    match f.ports[0].create_ud_qp(&cfg) {
        Err(ibpoll_dev::Error::QpConfig { field, value, .. }) => {
            assert_eq!((field, value), ("pool", 68));
        }
        other => panic!("68-byte frames in 64-byte buffers: {other:?}"),
    }
    assert_eq!(small.in_use(), 0);
    // A send-only QP replays nothing and needs no room.
    cfg.rx_ring_size = 0;
    assert!(f.ports[0].create_ud_qp(&cfg).is_ok());
}

#[test]
fn a_send_completes_after_every_send_before_it_even_through_a_slow_wrapped_queue() {
    // The wrapped port holds sends 2 to 4 ticks before they complete.
    let f = ReplayFixture::with(true, |p| {
        Backpressure::new(p, BackpressureConfig::new(7).accept(32, 32).delay(2, 4)) as Arc<dyn Port>
    });
    let p = pool("p", 256);
    let receiver = qp(&f.ports[1], &p, 1, 64);
    let mut cfg = UdQpConfig::new(p.clone(), 1, QKEY);
    cfg.rx_ring_size = 0;
    let mut tx = f.ports[0].create_ud_qp(&cfg).unwrap().tx;
    let dst = dst_to(&f.ports[0], &f.ports[1], &receiver);
    let mut pkts = array(vec![
        packet(&p, ipoib::EtherType::IPV4, 0),
        packet(&p, ipoib::EtherType::ARP, 1),
        packet(&p, ipoib::EtherType::IPV4, 2),
    ]);
    assert_eq!(tx.tx_burst(&mut pkts, &[dst; 3]), 3);
    assert_eq!(tx.completed(), 1, "the first is done; the ARP is not yet");
    let mut last = 1;
    for _ in 0..10 {
        let c = tx.completed();
        assert!(
            c >= last && (c == 1 || c == 3),
            "in order, never past the ARP: {c}"
        );
        last = c;
    }
    assert_eq!(last, 3, "all done once the wrapped queue completed the ARP");
}
