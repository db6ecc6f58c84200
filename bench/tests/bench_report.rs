//! Runs `bench-report` on a small fixture (tests/fixtures/report: three repetitions of
//! a direct run against kernel mmsg, two ping-pong pairs, three rejoins, one callgrind
//! run of the forwarder, criterion estimates, three repetitions of the DPDK peers with
//! testpmd unavailable, and scripts/fwd-ir.sh's JSON) and checks the aggregation:
//! medians (odd and even counts), min and max, per-repetition ratios, drops summed over
//! reasons, instructions per packet, the peers' fields and target status. No speed is
//! asserted: the numbers are made up.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/report")
}

fn out_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ibpoll-bench-report-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn run_report(input: &Path, out: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_bench-report"))
        .arg("--input")
        .arg(input)
        .arg("--out")
        .arg(out)
        .arg("--criterion")
        .arg(input.join("criterion"))
        .output()
        .expect("bench-report runs")
}

fn stat(v: &Value) -> (f64, f64, f64, u64) {
    (
        v["median"]
            .as_f64()
            .unwrap_or_else(|| panic!("median in {v}")),
        v["min"].as_f64().unwrap_or_else(|| panic!("min in {v}")),
        v["max"].as_f64().unwrap_or_else(|| panic!("max in {v}")),
        v["n"].as_u64().unwrap_or_else(|| panic!("n in {v}")),
    )
}

fn result<'a>(latest: &'a Value, bench: &str, case: &str, size: u64, burst: u64) -> &'a Value {
    latest["results"]
        .as_array()
        .expect("results")
        .iter()
        .find(|r| {
            r["bench"] == bench && r["case"] == case && r["size"] == size && r["burst"] == burst
        })
        .unwrap_or_else(|| panic!("no result {bench} {case} {size} {burst}"))
}

fn ratio<'a>(latest: &'a Value, case: &str, metric: &str) -> &'a Value {
    &latest["ratios"]["vs_kernel"]
        .as_array()
        .expect("ratios.vs_kernel")
        .iter()
        .find(|r| r["ibpoll"]["case"] == case && r["metric"] == metric)
        .unwrap_or_else(|| panic!("no ratio {case} {metric}"))["ratio"]
}

fn target<'a>(latest: &'a Value, starts: &str) -> &'a Value {
    latest["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .find(|t| t["target"].as_str().is_some_and(|s| s.starts_with(starts)))
        .unwrap_or_else(|| panic!("no target {starts}"))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9 * b.abs().max(1.0)
}

