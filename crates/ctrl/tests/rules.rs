//! DESIGN.md's control-plane rules 1-9, each against the real controller on the
//! simulated fabric in virtual time.

mod common;

use common::*;
use ibpoll_ctrl::{CtrlConfig, CtrlEvent, GroupAddr, GroupPhase, GroupState, RetryAt};
use ibpoll_dev::Nanos;
use ibpoll_pmd_sim::FaultConfig;
use ibpoll_wire::ipoib;
use ibpoll_wire::mcmember::JoinState;
use ibpoll_wire::sa::Selector;
use ibpoll_wire::{Gid, IbMtu, Lid, PKey};

const G1: GroupAddr = GroupAddr::Ipv4([224, 1, 1, 1]);
const G2: GroupAddr = GroupAddr::Ipv4([224, 2, 2, 2]);
const G3: GroupAddr = GroupAddr::Ipv4([224, 3, 3, 3]);

fn bcast() -> Gid {
    ipoib::broadcast_mgid(PKey::DEFAULT)
}

fn phase(h: &Host, g: GroupAddr) -> Option<GroupPhase> {
    h.ctl.group_phase(g)
}

fn joined(h: &Host, g: GroupAddr) -> bool {
    phase(h, g) == Some(GroupPhase::Joined)
}

fn bcast_joined(h: &Host) -> bool {
    joined(h, GroupAddr::Mgid(bcast()))
}

fn mgid(h: &Host, g: GroupAddr) -> Gid {
    h.ctl.mgid_of(g).expect("a group of this interface")
}

#[test]
fn rule1_broadcast_first() {
    // SA answers take 200 ms, so the broadcast join is visibly in flight for a while.
    let net = Net::new(FaultConfig {
        sa_delay_min: ms(200),
        sa_delay_max: ms(200),
        ..FaultConfig::NONE
    });
    let mut a = Host::new(&net, "a", CtrlConfig::default());
    assert!(a.ctl.join_group(G1));
    assert!(a.data_send_mcast(0, G2, 7));
    let mut seen_link_up = false;
    run_until(&net, &mut [&mut a], secs(10), ms(10), |h| {
        let a = &h[0];
        let s = a.ctl.stats();
        // No other join before the broadcast group is Joined.
        if !bcast_joined(a) {
            assert!(
                s.sa_joins_sent <= 1,
                "a join went out before the broadcast group's"
            );
            assert!(
                !a.ctl.link_up(),
                "link up before the broadcast group is Joined"
            );
            assert!(!a.ctl.snapshot().link_up);
        }
        if a.ctl.link_up() {
            seen_link_up = true;
            assert!(bcast_joined(a));
        }
        joined(a, G1) && joined(a, G2)
    });
    assert!(seen_link_up);
    let snap = a.ctl.snapshot();
    assert!(snap.link_up);
    assert_eq!(snap.mtu, IbMtu::Mtu2048.ipoib_mtu());
    assert_eq!(snap.broadcast().map(|b| b.mgid), Some(bcast()));

    // The other groups copy the broadcast group's parameters (RFC 4391): check the
    // records the SA created from our joins.
    let (b, r1, r2) = net.fabric.with_sa(|sa| {
        (
            *sa.group_by_mgid(&bcast()).unwrap().record(),
            *sa.group_by_mgid(&mgid(&a, G1)).unwrap().record(),
            *sa.group_by_mgid(&mgid(&a, G2)).unwrap().record(),
        )
    });
    for r in [r1, r2] {
        assert_eq!(r.qkey, b.qkey);
        assert_eq!(r.mtu, b.mtu);
        assert_eq!(r.mtu_selector, Selector::Exactly);
        assert_eq!(r.rate, b.rate);
        assert_eq!(r.sl, b.sl);
        assert_eq!(r.tclass, b.tclass);
        assert_eq!(r.flow_label, b.flow_label);
        assert_eq!(r.hop_limit, b.hop_limit);
        assert_eq!(r.pkey.base(), b.pkey.base());
    }
    let m = net.memberships(&a.gid);
    assert!(m.contains(&(bcast(), JoinState::FULL_MEMBER)));
    assert!(m.contains(&(mgid(&a, G1), JoinState::FULL_MEMBER)));
    assert!(m.contains(&(mgid(&a, G2), JoinState::SEND_ONLY_FULL_MEMBER)));
    assert_eq!(a.take_events_link_up(), 1);
}

