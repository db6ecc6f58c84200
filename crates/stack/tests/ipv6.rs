//! IPv6 through the whole stack: two stacks on one simulated fabric resolve each other by
//! neighbour discovery (the data lcores hand solicitations and advertisements to the
//! control core) and exchange IPv6/UDP datagrams, unicast (`Dest::NextHop6`) and to an
//! IPv6 multicast group (send-only join on one side, subscription on the other).

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use common::*;
use ibpoll::{ctrl_packet_drops, App, Dest, GroupAddr, LcoreCtx, Tx};
use ibpoll_ctrl::mcast::GroupPhase;
use ibpoll_mem::{Mbuf, MbufArray};
use ibpoll_wire::ipv6;

const A6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
const B6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2];
/// A site-local group: ff05::1:3.
const GROUP6: [u8; 16] = [0xff, 0x05, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 3];
const MAGIC: [u8; 4] = *b"IB6t";
const LEN: usize = 40 + 8 + 8;

/// An IPv6/UDP datagram with a checksum (mandatory in IPv6: RFC 8200 section 8.1).
fn build6(m: &mut Mbuf, src: [u8; 16], dst: [u8; 16], seq: u32) {
    let d = m.append(LEN).expect("room");
    ipv6::Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: ipv6::NEXT_HEADER_UDP,
        payload_len: (LEN - 40) as u16,
        hop_limit: 64,
    }
    .emit(&mut ipv6::Packet::new_unchecked(&mut d[..]));
    let udp = &mut d[40..];
    udp[..8].copy_from_slice(&[0x27, 0x10, 0x23, 0x28, 0, 16, 0, 0]);
    udp[8..12].copy_from_slice(&MAGIC);
    udp[12..16].copy_from_slice(&seq.to_be_bytes());
    let c = ipv6::upper_layer_checksum(&src, &dst, ipv6::NEXT_HEADER_UDP, udp);
    udp[6..8].copy_from_slice(&c.to_be_bytes());
}

/// Ours: an IPv6/UDP datagram with the magic and a right checksum.
fn ours(d: &[u8]) -> bool {
    let Ok(p) = ipv6::Packet::new_checked(d) else {
        return false;
    };
    let Ok(r) = ipv6::Repr::parse(&p) else {
        return false;
    };
    let udp = p.payload();
    r.next_header == ipv6::NEXT_HEADER_UDP
        && udp.len() == 16
        && udp[8..12] == MAGIC
        && ipv6::checksum_ok(&r.src_addr, &r.dst_addr, ipv6::NEXT_HEADER_UDP, udp)
}

/// Sends datagrams from `src` to `dest` (at most `window` ahead of the peer's probe) and
/// counts what it receives.
struct V6App {
    probe: Arc<Probe>,
    peer: Arc<Probe>,
    src: [u8; 16],
    dst: [u8; 16],
    dest: Option<Dest>,
    window: u64,
    seq: u32,
}

impl App for V6App {
    fn on_burst(&mut self, _ctx: &LcoreCtx, rx: &mut MbufArray, _tx: &mut Tx) {
        for m in rx.as_slice() {
            if ours(m.data()) {
                self.probe.received.inc();
                if m.meta().flags & ibpoll_mem::MBUF_F_MCAST != 0 {
                    self.probe.received_mcast.inc();
                }
            } else {
                self.probe.foreign.inc();
            }
        }
        rx.clear();
    }

    fn poll(&mut self, _ctx: &LcoreCtx, tx: &mut Tx) -> bool {
        let Some(dest) = self.dest else { return false };
        let budget = self.probe.budget.load(Ordering::Relaxed);
        let mut did = false;
        for _ in 0..8 {
            let sent = self.probe.sent.get();
            if sent >= budget || sent >= self.peer.received.get() + self.window {
                break;
            }
            let Some(mut m) = tx.alloc() else { break };
            build6(&mut m, self.src, self.dst, self.seq);
            self.seq += 1;
            self.probe.sent.inc();
            tx.push(0, m, dest);
            did = true;
        }
        did
    }
}

fn start(
    fabric: &ibpoll_pmd_sim::SimFabric,
    name: &str,
    (ip4, ip6): ([u8; 4], [u8; 16]),
    cpu: usize,
    (probe, peer): (&Arc<Probe>, &Arc<Probe>),
    (dst, dest): ([u8; 16], Option<Dest>),
) -> ibpoll::Stack {
    let (probe, peer) = (probe.clone(), peer.clone());
    host(fabric, name, ip4, cpu)
        .ipv6(ip6)
        .start(move |_| V6App {
            probe: probe.clone(),
            peer: peer.clone(),
            src: ip6,
            dst,
            dest,
            window: 256,
            seq: 0,
        })
        .expect("the stack starts")
}

fn memberships(fabric: &ibpoll_pmd_sim::SimFabric, gid: &ibpoll_wire::Gid) -> usize {
    fabric.with_sa(|sa| sa.memberships_of(gid).count())
}

