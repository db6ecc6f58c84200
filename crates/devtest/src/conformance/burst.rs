//! Bursts, back-pressure and completions.

use ibpoll_dev::TxDst;
use ibpoll_mem::{MbufArray, MBUF_F_GRH, MBUF_F_MCAST};
use ibpoll_wire::{grh, QKey};

use super::kit::{self, Sender, Side, BURST};
use super::Fixture;

/// 200 numbered packets from a QP on one port to a QP on the other, in bursts: each
/// arrives once, in order, with its payload, the sender's QPN and LID and no multicast
/// flag, after a 40-byte GRH area; the counters agree; every sent buffer is home once
/// its send completed (or, for a driver that hands the buffer itself to the receiver,
/// once the receiver let go of it) and every received one once the QP is gone.
pub fn unicast_bursts_account_for_every_buffer<F: Fixture + ?Sized>(f: &F) {
    const COUNT: u32 = 200;
    let [a, b] = Side::both(f);
    let (pi_a, pi_b) = kit::common_partition(&a.attr, &b.attr);
    let (tx_pool, rx_pool) = (f.pool("conf-tx", 512), f.pool("conf-rx", 1024));
    let a_pool = f.pool("conf-a-rx", 128);
    let qa = a.qp(&Side::qp_config(&a_pool, pi_a, 64));
    let mut qb = b.qp(&Side::qp_config(&rx_pool, pi_b, 256));
    let ah = a.ah_to(&b, false);
    let mut s = Sender::new(qa.tx);
    let dst = kit::to(ah, qb.qpn);
    let mut got = Vec::new();
    for first in (0..COUNT).step_by(BURST) {
        let n = (COUNT - first).min(BURST as u32);
        s.send_completed(kit::numbered(&tx_pool, first, n, 7, dst), f.patience());
        got.extend(kit::recv(&mut *qb.rx[0], n as usize, f.patience()));
    }
    s.wait_completed(f.patience());
    assert_eq!(
        tx_pool.in_use(),
        kit::held_from(&got, &tx_pool),
        "every completed send's buffer is home, or received (a driver that hands the \
         sent buffer over, as a ring does)"
    );
    let seqs: Vec<u32> = got
        .iter()
        .filter_map(|m| kit::seq_tag(m).map(|x| x.0))
        .collect();
    assert_eq!(
        seqs,
        (0..COUNT).collect::<Vec<_>>(),
        "each packet once, in order"
    );
    for m in &got {
        let meta = m.meta();
        assert_eq!(meta.src_qpn, qa.qpn.get(), "source QPN");
        if a.attr.link_layer == ibpoll_dev::LinkLayer::InfiniBand {
            assert_eq!(meta.slid, a.attr.lid.0, "source LID");
        }
        assert_eq!(
            meta.flags & MBUF_F_MCAST,
            0,
            "unicast is not flagged multicast"
        );
        assert!(
            m.data_offset() >= grh::HEADER_LEN,
            "a GRH area before the data"
        );
        assert_eq!(kit::seq_tag(m).map(|x| x.1), Some(7), "payload intact");
    }
    let (rxc, txc) = (qb.rx[0].counters(), s.tx.counters());
    assert_eq!(rxc.packets.get(), u64::from(COUNT), "rx packets");
    assert_eq!(
        rxc.bytes.get(),
        u64::from(COUNT) * 12,
        "rx bytes from the IPoIB header"
    );
    assert_eq!(txc.packets.get(), u64::from(COUNT), "tx packets");
    assert_eq!(txc.bytes.get(), u64::from(COUNT) * 12, "tx bytes");
    assert_eq!(txc.errors.get(), 0, "tx errors");
    drop(got);
    assert_eq!(tx_pool.in_use(), 0, "every sent buffer is home");
    drop(qb);
    drop(s);
    // SAFETY: every send naming `ah` completed, and its queue is gone.
    unsafe { kit::destroy_ah(&*a.port, ah) };
    assert_eq!(
        rx_pool.in_use(),
        0,
        "every receive buffer is home once the QPs are gone"
    );
}

/// An IPv4-mapped GID (`::ffff:a.b.c.d`): a RoCE v2 port's GID of an IPv4 address.
fn is_ipv4_mapped(g: &ibpoll_wire::Gid) -> bool {
    g.0[..10].iter().all(|&b| b == 0) && g.0[10..12] == [0xff, 0xff]
}

