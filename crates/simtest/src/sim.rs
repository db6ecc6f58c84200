//! The simulated system: hosts (a controller, stand-in data cores, a receive queue) on one
//! simulated fabric, one thread, virtual time, and the invariant checker run after every
//! step.
//!
//! A *step* is: the actions of this instant (faults, interface and port changes,
//! subscriptions, packets from the data cores), then time moves forward by `dt`, then
//! every controller is polled until it is idle (its events handled: a QP rebuild after a
//! heavy flush), every data core passes a quiescent point and reads its snapshot, host
//! receive queues are drained (ARP to the control core), and [`Sim::check`] runs.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};

use ibpoll_ctrl::{
    Controller, CtrlConfig, CtrlEvent, DataCore, FlushLevel, GroupAddr, GroupPhase, Poll, Request,
};
use ibpoll_dev::{Clock, Device, Nanos, Port, RxQueue, TxQueue, VirtualClock};
use ibpoll_devtest::{Backpressure, BackpressureConfig};
use ibpoll_mem::{Mbuf, Mempool};
use ibpoll_pmd_sim::{FabricConfig, FaultConfig, PortId, SimDevice, SimFabric};
use ibpoll_testkit::data::{self, Direct, IpoibQp};
use ibpoll_testkit::host::{assert_within, Net};
use ibpoll_wire::ipoib::{self, EtherType};
use ibpoll_wire::ipv6;
use ibpoll_wire::{Gid, IbMtu, Lid, PKey, Qpn};

use crate::liveness::Liveness;
use crate::obs::{Obs, ObsPort};
use crate::trace::Fnv;

/// How to build a simulated system.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Seeds the fabric's fault draws.
    pub seed: u64,
    /// Hosts (each one controller).
    pub hosts: usize,
    /// The controllers' configuration (data cores, bounds, timings); `ipv4` is set per
    /// host to 10.0.0.(index + 1), and `ipv6`, when given, per host to that address with
    /// its last byte index + 1 (see [`host_ipv6`]).
    pub ctrl: CtrlConfig,
    /// Faults from the start.
    pub faults: FaultConfig,
    /// Buffers per host pool.
    pub pool_bufs: u32,
    /// Multicast groups the run may use besides the broadcast group (for the flush
    /// bound: how many leaves a flush may have to send).
    pub groups_in_use: usize,
    /// Wraps every host's port in `ibpoll_devtest::Backpressure` seeded with this: send
    /// queues refuse part of each burst and complete late, and the wrapper checks that
    /// no address handle is destroyed while a send names it (an invariant every step).
    pub backpressure: Option<u64>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            hosts: 1,
            ctrl: CtrlConfig::default(),
            faults: FaultConfig::NONE,
            pool_bufs: 8192,
            groups_in_use: 64,
            backpressure: None,
        }
    }
}

/// One simulated IPoIB host.
#[derive(Debug)]
pub struct Host {
    /// Index in [`Sim::hosts`].
    pub index: usize,
    /// Its HCA.
    pub dev: Arc<SimDevice>,
    /// Its port, for the fabric's fault controls.
    pub port_id: PortId,
    /// The port (observed) the controller uses.
    pub port: Arc<dyn Port>,
    /// Its port GID.
    pub gid: Gid,
    /// Its IPv4 address.
    pub ip: [u8; 4],
    /// Its IPv6 address, if the run gives hosts one.
    pub ip6: Option<[u8; 16]>,
    /// The back-pressure wrapper of its port, when the run draws one.
    pub backpressure: Option<Arc<Backpressure>>,
    /// The interface's QPN.
    pub qpn: Qpn,
    /// Every QPN of the interface (lane and control core).
    pub own: Vec<Qpn>,
    /// The controller.
    pub ctl: Controller,
    /// Data-core handles.
    pub cores: Vec<DataCore>,
    /// The data cores' receive queue (drained by core 0).
    pub rx: Box<dyn RxQueue>,
    /// The data cores' send queue.
    pub tx: Box<dyn TxQueue>,
    /// The buffer pool.
    pub pool: Mempool,
    /// The controller's configuration.
    pub cfg: CtrlConfig,
    /// Whether the interface is up (as the simulator set it).
    pub admin_up: bool,
    /// Whether the port is up (as the simulator set it).
    pub port_up: bool,
    /// Multicast and unicast packets the data cores handed to the control core.
    pub handed: u64,
    /// Requests a full ring handed back (the data core freed the packet).
    pub ring_back: u64,
    /// Packets data cores sent through their snapshot.
    pub sent_direct: u64,
    /// Sends the send queue refused (back-pressure; the data core freed the packet).
    pub tx_refused: u64,
    /// Sends posted on the data cores' send queue (their progress for the controller's
    /// address-handle reaper).
    pub posted: u64,
    /// ARP packets handed to the control core.
    pub arp_handed: u64,
    /// Neighbour-discovery packets handed to the control core.
    pub nd_handed: u64,
    /// `join_group` calls refused (they count in `mcast_table_full` too).
    pub join_refused: u64,
    /// IPv4 packets received.
    pub received: u64,
    /// Packets not sent because the pool was empty.
    pub nombuf: u64,
    /// When the running flush was first seen.
    pub flush_since: Option<Nanos>,
    /// The longest flush so far.
    pub flush_longest: Nanos,
    /// Flushes seen to end.
    pub flushes_ended: u64,
    /// The controller's snapshot generation when the SA last lost this host's
    /// memberships behind its back (a subnet-manager restart).
    gen_at_wipe: u64,
    /// From the start of a light flush until the broadcast group is Joined again (or
    /// the link goes down): the link stays up by design (DESIGN rule 8) meanwhile.
    pub light_window: bool,
    /// Events the controller emitted.
    pub events: Vec<CtrlEvent>,
}

