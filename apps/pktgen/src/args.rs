//! Command-line flags and their checks: every bad value gets a message that names the
//! flag and what it accepts.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use ipoib_fwd::cli::limits::{self, MCAST_GROUPS_MAX};
use ipoib_fwd::cli::{output::same_file, ResultFile};

pub use ipoib_fwd::cli::{bad, BadFlag};

/// The largest `--count`: a trillion packets is days of traffic even at full rate.
pub const COUNT_MAX: u64 = 1_000_000_000_000;

/// `--duration` without `--count` (seconds of traffic).
pub const DURATION_DEFAULT_S: f64 = 3.0;
/// `--duration` with `--count` (the time limit, seconds).
pub const DURATION_LIMIT_DEFAULT_S: f64 = 60.0;

/// `--window` by default: packets in flight at most, generators to sink. Every
/// receive ring on the way holds 1024 buffers.
pub const WINDOW_DEFAULT: u64 = 512;
/// The largest `--window`.
pub const WINDOW_MAX: u64 = 1 << 20;

/// The largest IP packet the fabric carries: the broadcast group's IB MTU (4096) less
/// the 4-byte IPoIB header.
pub const IP_MTU: usize = 4096 - 4;

/// Which nodes the traffic crosses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Topology {
    /// generator -> sink, one partition.
    Direct,
    /// generator -> ipoib-fwd -> sink, across two partitions.
    Fwd,
}

impl Topology {
    pub fn name(self) -> &'static str {
        match self {
            Topology::Direct => "direct",
            Topology::Fwd => "fwd",
        }
    }
}

const AFTER_HELP: &str = "\
Ranges: --duration above 0 to 86400 s; --rate 1 to 1e9 packets/s or max; --flows 0 to 400;
--mcast-groups 0 to 250; --burst 1 to 64; --size 42 to 4092 (--ipv6: 60 to 4092);
--idle-sleep-us 1 to 10000; --pcap-max-bytes 4096 to 2^50 (default 1 GiB); --window 1 to
1048576.

Rates: Mpps and Gb/s of the IP packets (--size bytes each), and Gb/s on the wire: each
packet with its InfiniBand headers and CRCs (LRH 8, GRH 40 for multicast, BTH 12, DETH
8, IPoIB 4, padding to 4 bytes, ICRC 4, VCRC 2). Latency in microseconds.

Inspection: while it runs, `ibpoll-ctl ifaces|groups|neigh|stats` shows its nodes
(--no-telemetry turns that off).

Addresses: IPv4 generator 10.0.0.1 -> sink 10.0.0.2 (direct), or 10.1.0.1 -> forwarder
10.1.0.254 / 10.2.0.254 -> 10.2.0.1 (fwd), groups 239.1.0.1 ... With --ipv6:
fd00:0:0:1::1 -> fd00:0:0:1::2 (direct), or fd00:0:0:1::1 -> forwarder fd00:0:0:1::fe /
fd00:0:0:2::fe -> fd00:0:0:2::1 (fwd), groups ff05::1:1 ..., next hops resolved by
neighbour discovery, UDP checksums checked at the sink.

Exit status: 0 the run worked; 1 it failed (conservation broken, a membership left at
the SA, a buffer not back in its pool, an output not written: a full or closed standard
output, the --json file, the capture); 2 a refused flag; 130 / 143 the run was stopped
by SIGINT / SIGTERM (the traffic stops, every group is left, the summary and the JSON
are written; a second signal exits at once). Logs: RUST_LOG (default warn), on standard error.";

/// pktgen: traffic generator, sink and latency meter for ibpoll on the embedded
/// simulated InfiniBand fabric.
///
/// Starts a generator node and a sink node (and, with `--topology fwd`, an ipoib-fwd
/// node between two partitions), sends IPv4/UDP datagrams for `--duration` seconds (or
/// exactly `--count` packets), prints one status line per second and a summary, and
/// checks that every packet sent was received or counted as a drop somewhere (exit 1
/// if not).
#[derive(Debug, Parser)]
#[command(name = "pktgen", version, after_help = AFTER_HELP)]
pub struct Args {
    /// Seconds of traffic (fractions allowed, e.g. 0.5); default 3. With --count, the
    /// time limit of the run instead; default 60.
    #[arg(long, allow_hyphen_values = true)]
    pub duration: Option<f64>,

