//! An IPoIB host running the real controller, and a simulated fabric in virtual time
//! that drives such hosts.

use std::sync::Arc;

use ibpoll_ctrl::{Controller, CtrlConfig, DataCore, GroupAddr, Poll, Request};
use ibpoll_dev::{Clock, Device, Nanos, Port, RxQueue, TxQueue, VirtualClock};
use ibpoll_mem::{Mbuf, Mempool};
use ibpoll_pmd_sim::{FabricConfig, FaultConfig, PortId, SimFabric};
use ibpoll_wire::ipoib::EtherType;
use ibpoll_wire::{arp, Gid, PKey, Qpn};

use crate::data::{self, Direct, IpoibQp};

/// A simulated fabric whose time is a [`VirtualClock`]: nothing moves unless the test
/// advances it.
#[derive(Debug)]
pub struct Net {
    /// The fabric.
    pub fabric: SimFabric,
    /// Its clock.
    pub clock: Arc<VirtualClock>,
}

impl Net {
    /// A default fabric with `faults`.
    pub fn new(faults: FaultConfig) -> Net {
        Net::with(FabricConfig {
            faults,
            ..FabricConfig::default()
        })
    }

    /// A fabric made from `cfg`, its clock a fresh virtual clock at zero.
    pub fn with(cfg: FabricConfig) -> Net {
        let clock = Arc::new(VirtualClock::new());
        let fabric = SimFabric::new(FabricConfig {
            clock: clock.clone(),
            ..cfg
        });
        Net { fabric, clock }
    }

    /// Virtual time now.
    pub fn now(&self) -> Nanos {
        self.clock.now()
    }

    /// The memberships the SA holds for `gid`.
    pub fn memberships(&self, gid: &Gid) -> Vec<(Gid, ibpoll_wire::mcmember::JoinState)> {
        self.fabric.with_sa(|sa| sa.memberships_of(gid).collect())
    }
}

/// One IPoIB host: a controller, its data-core handles, and the data cores' queues,
/// which the test reads and writes as the data cores would.
#[derive(Debug)]
pub struct CtlHost {
    /// For messages.
    pub name: &'static str,
    /// Its port on the simulated fabric (for the fabric's port controls).
    pub port_id: PortId,
    /// The interface's GID (in its hardware address): the port GID on InfiniBand, the
    /// interface address's IPv4-mapped GID on RoCE.
    pub gid: Gid,
    /// The interface's QPN.
    pub qpn: Qpn,
    /// Every QPN of the interface.
    pub own: Vec<Qpn>,
    /// The port the controller runs on.
    pub port: Arc<dyn Port>,
    /// The controller.
    pub ctl: Controller,
    /// Data-core handles.
    pub cores: Vec<DataCore>,
    /// The data cores' receive queue.
    pub rx: Box<dyn RxQueue>,
    /// A data core's own send queue (for sends through the snapshot).
    pub tx: Box<dyn TxQueue>,
    /// Sends posted on `tx`, as a lane counts them for the address-handle reaper.
    pub posted: u64,
    /// The buffer pool.
    pub pool: Mempool,
    /// IPv4 payload sequence numbers received (looped-back own packets excluded).
    pub received: Vec<u32>,
    /// IPv6 payload sequence numbers received (neighbour discovery excluded).
    pub received6: Vec<u32>,
    /// ARP packets seen on the receive queue.
    pub arp_seen: Vec<arp::Repr>,
    /// IPv6 neighbour-discovery packets seen on the receive queue (from the IPv6
    /// header on).
    pub nd_seen: Vec<Vec<u8>>,
}

impl CtlHost {
    /// A host on a new node `name` of `net`, in the default partition, with a pool of
    /// 4096 buffers.
    pub fn new(net: &Net, name: &'static str, cfg: CtrlConfig) -> CtlHost {
        CtlHost::with_pool(net, name, cfg, 4096)
    }

