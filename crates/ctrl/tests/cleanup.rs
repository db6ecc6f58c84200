//! The startup cleanup on the simulated SA: a controller that starts on a port where an
//! earlier instance was killed (its memberships still at the SA) leaves them before it
//! joins anything; only its own partition is touched; the cleanup is bounded when the
//! SA is silent; memberships it did not make are left alone and counted.

mod common;

use std::sync::Arc;

use common::*;
use ibpoll_ctrl::{CtrlConfig, GroupAddr, GroupPhase};
use ibpoll_dev::{Clock, Device, MadAddr};
use ibpoll_pmd_sim::{FabricConfig, FaultConfig};
use ibpoll_testkit::data;
use ibpoll_wire::mad::Method;
use ibpoll_wire::mcmember::{self, JoinState};
use ibpoll_wire::sa::{Attribute, SaMad};
use ibpoll_wire::{ipoib, Gid, PKey, QKey, Qpn};

fn group(i: u8) -> GroupAddr {
    GroupAddr::Ipv4([239, 3, 0, i])
}

/// A second controller on `first`'s port (the first one is dropped by the caller: a
/// process killed without leaving anything), with `cfg`.
fn restart(net: &Net, first: &Host, cfg: CtrlConfig, pkey: PKey) -> Host {
    let port = first.port.clone();
    let pool = data::pool("restarted", 4096);
    let pkey_index = port.attr().pkey_index(pkey).expect("partition");
    let qp = data::ipoib_qp(&*port, pkey_index, &pool, 1024);
    let clock: Arc<dyn Clock> = net.clock.clone();
    Host::on_port("restarted", first.port_id, port, qp, cfg, pool, clock)
}

/// Joins the broadcast group, `n` groups, and a send-only group (by a packet); runs
/// until everything is Joined.
fn join_many(net: &Net, h: &mut Host, n: u8) {
    for i in 1..=n {
        assert!(h.ctl.join_group(group(i)));
    }
    assert!(h.data_send_mcast(0, group(100), 1));
    run_until(net, &mut [h], secs(10), ms(10), |h| {
        (1..=n)
            .chain([100])
            .all(|i| h[0].ctl.group_phase(group(i)) == Some(GroupPhase::Joined))
    });
}

#[test]
fn a_new_controller_leaves_what_a_killed_one_left_before_it_joins() {
    let net = Net::new(FaultConfig {
        sa_delay_min: ms(5),
        sa_delay_max: ms(20),
        ..FaultConfig::NONE
    });
    let mut a = Host::new(&net, "a", CtrlConfig::default());
    let mut b = Host::new(&net, "b", CtrlConfig::default());
    join_many(&net, &mut a, 6);
    assert!(b.ctl.join_group(group(1)));
    run_until(&net, &mut [&mut b], secs(10), ms(10), |h| {
        h[0].ctl.group_phase(group(1)) == Some(GroupPhase::Joined)
    });
    let gid = a.gid;
    let held = net.memberships(&gid);
    assert_eq!(held.len(), 8, "broadcast, 6 groups, 1 send-only: {held:?}");

    // kill -9: nothing is left; the SA keeps all of it.
    let first = a;
    let mut a = restart(&net, &first, CtrlConfig::default(), PKey::DEFAULT);
    drop(first);
    assert_eq!(net.memberships(&gid).len(), 8);
    assert!(a.ctl.join_group(group(50)));
    // No join goes out before the cleanup ended.
    run_until(&net, &mut [&mut a, &mut b], secs(10), ms(5), |h| {
        if h[0].ctl.cleanup_blocks_joins() {
            assert_eq!(
                h[0].ctl.stats().sa_joins_sent,
                0,
                "a join during the cleanup"
            );
        }
        h[0].ctl.link_up() && h[0].ctl.group_phase(group(50)) == Some(GroupPhase::Joined)
    });
    let s = a.ctl.stats();
    assert_eq!(
        (s.cleanup_runs, s.cleanup_found, s.cleanup_failed),
        (1, 8, 0)
    );
    // Each left by the state machine, one IPoIB JoinState bit per Delete.
    assert_eq!((s.leaves_unconfirmed, s.leaves_abandoned), (8, 0));
    assert!(s.sa_lists_sent >= 3, "8 groups take 3 answers of 3: {s:?}");
    let mut now: Vec<(Gid, JoinState)> = net.memberships(&gid);
    now.sort();
    let mut want = vec![
        (ipoib::broadcast_mgid(PKey::DEFAULT), JoinState::FULL_MEMBER),
        (a.ctl.mgid_of(group(50)).unwrap(), JoinState::FULL_MEMBER),
    ];
    want.sort();
    assert_eq!(now, want, "only what the new controller joined");
    // The group b shares is still b's; the dead one's own groups are gone.
    let g1 = a.ctl.mgid_of(group(1)).unwrap();
    let g2 = a.ctl.mgid_of(group(2)).unwrap();
    assert!(net.fabric.with_sa(|sa| sa.group_by_mgid(&g1).is_some()));
    assert!(net.fabric.with_sa(|sa| sa.group_by_mgid(&g2).is_none()));
    assert_eq!(net.memberships(&b.gid).len(), 2);
    a.ctl.check_snapshot().unwrap();
}

