//! One run of the binary: the configuration checks that need the tables, the fabric and
//! the three nodes, the traffic until the duration, a signal, a failed output or a
//! failed capture ends it, the stop (every group left), the summary and the JSON.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ibpoll::{ctrl_packet_drops, IdlePolicy, IfaceConfig, Stack, StopReport};
use ibpoll_pmd_sim::{FabricConfig, SimFabric};
use ibpoll_wire::{IbMtu, PKey};
use ipoib_fwd::cli::capture::{Capture, CaptureEnd};
use ipoib_fwd::cli::{self, describe, note, Signals, Stdout};
use ipoib_fwd::traffic::{Sink, Source, SourceConfig, TrafficCounters};
use ipoib_fwd::{start_on, FwdConfig, FwdNode, FwdReport};
use serde_json::json;

use crate::Config;

const SRC_IP: [u8; 4] = [10, 1, 0, 2];
const SINK_IP: [u8; 4] = [10, 2, 0, 2];
pub(crate) const T: Duration = Duration::from_secs(30);

/// Why a run failed: the configuration (exit 2) or at run time (exit 1).
pub(crate) enum Failure {
    Config(String),
    Run(String),
}

pub(crate) fn ip(a: [u8; 4]) -> std::net::Ipv4Addr {
    a.into()
}

/// Runs and reports; the exit status.
pub fn main(cfg: &Config, stop: Arc<AtomicBool>, signals: &Signals) -> ExitCode {
    let mut out = Stdout::new();
    let r = run(cfg, &stop, signals, &mut out);
    match r {
        Ok(failed) => cli::exit_status(failed, signals.received()),
        Err(Failure::Config(msg)) => {
            note(&format!("ipoib-fwd: error: {msg}"));
            ExitCode::from(cli::EXIT_USAGE)
        }
        Err(Failure::Run(msg)) => {
            note(&format!("ipoib-fwd: error: {msg}"));
            ExitCode::from(cli::EXIT_FAILED)
        }
    }
}

/// The forwarder's configuration, checked with where `--dst` leads.
pub(crate) fn forwarder_config(
    cfg: &Config,
    stop: &Arc<AtomicBool>,
) -> Result<(FwdConfig, bool), Failure> {
    let fc = FwdConfig {
        routes: cfg.routes.clone(),
        mroutes: cfg.mroutes.clone(),
        routes6: cfg.routes6.clone(),
        mroutes6: cfg.mroutes6.clone(),
        data_cores: cfg.cores,
        pin: cfg.cpus.is_some(),
        cpus: cfg.cpus.clone(),
        idle: IdlePolicy::Yield { after: 16 },
        ..FwdConfig::default()
    };
    let fc = FwdConfig {
        stop_flag: Some(stop.clone()),
        ..fc
    };
    let conf = |e: ipoib_fwd::Error| Failure::Config(describe(&e));
    fc.validate().map_err(conf)?;
    let table = fc.route_table().map_err(conf)?;
    let dst = cfg.dst;
    let mcast = dst[0] >> 4 == 0xe;
    if mcast {
        if dst[..3] == [224, 0, 0] {
            return Err(Failure::Config(format!(
                "--dst: {}: 224.0.0.0/24 is link-local (RFC 5771) and never forwarded: give a group outside it, e.g. --dst 239.1.0.1 --mroute 239.1.0.1/32,from=0,to=1",
                ip(dst)
            )));
        }
        let mt = fc.mroute_table().map_err(conf)?;
        if mt.lookup(0, dst) != Some(1) {
            return Err(Failure::Config(format!(
                "--dst: {}: a multicast group needs a multicast route from the source's interface to the sink's, e.g. --mroute {}/32,from=0,to=1",
                ip(dst),
                ip(dst)
            )));
        }
        return Ok((fc, true));
    }
    let Some(hop) = table.lookup(dst) else {
        return Err(Failure::Config(format!(
            "--dst: {}: no route to it (connected: 10.1.0.0/16 if=0, 10.2.0.0/16 if=1); add one with --route",
            ip(dst)
        )));
    };
    if hop.iface != 1 || hop.next_hop(dst) != SINK_IP {
        return Err(Failure::Config(format!(
            "--dst: {}: the route sends it to {} on interface {}, but the built-in sink is 10.2.0.2 on interface 1; route it via=10.2.0.2,if=1",
            ip(dst),
            ip(hop.next_hop(dst)),
            hop.iface
        )));
    }
    Ok((fc, false))
}

