//! Test helpers: hosts running the real controller on the simulated fabric, driven in
//! virtual time.
#![allow(dead_code)]

use std::sync::Arc;

use ibpoll_ctrl::{Controller, CtrlConfig, DataCore, GroupAddr, Poll, Request};
use ibpoll_dev::{Device, Nanos, RxQueue, TxDesc, TxQueue, UdQpConfig, VirtualClock};
use ibpoll_mem::{HugepagePolicy, Mbuf, Mempool, MempoolConfig};
use ibpoll_pmd_sim::{FabricConfig, FaultConfig, PortId, SimDevice, SimFabric};
use ibpoll_wire::ipoib::{self, EtherType};
use ibpoll_wire::{arp, Gid, PKey, QKey, Qpn};

/// A fabric in virtual time.
pub struct Net {
    pub fabric: SimFabric,
    pub clock: Arc<VirtualClock>,
}

impl Net {
    pub fn new(faults: FaultConfig) -> Net {
        let clock = Arc::new(VirtualClock::new());
        let fabric = SimFabric::new(FabricConfig {
            clock: clock.clone(),
            faults,
            ..FabricConfig::default()
        });
        Net { fabric, clock }
    }

    pub fn now(&self) -> Nanos {
        use ibpoll_dev::Clock;
        self.clock.now()
    }

    /// The memberships the SA holds for `gid`.
    pub fn memberships(&self, gid: &Gid) -> Vec<(Gid, ibpoll_wire::mcmember::JoinState)> {
        self.fabric.with_sa(|sa| sa.memberships_of(gid).collect())
    }
}

/// One IPoIB host: a controller, its data-core handles, a receive queue the test reads
/// as the data core would.
pub struct Host {
    pub name: &'static str,
    pub dev: Arc<SimDevice>,
    pub port_id: PortId,
    pub gid: Gid,
    pub qpn: Qpn,
    pub ctl: Controller,
    pub cores: Vec<DataCore>,
    pub rx: Box<dyn RxQueue>,
    /// A data core's own send queue (for sends through the snapshot).
    pub tx: Box<dyn TxQueue>,
    pub pool: Mempool,
    /// IPv4 payload sequence numbers received (looped-back own packets excluded).
    pub received: Vec<u32>,
    /// ARP packets seen on the receive queue.
    pub arp_seen: Vec<arp::Repr>,
}

pub fn pool(name: &str, n: u32) -> Mempool {
    Mempool::new(MempoolConfig {
        name: name.to_owned(),
        n_bufs: n,
        data_room: 2048,
        cache_size: 0,
        hugepages: HugepagePolicy::Never,
        ..MempoolConfig::default()
    })
    .expect("mempool")
}

impl Host {
    pub fn new(net: &Net, name: &'static str, cfg: CtrlConfig) -> Host {
        Host::with_pool(net, name, cfg, 4096)
    }

    pub fn with_pool(net: &Net, name: &'static str, cfg: CtrlConfig, n_bufs: u32) -> Host {
        let dev = net.fabric.add_node(name, 1);
        let port = dev.open_port(1).expect("port");
        let attr = port.attr();
        let pool = pool(name, n_bufs);
        let mut qp = port
            .create_ud_qp(&UdQpConfig {
                pkey_index: attr.pkey_index(PKey::DEFAULT).expect("default partition"),
                qkey: QKey::IPOIB_DEFAULT,
                rx_queues: 1,
                tx_queues: 2,
                rx_ring_size: 1024,
                tx_ring_size: 1024,
                pool: pool.clone(),
            })
            .expect("qp");
        let ctl_tx = qp.tx.pop().expect("tx");
        let tx = qp.tx.pop().expect("tx");
        let rx = qp.rx.pop().expect("rx");
        let clock: Arc<dyn ibpoll_dev::Clock> = net.clock.clone();
        let (ctl, cores) =
            Controller::new(cfg, port, qp.qpn, ctl_tx, pool.clone(), clock).expect("controller");
        Host {
            name,
            port_id: dev.port_id(1),
            dev,
            gid: attr.gid,
            qpn: qp.qpn,
            ctl,
            cores,
            rx,
            tx,
            pool,
            received: Vec::new(),
            arp_seen: Vec::new(),
        }
    }

    /// Polls the controller until it is idle (bounded), lets every data core pass a
    /// quiescent point, and drains the receive queue like a data core: ARP to the
    /// controller, IPv4 sequence numbers into `received`.
    pub fn step(&mut self) {
        for _ in 0..64 {
            if self.ctl.poll() == Poll::Idle {
                break;
            }
        }
        for c in &mut self.cores {
            c.reader.quiescent();
        }
        self.drain_rx();
    }

