//! The switch: unicast by LID and QPN, the completion metadata and GRH a receiver
//! finds, every drop reason with its counter, and what happens to the sender's and the
//! receiver's buffers.

mod common;

use common::{Host, QpOpts};
use ibpoll_dev::Error as DevError;
use ibpoll_mem::{MBUF_F_GRH, MBUF_F_MCAST};
use ibpoll_pmd_sim::{FabricConfig, SimFabric};
use ibpoll_wire::{bth, crc, grh, ipoib, IbMtu, Lid, PKey, QKey, Qpn};

fn fabric() -> SimFabric {
    SimFabric::new(FabricConfig::default())
}

/// The GRH in the 40 bytes before a received packet's data.
fn grh_before(m: &ibpoll_mem::Mbuf) -> grh::Repr {
    let off = m.data_offset();
    assert!(off >= grh::HEADER_LEN, "room for the GRH before the data");
    let area = &m.buf()[off - grh::HEADER_LEN..off];
    grh::Repr::parse(&grh::Packet::new_checked(area).expect("40 bytes")).expect("a GRH")
}

/// The drop counters that are not zero, by name.
fn drops(f: &SimFabric) -> Vec<(&'static str, u64)> {
    f.stats().drops().filter(|(_, n)| *n > 0).collect()
}

#[test]
fn unicast_goes_to_the_qp_named_with_source_qpn_and_slid() {
    let f = fabric();
    let mut a = Host::new(&f, "a");
    let mut b = Host::new(&f, "b");
    let mut b2 = b.new_qp(&QpOpts::default());
    let to_b = a.ah(b.lid());

    a.send_one(b"to the second QP", to_b, b2.qpn);
    assert!(
        b.qp.recv().is_empty(),
        "only the QP named by DestQP receives"
    );
    let got = b2.recv();
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert_eq!(common::body(m), b"to the second QP");
    assert_eq!(m.data()[..2], ipoib::EtherType(0x88B5).0.to_be_bytes());
    let meta = m.meta();
    assert_eq!(meta.src_qpn, a.qp.qpn.get());
    assert_eq!(meta.slid, a.lid().0);
    assert_eq!(meta.flags & MBUF_F_GRH, 0, "no GRH without global routing");
    assert_eq!(meta.flags & MBUF_F_MCAST, 0);

    a.send_one(b"to the first QP", to_b, b.qp.qpn);
    let got = b.qp.recv();
    assert_eq!(got.len(), 1);
    assert_eq!(common::body(&got[0]), b"to the first QP");
    assert!(b2.recv().is_empty());

    let s = f.stats();
    assert_eq!((s.sent, s.delivered, s.dropped()), (2, 2, 0));
    let (tx, rx) = (a.qp.tx.counters(), b.qp.rx[0].counters());
    assert_eq!(tx.packets.get(), 2);
    assert_eq!(tx.bytes.get(), (4 + 16 + 4 + 15) as u64);
    assert_eq!(tx.errors.get(), 0);
    assert_eq!(rx.packets.get(), 1);
    assert_eq!(rx.bytes.get(), (4 + 15) as u64);
}

#[test]
fn unicast_with_global_routing_carries_a_grh() {
    let f = fabric();
    let mut a = Host::new(&f, "a");
    let mut b = Host::new(&f, "b");
    let ah = a.ah_global(b.lid(), b.gid());
    let body = [7u8; 13]; // not a multiple of 4: PayLen counts the pad
    a.send_one(&body, ah, b.qp.qpn);
    let got = b.qp.recv();
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert_eq!(m.meta().flags & (MBUF_F_GRH | MBUF_F_MCAST), MBUF_F_GRH);
    let g = grh_before(m);
    assert_eq!(g.sgid, a.gid());
    assert_eq!(g.dgid, b.gid());
    assert_eq!(g.next_header, grh::NXT_HDR_IBA);
    assert_eq!(
        (g.traffic_class, g.flow_label, g.hop_limit),
        (0x20, 0x12345, 7)
    );
    let len = ipoib::HEADER_LEN + body.len();
    assert_eq!(
        usize::from(g.payload_len),
        12 + 8 + len + usize::from(bth::pad_count_for(len)) + crc::ICRC_LEN
    );
}

