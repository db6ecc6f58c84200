//! pktgen --ipv6 end to end: IPv6/UDP across one partition and across the forwarder
//! (unicast and multicast), and the capture read by tshark (Debian `tshark` 4.0): the
//! neighbour discovery that resolved the next hops is ICMPv6 with the 24-byte IPoIB
//! link-layer address option (RFC 4391 section 9.1), whose 20-byte address is the one
//! the fabric then delivers to, and every UDP checksum tshark computes is good.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};

use serde_json::Value;

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

/// Runs pktgen --ipv6 with `--json -`, expects exit 0, returns the JSON summary after
/// checking conservation and the SA.
fn run_json(args: &[&str]) -> Value {
    let _serial = serial();
    let mut all = vec!["--ipv6", "--json", "-"];
    all.extend_from_slice(args);
    let out = pktgen(&all);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pktgen {all:?}: {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(stdout.lines().last().expect("output")).expect("JSON");
    assert_eq!(v["ip_version"], 6, "{v}");
    assert_eq!(v["conserved"], true, "{v}");
    assert_eq!(v["sa_memberships_after_shutdown"], 0, "{v}");
    assert!(u(&v, "rx_packets") > 0, "{v}");
    v
}

fn u(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} in {v}"))
}

#[test]
fn ipv6_unicast_and_multicast_across_one_partition() {
    let v = run_json(&[
        "--topology",
        "direct",
        "--duration",
        "0.5",
        "--rate",
        "20000",
    ]);
    assert_eq!(u(&v, "mcast_groups_joined"), 4, "{v}");
    assert!(u(&v, "rx_mcast_packets") > 0, "{v}");
    assert!(
        u(&v, "rx_packets") > u(&v, "rx_mcast_packets"),
        "unicast too: {v}"
    );
}

#[test]
fn ipv6_crosses_the_forwarder_unicast_and_multicast() {
    let v = run_json(&[
        "--topology",
        "fwd",
        "--duration",
        "0.5",
        "--rate",
        "20000",
        "--size",
        "1000",
    ]);
    assert_eq!(u(&v, "mcast_groups_joined"), 4, "{v}");
    assert!(u(&v, "fwd_mcast_forwarded") > 0, "{v}");
    assert!(
        u(&v, "fwd_mcast_forwarded") >= u(&v, "rx_mcast_packets"),
        "every multicast packet at the sink crossed the forwarder: {v}"
    );
    assert!(u(&v, "rx_packets") > u(&v, "rx_mcast_packets"), "{v}");
}

#[test]
fn ipv6_pingpong_measures_round_trips_through_the_forwarder() {
    let v = run_json(&["--pingpong", "--count", "100"]);
    assert_eq!(u(&v, "rx_packets"), 100, "{v}");
    assert!(v["latency_ns"]["p50"].as_u64().unwrap() > 0, "{v}");
}

