//! What both examples share: the `--device` choice, the signals, the exit codes and the
//! poll loop of one application-driven stack.
//!
//! Exit codes (both examples):
//! - 0: the run completed and every check passed;
//! - 1: a check failed (lost or misordered datagrams, memberships left at the SA);
//! - 2: bad usage, or the device could not be opened;
//! - 130 / 143: stopped by SIGINT / SIGTERM, after a clean stop (every group left) and
//!   the summary; a second signal ends the process at once with the same code.
#![allow(dead_code)] // each example uses a different part

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ibpoll::dev::Device;
use ibpoll::{Control, Discard, Lane, Poll, SimFabric, StackBuilder};

pub const EXIT_OK: u8 = 0;
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;

/// Where the stacks run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSpec {
    /// The embedded simulated fabric (in-process subnet manager, SA and switch).
    Sim,
    /// A real HCA through libibverbs: device name and port.
    Verbs { name: String, port: u8 },
}

impl std::str::FromStr for DeviceSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<DeviceSpec, String> {
        if s == "sim" {
            return Ok(DeviceSpec::Sim);
        }
        let Some(rest) = s.strip_prefix("verbs:") else {
            return Err(format!(
                "{s:?}: expected `sim` or `verbs:NAME[:PORT]` (e.g. verbs:mlx5_0:1)"
            ));
        };
        let (name, port) = match rest.split_once(':') {
            Some((n, p)) => (
                n,
                p.parse().map_err(|_| format!("{p:?}: not a port number"))?,
            ),
            None => (rest, 1),
        };
        if name.is_empty() || port == 0 {
            return Err(format!("{s:?}: name a device and a port from 1"));
        }
        Ok(DeviceSpec::Verbs {
            name: name.to_owned(),
            port,
        })
    }
}

impl DeviceSpec {
    /// What the first line of output says about it.
    pub fn describe(&self) -> String {
        match self {
            DeviceSpec::Sim => {
                "embedded simulated InfiniBand fabric (in-process subnet manager, SA and \
                 switch; no HCA)"
                    .to_owned()
            }
            DeviceSpec::Verbs { name, port } => format!("verbs device {name} port {port}"),
        }
    }
}

/// The devices the stacks run on: a simulated fabric the example's stacks share, or a
/// port of an RDMA device (every stack of the example on that port, each its own QP and
/// IPv4 address; on RoCE each address must be configured on the port's netdev).
pub enum Devices {
    Sim(SimFabric),
    Verbs { device: Arc<dyn Device>, port: u8 },
}

/// Opens what `spec` names. A verbs device is opened through libibverbs (loaded at run
/// time) and its port must be Active: a missing library, device or port is named, with
/// its fix.
pub fn open(spec: &DeviceSpec) -> Result<Devices, String> {
    match spec {
        DeviceSpec::Sim => Ok(Devices::Sim(
            SimFabric::new(ibpoll::FabricConfig::default()),
        )),
        DeviceSpec::Verbs { name, port } => {
            let dev = ibpoll_pmd_verbs::VerbsDevice::open(name).map_err(|e| e.to_string())?;
            dev.active_port(*port).map_err(|e| e.to_string())?;
            Ok(Devices::Verbs {
                device: Arc::new(dev),
                port: *port,
            })
        }
    }
}

impl Devices {
    /// A builder for host `name` on these devices.
    pub fn host(&self, builder: StackBuilder, name: &str) -> StackBuilder {
        match self {
            Devices::Sim(f) => builder.name(name).fabric(f, name),
            Devices::Verbs { device, port } => builder.name(name).device(device.clone(), *port),
        }
    }

    /// Memberships the SA holds for `gid`: the simulated SA's count; `None` on a verbs
    /// port (a RoCE port has no SA; an InfiniBand subnet's SA is asked with saquery).
    pub fn memberships(&self, gid: &ibpoll::Gid) -> Option<usize> {
        match self {
            Devices::Sim(f) => Some(f.with_sa(|sa| sa.memberships_of(gid).count())),
            Devices::Verbs { .. } => None,
        }
    }

    /// The summary line about the SA memberships of `gids` after the stop, and whether
    /// any is left.
    pub fn memberships_line(&self, gids: &[ibpoll::Gid]) -> (String, bool) {
        let counts: Option<Vec<usize>> = gids.iter().map(|g| self.memberships(g)).collect();
        match counts {
            Some(c) => {
                let left: usize = c.iter().sum();
                (format!("SA memberships after stop: {left}"), left != 0)
            }
            None => (
                "SA memberships after stop: not checked (a verbs port: RoCE has no SA; on \
                 InfiniBand ask the SA with saquery)"
                    .to_owned(),
                false,
            ),
        }
    }
}