impl Host {
    /// What a lane does once per iteration: polls its send queue's completions and
    /// publishes its send progress (the data cores share one queue here).
    fn publish_progress(&mut self) {
        let completed = self.tx.completed();
        for c in &self.cores {
            c.progress.publish(self.posted, completed);
        }
    }
}

/// The whole simulated system.
#[derive(Debug)]
pub struct Sim {
    /// Virtual time.
    pub clock: Arc<VirtualClock>,
    /// The fabric.
    pub fabric: SimFabric,
    /// What the simulator observed of the SA and the ports.
    pub obs: Arc<Mutex<Obs>>,
    /// The hosts.
    pub hosts: Vec<Host>,
    /// The broadcast group's MGID.
    pub bcast: Gid,
    /// Every MGID the run used (checked in every snapshot).
    pub known: BTreeSet<Gid>,
    /// Every IPv4 next hop the run used.
    pub known_ips: BTreeSet<[u8; 4]>,
    /// Every IPv6 next hop the run used.
    pub known_ips6: BTreeSet<[u8; 16]>,
    /// The trace hash.
    pub hash: Fnv,
    /// Steps so far.
    pub steps: u64,
    /// The longest step (the flush bound's slack: a flush's end is seen a step late).
    pub dt_max: Nanos,
    /// The fault configuration in force.
    pub faults: FaultConfig,
    /// Fault configuration from the start (restored after outages).
    cfg: SimConfig,
    /// Memberships given up and still held at the SA, timed.
    liveness: Liveness,
    next_lid: u16,
    seq: u32,
}

/// Descriptors per queue of a host's UD QP.
const QP_RING_SIZE: u32 = 1024;

fn lock(obs: &Mutex<Obs>) -> MutexGuard<'_, Obs> {
    obs.lock().unwrap_or_else(|p| p.into_inner())
}

impl Sim {
    /// Builds the fabric and the hosts.
    pub fn new(cfg: SimConfig) -> Sim {
        let Net { fabric, clock } = Net::with(FabricConfig {
            seed: cfg.seed,
            faults: cfg.faults,
            ..FabricConfig::default()
        });
        let bcast = ipoib::broadcast_mgid(cfg.ctrl.pkey);
        let obs = Obs::new(fabric.clone(), bcast);
        let mut sim = Sim {
            clock,
            fabric,
            obs,
            hosts: Vec::new(),
            bcast,
            known: BTreeSet::from([bcast]),
            known_ips: BTreeSet::new(),
            known_ips6: BTreeSet::new(),
            hash: Fnv::new(),
            steps: 0,
            dt_max: Nanos::from_millis(1),
            faults: cfg.faults,
            next_lid: 0x100,
            seq: 0,
            cfg,
            liveness: Liveness::default(),
        };
        for i in 0..sim.cfg.hosts {
            sim.add_host(i);
        }
        sim
    }

