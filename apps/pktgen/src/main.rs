//! `pktgen`: ibpoll's traffic generator, sink and latency meter.
//!
//! It builds an embedded simulated InfiniBand fabric with a generator node and a sink
//! node (and, with `--topology fwd`, the default, an ipoib-fwd node between the
//! generator's partition and the sink's), sends IPv4/UDP (or, with `--ipv6`, IPv6/UDP)
//! datagrams of `--size` bytes (the IP packet: IP and UDP headers included, the 4-byte
//! IPoIB header not) to `--flows` unicast flows and `--mcast-groups` multicast groups,
//! prints one status
//! line per second and a summary table, and optionally a JSON object (`--json`). With
//! `--count N` the generators send exactly N packets in the measured run (after one
//! priming packet per destination), and `--duration` is the run's time limit.
//!
//! `--fabric ring` joins the generator's port and the sink's by the ring PMD
//! (`ibpoll-pmd-ring`, DPDK's `net_ring`: SPSC rings, the buffer itself handed over, no
//! switch), over two nodes of the embedded fabric that still carry the control plane
//! (SA joins, path records, ARP): the direct topology without the simulator's cost.
//!
//! Every packet sent must be received or counted as a drop somewhere — in a node's
//! stack (`gen.*`, `fwd.*`, `sink.*`, control cores included) or in the fabric
//! (`fabric.<reason>`); pktgen checks `tx_packets == rx_packets + drops` and exits 1
//! when it does not hold (or when a membership outlives its node at the SA). Bad flags
//! exit 2 with a message naming the flag. SIGINT and SIGTERM end the traffic early: the
//! nodes stop (every group left), the summary and the JSON are written, and the exit
//! status is 130 / 143 (1 if the run failed); a second signal exits at once. The
//! conventions are shared with ipoib-fwd ([`ipoib_fwd::cli`]).

mod args;
mod fabric;
mod fwd;
mod packet;
mod report;
mod run;
mod traffic;

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use ipoib_fwd::cli::{self, note, Signals, Stdout};

use crate::args::{Args, Config, FabricChoice};
use crate::report::Report;
use crate::run::RunError;

