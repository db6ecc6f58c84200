//! The SA window bounds a reregister storm; a flush that hits `flush_max` keeps its
//! obligations; a send-only group upgraded to a subscription rejoins as a full member.

mod common;

use common::*;
use ibpoll_ctrl::{CtrlConfig, GroupAddr, GroupPhase};
use ibpoll_pmd_sim::FaultConfig;
use ibpoll_wire::mcmember::JoinState;

fn group(i: u32) -> GroupAddr {
    GroupAddr::Ipv4([239, 1, (i >> 8) as u8, i as u8])
}

#[test]
fn reregister_storm_is_windowed() {
    let net = Net::new(FaultConfig {
        sa_delay_min: ms(50),
        sa_delay_max: ms(150),
        ..FaultConfig::NONE
    });
    let cfg = CtrlConfig::default();
    let mut a = Host::new(&net, "a", cfg.clone());
    for i in 0..300 {
        assert!(a.ctl.join_group(group(i)));
    }
    let all_joined = |h: &mut [&mut Host]| {
        (0..300).all(|i| h[0].ctl.group_phase(group(i)) == Some(GroupPhase::Joined))
    };
    let mut max_in_flight = 0;
    run_until(&net, &mut [&mut a], secs(20), ms(10), |h| {
        max_in_flight = max_in_flight.max(h[0].ctl.sa_in_flight());
        all_joined(h)
    });
    assert_eq!(max_in_flight, cfg.sa_window);
    assert_eq!(net.memberships(&a.gid).len(), 301);

    net.fabric.restart_sm(None);
    let mut max_in_flight = 0;
    run_until(&net, &mut [&mut a], secs(30), ms(10), |h| {
        max_in_flight = max_in_flight.max(h[0].ctl.sa_in_flight());
        !h[0].ctl.is_flushing() && all_joined(h)
    });
    assert!(max_in_flight <= cfg.sa_window);
    assert!(a.ctl.stats().sa_window_full > 0);
    assert_eq!(net.memberships(&a.gid).len(), 301);
}

#[test]
fn flush_max_keeps_what_the_sa_may_hold() {
    let net = Net::new(FaultConfig::NONE);
    let cfg = CtrlConfig {
        sa_window: 1,
        flush_max: secs(2),
        ..CtrlConfig::default()
    };
    let mut a = Host::new(&net, "a", cfg);
    for i in 0..4 {
        a.ctl.join_group(group(i));
    }
    run_until(&net, &mut [&mut a], secs(5), ms(10), |h| {
        (0..4).all(|i| h[0].ctl.group_phase(group(i)) == Some(GroupPhase::Joined))
    });
    net.fabric.set_faults(FaultConfig {
        sa_request_loss: 1.0,
        ..FaultConfig::NONE
    });
    a.ctl.set_admin_up(false);
    let took = run_until(&net, &mut [&mut a], secs(10), ms(10), |h| {
        !h[0].ctl.is_flushing()
    });
    assert!(took <= secs(2), "{took:?}");
    assert_eq!(a.ctl.stats().flush_abandoned, 1);
    assert_eq!(net.memberships(&a.gid).len(), 5);

    // The SA is back: rejoin, then a flush leaves everything, including what the
    // abandoned flush could not.
    net.fabric.set_faults(FaultConfig::NONE);
    a.ctl.set_admin_up(true);
    run_until(&net, &mut [&mut a], secs(10), ms(10), |h| {
        (0..4).all(|i| h[0].ctl.group_phase(group(i)) == Some(GroupPhase::Joined))
    });
    a.ctl.set_admin_up(false);
    run_until(&net, &mut [&mut a], secs(10), ms(10), |h| {
        !h[0].ctl.is_flushing()
    });
    assert!(
        net.memberships(&a.gid).is_empty(),
        "{:?}",
        net.memberships(&a.gid)
    );
}

#[test]
fn sendonly_upgraded_to_full_member() {
    let net = Net::new(FaultConfig::NONE);
    let mut a = Host::new(&net, "a", CtrlConfig::default());
    let g = group(7);
    a.data_send_mcast(0, g, 1);
    run_until(&net, &mut [&mut a], secs(5), ms(10), |h| {
        h[0].ctl.group_phase(g) == Some(GroupPhase::Joined)
    });
    let mgid = a.ctl.mgid_of(g).unwrap();
    assert!(net
        .memberships(&a.gid)
        .contains(&(mgid, JoinState::SEND_ONLY_FULL_MEMBER)));
    a.ctl.join_group(g);
    run_until(&net, &mut [&mut a], secs(5), ms(10), |h| {
        h[0].ctl.group_phase(g) == Some(GroupPhase::Joined)
            && !h[0].cores[0].reader.get().group(&mgid).unwrap().send_only
    });
    let m = net.memberships(&a.gid);
    assert!(m.contains(&(mgid, JoinState::FULL_MEMBER)), "{m:?}");
}
