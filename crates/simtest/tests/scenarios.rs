//! Named scenarios: the seed's two races and failures from the kernel driver's history,
//! each driven through the simulator so that the whole invariant checker runs after
//! every step, and each ending with the final flush and its end checks
//! ([`Sim::finish`]).

use ibpoll_ctrl::{CtrlConfig, GroupAddr, GroupPhase};
use ibpoll_dev::Nanos;
use ibpoll_pmd_sim::FaultConfig;
use ibpoll_simtest::{Sim, SimConfig};
use ibpoll_wire::IbMtu;

const G1: GroupAddr = GroupAddr::Ipv4([239, 1, 0, 1]);
const G2: GroupAddr = GroupAddr::Ipv4([239, 1, 0, 2]);

fn ms(n: u64) -> Nanos {
    Nanos::from_millis(n)
}

fn secs(n: u64) -> Nanos {
    Nanos::from_secs(n)
}

fn delay(d: u64) -> FaultConfig {
    FaultConfig {
        sa_delay_min: ms(d),
        sa_delay_max: ms(d),
        ..FaultConfig::NONE
    }
}

fn sim(hosts: usize, faults: FaultConfig) -> Sim {
    sim_with(hosts, faults, CtrlConfig::default())
}

fn sim_with(hosts: usize, faults: FaultConfig, ctrl: CtrlConfig) -> Sim {
    Sim::new(SimConfig {
        seed: 7,
        hosts,
        ctrl,
        faults,
        pool_bufs: 4096,
        groups_in_use: 8,
        backpressure: None,
    })
}

fn phase(s: &Sim, h: usize, g: GroupAddr) -> Option<GroupPhase> {
    s.hosts[h].ctl.group_phase(g)
}

fn bcast(s: &Sim) -> GroupAddr {
    GroupAddr::Mgid(s.bcast)
}

fn up(s: &mut Sim, h: usize) {
    s.run_until(secs(30), ms(10), |s| s.hosts[h].ctl.link_up());
}

fn joined(s: &mut Sim, h: usize, g: GroupAddr) {
    s.run_until(secs(30), ms(10), |s| {
        phase(s, h, g) == Some(GroupPhase::Joined)
    });
}

/// Runs until host `h`'s flush has ended (after at least one step: a port event is only
/// seen by the controller's next poll). Returns how long it took.
fn flushed(s: &mut Sim, h: usize) -> Nanos {
    let started = s.hosts[h].flush_since;
    s.step(ms(10));
    let t = s.run_until(secs(120), ms(10), |s| !s.hosts[h].ctl.is_flushing());
    let since = started.or(s.hosts[h].flush_since).unwrap_or(s.now());
    t.max(s.now().saturating_sub(since))
}

/// Race 1 of the seed: the interface goes down at the very instant the join answer is
/// handled. The answer and the flush are steps of one poll: the flush either waits for
/// the answer or finds the group Joined, and leaves it exactly once.
#[test]
fn race1_down_while_a_join_answer_is_handled() {
    let mut s = sim(1, delay(200));
    up(&mut s, 0);
    assert!(s.subscribe(0, G1));
    s.run_until(secs(5), ms(1), |s| {
        phase(s, 0, G1) == Some(GroupPhase::Joining)
    });
    // The join went out during the last step; its answer is due 200 ms later.
    s.run(ms(199), ms(1));
    assert_eq!(phase(&s, 0, G1), Some(GroupPhase::Joining));
    s.advance(ms(1));
    s.admin(0, false);
    s.step(Nanos::ZERO);
    flushed(&mut s, 0);
    assert!(s.held_by(0).is_empty(), "{:?}", s.held_by(0));
    let st = s.hosts[0].ctl.stats();
    assert_eq!(st.joins_ok, 2);
    assert_eq!(st.leaves_done, 2, "broadcast and G1, each once");
    s.finish();
}

