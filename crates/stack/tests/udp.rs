//! UDP sockets on lanes, two application-driven stacks polled from the test thread:
//! zero-copy echo, multicast joins whose state follows the SA (refused with its MAD
//! status, then joined), sends to a group not joined through a send-only membership,
//! start-up losses counted in the lane's counters, and every misuse answered.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Instant;

use common::*;
use ibpoll::{
    Control, Discard, FaultConfig, JoinStatus, Lane, SimFabric, Stack, UdpConfig, UdpError,
};
use ibpoll_testkit::stack;
use ibpoll_wire::mcmember::JoinState;

const A_IP: [u8; 4] = [10, 0, 0, 1];
const B_IP: [u8; 4] = [10, 0, 0, 2];

struct Host {
    stack: Stack,
    control: Control,
    lanes: Vec<Lane>,
}

impl Host {
    fn new(fabric: &SimFabric, name: &str, ip: Option<[u8; 4]>) -> Host {
        let mut b = stack::small(fabric, name);
        if let Some(ip) = ip {
            b = b.ipv4(ip);
        }
        let (stack, control, lanes) = b.build().expect("built").split();
        Host {
            stack,
            control,
            lanes,
        }
    }

    fn poll(&mut self) {
        self.control.poll();
        for l in &mut self.lanes {
            l.poll(&mut Discard);
        }
    }

    fn lane(&mut self) -> &mut Lane {
        &mut self.lanes[0]
    }

    fn memberships(&self, fabric: &SimFabric) -> Vec<(ibpoll::Gid, JoinState)> {
        let gid = self.stack.hwaddr().gid();
        fabric.with_sa(|sa| sa.memberships_of(&gid).collect())
    }
}

/// Polls both hosts until `done` holds; panics after `T`.
fn spin(
    a: &mut Host,
    b: &mut Host,
    what: &str,
    mut done: impl FnMut(&mut Host, &mut Host) -> bool,
) {
    let start = Instant::now();
    while !done(a, b) {
        a.poll();
        b.poll();
        assert!(start.elapsed() < T, "timed out waiting for {what}");
    }
}

fn addr(ip: [u8; 4], port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ip.into(), port)
}

fn up(fabric: &SimFabric) -> (Host, Host) {
    let mut a = Host::new(fabric, "a", Some(A_IP));
    let mut b = Host::new(fabric, "b", Some(B_IP));
    spin(&mut a, &mut b, "links up", |a, b| {
        a.control.link_up() && b.control.link_up()
    });
    (a, b)
}

