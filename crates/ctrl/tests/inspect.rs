//! `Controller::groups` and `Controller::neighbours`: what an inspection tool lists,
//! checked against the SA's own records and the fabric's port attributes.

mod common;

use common::*;
use ibpoll_ctrl::{CtrlConfig, GroupAddr, GroupKind, GroupPhase, NeighPhase};
use ibpoll_pmd_sim::FaultConfig;
use ibpoll_wire::ipoib;
use ibpoll_wire::mcmember::JoinState;

const IP_A: [u8; 4] = [10, 0, 0, 1];
const IP_B: [u8; 4] = [10, 0, 0, 2];
const GROUP: [u8; 4] = [239, 1, 2, 3];
const SEND_ONLY: [u8; 4] = [239, 1, 2, 4];

fn cfg(ip: [u8; 4], cores: usize) -> CtrlConfig {
    CtrlConfig {
        ipv4: Some(ip),
        data_cores: cores,
        ..CtrlConfig::default()
    }
}

#[test]
fn groups_list_every_group_with_the_sas_mlid_and_the_lane_qp() {
    let net = Net::new(FaultConfig::NONE);
    let mut a = Host::new(&net, "a", cfg(IP_A, 2));
    run_until(&net, &mut [&mut a], secs(5), ms(10), |h| h[0].ctl.link_up());
    assert!(a.ctl.join_group(GroupAddr::Ipv4(GROUP)));
    assert!(a.data_send_mcast(1, GroupAddr::Ipv4(SEND_ONLY), 7));
    a.ctl.poll();
    // Before the answers: the full group is wanted, the send-only one holds its packet.
    let early = a.ctl.groups();
    let so_mgid = a.ctl.mgid_of(GroupAddr::Ipv4(SEND_ONLY)).expect("a group");
    let so = early.iter().find(|g| g.mgid == so_mgid).expect("listed");
    assert_eq!((so.kind, so.queued), (GroupKind::SendOnly, 1));
    assert_ne!(so.phase, GroupPhase::Joined);
    assert_eq!(so.join_state, JoinState::SEND_ONLY_FULL_MEMBER);

    run_until(&net, &mut [&mut a], secs(5), ms(10), |h| {
        h[0].ctl
            .groups()
            .iter()
            .all(|g| g.phase == GroupPhase::Joined)
    });
    let groups = a.ctl.groups();
    assert_eq!(groups.len(), 3, "{groups:?}");
    let mut sorted = groups.clone();
    sorted.sort_by_key(|g| g.mgid);
    assert_eq!(groups, sorted, "MGID order");
    for g in &groups {
        let (mlid, rec_js) = net.fabric.with_sa(|sa| {
            let v = sa.group_by_mgid(&g.mgid).expect("the SA has it");
            let js = v
                .members()
                .find(|(gid, _)| *gid == a.gid)
                .map(|(_, js)| js)
                .expect("a member");
            (v.record().mlid, js)
        });
        assert_eq!(g.mlid, Some(mlid), "{g:?}");
        assert_eq!(g.join_state, rec_js, "{g:?}");
        assert_eq!(g.queued, 0);
        assert_eq!(g.failures, 0);
        match g.kind {
            GroupKind::Broadcast => {
                assert_eq!(g.mgid, ipoib::broadcast_mgid(CtrlConfig::default().pkey));
                assert_eq!(g.qpn, Some(a.qpn), "the interface's own QP");
            }
            GroupKind::Full => assert_eq!(g.qpn, Some(a.ctl.lane_qpn_for(&g.mgid))),
            GroupKind::SendOnly => assert_eq!(g.qpn, None, "attached to no QP"),
        }
    }
}

#[test]
fn neighbours_list_resolution_state_hardware_address_and_path() {
    let net = Net::new(FaultConfig::NONE);
    let mut b = Host::new(&net, "b", cfg(IP_B, 1));
    let mut a = Host::new(&net, "a", cfg(IP_A, 1));
    run_until(&net, &mut [&mut a, &mut b], secs(5), ms(10), |h| {
        h[0].ctl.link_up() && h[1].ctl.link_up()
    });
    assert!(a.data_send_unicast(0, IP_B, 1));
    assert!(a.data_send_unicast(0, IP_B, 2));
    a.ctl.poll();
    let n = a.ctl.neighbours();
    assert_eq!(n.len(), 1);
    assert_eq!((n[0].ip, n[0].phase), (IP_B.into(), NeighPhase::Incomplete));
    assert_eq!((n[0].hwaddr, n[0].path), (None, None));
    assert_eq!(n[0].queued, 2);

    run_until(&net, &mut [&mut a, &mut b], secs(5), ms(10), |h| {
        h[0].ctl.neighbours()[0].phase == NeighPhase::Reachable
    });
    let n = &a.ctl.neighbours()[0];
    assert_eq!(n.hwaddr, Some(b.ctl.hwaddr()));
    assert_eq!(n.queued, 0);
    let path = n.path.expect("a path");
    assert_eq!(path.dlid, net.fabric.port_attr(b.port_id).lid);
    assert_eq!(path.sl, 0);
}
