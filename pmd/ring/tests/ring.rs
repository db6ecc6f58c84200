//! What the ring pair does beyond the contract: the mbuf itself is handed over (no copy,
//! no switch), a full ring is back-pressure, multicast copies for all receivers but the
//! first, what cannot be placed is freed and counted, and a gone QP's rings.

mod common;

use std::sync::Arc;

use common::{pool, RingFixture};
use ibpoll_dev::{AddressHandle, AhAttr, Port, RxQueue, TxDst, TxQueue, UdQp, UdQpConfig};
use ibpoll_mem::{Mbuf, MbufArray, Mempool, MBUF_F_GRH, MBUF_F_MCAST};
use ibpoll_wire::{Lid, QKey, Qpn};

const QKEY: QKey = QKey::IPOIB_DEFAULT;

/// A QP on `port` with `rx` receive buffers (0: send-only) from `pool`.
fn qp(port: &Arc<dyn Port>, pool: &Mempool, rx: u32) -> UdQp {
    let mut cfg = UdQpConfig::new(pool.clone(), 0, QKEY);
    cfg.rx_ring_size = rx;
    cfg.tx_ring_size = 256;
    port.create_ud_qp(&cfg).expect("a valid QP")
}

/// An address handle on `from` to `to`'s LID.
fn ah_to(from: &Arc<dyn Port>, lid: Lid) -> AddressHandle {
    from.create_ah(&AhAttr {
        dlid: lid,
        sl: 0,
        src_path_bits: 0,
        static_rate: ibpoll_wire::Rate::GBPS_10,
        grh: None,
    })
    .expect("an address handle")
}

/// A packet of `len` bytes from `pool`: an IPoIB header (test ethertype), then `seq`.
fn packet(pool: &Mempool, seq: u32, len: usize) -> Mbuf {
    let mut m = pool.alloc().expect("a free buffer");
    let d = m.append(len.max(8)).expect("room");
    d[..4].copy_from_slice(&[0x88, 0xB5, 0, 0]);
    d[4..8].copy_from_slice(&seq.to_be_bytes());
    m.trim(8usize.saturating_sub(len));
    m
}

fn seq_of(m: &Mbuf) -> u32 {
    let d = m.data();
    u32::from_be_bytes([d[4], d[5], d[6], d[7]])
}

/// Offers `pkts` (each to `dst`) once; how many were taken.
fn send(tx: &mut dyn TxQueue, pkts: &mut MbufArray, dst: TxDst) -> usize {
    let dsts = vec![dst; pkts.len()];
    tx.tx_burst(pkts, &dsts)
}

fn burst(pool: &Mempool, seqs: std::ops::Range<u32>) -> MbufArray {
    let mut a = MbufArray::with_capacity(seqs.len().max(1));
    for s in seqs {
        a.push(packet(pool, s, 64)).expect("sized");
    }
    a
}

fn drain(rx: &mut dyn RxQueue) -> Vec<Mbuf> {
    let mut out = Vec::new();
    let mut a = MbufArray::with_capacity(32);
    while rx.rx_burst(&mut a) > 0 {
        let n = a.len();
        out.extend(a.drain_front(n));
    }
    out
}

