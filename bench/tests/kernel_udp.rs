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