/// An endpoint (source or sink) with one interface.
pub(crate) fn endpoint(
    fabric: &SimFabric,
    name: &str,
    pkey: PKey,
    ipv4: [u8; 4],
    stop: &Arc<AtomicBool>,
    telemetry: bool,
) -> ibpoll::StackBuilder {
    Stack::builder()
        .telemetry(telemetry)
        .name(name)
        .fabric(fabric, name)
        .interface(IfaceConfig {
            pkey,
            ipv4: Some(ipv4),
            prefix_len: 16,
            ..IfaceConfig::default()
        })
        .data_cores(1)
        .pin(false)
        .mtu(IbMtu::Mtu2048)
        .idle(IdlePolicy::Yield { after: 16 })
        .stop_timeout(Duration::from_secs(10))
        .stop_flag(stop.clone())
}

/// The three running nodes and their counters.
struct Nodes {
    fabric: SimFabric,
    capture: Option<Capture>,
    sink: Stack,
    fwd: FwdNode,
    source: Stack,
    src_c: Arc<TrafficCounters>,
    sink_c: Arc<TrafficCounters>,
}

pub(crate) fn run_err(e: &dyn std::error::Error) -> Failure {
    Failure::Run(describe(e))
}

fn start(
    cfg: &Config,
    fc: &FwdConfig,
    mcast: bool,
    stop: &Arc<AtomicBool>,
) -> Result<Nodes, Failure> {
    let fabric = SimFabric::new(FabricConfig {
        seed: cfg.seed,
        partitions: vec![PKey::DEFAULT, PKey(0x8001)],
        broadcast_mtu: IbMtu::Mtu2048,
        port_mtu: IbMtu::Mtu2048,
        ..FabricConfig::default()
    });
    let capture = match &cfg.pcap {
        Some((path, max)) => Some(
            Capture::start(&fabric, path, *max)
                .map_err(|e| Failure::Config(format!("--pcap: {e}")))?,
        ),
        None => None,
    };
    let src_c = Arc::new(TrafficCounters::default());
    let sink_c = Arc::new(TrafficCounters::default());
    let sink = {
        let c = sink_c.clone();
        endpoint(&fabric, "sink", PKey(0x8001), SINK_IP, stop, cfg.telemetry)
            .start(move |_| Sink::new(c.clone()))
            .map_err(|e| run_err(&e))?
    };
    let fwd = start_on(
        fc.stack_builder()
            .fabric(&fabric, "fwd")
            .telemetry(cfg.telemetry),
        fc,
    )
    .map_err(|e| run_err(&e))?;
    let src_cfg = SourceConfig {
        src: SRC_IP,
        dst: cfg.dst,
        // A multicast destination is its own next hop: the source sends to the group.
        gateway: if mcast { cfg.dst } else { [10, 1, 0, 1] },
        size: cfg.size,
        rate_pps: cfg.rate,
        flows: cfg.flows,
        window: cfg.window,
        count: u64::MAX,
        ttl: ipoib_fwd::traffic::TTL,
    };
    // Hold the source until every link is up.
    src_c.halt.store(true, Ordering::Relaxed);
    let source = {
        let (c, peer) = (src_c.clone(), sink_c.clone());
        endpoint(
            &fabric,
            "source",
            PKey::DEFAULT,
            SRC_IP,
            stop,
            cfg.telemetry,
        )
        .start(move |_| Source::new(src_cfg, c.clone(), Some(peer.clone())))
        .map_err(|e| run_err(&e))?
    };
    Ok(Nodes {
        fabric,
        capture,
        sink,
        fwd,
        source,
        src_c,
        sink_c,
    })
}

