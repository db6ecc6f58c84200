//! pktgen used carelessly or with hostile input: closed or full standard output, a
//! result file that must survive a failed run, captures that are too big, fail or
//! collide, signals, logs. Each ends with a message and an exit status, never a panic,
//! a hang or a silently lost result.

use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_pktgen");

/// The runs share the machine's CPUs: one at a time.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn cmd(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args);
    c
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn ends(o: &Output, code: i32, says: &str) {
    let (out, err) = text(o);
    assert_eq!(o.status.code(), Some(code), "stdout {out}\nstderr {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains(says), "expected {says:?} in {err}");
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pktgen-hostile-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn to_full(args: &[&str]) -> Output {
    cmd(args)
        .stdout(File::create("/dev/full").unwrap())
        .output()
        .unwrap()
}

const SHORT: &[&str] = &["--topology", "direct", "--duration", "0.3"];

fn with(extra: &[&str]) -> Vec<String> {
    SHORT.iter().chain(extra).map(|s| s.to_string()).collect()
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn a_full_or_closed_stdout_is_an_error() {
    let _s = serial();
    ends(&to_full(&["--help"]), 1, "No space left on device");
    // The JSON result lost on a full standard output: exit 1, not 0.
    ends(
        &to_full(&args(&with(&["--json", "-"]))),
        1,
        "pktgen: error: writing to standard output: No space left on device",
    );
    // `| head -c 10`: the pipe closes after 10 bytes (the first status line, at 1 s),
    // before the summary and the JSON are written.
    let mut child = cmd(&["--topology", "direct", "--duration", "2.5", "--json", "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut ten = [0u8; 10];
        child.stdout.take().unwrap().read_exact(&mut ten).unwrap();
    }
    let o = child.wait_with_output().unwrap();
    ends(&o, 1, "Broken pipe");
}

#[test]
fn a_result_file_is_replaced_only_by_a_finished_run() {
    let _s = serial();
    let d = scratch("json");
    let json = d.join("r.json");
    let j = json.to_str().unwrap();
    std::fs::write(&json, "earlier\n").unwrap();
    // A run that cannot start (its capture is refused) leaves the earlier result.
    let o = cmd(&args(&with(&[
        "--json",
        j,
        "--pcap",
        "/nonexistent/x.pcap",
    ])))
    .output()
    .unwrap();
    ends(
        &o,
        2,
        "--pcap: /nonexistent/x.pcap: No such file or directory",
    );
    assert_eq!(std::fs::read_to_string(&json).unwrap(), "earlier\n");
    // A finished run replaces it, and leaves no temporary file behind.
    let o = cmd(&args(&with(&["--json", j]))).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["conserved"], true);
    assert_eq!(v["seed"], 1, "the result says how to rerun it: {v}");
    assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn captures_are_bounded_locked_and_never_share_a_path() {
    let _s = serial();
    let d = scratch("pcap");
    let cap = d.join("c.pcap");
    let c = cap.to_str().unwrap();
    let json = d.join("r.json");
    let j = json.to_str().unwrap();
    let o = cmd(&args(&with(&["--pcap", c, "--json", c])))
        .output()
        .unwrap();
    ends(&o, 2, "also the --json file");
    let o = cmd(&args(&with(&[
        "--pcap",
        c,
        "--pcap-max-bytes",
        "200000",
        "--json",
        j,
    ])))
    .output()
    .unwrap();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    assert!(out.contains("STOPPED at its bound"), "{out}");
    let size = std::fs::metadata(&cap).unwrap().len();
    assert!((24..=200_000).contains(&size), "{size}");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["pcap"]["limit_reached"], true, "{v}");
    assert_eq!(v["conserved"], true, "the traffic went on: {v}");
    // Another process capturing to the file holds its lock: refused, file untouched.
    let held = File::options().write(true).open(&cap).unwrap();
    // SAFETY: flock on a file descriptor `held` owns.
    assert_eq!(unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX) }, 0);
    let o = cmd(&args(&with(&["--pcap", c]))).output().unwrap();
    ends(&o, 2, "being written by another running process");
    assert_eq!(std::fs::metadata(&cap).unwrap().len(), size);
    drop(held);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_capture_that_cannot_be_written_ends_the_run_with_its_reason() {
    let _s = serial();
    let d = scratch("full");
    let json = d.join("r.json");
    let start = Instant::now();
    let o = cmd(&[
        "--topology",
        "direct",
        "--duration",
        "30",
        "--pcap",
        "/dev/full",
        "--json",
        json.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    ends(
        &o,
        1,
        "--pcap: cannot write pcap file /dev/full: No space left on device",
    );
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "the run ended early"
    );
    assert!(text(&o).0.contains("pktgen summary"), "{}", text(&o).0);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(
        v["pcap"]["error"].as_str().unwrap().contains("No space"),
        "{v}"
    );
    assert_eq!(v["sa_memberships_after_shutdown"], 0, "{v}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn sigint_stops_the_run_with_the_summary_and_the_json() {
    let _s = serial();
    let d = scratch("sigint");
    let json = d.join("r.json");
    let start = Instant::now();
    let child = cmd(&["--duration", "30", "--json", json.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let o = child.wait_with_output().unwrap();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(130), "{out}\n{err}");
    assert!(start.elapsed() < Duration::from_secs(20), "stopped early");
    assert!(err.contains("SIGINT stopped the run"), "{err}");
    assert!(out.contains("pktgen summary"), "{out}");
    assert!(out.contains("interrupted by"), "{out}");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["sa_memberships_after_shutdown"], 0, "{v}");
    assert_eq!(v["interrupted_by"], "SIGINT", "{v}");
    assert_eq!(v["conserved"], true, "{v}");
    assert_eq!(v["flushed"], true, "{v}");
    assert_eq!(v["mcast_groups_joined"], 4, "{v}");
    let d_s = v["duration_s"].as_f64().unwrap();
    assert!((0.3..10.0).contains(&d_s), "{v}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn the_control_plane_logs_its_joins_under_rust_log() {
    let _s = serial();
    let o = cmd(SHORT).env("RUST_LOG", "info").output().unwrap();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    assert!(err.contains("INFO"), "{err}");
    assert!(err.contains("joined"), "joins are logged: {err}");
    assert!(
        err.contains("239.1.0.1") || err.contains("ff12:401b"),
        "{err}"
    );
    assert!(err.contains("left"), "leaves are logged: {err}");
    assert!(!out.contains("INFO"), "logs stay off stdout");
    // The default (warn) says nothing of joins.
    let o = cmd(SHORT).env_remove("RUST_LOG").output().unwrap();
    assert!(!text(&o).1.contains("joined"), "{}", text(&o).1);
}

#[test]
fn bad_values_name_their_flag() {
    for (a, says) in [
        (
            &["--duration", "-inf"][..],
            "--duration: -inf is not a duration",
        ),
        (&["--rate", "-inf"][..], "--rate: -inf packets per second"),
        (
            &["--rate", "1e12"][..],
            "--rate: 1e12 packets per second is more than 1e9",
        ),
        (&["--seed", "-1"][..], "'--seed <SEED>'"),
        (&["--idle-sleep-us", "1000000"][..], "give 1 to 10000"),
        (
            &["--flows", "401"][..],
            "--flows: 401 is out of range: give 0 to 400",
        ),
        (&["--pcap-max-bytes", "10"][..], "--pcap-max-bytes"),
        (&["--json", "/"][..], "--json: / is a directory"),
        (
            &["--seed", "1", "--seed", "2"][..],
            "'--seed <SEED>' cannot be used multiple times",
        ),
    ] {
        let o = cmd(a).output().unwrap();
        ends(&o, 2, says);
        assert!(text(&o).1.starts_with("pktgen: error: "), "{}", text(&o).1);
    }
}

#[test]
fn the_longest_idle_sleep_does_not_stretch_a_run() {
    let _s = serial();
    let start = Instant::now();
    let o = cmd(&args(&with(&["--idle-sleep-us", "10000", "--json", "-"])))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "a 0.3 s run took {:?}",
        start.elapsed()
    );
}

#[test]
fn a_second_signal_exits_at_once() {
    let _s = serial();
    let child = cmd(&["--topology", "direct", "--duration", "30", "--json", "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    let pid = child.id().to_string();
    // Two signals back to back: the second comes while the first's graceful stop (which
    // lets the traffic settle for at least 100 ms) runs.
    for _ in 0..2 {
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
    }
    let o = child.wait_with_output().unwrap();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(143), "{out}\n{err}");
    assert!(
        !out.contains("pktgen summary"),
        "it did not wait to stop: {out}"
    );
}
