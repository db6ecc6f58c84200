//! One pktgen run: the fabric and its nodes, the traffic phases, the stop, and the
//! counters gathered for the report.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ibpoll::{IdlePolicy, LcoreStats, Stack, StackBuilder};
use ibpoll_ctrl::GroupPhase;
use ibpoll_pmd_sim::{FabricConfig, SimFabric};
use ibpoll_wire::{IbMtu, PKey};
use ipoib_fwd::cli::capture::{Capture, CaptureEnd};
use ipoib_fwd::cli::Stdout;

use crate::args::{Config, FabricChoice, Topology};
use crate::fabric::{Net, VerbsTarget};
use crate::fwd::{FwdNode, FwdPlan};
use crate::packet::Ip;
use crate::report::{self, Counts, Drops, Report};
use crate::traffic::{
    self, AppCounters, GenConfig, Generator, Phase, Sink, SinkConfig, Window, DROPS_REFRESH,
};

/// How long a node may take to bring its link up, or the sink to join its groups.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the priming packets (one per flow) may take to arrive.
const PRIME_TIMEOUT: Duration = Duration::from_secs(3);
/// After the generators halt, the counters must stay unchanged this long...
const SETTLE_QUIET: Duration = Duration::from_millis(100);
/// ... within this long.
const SETTLE_MAX: Duration = Duration::from_secs(5);
/// How often the main thread looks whether the generators reached `--count`: the run's
/// measured duration ends at most this late.
const COUNT_POLL: Duration = Duration::from_millis(1);

/// The share of `count` run packets of generator lcore `i` of `lcores`: as even as
/// possible, the first lcores one more. Ping-pong sends from lcore 0 only.
pub fn quota(count: u64, i: usize, lcores: usize, pingpong: bool) -> u64 {
    if pingpong {
        return if i == 0 { count } else { 0 };
    }
    let n = lcores.max(1) as u64;
    count / n + u64::from((i as u64) < count % n)
}

/// Addresses of one topology.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub gen_pkey: PKey,
    pub sink_pkey: PKey,
    pub gen_ip: [u8; 4],
    pub sink_ip: [u8; 4],
    /// Where the generator sends unicast (the sink, or the forwarder's generator side).
    pub gen_next_hop: [u8; 4],
    /// Where the sink sends echoes (the generator, or the forwarder's sink side).
    pub sink_next_hop: [u8; 4],
    /// The same four in IPv6 (`--ipv6`).
    pub gen_ip6: [u8; 16],
    pub sink_ip6: [u8; 16],
    pub gen_next_hop6: [u8; 16],
    pub sink_next_hop6: [u8; 16],
}

/// fd00:0:0:`net`::`host`.
const fn v6(net: u8, host: u8) -> [u8; 16] {
    [0xfd, 0, 0, 0, 0, 0, 0, net, 0, 0, 0, 0, 0, 0, 0, host]
}

const DIRECT: Plan = Plan {
    gen_pkey: PKey::DEFAULT,
    sink_pkey: PKey::DEFAULT,
    gen_ip: [10, 0, 0, 1],
    sink_ip: [10, 0, 0, 2],
    gen_next_hop: [10, 0, 0, 2],
    sink_next_hop: [10, 0, 0, 1],
    gen_ip6: v6(1, 1),
    sink_ip6: v6(1, 2),
    gen_next_hop6: v6(1, 2),
    sink_next_hop6: v6(1, 1),
};

/// Partitions and addresses of the forwarded topology.
pub const FWD: Plan = Plan {
    gen_pkey: PKey(0x8001),
    sink_pkey: PKey(0x8002),
    gen_ip: [10, 1, 0, 1],
    sink_ip: [10, 2, 0, 1],
    gen_next_hop: [10, 1, 0, 254],
    sink_next_hop: [10, 2, 0, 254],
    gen_ip6: v6(1, 1),
    sink_ip6: v6(2, 1),
    gen_next_hop6: v6(1, 0xfe),
    sink_next_hop6: v6(2, 0xfe),
};

