//! `ipoib-fwd`: runs the L3 forwarder between two partitions of the embedded simulated
//! fabric, with a built-in traffic source (partition 0xffff) and sink (0x8001) so that
//! it does something visible on its own; prints one status line per second and a
//! summary (and, with `--json`, one JSON object), and checks conservation (source sent
//! == sink received + named drops) and that no membership outlives the run at the SA.
//!
//! With `--pmd replay` the forwarder's port is a replay NIC instead (`ibpoll-pmd-replay`,
//! DPDK's `net_pcap` with `infinite_rx`): both interfaces receive a full burst of
//! replayed 64-byte IPv4/UDP packets at every poll, what is forwarded is freed, and
//! the run reports rx_pps and tx_pps of the one forwarding lcore (`replay.rs`).
//!
//! The conventions (exit statuses, signals, outputs, logs) are pktgen's: see
//! [`ipoib_fwd::cli`].

mod replay;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use ipoib_fwd::cli::{self, bad, limits, note, BadFlag, ResultFile, Signals};
use ipoib_fwd::{
    is_ipv6_route, parse_ipv4, read_route_file, MRoute, MRoute6, Route, Route6, RouteFile,
};

const AFTER_HELP: &str = "\
Topology: interface 0 on P_Key 0xffff as 10.1.0.1/16 and interface 1 on P_Key 0x8001 as
10.2.0.1/16; the built-in source is 10.1.0.2 (on 0xffff) and sends UDP to --dst through
the forwarder; the built-in sink is 10.2.0.2 (on 0x8001).

With --pmd replay the forwarder's port is a replay NIC (DPDK's net_pcap with
infinite_rx): interface 0 receives a full burst of --size-byte IPv4/UDP packets from
10.1.0.2 to --dst (--flows UDP source ports) at every poll, interface 1 the same from
10.2.0.2 to 10.1.0.2, each copied into a fresh buffer; what the forwarder sends is
freed and counted, except ARP, which crosses the embedded fabric to the next hops
10.1.0.2 and 10.2.0.2 (plain stacks that answer it). It reports rx_pps (packets the
forwarder received) and tx_pps (packets it forwarded) over --duration, and checks
that every packet replayed was forwarded or counted as a drop. --rate, --window,
--mroute, multicast --dst and --pcap belong to --pmd sim's built-in source.

Routes: PREFIX/LEN[,via=IPV4],if=N (`default` for 0.0.0.0/0), e.g.
10.9.0.0/16,via=10.2.0.2,if=1, or IPv6: PREFIX/LEN[,via=IPV6],if=N, e.g.
fd00:9::/48,via=fd00:2::2,if=1 (::/0 for the default route). One route per prefix; the
gateway must be on the interface's subnet (IPv6: or link-local). Multicast routes:
GROUP[/LEN],from=N,to=M, e.g. 239.1.0.0/24,from=0,to=1 or ff05::1:0/120,from=0,to=1:
the forwarder subscribes to every group of it on interface N (at most 256 groups in all)
and sends them on interface M (a send-only join there). The built-in source and sink
send IPv4 only; IPv6 routes are installed and forward IPv6 from other nodes (see
pktgen --ipv6 --topology fwd).
Route files (--routes): one route per line, # comments, multicast routes as
`mroute GROUP[/LEN],from=N,to=M`; a regular file of at most 16 MiB.

Exit status: 0 the run worked; 1 it failed (conservation broken, a membership left at
the SA, an output not written); 2 a refused flag or configuration; 130 / 143 the run was
stopped by SIGINT / SIGTERM (the traffic stops, every group is left, the summary and the
JSON are written; a second signal exits at once). Logs: RUST_LOG (default warn), on
standard error.";

/// The NIC under the forwarder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Pmd {
    /// The embedded simulated fabric, with the built-in source and sink.
    Sim,
    /// Replayed frames in, sends freed (the one-lcore benchmark NIC).
    Replay,
}

