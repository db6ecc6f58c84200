//! `dpdk-peer` and the peers' part of `latest.json`, end to end without DPDK:
//!
//! * `dpdk-peer rate` against a stand-in for a DPDK process's telemetry socket (a
//!   `SOCK_SEQPACKET` server answering the greeting, `/ethdev/list` and
//!   `/ethdev/stats,N` as DPDK 22.11 does, its counters growing by a known amount per
//!   query): the packets it reports are exact, its rate is packets / its window;
//! * its JSON line, recorded as `scripts/bench.sh` records a run, beside an ipoib-fwd
//!   run, a peer recorded as unavailable and `scripts/fwd-ir.sh`'s JSON, through
//!   `bench-report`: the new fields of `latest.json` (`peers.*.rx_pps`,
//!   `ipoib_fwd_1lcore.rx_pps`, `ratios.ipoib_fwd_vs_dpdk_l3fwd`,
//!   `forwarder_ir_per_packet`, `direct_ring.rx_pps`, the run's settings);
//! * `dpdk-peer pcap`: l3fwd's captures, read back by tshark where it is installed.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;

use ibpoll_bench::peers::telemetry;
use serde_json::{json, Value};

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ibpoll-dpdk-peer-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// Per stats query of a port, its counters grow by this many packets.
const STEP: u64 = 1000;

