//! The answers: what one stack exposes ([`Source`]) and the JSON of every command.

use std::net::Ipv6Addr;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ibpoll_ctrl::{Controller, CtrlStats, FlushLevel, GroupInfo, GroupKind, NeighInfo};
use ibpoll_dev::Port;
use ibpoll_wire::mcmember::JoinState;
use ibpoll_wire::{ipoib, Gid, Lid};
use serde_json::{json, Map, Value};

use super::{COMMANDS, CONTROL_TIMEOUT, REQUEST_LEN_MAX};
use crate::lcore::{Command, IfShared, Shared};
use crate::stack::IfaceInfo;
use crate::stats::{LcoreCounterSet, LcoreStats};

/// The lcore counters that count packets lost, by reason. Not included: `rx_loopback`
/// (the HCA's copy of our own multicast, dropped by design), `driver_rx_nombuf` (a
/// buffer not reposted; what it costs shows up as the fabric's drops).
pub(crate) const LCORE_DROPS: [&str; 14] = [
    "rx_malformed",
    "rx_unknown_ethertype",
    "rx_ctrl_full",
    "fanout_full",
    "app_dropped",
    "tx_link_down",
    "tx_too_long",
    "tx_malformed",
    "tx_no_iface",
    "tx_ctrl_full",
    "tx_full",
    "stop_dropped_rx",
    "stop_dropped_tx",
    "driver_tx_errors",
];

/// What one stack shows: copies of its handle's parts, taken when it started.
pub(crate) struct Source {
    pub(crate) id: u64,
    pub(crate) name: String,
    pub(crate) device: String,
    pub(crate) port: Arc<dyn Port>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) counters: Vec<LcoreCounterSet>,
    pub(crate) ifaces: Vec<IfaceInfo>,
}

/// The line a connection starts with.
pub(super) fn greeting() -> String {
    json!({
        "ibpoll": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "request_len_max": REQUEST_LEN_MAX,
        "commands": COMMANDS,
    })
    .to_string()
}

/// An error answer.
pub(super) fn error_answer(command: &str, error: &str) -> String {
    json!({ "command": command, "error": error }).to_string()
}

/// The answer to one request line.
pub(super) fn answer(line: &[u8]) -> String {
    let Ok(text) = std::str::from_utf8(line) else {
        return error_answer("", "a request is UTF-8 text");
    };
    let cmd = text.trim();
    let per_stack: fn(&Source) -> Value = match cmd {
        "/help" | "/" => {
            return json!({
                "command": cmd,
                "commands": COMMANDS,
                "help": {
                    "/ifaces": "interfaces: P_Key, QPN, hardware address, GID, IPv4, link, MTU, QPs",
                    "/groups": "multicast groups: MGID, IPv4 group, kind, state, JoinState, MLID, QP and lane, queued packets",
                    "/neigh": "neighbours and paths: IPv4, state, hardware address, DLID, SL, queued packets",
                    "/stats": "per-lcore counters and drops by reason; controller counters and drops by reason",
                },
            })
            .to_string();
        }
        "/ifaces" => ifaces,
        "/groups" => groups,
        "/neigh" => neighbours,
        "/stats" => stats,
        _ => {
            let shown: String = cmd.chars().take(64).collect();
            return error_answer(
                &shown,
                &format!(
                    "unknown command {shown:?}: give one of {}",
                    COMMANDS.join(" ")
                ),
            );
        }
    };
    let stacks: Vec<Value> = super::sources()
        .iter()
        .map(|s| {
            let mut v = per_stack(s);
            v["stack"] = json!(s.name);
            v["id"] = json!(s.id);
            v
        })
        .collect();
    json!({ "command": cmd, "pid": std::process::id(), "stacks": stacks }).to_string()
}

/// Runs `f` with the controller of `sh` on its control core, waiting at most
/// [`CONTROL_TIMEOUT`] (unlike `Stack::with_controller_on`'s 30 s: a query must not
/// hang on a busy or stopping stack).
fn ask<R: Send + 'static>(
    sh: &IfShared,
    f: impl FnOnce(&mut Controller) -> R + Send + 'static,
) -> Result<R, String> {
    // Acquire: pairs with the Release in `CtlHost::finish`.
    let alive = || sh.ctl_alive.load(Ordering::Acquire);
    let stopped = || "the control core has stopped".to_owned();
    let late = || {
        format!(
            "the control core did not answer within {} ms",
            CONTROL_TIMEOUT.as_millis()
        )
    };
    let deadline = Instant::now() + CONTROL_TIMEOUT;
    let (tx, rx) = sync_channel(1);
    let mut cmd: Command = Box::new(move |c: &mut Controller| {
        let _ = tx.send(f(c));
    });
    loop {
        if !alive() {
            return Err(stopped());
        }
        match sh.commands.push(cmd) {
            Ok(()) => break,
            Err(c) => cmd = c,
        }
        if Instant::now() > deadline {
            return Err(late());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    loop {
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(r) => return Ok(r),
            Err(RecvTimeoutError::Disconnected) => return Err(stopped()),
            Err(RecvTimeoutError::Timeout) if !alive() => {
                return rx.try_recv().map_err(|_| stopped());
            }
            Err(RecvTimeoutError::Timeout) if Instant::now() > deadline => return Err(late()),
            Err(RecvTimeoutError::Timeout) => {}
        }
    }
}

fn gid(g: &Gid) -> String {
    // RFC 5952, as tshark and `ip` print IPv6 addresses.
    Ipv6Addr::from(g.0).to_string()
}

fn ipv4(a: [u8; 4]) -> String {
    std::net::Ipv4Addr::from(a).to_string()
}

fn lid(l: Lid) -> String {
    format!("{:#06x}", l.0)
}

fn join_state(js: JoinState) -> Vec<&'static str> {
    const NAMES: [&str; 4] = [
        "FullMember",
        "NonMember",
        "SendOnlyNonMember",
        "SendOnlyFullMember",
    ];
    (0..4)
        .filter(|i| js.bits() & (1 << i) != 0)
        .map(|i| NAMES[i])
        .collect()
}

