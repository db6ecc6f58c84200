//! The real controller on RoCE v2 ports of the simulated fabric: no SA, joins that are
//! attaches, paths computed from GIDs, ARP and the rest unchanged. Broadcast up, ARP,
//! unicast and multicast both ways, and the flushes (interface down, port down, the
//! address leaving the GID table), in virtual time.

mod common;

use std::sync::Arc;

use common::*;
use ibpoll_ctrl::{
    ipv4_mapped_gid, Controller, CtrlConfig, Error, GroupAddr, GroupPhase, McastMap,
};
use ibpoll_dev::{Device, LinkLayer};
use ibpoll_pmd_sim::FaultConfig;
use ibpoll_testkit::data;
use ibpoll_wire::{IbMtu, Lid, QKey};

const A_IP: [u8; 4] = [10, 0, 0, 1];
const B_IP: [u8; 4] = [10, 0, 0, 2];
const G1: GroupAddr = GroupAddr::Ipv4([239, 1, 1, 1]);

fn pair(net: &Net) -> (Host, Host) {
    let a = Host::roce(net, "a", A_IP, CtrlConfig::default());
    let b = Host::roce(net, "b", B_IP, CtrlConfig::default());
    (a, b)
}

/// The MGIDs the interface's QPs are attached to.
fn attached(net: &Net, h: &Host) -> Vec<ibpoll_wire::Gid> {
    net.fabric
        .attachments(h.port_id)
        .into_iter()
        .map(|(g, _)| g)
        .collect()
}

fn both_up(net: &Net, a: &mut Host, b: &mut Host) {
    run_until(net, &mut [a, b], secs(5), ms(10), |h| {
        h.iter().all(|h| h.ctl.link_up())
    });
}

#[test]
fn the_broadcast_group_comes_up_without_an_sa() {
    let net = Net::new(FaultConfig::NONE);
    let (mut a, mut b) = pair(&net);
    assert_eq!(a.ctl.link_layer(), LinkLayer::Ethernet);
    assert_eq!(a.ctl.mcast_map(), McastMap::RoceV2);
    // The interface's hardware address carries its address's IPv4-mapped GID.
    assert_eq!(a.ctl.hwaddr().gid(), ipv4_mapped_gid(A_IP));
    assert_eq!(a.gid, ipv4_mapped_gid(A_IP));
    let took = {
        let start = net.now();
        both_up(&net, &mut a, &mut b);
        net.now().saturating_sub(start)
    };
    assert!(
        took < ms(50),
        "a local join takes a poll or two, not {took:?}"
    );
    let bcast = McastMap::RoceV2.broadcast();
    assert_eq!(bcast, ipv4_mapped_gid([224, 0, 0, 1]));
    for h in [&a, &b] {
        let r = *h.ctl.broadcast_record().expect("joined");
        assert_eq!((r.mgid, r.qkey, r.mlid), (bcast, QKey(0x0B1B), Lid(0)));
        assert_eq!(r.mtu, IbMtu::Mtu4096.code(), "the port's MTU");
        assert_eq!(r.hop_limit, 64);
        let snap = h.ctl.snapshot();
        assert!(snap.link_up);
        assert_eq!(snap.mtu, IbMtu::Mtu4096.ipoib_mtu());
        assert_eq!(snap.broadcast().map(|e| e.mgid), Some(bcast));
        assert_eq!(
            snap.ipv4_mgid([239, 1, 1, 1]),
            ipv4_mapped_gid([239, 1, 1, 1])
        );
        // The join is the attach: lane 0's QP is attached to 224.0.0.1's GID.
        assert_eq!(attached(&net, h), vec![bcast]);
        let s = h.ctl.stats();
        assert_eq!(s.joins_ok, 1);
        assert_eq!(
            (s.sa_joins_sent, s.sa_lists_sent, s.sa_timeouts),
            (0, 0, 0),
            "no SA traffic on RoCE"
        );
        assert!(!h.ctl.cleanup_running());
    }
    a.ctl.check_snapshot().unwrap();
    b.ctl.check_snapshot().unwrap();
}

