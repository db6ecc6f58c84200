//! Subscriptions of the data cores' sockets (`Request::Subscribe`/`Unsubscribe`): the
//! control core joins at the SA as a full member while any subscription names a group,
//! leaves it when the last one goes, and reports each subscription's state (pending,
//! joined, refused with the SA's MAD status) in the data core's board.

mod common;

use common::*;
use ibpoll_ctrl::{CtrlConfig, GroupAddr, GroupPhase, JoinStatus, Request};
use ibpoll_pmd_sim::FaultConfig;
use ibpoll_wire::mcmember::JoinState;

const G: GroupAddr = GroupAddr::Ipv4([239, 1, 2, 3]);

fn two_cores() -> CtrlConfig {
    CtrlConfig {
        data_cores: 2,
        ..CtrlConfig::default()
    }
}

fn sa_holds(net: &Net, h: &Host, g: GroupAddr) -> Option<JoinState> {
    let mgid = h.ctl.mgid_of(g).expect("a group");
    net.memberships(&h.gid)
        .into_iter()
        .find(|(m, _)| *m == mgid)
        .map(|(_, js)| js)
}

#[test]
fn the_group_is_held_while_any_subscription_names_it() {
    let net = Net::new(FaultConfig::NONE);
    let mut a = Host::new(&net, "a", two_cores());
    let s0 = a.cores[0].subs.claim().unwrap();
    let s1 = a.cores[1].subs.claim().unwrap();
    let s1b = a.cores[1].subs.claim().unwrap();
    for (core, slot) in [(0, s0), (1, s1), (1, s1b)] {
        a.cores[core]
            .requests
            .send(Request::Subscribe { group: G, slot })
            .unwrap();
        assert_eq!(a.cores[core].subs.status(slot), JoinStatus::Pending);
    }
    run_until(&net, &mut [&mut a], secs(10), ms(10), |h| {
        h[0].cores[0].subs.status(s0).is_joined()
    });
    assert_eq!(a.cores[1].subs.status(s1), JoinStatus::Joined);
    assert_eq!(a.cores[1].subs.status(s1b), JoinStatus::Joined);
    assert_eq!(sa_holds(&net, &a, G), Some(JoinState::FULL_MEMBER));
    assert_eq!(a.ctl.join_status(G), Some(JoinStatus::Joined));
    assert_eq!(a.ctl.stats().subscriptions, 3);
    assert_eq!(
        a.ctl.stats().sa_joins_sent,
        2,
        "one join for the group, one broadcast"
    );
    // Two of three go: still a member.
    for (core, slot) in [(0, s0), (1, s1)] {
        a.cores[core]
            .requests
            .send(Request::Unsubscribe { slot })
            .unwrap();
        a.cores[core].subs.release(slot);
    }
    run(&net, &mut [&mut a], secs(1), ms(10));
    assert_eq!(sa_holds(&net, &a, G), Some(JoinState::FULL_MEMBER));
    assert_eq!(a.ctl.group_phase(G), Some(GroupPhase::Joined));
    // The last one goes: left at the SA and out of the table.
    a.cores[1]
        .requests
        .send(Request::Unsubscribe { slot: s1b })
        .unwrap();
    run_until(&net, &mut [&mut a], secs(10), ms(10), |h| {
        h[0].ctl.group_phase(G).is_none()
    });
    assert_eq!(sa_holds(&net, &a, G), None);
    assert_eq!(a.ctl.stats().unsubscriptions, 3);
}

#[test]
fn join_group_and_sockets_share_a_group() {
    let net = Net::new(FaultConfig::NONE);
    let mut a = Host::new(&net, "a", two_cores());
    assert!(a.ctl.join_group(G));
    let s = a.cores[1].subs.claim().unwrap();
    a.cores[1]
        .requests
        .send(Request::Subscribe { group: G, slot: s })
        .unwrap();
    run_until(&net, &mut [&mut a], secs(10), ms(10), |h| {
        h[0].cores[1].subs.status(s).is_joined()
    });
    // The socket goes; `join_group` still holds it.
    a.cores[1]
        .requests
        .send(Request::Unsubscribe { slot: s })
        .unwrap();
    run(&net, &mut [&mut a], secs(1), ms(10));
    assert_eq!(sa_holds(&net, &a, G), Some(JoinState::FULL_MEMBER));
    // A socket again, then `leave_group`: the socket still holds it.
    let s = a.cores[0].subs.claim().unwrap();
    a.cores[0]
        .requests
        .send(Request::Subscribe { group: G, slot: s })
        .unwrap();
    run(&net, &mut [&mut a], ms(100), ms(10));
    assert!(a.cores[0].subs.status(s).is_joined());
    a.ctl.leave_group(G);
    run(&net, &mut [&mut a], secs(1), ms(10));
    assert_eq!(sa_holds(&net, &a, G), Some(JoinState::FULL_MEMBER));
    a.cores[0]
        .requests
        .send(Request::Unsubscribe { slot: s })
        .unwrap();
    run(&net, &mut [&mut a], secs(1), ms(10));
    assert_eq!(sa_holds(&net, &a, G), None);
}

