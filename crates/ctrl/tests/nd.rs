//! IPv6 neighbour discovery over IPoIB (RFC 4861, RFC 4391 section 9.1), end to end on
//! the simulated fabric: the groups joined at the SA, solicitation to the solicited-node
//! group, unicast advertisement, path resolution, queues, ageing and bad input.

mod common;

use common::*;
use ibpoll_ctrl::{CtrlConfig, Error, GroupAddr, GroupPhase, Request};
use ibpoll_pmd_sim::FaultConfig;
use ibpoll_wire::ipoib::{self, HwAddr};
use ibpoll_wire::mcmember::JoinState;
use ibpoll_wire::ndisc::{self, NeighborFlags};
use ibpoll_wire::{ipv6, Gid, PKey};

const IP6_A: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0x0a];
const IP6_B: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0x12, 0x34, 0x0b];

fn cfg6(ip: [u8; 16]) -> CtrlConfig {
    CtrlConfig {
        ipv4: None,
        ipv6: Some(ip),
        ..CtrlConfig::default()
    }
}

fn mgid6(group: [u8; 16]) -> Gid {
    ipoib::ipv6_mcast_mgid(group, PKey::DEFAULT, ipoib::McastScope::LINK_LOCAL)
}

/// The neighbour-discovery packets a host saw, parsed: (IPv6 source, destination, hop
/// limit, message).
fn seen(h: &Host) -> Vec<([u8; 16], [u8; 16], u8, ndisc::Repr)> {
    h.nd_seen
        .iter()
        .map(|b| {
            let ip = ipv6::Packet::new_checked(&b[..]).expect("IPv6");
            let r = ipv6::Repr::parse(&ip).expect("IPv6 header");
            let msg = ndisc::Packet::new_checked(ip.payload()).expect("ND");
            let m = ndisc::Repr::parse(&r.src_addr, &r.dst_addr, &msg).expect("ND message");
            (r.src_addr, r.dst_addr, r.hop_limit, m)
        })
        .collect()
}

fn up(net: &Net, hosts: &mut [&mut Host]) {
    run_until(net, hosts, secs(10), ms(10), |h| {
        h.iter().all(|h| {
            h.ctl.link_up()
                && h.ctl.group_phase(GroupAddr::Ipv6(ipv6::ALL_NODES)) == Some(GroupPhase::Joined)
        })
    });
}

#[test]
fn the_groups_are_joined_at_the_sa_with_the_ipv6_signature() {
    let net = Net::new(FaultConfig::NONE);
    let mut a = Host::new(&net, "a", cfg6(IP6_A));
    up(&net, &mut [&mut a]);
    let sn = ipv6::solicited_node(&IP6_A);
    let mut held = net.memberships(&a.gid);
    held.sort();
    let mut want = vec![
        (ipoib::broadcast_mgid(PKey::DEFAULT), JoinState::FULL_MEMBER),
        (mgid6(ipv6::ALL_NODES), JoinState::FULL_MEMBER),
        (mgid6(sn), JoinState::FULL_MEMBER),
    ];
    want.sort();
    assert_eq!(held, want);
    // ff12:601b:ffff::1 and ff12:601b:ffff::1:ff00:a (RFC 4391 section 4, the kernel's
    // ipv6_ib_mc_map with the default partition).
    assert_eq!(want[1].0.to_string(), "ff12:601b:ffff:0:0:0:0:1");
    assert_eq!(want[2].0.to_string(), "ff12:601b:ffff:0:0:1:ff00:a");
    // They are the interface's own: an unsubscription leaves them alone.
    a.ctl.leave_group(GroupAddr::Ipv6(ipv6::ALL_NODES));
    a.ctl.leave_group(GroupAddr::Ipv6(sn));
    run(&net, &mut [&mut a], secs(1), ms(10));
    assert_eq!(net.memberships(&a.gid).len(), 3);
    // Interface down: every group left; up again: rejoined.
    a.ctl.set_admin_up(false);
    run(&net, &mut [&mut a], secs(2), ms(10));
    assert!(net.memberships(&a.gid).is_empty());
    a.ctl.set_admin_up(true);
    up(&net, &mut [&mut a]);
    run(&net, &mut [&mut a], secs(1), ms(10));
    assert_eq!(net.memberships(&a.gid).len(), 3);
}