#[test]
fn arp_unicast_and_multicast_both_ways() {
    let net = Net::new(FaultConfig::NONE);
    let (mut a, mut b) = pair(&net);
    both_up(&net, &mut a, &mut b);

    // Unicast: ARP over the all-hosts group, then a path made from b's GID.
    assert!(a.data_send_unicast(0, B_IP, 1));
    run_until(&net, &mut [&mut a, &mut b], secs(5), ms(10), |h| {
        h[1].received.contains(&1)
    });
    {
        let snap = a.ctl.snapshot();
        let n = snap.neighbour(&B_IP).expect("b is resolved");
        assert_eq!((n.hwaddr.gid(), n.qpn()), (ipv4_mapped_gid(B_IP), b.qpn));
    }
    let s = a.ctl.stats();
    assert_eq!(
        (s.arp_requests_sent >= 1, s.paths_ok, s.sa_paths_sent),
        (true, 1, 0)
    );
    // b learnt a from its ARP request and answers through the snapshot.
    assert!(b.data_send_unicast(0, A_IP, 2));
    for seq in 3..10 {
        assert!(a.data_send_unicast(0, B_IP, seq), "a's snapshot has b");
    }
    run(&net, &mut [&mut a, &mut b], ms(50), ms(10));
    assert_eq!(a.received, vec![2]);
    assert_eq!(b.received, (1..10).filter(|s| *s != 2).collect::<Vec<_>>());

    // Multicast: b subscribes; a's first packet makes a send-only (local) join.
    assert!(b.ctl.join_group(G1));
    run_until(&net, &mut [&mut a, &mut b], secs(5), ms(10), |h| {
        h[1].ctl.group_phase(G1) == Some(GroupPhase::Joined)
    });
    let g1 = ipv4_mapped_gid([239, 1, 1, 1]);
    assert!(attached(&net, &b).contains(&g1));
    assert!(
        a.ctl.snapshot().group(&g1).is_none(),
        "a knows nothing of G1 yet"
    );
    assert!(a.data_send_mcast(0, G1, 100), "handed to the control core");
    run_until(&net, &mut [&mut a, &mut b], secs(5), ms(10), |h| {
        h[1].received.contains(&100)
    });
    assert_eq!(a.ctl.stats().mcast_sent_from_queue, 1);
    assert!(a.ctl.snapshot().group(&g1).is_some_and(|e| e.send_only));
    assert!(
        !attached(&net, &a).contains(&g1),
        "a send-only member attaches nothing"
    );
    // And the other way: a subscribes (the send-only membership is upgraded), b sends.
    assert!(a.ctl.join_group(G1));
    run_until(&net, &mut [&mut a, &mut b], secs(5), ms(10), |h| {
        h[0].ctl.snapshot().group(&g1).is_some_and(|e| !e.send_only)
    });
    assert!(attached(&net, &a).contains(&g1));
    for seq in 200..210 {
        b.data_send_mcast(0, G1, seq);
    }
    run(&net, &mut [&mut a, &mut b], ms(50), ms(10));
    assert_eq!(
        a.received
            .iter()
            .filter(|s| **s >= 200)
            .copied()
            .collect::<Vec<_>>(),
        (200..210).collect::<Vec<_>>()
    );
    assert_eq!(net.fabric.stats().dropped(), 0, "{:?}", net.fabric.stats());
    for h in [&mut a, &mut b] {
        h.ctl.check_snapshot().unwrap();
        assert_eq!(h.ctl.stats().sa_joins_sent, 0);
    }
    // Unsubscribing detaches.
    b.ctl.leave_group(G1);
    run(&net, &mut [&mut a, &mut b], ms(50), ms(10));
    assert_eq!(b.ctl.group_phase(G1), None);
    assert!(!attached(&net, &b).contains(&g1));
}

