//! The handle to a running stack: live counters, control messages, stop.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ibpoll_ctrl::{Controller, CtrlStats, GroupAddr};
use ibpoll_dev::Port;
use ibpoll_mem::Mempool;
use ibpoll_wire::ipoib::HwAddr;
use ibpoll_wire::Qpn;

use crate::control::ControlDone;
use crate::lcore::{Command, Shared};
use crate::signal::StopState;
use crate::stats::{LcoreCounterSet, LcoreCounters, LcoreStats};
use crate::{Error, IfaceConfig, StackBuilder};

/// What an lcore thread hands back when it ends.
#[derive(Debug)]
pub(crate) struct LcoreExit {
    /// The final counters of the controllers this lcore hosted, by interface.
    pub(crate) ctrl: Vec<(usize, CtrlStats)>,
}

/// One interface of a running stack.
#[derive(Debug, Clone)]
pub(crate) struct IfaceInfo {
    pub(crate) config: IfaceConfig,
    pub(crate) qpn: Qpn,
    pub(crate) hwaddr: HwAddr,
}

/// How long a control message may wait for the control core.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// What [`Stack::stop`] found.
#[derive(Debug, Clone)]
pub struct StopReport {
    /// Each data lcore's final counters.
    pub lcores: Vec<LcoreStats>,
    /// Interface 0's controller's final counters (default if it could not be reached).
    pub ctrl: CtrlStats,
    /// Every interface's controller's final counters, by interface (`ctrl_ifaces[0]`
    /// is `ctrl`).
    pub ctrl_ifaces: Vec<CtrlStats>,
    /// Whether the flush (interfaces down: every membership left) completed on every
    /// interface before the lcores were stopped.
    pub flushed: bool,
    /// Buffers of the stack's pool still out after stop: 0 unless the application kept
    /// some (or another host's sends were still arriving).
    pub pool_in_use: usize,
    /// The data lcores whose application panicked (it was no longer called; the stop
    /// flag was set). Empty in a run without panics.
    pub app_panics: Vec<usize>,
}

impl StopReport {
    /// All data lcores' counters summed.
    pub fn total(&self) -> LcoreStats {
        sum(&self.lcores)
    }
}

/// Packets the control core dropped, every reason summed (from its counters).
pub fn ctrl_packet_drops(s: &CtrlStats) -> u64 {
    s.dropped()
}

fn sum(all: &[LcoreStats]) -> LcoreStats {
    let mut t = LcoreStats::default();
    for s in all {
        t += *s;
    }
    t
}

/// A running stack: its lcores run until [`stop`](Self::stop) (or drop, which stops it
/// too). Counters are readable at any time without disturbing the lcores; everything
/// that touches the control plane is a message to the control core.
///
/// ```no_run
/// use std::time::Duration;
/// use ibpoll::{Discard, FabricConfig, GroupAddr, SimFabric, Stack};
/// let fabric = SimFabric::new(FabricConfig::default());
/// let stack = Stack::builder()
///     .fabric(&fabric, "rx")
///     .ipv4([10, 0, 0, 1])
///     .data_cores(1)
///     .start(|_| Discard)?;
/// assert!(stack.wait_link_up(Duration::from_secs(10))?);
/// // A full-member join, made by the control core (this thread waits for its answer).
/// assert!(stack.join_group_on(0, GroupAddr::Ipv4([239, 1, 0, 1]))?);
/// let s = stack.stats(0);
/// println!("rx {} tx {} dropped by the control core {}", s.rx_packets, s.tx_posted, s.ctrl_dropped());
/// let report = stack.stop()?; // leaves every group first
/// assert!(report.flushed);
/// # Ok::<(), ibpoll::Error>(())
/// ```
#[derive(Debug)]
pub struct Stack {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<LcoreExit>>,
    counters: Vec<LcoreCounterSet>,
    pool: Mempool,
    port: Arc<dyn Port>,
    ifaces: Vec<IfaceInfo>,
    stop_timeout: Duration,
    stopped: bool,
    stop_state: Arc<StopState>,
    /// Its place in the process's telemetry (withdrawn when the stack goes).
    pub(crate) telemetry: Option<crate::telemetry::Registration>,
    /// Set when the application drives the control core and the lanes
    /// ([`StackParts::split`](crate::StackParts::split)): where the control core leaves
    /// its report.
    driven: Option<Arc<ControlDone>>,
}