#[test]
fn zero_copy_echo_and_start_up_losses_in_the_lanes_counters() {
    let _serial = serial();
    let fabric = fabric();
    let (mut a, mut b) = up(&fabric);
    let sa = a.lane().udp_bind(0, 0).unwrap();
    let sb = b.lane().udp_bind(0, 7).unwrap();
    let local = a.lane().udp_local(sa).unwrap();
    assert_eq!(*local.ip(), Ipv4Addr::from(A_IP));
    assert!(local.port() >= ibpoll::udp::EPHEMERAL_FIRST);
    // Ten datagrams to a neighbour not resolved yet, in one go: the control core holds
    // three while ARP and the path record resolve, and drops seven. Each send was
    // accepted, so the loss shows in the lane's counters (not only the controller's).
    for i in 0..10u8 {
        a.lane()
            .udp_send_slice(sa, &[i; 100], addr(B_IP, 7))
            .unwrap();
    }
    a.lane().flush();
    spin(&mut a, &mut b, "three datagrams at b", |_, b| {
        b.lane().udp_pending(sb).unwrap() == 3
    });
    let sta = a.lane().stats();
    assert_eq!(
        (sta.to_ctrl_resolve, sta.ctrl_resolve_dropped),
        (10, 7),
        "{sta:?}"
    );
    assert_eq!(sta.ctrl_dropped(), 7);
    assert_eq!(
        a.stack.stats(0).ctrl_resolve_dropped,
        7,
        "the handle sees it too"
    );
    assert_eq!(a.control.ctrl_stats()[0].neigh_queue_full, 7);
    // b echoes each back in the buffer it arrived in (the headers go into its headroom
    // again), zero copy.
    let mut firsts = Vec::new();
    while let Some((m, from)) = b.lane().udp_recv_from(sb) {
        assert_eq!((m.len(), from), (100, local));
        firsts.push(m.data()[0]);
        b.lane().udp_send_to(sb, m, from).unwrap();
    }
    assert_eq!(firsts, [0, 1, 2], "the three held datagrams, in order");
    b.lane().flush();
    let mut got = Vec::new();
    spin(&mut a, &mut b, "the echoes", |a, _| {
        let mut buf = [0u8; 256];
        while let Some((n, from)) = a.lane().udp_recv_slice(sa, &mut buf) {
            assert_eq!((n, from), (100, addr(B_IP, 7)));
            got.push(buf[0]);
        }
        got.len() == 3
    });
    assert_eq!(got, [0, 1, 2]);
    let (ua, ub) = (
        a.lane().udp_stats(sa).unwrap(),
        b.lane().udp_stats(sb).unwrap(),
    );
    assert_eq!((ua.tx, ua.rx, ub.rx, ub.tx), (10, 3, 3, 3));
    // A copying receive into a short buffer truncates, and says so.
    a.lane()
        .udp_send_slice(sa, &[9; 40], addr(B_IP, 7))
        .unwrap();
    a.lane().flush();
    spin(&mut a, &mut b, "one more", |_, b| {
        b.lane().udp_pending(sb).unwrap() == 1
    });
    let mut short = [0u8; 16];
    assert_eq!(
        b.lane().udp_recv_slice(sb, &mut short).map(|r| r.0),
        Some(16)
    );
    assert_eq!(b.lane().udp_stats(sb).unwrap().rx_truncated, 1);
    // A socket with a queue of two drops what overflows it, counted; the sender sent
    // without its checksum, which is accepted.
    let small = b
        .lane()
        .udp_bind_with(0, 8, UdpConfig::with_rx_queue(2))
        .unwrap();
    let mut no_sum = UdpConfig::default();
    no_sum.tx_checksum = false;
    let sa2 = a.lane().udp_bind_with(0, 0, no_sum).unwrap();
    for i in 0..5u8 {
        a.lane().udp_send_slice(sa2, &[i], addr(B_IP, 8)).unwrap();
    }
    a.lane().flush();
    spin(&mut a, &mut b, "the small queue's overflow", |_, b| {
        let s = b.lane().udp_stats(small).unwrap();
        s.rx + s.rx_queue_full == 5
    });
    let s = b.lane().udp_stats(small).unwrap();
    assert_eq!((s.rx, s.rx_queue_full, s.rx_bad_checksum), (2, 3, 0));
    let mut burst = ibpoll::MbufArray::with_capacity(8);
    let mut from = [addr([0; 4], 0); 8];
    assert_eq!(b.lane().udp_recv_burst(small, &mut burst, &mut from), 2);
    assert_eq!(burst.as_slice()[1].data(), &[1]);
    assert_eq!(from[0], a.lane().udp_local(sa2).unwrap());
}