#[test]
fn a_refused_join_reports_the_sas_status_and_recovers() {
    let net = Net::new(FaultConfig::NONE);
    let mut a = Host::new(&net, "a", two_cores());
    run_until(&net, &mut [&mut a], secs(10), ms(10), |h| {
        h[0].ctl.link_up()
    });
    // From now on the SA refuses everything with "invalid request".
    net.fabric.set_faults(FaultConfig {
        sa_error: 1.0,
        sa_error_status: 0x0200,
        ..FaultConfig::NONE
    });
    let s = a.cores[0].subs.claim().unwrap();
    a.cores[0]
        .requests
        .send(Request::Subscribe { group: G, slot: s })
        .unwrap();
    run_until(&net, &mut [&mut a], secs(10), ms(10), |h| {
        h[0].cores[0].subs.status(s).is_failed()
    });
    assert_eq!(
        a.cores[0].subs.status(s),
        JoinStatus::Refused { sa_status: 0x0200 }
    );
    assert_eq!(sa_holds(&net, &a, G), None);
    // The SA answers again: the backoff's retry joins.
    net.fabric.set_faults(FaultConfig::NONE);
    run_until(&net, &mut [&mut a], secs(40), ms(50), |h| {
        h[0].cores[0].subs.status(s).is_joined()
    });
    assert_eq!(sa_holds(&net, &a, G), Some(JoinState::FULL_MEMBER));
}

#[test]
fn what_cannot_be_joined_is_reported_at_once() {
    let net = Net::new(FaultConfig::NONE);
    let mut a = Host::new(
        &net,
        "a",
        CtrlConfig {
            groups_max: 2,
            ..two_cores()
        },
    );
    let bad = a.cores[0].subs.claim().unwrap();
    a.cores[0]
        .requests
        .send(Request::Subscribe {
            group: GroupAddr::Ipv4([10, 0, 0, 1]),
            slot: bad,
        })
        .unwrap();
    // The broadcast group and one more fill the table.
    let ok = a.cores[0].subs.claim().unwrap();
    let full = a.cores[0].subs.claim().unwrap();
    for (slot, g) in [(ok, G), (full, GroupAddr::Ipv4([239, 9, 9, 9]))] {
        a.cores[0]
            .requests
            .send(Request::Subscribe { group: g, slot })
            .unwrap();
    }
    a.step();
    assert_eq!(a.cores[0].subs.status(bad), JoinStatus::NotAGroup);
    assert_eq!(a.cores[0].subs.status(full), JoinStatus::TableFull);
    assert!(!a.cores[0].subs.status(ok).is_failed());
    assert_eq!(a.ctl.stats().subscriptions_refused, 2);
    // A refusal is not a packet drop.
    assert_eq!(a.ctl.stats().dropped(), 0);
}

#[test]
fn drops_on_arrival_are_counted_for_the_data_core_that_sent_them() {
    let net = Net::new(FaultConfig::NONE);
    let mut a = Host::new(&net, "a", two_cores());
    run_until(&net, &mut [&mut a], secs(10), ms(10), |h| {
        h[0].ctl.link_up()
    });
    // Ten packets to a next hop nobody answers for: three wait, seven are dropped.
    for seq in 0..10 {
        assert!(a.data_send_unicast(1, [10, 0, 0, 99], seq));
    }
    a.step();
    assert_eq!(a.ctl.stats().neigh_queue_full, 7);
    assert_eq!(a.cores[1].drops.resolve.get(), 7);
    assert_eq!(a.cores[0].drops.resolve.get(), 0);
    assert_eq!(a.cores[1].drops.mcast.get(), 0);
}