trait Events {
    fn take_events_link_up(&mut self) -> usize;
}

impl Events for Host {
    fn take_events_link_up(&mut self) -> usize {
        let mut n = 0;
        while let Some(e) = self.ctl.take_event() {
            n += usize::from(e == CtrlEvent::LinkUp);
        }
        n
    }
}

#[test]
fn rule2_joins_only_when_active_up_and_not_flushing() {
    let net = Net::new(FaultConfig::NONE);
    let mut a = Host::new(&net, "a", CtrlConfig::default());
    a.ctl.join_group(G1);
    run_until(&net, &mut [&mut a], secs(5), ms(10), |h| joined(h[0], G1));

    // Interface down: a flush, then no join however long we wait.
    a.ctl.set_admin_up(false);
    run_until(&net, &mut [&mut a], secs(10), ms(10), |h| {
        !h[0].ctl.is_flushing()
    });
    assert!(!a.ctl.link_up());
    assert!(net.memberships(&a.gid).is_empty());
    let sent = a.ctl.stats().sa_joins_sent;
    run(&net, &mut [&mut a], secs(60), ms(100));
    assert_eq!(
        a.ctl.stats().sa_joins_sent,
        sent,
        "joined while the interface was down"
    );
    a.ctl.set_admin_up(true);
    run_until(&net, &mut [&mut a], secs(5), ms(10), |h| joined(h[0], G1));

    // Port down: no join while it is not Active.
    net.fabric.set_port_up(a.port_id, false);
    run_until(&net, &mut [&mut a], secs(20), ms(10), |h| {
        !h[0].ctl.is_flushing()
    });
    let sent = a.ctl.stats().sa_joins_sent;
    run(&net, &mut [&mut a], secs(60), ms(100));
    assert_eq!(
        a.ctl.stats().sa_joins_sent,
        sent,
        "joined while the port was down"
    );
    assert!(!a.ctl.link_up());
    net.fabric.set_port_up(a.port_id, true);
    run_until(&net, &mut [&mut a], secs(10), ms(10), |h| joined(h[0], G1));
    assert!(a.ctl.link_up());

    // While a flush runs (kept running by a silent SA), no join goes out, even though
    // the port is Active and the interface up.
    net.fabric.set_faults(FaultConfig {
        sa_request_loss: 1.0,
        ..FaultConfig::NONE
    });
    a.ctl.set_admin_up(false);
    a.ctl.set_admin_up(true);
    let sent = a.ctl.stats().sa_joins_sent;
    let mut flushing_steps = 0;
    while a.ctl.is_flushing() {
        a.step();
        if a.ctl.is_flushing() {
            assert_eq!(a.ctl.stats().sa_joins_sent, sent, "joined during a flush");
        }
        net.clock.advance(ms(10));
        flushing_steps += 1;
    }
    assert!(
        flushing_steps > 100,
        "the flush should have waited for the leaves"
    );
    net.fabric.set_faults(FaultConfig::NONE);
    run_until(&net, &mut [&mut a], secs(10), ms(10), |h| joined(h[0], G1));
    assert!(a.ctl.stats().sa_joins_sent > sent);
}

/// Times (relative to the first) at which `a` sent a join, over `dur`.
fn join_times(net: &Net, a: &mut Host, dur: Nanos) -> Vec<u64> {
    let mut times = Vec::new();
    let end = net.now().saturating_add(dur);
    let mut sent = a.ctl.stats().sa_joins_sent;
    while net.now() < end {
        a.step();
        let now_sent = a.ctl.stats().sa_joins_sent;
        for _ in sent..now_sent {
            times.push(net.now().0 / 1_000_000);
        }
        sent = now_sent;
        net.clock.advance(ms(10));
    }
    times
}

fn deltas_s(times: &[u64]) -> Vec<u64> {
    times.windows(2).map(|w| (w[1] - w[0]) / 1000).collect()
}

