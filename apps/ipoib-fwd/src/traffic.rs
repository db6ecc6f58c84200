//! The built-in traffic of `ipoib-fwd` (testpmd's txonly / rxonly): a [`Source`] that
//! sends numbered IPv4/UDP datagrams through a gateway and a [`Sink`] that counts
//! them. Both are [`App`]s for a one-interface stack.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use ibpoll::{App, Dest, LcoreCtx, Tx, BURST_MAX};
use ibpoll_dev::Counter;
use ibpoll_mem::MbufArray;

use crate::fwd::ipv4_checksum;

/// Marks the datagrams of the built-in source (UDP payload bytes 0..4).
pub const MAGIC: u32 = 0x1b1b_f0d0;
/// The smallest datagram the source builds: IPv4 (20) + UDP (8) + magic and sequence (8).
pub const SIZE_MIN: usize = 36;
/// The initial TTL of the source's datagrams.
pub const TTL: u8 = 64;

/// Counters of a source or sink, and the flag that stops a source. Single writer (the
/// lcore), any reader.
#[derive(Debug)]
#[repr(C, align(64))]
pub struct TrafficCounters {
    /// Datagrams pushed for transmission.
    pub sent: Counter,
    /// Datagrams received that are ours (by magic).
    pub received: Counter,
    /// Received bytes of ours (IP packet bytes).
    pub received_bytes: Counter,
    /// Received packets that were not ours.
    pub foreign: Counter,
    /// Received datagrams of ours whose TTL was not the expected one.
    pub bad_ttl: Counter,
    /// Buffer allocation failures.
    pub nombuf: Counter,
    /// Set to stop the source for good.
    pub halt: AtomicBool,
    /// Datagrams the source may have sent in total (`u64::MAX` by default): a warm-up
    /// sets it to 1 so that the first contact's ARP and path resolution does not
    /// overflow the control core's 3-packet neighbour queue.
    pub budget: AtomicU64,
}

impl Default for TrafficCounters {
    fn default() -> Self {
        TrafficCounters {
            sent: Counter::default(),
            received: Counter::default(),
            received_bytes: Counter::default(),
            foreign: Counter::default(),
            bad_ttl: Counter::default(),
            nombuf: Counter::default(),
            halt: AtomicBool::new(false),
            budget: AtomicU64::new(u64::MAX),
        }
    }
}

/// What the source sends.
#[derive(Debug, Clone, Copy)]
pub struct SourceConfig {
    /// Source address.
    pub src: [u8; 4],
    /// Destination address.
    pub dst: [u8; 4],
    /// The next hop (the forwarder's address on the source's subnet).
    pub gateway: [u8; 4],
    /// IP packet size in bytes (at least [`SIZE_MIN`]).
    pub size: usize,
    /// Packets per second for this lcore; 0 = as fast as possible.
    pub rate_pps: u64,
    /// Distinct UDP source ports (flows).
    pub flows: u16,
    /// Send only while the sink has received all but this many (0: open loop).
    pub window: u64,
    /// Stop after this many datagrams (`u64::MAX`: no limit).
    pub count: u64,
    /// The TTL of the datagrams ([`TTL`] by default).
    pub ttl: u8,
}

impl Default for SourceConfig {
    /// The built-in topology: 10.1.0.2 to 10.2.0.2 via 10.1.0.1, 64 bytes, unlimited
    /// rate, 16 flows, window 512, no count limit, TTL 64.
    fn default() -> Self {
        SourceConfig {
            src: [10, 1, 0, 2],
            dst: [10, 2, 0, 2],
            gateway: [10, 1, 0, 1],
            size: 64,
            rate_pps: 0,
            flows: 16,
            window: 512,
            count: u64::MAX,
            ttl: TTL,
        }
    }
}

/// Sends numbered IPv4/UDP datagrams to `dst` via `gateway`.
#[derive(Debug)]
pub struct Source {
    cfg: SourceConfig,
    counters: Arc<TrafficCounters>,
    /// The sink's counters, for the window.
    peer: Option<Arc<TrafficCounters>>,
    seq: u32,
    /// Rate control: when the last credit was computed, and the credit (packets).
    last: Option<Instant>,
    credit: f64,
}

impl Source {
    /// A source counting into `counters`; `peer` (the sink's counters) enables the
    /// window.
    pub fn new(
        cfg: SourceConfig,
        counters: Arc<TrafficCounters>,
        peer: Option<Arc<TrafficCounters>>,
    ) -> Source {
        Source {
            cfg,
            counters,
            peer,
            seq: 0,
            last: None,
            credit: 0.0,
        }
    }
}

