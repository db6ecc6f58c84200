//! The binary: bad flags and configurations give a clear error and exit status 2
//! (never a panic); a short run forwards and checks conservation.

use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ipoib-fwd"))
        .args(args)
        .output()
        .expect("run ipoib-fwd")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Exit status 2, no panic, and the message names the problem.
fn refused(args: &[&str], says: &str) {
    let o = run(args);
    let (out, err) = text(&o);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{args:?}: stdout {out} stderr {err}"
    );
    assert!(!err.contains("panicked"), "{args:?}: {err}");
    assert!(err.contains("ipoib-fwd: error:"), "{args:?}: {err}");
    assert!(err.contains(says), "{args:?}: expected {says:?} in {err}");
}

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("ipoib-fwd-test-{}-{name}", std::process::id()));
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn bad_flags_are_refused_with_a_clear_error() {
    refused(&["--bogus"], "unexpected argument '--bogus'");
    refused(&["--duration"], "a value is required for '--duration");
    refused(&["--duration", "soon"], "'--duration <DURATION>'");
    refused(&["--duration", "-1"], "--duration: -1 is not a duration");
    refused(
        &["--duration", "-inf"],
        "--duration: -inf is not a duration",
    );
    refused(&["--cores", "0"], "--cores: 0 CPUs");
    refused(&["--cores", "4096"], "--cores: 4096 asked for");
    refused(&["--cpus", "x"], "--cpus: \"x\" is not a CPU number");
    refused(
        &["--cpus", "4095"],
        "--cpus: CPU 4095 is not one this process may run on",
    );
    refused(
        &["--cpus", "0,0", "--cores", "1"],
        "--cpus: CPU 0 is given twice",
    );
    refused(
        &[
            "--cpus", "0", "--pmd", "replay", "--cores", "1", "--cpus", "0",
        ],
        "cannot be used multiple times",
    );
    refused(&["--size", "10"], "--size: 10 bytes");
    refused(&["--size", "9000"], "give 36 to 2044");
    refused(&["--rate", "fast"], "--rate: \"fast\" is neither");
    refused(
        &["--rate", "0"],
        "--rate: 0 packets per second sends nothing",
    );
    refused(
        &["--rate", "1e12"],
        "--rate: 1e12 packets per second is more than",
    );
    refused(
        &["--flows", "401"],
        "--flows: 401 is out of range: give 1 to 400",
    );
    refused(&["--seed", "-1"], "'--seed <SEED>'");
    refused(&["--window", "99999999"], "--window:");
    // A flag given twice is refused (pktgen's convention), not "the last wins".
    refused(
        &["--duration", "1", "--duration", "0.3"],
        "'--duration <DURATION>' cannot be used multiple times",
    );
    refused(
        &["--dst", "224.0.0.1"],
        "link-local (RFC 5771) and never forwarded: give a group outside it, e.g. --dst 239.1.0.1 --mroute 239.1.0.1/32,from=0,to=1",
    );
    refused(
        &["--route", "10.2.0.0/33,if=1"],
        "prefix length must be 0..=32",
    );
    refused(&["--route", "10.2.0.0/16"], "missing if=N");
    refused(
        &["--route=10.2.0.0/16,via=10.2.0.300,if=1"],
        "via= is not an IPv4 address",
    );
    refused(&["--route", "10.9.0.0/16,via=10.2.0.2,if=5"], "interface 5");
    refused(&["--dst", "10.9.9.9"], "no route to it");
    refused(&["--dst", "10.1.0.7"], "built-in sink");
}