    /// Like [`CtlHost::new`], with a pool of `n_bufs` buffers.
    pub fn with_pool(net: &Net, name: &'static str, cfg: CtrlConfig, n_bufs: u32) -> CtlHost {
        let dev = net.fabric.add_node(name, 1);
        let port = dev.open_port(1).expect("port");
        let pkey_index = port
            .attr()
            .pkey_index(PKey::DEFAULT)
            .expect("default partition");
        let pool = data::pool(name, n_bufs);
        let qp = data::ipoib_qp(&*port, pkey_index, &pool, 1024);
        let clock: Arc<dyn Clock> = net.clock.clone();
        CtlHost::on_port(name, dev.port_id(1), port, qp, cfg, pool, clock)
    }

    /// A host on a new RoCE v2 node `name` of `net` whose port's address (and the
    /// interface's, unless `cfg` names one) is `ip`, with a pool of 4096 buffers.
    pub fn roce(net: &Net, name: &'static str, ip: [u8; 4], cfg: CtrlConfig) -> CtlHost {
        let dev = net.fabric.add_roce_node(name, &[ip]);
        let port = dev.open_port(1).expect("port");
        let pool = data::pool(name, 4096);
        let qp = data::ipoib_qp(&*port, 0, &pool, 1024);
        let clock: Arc<dyn Clock> = net.clock.clone();
        let cfg = CtrlConfig {
            ipv4: cfg.ipv4.or(Some(ip)),
            ..cfg
        };
        CtlHost::on_port(name, dev.port_id(1), port, qp, cfg, pool, clock)
    }

    /// A host whose controller runs on `port` (`port_id` on the simulated fabric) with
    /// `qp` (made on `port`, receiving into `pool`) and time from `clock`.
    pub fn on_port(
        name: &'static str,
        port_id: PortId,
        port: Arc<dyn Port>,
        qp: IpoibQp,
        cfg: CtrlConfig,
        pool: Mempool,
        clock: Arc<dyn Clock>,
    ) -> CtlHost {
        let (ctl, cores) = Controller::new(cfg, port.clone(), qp.ctl, pool.clone(), clock)
            .unwrap_or_else(|e| panic!("{name}: controller: {e}"));
        // The interface's GID: the port's on InfiniBand, the address's on RoCE.
        let gid = ctl.hwaddr().gid();
        CtlHost {
            name,
            port_id,
            gid,
            qpn: qp.qpn,
            own: qp.own,
            port,
            posted: 0,
            ctl,
            cores,
            rx: qp.rx,
            tx: qp.tx,
            pool,
            received: Vec::new(),
            received6: Vec::new(),
            arp_seen: Vec::new(),
            nd_seen: Vec::new(),
        }
    }

    /// Polls the controller until it is idle (bounded), lets every data core pass a
    /// quiescent point, and drains the receive queue like a data core: ARP and IPv6
    /// neighbour discovery to the controller, IPv4 and IPv6 sequence numbers into
    /// `received` and `received6`.
    pub fn step(&mut self) {
        for _ in 0..64 {
            if self.ctl.poll() == Poll::Idle {
                break;
            }
            self.move_qps();
        }
        for c in &mut self.cores {
            c.reader.quiescent();
        }
        self.publish_progress();
        self.drain_rx();
    }

    /// What the stack does for a heavy flush's [`CtrlEvent::RebuildQp`]: every QP of
    /// the interface moves to the partition's new P_Key index (the test plays every
    /// lane, so the queues are parked between calls).
    ///
    /// [`CtrlEvent::RebuildQp`]: ibpoll_ctrl::CtrlEvent::RebuildQp
    pub fn move_qps(&mut self) {
        let Some(pkey_index) = self.ctl.qp_move_pending() else {
            return;
        };
        let mut ok = true;
        for &qpn in &self.own {
            // SAFETY: the test thread owns every queue of the interface and is not
            // using any of them during this call.
            let parked = unsafe { ibpoll_dev::Parked::assume(qpn) };
            ok &= self.port.move_qp_pkey_index(&parked, pkey_index).is_ok();
        }
        self.ctl.qps_moved(ok);
    }