/// Race 2 of the seed: a join is in flight (its answer will be a refusal) when the
/// interface goes down and the broadcast group is torn down. No leave is built from the
/// failed join, nothing waits forever.
#[test]
fn race2_down_while_a_join_is_in_flight_and_the_broadcast_group_is_torn_down() {
    let mut s = sim(1, FaultConfig::NONE);
    up(&mut s, 0);
    s.set_faults(FaultConfig {
        sa_error: 1.0,
        ..delay(500)
    });
    assert!(s.subscribe(0, G1));
    s.run_until(secs(5), ms(1), |s| {
        phase(s, 0, G1) == Some(GroupPhase::Joining)
    });
    // The SA has decided (refused); the broadcast group's leave goes through.
    s.set_faults(FaultConfig::NONE);
    s.admin(0, false);
    let took = flushed(&mut s, 0);
    assert!(
        took >= ms(450),
        "the flush waited for the join's answer: {took:?}"
    );
    assert!(took <= s.flush_bound(0));
    let st = s.hosts[0].ctl.stats();
    assert_eq!(st.joins_failed, 1);
    assert_eq!(st.sa_leaves_sent, 1, "only the broadcast group is left");
    assert_eq!(st.leaves_unconfirmed, 0);
    assert!(s.held_by(0).is_empty());
    s.finish();
}

/// Kernel history: a flush while a join's answer is in flight leaves what the join got.
#[test]
fn flush_while_a_join_answer_is_in_flight() {
    let mut s = sim(1, delay(800));
    up(&mut s, 0);
    s.subscribe(0, G1);
    s.send_mcast(0, 0, G2);
    s.run_until(secs(5), ms(10), |s| {
        phase(s, 0, G1) == Some(GroupPhase::Joining) && phase(s, 0, G2) == Some(GroupPhase::Joining)
    });
    s.admin(0, false);
    flushed(&mut s, 0);
    assert!(s.held_by(0).is_empty(), "{:?}", s.held_by(0));
    assert_eq!(s.hosts[0].ctl.stats().leaves_done, 3);
    s.finish();
}

/// Kernel history: a light flush (ClientReregister) during joins: no double attach or
/// detach of the broadcast group (or any other; the observed port asserts it), and every
/// group ends up joined again.
#[test]
fn light_flush_during_joins() {
    let mut s = sim(1, delay(100));
    up(&mut s, 0);
    let groups: Vec<GroupAddr> = (0..8).map(|i| GroupAddr::Ipv4([239, 2, 0, i])).collect();
    for g in &groups {
        s.subscribe(0, *g);
    }
    s.step(ms(10));
    s.step(ms(100));
    s.restart_sm(None);
    s.step(ms(50));
    s.restart_sm(None);
    s.run_until(secs(30), ms(10), |s| {
        !s.hosts[0].ctl.is_flushing()
            && groups
                .iter()
                .all(|g| phase(s, 0, *g) == Some(GroupPhase::Joined))
    });
    assert!(s.hosts[0].ctl.link_up());
    assert!(s.hosts[0].ctl.stats().flushes_light >= 1);
    assert_eq!(s.held_by(0).len(), 9);
    s.finish();
}

/// Kernel history: the interface taken down during a light flush stays down.
#[test]
fn interface_down_during_a_light_flush_stays_down() {
    let mut s = sim(1, delay(300));
    up(&mut s, 0);
    s.subscribe(0, G1);
    joined(&mut s, 0, G1);
    s.restart_sm(None);
    s.step(ms(10));
    assert_eq!(
        s.hosts[0].ctl.flush_level(),
        Some(ibpoll_ctrl::FlushLevel::Light)
    );
    s.admin(0, false);
    flushed(&mut s, 0);
    let sent = s.hosts[0].ctl.stats().sa_joins_sent;
    s.run(secs(60), ms(100));
    assert_eq!(
        s.hosts[0].ctl.stats().sa_joins_sent,
        sent,
        "joined while down"
    );
    assert!(!s.hosts[0].ctl.link_up());
    assert!(s.held_by(0).is_empty());
    s.finish();
}