#[test]
fn unicast_resolved_by_neighbour_discovery() {
    let _serial = serial();
    let fabric = fabric();
    let (pa, pb) = (Arc::new(Probe::default()), Arc::new(Probe::default()));
    let a = start(
        &fabric,
        "a",
        ([10, 0, 0, 1], A6),
        0,
        (&pa, &pb),
        (B6, Some(Dest::NextHop6(B6))),
    );
    let b = start(
        &fabric,
        "b",
        ([10, 0, 0, 2], B6),
        1,
        (&pb, &pa),
        (A6, Some(Dest::NextHop6(A6))),
    );
    assert!(a.wait_link_up(T).unwrap() && b.wait_link_up(T).unwrap());
    // The all-nodes and solicited-node groups joined before anything is sent.
    wait_for("the neighbour-discovery groups", T, || {
        [&a, &b].iter().all(|s| {
            s.with_controller(|c| {
                c.group_phase(GroupAddr::Ipv6(ipv6::ALL_NODES)) == Some(GroupPhase::Joined)
            })
            .unwrap()
        })
    });

    // First contact: three datagrams wait for the solicitation, the advertisement and
    // the path record.
    pa.allow(3);
    wait_for("the first 3 datagrams at b", T, || pb.received.get() == 3);
    let ca = a.ctrl_stats().unwrap();
    assert_eq!(ca.nd_solicits_sent, 1, "{ca:?}");
    assert!(ca.neigh_sent_from_queue >= 1 && ca.paths_ok >= 1, "{ca:?}");
    assert_eq!(ctrl_packet_drops(&ca), 0, "{ca:?}");
    let sb = b.stats(0);
    assert!(
        sb.rx_nd >= 1,
        "b's lcore handed the solicitation over: {sb:?}"
    );
    assert_eq!(b.ctrl_stats().unwrap().nd_adverts_sent, 1);
    assert!(
        a.stats(0).rx_nd >= 1,
        "a's lcore handed the advertisement over"
    );

    // Resolved both ways (b learnt a from the solicitation).
    pa.allow(2003);
    pb.allow(500);
    wait_for("2003 datagrams at b", T, || pb.received.get() == 2003);
    wait_for("500 datagrams at a", T, || pa.received.get() == 500);
    assert_eq!(
        b.ctrl_stats().unwrap().nd_solicits_sent,
        0,
        "b needed no solicitation"
    );

    let (ga, gb) = (a.hwaddr().gid(), b.hwaddr().gid());
    let ra = a.stop().expect("stop a");
    assert_conserved(&ra);
    let rb = b.stop().expect("stop b");
    assert_conserved(&rb);
    assert_eq!((ra.pool_in_use, rb.pool_in_use), (0, 0));
    assert_eq!(pa.foreign.get() + pb.foreign.get(), 0);
    assert_eq!(ra.total().tx_dropped() + rb.total().tx_dropped(), 0);
    assert_eq!(ra.total().rx_malformed + rb.total().rx_malformed, 0);
    assert_eq!(fabric.stats().dropped(), 0, "{:?}", fabric.stats());
    assert_eq!(memberships(&fabric, &ga), 0, "a left memberships at the SA");
    assert_eq!(memberships(&fabric, &gb), 0, "b left memberships at the SA");
}

#[test]
fn multicast_to_an_ipv6_group() {
    let _serial = serial();
    let fabric = fabric();
    let (pa, pb) = (Arc::new(Probe::default()), Arc::new(Probe::default()));
    let a = start(
        &fabric,
        "a",
        ([10, 0, 0, 1], A6),
        0,
        (&pa, &pb),
        (GROUP6, Some(Dest::NextHop6(GROUP6))),
    );
    let b = start(&fabric, "b", ([10, 0, 0, 2], B6), 1, (&pb, &pa), (A6, None));
    assert!(a.wait_link_up(T).unwrap() && b.wait_link_up(T).unwrap());
    assert!(b.join_group(GroupAddr::Ipv6(GROUP6)).unwrap());
    wait_for("b's full-member join", T, || {
        b.with_controller(|c| c.group_phase(GroupAddr::Ipv6(GROUP6)))
            .unwrap()
            == Some(GroupPhase::Joined)
    });
    // The first packets wait in a's control core for the send-only join (at most 64
    // per group), the rest go straight from the lcore.
    pa.allow(10);
    wait_for("10 multicast datagrams at b", T, || {
        pb.received_mcast.get() == 10
    });
    pa.allow(1010);
    wait_for("1010 multicast datagrams at b", T, || {
        pb.received_mcast.get() == 1010
    });
    assert!(a.stats(0).tx_posted >= 1000, "{:?}", a.stats(0));
    let ca = a.ctrl_stats().unwrap();
    assert!(ca.mcast_sent_from_queue >= 1, "{ca:?}");
    assert_eq!(ctrl_packet_drops(&ca), 0, "{ca:?}");
    // The group's MGID has the IPv6 signature; a is a send-only member.
    let mgid = b
        .with_controller(|c| c.mgid_of(GroupAddr::Ipv6(GROUP6)))
        .unwrap();
    assert_eq!(
        mgid.map(|m| m.to_string()).as_deref(),
        Some("ff12:601b:ffff:0:0:0:1:3")
    );
    let ga = a.hwaddr().gid();
    let held = fabric.with_sa(|sa| {
        sa.memberships_of(&ga)
            .find(|(g, _)| Some(*g) == mgid)
            .map(|(_, s)| s)
    });
    assert_eq!(
        held,
        Some(ibpoll_wire::mcmember::JoinState::SEND_ONLY_FULL_MEMBER)
    );
    let ra = a.stop().expect("stop a");
    assert_conserved(&ra);
    let rb = b.stop().expect("stop b");
    assert_conserved(&rb);
    assert_eq!(memberships(&fabric, &ga), 0);
}