#[test]
fn the_sent_buffer_itself_arrives_and_the_switch_sees_nothing() {
    let f = RingFixture::new();
    let [a, b] = f.ports.clone();
    let (pa, pb) = (pool("a", 64), pool("b", 64));
    let mut qa = qp(&a, &pa, 32);
    let mut qb = qp(&b, &pb, 32);
    let dst = TxDst {
        ah: ah_to(&a, b.attr().lid),
        qpn: qb.qpn,
        qkey: QKEY,
    };
    let mut pkts = burst(&pa, 0..8);
    let addrs: Vec<usize> = pkts.as_slice().iter().map(Mbuf::buf_addr).collect();
    let before = f.fabric.stats();
    assert_eq!(send(&mut *qa.tx, &mut pkts, dst), 8);
    assert_eq!(qa.tx.completed(), 8, "completions are immediate");
    let got = drain(&mut *qb.rx[0]);
    assert_eq!(
        got.iter().map(Mbuf::buf_addr).collect::<Vec<_>>(),
        addrs,
        "the very buffers, in order"
    );
    assert!(
        got.iter().all(|m| m.pool_id() == pa.id()),
        "the sender's pool"
    );
    assert_eq!(
        got.iter().map(seq_of).collect::<Vec<_>>(),
        (0..8).collect::<Vec<_>>()
    );
    for m in &got {
        assert_eq!(m.meta().src_qpn, qa.qpn.get());
        assert_eq!(m.meta().slid, a.attr().lid.0);
        assert_eq!(m.meta().flags, 0);
        assert_eq!(m.meta().port, 1);
    }
    let after = f.fabric.stats();
    assert_eq!(after.sent, before.sent, "nothing went through the switch");
    assert_eq!(
        pb.in_use(),
        0,
        "the receiver's pool is not touched by unicast"
    );
    drop(got);
    assert_eq!(pa.in_use(), 0);
    assert!(drain(&mut *qa.rx[0]).is_empty());
}

#[test]
fn a_full_ring_is_back_pressure_and_keeps_the_order() {
    let f = RingFixture::new();
    let [a, b] = f.ports.clone();
    let (pa, pb) = (pool("a", 256), pool("b", 64));
    let mut qa = qp(&a, &pa, 32);
    let mut qb = qp(&b, &pb, 32);
    let dst = TxDst {
        ah: ah_to(&a, b.attr().lid),
        qpn: qb.qpn,
        qkey: QKEY,
    };
    let mut pkts = burst(&pa, 0..100);
    assert_eq!(send(&mut *qa.tx, &mut pkts, dst), 32, "the ring holds 32");
    assert_eq!(pkts.len(), 68, "the rest stays with the caller");
    assert_eq!(seq_of(&pkts[0]), 32, "from the front");
    assert_eq!(send(&mut *qa.tx, &mut pkts, dst), 0, "still full");
    let mut got: Vec<u32> = Vec::new();
    let mut small = MbufArray::with_capacity(10);
    assert_eq!(qb.rx[0].rx_burst(&mut small), 10);
    got.extend(small.drain_front(10).map(|m| seq_of(&m)));
    assert_eq!(send(&mut *qa.tx, &mut pkts, dst), 10, "room for 10 again");
    while !pkts.is_empty() {
        got.extend(drain(&mut *qb.rx[0]).iter().map(seq_of));
        send(&mut *qa.tx, &mut pkts, dst);
    }
    got.extend(drain(&mut *qb.rx[0]).iter().map(seq_of));
    assert_eq!(got, (0..100).collect::<Vec<_>>(), "everything, in order");
    assert_eq!(qa.tx.completed(), 100);
    assert_eq!(f.pair.stats().dropped(), 0, "back-pressure drops nothing");
    assert_eq!(pa.in_use(), 0);
}