fn usable_cpus() -> usize {
    core_affinity::get_core_ids()
        .map(|v| v.len())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn main() -> ExitCode {
    cli::init_logging();
    let args: Args = match cli::parse_args("pktgen") {
        Ok(a) => a,
        Err(code) => return code,
    };
    let cfg = match args.check(usable_cpus()) {
        Ok(c) => c,
        Err(e) => {
            note(&format!("pktgen: error: {e}"));
            return ExitCode::from(cli::EXIT_USAGE);
        }
    };
    // A verbs port is opened and checked before anything starts: what is missing on
    // this machine (rdma-core, a device, an Active port) is a refused configuration.
    let verbs = match &cfg.fabric {
        FabricChoice::Sim | FabricChoice::Ring => None,
        FabricChoice::Verbs { device, port } => {
            match fabric::open_verbs(device.as_deref(), *port) {
                Ok(t) => Some(t),
                Err(e) => {
                    note(&format!(
                        "pktgen: error: --fabric {}: {}",
                        cfg.fabric.label(),
                        cli::describe(&e)
                    ));
                    return ExitCode::from(cli::EXIT_USAGE);
                }
            }
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let signals = match Signals::install(&stop) {
        Ok(s) => s,
        Err(e) => {
            note(&format!(
                "pktgen: error: cannot watch SIGINT and SIGTERM: {e}"
            ));
            return ExitCode::from(cli::EXIT_FAILED);
        }
    };
    // Progress and the summary go to standard output; the JSON object, when it goes
    // there too, is the last line. A failed write ends the run (exit 1).
    let mut out = Stdout::new();
    let mut report = match run::run(&cfg, verbs, &mut out, &stop) {
        Ok(r) => r,
        Err(e @ RunError::PcapStart(_)) => {
            note(&format!("pktgen: error: {e}"));
            return ExitCode::from(cli::EXIT_USAGE);
        }
        // The machine's set-up again, found while a node started (the memlock limit,
        // met when its pool is registered): refused, with the fix.
        Err(RunError::Start { node, source }) if fabric::setup_diagnostic(&source).is_some() => {
            note(&format!(
                "pktgen: error: --fabric {}: starting the {node} node: {}",
                cfg.fabric.label(),
                cli::describe(&source)
            ));
            return ExitCode::from(cli::EXIT_USAGE);
        }
        Err(e) => {
            note(&format!("pktgen: error: {}", cli::describe(&e)));
            return ExitCode::from(cli::EXIT_FAILED);
        }
    };
    report.interrupted_by = signals.received().map(Signals::name);
    let failed = verdict(&report);
    out.line(&report.table());
    let failed = write_json(&cfg, &report, &mut out) | failed;
    let failed = write_cdf(&cfg, &report) | failed;
    if let Some(e) = out.error() {
        note(&format!("pktgen: error: writing to standard output: {e}"));
        return ExitCode::from(cli::EXIT_FAILED);
    }
    cli::exit_status(failed, signals.received())
}

/// Says what is wrong with a finished run; whether it failed.
fn verdict(report: &Report) -> bool {
    let mut failed = false;
    if let Some(sig) = report.interrupted_by {
        note(&format!(
            "pktgen: note: {sig} stopped the run after {:.3} s; every node stopped and left its groups",
            report.duration_s
        ));
    }
    if !report.conserved() {
        note(&format!(
            "pktgen: conservation does not hold: tx_packets {} != rx_packets {} + drops {}",
            report.tx_packets,
            report.rx_packets,
            report.drops.total()
        ));
        failed = true;
    }
    if report.count_reached == Some(false) && report.interrupted_by.is_none() {
        // Not a failure: the run is whole and conserved, only shorter than asked.
        note(&format!(
            "pktgen: note: --count {} not reached within --duration {} s",
            report.count.unwrap_or(0),
            report.duration_limit_s
        ));
    }
    if report.sa_memberships_after_shutdown != 0 {
        note(&format!(
            "pktgen: {} multicast memberships remain at the SA after every node stopped",
            report.sa_memberships_after_shutdown
        ));
        failed = true;
    }
    if report.pool_in_use != 0 {
        note(&format!(
            "pktgen: error: {} buffers are still out of the pools after every node stopped",
            report.pool_in_use
        ));
        failed = true;
    }
    if let Some(e) = report.capture.as_ref().and_then(|c| c.error.as_ref()) {
        note(&format!("pktgen: error: --pcap: {e}"));
        failed = true;
    }
    if report.app_panics > 0 {
        note(&format!(
            "pktgen: error: the application panicked on {} lcore(s); the run was stopped",
            report.app_panics
        ));
        failed = true;
    }
    failed
}

/// Writes the latency distribution where `--cdf` says; whether that failed.
fn write_cdf(cfg: &Config, report: &Report) -> bool {
    let Some(f) = &cfg.cdf else {
        return false;
    };
    let Some(h) = &report.latency else {
        note("pktgen: error: --cdf: no latency was measured (no packet arrived)");
        return true;
    };
    match f.write(report::cdf_text(h).as_bytes()) {
        Ok(()) => false,
        Err(e) => {
            note(&format!("pktgen: error: --cdf: {e}"));
            true
        }
    }
}

/// Writes the JSON summary where `--json` says; whether that failed (a lost result).
fn write_json(cfg: &Config, report: &Report, out: &mut Stdout) -> bool {
    let line = report.json().to_string();
    match &cfg.json {
        None => false,
        Some(None) => !out.line(&line),
        Some(Some(f)) => match f.write(format!("{line}\n").as_bytes()) {
            Ok(()) => false,
            Err(e) => {
                note(&format!("pktgen: error: --json: {e}"));
                true
            }
        },
    }
}
