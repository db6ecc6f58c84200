//! Two stacks on one simulated fabric, one data lcore each: unicast with ARP and path
//! resolution on first contact, multicast to a new group, interface down in the middle of
//! traffic with every counter accounted for.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use ibpoll::{ctrl_packet_drops, Dest, GroupAddr};
use ibpoll_ctrl::mcast::GroupPhase;
use ibpoll_wire::ipoib;

const A_IP: [u8; 4] = [10, 0, 0, 1];
const B_IP: [u8; 4] = [10, 0, 0, 2];
const GROUP: [u8; 4] = [239, 1, 2, 3];

#[test]
fn unicast_with_arp_and_path_resolution_on_first_contact() {
    let _serial = serial();
    let fabric = fabric();
    let pa = Arc::new(Probe::default());
    let pb = Arc::new(Probe::default());
    // Each sender keeps at most 256 datagrams in flight, so no receive ring overflows
    // and every count is exact.
    let a = start_unicast(host(&fabric, "a", A_IP, 0), &pa, &pb, (A_IP, B_IP), 256);
    let b = start_unicast(host(&fabric, "b", B_IP, 1), &pb, &pa, (B_IP, A_IP), 256);
    assert!(a.wait_link_up(T).unwrap(), "a: link never came up");
    assert!(b.wait_link_up(T).unwrap(), "b: link never came up");

    // First contact: three datagrams (the neighbour queue's bound) wait in the control
    // core's queue for ARP and the path record, then arrive.
    pa.allow(3);
    wait_for("the first 3 datagrams at b", T, || pb.received.get() == 3);
    let sa = a.stats(0);
    assert_eq!(sa.app_tx, 3);
    assert!(
        sa.to_ctrl_resolve >= 1,
        "the first packet did not go to the control core: {sa:?}"
    );
    let ca = a.ctrl_stats().unwrap();
    assert!(ca.arp_requests_sent >= 1, "{ca:?}");
    assert!(ca.paths_ok >= 1, "{ca:?}");
    assert!(ca.neigh_sent_from_queue >= 1, "{ca:?}");
    assert_eq!(ctrl_packet_drops(&ca), 0, "{ca:?}");

    // Resolved: the rest goes straight from the data lcore.
    pa.allow(2003);
    wait_for("2003 datagrams at b", T, || pb.received.get() == 2003);
    let sa = a.stats(0);
    assert_eq!(sa.app_tx, 2003);
    assert!(sa.tx_posted >= 2000 - 3, "{sa:?}");
    assert!(sa.iterations > 0 && sa.busy_ns > 0);

    // And back: b answered a's ARP, or resolves a now.
    pb.allow(500);
    wait_for("500 datagrams at a", T, || pa.received.get() == 500);

    let (ga, gb) = (a.hwaddr().gid(), b.hwaddr().gid());
    let ra = a.stop().expect("stop a");
    assert_conserved(&ra);
    let rb = b.stop().expect("stop b");
    assert_conserved(&rb);
    assert!(ra.flushed && rb.flushed);
    assert_eq!(ra.pool_in_use, 0, "a: buffers not back: {ra:?}");
    assert_eq!(rb.pool_in_use, 0, "b: buffers not back: {rb:?}");
    assert_eq!(pa.foreign.get() + pb.foreign.get(), 0);
    assert_eq!(ra.total().tx_dropped(), 0, "{:?}", ra.total());
    assert_eq!(rb.total().rx_malformed, 0);
    assert_eq!(fabric.stats().dropped(), 0, "{:?}", fabric.stats());
    assert_eq!(memberships(&fabric, &ga), 0, "a left memberships at the SA");
    assert_eq!(memberships(&fabric, &gb), 0, "b left memberships at the SA");
}

fn memberships(fabric: &ibpoll_pmd_sim::SimFabric, gid: &ibpoll_wire::Gid) -> usize {
    fabric.with_sa(|sa| sa.memberships_of(gid).count())
}