    fn add_host(&mut self, index: usize) {
        let name = format!("h{index}");
        let dev = self.fabric.add_node(&name, 1);
        let raw = dev.open_port(1).expect("port 1");
        let attr = raw.attr();
        let h = lock(&self.obs).add_host(attr.gid, self.cfg.ctrl.sa_timeout);
        assert_eq!(h, index);
        let port_id = dev.port_id(1);
        // The observer sits next to the driver, under the back-pressure wrapper: the
        // partition check notes a payload when the fabric takes it, not when the wrapper
        // takes it and holds it for a while (meanwhile a P_Key table may change).
        let observed: Arc<dyn Port> = Arc::new(ObsPort::new(raw, index, port_id, self.obs.clone()));
        let (port, backpressure) = match self.cfg.backpressure {
            Some(seed) => {
                let cfg = BackpressureConfig::new(seed ^ index as u64)
                    .accept(1, 16)
                    .delay(0, 3);
                let bp = Backpressure::new(observed, cfg);
                (bp.clone() as Arc<dyn Port>, Some(bp))
            }
            None => (observed, None),
        };
        let pool = data::pool(&name, self.cfg.pool_bufs);
        let ip = [10, 0, 0, index as u8 + 1];
        let ip6 = self.cfg.ctrl.ipv6.map(|a| host_ipv6(a, index));
        let cfg = CtrlConfig {
            ipv4: Some(ip),
            ipv6: ip6,
            ..self.cfg.ctrl.clone()
        };
        let pkey_index = attr.pkey_index(cfg.pkey).expect("the partition");
        let IpoibQp {
            qpn,
            ctl: ctl_qps,
            tx,
            rx,
            own,
        } = data::ipoib_qp(&*port, pkey_index, &pool, QP_RING_SIZE);
        let clock: Arc<dyn Clock> = self.clock.clone();
        let (ctl, cores) = Controller::new(cfg.clone(), port.clone(), ctl_qps, pool.clone(), clock)
            .expect("controller");
        self.known_ips.insert(ip);
        if let Some(a) = ip6 {
            // The groups neighbour discovery keeps the host in are checked like any.
            for g in [ipv6::ALL_NODES, ipv6::solicited_node(&a)] {
                self.known.extend(ctl.mgid_of(GroupAddr::Ipv6(g)));
            }
        }
        self.hosts.push(Host {
            index,
            port_id,
            dev,
            port,
            gid: attr.gid,
            ip,
            ip6,
            backpressure,
            qpn,
            own,
            ctl,
            cores,
            rx,
            tx,
            pool,
            cfg,
            admin_up: true,
            port_up: true,
            handed: 0,
            ring_back: 0,
            sent_direct: 0,
            tx_refused: 0,
            posted: 0,
            arp_handed: 0,
            nd_handed: 0,
            join_refused: 0,
            received: 0,
            nombuf: 0,
            flush_since: None,
            flush_longest: Nanos::ZERO,
            flushes_ended: 0,
            gen_at_wipe: 0,
            light_window: false,
            events: Vec::new(),
        });
    }

    /// Virtual time now.
    pub fn now(&self) -> Nanos {
        self.clock.now()
    }

    /// The MGID of a group address on host 0's partition.
    pub fn mgid(&self, g: GroupAddr) -> Gid {
        self.hosts[0]
            .ctl
            .mgid_of(g)
            .expect("a group of the partition")
    }

    /// The SA's memberships of host `h` (as observed).
    pub fn held_by(&self, h: usize) -> Vec<(Gid, ibpoll_wire::mcmember::JoinState)> {
        lock(&self.obs).held_by(h)
    }

    fn tag(&mut self, what: &str, h: usize, v: u64) {
        if crate::obs::debug_on() {
            eprintln!("{:?} {what} host {h} {v:#x}", self.now().as_duration());
        }
        self.hash.str(what);
        self.hash.u64(h as u64);
        self.hash.u64(v);
        self.hash.u64(self.now().0);
    }

    // ----- actions -----------------------------------------------------------------

    /// Replaces the fabric's faults.
    pub fn set_faults(&mut self, f: FaultConfig) {
        self.tag("faults", 0, f.sa_delay_max.0 ^ f.sa_request_loss.to_bits());
        self.faults = f;
        self.fabric.set_faults(f);
    }

    /// Back to the faults the run started with.
    pub fn restore_faults(&mut self) {
        let f = self.cfg.faults;
        self.set_faults(f);
    }

    /// Interface up/down on host `h`.
    pub fn admin(&mut self, h: usize, up: bool) {
        self.tag("admin", h, up.into());
        self.hosts[h].admin_up = up;
        self.hosts[h].ctl.set_admin_up(up);
        self.note_flush(h);
    }

    /// Port up (Active) / down (Error) on host `h`.
    pub fn port(&mut self, h: usize, up: bool) {
        self.tag("port", h, up.into());
        self.hosts[h].port_up = up;
        self.fabric.set_port_up(self.hosts[h].port_id, up);
    }

    /// Restarts the subnet manager (ClientReregister on every Active port).
    pub fn restart_sm(&mut self, mtu: Option<IbMtu>) {
        self.tag("sm", 0, mtu.map_or(0, |m| m as u64));
        self.fabric.restart_sm(mtu);
        lock(&self.obs).sync_wipe();
        for host in &mut self.hosts {
            host.gen_at_wipe = host.ctl.snapshot().generation;
        }
    }

    /// Gives host `h` a new P_Key table.
    pub fn set_pkeys(&mut self, h: usize, pkeys: Vec<PKey>) {
        self.tag(
            "pkeys",
            h,
            pkeys.iter().fold(0, |a, p| a << 16 | u64::from(p.0)),
        );
        self.fabric.set_pkeys(self.hosts[h].port_id, pkeys);
    }