/// ipoib-fwd: the L3 forwarder of ibpoll between two partitions of the embedded
/// simulated InfiniBand fabric, with a built-in source and sink.
#[derive(Debug, Parser)]
#[command(name = "ipoib-fwd", version, after_help = AFTER_HELP)]
struct Args {
    /// The NIC under the forwarder: sim (the embedded fabric; the default) or replay
    /// (replayed 64-byte IPv4/UDP packets in, sends freed: see below).
    #[arg(long, value_enum, default_value_t = Pmd::Sim)]
    pmd: Pmd,

    /// How long the source sends (with --pmd replay: the measured window), seconds
    /// (fractions allowed; above 0, at most 86400).
    #[arg(long, default_value_t = 3.0, allow_hyphen_values = true)]
    duration: f64,

    /// Forwarder data lcores, each polling both interfaces (1 to the usable CPUs).
    #[arg(long, default_value_t = 1, allow_hyphen_values = true)]
    cores: usize,

    /// Pin the forwarder's data lcores to these CPUs, one per --cores, in order
    /// (comma-separated, e.g. 1 or 0,1; like DPDK's -l). Default: unpinned.
    #[arg(long, value_name = "LIST", allow_hyphen_values = true)]
    cpus: Option<String>,

    /// Add a route, PREFIX/LEN[,via=IPV4],if=N or PREFIX/LEN[,via=IPV6],if=N
    /// (repeatable).
    #[arg(long, value_name = "ROUTE", allow_hyphen_values = true)]
    route: Vec<String>,

    /// Add a multicast route, GROUP[/LEN],from=N,to=M (repeatable).
    #[arg(long, value_name = "MROUTE", allow_hyphen_values = true)]
    mroute: Vec<String>,

    /// Add the routes of FILE (repeatable; see below).
    #[arg(long, value_name = "FILE")]
    routes: Vec<PathBuf>,

    /// IP packet size of the source's datagrams, bytes (36 to 2044, the IPoIB MTU of a
    /// 2048-byte IB MTU).
    #[arg(long, default_value_t = 64, allow_hyphen_values = true)]
    size: usize,

    /// Source rate, packets per second (1 to 1e9), or "max".
    #[arg(long, default_value = "max", allow_hyphen_values = true)]
    rate: String,

    /// Datagrams in flight at most, source to sink (0: open loop, receive-ring overruns
    /// are then counted drops; at most 1048576); default 512.
    #[arg(long, allow_hyphen_values = true)]
    window: Option<u64>,

    /// Destination of the source's datagrams; a multicast group needs an --mroute from
    /// 0 to 1 (the sink joins it).
    #[arg(
        long,
        value_name = "IPV4",
        default_value = "10.2.0.2",
        allow_hyphen_values = true
    )]
    dst: String,

    /// UDP source ports of the source's datagrams, or of each replayed stream (1 to
    /// 400).
    #[arg(long, default_value_t = 16, allow_hyphen_values = true)]
    flows: usize,

    /// With --pmd replay: frames each replayed interface returns per poll (1 to 32, the
    /// stack's receive burst); default 32.
    #[arg(long, allow_hyphen_values = true)]
    burst: Option<usize>,

    /// Seed of the fabric's random draws.
    #[arg(long, default_value_t = 1, allow_hyphen_values = true)]
    seed: u64,

    /// Write every frame the fabric forwards to this capture file (native InfiniBand
    /// frames, pcap link type 197 / ERF type 21, which tshark decodes).
    #[arg(long, value_name = "FILE")]
    pcap: Option<PathBuf>,

    /// The capture's bound in bytes (4096 to 2^50): frames past it are not written, the
    /// summary says so, and the traffic goes on.
    #[arg(long, value_name = "N", default_value_t = limits::PCAP_MAX_BYTES_DEFAULT, allow_hyphen_values = true)]
    pcap_max_bytes: u64,

    /// Write the summary as one JSON object to FILE (replaced only once the run
    /// ended), or "-" for the last line of standard output.
    #[arg(long, value_name = "FILE|-")]
    json: Option<String>,

    /// Do not serve the nodes' state on the process's telemetry socket (ibpoll-ctl
    /// finds it there by default).
    #[arg(long)]
    no_telemetry: bool,
}