impl Stack {
    /// A builder with the defaults.
    pub fn builder() -> StackBuilder {
        StackBuilder::new()
    }

    pub(crate) fn new(
        shared: Arc<Shared>,
        counters: Vec<LcoreCounterSet>,
        pool: Mempool,
        port: Arc<dyn Port>,
        ifaces: Vec<IfaceInfo>,
        stop_timeout: Duration,
        stop_state: Arc<StopState>,
    ) -> Stack {
        Stack {
            shared,
            threads: Vec::new(),
            counters,
            pool,
            port,
            ifaces,
            stop_timeout,
            stopped: false,
            stop_state,
            telemetry: None,
            driven: None,
        }
    }

    /// The application drives the control core and the lanes.
    pub(crate) fn set_app_driven(&mut self, done: Arc<ControlDone>) {
        self.driven = Some(done);
    }

    pub(crate) fn stop_state(&self) -> &Arc<StopState> {
        &self.stop_state
    }

    pub(crate) fn adopt(&mut self, threads: Vec<JoinHandle<LcoreExit>>) {
        self.threads.extend(threads);
    }

    /// Data lcores.
    pub fn data_cores(&self) -> usize {
        self.counters.len()
    }

    /// Interface 0's UD QP number.
    pub fn qpn(&self) -> Qpn {
        self.ifaces[0].qpn
    }

    /// Interface 0's IPoIB hardware address.
    pub fn hwaddr(&self) -> HwAddr {
        self.ifaces[0].hwaddr
    }

    /// Interfaces (partitions of the port) the stack serves.
    pub fn ifaces(&self) -> usize {
        self.ifaces.len()
    }

    /// Interface `iface`'s configuration (the single interface's is built from the
    /// builder's `pkey` and `ipv4`). Panics if there is no such interface.
    pub fn iface_config(&self, iface: usize) -> &IfaceConfig {
        &self.ifaces[iface].config
    }

    /// Interface `iface`'s UD QP number. Panics if there is no such interface.
    pub fn iface_qpn(&self, iface: usize) -> Qpn {
        self.ifaces[iface].qpn
    }

    /// Interface `iface`'s IPoIB hardware address. Panics if there is no such interface.
    pub fn iface_hwaddr(&self, iface: usize) -> HwAddr {
        self.ifaces[iface].hwaddr
    }

    /// The process's telemetry socket, if this stack is served there
    /// ([`StackBuilder::telemetry`]).
    pub fn telemetry_socket(&self) -> Option<&std::path::Path> {
        self.telemetry.as_ref().and_then(|t| t.socket())
    }

    /// The port.
    pub fn port(&self) -> &Arc<dyn Port> {
        &self.port
    }

    /// The buffer pool.
    pub fn pool(&self) -> &Mempool {
        &self.pool
    }

    /// The live counters of data lcore `lcore` (relaxed loads; the lcore keeps running).
    pub fn counters(&self, lcore: usize) -> &Arc<LcoreCounters> {
        &self.counters[lcore].lcore
    }

    /// A copy of data lcore `lcore`'s counters and its queues' driver counters.
    pub fn stats(&self, lcore: usize) -> LcoreStats {
        self.counters[lcore].read()
    }

    /// Every data lcore's counters.
    pub fn all_stats(&self) -> Vec<LcoreStats> {
        self.counters.iter().map(LcoreCounterSet::read).collect()
    }

    /// Every data lcore's counters, summed.
    pub fn total_stats(&self) -> LcoreStats {
        sum(&self.all_stats())
    }