#[test]
fn rule3_backoff_2_4_8_16_16() {
    let refuse = FaultConfig {
        sa_error: 1.0,
        ..FaultConfig::NONE
    };
    let net = Net::new(refuse);
    let mut a = Host::new(&net, "a", CtrlConfig::default());
    let t = join_times(&net, &mut a, secs(80));
    assert_eq!(
        deltas_s(&t)[..6],
        [2, 4, 8, 16, 16, 16],
        "join times {t:?} ms"
    );
    for w in t.windows(2) {
        assert_eq!((w[1] - w[0]) % 1000, 0, "retries at whole seconds: {t:?}");
    }

    // Success resets the backoff: the next failure waits 2 s again.
    net.fabric.set_faults(FaultConfig::NONE);
    run_until(&net, &mut [&mut a], secs(20), ms(10), |h| {
        bcast_joined(h[0])
    });
    net.fabric.set_faults(refuse);
    net.fabric.set_port_up(a.port_id, false);
    net.fabric.set_port_up(a.port_id, true);
    let t = join_times(&net, &mut a, secs(10));
    assert_eq!(deltas_s(&t)[..2], [2, 4], "after a success: {t:?}");

    // A send-only group that fails twice drops its queue and waits for the next packet.
    net.fabric.set_faults(FaultConfig::NONE);
    run_until(&net, &mut [&mut a], secs(30), ms(10), |h| {
        bcast_joined(h[0])
    });
    net.fabric.set_faults(refuse);
    for seq in 0..3 {
        assert!(a.data_send_mcast(0, G1, seq));
    }
    let failed = a.ctl.stats().joins_failed;
    run_until(&net, &mut [&mut a], secs(10), ms(10), |h| {
        h[0].ctl.stats().joins_failed >= failed + 2
    });
    a.step();
    let s = a.ctl.stats();
    assert_eq!(s.mcast_sendonly_dropped, 3);
    assert_eq!(a.ctl.mcast_queued(), 0);
    assert!(matches!(
        a.ctl.group_state(G1),
        Some(GroupState::Idle {
            retry_at: RetryAt::NextPacket(_),
            ..
        })
    ));
    let sent = s.sa_joins_sent;
    run(&net, &mut [&mut a], secs(60), ms(100));
    assert_eq!(
        a.ctl.stats().sa_joins_sent,
        sent,
        "a parked send-only group joined"
    );
    net.fabric.set_faults(FaultConfig::NONE);
    assert!(a.data_send_mcast(0, G1, 9));
    run_until(&net, &mut [&mut a], secs(20), ms(10), |h| joined(h[0], G1));
    assert_eq!(a.ctl.stats().mcast_sent_from_queue, 1);
}

/// Rule 3 with rule 6's obligation: a send-only group parked after two joins that timed
/// out (the SA granted them; only the answers were lost) does not keep the membership at
/// the SA until its next packet: it is left at once.
#[test]
fn rule3_a_parked_sendonly_group_whose_joins_timed_out_is_left() {
    let net = Net::new(FaultConfig::NONE);
    let mut a = Host::new(&net, "a", CtrlConfig::default());
    run_until(&net, &mut [&mut a], secs(10), ms(10), |h| {
        bcast_joined(h[0])
    });
    net.fabric.set_faults(FaultConfig {
        sa_answer_loss: 1.0,
        ..FaultConfig::NONE
    });
    let g1 = mgid(&a, G1);
    assert!(a.data_send_mcast(0, G1, 1));
    let failed = a.ctl.stats().joins_failed;
    run_until(&net, &mut [&mut a], secs(10), ms(10), |h| {
        h[0].ctl.stats().joins_failed > failed
    });
    assert!(
        net.memberships(&a.gid).iter().any(|(m, _)| *m == g1),
        "the SA granted the join whose answer was lost"
    );
    let leaves = a.ctl.stats().sa_leaves_sent;
    run_until(&net, &mut [&mut a], secs(10), ms(10), |h| {
        h[0].ctl.stats().joins_failed > failed + 1
    });
    // Parked, and left within a step or two (the window has room).
    run(&net, &mut [&mut a], ms(100), ms(10));
    assert!(a.ctl.stats().sa_leaves_sent > leaves, "no leave was sent");
    assert!(
        !net.memberships(&a.gid).iter().any(|(m, _)| *m == g1),
        "the SA still holds the parked group: {:?}",
        net.memberships(&a.gid)
    );
    // The next packet joins it again.
    net.fabric.set_faults(FaultConfig::NONE);
    run(&net, &mut [&mut a], secs(20), ms(100));
    assert!(a.data_send_mcast(0, G1, 2));
    run_until(&net, &mut [&mut a], secs(20), ms(10), |h| joined(h[0], G1));
    assert_eq!(a.ctl.stats().mcast_sent_from_queue, 1);
}