impl Plan {
    /// The generator's address, the sink's, the generator's next hop and the sink's
    /// next hop, in the run's IP version.
    pub fn addresses(&self, ipv6: bool) -> [Ip; 4] {
        if ipv6 {
            [
                Ip::V6(self.gen_ip6),
                Ip::V6(self.sink_ip6),
                Ip::V6(self.gen_next_hop6),
                Ip::V6(self.sink_next_hop6),
            ]
        } else {
            [
                Ip::V4(self.gen_ip),
                Ip::V4(self.sink_ip),
                Ip::V4(self.gen_next_hop),
                Ip::V4(self.sink_next_hop),
            ]
        }
    }
}

/// Data lcores and CPUs of every node, and whether threads are pinned.
#[derive(Debug, Clone)]
pub struct Placement {
    pub gen_lcores: usize,
    pub fwd_lcores: usize,
    pub sink_lcores: usize,
    pub cpus: Vec<usize>,
    pub pin: bool,
    pub idle: IdlePolicy,
    /// What the user should know about the placement (shared CPUs, no pinning).
    pub note: Option<String>,
}

impl Placement {
    /// Splits `cores` CPUs between the nodes: one data lcore per node at least, more
    /// when there are CPUs for them. When the lcores outnumber the CPUs the threads
    /// share CPUs: idle lcores yield, and threads are not pinned when every usable CPU
    /// is in play (the OS balances them best); with fewer, they are pinned round-robin
    /// to the CPUs asked for.
    ///
    /// Ping-pong (`single`) gives every node one data lcore: one packet is in flight,
    /// and its echo must come back to the lcore that sent it (RSS would spread the
    /// echoes of several generator lcores' flows over all of them).
    ///
    /// With `idle_sleep` (`--idle-sleep-us`), idle lcores sleep that long from their
    /// first idle iteration on, whatever the CPUs: under valgrind every idle poll would
    /// be counted.
    pub fn new(cores: usize, fwd: bool, single: bool, idle_sleep: Option<Duration>) -> Placement {
        let usable: Vec<usize> = core_affinity::get_core_ids()
            .map(|v| v.into_iter().map(|c| c.id).collect::<Vec<_>>())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| (0..cores).collect());
        let cores = cores.min(usable.len()).max(1);
        let (gen_lcores, fwd_lcores, sink_lcores) = if single {
            (1, usize::from(fwd), 1)
        } else if fwd {
            let third = (cores / 3).max(1);
            (third, (cores.saturating_sub(2 * third)).max(1), third)
        } else {
            let half = (cores / 2).max(1);
            (half, 0, (cores - half).max(1))
        };
        let lcores = gen_lcores + fwd_lcores + sink_lcores;
        let chosen = &usable[..cores];
        let cpus: Vec<usize> = (0..lcores).map(|i| chosen[i % cores]).collect();
        let sleep = idle_sleep.map(|sleep| IdlePolicy::Sleep { after: 0, sleep });
        if lcores <= cores {
            return Placement {
                gen_lcores,
                fwd_lcores,
                sink_lcores,
                cpus,
                pin: true,
                idle: sleep.unwrap_or(IdlePolicy::Spin),
                note: None,
            };
        }
        let pin = cores < usable.len();
        let note = format!(
            "note: {lcores} lcores ({} nodes) share {cores} CPU{}: idle lcores {}; {}",
            if fwd { 3 } else { 2 },
            if cores == 1 { "" } else { "s" },
            match idle_sleep {
                Some(d) => format!("sleep {} us per idle iteration", d.as_micros()),
                None => String::from("yield the CPU"),
            },
            if pin {
                "threads are pinned round-robin to the CPUs asked for"
            } else {
                "pinning is disabled so that the OS balances the threads"
            }
        );
        Placement {
            gen_lcores,
            fwd_lcores,
            sink_lcores,
            cpus,
            pin,
            idle: sleep.unwrap_or(IdlePolicy::Yield { after: 64 }),
            note: Some(note),
        }
    }

    /// The CPUs of the lcores `from..from + n`.
    pub fn cpus_of(&self, from: usize, n: usize) -> Vec<usize> {
        self.cpus[from..from + n].to_vec()
    }
}

