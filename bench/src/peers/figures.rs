//! `bench-report`'s figures beside the DPDK peers (issue 9, item 7), from runs that
//! `scripts/bench.sh` made back to back in each repetition:
//!
//! | runs.jsonl `bench` / `case` | what ran |
//! | --- | --- |
//! | `dpdk` / `l3fwd` | DPDK l3fwd, LPM, one lcore, two net_pcap `infinite_rx` ports |
//! | `ipoib-fwd` / `replay_1lcore` | `ipoib-fwd --pmd replay --cores 1` |
//! | `dpdk` / `testpmd_io` | dpdk-testpmd io forwarding over two net_null ports |
//! | `pktgen` / `direct_ring` | `pktgen --fabric ring --topology direct` |
//! | `pktgen` / `pingpong_direct_ring` | `pktgen --pingpong --fabric ring --topology direct` |
//!
//! A peer that could not run has runs whose result is `{"unavailable": "why"}`: its
//! figures are null and the reason is reported. The forwarder's instructions per packet
//! come from `scripts/fwd-ir.sh`'s JSON (`fwd_ir.json` in the input directory).
//!
//! Every rate is `rx_pps` as the program reports it: for l3fwd and testpmd the packets
//! received by both ports per second (DPDK telemetry, [`super::telemetry`]); for
//! ipoib-fwd the packets its two replayed interfaces handed to the lcore per second;
//! for pktgen the packets its sink received per second. A ratio pairs repetition i of
//! one with repetition i of the other (they ran back to back) and reports the median,
//! min and max of the per-repetition ratios.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Map, Value};

use crate::report::{paired_ratio, Group, Key, Stat, Target};

/// One figure of this section: where its runs are, and what it is called in
/// `latest.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Case {
    pub bench: &'static str,
    pub case: &'static str,
    /// Its name in `latest.json`.
    pub name: &'static str,
    /// Its label in the summary and the plot.
    pub label: &'static str,
}

pub const L3FWD: Case = Case {
    bench: "dpdk",
    case: "l3fwd",
    name: "dpdk_l3fwd",
    label: "DPDK l3fwd (LPM, 1 lcore, 2 net_pcap infinite_rx ports)",
};
pub const TESTPMD_IO: Case = Case {
    bench: "dpdk",
    case: "testpmd_io",
    name: "dpdk_testpmd_io",
    label: "DPDK testpmd io (1 forwarding lcore, 2 net_null ports)",
};
pub const IPOIB_FWD: Case = Case {
    bench: "ipoib-fwd",
    case: "replay_1lcore",
    name: "ipoib_fwd_1lcore",
    label: "ipoib-fwd (1 lcore, 2 replay PMD interfaces)",
};
pub const DIRECT_RING: Case = Case {
    bench: "pktgen",
    case: "direct_ring",
    name: "direct_ring",
    label: "pktgen direct over the ring PMD",
};
pub const PINGPONG_RING: Case = Case {
    bench: "pktgen",
    case: "pingpong_direct_ring",
    name: "pingpong_ring",
    label: "pktgen ping-pong over the ring PMD",
};

/// The throughput cases, in the order the summary and the plot show them.
pub const THROUGHPUT: [Case; 4] = [L3FWD, IPOIB_FWD, TESTPMD_IO, DIRECT_RING];

/// The ratios against the peers: (name in `ratios`, numerator, denominator).
pub const RATIOS: [(&str, Case, Case); 3] = [
    ("ipoib_fwd_vs_dpdk_l3fwd", IPOIB_FWD, L3FWD),
    ("ipoib_fwd_vs_dpdk_testpmd_io", IPOIB_FWD, TESTPMD_IO),
    ("direct_ring_vs_dpdk_testpmd_io", DIRECT_RING, TESTPMD_IO),
];

/// The receive bursts `forwarder_ir_per_packet` is read at.
pub const IR_BURSTS: [&str; 3] = ["1", "8", "32"];

/// The group of a case's runs (whatever its size and burst), if it ran.
pub fn group(groups: &BTreeMap<Key, Group>, c: Case) -> Option<&Group> {
    groups
        .iter()
        .find(|(k, _)| k.bench == c.bench && k.case == c.case)
        .map(|(_, g)| g)
}

/// Why a case did not run, if its runs say so.
pub fn unavailable(groups: &BTreeMap<Key, Group>, c: Case) -> Option<String> {
    let g = group(groups, c)?;
    g.runs
        .iter()
        .find_map(|r| r.result["unavailable"].as_str().map(String::from))
}

