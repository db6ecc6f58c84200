//! `mcast_feed`: the market-data feed-handler case. A publisher sends numbered,
//! timestamped datagrams to N IPv4 multicast groups; S subscribers, each a stack of its
//! own driven by a thread of the example's, join a subset of the groups on a UDP socket
//! (subscriber k joins every (k+1)-th group: the first all of them), wait until the SA
//! granted every join, check each group's sequence (gaps, reordering) and keep a
//! latency histogram (hdrhistogram, publisher to subscriber, in microseconds).
//!
//! ```text
//! cargo run --release -p ibpoll --example mcast_feed -- --groups 16 --subscribers 2 --count 2000
//! ```
//!
//! The joins are the control core's: a socket's `udp_join` asks it, through the lane's
//! request ring, to join at the SA as a full member and attach the lane's QP; the
//! socket reads how each join stands. The publisher joins nothing: it sends through
//! send-only memberships the stack makes by itself. At the end every subscriber leaves
//! its groups, and the stop's flush leaves whatever is left; the example checks that
//! the SA holds no membership of any of its stacks afterwards.
//!
//! Embedded simulated fabric by default (said on the first line); `--device
//! verbs:NAME[:PORT]` asks for an HCA. With a verbs device the publisher and the
//! subscribers can be two processes: `--role subscribers` runs the subscriber stacks
//! (it says `subscribers ready` once every join is granted), `--role publisher` the
//! publisher, which starts at once and stops when it published everything (on RoCE
//! every stack's address must be on the port's netdev: publisher 10.0.0.1, subscriber
//! k 10.0.1.k+1):
//!
//! ```text
//! mcast_feed --device verbs:rxe0 --role subscribers --groups 4 --count 500 &
//! # ... once it printed "subscribers ready":
//! mcast_feed --device verbs:rxe0 --role publisher --groups 4 --count 500
//! ```
//!
//! Timestamps are the system clock's (CLOCK_REALTIME), so latencies hold between
//! processes of one host. Every stack's stop is checked: no buffer still out of its
//! pool, no packet dropped, no send completed in error. SIGINT / SIGTERM stop every
//! stack cleanly, print the summary and exit 130 / 143 (a second signal exits at
//! once). Exit codes: 0 ok, 1 a check failed (lost or misordered datagrams, a join
//! failed, buffers out or packets dropped at a stop, memberships left at the SA), 2
//! bad usage or no device.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use common::{DeviceSpec, Devices, Signals};
use hdrhistogram::Histogram;
use ibpoll::{Dest, GroupAddr, IbMtu, JoinStatus, Lane, Stack, StackBuilder, UdpSocket};

const PUBLISHER: [u8; 4] = [10, 0, 0, 1];
const FEED_PORT: u16 = 5000;
/// Group index, sequence number, send time (ns since the example's epoch).
const HEADER_LEN: usize = 4 + 8 + 8;

/// A publisher to N multicast groups and S subscribers: sequence checks and latency.
#[derive(Parser, Debug, Clone)]
#[command(
    version,
    after_help = "Exit status: 0 ok; 1 a check failed (loss, reordering, a failed join, \
                  memberships left at the SA); 2 bad usage or no device; 130 / 143 stopped \
                  by SIGINT / SIGTERM after a clean stop and the summary."
)]
struct Args {
    /// Where the stacks run: `sim` (the embedded simulated fabric) or
    /// `verbs:NAME[:PORT]` (an HCA through libibverbs).
    #[arg(long, default_value = "sim")]
    device: DeviceSpec,
    /// Multicast groups (239.10.0.0 and up).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=250))]
    groups: u16,
    /// Subscriber stacks.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=8))]
    subscribers: u16,
    /// Datagrams per group.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    count: u64,
    /// Datagrams per second, all groups together.
    #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    rate: u64,
    /// UDP payload bytes (20..=2000).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(20..=2000))]
    size: u16,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 60.0)]
    duration: f64,
    /// Which stacks this process runs: all (the default), or the publisher or the
    /// subscribers alone, the others being another process on the same verbs port.
    #[arg(long, value_enum, default_value_t = Role::All)]
    role: Role,
}