    /// Kills host `h`'s interface as `kill -9` does: the controller and its QPs are
    /// gone without leaving anything at the SA. A new interface starts on the same port
    /// (what a restarted process does); its startup cleanup must leave what the dead
    /// one held, before it joins. False (nothing done) when the port's P_Key table lacks
    /// the partition, so that no interface could start.
    pub fn crash(&mut self, h: usize) -> bool {
        let host = &self.hosts[h];
        let Some(pkey_index) = host.port.attr().pkey_index(host.cfg.pkey) else {
            return false;
        };
        let port = host.port.clone();
        let pool = host.pool.clone();
        let cfg = host.cfg.clone();
        self.tag("crash", h, 0);
        // The dead process's controller and queues go with the replacement below.
        let host = &mut self.hosts[h];
        let IpoibQp {
            qpn,
            ctl: ctl_qps,
            tx,
            rx,
            own,
        } = data::ipoib_qp(&*port, pkey_index, &pool, QP_RING_SIZE);
        let clock: Arc<dyn Clock> = self.clock.clone();
        let (ctl, cores) =
            Controller::new(cfg, port, ctl_qps, pool, clock).expect("the restarted controller");
        host.ctl = ctl;
        host.cores = cores;
        host.rx = rx;
        host.tx = tx;
        host.qpn = qpn;
        host.own = own;
        host.admin_up = true;
        // What the checker counts per controller starts again.
        host.handed = 0;
        host.ring_back = 0;
        host.sent_direct = 0;
        host.arp_handed = 0;
        host.join_refused = 0;
        host.flush_since = None;
        host.light_window = false;
        host.gen_at_wipe = 0;
        host.events.clear();
        true
    }

    /// Gives host `h` a fresh LID.
    pub fn new_lid(&mut self, h: usize) {
        let lid = Lid(self.next_lid);
        self.next_lid += 1;
        self.tag("lid", h, lid.0.into());
        self.fabric.set_lid(self.hosts[h].port_id, lid);
    }

    /// Host `h` subscribes to `g`.
    pub fn subscribe(&mut self, h: usize, g: GroupAddr) -> bool {
        let mgid = self.mgid(g);
        self.known.insert(mgid);
        self.tag("sub", h, mgid_low(&mgid));
        let ok = self.hosts[h].ctl.join_group(g);
        if !ok {
            self.hosts[h].join_refused += 1;
        }
        ok
    }

    /// Host `h` unsubscribes from `g`.
    pub fn unsubscribe(&mut self, h: usize, g: GroupAddr) {
        let mgid = self.mgid(g);
        self.tag("unsub", h, mgid_low(&mgid));
        self.hosts[h].ctl.leave_group(g);
    }

    /// Makes the SA silent to host `h`'s path queries (or answer them again).
    pub fn drop_path_queries(&mut self, h: usize, drop: bool) {
        self.tag("paths", h, drop.into());
        lock(&self.obs).drop_path_queries[h] = drop;
    }

    fn packet(&mut self, h: usize) -> Option<Mbuf> {
        self.seq = self.seq.wrapping_add(1);
        let host = &mut self.hosts[h];
        let m = data::seq_packet(&host.pool, self.seq);
        if m.is_none() {
            host.nombuf += 1;
        }
        m
    }

    /// What data core `core` of host `h` does with a multicast packet: send it through
    /// its snapshot if the group is Joined there, else hand it to the control core.
    /// Returns whether the control core got it.
    pub fn send_mcast(&mut self, h: usize, core: usize, g: GroupAddr) -> bool {
        let mgid = self.mgid(g);
        self.known.insert(mgid);
        self.tag("mcast", h, mgid_low(&mgid) << 8 | core as u64);
        self.data_send(h, core, Direct::Group(&mgid), |mbuf| Request::Mcast {
            group: g,
            mbuf,
        })
    }

    /// What data core `core` of host `h` does with a unicast packet to `ip`.
    pub fn send_unicast(&mut self, h: usize, core: usize, ip: [u8; 4]) -> bool {
        self.known_ips.insert(ip);
        self.tag(
            "ucast",
            h,
            u64::from(u32::from_be_bytes(ip)) << 8 | core as u64,
        );
        self.data_send(h, core, Direct::NextHop(&ip), |mbuf| Request::Resolve {
            next_hop: ip,
            mbuf,
        })
    }

    /// What data core `core` of host `h` does with an IPv6 packet to next hop `ip`. Its
    /// solicited-node group (where solicitations for it go) is checked like any group.
    pub fn send_unicast6(&mut self, h: usize, core: usize, ip: [u8; 16]) -> bool {
        self.known_ips6.insert(ip);
        let sn = self.mgid(GroupAddr::Ipv6(ipv6::solicited_node(&ip)));
        self.known.insert(sn);
        self.tag(
            "ucast6",
            h,
            u64::from_be_bytes(ip[8..16].try_into().expect("8 bytes")) << 8 | core as u64,
        );
        self.data_send(h, core, Direct::NextHop6(&ip), |mbuf| Request::Resolve6 {
            next_hop: ip,
            mbuf,
        })
    }