    pub fn drain_rx(&mut self) {
        let mut pkts: [Option<Mbuf>; 32] = Default::default();
        loop {
            let n = self.rx.rx_burst(&mut pkts);
            if n == 0 {
                return;
            }
            for slot in &mut pkts[..n] {
                let m = slot.take().expect("filled");
                let meta = *m.meta();
                // QPNs are unique across the simulated fabric: our own looped-back
                // multicast is the one from our QPN.
                if meta.src_qpn == self.qpn.get() {
                    continue;
                }
                let Ok(h) = ipoib::Packet::new_checked(m.data()) else {
                    continue;
                };
                match ipoib::Repr::parse(&h).map(|r| r.ethertype) {
                    Ok(EtherType::ARP) => {
                        if let Ok(a) =
                            arp::Packet::new_checked(h.payload()).and_then(|p| arp::Repr::parse(&p))
                        {
                            self.arp_seen.push(a);
                        }
                        let _ = self.cores[0].requests.send(Request::Arp { mbuf: m });
                    }
                    Ok(EtherType::IPV4) => {
                        let p = h.payload();
                        if p.len() >= 4 {
                            self.received
                                .push(u32::from_be_bytes([p[0], p[1], p[2], p[3]]));
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// A packet: IPoIB header (IPv4) and a 4-byte sequence number.
    pub fn packet(&self, seq: u32) -> Mbuf {
        let mut m = self.pool.alloc().expect("buffer");
        let d = m.append(ipoib::HEADER_LEN + 4).expect("room");
        ipoib::Repr {
            ethertype: EtherType::IPV4,
        }
        .emit(&mut ipoib::Packet::new_unchecked(
            &mut d[..ipoib::HEADER_LEN],
        ));
        d[ipoib::HEADER_LEN..].copy_from_slice(&seq.to_be_bytes());
        m
    }

    /// What a data core does with a multicast packet: send it through the snapshot if
    /// the group is Joined there, else hand it to the control core.
    pub fn data_send_mcast(&mut self, core: usize, group: GroupAddr, seq: u32) -> bool {
        let m = self.packet(seq);
        let c = &mut self.cores[core];
        let snap = c.reader.get();
        let mgid = match group {
            GroupAddr::Mgid(g) => g,
            GroupAddr::Ipv4(ip) => snap.ipv4_mgid(ip),
        };
        if let Some(e) = snap.group(&mgid) {
            e.mark_used();
            let mut d = [TxDesc {
                mbuf: Some(m),
                ah: e.ah(),
                remote_qpn: Qpn::MULTICAST,
                remote_qkey: e.qkey,
            }];
            return self.tx.tx_burst(&mut d) == 1;
        }
        c.requests.send(Request::Mcast { group, mbuf: m }).is_ok()
    }

    /// What a data core does with a unicast packet to `ip`.
    pub fn data_send_unicast(&mut self, core: usize, ip: [u8; 4], seq: u32) -> bool {
        let m = self.packet(seq);
        let c = &mut self.cores[core];
        let snap = c.reader.get();
        if let Some(n) = snap.neighbour(&ip) {
            n.mark_used();
            let mut d = [TxDesc {
                mbuf: Some(m),
                ah: n.ah(),
                remote_qpn: n.qpn(),
                remote_qkey: n.qkey,
            }];
            return self.tx.tx_burst(&mut d) == 1;
        }
        c.requests
            .send(Request::Resolve {
                next_hop: ip,
                mbuf: m,
            })
            .is_ok()
    }
}

/// Advances virtual time by `step` at a time for `dur`, stepping every host each time.
pub fn run(net: &Net, hosts: &mut [&mut Host], dur: Nanos, step: Nanos) {
    let end = net.now().saturating_add(dur);
    while net.now() < end {
        for h in hosts.iter_mut() {
            h.step();
        }
        net.clock.advance(step);
    }
    for h in hosts.iter_mut() {
        h.step();
    }
}

/// Like [`run`], stopping as soon as `done` holds (checked after every step); returns
/// the virtual time it took, or panics after `max`.
pub fn run_until(
    net: &Net,
    hosts: &mut [&mut Host],
    max: Nanos,
    step: Nanos,
    mut done: impl FnMut(&mut [&mut Host]) -> bool,
) -> Nanos {
    let start = net.now();
    loop {
        for h in hosts.iter_mut() {
            h.step();
        }
        if done(hosts) {
            return net.now().saturating_sub(start);
        }
        assert!(
            net.now().saturating_sub(start) < max,
            "condition not reached within {:?}",
            max.as_duration()
        );
        net.clock.advance(step);
    }
}

pub const MS: Nanos = Nanos::from_millis(1);
pub const S: Nanos = Nanos::from_secs(1);

pub fn ms(n: u64) -> Nanos {
    Nanos::from_millis(n)
}

pub fn secs(n: u64) -> Nanos {
    Nanos::from_secs(n)
}
