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

/// The devices the stacks run on: a simulated fabric the example's stacks share.
pub enum Devices {
    Sim(SimFabric),
}

/// Opens what `spec` names. A verbs device is looked up through libibverbs (loaded at
/// run time), so that a missing library or device is named; the verbs driver does not
/// implement ibpoll's driver contract yet, so even a device that opens ends the run
/// with that said.
pub fn open(spec: &DeviceSpec) -> Result<Devices, String> {
    match spec {
        DeviceSpec::Sim => Ok(Devices::Sim(
            SimFabric::new(ibpoll::FabricConfig::default()),
        )),
        DeviceSpec::Verbs { name, port } => {
            let lib = ibpoll_pmd_verbs::Library::load().map_err(|e| e.to_string())?;
            let ctx =
                ibpoll_pmd_verbs::Context::open(&lib, Some(name)).map_err(|e| e.to_string())?;
            ctx.require_active(*port).map_err(|e| e.to_string())?;
            Err(format!(
                "device {name} port {port} is up, but ibpoll's verbs driver (pmd/verbs) does \
                 not implement the Device contract yet: run with --device sim"
            ))
        }
    }
}

impl Devices {
    /// A builder for host `name` on these devices.
    pub fn host(&self, builder: StackBuilder, name: &str) -> StackBuilder {
        match self {
            Devices::Sim(f) => builder.name(name).fabric(f, name),
        }
    }

    /// Memberships the SA holds for `gid` (the simulated SA; a real one would be asked
    /// with saquery).
    pub fn memberships(&self, gid: &ibpoll::Gid) -> usize {
        match self {
            Devices::Sim(f) => f.with_sa(|sa| sa.memberships_of(gid).count()),
        }
    }
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

/// Microseconds, for printing.
pub fn us(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1000.0)
}