#[test]
fn rule4_data_path_never_joins() {
    let net = Net::new(FaultConfig::NONE);
    let mut a = Host::new(&net, "a", CtrlConfig::default());
    let mut b = Host::new(&net, "b", CtrlConfig::default());
    b.ctl.join_group(G1);
    run_until(&net, &mut [&mut a, &mut b], secs(5), ms(10), |h| {
        bcast_joined(h[0]) && joined(h[1], G1)
    });
    // The data core has no entry for G1: 70 packets go to the control core.
    assert!(a.cores[0].reader.get().group(&mgid(&a, G1)).is_none());
    let joins = a.ctl.stats().sa_joins_sent;
    for seq in 0..70 {
        assert!(a.data_send_mcast(0, G1, seq));
    }
    assert_eq!(
        a.ctl.stats().sa_joins_sent,
        joins,
        "the data path sent a join"
    );
    a.ctl.poll();
    let s = a.ctl.stats();
    assert_eq!(s.mcast_queued, 64);
    assert_eq!(s.mcast_queue_full, 6);
    assert_eq!(s.sa_joins_sent, joins + 1, "one send-only join");
    run_until(&net, &mut [&mut a, &mut b], secs(5), ms(10), |h| {
        h[1].received.len() >= 64
    });
    assert_eq!(b.received, (0..64).collect::<Vec<u32>>());
    assert_eq!(a.ctl.stats().mcast_sent_from_queue, 64);
    assert!(net
        .memberships(&a.gid)
        .contains(&(mgid(&a, G1), JoinState::SEND_ONLY_FULL_MEMBER)));
    // Now Joined: the data core sends by itself, the control core sees nothing.
    let requests = a.ctl.stats().requests;
    for seq in 100..110 {
        assert!(a.data_send_mcast(0, G1, seq));
    }
    run(&net, &mut [&mut a, &mut b], ms(100), ms(10));
    assert_eq!(a.ctl.stats().requests, requests);
    assert_eq!(b.received.len(), 74);
}

#[test]
fn rule5_flush_leaves_everything_in_bounded_time_even_when_sa_silent() {
    let net = Net::new(FaultConfig::NONE);
    let cfg = CtrlConfig::default();
    // Draining in-flight joins takes at most one SA timeout, then each leave at most
    // three.
    let bound = Nanos(cfg.sa_timeout.0 * (1 + u64::from(cfg.leave_tries)));
    let mut a = Host::new(&net, "a", cfg.clone());
    a.ctl.join_group(G1);
    a.ctl.join_group(G2);
    a.data_send_mcast(0, G3, 1);
    run_until(&net, &mut [&mut a], secs(5), ms(10), |h| {
        joined(h[0], G1) && joined(h[0], G2) && joined(h[0], G3)
    });
    assert_eq!(net.memberships(&a.gid).len(), 4);

    // SA reachable: a flush leaves every membership.
    flush_leaves_everything(&net, &mut a, secs(10));
    assert_eq!(a.ctl.stats().leaves_done, 4);

    // A join in flight when the flush starts (race 1 of the seed): the flush waits for
    // its answer, then leaves it.
    net.fabric.set_faults(FaultConfig {
        sa_delay_min: ms(500),
        sa_delay_max: ms(500),
        ..FaultConfig::NONE
    });
    a.ctl.set_admin_up(true);
    run_until(&net, &mut [&mut a], secs(2), ms(10), |h| {
        h[0].ctl.group_phase(GroupAddr::Mgid(bcast())) == Some(GroupPhase::Joining)
    });
    flush_leaves_everything(&net, &mut a, secs(10));

    // A join granted but whose answer was lost (timed out): the SA may hold it, so the
    // flush deletes it.
    net.fabric.set_faults(FaultConfig {
        sa_answer_loss: 1.0,
        ..FaultConfig::NONE
    });
    a.ctl.set_admin_up(true);
    let failed = a.ctl.stats().joins_failed;
    run_until(&net, &mut [&mut a], secs(5), ms(10), |h| {
        h[0].ctl.stats().joins_failed > failed
    });
    assert_eq!(
        net.memberships(&a.gid).len(),
        1,
        "the SA granted the lost join"
    );
    let took = flush_leaves_everything(&net, &mut a, secs(30));
    assert!(took <= bound);
    assert!(a.ctl.stats().leaves_unconfirmed >= 1);

    // SA silent: the flush still ends, after three tries of each leave.
    net.fabric.set_faults(FaultConfig::NONE);
    a.ctl.set_admin_up(true);
    a.data_send_mcast(0, G3, 2);
    run_until(&net, &mut [&mut a], secs(10), ms(10), |h| {
        joined(h[0], G1) && joined(h[0], G2) && joined(h[0], G3)
    });
    let s0 = a.ctl.stats();
    net.fabric.set_faults(FaultConfig {
        sa_request_loss: 1.0,
        sa_answer_loss: 1.0,
        ..FaultConfig::NONE
    });
    a.ctl.set_admin_up(false);
    let took = run_until(&net, &mut [&mut a], secs(30), ms(10), |h| {
        !h[0].ctl.is_flushing()
    });
    assert!(took <= bound, "flush took {took:?}, bound {bound:?}");
    let s = a.ctl.stats();
    assert_eq!(s.sa_leaves_sent - s0.sa_leaves_sent, 4 * 3);
    assert_eq!(s.leaves_abandoned - s0.leaves_abandoned, 4);
    assert!(!a.ctl.link_up());
}