/// The stacks one process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Role {
    /// The publisher and every subscriber, on threads of their own.
    All,
    /// The publisher alone: it starts at once, and stops when it published everything.
    Publisher,
    /// The subscribers alone: they stop when they received everything.
    Subscribers,
}

impl Role {
    fn publishes(self) -> bool {
        self != Role::Subscribers
    }

    fn subscribes(self) -> bool {
        self != Role::Publisher
    }
}

fn group(i: u16) -> Ipv4Addr {
    Ipv4Addr::new(239, 10, (i >> 8) as u8, i as u8)
}

/// Nanoseconds of the system clock: one clock for every stack of the host, in this
/// process or another.
fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The groups subscriber `k` joins: every (k+1)-th.
fn subset(k: u16, groups: u16) -> Vec<u16> {
    (0..groups).filter(|g| g % (k + 1) == 0).collect()
}

/// What the threads share with the main thread.
#[derive(Default)]
struct Shared {
    /// Subscribers whose every join was granted.
    ready: AtomicUsize,
    /// Subscribers that received everything (or gave up) and left their groups.
    done: AtomicUsize,
    /// A join failed (the SA refused it, or the table was full).
    join_failed: AtomicBool,
    published: AtomicU64,
    /// The publisher published everything and its sends completed.
    published_all: AtomicBool,
    received: AtomicU64,
}

/// One subscriber's findings.
struct Findings {
    groups: Vec<(Ipv4Addr, JoinStatus)>,
    received: u64,
    lost: u64,
    misordered: u64,
    latency_ns: Histogram<u64>,
}

fn builder(devs: &Devices, name: &str, ip: [u8; 4], stop: &Arc<AtomicBool>) -> StackBuilder {
    devs.host(Stack::builder(), name)
        .ipv4(ip)
        .data_cores(1)
        .mtu(IbMtu::Mtu2048)
        .pool_size(8192)
        .rx_ring_size(2048)
        .tx_ring_size(512)
        .stop_timeout(Duration::from_secs(10))
        .stop_flag(stop.clone())
}

/// The publisher: round robin over the groups at `rate`. A group's first datagram
/// makes the stack join it send-only (its control core holds what follows, up to 64):
/// the next wait until the group resolves.
struct Publisher {
    sock: UdpSocket,
    seq: Vec<u64>,
    next_group: u16,
    started: Option<Instant>,
    args: Args,
    payload: Vec<u8>,
}

impl Publisher {
    fn step(&mut self, lane: &mut Lane, shared: &Shared) -> bool {
        // Alone, the publisher starts at once: the subscribers were ready before it.
        let subs = usize::from(self.args.subscribers);
        let ready = !self.args.role.subscribes() || shared.ready.load(Ordering::Relaxed) >= subs;
        if !ready || !lane.link_up(0) {
            return false;
        }
        let all = u64::from(self.args.groups) * self.args.count;
        if shared.published.load(Ordering::Relaxed) >= all {
            if common::sent_all(lane) {
                shared.published_all.store(true, Ordering::Relaxed);
            }
            return false;
        }
        let t0 = *self.started.get_or_insert_with(Instant::now);
        let due = (t0.elapsed().as_secs_f64() * self.args.rate as f64) as u64;
        let mut sent = 0;
        for _ in 0..self.args.groups {
            let total = shared.published.load(Ordering::Relaxed);
            if total >= due || sent >= 32 {
                break;
            }
            let g = self.next_group;
            self.next_group = (g + 1) % self.args.groups;
            let seq = self.seq[usize::from(g)];
            let dest = Dest::Group(GroupAddr::Ipv4(group(g).octets()));
            if seq >= self.args.count || (seq > 0 && lane.tx().resolve(0, dest).is_none()) {
                continue;
            }
            self.payload[..4].copy_from_slice(&u32::from(g).to_be_bytes());
            self.payload[4..12].copy_from_slice(&seq.to_be_bytes());
            self.payload[12..20].copy_from_slice(&now_ns().to_be_bytes());
            let to = SocketAddrV4::new(group(g), FEED_PORT);
            if lane.udp_send_slice(self.sock, &self.payload, to).is_ok() {
                self.seq[usize::from(g)] = seq + 1;
                shared.published.store(total + 1, Ordering::Relaxed);
                sent += 1;
            }
        }
        lane.flush();
        sent > 0
    }
}