#[test]
fn flushes_detach_everything_and_the_interface_comes_back() {
    let net = Net::new(FaultConfig::NONE);
    let (mut a, mut b) = pair(&net);
    both_up(&net, &mut a, &mut b);
    assert!(a.ctl.join_group(G1));
    assert!(a.data_send_unicast(0, B_IP, 1));
    run_until(&net, &mut [&mut a, &mut b], secs(5), ms(10), |h| {
        h[1].received.contains(&1) && h[0].ctl.group_phase(G1) == Some(GroupPhase::Joined)
    });
    assert_eq!(attached(&net, &a).len(), 2);

    // Interface down: a normal flush leaves (detaches) everything, drops neighbours.
    a.ctl.set_admin_up(false);
    run_until(&net, &mut [&mut a, &mut b], secs(5), ms(10), |h| {
        !h[0].ctl.is_flushing()
    });
    assert!(!a.ctl.link_up());
    assert!(attached(&net, &a).is_empty(), "{:?}", attached(&net, &a));
    assert_eq!(a.ctl.neighbour_count(), 0);
    assert_eq!(a.ctl.stats().flushes_normal, 1);
    a.ctl.set_admin_up(true);
    run_until(&net, &mut [&mut a, &mut b], secs(5), ms(10), |h| {
        h[0].ctl.link_up() && h[0].ctl.group_phase(G1) == Some(GroupPhase::Joined)
    });
    assert_eq!(attached(&net, &a).len(), 2);

    // The port flaps: down (Error) and up (Active).
    net.fabric.set_port_up(a.port_id, false);
    run(&net, &mut [&mut a, &mut b], ms(50), ms(10));
    assert!(!a.ctl.link_up());
    assert!(attached(&net, &a).is_empty());
    net.fabric.set_port_up(a.port_id, true);
    run_until(&net, &mut [&mut a, &mut b], secs(5), ms(10), |h| {
        h[0].ctl.link_up()
    });
    // Unicast works again (the neighbour is resolved anew).
    assert!(
        a.ctl.snapshot().neighbour(&B_IP).is_none(),
        "the flush dropped it"
    );
    assert!(a.data_send_unicast(0, B_IP, 2));
    run_until(&net, &mut [&mut a, &mut b], secs(5), ms(10), |h| {
        h[1].received.contains(&2)
    });

    // The address leaves the port's netdev: its GID is gone, nothing can be joined
    // until it is back (joins are refused and back off).
    net.fabric.set_port_ipv4(a.port_id, None);
    run(&net, &mut [&mut a, &mut b], secs(3), ms(10));
    assert!(!a.ctl.link_up());
    assert!(attached(&net, &a).is_empty());
    assert!(a.ctl.stats().joins_failed >= 1);
    net.fabric.set_port_ipv4(a.port_id, Some(A_IP));
    run_until(&net, &mut [&mut a, &mut b], secs(30), ms(10), |h| {
        h[0].ctl.link_up() && h[0].ctl.group_phase(G1) == Some(GroupPhase::Joined)
    });
    a.ctl.check_snapshot().unwrap();
    let s = a.ctl.stats();
    assert!(s.leaves_done >= 4, "every flush left its groups: {s:?}");
    assert_eq!((s.leaves_abandoned, s.sa_timeouts), (0, 0));
}

#[test]
fn a_roce_interface_needs_its_address_in_the_gid_table() {
    let net = Net::new(FaultConfig::NONE);
    let dev = net.fabric.add_roce_node("x", &[[10, 0, 0, 5]]);
    let port = dev.open_port(1).unwrap();
    let pool = data::pool("x", 64);
    let clock: Arc<dyn ibpoll_dev::Clock> = net.clock.clone();
    let make = |ipv4| {
        let qp = data::ipoib_qp(&*port, 0, &pool, 64);
        let cfg = CtrlConfig {
            ipv4,
            ..CtrlConfig::default()
        };
        Controller::new(cfg, port.clone(), qp.ctl, pool.clone(), clock.clone()).map(|_| ())
    };
    assert!(matches!(make(None), Err(Error::RoceNeedsIpv4 { port: 1 })));
    let e = make(Some([10, 0, 0, 6])).unwrap_err();
    assert!(matches!(e, Error::RoceNoGid { .. }), "{e}");
    assert!(e.to_string().contains("::ffff:10.0.0.6"), "{e}");
    make(Some([10, 0, 0, 5])).expect("its own address");
}
