//! The builder: validates the configuration (`check`), creates the pool, the QPs, the
//! controllers and the lanes (`build`), and starts the lcores (`spawn`), or hands the
//! parts to the application (`StackBuilder::build`). Control path only.

mod build;
mod check;
mod spawn;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ibpoll_ctrl::CtrlConfig;
use ibpoll_dev::{Clock, Device};
use ibpoll_mem::HugepagePolicy;
#[cfg(feature = "sim")]
use ibpoll_pmd_sim::SimFabric;
use ibpoll_wire::ipoib::McastScope;
use ibpoll_wire::{IbMtu, PKey};

use crate::app::App;
use crate::control::StackParts;
use crate::fanout::Fanout;
use crate::lcore::IdlePolicy;
use crate::stack::Stack;
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
    /// The interface's IPv6 address: it joins the all-nodes and solicited-node groups,
    /// answers neighbour discovery for it and resolves IPv6 next hops from it.
    pub ipv6: Option<[u8; 16]>,
    /// The IPv6 prefix length of the interface's subnet (0..=128; for applications, as
    /// `prefix_len`).
    pub ipv6_prefix_len: u8,
}

impl Default for IfaceConfig {
    /// The default partition, no address, a /24 (IPv6: a /64).
    fn default() -> Self {
        IfaceConfig {
            pkey: PKey::DEFAULT,
            ipv4: None,
            prefix_len: 24,
            ipv6: None,
            ipv6_prefix_len: 64,
        }
    }
}

/// Which device the stack drives.
#[derive(Debug, Clone)]
pub(crate) enum DeviceChoice {
    /// A node added to this simulated fabric (the embedded driver).
    #[cfg(feature = "sim")]
    Fabric { fabric: SimFabric, node: String },
    /// A device and port opened by the caller's driver.
    Device { device: Arc<dyn Device>, port: u8 },
}

