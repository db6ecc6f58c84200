//! The data path of pktgen: the generator and sink applications that run on the stacks'
//! data lcores. The packets they exchange are [`crate::packet`]'s: IPv4/UDP or IPv6/UDP
//! datagrams of exactly `--size` bytes carrying a magic and a timestamp. The timestamp
//! is nanoseconds since
//! [`epoch`], a process-wide `Instant` every node shares (they are threads of this
//! process), written at send and read at the sink (or, for ping-pong, when the echo
//! comes back); 0 when latency is not measured.
//!
//! Nothing here allocates, locks or makes a system call per packet: counters are
//! single-writer [`Counter`]s, histograms are allocated at start-up and merged into the
//! shared one only when the application is dropped (on its lcore, at stop).

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ibpoll::{App, Dest, LcoreCtx, Tx};
use ibpoll_dev::Counter;
use ibpoll_mem::MbufArray;

use crate::packet::{build, echo_in_place, parse, Ip, Template};

/// Histogram range: 1 ns to 60 s, 3 significant digits.
const HIST_MAX_NS: u64 = 60_000_000_000;
/// A ping-pong packet not answered within this is counted lost and the next one goes.
const PINGPONG_TIMEOUT: Duration = Duration::from_millis(200);

/// The process-wide clock that stamps packets.
pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ns(now: Instant) -> u64 {
    now.saturating_duration_since(epoch()).as_nanos() as u64
}

/// A fresh histogram for latencies in nanoseconds.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_NS, 3).expect("valid histogram bounds")
}

/// What the generators do; written by the main thread, read (Relaxed) by every
/// generator once per iteration. It orders nothing: counters are read after the fact.
#[derive(Debug)]
pub struct Phase(AtomicU8);

impl Phase {
    /// Not sending yet.
    pub const WAIT: u8 = 0;
    /// Sending one packet per destination, to resolve neighbours and join groups.
    pub const PRIME: u8 = 1;
    /// Sending at the configured rate.
    pub const RUN: u8 = 2;
    /// Stopped for good.
    pub const HALT: u8 = 3;

    pub fn new() -> Phase {
        Phase(AtomicU8::new(Phase::WAIT))
    }

    pub fn set(&self, p: u8) {
        // Relaxed: see the type's documentation.
        self.0.store(p, Ordering::Relaxed);
    }

    fn get(&self) -> u8 {
        // Relaxed: see the type's documentation.
        self.0.load(Ordering::Relaxed)
    }
}

/// One lcore's counters of pktgen's own packets (single writer: the lcore).
#[derive(Debug, Default)]
pub struct AppCounters {
    /// Datagrams pushed into the stack (generator), priming packets included.
    pub sent: Counter,
    /// Of those, the priming packets sent before the run (generator).
    pub primed: Counter,
    /// Of those, the ones sent to a multicast group (generator).
    pub sent_mcast: Counter,
    /// 1 once the generator has sent its share of `--count` (ping-pong: and its last
    /// ping was answered or given up); 0 before, and always without `--count`.
    pub finished: Counter,
    /// Datagrams of ours received (sink; generator: echoes in ping-pong).
    pub received: Counter,
    /// Bytes of those (IP packets).
    pub received_bytes: Counter,
    /// Of those, received from a multicast group.
    pub received_mcast: Counter,
    /// Received packets that were not pktgen's (freed).
    pub foreign: Counter,
    /// Buffer allocation failures (the generator waits; nothing is lost).
    pub nombuf: Counter,
    /// Echoes the sink sent back (ping-pong).
    pub echoed: Counter,
    /// Ping-pong packets given up after `PINGPONG_TIMEOUT` (their loss is counted
    /// where it happened).
    pub timeouts: Counter,
}

/// The generators' flow control (the default; `--open-loop` sends without): all
/// generator lcores together keep at most `size` packets in flight, sent and neither
/// received nor counted as dropped (ipoib-fwd's traffic source does the same). Every
/// ring on the way holds more than that, so none overflows: the run is loss-free
/// unless something else drops, and a drop does not shrink the window for good.
///
/// Read once per generator iteration (relaxed loads of single-writer counters; they
/// order nothing, a stale value only makes the window look fuller). The drops are the
/// run's own count (every node's and the fabric's), refreshed by the main thread every
/// [`DROPS_REFRESH`]: a drop holds the generators back at most that long.
#[derive(Debug)]
pub struct Window {
    pub size: u64,
    senders: Vec<Arc<AppCounters>>,
    receivers: Vec<Arc<AppCounters>>,
    /// Packets counted as dropped so far (single writer: the main thread).
    dropped: AtomicU64,
}