/// A subscriber: joins its groups, then checks what arrives.
struct Subscriber {
    sock: UdpSocket,
    groups: Vec<u16>,
    expected: Vec<u64>,
    ready: bool,
    left: bool,
    count: u64,
    found: Findings,
}

impl Subscriber {
    fn new(lane: &mut Lane, k: u16, args: &Args) -> Subscriber {
        let sock = lane.udp_bind(0, FEED_PORT).expect("the feed port");
        let groups = subset(k, args.groups);
        for g in &groups {
            lane.udp_join(sock, group(*g)).expect("a join request");
        }
        Subscriber {
            sock,
            expected: vec![0; usize::from(args.groups)],
            groups,
            ready: false,
            left: false,
            count: args.count,
            found: Findings {
                groups: Vec::new(),
                received: 0,
                lost: 0,
                misordered: 0,
                latency_ns: Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("bounds"),
            },
        }
    }

    fn step(&mut self, lane: &mut Lane, shared: &Shared) -> bool {
        if !self.ready {
            let states = lane.udp_groups(self.sock).expect("the socket");
            if states.iter().any(|(_, s)| s.is_failed()) {
                shared.join_failed.store(true, Ordering::Relaxed);
            }
            if states.iter().all(|(_, s)| s.is_joined()) {
                self.found.groups = states;
                self.ready = true;
                shared.ready.fetch_add(1, Ordering::Relaxed);
            }
            return false;
        }
        let mut did = false;
        while let Some((m, _from)) = lane.udp_recv_from(self.sock) {
            self.check(m.data());
            shared.received.fetch_add(1, Ordering::Relaxed);
            did = true;
        }
        let all = self.groups.len() as u64 * self.count;
        if !self.left && self.found.received + self.found.lost >= all {
            self.leave(lane, shared);
        }
        did
    }

    /// One datagram: its group's sequence and its latency.
    fn check(&mut self, d: &[u8]) {
        if d.len() < HEADER_LEN {
            self.found.misordered += 1;
            return;
        }
        let g = u32::from_be_bytes(d[..4].try_into().expect("4")) as usize;
        let seq = u64::from_be_bytes(d[4..12].try_into().expect("8"));
        let sent = u64::from_be_bytes(d[12..20].try_into().expect("8"));
        let _ = self
            .found
            .latency_ns
            .record(now_ns().saturating_sub(sent).max(1));
        self.found.received += 1;
        let Some(expected) = self.expected.get_mut(g) else {
            self.found.misordered += 1;
            return;
        };
        match seq.cmp(expected) {
            std::cmp::Ordering::Equal => *expected += 1,
            std::cmp::Ordering::Greater => {
                self.found.lost += seq - *expected;
                *expected = seq + 1;
            }
            std::cmp::Ordering::Less => self.found.misordered += 1,
        }
    }