#[test]
fn multicast_carries_a_grh_with_the_mgid_and_the_senders_gid() {
    let f = fabric();
    let mut a = Host::new(&f, "a");
    let mut b = Host::new(&f, "b");
    let g = a.join_broadcast();
    b.join_broadcast();
    assert_eq!(g.mlid, Lid(0xC000));
    let ah = a.mcast_ah(&g);
    a.send_one(b"hello group", ah, Qpn::MULTICAST);
    let got = b.qp.recv();
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert_eq!(common::body(m), b"hello group");
    let meta = m.meta();
    assert_eq!(
        meta.flags & (MBUF_F_GRH | MBUF_F_MCAST),
        MBUF_F_GRH | MBUF_F_MCAST
    );
    assert_eq!(meta.src_qpn, a.qp.qpn.get());
    assert_eq!(meta.slid, a.lid().0);
    let h = grh_before(m);
    assert_eq!(h.dgid, g.mgid);
    assert_eq!(h.dgid, ipoib::broadcast_mgid(PKey::DEFAULT));
    assert_eq!(h.sgid, a.gid());
    assert_ne!(h.sgid, b.gid());
}

#[test]
fn qkey_mismatch_is_dropped_and_counted() {
    let f = fabric();
    let mut a = Host::new(&f, "a");
    let mut b = Host::new(&f, "b");
    let ah = a.ah(b.lid());
    let d = a.desc(b"x", ah, b.qp.qpn, QKey(0x1234));
    a.qp.send(vec![d]);
    // A controlled Q_Key (high bit set) means "the sender QP's own": 0x0B1B matches.
    let d = a.desc(b"y", ah, b.qp.qpn, QKey(0x8000_0000));
    a.qp.send(vec![d]);
    let got = b.qp.recv();
    assert_eq!(got.len(), 1);
    assert_eq!(common::body(&got[0]), b"y");
    assert_eq!(drops(&f), [("qkey_mismatch", 1)]);
    // UD is unreliable: the send itself completed.
    assert_eq!(a.qp.tx.counters().errors.get(), 0);
}

#[test]
fn pkey_mismatch_is_dropped_and_counted() {
    let f = SimFabric::new(FabricConfig {
        partitions: vec![PKey::DEFAULT, PKey(0x8001)],
        ..FabricConfig::default()
    });
    let mut a = Host::new(&f, "a");
    let b = Host::new(&f, "b");
    // b's port leaves partition 0x0001; its QP stays on 0xFFFF (index 0).
    f.set_pkeys(b.port_id(), vec![PKey::DEFAULT]);
    let mut b_qp = b.new_qp(&QpOpts::default());
    let mut a_8001 = a.new_qp(&QpOpts {
        pkey_index: 1,
        ..QpOpts::default()
    });
    assert_eq!(a.attr().pkeys[1], PKey(0x8001));
    let ah = a.ah(b.lid());

    let d = a.desc(b"partition 1", ah, b_qp.qpn, QKey::IPOIB_DEFAULT);
    a_8001.send(vec![d]);
    assert!(b_qp.recv().is_empty());
    assert_eq!(drops(&f), [("pkey_mismatch", 1)]);

    a.send_one(b"default partition", ah, b_qp.qpn);
    assert_eq!(b_qp.recv().len(), 1);
    assert_eq!(drops(&f), [("pkey_mismatch", 1)]);

    // Where the receiver's table has 0x8001, the same sender gets through.
    let c = Host::new(&f, "c");
    let mut c_8001 = c.new_qp(&QpOpts {
        pkey_index: 1,
        ..QpOpts::default()
    });
    let ah = a.ah(c.lid());
    let d = a.desc(b"partition 1 again", ah, c_8001.qpn, QKey::IPOIB_DEFAULT);
    a_8001.send(vec![d]);
    let got = c_8001.recv();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].meta().src_qpn, a_8001.qpn.get());
    assert_eq!(drops(&f), [("pkey_mismatch", 1)]);
}