    /// Send exactly N packets in the measured run, over all generator lcores, then stop
    /// (with --pingpong: N round trips, a ping given up after 200 ms counting as one).
    /// The priming packets sent before the run (one per destination; `prime_packets` in
    /// the JSON) are not part of N: tx_packets = prime_packets + N. If N is not reached
    /// within --duration, the run stops there and says so (`count_reached` in the JSON).
    /// 1 to 10^12.
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub count: Option<String>,

    /// IP packet size in bytes, IP and UDP headers included, IPoIB header not (64 = a
    /// 64-byte IPv4/UDP packet); 42 to 4092 (the IPoIB MTU); 60 to 4092 with --ipv6.
    #[arg(long, default_value_t = 64, allow_hyphen_values = true)]
    pub size: usize,

    /// Packets per second over all generator lcores (1 to 1e9), or "max".
    #[arg(long, default_value = "max", allow_hyphen_values = true)]
    pub rate: String,

    /// Packets queued per generator iteration (1 to 64).
    #[arg(long, default_value_t = 32, allow_hyphen_values = true)]
    pub burst: usize,

    /// Unicast flows (distinct UDP source ports, spread over the sink's lcores); 0 to
    /// 400 (0: multicast only).
    #[arg(long, default_value_t = 4, allow_hyphen_values = true)]
    pub flows: usize,

    /// IPv4 multicast groups to send to, mixed with the unicast flows: send-only joins
    /// on the generator, full-member subscriptions on the sink; 0 to 250. Default 4 (0
    /// with --pingpong).
    #[arg(long, allow_hyphen_values = true)]
    pub mcast_groups: Option<usize>,

    /// Stamp packets and measure one-way latency at the sink (HDR histogram).
    #[arg(long)]
    pub latency: bool,

    /// One packet in flight: the sink echoes it, the generator measures the round trip.
    #[arg(long)]
    pub pingpong: bool,

    /// direct: generator -> sink; fwd: generator -> ipoib-fwd -> sink across two
    /// partitions. Default: fwd on the simulated fabric, direct on a verbs port.
    #[arg(long, value_enum)]
    pub topology: Option<Topology>,

    /// Where the nodes run: "sim", the embedded simulated InfiniBand fabric (default);
    /// "ring", the generator's and the sink's ports joined by SPSC rings, the buffer
    /// itself handed over, no switch, no copy (the stack's own cost; the control plane
    /// is the embedded fabric's; direct topology only); or "verbs[:DEVICE[:PORT]]", a
    /// real HCA port through libibverbs (InfiniBand or RoCE; default: the first device
    /// libibverbs lists, port 1), the generator and the sink as two stacks on that one
    /// port (--topology direct).
    #[arg(
        long,
        default_value = "sim",
        value_name = "sim|ring|verbs[:DEVICE[:PORT]]"
    )]
    pub fabric: String,

    /// Idle lcores sleep this many microseconds per idle iteration instead of spinning
    /// (or, when lcores share CPUs, yielding): 1 to 10000 (10 ms, so that a sleeping
    /// lcore cannot stretch a run). For instruction counts under valgrind, where a
    /// spinning lcore's idle polls would be counted as work.
    #[arg(long, value_name = "US", allow_hyphen_values = true)]
    pub idle_sleep_us: Option<i64>,

    /// CPUs to use, split between the nodes (default: every usable CPU).
    #[arg(long, allow_hyphen_values = true)]
    pub cores: Option<usize>,

    /// Write every frame the fabric's switch forwards to this pcap file (native
    /// InfiniBand frames, link type 197 / ERF type 21, which tshark decodes). It is
    /// written beside FILE and renamed over it at the end; a FILE another pktgen is
    /// capturing to is refused. With a capture the fabric runs slower (see the README).
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,

    /// The capture's bound in bytes (4096 to 2^50): frames past it are not written, the
    /// summary says so, and the traffic goes on.
    #[arg(long, value_name = "N", default_value_t = limits::PCAP_MAX_BYTES_DEFAULT, allow_hyphen_values = true)]
    pub pcap_max_bytes: u64,

    /// Write the summary as one JSON object to FILE (replaced only once the run ended),
    /// or "-" for the last line of standard output.
    #[arg(long, value_name = "FILE|-")]
    pub json: Option<String>,

    /// Seed of the fabric's random draws.
    #[arg(long, default_value_t = 1, allow_hyphen_values = true)]
    pub seed: u64,

    /// Flow control: the generators keep at most N packets in flight (sent, not yet
    /// received at the sink), so that no receive ring overflows; 1 to 1048576.
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub window: Option<u64>,

    /// Send without flow control (at --rate, or as fast as the generators go): the
    /// sink's receive ring overflows when the generator outruns it
    /// (fabric.no_receive_posted).
    #[arg(long)]
    pub open_loop: bool,

    /// Write the latency distribution to FILE, one "percentile latency_us" line per
    /// point (0 to 100; replaced only once the run ended, like --json). Implies
    /// --latency unless --pingpong.
    #[arg(long, value_name = "FILE")]
    pub cdf: Option<PathBuf>,

    /// Do not serve the nodes' state on the process's telemetry socket (for
    /// ibpoll-ctl).
    #[arg(long)]
    pub no_telemetry: bool,

    /// Send IPv6/UDP instead of IPv4/UDP: every node gets an IPv6 address, next hops
    /// are resolved by neighbour discovery, groups are IPv6 (ff05::1:N), the forwarder
    /// routes IPv6.
    #[arg(long)]
    pub ipv6: bool,
}

