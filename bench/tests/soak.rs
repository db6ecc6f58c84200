//! Runs `ibpoll-soak` briefly: a 20 s soak with a measurement every 5 s passes and says
//! so in its JSON; each of its checks fails a run with a fault planted where it looks
//! (a buffer kept, a packet not counted); a signal ends a run early but still stops and
//! checks everything; bad flags are refused.

use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;

/// The soaks share the machine's CPUs with everything else: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn soak(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ibpoll-soak"))
        .args(args)
        .output()
        .expect("ibpoll-soak runs")
}

/// The JSON object on the last line of standard output.
fn json_of(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| {
        panic!(
            "the last line is not JSON ({e}):\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

#[test]
fn a_short_soak_passes_with_every_kind_of_churn() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let out = soak(&[
        "--duration",
        "20",
        "--interval",
        "5",
        "--seed",
        "11",
        "--json",
        "-",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the soak failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("ibpoll-soak: seed 11 (replay with --seed 11)"),
        "{stdout}"
    );
    let v = json_of(&out);
    assert_eq!(v["passed"], true, "{v}");
    assert_eq!(v["seed"], 11);
    let samples = v["samples"].as_array().expect("samples");
    // At 5, 10 and 15 s of traffic, and at the end.
    assert_eq!(samples.len(), 4, "{v}");
    let mut last_sent = 0;
    for s in samples {
        assert_eq!(s["settled"], true, "{s}");
        assert_eq!(u(&s["ledger"]["unaccounted"]), 0, "{s}");
        assert_eq!(u(&s["memberships_stale"]), 0, "{s}");
        assert_eq!(u(&s["memberships_lost"]), 0, "{s}");
        assert!(u(&s["rss_kib"]) > 0, "{s}");
        // ibpoll-soak installs the counting allocator.
        assert!(s["heap_bytes"].as_i64().is_some_and(|b| b > 0), "{s}");
        // Every host holds the broadcast group at least, and the SA agrees.
        assert!(u(&s["sa_memberships"]) >= 4, "{s}");
        assert_eq!(s["sa_memberships"], s["memberships_held"], "{s}");
        let sent = u(&s["ledger"]["sent"]);
        assert!(sent > last_sent, "traffic flowed in every interval: {s}");
        last_sent = sent;
    }
    let last = &samples[3];
    assert!(u(&last["ledger"]["received"]) > 0);
    for kind in [
        "joins",
        "leaves",
        "send_masks",
        "port_flaps",
        "sm_restarts",
        "pkey_changes",
        "lid_changes",
    ] {
        assert!(u(&last["churn"][kind]) > 0, "no {kind}: {last}");
    }
    let fin = &v["final"];
    assert_eq!(u(&fin["sa_memberships"]), 0, "{fin}");
    assert_eq!(u(&fin["buffers_out"]), 0, "{fin}");
    assert_eq!(u(&fin["ledger"]["unaccounted"]), 0, "{fin}");
    assert_eq!(fin["unflushed"].as_array().map(Vec::len), Some(0), "{fin}");
}

/// A 6 s soak with a measurement every 2 s and `--mutate what`: it must fail, saying
/// `says`.
fn a_planted_fault_fails_the_soak(what: &str, says: &str) {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let out = soak(&[
        "--duration",
        "6",
        "--interval",
        "2",
        "--seed",
        "5",
        "--mutate",
        what,
        "--json",
        "-",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let v = json_of(&out);
    assert_eq!(v["passed"], false);
    let failures: Vec<&str> = v["failures"]
        .as_array()
        .expect("failures")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        failures.iter().any(|f| f.contains(says)),
        "no failure says {says:?}: {failures:?}"
    );
    assert!(stdout.contains("ibpoll-soak: FAILED: "), "{stdout}");
}

#[test]
fn a_kept_buffer_is_growth() {
    a_planted_fault_fails_the_soak("hold-buffers", "buffers out grew");
}

#[test]
fn a_packet_not_counted_is_unaccounted_for() {
    a_planted_fault_fails_the_soak("uncounted-rx", "unaccounted for (app_rx=");
}

#[test]
fn a_signal_ends_the_run_early_and_it_still_stops_cleanly() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let child = Command::new(env!("CARGO_BIN_EXE_ibpoll-soak"))
        .args(["--duration", "600", "--seed", "3", "--json", "-"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("ibpoll-soak starts");
    std::thread::sleep(Duration::from_secs(3));
    let pid = i32::try_from(child.id()).expect("pid");
    // SAFETY: sends a signal to our own child process; touches no memory.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let out = child.wait_with_output().expect("it ends");
    assert_eq!(
        out.status.code(),
        Some(128 + libc::SIGINT),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json_of(&out);
    assert_eq!(v["interrupted"], true);
    assert_eq!(v["passed"], true, "{v}");
    assert_eq!(u(&v["final"]["sa_memberships"]), 0);
    assert_eq!(u(&v["final"]["buffers_out"]), 0);
    assert_eq!(
        v["samples"].as_array().map(Vec::len),
        Some(1),
        "one measurement, at the end"
    );
}

#[test]
fn bad_flags_are_refused_naming_the_flag() {
    for (args, flag) in [
        (&["--stacks", "1"][..], "--stacks"),
        (&["--groups", "65"], "--groups"),
        (&["--rate", "0"], "--rate"),
        (&["--churn-ms", "nan"], "--churn-ms"),
        (&["--duration", "10", "--interval", "5"], "--duration"),
        (&["--interval", "-1"], "--interval"),
        (&["--json", "/nonexistent-dir/x.json"], "--json"),
    ] {
        let out = soak(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.starts_with(&format!("ibpoll-soak: error: {flag}")),
            "{args:?}: {err}"
        );
    }
}