    /// The receive half of [`CtlHost::step`].
    pub fn drain_rx(&mut self) {
        data::drain_rx(&mut *self.rx, &self.own, |t, m| {
            if t == EtherType::ARP {
                if let Ok(a) =
                    arp::Packet::new_checked(data::payload(&m)).and_then(|p| arp::Repr::parse(&p))
                {
                    self.arp_seen.push(a);
                }
                let _ = self.cores[0].requests.send(Request::Arp { mbuf: m });
            } else if t == EtherType::IPV6 && data::is_nd(&m) {
                self.nd_seen.push(data::payload(&m).to_vec());
                let _ = self.cores[0].requests.send(Request::Nd { mbuf: m });
            } else if let Some(seq) = data::seq_of(&m) {
                if t == EtherType::IPV6 {
                    self.received6.push(seq);
                } else {
                    self.received.push(seq);
                }
            }
        });
    }

    /// A packet: IPoIB header (IPv4) and a 4-byte sequence number.
    pub fn packet(&self, seq: u32) -> Mbuf {
        data::seq_packet(&self.pool, seq).expect("buffer")
    }

    /// What a data core does with a multicast packet: send it through the snapshot if
    /// the group is Joined there, else hand it to the control core.
    pub fn data_send_mcast(&mut self, core: usize, group: GroupAddr, seq: u32) -> bool {
        let mgid = match group {
            GroupAddr::Mgid(g) => g,
            GroupAddr::Ipv4(ip) => self.cores[core].reader.get().ipv4_mgid(ip),
            GroupAddr::Ipv6(ip) => self.cores[core].reader.get().ipv6_mgid(ip),
        };
        self.data_send(core, Direct::Group(&mgid), seq, |mbuf| Request::Mcast {
            group,
            mbuf,
        })
    }

    /// What a data core does with a unicast packet to `ip`.
    pub fn data_send_unicast(&mut self, core: usize, ip: [u8; 4], seq: u32) -> bool {
        self.data_send(core, Direct::NextHop(&ip), seq, |mbuf| Request::Resolve {
            next_hop: ip,
            mbuf,
        })
    }

    /// What a data core does with an IPv6 packet to the next hop `ip`.
    pub fn data_send_unicast6(&mut self, core: usize, ip: [u8; 16], seq: u32) -> bool {
        let m = data::seq_packet6(&self.pool, seq).expect("buffer");
        let c = &mut self.cores[core];
        match data::send_direct(c, &mut *self.tx, Direct::NextHop6(&ip), m) {
            Ok(sent) => sent == 1,
            Err(mbuf) => c
                .requests
                .send(Request::Resolve6 { next_hop: ip, mbuf })
                .is_ok(),
        }
    }

    /// Packet `seq` from data core `core`: through the snapshot to `to` if it is there,
    /// else to the control core as `request`. Whether it was sent or handed over.
    fn data_send(
        &mut self,
        core: usize,
        to: Direct<'_>,
        seq: u32,
        request: impl FnOnce(Mbuf) -> Request,
    ) -> bool {
        let m = self.packet(seq);
        let c = &mut self.cores[core];
        let sent = match data::send_direct(c, &mut *self.tx, to, m) {
            Ok(sent) => {
                self.posted += sent as u64;
                sent == 1
            }
            Err(m) => c.requests.send(request(m)).is_ok(),
        };
        self.publish_progress();
        sent
    }

    /// What a lane does once per iteration: polls its send queue's completions and
    /// publishes its send progress (every data core shares the one queue here).
    pub fn publish_progress(&mut self) {
        let completed = self.tx.completed();
        for c in &self.cores {
            c.progress.publish(self.posted, completed);
        }
    }
}

/// Advances virtual time by `step` at a time for `dur`, stepping every host each time.
pub fn run(net: &Net, hosts: &mut [&mut CtlHost], dur: Nanos, step: Nanos) {
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
    hosts: &mut [&mut CtlHost],
    max: Nanos,
    step: Nanos,
    mut done: impl FnMut(&mut [&mut CtlHost]) -> bool,
) -> Nanos {
    let start = net.now();
    loop {
        for h in hosts.iter_mut() {
            h.step();
        }
        if done(hosts) {
            return net.now().saturating_sub(start);
        }
        assert_within(start, net.now(), max);
        net.clock.advance(step);
    }
}

/// The deadline of a run that waits for a condition in virtual time: panics once `max`
/// has passed between `start` and `now`.
pub fn assert_within(start: Nanos, now: Nanos, max: Nanos) {
    assert!(
        now.saturating_sub(start) < max,
        "condition not reached within {:?}",
        max.as_duration()
    );
}