#[test]
fn rule6_deadlines_and_three_leave_tries() {
    let net = Net::new(FaultConfig::NONE);
    let mut a = Host::new(&net, "a", CtrlConfig::default());
    a.ctl.join_group(G1);
    run_until(&net, &mut [&mut a], secs(5), ms(10), |h| joined(h[0], G1));

    // A leave the SA never hears: 3 tries, 1 s apart, then given up for now.
    net.fabric.set_faults(FaultConfig {
        sa_request_loss: 1.0,
        ..FaultConfig::NONE
    });
    let s0 = a.ctl.stats();
    a.ctl.leave_group(G1);
    let mut times = Vec::new();
    let mut sent = s0.sa_leaves_sent;
    for _ in 0..500 {
        a.step();
        let n = a.ctl.stats().sa_leaves_sent;
        for _ in sent..n {
            times.push(net.now().0 / 1_000_000);
        }
        sent = n;
        net.clock.advance(ms(10));
    }
    assert_eq!(times.len(), 3, "leave tries at {times:?} ms");
    assert_eq!(deltas_s(&times), [1, 1]);
    let s = a.ctl.stats();
    assert_eq!(s.leaves_abandoned, s0.leaves_abandoned + 1);
    assert_eq!(s.sa_timeouts, s0.sa_timeouts + 3);
    // The SA may still hold the membership: the obligation is kept (an Unconfirmed
    // token) and the leave tried again later; the group goes once it is done.
    assert!(matches!(
        a.ctl.group_state(G1),
        Some(GroupState::Idle {
            unconfirmed: Some(_),
            ..
        })
    ));
    net.fabric.set_faults(FaultConfig::NONE);
    run_until(&net, &mut [&mut a], secs(30), ms(10), |h| {
        h[0].ctl.group_phase(G1).is_none()
    });
    assert!(net
        .memberships(&a.gid)
        .iter()
        .all(|(g, _)| *g != mgid(&a, G1)));
    net.fabric.set_faults(FaultConfig {
        sa_request_loss: 1.0,
        ..FaultConfig::NONE
    });

    // A join without an answer times out at its deadline and backs off; the timed-out
    // join is remembered ("the SA may hold it").
    a.ctl.join_group(G2);
    run_until(&net, &mut [&mut a], secs(5), ms(10), |h| {
        h[0].ctl.group_phase(G2) == Some(GroupPhase::Joining)
    });
    let t0 = net.now();
    run_until(&net, &mut [&mut a], secs(5), ms(10), |h| {
        h[0].ctl.group_phase(G2) == Some(GroupPhase::Idle)
    });
    assert_eq!(net.now().saturating_sub(t0), secs(1));
    assert!(matches!(
        a.ctl.group_state(G2),
        Some(GroupState::Idle {
            unconfirmed: Some(_),
            ..
        })
    ));

    // Late answers (after the deadline) and duplicates are ignored and counted.
    net.fabric.set_faults(FaultConfig {
        sa_delay_min: ms(1500),
        sa_delay_max: ms(1500),
        ..FaultConfig::NONE
    });
    run(&net, &mut [&mut a], secs(8), ms(10));
    assert!(a.ctl.stats().sa_late_answers >= 1);
    net.fabric.set_faults(FaultConfig {
        sa_duplicate: 1.0,
        ..FaultConfig::NONE
    });
    run_until(&net, &mut [&mut a], secs(40), ms(10), |h| joined(h[0], G2));
    run(&net, &mut [&mut a], ms(100), ms(10));
    assert!(a.ctl.stats().sa_duplicate_answers >= 1);
    assert!(joined(&a, G2));
    assert_eq!(a.ctl.sa_in_flight(), 0);
}

