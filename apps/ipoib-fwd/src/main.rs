//! `ipoib-fwd`: runs the L3 forwarder between two partitions of the embedded simulated
//! fabric, with a built-in traffic source (partition 0xffff) and sink (0x8001) so that
//! it does something visible on its own; prints one status line per second and a
//! summary, and checks conservation (source sent == sink received + named drops).
//!
//! Exit status: 0 on success, 1 if conservation is violated or the run failed, 2 for
//! bad flags or an impossible configuration.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ibpoll::{ctrl_packet_drops, IdlePolicy, IfaceConfig, Stack, StopReport};
use ibpoll_pmd_sim::{FabricConfig, SimFabric};
use ibpoll_wire::{IbMtu, PKey};
use ipoib_fwd::traffic::{Sink, Source, SourceConfig, TrafficCounters, SIZE_MIN};
use ipoib_fwd::{parse_ipv4, read_route_file, start_forwarder, FwdConfig, MRoute, Route};

const USAGE: &str = "\
usage: ipoib-fwd [options]

Forwards IPv4 between partition 0xffff (interface 0, 10.1.0.1/16) and partition 0x8001
(interface 1, 10.2.0.1/16) of the embedded simulated InfiniBand fabric, with a built-in
source (10.1.0.2, on 0xffff) sending UDP to --dst via the forwarder, and a sink
(10.2.0.2, on 0x8001).

options:
  --duration SECS     how long the source sends (default 3; fractions allowed)
  --cores N           forwarder data lcores, each polling both interfaces (default 1)
  --route ROUTE       add a route, PREFIX/LEN[,via=IPV4],if=N (repeatable), e.g.
                      --route 10.9.0.0/16,via=10.2.0.2,if=1
  --mroute MROUTE     add a multicast route, GROUP[/LEN],from=N,to=M (repeatable), e.g.
                      --mroute 239.1.0.0/24,from=0,to=1: the forwarder subscribes to
                      every group of it on interface N (at most 256 groups in all) and
                      sends them on interface M (a send-only join there)
  --routes FILE       add the routes of FILE (one per line, # comments; multicast
                      routes as `mroute GROUP[/LEN],from=N,to=M`)
  --size BYTES        IP packet size of the source's datagrams (36..=2044, default 64)
  --rate PPS          source rate in packets/s (default 0: as fast as it can)
  --window N          datagrams in flight at most, source to sink (default 512; 0: open
                      loop, receive-ring overruns are then counted drops)
  --dst IPV4          destination of the source's datagrams (default 10.2.0.2); a
                      multicast group needs an --mroute from 0 to 1 (the sink joins it)
  --flows N           UDP source ports (default 16)
  -h, --help          this text";

/// The parsed command line.
#[derive(Debug)]
struct Args {
    duration: Duration,
    cores: usize,
    routes: Vec<Route>,
    mroutes: Vec<MRoute>,
    size: usize,
    rate: u64,
    window: u64,
    dst: [u8; 4],
    flows: u16,
}

/// An error and its causes on one line.
fn describe(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let m = c.to_string();
        if !s.contains(&m) {
            s = format!("{s}: {m}");
        }
        src = c.source();
    }
    s
}

/// A bad command line: the message to print (exit status 2).
#[derive(Debug)]
struct Usage(String);

fn value(flag: &str, it: &mut std::slice::Iter<'_, String>) -> Result<String, Usage> {
    it.next()
        .cloned()
        .ok_or_else(|| Usage(format!("{flag} needs a value")))
}

fn number<T: std::str::FromStr>(flag: &str, v: &str, what: &str) -> Result<T, Usage> {
    v.parse()
        .map_err(|_| Usage(format!("{flag} {v:?}: expected {what}")))
}