/// Where the nodes run (`--fabric`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FabricChoice {
    /// The embedded simulated fabric.
    Sim,
    /// The ring PMD over two nodes of the embedded fabric.
    Ring,
    /// A port of an HCA through libibverbs: the device (`None`: the first listed) and
    /// the port number.
    Verbs { device: Option<String>, port: u8 },
}

impl FabricChoice {
    /// Parses `sim` or `verbs[:DEVICE[:PORT]]`.
    pub fn parse(v: &str) -> Result<FabricChoice, BadFlag> {
        let v = v.trim();
        if v == "sim" {
            return Ok(FabricChoice::Sim);
        }
        if v == "ring" {
            return Ok(FabricChoice::Ring);
        }
        let mut parts = v.splitn(3, ':');
        if parts.next() != Some("verbs") {
            return Err(bad(
                "--fabric",
                format!("{v:?} is not a fabric: give sim, ring, or verbs[:DEVICE[:PORT]] (e.g. verbs:mlx5_0:1)"),
            ));
        }
        let device = parts.next().filter(|d| !d.is_empty()).map(str::to_owned);
        let port = match parts.next() {
            None | Some("") => 1,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n >= 1 => n,
                _ => {
                    return Err(bad(
                        "--fabric",
                        format!("{p:?} is not a port number: ports are numbered from 1 to 255 (see ibv_devinfo)"),
                    ))
                }
            },
        };
        Ok(FabricChoice::Verbs { device, port })
    }

    /// As the flag's value: `sim`, `verbs`, `verbs:DEVICE`, `verbs::PORT`,
    /// `verbs:DEVICE:PORT` (port 1 left out).
    pub fn label(&self) -> String {
        match self {
            FabricChoice::Sim => "sim".to_owned(),
            FabricChoice::Ring => "ring".to_owned(),
            FabricChoice::Verbs { device, port } => {
                let d = device.as_deref().unwrap_or("");
                match (d, port) {
                    ("", 1) => "verbs".to_owned(),
                    (d, 1) => format!("verbs:{d}"),
                    (d, p) => format!("verbs:{d}:{p}"),
                }
            }
        }
    }
}

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `--fabric`.
    pub fabric: FabricChoice,
    /// Seconds of traffic; with `count`, the time limit.
    pub duration_s: f64,
    /// Packets (ping-pong: round trips) of the measured run; `None`: until `duration_s`.
    pub count: Option<u64>,
    pub size: usize,
    /// Packets per second in total; `None`: max.
    pub rate_pps: Option<f64>,
    pub burst: usize,
    pub flows: usize,
    pub mcast_groups: usize,
    pub latency: bool,
    pub pingpong: bool,
    pub topology: Topology,
    pub cores: usize,
    /// Idle lcores sleep this long per idle iteration; `None`: they spin or yield.
    pub idle_sleep: Option<std::time::Duration>,
    /// The capture and its bound in bytes.
    pub pcap: Option<(PathBuf, u64)>,
    /// `--json`: `None`, standard output (`Some(None)`), or a file.
    pub json: Option<Option<ResultFile>>,
    pub seed: u64,
    /// Flow control: packets in flight at most; `None`: open loop (and ping-pong).
    pub window: Option<u64>,
    /// `--cdf`: where the latency distribution goes.
    pub cdf: Option<ResultFile>,
    /// Serve the nodes on the telemetry socket.
    pub telemetry: bool,
    /// IPv6/UDP instead of IPv4/UDP.
    pub ipv6: bool,
}