/// Builds and starts a [`Stack`]. Every value but the device has a default: name the
/// device with [`device`](Self::device) (any driver) or [`fabric`](Self::fabric) (the
/// simulated fabric, feature `sim`); without one, [`start`](Self::start) and
/// [`build`](Self::build) answer [`Error::NoDevice`]. They check every value and answer
/// bad ones with an [`Error`] that names the input and the fix.
///
/// ```no_run
/// use ibpoll::{IfaceConfig, PKey, SimFabric, FabricConfig, Stack};
/// let fabric = SimFabric::new(FabricConfig::default());
/// let builder = Stack::builder()
///     .name("ib0")
///     .fabric(&fabric, "host-a")
///     .interface(IfaceConfig {
///         pkey: PKey::DEFAULT,
///         ipv4: Some([10, 0, 0, 1]),
///         prefix_len: 24,
///         ..IfaceConfig::default()
///     })
///     .data_cores(2);
/// // Either the stack's own pinned threads...
/// let stack = builder.clone().start(|_lcore| ibpoll::Discard)?;
/// stack.stop()?;
/// // ...or the parts, for the application's own threads.
/// let (stack, control, lanes) = builder.name("ib1").fabric(&fabric, "host-b").build()?.split();
/// # let _ = (stack, control, lanes);
/// # Ok::<(), ibpoll::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct StackBuilder {
    pub(crate) name: String,
    pub(crate) device: Option<DeviceChoice>,
    pub(crate) data_cores: Option<usize>,
    pub(crate) control: ControlCore,
    pub(crate) cpus: Option<Vec<usize>>,
    pub(crate) pin: bool,
    pub(crate) pool_size: Option<u32>,
    pub(crate) pool_cache: u32,
    pub(crate) hugepages: HugepagePolicy,
    pub(crate) mtu: IbMtu,
    pub(crate) pkey: PKey,
    pub(crate) ipv4: Option<[u8; 4]>,
    pub(crate) ipv6: Option<[u8; 16]>,
    pub(crate) interfaces: Vec<IfaceConfig>,
    pub(crate) scope: McastScope,
    pub(crate) rx_ring_size: u32,
    pub(crate) tx_ring_size: u32,
    pub(crate) idle: IdlePolicy,
    pub(crate) clock: Option<Arc<dyn Clock>>,
    pub(crate) ctrl: CtrlConfig,
    pub(crate) ctl_poll_interval: Duration,
    pub(crate) stop_timeout: Duration,
    pub(crate) stop_flag: Option<Arc<std::sync::atomic::AtomicBool>>,
    pub(crate) telemetry: bool,
    pub(crate) fanout: Fanout,
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
            ipv6: None,
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
            telemetry: false,
            fanout: Fanout::Off,
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
pub(crate) fn pin_to(cpu: usize, thread: &str) {
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
pub(crate) fn register_lcore(thread: &str) -> Option<ibpoll_mem::LcoreGuard> {
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

pub(crate) fn bad(field: &'static str, value: u64, fix: &'static str) -> Error {
    Error::BadConfig { field, value, fix }
}

impl StackBuilder {
    /// A builder with the defaults: no device yet (name one), one data lcore per usable
    /// CPU, the controller on data lcore 0, the default partition, 4096-byte MTU
    /// buffers.
    pub fn new() -> StackBuilder {
        StackBuilder::default()
    }

    /// The interface name (thread names, logs).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Runs on a new node named `node` of a simulated fabric (the embedded driver, with
    /// its subnet manager and SA); several stacks on one fabric are several hosts of one
    /// subnet.
    #[cfg(feature = "sim")]
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

    /// Data lcores (1..=64, at most the usable CPUs): each owns one UD QP per interface
    /// (lane 0's is the interface's). Default: one per usable CPU (less the dedicated
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

    /// Buffers in the pool. Default: enough for every receive ring twice over (and for
    /// the [`fanout`](Self::fanout) rings, when on).
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

    /// The single interface's IPv6 address (neighbour discovery; ignored once
    /// [`interface`](Self::interface) was called).
    pub fn ipv6(mut self, ip: [u8; 16]) -> Self {
        self.ipv6 = Some(ip);
        self
    }

    /// Adds an interface (a partition of the port): call it once per interface, up to
    /// [`IFACES_MAX`]; interface `i` is the `i`-th call. Once called, the builder's
    /// [`pkey`](Self::pkey) and [`ipv4`](Self::ipv4) are not used. Each interface has its
    /// own controller and one UD QP per data lcore (plus the control core's); received
    /// bursts name their interface in [`LcoreCtx::iface`](crate::LcoreCtx::iface), and
    /// [`Tx::push`](crate::Tx::push) names the outgoing one. P_Keys must differ.
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

    /// The control plane's bounds and timings. Its `pkey`, `ipv4`, `ipv6`, `scope` and
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
    pub fn stop_flag(mut self, flag: Arc<std::sync::atomic::AtomicBool>) -> Self {
        self.stop_flag = Some(flag);
        self
    }

    /// Whether the process serves this stack's state on its telemetry socket (see
    /// [`telemetry`](crate::telemetry): interfaces, groups, neighbours, counters, for
    /// `ibpoll-ctl`). Default off: a library does not create files on its own; the
    /// programs (`pktgen`, `ipoib-fwd`) turn it on. A socket that cannot be created is
    /// a warning; the stack runs without it.
    pub fn telemetry(mut self, on: bool) -> Self {
        self.telemetry = on;
        self
    }

    /// Software fan-out of each interface's received traffic over the data lanes
    /// (default [`Fanout::Off`]): with [`Fanout::flow_hash`], lane 0, which receives the
    /// interface's unicast and broadcast on the interface's QP, spreads those IP packets
    /// by flow over every lane through bounded rings (the contract: [`crate::fanout`]).
    /// Other groups stay on the lanes the control core attached them to.
    /// Only where the device gives the interface's QP one receive queue (no RSS) and
    /// with more than one data lane.
    ///
    /// ```no_run
    /// use ibpoll::{Fanout, FabricConfig, SimFabric, Stack};
    /// let fabric = SimFabric::new(FabricConfig::default());
    /// let stack = Stack::builder()
    ///     .fabric(&fabric, "a")
    ///     .ipv4([10, 0, 0, 1])
    ///     .data_cores(3)
    ///     .fanout(Fanout::FlowHash { ring_size: 4096 })
    ///     .start(|_lane| ibpoll::Discard)?;
    /// // Every lane's application gets a share of the flows.
    /// let lanes = stack.all_stats();
    /// # let _ = lanes;
    /// stack.stop()?;
    /// # Ok::<(), ibpoll::Error>(())
    /// ```
    pub fn fanout(mut self, fanout: Fanout) -> Self {
        self.fanout = fanout;
        self
    }

    /// Checks the configuration, creates the pool and, per interface, one UD QP per data
    /// lcore (the first is the interface's: its QPN is in the hardware address) plus a
    /// send-only QP for the control core, and the controller, and starts the lcores:
    /// one pinned thread per lane, running [`App`] `app(i)` on lane `i`, the controllers
    /// on data lcore 0 or on a control lcore of their own. The convenience over
    /// [`build`](Self::build).
    pub fn start<A: App>(self, app: impl FnMut(usize) -> A) -> Result<Stack, Error> {
        let plan = check::Plan::new(&self)?;
        let parts = build::parts(&self, &plan)?;
        spawn::spawn(&self, &plan, parts, app)
    }

    /// Checks the configuration and creates everything [`start`](Self::start) does,
    /// but starts no thread: the application drives the control core and the lanes
    /// from threads of its own ([`StackParts::split`]). The builder's `cpus`, `pin`,
    /// `idle`, `control` and `ctrl_poll_interval` are the application's business then.
    pub fn build(self) -> Result<StackParts, Error> {
        let plan = check::Plan::new(&self)?;
        build::parts(&self, &plan)
    }
}