/// The IPv4 group an MGID maps (RFC 4391: the low 28 bits of the group, in the last 4
/// bytes), if it is an IPv4 multicast MGID other than the broadcast group.
fn mgid_ipv4(g: &Gid) -> Option<String> {
    if !ipoib::is_ipv4_mgid(g) || ipoib::is_broadcast_mgid(g) {
        return None;
    }
    let b = &g.0[12..16];
    Some(ipv4([0xe0 | (b[0] & 0x0f), b[1], b[2], b[3]]))
}

/// One entry per interface of `s`: `head` (what the stack knows itself) plus what
/// `body` makes of the control core's answer, or its error.
fn per_iface<R: Send + 'static>(
    s: &Source,
    ask_ctl: fn(&mut Controller) -> R,
    body: impl Fn(&Source, usize, R) -> Map<String, Value>,
) -> Vec<Value> {
    s.ifaces
        .iter()
        .enumerate()
        .map(|(i, info)| {
            let mut o = Map::new();
            o.insert("iface".into(), json!(i));
            o.insert("pkey".into(), json!(info.config.pkey.to_string()));
            match ask(&s.shared.ifaces[i], ask_ctl) {
                Ok(r) => o.extend(body(s, i, r)),
                Err(e) => {
                    o.insert("error".into(), json!(e));
                }
            }
            Value::Object(o)
        })
        .collect()
}

type IfaceState = (
    bool,
    usize,
    Option<FlushLevel>,
    ibpoll_wire::Qpn,
    usize,
    usize,
);

fn ifaces(s: &Source) -> Value {
    let attr = s.port.attr();
    let list = per_iface(
        s,
        |c| -> IfaceState {
            (
                c.link_up(),
                c.snapshot().mtu,
                c.flush_level(),
                c.ctl_qpn(),
                c.group_count(),
                c.neighbour_count(),
            )
        },
        |s, i, (up, mtu, flush, ctl_qpn, groups, neighbours)| {
            let info = &s.ifaces[i];
            let f = &info.config;
            let lanes: Vec<String> = s.shared.ifaces[i]
                .lane_qpns
                .iter()
                .map(|q| q.to_string())
                .collect();
            let v = json!({
                "qpn": info.qpn.to_string(),
                "hwaddr": info.hwaddr.to_string(),
                "gid": gid(&info.hwaddr.gid()),
                "ipv4": f.ipv4.map(|a| format!("{}/{}", ipv4(a), f.prefix_len)),
                "link": if up { "up" } else { "down" },
                "mtu": mtu,
                "flush": flush.map(|l| format!("{l:?}").to_lowercase()),
                "lane_qpns": lanes,
                "ctl_qpn": ctl_qpn.to_string(),
                "groups": groups,
                "neighbours": neighbours,
            });
            v.as_object().cloned().unwrap_or_default()
        },
    );
    json!({
        "device": s.device,
        "port": attr.port_num,
        "port_state": format!("{:?}", attr.state),
        "lid": lid(attr.lid),
        "data_lcores": s.counters.len(),
        "ifaces": list,
    })
}

fn group_json(lanes: &[ibpoll_wire::Qpn], g: &GroupInfo) -> Value {
    json!({
        "mgid": gid(&g.mgid),
        "ipv4": mgid_ipv4(&g.mgid),
        "kind": match g.kind {
            GroupKind::Broadcast => "broadcast",
            GroupKind::Full => "full",
            GroupKind::SendOnly => "send-only",
        },
        "state": format!("{:?}", g.phase),
        "join_state": join_state(g.join_state),
        "mlid": g.mlid.map(lid),
        "qpn": g.qpn.map(|q| q.to_string()),
        "lane": g.qpn.and_then(|q| lanes.iter().position(|l| *l == q)),
        "queued": g.queued,
        "failures": g.failures,
        "unconfirmed": g.unconfirmed,
    })
}