    /// A packet from data core `core` of host `h`: through its snapshot to `to` if it
    /// is there, else to the control core as `request`. Returns whether the control
    /// core got it.
    fn data_send(
        &mut self,
        h: usize,
        core: usize,
        to: Direct<'_>,
        request: impl FnOnce(Mbuf) -> Request,
    ) -> bool {
        let Some(m) = self.packet(h) else {
            return false;
        };
        let host = &mut self.hosts[h];
        let c = &mut host.cores[core];
        let m = match data::send_direct(c, &mut *host.tx, to, m) {
            Ok(sent) => {
                // A queue under back-pressure may refuse it (freed, counted).
                host.sent_direct += sent as u64;
                host.tx_refused += 1 - sent as u64;
                host.posted += sent as u64;
                host.publish_progress();
                return false;
            }
            Err(m) => m,
        };
        match c.requests.send(request(m)) {
            Ok(()) => {
                host.handed += 1;
                true
            }
            Err(_) => {
                host.ring_back += 1;
                false
            }
        }
    }

    // ----- stepping --------------------------------------------------------------------

    /// One step: time moves by `dt`, every host runs, everything is checked.
    pub fn step(&mut self, dt: Nanos) {
        self.clock.advance(dt);
        self.dt_max = self.dt_max.max(dt);
        self.steps += 1;
        for h in 0..self.hosts.len() {
            self.run_host(h);
        }
        self.check();
        self.fold_state();
    }

    /// Moves time forward without running anything (so that an action can land at an
    /// exact instant before the next [`Sim::step`]).
    pub fn advance(&mut self, dt: Nanos) {
        self.tag("advance", 0, dt.0);
        self.clock.advance(dt);
    }

    /// Steps of `dt` for `dur`.
    pub fn run(&mut self, dur: Nanos, dt: Nanos) {
        let end = self.now().saturating_add(dur);
        while self.now() < end {
            self.step(dt);
        }
    }

    /// Steps of `dt` until `done` holds (checked after each step); panics after `max`.
    /// Returns the virtual time it took.
    pub fn run_until(
        &mut self,
        max: Nanos,
        dt: Nanos,
        mut done: impl FnMut(&Sim) -> bool,
    ) -> Nanos {
        let start = self.now();
        loop {
            if done(self) {
                return self.now().saturating_sub(start);
            }
            assert_within(start, self.now(), max);
            self.step(dt);
        }
    }

    /// Polls host `h`'s controller until idle, handles its events, lets its data cores
    /// pass a quiescent point and drains its receive queue.
    fn run_host(&mut self, h: usize) {
        self.drain_rx(h);
        for _ in 0..1000 {
            let busy = self.hosts[h].ctl.poll() == Poll::Busy;
            // After every poll: a flush may start and end within one step.
            self.note_flush(h);
            // Data cores run at the same time as the control core: they pass a
            // quiescent point between its polls (else the publisher, its retired
            // snapshots unreclaimed, would refuse to publish).
            for c in &mut self.hosts[h].cores {
                c.reader.quiescent();
            }
            self.hosts[h].publish_progress();
            while let Some(ev) = self.hosts[h].ctl.take_event() {
                self.on_event(h, ev);
            }
            if !busy {
                break;
            }
        }
        self.note_flush(h);
        for c in &mut self.hosts[h].cores {
            c.reader.quiescent();
        }
    }

    /// What data core 0 does with what it receives: ARP and IPv6 neighbour discovery to
    /// the control core (before the controller polls, so that the rings are empty when
    /// the checker counts packets), IP counted, our own looped-back multicast dropped.
    fn drain_rx(&mut self, h: usize) {
        let host = &mut self.hosts[h];
        data::drain_rx(&mut *host.rx, &host.own, |ethertype, m| {
            if ethertype == EtherType::ARP {
                let sent = host.cores[0].requests.send(Request::Arp { mbuf: m });
                host.arp_handed += u64::from(sent.is_ok());
            } else if ethertype == EtherType::IPV6 && data::is_nd(&m) {
                let sent = host.cores[0].requests.send(Request::Nd { mbuf: m });
                host.nd_handed += u64::from(sent.is_ok());
            } else {
                host.received += 1;
            }
        });
    }