fn parse_args(argv: &[String]) -> Result<Option<Args>, Usage> {
    let mut a = Args {
        duration: Duration::from_secs(3),
        cores: 1,
        routes: Vec::new(),
        mroutes: Vec::new(),
        size: 64,
        rate: 0,
        window: 512,
        dst: [10, 2, 0, 2],
        flows: 16,
    };
    // --flag=value is accepted too.
    let mut expanded = Vec::with_capacity(argv.len());
    for arg in argv {
        match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => {
                expanded.push(f.to_owned());
                expanded.push(v.to_owned());
            }
            _ => expanded.push(arg.clone()),
        }
    }
    let mut it = expanded.iter();
    while let Some(flag) = it.next() {
        let flag = flag.as_str();
        let val = |it: &mut std::slice::Iter<'_, String>| value(flag, it);
        match flag {
            "-h" | "--help" => return Ok(None),
            "--duration" => {
                let v = &val(&mut it)?;
                let s: f64 = number(flag, v, "seconds, e.g. 3 or 0.5")?;
                if !(s.is_finite() && s > 0.0 && s <= 86_400.0) {
                    return Err(Usage(format!("--duration {v}: expected 0 < SECS <= 86400")));
                }
                a.duration = Duration::from_secs_f64(s);
            }
            "--cores" => {
                let v = &val(&mut it)?;
                a.cores = number(flag, v, "a number of lcores")?;
                if a.cores == 0 {
                    return Err(Usage(
                        "--cores 0: the forwarder needs at least 1 data lcore".into(),
                    ));
                }
            }
            "--route" => {
                let v = &val(&mut it)?;
                a.routes
                    .push(v.parse::<Route>().map_err(|e| Usage(describe(&e)))?);
            }
            "--mroute" => {
                let v = &val(&mut it)?;
                a.mroutes
                    .push(v.parse::<MRoute>().map_err(|e| Usage(describe(&e)))?);
            }
            "--routes" => {
                let v = &val(&mut it)?;
                let (rs, ms) =
                    read_route_file(&PathBuf::from(v)).map_err(|e| Usage(describe(&e)))?;
                a.routes.extend(rs);
                a.mroutes.extend(ms);
            }
            "--size" => {
                let v = &val(&mut it)?;
                a.size = number(flag, v, "bytes")?;
                if !(SIZE_MIN..=2044).contains(&a.size) {
                    return Err(Usage(format!(
                        "--size {v}: the IP packet size must be {SIZE_MIN}..=2044 (the IPoIB MTU of a 2048-byte IB MTU)"
                    )));
                }
            }
            "--rate" => {
                let v = &val(&mut it)?;
                a.rate = number(flag, v, "packets per second (0: unlimited)")?;
            }
            "--window" => {
                let v = &val(&mut it)?;
                a.window = number(flag, v, "a number of datagrams (0: open loop)")?;
            }
            "--dst" => {
                let v = &val(&mut it)?;
                a.dst = parse_ipv4(v)
                    .ok_or_else(|| Usage(format!("--dst {v:?}: expected an IPv4 address")))?;
            }
            "--flows" => {
                let v = &val(&mut it)?;
                a.flows = number(flag, v, "1..=65535")?;
                if a.flows == 0 {
                    return Err(Usage("--flows 0: at least 1 flow".into()));
                }
            }
            other => return Err(Usage(format!("unknown argument {other:?} (see --help)"))),
        }
    }
    Ok(Some(a))
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse_args(&argv) {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(Usage(msg)) => {
            eprintln!("ipoib-fwd: error: {msg}");
            eprintln!("(ipoib-fwd --help for usage)");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(Failure::Config(msg)) => {
            eprintln!("ipoib-fwd: error: {msg}");
            ExitCode::from(2)
        }
        Err(Failure::Run(msg)) => {
            eprintln!("ipoib-fwd: error: {msg}");
            ExitCode::from(1)
        }
    }
}

/// Why a run failed: the configuration (exit 2) or at run time (exit 1).
enum Failure {
    Config(String),
    Run(String),
}

fn usable_cpus() -> usize {
    core_affinity::get_core_ids().map_or(1, |v| v.len()).max(1)
}

const SRC_IP: [u8; 4] = [10, 1, 0, 2];
const SINK_IP: [u8; 4] = [10, 2, 0, 2];
const T: Duration = Duration::from_secs(30);

/// An endpoint (source or sink) with one interface.
fn endpoint(fabric: &SimFabric, name: &str, pkey: PKey, ip: [u8; 4]) -> ibpoll::StackBuilder {
    Stack::builder()
        .name(name)
        .fabric(fabric, name)
        .interface(IfaceConfig {
            pkey,
            ipv4: Some(ip),
            prefix_len: 16,
        })
        .data_cores(1)
        .pin(false)
        .mtu(IbMtu::Mtu2048)
        .idle(IdlePolicy::Yield { after: 16 })
        .stop_timeout(Duration::from_secs(10))
}