    /// Runs `f` with interface 0's controller on the control core (between two of its
    /// polls) and returns its result: a control message, not for the data path. Waits
    /// at most 30 s. Never call it from an application callback: on data lcore 0 it
    /// would wait for itself (and time out).
    pub fn with_controller<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Controller) -> R + Send + 'static,
    ) -> Result<R, Error> {
        self.with_controller_on(0, f)
    }

    /// [`with_controller`](Self::with_controller) for interface `iface`'s controller.
    pub fn with_controller_on<R: Send + 'static>(
        &self,
        iface: usize,
        f: impl FnOnce(&mut Controller) -> R + Send + 'static,
    ) -> Result<R, Error> {
        let Some(shared) = self.shared.ifaces.get(iface) else {
            return Err(Error::NoSuchIface {
                iface,
                ifaces: self.ifaces.len(),
            });
        };
        let alive = || shared.ctl_alive.load(Ordering::Acquire);
        if self.stopped || !alive() {
            return Err(Error::Stopped);
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let mut cmd: Command = Box::new(move |ctl: &mut Controller| {
            let _ = tx.send(f(ctl));
        });
        let start = Instant::now();
        loop {
            match shared.commands.push(cmd) {
                Ok(()) => break,
                Err(c) => cmd = c,
            }
            // Acquire: pairs with the Release in `CtlHost::finish`.
            if !alive() {
                return Err(Error::Stopped);
            }
            if start.elapsed() > COMMAND_TIMEOUT {
                return Err(Error::ControlTimeout {
                    secs: COMMAND_TIMEOUT.as_secs(),
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        loop {
            match rx.recv_timeout(Duration::from_millis(20)) {
                Ok(r) => return Ok(r),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return Err(Error::Stopped),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if !alive() {
                        // It may have answered just before it went.
                        return rx.try_recv().map_err(|_| Error::Stopped);
                    }
                    if start.elapsed() > COMMAND_TIMEOUT {
                        return Err(Error::ControlTimeout {
                            secs: COMMAND_TIMEOUT.as_secs(),
                        });
                    }
                }
            }
        }
    }

    /// Brings every interface up or down (down flushes: every membership is left).
    pub fn set_admin_up(&self, up: bool) -> Result<(), Error> {
        for i in 0..self.ifaces.len() {
            self.with_controller_on(i, move |c| c.set_admin_up(up))?;
        }
        Ok(())
    }

    /// Subscribes to a multicast group (full-member join once the link is up); false if
    /// the group table is full or the address is not a group of this partition.
    pub fn join_group(&self, group: GroupAddr) -> Result<bool, Error> {
        self.with_controller(move |c| c.join_group(group))
    }

    /// Unsubscribes from a multicast group.
    pub fn leave_group(&self, group: GroupAddr) -> Result<(), Error> {
        self.with_controller(move |c| c.leave_group(group))
    }

    /// [`join_group`](Self::join_group) on interface `iface`.
    pub fn join_group_on(&self, iface: usize, group: GroupAddr) -> Result<bool, Error> {
        self.with_controller_on(iface, move |c| c.join_group(group))
    }

    /// [`leave_group`](Self::leave_group) on interface `iface`.
    pub fn leave_group_on(&self, iface: usize, group: GroupAddr) -> Result<(), Error> {
        self.with_controller_on(iface, move |c| c.leave_group(group))
    }

    /// Whether every interface's link is up (its broadcast group is Joined).
    pub fn link_up(&self) -> Result<bool, Error> {
        for i in 0..self.ifaces.len() {
            if !self.link_up_on(i)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Whether interface `iface`'s link is up.
    pub fn link_up_on(&self, iface: usize) -> Result<bool, Error> {
        self.with_controller_on(iface, |c| c.link_up())
    }

    /// Interface 0's controller's counters.
    pub fn ctrl_stats(&self) -> Result<CtrlStats, Error> {
        self.with_controller(|c| c.stats())
    }

    /// Interface `iface`'s controller's counters.
    pub fn ctrl_stats_on(&self, iface: usize) -> Result<CtrlStats, Error> {
        self.with_controller_on(iface, |c| c.stats())
    }

    /// Waits until every interface's link is up, at most `timeout`; whether they came up.
    pub fn wait_link_up(&self, timeout: Duration) -> Result<bool, Error> {
        let start = Instant::now();
        loop {
            if self.link_up()? {
                return Ok(true);
            }
            if start.elapsed() > timeout {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops gracefully: takes the interface down and waits for the flush (every
    /// membership left, bounded by the builder's `stop_timeout`) while the data lcores
    /// keep draining; then stops the lcores, which free what they hold and drain their
    /// receive queues; joins them and reports. Buffers are back in the pool afterwards
    /// unless the application keeps some.
    ///
    /// For an application-driven stack ([`StackParts::split`](crate::StackParts::split))
    /// it sets the stop flag and waits until the application's [`Control`](crate::Control)
    /// finished (its poller does the flush and tells the lanes to stop).
    pub fn stop(mut self) -> Result<StopReport, Error> {
        self.stop_inner()
    }

    /// Whether the stop flag is set ([`StackBuilder::stop_flag`]): a signal the program
    /// routed to it, or a panicking application callback. The owner should then
    /// [`stop`](Self::stop) the stack.
    pub fn stop_requested(&self) -> bool {
        self.stop_state.requested()
    }

    /// The stop flag (the one given to [`StackBuilder::stop_flag`], or the stack's own).
    pub fn stop_flag(&self) -> &Arc<std::sync::atomic::AtomicBool> {
        &self.stop_state.flag
    }

    /// Runs until SIGINT or SIGTERM (registered through signal-hook, which keeps the
    /// program's own handlers), until the stop flag is set otherwise (e.g. by a
    /// panicking application), or, if given, until `run_for` has passed ("end of run");
    /// then [`stop`](Self::stop)s.
    pub fn run_until_ctrl_c(self, run_for: Option<Duration>) -> Result<StopReport, Error> {
        crate::signal::register_stop_signals(&self.stop_state.flag)
            .map_err(|source| Error::Signals { source })?;
        let start = Instant::now();
        while !self.stop_requested()
            && run_for.is_none_or(|d| start.elapsed() < d)
            && self
                .shared
                .ifaces
                .iter()
                .all(|i| i.ctl_alive.load(Ordering::Acquire))
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop()
    }

    /// The stop of an application-driven stack: the flag, then the application's
    /// control poller does the rest; this waits for its report.
    fn stop_driven(&mut self, done: Arc<ControlDone>) -> Result<StopReport, Error> {
        self.stopped = true;
        self.stop_state.flag.store(true, Ordering::SeqCst);
        let start = Instant::now();
        let limit = self.stop_timeout + COMMAND_TIMEOUT;
        let report = loop {
            if let Some(r) = done
                .report
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
            {
                break r;
            }
            if start.elapsed() > limit {
                return Err(Error::ControlTimeout {
                    secs: limit.as_secs(),
                });
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let mut ctrl_ifaces = report.ctrl;
        ctrl_ifaces.resize(self.ifaces.len(), CtrlStats::default());
        Ok(StopReport {
            lcores: self.all_stats(),
            ctrl: ctrl_ifaces[0],
            ctrl_ifaces,
            flushed: report.flushed,
            pool_in_use: self.pool.in_use(),
            app_panics: self.stop_state.panicked_lcores(),
        })
    }

    fn stop_inner(&mut self) -> Result<StopReport, Error> {
        if self.stopped {
            return Err(Error::Stopped);
        }
        if let Some(done) = self.driven.clone() {
            return self.stop_driven(done);
        }
        let mut flushed = false;
        if self.set_admin_up(false).is_ok() {
            let start = Instant::now();
            'wait: while start.elapsed() < self.stop_timeout {
                let mut flushing = false;
                for i in 0..self.ifaces.len() {
                    match self.with_controller_on(i, |c| c.is_flushing()) {
                        Ok(f) => flushing |= f,
                        Err(_) => break 'wait,
                    }
                }
                if !flushing {
                    flushed = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        self.stopped = true;
        // Relaxed: see `Shared::stop`; `join` below is what synchronises.
        self.shared.stop.store(true, Ordering::Relaxed);
        let mut ctrl_ifaces = vec![CtrlStats::default(); self.ifaces.len()];
        let mut panicked = None;
        for (i, h) in self.threads.drain(..).enumerate() {
            match h.join() {
                Ok(exit) => {
                    for (iface, s) in exit.ctrl {
                        ctrl_ifaces[iface] = s;
                    }
                }
                Err(_) => panicked = panicked.or(Some(i)),
            }
        }
        if let Some(lcore) = panicked {
            return Err(Error::LcorePanicked { lcore });
        }
        Ok(StopReport {
            lcores: self.all_stats(),
            ctrl: ctrl_ifaces[0],
            ctrl_ifaces,
            flushed,
            pool_in_use: self.pool.in_use(),
            app_panics: self.stop_state.panicked_lcores(),
        })
    }
}

impl Drop for Stack {
    /// Stops the stack's own lcores; the handle of an application-driven stack leaves
    /// the stop to the application's control poller.
    fn drop(&mut self) {
        if !self.stopped && self.driven.is_none() {
            let _ = self.stop_inner();
        }
    }
}
