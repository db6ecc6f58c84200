//! The builder: validates the configuration, creates the pool, the UD QP and the
//! controller, and starts the lcores (control path only).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ibpoll_ctrl::{Controller, CtrlConfig};
use ibpoll_dev::{Clock, Device, MonotonicClock, Port, UdQpConfig};
use ibpoll_mem::{HugepagePolicy, Mempool, MempoolConfig};
use ibpoll_pmd_sim::{FabricConfig, SimFabric};
use ibpoll_wire::ipoib::McastScope;
use ibpoll_wire::{IbMtu, PKey, QKey};

use crate::app::{App, LcoreCtx};
use crate::lcore::{
    self, CtlHost, DataLcore, DataLcoreParts, IdlePolicy, IfShared, LcoreIfaceParts, Shared,
    BURST_MAX,
};
use crate::signal::{Guarded, StopOnPanic, StopState};
use crate::stack::{IfaceInfo, LcoreExit, Stack};
use crate::stats::{LcoreCounterSet, LcoreCounters};
use crate::Error;

/// Where the control core runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ControlCore {
    /// Polled from data lcore 0 once per iteration (the default: on a small machine
    /// every core does data work).
    #[default]
    OnDataLcore0,
    /// On an lcore of its own (one more CPU).
    Dedicated,
}

/// Interfaces one stack can serve.
pub const IFACES_MAX: usize = 8;

/// One IPoIB interface of a stack: a partition (P_Key) of the port, with its own UD QP
/// (P_Key index from the port's table), its own controller (broadcast group, ARP, path
/// records, multicast) and its own receive and send queue on every data lcore, the way
/// a DPDK l3fwd lcore polls several ports. Give several with
/// [`StackBuilder::interface`]; without any, the stack has one interface made of the
/// builder's [`pkey`](StackBuilder::pkey) and [`ipv4`](StackBuilder::ipv4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IfaceConfig {
    /// The partition; it must be in the port's P_Key table.
    pub pkey: PKey,
    /// The interface's IPv4 address (answers ARP on this partition).
    pub ipv4: Option<[u8; 4]>,
    /// The IPv4 prefix length of the interface's subnet (the stack does not route: for
    /// applications such as a forwarder's connected routes).
    pub prefix_len: u8,
}

impl Default for IfaceConfig {
    /// The default partition, no address, a /24.
    fn default() -> Self {
        IfaceConfig {
            pkey: PKey::DEFAULT,
            ipv4: None,
            prefix_len: 24,
        }
    }
}

/// Which device the stack drives.
#[derive(Debug, Clone)]
enum DeviceChoice {
    /// A node added to this simulated fabric (the embedded default).
    Fabric { fabric: SimFabric, node: String },
    /// A device and port opened by the caller's driver.
    Device { device: Arc<dyn Device>, port: u8 },
}

/// Builds and starts a [`Stack`]. Every value has a default; [`start`](Self::start)
/// checks them all and answers bad ones with an [`Error`] that names the input and the
/// fix.
#[derive(Debug, Clone)]
pub struct StackBuilder {
    name: String,
    device: Option<DeviceChoice>,
    data_cores: Option<usize>,
    control: ControlCore,
    cpus: Option<Vec<usize>>,
    pin: bool,
    pool_size: Option<u32>,
    pool_cache: u32,
    hugepages: HugepagePolicy,
    mtu: IbMtu,
    pkey: PKey,
    ipv4: Option<[u8; 4]>,
    interfaces: Vec<IfaceConfig>,
    scope: McastScope,
    rx_ring_size: u32,
    tx_ring_size: u32,
    idle: IdlePolicy,
    clock: Option<Arc<dyn Clock>>,
    ctrl: CtrlConfig,
    ctl_poll_interval: Duration,
    stop_timeout: Duration,
    stop_flag: Option<Arc<AtomicBool>>,
}

