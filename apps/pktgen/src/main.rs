//! `pktgen`: ibpoll's traffic generator, sink and latency meter.
//!
//! It builds an embedded simulated InfiniBand fabric with a generator node and a sink
//! node (and, with `--topology fwd`, the default, an ipoib-fwd node between the
//! generator's partition and the sink's), sends IPv4/UDP datagrams of `--size` bytes
//! (the IP packet: IPv4 and UDP headers included, the 4-byte IPoIB header not) to
//! `--flows` unicast flows and `--mcast-groups` IPv4 multicast groups, prints one status
//! line per second and a summary table, and optionally a JSON object (`--json`). With
//! `--count N` the generators send exactly N packets in the measured run (after one
//! priming packet per destination), and `--duration` is the run's time limit.
//!
//! Every packet sent must be received or counted as a drop somewhere — in a node's
//! stack (`gen.*`, `fwd.*`, `sink.*`, control cores included) or in the fabric
//! (`fabric.<reason>`); pktgen checks `tx_packets == rx_packets + drops` and exits 1
//! when it does not hold (or when a membership outlives its node at the SA). Bad flags
//! exit 2 with a message naming the flag.

mod args;
mod fwd;
mod report;
mod run;
mod traffic;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use crate::args::Args;

fn usable_cpus() -> usize {
    core_affinity::get_core_ids()
        .map(|v| v.len())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let cfg = match args.check(usable_cpus()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pktgen: error: {e}");
            return ExitCode::from(2);
        }
    };
    let json_stdout = cfg.json.as_deref() == Some("-");
    if let Some(path) = cfg.json.as_deref().filter(|p| *p != "-") {
        // Find out now, not after the run, that the file cannot be written.
        if let Err(e) = std::fs::File::create(path) {
            eprintln!("pktgen: error: --json {path}: {e}");
            return ExitCode::from(2);
        }
    }
    let mut out = |line: &str| {
        // Progress and the summary go to stdout; the JSON object, when it goes there
        // too, is the last line.
        let mut o = std::io::stdout().lock();
        let _ = writeln!(o, "{line}");
        let _ = o.flush();
    };
    let report = match run::run(&cfg, &mut out) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pktgen: error: {e}");
            return ExitCode::from(1);
        }
    };
    out(&report.table());
    let mut ok = true;
    if !report.conserved() {
        eprintln!(
            "pktgen: conservation does not hold: tx_packets {} != rx_packets {} + drops {}",
            report.tx_packets,
            report.rx_packets,
            report.drops.total()
        );
        ok = false;
    }
    if report.count_reached == Some(false) {
        // Not a failure: the run is whole and conserved, only shorter than asked.
        eprintln!(
            "pktgen: note: --count {} not reached within --duration {} s",
            report.count.unwrap_or(0),
            report.duration_limit_s
        );
    }
    if report.sa_memberships_after_shutdown != 0 {
        eprintln!(
            "pktgen: {} multicast memberships remain at the SA after every node stopped",
            report.sa_memberships_after_shutdown
        );
        ok = false;
    }
    if let Some(dest) = &cfg.json {
        let line = report.json().to_string();
        if json_stdout {
            out(&line);
        } else if let Err(e) = std::fs::write(dest, line + "\n") {
            eprintln!("pktgen: error: --json {dest}: {e}");
            return ExitCode::from(1);
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