    fn on_event(&mut self, h: usize, ev: CtrlEvent) {
        self.tag(
            "event",
            h,
            match ev {
                CtrlEvent::LinkUp => 1,
                CtrlEvent::LinkDown => 2,
                CtrlEvent::RebuildQp { pkey_index } => 3 | u64::from(pkey_index) << 8,
            },
        );
        let host = &mut self.hosts[h];
        host.events.push(ev);
        match ev {
            CtrlEvent::LinkUp => assert!(
                host.ctl.group_phase(GroupAddr::Mgid(self.bcast)) == Some(GroupPhase::Joined),
                "host {h}: LinkUp without the broadcast group Joined"
            ),
            CtrlEvent::LinkDown => {}
            CtrlEvent::RebuildQp { pkey_index } => {
                // What the stack does: every QP of the interface moves to the new P_Key
                // index in place (same QPN), its queues parked (the simulator plays
                // every lane between polls). Its attachments must be gone already.
                for &qpn in &host.own {
                    let attached: Vec<_> = lock(&self.obs).attached_of(h, qpn);
                    assert!(
                        attached.is_empty(),
                        "host {h}: QP {qpn:?} moved to P_Key index {pkey_index} while still attached to {attached:?}"
                    );
                    // SAFETY: this thread plays every lane and the control core; no
                    // queue of the QP is in use during the call.
                    let parked = unsafe { ibpoll_dev::Parked::assume(qpn) };
                    host.port
                        .move_qp_pkey_index(&parked, pkey_index)
                        .unwrap_or_else(|e| panic!("host {h}: {e}"));
                }
                host.ctl.qps_moved(true);
            }
        }
    }

    fn note_flush(&mut self, h: usize) {
        let now = self.now();
        let bcast = GroupAddr::Mgid(self.bcast);
        let host = &mut self.hosts[h];
        if host.ctl.flush_level() == Some(FlushLevel::Light) {
            host.light_window = true;
        }
        let bcast_joined = host.ctl.group_phase(bcast) == Some(GroupPhase::Joined);
        if !host.ctl.link_up() || (!host.ctl.is_flushing() && bcast_joined) {
            host.light_window = false;
        }
        match (host.ctl.is_flushing(), host.flush_since) {
            (true, None) => host.flush_since = Some(now),
            (false, Some(since)) => {
                host.flush_since = None;
                host.flushes_ended += 1;
                host.flush_longest = host.flush_longest.max(now.saturating_sub(since));
            }
            _ => {}
        }
    }

    /// The longest a flush of host `h` may take in virtual time: draining joins and
    /// path queries takes one SA timeout, each round of leaves through the SA window
    /// `leave_tries` of them per JoinState bit (an unconfirmed leave names one bit per
    /// Delete; IPoIB uses two: FullMember and SendOnlyFullMember), and each of those
    /// timeouts is noticed up to one step late
    /// (the controller polls once per step); never more than `flush_max` (noticed a
    /// step late too), plus a step to see the end.
    pub fn flush_bound(&self, h: usize) -> Nanos {
        let cfg = &self.hosts[h].cfg;
        let groups = (self.cfg.groups_in_use + 1).min(cfg.groups_max);
        let rounds = groups.div_ceil(cfg.sa_window) as u64;
        let timeouts = 1 + u64::from(cfg.leave_tries) * rounds * 2;
        let dt = self.dt_max.0;
        let by_timeouts = (cfg.sa_timeout.0 + dt) * timeouts + dt;
        let by_max = cfg.flush_max.0 + 2 * dt;
        Nanos(by_timeouts.min(by_max))
    }

    /// The longest the SA may keep a membership of host `h` after its controller gave it
    /// up, while the fault schedule lets the host's requests reach the SA (see
    /// [`crate::liveness`]). With `slot` = `sa_timeout` + the longest step (a
    /// transaction's window slot is free again at most that long after it went out: its
    /// deadline is noticed at the first poll after it):
    ///
    /// * one `slot` until the leave can start: a flush first drains the joins and path
    ///   queries in flight, and a leave outside a flush waits for room in the window;
    /// * `rounds` x `leave_tries` x 2 `slot`s for the leaves: they go through the window
    ///   (`rounds` = the groups in use, broadcast included, over `sa_window`), each
    ///   holding its slot for all its tries (a retry reuses the slot its timed-out try
    ///   freed), and an unconfirmed leave names one JoinState bit per Delete (IPoIB uses
    ///   two);
    /// * `backoff_s_max` and one more `slot`: an `Unconfirmed` obligation of a group
    ///   still subscribed is settled by its rejoin, sent at most the longest backoff
    ///   after the join that timed out, and an unsubscribed group's abandoned leave is
    ///   tried again after that long;
    /// * one second and one step: send-only groups expire on a once-a-second check, and
    ///   the checker sees a step late.
    ///
    /// A flush's `flush_max` does not cap it: what an abandoned flush could not leave is
    /// still owed.
    pub fn leave_bound(&self, h: usize) -> Nanos {
        let cfg = &self.hosts[h].cfg;
        let groups = (self.cfg.groups_in_use + 1).min(cfg.groups_max);
        let rounds = groups.div_ceil(cfg.sa_window) as u64;
        let dt = self.dt_max.0;
        let slot = cfg.sa_timeout.0 + dt;
        let slots = 1 + rounds * u64::from(cfg.leave_tries) * 2 + 1;
        Nanos(slot * slots + cfg.backoff_s_max * 1_000_000_000 + 1_000_000_000 + dt)
    }