#[test]
fn multicast_to_a_new_group_waits_for_the_send_only_join() {
    let _serial = serial();
    let fabric = fabric();
    let pa = Arc::new(Probe::default());
    let pb = Arc::new(Probe::default());
    let dest = Dest::Group(GroupAddr::Ipv4(GROUP));
    let a = {
        let (p, peer) = (pa.clone(), pb.clone());
        host(&fabric, "a", A_IP, 0)
            .start(move |_| TestApp::new(p.clone(), A_IP, GROUP, Some(dest)).window(&peer, 256))
            .expect("stack a")
    };
    let b = {
        let p = pb.clone();
        host(&fabric, "b", B_IP, 1)
            .start(move |_| TestApp::new(p.clone(), B_IP, GROUP, None))
            .expect("stack b")
    };
    assert!(a.wait_link_up(T).unwrap() && b.wait_link_up(T).unwrap());
    // b subscribes.
    assert!(b.join_group(GroupAddr::Ipv4(GROUP)).unwrap());
    wait_for("b's full-member join", T, || {
        b.with_controller(|c| c.group_phase(GroupAddr::Ipv4(GROUP)))
            .unwrap()
            == Some(GroupPhase::Joined)
    });
    assert_eq!(
        a.with_controller(|c| c.group_phase(GroupAddr::Ipv4(GROUP)))
            .unwrap(),
        None,
        "a knows nothing of the group yet"
    );

    // The first packets go to a's control core, wait for the send-only join, then go out.
    pa.allow(10);
    wait_for("10 multicast datagrams at b", T, || pb.received.get() == 10);
    let sa = a.stats(0);
    assert!(sa.to_ctrl_mcast >= 1, "{sa:?}");
    let ca = a.ctrl_stats().unwrap();
    assert!(
        ca.mcast_queued >= 1 && ca.mcast_sent_from_queue >= 1,
        "{ca:?}"
    );
    assert_eq!(ctrl_packet_drops(&ca), 0, "{ca:?}");
    assert_eq!(
        a.with_controller(|c| c.group_phase(GroupAddr::Ipv4(GROUP)))
            .unwrap(),
        Some(GroupPhase::Joined)
    );
    // The SA has a send-only membership for a and a full one for b.
    let mgid = ipoib::ipv4_mcast_mgid(
        GROUP,
        ibpoll_wire::PKey::DEFAULT,
        ipoib::McastScope::LINK_LOCAL,
    );
    let ga = a.hwaddr().gid();
    let a_state = fabric.with_sa(|sa| {
        sa.memberships_of(&ga)
            .find(|(g, _)| *g == mgid)
            .map(|(_, s)| s)
    });
    assert_eq!(
        a_state,
        Some(ibpoll_wire::mcmember::JoinState::SEND_ONLY_FULL_MEMBER)
    );

    // Joined: the rest goes straight out, every datagram arrives once, flagged multicast.
    pa.allow(1010);
    wait_for("1010 multicast datagrams at b", T, || {
        pb.received.get() == 1010
    });
    assert_eq!(pb.received_mcast.get(), 1010);
    assert_eq!(
        pa.received.get(),
        0,
        "a is send-only: it must not receive the group"
    );

    let gb = b.hwaddr().gid();
    let ra = a.stop().unwrap();
    assert_conserved(&ra);
    let rb = b.stop().unwrap();
    assert_conserved(&rb);
    assert_eq!(ra.pool_in_use + rb.pool_in_use, 0);
    assert_eq!(memberships(&fabric, &ga), 0);
    assert_eq!(memberships(&fabric, &gb), 0);
    assert_eq!(ra.total().tx_dropped(), 0, "{:?}", ra.total());
}

#[test]
fn interface_down_in_the_middle_of_traffic_conserves_every_packet() {
    let _serial = serial();
    let fabric = fabric();
    let pa = Arc::new(Probe::default());
    let pb = Arc::new(Probe::default());
    // a sends unicast to b and multicast to a group b subscribes to, alternating.
    let a = {
        let p = pa.clone();
        host(&fabric, "a", A_IP, 0)
            .start(move |_| Mixed {
                uni: TestApp::new(p.clone(), A_IP, B_IP, Some(Dest::NextHop(B_IP))),
                multi: TestApp::new(
                    p.clone(),
                    A_IP,
                    GROUP,
                    Some(Dest::Group(GroupAddr::Ipv4(GROUP))),
                ),
            })
            .expect("stack a")
    };
    let b = {
        let p = pb.clone();
        host(&fabric, "b", B_IP, 1)
            .start(move |_| TestApp::new(p.clone(), B_IP, A_IP, None))
            .expect("stack b")
    };
    assert!(a.wait_link_up(T).unwrap() && b.wait_link_up(T).unwrap());
    assert!(b.join_group(GroupAddr::Ipv4(GROUP)).unwrap());
    wait_for("b's join", T, || {
        b.with_controller(|c| c.group_phase(GroupAddr::Ipv4(GROUP)))
            .unwrap()
            == Some(GroupPhase::Joined)
    });
    let ga = a.hwaddr().gid();

    pa.allow(u64::MAX);
    wait_for("traffic", T, || pb.received.get() >= 2000);
    // Down in the middle of traffic.
    a.set_admin_up(false).unwrap();
    wait_for("a's flush", T, || {
        a.with_controller(|c| !c.is_flushing() && !c.link_up())
            .unwrap()
    });
    assert_eq!(
        memberships(&fabric, &ga),
        0,
        "a still holds memberships after the flush"
    );
    wait_for("drops while down", T, || a.stats(0).tx_link_down > 100);
    pa.halt.store(true, std::sync::atomic::Ordering::Relaxed);
    settle(
        || pb.received.get() + a.stats(0).app_tx,
        Duration::from_millis(300),
        T,
    );

    let rb = b.stop().unwrap();
    assert_conserved(&rb);
    let ra = a.stop().unwrap();
    assert_conserved(&ra);
    let (ta, tb) = (ra.total(), rb.total());
    let fab = fabric.stats();
    let sent = pa.sent.get();
    assert_eq!(ta.app_tx, sent);
    let named_drops = ta.tx_dropped()
        + ctrl_packet_drops(&ra.ctrl)
        + fab.dropped()
        + (tb.rx_dropped() - tb.rx_loopback)
        + tb.app_dropped;
    assert_eq!(
        sent,
        pb.received.get() + named_drops,
        "sent {sent} != received {} + drops {named_drops}\na: {ta:?}\nctrl a: {:?}\nb: {tb:?}\nfabric: {fab:?}",
        pb.received.get(),
        ra.ctrl
    );
    assert!(ta.tx_link_down > 0);
    assert_eq!(ra.pool_in_use, 0, "{ra:?}");
    assert_eq!(rb.pool_in_use, 0, "{rb:?}");
    assert_eq!(memberships(&fabric, &ga), 0);
}