impl Default for StackBuilder {
    fn default() -> Self {
        StackBuilder {
            name: "ib0".to_owned(),
            device: None,
            data_cores: None,
            control: ControlCore::default(),
            cpus: None,
            pin: true,
            pool_size: None,
            pool_cache: ibpoll_mem::CACHE_SIZE_DEFAULT,
            hugepages: HugepagePolicy::Prefer,
            mtu: IbMtu::Mtu4096,
            pkey: PKey::DEFAULT,
            ipv4: None,
            interfaces: Vec::new(),
            scope: McastScope::LINK_LOCAL,
            rx_ring_size: 1024,
            tx_ring_size: 1024,
            idle: IdlePolicy::Spin,
            clock: None,
            ctrl: CtrlConfig::default(),
            ctl_poll_interval: Duration::from_micros(20),
            stop_timeout: Duration::from_secs(70),
            stop_flag: None,
        }
    }
}

/// The CPUs this process may run on.
pub(crate) fn usable_cpus() -> Vec<usize> {
    match core_affinity::get_core_ids() {
        Some(ids) if !ids.is_empty() => ids.into_iter().map(|c| c.id).collect(),
        _ => (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect(),
    }
}

static PIN_WARNED: AtomicBool = AtomicBool::new(false);

/// Pins the calling thread to `cpu`; says so once per process when pinning fails.
fn pin_to(cpu: usize, thread: &str) {
    if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu })
        && !PIN_WARNED.swap(true, Ordering::Relaxed)
    {
        tracing::warn!(
            cpu,
            thread,
            "ibpoll: pinning lcore threads to CPUs failed; they run unpinned (said once)"
        );
    }
}

/// Registers the calling thread as an lcore of the buffer pools (the first free id),
/// for the per-lcore caches. Without a free id the thread runs unregistered: correct,
/// with a lock per pool operation.
fn register_lcore(thread: &str) -> Option<ibpoll_mem::LcoreGuard> {
    for id in 0..ibpoll_mem::MAX_LCORES {
        if let Ok(g) = ibpoll_mem::register_lcore(id) {
            return Some(g);
        }
    }
    tracing::warn!(
        thread,
        "ibpoll: all {} lcore ids are taken; this lcore uses the pool without a cache",
        ibpoll_mem::MAX_LCORES
    );
    None
}

fn bad(field: &'static str, value: u64, fix: &'static str) -> Error {
    Error::BadConfig { field, value, fix }
}

impl StackBuilder {
    /// A builder with the defaults: the embedded simulated fabric (a fabric of its own
    /// with this one host), one data lcore per usable CPU, the controller on data lcore
    /// 0, the default partition, 4096-byte MTU buffers.
    pub fn new() -> StackBuilder {
        StackBuilder::default()
    }

    /// The interface name (thread names, logs).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Runs on a new node named `node` of a simulated fabric (the embedded driver);
    /// several stacks on one fabric are several hosts of one subnet.
    pub fn fabric(mut self, fabric: &SimFabric, node: impl Into<String>) -> Self {
        self.device = Some(DeviceChoice::Fabric {
            fabric: fabric.clone(),
            node: node.into(),
        });
        self
    }

    /// Runs on port `port` (1-based) of a device of any driver.
    pub fn device(mut self, device: Arc<dyn Device>, port: u8) -> Self {
        self.device = Some(DeviceChoice::Device { device, port });
        self
    }

    /// Data lcores (1..=64, at most the usable CPUs): each owns one receive and one send
    /// queue of each interface's UD QP. Default: one per usable CPU (less the dedicated
    /// control lcore's, if any).
    pub fn data_cores(mut self, n: usize) -> Self {
        self.data_cores = Some(n);
        self
    }

    /// Where the control core runs (default [`ControlCore::OnDataLcore0`]).
    pub fn control(mut self, c: ControlCore) -> Self {
        self.control = c;
        self
    }

    /// The CPUs to pin the lcores to, in order: data lcores 0.., then the dedicated
    /// control lcore. Default: the first usable CPUs.
    pub fn cpus(mut self, cpus: impl Into<Vec<usize>>) -> Self {
        self.cpus = Some(cpus.into());
        self
    }

    /// Whether to pin lcore threads (default true). Pinning that fails is reported once
    /// and the threads run unpinned.
    pub fn pin(mut self, pin: bool) -> Self {
        self.pin = pin;
        self
    }