#[test]
fn a_qp_moved_to_another_pkey_index_sends_and_receives_in_that_partition() {
    let f = SimFabric::new(FabricConfig {
        partitions: vec![PKey::DEFAULT, PKey(0x8001)],
        ..FabricConfig::default()
    });
    let mut a = Host::new(&f, "a");
    let mut b = Host::new(&f, "b");
    let ah = a.ah(b.lid());
    // a's table changes under its QP: index 0 is now 0x8001, the default moved to 1.
    f.set_pkeys(a.port_id(), vec![PKey(0x8001), PKey::DEFAULT]);
    a.send_one(b"wrong partition", ah, b.qp.qpn);
    assert!(b.qp.recv().is_empty());
    assert_eq!(drops(&f), [("pkey_mismatch", 1)]);

    // Bad indexes and unknown QPs are typed errors and change nothing.
    let e = a.qp.move_pkey_index(&*a.port, 2).unwrap_err();
    assert!(matches!(e, DevError::PkeyIndex { index: 2, .. }), "{e}");
    let e = b.qp.move_pkey_index(&*a.port, 1).unwrap_err();
    assert!(matches!(e, DevError::NoSuchQp { .. }), "{e}");
    a.send_one(b"still wrong", ah, b.qp.qpn);
    assert!(b.qp.recv().is_empty());
    assert_eq!(drops(&f), [("pkey_mismatch", 2)]);

    // Moved: same QPN, the default partition again, both ways.
    let flushed = a.qp.move_pkey_index(&*a.port, 1).expect("index 1 is valid");
    assert_eq!(flushed, 0, "nothing was waiting");
    a.send_one(b"right partition", ah, b.qp.qpn);
    let got = b.qp.recv();
    assert_eq!(got.len(), 1);
    assert_eq!(common::body(&got[0]), b"right partition");
    let back = b.ah(a.lid());
    b.send_one(b"reply", back, a.qp.qpn);
    assert_eq!(a.qp.recv().len(), 1);
    assert_eq!(drops(&f), [("pkey_mismatch", 2)]);
}

#[test]
fn a_pkey_index_move_returns_the_filled_buffers_and_then_receives_the_new_partition_only() {
    let f = SimFabric::new(FabricConfig {
        partitions: vec![PKey::DEFAULT, PKey(0x8001)],
        ..FabricConfig::default()
    });
    let mut a = Host::new(&f, "a");
    let mut b = Host::new(&f, "b");
    let mut a_8001 = a.new_qp(&QpOpts {
        pkey_index: 1,
        ..QpOpts::default()
    });
    let ah = a.ah(b.lid());
    for i in 0..5u32 {
        a.send_one(&i.to_be_bytes(), ah, b.qp.qpn);
    }
    assert_eq!(b.pool.in_use(), 5, "five filled receive buffers wait");

    // Through Reset: the five filled buffers go back to the pool and are counted.
    let flushed = b.qp.move_pkey_index(&*b.port, 1).expect("index 1 is valid");
    assert_eq!(flushed, 5);
    assert_eq!(b.qp.rx[0].counters().flushed.get(), 5);
    assert_eq!(b.pool.in_use(), 0, "the flushed buffers are home");
    assert!(b.qp.recv().is_empty(), "nothing from before the move");
    assert_eq!(b.qp.rx[0].counters().packets.get(), 0);

    // Now in partition 0x8001: the default partition's sends are dropped, 0x8001's land.
    a.send_one(b"default", ah, b.qp.qpn);
    let d = a.desc(b"8001", ah, b.qp.qpn, QKey::IPOIB_DEFAULT);
    a_8001.send(vec![d]);
    let got = b.qp.recv();
    assert_eq!(got.len(), 1);
    assert_eq!(common::body(&got[0]), b"8001");
    assert_eq!(got[0].meta().src_qpn, a_8001.qpn.get());
    assert_eq!(drops(&f), [("pkey_mismatch", 1)]);
    assert_eq!(
        b.qp.rx[0].counters().flushed.get(),
        5,
        "a move flushes, nothing else"
    );
}

