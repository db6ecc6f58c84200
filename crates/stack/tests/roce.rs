//! Two stacks on RoCE v2 ports of the simulated fabric (no SA: joins are attaches,
//! paths come from GIDs): unicast with ARP on first contact both ways, multicast to a
//! group one of them subscribes to, every counter conserved, nothing left attached.

mod common;

use std::sync::Arc;

use common::*;
use ibpoll::{ctrl_packet_drops, Dest, GroupAddr};
use ibpoll_ctrl::ipv4_mapped_gid;
use ibpoll_ctrl::mcast::GroupPhase;
use ibpoll_dev::{Device, LinkLayer};
use ibpoll_pmd_sim::{PortId, SimFabric};

const A_IP: [u8; 4] = [10, 0, 0, 1];
const B_IP: [u8; 4] = [10, 0, 0, 2];
const GROUP: [u8; 4] = [239, 1, 2, 3];

/// A test host's builder on a new RoCE node whose port has address `ip`, and the port.
fn roce_host(
    fabric: &SimFabric,
    name: &str,
    ip: [u8; 4],
    cpu: usize,
) -> (ibpoll::StackBuilder, PortId) {
    let dev = fabric.add_roce_node(name, &[ip]);
    let id = dev.port_id(1);
    let dev: Arc<dyn Device> = dev;
    (host(fabric, name, ip, cpu).device(dev, 1), id)
}

#[test]
fn two_stacks_on_roce_exchange_unicast_and_multicast() {
    let _serial = serial();
    let fabric = fabric();
    let (pa, pb) = (Arc::new(Probe::default()), Arc::new(Probe::default()));
    let (ba, ida) = roce_host(&fabric, "a", A_IP, 0);
    let a = start_unicast(ba, &pa, &pb, (A_IP, B_IP), 256);
    let (bb, idb) = roce_host(&fabric, "b", B_IP, 1);
    let b = {
        let (p, peer) = (pb.clone(), pa.clone());
        bb.start(move |_| {
            TestApp::new(p.clone(), B_IP, A_IP, Some(Dest::NextHop(A_IP))).window(&peer, 256)
        })
        .expect("stack b")
    };
    assert!(a.wait_link_up(T).unwrap() && b.wait_link_up(T).unwrap());
    assert_eq!(a.hwaddr().gid(), ipv4_mapped_gid(A_IP));
    assert_eq!(
        a.with_controller(|c| c.link_layer()).unwrap(),
        LinkLayer::Ethernet
    );

    // Unicast: the first three (the neighbour queue's bound) wait in the control core
    // for ARP and the computed path, then the rest goes straight out; then back.
    pa.allow(3);
    wait_for("the first 3 datagrams at b", T, || pb.received.get() == 3);
    pa.allow(1003);
    wait_for("1003 datagrams at b", T, || pb.received.get() == 1003);
    pb.allow(500);
    wait_for("500 datagrams at a", T, || pa.received.get() == 500);
    let ca = a.ctrl_stats().unwrap();
    assert!(ca.arp_requests_sent >= 1 && ca.paths_ok >= 1, "{ca:?}");
    assert_eq!(
        (ca.sa_paths_sent, ca.sa_joins_sent),
        (0, 0),
        "no SA on RoCE"
    );
    assert_eq!(ctrl_packet_drops(&ca), 0, "{ca:?}");
    let (ra, rb) = (a.stop().expect("stop a"), b.stop().expect("stop b"));
    for r in [&ra, &rb] {
        assert_conserved(r);
        assert!(r.flushed);
        assert_eq!(r.pool_in_use, 0, "{r:?}");
        assert_eq!(r.total().tx_dropped(), 0, "{:?}", r.total());
    }
    assert_eq!(fabric.stats().dropped(), 0, "{:?}", fabric.stats());

    // Multicast: b subscribes, a sends to the group (a local send-only join first).
    let (pa, pb) = (Arc::new(Probe::default()), Arc::new(Probe::default()));
    let dest = Dest::Group(GroupAddr::Ipv4(GROUP));
    let (ba, ida2) = roce_host(&fabric, "a2", [10, 0, 0, 3], 0);
    let (bb, idb2) = roce_host(&fabric, "b2", [10, 0, 0, 4], 1);
    let a = {
        let (p, peer) = (pa.clone(), pb.clone());
        ba.start(move |_| {
            TestApp::new(p.clone(), [10, 0, 0, 3], GROUP, Some(dest)).window(&peer, 256)
        })
        .expect("stack a2")
    };
    let b = {
        let p = pb.clone();
        bb.start(move |_| TestApp::new(p.clone(), [10, 0, 0, 4], GROUP, None))
            .expect("stack b2")
    };
    assert!(a.wait_link_up(T).unwrap() && b.wait_link_up(T).unwrap());
    assert!(b.join_group(GroupAddr::Ipv4(GROUP)).unwrap());
    wait_for("b's join", T, || {
        b.with_controller(|c| c.group_phase(GroupAddr::Ipv4(GROUP)))
            .unwrap()
            == Some(GroupPhase::Joined)
    });
    // The first packets wait in the control core for the (local) send-only join.
    pa.allow(10);
    wait_for("10 multicast datagrams at b", T, || pb.received.get() == 10);
    pa.allow(1010);
    wait_for("1010 multicast datagrams at b", T, || {
        pb.received.get() == 1010
    });
    assert_eq!(pb.received_mcast.get(), 1010);
    assert_eq!(pa.received.get(), 0, "a is send-only");
    let ca = a.ctrl_stats().unwrap();
    assert!(
        ca.mcast_queued >= 1 && ca.mcast_sent_from_queue >= 1,
        "{ca:?}"
    );
    assert_eq!(ctrl_packet_drops(&ca), 0, "{ca:?}");
    let (ra, rb) = (a.stop().unwrap(), b.stop().unwrap());
    assert_conserved(&ra);
    assert_conserved(&rb);
    assert_eq!(ra.pool_in_use + rb.pool_in_use, 0);
    assert_eq!(fabric.stats().dropped(), 0, "{:?}", fabric.stats());
    // Stopping left every group: nothing is attached any more.
    for id in [ida, idb, ida2, idb2] {
        assert_eq!(fabric.attachments(id), vec![], "{id:?}");
    }
}