    /// Buffers in the pool. Default: enough for every receive ring twice over.
    pub fn pool_size(mut self, n_bufs: u32) -> Self {
        self.pool_size = Some(n_bufs);
        self
    }

    /// Buffers each lcore caches (default 256; 0 disables the caches).
    pub fn pool_cache(mut self, n: u32) -> Self {
        self.pool_cache = n;
        self
    }

    /// Whether the pool uses 2 MiB hugepages (default: prefer them).
    pub fn hugepages(mut self, policy: HugepagePolicy) -> Self {
        self.hugepages = policy;
        self
    }

    /// The largest InfiniBand MTU received: sizes every buffer's data room (default
    /// 4096). The interface MTU itself comes from the broadcast group.
    pub fn mtu(mut self, mtu: IbMtu) -> Self {
        self.mtu = mtu;
        self
    }

    /// The partition (default 0xffff) of the single interface (ignored once
    /// [`interface`](Self::interface) was called). It must be in the port's P_Key table.
    pub fn pkey(mut self, pkey: PKey) -> Self {
        self.pkey = pkey;
        self
    }

    /// The single interface's IPv4 address (answers ARP; ignored once
    /// [`interface`](Self::interface) was called).
    pub fn ipv4(mut self, ip: [u8; 4]) -> Self {
        self.ipv4 = Some(ip);
        self
    }

    /// Adds an interface (a partition of the port): call it once per interface, up to
    /// [`IFACES_MAX`]; interface `i` is the `i`-th call. Once called, the builder's
    /// [`pkey`](Self::pkey) and [`ipv4`](Self::ipv4) are not used. Each interface has its
    /// own UD QP and controller and one receive and one send queue per data lcore;
    /// received bursts name their interface in [`LcoreCtx::iface`], and
    /// [`TxBuffer::push_on`](crate::TxBuffer::push_on) names the outgoing one. P_Keys
    /// must differ.
    pub fn interface(mut self, iface: IfaceConfig) -> Self {
        self.interfaces.push(iface);
        self
    }

    /// The scope of IPv4 multicast MGIDs (default link-local).
    pub fn mcast_scope(mut self, scope: McastScope) -> Self {
        self.scope = scope;
        self
    }

    /// Receive buffers per receive queue (a power of two, 32..=32768; default 1024).
    pub fn rx_ring_size(mut self, n: u32) -> Self {
        self.rx_ring_size = n;
        self
    }

    /// Send descriptors per send queue (a power of two, 32..=32768; default 1024).
    pub fn tx_ring_size(mut self, n: u32) -> Self {
        self.tx_ring_size = n;
        self
    }

    /// What lcores do when idle (default: spin).
    pub fn idle(mut self, idle: IdlePolicy) -> Self {
        self.idle = idle;
        self
    }

    /// Where the control plane reads time (default: the fabric's clock for the embedded
    /// driver, else the monotonic clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The control plane's bounds and timings. Its `pkey`, `ipv4`, `scope` and
    /// `data_cores` are taken from this builder.
    pub fn ctrl_config(mut self, cfg: CtrlConfig) -> Self {
        self.ctrl = cfg;
        self
    }

    /// When the controller is polled from data lcore 0: at most one controller poll
    /// (and its batch of control messages) per this interval, so that the control work
    /// (which takes the driver's control-path locks) does not run every iteration
    /// (default 20 µs; zero polls every iteration).
    pub fn ctrl_poll_interval(mut self, d: Duration) -> Self {
        self.ctl_poll_interval = d;
        self
    }

    /// How long [`Stack::stop`] waits for the flush (every membership left) before it
    /// stops the lcores anyway (default 70 s: the controller's `flush_max` plus margin).
    pub fn stop_timeout(mut self, d: Duration) -> Self {
        self.stop_timeout = d;
        self
    }