#[test]
fn bad_mroute_flags_are_refused_with_a_clear_error() {
    refused(&["--mroute"], "a value is required for '--mroute");
    refused(
        &["--mroute", "239.1.0.0/24"],
        "missing from=N (the ingress interface)",
    );
    refused(&["--mroute", "239.1.0.0/24,from=0"], "missing to=N");
    refused(
        &["--mroute", "10.1.0.0/24,from=0,to=1"],
        "within 224.0.0.0/4 (IPv4 multicast)",
    );
    refused(&["--mroute", "224.0.0.0/24,from=0,to=1"], "link-local");
    refused(&["--mroute", "239.1.0.0/16,from=0,to=1"], "at most 256");
    refused(&["--mroute", "239.1.0.0/33,from=0,to=1"], "0..=32");
    refused(&["--mroute", "239.1.0.0/24,from=1,to=1"], "same interface");
    refused(&["--mroute=239.1.0.0/24,from=0,to=x"], "interface number");
    refused(
        &["--mroute", "239.1.0.0/24,from=0,to=1,hops=2"],
        "unknown option",
    );
    refused(&["--mroute", "239.1.0.0/24,from=0,to=4"], "interface 4");
    refused(
        &[
            "--mroute",
            "239.1.0.0/24,from=0,to=1",
            "--mroute",
            "239.1.0.0/24,from=0,to=1",
        ],
        "same prefix and from=",
    );
    refused(
        &[
            "--mroute",
            "239.1.0.0/24,from=0,to=1",
            "--mroute",
            "239.1.1.0/24,from=0,to=1",
        ],
        "at most 256",
    );
    // Each refusal shows the syntax.
    refused(
        &["--mroute", "239.1.0.0/24"],
        "expected GROUP[/LEN],from=N,to=M",
    );
    refused(&["--dst", "239.1.0.1"], "needs a multicast route");
    let p = temp_file(
        "badm",
        "10.9.0.0/16,via=10.2.0.2,if=1\nmroute 239.1.0.0/24,to=1\n",
    );
    let ps = p.to_str().unwrap();
    refused(&["--routes", ps], &format!("{ps}:2"));
    let _ = std::fs::remove_file(p);
}

#[test]
fn a_short_multicast_run_crosses_the_forwarder_and_conserves() {
    let p = temp_file(
        "mok",
        "mroute 239.1.0.0/28,from=0,to=1 # to the sink's partition\n",
    );
    let o = run(&[
        "--duration",
        "0.5",
        "--routes",
        p.to_str().unwrap(),
        "--dst",
        "239.1.0.9",
        "--rate",
        "100000",
    ]);
    let _ = std::fs::remove_file(&p);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "stdout {out}\nstderr {err}");
    assert!(out.contains("conservation: ok"), "{out}");
    assert!(out.contains("1 multicast route(s)"), "{out}");
    assert!(out.contains("bad TTL 0"), "{out}");
    assert!(!out.contains("(multicast 0)"), "{out}");
}

#[test]
fn bad_route_files_are_refused_with_file_and_line() {
    refused(
        &["--routes", "/nonexistent/ipoib-fwd.routes"],
        "cannot read route file /nonexistent/ipoib-fwd.routes",
    );
    let p = temp_file(
        "bad",
        "# routes\n10.9.0.0/16,via=10.2.0.2,if=1\n10.8.0.0/99,if=1\n",
    );
    let ps = p.to_str().unwrap();
    refused(&["--routes", ps], &format!("{ps}:3"));
    let _ = std::fs::remove_file(p);
}