pub(crate) fn wait_until(
    what: &str,
    mut cond: impl FnMut() -> Result<bool, Failure>,
) -> Result<(), Failure> {
    let since = Instant::now();
    while !cond()? {
        if since.elapsed() > T {
            return Err(Failure::Run(format!("{what} within {T:?}")));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

/// Links up, the sink subscribed (multicast), one datagram through.
fn bring_up(n: &Nodes, cfg: &Config, mcast: bool) -> Result<(), Failure> {
    let g = ibpoll::GroupAddr::Ipv4(cfg.dst);
    if mcast && !n.sink.join_group(g).map_err(|e| run_err(&e))? {
        return Err(Failure::Run("the sink could not subscribe to --dst".into()));
    }
    let ups: [(&str, Result<bool, String>); 3] = [
        ("sink", n.sink.wait_link_up(T).map_err(|e| describe(&e))),
        ("forwarder", n.fwd.wait_ready(T).map_err(|e| describe(&e))),
        ("source", n.source.wait_link_up(T).map_err(|e| describe(&e))),
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
        wait_until("the sink did not join --dst", || {
            Ok(n.sink
                .with_controller(move |c| c.group_phase(g))
                .map_err(|e| run_err(&e))?
                == Some(ibpoll_ctrl::GroupPhase::Joined))
        })?;
    }
    // Warm-up: one datagram resolves both hops (ARP and path records) on first contact,
    // so that the run does not start by overflowing the 3-packet neighbour queues.
    n.src_c.budget.store(1, Ordering::Relaxed);
    n.src_c.halt.store(false, Ordering::Relaxed);
    wait_until(
        "the first datagram did not reach the sink (ARP / path resolution failed?)",
        || Ok(n.sink_c.received.get() > 0),
    )
}

/// Why the traffic ended before its duration, if it did.
fn interrupted(stop: &AtomicBool, out: &Stdout, fabric: &SimFabric) -> bool {
    stop.load(Ordering::SeqCst) || out.error().is_some() || Capture::failed(fabric).is_some()
}

/// The traffic, one status line per second, until the duration or an interruption.
fn traffic(n: &Nodes, cfg: &Config, stop: &AtomicBool, out: &mut Stdout) -> Duration {
    let start = Instant::now();
    n.src_c.budget.store(u64::MAX, Ordering::Relaxed);
    let mut last_t = start;
    let mut last_rx = n.fwd.stack_stats().app_rx;
    let mut last_fwd = n.fwd.stats().forwarded;
    let mut second = 0;
    while start.elapsed() < cfg.duration && !interrupted(stop, out, &n.fabric) {
        let next = Duration::from_secs(second + 1).min(cfg.duration);
        let left = next.saturating_sub(start.elapsed());
        std::thread::sleep(left.min(Duration::from_millis(20)));
        if start.elapsed() < next {
            continue;
        }
        second += 1;
        let now = Instant::now();
        let dt = now.duration_since(last_t).as_secs_f64();
        let (st, fs) = (n.fwd.stack_stats(), n.fwd.stats());
        out.line(&format!(
            "[{:5.1} s] rx {:7.3} Mpps  tx {:7.3} Mpps  drops {}  (source sent {}, sink received {})",
            now.duration_since(start).as_secs_f64(),
            (st.app_rx - last_rx) as f64 / dt / 1e6,
            (fs.forwarded - last_fwd) as f64 / dt / 1e6,
            fs.dropped() + st.tx_dropped(),
            n.src_c.sent.get(),
            n.sink_c.received.get(),
        ));
        (last_t, last_rx, last_fwd) = (now, st.app_rx, fs.forwarded);
    }
    n.src_c.halt.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed();
    // Let what is in flight arrive (bounded).
    let settle_start = Instant::now();
    let mut seen = (u64::MAX, Instant::now());
    while settle_start.elapsed() < Duration::from_secs(3) {
        let v = n.sink_c.received.get() + n.fwd.stats().rx + n.fabric.stats().dropped();
        if v != seen.0 {
            seen = (v, Instant::now());
        } else if seen.1.elapsed() > Duration::from_millis(100) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    elapsed
}

/// What the stop found.
struct Stopped {
    rs: StopReport,
    rf: FwdReport,
    rk: StopReport,
    fabric: ibpoll_pmd_sim::FabricStats,
    sa_memberships: usize,
    capture: Option<CaptureEnd>,
}

/// Stops every node in the direction of the traffic (each leaves its groups).
fn stop_all(n: Nodes) -> Result<Stopped, Failure> {
    let Nodes {
        fabric,
        capture,
        sink,
        fwd,
        source,
        ..
    } = n;
    let rs = source.stop().map_err(|e| run_err(&e))?;
    let rf = fwd.stop().map_err(|e| run_err(&e))?;
    let rk = sink.stop().map_err(|e| run_err(&e))?;
    let capture = capture.map(|c| c.finish(&fabric));
    let sa_memberships = fabric.with_sa(|sa| sa.groups().map(|g| g.members().count()).sum());
    Ok(Stopped {
        rs,
        rf,
        rk,
        fabric: fabric.stats(),
        sa_memberships,
        capture,
    })
}

fn run(
    cfg: &Config,
    stop: &Arc<AtomicBool>,
    signals: &Signals,
    out: &mut Stdout,
) -> Result<bool, Failure> {
    let (fc, mcast) = forwarder_config(cfg, stop)?;
    let n = start(cfg, &fc, mcast, stop)?;
    bring_up(&n, cfg, mcast)?;
    out.line(&format!(
        "ipoib-fwd: embedded simulated fabric: source 10.1.0.2 (P_Key 0xffff) -> forwarder [if0 10.1.0.1/16 fd00:1::1/64 P_Key 0xffff, if1 10.2.0.1/16 fd00:2::1/64 P_Key 0x8001] -> sink 10.2.0.2 (P_Key 0x8001); {} route(s), {} multicast route(s), {} IPv6 route(s), {} IPv6 multicast route(s), {} forwarder lcore(s), {} B packets, rate {}, window {}",
        n.fwd.table().len(),
        n.fwd.mroutes().len(),
        n.fwd.table6().len(),
        n.fwd.mroutes6().len(),
        cfg.cores,
        cfg.size,
        if cfg.rate == 0 { "max".to_owned() } else { format!("{} pps", cfg.rate) },
        cfg.window
    ));
    let elapsed = traffic(&n, cfg, stop, out);
    let (src_c, sink_c) = (n.src_c.clone(), n.sink_c.clone());
    let s = stop_all(n)?;
    let sum = Summary::new(&s, &src_c, &sink_c);
    let mut failed = false;
    if let Some(sig) = signals.received() {
        note(&format!(
            "ipoib-fwd: note: {} stopped the run after {:.2} s; every node stopped and left its groups",
            Signals::name(sig),
            elapsed.as_secs_f64()
        ));
    }
    for line in sum.lines(cfg, elapsed, &s) {
        out.line(&line);
    }
    if !sum.conserved() {
        note(&format!(
            "ipoib-fwd: error: conservation violated: source sent {} != sink received {} + drops {} (difference {})",
            sum.sent,
            sum.received,
            sum.drops,
            i128::from(sum.sent) - i128::from(sum.received + sum.drops)
        ));
        failed = true;
    }
    if s.sa_memberships != 0 {
        note(&format!(
            "ipoib-fwd: error: {} multicast memberships remain at the SA after every node stopped",
            s.sa_memberships
        ));
        failed = true;
    }
    if let Some(e) = s.capture.as_ref().and_then(|c| c.error.as_ref()) {
        note(&format!("ipoib-fwd: error: --pcap: {e}"));
        failed = true;
    }
    failed |= write_json(cfg, &sum.json(cfg, elapsed, &s, signals), out);
    if let Some(e) = out.error() {
        note(&format!(
            "ipoib-fwd: error: writing to standard output: {e}"
        ));
        failed = true;
    }
    Ok(failed)
}

/// Writes the JSON summary where `--json` says; whether that failed.
pub(crate) fn write_json(cfg: &Config, v: &serde_json::Value, out: &mut Stdout) -> bool {
    match &cfg.json {
        None => false,
        Some(None) => !out.line(&v.to_string()),
        Some(Some(f)) => match f.write(format!("{v}\n").as_bytes()) {
            Ok(()) => false,
            Err(e) => {
                note(&format!("ipoib-fwd: error: --json: {e}"));
                true
            }
        },
    }
}

pub(crate) fn ctrl_drops(r: &StopReport) -> u64 {
    r.ctrl_ifaces.iter().map(ctrl_packet_drops).sum()
}

/// The run's figures.
struct Summary {
    sent: u64,
    received: u64,
    drops: u64,
    named: Vec<(&'static str, u64)>,
    nombuf: u64,
    received_bytes: u64,
    foreign: u64,
    bad_ttl: u64,
}

impl Summary {
    fn new(s: &Stopped, src_c: &TrafficCounters, sink_c: &TrafficCounters) -> Summary {
        let (ts, tf, tk) = (s.rs.total(), s.rf.stack.total(), s.rk.total());
        // Named drops of data packets, each counted once: the stacks' (send path,
        // control cores, the forwarder's verdicts via app_dropped, stop drains) and the
        // fabric's (overruns, buffer shortages, send errors: the drivers' own counters
        // repeat these).
        let named = vec![
            ("source stack tx", ts.tx_dropped()),
            ("source ctrl", ctrl_drops(&s.rs)),
            ("forwarder verdicts", tf.app_dropped),
            ("forwarder stack tx", tf.tx_dropped()),
            ("forwarder ctrl", ctrl_drops(&s.rf.stack)),
            ("forwarder stop drain", tf.stop_dropped_rx),
            ("sink stop drain", tk.stop_dropped_rx),
            ("sink app", tk.app_dropped),
            ("fabric", s.fabric.dropped()),
        ];
        Summary {
            sent: src_c.sent.get(),
            received: sink_c.received.get(),
            drops: named.iter().map(|(_, v)| v).sum(),
            named,
            nombuf: src_c.nombuf.get(),
            received_bytes: sink_c.received_bytes.get(),
            foreign: sink_c.foreign.get(),
            bad_ttl: sink_c.bad_ttl.get(),
        }
    }

    fn conserved(&self) -> bool {
        self.sent == self.received + self.drops
    }

    fn lines(&self, cfg: &Config, elapsed: Duration, s: &Stopped) -> Vec<String> {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let rf = &s.rf;
        let tf = rf.stack.total();
        let list = |v: &mut dyn Iterator<Item = (&str, u64)>| {
            v.filter(|(_, n)| *n > 0)
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut l = vec![
            format!(
                "--- ipoib-fwd summary ({secs:.2} s, {} B packets) ---",
                cfg.size
            ),
            format!(
                "source: sent {} ({:.3} Mpps), nombuf {}",
                self.sent,
                self.sent as f64 / secs / 1e6,
                self.nombuf
            ),
            format!(
                "forwarder: rx {} forwarded {} (multicast {}) ({:.3} Mpps), busy {:.0} %",
                rf.fwd.rx,
                rf.fwd.forwarded,
                rf.fwd.mcast_forwarded,
                rf.fwd.forwarded as f64 / secs / 1e6,
                100.0 * tf.busy_ratio()
            ),
            format!(
                "sink: received {} ({:.3} Mpps, {:.3} Gb/s of IP), foreign {}, bad TTL {}",
                self.received,
                self.received as f64 / secs / 1e6,
                self.received_bytes as f64 * 8.0 / secs / 1e9,
                self.foreign,
                self.bad_ttl
            ),
        ];
        let fwd_drops = list(&mut rf.fwd.drops().into_iter());
        let named = list(&mut self.named.iter().copied());
        let fabric = list(&mut s.fabric.drops());
        l.push(format!(
            "drops: {}{}{}",
            self.drops,
            if named.is_empty() {
                String::new()
            } else {
                format!(" [{named}]")
            },
            if fabric.is_empty() {
                String::new()
            } else {
                format!(" fabric: {fabric}")
            }
        ));
        if !fwd_drops.is_empty() {
            l.push(format!("forwarder drops by reason: {fwd_drops}"));
        }
        l.push(format!(
            "pool in use after stop: source {}, forwarder {}, sink {}",
            s.rs.pool_in_use, rf.stack.pool_in_use, s.rk.pool_in_use
        ));
        l.push(format!(
            "SA memberships after shutdown: {}",
            s.sa_memberships
        ));
        if let Some(c) = &s.capture {
            l.push(c.line());
        }
        l.push(if self.conserved() {
            format!(
                "conservation: ok (source sent {} == sink received {} + drops {})",
                self.sent, self.received, self.drops
            )
        } else {
            format!(
                "conservation: BROKEN (source sent {} != sink received {} + drops {})",
                self.sent, self.received, self.drops
            )
        });
        l
    }

    fn json(
        &self,
        cfg: &Config,
        elapsed: Duration,
        s: &Stopped,
        sig: &Signals,
    ) -> serde_json::Value {
        let drops: serde_json::Map<String, serde_json::Value> = self
            .named
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| (k.replace(' ', "_"), json!(n)))
            .collect();
        let mut v = json!({
            "program": "ipoib-fwd",
            "version": env!("CARGO_PKG_VERSION"),
            "pmd": "sim",
            "fabric": "sim",
            "seed": cfg.seed,
            "size": cfg.size,
            "rate_pps": if cfg.rate == 0 { None } else { Some(cfg.rate) },
            "window": cfg.window,
            "flows": cfg.flows,
            "cores": cfg.cores,
            "dst": ip(cfg.dst).to_string(),
            "duration_s": elapsed.as_secs_f64(),
            "tx_packets": self.sent,
            "rx_packets": self.received,
            "forwarded": s.rf.fwd.forwarded,
            "mcast_forwarded": s.rf.fwd.mcast_forwarded,
            "drops": drops,
            "conserved": self.conserved(),
            "sa_memberships_after_shutdown": s.sa_memberships,
            "flushed": s.rs.flushed && s.rf.stack.flushed && s.rk.flushed,
            "interrupted_by": sig.received().map(Signals::name),
        });
        if let Some(c) = &s.capture {
            v["pcap"] = c.json();
        }
        v
    }
}
