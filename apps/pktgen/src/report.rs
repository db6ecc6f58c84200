//! What a run found: drops by `node.reason`, the summary table, the JSON object, and the
//! conservation check.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use ibpoll_wire::{bth, crc, deth, grh, ipoib, lrh};
use serde_json::{json, Map, Value};

use crate::args::Topology;

/// Bytes one pktgen packet of `size` IP bytes takes on an InfiniBand link: LRH, the GRH
/// when it has one (multicast), BTH, DETH, the IPoIB header, the IP packet, the BTH pad
/// to a multiple of 4 bytes, ICRC and VCRC (the frame tshark shows). The physical
/// layer's encoding and delimiters are not counted.
pub fn wire_bytes(size: usize, with_grh: bool) -> u64 {
    let payload = ipoib::HEADER_LEN + size;
    let pad = usize::from(bth::pad_count_for(payload));
    let grh = if with_grh { grh::HEADER_LEN } else { 0 };
    (lrh::HEADER_LEN
        + grh
        + bth::HEADER_LEN
        + deth::HEADER_LEN
        + payload
        + pad
        + crc::ICRC_LEN
        + crc::VCRC_LEN) as u64
}

/// Gb/s on the wire of `pps` packets of `size` IP bytes, `mcast_pps` of them multicast.
pub fn wire_gbps(size: usize, pps: f64, mcast_pps: f64) -> f64 {
    let unicast = (pps - mcast_pps).max(0.0);
    let bytes =
        unicast * wire_bytes(size, false) as f64 + mcast_pps * wire_bytes(size, true) as f64;
    bytes * 8.0 / 1e9
}

/// Gb/s of `pps` IP packets of `size` bytes.
pub fn ip_gbps(size: usize, pps: f64) -> f64 {
    pps * size as f64 * 8.0 / 1e9
}

/// Packets sent and received so far (and of them, multicast), or per second.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub tx: u64,
    pub tx_mcast: u64,
    pub rx: u64,
    pub rx_mcast: u64,
}

/// Packets per second.
#[derive(Debug, Default, Clone, Copy)]
pub struct Rates {
    pub tx: f64,
    pub tx_mcast: f64,
    pub rx: f64,
    pub rx_mcast: f64,
}

impl Counts {
    /// The rates since `last`, `dt` seconds ago.
    pub fn since(&self, last: &Counts, dt: f64) -> Rates {
        let r = |a: u64, b: u64| {
            if dt > 0.0 {
                a.saturating_sub(b) as f64 / dt
            } else {
                0.0
            }
        };
        Rates {
            tx: r(self.tx, last.tx),
            tx_mcast: r(self.tx_mcast, last.tx_mcast),
            rx: r(self.rx, last.rx),
            rx_mcast: r(self.rx_mcast, last.rx_mcast),
        }
    }
}

/// `X Mpps  Y Gb/s IP  Z Gb/s wire`.
fn rate_text(size: usize, pps: f64, mcast_pps: f64) -> String {
    format!(
        "{:>7.3} Mpps {:>7.3} Gb/s IP {:>7.3} Gb/s wire",
        pps / 1e6,
        ip_gbps(size, pps),
        wire_gbps(size, pps, mcast_pps)
    )
}

/// One status line (once per second of the run).
pub fn status_line(
    elapsed_s: f64,
    size: usize,
    r: &Rates,
    drops: u64,
    (joined, groups): (usize, usize),
    neighbours: usize,
) -> String {
    format!(
        "[{elapsed_s:>5.1}s] tx {} | rx {} | drops {drops:>9} | groups {joined}/{groups} | neighbours {neighbours}",
        rate_text(size, r.tx, r.tx_mcast),
        rate_text(size, r.rx, r.rx_mcast),
    )
}

/// The points of a latency distribution, in percent: whole percentiles to 99, then
/// tenths, hundredths and thousandths of a percent to 99.999, then 100 (the maximum).
fn cdf_points() -> Vec<f64> {
    let mut p: Vec<f64> = (0..=99).map(f64::from).collect();
    p.extend((1..=9).map(|i| 99.0 + f64::from(i) * 0.1));
    p.extend((1..=9).map(|i| 99.9 + f64::from(i) * 0.01));
    p.extend((1..=9).map(|i| 99.99 + f64::from(i) * 0.001));
    p.push(100.0);
    p
}

/// `(percentile, ns)` over [`cdf_points`].
pub fn cdf(h: &Histogram<u64>) -> Vec<(f64, u64)> {
    cdf_points()
        .into_iter()
        .map(|p| {
            let v = if p >= 100.0 {
                h.max()
            } else {
                h.value_at_quantile(p / 100.0)
            };
            (p, v)
        })
        .collect()
}