/// `rx_burst` appends after what the array holds and takes no more than its room.
pub fn rx_burst_fills_only_its_room<F: Fixture + ?Sized>(f: &F) {
    let [a, b] = Side::both(f);
    let (pi_a, pi_b) = kit::common_partition(&a.attr, &b.attr);
    let pool = f.pool("conf-room", 512);
    let qa = a.qp(&Side::qp_config(&pool, pi_a, 64));
    let mut qb = b.qp(&Side::qp_config(&pool, pi_b, 64));
    let ah = a.ah_to(&b, false);
    let mut s = Sender::new(qa.tx);
    s.send_completed(
        kit::numbered(&pool, 0, 10, 1, kit::to(ah, qb.qpn)),
        f.patience(),
    );
    s.wait_completed(f.patience());

    let mut small = MbufArray::with_capacity(6);
    for i in 100..102 {
        let _ = small.push(kit::packet(&pool, i, 9));
    }
    let deadline = std::time::Instant::now() + f.patience();
    while small.len() < 6 && std::time::Instant::now() < deadline {
        let before = small.len();
        let n = qb.rx[0].rx_burst(&mut small);
        assert!(
            n <= 6 - before,
            "rx_burst took {n} with room {}",
            6 - before
        );
        assert_eq!(small.len(), before + n, "rx_burst appends what it counts");
    }
    let seqs: Vec<u32> = small
        .as_slice()
        .iter()
        .filter_map(|m| kit::seq_tag(m).map(|x| x.0))
        .collect();
    assert_eq!(
        seqs,
        [100, 101, 0, 1, 2, 3],
        "appended after what was there"
    );
    assert_eq!(
        qb.rx[0].rx_burst(&mut small),
        0,
        "a full array takes nothing"
    );
    let rest = kit::recv(&mut *qb.rx[0], 6, f.patience());
    assert_eq!(rest.len(), 6, "the rest waited for the next burst");
    drop((small, rest, s));
    // SAFETY: every send naming `ah` completed.
    unsafe { kit::destroy_ah(&*a.port, ah) };
}

/// Bursts four times the send queue's size without polling completions: a burst takes
/// from the front, what it leaves stays in the caller's array in order, no more sends are
/// outstanding than the queue holds, and retrying after completions sends everything,
/// in order.
pub fn full_send_queue_keeps_the_rest_in_order<F: Fixture + ?Sized>(f: &F) {
    const RING: u32 = 32;
    let [a, b] = Side::both(f);
    let (pi_a, pi_b) = kit::common_partition(&a.attr, &b.attr);
    let (tx_pool, rx_pool) = (f.pool("conf-bp-tx", 512), f.pool("conf-bp-rx", 512));
    let mut cfg = Side::qp_config(&rx_pool, pi_a, 64);
    cfg.tx_ring_size = RING;
    let qa = a.qp(&cfg);
    let mut qb = b.qp(&Side::qp_config(&rx_pool, pi_b, 256));
    let ah = a.ah_to(&b, false);
    let mut s = Sender::new(qa.tx);
    let count = 4 * RING;
    let mut pkts = MbufArray::with_capacity(count as usize);
    let mut dst: Vec<TxDst> = Vec::new();
    for (m, d) in kit::numbered(&tx_pool, 0, count, 3, kit::to(ah, qb.qpn)) {
        let _ = pkts.push(m);
        dst.push(d);
    }
    // One burst without polling: `Sender::burst` checks front-taking and the order of
    // what is left.
    s.burst(&mut pkts, &mut dst);
    let outstanding = s.posted - s.completed();
    assert!(
        outstanding <= u64::from(RING),
        "{outstanding} outstanding in a ring of {RING}"
    );
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + f.patience();
    while !pkts.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} never sent",
            pkts.len()
        );
        if s.burst(&mut pkts, &mut dst) == 0 {
            s.completed();
        }
        let outstanding = s.posted - s.completed();
        assert!(outstanding <= u64::from(RING), "{outstanding} outstanding");
        got.extend(kit::recv(&mut *qb.rx[0], 0, std::time::Duration::ZERO));
    }
    s.wait_completed(f.patience());
    got.extend(kit::recv(
        &mut *qb.rx[0],
        count as usize - got.len(),
        f.patience(),
    ));
    let seqs: Vec<u32> = got
        .iter()
        .filter_map(|m| kit::seq_tag(m).map(|x| x.0))
        .collect();
    assert_eq!(seqs, (0..count).collect::<Vec<_>>(), "everything, in order");
    assert_eq!(tx_pool.in_use(), kit::held_from(&got, &tx_pool));
    drop((got, s));
    assert_eq!(tx_pool.in_use(), 0);
    // SAFETY: every send naming `ah` completed.
    unsafe { kit::destroy_ah(&*a.port, ah) };
}

/// `completed()` never falls, never passes what was posted, and reaches it; the
/// driver's completion counter agrees once it has.
pub fn completions_count_in_order<F: Fixture + ?Sized>(f: &F) {
    let [a, b] = Side::both(f);
    let (pi_a, pi_b) = kit::common_partition(&a.attr, &b.attr);
    let pool = f.pool("conf-compl", 1024);
    let qa = a.qp(&Side::qp_config(&pool, pi_a, 64));
    let mut qb = b.qp(&Side::qp_config(&pool, pi_b, 512));
    let ah = a.ah_to(&b, false);
    let mut s = Sender::new(qa.tx);
    assert_eq!(s.completed(), 0, "a new queue has completed nothing");
    for round in 0..8 {
        s.send_completed(
            kit::numbered(&pool, round * 40, 40, 2, kit::to(ah, qb.qpn)),
            f.patience(),
        );
        // `Sender::completed` checks the order and the bound on every poll.
        s.completed();
    }
    s.wait_completed(f.patience());
    assert_eq!(s.posted, 320);
    assert_eq!(
        s.tx.counters().completed.get(),
        320,
        "TxCounters::completed"
    );
    assert_eq!(kit::recv(&mut *qb.rx[0], 320, f.patience()).len(), 320);
    drop(s);
    // SAFETY: every send naming `ah` completed.
    unsafe { kit::destroy_ah(&*a.port, ah) };
}