#[test]
fn help_and_version_exit_0() {
    let o = run(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(text(&o).0.contains("--routes <FILE>"));
    assert!(text(&o).0.contains("--mroute <MROUTE>"));
    assert!(
        text(&o).0.contains("130 / 143"),
        "the exit statuses are documented"
    );
    let o = run(&["--version"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(text(&o).0.starts_with("ipoib-fwd "), "{:?}", text(&o));
}

#[test]
fn a_short_run_forwards_through_a_configured_route_and_conserves() {
    let p = temp_file("ok", "10.9.0.0/16,via=10.2.0.2,if=1 # behind the sink\n");
    let o = run(&[
        "--duration",
        "0.5",
        "--routes",
        p.to_str().unwrap(),
        "--dst",
        "10.9.0.5",
        "--rate",
        "200000",
    ]);
    let _ = std::fs::remove_file(&p);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "stdout {out}\nstderr {err}");
    assert!(out.contains("conservation: ok"), "{out}");
    assert!(out.contains("3 route(s)"), "{out}");
    assert!(out.contains("bad TTL 0"), "{out}");
}

#[test]
fn replay_flags_are_refused_where_they_do_not_apply() {
    refused(
        &["--pmd", "replay", "--rate", "1000"],
        "--rate: a rate is not taken with --pmd replay",
    );
    refused(&["--pmd", "replay", "--window", "8"], "--window:");
    refused(&["--pmd", "replay", "--pcap", "/tmp/x.pcap"], "--pcap:");
    refused(
        &["--pmd", "replay", "--mroute", "239.1.0.0/24,from=0,to=1"],
        "--mroute:",
    );
    refused(&["--pmd", "replay", "--dst", "239.1.0.1"], "--dst:");
    refused(&["--pmd", "replay", "--dst", "10.9.9.9"], "no route to it");
    refused(
        &["--burst", "8"],
        "--burst: the frames per poll of --pmd replay",
    );
    refused(&["--pmd", "replay", "--burst", "0"], "give 1 to 32");
    refused(&["--pmd", "replay", "--burst", "33"], "give 1 to 32");
    refused(&["--pmd", "nic"], "invalid value 'nic' for '--pmd <PMD>'");
}

#[test]
fn a_short_replay_run_forwards_on_one_pinned_lcore_and_conserves() {
    let json =
        std::env::temp_dir().join(format!("ipoib-fwd-test-{}-replay.json", std::process::id()));
    let o = run(&[
        "--pmd",
        "replay",
        "--cores",
        "1",
        "--cpus",
        "0",
        "--duration",
        "0.5",
        "--json",
        json.to_str().unwrap(),
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "stdout {out}\nstderr {err}");
    assert!(out.contains("conservation: ok"), "{out}");
    let file = std::fs::read_to_string(&json).expect("the JSON file was written");
    let _ = std::fs::remove_file(&json);
    assert_eq!(file.lines().count(), 1, "one JSON object, one line: {file}");
    let v: serde_json::Value = serde_json::from_str(file.trim_end()).expect("JSON");
    let n = |k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k} in {v}"));
    assert_eq!(v["pmd"], "replay");
    assert_eq!(v["cores"], 1);
    assert_eq!(v["cpus"], serde_json::json!([0]), "pinned as --cpus said");
    assert!(n("rx_pps") > 0.0 && n("tx_pps") > 0.0, "{v}");
    assert!(n("rx_packets") > 0.0, "{v}");
    // rx_pps and tx_pps are the window's counts over its duration.
    let secs = n("duration_s");
    assert!((n("rx_pps") * secs - n("rx_packets")).abs() < 1.0, "{v}");
    assert!((n("tx_pps") * secs - n("tx_packets")).abs() < 1.0, "{v}");
    // Conservation: every packet replayed was forwarded or is a named drop.
    let drops: f64 = v["drops"]
        .as_object()
        .expect("drops")
        .values()
        .map(|d| d.as_f64().unwrap())
        .sum();
    assert_eq!(n("replayed"), n("forwarded") + drops, "{v}");
    assert_eq!(v["conserved"], true);
    assert_eq!(
        n("forwarded"),
        n("fwd_forwarded"),
        "the forwarder's own count agrees"
    );
    assert!(n("tx_packets") <= n("forwarded"));
    assert_eq!(v["sa_memberships_after_shutdown"], 0);
}

#[test]
fn ipv6_routes_and_multicast_routes_are_installed() {
    let p = temp_file(
        "ok6",
        "fd00:9::/48,via=fd00:2::9,if=1\nfd00:7::/64,via=fe80::7,if=0\nmroute ff05::1:0/124,from=0,to=1\n",
    );
    let o = run(&["--duration", "0.2", "--routes", p.to_str().unwrap()]);
    let _ = std::fs::remove_file(&p);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "stdout {out}\nstderr {err}");
    // Two connected IPv6 routes (fd00:1::/64, fd00:2::/64) and the two given.
    assert!(
        out.contains("4 IPv6 route(s), 1 IPv6 multicast route(s)"),
        "{out}"
    );
    assert!(out.contains("conservation: ok"), "{out}");
    refused(
        &["--route", "fd00:9::/48,via=10.2.0.2,if=1"],
        "via= is not an IPv6 address",
    );
    refused(&["--route", "fd00:9::/200,if=1"], "0..=128");
}