/// The checked command line.
#[derive(Debug)]
pub struct Config {
    pub pmd: Pmd,
    pub duration: Duration,
    pub cores: usize,
    /// The CPUs the data lcores are pinned to; `None`: unpinned.
    pub cpus: Option<Vec<usize>>,
    pub routes: Vec<Route>,
    pub mroutes: Vec<MRoute>,
    pub routes6: Vec<Route6>,
    pub mroutes6: Vec<MRoute6>,
    pub size: usize,
    /// Packets per second; 0: as fast as it goes.
    pub rate: u64,
    pub window: u64,
    pub dst: [u8; 4],
    pub flows: u16,
    /// Frames per poll of a replayed interface.
    pub burst: usize,
    pub seed: u64,
    pub pcap: Option<(PathBuf, u64)>,
    /// `None`: no JSON; `Some(None)`: standard output; `Some(Some(f))`: the file.
    pub json: Option<Option<ResultFile>>,
    /// Serve the nodes on the telemetry socket.
    pub telemetry: bool,
}

fn usable_cpus() -> usize {
    core_affinity::get_core_ids().map_or(1, |v| v.len()).max(1)
}

/// `--cpus LIST`: one CPU per data lcore, each one this process may run on, no CPU
/// twice.
fn check_cpus(list: &str, cores: usize) -> Result<Vec<usize>, BadFlag> {
    let usable: Vec<usize> = core_affinity::get_core_ids()
        .map(|v| v.into_iter().map(|c| c.id).collect())
        .unwrap_or_default();
    let mut cpus = Vec::new();
    for w in list.split(',') {
        let cpu: usize = w.trim().parse().map_err(|_| {
            bad(
                "--cpus",
                format!("{w:?} is not a CPU number: give a comma-separated list, e.g. 1 or 0,1"),
            )
        })?;
        if !usable.is_empty() && !usable.contains(&cpu) {
            return Err(bad(
                "--cpus",
                format!("CPU {cpu} is not one this process may run on ({usable:?})"),
            ));
        }
        if cpus.contains(&cpu) {
            return Err(bad("--cpus", format!("CPU {cpu} is given twice")));
        }
        cpus.push(cpu);
    }
    if cpus.len() != cores {
        return Err(bad(
            "--cpus",
            format!(
                "{} CPU(s) for {cores} data lcore(s) (--cores): give one per lcore",
                cpus.len()
            ),
        ));
    }
    Ok(cpus)
}