#[test]
fn what_cannot_be_placed_is_freed_and_counted() {
    let f = RingFixture::new();
    let [a, b] = f.ports.clone();
    let pa = pool("a", 256);
    let mut qa = qp(&a, &pa, 32);
    let qb = qp(&b, &pa, 32);
    let send_only = qp(&b, &pa, 0);
    let ah = ah_to(&a, b.attr().lid);
    let nowhere = ah_to(&a, Lid(0x0999));
    let to = |qpn: Qpn, qkey: QKey| TxDst { ah, qpn, qkey };
    let cases = [
        (to(Qpn::from_bits(0x00FF_FF00), QKEY), 2, "unknown QPN"),
        (to(qb.qpn, QKey(0x1234)), 3, "Q_Key"),
        (to(send_only.qpn, QKEY), 4, "send-only receiver"),
        (
            TxDst {
                ah: nowhere,
                qpn: qb.qpn,
                qkey: QKEY,
            },
            5,
            "unknown LID",
        ),
    ];
    for (dst, n, what) in cases {
        let mut pkts = burst(&pa, 0..n);
        assert_eq!(
            send(&mut *qa.tx, &mut pkts, dst),
            n as usize,
            "{what}: taken"
        );
    }
    // Send errors: shorter than the IPoIB header, longer than the path MTU, no room
    // for the GRH area before the data.
    let mut bad = MbufArray::with_capacity(3);
    bad.push(packet(&pa, 0, 2)).unwrap();
    let mut long = pa.alloc().unwrap();
    assert!(long.set_data(44, 4100), "longer than the 4096-byte MTU");
    bad.push(long).unwrap();
    let mut early = packet(&pa, 1, 16);
    assert!(early.set_data(8, 16));
    bad.push(early).unwrap();
    assert_eq!(send(&mut *qa.tx, &mut bad, to(qb.qpn, QKEY)), 3);
    let s = f.pair.stats();
    assert_eq!(
        (s.unknown_qpn, s.qkey, s.no_receive_queue, s.unknown_lid),
        (2, 3, 4, 5)
    );
    assert_eq!((s.malformed, s.too_long, s.no_headroom), (1, 1, 1));
    assert_eq!(s.dropped(), 17);
    assert_eq!(
        qa.tx.counters().errors.get(),
        3,
        "send errors complete in error"
    );
    assert_eq!(qa.tx.completed(), 17);
    assert_eq!(pa.in_use(), 0, "every buffer freed");
}

#[test]
fn multicast_copies_for_all_but_the_first_receiver() {
    let f = RingFixture::new();
    let g = f.group;
    let [a, b] = f.ports.clone();
    let (pa, pb1, pb2) = (pool("a", 64), pool("b1", 64), pool("b2", 64));
    let member = |port: &Arc<dyn Port>, p: &Mempool| {
        let q = qp(port, p, 32);
        port.attach_mcast(q.qpn, &g.mgid, g.mlid).expect("attach");
        q
    };
    let mut a1 = member(&a, &pa);
    let mut b1 = member(&b, &pb1);
    let mut b2 = member(&b, &pb2);
    let dst = TxDst {
        ah: a.create_ah(&g.ah).expect("group AH"),
        qpn: Qpn::MULTICAST,
        qkey: g.qkey,
    };
    let mut pkts = burst(&pa, 0..4);
    let addrs: Vec<usize> = pkts.as_slice().iter().map(Mbuf::buf_addr).collect();
    assert_eq!(send(&mut *a1.tx, &mut pkts, dst), 4);
    let got = [&mut a1, &mut b1, &mut b2].map(|q| drain(&mut *q.rx[0]));
    let mut originals = 0;
    for (who, g_got) in got.iter().enumerate() {
        assert_eq!(
            g_got.iter().map(seq_of).collect::<Vec<_>>(),
            [0, 1, 2, 3],
            "receiver {who} (the sender itself is 0: loopback)"
        );
        for m in g_got {
            assert_eq!(m.meta().flags, MBUF_F_GRH | MBUF_F_MCAST);
            assert_eq!(m.meta().src_qpn, a1.qpn.get());
            let off = m.data_offset();
            let h = ibpoll_wire::grh::Packet::new_checked(&m.buf()[off - 40..off])
                .and_then(|p| ibpoll_wire::grh::Repr::parse(&p))
                .expect("a GRH");
            assert_eq!(h.dgid, g.mgid);
            assert_eq!(h.sgid, a.attr().gid);
            if addrs.contains(&m.buf_addr()) {
                originals += 1;
            }
        }
    }
    assert_eq!(originals, 4, "each packet itself reached one receiver");
    assert_eq!(f.pair.stats().mcast_copies, 8, "two copies of each");
    assert_eq!(pb1.in_use() + pb2.in_use() + pa.in_use(), 12);
    drop(got);
    assert_eq!(pb1.in_use() + pb2.in_use() + pa.in_use(), 0);
}