/// How often the main thread refreshes a window's drop count.
pub const DROPS_REFRESH: Duration = Duration::from_millis(20);

impl Window {
    pub fn new(
        size: u64,
        senders: Vec<Arc<AppCounters>>,
        receivers: Vec<Arc<AppCounters>>,
    ) -> Window {
        Window {
            size,
            senders,
            receivers,
            dropped: AtomicU64::new(0),
        }
    }

    /// The run's drops so far (only the main thread calls this).
    pub fn set_dropped(&self, n: u64) {
        // Relaxed: see the type's documentation.
        self.dropped.store(n, Ordering::Relaxed);
    }

    /// Packets in flight now.
    fn in_flight(&self) -> u64 {
        let sent: u64 = self.senders.iter().map(|c| c.sent.get()).sum();
        let received: u64 = self.receivers.iter().map(|c| c.received.get()).sum();
        // Relaxed: see the type's documentation.
        let dropped = self.dropped.load(Ordering::Relaxed);
        sent.saturating_sub(received).saturating_sub(dropped)
    }

    /// How many packets may be sent now.
    fn room(&self) -> u64 {
        self.size.saturating_sub(self.in_flight())
    }
}

/// Where a generator sends one flow.
#[derive(Debug, Clone, Copy)]
pub struct Flow {
    pub dest: Dest,
    pub dst_ip: Ip,
    pub src_port: u16,
}

/// The flows of one generator lcore: `flows` unicast flows to `unicast_ip` (through
/// `next_hop`) with distinct UDP source ports, then one flow per multicast group (IPv4
/// or IPv6, as the addresses are).
pub fn flows(
    lcore: usize,
    unicast: usize,
    unicast_ip: Ip,
    next_hop: Ip,
    groups: &[Ip],
) -> Vec<Flow> {
    let base = 10_000 + (lcore as u16) * 1_000;
    let mut v: Vec<Flow> = (0..unicast)
        .map(|i| Flow {
            dest: next_hop.dest(),
            dst_ip: unicast_ip,
            src_port: base + i as u16,
        })
        .collect();
    v.extend(groups.iter().enumerate().map(|(i, g)| Flow {
        dest: g.dest(),
        dst_ip: *g,
        src_port: base + 500 + i as u16,
    }));
    v
}

/// A latency histogram recorded on one lcore, merged into `into` when it is dropped.
#[derive(Debug)]
struct LocalHist {
    hist: Histogram<u64>,
    into: Arc<Mutex<Histogram<u64>>>,
}

impl LocalHist {
    fn record(&mut self, sent_ns: u64, now_ns: u64) {
        // saturating_record clamps to the range instead of failing.
        self.hist
            .saturating_record(now_ns.saturating_sub(sent_ns).max(1));
    }
}

impl Drop for LocalHist {
    fn drop(&mut self) {
        let mut h = self.into.lock().unwrap_or_else(|e| e.into_inner());
        // Same bounds on both sides: cannot fail.
        let _ = h.add(&self.hist);
    }
}

/// How a generator lcore sends.
#[derive(Debug, Clone)]
pub struct GenConfig {
    pub src_ip: Ip,
    pub size: usize,
    pub burst: usize,
    /// Packets per second for this lcore; `None`: as fast as it can.
    pub rate_pps: Option<f64>,
    /// Stamp packets with the send time.
    pub stamp: bool,
    /// One packet in flight (lcore 0 only), waiting for its echo.
    pub pingpong: bool,
    /// This lcore's share of `--count`: packets (ping-pong: pings) of the run, after
    /// which it halts; `None`: until the run's phase ends.
    pub quota: Option<u64>,
}

/// The generator of one lcore.
#[derive(Debug)]
pub struct Generator {
    cfg: GenConfig,
    /// The flows, each with its datagrams' first bytes.
    flows: Vec<(Flow, Template)>,
    next: usize,
    /// One flow per distinct destination, sent once before the run.
    prime: Vec<(Flow, Template)>,
    primed: usize,
    /// Packets sent in the run phase (the priming packets not included).
    run_sent: u64,
    phase: Arc<Phase>,
    counters: Arc<AppCounters>,
    tokens: f64,
    last: Option<Instant>,
    in_flight: Option<Instant>,
    rtt: Option<LocalHist>,
    /// Buffers of a burst, allocated in bulk.
    scratch: MbufArray,
    window: Option<Arc<Window>>,
}