/// The `--cdf` file: a header, then `percentile latency_us` lines.
pub fn cdf_text(h: &Histogram<u64>) -> String {
    use std::fmt::Write;
    let mut t = String::from("# percentile latency_us\n");
    for (p, ns) in cdf(h) {
        let _ = writeln!(t, "{p:.3} {:.3}", ns as f64 / 1e3);
    }
    t
}

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
    /// `sim` or `verbs:DEVICE:PORT`.
    pub fabric: String,
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
    /// Of `tx_packets`, sent to a multicast group.
    pub tx_mcast: u64,
    /// Of those, received from a multicast group (by the sink).
    pub rx_mcast: u64,
    /// The flow control's window (`None`: open loop, or ping-pong).
    pub window: Option<u64>,

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

    fn percentiles(h: &Histogram<u64>) -> [(&'static str, u64); 6] {
        [
            ("min", h.min()),
            ("mean", h.mean().round() as u64),
            ("p50", h.value_at_quantile(0.50)),
            ("p99", h.value_at_quantile(0.99)),
            ("p999", h.value_at_quantile(0.999)),
            ("max", h.max()),
        ]
    }

    /// Received of sent, in percent (100 when nothing was sent).
    pub fn delivered_pct(&self) -> f64 {
        if self.tx_packets == 0 {
            100.0
        } else {
            self.rx_packets as f64 * 100.0 / self.tx_packets as f64
        }
    }

    fn rates(&self) -> Rates {
        Counts {
            tx: self.tx_packets,
            tx_mcast: self.tx_mcast,
            rx: self.rx_packets,
            rx_mcast: self.rx_mcast,
        }
        .since(&Counts::default(), self.duration_s)
    }

    /// The JSON summary (one object).
    pub fn json(&self) -> Value {
        let drops: Map<String, Value> = self
            .drops
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        let mut o = json!({
            "fabric": self.fabric,
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
            "tx_mcast_packets": self.tx_mcast,
            "tx_gbps_ip": ip_gbps(self.size, self.rates().tx),
            "tx_gbps_wire": wire_gbps(self.size, self.rates().tx, self.rates().tx_mcast),
            "rx_gbps_ip": ip_gbps(self.size, self.rates().rx),
            "rx_gbps_wire": wire_gbps(self.size, self.rates().rx, self.rates().rx_mcast),
            "wire_bytes_per_packet": {
                "unicast": wire_bytes(self.size, false),
                "multicast": wire_bytes(self.size, true),
            },
            "delivered_pct": self.delivered_pct(),
            "window": self.window,
            "open_loop": self.window.is_none() && !self.pingpong,

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
            "pool_in_use_after_stop": self.pool_in_use,
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
            let c: Vec<Value> = cdf(h).into_iter().map(|(p, ns)| json!([p, ns])).collect();
            o["latency_cdf"] = Value::Array(c);
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
        let r = self.rates();
        let _ = writeln!(
            t,
            "pktgen summary: {}, topology {}, {}, {}-byte {}/UDP packets, burst {}, {} core{}",
            if self.fabric == "sim" {
                "embedded fabric".to_owned()
            } else {
                format!("fabric {}", self.fabric)
            },
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
            "flow control",
            match (self.window, self.pingpong) {
                (_, true) => "one packet in flight (ping-pong)".to_owned(),
                (Some(w), _) => format!("window {w} packets in flight (--open-loop: none)"),
                (None, _) => "open loop (no window)".to_owned(),
            },
        );
        row(
            "tx",
            format!(
                "{} packets  {}",
                self.tx_packets,
                rate_text(self.size, r.tx, r.tx_mcast).trim_start()
            ),
        );
        row(
            if self.pingpong { "rx (echoes)" } else { "rx" },
            format!(
                "{} packets  {}",
                self.rx_packets,
                rate_text(self.size, r.rx, r.rx_mcast).trim_start()
            ),
        );
        if !self.pingpong {
            row("  of which multicast", format!("{} packets", self.rx_mcast));
        }
        if let Some(n) = self.fwd_mcast_forwarded {
            row("multicast forwarded (ipoib-fwd)", format!("{n} packets"));
        }
        row(
            "on the wire per packet",
            format!(
                "{} bytes unicast, {} multicast (IB headers and CRCs around {} IP bytes)",
                wire_bytes(self.size, false),
                wire_bytes(self.size, true),
                self.size
            ),
        );
        row(
            "delivered",
            format!(
                "{:.4} % of the packets sent ({} lost)",
                self.delivered_pct(),
                self.tx_packets.saturating_sub(self.rx_packets)
            ),
        );
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
            let us = |ns: u64| format!("{:.3}", ns as f64 / 1e3);
            let [min, mean, p50, p99, p999, max] = Self::percentiles(h).map(|(_, v)| us(v));
            row(
                if self.pingpong {
                    "round trip (µs)"
                } else {
                    "one-way latency (µs)"
                },
                format!(
                    "min {min}  mean {mean}  p50 {p50}  p99 {p99}  p99.9 {p999}  max {max}  ({} samples)",
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