/// Kernel history: a send-only join asked for while joins are stopped (interface down,
/// or a flush running) waits; the packet is queued and sent once joins may go out.
#[test]
fn sendonly_join_asked_for_while_joins_are_stopped() {
    let mut s = sim(1, FaultConfig::NONE);
    up(&mut s, 0);
    s.admin(0, false);
    flushed(&mut s, 0);
    let sent = s.hosts[0].ctl.stats().sa_joins_sent;
    assert!(s.send_mcast(0, 0, G1));
    s.run(secs(10), ms(100));
    assert_eq!(s.hosts[0].ctl.stats().sa_joins_sent, sent);
    assert_eq!(s.hosts[0].ctl.group_queued(G1), 1);

    // While a flush runs (a silent SA keeps it running).
    s.admin(0, true);
    joined(&mut s, 0, G1);
    s.set_faults(FaultConfig {
        sa_request_loss: 1.0,
        ..FaultConfig::NONE
    });
    s.admin(0, false);
    s.admin(0, true);
    let sent = s.hosts[0].ctl.stats().sa_joins_sent;
    let dropped = s.hosts[0].ctl.stats().mcast_flush_dropped;
    assert!(s.send_mcast(0, 0, G2));
    while s.hosts[0].ctl.is_flushing() {
        assert_eq!(
            s.hosts[0].ctl.stats().sa_joins_sent,
            sent,
            "joined during a flush"
        );
        s.step(ms(10));
    }
    // A normal flush takes its send-only groups with it (the kernel's mcast_dev_flush):
    // the packet is a counted drop, and the next one asks again.
    assert_eq!(s.hosts[0].ctl.stats().mcast_flush_dropped, dropped + 1);
    s.set_faults(FaultConfig::NONE);
    assert!(s.send_mcast(0, 0, G2));
    joined(&mut s, 0, G2);
    assert!(s.hosts[0].ctl.stats().mcast_sent_from_queue >= 2);
    s.finish();
}

/// Kernel history: multicast packets sent during a subnet-manager restart are queued and
/// sent after the rejoin, not dropped.
#[test]
fn multicast_during_a_restart_is_queued_not_dropped() {
    let mut s = sim(2, delay(200));
    up(&mut s, 0);
    s.subscribe(1, G1);
    joined(&mut s, 1, G1);
    s.send_mcast(0, 0, G1);
    joined(&mut s, 0, G1);
    let before = s.hosts[0].ctl.stats();
    s.restart_sm(None);
    s.step(ms(10));
    assert!(s.hosts[0].ctl.is_flushing());
    assert!(s.hosts[0].cores[0]
        .reader
        .get()
        .group(&s.mgid(G1))
        .is_none());
    for _ in 0..10 {
        assert!(
            s.send_mcast(0, 0, G1),
            "the data core hands it to the control core"
        );
    }
    s.run_until(secs(30), ms(10), |s| {
        !s.hosts[0].ctl.is_flushing() && s.hosts[0].ctl.group_queued(G1) == 0
    });
    let after = s.hosts[0].ctl.stats();
    assert_eq!(after.mcast_flush_dropped, before.mcast_flush_dropped);
    assert_eq!(
        after.mcast_sent_from_queue - before.mcast_sent_from_queue,
        10
    );
    s.finish();
}

/// Kernel history: send-only groups that go unused expire and are left.
#[test]
fn sendonly_groups_expire_and_are_left() {
    let ctrl = CtrlConfig {
        sendonly_idle: secs(5),
        ..CtrlConfig::default()
    };
    let mut s = sim_with(1, FaultConfig::NONE, ctrl);
    up(&mut s, 0);
    s.send_mcast(0, 0, G1);
    joined(&mut s, 0, G1);
    let g1 = s.mgid(G1);
    assert!(s.held_by(0).iter().any(|(g, _)| *g == g1));
    s.run(secs(20), ms(100));
    assert_eq!(phase(&s, 0, G1), None);
    assert_eq!(s.hosts[0].ctl.stats().mcast_expired, 1);
    assert!(s.held_by(0).iter().all(|(g, _)| *g != g1));
    s.finish();
}

