//! One IPoIB controller on the simulated fabric, driven in real time (wall clock), with
//! `n` IPv4 groups joined: the set-up of the `rejoin` benchmark and of the snapshot lookup
//! micro-benchmark.
//!
//! The fabric's embedded SA answers with zero delay (`FaultConfig::NONE`), so what is
//! measured is the controller's own work (state machine, MAD building and parsing,
//! snapshot publication) plus the simulated SA's, all on the calling thread.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ibpoll_ctrl::{Controller, CtrlConfig, CtrlQps, DataCore, GroupAddr, GroupPhase, Request};
use ibpoll_dev::{Clock, Device, MonotonicClock, RxQueue, UdQp, UdQpConfig};
use ibpoll_mem::{HugepagePolicy, Mempool, MempoolConfig};
use ibpoll_pmd_sim::{FabricConfig, FaultConfig, SimDevice, SimFabric};
use ibpoll_wire::ipoib::{self, HwAddr};
use ibpoll_wire::{arp, PKey, QKey};

/// The `i`-th benchmark group: an IPv4 group in 239.0.0.0/8, distinct for every
/// `i < 2^24` (and so distinct MGIDs, which keep the low 28 bits of the group).
pub fn group(i: u32) -> GroupAddr {
    let [_, a, b, c] = i.to_be_bytes();
    GroupAddr::Ipv4([239, a, b, c])
}

/// The controller ran past its time limit before the condition held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedOut {
    /// The limit.
    pub limit: Duration,
}

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "condition not reached within {:?}", self.limit)
    }
}

impl std::error::Error for TimedOut {}

/// What one drive of the controller took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drive {
    /// Wall-clock time from the start of the drive until the condition held.
    pub elapsed: Duration,
    /// The most SA transactions in flight after any poll.
    pub sa_in_flight_peak: usize,
    /// Polls run.
    pub polls: u64,
}

/// A controller, its fabric and its data-core handles.
pub struct CtrlHost {
    /// The fabric (its SA, `restart_sm`).
    pub fabric: SimFabric,
    /// The controller.
    pub ctl: Controller,
    /// Data-core handles: their readers pass a quiescent point after every poll.
    pub cores: Vec<DataCore>,
    /// Groups asked for with [`CtrlHost::join`] (broadcast not included).
    pub groups: u32,
    /// The controller's pool (the buffers of what the host builds by hand).
    pub pool: Mempool,
    /// The interface's IPv4 address.
    pub ipv4: Option<[u8; 4]>,
    /// Nodes added by [`CtrlHost::resolve_neighbour`], kept alive.
    peers: Vec<(Arc<SimDevice>, UdQp)>,
    _dev: Arc<SimDevice>,
    _rx: Vec<Box<dyn RxQueue>>,
}

impl fmt::Debug for CtrlHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CtrlHost")
            .field("ctl", &self.ctl)
            .field("groups", &self.groups)
            .finish_non_exhaustive()
    }
}

impl CtrlHost {
    /// A host whose controller can hold `groups_max` groups besides the broadcast group
    /// and keeps at most `sa_window` SA transactions in flight.
    ///
    /// # Panics
    /// If the simulated fabric or the controller cannot be set up (a bug, not a
    /// measurement).
    pub fn new(groups_max: usize, sa_window: usize) -> CtrlHost {
        CtrlHost::with_ipv4(groups_max, sa_window, None)
    }

    /// [`CtrlHost::new`] with the interface's IPv4 address (needed to answer ARP, and so
    /// to [`resolve_neighbour`](CtrlHost::resolve_neighbour)).
    ///
    /// # Panics
    /// As [`CtrlHost::new`].
    pub fn with_ipv4(groups_max: usize, sa_window: usize, ipv4: Option<[u8; 4]>) -> CtrlHost {
        let clock: Arc<dyn Clock> = Arc::new(MonotonicClock::new());
        let fabric = SimFabric::new(FabricConfig {
            clock: clock.clone(),
            faults: FaultConfig::NONE,
            ..FabricConfig::default()
        });
        let dev = fabric.add_node("bench", 1);
        let port = dev.open_port(1).expect("simulated port");
        let attr = port.attr();
        let pool = Mempool::new(MempoolConfig {
            cache_size: 0,
            hugepages: HugepagePolicy::Never,
            ..MempoolConfig::new("ctrl-bench", 1024)
        })
        .expect("mempool");
        let mut qp_cfg = UdQpConfig::new(
            pool.clone(),
            attr.pkey_index(PKey::DEFAULT).expect("default partition"),
            QKey::IPOIB_DEFAULT,
        );
        qp_cfg.rx_ring_size = 256;
        qp_cfg.tx_ring_size = 256;
        let (ctl_qps, mut lanes) = CtrlQps::create(&*port, &qp_cfg, 1).expect("UD QPs");
        let qp = lanes.pop().expect("one lane");
        let cfg = CtrlConfig {
            groups_max: groups_max + 1,
            sa_window,
            ipv4,
            ..CtrlConfig::default()
        };
        let pool_ref = pool.clone();
        let (ctl, cores) = Controller::new(cfg, port, ctl_qps, pool, clock).expect("controller");
        CtrlHost {
            fabric,
            ctl,
            cores,
            groups: 0,
            pool: pool_ref,
            ipv4,
            peers: Vec::new(),
            _dev: dev,
            _rx: qp.rx,
        }
    }

