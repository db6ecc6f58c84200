//! ibpoll-ctl against a running pktgen: its interfaces, groups, neighbours and counters
//! as pktgen's own nodes hold them; finding the process alone, with --pid, and refusing
//! when there is none or several; the socket gone after SIGINT stopped pktgen.

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// pktgen, built by cargo into this test's target directory and profile (cargo builds
/// only this package's binaries for its tests; it is up to date after the first time).
fn pktgen_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary");
    // target/<profile>/deps/<test>
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let target = profile.parent().expect("target");
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "--quiet", "-p", "pktgen", "--bin", "pktgen"])
        .env("CARGO_TARGET_DIR", target);
    if profile.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let st = cmd.status().expect("run cargo");
    assert!(st.success(), "cargo build -p pktgen failed: {st}");
    profile.join("pktgen")
}

fn ctl(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ibpoll-ctl"))
        .args(args)
        .env("IBPOLL_RUNTIME_DIR", dir)
        .output()
        .expect("run ibpoll-ctl")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Runs ibpoll-ctl, expects exit 0, returns its standard output.
fn ok(dir: &Path, args: &[&str]) -> String {
    let o = ctl(dir, args);
    let (out, err) = text(&o);
    assert!(
        o.status.success(),
        "ibpoll-ctl {args:?}: {:?}\n{out}\n{err}",
        o.status
    );
    out
}

fn json(dir: &Path, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = ok(dir, &all);
    assert_eq!(out.lines().count(), 1, "one line: {out}");
    serde_json::from_str(&out).expect("JSON")
}

fn stack<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["stacks"]
        .as_array()
        .expect("stacks")
        .iter()
        .find(|s| s["stack"] == name)
        .unwrap_or_else(|| panic!("no stack {name} in {v}"))
}

/// Kills pktgen if the test fails before it stopped it.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sigint(pid: u32) {
    // SAFETY: kill(2) with a pid we started and a valid signal number.
    let r = unsafe { libc::kill(pid as libc::pid_t, libc::SIGINT) };
    assert_eq!(r, 0, "kill: {}", std::io::Error::last_os_error());
}