fn groups(s: &Source) -> Value {
    let list = per_iface(
        s,
        |c| c.groups(),
        |s, i, gs: Vec<GroupInfo>| {
            let lanes = &s.shared.ifaces[i].lane_qpns;
            let v: Vec<Value> = gs.iter().map(|g| group_json(lanes, g)).collect();
            Map::from_iter([("groups".to_owned(), Value::Array(v))])
        },
    );
    json!({ "ifaces": list })
}

fn neigh_json(n: &NeighInfo) -> Value {
    json!({
        "ip": n.ip.to_string(),
        "state": format!("{:?}", n.phase),
        "hwaddr": n.hwaddr.map(|h| h.to_string()),
        "qpn": n.hwaddr.map(|h| h.qpn().to_string()),
        "gid": n.hwaddr.map(|h| gid(&h.gid())),
        "dlid": n.path.map(|p| lid(p.dlid)),
        "sl": n.path.map(|p| p.sl),
        "queued": n.queued,
        "arp_tries": n.arp_tries,
    })
}

fn neighbours(s: &Source) -> Value {
    let list = per_iface(
        s,
        |c| c.neighbours(),
        |_, _, ns: Vec<NeighInfo>| {
            let v: Vec<Value> = ns.iter().map(neigh_json).collect();
            Map::from_iter([("neighbours".to_owned(), Value::Array(v))])
        },
    );
    json!({ "ifaces": list })
}

fn named(fields: impl IntoIterator<Item = (&'static str, u64)>) -> Value {
    Value::Object(
        fields
            .into_iter()
            .map(|(k, v)| (k.to_owned(), json!(v)))
            .collect(),
    )
}

/// An lcore's drops by reason ([`LCORE_DROPS`]).
pub(crate) fn lcore_drops(st: &LcoreStats) -> Vec<(&'static str, u64)> {
    let fields = st.fields();
    LCORE_DROPS
        .iter()
        .map(|r| {
            let n = fields.iter().find(|(k, _)| k == r).map_or(0, |(_, v)| *v);
            (*r, n)
        })
        .collect()
}

fn stats(s: &Source) -> Value {
    let lcores: Vec<Value> = s
        .counters
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let st = c.read();
            json!({
                "lcore": i,
                "counters": named(st.fields()),
                "drops": named(lcore_drops(&st)),
            })
        })
        .collect();
    let ctrl = per_iface(
        s,
        |c| c.stats(),
        |_, _, st: CtrlStats| {
            let v = json!({ "counters": named(st.fields()), "drops": named(st.drops()) });
            v.as_object().cloned().unwrap_or_default()
        },
    );
    json!({ "lcores": lcores, "ctrl": ctrl })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ibpoll_wire::ipoib::McastScope;
    use ibpoll_wire::PKey;

    #[test]
    fn every_drop_reason_is_a_counter() {
        let names: Vec<&str> = LcoreStats::default()
            .fields()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        for r in LCORE_DROPS {
            assert!(names.contains(&r), "{r} is not an lcore counter");
        }
    }

    #[test]
    fn an_ipv4_mgid_gives_its_group_back() {
        let g = ipoib::ipv4_mcast_mgid([239, 1, 2, 3], PKey(0x8001), McastScope::LINK_LOCAL);
        assert_eq!(mgid_ipv4(&g).as_deref(), Some("239.1.2.3"));
        // RFC 4391: only the low 28 bits travel; every IPv4 group is in 224.0.0.0/4.
        let g = ipoib::ipv4_mcast_mgid([224, 0, 0, 251], PKey::DEFAULT, McastScope::GLOBAL);
        assert_eq!(mgid_ipv4(&g).as_deref(), Some("224.0.0.251"));
        assert_eq!(mgid_ipv4(&ipoib::broadcast_mgid(PKey::DEFAULT)), None);
        // RFC 5952 text, as tshark prints it.
        assert_eq!(
            gid(&ipoib::broadcast_mgid(PKey::DEFAULT)),
            "ff12:401b:ffff::ffff:ffff"
        );
    }

    #[test]
    fn join_state_bits_are_named() {
        assert_eq!(join_state(JoinState::FULL_MEMBER), ["FullMember"]);
        assert_eq!(
            join_state(JoinState::FULL_MEMBER | JoinState::SEND_ONLY_FULL_MEMBER),
            ["FullMember", "SendOnlyFullMember"]
        );
    }

    #[test]
    fn bad_requests_get_an_error_answer() {
        let v: Value = serde_json::from_str(&answer(b"/nope")).expect("json");
        assert!(v["error"].as_str().expect("an error").contains("/groups"));
        let v: Value = serde_json::from_str(&answer(&[0xff, 0xfe])).expect("json");
        assert!(v["error"].is_string());
        let v: Value = serde_json::from_str(&answer(b" /help \r")).expect("json");
        assert_eq!(v["commands"].as_array().map(Vec::len), Some(COMMANDS.len()));
    }
}