#[test]
fn a_join_follows_the_sa_refused_with_its_status_then_joined_then_left() {
    let _serial = serial();
    let fabric = fabric();
    let (mut a, mut b) = up(&fabric);
    let group = Ipv4Addr::new(239, 7, 0, 1);
    let sb = b.lane().udp_bind(0, 5000).unwrap();
    // The SA refuses every join for a while, with "invalid request".
    fabric.set_faults(FaultConfig {
        sa_error: 1.0,
        sa_error_status: 0x0200,
        ..FaultConfig::NONE
    });
    b.lane().udp_join(sb, group).unwrap();
    assert_eq!(b.lane().udp_membership(sb, group), Ok(JoinStatus::Pending));
    spin(&mut a, &mut b, "the refusal", |_, b| {
        b.lane().udp_membership(sb, group).unwrap().is_failed()
    });
    assert_eq!(
        b.lane().udp_membership(sb, group),
        Ok(JoinStatus::Refused { sa_status: 0x0200 })
    );
    fabric.set_faults(FaultConfig::NONE);
    spin(&mut a, &mut b, "the join, after the backoff", |_, b| {
        b.lane().udp_membership(sb, group).unwrap().is_joined()
    });
    let mgid = b
        .control
        .controller(0)
        .unwrap()
        .mgid_of(ibpoll::GroupAddr::Ipv4(group.octets()));
    assert!(b
        .memberships(&fabric)
        .iter()
        .any(|(m, js)| Some(*m) == mgid && *js == JoinState::FULL_MEMBER));
    assert_eq!(
        b.lane().udp_groups(sb).unwrap(),
        [(group, JoinStatus::Joined)]
    );
    // The subnet manager restarts (its groups wiped, a ClientReregister): the flush
    // rejoins everything, and the socket sees its join pending, then joined again.
    fabric.restart_sm(None);
    spin(&mut a, &mut b, "the rejoin pending", |_, b| {
        b.lane().udp_membership(sb, group).unwrap() == JoinStatus::Pending
    });
    spin(&mut a, &mut b, "the rejoin", |_, b| {
        b.lane().udp_membership(sb, group).unwrap().is_joined()
    });
    assert!(b.control.ctrl_stats()[0].flushes_light >= 1);
    // a sends to the group without joining it: a send-only membership carries it.
    let sa = a.lane().udp_bind(0, 6000).unwrap();
    let mut sent = 0;
    spin(&mut a, &mut b, "a datagram through the group", |a, b| {
        if sent < 1 {
            a.lane()
                .udp_send_slice(sa, b"tick", SocketAddrV4::new(group, 5000))
                .unwrap();
            sent += 1;
        }
        b.lane().udp_pending(sb).unwrap() == 1
    });
    assert!(a
        .memberships(&fabric)
        .iter()
        .any(|(m, js)| Some(*m) == mgid && *js == JoinState::SEND_ONLY_FULL_MEMBER));
    assert_eq!(a.lane().stats().to_ctrl_mcast, 1);
    // Leaving: the last subscription goes, so does the membership.
    b.lane().udp_leave(sb, group).unwrap();
    assert_eq!(
        b.lane().udp_leave(sb, group),
        Err(UdpError::NotJoined { group })
    );
    spin(&mut a, &mut b, "the leave at the SA", |_, b| {
        !b.memberships(&fabric).iter().any(|(m, _)| Some(*m) == mgid)
    });
}

#[test]
fn misuse_is_answered_not_a_panic() {
    let _serial = serial();
    let fabric = fabric();
    let mut a = Host::new(&fabric, "a", Some(A_IP));
    let mut n = Host::new(&fabric, "noaddr", None);
    let lane = a.lane();
    let s = lane.udp_bind(0, 4000).unwrap();
    assert_eq!(
        lane.udp_bind(0, 4000),
        Err(UdpError::PortInUse {
            iface: 0,
            port: 4000
        })
    );
    assert_eq!(
        lane.udp_bind(3, 1),
        Err(UdpError::NoSuchIface {
            iface: 3,
            ifaces: 1
        })
    );
    let unicast = Ipv4Addr::new(10, 0, 0, 9);
    assert_eq!(
        lane.udp_join(s, unicast),
        Err(UdpError::NotAGroup { group: unicast })
    );
    let g = Ipv4Addr::new(239, 1, 1, 1);
    lane.udp_join(s, g).unwrap();
    assert_eq!(
        lane.udp_join(s, g),
        Err(UdpError::AlreadyJoined { group: g })
    );
    lane.udp_close(s).unwrap();
    assert_eq!(lane.udp_close(s), Err(UdpError::BadSocket));
    assert_eq!(lane.udp_stats(s), Err(UdpError::BadSocket));
    assert!(lane.udp_recv_from(s).is_none());
    assert_eq!(
        lane.udp_send_slice(s, b"x", addr(B_IP, 1)),
        Err(UdpError::BadSocket)
    );
    // The port is free again; the new socket's handle is not the old one's.
    let s2 = lane.udp_bind(0, 4000).unwrap();
    assert_ne!(s, s2);
    // Too long for a buffer.
    let big = vec![0u8; 70_000];
    assert!(matches!(
        lane.udp_send_slice(s2, &big, addr(B_IP, 1)),
        Err(UdpError::TooLong { .. })
    ));
    // No address on the interface: nothing can be sent from it.
    let ns = n.lane().udp_bind(0, 1).unwrap();
    assert_eq!(
        n.lane().udp_send_slice(ns, b"x", addr(A_IP, 1)),
        Err(UdpError::NoAddress { iface: 0 })
    );
    assert_eq!(n.lane().udp_stats(ns).unwrap().tx_unbuilt, 1);
    // Sixty-four sockets fit a lane, not one more.
    let lane = a.lane();
    let mut k = 1; // s2
    while lane.udp_bind(0, 0).is_ok() {
        k += 1;
    }
    assert_eq!(k, ibpoll::udp::SOCKETS_MAX);
    assert_eq!(lane.udp_bind(0, 0), Err(UdpError::TooManySockets));
    a.poll();
    n.poll();
}