impl Args {
    /// Checks every flag and the combinations; `usable_cpus` bounds `--cores`.
    pub fn check(&self, usable_cpus: usize) -> Result<Config, BadFlag> {
        let duration_s = self.duration.unwrap_or(if self.count.is_some() {
            DURATION_LIMIT_DEFAULT_S
        } else {
            DURATION_DEFAULT_S
        });
        limits::duration("--duration", duration_s)?;
        let count = match self.count.as_deref().map(str::trim) {
            None => None,
            Some(c) => match c.parse::<u64>() {
                Ok(0) => {
                    return Err(bad(
                        "--count",
                        "0 packets is no run: give at least 1 (or leave --count out to run for --duration)",
                    ))
                }
                Ok(n) if n > COUNT_MAX => {
                    return Err(bad(
                        "--count",
                        format!("{n} packets is too many: give 1 to {COUNT_MAX}"),
                    ))
                }
                Ok(n) => Some(n),
                Err(_) => {
                    return Err(bad(
                        "--count",
                        format!("{c:?} is not a number of packets: give a whole number from 1 to {COUNT_MAX}"),
                    ))
                }
            },
        };
        let (size_min, headers) = if self.ipv6 {
            (crate::packet::PACKET6_MIN, "IPv6")
        } else {
            (crate::packet::PACKET_MIN.max(42), "IPv4")
        };
        if !(size_min..=IP_MTU).contains(&self.size) {
            return Err(bad(
                "--size",
                format!(
                    "{} bytes is not a possible IP packet here: give {size_min} to {IP_MTU} \
                     (the {headers} and UDP headers plus pktgen's 12-byte stamp, up to the IPoIB MTU)",
                    self.size
                ),
            ));
        }
        let rate_pps = limits::rate("--rate", &self.rate)?;
        if !(1..=ibpoll::TX_TABLE_MAX).contains(&self.burst) {
            return Err(bad(
                "--burst",
                format!(
                    "{} is out of range: give 1 to {} packets per iteration",
                    self.burst,
                    ibpoll::TX_TABLE_MAX
                ),
            ));
        }
        limits::flows("--flows", self.flows, 0)?;
        let mcast_groups = match (self.mcast_groups, self.pingpong) {
            (Some(n), true) if n > 0 => {
                return Err(bad(
                    "--mcast-groups",
                    "--pingpong echoes one unicast packet at a time; it cannot be combined \
                     with --mcast-groups (drop one of the two)",
                ))
            }
            (Some(n), _) => n,
            (None, true) => 0,
            (None, false) => 4,
        };
        if mcast_groups > MCAST_GROUPS_MAX {
            return Err(bad(
                "--mcast-groups",
                format!("{mcast_groups} is too many: give 0 to {MCAST_GROUPS_MAX}"),
            ));
        }
        if self.flows + mcast_groups == 0 {
            return Err(bad(
                "--flows",
                "--flows 0 with --mcast-groups 0 leaves nothing to send: give at least one",
            ));
        }
        if self.pingpong && self.flows == 0 {
            return Err(bad(
                "--flows",
                "--pingpong needs a unicast flow: give --flows 1 or more",
            ));
        }
        let fabric = FabricChoice::parse(&self.fabric)?;
        let topology = self.topology.unwrap_or(match fabric {
            FabricChoice::Sim => Topology::Fwd,
            FabricChoice::Ring | FabricChoice::Verbs { .. } => Topology::Direct,
        });
        if fabric == FabricChoice::Ring {
            if topology == Topology::Fwd {
                return Err(bad(
                    "--topology",
                    "--fabric ring joins two ports (the generator's and the sink's): give \
                     --topology direct, or --fabric sim for the forwarded topology",
                ));
            }
            if self.pcap.is_some() {
                return Err(bad(
                    "--pcap",
                    "--fabric ring has no switch: its packets never cross the simulated \
                     fabric, so there is nothing to capture (drop --pcap, or use --fabric sim)",
                ));
            }
        } else if fabric != FabricChoice::Sim {
            if topology == Topology::Fwd {
                return Err(bad(
                    "--topology",
                    "fwd needs two partitions of the simulated fabric; on --fabric verbs give --topology direct",
                ));
            }
            if self.pcap.is_some() {
                return Err(bad(
                    "--pcap",
                    "the capture is the simulated fabric's switch; a verbs port has none \
                     (capture RoCE with tcpdump on the netdev, InfiniBand with ibdump)",
                ));
            }
        }
        let cores = limits::cores("--cores", self.cores.unwrap_or(usable_cpus), usable_cpus)?;
        let idle_sleep = self
            .idle_sleep_us
            .map(|us| limits::idle_sleep_us("--idle-sleep-us", us))
            .transpose()?;
        let pcap_max = limits::pcap_max_bytes("--pcap-max-bytes", self.pcap_max_bytes)?;
        let json = match self.json.as_deref() {
            None => None,
            Some("") => return Err(bad("--json", "give a file name, or - for standard output")),
            Some("-") => Some(None),
            // Checked, not touched: an earlier result is replaced only when this run
            // has one.
            Some(p) => Some(Some(
                ResultFile::check(p.as_ref()).map_err(|e| bad("--json", e.to_string()))?,
            )),
        };
        if let (Some(p), Some(Some(j))) = (&self.pcap, &json) {
            if same_file(p, j.path()) {
                return Err(bad(
                    "--pcap",
                    format!("{} is also the --json file: give two files", p.display()),
                ));
            }
        }
        let window = self.flow_control()?;
        let cdf = self.cdf_file(&json)?;
        Ok(Config {
            fabric,
            duration_s,
            count,
            size: self.size,
            rate_pps,
            burst: self.burst,
            flows: self.flows,
            mcast_groups,
            latency: self.latency || self.pingpong || cdf.is_some(),
            pingpong: self.pingpong,
            topology,
            cores,
            idle_sleep,
            pcap: self.pcap.clone().map(|p| (p, pcap_max)),
            json,
            seed: self.seed,
            window,
            cdf,
            telemetry: !self.no_telemetry,
            ipv6: self.ipv6,
        })
    }