fn run(args: &Args) -> Result<bool, Failure> {
    let cpus = usable_cpus();
    if args.cores > cpus {
        return Err(Failure::Config(format!(
            "--cores {}: this machine (or this process's CPU set) has {cpus} usable CPU(s); use --cores 1..={cpus}",
            args.cores
        )));
    }
    let cfg = FwdConfig {
        routes: args.routes.clone(),
        mroutes: args.mroutes.clone(),
        data_cores: args.cores,
        pin: false,
        idle: IdlePolicy::Yield { after: 16 },
        ..FwdConfig::default()
    };
    cfg.validate().map_err(|e| Failure::Config(describe(&e)))?;
    let table = cfg
        .route_table()
        .map_err(|e| Failure::Config(describe(&e)))?;
    let mcast = args.dst[0] >> 4 == 0xe;
    if mcast {
        let mt = cfg
            .mroute_table()
            .map_err(|e| Failure::Config(describe(&e)))?;
        if mt.lookup(0, args.dst) != Some(1) {
            return Err(Failure::Config(format!(
                "--dst {}: a multicast group needs a multicast route from the source's interface to the sink's, e.g. --mroute {}/32,from=0,to=1",
                std::net::Ipv4Addr::from(args.dst),
                std::net::Ipv4Addr::from(args.dst)
            )));
        }
    }
    let Some(hop) = (if mcast {
        Some(ipoib_fwd::NextHop {
            iface: 1,
            via: Some(SINK_IP),
        })
    } else {
        table.lookup(args.dst)
    }) else {
        return Err(Failure::Config(format!(
            "--dst {}: no route to it (connected: 10.1.0.0/16 if=0, 10.2.0.0/16 if=1); add one with --route",
            std::net::Ipv4Addr::from(args.dst)
        )));
    };
    if hop.iface != 1 || hop.next_hop(args.dst) != SINK_IP {
        return Err(Failure::Config(format!(
            "--dst {}: the route sends it to {} on interface {}, but the built-in sink is 10.2.0.2 on interface 1; route it via=10.2.0.2,if=1",
            std::net::Ipv4Addr::from(args.dst),
            std::net::Ipv4Addr::from(hop.next_hop(args.dst)),
            hop.iface
        )));
    }

    let fabric = SimFabric::new(FabricConfig {
        partitions: vec![PKey::DEFAULT, PKey(0x8001)],
        broadcast_mtu: IbMtu::Mtu2048,
        port_mtu: IbMtu::Mtu2048,
        ..FabricConfig::default()
    });
    let run_err = |e: &dyn std::error::Error| Failure::Run(describe(e));
    let src_c = Arc::new(TrafficCounters::default());
    let sink_c = Arc::new(TrafficCounters::default());
    let sink = {
        let c = sink_c.clone();
        endpoint(&fabric, "sink", PKey(0x8001), SINK_IP)
            .start(move |_| Sink::new(c.clone()))
            .map_err(|e| run_err(&e))?
    };
    let fwd = start_forwarder(&fabric, "fwd", &cfg).map_err(|e| run_err(&e))?;
    let src_cfg = SourceConfig {
        src: SRC_IP,
        dst: args.dst,
        // A multicast destination is its own next hop: the source sends to the group.
        gateway: if mcast { args.dst } else { [10, 1, 0, 1] },
        size: args.size,
        rate_pps: args.rate,
        flows: args.flows,
        window: args.window,
        count: u64::MAX,
        ttl: ipoib_fwd::traffic::TTL,
    };
    // Hold the source until every link is up.
    src_c.halt.store(true, Ordering::Relaxed);
    let source = {
        let (c, peer) = (src_c.clone(), sink_c.clone());
        endpoint(&fabric, "source", PKey::DEFAULT, SRC_IP)
            .start(move |_| Source::new(src_cfg, c.clone(), Some(peer.clone())))
            .map_err(|e| run_err(&e))?
    };
    if mcast {
        let g = ibpoll::GroupAddr::Ipv4(args.dst);
        if !sink.join_group(g).map_err(|e| run_err(&e))? {
            return Err(Failure::Run("the sink could not subscribe to --dst".into()));
        }
    }
    let ups: [(&str, Result<bool, String>); 3] = [
        ("sink", sink.wait_link_up(T).map_err(|e| describe(&e))),
        ("forwarder", fwd.wait_ready(T).map_err(|e| describe(&e))),
        ("source", source.wait_link_up(T).map_err(|e| describe(&e))),
    ];
    for (name, up) in ups {
        match up {
            Ok(true) => {}
            Ok(false) => {
                return Err(Failure::Run(format!(
                    "{name}: the link did not come up (or the groups were not joined) within {T:?}"
                )))
            }
            Err(e) => return Err(Failure::Run(format!("{name}: {e}"))),
        }
    }
    if mcast {
        let g = ibpoll::GroupAddr::Ipv4(args.dst);
        let since = Instant::now();
        while sink
            .with_controller(move |c| c.group_phase(g))
            .map_err(|e| run_err(&e))?
            != Some(ibpoll_ctrl::GroupPhase::Joined)
        {
            if since.elapsed() > T {
                return Err(Failure::Run(format!(
                    "the sink did not join --dst within {T:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    println!(
        "ipoib-fwd: source 10.1.0.2 (P_Key 0xffff) -> forwarder [if0 10.1.0.1/16 P_Key 0xffff, if1 10.2.0.1/16 P_Key 0x8001] -> sink 10.2.0.2 (P_Key 0x8001); {} route(s), {} multicast route(s), {} forwarder lcore(s), {} B packets, rate {}, window {}",
        fwd.table().len(),
        fwd.mroutes().len(),
        args.cores,
        args.size,
        if args.rate == 0 { "unlimited".to_owned() } else { format!("{} pps", args.rate) },
        args.window
    );
    // Warm-up: one datagram resolves both hops (ARP and path records) on first contact,
    // so that the run does not start by overflowing the 3-packet neighbour queues.
    src_c.budget.store(1, Ordering::Relaxed);
    src_c.halt.store(false, Ordering::Relaxed);
    let warm = Instant::now();
    while sink_c.received.get() == 0 {
        if warm.elapsed() > T {
            return Err(Failure::Run(format!(
                "the first datagram did not reach the sink within {T:?} (ARP / path resolution failed?)"
            )));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let start = Instant::now();
    src_c.budget.store(u64::MAX, Ordering::Relaxed);
    let mut last_t = start;
    let mut last_rx = fwd.stack_stats().app_rx;
    let mut last_fwd = fwd.stats().forwarded;
    let mut second = 0;
    while start.elapsed() < args.duration {
        let next = Duration::from_secs(second + 1).min(args.duration);
        let left = next.saturating_sub(start.elapsed());
        std::thread::sleep(left.min(Duration::from_millis(50)));
        if start.elapsed() < next {
            continue;
        }
        second += 1;
        let now = Instant::now();
        let dt = now.duration_since(last_t).as_secs_f64();
        let (st, fs) = (fwd.stack_stats(), fwd.stats());
        println!(
            "[{:5.1} s] rx {:7.3} Mpps  tx {:7.3} Mpps  drops {}  (source sent {}, sink received {})",
            now.duration_since(start).as_secs_f64(),
            (st.app_rx - last_rx) as f64 / dt / 1e6,
            (fs.forwarded - last_fwd) as f64 / dt / 1e6,
            fs.dropped() + st.tx_dropped(),
            src_c.sent.get(),
            sink_c.received.get(),
        );
        (last_t, last_rx, last_fwd) = (now, st.app_rx, fs.forwarded);
    }
    src_c.halt.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed();
    // Let what is in flight arrive (bounded).
    let settle_start = Instant::now();
    let mut seen = (u64::MAX, Instant::now());
    while settle_start.elapsed() < Duration::from_secs(3) {
        let v = sink_c.received.get() + fwd.stats().rx + fabric.stats().dropped();
        if v != seen.0 {
            seen = (v, Instant::now());
        } else if seen.1.elapsed() > Duration::from_millis(100) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let rs = source.stop().map_err(|e| run_err(&e))?;
    let rf = fwd.stop().map_err(|e| run_err(&e))?;
    let rk = sink.stop().map_err(|e| run_err(&e))?;
    let fabric_stats = fabric.stats();
    if std::env::var_os("IPOIB_FWD_DEBUG").is_some() {
        eprintln!("source ctrl: {:?}", rs.ctrl_ifaces);
        eprintln!("forwarder ctrl: {:?}", rf.stack.ctrl_ifaces);
        eprintln!("source lcores: {:?}", rs.total());
        eprintln!("forwarder lcores: {:?}", rf.stack.total());
    }
    Ok(summary(
        args,
        elapsed,
        &src_c,
        &sink_c,
        &rs,
        &rf,
        &rk,
        &fabric_stats,
    ))
}

fn ctrl_drops(r: &StopReport) -> u64 {
    r.ctrl_ifaces.iter().map(ctrl_packet_drops).sum()
}

#[allow(clippy::too_many_arguments)]
fn summary(
    args: &Args,
    elapsed: Duration,
    src_c: &TrafficCounters,
    sink_c: &TrafficCounters,
    rs: &StopReport,
    rf: &ipoib_fwd::FwdReport,
    rk: &StopReport,
    fabric: &ibpoll_pmd_sim::FabricStats,
) -> bool {
    let (ts, tf, tk) = (rs.total(), rf.stack.total(), rk.total());
    let sent = src_c.sent.get();
    let received = sink_c.received.get();
    let secs = elapsed.as_secs_f64();
    println!(
        "--- ipoib-fwd summary ({secs:.2} s, {} B packets) ---",
        args.size
    );
    println!(
        "source: sent {sent} ({:.3} Mpps), nombuf {}",
        sent as f64 / secs / 1e6,
        src_c.nombuf.get()
    );
    println!(
        "forwarder: rx {} forwarded {} (multicast {}) ({:.3} Mpps), busy {:.0} %",
        rf.fwd.rx,
        rf.fwd.forwarded,
        rf.fwd.mcast_forwarded,
        rf.fwd.forwarded as f64 / secs / 1e6,
        100.0 * tf.busy_ratio()
    );
    let fwd_drops: Vec<String> = rf
        .fwd
        .drops()
        .iter()
        .map(|(n, v)| format!("{n} {v}"))
        .collect();
    println!("forwarder drops: {}", fwd_drops.join(", "));
    println!(
        "sink: received {received} ({:.3} Mpps, {:.1} MB/s), foreign {}, bad TTL {}",
        received as f64 / secs / 1e6,
        sink_c.received_bytes.get() as f64 / secs / 1e6,
        sink_c.foreign.get(),
        sink_c.bad_ttl.get()
    );
    // Named drops of data packets, each counted once: the stacks' (send path, control
    // cores, the forwarder's verdicts via app_dropped, stop drains) and the fabric's
    // (overruns, buffer shortages, send errors: the drivers' own counters repeat these).
    let named: [(&str, u64); 9] = [
        ("source stack tx", ts.tx_dropped()),
        ("source ctrl", ctrl_drops(rs)),
        ("forwarder verdicts", tf.app_dropped),
        ("forwarder stack tx", tf.tx_dropped()),
        ("forwarder ctrl", ctrl_drops(&rf.stack)),
        ("forwarder stop drain", tf.stop_dropped_rx),
        ("sink stop drain", tk.stop_dropped_rx),
        ("sink app", tk.app_dropped),
        ("fabric", fabric.dropped()),
    ];
    let drops: u64 = named.iter().map(|(_, v)| v).sum();
    let list: Vec<String> = named
        .iter()
        .filter(|(_, v)| *v > 0)
        .map(|(n, v)| format!("{n} {v}"))
        .collect();
    let fabric_list: Vec<String> = fabric
        .drops()
        .filter(|(_, v)| *v > 0)
        .map(|(n, v)| format!("{n} {v}"))
        .collect();
    println!(
        "drops: {drops} [{}]{}",
        list.join(", "),
        if fabric_list.is_empty() {
            String::new()
        } else {
            format!(" fabric: {}", fabric_list.join(", "))
        }
    );
    println!(
        "pool in use after stop: source {}, forwarder {}, sink {}",
        rs.pool_in_use, rf.stack.pool_in_use, rk.pool_in_use
    );
    if sent == received + drops {
        println!(
            "conservation: ok (source sent {sent} == sink received {received} + drops {drops})"
        );
        true
    } else {
        eprintln!(
            "ipoib-fwd: conservation violated: source sent {sent} != sink received {received} + drops {drops} (difference {})",
            sent as i128 - (received + drops) as i128
        );
        false
    }
}