    /// The flag that asks the stack's owner to stop it (see [`Stack::stop_requested`]):
    /// the program sets it from its signal handlers (e.g. `signal_hook::flag::register`),
    /// and the stack sets it when an application callback (or an lcore) panics. Several
    /// stacks may share one. Default: a flag of the stack's own.
    pub fn stop_flag(mut self, flag: Arc<AtomicBool>) -> Self {
        self.stop_flag = Some(flag);
        self
    }

    /// Checks the configuration, creates the pool and, per interface, the UD QP (one
    /// receive and one send queue per data lcore, plus a send queue for the control
    /// core) and the controller, and starts the lcores. `app(i)` makes the application of data lcore `i`.
    pub fn start<A: App>(self, mut app: impl FnMut(usize) -> A) -> Result<Stack, Error> {
        let usable = usable_cpus();
        let dedicated = self.control == ControlCore::Dedicated;
        let data_cores = self
            .data_cores
            .unwrap_or_else(|| usable.len().saturating_sub(usize::from(dedicated)).max(1));
        if data_cores == 0 {
            return Err(bad(
                "data_cores",
                0,
                "at least 1 data lcore is needed; leave it unset for one per usable CPU",
            ));
        }
        if data_cores > ibpoll_rcu::READERS_MAX {
            return Err(bad(
                "data_cores",
                data_cores as u64,
                "at most 64 data lcores per stack",
            ));
        }
        let lcores = data_cores + usize::from(dedicated);
        let cpus = match &self.cpus {
            Some(cpus) => {
                if cpus.len() < lcores {
                    return Err(bad(
                        "cpus",
                        cpus.len() as u64,
                        "name one CPU per lcore: data lcores first, then the dedicated control lcore",
                    ));
                }
                if let Some(&cpu) = cpus.iter().find(|c| !usable.contains(c)) {
                    return Err(Error::NoSuchCpu { cpu, usable });
                }
                cpus.clone()
            }
            None => {
                if lcores > usable.len() {
                    return Err(Error::TooManyCores {
                        data_cores,
                        lcores,
                        control: if dedicated { " + 1 control" } else { "" },
                        available: usable.len(),
                        max_data: usable.len().saturating_sub(usize::from(dedicated)),
                        hint: if dedicated {
                            ", or poll the controller from data lcore 0 (ControlCore::OnDataLcore0)"
                        } else {
                            ""
                        },
                    });
                }
                usable[..lcores].to_vec()
            }
        };

        let ifaces: Vec<IfaceConfig> = if self.interfaces.is_empty() {
            vec![IfaceConfig {
                pkey: self.pkey,
                ipv4: self.ipv4,
                ..IfaceConfig::default()
            }]
        } else {
            self.interfaces.clone()
        };
        let n_ifaces = ifaces.len();
        if n_ifaces > IFACES_MAX {
            return Err(bad(
                "interface",
                n_ifaces as u64,
                "at most 8 interfaces (partitions) per stack",
            ));
        }
        for (i, f) in ifaces.iter().enumerate() {
            if f.pkey.base() == 0 {
                return Err(bad(
                    "pkey",
                    u64::from(f.pkey.0),
                    "P_Key 0 is the invalid partition; the default partition is 0xffff",
                ));
            }
            if f.prefix_len > 32 {
                return Err(bad(
                    "prefix_len",
                    u64::from(f.prefix_len),
                    "an IPv4 prefix length is 0..=32",
                ));
            }
            if ifaces[..i].iter().any(|g| g.pkey.base() == f.pkey.base()) {
                return Err(bad(
                    "interface.pkey",
                    u64::from(f.pkey.0),
                    "each interface needs a partition of its own: two interfaces have this P_Key",
                ));
            }
        }

        // The pool: absurd sizes are refused by the pool's own checks, too-small ones here.
        let needed = n_ifaces as u64
            * (data_cores as u64 * (u64::from(self.rx_ring_size) + 4 * BURST_MAX as u64)
                + self.ctrl.tx_backlog_max as u64)
            + 64;
        let n_bufs = self
            .pool_size
            .unwrap_or_else(|| (2 * needed).clamp(8192, u64::from(ibpoll_mem::N_BUFS_MAX)) as u32);
        let pool_cfg = MempoolConfig {
            name: format!("{}-pool", self.name),
            n_bufs,
            data_room: self.mtu.bytes() as u32,
            headroom: ibpoll_mem::HEADROOM_DEFAULT,
            cache_size: self.pool_cache.min(n_bufs),
            hugepages: self.hugepages,
        };
        let pool_err = |source| Error::Pool {
            n_bufs,
            data_room: pool_cfg.data_room,
            source,
        };
        pool_cfg.validate().map_err(pool_err)?;
        if u64::from(n_bufs) < needed {
            return Err(Error::PoolTooSmall {
                n_bufs,
                needed,
                data_cores,
                rx_ring_size: self.rx_ring_size,
            });
        }

        // The device and port.
        let (device, port_num, clock): (Arc<dyn Device>, u8, Arc<dyn Clock>) =
            match self.device.clone() {
                Some(DeviceChoice::Fabric { fabric, node }) => {
                    let clock = self.clock.clone().unwrap_or_else(|| fabric.clock());
                    (fabric.add_node(&node, 1), 1, clock)
                }
                Some(DeviceChoice::Device { device, port }) => {
                    let clock = self
                        .clock
                        .clone()
                        .unwrap_or_else(|| Arc::new(MonotonicClock::new()));
                    (device, port, clock)
                }
                None => {
                    let fabric = SimFabric::new(FabricConfig::default());
                    let clock = self.clock.clone().unwrap_or_else(|| fabric.clock());
                    (fabric.add_node(&self.name, 1), 1, clock)
                }
            };
        let dev_err = |op: &'static str| {
            let device = device.name().to_owned();
            move |source| Error::Device { op, device, source }
        };
        let port = device.open_port(port_num).map_err(dev_err("open_port"))?;
        let attr = port.attr();
        let mut pkey_indexes = Vec::with_capacity(n_ifaces);
        for f in &ifaces {
            let Some(pkey_index) = attr.pkey_index(f.pkey) else {
                let pkeys = attr
                    .pkeys
                    .iter()
                    .filter(|p| p.base() != 0)
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(Error::Partition {
                    pkey: f.pkey,
                    port: port_num,
                    pkeys,
                });
            };
            pkey_indexes.push(pkey_index);
        }
        let pool = Mempool::new(pool_cfg.clone()).map_err(pool_err)?;
        // One controller per interface; each must see every port event, so with several
        // they read them through a tee (one interface reads the port itself, unchanged).
        let ctl_ports: Vec<Arc<dyn Port>> = if n_ifaces == 1 {
            vec![port.clone()]
        } else {
            crate::tee::tee(&port, n_ifaces)
        };
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            ifaces: (0..n_ifaces).map(|_| IfShared::new(attr.lid.0)).collect(),
        });
        let rx_queues = data_cores as u16;
        let mut hosts = Vec::with_capacity(n_ifaces);
        // Per data lcore, per interface: its queues and its side of the control plane.
        let mut lcore_ifaces: Vec<Vec<LcoreIfaceParts>> = (0..data_cores)
            .map(|_| Vec::with_capacity(n_ifaces))
            .collect();
        let mut infos = Vec::with_capacity(n_ifaces);
        for (i, f) in ifaces.iter().enumerate() {
            let mut qp = port
                .create_ud_qp(&UdQpConfig {
                    pkey_index: pkey_indexes[i],
                    qkey: QKey::IPOIB_DEFAULT,
                    rx_queues,
                    tx_queues: rx_queues + 1,
                    rx_ring_size: self.rx_ring_size,
                    tx_ring_size: self.tx_ring_size,
                    pool: pool.clone(),
                })
                .map_err(dev_err("create_ud_qp"))?;
            let qpn = qp.qpn;
            let ctl_tx = qp.tx.pop().expect("the QP has data_cores + 1 send queues");
            let ctrl_cfg = CtrlConfig {
                pkey: f.pkey,
                scope: self.scope,
                ipv4: f.ipv4,
                data_cores,
                ..self.ctrl.clone()
            };
            let (ctl, cores) = Controller::new(
                ctrl_cfg,
                ctl_ports[i].clone(),
                qpn,
                ctl_tx,
                pool.clone(),
                clock.clone(),
            )
            .map_err(|source| Error::Controller { source })?;
            infos.push(IfaceInfo {
                config: *f,
                qpn,
                hwaddr: ctl.hwaddr(),
            });
            hosts.push(CtlHost {
                ctl,
                port: ctl_ports[i].clone(),
                shared: shared.clone(),
                iface: i,
            });
            // One DataCore, receive and send queue per data lcore, in lcore order.
            let queues = cores.into_iter().zip(qp.rx.drain(..)).zip(qp.tx.drain(..));
            for (lcore, ((core, rx), tx)) in queues.enumerate() {
                lcore_ifaces[lcore].push(LcoreIfaceParts { rx, tx, core, qpn });
            }
        }

        let stop_state = Arc::new(StopState::new(self.stop_flag.clone().unwrap_or_default()));
        let mut host = Some(hosts);
        let mut threads = Vec::with_capacity(lcores);
        let mut counter_sets = Vec::with_capacity(data_cores);
        let mut stack_parts = Vec::with_capacity(data_cores);
        for (i, parts) in lcore_ifaces.into_iter().enumerate() {
            let counters = Arc::new(LcoreCounters::default());
            counter_sets.push(LcoreCounterSet {
                lcore: counters.clone(),
                rx: parts.iter().map(|p| p.rx.counters()).collect(),
                tx: parts.iter().map(|p| p.tx.counters()).collect(),
            });
            stack_parts.push(DataLcoreParts {
                ctx: LcoreCtx {
                    lcore: i,
                    data_cores,
                    link_up: false,
                    mtu: 0,
                    now: std::time::Instant::now(),
                    iface: 0,
                    ifaces: n_ifaces,
                    links_up: 0,
                },
                ifaces: parts,
                ctl: if i == 0 && !dedicated {
                    host.take().unwrap_or_default()
                } else {
                    Vec::new()
                },
                app: Guarded::new(app(i), i, stop_state.clone()),
                counters,
                shared: shared.clone(),
                idle: self.idle,
                ctl_interval: self.ctl_poll_interval,
                pool: pool.clone(),
            });
        }
        let pin = self.pin;
        let mut stack = Stack::new(
            shared.clone(),
            counter_sets,
            pool,
            port,
            infos,
            self.stop_timeout,
            stop_state.clone(),
        );
        for (i, parts) in stack_parts.into_iter().enumerate() {
            let name = format!("{}-lcore{i}", self.name);
            let cpu = cpus[i];
            let thread = name.clone();
            let on_panic = StopOnPanic {
                state: stop_state.clone(),
                lcore: i,
            };
            let h = std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || {
                    let _on_panic = on_panic;
                    if pin {
                        pin_to(cpu, &thread);
                    }
                    let _lcore = register_lcore(&thread);
                    let lcore = DataLcore::new(parts);
                    LcoreExit { ctrl: lcore.run() }
                })
                .map_err(|source| Error::Spawn { name, source });
            match h {
                Ok(h) => threads.push(h),
                Err(e) => {
                    stack.adopt(threads);
                    let _ = stack.stop();
                    return Err(e);
                }
            }
        }
        if let Some(hosts) = host {
            let name = format!("{}-ctl", self.name);
            let cpu = cpus[data_cores];
            let thread = name.clone();
            let idle = self.idle;
            let shared = shared.clone();
            let on_panic = StopOnPanic {
                state: stop_state.clone(),
                lcore: data_cores,
            };
            let h = std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || {
                    let _on_panic = on_panic;
                    if pin {
                        pin_to(cpu, &thread);
                    }
                    let _lcore = register_lcore(&thread);
                    LcoreExit {
                        ctrl: lcore::run_control(hosts, shared, idle),
                    }
                })
                .map_err(|source| Error::Spawn { name, source });
            match h {
                Ok(h) => threads.push(h),
                Err(e) => {
                    stack.adopt(threads);
                    let _ = stack.stop();
                    return Err(e);
                }
            }
        }
        stack.adopt(threads);
        Ok(stack)
    }
}