#[test]
fn only_the_interfaces_partition_is_cleaned() {
    let net = Net::with(FabricConfig {
        partitions: vec![PKey::DEFAULT, PKey(0x8001)],
        ..FabricConfig::default()
    });
    let other = CtrlConfig {
        pkey: PKey(0x8001),
        ..CtrlConfig::default()
    };
    // The other partition's interface on the same port lives on; the default
    // partition's was killed.
    let dev = net.fabric.add_node("a", 1);
    let port = dev.open_port(1).unwrap();
    let clock: Arc<dyn Clock> = net.clock.clone();
    let mk = |name, cfg: CtrlConfig| {
        let pool = data::pool(name, 1024);
        let pi = port.attr().pkey_index(cfg.pkey).unwrap();
        let qp = data::ipoib_qp(&*port, pi, &pool, 256);
        Host::on_port(
            name,
            dev.port_id(1),
            port.clone(),
            qp,
            cfg,
            pool,
            clock.clone(),
        )
    };
    let mut p8001 = mk("p8001", other);
    let mut dead = mk("dead", CtrlConfig::default());
    join_many(&net, &mut p8001, 2);
    join_many(&net, &mut dead, 2);
    let gid = dead.gid;
    assert_eq!(net.memberships(&gid).len(), 8);
    drop(dead);
    let mut a = mk("a", CtrlConfig::default());
    run_until(&net, &mut [&mut a, &mut p8001], secs(10), ms(10), |h| {
        h[0].ctl.link_up()
    });
    let s = a.ctl.stats();
    assert_eq!((s.cleanup_found, s.cleanup_failed), (4, 0));
    let held = net.memberships(&gid);
    let in_8001 = |m: &Gid| ipoib::mgid_pkey(m).is_some_and(|p| p.base() == 0x0001);
    assert_eq!(
        held.iter().filter(|(m, _)| in_8001(m)).count(),
        4,
        "{held:?}"
    );
    assert_eq!(
        held.len(),
        5,
        "the other partition's 4 and the new broadcast join"
    );
    assert_eq!(p8001.ctl.stats().joins_failed, 0);
    assert!(p8001.ctl.link_up());
}

#[test]
fn the_cleanup_is_bounded_when_the_sa_is_silent() {
    let net = Net::new(FaultConfig {
        sa_request_loss: 1.0,
        ..FaultConfig::NONE
    });
    let cfg = CtrlConfig {
        sa_timeout: ms(500),
        cleanup_max: secs(3),
        ..CtrlConfig::default()
    };
    let mut a = Host::new(&net, "a", cfg);
    let took = run_until(&net, &mut [&mut a], secs(10), ms(10), |h| {
        !h[0].ctl.cleanup_blocks_joins()
    });
    // A listing per sa_timeout until cleanup_max; then joins go out, and the listing
    // goes on meanwhile.
    assert!(took >= secs(3) && took < ms(3100), "{took:?}");
    let s = a.ctl.stats();
    assert!((6..=7).contains(&s.sa_lists_sent), "{s:?}");
    // The broadcast join went out in the poll that stopped the waiting.
    assert_eq!((s.cleanup_failed, s.sa_joins_sent), (1, 1));
    run(&net, &mut [&mut a], secs(1), ms(10));
    assert!(a.ctl.stats().sa_lists_sent >= 8, "{:?}", a.ctl.stats());
    assert!(a.ctl.cleanup_running());
    // The SA comes back: the background listing finds nothing and ends.
    net.fabric.set_faults(FaultConfig::NONE);
    run_until(&net, &mut [&mut a], secs(30), ms(10), |h| {
        !h[0].ctl.cleanup_running() && h[0].ctl.link_up()
    });
    assert_eq!(a.ctl.stats().cleanup_failed, 1);
}

