//! The telemetry socket: two stacks of one process served on one socket, their groups,
//! neighbours and counters as the SA and the stacks themselves know them; the socket's
//! mode, stale sockets, bounded requests, and the socket's removal at stop.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use ibpoll::telemetry;
use ibpoll::GroupAddr;
use ibpoll_ctrl::mcast::GroupPhase;
use serde_json::Value;

const A_IP: [u8; 4] = [10, 0, 0, 1];
const B_IP: [u8; 4] = [10, 0, 0, 2];
const GROUP: [u8; 4] = [239, 1, 2, 3];

/// A socket directory of this test process's own: other processes' sockets never show.
fn runtime_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ibpoll-telemetry-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a directory");
    std::env::set_var(telemetry::RUNTIME_DIR_ENV, &dir);
    assert_eq!(telemetry::socket_dir(), dir);
    dir
}

struct Client {
    r: BufReader<UnixStream>,
    w: UnixStream,
    hello: Value,
}

impl Client {
    fn connect(path: &Path) -> Client {
        let s = UnixStream::connect(path).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut line = String::new();
        r.read_line(&mut line).expect("greeting");
        let hello = serde_json::from_str(&line).expect("the greeting is JSON");
        Client { r, w: s, hello }
    }

    fn ask(&mut self, cmd: &str) -> Value {
        writeln!(self.w, "{cmd}").expect("request");
        let mut line = String::new();
        self.r.read_line(&mut line).expect("answer");
        assert!(line.ends_with('\n'), "one line: {line:?}");
        serde_json::from_str(&line).expect("the answer is JSON")
    }
}

fn stack_named<'a>(answer: &'a Value, name: &str) -> &'a Value {
    answer["stacks"]
        .as_array()
        .expect("stacks")
        .iter()
        .find(|s| s["stack"] == name)
        .unwrap_or_else(|| panic!("no stack {name} in {answer}"))
}