impl Generator {
    pub fn new(
        cfg: GenConfig,
        flows: Vec<Flow>,
        phase: Arc<Phase>,
        counters: Arc<AppCounters>,
        rtt: Option<Arc<Mutex<Histogram<u64>>>>,
        window: Option<Arc<Window>>,
    ) -> Generator {
        let with_template = |f: &Flow| {
            let t = Template::new(cfg.size, cfg.src_ip, f.dst_ip, f.src_port);
            (*f, t)
        };
        let mut prime: Vec<(Flow, Template)> = Vec::new();
        for f in &flows {
            if !prime.iter().any(|(p, _)| p.dest == f.dest) {
                prime.push(with_template(f));
            }
        }
        let flows = flows.iter().map(with_template).collect();
        Generator {
            cfg,
            flows,
            next: 0,
            prime,
            primed: 0,
            run_sent: 0,
            phase,
            counters,
            tokens: 0.0,
            last: None,
            in_flight: None,
            scratch: MbufArray::with_capacity(ibpoll::TX_TABLE_MAX),
            rtt: rtt.map(|into| LocalHist {
                hist: histogram(),
                into,
            }),
            window,
        }
    }

    /// Flows with distinct destinations: the packets sent before the run (one each).
    pub fn prime_count(flows: &[Flow]) -> usize {
        let mut n = 0;
        for (i, f) in flows.iter().enumerate() {
            if !flows[..i].iter().any(|p| p.dest == f.dest) {
                n += 1;
            }
        }
        n
    }

    /// Sends up to `n` packets round-robin over the flows (the priming flows while
    /// priming); how many went.
    fn send(&mut self, ctx: &LcoreCtx, tx: &mut Tx, n: usize, priming: bool) -> usize {
        let stamp = if self.cfg.stamp { now_ns(ctx.now) } else { 0 };
        // One bulk allocation per burst, counters once per burst.
        let want = n.min(tx.room(0)).min(self.scratch.capacity());
        let got = tx.alloc_bulk(&mut self.scratch, want);
        if got < want {
            self.counters.nombuf.inc();
        }
        let (mut sent, mut mcast) = (0, 0);
        for mut m in self.scratch.drain_front(got) {
            let (flow, header) = if priming {
                &self.prime[self.primed + sent]
            } else {
                &self.flows[self.next]
            };
            let dest = flow.dest;
            if !build(&mut m, self.cfg.size, header, stamp) {
                // Sizes are checked against the buffers at start-up.
                break;
            }
            if !priming {
                self.next += 1;
                if self.next == self.flows.len() {
                    self.next = 0;
                }
            }
            mcast += u64::from(matches!(dest, Dest::Group(_)));
            tx.push(0, m, dest);
            sent += 1;
        }
        // What was not used (a build that failed) goes back in bulk.
        self.scratch.clear();
        if priming {
            self.primed += sent;
            self.counters.primed.add(sent as u64);
        } else {
            self.run_sent += sent as u64;
        }
        self.counters.sent.add(sent as u64);
        self.counters.sent_mcast.add(mcast);
        sent
    }

    /// Run packets this lcore may still send: the rest of its `--count` share.
    fn quota_left(&self) -> u64 {
        self.cfg
            .quota
            .map_or(u64::MAX, |q| q.saturating_sub(self.run_sent))
    }

    /// Marks this lcore's share of `--count` as done (once).
    fn finish(&mut self) {
        if self.counters.finished.get() == 0 {
            self.counters.finished.inc();
        }
    }
}

impl App for Generator {
    fn on_burst(&mut self, ctx: &LcoreCtx, rx: &mut MbufArray, _tx: &mut Tx) {
        let now = now_ns(Instant::now().max(ctx.now));
        while let Some(m) = rx.pop() {
            match parse(m.data()) {
                Some(sent_ns) if self.cfg.pingpong => {
                    self.counters.received.inc();
                    self.counters.received_bytes.add(m.len() as u64);
                    if let Some(h) = &mut self.rtt {
                        h.record(sent_ns, now);
                    }
                    self.in_flight = None;
                }
                _ => self.counters.foreign.inc(),
            }
        }
    }