#[test]
fn a_membership_ibpoll_does_not_make_is_left_alone() {
    let net = Net::new(FaultConfig::NONE);
    let dev = net.fabric.add_node("a", 1);
    let port = dev.open_port(1).unwrap();
    let gid = port.attr().gid;
    // Something else on the port (not IPoIB) joined the broadcast group as a NonMember.
    let mut mad = port.open_mad_channel().unwrap();
    let rec = mcmember::Repr {
        mgid: ipoib::broadcast_mgid(PKey::DEFAULT),
        port_gid: gid,
        pkey: PKey::DEFAULT,
        join_state: JoinState::NON_MEMBER,
        ..mcmember::Repr::default()
    };
    let req = SaMad::request(
        Method::SET,
        1,
        mcmember::JOIN_MASK.union(mcmember::mask::PKEY),
        Attribute::McMember(rec),
    );
    let sa = MadAddr {
        lid: port.attr().sm_lid,
        qpn: Qpn::GSI,
        qkey: QKey::GSI,
        sl: 0,
        pkey_index: 0,
    };
    mad.send(&req.to_bytes(), sa).unwrap();
    assert_eq!(
        net.memberships(&gid),
        vec![(rec.mgid, JoinState::NON_MEMBER)]
    );
    let pool = data::pool("a", 1024);
    let qp = data::ipoib_qp(&*port, 0, &pool, 256);
    let clock: Arc<dyn Clock> = net.clock.clone();
    let mut a = Host::on_port(
        "a",
        dev.port_id(1),
        port,
        qp,
        CtrlConfig::default(),
        pool,
        clock,
    );
    run_until(&net, &mut [&mut a], secs(5), ms(10), |h| h[0].ctl.link_up());
    let s = a.ctl.stats();
    // Found; both IPoIB bits refused (not held); listed again: given up, counted.
    assert_eq!((s.cleanup_found, s.cleanup_failed), (1, 1));
    // The join merges with it; the SA holds both bits now.
    assert_eq!(
        net.memberships(&gid),
        vec![(rec.mgid, JoinState::FULL_MEMBER | JoinState::NON_MEMBER)]
    );
}

/// A controller joins two groups and a send-only one and is killed; returns the port's
/// GID and a new controller on that port made with `cfg`.
fn killed_then_restarted(net: &Net, cfg: CtrlConfig) -> (Gid, Host) {
    let mut a = Host::new(net, "a", CtrlConfig::default());
    join_many(net, &mut a, 2);
    let gid = a.gid;
    assert_eq!(net.memberships(&gid).len(), 4);
    let next = restart(net, &a, cfg, PKey::DEFAULT);
    drop(a);
    (gid, next)
}

#[test]
fn what_the_cleanup_could_not_leave_in_time_is_left_later() {
    let net = Net::new(FaultConfig::NONE);
    let cfg = CtrlConfig {
        cleanup_max: ms(500),
        ..CtrlConfig::default()
    };
    let (gid, mut a) = killed_then_restarted(&net, cfg);
    // Answers take 300 ms: the listing comes back, its Deletes not before cleanup_max.
    net.fabric.set_faults(FaultConfig {
        sa_delay_min: ms(300),
        sa_delay_max: ms(300),
        ..FaultConfig::NONE
    });
    run_until(&net, &mut [&mut a], secs(5), ms(10), |h| {
        !h[0].ctl.cleanup_blocks_joins()
    });
    let s = a.ctl.stats();
    assert_eq!((s.cleanup_found, s.cleanup_failed), (3, 1), "{s:?}");
    // The group table owes the rest, and leaves it (the broadcast group's join
    // absorbs what the SA still holds of it).
    run_until(&net, &mut [&mut a], secs(20), ms(10), |h| {
        h[0].ctl.link_up() && net.memberships(&gid).len() == 1
    });
    assert_eq!(
        net.memberships(&gid),
        vec![(ipoib::broadcast_mgid(PKey::DEFAULT), JoinState::FULL_MEMBER)]
    );
    a.ctl.check_snapshot().unwrap();
}

#[test]
fn an_unanswered_listing_is_asked_again_in_the_background() {
    let net = Net::new(FaultConfig::NONE);
    let (gid, mut a) = killed_then_restarted(&net, CtrlConfig::default());
    net.fabric.set_faults(FaultConfig {
        sa_request_loss: 1.0,
        ..FaultConfig::NONE
    });
    run_until(&net, &mut [&mut a], secs(10), ms(10), |h| {
        !h[0].ctl.cleanup_blocks_joins()
    });
    assert_eq!(a.ctl.stats().cleanup_failed, 1, "cleanup_max passed");
    assert!(a.ctl.cleanup_running(), "still asking");
    // The SA comes back: the next listing finds the dead one's groups, which are left;
    // the interface comes up meanwhile.
    net.fabric.set_faults(FaultConfig::NONE);
    run_until(&net, &mut [&mut a], secs(60), ms(10), |h| {
        h[0].ctl.link_up() && !h[0].ctl.cleanup_running() && net.memberships(&gid).len() == 1
    });
    let s = a.ctl.stats();
    assert_eq!(
        (s.cleanup_runs, s.cleanup_found, s.cleanup_failed),
        (1, 3, 1)
    );
    assert_eq!(
        net.memberships(&gid),
        vec![(ipoib::broadcast_mgid(PKey::DEFAULT), JoinState::FULL_MEMBER)]
    );
    a.ctl.check_snapshot().unwrap();
}
