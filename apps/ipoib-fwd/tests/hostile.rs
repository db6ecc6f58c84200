//! The binary used carelessly or with hostile input: closed or full standard output,
//! route files that never end, conflicting routes, outputs that collide, signals. Each
//! ends with a message and an exit status, never a panic, a hang or a lost result.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ipoib-fwd");

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

/// The exit status is `code`, nothing panicked, and stderr says `says`.
fn ends(o: &Output, code: i32, says: &str) {
    let (out, err) = text(o);
    assert_eq!(o.status.code(), Some(code), "stdout {out}\nstderr {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains(says), "expected {says:?} in {err}");
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ipoib-fwd-hostile-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs with standard output on `/dev/full`.
fn to_full(args: &[&str]) -> Output {
    cmd(args)
        .stdout(File::create("/dev/full").expect("/dev/full"))
        .output()
        .unwrap()
}

#[test]
fn a_full_stdout_is_an_error_not_a_panic() {
    ends(&to_full(&["--help"]), 1, "No space left on device");
    ends(&to_full(&["--version"]), 1, "No space left on device");
    ends(
        &to_full(&["--duration", "0.3"]),
        1,
        "ipoib-fwd: error: writing to standard output: No space left on device",
    );
    // The JSON on a full standard output is a lost result: exit 1.
    let o = to_full(&["--duration", "0.3", "--json", "-"]);
    ends(&o, 1, "No space left on device");
}

#[test]
fn a_closed_stdout_ends_the_run_with_an_error() {
    let start = Instant::now();
    let mut child = cmd(&["--duration", "20"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        // `| head -1`: read one line, then close the pipe.
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert!(first.starts_with("ipoib-fwd:"), "{first}");
    }
    let o = child.wait_with_output().unwrap();
    ends(&o, 1, "writing to standard output: Broken pipe");
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "the run ended when its output went away"
    );
}

#[test]
fn route_files_are_bounded_in_size_and_time() {
    let start = Instant::now();
    let o = cmd(&["--routes", "/dev/zero"]).output().unwrap();
    ends(&o, 2, "not a regular file");
    let d = scratch("fifo");
    let fifo = d.join("routes");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let o = cmd(&["--routes", fifo.to_str().unwrap()]).output().unwrap();
    ends(&o, 2, "not a regular file");
    assert!(start.elapsed() < Duration::from_secs(10), "no hang");
    // A file over the bound is refused before it is read.
    let big = d.join("big");
    File::create(&big).unwrap().set_len(17 << 20).unwrap();
    let o = cmd(&["--routes", big.to_str().unwrap()]).output().unwrap();
    ends(&o, 2, "more than a route file may hold");
    // A 1 MB bad line is quoted in part, not echoed whole.
    let line = d.join("line");
    std::fs::write(&line, format!("10.9.0.0/16,if=1{}\n", " x".repeat(500_000))).unwrap();
    let o = cmd(&["--routes", line.to_str().unwrap()]).output().unwrap();
    ends(&o, 2, "bytes in all");
    assert!(o.stderr.len() < 2000, "{} bytes of error", o.stderr.len());
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn conflicting_unicast_routes_and_off_link_gateways_are_refused() {
    let o = cmd(&[
        "--route",
        "10.9.0.0/16,via=10.2.0.2,if=1",
        "--route",
        "10.9.0.0/16,via=10.1.0.9,if=0",
        "--dst",
        "10.9.0.1",
    ])
    .output()
    .unwrap();
    ends(&o, 2, "another route has the same prefix");
    let d = scratch("defaults");
    let f = d.join("r");
    std::fs::write(&f, "default,via=10.2.0.2,if=1\ndefault,via=10.1.0.9,if=0\n").unwrap();
    let o = cmd(&["--routes", f.to_str().unwrap()]).output().unwrap();
    ends(&o, 2, "another route has the same prefix");
    let o = cmd(&["--route", "10.9.0.0/16,via=10.1.0.5,if=1"])
        .output()
        .unwrap();
    ends(
        &o,
        2,
        "the gateway 10.1.0.5 is not on interface 1's subnet (10.2.0.0/16)",
    );
    let o = cmd(&["--route", "10.9.0.0/16,via=10.9.0.1,if=1"])
        .output()
        .unwrap();
    ends(&o, 2, "not on interface 1's subnet");
    // IPv6 routes: the same rules.
    let o = cmd(&[
        "--route",
        "fd00:9::/48,via=fd00:2::9,if=1",
        "--route",
        "fd00:9::/48,via=fd00:1::9,if=0",
    ])
    .output()
    .unwrap();
    ends(&o, 2, "another route has the same prefix");
    let o = cmd(&["--route", "fd00:9::/48,via=fd00:1::5,if=1"])
        .output()
        .unwrap();
    ends(
        &o,
        2,
        "the gateway fd00:1::5 is not on interface 1's subnet (fd00:2::/64)",
    );
    let o = cmd(&["--mroute", "ff02::1:3,from=0,to=1"])
        .output()
        .unwrap();
    ends(&o, 2, "--mroute");
    ends(&o, 2, "never forwarded");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn one_path_for_two_outputs_and_a_locked_capture_are_refused() {
    let d = scratch("outputs");
    let same = d.join("same");
    let s = same.to_str().unwrap();
    let o = cmd(&["--pcap", s, "--json", s]).output().unwrap();
    ends(&o, 2, "--pcap: ");
    ends(&o, 2, "also the --json file");
    // Another process writing the capture holds its lock.
    let cap = d.join("c.pcap");
    std::fs::write(&cap, b"earlier").unwrap();
    let held = File::options().write(true).open(&cap).unwrap();
    // SAFETY: flock on a file descriptor `held` owns.
    assert_eq!(unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX) }, 0);
    let o = cmd(&["--duration", "0.2", "--pcap", cap.to_str().unwrap()])
        .output()
        .unwrap();
    ends(&o, 2, "being written by another running process");
    assert_eq!(std::fs::read(&cap).unwrap(), b"earlier", "left as it was");
    drop(held);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn the_capture_is_bounded_and_its_failure_keeps_the_summary() {
    let d = scratch("pcap");
    let cap = d.join("c.pcap");
    let json = d.join("r.json");
    let o = cmd(&[
        "--duration",
        "0.5",
        "--pcap",
        cap.to_str().unwrap(),
        "--pcap-max-bytes",
        "100000",
        "--json",
        json.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    assert!(out.contains("STOPPED at its bound"), "{out}");
    let size = std::fs::metadata(&cap).unwrap().len();
    assert!((24..=100_000).contains(&size), "{size}");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["pcap"]["limit_reached"], true, "{v}");
    assert_eq!(v["pcap"]["bytes"].as_u64(), Some(size), "{v}");
    // A capture that cannot be written ends the run early, with the OS reason, and the
    // summary and the JSON are still written.
    let start = Instant::now();
    let o = cmd(&[
        "--duration",
        "20",
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
        start.elapsed() < Duration::from_secs(15),
        "the run ended early"
    );
    assert!(text(&o).0.contains("conservation: ok"), "{}", text(&o).0);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(
        v["pcap"]["error"].as_str().unwrap().contains("No space"),
        "{v}"
    );
    assert_eq!(v["sa_memberships_after_shutdown"], 0, "{v}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_result_file_survives_a_failed_run() {
    let d = scratch("json");
    let json = d.join("r.json");
    std::fs::write(&json, "{\"earlier\":true}\n").unwrap();
    // Refused before the run: the earlier result is untouched.
    let o = cmd(&["--json", json.to_str().unwrap(), "--size", "1"])
        .output()
        .unwrap();
    ends(&o, 2, "--size");
    assert_eq!(
        std::fs::read_to_string(&json).unwrap(),
        "{\"earlier\":true}\n"
    );
    let o = cmd(&["--json", d.to_str().unwrap()]).output().unwrap();
    ends(&o, 2, "is a directory");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn sigint_stops_the_run_gracefully() {
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
    assert!(out.contains("--- ipoib-fwd summary"), "{out}");
    assert!(out.contains("conservation: ok"), "{out}");
    assert!(out.contains("SA memberships after shutdown: 0"), "{out}");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["sa_memberships_after_shutdown"], 0, "{v}");
    assert_eq!(v["interrupted_by"], "SIGINT", "{v}");
    assert_eq!(v["conserved"], true, "{v}");
    assert!(v["tx_packets"].as_u64().unwrap() > 0, "{v}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn logs_go_to_stderr_under_rust_log() {
    let o = cmd(&["--duration", "0.2"])
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    assert!(err.contains("INFO"), "{err}");
    assert!(
        err.contains("join"),
        "the control plane logs its joins: {err}"
    );
    assert!(!out.contains("INFO"), "logs stay off stdout: {out}");
}