#[test]
fn solicitation_advertisement_and_path_resolve_a_neighbour() {
    let net = Net::new(FaultConfig::NONE);
    let mut b = Host::new(&net, "b", cfg6(IP6_B));
    let mut a = Host::new(&net, "a", cfg6(IP6_A));
    up(&net, &mut [&mut a, &mut b]);

    // Four packets for B: one neighbour, three wait, the fourth is a counted drop.
    for seq in 0..4 {
        assert!(a.data_send_unicast6(0, IP6_B, seq));
    }
    a.ctl.poll();
    assert_eq!(a.ctl.neighbour_count(), 1);
    assert_eq!(a.ctl.neigh_queued_for(IP6_B), 3);
    assert_eq!(a.ctl.stats().neigh_queue_full, 1);
    run_until(&net, &mut [&mut a, &mut b], secs(5), ms(10), |h| {
        h[1].received6.len() >= 3
    });
    assert_eq!(b.received6, [0, 1, 2]);

    // B saw A's solicitation: to B's solicited-node group, hop limit 255, with A's
    // 20-byte link-layer address.
    let ns: Vec<_> = seen(&b)
        .into_iter()
        .filter(|s| matches!(s.3, ndisc::Repr::NeighborSolicit { .. }))
        .collect();
    assert_eq!(ns.len(), 1, "one solicitation answered at once");
    assert_eq!(
        ns[0],
        (
            IP6_A,
            ipv6::solicited_node(&IP6_B),
            255,
            ndisc::Repr::NeighborSolicit {
                target_addr: IP6_B,
                lladdr: Some(a.ctl.hwaddr())
            }
        )
    );
    // A saw B's answer: unicast, Solicited and Override, B's address.
    let na = seen(&a);
    assert_eq!(
        na,
        [(
            IP6_B,
            IP6_A,
            255,
            ndisc::Repr::NeighborAdvert {
                flags: NeighborFlags::SOLICITED.union(NeighborFlags::OVERRIDE),
                target_addr: IP6_B,
                lladdr: Some(b.ctl.hwaddr())
            }
        )]
    );
    let (sa, sb) = (a.ctl.stats(), b.ctl.stats());
    assert_eq!(sa.nd_solicits_sent, 1);
    assert_eq!(sb.nd_adverts_sent, 1);
    assert_eq!(sa.neigh_sent_from_queue, 3);
    assert_eq!((sa.paths_ok, sb.paths_ok), (1, 1));
    // B learnt A from the solicitation (RFC 4861 section 7.2.3).
    assert_eq!(b.ctl.neighbour_count(), 1);
    assert!(b.cores[0].reader.get().neighbour6(&IP6_A).is_some());
    let n = a.cores[0].reader.get().neighbour6(&IP6_B).map(|n| n.hwaddr);
    assert_eq!(n, Some(b.ctl.hwaddr()));
    assert!(a.cores[0].reader.get().neighbour(&[0, 0, 0, 0]).is_none());

    // Resolved: data cores send by themselves, in both directions.
    let requests = a.ctl.stats().requests;
    assert!(a.data_send_unicast6(0, IP6_B, 10));
    assert!(b.data_send_unicast6(0, IP6_A, 20));
    run(&net, &mut [&mut a, &mut b], ms(50), ms(10));
    assert_eq!(a.ctl.stats().requests, requests);
    assert_eq!(b.received6.last(), Some(&10));
    assert_eq!(a.received6, [20]);

    // Ageing: unused IPv6 neighbours go like IPv4 ones.
    let idle = CtrlConfig::default().neigh_idle;
    run(
        &net,
        &mut [&mut a, &mut b],
        idle.saturating_add(secs(5)),
        ms(500),
    );
    assert_eq!(a.ctl.neighbour_count(), 0);
    assert!(a.ctl.stats().neigh_expired >= 1);
    assert!(a.cores[0].reader.get().neighbour6(&IP6_B).is_none());
    a.ctl.check_snapshot().expect("snapshot");
}

#[test]
fn an_unresolvable_ipv6_neighbour_drops_its_queue() {
    let net = Net::new(FaultConfig::NONE);
    let mut a = Host::new(&net, "a", cfg6(IP6_A));
    up(&net, &mut [&mut a]);
    let nobody = [0xfd, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0x63];
    for i in 0..3 {
        a.data_send_unicast6(0, nobody, i);
    }
    run(&net, &mut [&mut a], secs(10), ms(100));
    let s = a.ctl.stats();
    assert_eq!(s.neigh_unresolved_dropped, 3);
    assert_eq!(s.nd_solicits_sent, 3, "arp_tries solicitations");
    assert_eq!(a.ctl.neighbour_count(), 0);
    // The solicitations went to the target's solicited-node group: a send-only join.
    let sn = GroupAddr::Ipv6(ipv6::solicited_node(&nobody));
    assert_eq!(a.ctl.group_phase(sn), Some(GroupPhase::Joined));
    assert!(net.memberships(&a.gid).contains(&(
        mgid6(ipv6::solicited_node(&nobody)),
        JoinState::SEND_ONLY_FULL_MEMBER
    )));
}