#[test]
fn unicast_longer_than_the_path_mtu_fails_at_the_sender() {
    let f = SimFabric::new(FabricConfig {
        port_mtu: IbMtu::Mtu2048,
        ..FabricConfig::default()
    });
    let mut a = Host::new(&f, "a");
    let mut b = Host::new(&f, "b");
    let ah = a.ah(b.lid());
    // The IB MTU bounds the payload, IPoIB header included.
    a.send_one(&[1u8; 2048 - 4], ah, b.qp.qpn);
    a.send_one(&[2u8; 2049 - 4], ah, b.qp.qpn);
    let got = b.qp.recv();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].len(), 2048);
    assert_eq!(drops(&f), [("too_long", 1)]);
    // Both were posted; one completed in error.
    let tx = a.qp.tx.counters();
    assert_eq!((tx.packets.get(), tx.errors.get()), (2, 1));
    assert_eq!(tx.bytes.get(), 2048 + 2049);
    assert_eq!(tx.completed.get(), 2);
}

#[test]
fn multicast_longer_than_the_group_mtu_fails_at_the_sender() {
    // Links run at 4096; the broadcast group at 2048: IPoIB MTU 2044.
    let f = fabric();
    let mut a = Host::new(&f, "a");
    let mut b = Host::new(&f, "b");
    let g = a.join_broadcast();
    b.join_broadcast();
    assert_eq!(IbMtu::from_code(g.mtu), Some(IbMtu::Mtu2048));
    assert_eq!(IbMtu::Mtu2048.ipoib_mtu(), 2044);
    let ah = a.mcast_ah(&g);
    a.send_one(&[1u8; 2044], ah, Qpn::MULTICAST);
    a.send_one(&[2u8; 2045], ah, Qpn::MULTICAST);
    let got = b.qp.recv();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].len(), 2048);
    assert_eq!(drops(&f), [("too_long", 1)]);
    assert_eq!(a.qp.tx.counters().errors.get(), 1);
}

#[test]
fn unknown_lid_and_unknown_qpn_are_counted() {
    let f = fabric();
    let mut a = Host::new(&f, "a");
    let b = Host::new(&f, "b");
    let nowhere = a.ah(Lid(0x0bad));
    a.send_one(b"x", nowhere, b.qp.qpn);
    assert_eq!(drops(&f), [("unknown_lid", 1)]);
    assert_eq!(
        a.qp.tx.counters().errors.get(),
        1,
        "no route: the send fails"
    );

    let to_b = a.ah(b.lid());
    a.send_one(b"y", to_b, Qpn::new(0x00ab_cdef).unwrap());
    assert_eq!(drops(&f), [("unknown_lid", 1), ("unknown_qpn", 1)]);
    assert_eq!(
        a.qp.tx.counters().errors.get(),
        1,
        "a UD send to a missing QP completes; the receiver drops it"
    );
}

#[test]
fn a_down_port_neither_sends_nor_receives() {
    let f = fabric();
    let mut a = Host::new(&f, "a");
    let mut b = Host::new(&f, "b");
    let ah = a.ah(b.lid());

    f.set_port_up(a.port_id(), false);
    a.send_one(b"sender down", ah, b.qp.qpn);
    assert_eq!(a.qp.tx.counters().errors.get(), 1);
    assert_eq!(drops(&f), [("port_down", 1)]);
    f.set_port_up(a.port_id(), true);

    f.set_port_up(b.port_id(), false);
    a.send_one(b"receiver down", ah, b.qp.qpn);
    assert_eq!(drops(&f), [("port_down", 2)]);
    assert_eq!(a.qp.tx.counters().errors.get(), 1);
    assert!(b.qp.recv().is_empty());

    f.set_port_up(b.port_id(), true);
    a.send_one(b"both up", ah, b.qp.qpn);
    let got = b.qp.recv();
    assert_eq!(got.len(), 1);
    assert_eq!(common::body(&got[0]), b"both up");
    assert_eq!(f.stats().dropped(), 2);
}

#[test]
fn sending_to_a_group_without_membership_fails() {
    let f = fabric();
    let mut a = Host::new(&f, "a");
    let mut c = Host::new(&f, "c");
    let g = a.join_broadcast();
    // c never joined, but can still build an address handle for the group.
    let ah = c.mcast_ah(&g);
    c.send_one(b"not a member", ah, Qpn::MULTICAST);
    assert!(a.qp.recv().is_empty());
    assert_eq!(drops(&f), [("mcast_not_member", 1)]);
    assert_eq!(c.qp.tx.counters().errors.get(), 1);
}