/// A case's `metric` over its repetitions.
pub fn stat(groups: &BTreeMap<Key, Group>, c: Case, metric: &str) -> Option<Stat> {
    group(groups, c).and_then(|g| g.stat(metric))
}

/// A ratio of two cases' `rx_pps`, paired by repetition.
pub fn ratio(groups: &BTreeMap<Key, Group>, a: Case, b: Case) -> Option<Stat> {
    let (ga, gb) = (group(groups, a)?, group(groups, b)?);
    paired_ratio(&ga.series("rx_pps"), &gb.series("rx_pps"))
}

fn median(s: Option<Stat>) -> Value {
    json!(s.map(|s| s.median))
}

fn stat_json(s: Option<Stat>) -> Value {
    s.map_or(Value::Null, Stat::to_json)
}

/// One case's entry: `rx_pps` and `tx_pps` (medians, null when it did not run), the
/// same as `{median, min, max, n}`, and why it did not run.
pub fn entry(groups: &BTreeMap<Key, Group>, c: Case) -> Value {
    let g = group(groups, c);
    let rx = stat(groups, c, "rx_pps");
    let tx = stat(groups, c, "tx_pps");
    json!({
        "what": c.label,
        "rx_pps": median(rx),
        "tx_pps": median(tx),
        "rx_pps_stat": stat_json(rx),
        "tx_pps_stat": stat_json(tx),
        "size": g.map(|g| g.key.size),
        "burst": g.map(|g| g.key.burst),
        "repetitions": g.map_or(0, |g| g.runs.len()),
        "unavailable": unavailable(groups, c),
    })
}

/// `peers`: the DPDK programs.
pub fn peers_json(groups: &BTreeMap<Key, Group>) -> Value {
    json!({
        L3FWD.name: entry(groups, L3FWD),
        TESTPMD_IO.name: entry(groups, TESTPMD_IO),
    })
}

/// `pingpong_ring`: the round trip over the ring PMD, `latency_ns` percentiles.
pub fn pingpong_json(groups: &BTreeMap<Key, Group>) -> Value {
    let l = |p: &str| stat_json(stat(groups, PINGPONG_RING, &format!("latency_ns.{p}")));
    json!({
        "what": PINGPONG_RING.label,
        "latency_ns": {"p50": l("p50"), "p99": l("p99"), "p999": l("p999"), "max": l("max")},
        "unavailable": unavailable(groups, PINGPONG_RING),
    })
}

/// The ratios against the peers, into `ratios`: each as a number (the median) under its
/// name, and `{median, min, max, n, what}` under `vs_peers.<name>`.
pub fn add_ratios(groups: &BTreeMap<Key, Group>, ratios: &mut Map<String, Value>) {
    let mut detail = Map::new();
    for (name, a, b) in RATIOS {
        let r = ratio(groups, a, b);
        ratios.insert(name.to_string(), median(r));
        let mut d = stat_json(r);
        if d.is_object() {
            d["what"] = json!(format!(
                "rx_pps of {} / rx_pps of {}, per repetition (back to back)",
                a.label, b.label
            ));
        }
        detail.insert(name.to_string(), d);
    }
    ratios.insert(String::from("vs_peers"), Value::Object(detail));
}

/// `scripts/fwd-ir.sh`'s JSON (`fwd_ir.json` in `dir`), or null when it did not run; a
/// file that is not JSON is an error.
pub fn read_fwd_ir(dir: &Path) -> Result<Value, String> {
    let p = dir.join("fwd_ir.json");
    match std::fs::read_to_string(&p) {
        Ok(t) => serde_json::from_str(&t).map_err(|e| format!("{}: not JSON: {e}", p.display())),
        Err(_) => Ok(Value::Null),
    }
}

/// `forwarder_ir_per_packet`: `{"1": Ir, "8": Ir, "32": Ir}` (null for a burst that was
/// not measured), or null without fwd-ir.sh's figures.
pub fn forwarder_ir(fwd_ir: &Value) -> Value {
    let f = &fwd_ir["forwarder_ir_per_packet"];
    if !f.is_object() {
        return Value::Null;
    }
    let m: Map<String, Value> = IR_BURSTS
        .iter()
        .map(|b| (b.to_string(), json!(f[*b].as_f64())))
        .collect();
    Value::Object(m)
}