    /// The mutation the liveness check must catch: every controller tries a leave once
    /// (see `Controller::mutate_no_leave_retries`).
    pub fn mutate_no_leave_retries(&mut self) {
        for host in &mut self.hosts {
            host.ctl.mutate_no_leave_retries(true);
        }
    }

    // ----- the checker ---------------------------------------------------------------

    /// Every invariant, on every host. Panics with the first one broken.
    pub fn check(&mut self) {
        let now = self.now();
        // Nothing changed at the SA since the last request or restart.
        lock(&self.obs).sync_nothing();
        for h in 0..self.hosts.len() {
            self.check_host(h, now);
        }
        let bounds: Vec<Nanos> = (0..self.hosts.len()).map(|h| self.leave_bound(h)).collect();
        let obs = lock(&self.obs);
        self.liveness.check(now, &self.hosts, &obs, |h| bounds[h]);
    }

    fn check_host(&self, h: usize, now: Nanos) {
        let host = &self.hosts[h];
        let ctl = &host.ctl;
        let cfg = &host.cfg;
        let s = ctl.stats();
        let at = format!("host {h} at {:?} (step {})", now.as_duration(), self.steps);

        // a'. No address handle is destroyed while a send names it, and no send names a
        // destroyed one (checked by the back-pressure wrapper, when drawn).
        if let Some(bp) = &host.backpressure {
            let v = bp.violations();
            assert_eq!(v.total(), 0, "{at}: address-handle lifetime broken: {v:?}");
        }

        // b. Flushes end within their bound whatever the SA does.
        let bound = self.flush_bound(h);
        if let Some(since) = host.flush_since {
            let took = now.saturating_sub(since);
            assert!(
                took <= bound,
                "{at}: flush running for {took:?}, bound {bound:?}"
            );
        }
        assert!(
            host.flush_longest <= bound,
            "{at}: a flush took {:?}, bound {bound:?}",
            host.flush_longest
        );

        // c. The link is up only while the broadcast group is Joined; no other group is
        // Joined while it is not (outside a flush, which leaves them in any order).
        let bcast = GroupAddr::Mgid(self.bcast);
        let bcast_joined = ctl.group_phase(bcast) == Some(GroupPhase::Joined);
        if ctl.link_up() {
            assert!(
                bcast_joined || host.light_window,
                "{at}: link up, broadcast group not Joined"
            );
            assert!(host.admin_up && host.port_up, "{at}: link up while down");
        }
        if !ctl.is_flushing() && !bcast_joined {
            for mgid in &self.known {
                assert_ne!(
                    ctl.group_phase(GroupAddr::Mgid(*mgid)),
                    Some(GroupPhase::Joined),
                    "{at}: {mgid} Joined while the broadcast group is not"
                );
            }
        }

        // d. Every packet handed to the control core is sent, dropped under a named
        // counter, or still held; every queue within its bound.
        let handed_in = host.handed
            + s.arp_requests_sent
            + s.arp_replies_sent
            + s.nd_solicits_sent
            + s.nd_adverts_sent;
        let out = s.tx_sent
            + s.tx_backlog_full
            + s.mcast_bad_group
            + (s.mcast_table_full - host.join_refused)
            + s.mcast_queue_full
            + s.mcast_sendonly_dropped
            + s.mcast_flush_dropped
            + s.neigh_table_full
            + s.neigh_queue_full
            + s.neigh_unresolved_dropped
            + s.nd_no_address;
        let ring: usize = host.cores.iter().map(|c| c.requests.len()).sum();
        let held = (ring + ctl.mcast_queued() + ctl.neigh_queued()) as u64;
        assert_eq!(
            handed_in,
            out + held,
            "{at}: packets handed {handed_in} != sent or dropped {out} + held {held}: {s:?}"
        );
        assert!(ctl.group_count() <= cfg.groups_max, "{at}: groups");
        assert!(ctl.neighbour_count() <= cfg.neigh_max, "{at}: neighbours");
        assert!(ctl.sa_in_flight() <= cfg.sa_window, "{at}: SA window");
        for c in &host.cores {
            assert!(c.requests.len() <= cfg.ring_size, "{at}: ring");
        }
        for mgid in &self.known {
            let q = ctl.group_queued(GroupAddr::Mgid(*mgid));
            assert!(q <= cfg.mcast_queue_max, "{at}: {q} queued for {mgid}");
        }
        for ip in &self.known_ips {
            let q = ctl.neigh_queued_for(*ip);
            assert!(q <= cfg.neigh_queue_max, "{at}: {q} queued for {ip:?}");
        }
        for ip in &self.known_ips6 {
            let q = ctl.neigh_queued_for(*ip);
            assert!(q <= cfg.neigh_queue_max, "{at}: {q} queued for {ip:?}");
        }
        assert!(
            host.pool.in_use() as u64 >= held,
            "{at}: the pool lends fewer buffers than the controller holds"
        );

        // e. No data-core snapshot shows a group Joined that the SA does not hold,
        // beyond the one publication the controller may not have made yet after the SA
        // lost it behind its back.
        let obs = lock(&self.obs);
        for (i, c) in host.cores.iter().enumerate() {
            let snap = c.reader.get();
            if snap.link_up && !host.light_window {
                assert!(
                    snap.broadcast().is_some(),
                    "{at}: core {i}: link up without broadcast"
                );
            }
            if snap.group_count() > 0 {
                assert!(
                    snap.broadcast().is_some(),
                    "{at}: core {i}: groups published without the broadcast group"
                );
            }
            for mgid in &self.known {
                if snap.group(mgid).is_some() && !obs.holds(h, mgid) {
                    assert!(
                        snap.generation <= host.gen_at_wipe,
                        "{at}: core {i} sees {mgid} Joined (snapshot {}), the SA does not hold it",
                        snap.generation
                    );
                }
            }
        }
    }