/// Writes an IPv4/UDP datagram with TTL `ttl`, of `size` bytes (at least [`SIZE_MIN`]) into `d`.
pub fn build_datagram(d: &mut [u8], src: [u8; 4], dst: [u8; 4], sport: u16, seq: u32, ttl: u8) {
    let size = d.len();
    d[..SIZE_MIN].fill(0);
    d[0] = 0x45;
    d[2..4].copy_from_slice(&(size as u16).to_be_bytes());
    d[8] = ttl;
    d[9] = 17;
    d[12..16].copy_from_slice(&src);
    d[16..20].copy_from_slice(&dst);
    let sum = ipv4_checksum(&d[..20]);
    d[10..12].copy_from_slice(&sum.to_be_bytes());
    d[20..22].copy_from_slice(&sport.to_be_bytes());
    d[22..24].copy_from_slice(&9000u16.to_be_bytes());
    d[24..26].copy_from_slice(&((size - 20) as u16).to_be_bytes());
    d[28..32].copy_from_slice(&MAGIC.to_be_bytes());
    d[32..36].copy_from_slice(&seq.to_be_bytes());
}

/// The sequence number of one of the source's datagrams (data at the IP header).
pub fn datagram_seq(d: &[u8]) -> Option<u32> {
    if d.len() >= SIZE_MIN && d[0] == 0x45 && d[28..32] == MAGIC.to_be_bytes() {
        Some(u32::from_be_bytes([d[32], d[33], d[34], d[35]]))
    } else {
        None
    }
}

impl App for Source {
    fn on_burst(&mut self, _ctx: &LcoreCtx, _rx: &mut MbufArray, _tx: &mut Tx) {}

    fn poll(&mut self, ctx: &LcoreCtx, tx: &mut Tx) -> bool {
        let c = &*self.counters;
        if !ctx.link_up || c.halt.load(Ordering::Relaxed) {
            return false;
        }
        let mut n = BURST_MAX.min(tx.room(0)) as u64;
        let budget = self.cfg.count.min(c.budget.load(Ordering::Relaxed));
        n = n.min(budget.saturating_sub(c.sent.get()));
        if let (Some(peer), w) = (&self.peer, self.cfg.window) {
            if w > 0 {
                let in_flight = c.sent.get().saturating_sub(peer.received.get());
                n = n.min(w.saturating_sub(in_flight));
            }
        }
        if self.cfg.rate_pps > 0 {
            let last = *self.last.get_or_insert(ctx.now);
            let dt = ctx.now.saturating_duration_since(last).as_secs_f64();
            self.last = Some(ctx.now);
            self.credit = (self.credit + dt * self.cfg.rate_pps as f64).min(BURST_MAX as f64);
            n = n.min(self.credit as u64);
            self.credit -= n as f64;
        }
        let size = self.cfg.size.max(SIZE_MIN);
        let mut sent = 0;
        for _ in 0..n {
            let Some(mut m) = tx.alloc() else {
                c.nombuf.inc();
                break;
            };
            let Some(d) = m.append(size) else {
                c.nombuf.inc();
                break;
            };
            let sport = 10_000 + (self.seq % u32::from(self.cfg.flows.max(1))) as u16;
            build_datagram(d, self.cfg.src, self.cfg.dst, sport, self.seq, self.cfg.ttl);
            self.seq = self.seq.wrapping_add(1);
            tx.push(0, m, Dest::NextHop(self.cfg.gateway));
            sent += 1;
        }
        c.sent.add(sent);
        sent > 0
    }
}

/// Counts the source's datagrams (and checks their TTL: one hop).
#[derive(Debug)]
pub struct Sink {
    counters: Arc<TrafficCounters>,
    /// The TTL datagrams should arrive with.
    pub ttl: u8,
}

impl Sink {
    /// A sink counting into `counters`, expecting the TTL after one forwarder.
    pub fn new(counters: Arc<TrafficCounters>) -> Sink {
        Sink {
            counters,
            ttl: TTL - 1,
        }
    }
}

impl App for Sink {
    fn on_burst(&mut self, _ctx: &LcoreCtx, rx: &mut MbufArray, _tx: &mut Tx) {
        let c = &*self.counters;
        let (mut ours, mut bytes, mut foreign, mut bad_ttl) = (0, 0, 0, 0);
        for m in rx.as_slice() {
            let d = m.data();
            if datagram_seq(d).is_some() {
                ours += 1;
                bytes += d.len() as u64;
                if d[8] != self.ttl {
                    bad_ttl += 1;
                }
            } else {
                foreign += 1;
            }
        }
        c.received.add(ours);
        c.received_bytes.add(bytes);
        c.foreign.add(foreign);
        c.bad_ttl.add(bad_ttl);
        // Consumed: freed here in bulk, not counted as left over.
        rx.clear();
    }
}