/// Issue 9's targets for this section, measured or not.
pub fn targets(groups: &BTreeMap<Key, Group>, fwd_ir: &Value) -> Vec<Target> {
    let l3 = ratio(groups, IPOIB_FWD, L3FWD);
    vec![
        Target {
            target: "ipoib-fwd forwarder <= 150 instructions per packet at burst 32, NIC excluded (replay PMD)",
            metric: String::from(
                "scripts/fwd-ir.sh: callgrind of ipoib-fwd --pmd replay --cores 1 --burst 32, marginal over two durations: the lcore's Ir less the replay NIC and the controller, per packet forwarded",
            ),
            cmp: "<=",
            threshold: 150.0,
            unit: "Ir/packet",
            measured: fwd_ir["forwarder_ir_per_packet"]["32"].as_f64(),
            note: String::from("the stack and ipoib-fwd; the goal beyond: 75"),
        },
        Target {
            target: "ipoib-fwd on one lcore >= 0.5x DPDK l3fwd (same run)",
            metric: String::from(
                "ipoib-fwd --pmd replay --cores 1 rx_pps / l3fwd (LPM, 1 lcore, net_pcap infinite_rx) rx_pps, per repetition, median",
            ),
            cmp: ">=",
            threshold: 0.5,
            unit: "x",
            measured: l3.map(|s| s.median),
            note: String::from("the goal beyond: 1.0x"),
        },
        Target {
            target: "direct over the ring PMD >= 20 Mpps",
            metric: String::from(
                "pktgen --fabric ring --topology direct --size 64 --burst 32: rx_pps at the sink, median",
            ),
            cmp: ">=",
            threshold: 20e6,
            unit: "pps",
            measured: stat(groups, DIRECT_RING, "rx_pps").map(|s| s.median),
            note: String::from("pktgen's default --cores: the generator and the sink one lcore each; the goal beyond: 40 Mpps"),
        },
        Target {
            target: "ping-pong over the ring PMD p50 <= 1 us",
            metric: String::from(
                "pktgen --pingpong --fabric ring --topology direct --size 64: latency_ns.p50, median",
            ),
            cmp: "<=",
            threshold: 1000.0,
            unit: "ns",
            measured: stat(groups, PINGPONG_RING, "latency_ns.p50").map(|s| s.median),
            note: String::new(),
        },
    ]
}

fn mpps(s: Option<Stat>) -> String {
    s.map_or(String::from("-"), |s| {
        format!(
            "{:.3} ({:.3}-{:.3})",
            s.median / 1e6,
            s.min / 1e6,
            s.max / 1e6
        )
    })
}

fn times(s: Option<Stat>) -> String {
    s.map_or(String::from("-"), |s| {
        format!("{:.3}x ({:.3}-{:.3})", s.median, s.min, s.max)
    })
}