#[test]
fn aggregates_the_fixture() {
    let out = out_dir("fixture");
    let o = run_report(&fixture(), &out);
    assert!(
        o.status.success(),
        "bench-report failed: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    let latest: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("latest.json")).expect("latest.json"),
    )
    .expect("latest.json is JSON");
    assert_eq!(latest["run"]["mode"], "fixture");
    assert!(latest["machine"]["kernel"].is_string() || latest["machine"]["kernel"].is_null());

    // Three repetitions: odd median, min, max; drops summed over the reasons.
    let direct = &result(&latest, "pktgen", "direct", 64, 32)["figures"];
    assert_eq!(stat(&direct["rx_pps"]), (20.0, 10.0, 30.0, 3));
    assert_eq!(stat(&direct["tx_pps"]), (50.0, 40.0, 60.0, 3));
    assert_eq!(stat(&direct["drops"]), (5.0, 3.0, 10.0, 3));
    assert_eq!(stat(&direct["drops.sink.rx_nombuf"]), (1.0, 0.0, 2.0, 3));
    // loadavg[0] of the one repetition that has it.
    assert_eq!(stat(&direct["loadavg_1m"]), (1.5, 1.5, 1.5, 1));
    let kernel = &result(&latest, "kernel", "mmsg", 64, 32)["figures"];
    assert_eq!(stat(&kernel["rx_pps"]), (4.0, 2.0, 5.0, 3));

    // Ratios pair repetition i with repetition i: 10/2, 30/5, 20/4 = 5, 6, 5. (The
    // ratio of the medians, 20/4, would also be 5, but its max would not be 6.)
    assert_eq!(stat(ratio(&latest, "direct", "rx_pps")), (5.0, 5.0, 6.0, 3));

    // Two repetitions: the median is the mean of the two.
    let pp = &result(&latest, "pktgen", "pingpong_direct", 64, 1)["figures"];
    assert_eq!(stat(&pp["latency_ns.p50"]), (900.0, 800.0, 1000.0, 2));
    // 800/16000 = 0.05, 1000/25000 = 0.04.
    let (m, lo, hi, n) = stat(ratio(&latest, "pingpong_direct", "latency_ns.p50"));
    assert!(
        close(m, 0.045) && close(lo, 0.04) && close(hi, 0.05) && n == 2,
        "{m} {lo} {hi} {n}"
    );

    // Callgrind: main 1000, forwarder 3000 (fwd.rs inlined into the lcore loop), sink
    // 6000, generator 2000; 100 packets sent, 50 received.
    let cg = &latest["instructions_per_packet"]["fwd"];
    assert_eq!(cg["ir_total"], 12_000);
    assert_eq!(cg["ir_per_tx_packet"].as_f64(), Some(120.0));
    assert_eq!(cg["ir_per_rx_packet"].as_f64(), Some(240.0));
    assert_eq!(cg["tx_ir_per_packet"].as_f64(), Some(20.0));
    assert_eq!(cg["rx_ir_per_packet"].as_f64(), Some(120.0));
    assert_eq!(cg["fwd_core_threads"], 1);
    assert_eq!(cg["fwd_core_ir_per_packet"].as_f64(), Some(60.0));
    assert_eq!(cg["path_ir_per_packet"].as_f64(), Some(200.0));
    let roles: Vec<&str> = cg["threads"]
        .as_array()
        .expect("threads")
        .iter()
        .map(|t| t["role"].as_str().expect("role"))
        .collect();
    assert_eq!(roles, ["main", "forwarder", "sink", "generator"]);

    // Rejoin and snapshot read.
    assert_eq!(
        stat(&latest["rejoin"]["rejoin_ms"]),
        (100.0, 90.0, 110.0, 3)
    );
    assert_eq!(
        latest["snapshot_read"]["quiescent_get_ns"].as_f64(),
        Some(1.5)
    );
    assert_eq!(latest["snapshot_read"]["get_ns"].as_f64(), Some(1.0));

    // Targets: measured value and status, including not measured.
    let t = target(&latest, "64-byte direct >= 20 Mpps");
    assert_eq!(
        (t["measured"].as_f64(), &t["met"]),
        (Some(20.0), &Value::Bool(false))
    );
    let t = target(&latest, "64-byte direct >= 10x");
    assert_eq!(
        (t["measured"].as_f64(), &t["met"]),
        (Some(5.0), &Value::Bool(false))
    );
    let t = target(&latest, "ping-pong p50");
    assert_eq!(
        (t["measured"].as_f64(), &t["met"]),
        (Some(900.0), &Value::Bool(true))
    );
    let t = target(&latest, "ping-pong p99");
    assert_eq!(
        (t["measured"].as_f64(), &t["met"]),
        (Some(2000.0), &Value::Bool(true))
    );
    let t = target(&latest, "ping-pong >= 10x better than kernel (p50)");
    assert!(
        t["measured"]
            .as_f64()
            .is_some_and(|x| close(x, 1.0 / 0.045)),
        "{t}"
    );
    assert_eq!(t["met"], true);
    let t = target(&latest, "forwarder <= 150");
    assert_eq!(
        (t["measured"].as_f64(), &t["met"]),
        (Some(60.0), &Value::Bool(true))
    );
    let t = target(&latest, "forwarder >= 15 Mpps");
    assert_eq!((&t["measured"], &t["met"]), (&Value::Null, &Value::Null));
    let t = target(&latest, "snapshot read");
    assert_eq!(t["met"], true);
    let t = target(&latest, "10,000-group rejoin");
    assert_eq!(
        (t["measured"].as_f64(), &t["met"]),
        (Some(100.0), &Value::Bool(true))
    );
    let t = target(&latest, "rejoin with <= 64");
    assert_eq!(
        (t["measured"].as_f64(), &t["met"]),
        (Some(64.0), &Value::Bool(true))
    );

    // The peers, paired by repetition: ipoib-fwd / l3fwd = 8/20, 8/10, 4/16 = 0.4,
    // 0.8, 0.25 (the ratio of the medians, 8/16, would be 0.5).
    let num = |v: &Value| v.as_f64().unwrap_or_else(|| panic!("a number, not {v}"));
    assert_eq!(latest["schema"], 2);
    assert_eq!(num(&latest["peers"]["dpdk_l3fwd"]["rx_pps"]), 16.0);
    assert_eq!(
        stat(&latest["peers"]["dpdk_l3fwd"]["rx_pps_stat"]),
        (16.0, 10.0, 20.0, 3)
    );
    assert_eq!(latest["peers"]["dpdk_testpmd_io"]["rx_pps"], Value::Null);
    assert!(latest["peers"]["dpdk_testpmd_io"]["unavailable"]
        .as_str()
        .is_some_and(|s| s.contains("dpdk-testpmd is not installed")));
    assert_eq!(num(&latest["ipoib_fwd_1lcore"]["rx_pps"]), 8.0);
    assert_eq!(num(&latest["ratios"]["ipoib_fwd_vs_dpdk_l3fwd"]), 0.4);
    assert_eq!(
        stat(&latest["ratios"]["vs_peers"]["ipoib_fwd_vs_dpdk_l3fwd"]),
        (0.4, 0.25, 0.8, 3)
    );
    assert_eq!(
        latest["ratios"]["ipoib_fwd_vs_dpdk_testpmd_io"],
        Value::Null
    );
    assert_eq!(num(&latest["direct_ring"]["rx_pps"]), 4.0);
    assert_eq!(
        latest["forwarder_ir_per_packet"],
        serde_json::json!({"1": 900.0, "8": 450.0, "32": 400.0})
    );
    assert_eq!(latest["run"]["quick"], false);
    assert_eq!(latest["run"]["loadavg_at_start"], "0.50 0.40 0.30");
    assert!(latest["machine"]["cores"].as_u64().is_some_and(|c| c >= 1));
    let t = target(&latest, "ipoib-fwd on one lcore >= 0.5x");
    assert_eq!(
        (t["measured"].as_f64(), &t["met"]),
        (Some(0.4), &Value::Bool(false))
    );
    let t = target(&latest, "ipoib-fwd forwarder <= 150");
    assert_eq!(
        (t["measured"].as_f64(), &t["met"]),
        (Some(400.0), &Value::Bool(false))
    );
    let t = target(&latest, "direct over the ring PMD");
    assert_eq!(t["measured"].as_f64(), Some(4.0));
    let t = target(&latest, "ping-pong over the ring PMD");
    assert_eq!((&t["measured"], &t["met"]), (&Value::Null, &Value::Null));

    // Both plots, with their text as <text> elements.
    for svg in ["throughput.svg", "latency_cdf.svg"] {
        let s = std::fs::read_to_string(out.join(svg)).expect(svg);
        assert!(s.starts_with("<svg") && s.contains("<text"), "{svg}");
    }
    // The Markdown summary: the 64-byte row with the direct ratio, the targets.
    let md = std::fs::read_to_string(out.join("summary.md")).expect("summary.md");
    assert!(
        md.contains(
            "| 64 | 32 | 0.000 (0.000-0.000) | - | 0.000 (0.000-0.000) | 5.000 (5.000-6.000) | - |"
        ),
        "{md}"
    );
    assert!(
        md.contains("| ping-pong p50 <= 1 us | 900 ns | yes |"),
        "{md}"
    );
    assert!(
        md.contains("| ipoib_fwd_vs_dpdk_l3fwd: replay_1lcore / l3fwd | 0.400x (0.250-0.800) |"),
        "{md}"
    );
    assert!(md.contains("| 32 | 550 | 120 | 30 | 400 |"), "{md}");
    let svg = std::fs::read_to_string(out.join("throughput.svg")).expect("svg");
    assert!(
        svg.contains("DPDK l3fwd") && !svg.contains("DPDK testpmd"),
        "the peers that ran"
    );
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn a_bad_line_is_named() {
    let input = out_dir("bad-input");
    std::fs::create_dir_all(&input).expect("temp dir");
    std::fs::write(
        input.join("runs.jsonl"),
        "{\"bench\":\"kernel\",\"case\":\"mmsg\",\"size\":64,\"burst\":32,\"rep\":1,\"result\":{}}\n{\"bench\":\"kernel\"}\n",
    )
    .expect("write");
    let out = out_dir("bad-out");
    let o = run_report(&input, &out);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("runs.jsonl:2") && err.contains("case"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&input);
}

/// One thread of a forwarder run in callgrind's format: `per_packet` Ir per packet on
/// top of `setup`, of which the lcore loop's calls into the simulated NIC cost `nic` and
/// into the controller `ctl` per packet.
fn cg_thread(thread: u64, marker: &str, setup: u64, packets: u64, per: [u64; 3]) -> String {
    let [all, nic, ctl] = per.map(|x| x * packets);
    let own = setup + all - nic - ctl;
    format!(
        "version: 1\nthread: {thread}\npositions: line\nevents: Ir\nsummary: {}\n\n\
         fl=(1) {marker}\nfn=(1) ibpoll::lcore::DataLcore<A>::run\n0 {own}\n\
         cfn=(2) <ibpoll_pmd_sim::tx::SimTxQueue as ibpoll_dev::queue::TxQueue>::tx_burst\n\
         calls=1 0\n0 {nic}\n\
         cfn=(3) ibpoll::lcore::CtlHost::poll\ncalls=1 0\n0 {ctl}\n\ntotals: {}\n",
        setup + all,
        setup + all
    )
}

#[test]
fn two_counts_give_the_marginal_figures_and_the_targets() {
    let input = out_dir("marginal-input");
    std::fs::create_dir_all(&input).expect("temp dir");
    let mut runs = String::new();
    for (k, count) in [(1u64, 1000u64), (2, 2000)] {
        // One priming packet; every packet arrives.
        let n = count + 1;
        let prefix = format!("callgrind.fwd.{k}");
        let threads = [
            (
                2,
                "/work/main/apps/pktgen/src/traffic.rs pktgen::traffic::Sink",
                [200, 20, 0],
            ),
            (3, "/work/main/apps/ipoib-fwd/src/fwd.rs", [400, 150, 100]),
            (
                4,
                "/work/main/apps/pktgen/src/traffic.rs pktgen::traffic::Generator",
                [300, 100, 0],
            ),
        ];
        for (t, marker, per) in threads {
            std::fs::write(
                input.join(format!("{prefix}-{t:02}")),
                cg_thread(t, marker, 5_000_000, n, per),
            )
            .expect("write");
        }
        runs.push_str(&format!(
            "{{\"bench\":\"callgrind\",\"case\":\"fwd\",\"size\":64,\"burst\":32,\"rep\":{k},\"callgrind\":\"{prefix}\",\"result\":{{\"count\":{count},\"count_reached\":true,\"prime_packets\":1,\"tx_packets\":{n},\"rx_packets\":{n},\"drops\":{{}}}}}}\n"
        ));
    }
    std::fs::write(input.join("runs.jsonl"), runs).expect("write");
    let out = out_dir("marginal-out");
    let o = run_report(&input, &out);
    assert!(
        o.status.success(),
        "bench-report failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let latest: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("latest.json")).expect("latest.json"),
    )
    .expect("JSON");
    let cg = &latest["instructions_per_packet"]["fwd"];
    assert_eq!(cg["runs"].as_array().map(Vec::len), Some(2), "{cg}");
    let m = &cg["marginal"];
    assert_eq!(m["valid"], true, "{m}");
    let f = |k: &str| m[k].as_f64().unwrap_or_else(|| panic!("{k} in {m}"));
    assert_eq!(f("tx_ir_per_packet"), 300.0);
    assert_eq!(f("rx_ir_per_packet"), 200.0);
    assert_eq!(f("fwd_core_ir_per_packet"), 400.0);
    assert_eq!(f("fwd_core_nic_ir_per_packet"), 150.0);
    assert_eq!(f("fwd_core_ctl_ir_per_packet"), 100.0);
    assert_eq!(f("fwd_core_rest_ir_per_packet"), 150.0);
    assert_eq!(f("fwd_core_ir_per_packet_excl_nic"), 250.0);
    assert_eq!(f("path_ir_per_packet"), 900.0);
    // The single run carries the set-up.
    assert!(
        cg["fwd_core_ir_per_packet"].as_f64().unwrap() > 2000.0,
        "{cg}"
    );
    // The targets read the marginal figures: the whole core and without the NIC.
    let t = target(&latest, "forwarder <= 150 instructions per packet");
    assert_eq!(t["measured"].as_f64(), Some(400.0), "{t}");
    assert!(t["metric"].as_str().unwrap().contains("marginal"), "{t}");
    let t = target(
        &latest,
        "forwarder <= 150 instructions per packet, simulated NIC excluded",
    );
    assert_eq!(t["measured"].as_f64(), Some(250.0), "{t}");
    let md = std::fs::read_to_string(out.join("summary.md")).expect("summary.md");
    assert!(
        md.contains(
            "| fwd | 1000 / 2000 | 300 | 400 | 150 | 100 | 150 | 250 | 0.000 | 200 | 900 |"
        ),
        "{md}"
    );
    let _ = std::fs::remove_dir_all(&input);
    let _ = std::fs::remove_dir_all(&out);
}