/// Kernel history: an SA that never answers path queries: at most 3 packets wait for the
/// neighbour; the rest are counted drops, and the neighbour goes when its query times out.
#[test]
fn sa_that_never_answers_path_queries() {
    let mut s = sim(2, FaultConfig::NONE);
    up(&mut s, 0);
    up(&mut s, 1);
    s.drop_path_queries(0, true);
    let ip = s.hosts[1].ip;
    for _ in 0..10 {
        s.send_unicast(0, 0, ip);
    }
    for _ in 0..200 {
        s.step(ms(10));
        assert!(s.hosts[0].ctl.neigh_queued_for(ip) <= 3);
    }
    let st = s.hosts[0].ctl.stats();
    assert_eq!(st.neigh_queue_full, 7);
    assert!(st.paths_failed >= 1);
    assert_eq!(st.neigh_unresolved_dropped, 3);
    assert!(s.hosts[0].cores[0].reader.get().neighbour(&ip).is_none());
    s.finish();
}

/// Kernel history: two data cores ask for the same new destination at once: one
/// neighbour entry, one resolution.
#[test]
fn two_data_cores_ask_for_the_same_new_destination() {
    let ctrl = CtrlConfig {
        data_cores: 2,
        ..CtrlConfig::default()
    };
    let mut s = sim_with(2, FaultConfig::NONE, ctrl);
    up(&mut s, 0);
    up(&mut s, 1);
    let ip = s.hosts[1].ip;
    assert!(s.send_unicast(0, 0, ip));
    assert!(s.send_unicast(0, 1, ip));
    s.step(ms(1));
    assert_eq!(s.hosts[0].ctl.neighbour_count(), 1);
    s.run_until(secs(5), ms(10), |s| {
        s.hosts[0].cores[1].reader.get().neighbour(&ip).is_some()
    });
    let st = s.hosts[0].ctl.stats();
    assert_eq!(st.sa_paths_sent, 1);
    assert_eq!(st.neigh_sent_from_queue, 2);
    s.finish();
}

/// Kernel history: a subnet-manager restart with another broadcast MTU: the broadcast
/// record is refreshed and the snapshot's MTU follows.
#[test]
fn sm_restart_with_another_mtu_refreshes_the_broadcast_record() {
    let mut s = sim(1, FaultConfig::NONE);
    up(&mut s, 0);
    let mtu = |s: &Sim| s.hosts[0].cores[0].reader.get().mtu;
    assert_eq!(mtu(&s), IbMtu::Mtu2048.ipoib_mtu());
    s.restart_sm(Some(IbMtu::Mtu4096));
    s.step(ms(10));
    s.run_until(secs(10), ms(10), |s| {
        !s.hosts[0].ctl.is_flushing() && phase(s, 0, bcast(s)) == Some(GroupPhase::Joined)
    });
    assert_eq!(mtu(&s), IbMtu::Mtu4096.ipoib_mtu());
    s.restart_sm(Some(IbMtu::Mtu1024));
    s.step(ms(10));
    s.run_until(secs(10), ms(10), |s| {
        !s.hosts[0].ctl.is_flushing() && phase(s, 0, bcast(s)) == Some(GroupPhase::Joined)
    });
    assert_eq!(mtu(&s), IbMtu::Mtu1024.ipoib_mtu());
    s.finish();
}