    /// `--window` and `--open-loop`: the window, or `None` for open loop.
    fn flow_control(&self) -> Result<Option<u64>, BadFlag> {
        match (self.window, self.open_loop, self.pingpong) {
            (Some(_), true, _) => Err(bad(
                "--window",
                "--window sets the flow control that --open-loop turns off: give one of the two",
            )),
            (Some(_), _, true) | (None, true, true) => Err(bad(
                if self.open_loop { "--open-loop" } else { "--window" },
                "--pingpong keeps one packet in flight: it takes no flow control flag",
            )),
            (Some(n), false, false) if !(1..=WINDOW_MAX).contains(&n) => Err(bad(
                "--window",
                format!("{n} is out of range: give 1 to {WINDOW_MAX} packets in flight (or --open-loop)"),
            )),
            (Some(n), false, false) => Ok(Some(n)),
            (None, false, false) => Ok(Some(WINDOW_DEFAULT)),
            (None, _, _) => Ok(None),
        }
    }

    /// `--cdf FILE`: checked, not touched; never the --json or --pcap file.
    fn cdf_file(&self, json: &Option<Option<ResultFile>>) -> Result<Option<ResultFile>, BadFlag> {
        let Some(p) = &self.cdf else {
            return Ok(None);
        };
        if p.as_os_str().is_empty() || p.as_os_str() == "-" {
            return Err(bad(
                "--cdf",
                "give a file name (standard output carries the summary)",
            ));
        }
        let others = [
            self.pcap.as_deref().map(|q| ("--pcap", q)),
            json.as_ref()
                .and_then(|j| j.as_ref())
                .map(|j| ("--json", j.path())),
        ];
        for (flag, q) in others.into_iter().flatten() {
            if same_file(p, q) {
                return Err(bad(
                    "--cdf",
                    format!("{} is also the {flag} file: give two files", p.display()),
                ));
            }
        }
        ResultFile::check(p)
            .map(Some)
            .map_err(|e| bad("--cdf", e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::FabricChoice;

    #[test]
    fn fabric_values_parse_and_print_back() {
        let verbs = |device: Option<&str>, port| FabricChoice::Verbs {
            device: device.map(str::to_owned),
            port,
        };
        for (v, want) in [
            ("sim", FabricChoice::Sim),
            ("verbs", verbs(None, 1)),
            ("verbs:mlx5_0", verbs(Some("mlx5_0"), 1)),
            ("verbs:rxe0:2", verbs(Some("rxe0"), 2)),
            ("verbs::2", verbs(None, 2)),
        ] {
            let got = FabricChoice::parse(v).unwrap_or_else(|e| panic!("{v}: {e}"));
            assert_eq!(got, want, "{v}");
            assert_eq!(got.label(), v, "{v} prints back");
        }
        for v in [
            "",
            "verbs:rxe0:0",
            "verbs:rxe0:256",
            "verbs:rxe0:x",
            "ib",
            "verbsx",
        ] {
            let e = FabricChoice::parse(v).expect_err(v).to_string();
            assert!(e.contains("--fabric"), "{v}: {e}");
        }
    }
}
