//! The data path of pktgen: the generator and sink applications that run on the stacks'
//! data lcores, and the packets they exchange.
//!
//! A packet is an IPv4/UDP datagram of exactly `--size` bytes (IP header included, the
//! 4-byte IPoIB header not): 20 bytes of IPv4 header, 8 of UDP header, then the payload
//! `MAGIC (4) | timestamp ns (8)` and padding. The timestamp is nanoseconds since
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
use ibpoll::{App, Dest, GroupAddr, LcoreCtx, Tx};
use ibpoll_dev::Counter;
use ibpoll_mem::{Mbuf, MbufArray};

/// IPv4 (20) + UDP (8) headers.
pub const HEADERS_LEN: usize = 28;
/// Where the magic and the timestamp sit, from the IP header on.
const MAGIC_AT: usize = HEADERS_LEN;
const STAMP_AT: usize = HEADERS_LEN + 4;
/// The smallest packet that holds the headers, the magic and the timestamp.
pub const PACKET_MIN: usize = STAMP_AT + 8;
/// Marks pktgen's datagrams.
const MAGIC: [u8; 4] = *b"IBpg";
/// The UDP destination port of pktgen's datagrams.
pub const UDP_PORT: u16 = 9000;
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
    pub dst_ip: [u8; 4],
    pub src_port: u16,
}

/// The flows of one generator lcore: `flows` unicast flows to `unicast_ip` (through
/// `next_hop`) with distinct UDP source ports, then one flow per multicast group.
pub fn flows(
    lcore: usize,
    unicast: usize,
    unicast_ip: [u8; 4],
    next_hop: [u8; 4],
    groups: &[[u8; 4]],
) -> Vec<Flow> {
    let base = 10_000 + (lcore as u16) * 1_000;
    let mut v: Vec<Flow> = (0..unicast)
        .map(|i| Flow {
            dest: Dest::NextHop(next_hop),
            dst_ip: unicast_ip,
            src_port: base + i as u16,
        })
        .collect();
    v.extend(groups.iter().enumerate().map(|(i, g)| Flow {
        dest: Dest::Group(GroupAddr::Ipv4(*g)),
        dst_ip: *g,
        src_port: base + 500 + i as u16,
    }));
    v
}

/// The first [`PACKET_MIN`] bytes of every datagram of `flow`: IPv4 header (checksum
/// included), UDP header and magic; the timestamp is written per packet. Built once per
/// flow, so that a packet costs a copy, not a header construction.
fn template(size: usize, src: [u8; 4], flow: &Flow) -> [u8; PACKET_MIN] {
    let mut d = [0u8; PACKET_MIN];
    d[0] = 0x45;
    d[2..4].copy_from_slice(&(size as u16).to_be_bytes());
    d[8] = 64; // TTL
    d[9] = 17; // UDP
    d[12..16].copy_from_slice(&src);
    d[16..20].copy_from_slice(&flow.dst_ip);
    let sum = ip_checksum(&d[..20]);
    d[10..12].copy_from_slice(&sum.to_be_bytes());
    d[20..22].copy_from_slice(&flow.src_port.to_be_bytes());
    d[22..24].copy_from_slice(&UDP_PORT.to_be_bytes());
    d[24..26].copy_from_slice(&((size - 20) as u16).to_be_bytes());
    // UDP checksum 0: none (IPv4).
    d[MAGIC_AT..MAGIC_AT + 4].copy_from_slice(&MAGIC);
    d
}

/// Writes a pktgen datagram of `size` bytes into `m` (an empty buffer) from its flow's
/// template, stamped with `stamp`. False if it does not fit.
#[inline]
fn build(m: &mut Mbuf, size: usize, template: &[u8; PACKET_MIN], stamp: u64) -> bool {
    let Some(d) = m.append(size) else {
        return false;
    };
    d[..PACKET_MIN].copy_from_slice(template);
    d[STAMP_AT..STAMP_AT + 8].copy_from_slice(&stamp.to_be_bytes());
    true
}

fn ip_checksum(h: &[u8]) -> u16 {
    let mut sum = 0u32;
    for w in h.chunks_exact(2) {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The timestamp of a pktgen datagram, `None` if it is not one.
fn parse(d: &[u8]) -> Option<u64> {
    if d.len() < PACKET_MIN || d[0] != 0x45 || d[9] != 17 || d[MAGIC_AT..MAGIC_AT + 4] != MAGIC {
        return None;
    }
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&d[STAMP_AT..STAMP_AT + 8]);
    Some(u64::from_be_bytes(ts))
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
    pub src_ip: [u8; 4],
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
    flows: Vec<(Flow, [u8; PACKET_MIN])>,
    next: usize,
    /// One flow per distinct destination, sent once before the run.
    prime: Vec<(Flow, [u8; PACKET_MIN])>,
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
        let with_template = |f: &Flow| (*f, template(cfg.size, cfg.src_ip, f));
        let mut prime: Vec<(Flow, [u8; PACKET_MIN])> = Vec::new();
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
    pub echo_next_hop: Option<[u8; 4]>,
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
    /// very buffer, its addresses swapped in place (the checksum does not change; the
    /// TTL is reset).
    fn echo(&mut self, ctx: &LcoreCtx, rx: &mut MbufArray, tx: &mut Tx, hop: [u8; 4]) {
        rx.filter_map_from(0, |mut m| {
            if parse(m.data()).is_none() {
                self.counters.foreign.inc();
                return None;
            }
            let d = m.data_mut();
            for i in 0..4 {
                d.swap(12 + i, 16 + i);
            }
            d[8] = 64;
            let sum = {
                d[10] = 0;
                d[11] = 0;
                ip_checksum(&d[..20])
            };
            d[10..12].copy_from_slice(&sum.to_be_bytes());
            self.counters.echoed.inc();
            tx.push(ctx.iface, m, Dest::NextHop(hop));
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

    #[test]
    fn checksum_of_a_known_header() {
        // RFC 1071 example header (Wikipedia's IPv4 checksum example).
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(ip_checksum(&h), 0xb861);
    }

    #[test]
    fn templates_are_valid_datagrams_that_parse_back() {
        let flow = Flow {
            dest: Dest::NextHop([10, 0, 0, 2]),
            dst_ip: [10, 0, 0, 9],
            src_port: 10_001,
        };
        let t = template(64, [10, 0, 0, 1], &flow);
        // The header checksum verifies: the sum over the header with it is 0xffff.
        assert_eq!(ip_checksum(&t[..20]), 0);
        assert_eq!(&t[12..16], &[10, 0, 0, 1]);
        assert_eq!(&t[16..20], &[10, 0, 0, 9]);
        assert_eq!(u16::from_be_bytes([t[2], t[3]]), 64);
        assert_eq!(u16::from_be_bytes([t[20], t[21]]), 10_001);
        assert_eq!(u16::from_be_bytes([t[24], t[25]]), 44);
        let mut full = [0u8; 64];
        full[..PACKET_MIN].copy_from_slice(&t);
        full[STAMP_AT..STAMP_AT + 8].copy_from_slice(&1234u64.to_be_bytes());
        assert_eq!(parse(&full), Some(1234));
    }
}
