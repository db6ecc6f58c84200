//! What a run found: drops by `node.reason`, the summary table, the JSON object, and the
//! conservation check.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

use crate::args::Topology;

/// Drops by `node.reason` (only reasons that counted something).
#[derive(Debug, Default, Clone)]
pub struct Drops(BTreeMap<String, u64>);

impl Drops {
    /// Adds `n` drops of `node` for `reason`.
    pub fn add(&mut self, node: &str, reason: &str, n: u64) {
        if n > 0 {
            *self.0.entry(format!("{node}.{reason}")).or_default() += n;
        }
    }

    /// Adds every drop of `other`.
    pub fn extend(&mut self, other: &Drops) {
        for (k, v) in &other.0 {
            *self.0.entry(k.clone()).or_default() += v;
        }
    }

    /// Every drop.
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &u64)> {
        self.0.iter()
    }
}

/// The result of one run.
#[derive(Debug)]
pub struct Report {
    pub topology: Topology,
    /// IPv6/UDP (`--ipv6`) rather than IPv4/UDP.
    pub ipv6: bool,
    pub size: usize,
    pub burst: usize,
    pub cores: usize,
    /// `--idle-sleep-us`.
    pub idle_sleep_us: Option<u64>,
    pub pingpong: bool,
    /// Seconds of the measured run (from the start of traffic to the halt).
    pub duration_s: f64,
    /// `--count`: run packets (ping-pong: round trips) asked for.
    pub count: Option<u64>,
    /// With `--count`: whether every generator lcore sent its share within the limit.
    pub count_reached: Option<bool>,
    /// `--duration`: the run's length, or with `--count` its time limit.
    pub duration_limit_s: f64,
    /// Of `tx_packets`, the priming packets sent before the run (one per destination).
    pub prime_packets: u64,
    /// pktgen datagrams the generators handed to their stack.
    pub tx_packets: u64,
    /// pktgen datagrams received: at the sink, or (ping-pong) echoes at the generator.
    pub rx_packets: u64,
    /// Of those, received from a multicast group (by the sink).
    pub rx_mcast: u64,
    /// Multicast packets the forwarder sent on (fwd topology).
    pub fwd_mcast_forwarded: Option<u64>,
    pub drops: Drops,
    pub mcast_groups: usize,
    /// Groups the sink holds a full membership of at the end of the run.
    pub mcast_groups_joined: usize,
    /// The generator's neighbours at the end of the run.
    pub neighbours: usize,
    /// One-way latency (stream) or round-trip time (ping-pong), nanoseconds.
    pub latency: Option<Histogram<u64>>,
    pub sa_memberships_after_shutdown: usize,
    pub pool_in_use: usize,
    pub flushed: bool,
    pub pinned: bool,
    pub foreign: u64,
    pub timeouts: u64,
    /// `--seed`, `--rate` (None: max) and `--flows`, so a result says how to rerun it.
    pub seed: u64,
    pub rate_pps: Option<f64>,
    pub flows: usize,
    /// How the capture ended (`--pcap`).
    pub capture: Option<ipoib_fwd::cli::capture::CaptureEnd>,
    /// Lcores whose application panicked (the run was stopped; every node flushed).
    pub app_panics: usize,
    /// The signal that stopped the run early, by name.
    pub interrupted_by: Option<&'static str>,
}

impl Report {
    /// tx_packets == rx_packets + every drop.
    pub fn conserved(&self) -> bool {
        self.tx_packets == self.rx_packets + self.drops.total()
    }

    fn pps(&self, n: u64) -> f64 {
        if self.duration_s > 0.0 {
            n as f64 / self.duration_s
        } else {
            0.0
        }
    }

    fn gbps(&self, pps: f64) -> f64 {
        pps * self.size as f64 * 8.0 / 1e9
    }