/// A builder with pktgen's settings for one node (with an IPv6 address too for
/// `--ipv6`).
#[allow(clippy::too_many_arguments)]
pub fn node(
    net: &Net,
    name: &str,
    pkey: PKey,
    (ip, ip6): ([u8; 4], Option<[u8; 16]>),
    lcores: usize,
    cpus: Vec<usize>,
    p: &Placement,
    stop: &Arc<AtomicBool>,
) -> StackBuilder {
    let b = Stack::builder();
    let b = match ip6 {
        Some(a) => b.ipv6(a),
        None => b,
    };
    net.place(b.name(name), name)
        .pkey(pkey)
        .ipv4(ip)
        .data_cores(lcores)
        .cpus(cpus)
        .pin(p.pin)
        .idle(p.idle)
        .mtu(IbMtu::Mtu4096)
        .stop_timeout(Duration::from_secs(15))
        .stop_flag(stop.clone())
}

/// Why a run failed before it could report.
#[derive(Debug)]
pub enum RunError {
    /// A node could not be started.
    Start {
        node: &'static str,
        source: ibpoll::Error,
    },
    /// A node could not be reached or stopped.
    Stack {
        node: &'static str,
        source: ibpoll::Error,
    },
    /// The forwarder node failed.
    Fwd(String),
    /// Something did not come up in time.
    Timeout(String),
    /// The capture could not be started (a bad `--pcap`: exit 2).
    PcapStart(String),
    /// The ring pair could not be made (`--fabric ring`).
    Ring(ibpoll_dev::Error),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Start { node, source } => write!(f, "starting the {node} node: {source}"),
            RunError::Stack { node, source } => write!(f, "the {node} node: {source}"),
            RunError::Fwd(e) => write!(f, "the forwarder node: {e}"),
            RunError::Timeout(what) => write!(f, "timed out: {what}"),
            RunError::Ring(e) => write!(f, "--fabric ring: joining the two ports: {e}"),
            RunError::PcapStart(e) => write!(f, "--pcap: {e}"),
        }
    }
}