    /// Leaves every group (the control core leaves each at the SA).
    fn leave(&mut self, lane: &mut Lane, shared: &Shared) {
        for g in &self.groups {
            let _ = lane.udp_leave(self.sock, group(*g));
        }
        self.left = true;
        shared.done.fetch_add(1, Ordering::Relaxed);
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.role != Role::All && args.device == DeviceSpec::Sim {
        eprintln!(
            "mcast_feed: error: --role publisher|subscribers needs a device another process \
             can reach: give --device verbs:NAME[:PORT] (the simulated fabric is in-process)"
        );
        return ExitCode::from(common::EXIT_USAGE);
    }
    println!(
        "mcast_feed: {}: publisher {} -> {} groups {}.., port {FEED_PORT}; {} subscribers \
         (subscriber k joins every (k+1)-th group); {} datagrams per group at {} per second{}",
        args.device.describe(),
        Ipv4Addr::from(PUBLISHER),
        args.groups,
        group(0),
        args.subscribers,
        args.count,
        args.rate,
        match args.role {
            Role::All => "",
            Role::Publisher => "; this process: the publisher",
            Role::Subscribers => "; this process: the subscribers",
        }
    );
    let devs = match common::open(&args.device) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("mcast_feed: error: {e}");
            return ExitCode::from(common::EXIT_USAGE);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let signals = match Signals::install(&stop) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mcast_feed: error: cannot watch SIGINT and SIGTERM: {e}");
            return ExitCode::from(common::EXIT_FAILED);
        }
    };
    let stacks = match build(&args, &devs, &stop) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mcast_feed: error: {e}");
            return ExitCode::from(common::EXIT_USAGE);
        }
    };
    match run(&args, stacks, &stop) {
        Ok(out) => summary(&args, &out, &devs, signals.received()),
        Err(e) => {
            eprintln!("mcast_feed: error: {e}");
            ExitCode::from(common::EXIT_FAILED)
        }
    }
}

type Parts = (Stack, ibpoll::Control, Vec<Lane>);

/// What a run found: each subscriber's findings (if this process ran them), every
/// stack's stop report and port GID.
struct Outcome {
    /// Datagrams the publisher sent (0 when this process has none).
    published: u64,
    findings: Vec<Findings>,
    stops: Vec<(String, ibpoll::StopReport)>,
    gids: Vec<ibpoll::Gid>,
}

/// The stacks of this process's role: the publisher, the subscribers.
fn build(
    args: &Args,
    devs: &Devices,
    stop: &Arc<AtomicBool>,
) -> Result<(Option<Parts>, Vec<Parts>), ibpoll::Error> {
    let publisher = match args.role.publishes() {
        true => Some(builder(devs, "publisher", PUBLISHER, stop).build()?.split()),
        false => None,
    };
    let mut subscribers: Vec<Parts> = Vec::new();
    for k in 0..args.subscribers {
        if !args.role.subscribes() {
            break;
        }
        let ip = [10, 0, 1, k as u8 + 1];
        subscribers.push(
            builder(devs, &format!("subscriber{k}"), ip, stop)
                .build()?
                .split(),
        );
    }
    Ok((publisher, subscribers))
}

/// Runs the stacks on threads of their own until done, stopped or out of time, and
/// stops them.
fn run(
    args: &Args,
    (publisher, subscribers): (Option<Parts>, Vec<Parts>),
    stop: &Arc<AtomicBool>,
) -> Result<Outcome, ibpoll::Error> {
    let mut handles: Vec<(String, Stack)> = Vec::new();
    let shared = Shared::default();
    let findings = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        let sh = &shared;
        if let Some((h, mut control, mut lanes)) = publisher {
            handles.push(("publisher".to_owned(), h));
            s.spawn(move || {
                let mut lane = lanes.pop().expect("one lane");
                let mut p = Publisher {
                    sock: lane.udp_bind(0, 6000).expect("a publisher socket"),
                    seq: vec![0; usize::from(args.groups)],
                    next_group: 0,
                    started: None,
                    args: args.clone(),
                    payload: vec![0; usize::from(args.size)],
                };
                common::drive(&mut control, &mut lane, |lane| p.step(lane, sh));
                lane.finish();
                common::wind_down(&mut control, Duration::from_secs(10));
            });
        }
        for (k, (h, mut control, mut lanes)) in subscribers.into_iter().enumerate() {
            handles.push((format!("subscriber {k}"), h));
            let findings = &findings;
            s.spawn(move || {
                let mut lane = lanes.pop().expect("one lane");
                let mut sub = Subscriber::new(&mut lane, k as u16, args);
                common::drive(&mut control, &mut lane, |lane| sub.step(lane, sh));
                lane.finish();
                common::wind_down(&mut control, Duration::from_secs(10));
                findings.lock().expect("findings").push((k, sub.found));
            });
        }
        watch(args, &shared, stop);
    });
    let mut f = findings.into_inner().expect("findings");
    f.sort_by_key(|(k, _)| *k);
    let gids = handles.iter().map(|(_, h)| h.hwaddr().gid()).collect();
    let mut stops = Vec::new();
    for (who, h) in handles {
        stops.push((who, h.stop()?));
    }
    Ok(Outcome {
        published: shared.published.load(Ordering::Relaxed),
        findings: f.into_iter().map(|(_, x)| x).collect(),
        stops,
        gids,
    })
}

