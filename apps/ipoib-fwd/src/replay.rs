//! One run with `--pmd replay`: the forwarder's port is a replay NIC (`ibpoll-pmd-replay`,
//! DPDK's `net_pcap` with `infinite_rx`) over a port of the embedded fabric, whose other
//! two nodes are the next hops (plain stacks that answer ARP). Interface 0 replays
//! packets from 10.1.0.2 to `--dst`, interface 1 from 10.2.0.2 to 10.1.0.2; what the
//! forwarder sends is freed and counted. A warm-up sends one packet each way (ARP and
//! path resolution), the streams then run for the duration, pause, and the in-flight
//! packets settle before the stop. Conservation: replayed == forwarded (freed at the
//! replay NIC) + the stack's and the forwarder's counted drops.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ibpoll::{IdlePolicy, IfaceConfig, LcoreStats, Stack, StopReport};
use ibpoll_dev::Device;
use ibpoll_pmd_replay::{Frames, ReplayDevice, ReplayStats, Stream, StreamControl};
use ibpoll_pmd_sim::{FabricConfig, SimFabric};
use ibpoll_wire::{IbMtu, PKey};
use ipoib_fwd::cli::{self, note, Signals, Stdout};
use ipoib_fwd::traffic::{Sink, TrafficCounters};
use ipoib_fwd::{start_on, FwdConfig, FwdNode, FwdReport};
use serde_json::json;

use crate::run::{ctrl_drops, forwarder_config, ip, run_err, wait_until, write_json, Failure, T};
use crate::Config;

/// The next hops: on interface 0's partition, and on interface 1's.
const HOPS: [(&str, PKey, [u8; 4]); 2] = [
    ("hop0", PKey::DEFAULT, [10, 1, 0, 2]),
    ("hop1", PKey(0x8001), [10, 2, 0, 2]),
];