impl std::error::Error for RunError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RunError::Start { source, .. } | RunError::Stack { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn stack_err(node: &'static str) -> impl Fn(ibpoll::Error) -> RunError {
    move |source| RunError::Stack { node, source }
}

fn wait(
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> Result<bool, RunError>,
) -> Result<(), RunError> {
    let start = Instant::now();
    while !cond()? {
        if start.elapsed() > timeout {
            return Err(RunError::Timeout(format!("{what} (after {timeout:?})")));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

fn sum(v: &[Arc<AppCounters>], f: impl Fn(&AppCounters) -> u64) -> u64 {
    v.iter().map(|c| f(c)).sum()
}

/// The groups pktgen uses: 239.1.<i / 250>.<i % 250 + 1>, or with IPv6
/// ff05::1:<i + 1> (site-local scope: routers forward it, at most 250 of them).
pub fn groups(n: usize, ipv6: bool) -> Vec<Ip> {
    (0..n)
        .map(|i| {
            if ipv6 {
                let mut g = [0u8; 16];
                g[..2].copy_from_slice(&[0xff, 0x05]);
                g[13] = 1;
                g[15] = (i % 256) as u8 + 1;
                Ip::V6(g)
            } else {
                Ip::V4([239, 1, (i / 250) as u8, (i % 250) as u8 + 1])
            }
        })
        .collect()
}

fn joined(stack: &Stack, iface: usize, groups: &[Ip]) -> Result<usize, RunError> {
    let groups = groups.to_vec();
    stack
        .with_controller_on(iface, move |c| {
            groups
                .iter()
                .filter(|g| c.group_phase(g.group()) == Some(GroupPhase::Joined))
                .count()
        })
        .map_err(stack_err("sink"))
}

/// Packets of ours a node's stack dropped, by reason (live or final counters), its
/// control cores' (one per interface) included. `app_dropped` is left out where the
/// application counts those drops itself by reason (the forwarder).
pub fn stack_drops(
    d: &mut Drops,
    node: &str,
    s: &LcoreStats,
    ctrl: &[ibpoll::CtrlStats],
    app_dropped: bool,
) {
    // Not counted: rx_loopback (a copy of our own multicast, not a lost packet),
    // rx_arp / rx_ctrl_full / rx_unknown_ethertype (not IP: never pktgen's), and the
    // driver's tx_errors and rx_nombuf / rx_overrun (the fabric counts those by reason).
    let reasons = [
        ("tx_link_down", s.tx_link_down),
        ("tx_too_long", s.tx_too_long),
        ("tx_malformed", s.tx_malformed),
        ("tx_no_iface", s.tx_no_iface),
        ("tx_ctrl_full", s.tx_ctrl_full),
        ("tx_full", s.tx_full),
        ("stop_dropped_tx", s.stop_dropped_tx),
        ("rx_malformed", s.rx_malformed),
        ("fanout_full", s.fanout_full),
        ("stop_dropped_rx", s.stop_dropped_rx),
        ("app_dropped", if app_dropped { s.app_dropped } else { 0 }),
    ];
    for (r, n) in reasons {
        d.add(node, r, n);
    }
    for c in ctrl {
        let reasons = [
            ("ctrl.mcast_queue_full", c.mcast_queue_full),
            ("ctrl.mcast_table_full", c.mcast_table_full),
            ("ctrl.mcast_sendonly_dropped", c.mcast_sendonly_dropped),
            ("ctrl.mcast_flush_dropped", c.mcast_flush_dropped),
            ("ctrl.mcast_bad_group", c.mcast_bad_group),
            ("ctrl.neigh_table_full", c.neigh_table_full),
            ("ctrl.neigh_queue_full", c.neigh_queue_full),
            ("ctrl.neigh_unresolved_dropped", c.neigh_unresolved_dropped),
            ("ctrl.nd_no_address", c.nd_no_address),
            ("ctrl.tx_backlog_full", c.tx_backlog_full),
        ];
        for (r, n) in reasons {
            d.add(node, r, n);
        }
    }
}

fn live_ctrl(s: &Stack) -> Vec<ibpoll::CtrlStats> {
    (0..s.ifaces())
        .filter_map(|i| s.ctrl_stats_on(i).ok())
        .collect()
}

fn fabric_drops(d: &mut Drops, net: &Net) {
    for (r, n) in net.ring_drops() {
        d.add("ring", r, n);
    }
    let Some(fabric) = net.sim() else {
        return;
    };
    let stats = fabric.stats();
    for (r, n) in stats.drops() {
        d.add("fabric", r, n);
    }
}

/// Why the traffic ended before its duration or count, if it did: the stop flag (a
/// signal, a panicking lcore), standard output gone, or the capture failed.
fn interrupted(stop: &AtomicBool, out: &Stdout, net: &Net) -> bool {
    stop.load(Ordering::SeqCst)
        || out.error().is_some()
        || net.sim().is_some_and(|f| Capture::failed(f).is_some())
}

/// Runs the configured traffic and gathers the report, on the simulated fabric or on
/// `verbs` (the port `--fabric verbs` opened). `stop` is the flag the nodes share (set
/// by a signal or a panicking lcore): it ends the traffic early, and the nodes stop the
/// normal way.
pub fn run(
    cfg: &Config,
    verbs: Option<VerbsTarget>,
    out: &mut Stdout,
    stop: &Arc<AtomicBool>,
) -> Result<Report, RunError> {
    let topology = cfg.topology;
    let fwd = topology == Topology::Fwd;
    let plan = if fwd { FWD } else { DIRECT };
    let placement = Placement::new(cfg.cores, fwd, cfg.pingpong, cfg.idle_sleep);
    let fabric_line = match &verbs {
        Some(t) => format!("{} (an RDMA device through libibverbs)", t.label()),
        None => "embedded simulated InfiniBand fabric (in-process subnet manager, SA and \
                 switch; no HCA)"
            .to_owned(),
    };
    out.line(&format!(
        "pktgen: {fabric_line}, topology {}, seed {}",
        topology.name(),
        cfg.seed
    ));
    if let Some(note) = &placement.note {
        out.line(note);
    }
    traffic::epoch();
    let sim = || {
        SimFabric::new(FabricConfig {
            seed: cfg.seed,
            partitions: if fwd {
                vec![plan.gen_pkey, plan.sink_pkey]
            } else {
                vec![plan.gen_pkey]
            },
            broadcast_mtu: IbMtu::Mtu4096,
            ..FabricConfig::default()
        })
    };
    let net = match (verbs, &cfg.fabric) {
        (Some(t), _) => Net::Verbs(t),
        (None, FabricChoice::Ring) => Net::ring(sim()).map_err(RunError::Ring)?,
        (None, _) => Net::Sim(sim()),
    };
    let capture = match (&cfg.pcap, net.sim()) {
        (Some((path, max)), Some(fabric)) => {
            Some(Capture::start(fabric, path, *max).map_err(RunError::PcapStart)?)
        }
        _ => None,
    };
    let groups = groups(cfg.mcast_groups, cfg.ipv6);
    let [gen_ip, sink_ip, gen_next_hop, sink_next_hop] = plan.addresses(cfg.ipv6);
    let v6 = |a: [u8; 16]| cfg.ipv6.then_some(a);
    let phase = Arc::new(Phase::new());
    let latency_hist = Arc::new(Mutex::new(traffic::histogram()));

    // The sink first, so that it is ready (and subscribed) before anything is sent.
    let sink_counters: Vec<Arc<AppCounters>> =
        (0..placement.sink_lcores).map(|_| Arc::default()).collect();
    let sink_cfg = SinkConfig {
        latency: cfg.latency && !cfg.pingpong,
        echo_next_hop: cfg.pingpong.then_some(sink_next_hop),
    };
    let gen_at = 0;
    let fwd_at = placement.gen_lcores;
    let sink_at = fwd_at + placement.fwd_lcores;
    let sink = {
        let counters = sink_counters.clone();
        let hist = latency_hist.clone();
        node(
            &net,
            "sink",
            plan.sink_pkey,
            (plan.sink_ip, v6(plan.sink_ip6)),
            placement.sink_lcores,
            placement.cpus_of(sink_at, placement.sink_lcores),
            &placement,
            stop,
        )
        .telemetry(cfg.telemetry)
        .start(move |i| Sink::new(sink_cfg, counters[i].clone(), Some(hist.clone())))
        .map_err(|source| RunError::Start {
            node: "sink",
            source,
        })?
    };
    let fwd_node = if fwd {
        let Some(fabric) = net.sim() else {
            return Err(RunError::Fwd(
                "the fwd topology runs on the simulated fabric only".to_owned(),
            ));
        };
        Some(
            FwdNode::start(
                fabric,
                &FwdPlan {
                    gen_side: (plan.gen_pkey, plan.gen_next_hop, v6(plan.gen_next_hop6)),
                    sink_side: (plan.sink_pkey, plan.sink_next_hop, v6(plan.sink_next_hop6)),
                    telemetry: cfg.telemetry,
                },
                &groups,
                placement.fwd_lcores,
                placement.cpus_of(fwd_at, placement.fwd_lcores),
                &placement,
                stop,
            )
            .map_err(RunError::Fwd)?,
        )
    } else {
        None
    };
    let gen_counters: Vec<Arc<AppCounters>> =
        (0..placement.gen_lcores).map(|_| Arc::default()).collect();
    // Flow control (stream runs): every generator lcore against every sink lcore.
    let window = cfg
        .window
        .filter(|_| !cfg.pingpong)
        .map(|w| Arc::new(Window::new(w, gen_counters.clone(), sink_counters.clone())));
    let gen_cfg = GenConfig {
        src_ip: gen_ip,
        size: cfg.size,
        burst: cfg.burst,
        rate_pps: cfg.rate_pps.map(|r| r / placement.gen_lcores as f64),
        stamp: cfg.latency,
        pingpong: cfg.pingpong,
        quota: None,
    };
    let quotas: Vec<Option<u64>> = (0..placement.gen_lcores)
        .map(|i| {
            cfg.count
                .map(|n| quota(n, i, placement.gen_lcores, cfg.pingpong))
        })
        .collect();
    let mut flows_total = 0;
    let gen_flows: Vec<_> = (0..placement.gen_lcores)
        .map(|i| {
            // Ping-pong: one packet in flight, from lcore 0.
            if cfg.pingpong && i > 0 {
                return Vec::new();
            }
            let unicast = if cfg.pingpong { 1 } else { cfg.flows };
            let g = if cfg.pingpong { &[][..] } else { &groups[..] };
            let f = traffic::flows(i, unicast, sink_ip, gen_next_hop, g);
            flows_total += Generator::prime_count(&f);
            f
        })
        .collect();
    let gen = {
        let counters = gen_counters.clone();
        let phase = phase.clone();
        let hist = latency_hist.clone();
        let rtt = cfg.pingpong;
        let quotas = quotas.clone();
        let window = window.clone();
        node(
            &net,
            "gen",
            plan.gen_pkey,
            (plan.gen_ip, v6(plan.gen_ip6)),
            placement.gen_lcores,
            placement.cpus_of(gen_at, placement.gen_lcores),
            &placement,
            stop,
        )
        .telemetry(cfg.telemetry)
        .start(move |i| {
            Generator::new(
                GenConfig {
                    quota: quotas[i],
                    ..gen_cfg.clone()
                },
                gen_flows[i].clone(),
                phase.clone(),
                counters[i].clone(),
                rtt.then(|| hist.clone()),
                window.clone(),
            )
        })
        .map_err(|source| RunError::Start {
            node: "gen",
            source,
        })?
    };

    // Links up, groups joined.
    for (name, s) in [("gen", &gen), ("sink", &sink)] {
        if !s.wait_link_up(SETUP_TIMEOUT).map_err(stack_err(name))? {
            return Err(RunError::Timeout(format!(
                "the {name} node's link did not come up"
            )));
        }
    }
    if let Some(f) = &fwd_node {
        f.wait_ready(SETUP_TIMEOUT).map_err(RunError::Fwd)?;
    }
    // The sink subscribes to the groups in its own partition only; with --topology fwd
    // they reach it through the forwarder, which subscribed to them in the generator's
    // partition (`wait_ready` above) and sends them on.
    for g in &groups {
        let ga = g.group();
        if !sink
            .with_controller_on(0, move |c| c.join_group(ga))
            .map_err(stack_err("sink"))?
        {
            return Err(RunError::Timeout(format!(
                "the sink could not subscribe to group {g}"
            )));
        }
    }
    wait("the sink's group subscriptions", SETUP_TIMEOUT, || {
        Ok(joined(&sink, 0, &groups)? == groups.len())
    })?;

    // Prime: one packet per flow resolves neighbours and makes the send-only joins, so
    // that the measured run starts on a warm path.
    let rx_counters = if cfg.pingpong {
        &gen_counters
    } else {
        &sink_counters
    };
    let live_drops = || {
        let mut d = Drops::default();
        stack_drops(&mut d, "gen", &gen.total_stats(), &live_ctrl(&gen), true);
        stack_drops(&mut d, "sink", &sink.total_stats(), &live_ctrl(&sink), true);
        fabric_drops(&mut d, &net);
        if let Some(f) = &fwd_node {
            f.live_drops(&mut d);
        }
        d
    };
    phase.set(Phase::PRIME);
    if !cfg.pingpong {
        // Until every priming packet arrived or was counted lost (e.g. more than 3
        // waiting for one neighbour's resolution, when many generator lcores prime).
        let primed = wait("priming", PRIME_TIMEOUT, || {
            std::thread::sleep(Duration::from_millis(3));
            let rx = sum(rx_counters, |c| c.received.get());
            Ok(rx >= flows_total as u64 || rx + live_drops().total() >= flows_total as u64)
        });
        if primed.is_err() {
            out.line("note: not every priming packet arrived in time; the run goes on (losses are counted)");
        }
    }

    // The run: for the duration, or until every generator lcore sent its share of the
    // count (the duration is then the time limit).
    let count_done = || {
        cfg.count.is_some()
            && gen_counters
                .iter()
                .zip(&quotas)
                .all(|(c, q)| *q == Some(0) || c.finished.get() != 0)
    };
    let step = if cfg.count.is_some() {
        COUNT_POLL
    } else {
        Duration::from_millis(50)
    };
    let start = Instant::now();
    phase.set(Phase::RUN);
    let duration = Duration::from_secs_f64(cfg.duration_s);
    let mut last = (start, Counts::default());
    let mut tick = 1u64;
    let mut drops_at = start;
    loop {
        let elapsed = start.elapsed();
        if elapsed >= duration || count_done() || interrupted(stop, out, &net) {
            break;
        }
        if let Some(w) = window
            .as_ref()
            .filter(|_| drops_at.elapsed() >= DROPS_REFRESH)
        {
            w.set_dropped(live_drops().total());
            drops_at = Instant::now();
        }
        let next = Duration::from_secs(tick).min(duration);
        let step = if window.is_some() {
            step.min(DROPS_REFRESH)
        } else {
            step
        };
        std::thread::sleep(next.saturating_sub(elapsed).min(step));
        if start.elapsed() >= Duration::from_secs(tick) && start.elapsed() < duration {
            let now = Instant::now();
            let seen = Counts {
                tx: sum(&gen_counters, |c| c.sent.get()),
                tx_mcast: sum(&gen_counters, |c| c.sent_mcast.get()),
                rx: sum(rx_counters, |c| c.received.get()),
                rx_mcast: sum(rx_counters, |c| c.received_mcast.get()),
            };
            let dt = now.duration_since(last.0).as_secs_f64();
            let neigh = gen
                .with_controller(|c| c.neighbour_count())
                .unwrap_or_default();
            out.line(&report::status_line(
                start.elapsed().as_secs_f64(),
                cfg.size,
                &seen.since(&last.1, dt),
                live_drops().total(),
                (joined(&sink, 0, &groups).unwrap_or(0), groups.len()),
                neigh,
            ));
            last = (now, seen);
            tick += 1;
        }
    }
    phase.set(Phase::HALT);
    let run_s = start.elapsed().as_secs_f64();
    let count_reached = cfg.count.map(|_| count_done());
    let groups_joined = joined(&sink, 0, &groups)?;
    let neighbours = gen
        .with_controller(|c| c.neighbour_count())
        .map_err(stack_err("gen"))?;

    // Let what is in flight arrive: the receive counters and the drops settle.
    let settle_start = Instant::now();
    let mut quiet_since = Instant::now();
    let mut last_seen = u64::MAX;
    while quiet_since.elapsed() < SETTLE_QUIET && settle_start.elapsed() < SETTLE_MAX {
        std::thread::sleep(Duration::from_millis(10));
        let mut v = sum(rx_counters, |c| c.received.get()) + net.dropped();
        v += sum(&sink_counters, |c| c.echoed.get());
        if let Some(f) = &fwd_node {
            v += f.activity();
        }
        if v != last_seen {
            last_seen = v;
            quiet_since = Instant::now();
        }
    }

    // Stop in the direction of the traffic: each node leaves its groups on the way.
    let gen_gid = gen.hwaddr().gid();
    let sink_gids: Vec<_> = (0..sink.ifaces())
        .map(|i| sink.iface_hwaddr(i).gid())
        .collect();
    let rg = gen.stop().map_err(stack_err("gen"))?;
    let fwd_final = match fwd_node {
        Some(f) => Some(f.stop().map_err(RunError::Fwd)?),
        None => None,
    };
    let rs = sink.stop().map_err(stack_err("sink"))?;
    let capture: Option<CaptureEnd> = match (capture, net.sim()) {
        (Some(c), Some(fabric)) => Some(c.finish(fabric)),
        _ => None,
    };

    let mut drops = Drops::default();
    stack_drops(&mut drops, "gen", &rg.total(), &rg.ctrl_ifaces, true);
    if let Some(f) = &fwd_final {
        drops.extend(&f.drops);
    }
    stack_drops(&mut drops, "sink", &rs.total(), &rs.ctrl_ifaces, true);
    fabric_drops(&mut drops, &net);

    // Every port of the fabric: no membership may outlive its node. (On a verbs port
    // the subnet's SA is not ours to read: 0, not checked.)
    let mut gids = vec![gen_gid];
    gids.extend(sink_gids);
    if let Some(f) = &fwd_final {
        gids.extend(f.gids.iter().copied());
    }
    let sa_memberships_after_shutdown = net.sim().map_or(0, |fabric| {
        fabric.with_sa(|sa| {
            let by_port: usize = gids.iter().map(|g| sa.memberships_of(g).count()).sum();
            let any: usize = sa.groups().map(|g| g.members().count()).sum();
            by_port.max(any)
        })
    });

    let latency = {
        let h = latency_hist.lock().unwrap_or_else(|e| e.into_inner());
        (cfg.latency && !h.is_empty()).then(|| h.clone())
    };
    let tx_packets = sum(&gen_counters, |c| c.sent.get());
    let prime_packets = sum(&gen_counters, |c| c.primed.get());
    let rx_packets = sum(rx_counters, |c| c.received.get());
    Ok(Report {
        fabric: net.label(),
        topology,
        ipv6: cfg.ipv6,
        size: cfg.size,
        burst: cfg.burst,
        cores: cfg.cores,
        idle_sleep_us: cfg.idle_sleep.map(|d| d.as_micros() as u64),
        pingpong: cfg.pingpong,
        duration_s: run_s,
        count: cfg.count,
        count_reached,
        duration_limit_s: cfg.duration_s,
        prime_packets,
        tx_packets,
        rx_packets,
        tx_mcast: sum(&gen_counters, |c| c.sent_mcast.get()),
        rx_mcast: sum(&sink_counters, |c| c.received_mcast.get()),
        window: window.as_ref().map(|w| w.size),

        fwd_mcast_forwarded: fwd_final.as_ref().map(|f| f.mcast_forwarded),
        drops,
        mcast_groups: groups.len(),
        mcast_groups_joined: groups_joined,
        neighbours,
        latency,
        sa_memberships_after_shutdown,
        pool_in_use: rg.pool_in_use
            + rs.pool_in_use
            + fwd_final.as_ref().map_or(0, |f| f.pool_in_use),
        flushed: rg.flushed && rs.flushed && fwd_final.as_ref().is_none_or(|f| f.flushed),
        pinned: placement.pin,
        foreign: sum(&sink_counters, |c| c.foreign.get()) + sum(&gen_counters, |c| c.foreign.get()),
        timeouts: sum(&gen_counters, |c| c.timeouts.get()),
        seed: cfg.seed,
        rate_pps: cfg.rate_pps,
        flows: cfg.flows,
        capture,
        app_panics: rg.app_panics.len()
            + rs.app_panics.len()
            + fwd_final.as_ref().map_or(0, |f| f.app_panics),
        interrupted_by: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_count_is_split_exactly() {
        for (count, lcores) in [(7u64, 1usize), (7, 2), (7, 3), (2, 5), (5000, 4), (1, 1)] {
            let shares: Vec<u64> = (0..lcores)
                .map(|i| quota(count, i, lcores, false))
                .collect();
            assert_eq!(shares.iter().sum::<u64>(), count, "{count} over {lcores}");
            let (lo, hi) = (shares.iter().min().unwrap(), shares.iter().max().unwrap());
            assert!(hi - lo <= 1, "{count} over {lcores}: {shares:?}");
        }
        // Ping-pong: lcore 0 sends every ping.
        assert_eq!(quota(9, 0, 3, true), 9);
        assert_eq!(quota(9, 2, 3, true), 0);
    }
}
