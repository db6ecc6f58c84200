//! smoltcp UDP sockets over an `Interface` with `Medium::Ip` on each of two stacks.

mod common;

use std::sync::Arc;

use common::*;
use ibpoll::smol::IpDevice;
use ibpoll::{App, LcoreCtx, Tx};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::udp;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpEndpoint};

const A_IP: [u8; 4] = [10, 0, 0, 1];
const B_IP: [u8; 4] = [10, 0, 0, 2];
const PORT: u16 = 7000;

struct SmolApp {
    iface: Interface,
    sockets: SocketSet<'static>,
    dev: IpDevice,
    udp: SocketHandle,
    start: std::time::Instant,
    to: Option<[u8; 4]>,
    probe: Arc<Probe>,
    peer: Arc<Probe>,
    seq: u32,
}

impl SmolApp {
    fn new(ip: [u8; 4], to: Option<[u8; 4]>, probe: Arc<Probe>, peer: Arc<Probe>) -> SmolApp {
        let start = std::time::Instant::now();
        let mut dev = IpDevice::new(2044);
        let mut iface = Interface::new(
            Config::new(HardwareAddress::Ip),
            &mut dev,
            smoltcp::time::Instant::from_micros(0),
        );
        iface.update_ip_addrs(|a| {
            a.push(IpCidr::new(IpAddress::v4(ip[0], ip[1], ip[2], ip[3]), 24))
                .unwrap();
        });
        let mut sockets = SocketSet::new(Vec::new());
        let mut sock = udp::Socket::new(
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 256], vec![0; 64 * 1024]),
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 256], vec![0; 64 * 1024]),
        );
        sock.bind(PORT).unwrap();
        let udp = sockets.add(sock);
        SmolApp {
            iface,
            sockets,
            dev,
            udp,
            start,
            to,
            probe,
            peer,
            seq: 0,
        }
    }

    fn run(&mut self, ctx: &LcoreCtx, tx: &mut Tx) -> bool {
        self.dev.bind(tx);
        let now = smoltcp::time::Instant::from_micros(
            ctx.now.saturating_duration_since(self.start).as_micros() as i64,
        );
        if ctx.mtu > 0 {
            self.dev.set_mtu(ctx.mtu);
        }
        let mut did = false;
        if let Some(to) = self.to {
            let budget = self.probe.budget.load(std::sync::atomic::Ordering::Relaxed);
            let sock = self.sockets.get_mut::<udp::Socket<'_>>(self.udp);
            while self.probe.sent.get() < budget
                && self.probe.sent.get() < self.peer.received.get() + 64
                && sock.can_send()
            {
                let ep = IpEndpoint::new(IpAddress::v4(to[0], to[1], to[2], to[3]), PORT);
                if sock.send_slice(&self.seq.to_be_bytes(), ep).is_err() {
                    break;
                }
                self.seq += 1;
                self.probe.sent.inc();
                did = true;
            }
        }
        let _ = self.iface.poll(now, &mut self.dev, &mut self.sockets);
        let sock = self.sockets.get_mut::<udp::Socket<'_>>(self.udp);
        while let Ok((data, _meta)) = sock.recv() {
            if data.len() == 4 {
                self.probe.received.inc();
            }
            did = true;
        }
        self.dev.flush_tx(0, tx);
        did
    }
}

impl App for SmolApp {
    fn on_burst(&mut self, ctx: &LcoreCtx, rx: &mut ibpoll_mem::MbufArray, tx: &mut Tx) {
        self.dev.stage_rx(rx);
        self.run(ctx, tx);
    }

    fn poll(&mut self, ctx: &LcoreCtx, tx: &mut Tx) -> bool {
        self.run(ctx, tx)
    }
}

#[test]
fn udp_sockets_over_two_stacks() {
    let _serial = serial();
    let fabric = fabric();
    let (pa, pb) = (Arc::new(Probe::default()), Arc::new(Probe::default()));
    let a = {
        let (p, peer) = (pa.clone(), pb.clone());
        host(&fabric, "a", A_IP, 0)
            .start(move |_| SmolApp::new(A_IP, Some(B_IP), p.clone(), peer.clone()))
            .expect("stack a")
    };
    let b = {
        let (p, peer) = (pb.clone(), pa.clone());
        host(&fabric, "b", B_IP, 1)
            .start(move |_| SmolApp::new(B_IP, None, p.clone(), peer.clone()))
            .expect("stack b")
    };
    assert!(a.wait_link_up(T).unwrap() && b.wait_link_up(T).unwrap());
    pa.allow(3);
    wait_for("3 UDP datagrams through smoltcp", T, || {
        pb.received.get() == 3
    });
    pa.allow(1003);
    wait_for("1003 UDP datagrams through smoltcp", T, || {
        pb.received.get() == 1003
    });
    let (ra, rb) = (a.stop().unwrap(), b.stop().unwrap());
    assert_conserved(&ra);
    assert_conserved(&rb);
    assert_eq!(ra.pool_in_use + rb.pool_in_use, 0);
}