impl Args {
    fn check(self) -> Result<Config, BadFlag> {
        let duration = limits::duration("--duration", self.duration)?;
        let cores = limits::cores("--cores", self.cores, usable_cpus())?;
        let cpus = self
            .cpus
            .as_deref()
            .map(|l| check_cpus(l, cores))
            .transpose()?;
        let mut rf = RouteFile::default();
        for r in &self.route {
            let e = |e| bad("--route", cli::describe(&e));
            if is_ipv6_route(r) {
                rf.routes6.push(r.parse::<Route6>().map_err(e)?);
            } else {
                rf.routes.push(r.parse::<Route>().map_err(e)?);
            }
        }
        for m in &self.mroute {
            let e = |e| bad("--mroute", cli::describe(&e));
            if is_ipv6_route(m) {
                rf.mroutes6.push(m.parse::<MRoute6>().map_err(e)?);
            } else {
                rf.mroutes.push(m.parse::<MRoute>().map_err(e)?);
            }
        }
        for f in &self.routes {
            rf.extend(read_route_file(f).map_err(|e| bad("--routes", cli::describe(&e)))?);
        }
        let RouteFile {
            routes,
            routes6,
            mroutes,
            mroutes6,
        } = rf;
        let size_min = ipoib_fwd::traffic::SIZE_MIN;
        if !(size_min..=2044).contains(&self.size) {
            return Err(bad(
                "--size",
                format!(
                    "{} bytes is not a possible IP packet here: give {size_min} to 2044 (the IPoIB MTU of a 2048-byte IB MTU)",
                    self.size
                ),
            ));
        }
        let rate = limits::rate("--rate", &self.rate)?.map_or(0, |r| r.round() as u64);
        let window = self.window.unwrap_or(512);
        if window > 1 << 20 {
            return Err(bad(
                "--window",
                format!("{window} is too many: give 0 (open loop) to 1048576 datagrams"),
            ));
        }
        let dst = parse_ipv4(self.dst.trim())
            .ok_or_else(|| bad("--dst", format!("{:?} is not an IPv4 address", self.dst)))?;
        let flows = limits::flows("--flows", self.flows, 1)? as u16;
        let pcap_max = limits::pcap_max_bytes("--pcap-max-bytes", self.pcap_max_bytes)?;
        let json = match self.json.as_deref() {
            None => None,
            Some("") => return Err(bad("--json", "give a file name, or - for standard output")),
            Some("-") => Some(None),
            Some(p) => Some(Some(
                ResultFile::check(p.as_ref()).map_err(|e| bad("--json", e.to_string()))?,
            )),
        };
        if let (Some(p), Some(Some(j))) = (&self.pcap, &json) {
            if cli::output::same_file(p, j.path()) {
                return Err(bad(
                    "--pcap",
                    format!("{} is also the --json file: give two files", p.display()),
                ));
            }
        }
        if self.pmd == Pmd::Replay {
            self.check_replay(rate, &mroutes)?;
        } else if self.burst.is_some() {
            return Err(bad(
                "--burst",
                "the frames per poll of --pmd replay: the built-in source of --pmd sim sends as its window and rate allow; drop --burst or add --pmd replay",
            ));
        }
        let burst = self.burst.unwrap_or(ibpoll::BURST_MAX);
        if !(1..=ibpoll::BURST_MAX).contains(&burst) {
            return Err(bad(
                "--burst",
                format!(
                    "{burst} frames per poll is out of range: give 1 to {}",
                    ibpoll::BURST_MAX
                ),
            ));
        }
        Ok(Config {
            pmd: self.pmd,
            duration,
            cores,
            cpus,
            routes,
            mroutes,
            routes6,
            mroutes6,
            size: self.size,
            rate,
            window,
            dst,
            flows,
            burst,
            seed: self.seed,
            pcap: self.pcap.map(|p| (p, pcap_max)),
            json,
            telemetry: !self.no_telemetry,
        })
    }
}

impl Args {
    /// What `--pmd replay` does not take: the built-in source's flags.
    fn check_replay(&self, rate: u64, mroutes: &[MRoute]) -> Result<(), BadFlag> {
        let not = |flag: &'static str, what: &str| {
            Err(bad(
                flag,
                format!("{what} with --pmd replay: the replayed traffic is unicast at full rate and never crosses the fabric; drop {flag} or use --pmd sim"),
            ))
        };
        if rate != 0 {
            return not("--rate", "a rate is not taken");
        }
        if self.window.is_some() {
            return not("--window", "a window is not taken");
        }
        if self.pcap.is_some() {
            return not("--pcap", "there is nothing to capture");
        }
        if !mroutes.is_empty() {
            return not("--mroute", "multicast routes have nothing to forward");
        }
        if self
            .dst
            .trim()
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|a| a.is_multicast())
        {
            return not("--dst", "a multicast destination is not replayed");
        }
        Ok(())
    }
}

fn main() -> ExitCode {
    cli::init_logging();
    let args: Args = match cli::parse_args("ipoib-fwd") {
        Ok(a) => a,
        Err(code) => return code,
    };
    let cfg = match args.check() {
        Ok(c) => c,
        Err(e) => {
            note(&format!("ipoib-fwd: error: {e}"));
            return ExitCode::from(cli::EXIT_USAGE);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let signals = match Signals::install(&stop) {
        Ok(s) => s,
        Err(e) => {
            note(&format!(
                "ipoib-fwd: error: cannot watch SIGINT and SIGTERM: {e}"
            ));
            return ExitCode::from(cli::EXIT_FAILED);
        }
    };
    match cfg.pmd {
        Pmd::Sim => run::main(&cfg, stop, &signals),
        Pmd::Replay => replay::main(&cfg, stop, &signals),
    }
}