/// Kernel history: ClientReregister revalidates paths and address handles; the old
/// entry serves until the new one replaces it.
#[test]
fn client_reregister_revalidates_paths_and_address_handles() {
    let mut s = sim(2, delay(50));
    up(&mut s, 0);
    up(&mut s, 1);
    let ip = s.hosts[1].ip;
    s.send_unicast(0, 0, ip);
    s.run_until(secs(5), ms(10), |s| {
        s.hosts[0].cores[0].reader.get().neighbour(&ip).is_some()
    });
    let ah = s.hosts[0].cores[0]
        .reader
        .get()
        .neighbour(&ip)
        .unwrap()
        .ah();
    let before = s.hosts[0].ctl.stats();
    s.restart_sm(None);
    s.run_until(secs(10), ms(10), |s| {
        let n = s.hosts[0].cores[0]
            .reader
            .get()
            .neighbour(&ip)
            .map(|n| n.ah());
        assert!(
            n.is_some(),
            "the neighbour stays published while revalidated"
        );
        s.hosts[0].ctl.stats().paths_ok > before.paths_ok && !s.hosts[0].ctl.is_flushing()
    });
    s.step(ms(10));
    let after = s.hosts[0].ctl.stats();
    assert!(after.ah_created > before.ah_created);
    assert_ne!(
        s.hosts[0].cores[0]
            .reader
            .get()
            .neighbour(&ip)
            .unwrap()
            .ah(),
        ah
    );
    s.run(secs(1), ms(10));
    assert!(s.hosts[0].ctl.stats().ah_destroyed > before.ah_destroyed);
    s.finish();
}

/// Kernel history: no joins while the port is not Active.
#[test]
fn no_joins_while_the_port_is_not_active() {
    let mut s = sim(1, FaultConfig::NONE);
    up(&mut s, 0);
    s.subscribe(0, G1);
    joined(&mut s, 0, G1);
    s.port(0, false);
    flushed(&mut s, 0);
    let sent = s.hosts[0].ctl.stats().sa_joins_sent;
    let g3 = GroupAddr::Ipv4([239, 3, 0, 1]);
    s.send_mcast(0, 0, G2);
    s.subscribe(0, g3);
    s.run(secs(60), ms(100));
    assert_eq!(s.hosts[0].ctl.stats().sa_joins_sent, sent);
    assert!(!s.hosts[0].ctl.link_up());
    s.port(0, true);
    joined(&mut s, 0, g3);
    joined(&mut s, 0, G1);
    s.finish();
}

/// Kernel history: a leave asked for while the join is in flight waits for its answer,
/// then goes out once; the group is removed.
#[test]
fn a_leave_waits_for_an_in_flight_join() {
    let mut s = sim(1, delay(500));
    up(&mut s, 0);
    s.subscribe(0, G1);
    s.run_until(secs(5), ms(1), |s| {
        phase(s, 0, G1) == Some(GroupPhase::Joining)
    });
    s.unsubscribe(0, G1);
    let leaves = s.hosts[0].ctl.stats().sa_leaves_sent;
    while phase(&s, 0, G1) == Some(GroupPhase::Joining) {
        assert_eq!(s.hosts[0].ctl.stats().sa_leaves_sent, leaves);
        s.step(ms(10));
    }
    s.run_until(secs(5), ms(10), |s| phase(s, 0, G1).is_none());
    assert_eq!(s.hosts[0].ctl.stats().sa_leaves_sent, leaves + 1);
    let g1 = s.mgid(G1);
    assert!(s.held_by(0).iter().all(|(g, _)| *g != g1));
    s.finish();
}

