//! Port events from the fabric's control calls: link flaps, subnet-manager restart,
//! P_Key and LID changes, and what each does to the port and the switch.

mod common;

use common::Host;
use ibpoll_dev::{PortEvent, PortState};
use ibpoll_pmd_sim::{FabricConfig, SimFabric};
use ibpoll_wire::mcmember::JoinState;
use ibpoll_wire::{ipoib, IbMtu, Lid, PKey, Qpn};

fn fabric() -> SimFabric {
    SimFabric::new(FabricConfig::default())
}

fn events(h: &Host) -> Vec<PortEvent> {
    std::iter::from_fn(|| h.port.poll_event()).collect()
}

#[test]
fn a_link_flap_reports_error_then_active_once_each() {
    let f = fabric();
    let a = Host::new(&f, "a");
    assert_eq!(events(&a), []);
    assert_eq!(a.attr().state, PortState::Active);

    f.set_port_up(a.port_id(), false);
    f.set_port_up(a.port_id(), false);
    assert_eq!(events(&a), [PortEvent::Error], "no event when already down");
    assert_eq!(a.attr().state, PortState::Down);

    f.set_port_up(a.port_id(), true);
    f.set_port_up(a.port_id(), true);
    assert_eq!(events(&a), [PortEvent::Active], "no event when already up");
    assert_eq!(a.attr().state, PortState::Active);
}

#[test]
fn an_sm_restart_wipes_groups_and_asks_active_ports_to_reregister() {
    let f = fabric();
    let mut a = Host::new(&f, "a");
    let mut b = Host::new(&f, "b");
    let c = Host::new(&f, "c");
    let bcast = a.join_broadcast();
    b.join_broadcast();
    let g = a.create_group([239, 9, 9, 9]);
    b.join(g.mgid, JoinState::NON_MEMBER);
    assert_eq!(f.with_sa(|sa| sa.groups().count()), 2);
    f.set_port_up(c.port_id(), false);
    events(&c);

    f.restart_sm(None);
    let groups: Vec<_> = f.with_sa(|sa| {
        sa.groups()
            .map(|v| (v.mgid, v.mlid, v.well_known, v.members().count()))
            .collect()
    });
    assert_eq!(
        groups,
        [(bcast.mgid, Lid(0xC000), true, 0)],
        "only the broadcast group, recreated without members"
    );
    assert_eq!(events(&a), [PortEvent::ClientReregister]);
    assert_eq!(events(&b), [PortEvent::ClientReregister]);
    assert_eq!(events(&c), [], "a down port gets no ClientReregister");

    // The switch forgot the members too: a's old membership no longer lets it send.
    let ah = a.mcast_ah(&bcast);
    a.send_one(b"after restart", ah, Qpn::MULTICAST);
    assert_eq!(f.stats().drop_count("mcast_not_member"), 1);
    assert!(b.qp.recv().is_empty());
    // Until it joins again.
    a.join(bcast.mgid, JoinState::FULL_MEMBER);
    a.send_one(b"rejoined", ah, Qpn::MULTICAST);
    assert_eq!(a.qp.recv().len(), 1, "still attached at the HCA");
}

#[test]
fn an_sm_restart_can_change_the_broadcast_mtu() {
    let f = fabric();
    let mut a = Host::new(&f, "a");
    let before = a.join(ipoib::broadcast_mgid(PKey::DEFAULT), JoinState::FULL_MEMBER);
    assert_eq!(IbMtu::from_code(before.mtu), Some(IbMtu::Mtu2048));

    f.restart_sm(Some(IbMtu::Mtu4096));
    assert_eq!(events(&a), [PortEvent::ClientReregister]);
    let after = a.join(ipoib::broadcast_mgid(PKey::DEFAULT), JoinState::FULL_MEMBER);
    assert_eq!(IbMtu::from_code(after.mtu), Some(IbMtu::Mtu4096));
    assert_eq!(after.mgid, before.mgid);

    // And the switch enforces the new MTU: 4096 bytes pass, 2049 did not before.
    a.attach(&after);
    let ah = a.mcast_ah(&after);
    a.send_one(&[0u8; 4092], ah, Qpn::MULTICAST);
    assert_eq!(a.qp.recv().len(), 1);
    assert_eq!(f.stats().dropped(), 0);
}

#[test]
fn a_pkey_change_is_reported_and_visible() {
    let f = fabric();
    let a = Host::new(&f, "a");
    let table = vec![PKey::DEFAULT, PKey(0x8002), PKey(0)];
    f.set_pkeys(a.port_id(), table.clone());
    assert_eq!(events(&a), [PortEvent::PkeyChange]);
    assert_eq!(a.attr().pkeys, table);
    assert_eq!(f.port_attr(a.port_id()).pkeys, table);
    assert_eq!(a.attr().pkey_index(PKey(0x0002)), Some(1));
}

#[test]
fn a_lid_change_is_reported_and_the_switch_follows_it() {
    let f = fabric();
    let mut a = Host::new(&f, "a");
    let mut b = Host::new(&f, "b");
    let old = b.lid();
    let new = Lid(0x0123);
    let to_old = a.ah(old);
    f.set_lid(b.port_id(), new);
    assert_eq!(events(&b), [PortEvent::LidChange]);
    assert_eq!(b.lid(), new);

    a.send_one(b"old", to_old, b.qp.qpn);
    assert!(b.qp.recv().is_empty());
    assert_eq!(f.stats().drop_count("unknown_lid"), 1);

    let to_new = a.ah(new);
    a.send_one(b"new", to_new, b.qp.qpn);
    let got = b.qp.recv();
    assert_eq!(got.len(), 1);
    assert_eq!(common::body(&got[0]), b"new");

    // b's packets now come from the new LID.
    let to_a = b.ah(a.lid());
    b.send_one(b"from b", to_a, a.qp.qpn);
    let got = a.qp.recv();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].meta().slid, new.0);
}