    fn percentiles(h: &Histogram<u64>) -> [(&'static str, u64); 4] {
        [
            ("p50", h.value_at_quantile(0.50)),
            ("p99", h.value_at_quantile(0.99)),
            ("p999", h.value_at_quantile(0.999)),
            ("max", h.max()),
        ]
    }

    /// The JSON summary (one object).
    pub fn json(&self) -> Value {
        let drops: Map<String, Value> = self
            .drops
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        let mut o = json!({
            "fabric": "sim",
            "topology": self.topology.name(),
            "mode": if self.pingpong { "pingpong" } else { "stream" },
            "ip_version": if self.ipv6 { 6 } else { 4 },
            "size": self.size,
            "burst": self.burst,
            "cores": self.cores,
            "duration_s": self.duration_s,
            "tx_packets": self.tx_packets,
            "rx_packets": self.rx_packets,
            "rx_mcast_packets": self.rx_mcast,
            "tx_pps": self.pps(self.tx_packets),
            "rx_pps": self.pps(self.rx_packets),
            "drops": drops,
            "mcast_groups": self.mcast_groups,
            "mcast_groups_joined": self.mcast_groups_joined,
            "sa_memberships_after_shutdown": self.sa_memberships_after_shutdown,
            "conserved": self.conserved(),
            "count": self.count,
            "count_reached": self.count_reached,
            "prime_packets": self.prime_packets,
            "idle_sleep_us": self.idle_sleep_us,
            "pinned": self.pinned,
            "flushed": self.flushed,
            "seed": self.seed,
            "rate_pps": self.rate_pps,
            "flows": self.flows,
            "version": env!("CARGO_PKG_VERSION"),
            "interrupted_by": self.interrupted_by,
            "app_panics": self.app_panics,
        });
        if let Some(c) = &self.capture {
            o["pcap"] = c.json();
        }
        if let Some(h) = &self.latency {
            let l: Map<String, Value> = Self::percentiles(h)
                .into_iter()
                .map(|(k, v)| (k.to_owned(), json!(v)))
                .collect();
            o["latency_ns"] = Value::Object(l);
            o["latency_samples"] = json!(h.len());
        }
        if self.pingpong {
            o["pingpong_timeouts"] = json!(self.timeouts);
        }
        if let Some(n) = self.fwd_mcast_forwarded {
            o["fwd_mcast_forwarded"] = json!(n);
        }
        o
    }

    /// The summary table.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut t = String::new();
        let tx_pps = self.pps(self.tx_packets);
        let rx_pps = self.pps(self.rx_packets);
        let _ = writeln!(
            t,
            "pktgen summary: embedded fabric, topology {}, {}, {}-byte {}/UDP packets, burst {}, {} core{}",
            self.topology.name(),
            if self.pingpong { "ping-pong" } else { "stream" },
            self.size,
            if self.ipv6 { "IPv6" } else { "IPv4" },
            self.burst,
            self.cores,
            if self.cores == 1 { "" } else { "s" },
        );
        let mut row = |k: &str, v: String| {
            let _ = writeln!(t, "  {k:<34} {v}");
        };
        row("duration", format!("{:.3} s", self.duration_s));
        if let Some(n) = self.count {
            let what = if self.pingpong {
                "round trips"
            } else {
                "run packets"
            };
            row(
                "count",
                match self.count_reached {
                    Some(true) => format!("{n} {what}: reached"),
                    _ => format!(
                        "{n} {what}: NOT reached within the {:.3} s limit (--duration); {} sent",
                        self.duration_limit_s,
                        self.tx_packets - self.prime_packets
                    ),
                },
            );
        }
        if self.prime_packets > 0 {
            row("priming packets (in tx)", self.prime_packets.to_string());
        }
        row(
            "tx",
            format!(
                "{} packets  {:.3} Mpps  {:.3} Gb/s",
                self.tx_packets,
                tx_pps / 1e6,
                self.gbps(tx_pps)
            ),
        );
        row(
            if self.pingpong { "rx (echoes)" } else { "rx" },
            format!(
                "{} packets  {:.3} Mpps  {:.3} Gb/s",
                self.rx_packets,
                rx_pps / 1e6,
                self.gbps(rx_pps)
            ),
        );
        if !self.pingpong {
            row("  of which multicast", format!("{} packets", self.rx_mcast));
        }
        if let Some(n) = self.fwd_mcast_forwarded {
            row("multicast forwarded (ipoib-fwd)", format!("{n} packets"));
        }
        row("drops", self.drops.total().to_string());
        for (k, v) in self.drops.iter() {
            row(&format!("  {k}"), v.to_string());
        }
        row(
            "multicast groups joined (sink)",
            format!("{}/{}", self.mcast_groups_joined, self.mcast_groups),
        );
        row("neighbours (generator)", self.neighbours.to_string());
        if let Some(h) = &self.latency {
            let [p50, p99, p999, max] = Self::percentiles(h);
            row(
                if self.pingpong {
                    "round trip (ns)"
                } else {
                    "one-way latency (ns)"
                },
                format!(
                    "p50 {}  p99 {}  p99.9 {}  max {}  ({} samples)",
                    p50.1,
                    p99.1,
                    p999.1,
                    max.1,
                    h.len()
                ),
            );
        }
        if self.timeouts > 0 {
            row("ping-pong timeouts", self.timeouts.to_string());
        }
        if self.foreign > 0 {
            row("foreign packets received", self.foreign.to_string());
        }
        row(
            "SA memberships after shutdown",
            self.sa_memberships_after_shutdown.to_string(),
        );
        row("buffers still out after stop", self.pool_in_use.to_string());
        row(
            "every node flushed at stop",
            if self.flushed {
                "yes"
            } else {
                "no (stop timed out)"
            }
            .to_owned(),
        );
        row(
            "lcores pinned",
            if self.pinned {
                "yes"
            } else {
                "no (they share CPUs)"
            }
            .to_owned(),
        );
        if let Some(c) = &self.capture {
            row("capture", c.line());
        }
        if let Some(sig) = self.interrupted_by {
            row("interrupted by", format!("{sig} (the run ended early)"));
        }
        if self.app_panics > 0 {
            row(
                "lcores whose application panicked",
                self.app_panics.to_string(),
            );
        }
        row(
            "conservation (tx = rx + drops)",
            if self.conserved() {
                "holds".to_owned()
            } else {
                format!(
                    "BROKEN: {} != {} + {}",
                    self.tx_packets,
                    self.rx_packets,
                    self.drops.total()
                )
            },
        );
        t
    }
}