#[test]
fn rule7_idle_sendonly_groups_expire() {
    let net = Net::new(FaultConfig::NONE);
    let cfg = CtrlConfig::default();
    let mut a = Host::new(&net, "a", cfg.clone());
    a.data_send_mcast(0, G1, 0);
    a.data_send_mcast(0, G2, 0);
    run_until(&net, &mut [&mut a], secs(5), ms(10), |h| {
        joined(h[0], G1) && joined(h[0], G2)
    });
    // G1 stays in use on the data path; G2 is never used again.
    let end = net
        .now()
        .saturating_add(cfg.sendonly_idle.saturating_add(secs(10)));
    let mut seq = 1;
    while net.now() < end {
        a.data_send_mcast(0, G1, seq);
        seq += 1;
        run(&net, &mut [&mut a], secs(2), ms(100));
    }
    assert!(joined(&a, G1), "a used group expired");
    assert_eq!(
        a.ctl.group_phase(G2),
        None,
        "an unused send-only group stayed"
    );
    assert_eq!(a.ctl.stats().mcast_expired, 1);
    let m = net.memberships(&a.gid);
    assert!(m.iter().all(|(g, _)| *g != mgid(&a, G2)), "{m:?}");
    assert!(m.iter().any(|(g, _)| *g == mgid(&a, G1)));
    assert!(a.cores[0].reader.get().group(&mgid(&a, G2)).is_none());
    // Its address handle went once no snapshot held it.
    run(&net, &mut [&mut a], secs(1), ms(100));
    assert!(a.ctl.stats().ah_destroyed >= 1);
}

#[test]
fn rule8_flush_levels() {
    let net = Net::new(FaultConfig::NONE);
    let mut a = Host::new(&net, "a", CtrlConfig::default());
    a.ctl.join_group(G1);
    run_until(&net, &mut [&mut a], secs(5), ms(10), |h| joined(h[0], G1));
    while a.ctl.take_event().is_some() {}

    // ClientReregister (SM restart, groups wiped): light flush, the link stays up, all
    // groups are joined again.
    net.fabric.restart_sm(None);
    assert!(net.memberships(&a.gid).is_empty());
    run_until(&net, &mut [&mut a], secs(10), ms(10), |h| {
        assert!(h[0].ctl.link_up(), "a light flush took the link down");
        !h[0].ctl.is_flushing() && joined(h[0], G1) && bcast_joined(h[0])
    });
    assert_eq!(a.ctl.stats().flushes_light, 1);
    assert_eq!(net.memberships(&a.gid).len(), 2);
    assert_eq!(a.ctl.take_event(), None, "no link events on a light flush");

    // Port Error then Active: normal flushes, link down then up.
    net.fabric.set_port_up(a.port_id, false);
    a.step();
    assert!(!a.ctl.link_up());
    assert_eq!(a.ctl.take_event(), Some(CtrlEvent::LinkDown));
    net.fabric.set_port_up(a.port_id, true);
    run_until(&net, &mut [&mut a], secs(20), ms(10), |h| {
        h[0].ctl.link_up() && joined(h[0], G1)
    });
    assert_eq!(a.ctl.stats().flushes_normal, 2);

    // LidChange: normal.
    while a.ctl.take_event().is_some() {}
    net.fabric.set_lid(a.port_id, Lid(0x77));
    a.ctl.poll();
    assert!(!a.ctl.link_up());
    assert_eq!(a.ctl.take_event(), Some(CtrlEvent::LinkDown));
    run_until(&net, &mut [&mut a], secs(20), ms(10), |h| {
        h[0].ctl.link_up() && joined(h[0], G1)
    });
    assert_eq!(a.ctl.stats().flushes_normal, 3);
    while a.ctl.take_event().is_some() {}

    // PkeyChange: heavy; the P_Key is re-read and the stack asked to rebuild its QP.
    net.fabric
        .set_pkeys(a.port_id, vec![PKey::DEFAULT, PKey(0x8001)]);
    a.ctl.poll();
    assert!(!a.ctl.link_up());
    run_until(&net, &mut [&mut a], secs(20), ms(10), |h| {
        h[0].ctl.link_up() && joined(h[0], G1)
    });
    assert_eq!(a.ctl.stats().flushes_heavy, 1);
    let mut events = Vec::new();
    while let Some(e) = a.ctl.take_event() {
        events.push(e);
    }
    assert!(
        events.contains(&CtrlEvent::RebuildQp { pkey_index: 0 }),
        "{events:?}"
    );

    // The P_Key removed: no joins until it is back.
    net.fabric.set_pkeys(a.port_id, vec![PKey(0x8001)]);
    run_until(&net, &mut [&mut a], secs(20), ms(10), |h| {
        !h[0].ctl.is_flushing()
    });
    let sent = a.ctl.stats().sa_joins_sent;
    run(&net, &mut [&mut a], secs(30), ms(100));
    assert_eq!(a.ctl.stats().sa_joins_sent, sent);
    assert_eq!(a.ctl.stats().pkey_missing, 1);
    assert!(!a.ctl.link_up());
    net.fabric.set_pkeys(a.port_id, vec![PKey::DEFAULT]);
    run_until(&net, &mut [&mut a], secs(20), ms(10), |h| {
        h[0].ctl.link_up() && joined(h[0], G1)
    });
}

