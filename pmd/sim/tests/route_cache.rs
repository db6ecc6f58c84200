//! The send queues cache the switch's decision per destination: every control change
//! that alters a decision must be seen by the very next packet on the same queue
//! (Q_Key, address handle, port state, P_Key table, LID, attachments, QP teardown).

mod common;

use common::{Host, QpOpts};
use ibpoll_pmd_sim::{FabricConfig, SimFabric};
use ibpoll_wire::{Lid, PKey, QKey, Qpn};

fn fabric() -> SimFabric {
    SimFabric::new(FabricConfig::default())
}

fn got(h: &mut Host) -> usize {
    h.qp.recv().len()
}

#[test]
fn unicast_decisions_follow_every_control_change() {
    let f = fabric();
    let mut a = Host::new(&f, "a");
    let mut b = Host::new(&f, "b");
    let ah = a.ah(b.lid());
    let bq = b.qp.qpn;
    a.send_one(b"1", ah, bq);
    a.send_one(b"2", ah, bq);
    assert_eq!(got(&mut b), 2);

    // Q_Key change at the receiver: dropped, then delivered again once restored.
    b.port.set_qp_qkey(bq, QKey(0x77)).unwrap();
    a.send_one(b"3", ah, bq);
    assert_eq!(got(&mut b), 0);
    assert_eq!(f.stats().drop_count("qkey_mismatch"), 1);
    b.port.set_qp_qkey(bq, QKey::IPOIB_DEFAULT).unwrap();
    a.send_one(b"4", ah, bq);
    assert_eq!(got(&mut b), 1);

    // Receiving port down, then up.
    f.set_port_up(b.port_id(), false);
    a.send_one(b"5", ah, bq);
    assert_eq!(got(&mut b), 0);
    assert_eq!(f.stats().drop_count("port_down"), 1);
    f.set_port_up(b.port_id(), true);
    a.send_one(b"6", ah, bq);
    assert_eq!(got(&mut b), 1);

    // The receiver leaves the partition.
    f.set_pkeys(b.port_id(), vec![PKey(0x8005)]);
    a.send_one(b"7", ah, bq);
    assert_eq!(got(&mut b), 0);
    assert_eq!(f.stats().drop_count("pkey_mismatch"), 1);
    f.set_pkeys(b.port_id(), vec![PKey::DEFAULT]);
    a.send_one(b"8", ah, bq);
    assert_eq!(got(&mut b), 1);

    // The receiver's LID moves: the old address handle reaches no one.
    f.set_lid(b.port_id(), Lid(0x99));
    a.send_one(b"9", ah, bq);
    assert_eq!(got(&mut b), 0);
    assert_eq!(f.stats().drop_count("unknown_lid"), 1);
    let ah2 = a.ah(b.lid());
    a.send_one(b"10", ah2, bq);
    assert_eq!(got(&mut b), 1);

    // A destroyed address handle fails the send.
    a.destroy_ah(ah2).unwrap();
    let d = a.desc(b"11", ah2, bq, QKey::IPOIB_DEFAULT);
    a.qp.send(vec![d]);
    assert_eq!(f.stats().drop_count("bad_ah"), 1);

    // A second QP on b reached through the same address handle is a separate route.
    let mut b2 = b.new_qp(&QpOpts::default());
    let ah3 = a.ah(b.lid());
    a.send_one(b"12", ah3, b2.qpn);
    a.send_one(b"13", ah3, bq);
    assert_eq!(b2.recv().len(), 1);
    assert_eq!(got(&mut b), 1);

    // The QP goes away: unknown QPN from the next packet on.
    let b2_qpn = b2.qpn;
    drop(b2);
    a.send_one(b"14", ah3, b2_qpn);
    assert_eq!(f.stats().drop_count("unknown_qpn"), 1);
    let s = f.stats();
    assert_eq!(s.sent, 14);
    assert_eq!(s.delivered + s.dropped(), 14);
    assert_eq!(b.pool.in_use(), 0, "every received buffer went home");
}

#[test]
fn multicast_decisions_follow_attach_and_detach() {
    let f = fabric();
    let mut a = Host::new(&f, "a");
    let mut b = Host::new(&f, "b");
    let g = a.join_broadcast();
    b.join_broadcast();
    let ah = a.mcast_ah(&g);
    a.send_one(b"1", ah, Qpn::MULTICAST);
    assert_eq!((got(&mut a), got(&mut b)), (1, 1));

    b.port.detach_mcast(b.qp.qpn, &g.mgid, g.mlid).unwrap();
    a.send_one(b"2", ah, Qpn::MULTICAST);
    assert_eq!((got(&mut a), got(&mut b)), (1, 0));

    b.port.attach_mcast(b.qp.qpn, &g.mgid, g.mlid).unwrap();
    let mut b2 = b.new_qp(&QpOpts::default());
    b.port.attach_mcast(b2.qpn, &g.mgid, g.mlid).unwrap();
    a.send_one(b"3", ah, Qpn::MULTICAST);
    assert_eq!((got(&mut a), got(&mut b), b2.recv().len()), (1, 1, 1));

    // A receiver's Q_Key changes: its copy is dropped and counted, per packet.
    b.port.set_qp_qkey(b2.qpn, QKey(0x55)).unwrap();
    a.send_one(b"4", ah, Qpn::MULTICAST);
    a.send_one(b"5", ah, Qpn::MULTICAST);
    assert_eq!((got(&mut a), got(&mut b), b2.recv().len()), (2, 2, 0));
    assert_eq!(f.stats().drop_count("qkey_mismatch"), 2);
    let s = f.stats();
    assert_eq!((s.sent, s.delivered + s.dropped()), (5, 12));
}