/// Runs and reports; the exit status.
pub fn main(cfg: &Config, stop: Arc<AtomicBool>, signals: &Signals) -> ExitCode {
    let mut out = Stdout::new();
    match run(cfg, &stop, signals, &mut out) {
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

/// The running nodes.
struct Nodes {
    fabric: SimFabric,
    dev: Arc<ReplayDevice>,
    controls: [StreamControl; 2],
    fwd: FwdNode,
    hops: [Stack; 2],
}

impl Nodes {
    fn replay(&self) -> ReplayStats {
        self.dev.port().map(|p| p.stats()).unwrap_or_default()
    }
}

/// A next hop: a plain stack that answers ARP on its partition, and sleeps when idle
/// (it receives nothing else) so that it leaves the CPUs to the forwarder.
fn hop(fabric: &SimFabric, i: usize, stop: &Arc<AtomicBool>) -> Result<Stack, Failure> {
    let (name, pkey, ipv4) = HOPS[i];
    let c = Arc::new(TrafficCounters::default());
    Stack::builder()
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
        .idle(IdlePolicy::Sleep {
            after: 0,
            sleep: Duration::from_micros(500),
        })
        .stop_timeout(Duration::from_secs(10))
        .stop_flag(stop.clone())
        .start(move |_| Sink::new(c.clone()))
        .map_err(|e| run_err(&e))
}

/// The two streams: from hop 0 to `--dst` on interface 0, from hop 1 to hop 0 on
/// interface 1; each seems to come from its hop's QPN and LID. Paused.
fn streams(cfg: &Config, hops: &[Stack; 2]) -> Result<Vec<Stream>, Failure> {
    let dsts = [cfg.dst, HOPS[0].2];
    let mut v = Vec::new();
    for (i, h) in hops.iter().enumerate() {
        let frames = Frames::ipv4_udp(HOPS[i].2, dsts[i], cfg.size, cfg.flows, 64)
            .map_err(|e| Failure::Config(format!("--size/--flows: {e}")))?;
        let mut s = Stream::new(HOPS[i].1, frames);
        s.src_qpn = h.qpn();
        s.slid = h.port().attr().lid;
        s.burst = cfg.burst;
        s.control().pause();
        v.push(s);
    }
    Ok(v)
}

fn start(cfg: &Config, fc: &FwdConfig, stop: &Arc<AtomicBool>) -> Result<Nodes, Failure> {
    let fabric = SimFabric::new(FabricConfig {
        seed: cfg.seed,
        partitions: vec![PKey::DEFAULT, PKey(0x8001)],
        broadcast_mtu: IbMtu::Mtu2048,
        port_mtu: IbMtu::Mtu2048,
        ..FabricConfig::default()
    });
    let hops = [hop(&fabric, 0, stop)?, hop(&fabric, 1, stop)?];
    let streams = streams(cfg, &hops)?;
    let controls = [streams[0].control(), streams[1].control()];
    let node: Arc<dyn Device> = fabric.add_node(&fc.name, 1);
    let dev = ReplayDevice::new(node, 1, streams);
    let fwd = start_on(fc.stack_builder().device(dev.clone(), 1), fc).map_err(|e| run_err(&e))?;
    Ok(Nodes {
        fabric,
        dev,
        controls,
        fwd,
        hops,
    })
}

/// Links up, then one packet each way (the forwarder resolves both next hops).
fn bring_up(n: &Nodes) -> Result<(), Failure> {
    for (name, s) in [("hop0", &n.hops[0]), ("hop1", &n.hops[1])] {
        if !s.wait_link_up(T).map_err(|e| run_err(&e))? {
            return Err(Failure::Run(format!(
                "{name}: the link did not come up within {T:?}"
            )));
        }
    }
    if !n.fwd.wait_ready(T).map_err(|e| run_err(&e))? {
        return Err(Failure::Run(format!(
            "forwarder: the links did not come up within {T:?}"
        )));
    }
    n.controls.iter().for_each(|c| c.run_for(1));
    wait_until(
        "the first packets were not forwarded (ARP / path resolution failed?)",
        || Ok(n.replay().freed >= 2),
    )
}

/// What the measured window saw.
struct Window {
    elapsed: Duration,
    replayed: u64,
    forwarded: u64,
}

/// The streams run for the duration (or until a signal or a failed output), one status
/// line per second; then they pause and what is in flight settles.
fn measure(n: &Nodes, cfg: &Config, stop: &AtomicBool, out: &mut Stdout) -> Window {
    let s0 = n.replay();
    let start = Instant::now();
    n.controls.iter().for_each(StreamControl::run);
    let (mut last_t, mut last) = (start, s0);
    let mut second = 0;
    while start.elapsed() < cfg.duration && !stop.load(Ordering::SeqCst) && out.error().is_none() {
        let next = Duration::from_secs(second + 1).min(cfg.duration);
        std::thread::sleep(
            next.saturating_sub(start.elapsed())
                .min(Duration::from_millis(20)),
        );
        if start.elapsed() < next {
            continue;
        }
        second += 1;
        let (now, s) = (Instant::now(), n.replay());
        let dt = now.duration_since(last_t).as_secs_f64();
        out.line(&format!(
            "[{:5.1} s] rx {:7.3} Mpps  tx {:7.3} Mpps  (replayed {}, forwarded {})",
            now.duration_since(start).as_secs_f64(),
            (s.replayed - last.replayed) as f64 / dt / 1e6,
            (s.freed - last.freed) as f64 / dt / 1e6,
            s.replayed,
            s.freed,
        ));
        (last_t, last) = (now, s);
    }
    n.controls.iter().for_each(StreamControl::pause);
    let s1 = n.replay();
    let elapsed = start.elapsed();
    // Let what is in flight be forwarded (bounded).
    let mut seen = (u64::MAX, Instant::now());
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(3) {
        let s = n.replay();
        let v = s.freed + n.fwd.stack_stats().app_dropped;
        if v != seen.0 {
            seen = (v, Instant::now());
        } else if seen.1.elapsed() > Duration::from_millis(100) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Window {
        elapsed,
        replayed: s1.replayed - s0.replayed,
        forwarded: s1.freed - s0.freed,
    }
}

/// What the stop found.
struct Stopped {
    rf: FwdReport,
    hops: [StopReport; 2],
    replay: ReplayStats,
    sa_memberships: usize,
}

fn stop_all(n: Nodes) -> Result<Stopped, Failure> {
    let replay_port = n.dev.port();
    let rf = n.fwd.stop().map_err(|e| run_err(&e))?;
    let [h0, h1] = n.hops;
    let hops = [
        h0.stop().map_err(|e| run_err(&e))?,
        h1.stop().map_err(|e| run_err(&e))?,
    ];
    let replay = replay_port.map(|p| p.stats()).unwrap_or_default();
    let sa_memberships = n
        .fabric
        .with_sa(|sa| sa.groups().map(|g| g.members().count()).sum());
    Ok(Stopped {
        rf,
        hops,
        replay,
        sa_memberships,
    })
}

/// The forwarder's named drops of replayed packets, each counted once.
fn drops(s: &Stopped) -> Vec<(&'static str, u64)> {
    let t: LcoreStats = s.rf.stack.total();
    vec![
        ("forwarder_verdicts", t.app_dropped),
        ("forwarder_stack_rx", t.rx_malformed),
        ("forwarder_stack_tx", t.tx_dropped()),
        ("forwarder_ctrl", ctrl_drops(&s.rf.stack)),
        ("forwarder_stop_drain", t.stop_dropped_rx),
    ]
}

/// The 1-minute load average, where the OS says.
fn load_avg() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

fn run(
    cfg: &Config,
    stop: &Arc<AtomicBool>,
    signals: &Signals,
    out: &mut Stdout,
) -> Result<bool, Failure> {
    let (fc, _) = forwarder_config(cfg, stop)?;
    let load = load_avg();
    let n = start(cfg, &fc, stop)?;
    bring_up(&n)?;
    out.line(&format!(
        "ipoib-fwd: replay NIC: if0 10.1.0.1/16 (P_Key 0xffff) replays {} B IPv4/UDP packets {} -> {}, if1 10.2.0.1/16 (P_Key 0x8001) {} -> {}, {} flows each, {} per poll; next hops 10.1.0.2 and 10.2.0.2 on the embedded fabric; {} forwarder lcore(s); load average {}",
        cfg.size,
        ip(HOPS[0].2),
        ip(cfg.dst),
        ip(HOPS[1].2),
        ip(HOPS[0].2),
        cfg.flows,
        cfg.burst,
        cfg.cores,
        load.map_or("unknown".to_owned(), |l| format!("{l:.2}")),
    ));
    let w = measure(&n, cfg, stop, out);
    let s = stop_all(n)?;
    let named = drops(&s);
    let dropped: u64 = named.iter().map(|(_, v)| v).sum();
    let conserved = s.replay.replayed == s.replay.freed + dropped;
    let secs = w.elapsed.as_secs_f64().max(1e-9);
    let (rx_pps, tx_pps) = (w.replayed as f64 / secs, w.forwarded as f64 / secs);
    for line in summary_lines(cfg, &s, &w, &named, conserved) {
        out.line(&line);
    }
    let mut failed = !conserved || s.sa_memberships != 0;
    if !conserved {
        note(&format!(
            "ipoib-fwd: error: conservation violated: replayed {} != forwarded {} + drops {dropped}",
            s.replay.replayed, s.replay.freed
        ));
    }
    if s.sa_memberships != 0 {
        note(&format!(
            "ipoib-fwd: error: {} multicast memberships remain at the SA after every node stopped",
            s.sa_memberships
        ));
    }
    let v = json!({
        "program": "ipoib-fwd",
        "version": env!("CARGO_PKG_VERSION"),
        "pmd": "replay",
        "fabric": "sim",
        "seed": cfg.seed,
        "size": cfg.size,
        "flows": cfg.flows,
        "burst": cfg.burst,
        "cores": cfg.cores,
        "cpus": cfg.cpus,
        "dst": ip(cfg.dst).to_string(),
        "duration_s": w.elapsed.as_secs_f64(),
        "rx_packets": w.replayed,
        "tx_packets": w.forwarded,
        "rx_pps": rx_pps,
        "tx_pps": tx_pps,
        "replayed": s.replay.replayed,
        "forwarded": s.replay.freed,
        "fwd_forwarded": s.rf.fwd.forwarded,
        "drops": named.iter().filter(|(_, v)| *v > 0).map(|(k, v)| ((*k).to_owned(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "conserved": conserved,
        "sa_memberships_after_shutdown": s.sa_memberships,
        "flushed": s.rf.stack.flushed && s.hops.iter().all(|h| h.flushed),
        "load_avg_1m": load,
        "interrupted_by": signals.received().map(Signals::name),
    });
    if let Some(sig) = signals.received() {
        note(&format!(
            "ipoib-fwd: note: {} stopped the run after {secs:.2} s; every node stopped and left its groups",
            Signals::name(sig)
        ));
    }
    failed |= write_json(cfg, &v, out);
    if let Some(e) = out.error() {
        note(&format!(
            "ipoib-fwd: error: writing to standard output: {e}"
        ));
        failed = true;
    }
    Ok(failed)
}

fn summary_lines(
    cfg: &Config,
    s: &Stopped,
    w: &Window,
    named: &[(&'static str, u64)],
    conserved: bool,
) -> Vec<String> {
    let secs = w.elapsed.as_secs_f64().max(1e-9);
    let list: Vec<String> = named
        .iter()
        .filter(|(_, v)| *v > 0)
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    let r = &s.replay;
    vec![
        format!(
            "--- ipoib-fwd summary (replay NIC, {secs:.2} s, {} B packets) ---",
            cfg.size
        ),
        format!(
            "forwarder: rx {:.3} Mpps, tx {:.3} Mpps ({} replayed, {} forwarded in the window), busy {:.0} %",
            w.replayed as f64 / secs / 1e6,
            w.forwarded as f64 / secs / 1e6,
            w.replayed,
            w.forwarded,
            100.0 * s.rf.stack.total().busy_ratio()
        ),
        format!(
            "replay NIC: replayed {} ({} B), forwarded {} ({} B), ARP to the fabric {}, pool shortfalls {}",
            r.replayed, r.replayed_bytes, r.freed, r.freed_bytes, r.to_inner, r.nombuf
        ),
        format!("drops: {}", if list.is_empty() { "0".to_owned() } else { list.join(", ") }),
        format!("SA memberships after shutdown: {}", s.sa_memberships),
        if conserved {
            format!(
                "conservation: ok (replayed {} == forwarded {} + drops {})",
                r.replayed,
                r.freed,
                named.iter().map(|(_, v)| v).sum::<u64>()
            )
        } else {
            format!("conservation: BROKEN (replayed {} != forwarded {} + drops)", r.replayed, r.freed)
        },
    ]
}