/// Alternates unicast and multicast datagrams (one probe).
struct Mixed {
    uni: TestApp,
    multi: TestApp,
}

impl ibpoll::App for Mixed {
    fn on_burst(
        &mut self,
        ctx: &ibpoll::LcoreCtx,
        rx: &mut ibpoll_mem::MbufArray,
        tx: &mut ibpoll::Tx,
    ) {
        self.uni.on_burst(ctx, rx, tx);
    }

    fn poll(&mut self, ctx: &ibpoll::LcoreCtx, tx: &mut ibpoll::Tx) -> bool {
        self.uni.per_iteration = 2;
        self.multi.per_iteration = 2;
        let u = self.uni.poll(ctx, tx);
        let m = self.multi.poll(ctx, tx);
        u | m
    }
}

/// Forwards every IPv4 packet to the next hop named by its destination address, in the
/// very buffer it arrived in (zero copy): the TTL is decremented in place and the
/// checksum updated incrementally (RFC 1624).
struct Forwarder {
    forwarded: Arc<Probe>,
}

impl ibpoll::App for Forwarder {
    fn on_burst(
        &mut self,
        _ctx: &ibpoll::LcoreCtx,
        rx: &mut ibpoll_mem::MbufArray,
        tx: &mut ibpoll::Tx,
    ) {
        while let Some(mut m) = rx.pop() {
            let d = m.data_mut();
            if d[0] >> 4 != 4 || d[8] <= 1 {
                continue;
            }
            let dst = [d[16], d[17], d[18], d[19]];
            d[8] -= 1;
            let sum = u16::from_be_bytes([d[10], d[11]]);
            let (s, carry) = sum.overflowing_add(0x0100);
            d[10..12].copy_from_slice(&(s + u16::from(carry)).to_be_bytes());
            // The IPoIB header the stack stripped is still in the headroom; it is
            // rewritten in place on the way out.
            assert!(m.headroom() >= ipoib::HEADER_LEN);
            self.forwarded.received.inc();
            tx.push(0, m, Dest::NextHop(dst));
        }
    }
}

#[test]
fn a_forwarder_sends_the_buffer_it_received() {
    let _serial = serial();
    const F_IP: [u8; 4] = [10, 0, 0, 3];
    let fabric = fabric();
    let pa = Arc::new(Probe::default());
    let pf = Arc::new(Probe::default());
    let pb = Arc::new(Probe::default());
    let a = {
        let (p, peer) = (pa.clone(), pb.clone());
        host(&fabric, "a", A_IP, 0)
            .start(move |_| {
                TestApp::new(p.clone(), A_IP, B_IP, Some(Dest::NextHop(F_IP))).window(&peer, 128)
            })
            .expect("stack a")
    };
    let f = {
        let p = pf.clone();
        host(&fabric, "f", F_IP, 1)
            .start(move |_| Forwarder {
                forwarded: p.clone(),
            })
            .expect("stack f")
    };
    let b = {
        let p = pb.clone();
        host(&fabric, "b", B_IP, 0)
            .start(move |_| TestApp::new(p.clone(), B_IP, A_IP, None))
            .expect("stack b")
    };
    for s in [&a, &f, &b] {
        assert!(s.wait_link_up(T).unwrap());
    }
    // Two first contacts (a -> f, f -> b): 3 datagrams wait in each control core.
    pa.allow(3);
    wait_for("3 forwarded datagrams at b", T, || pb.received.get() == 3);
    pa.allow(1003);
    wait_for("1003 forwarded datagrams at b", T, || {
        pb.received.get() == 1003
    });
    assert_eq!(pf.received.get(), 1003);
    let (ra, rf, rb) = (a.stop().unwrap(), f.stop().unwrap(), b.stop().unwrap());
    assert_conserved(&ra);
    assert_conserved(&rf);
    assert_conserved(&rb);
    let tf = rf.total();
    assert_eq!(tf.app_rx, 1003);
    assert_eq!(tf.app_tx, 1003);
    assert_eq!(tf.app_dropped + tf.tx_dropped(), 0, "{tf:?}");
    assert_eq!(ra.pool_in_use + rf.pool_in_use + rb.pool_in_use, 0);
}