#[test]
fn ibpoll_ctl_inspects_a_running_pktgen() {
    let dir = std::env::temp_dir().join(format!("ibpoll-ctl-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a directory");

    // Nothing runs yet: a clear error, exit 1.
    let o = ctl(&dir, &["groups"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).1.contains("no running ibpoll process"),
        "{}",
        text(&o).1
    );

    let pktgen = pktgen_bin();
    let child = Command::new(&pktgen)
        .args([
            "--duration",
            "120",
            "--rate",
            "20000",
            "--cores",
            "1",
            "--json",
            "-",
        ])
        .env("IBPOLL_RUNTIME_DIR", &dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pktgen");
    let pid = child.id();
    let mut run = Running(child);

    // Until the sink holds its 4 groups and the generator its 4 send-only ones (the
    // run has started then).
    let start = Instant::now();
    let count = |v: &Value, node: &str, kind: &str| {
        stack(v, node)["ifaces"][0]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|g| g["kind"] == kind && g["state"] == "Joined")
            .count()
    };
    let groups = loop {
        let o = ctl(&dir, &["--json", "groups"]);
        if o.status.success() {
            let v: Value = serde_json::from_slice(&o.stdout).expect("JSON");
            if count(&v, "sink", "full") == 4 && count(&v, "gen", "send-only") == 4 {
                break v;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "pktgen's sink and generator never showed their 4 joined groups: {:?}",
            text(&o)
        );
        assert!(run.0.try_wait().unwrap().is_none(), "pktgen ended early");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(groups["pid"], pid);
    let sink = stack(&groups, "sink")["ifaces"][0]["groups"]
        .as_array()
        .unwrap()
        .clone();
    for i in 1..=4 {
        let ip = format!("239.1.0.{i}");
        let g = sink
            .iter()
            .find(|g| g["ipv4"] == ip.as_str())
            .unwrap_or_else(|| panic!("{ip}"));
        assert_eq!(g["join_state"], serde_json::json!(["FullMember"]));
        assert!(g["mlid"].as_str().unwrap().starts_with("0xc"), "{g}");
        assert_eq!(
            g["mgid"],
            format!("ff12:401b:8002::f01:{i}"),
            "P_Key 0x8002, RFC 4391"
        );
    }
    // The generator's groups are send-only, attached to no QP.
    let gen = stack(&groups, "gen")["ifaces"][0]["groups"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(
        gen.iter()
            .filter(|g| g["kind"] == "send-only" && g["qpn"].is_null())
            .count(),
        4,
        "{gen:?}"
    );

    // The tables.
    let t = ok(&dir, &["groups"]);
    assert!(t.starts_with("STACK"), "{t}");
    assert!(
        t.lines()
            .any(|l| l.starts_with("sink") && l.contains("239.1.0.3") && l.contains("Joined")),
        "{t}"
    );
    let t = ok(&dir, &["ifaces"]);
    for node in ["gen", "fwd", "sink"] {
        assert!(
            t.lines().any(|l| l.starts_with(node) && l.contains(" up ")),
            "{node}: {t}"
        );
    }
    let t = ok(&dir, &["neigh"]);
    assert!(
        t.lines()
            .any(|l| l.starts_with("gen") && l.contains("10.1.0.254") && l.contains("Reachable")),
        "{t}"
    );

    // Counters move: the sink keeps receiving.
    let rx = |v: &Value| {
        stack(v, "sink")["lcores"][0]["counters"]["app_rx"]
            .as_u64()
            .unwrap()
    };
    let first = json(&dir, &["stats"]);
    std::thread::sleep(Duration::from_millis(300));
    let second = json(&dir, &["stats"]);
    assert!(
        rx(&second) > rx(&first) && rx(&first) > 0,
        "{} then {}",
        rx(&first),
        rx(&second)
    );
    assert!(
        stack(&second, "gen")["ctrl"][0]["counters"]["joins_ok"]
            .as_u64()
            .unwrap()
            >= 5
    );
    let t = ok(&dir, &["stats"]);
    assert!(t.contains("sink lcore 0:") && t.contains("app_rx"), "{t}");
    assert!(t.contains("drops by reason"), "{t}");

    // --pid, and a second live socket: then --pid is needed.
    let by_pid = json(&dir, &["--pid", &pid.to_string(), "ifaces"]);
    assert_eq!(by_pid["pid"], pid);
    let other = dir.join(format!("{}.sock", pid + 1));
    let listener = UnixListener::bind(&other).expect("bind");
    let o = ctl(&dir, &["ifaces"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("give --pid"), "{}", text(&o).1);
    drop(listener);
    // Nothing listens there any more: stale, ignored.
    assert!(other.exists());
    json(&dir, &["ifaces"]);
    let o = ctl(&dir, &["--pid", &(pid + 1).to_string(), "ifaces"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("stale"), "{}", text(&o).1);

    // SIGINT: pktgen stops every node (leaving its groups), reports, and its socket goes.
    sigint(pid);
    let out = run.0.wait_with_output_ref();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(130), "{stdout}\n{stderr}");
    let v: Value = serde_json::from_str(stdout.lines().last().unwrap()).expect("JSON");
    assert_eq!(v["interrupted_by"], "SIGINT");
    assert_eq!(v["sa_memberships_after_shutdown"], 0);
    assert_eq!(v["conserved"], true);
    assert!(
        !dir.join(format!("{pid}.sock")).exists(),
        "the socket outlived pktgen"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

trait WaitRef {
    fn wait_with_output_ref(&mut self) -> Output;
}

impl WaitRef for Child {
    /// `wait_with_output` for a child we only borrow (the guard keeps it).
    fn wait_with_output_ref(&mut self) -> Output {
        use std::io::Read;
        let (mut out, mut err) = (Vec::new(), Vec::new());
        if let Some(mut o) = self.stdout.take() {
            o.read_to_end(&mut out).expect("stdout");
        }
        if let Some(mut e) = self.stderr.take() {
            e.read_to_end(&mut err).expect("stderr");
        }
        let status = self.wait().expect("wait");
        Output {
            status,
            stdout: out,
            stderr: err,
        }
    }
}