    fn fold_state(&mut self) {
        let mut f = self.hash;
        f.u64(self.now().0);
        for host in &self.hosts {
            f.str(&format!("{:?}", host.ctl.stats()));
            f.u64(u64::from(host.ctl.link_up()) | u64::from(host.ctl.is_flushing()) << 1);
            f.u64(host.ctl.group_count() as u64);
            f.u64(host.ctl.neighbour_count() as u64);
            f.u64(host.ctl.sa_in_flight() as u64);
            f.u64(host.received);
        }
        f.u64(lock(&self.obs).hash.get());
        self.hash = f;
    }

    // ----- the end -------------------------------------------------------------------

    /// The end of a run: faults off, every port and interface up, time to rejoin; then a
    /// final interface down on every host with every answer delivered, and the end
    /// checks: (a) the SA holds no membership of any host and every grant was left (or
    /// wiped) exactly once; (f) every buffer is back in its pool once the hosts are gone.
    pub fn finish(mut self) -> u64 {
        self.set_faults(FaultConfig::NONE);
        for h in 0..self.hosts.len() {
            self.drop_path_queries(h, false);
            let attr = self.hosts[h].port.attr();
            if attr.pkey_index(self.cfg.ctrl.pkey) != Some(0) || attr.pkeys.len() != 1 {
                self.set_pkeys(h, vec![self.cfg.ctrl.pkey]);
            }
            if !self.hosts[h].port_up {
                self.port(h, true);
            }
            if !self.hosts[h].admin_up {
                self.admin(h, true);
            }
        }
        let dt = Nanos::from_millis(10);
        self.run(Nanos::from_secs(20), dt);
        for h in 0..self.hosts.len() {
            self.admin(h, false);
        }
        let max = Nanos::from_secs(300);
        self.run_until(max, dt, |s| {
            s.hosts
                .iter()
                .all(|h| !h.ctl.is_flushing() && h.ctl.sa_in_flight() == 0)
        });
        // Every answer still on its way (delays up to seconds) is delivered.
        self.run(Nanos::from_secs(6), dt);
        for h in 0..self.hosts.len() {
            let held = self.held_by(h);
            let states: Vec<_> = held
                .iter()
                .map(|(g, _)| self.hosts[h].ctl.group_state(GroupAddr::Mgid(*g)))
                .collect();
            assert!(
                held.is_empty(),
                "host {h}: after the final flush the SA still holds {held:?}; the controller has {states:?}"
            );
            let direct: Vec<_> = self
                .fabric
                .with_sa(|sa| sa.memberships_of(&self.hosts[h].gid).collect());
            assert!(direct.is_empty(), "host {h}: SA holds {direct:?}");
            assert!(!self.hosts[h].ctl.link_up());
        }
        lock(&self.obs).check_balanced();
        let hash = self.hash.get() ^ lock(&self.obs).hash.get();
        let pools: Vec<Mempool> = self.hosts.iter().map(|h| h.pool.clone()).collect();
        drop(std::mem::take(&mut self.hosts));
        for (h, p) in pools.iter().enumerate() {
            assert_eq!(
                p.in_use(),
                0,
                "host {h}: {} buffers never came back",
                p.in_use()
            );
        }
        hash
    }
}

/// The IPv6 address of host `index` in a run whose hosts have `base`'s: `base` with its
/// last byte `index + 1`.
pub fn host_ipv6(base: [u8; 16], index: usize) -> [u8; 16] {
    let mut a = base;
    a[15] = index as u8 + 1;
    a
}

fn mgid_low(g: &Gid) -> u64 {
    u64::from_be_bytes(g.0[8..16].try_into().expect("8 bytes"))
}