#[test]
fn ipv6_sizes_are_checked() {
    let o = pktgen(&["--ipv6", "--size", "59"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--size") && err.contains("60 to 4092"),
        "{err}"
    );
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(dir.join(program))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// tshark's `fields` of the frames of `path` that match `filter`, one row each.
fn tshark(path: &Path, filter: &str, fields: &[&str]) -> Vec<Vec<String>> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r")
        .arg(path)
        .args(["-o", "udp.check_checksum:TRUE", "-Y", filter])
        .args(["-T", "fields", "-E", "separator=|"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("tshark runs");
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("UTF-8")
        .lines()
        .map(|l| l.split('|').map(str::to_owned).collect())
        .collect()
}

/// A tshark number, hexadecimal with `0x`.
fn num(s: &str) -> u64 {
    let s = s.trim();
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    }
    .unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

/// The QPN and GID of the IPoIB address in tshark's rendering of the option's data:
/// 2 reserved bytes, then flags, QPN (3 bytes) and GID (16) in hex.
fn option_address(hex: &str) -> (u64, String) {
    assert_eq!(hex.len(), 44, "22 bytes: {hex}");
    assert_eq!(&hex[..4], "0000", "the reserved bytes are zero: {hex}");
    let qpn = u64::from_str_radix(&hex[6..12], 16).unwrap();
    let gid = hex[12..].to_owned();
    (qpn, gid)
}

/// tshark prints a GID as an IPv6 address; the option's GID in plain hex.
fn gid_hex(gid: &str) -> String {
    let a: std::net::Ipv6Addr = gid.parse().expect("a GID");
    a.octets().iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn tshark_decodes_neighbour_discovery_with_the_20_byte_option() {
    if !on_path("tshark") {
        assert!(
            std::env::var_os("CI").is_none(),
            "tshark is not on PATH and CI is set: .ci/run installs it"
        );
        eprintln!("SKIPPED: tshark is not on PATH");
        return;
    }
    let dir = std::env::temp_dir().join(format!("pktgen-ipv6-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("nd.pcap");
    run_json(&[
        "--topology",
        "direct",
        "--duration",
        "0.3",
        "--rate",
        "1000",
        "--flows",
        "1",
        "--mcast-groups",
        "1",
        "--pcap",
        pcap.to_str().unwrap(),
    ]);
    let nd_fields = [
        "icmpv6.type",
        "icmpv6.code",
        "icmpv6.checksum.status",
        "ipv6.hlim",
        "ipv6.src",
        "ipv6.dst",
        "icmpv6.nd.ns.target_address",
        "icmpv6.nd.na.target_address",
        "icmpv6.opt.type",
        "icmpv6.opt.length",
        "icmpv6.opt.linkaddr",
        "infiniband.bth.destqp",
        "infiniband.grh.sgid",
    ];
    let ns = tshark(&pcap, "icmpv6.type == 135", &nd_fields);
    let na = tshark(&pcap, "icmpv6.type == 136", &nd_fields);
    assert_eq!(ns.len(), 1, "one solicitation resolved the sink: {ns:?}");
    assert_eq!(na.len(), 1, "one advertisement answered it: {na:?}");
    let (ns, na) = (&ns[0], &na[0]);
    // The solicitation: code 0, good checksum, hop limit 255, from the generator to
    // the solicited-node group of the sink, source link-layer address option (type 1)
    // of length 3 (24 bytes), multicast on the fabric (QPN 0xffffff).
    assert_eq!(
        ns[..8],
        [
            "135",
            "0",
            "1",
            "255",
            "fd00:0:0:1::1",
            "ff02::1:ff00:2",
            "fd00:0:0:1::2",
            ""
        ]
    );
    assert_eq!(ns[8..10], ["1", "3"]);
    assert_eq!(num(&ns[11]), 0xff_ffff);
    let (gen_qpn, gen_gid) = option_address(&ns[10]);
    assert_eq!(
        gen_gid,
        gid_hex(&ns[12]),
        "the option's GID is the sender's port GID"
    );
    // The advertisement: unicast back to the QPN the solicitation's option named, the
    // target's link-layer address option (type 2).
    assert_eq!(
        na[..8],
        [
            "136",
            "0",
            "1",
            "255",
            "fd00:0:0:1::2",
            "fd00:0:0:1::1",
            "",
            "fd00:0:0:1::2"
        ]
    );
    assert_eq!(na[8..10], ["2", "3"]);
    assert_eq!(
        num(&na[11]),
        gen_qpn,
        "sent to the address the NS advertised"
    );
    let (sink_qpn, _) = option_address(&na[10]);
    // The data: IPv6/UDP to the sink, on the QPN the advertisement named, checksums
    // good (tshark computes them: udp.check_checksum).
    let data = tshark(
        &pcap,
        "udp && ipv6.dst == fd00:0:0:1::2",
        &["infiniband.bth.destqp", "udp.checksum.status", "ipv6.hlim"],
    );
    assert!(!data.is_empty(), "no unicast data in the capture");
    for row in &data {
        assert_eq!(num(&row[0]), sink_qpn, "{row:?}");
        assert_eq!(row[1..], ["1", "64"], "{row:?}");
    }
    let mcast = tshark(
        &pcap,
        "udp && ipv6.dst == ff05::1:1",
        &["udp.checksum.status"],
    );
    assert!(!mcast.is_empty(), "no multicast data in the capture");
    assert!(mcast.iter().all(|r| r[0] == "1"), "{mcast:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