/// The main thread: a status line a second; sets the stop flag when every subscriber
/// is done, a join failed, or time is up (a signal sets it too).
fn watch(args: &Args, shared: &Shared, stop: &AtomicBool) {
    let start = Instant::now();
    let limit = Duration::from_secs_f64(args.duration.max(0.1));
    let mut next = Duration::from_secs(1);
    let subs = usize::from(args.subscribers);
    let mut said_ready = false;
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(5));
        let done = match args.role {
            Role::Publisher => shared.published_all.load(Ordering::Relaxed),
            Role::All | Role::Subscribers => shared.done.load(Ordering::Relaxed) == subs,
        };
        if done || shared.join_failed.load(Ordering::Relaxed) || start.elapsed() > limit {
            stop.store(true, Ordering::SeqCst);
        }
        if args.role == Role::Subscribers
            && !said_ready
            && shared.ready.load(Ordering::Relaxed) == subs
        {
            said_ready = true;
            println!("mcast_feed: subscribers ready (every join granted)");
        }
        if start.elapsed() >= next {
            println!(
                "[{:5.1} s] subscribers joined {}/{}, published {}, received {}",
                start.elapsed().as_secs_f64(),
                shared.ready.load(Ordering::Relaxed),
                args.subscribers,
                shared.published.load(Ordering::Relaxed),
                shared.received.load(Ordering::Relaxed)
            );
            next += Duration::from_secs(1);
        }
    }
}

/// Prints what each subscriber found; the exit code.
fn summary(args: &Args, out: &Outcome, devs: &Devices, signal: Option<i32>) -> ExitCode {
    let mut failed = false;
    println!("mcast_feed summary:");
    if args.role.publishes() {
        let all = u64::from(args.groups) * args.count;
        let published = out.published;
        println!("  publisher: published {published}/{all}");
        failed |= signal.is_none() && published != all;
    }
    for (k, f) in out.findings.iter().enumerate() {
        let joined = f.groups.iter().filter(|(_, s)| s.is_joined()).count();
        let want = subset(k as u16, args.groups).len() as u64 * args.count;
        print!(
            "  subscriber {k}: groups joined {joined}/{}, received {}/{want}, lost {}, misordered {}",
            subset(k as u16, args.groups).len(),
            f.received,
            f.lost,
            f.misordered
        );
        let h = &f.latency_ns;
        if !h.is_empty() {
            print!(
                ", latency (µs) p50 {} p99 {} p99.9 {} max {}",
                common::us(h.value_at_quantile(0.5)),
                common::us(h.value_at_quantile(0.99)),
                common::us(h.value_at_quantile(0.999)),
                common::us(h.max())
            );
        }
        println!();
        failed |= f.lost + f.misordered > 0;
        failed |= signal.is_none() && f.received != want;
    }
    if args.role.subscribes() && out.findings.len() != usize::from(args.subscribers) {
        failed = true;
    }
    for (who, r) in &out.stops {
        failed |= common::stop_check(who, r, signal);
    }
    let (line, left) = devs.memberships_line(&out.gids);
    println!("  {line}");
    if let Some(sig) = signal {
        println!("mcast_feed: stopped by signal {sig}; every stack left every group");
    }
    common::exit_code(failed || left, signal)
}