/// The section of `summary.md`.
pub fn markdown(groups: &BTreeMap<Key, Group>, fwd_ir: &Value) -> String {
    use std::fmt::Write as _;
    let mut s = String::from(
        "\nBeside DPDK, measured back to back in each repetition of this run (64-byte IP packets, burst 32): received Mpps, median (min-max):\n\n| what | Mpps received | transmitted | note |\n| --- | ---: | ---: | --- |\n",
    );
    for c in THROUGHPUT {
        let note = unavailable(groups, c).map_or(String::new(), |w| format!("not run: {w}"));
        let _ = writeln!(
            s,
            "| {} | {} | {} | {note} |",
            c.label,
            mpps(stat(groups, c, "rx_pps")),
            mpps(stat(groups, c, "tx_pps")),
        );
    }
    s.push_str(
        "\nRatios, per repetition, median (min-max):\n\n| ratio | value |\n| --- | ---: |\n",
    );
    for (name, a, b) in RATIOS {
        let _ = writeln!(
            s,
            "| {name}: {} / {} | {} |",
            a.case,
            b.case,
            times(ratio(groups, a, b))
        );
    }
    let p50 = stat(groups, PINGPONG_RING, "latency_ns.p50");
    let p99 = stat(groups, PINGPONG_RING, "latency_ns.p99");
    if let (Some(a), Some(b)) = (p50, p99) {
        let _ = writeln!(
            s,
            "\nPing-pong over the ring PMD, 64-byte IP packets: p50 {:.2} us, p99 {:.2} us (medians).",
            a.median / 1e3,
            b.median / 1e3
        );
    }
    if let Some(why) = fwd_ir["unavailable"].as_str() {
        let _ = writeln!(
            s,
            "\nipoib-fwd's forwarder, instructions per packet: not measured ({why})."
        );
    }
    let f = &fwd_ir["forwarder_ir_per_packet"];
    if f.is_object() {
        s.push_str("\nipoib-fwd's forwarding lcore over the replay PMD, instructions per forwarded packet (scripts/fwd-ir.sh: callgrind, marginal over two durations):\n\n| burst | lcore | replay NIC | controller | forwarder (stack + ipoib-fwd) |\n| ---: | ---: | ---: | ---: | ---: |\n");
        for b in IR_BURSTS {
            let n = |k: &str| {
                fwd_ir[k][b]
                    .as_f64()
                    .map_or(String::from("-"), |x| format!("{x:.0}"))
            };
            let ctl = match (
                fwd_ir["forwarder_ir_per_packet_with_controller"][b].as_f64(),
                f[b].as_f64(),
            ) {
                (Some(w), Some(x)) => format!("{:.0}", w - x),
                _ => String::from("-"),
            };
            let _ = writeln!(
                s,
                "| {b} | {} | {} | {ctl} | {} |",
                n("lcore_ir_per_packet"),
                n("nic_ir_per_packet"),
                n("forwarder_ir_per_packet"),
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{group as group_runs, Run};

    fn run(bench: &str, case: &str, rep: u64, result: Value) -> Run {
        Run {
            bench: bench.into(),
            case: case.into(),
            size: 64,
            burst: 32,
            rep,
            result,
            cdf: None,
            callgrind: None,
        }
    }

    #[test]
    fn ratios_pair_repetitions_and_a_missing_peer_is_null() {
        let runs = vec![
            run("dpdk", "l3fwd", 1, json!({"rx_pps": 20.0})),
            run("dpdk", "l3fwd", 2, json!({"rx_pps": 10.0})),
            run("ipoib-fwd", "replay_1lcore", 1, json!({"rx_pps": 10.0})),
            run("ipoib-fwd", "replay_1lcore", 2, json!({"rx_pps": 10.0})),
            run(
                "dpdk",
                "testpmd_io",
                1,
                json!({"unavailable": "dpdk-testpmd is not installed"}),
            ),
        ];
        let g = group_runs(&runs);
        // 10/20 and 10/10: median 0.75; the ratio of the medians (10/15) would differ.
        let r = ratio(&g, IPOIB_FWD, L3FWD).unwrap();
        assert_eq!((r.median, r.min, r.max, r.n), (0.75, 0.5, 1.0, 2));
        let mut m = Map::new();
        add_ratios(&g, &mut m);
        assert_eq!(m["ipoib_fwd_vs_dpdk_l3fwd"], json!(0.75));
        assert_eq!(m["ipoib_fwd_vs_dpdk_testpmd_io"], Value::Null);
        let p = peers_json(&g);
        assert_eq!(p["dpdk_l3fwd"]["rx_pps"], json!(15.0));
        assert_eq!(p["dpdk_testpmd_io"]["rx_pps"], Value::Null);
        assert_eq!(
            p["dpdk_testpmd_io"]["unavailable"],
            json!("dpdk-testpmd is not installed")
        );
        let md = markdown(&g, &Value::Null);
        assert!(
            md.contains("not run: dpdk-testpmd is not installed"),
            "{md}"
        );
    }

    #[test]
    fn forwarder_ir_reads_each_burst() {
        let v = json!({"forwarder_ir_per_packet": {"1": 900.5, "32": 400.0}});
        assert_eq!(
            forwarder_ir(&v),
            json!({"1": 900.5, "8": null, "32": 400.0})
        );
        assert_eq!(forwarder_ir(&Value::Null), Value::Null);
        let failed = json!({"unavailable": "fwd-ir.sh: burst 8: no more packets"});
        assert_eq!(forwarder_ir(&failed), Value::Null);
        let md = markdown(&BTreeMap::new(), &failed);
        assert!(
            md.contains("not measured (fwd-ir.sh: burst 8: no more packets)"),
            "{md}"
        );
        assert!(targets(&BTreeMap::new(), &failed)[0].measured.is_none());
        let t = targets(&BTreeMap::new(), &v);
        assert_eq!(t[0].measured, Some(400.0));
        assert_eq!(t[0].met(), Some(false));
        assert_eq!(t[1].met(), None, "no l3fwd run: not measured");
    }
}
