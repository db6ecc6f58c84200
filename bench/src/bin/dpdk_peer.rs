//! `dpdk-peer`: what `scripts/bench.sh` needs to run DPDK beside ibpoll.
//!
//! ```text
//! dpdk-peer pcap --dir DIR [--size 64] [--flows 16]
//!     writes DIR/in0.pcap and DIR/in1.pcap, l3fwd's two net_pcap inputs
//! dpdk-peer rate --file-prefix P [--pid PID] [--duration 2] [--warmup 1] [--json FILE|-]
//!     reads a running DPDK process's ethdev counters from its telemetry socket twice
//!     and prints rx_pps / tx_pps summed over its ports (one JSON line with --json -)
//! ```
//!
//! See `ibpoll_bench::peers` and bench/README.md.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use ibpoll_bench::peers::{pcap, telemetry};
use serde_json::json;

#[derive(Debug, Parser)]
#[command(
    name = "dpdk-peer",
    about = "DPDK as a same-run peer: captures for l3fwd, rates from DPDK telemetry"
)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Write l3fwd's inputs: DIR/in0.pcap (to 198.18.1.0/24, routed out of port 1) and
    /// DIR/in1.pcap (to 198.18.0.0/24, out of port 0), the IP packets of
    /// `ipoib-fwd --pmd replay` behind Ethernet headers.
    Pcap {
        #[arg(long)]
        dir: PathBuf,
        /// IP packet size (IPv4 + UDP headers included), as ipoib-fwd's --size.
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// UDP source ports (one frame each), as ipoib-fwd's --flows.
        #[arg(long, default_value_t = 16)]
        flows: u16,
    },
    /// Measure a running DPDK process: wait for its telemetry socket and for traffic,
    /// let --warmup pass, then sample every port's counters --duration apart.
    Rate {
        /// The process's --file-prefix (its socket is in /var/run/dpdk/<prefix>/ as
        /// root, else $XDG_RUNTIME_DIR/dpdk/<prefix>/ or /tmp/dpdk/<prefix>/).
        #[arg(long, required_unless_present = "socket")]
        file_prefix: Option<String>,
        /// The socket itself, instead of --file-prefix.
        #[arg(long)]
        socket: Option<PathBuf>,
        /// The process: waiting stops with an error once it has exited.
        #[arg(long)]
        pid: Option<u32>,
        /// Longest wait for the socket, then for the first packet, seconds.
        #[arg(long, default_value_t = 60.0)]
        wait: f64,
        /// Seconds between the first packet and the first sample.
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
        /// Seconds between the two samples.
        #[arg(long, default_value_t = 2.0)]
        duration: f64,
        /// Write the figures as one JSON object to FILE, or "-" for the last line of
        /// standard output.
        #[arg(long)]
        json: Option<String>,
    },
}

fn main() -> ExitCode {
    ibpoll_bench::init_logging();
    let args = Args::parse();
    let r = match args.cmd {
        Cmd::Pcap { dir, size, flows } => write_pcaps(&dir, size, flows),
        Cmd::Rate {
            file_prefix,
            socket,
            pid,
            wait,
            warmup,
            duration,
            json,
        } => {
            let secs = |flag: &str, s: f64| {
                if s.is_finite() && (0.0..=86_400.0).contains(&s) {
                    Ok(Duration::from_secs_f64(s))
                } else {
                    Err(format!("{flag} {s}: give seconds from 0 to 86400"))
                }
            };
            let paths = match (socket, file_prefix) {
                (Some(s), _) => vec![s],
                (None, Some(p)) => telemetry::runtime_dirs(&p)
                    .into_iter()
                    .map(|d| d.join(telemetry::SOCKET_NAME))
                    .collect(),
                (None, None) => unreachable!("clap requires one of them"),
            };
            secs("--wait", wait)
                .and_then(|w| Ok((w, secs("--warmup", warmup)?, secs("--duration", duration)?)))
                .and_then(|(w, u, d)| rate(&paths, pid, w, u, d, json.as_deref()))
        }
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dpdk-peer: {e}");
            ExitCode::FAILURE
        }
    }
}

fn write_pcaps(dir: &Path, size: usize, flows: u16) -> Result<(), String> {
    let files = pcap::l3fwd_inputs(size, flows).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for (i, data) in files.iter().enumerate() {
        let p = dir.join(format!("in{i}.pcap"));
        std::fs::write(&p, data).map_err(|e| format!("{}: {e}", p.display()))?;
        println!(
            "dpdk-peer: wrote {} ({flows} frames of {size}-byte IP packets)",
            p.display()
        );
    }
    Ok(())
}

fn alive(pid: Option<u32>) -> bool {
    pid.is_none_or(|p| Path::new(&format!("/proc/{p}")).exists())
}

/// Waits for one of `paths` to accept a connection.
fn wait_connect(
    paths: &[PathBuf],
    pid: Option<u32>,
    wait: Duration,
) -> Result<telemetry::Telemetry, String> {
    let start = Instant::now();
    loop {
        let mut last = None;
        for p in paths.iter().filter(|p| p.exists()) {
            match telemetry::Telemetry::connect(p, Duration::from_secs(10)) {
                Ok(t) => return Ok(t),
                Err(e) => last = Some(e.to_string()),
            }
        }
        if !alive(pid) {
            return Err(format!(
                "the DPDK process {} exited before its telemetry socket answered",
                pid.unwrap_or(0)
            ));
        }
        if start.elapsed() >= wait {
            let tried: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
            return Err(format!(
                "no telemetry socket answered within {wait:?} (tried {}){}",
                tried.join(", "),
                last.map_or(String::new(), |e| format!("; last error: {e}"))
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn rate(
    paths: &[PathBuf],
    pid: Option<u32>,
    wait: Duration,
    warmup: Duration,
    duration: Duration,
    json_out: Option<&str>,
) -> Result<(), String> {
    let load = ibpoll_bench::loadavg_json();
    let mut t = wait_connect(paths, pid, wait)?;
    let m = telemetry::measure(&mut t, wait, warmup, duration).map_err(|e| e.to_string())?;
    if m.rx_packets() == 0 {
        return Err(String::from(
            "the ports received nothing in the measured window",
        ));
    }
    let mut v = m.to_json();
    v["program"] = json!("dpdk-peer rate");
    v["dpdk"] = t.greeting["version"].clone();
    v["pid"] = t.greeting["pid"].clone();
    v["warmup_s"] = json!(warmup.as_secs_f64());
    v["loadavg"] = load;
    println!(
        "dpdk-peer: {} port(s): rx {:.3} Mpps, tx {:.3} Mpps over {:.2} s",
        m.ports.len(),
        v["rx_pps"].as_f64().unwrap_or(0.0) / 1e6,
        v["tx_pps"].as_f64().unwrap_or(0.0) / 1e6,
        m.elapsed.as_secs_f64()
    );
    match json_out {
        None => {}
        Some("-") => println!("{v}"),
        Some(f) => {
            let tmp = format!("{f}.tmp");
            std::fs::write(&tmp, format!("{v}\n"))
                .and_then(|()| std::fs::rename(&tmp, f))
                .map_err(|e| format!("{f}: {e}"))?;
        }
    }
    Ok(())
}
