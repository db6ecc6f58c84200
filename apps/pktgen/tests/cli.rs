//! pktgen end to end: the binary, short runs, its JSON summary. No speed assertions.

use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};

use serde_json::Value;

/// The runs share the machine's CPUs: one at a time.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn pktgen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pktgen"))
        .args(args)
        .output()
        .expect("run pktgen")
}

/// Runs pktgen with `--json -`, expects exit 0, and parses the last line of stdout.
fn run_json(args: &[&str]) -> Value {
    let _serial = serial();
    let mut all = vec!["--json", "-"];
    all.extend_from_slice(args);
    let out = pktgen(&all);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "pktgen {args:?} failed ({:?})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let last = stdout.lines().last().expect("some output");
    serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("last line is not JSON ({e}): {last}\nstdout:\n{stdout}"))
}

fn u(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not an unsigned integer in {v}"))
}

/// Every key of the summary, and the invariants every run must satisfy.
fn check(v: &Value) {
    for key in [
        "fabric",
        "topology",
        "size",
        "burst",
        "cores",
        "duration_s",
        "tx_packets",
        "rx_packets",
        "tx_pps",
        "rx_pps",
        "drops",
        "mcast_groups_joined",
        "sa_memberships_after_shutdown",
        "pool_in_use_after_stop",
        "count",
        "count_reached",
        "prime_packets",
    ] {
        assert!(v.get(key).is_some(), "key {key} missing from {v}");
    }
    assert!(
        v["fabric"] == "sim" || v["fabric"] == "ring",
        "fabric {}",
        v["fabric"]
    );
    let drops: u64 = v["drops"]
        .as_object()
        .expect("drops is an object")
        .values()
        .map(|n| n.as_u64().expect("a drop count"))
        .sum();
    assert_eq!(
        u(v, "tx_packets"),
        u(v, "rx_packets") + drops,
        "conservation: tx_packets != rx_packets + drops in {v}"
    );
    assert!(u(v, "tx_packets") > 0, "nothing was sent: {v}");
    assert!(u(v, "rx_packets") > 0, "nothing arrived: {v}");
    assert_eq!(u(v, "sa_memberships_after_shutdown"), 0, "{v}");
    assert_eq!(u(v, "pool_in_use_after_stop"), 0, "buffers lost: {v}");
    assert!(v["duration_s"].as_f64().unwrap() > 0.0);
    assert!(v["tx_pps"].as_f64().is_some() && v["rx_pps"].as_f64().is_some());
}

fn check_latency(v: &Value) {
    let l = &v["latency_ns"];
    let p = |k: &str| {
        l[k].as_u64()
            .unwrap_or_else(|| panic!("latency_ns.{k} missing in {v}"))
    };
    let (p50, p99, p999, max) = (p("p50"), p("p99"), p("p999"), p("max"));
    assert!(p50 > 0, "{v}");
    assert!(
        p50 <= p99 && p99 <= p999 && p999 <= max,
        "percentiles out of order: {l}"
    );
}

#[test]
fn direct_topology_reports_every_key_and_conserves_packets() {
    let v = run_json(&["--topology", "direct", "--duration", "0.5"]);
    check(&v);
    assert_eq!(v["topology"], "direct");
    assert_eq!(u(&v, "size"), 64);
    assert_eq!(u(&v, "mcast_groups_joined"), 4, "the default groups: {v}");
    assert!(
        v.get("latency_ns").is_none(),
        "no latency without --latency: {v}"
    );
}

#[test]
fn fwd_topology_crosses_the_forwarder() {
    let v = run_json(&[
        "--topology",
        "fwd",
        "--duration",
        "0.5",
        "--rate",
        "20000",
        "--mcast-groups",
        "0",
        "--size",
        "512",
    ]);
    check(&v);
    assert_eq!(v["topology"], "fwd");
    assert_eq!(u(&v, "size"), 512);
    assert_eq!(u(&v, "mcast_groups_joined"), 0);
}