#[test]
fn a_gone_receivers_rings_are_counted_and_a_gone_senders_are_drained() {
    let f = RingFixture::new();
    let [a, b] = f.ports.clone();
    let pa = pool("a", 128);
    let qa = qp(&a, &pa, 32);
    let qb = qp(&b, &pa, 32);
    let dst = TxDst {
        ah: ah_to(&a, b.attr().lid),
        qpn: qb.qpn,
        qkey: QKEY,
    };
    let UdQp { mut tx, .. } = qa;
    assert_eq!(send(&mut *tx, &mut burst(&pa, 0..5), dst), 5);
    drop(qb);
    assert_eq!(pa.in_use(), 0, "the receiver's rings went with it");
    assert_eq!(f.pair.stats().receiver_gone, 5);
    assert_eq!(send(&mut *tx, &mut burst(&pa, 0..2), dst), 2);
    assert_eq!(f.pair.stats().unknown_qpn, 2, "the QP is gone");

    // A sender that goes with packets in flight: they still arrive.
    let mut qc = qp(&b, &pa, 32);
    let to_c = TxDst { qpn: qc.qpn, ..dst };
    assert_eq!(send(&mut *tx, &mut burst(&pa, 10..13), to_c), 3);
    drop(tx);
    let got = drain(&mut *qc.rx[0]);
    assert_eq!(got.iter().map(seq_of).collect::<Vec<_>>(), [10, 11, 12]);
    drop(got);
    assert_eq!(pa.in_use(), 0);
}

#[test]
fn a_port_down_drops_what_is_sent_to_it_once_its_event_is_polled() {
    let f = RingFixture::new();
    let [a, b] = f.ports.clone();
    let pa = pool("a", 64);
    let mut qa = qp(&a, &pa, 32);
    let mut qb = qp(&b, &pa, 32);
    let dst = TxDst {
        ah: ah_to(&a, b.attr().lid),
        qpn: qb.qpn,
        qkey: QKEY,
    };
    f.fabric.set_port_up(f.devs[1].port_id(1), false);
    while b.poll_event().is_some() {}
    assert_eq!(send(&mut *qa.tx, &mut burst(&pa, 0..3), dst), 3);
    assert_eq!(f.pair.stats().port_down, 3);
    f.fabric.set_port_up(f.devs[1].port_id(1), true);
    while b.poll_event().is_some() {}
    assert_eq!(send(&mut *qa.tx, &mut burst(&pa, 3..4), dst), 1);
    assert_eq!(
        drain(&mut *qb.rx[0]).iter().map(seq_of).collect::<Vec<_>>(),
        [3]
    );
}

#[test]
fn a_sender_and_a_receiver_on_two_threads_lose_nothing() {
    const N: u32 = 200_000;
    let f = RingFixture::new();
    let [a, b] = f.ports.clone();
    let pa = pool("a", 1024);
    let qa = qp(&a, &pa, 0);
    let mut qb = qp(&b, &pa, 256);
    let dst = TxDst {
        ah: ah_to(&a, b.attr().lid),
        qpn: qb.qpn,
        qkey: QKEY,
    };
    let mut tx = qa.tx;
    let p = pa.clone();
    let sender = std::thread::spawn(move || {
        let mut next = 0;
        let mut pkts = MbufArray::with_capacity(32);
        let dsts = vec![dst; 32];
        while next < N || !pkts.is_empty() {
            while next < N && !pkts.is_full() {
                let Some(m) = p.alloc() else { break };
                let mut m = m;
                m.append(8).unwrap()[4..].copy_from_slice(&next.to_be_bytes());
                pkts.push(m).unwrap();
                next += 1;
            }
            if tx.tx_burst(&mut pkts, &dsts) == 0 {
                std::thread::yield_now();
            }
        }
        tx.completed()
    });
    let mut expect = 0;
    let mut a = MbufArray::with_capacity(32);
    while expect < N {
        if qb.rx[0].rx_burst(&mut a) == 0 {
            std::thread::yield_now();
        }
        for m in a.as_slice() {
            assert_eq!(seq_of(m), expect, "in order");
            expect += 1;
        }
        a.clear();
    }
    assert_eq!(sender.join().unwrap(), u64::from(N));
    assert_eq!(qb.rx[0].counters().packets.get(), u64::from(N));
    assert_eq!(f.pair.stats().dropped(), 0);
    assert_eq!(pa.in_use(), 0);
}