#[test]
fn two_stacks_are_inspected_on_one_socket_removed_at_stop() {
    let _serial = serial();
    let dir = runtime_dir();
    let pid = std::process::id();
    let path = telemetry::socket_path(&dir, pid);
    // What dead processes left: a socket nobody listens on, and a file with our pid.
    let stale = telemetry::socket_path(&dir, 1);
    drop(UnixListener::bind(&stale).expect("bind"));
    assert!(telemetry::is_stale(&stale));
    std::fs::write(&path, b"left over").expect("write");

    let fabric = fabric();
    let (pa, pb) = (Arc::new(Probe::default()), Arc::new(Probe::default()));
    let a = start_unicast(
        host(&fabric, "a", A_IP, 0).telemetry(true),
        &pa,
        &pb,
        (A_IP, B_IP),
        64,
    );
    let b = start_unicast(
        host(&fabric, "b", B_IP, 1).telemetry(true),
        &pb,
        &pa,
        (B_IP, A_IP),
        64,
    );
    assert_eq!(a.telemetry_socket(), Some(path.as_path()));
    assert_eq!(b.telemetry_socket(), Some(path.as_path()));
    let md = std::fs::symlink_metadata(&path).expect("the socket");
    assert!(md.file_type().is_socket(), "{md:?}");
    assert_eq!(md.permissions().mode() & 0o777, 0o600);
    assert!(!stale.exists(), "the dead process's socket was not removed");

    assert!(a.wait_link_up(T).unwrap() && b.wait_link_up(T).unwrap());
    assert!(b.join_group(GroupAddr::Ipv4(GROUP)).unwrap());
    wait_for("b's join", T, || {
        b.with_controller(|c| c.group_phase(GroupAddr::Ipv4(GROUP)))
            .unwrap()
            == Some(GroupPhase::Joined)
    });
    // First contact: no more than the neighbour queue holds (3) while a resolves b.
    pa.allow(3);
    wait_for("3 datagrams at b", T, || pb.received.get() == 3);
    pa.allow(500);
    wait_for("500 datagrams at b", T, || pb.received.get() == 500);

    let mut c = Client::connect(&path);
    assert_eq!(c.hello["pid"], pid);
    assert_eq!(c.hello["request_len_max"], telemetry::REQUEST_LEN_MAX);

    let ifaces = c.ask("/ifaces");
    assert_eq!(ifaces["pid"], pid);
    let ia = &stack_named(&ifaces, "a")["ifaces"][0];
    assert_eq!(ia["qpn"], a.qpn().to_string());
    assert_eq!(ia["hwaddr"], a.hwaddr().to_string());
    assert_eq!(ia["pkey"], "0xffff");
    assert_eq!(ia["ipv4"], "10.0.0.1/24");
    assert_eq!(ia["link"], "up");
    assert_eq!(ia["mtu"], 2044, "the broadcast group's MTU (2048) less 4");
    assert_eq!(stack_named(&ifaces, "a")["device"], "sim:a");

    // b's group, as the SA holds it.
    let groups = c.ask("/groups");
    let gb = stack_named(&groups, "b")["ifaces"][0]["groups"]
        .as_array()
        .expect("groups")
        .clone();
    let g = gb
        .iter()
        .find(|g| g["ipv4"] == "239.1.2.3")
        .unwrap_or_else(|| panic!("239.1.2.3 not in {gb:?}"));
    let mgid = b
        .with_controller(|c| c.mgid_of(GroupAddr::Ipv4(GROUP)))
        .unwrap()
        .unwrap();
    let mlid = fabric.with_sa(|sa| sa.group_by_mgid(&mgid).expect("at the SA").record().mlid);
    assert_eq!(g["mlid"], format!("{:#06x}", mlid.0));
    assert_eq!(
        (g["state"].as_str(), g["kind"].as_str()),
        (Some("Joined"), Some("full"))
    );
    assert_eq!(g["join_state"], serde_json::json!(["FullMember"]));
    assert_eq!(
        g["qpn"],
        b.qpn().to_string(),
        "one lane: attached to lane 0's QP"
    );
    assert_eq!(g["lane"], 0);
    assert!(gb
        .iter()
        .any(|g| g["kind"] == "broadcast" && g["ipv4"].is_null()));

    // a's neighbour b, resolved.
    let neigh = c.ask("/neigh");
    let n = &stack_named(&neigh, "a")["ifaces"][0]["neighbours"][0];
    assert_eq!(n["ip"], "10.0.0.2");
    assert_eq!(n["state"], "Reachable");
    assert_eq!(n["hwaddr"], b.hwaddr().to_string());
    let b_lid = b.port().attr().lid;
    assert_eq!(n["dlid"], format!("{:#06x}", b_lid.0));

    // Counters: what the stack's own handle reads, at least (they keep moving).
    let before = a.stats(0);
    let stats = c.ask("/stats");
    let sa = &stack_named(&stats, "a");
    let l0 = &sa["lcores"][0];
    assert_eq!(l0["lcore"], 0);
    let tx = l0["counters"]["app_tx"].as_u64().expect("app_tx");
    assert!(tx >= before.app_tx && tx >= 500, "{l0}");
    assert_eq!(l0["drops"]["tx_full"], 0);
    let ctrl = &sa["ctrl"][0];
    assert!(
        ctrl["counters"]["joins_ok"].as_u64().unwrap() >= 1,
        "{ctrl}"
    );
    assert!(ctrl["drops"]
        .as_object()
        .unwrap()
        .contains_key("neigh_queue_full"));

    let help = c.ask("/help");
    assert_eq!(
        help["commands"].as_array().unwrap().len(),
        telemetry::COMMANDS.len()
    );
    let bad = c.ask("/groupz");
    assert!(bad["error"].as_str().unwrap().contains("unknown command"));

    // One stack stopped: the other is still served; the last one removes the socket.
    a.stop().expect("stop a");
    let ifaces = c.ask("/ifaces");
    assert_eq!(ifaces["stacks"].as_array().unwrap().len(), 1, "{ifaces}");
    assert!(path.exists());
    b.stop().expect("stop b");
    assert!(!path.exists(), "the socket outlived the last stack");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn requests_are_bounded_and_a_silent_client_is_let_go() {
    let _serial = serial();
    let dir = runtime_dir();
    let fabric = fabric();
    let s = host(&fabric, "solo", A_IP, 0)
        .telemetry(true)
        .start(|_| ibpoll::Discard)
        .expect("start");
    let path = s.telemetry_socket().expect("served").to_owned();

    // A line longer than the bound: an error answer, then the end of the connection.
    let mut c = Client::connect(&path);
    let long = format!("/{}\n", "x".repeat(telemetry::REQUEST_LEN_MAX));
    c.w.write_all(long.as_bytes()).expect("write");
    let mut line = String::new();
    c.r.read_line(&mut line).expect("answer");
    let v: Value = serde_json::from_str(&line).expect("json");
    assert!(
        v["error"].as_str().unwrap().contains("at most 256 bytes"),
        "{v}"
    );
    // Closed: end of input, or a reset (the rest of the line was never read).
    let mut rest = Vec::new();
    match c.r.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty()),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
    }

    // A client that says nothing is let go after the idle timeout, and the server
    // answers the next one.
    let mut silent = Client::connect(&path);
    let mut rest = Vec::new();
    silent
        .r
        .read_to_end(&mut rest)
        .expect("closed by the server");
    assert!(rest.is_empty());
    let mut c = Client::connect(&path);
    assert_eq!(c.ask("/ifaces")["stacks"][0]["stack"], "solo");

    // A request without its newline, then end of input: answered.
    let mut c = Client::connect(&path);
    c.w.write_all(b"/stats").unwrap();
    c.w.shutdown(std::net::Shutdown::Write).unwrap();
    let mut line = String::new();
    c.r.read_line(&mut line).expect("answer");
    let v: Value = serde_json::from_str(&line).expect("json");
    assert!(v["stacks"][0]["lcores"].is_array(), "{v}");
    s.stop().expect("stop");
    let _ = std::fs::remove_dir_all(&dir);
}