#[test]
fn fwd_topology_forwards_multicast_to_the_sink() {
    let _serial = serial();
    let out = pktgen(&[
        "--json",
        "-",
        "--topology",
        "fwd",
        "--duration",
        "0.5",
        "--rate",
        "20000",
        "--mcast-groups",
        "4",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !stdout.contains("second interface"),
        "the workaround is gone: {stdout}"
    );
    let v: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    check(&v);
    assert_eq!(u(&v, "mcast_groups_joined"), 4, "{v}");
    // Multicast reached the sink, which subscribes in its own partition only: through
    // the forwarder.
    assert!(u(&v, "rx_mcast_packets") > 0, "{v}");
    assert!(u(&v, "fwd_mcast_forwarded") > 0, "{v}");
    assert!(
        u(&v, "fwd_mcast_forwarded") >= u(&v, "rx_mcast_packets"),
        "every multicast packet at the sink crossed the forwarder: {v}"
    );
}

#[test]
fn the_default_is_fwd_with_multicast() {
    let v = run_json(&["--duration", "0.5"]);
    check(&v);
    assert_eq!(v["topology"], "fwd");
    assert_eq!(u(&v, "mcast_groups_joined"), 4);
}

#[test]
fn multicast_groups_are_joined() {
    for topology in ["direct", "fwd"] {
        let v = run_json(&[
            "--topology",
            topology,
            "--duration",
            "0.5",
            "--rate",
            "20000",
            "--mcast-groups",
            "7",
            "--flows",
            "0",
        ]);
        check(&v);
        assert_eq!(u(&v, "mcast_groups_joined"), 7, "{topology}: {v}");
        assert!(u(&v, "rx_mcast_packets") > 0, "{topology}: {v}");
    }
}

#[test]
fn latency_percentiles_are_present_and_ordered() {
    let v = run_json(&[
        "--topology",
        "direct",
        "--duration",
        "0.5",
        "--rate",
        "20000",
        "--latency",
    ]);
    check(&v);
    check_latency(&v);
}

#[test]
fn pingpong_measures_round_trips() {
    for topology in ["direct", "fwd"] {
        let v = run_json(&["--topology", topology, "--duration", "0.5", "--pingpong"]);
        check(&v);
        check_latency(&v);
        assert_eq!(v["mode"], "pingpong");
        // Echoes come back to the lcore waiting for them: round trips, not timeouts.
        assert!(
            u(&v, "pingpong_timeouts") < u(&v, "rx_packets"),
            "{topology}: most ping-pongs timed out: {v}"
        );
        assert_eq!(u(&v, "mcast_groups_joined"), 0);
    }
}

#[test]
fn count_sends_exactly_n_run_packets() {
    let v = run_json(&["--topology", "direct", "--count", "5000"]);
    check(&v);
    assert_eq!(u(&v, "count"), 5000);
    assert_eq!(v["count_reached"], true, "{v}");
    // One priming packet per destination: the sink's next hop and the 4 default groups.
    assert_eq!(u(&v, "prime_packets"), 5, "{v}");
    assert_eq!(u(&v, "tx_packets"), 5000 + 5, "{v}");
}

#[test]
fn count_is_split_over_the_generator_lcores() {
    // 7 is not a multiple of most lcore counts: the shares must still add up. --cores 4
    // where the machine has them gives direct two generator lcores.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    let cores = cores.to_string();
    for topology in ["direct", "fwd"] {
        let v = run_json(&[
            "--topology",
            topology,
            "--count",
            "7",
            "--mcast-groups",
            "0",
            "--cores",
            &cores,
        ]);
        check(&v);
        assert_eq!(v["count_reached"], true, "{topology}: {v}");
        assert_eq!(
            u(&v, "tx_packets"),
            7 + u(&v, "prime_packets"),
            "{topology}: {v}"
        );
    }
}

#[test]
fn count_with_a_rate_crosses_the_forwarder() {
    let v = run_json(&[
        "--topology",
        "fwd",
        "--count",
        "2000",
        "--rate",
        "20000",
        "--mcast-groups",
        "0",
    ]);
    check(&v);
    assert_eq!(v["count_reached"], true, "{v}");
    assert_eq!(u(&v, "prime_packets"), 1, "{v}");
    assert_eq!(u(&v, "tx_packets"), 2001, "{v}");
    // 2000 packets at 20,000 per second: about 0.1 s.
    assert!(v["duration_s"].as_f64().unwrap() >= 0.09, "{v}");
}

#[test]
fn idle_lcores_may_sleep() {
    let v = run_json(&[
        "--topology",
        "fwd",
        "--count",
        "3000",
        "--rate",
        "30000",
        "--mcast-groups",
        "0",
        "--cores",
        "1",
        "--idle-sleep-us",
        "200",
    ]);
    check(&v);
    assert_eq!(v["count_reached"], true, "{v}");
    assert_eq!(u(&v, "idle_sleep_us"), 200, "{v}");
    assert_eq!(u(&v, "tx_packets"), 3001, "{v}");
}

#[test]
fn count_counts_round_trips_in_pingpong() {
    for topology in ["direct", "fwd"] {
        let v = run_json(&["--topology", topology, "--pingpong", "--count", "200"]);
        check(&v);
        assert_eq!(v["count_reached"], true, "{topology}: {v}");
        assert_eq!(u(&v, "prime_packets"), 0, "{topology}: {v}");
        assert_eq!(u(&v, "tx_packets"), 200, "{topology}: {v}");
        assert_eq!(
            u(&v, "rx_packets") + u(&v, "pingpong_timeouts"),
            200,
            "every ping answered or given up: {topology}: {v}"
        );
    }
}

#[test]
fn a_count_not_reached_in_time_stops_at_the_limit_and_says_so() {
    let _serial = serial();
    let out = pktgen(&[
        "--json",
        "-",
        "--topology",
        "direct",
        "--count",
        "1000000000000",
        "--duration",
        "0.3",
        "--rate",
        "10000",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("--count"), "{stderr}");
    assert!(stdout.contains("NOT reached"), "{stdout}");
    let v: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    check(&v);
    assert_eq!(v["count_reached"], false, "{v}");
    assert!(u(&v, "tx_packets") < 1_000_000, "{v}");
    let d = v["duration_s"].as_f64().unwrap();
    assert!((0.3..3.0).contains(&d), "the limit is --duration: {v}");
}

#[test]
fn without_count_the_count_keys_are_null() {
    let v = run_json(&["--topology", "direct", "--duration", "0.2"]);
    check(&v);
    assert!(v["count"].is_null() && v["count_reached"].is_null(), "{v}");
}

#[test]
fn pcap_and_json_files_are_written() {
    let dir = std::env::temp_dir().join(format!("pktgen-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("run.pcap");
    let json = dir.join("run.json");
    {
        let _serial = serial();
        let out = pktgen(&[
            "--topology",
            "direct",
            "--duration",
            "0.5",
            "--rate",
            "5000",
            "--pcap",
            pcap.to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let bytes = std::fs::read(&pcap).expect("the pcap file");
    // A pcap global header (24 bytes) and at least one record.
    assert!(
        bytes.len() > 24 + 16,
        "pcap too small: {} bytes",
        bytes.len()
    );
    let text = std::fs::read_to_string(&json).expect("the JSON file");
    let last = text.lines().last().expect("a line");
    let v: Value = serde_json::from_str(last).expect("JSON");
    check(&v);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_flags_exit_non_zero_naming_the_flag() {
    let cases: &[(&[&str], &str)] = &[
        (&["--size", "41"], "--size"),
        (&["--size", "20"], "--size"),
        (&["--size", "9000"], "--size"),
        (&["--cores", "0"], "--cores"),
        (&["--cores", "100000"], "--cores"),
        (&["--pingpong", "--mcast-groups", "2"], "--mcast-groups"),
        (&["--rate", "0"], "--rate"),
        (&["--rate", "fast"], "--rate"),
        (&["--topology", "ring"], "--topology"),
        (&["--duration", "0"], "--duration"),
        (&["--duration", "-1"], "--duration"),
        (&["--size", "-1"], "--size"),
        (&["--rate", "-5"], "--rate"),
        (&["--burst", "0"], "--burst"),
        (&["--flows", "0", "--mcast-groups", "0"], "--flows"),
        (&["--no-such-flag"], "--no-such-flag"),
        (&["--count", "0"], "--count"),
        (&["--count", "-5"], "--count"),
        (&["--count", "many"], "--count"),
        (&["--count", "1.5"], "--count"),
        (&["--count", "10000000000000"], "--count"),
        (&["--count", "10", "--duration", "0"], "--duration"),
        (&["--idle-sleep-us", "0"], "--idle-sleep-us"),
        (&["--idle-sleep-us", "-3"], "--idle-sleep-us"),
        (&["--idle-sleep-us", "2000000"], "--idle-sleep-us"),
        (&["--fabric", "ib"], "--fabric"),
        (&["--fabric", "verbs:rxe0:0"], "--fabric"),
        (&["--fabric", "verbs", "--topology", "fwd"], "--topology"),
        (&["--fabric", "verbs", "--pcap", "x.pcap"], "--pcap"),
        (&["--fabric", "ring", "--topology", "fwd"], "--topology"),
        (
            &["--fabric", "ring", "--pcap", "/tmp/pktgen-ring.pcap"],
            "--pcap",
        ),
        (&["--fabric", "switch"], "--fabric"),
    ];
    for (args, flag) in cases {
        let out = pktgen(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "pktgen {args:?} should fail; stdout:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            out.status.code().is_some(),
            "pktgen {args:?} was killed by a signal (a panic/abort?)"
        );
        assert!(
            stderr.contains(flag),
            "pktgen {args:?}: the message does not name {flag}:\n{stderr}"
        );
        assert!(
            !stderr.contains("panicked"),
            "pktgen {args:?} panicked:\n{stderr}"
        );
    }
}

/// The one line of standard error of a refused run, checked: exit 2, no panic, one line
/// that starts with `pktgen: error: PREFIX` and names `fix`.
fn refused(out: &Output, prefix: &str, fix: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "exit 2 expected:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line:\n{stderr}");
    assert!(
        lines[0].starts_with(&format!("pktgen: error: {prefix}")),
        "{stderr}"
    );
    assert!(
        lines[0].contains(fix),
        "the fix ({fix}) is named:\n{stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing ran");
    stderr
}

/// `--fabric verbs` where RDMA cannot work fails before anything starts, with exit 2
/// and one line that names the cause and the fix: rdma-core missing (stood for by a
/// libibverbs that is not there), or no RDMA device (this machine and CI: no
/// `/sys/class/infiniband_verbs`).
#[test]
fn fabric_verbs_without_rdma_is_refused_with_the_cause_and_the_fix() {
    let bin = env!("CARGO_BIN_EXE_pktgen");
    let out = Command::new(bin)
        .args(["--fabric", "verbs:mlx5_0:1"])
        .env("IBPOLL_LIBIBVERBS", "/nonexistent/libibverbs.so.1")
        .output()
        .expect("run pktgen");
    let line = refused(&out, "--fabric verbs:mlx5_0: ", "apt install");
    assert!(line.contains("rdma-core is not installed"), "{line}");

    if std::path::Path::new("/sys/class/infiniband_verbs").exists() {
        eprintln!("this machine has RDMA devices: the no-device case is not tested here");
        return;
    }
    let out = Command::new(bin)
        .args(["--fabric", "verbs"])
        .env_remove("IBPOLL_LIBIBVERBS")
        .output()
        .expect("run pktgen");
    match ibpoll_pmd_verbs::Library::load() {
        Ok(_) => {
            let line = refused(&out, "--fabric verbs: no RDMA device", "modprobe ib_uverbs");
            println!("as expected here: {line}");
        }
        Err(_) => {
            refused(&out, "--fabric verbs: ", "apt install");
        }
    }
}

#[test]
fn the_ring_fabric_runs_the_direct_topology_and_conserves() {
    let v = run_json(&["--fabric", "ring", "--duration", "0.5"]);
    check(&v);
    assert_eq!(v["fabric"], "ring", "{v}");
    assert_eq!(v["topology"], "direct", "the ring's default topology: {v}");
    assert!(
        u(&v, "rx_mcast_packets") > 0,
        "the groups cross the ring too: {v}"
    );
    assert_eq!(u(&v, "sa_memberships_after_shutdown"), 0, "{v}");
    let v = run_json(&[
        "--fabric",
        "ring",
        "--count",
        "20000",
        "--mcast-groups",
        "0",
    ]);
    check(&v);
    assert_eq!(v["count_reached"], true, "{v}");
    assert_eq!(u(&v, "tx_packets"), 20_001, "{v}");
}

#[test]
fn the_ring_fabric_measures_round_trips() {
    let v = run_json(&["--fabric", "ring", "--pingpong", "--count", "500"]);
    check(&v);
    check_latency(&v);
    assert_eq!(v["fabric"], "ring", "{v}");
    assert_eq!(v["mode"], "pingpong", "{v}");
    assert_eq!(
        u(&v, "rx_packets") + u(&v, "pingpong_timeouts"),
        500,
        "every ping answered or given up: {v}"
    );
}