/// A unicast send with global routing arrives flagged with a GRH whose GIDs and flow
/// label (where the wire carries one: not RoCE v2 over IPv4) are the sender's and the
/// handle's.
pub fn unicast_with_grh_carries_it<F: Fixture + ?Sized>(f: &F) {
    let [a, b] = Side::both(f);
    let (pi_a, pi_b) = kit::common_partition(&a.attr, &b.attr);
    let pool = f.pool("conf-grh", 256);
    let qa = a.qp(&Side::qp_config(&pool, pi_a, 64));
    let mut qb = b.qp(&Side::qp_config(&pool, pi_b, 64));
    let ah = a.ah_to(&b, true);
    let mut s = Sender::new(qa.tx);
    s.send_completed(
        kit::numbered(&pool, 0, 1, 4, kit::to(ah, qb.qpn)),
        f.patience(),
    );
    let got = kit::recv(&mut *qb.rx[0], 1, f.patience());
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert_eq!(m.meta().flags & (MBUF_F_GRH | MBUF_F_MCAST), MBUF_F_GRH);
    let off = m.data_offset();
    let g = grh::Packet::new_checked(&m.buf()[off - grh::HEADER_LEN..off])
        .and_then(|p| grh::Repr::parse(&p))
        .expect("a GRH in the 40 bytes before the data");
    assert_eq!((g.sgid, g.dgid), (a.gid(), b.gid()));
    // RoCE v2 over IPv4 (IPv4-mapped GIDs) carries an IPv4 header, which has no flow
    // label: only an IPv6 header or a GRH brings it across.
    if !is_ipv4_mapped(&a.gid()) {
        assert_eq!(g.flow_label, 0x1_2345);
    }
    assert_eq!(g.next_header, grh::NXT_HDR_IBA);
    s.wait_completed(f.patience());
    drop((got, s));
    // SAFETY: every send naming `ah` completed.
    unsafe { kit::destroy_ah(&*a.port, ah) };
}

/// A send whose Q_Key is not the receiver's is dropped (and still completes); after
/// `set_qp_qkey` the new Q_Key gets through; a controlled Q_Key (high bit set) sends
/// with the sending QP's own.
pub fn qkey_mismatch_is_dropped<F: Fixture + ?Sized>(f: &F) {
    let [a, b] = Side::both(f);
    let (pi_a, pi_b) = kit::common_partition(&a.attr, &b.attr);
    let pool = f.pool("conf-qkey", 256);
    let qa = a.qp(&Side::qp_config(&pool, pi_a, 64));
    let mut qb = b.qp(&Side::qp_config(&pool, pi_b, 64));
    let ah = a.ah_to(&b, false);
    let mut s = Sender::new(qa.tx);
    let wrong = TxDst {
        ah,
        qpn: qb.qpn,
        qkey: QKey(0x1234),
    };
    s.send_completed(kit::numbered(&pool, 0, 2, 1, wrong), f.patience());
    s.wait_completed(f.patience());
    assert!(
        kit::recv(&mut *qb.rx[0], 1, f.quiet()).is_empty(),
        "wrong Q_Key dropped"
    );

    b.port
        .set_qp_qkey(qb.qpn, QKey(0x1234))
        .expect("set_qp_qkey");
    s.send_completed(kit::numbered(&pool, 2, 1, 1, wrong), f.patience());
    let got = kit::recv(&mut *qb.rx[0], 1, f.patience());
    assert_eq!(
        got.iter().filter_map(kit::seq_tag).collect::<Vec<_>>(),
        [(2, 1)]
    );

    // Controlled: the sender's own Q_Key (the tests' QKEY), which b no longer has.
    let own = TxDst {
        qkey: QKey(0x8000_0000),
        ..wrong
    };
    s.send_completed(kit::numbered(&pool, 3, 1, 1, own), f.patience());
    assert!(
        kit::recv(&mut *qb.rx[0], 1, f.quiet()).is_empty(),
        "controlled Q_Key"
    );
    a.port
        .set_qp_qkey(qa.qpn, QKey(0x1234))
        .expect("set_qp_qkey");
    s.send_completed(kit::numbered(&pool, 4, 1, 1, own), f.patience());
    assert_eq!(
        kit::recv(&mut *qb.rx[0], 1, f.patience()).len(),
        1,
        "now they agree"
    );
    s.wait_completed(f.patience());
    drop((got, s));
    // SAFETY: every send naming `ah` completed.
    unsafe { kit::destroy_ah(&*a.port, ah) };
}