#[test]
fn a_destroyed_address_handle_fails_the_send_and_frees_the_buffer() {
    let f = fabric();
    let mut a = Host::new(&f, "a");
    let mut b = Host::new(&f, "b");
    let ah = a.ah(b.lid());
    a.destroy_ah(ah).unwrap();
    a.send_one(b"x", ah, b.qp.qpn);
    assert!(b.qp.recv().is_empty());
    assert_eq!(drops(&f), [("bad_ah", 1)]);
    // Posted, and completed in error.
    let tx = a.qp.tx.counters();
    assert_eq!((tx.packets.get(), tx.errors.get()), (1, 1));
    assert_eq!(tx.completed.get(), 1);
    assert_eq!(a.pool.in_use(), 0, "the failed send's buffer went home");

    // A new handle may reuse the slot; the stale one must still fail.
    let fresh = a.ah(b.lid());
    a.send_one(b"stale", ah, b.qp.qpn);
    a.send_one(b"fresh", fresh, b.qp.qpn);
    let got = b.qp.recv();
    assert_eq!(got.len(), 1);
    assert_eq!(common::body(&got[0]), b"fresh");
    assert_eq!(drops(&f), [("bad_ah", 2)]);
}

#[test]
fn receiver_overrun_is_counted_per_packet() {
    let f = fabric();
    let mut a = Host::new(&f, "a");
    let mut b = Host::with(
        &f,
        "b",
        &QpOpts {
            rx_ring_size: 32,
            ..QpOpts::default()
        },
        512,
    );
    let ah = a.ah(b.lid());
    let descs = (0..100u32)
        .map(|i| a.desc(&i.to_be_bytes(), ah, b.qp.qpn, QKey::IPOIB_DEFAULT))
        .collect();
    a.qp.send(descs);
    let s = f.stats();
    assert_eq!((s.sent, s.delivered), (100, 32));
    // An HCA drops a packet that finds no posted buffer without a completion: only the
    // fabric counts it, not the queue.
    assert_eq!(drops(&f), [("no_receive_posted", 68)]);
    assert_eq!(b.qp.rx[0].counters().packets.get(), 0, "not yet polled");
    let got = b.qp.recv();
    let seqs: Vec<u32> = got.iter().map(common::seq_of).collect();
    assert_eq!(
        seqs,
        (0..32).collect::<Vec<_>>(),
        "the first 32 fill the ring"
    );
    assert_eq!(b.pool.in_use(), 32, "overrun copies went back to the pool");
    drop(got);
    assert_eq!(b.pool.in_use(), 0);
    assert_eq!(a.pool.in_use(), 0);
}

#[test]
fn an_empty_receive_pool_is_counted_as_nombuf() {
    let f = fabric();
    let mut a = Host::new(&f, "a");
    let mut b = Host::with(&f, "b", &QpOpts::default(), 8);
    let ah = a.ah(b.lid());
    let descs = (0..20u32)
        .map(|i| a.desc(&i.to_be_bytes(), ah, b.qp.qpn, QKey::IPOIB_DEFAULT))
        .collect();
    a.qp.send(descs);
    assert_eq!(drops(&f), [("no_buffer", 12)]);
    assert_eq!(b.qp.rx[0].counters().nombuf.get(), 12);
    let got = b.qp.recv();
    assert_eq!(got.len(), 8);
    assert_eq!(b.pool.in_use(), 8);
    drop(got);
    // Buffers handed back make room again.
    a.send_one(b"again", ah, b.qp.qpn);
    assert_eq!(b.qp.recv().len(), 1);
    assert_eq!(drops(&f), [("no_buffer", 12)]);
}