#[test]
fn bad_and_foreign_packets_are_counted_drops() {
    let net = Net::new(FaultConfig::NONE);
    let mut a = Host::new(&net, "a", cfg6(IP6_A));
    let mut v4 = Host::new(
        &net,
        "v4",
        CtrlConfig {
            ipv4: Some([10, 0, 0, 1]),
            ..CtrlConfig::default()
        },
    );
    up(&net, &mut [&mut a]);
    run_until(&net, &mut [&mut v4], secs(5), ms(10), |h| {
        h[0].ctl.link_up()
    });
    let hw_b = HwAddr::new(
        0,
        ibpoll_wire::Qpn::new(0x99).unwrap(),
        Gid::new(0xfe80 << 48, 9),
    );
    let send = |h: &mut Host, src: [u8; 16], dst: [u8; 16], hop: u8, r: ndisc::Repr| {
        let len = r.buffer_len();
        let mut m = h.pool.alloc().expect("buffer");
        let d = m.append(4 + 40 + len).expect("room");
        d[..4].copy_from_slice(&[0x86, 0xdd, 0, 0]);
        ipv6::Repr {
            src_addr: src,
            dst_addr: dst,
            next_header: 58,
            payload_len: len as u16,
            hop_limit: hop,
        }
        .emit(&mut ipv6::Packet::new_unchecked(&mut d[4..]));
        r.emit(&src, &dst, &mut ndisc::Packet::new_unchecked(&mut d[44..]));
        h.cores[0].requests.send(Request::Nd { mbuf: m }).unwrap();
        h.ctl.poll();
    };
    let ns = |target| ndisc::Repr::NeighborSolicit {
        target_addr: target,
        lladdr: Some(hw_b),
    };
    let sn = ipv6::solicited_node(&IP6_A);
    // Crossed a router (hop limit 64): malformed.
    send(&mut a, IP6_B, sn, 64, ns(IP6_A));
    assert_eq!(a.ctl.stats().nd_malformed, 1);
    // Truncated garbage.
    let mut m = a.pool.alloc().expect("buffer");
    m.append(8)
        .expect("room")
        .copy_from_slice(&[0x86, 0xdd, 0, 0, 0x60, 0, 0, 0]);
    a.cores[0].requests.send(Request::Nd { mbuf: m }).unwrap();
    a.ctl.poll();
    assert_eq!(a.ctl.stats().nd_malformed, 2);
    // For another address; an advertisement of a stranger; a solicitation without a
    // link-layer address to answer to: ignored, nothing learnt.
    send(&mut a, IP6_B, sn, 255, ns(IP6_B));
    let na = ndisc::Repr::NeighborAdvert {
        flags: NeighborFlags::OVERRIDE,
        target_addr: IP6_B,
        lladdr: Some(hw_b),
    };
    send(&mut a, IP6_B, ipv6::ALL_NODES, 255, na);
    let bare = ndisc::Repr::NeighborSolicit {
        target_addr: IP6_A,
        lladdr: None,
    };
    send(&mut a, IP6_B, sn, 255, bare);
    assert_eq!(a.ctl.stats().nd_ignored, 3);
    assert_eq!(a.ctl.neighbour_count(), 0);
    assert_eq!(a.ctl.stats().nd_adverts_sent, 0);
    // A solicitation for us: answered (queued for the path to the solicitor), learnt.
    send(&mut a, IP6_B, sn, 255, ns(IP6_A));
    assert_eq!(a.ctl.stats().nd_adverts_sent, 1);
    assert_eq!(a.ctl.neighbour_count(), 1);
    assert_eq!(a.ctl.neigh_queued_for(IP6_B), 1);
    // Another node's duplicate address detection for our address: answered to all
    // nodes.
    let dad = ndisc::Repr::NeighborSolicit {
        target_addr: IP6_A,
        lladdr: None,
    };
    send(&mut a, ipv6::UNSPECIFIED, sn, 255, dad);
    assert_eq!(a.ctl.stats().nd_adverts_sent, 2);
    // An interface without an IPv6 address: neighbour discovery is ignored, IPv6 next
    // hops are counted drops.
    send(&mut v4, IP6_B, sn, 255, ns(IP6_A));
    assert_eq!(v4.ctl.stats().nd_ignored, 1);
    assert!(v4.data_send_unicast6(0, IP6_B, 1));
    v4.ctl.poll();
    assert_eq!(v4.ctl.stats().nd_no_address, 1);
    assert_eq!(v4.ctl.neighbour_count(), 0);
}

#[test]
fn bad_ipv6_configurations_are_refused() {
    let net = Net::new(FaultConfig::NONE);
    for (i, (cfg, field)) in [
        (cfg6(ipv6::ALL_NODES), "ipv6"),
        (cfg6(ipv6::UNSPECIFIED), "ipv6"),
        (
            CtrlConfig {
                groups_max: 2,
                ..cfg6(IP6_A)
            },
            "groups_max",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("bad{i}");
        let dev = net.fabric.add_node(&name, 1);
        let port = ibpoll_dev::Device::open_port(&*dev, 1).expect("port");
        let pool = ibpoll_testkit::data::pool(&name, 64);
        let qp = ibpoll_testkit::data::ipoib_qp(&*port, 0, &pool, 32);
        let clock: std::sync::Arc<dyn ibpoll_dev::Clock> = net.clock.clone();
        match ibpoll_ctrl::Controller::new(cfg, port, qp.ctl, pool, clock) {
            Err(Error::BadConfig { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
}