#[test]
fn rule9_bounds() {
    let net = Net::new(FaultConfig::NONE);
    let cfg = CtrlConfig {
        ring_size: 1024,
        requests_per_poll: 1024,
        ..CtrlConfig::default()
    };
    let mut a = Host::with_pool(&net, "a", cfg.clone(), 8192);
    run_until(&net, &mut [&mut a], secs(5), ms(10), bcast_joined_first);

    // A million distinct groups: a counter, not memory.
    const N: u32 = 1_000_000;
    for i in 0..N {
        let group = GroupAddr::Ipv4([
            224 + (i >> 24) as u8,
            (i >> 16) as u8,
            (i >> 8) as u8,
            i as u8,
        ]);
        assert!(a.data_send_mcast(0, group, i), "ring full at {i}");
        if i % 1000 == 999 {
            a.step();
            net.clock.advance(ms(1));
            assert!(a.ctl.group_count() <= cfg.groups_max);
            assert!(a.ctl.mcast_queued() <= cfg.groups_max * cfg.mcast_queue_max);
        }
    }
    run(&net, &mut [&mut a], secs(1), ms(10));
    let s = a.ctl.stats();
    assert_eq!(a.ctl.group_count(), cfg.groups_max);
    assert_eq!(
        s.mcast_table_full,
        u64::from(N) - (cfg.groups_max as u64 - 1)
    );
    assert!(a.ctl.sa_in_flight() <= cfg.sa_window);
    assert!(a.pool.in_use() < 1024, "buffers held: {}", a.pool.in_use());

    // A full ring hands the request back and counts it.
    let mut back = 0;
    for i in 0..(cfg.ring_size as u32 + 10) {
        if !a.data_send_unicast(0, [10, 1, (i >> 8) as u8, i as u8], i) {
            back += 1;
        }
    }
    assert_eq!(back, 10);
    assert_eq!(a.ctl.stats().ring_full, 10);
    a.step();

    // Neighbours: the table and each queue are bounded.
    for i in 0..5000u32 {
        a.data_send_unicast(0, [10, 2, (i >> 8) as u8, i as u8], i);
        if i % 500 == 0 {
            a.step();
        }
    }
    a.step();
    assert!(a.ctl.neighbour_count() <= cfg.neigh_max);
    assert!(a.ctl.stats().neigh_table_full > 0);
    for i in 0..5 {
        a.data_send_unicast(0, [10, 3, 0, 1], i);
    }
    a.step();
    assert!(a.ctl.neigh_queued() <= cfg.neigh_max * cfg.neigh_queue_max);
}

fn bcast_joined_first(h: &mut [&mut Host]) -> bool {
    bcast_joined(h[0])
}

/// Takes `a`'s interface down, polls until its flush ends (within `limit` of virtual
/// time) and asserts that the SA holds no membership of its port afterwards; returns
/// how long the flush took.
fn flush_leaves_everything(net: &Net, a: &mut Host, limit: Nanos) -> Nanos {
    a.ctl.set_admin_up(false);
    let took = run_until(net, &mut [&mut *a], limit, ms(10), |h| {
        !h[0].ctl.is_flushing()
    });
    assert!(
        net.memberships(&a.gid).is_empty(),
        "{:?}",
        net.memberships(&a.gid)
    );
    took
}
