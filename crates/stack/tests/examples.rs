//! The examples, run as a user runs them: `udp_echo` and `mcast_feed` on the embedded
//! fabric (first line, checks, summary, exit 0), stopped by SIGINT / SIGTERM (summary,
//! every group left, exit 130 / 143), and refusing an absent verbs device or bad usage
//! (exit 2). Their summaries include each stack's stop check (buffers back in the pool,
//! nothing dropped). On a verbs device, one stack per process (`--role`), they are run
//! over soft-RoCE by scripts/vm-test.sh.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::serial;

/// The example's binary (built beside the test binaries by `cargo test`; built here
/// when a narrower `cargo test` did not).
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let bin = profile_dir.join("examples").join(name);
    if !bin.exists() {
        let cargo = option_env!("CARGO").unwrap_or("cargo");
        let mut c = Command::new(cargo);
        c.args(["build", "-p", "ibpoll", "--example", name]);
        if profile_dir.ends_with("release") {
            c.arg("--release");
        }
        let st = c.status().expect("cargo runs");
        assert!(st.success(), "building example {name} failed");
    }
    bin
}

fn run(name: &str, args: &[&str]) -> Output {
    Command::new(example(name))
        .args(args)
        .output()
        .expect("the example runs")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Sends `signal` to the example after `after`, and waits for it.
fn interrupted(name: &str, args: &[&str], signal: &str, after: Duration) -> Output {
    let child = Command::new(example(name))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the example starts");
    std::thread::sleep(after);
    let st = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(st.success());
    let start = Instant::now();
    let o = child.wait_with_output().expect("the example ends");
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "the stop took too long"
    );
    o
}

fn first_line_says_embedded(out: &str) {
    let first = out.lines().next().unwrap_or_default();
    assert!(
        first.contains("embedded simulated InfiniBand fabric"),
        "{first}"
    );
}

#[test]
fn udp_echo_answers_every_request_and_leaves_nothing_at_the_sa() {
    let _serial = serial();
    let o = run("udp_echo", &["--count", "2000", "--size", "200"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    first_line_says_embedded(&out);
    assert!(out.contains("sent 2000, replies 2000, lost 0"), "{out}");
    assert!(out.contains("round trip (µs): min "), "{out}");
    assert!(out.contains("SA memberships after stop: 0"), "{out}");
    for who in ["server", "client"] {
        let want =
            format!("{who}: buffers out after stop 0, tx dropped 0, rx dropped 0, send errors 0");
        assert!(out.contains(&want), "{want}\n{out}");
    }
}

#[test]
fn mcast_feed_delivers_every_groups_sequence_to_every_subscriber() {
    let _serial = serial();
    let o = run(
        "mcast_feed",
        &[
            "--groups",
            "6",
            "--subscribers",
            "3",
            "--count",
            "300",
            "--rate",
            "20000",
        ],
    );
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    first_line_says_embedded(&out);
    // Subscriber k joins every (k+1)-th of the 6 groups: 6, 3 and 2 of them.
    for (k, groups) in [(0, 6), (1, 3), (2, 2)] {
        let want = format!(
            "subscriber {k}: groups joined {groups}/{groups}, received {}/{}, lost 0, misordered 0",
            groups * 300,
            groups * 300
        );
        assert!(out.contains(&want), "{want}\n{out}");
    }
    assert!(out.contains("latency (µs) p50 "), "{out}");
    assert!(out.contains("SA memberships after stop: 0"), "{out}");
    assert!(out.contains("publisher: published 1800/1800"), "{out}");
    for who in ["publisher", "subscriber 0", "subscriber 1", "subscriber 2"] {
        let want =
            format!("{who}: buffers out after stop 0, tx dropped 0, rx dropped 0, send errors 0");
        assert!(out.contains(&want), "{want}\n{out}");
    }
}

#[test]
fn sigint_and_sigterm_stop_the_examples_cleanly() {
    let _serial = serial();
    let o = interrupted(
        "mcast_feed",
        &["--count", "100000000", "--rate", "20000"],
        "-INT",
        Duration::from_millis(1500),
    );
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(130), "{out}\n{err}");
    assert!(out.contains("mcast_feed summary:"), "{out}");
    assert!(out.contains("lost 0, misordered 0"), "{out}");
    assert!(out.contains("SA memberships after stop: 0"), "{out}");
    assert!(out.contains("stopped by signal 2"), "{out}");
    let o = interrupted(
        "udp_echo",
        &["--count", "100000000"],
        "-TERM",
        Duration::from_millis(1000),
    );
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(143), "{out}\n{err}");
    assert!(out.contains("udp_echo summary: sent "), "{out}");
    assert!(out.contains("SA memberships after stop: 0"), "{out}");
}

#[test]
fn a_verbs_device_that_is_not_there_and_bad_usage_exit_2() {
    for name in ["udp_echo", "mcast_feed"] {
        let o = run(name, &["--device", "verbs:nosuch0"]);
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{out}\n{err}");
        assert!(
            out.starts_with(&format!("{name}: verbs device nosuch0 port 1")),
            "{out}"
        );
        // No libibverbs, no RDMA device, or no device of that name: each says which.
        assert!(err.starts_with(&format!("{name}: error: ")), "{err}");
        assert!(
            ["rdma-core", "RDMA device", "nosuch0"]
                .iter()
                .any(|w| err.contains(w)),
            "{err}"
        );
        let o = run(name, &["--device", "pci:0"]);
        assert_eq!(o.status.code(), Some(2));
        assert!(text(&o).1.contains("verbs:NAME[:PORT]"), "{:?}", text(&o));
    }
    // One stack per process needs a device another process reaches: not the
    // in-process simulated fabric.
    for (name, role) in [
        ("udp_echo", "server"),
        ("udp_echo", "client"),
        ("mcast_feed", "publisher"),
        ("mcast_feed", "subscribers"),
    ] {
        let o = run(name, &["--role", role]);
        let (out, err) = text(&o);
        assert_eq!(
            o.status.code(),
            Some(2),
            "{name} --role {role}: {out}\n{err}"
        );
        assert!(err.contains("--device verbs:NAME[:PORT]"), "{err}");
    }
}