    fn poll(&mut self, ctx: &LcoreCtx, tx: &mut Tx) -> bool {
        if self.flows.is_empty() || !ctx.link_up {
            return false;
        }
        match self.phase.get() {
            Phase::PRIME if !self.cfg.pingpong && self.primed < self.prime.len() => {
                let n = self.prime.len() - self.primed;
                self.send(ctx, tx, n, true) > 0
            }
            Phase::RUN if self.cfg.pingpong => {
                if let Some(t) = self.in_flight {
                    if ctx.now.saturating_duration_since(t) < PINGPONG_TIMEOUT {
                        return false;
                    }
                    self.counters.timeouts.inc();
                    self.in_flight = None;
                }
                if self.quota_left() == 0 {
                    self.finish();
                    return false;
                }
                if self.send(ctx, tx, 1, false) == 1 {
                    self.in_flight = Some(ctx.now);
                    true
                } else {
                    false
                }
            }
            Phase::RUN => {
                let left = self.quota_left();
                if left == 0 {
                    self.finish();
                    return false;
                }
                let n = match self.cfg.rate_pps {
                    None => self.cfg.burst,
                    Some(rate) => {
                        let last = *self.last.get_or_insert(ctx.now);
                        let dt = ctx.now.saturating_duration_since(last).as_secs_f64();
                        self.last = Some(ctx.now);
                        // Bank up to 10 ms of credit (at least a burst), so that an
                        // lcore the OS preempted catches up, a burst at a time.
                        let bank = (rate * 0.01).max(self.cfg.burst as f64);
                        self.tokens = (self.tokens + dt * rate).min(bank);
                        (self.tokens as usize).min(self.cfg.burst)
                    }
                };
                let mut n = n.min(usize::try_from(left).unwrap_or(usize::MAX));
                if let Some(w) = &self.window {
                    n = n.min(usize::try_from(w.room()).unwrap_or(usize::MAX));
                }
                if n == 0 {
                    return false;
                }
                let sent = self.send(ctx, tx, n, false);
                self.tokens -= sent as f64;
                sent > 0
            }
            _ => false,
        }
    }
}

/// How a sink lcore treats what it receives.
#[derive(Debug, Clone, Copy)]
pub struct SinkConfig {
    /// Record one-way latency from the timestamps.
    pub latency: bool,
    /// Echo every datagram back to its source through `echo_next_hop`.
    pub echo_next_hop: Option<Ip>,
}

/// The sink of one lcore: counts (and echoes, in ping-pong) pktgen's datagrams.
#[derive(Debug)]
pub struct Sink {
    cfg: SinkConfig,
    counters: Arc<AppCounters>,
    latency: Option<LocalHist>,
}

impl Sink {
    pub fn new(
        cfg: SinkConfig,
        counters: Arc<AppCounters>,
        latency: Option<Arc<Mutex<Histogram<u64>>>>,
    ) -> Sink {
        Sink {
            cfg,
            counters,
            latency: latency.filter(|_| cfg.latency).map(|into| LocalHist {
                hist: histogram(),
                into,
            }),
        }
    }
}

impl App for Sink {
    fn on_burst(&mut self, ctx: &LcoreCtx, rx: &mut MbufArray, tx: &mut Tx) {
        // One clock read per burst.
        let now = now_ns(Instant::now().max(ctx.now));
        if let Some(hop) = self.cfg.echo_next_hop {
            self.echo(ctx, rx, tx, hop);
            return;
        }
        // Counted per burst, freed in bulk.
        let (mut ours, mut bytes, mut mcast, mut foreign) = (0u64, 0u64, 0u64, 0u64);
        for m in rx.as_slice() {
            let Some(sent_ns) = parse(m.data()) else {
                foreign += 1;
                continue;
            };
            ours += 1;
            bytes += m.len() as u64;
            mcast += u64::from(m.meta().flags & ibpoll_mem::MBUF_F_MCAST != 0);
            if let Some(h) = &mut self.latency {
                h.record(sent_ns, now);
            }
        }
        let c = &self.counters;
        c.received.add(ours);
        c.received_bytes.add(bytes);
        c.received_mcast.add(mcast);
        c.foreign.add(foreign);
        rx.clear();
    }
}

impl Sink {
    /// Ping-pong: every datagram of ours goes back to its source through `hop`, the
    /// very buffer, its addresses swapped in place ([`echo_in_place`]).
    fn echo(&mut self, ctx: &LcoreCtx, rx: &mut MbufArray, tx: &mut Tx, hop: Ip) {
        rx.filter_map_from(0, |mut m| {
            if parse(m.data()).is_none() {
                self.counters.foreign.inc();
                return None;
            }
            let dest = echo_in_place(m.data_mut(), hop);
            self.counters.echoed.inc();
            tx.push(ctx.iface, m, dest);
            None
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_counts_what_is_neither_received_nor_dropped() {
        let (g0, g1, sink): (Arc<AppCounters>, Arc<AppCounters>, Arc<AppCounters>) =
            (Arc::default(), Arc::default(), Arc::default());
        let w = Window::new(512, vec![g0.clone(), g1], vec![sink.clone()]);
        assert_eq!(w.room(), 512);
        g0.sent.add(600);
        assert_eq!(w.room(), 0, "over the window: nothing more");
        sink.received.add(50);
        assert_eq!(w.room(), 0);
        w.set_dropped(40);
        // 600 sent - 50 received - 40 dropped = 510 in flight.
        assert_eq!(w.room(), 2);
        w.set_dropped(600);
        assert_eq!(w.room(), 512, "never negative");
    }
}
