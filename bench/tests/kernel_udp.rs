//! Runs the `kernel-udp` binary briefly in each mode and checks its JSON report. No
//! assertion on speed: only that packets went through and the report is well formed.

use std::process::Command;

fn run(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_kernel-udp"))
        .args(args)
        .args(["--json", "-"])
        .output()
        .expect("kernel-udp runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "kernel-udp {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().expect("some output");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {last}"))
}

fn count(v: &serde_json::Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

#[test]
fn mmsg_reports_received_packets() {
    let v = run(&["--mode", "mmsg", "--duration", "0.2"]);
    assert_eq!(v["mode"], "mmsg");
    assert_eq!(count(&v, "size"), 64);
    assert_eq!(count(&v, "batch"), 32);
    assert!(count(&v, "rx_packets") > 0, "{v}");
    assert!(count(&v, "tx_packets") >= count(&v, "rx_packets"), "{v}");
    assert!(v["rx_pps"].as_f64().is_some_and(|p| p > 0.0), "{v}");
    assert!(v["duration_s"].as_f64().is_some(), "{v}");
    assert!(v.get("latency_ns").is_none(), "{v}");
}

#[test]
fn plain_reports_received_packets() {
    let v = run(&["--mode", "plain", "--duration", "0.2", "--size", "100"]);
    assert_eq!(v["mode"], "plain");
    assert_eq!(count(&v, "size"), 100);
    assert_eq!(count(&v, "batch"), 1);
    assert!(count(&v, "rx_packets") > 0, "{v}");
}

#[test]
fn pingpong_reports_percentiles() {
    let v = run(&["--mode", "pingpong", "--duration", "0.5"]);
    assert_eq!(v["mode"], "pingpong");
    assert!(count(&v, "rx_packets") > 0, "{v}");
    let l = &v["latency_ns"];
    let (p50, p99, p999, max) = (
        count(l, "p50"),
        count(l, "p99"),
        count(l, "p999"),
        count(l, "max"),
    );
    assert!(0 < p50 && p50 <= p99 && p99 <= p999 && p999 <= max, "{v}");
}

#[test]
fn bad_flags_are_refused_with_the_flag_named() {
    let out = Command::new(env!("CARGO_BIN_EXE_kernel-udp"))
        .args(["--duration", "0"])
        .output()
        .expect("kernel-udp runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--duration"));
}

#[test]
fn pingpong_writes_its_cdf() {
    let path = std::env::temp_dir().join(format!("kernel-udp-cdf-{}.csv", std::process::id()));
    let p = path.to_str().expect("utf-8 temp path");
    let v = run(&["--mode", "pingpong", "--duration", "0.4", "--cdf", p]);
    let text = std::fs::read_to_string(&path).expect("the CDF file");
    let _ = std::fs::remove_file(&path);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("percentile,latency_ns"));
    let rows: Vec<(f64, u64)> = lines
        .map(|l| {
            let (p, ns) = l.split_once(',').expect("percentile,latency_ns");
            (p.parse().expect("percentile"), ns.parse().expect("ns"))
        })
        .collect();
    assert_eq!(rows.first().map(|r| r.0), Some(0.0));
    assert_eq!(rows.last().map(|r| r.0), Some(100.0));
    assert!(
        rows.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
        "not increasing: {text}"
    );
    // The same histogram as the JSON's percentiles.
    let at = |q: f64| rows.iter().find(|r| (r.0 - q).abs() < 1e-9).expect("row").1;
    assert_eq!(at(50.0), count(&v["latency_ns"], "p50"));
    assert_eq!(at(99.0), count(&v["latency_ns"], "p99"));
    assert_eq!(at(100.0), count(&v["latency_ns"], "max"));
}

#[test]
fn cdf_needs_pingpong() {
    let out = Command::new(env!("CARGO_BIN_EXE_kernel-udp"))
        .args(["--mode", "mmsg", "--cdf", "/dev/null"])
        .output()
        .expect("kernel-udp runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--cdf"));
}
