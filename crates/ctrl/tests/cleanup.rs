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
        if h[0].ctl.cleanup_running() {
            assert_eq!(h[0].ctl.stats().sa_joins_sent, 0, "a join during the cleanup");
        }
        h[0].ctl.link_up() && h[0].ctl.group_phase(group(50)) == Some(GroupPhase::Joined)
    });
    let s = a.ctl.stats();
    assert_eq!((s.cleanup_runs, s.cleanup_found, s.cleanup_failed), (1, 8, 0));
    assert_eq!(s.cleanup_left, 8, "one held JoinState bit per membership");
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
        Host::on_port(name, dev.port_id(1), port.clone(), qp, cfg, pool, clock.clone())
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
    assert_eq!((s.cleanup_found, s.cleanup_left, s.cleanup_failed), (4, 4, 0));
    let held = net.memberships(&gid);
    let in_8001 = |m: &Gid| ipoib::mgid_pkey(m).is_some_and(|p| p.base() == 0x0001);
    assert_eq!(held.iter().filter(|(m, _)| in_8001(m)).count(), 4, "{held:?}");
    assert_eq!(held.len(), 5, "the other partition's 4 and the new broadcast join");
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
        ..CtrlConfig::default()
    };
    let mut a = Host::new(&net, "a", cfg.clone());
    let took = run_until(&net, &mut [&mut a], secs(10), ms(10), |h| {
        !h[0].ctl.cleanup_running()
    });
    // Three unanswered listings, then it gives up and joins go out.
    assert!(took >= ms(1500) && took < secs(2), "{took:?}");
    let s = a.ctl.stats();
    assert_eq!((s.sa_lists_sent, s.cleanup_failed), (3, 1));
    run(&net, &mut [&mut a], ms(100), ms(10));
    assert!(a.ctl.stats().sa_joins_sent >= 1);
    // cleanup_max bounds it whatever the tries: one listing of 20 s against 5 s.
    let cfg = CtrlConfig {
        sa_timeout: secs(20),
        cleanup_max: secs(5),
        ..CtrlConfig::default()
    };
    let mut b = Host::new(&net, "b", cfg);
    let took = run_until(&net, &mut [&mut b], secs(10), ms(100), |h| {
        !h[0].ctl.cleanup_running()
    });
    assert!(took >= secs(5) && took < secs(6), "{took:?}");
    assert_eq!(b.ctl.stats().cleanup_failed, 1);
    assert_eq!(
        (b.ctl.sa_in_flight(), b.ctl.stats().sa_joins_sent),
        (1, 1),
        "the listing was abandoned; the broadcast join went out"
    );
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
    let mut a = Host::on_port("a", dev.port_id(1), port, qp, CtrlConfig::default(), pool, clock);
    run_until(&net, &mut [&mut a], secs(5), ms(10), |h| h[0].ctl.link_up());
    let s = a.ctl.stats();
    // Found; both IPoIB bits refused (not held); listed again: given up, counted.
    assert_eq!((s.cleanup_found, s.cleanup_left, s.cleanup_failed), (1, 0, 1));
    // The join merges with it; the SA holds both bits now.
    assert_eq!(
        net.memberships(&gid),
        vec![(rec.mgid, JoinState::FULL_MEMBER | JoinState::NON_MEMBER)]
    );
}
