//! smoltcp's own multicast join (`Interface::join_multicast_group`, smoltcp's
//! `multicast` feature) becomes a full-member join at the SA: a smoltcp UDP socket on
//! an application-driven lane receives every datagram another stack sends to the
//! group, and smoltcp's leave ends the membership.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Instant;

use common::*;
use ibpoll::smol::IpDevice;
use ibpoll::{Discard, JoinStatus, Lane, MbufArray};
use ibpoll_testkit::stack;
use ibpoll_wire::mcmember::JoinState;
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::socket::udp;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};

const A_IP: [u8; 4] = [10, 0, 0, 1];
const B_IP: [u8; 4] = [10, 0, 0, 2];
const GROUP: Ipv4Addr = Ipv4Addr::new(239, 1, 2, 3);
const PORT: u16 = 7000;
const COUNT: usize = 200;

/// B's smoltcp side on its lane.
struct Smol {
    iface: Interface,
    sockets: SocketSet<'static>,
    dev: IpDevice,
    sock: smoltcp::iface::SocketHandle,
    start: Instant,
    burst: MbufArray,
}

impl Smol {
    fn new(ip: [u8; 4]) -> Smol {
        let mut dev = IpDevice::new(2044);
        let now = smoltcp::time::Instant::from_micros(0);
        let mut iface = Interface::new(Config::new(HardwareAddress::Ip), &mut dev, now);
        iface.update_ip_addrs(|a| {
            a.push(IpCidr::new(IpAddress::Ipv4(ip.into()), 24)).unwrap();
        });
        let mut sockets = SocketSet::new(Vec::new());
        let mut s = udp::Socket::new(
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 512], vec![0; 64 * 1024]),
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 8], vec![0; 4096]),
        );
        s.bind(PORT).unwrap();
        let sock = sockets.add(s);
        Smol {
            iface,
            sockets,
            dev,
            sock,
            start: Instant::now(),
            burst: MbufArray::with_capacity(32),
        }
    }

    /// One iteration with the finer lane API: receive, smoltcp, send.
    fn poll(&mut self, lane: &mut Lane) -> usize {
        lane.quiescent();
        self.dev.bind(lane.tx());
        lane.rx_burst(0, &mut self.burst);
        self.dev.stage_rx(&mut self.burst);
        let now = smoltcp::time::Instant::from_micros(self.start.elapsed().as_micros() as i64);
        let _ = self.iface.poll(now, &mut self.dev, &mut self.sockets);
        self.dev.flush_tx(0, lane.tx());
        lane.flush();
        let s = self.sockets.get_mut::<udp::Socket<'_>>(self.sock);
        let mut n = 0;
        while let Ok((data, meta)) = s.recv() {
            assert_eq!(data.len(), 4);
            assert_eq!(meta.local_address, Some(IpAddress::Ipv4(GROUP)));
            n += 1;
        }
        n
    }
}

#[test]
fn smoltcps_multicast_join_becomes_an_sa_join() {
    let _serial = serial();
    let fabric = fabric();
    let (_a, mut ca, mut la) = stack::small(&fabric, "a")
        .ipv4(A_IP)
        .build()
        .unwrap()
        .split();
    let (b, mut cb, mut lb) = stack::small(&fabric, "b")
        .ipv4(B_IP)
        .build()
        .unwrap()
        .split();
    let (la, lb) = (&mut la[0], &mut lb[0]);
    let mut smol = Smol::new(B_IP);
    let start = Instant::now();
    let mut step = |la: &mut Lane, lb: &mut Lane, smol: &mut Smol| {
        assert!(start.elapsed() < T, "timed out");
        ca.poll();
        cb.poll();
        la.poll(&mut Discard);
        smol.poll(lb)
    };
    while !(la.link_up(0) && lb.link_up(0)) {
        step(la, lb, &mut smol);
    }
    smol.iface.join_multicast_group(GROUP).unwrap();
    while smol.dev.membership(lb.tx(), 0, GROUP) != Some(JoinStatus::Joined) {
        step(la, lb, &mut smol);
    }
    let gid = b.hwaddr().gid();
    let held = |fabric: &ibpoll::SimFabric| {
        fabric.with_sa(|sa| {
            sa.memberships_of(&gid)
                .filter(|(_, js)| *js == JoinState::FULL_MEMBER)
                .count()
        })
    };
    assert_eq!(held(&fabric), 2, "the broadcast group and GROUP");
    let st = smol.dev.stats();
    assert_eq!((st.igmp_mirrored, st.igmp_failed), (1, 0), "{st:?}");
    // a sends COUNT datagrams to the group, a few at a time; smoltcp gets every one.
    let sa = la.udp_bind(0, 6000).unwrap();
    let to = SocketAddrV4::new(GROUP, PORT);
    let (mut sent, mut got) = (0, 0);
    while got < COUNT {
        while sent < COUNT && sent < got + 16 {
            la.udp_send_slice(sa, &(sent as u32).to_be_bytes(), to)
                .unwrap();
            sent += 1;
        }
        got += step(la, lb, &mut smol);
    }
    assert_eq!(got, COUNT);
    // smoltcp leaves: so does the port, at the SA.
    smol.iface.leave_multicast_group(GROUP).unwrap();
    while held(&fabric) != 1 {
        step(la, lb, &mut smol);
    }
    assert_eq!(smol.dev.membership(lb.tx(), 0, GROUP), None);
    assert_eq!(smol.dev.stats().igmp_mirrored, 2);
}