/// What a stack left behind at its stop, printed as one summary line for `who`: its
/// buffers still out of the pool, packets it dropped on the way out (every reason, the
/// control core's included), received packets it dropped, send completions in error
/// and receives the driver could not post (no buffer). Returns whether anything was
/// lost: buffers out, drops or send errors (receive-ring shortfalls are counted, not
/// failures; after a signal, neither are drops).
pub fn stop_check(who: &str, report: &ibpoll::StopReport, signal: Option<i32>) -> bool {
    let t = report.total();
    let tx_dropped = t.tx_dropped() + t.ctrl_dropped();
    let rx_dropped = t.rx_malformed + t.app_dropped;
    println!(
        "  {who}: buffers out after stop {}, tx dropped {tx_dropped}, rx dropped \
         {rx_dropped}, send errors {}, rx no-buffer {}, flushed {}",
        report.pool_in_use, t.driver_tx_errors, t.driver_rx_nombuf, report.flushed
    );
    // A signal stops the traffic mid-way: what the stop cut off (sends queued, or
    // pushed once the flush took the link down) is not a loss.
    let drops = if signal.is_some() {
        0
    } else {
        tx_dropped + rx_dropped
    };
    report.pool_in_use != 0 || drops != 0 || t.driver_tx_errors != 0
}

/// SIGINT and SIGTERM routed to the stacks' stop flag (signal-hook): the first sets it
/// and records the signal; a second one ends the process at once (128 + signal).
pub struct Signals {
    which: Arc<AtomicUsize>,
}

impl Signals {
    pub fn install(stop: &Arc<AtomicBool>) -> std::io::Result<Signals> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let which = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(AtomicBool::new(false));
        for sig in [SIGINT, SIGTERM] {
            // Registered first, so it sees only an earlier signal's `seen`.
            signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, seen.clone())?;
            signal_hook::flag::register_usize(sig, which.clone(), sig as usize)?;
            signal_hook::flag::register(sig, seen.clone())?;
            signal_hook::flag::register(sig, stop.clone())?;
        }
        Ok(Signals { which })
    }

    /// The signal that stopped the run, if one did.
    pub fn received(&self) -> Option<i32> {
        match self.which.load(Ordering::SeqCst) {
            0 => None,
            s => Some(s as i32),
        }
    }
}

/// The exit code: 1 if a check failed, else 128 + the signal that stopped the run, else 0.
pub fn exit_code(failed: bool, signal: Option<i32>) -> ExitCode {
    match (failed, signal) {
        (true, _) => ExitCode::from(EXIT_FAILED),
        (false, Some(s)) => ExitCode::from(u8::try_from(128 + s).unwrap_or(EXIT_FAILED)),
        (false, None) => ExitCode::from(EXIT_OK),
    }
}

/// Polls one stack's control core and lane until `done` says so or the stack stops;
/// then finishes both. `work` runs after each poll and says whether it did anything.
/// Idle iterations spin a little, then yield the CPU (the examples share a few).
pub fn drive(control: &mut Control, lane: &mut Lane, mut work: impl FnMut(&mut Lane) -> bool) {
    let mut idle = 0u32;
    while !lane.stopping() {
        let mut busy = control.poll() == Poll::Busy;
        busy |= lane.poll(&mut Discard);
        busy |= work(lane);
        if busy {
            idle = 0;
        } else {
            idle += 1;
            if idle > 64 {
                std::thread::yield_now();
            }
        }
    }
}

/// After `drive` returned (the stack is stopping): polls the control core until every
/// lane finished, bounded.
pub fn wind_down(control: &mut Control, limit: Duration) -> bool {
    let start = Instant::now();
    while !control.stopped() {
        control.poll();
        if start.elapsed() > limit {
            return false;
        }
        std::thread::yield_now();
    }
    true
}

/// Whether every send the lane posted completed (what a process that is about to stop
/// waits for, so that its last packets leave before its QPs go).
pub fn sent_all(lane: &Lane) -> bool {
    let s = lane.stats();
    s.driver_tx_completed >= s.tx_posted
}

/// Microseconds, for printing.
pub fn us(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1000.0)
}