/// A long run of port flaps, with traffic, churn and a slow SA.
#[test]
fn a_long_run_of_port_flaps() {
    let mut s = sim(
        2,
        FaultConfig {
            sa_delay_min: ms(0),
            sa_delay_max: ms(700),
            sa_answer_loss: 0.05,
            ..FaultConfig::NONE
        },
    );
    up(&mut s, 0);
    s.subscribe(1, G1);
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..300 {
        let down = i % 2 == 0;
        s.port(0, !down);
        if next() % 3 == 0 {
            s.send_mcast(0, 0, if next() % 2 == 0 { G1 } else { G2 });
        }
        if next() % 7 == 0 {
            s.port(1, next() % 2 == 0);
        }
        let dt = 1 + next() % 400;
        s.run(ms(dt), ms(10));
    }
    s.port(0, true);
    s.port(1, true);
    s.run(secs(30), ms(10));
    assert!(s.hosts[0].ctl.link_up());
    assert!(s.hosts[0].ctl.stats().flushes_normal >= 300);
    s.finish();
}

/// A light flush keeps the link up, but only until the broadcast group's rejoin fails:
/// the link is up only while the broadcast group is Joined.
#[test]
fn light_flush_whose_broadcast_rejoin_fails_takes_the_link_down() {
    let mut s = sim(1, FaultConfig::NONE);
    up(&mut s, 0);
    s.set_faults(FaultConfig {
        sa_error: 1.0,
        ..delay(200)
    });
    s.restart_sm(None);
    s.step(ms(10));
    assert!(s.hosts[0].ctl.link_up(), "a light flush keeps the link up");
    s.run_until(secs(30), ms(10), |s| !s.hosts[0].ctl.link_up());
    assert!(s.hosts[0].ctl.stats().joins_failed >= 1);
    s.set_faults(FaultConfig::NONE);
    up(&mut s, 0);
    s.finish();
}

/// A host's process is killed (`kill -9`: nothing left, the SA keeps its memberships)
/// and restarted on the same port: the new controller's startup cleanup leaves what the
/// dead one held before it joins, every invariant holding after every step (the SA
/// ledger sees each grant of the dead one left once, by the new one).
#[test]
fn a_killed_interface_is_cleaned_up_by_its_successor() {
    let mut s = sim(2, delay(50));
    up(&mut s, 0);
    up(&mut s, 1);
    assert!(s.subscribe(0, G1));
    assert!(s.subscribe(1, G1));
    joined(&mut s, 0, G1);
    s.send_mcast(0, 0, G2);
    joined(&mut s, 0, G2);
    assert_eq!(s.held_by(0).len(), 3, "{:?}", s.held_by(0));
    assert!(s.crash(0));
    assert_eq!(
        s.held_by(0).len(),
        3,
        "the SA keeps a dead process's memberships"
    );
    up(&mut s, 0);
    let st = s.hosts[0].ctl.stats();
    assert_eq!(
        (st.cleanup_runs, st.cleanup_found, st.cleanup_failed),
        (1, 3, 0)
    );
    // Only its own broadcast join is held now; host 1 keeps G1.
    assert_eq!(
        s.held_by(0),
        vec![(s.bcast, ibpoll_wire::mcmember::JoinState::FULL_MEMBER)]
    );
    assert!(s.held_by(1).iter().any(|(g, _)| *g == s.mgid(G1)));
    s.finish();
}

/// The same while answers are lost and late: the cleanup is bounded, and whatever it
/// could not leave is left later (liveness and the final balance check).
#[test]
fn a_killed_interface_is_cleaned_up_by_its_successor_under_sa_faults() {
    let faults = FaultConfig {
        sa_answer_loss: 0.3,
        sa_request_loss: 0.1,
        ..FaultConfig {
            sa_delay_min: ms(10),
            sa_delay_max: ms(900),
            ..FaultConfig::NONE
        }
    };
    let mut s = sim(1, FaultConfig::NONE);
    up(&mut s, 0);
    for i in 1..=6 {
        assert!(s.subscribe(0, GroupAddr::Ipv4([239, 1, 0, i])));
    }
    s.run(secs(5), ms(10));
    s.set_faults(faults);
    assert!(s.crash(0));
    s.run(secs(60), ms(10));
    assert_eq!(s.hosts[0].ctl.stats().cleanup_runs, 1);
    s.finish();
}