    /// Adds a node to the fabric with IPv4 address `ip` and has the controller resolve
    /// it: the node's ARP request for this interface's address goes in through data
    /// core 0's request ring (as the data path hands ARP over), the controller learns
    /// the node's hardware address, asks the SA for a path and publishes the neighbour.
    ///
    /// # Panics
    /// If the host has no IPv4 address ([`CtrlHost::with_ipv4`]) or the node cannot be
    /// added (bugs, not measurements).
    pub fn resolve_neighbour(&mut self, ip: [u8; 4], limit: Duration) -> Result<Drive, TimedOut> {
        let own_ip = self.ipv4.expect("resolve_neighbour needs with_ipv4");
        let name = format!("peer-{}-{}-{}-{}", ip[0], ip[1], ip[2], ip[3]);
        let dev = self.fabric.add_node(&name, 1);
        let port = dev.open_port(1).expect("simulated port");
        let attr = port.attr();
        let mut qp_cfg = UdQpConfig::new(
            self.pool.clone(),
            attr.pkey_index(PKey::DEFAULT).expect("default partition"),
            QKey::IPOIB_DEFAULT,
        );
        qp_cfg.rx_ring_size = 64;
        qp_cfg.tx_ring_size = 64;
        let qp = port.create_ud_qp(&qp_cfg).expect("UD QP");
        let request = arp::Repr {
            operation: arp::Operation::Request,
            source_hwaddr: HwAddr::new(0, qp.qpn, attr.gid),
            source_ip: ip,
            target_hwaddr: HwAddr::from_bytes([0; HwAddr::LEN]),
            target_ip: own_ip,
        };
        let mut m = self.pool.alloc().expect("a buffer for the ARP request");
        let d = m
            .append(ipoib::HEADER_LEN + arp::PACKET_LEN)
            .expect("room for an ARP packet");
        ipoib::Repr {
            ethertype: ipoib::EtherType::ARP,
        }
        .emit(&mut ipoib::Packet::new_unchecked(
            &mut d[..ipoib::HEADER_LEN],
        ));
        request.emit(&mut arp::Packet::new_unchecked(&mut d[ipoib::HEADER_LEN..]));
        if self.cores[0]
            .requests
            .send(Request::Arp { mbuf: m })
            .is_err()
        {
            panic!("data core 0's request ring is full");
        }
        self.peers.push((dev, qp));
        self.drive_until(limit, |h| h.ctl.snapshot().neighbour(&ip).is_some())
    }

    /// Asks for groups `0..n` (see [`group`]); they are joined by the next drives.
    ///
    /// # Panics
    /// If the table refuses a group (`n` is larger than the host was made for).
    pub fn join(&mut self, n: u32) {
        for i in 0..n {
            assert!(self.ctl.join_group(group(i)), "group table full at {i}");
        }
        self.groups = n;
    }

    /// Whether every asked-for group and the broadcast group is Joined and published,
    /// and no flush runs. Cheap: reads the published snapshot's size only.
    pub fn all_joined(&self) -> bool {
        !self.ctl.is_flushing() && self.ctl.snapshot().group_count() == self.groups as usize + 1
    }

    /// Checks group by group (slow; outside the timed part) that every asked-for group is
    /// Joined and the SA holds a membership for each.
    pub fn verify_joined(&self) -> Result<(), String> {
        for i in 0..self.groups {
            let phase = self.ctl.group_phase(group(i));
            if phase != Some(GroupPhase::Joined) {
                return Err(format!("group {i} is {phase:?}, not Joined"));
            }
        }
        let gid = self.ctl.hwaddr().gid();
        let held = self.fabric.with_sa(|sa| sa.memberships_of(&gid).count());
        if held != self.groups as usize + 1 {
            return Err(format!(
                "the SA holds {held} memberships of the port, not {}",
                self.groups + 1
            ));
        }
        Ok(())
    }

    /// Polls the controller (every data core passing a quiescent point after each poll,
    /// as a data core does once per burst) until `done` holds, recording the peak of SA
    /// transactions in flight.
    pub fn drive_until(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&CtrlHost) -> bool,
    ) -> Result<Drive, TimedOut> {
        let start = Instant::now();
        let mut peak = 0;
        let mut polls = 0u64;
        loop {
            self.ctl.poll();
            polls += 1;
            peak = peak.max(self.ctl.sa_in_flight());
            for c in &mut self.cores {
                c.reader.quiescent();
            }
            if done(self) {
                return Ok(Drive {
                    elapsed: start.elapsed(),
                    sa_in_flight_peak: peak,
                    polls,
                });
            }
            if start.elapsed() > limit {
                return Err(TimedOut { limit });
            }
        }
    }

    /// Joins everything asked for (the broadcast group first).
    pub fn join_all(&mut self, limit: Duration) -> Result<Drive, TimedOut> {
        self.drive_until(limit, CtrlHost::all_joined)
    }

    /// Restarts the subnet manager (every group wiped, ClientReregister) and drives the
    /// controller through its light flush until every group is Joined again.
    pub fn reregister(&mut self, limit: Duration) -> Result<Drive, TimedOut> {
        let flushes = self.ctl.stats().flushes_light;
        self.fabric.restart_sm(None);
        let mut flushed = false;
        self.drive_until(limit, |h| {
            // The table still shows every group Joined until the controller has read
            // the port event; only a finished flush counts.
            flushed = flushed || h.ctl.stats().flushes_light > flushes;
            flushed && h.all_joined()
        })
    }
}
