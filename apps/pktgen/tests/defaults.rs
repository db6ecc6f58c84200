//! pktgen's honest defaults: a closed-loop default run that loses nothing, Gb/s on the
//! wire from frame sizes tshark agrees with, latency in microseconds, and the `--cdf`
//! distribution. No speed assertions.

use std::path::{Path, PathBuf};
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
        .arg("--no-telemetry")
        .output()
        .expect("run pktgen")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pktgen-defaults-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Runs pktgen with `--json -`, expects exit 0; the JSON and the summary text.
fn run(args: &[&str]) -> (Value, String) {
    let _serial = serial();
    let mut all = vec!["--json", "-"];
    all.extend_from_slice(args);
    let out = pktgen(&all);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "pktgen {args:?}: {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let v = serde_json::from_str(stdout.lines().last().unwrap()).expect("JSON");
    (v, stdout)
}

fn u(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"))
}

#[test]
fn the_default_run_is_closed_loop_and_loses_nothing() {
    let (v, text) = run(&["--duration", "1"]);
    assert_eq!(v["topology"], "fwd");
    assert_eq!(u(&v, "window"), 512);
    assert_eq!(v["open_loop"], false);
    // The window is smaller than every receive ring on the way: nothing overflows.
    assert_eq!(v["drops"], serde_json::json!({}), "{v}");
    assert_eq!(u(&v, "tx_packets"), u(&v, "rx_packets"));
    assert_eq!(v["delivered_pct"], 100.0);
    assert!(
        u(&v, "rx_mcast_packets") > 0 && u(&v, "tx_mcast_packets") > 0,
        "{v}"
    );
    assert!(text.contains("window 512 packets in flight"), "{text}");
    assert!(
        text.contains("delivered                          100.0000 %"),
        "{text}"
    );
    assert!(text.contains("Gb/s wire"), "{text}");

    let (v, text) = run(&["--duration", "0.3", "--open-loop", "--topology", "direct"]);
    assert_eq!(v["window"], Value::Null);
    assert_eq!(v["open_loop"], true);
    assert!(text.contains("open loop"), "{text}");
}

/// tshark's frame lengths of pktgen's datagrams in a capture: (unicast, multicast).
fn frame_lengths(pcap: &Path) -> Option<(Vec<u64>, Vec<u64>)> {
    let found = Command::new("tshark").arg("--version").output().is_ok();
    if !found {
        assert!(std::env::var_os("CI").is_none(), "CI must install tshark");
        eprintln!("SKIPPED the tshark half of this test: tshark is not on PATH");
        return None;
    }
    let out = Command::new("tshark")
        .arg("-r")
        .arg(pcap)
        .args([
            "-Y",
            "udp.dstport == 9000",
            "-T",
            "fields",
            "-E",
            "separator=|",
        ])
        .args(["-e", "frame.len", "-e", "ip.dst"])
        .output()
        .expect("tshark");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (mut uni, mut multi) = (Vec::new(), Vec::new());
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let (len, dst) = line.split_once('|').expect("two fields");
        let len: u64 = len.parse().expect("a length");
        if dst.starts_with("239.") {
            multi.push(len);
        } else {
            uni.push(len);
        }
    }
    Some((uni, multi))
}

#[test]
fn wire_bytes_are_the_frames_tshark_reads() {
    for size in ["64", "65", "1500"] {
        let pcap = scratch(&format!("wire-{size}.pcap"));
        let (v, _) = run(&[
            "--topology",
            "direct",
            "--count",
            "40",
            "--size",
            size,
            "--flows",
            "1",
            "--mcast-groups",
            "1",
            "--pcap",
            pcap.to_str().unwrap(),
        ]);
        let w = &v["wire_bytes_per_packet"];
        let (uni, multi) = (u(w, "unicast"), u(w, "multicast"));
        // IBA: LRH 8, BTH 12, DETH 8, IPoIB 4, padding to 4, ICRC 4, VCRC 2; GRH 40 more
        // for multicast.
        let s: u64 = size.parse().unwrap();
        assert_eq!(
            uni,
            8 + 12 + 8 + 4 + s + (4 - (4 + s) % 4) % 4 + 4 + 2,
            "size {size}"
        );
        assert_eq!(multi, uni + 40, "size {size}");
        if let Some((u_lens, m_lens)) = frame_lengths(&pcap) {
            assert!(!u_lens.is_empty() && !m_lens.is_empty(), "size {size}");
            assert!(
                u_lens.iter().all(|&l| l == uni),
                "size {size}: {u_lens:?} vs {uni}"
            );
            assert!(
                m_lens.iter().all(|&l| l == multi),
                "size {size}: {m_lens:?} vs {multi}"
            );
        }
        // The rates: the same packets counted with and without their headers.
        let ratio = v["tx_gbps_wire"].as_f64().unwrap() / v["tx_gbps_ip"].as_f64().unwrap();
        let (tx, mc) = (u(&v, "tx_packets"), u(&v, "tx_mcast_packets"));
        let want = ((tx - mc) * uni + mc * multi) as f64 / (tx * s) as f64;
        assert!(
            (ratio - want).abs() < 1e-9,
            "size {size}: {ratio} vs {want}"
        );
    }
}

#[test]
fn latency_is_in_microseconds_and_the_cdf_file_holds_the_distribution() {
    let cdf = scratch("latency.cdf");
    let (v, text) = run(&[
        "--topology",
        "direct",
        "--duration",
        "0.5",
        "--rate",
        "20000",
        "--cdf",
        cdf.to_str().unwrap(),
    ]);
    assert!(text.contains("one-way latency (µs)"), "{text}");
    let lines: Vec<(f64, f64)> = std::fs::read_to_string(&cdf)
        .expect("the --cdf file")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let (p, us) = l.split_once(' ').expect("percentile latency_us");
            (p.parse().unwrap(), us.parse().unwrap())
        })
        .collect();
    assert_eq!(lines.first().map(|l| l.0), Some(0.0));
    assert_eq!(lines.last().map(|l| l.0), Some(100.0));
    assert!(
        lines
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
        "{lines:?}"
    );
    // The same histogram as the JSON's percentiles, in µs instead of ns.
    let ns = |k: &str| v["latency_ns"][k].as_u64().unwrap() as f64;
    let at = |p: f64| lines.iter().find(|l| (l.0 - p).abs() < 1e-9).unwrap().1;
    assert!((at(50.0) - ns("p50") / 1e3).abs() < 1e-3, "{v}");
    assert!((at(100.0) - ns("max") / 1e3).abs() < 1e-3, "{v}");
    let json_cdf = v["latency_cdf"].as_array().expect("latency_cdf");
    assert_eq!(json_cdf.len(), lines.len());
}

#[test]
fn flow_control_and_cdf_flags_are_checked() {
    let json = scratch("same.json");
    let j = json.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--window", "0"], "--window"),
        (&["--window", "2000000"], "--window"),
        (&["--window", "64", "--open-loop"], "--window"),
        (&["--pingpong", "--open-loop"], "--open-loop"),
        (&["--pingpong", "--window", "8"], "--window"),
        (&["--cdf", "-"], "--cdf"),
        (&["--cdf", j, "--json", j], "--cdf"),
    ];
    for (args, flag) in cases {
        let out = pktgen(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "pktgen {args:?}: {err}");
        assert!(
            err.contains(&format!("error: {flag}")),
            "pktgen {args:?}: {err}"
        );
    }
}