#[test]
fn tx_burst_takes_every_mbuf_and_the_receiver_gets_a_copy_after_the_grh_area() {
    let f = fabric();
    let mut a = Host::new(&f, "a");
    // The receiving QP shares the sender's pool (same port, loopback by LID), so
    // "a different buffer" is a real question.
    let mut a2 = a.new_qp(&QpOpts::default());
    let ah = a.ah_global(a.lid(), a.gid());
    let descs: Vec<common::Outgoing> = (0..10u32)
        .map(|i| a.desc(&[i as u8; 100], ah, a2.qpn, QKey::IPOIB_DEFAULT))
        .collect();
    let sent: Vec<(usize, u32)> = descs
        .iter()
        .map(|(m, _)| (m.buf_addr(), m.index()))
        .collect();
    assert_eq!(a.pool.in_use(), 10);
    a.qp.send(descs);
    // Only the 10 receive copies are out now: the sent buffers are home.
    assert_eq!(a.pool.in_use(), 10);
    let got = a2.recv();
    assert_eq!(got.len(), 10);
    for (i, m) in got.iter().enumerate() {
        // Packet i is copied while sent buffers i.. are still out (earlier ones may
        // already be home and reused): its copy is none of them.
        assert!(
            !sent[i..].contains(&(m.buf_addr(), m.index())),
            "the DMA copies packet {i} into a buffer the receiver posted"
        );
        assert_eq!(common::body(m), &[i as u8; 100][..]);
        assert_eq!(m.meta().flags & MBUF_F_GRH, MBUF_F_GRH);
        let g = grh_before(m);
        assert_eq!((g.sgid, g.dgid), (a.gid(), a.gid()));
    }
    drop(got);
    assert_eq!(a.pool.in_use(), 0);
}

#[test]
fn a_dropped_qp_leaves_the_switch_and_its_groups() {
    let f = fabric();
    let mut a = Host::new(&f, "a");
    let mut b = Host::new(&f, "b");
    let g = a.join_broadcast();
    b.join_broadcast();
    let b2 = b.new_qp(&QpOpts::default());
    b.port.attach_mcast(b2.qpn, &g.mgid, g.mlid).unwrap();
    let gone = b2.qpn;
    drop(b2);
    let to_b = a.ah(b.lid());
    a.send_one(b"unicast", to_b, gone);
    assert_eq!(drops(&f), [("unknown_qpn", 1)]);
    let ah = a.mcast_ah(&g);
    a.send_one(b"multicast", ah, Qpn::MULTICAST);
    assert_eq!(b.qp.recv().len(), 1, "only b's remaining QP");
    assert_eq!(f.stats().delivered, 2, "b's QP and a's loopback");
    assert!(
        b.port.detach_mcast(gone, &g.mgid, g.mlid).is_err(),
        "its attachment went with it"
    );
}

#[test]
fn a_send_only_qp_sends_and_unicast_to_it_is_dropped_and_counted() {
    let f = fabric();
    let mut a = Host::new(&f, "a");
    let mut b = Host::new(&f, "b");
    let mut send_only = a.new_qp(&QpOpts {
        rx_ring_size: 0,
        ..QpOpts::default()
    });
    assert!(send_only.rx.is_empty(), "no receive queue");

    let to_b = a.ah(b.lid());
    let d = a.desc(b"from a send-only QP", to_b, b.qp.qpn, QKey::IPOIB_DEFAULT);
    send_only.send(vec![d]);
    let got = b.qp.recv();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].meta().src_qpn, send_only.qpn.get());

    // Unicast to it finds no receive queue: dropped at the receiver and counted, and
    // the send itself completed without error (UD is unreliable).
    let to_a = b.ah(a.lid());
    b.send_one(b"to a send-only QP", to_a, send_only.qpn);
    b.send_one(b"again", to_a, send_only.qpn);
    assert_eq!(drops(&f), [("no_receive_posted", 2)]);
    assert_eq!(b.qp.tx.counters().errors.get(), 0);
    assert_eq!(a.pool.in_use(), 0, "no buffer was taken for it");
    assert!(
        a.qp.recv().is_empty(),
        "nor did another QP of the port get it"
    );

    // Attached to a group, it gets no copy either; the others do.
    let g = a.join_broadcast();
    b.join_broadcast();
    a.port
        .attach_mcast(send_only.qpn, &g.mgid, g.mlid)
        .expect("a send-only QP may be attached");
    let ah = b.mcast_ah(&g);
    b.send_one(b"group", ah, Qpn::MULTICAST);
    assert_eq!(a.qp.recv().len(), 1);
    assert_eq!(b.qp.recv().len(), 1);
    assert_eq!(drops(&f), [("no_receive_posted", 3)]);
}