/// A stand-in DPDK process: two ports; the k-th `/ethdev/stats` query of a port
/// answers `ipackets = opackets = k * STEP`. Serves one connection.
fn fake_dpdk(sock: &Path) -> thread::JoinHandle<()> {
    let listener = telemetry::listen(sock).expect("listen");
    thread::spawn(move || {
        let (mut c, _) = listener.accept().expect("accept");
        c.write_all(br#"{"version":"DPDK 22.11.11","pid":4242,"max_output_len":16384}"#)
            .expect("greeting");
        let mut queries = [0u64; 2];
        let mut buf = [0u8; 256];
        loop {
            let n = match c.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let cmd = std::str::from_utf8(&buf[..n]).expect("UTF-8 command");
            let answer = if cmd == "/ethdev/list" {
                json!({"/ethdev/list": [0, 1]})
            } else if let Some(p) = cmd.strip_prefix("/ethdev/stats,") {
                let p: usize = p.parse().expect("port");
                queries[p] += 1;
                let k = queries[p] * STEP;
                json!({"/ethdev/stats": {"ipackets": k, "opackets": k, "ibytes": 0,
                    "obytes": 0, "imissed": 0, "ierrors": 0, "oerrors": 0, "rx_nombuf": 0}})
            } else {
                json!({"error": "unknown command"})
            };
            if c.write_all(answer.to_string().as_bytes()).is_err() {
                return;
            }
        }
    })
}

fn last_json(stdout: &[u8]) -> Value {
    let text = String::from_utf8_lossy(stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON line in {text}"));
    serde_json::from_str(line).expect("a JSON line")
}

/// `dpdk-peer rate` against the stand-in: the JSON line it prints.
fn measure_fake(dir: &Path) -> Value {
    let sock = dir.join(telemetry::SOCKET_NAME);
    let server = fake_dpdk(&sock);
    let o = Command::new(env!("CARGO_BIN_EXE_dpdk-peer"))
        .args(["rate", "--socket"])
        .arg(&sock)
        .args([
            "--warmup",
            "0",
            "--duration",
            "0.2",
            "--wait",
            "10",
            "--json",
            "-",
        ])
        .output()
        .expect("dpdk-peer runs");
    assert!(
        o.status.success(),
        "dpdk-peer rate failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    server
        .join()
        .expect("the stand-in ends when dpdk-peer hangs up");
    last_json(&o.stdout)
}

#[test]
fn rate_reads_the_counters_twice() {
    let dir = temp_dir("rate");
    let v = measure_fake(&dir);
    // Sample 1 (waiting for traffic), then the window between samples 2 and 3: one
    // STEP per port.
    assert_eq!(v["rx_packets"], json!(2 * STEP), "{v}");
    assert_eq!(v["tx_packets"], json!(2 * STEP), "{v}");
    let secs = v["duration_s"].as_f64().expect("duration_s");
    assert!(secs >= 0.2, "{v}");
    let pps = v["rx_pps"].as_f64().expect("rx_pps");
    assert!((pps - 2.0 * STEP as f64 / secs).abs() < 1e-6 * pps, "{v}");
    assert_eq!(v["ports"].as_array().map(Vec::len), Some(2));
    assert_eq!(v["dpdk"], "DPDK 22.11.11");
    assert_eq!(v["pid"], 4242);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_missing_socket_fails_with_its_path() {
    let dir = temp_dir("nosock");
    let o = Command::new(env!("CARGO_BIN_EXE_dpdk-peer"))
        .args([
            "rate",
            "--file-prefix",
            "ibpoll-test-no-such-prefix",
            "--wait",
            "0.3",
        ])
        .output()
        .expect("dpdk-peer runs");
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("ibpoll-test-no-such-prefix/dpdk_telemetry.v2"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A line of runs.jsonl as bench.sh's `record` writes it.
fn record(bench: &str, case: &str, burst: u64, rep: u64, result: &Value) -> String {
    format!(
        "{{\"bench\":\"{bench}\",\"case\":\"{case}\",\"size\":64,\"burst\":{burst},\"rep\":{rep},\"result\":{result}}}\n"
    )
}

#[test]
fn the_peers_figures_reach_latest_json() {
    let dir = temp_dir("report");
    let l3fwd = measure_fake(&dir);
    let l3_pps = l3fwd["rx_pps"].as_f64().expect("rx_pps");
    let ipoib = json!({"program": "ipoib-fwd", "pmd": "replay", "cores": 1,
        "rx_pps": l3_pps * 0.6, "tx_pps": l3_pps * 0.6, "drops": {}, "load_avg_1m": 1.5});
    let ring = json!({"fabric": "ring", "topology": "direct", "rx_pps": 7.5e6, "tx_pps": 7.5e6});
    let mut runs = record("dpdk", "l3fwd", 32, 1, &l3fwd);
    runs += &record("ipoib-fwd", "replay_1lcore", 32, 1, &ipoib);
    // As bench.sh's `unavailable` writes it.
    runs += &record(
        "dpdk",
        "testpmd_io",
        32,
        1,
        &json!({"unavailable": "dpdk-testpmd is not installed (Debian package dpdk-dev)"}),
    );
    runs += &record("pktgen", "direct_ring", 32, 1, &ring);
    runs += &record(
        "pktgen",
        "pingpong_direct_ring",
        1,
        1,
        &json!({"latency_ns": {"p50": 900, "p99": 1500, "p999": 3000, "max": 9000}}),
    );
    std::fs::write(dir.join("runs.jsonl"), runs).expect("runs.jsonl");
    // scripts/fwd-ir.sh's line, as it prints it.
    std::fs::write(
        dir.join("fwd_ir.json"),
        r#"{"forwarder_ir_per_packet":{"1":935.6,"8":469.8,"32":140.0},"forwarder_ir_per_packet_with_controller":{"1":1990.6,"8":596.6,"32":154.9},"nic_ir_per_packet":{"1":436.2,"8":152.5,"32":122.1},"lcore_ir_per_packet":{"1":2426.8,"8":749.1,"32":277.0},"durations_s":[2,4],"loadavg":"1.91 2.13 3.48","method":"..."}"#,
    )
    .expect("fwd_ir.json");
    std::fs::write(
        dir.join("meta.json"),
        r#"{"mode":"quick","quick":true,"repetitions":1,"loadavg_at_start":"1.00 2.00 3.00","cpus":2}"#,
    )
    .expect("meta.json");
    let out = dir.join("out");
    let o = Command::new(env!("CARGO_BIN_EXE_bench-report"))
        .arg("--input")
        .arg(&dir)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("bench-report runs");
    assert!(
        o.status.success(),
        "bench-report failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let latest: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("latest.json")).expect("latest.json"),
    )
    .expect("JSON");
    let num = |v: &Value| v.as_f64().unwrap_or_else(|| panic!("a number, not {v}"));
    assert_eq!(latest["schema"], 2);
    assert_eq!(num(&latest["peers"]["dpdk_l3fwd"]["rx_pps"]), l3_pps);
    assert_eq!(latest["peers"]["dpdk_testpmd_io"]["rx_pps"], Value::Null);
    assert!(latest["peers"]["dpdk_testpmd_io"]["unavailable"]
        .as_str()
        .is_some_and(|s| s.contains("not installed")));
    assert_eq!(num(&latest["ipoib_fwd_1lcore"]["rx_pps"]), l3_pps * 0.6);
    let r = num(&latest["ratios"]["ipoib_fwd_vs_dpdk_l3fwd"]);
    assert!((r - 0.6).abs() < 1e-12, "{r}");
    assert_eq!(
        latest["ratios"]["ipoib_fwd_vs_dpdk_testpmd_io"],
        Value::Null
    );
    assert!(latest["ratios"]["vs_kernel"].is_array());
    assert_eq!(
        latest["forwarder_ir_per_packet"],
        json!({"1": 935.6, "8": 469.8, "32": 140.0})
    );
    assert_eq!(num(&latest["direct_ring"]["rx_pps"]), 7.5e6);
    assert_eq!(
        num(&latest["pingpong_ring"]["latency_ns"]["p50"]["median"]),
        900.0
    );
    assert_eq!(latest["run"]["quick"], true);
    assert_eq!(latest["run"]["loadavg_at_start"], "1.00 2.00 3.00");
    assert!(latest["machine"]["cpu_model"].is_string() || latest["machine"]["cpu_model"].is_null());
    assert!(num(&latest["machine"]["cores"]) >= 1.0);
    // The targets of issue 9 read the same figures.
    let target = |starts: &str| {
        latest["targets"]
            .as_array()
            .expect("targets")
            .iter()
            .find(|t| t["target"].as_str().is_some_and(|s| s.starts_with(starts)))
            .unwrap_or_else(|| panic!("no target {starts}"))
            .clone()
    };
    let t = target("ipoib-fwd forwarder <= 150");
    assert_eq!((num(&t["measured"]), &t["met"]), (140.0, &json!(true)));
    let t = target("ipoib-fwd on one lcore >= 0.5x");
    assert_eq!(t["met"], true);
    let t = target("direct over the ring PMD >= 20 Mpps");
    assert_eq!(t["met"], false);
    // The summary and the plot show the peers.
    let md = std::fs::read_to_string(out.join("summary.md")).expect("summary.md");
    assert!(md.contains("DPDK l3fwd") && md.contains("0.600x"), "{md}");
    assert!(
        md.contains("(--quick)") && md.contains("load average at the start 1.00 2.00 3.00"),
        "{md}"
    );
    let svg = std::fs::read_to_string(out.join("throughput.svg")).expect("svg");
    assert!(
        svg.contains("DPDK l3fwd") && svg.contains("ipoib-fwd (1 lcore"),
        "the legend names the peers"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(dir.join(program))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

#[test]
fn the_captures_are_what_tshark_reads() {
    let dir = temp_dir("pcap");
    let o = Command::new(env!("CARGO_BIN_EXE_dpdk-peer"))
        .args(["pcap", "--flows", "4", "--dir"])
        .arg(&dir)
        .output()
        .expect("dpdk-peer runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for (file, dst) in [("in0.pcap", "198.18.1.2"), ("in1.pcap", "198.18.0.2")] {
        let data = std::fs::read(dir.join(file)).expect(file);
        let frames = ibpoll_bench::peers::pcap::read_pcap(&data).expect("a pcap file");
        assert_eq!(frames.len(), 4);
        if !on_path("tshark") {
            assert!(
                std::env::var_os("CI").is_none(),
                "tshark is not on PATH and CI is set: CI installs tshark"
            );
            eprintln!("SKIPPED the tshark half of this test: tshark is not on PATH");
            continue;
        }
        let t = Command::new("tshark")
            .arg("-r")
            .arg(dir.join(file))
            .args([
                "-o",
                "ip.check_checksum:TRUE",
                "-T",
                "fields",
                "-E",
                "separator=|",
            ])
            .args([
                "-e",
                "frame.len",
                "-e",
                "eth.type",
                "-e",
                "ip.len",
                "-e",
                "ip.ttl",
            ])
            .args([
                "-e",
                "ip.dst",
                "-e",
                "ip.checksum.status",
                "-e",
                "udp.srcport",
            ])
            .args([
                "-e",
                "udp.dstport",
                "-e",
                "udp.length",
                "-e",
                "_ws.malformed",
            ])
            .output()
            .expect("tshark runs");
        assert!(t.status.success(), "{}", String::from_utf8_lossy(&t.stderr));
        let text = String::from_utf8(t.stdout).expect("UTF-8");
        let rows: Vec<&str> = text.lines().collect();
        assert_eq!(rows.len(), 4, "{text}");
        for (i, row) in rows.iter().enumerate() {
            // 14 + 64 bytes; IPv4; total length 64; TTL 64; the destination l3fwd's LPM
            // table routes to the other port; checksum good (1); UDP 10000+i -> 9000,
            // length 44; nothing malformed.
            let want = format!("78|0x0800|64|64|{dst}|1|{}|9000|44|", 10_000 + i);
            assert_eq!(*row, want, "{file} frame {i}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