#[test]
fn routes_to_one_ring_share_its_room_and_a_full_member_holds_a_group_back() {
    let f = RingFixture::new();
    let g = f.group;
    let [a, b] = f.ports.clone();
    let (pa, pb) = (pool("a", 256), pool("b", 256));
    let mut qa = qp(&a, &pa, 0);
    let mut b1 = qp(&b, &pb, 32);
    b.attach_mcast(b1.qpn, &g.mgid, g.mlid).expect("attach");
    let unicast = TxDst {
        ah: ah_to(&a, b.attr().lid),
        qpn: b1.qpn,
        qkey: g.qkey,
    };
    let group = TxDst {
        ah: a.create_ah(&g.ah).expect("group AH"),
        qpn: Qpn::MULTICAST,
        qkey: g.qkey,
    };
    // 48 packets alternating between the two routes, both into b1's one ring of 32.
    let mut pkts = burst(&pa, 0..48);
    let dsts: Vec<TxDst> = (0..48)
        .map(|i| if i % 2 == 0 { unicast } else { group })
        .collect();
    assert_eq!(
        qa.tx.tx_burst(&mut pkts, &dsts),
        32,
        "the ring's room, shared"
    );
    assert_eq!(f.pair.stats().dropped(), 0, "nothing over-reserved");
    // A second member with room: the group is still held back by the full one.
    let mut b2 = qp(&b, &pb, 64);
    b.attach_mcast(b2.qpn, &g.mgid, g.mlid).expect("attach");
    let mut more = burst(&pa, 100..101);
    assert_eq!(qa.tx.tx_burst(&mut more, &[group]), 0, "b1 is full");
    let got = drain(&mut *b1.rx[0]);
    assert_eq!(
        got.iter().map(seq_of).collect::<Vec<_>>(),
        (0..32).collect::<Vec<_>>()
    );
    assert_eq!(qa.tx.tx_burst(&mut more, &[group]), 1);
    assert_eq!(drain(&mut *b1.rx[0]).len(), 1);
    assert_eq!(drain(&mut *b2.rx[0]).len(), 1);
    assert_eq!(f.pair.stats().dropped(), 0);
    drop(got);
    let _ = qa.tx.completed();
}

#[test]
fn a_group_larger_than_a_burst_reserves_for_waits_for_its_first_member_only() {
    let f = RingFixture::new();
    let g = f.group;
    let [a, b] = f.ports.clone();
    let (pa, pb) = (pool("a", 128), pool("b", 1024));
    let mut qa = qp(&a, &pa, 0);
    let mut members: Vec<UdQp> = (0..10)
        .map(|_| {
            let q = qp(&b, &pb, 32);
            b.attach_mcast(q.qpn, &g.mgid, g.mlid).expect("attach");
            q
        })
        .collect();
    let group = TxDst {
        ah: a.create_ah(&g.ah).expect("group AH"),
        qpn: Qpn::MULTICAST,
        qkey: g.qkey,
    };
    let mut pkts = burst(&pa, 0..40);
    assert_eq!(
        qa.tx.tx_burst(&mut pkts, &vec![group; 40]),
        32,
        "the first member's room"
    );
    assert_eq!(f.pair.stats().dropped(), 0, "{:?}", f.pair.stats());
    // The first member drains; the others stay full: its next packet goes, and the
    // copies for the nine full rings are dropped, counted.
    let first: Vec<usize> = members
        .iter_mut()
        .map(|q| drain(&mut *q.rx[0]).len())
        .take(1)
        .collect();
    assert_eq!(first, [32]);
    let mut one = burst(&pa, 40..41);
    assert_eq!(qa.tx.tx_burst(&mut one, &[group]), 1);
    assert_eq!(f.pair.stats().overrun, 9);
    let got: Vec<usize> = members
        .iter_mut()
        .map(|q| drain(&mut *q.rx[0]).len())
        .collect();
    assert_eq!(got, [1, 32, 32, 32, 32, 32, 32, 32, 32, 32]);
    assert_eq!(pkts.len(), 8, "what the first burst left");
    drop(pkts);
    assert_eq!(pa.in_use() + pb.in_use(), 0);
}
