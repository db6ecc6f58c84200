//! The soak's application: on each host's data lcore, numbered UDP datagrams at a fixed
//! rate, alternately unicast to the other hosts and multicast to the groups the host's
//! send mask names, and a count of everything received.
//!
//! The driver pauses all traffic before each measurement ([`TrafficCtl::paused`]) and
//! churns the send masks (senders that start and stop using a group make send-only
//! joins, and their expiry, part of the churn).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use ibpoll::{App, Dest, LcoreCtx, Tx};
use ibpoll_dev::Counter;
use ibpoll_mem::{Mbuf, MbufArray, MBUF_F_MCAST};

/// Datagrams pushed per lane iteration at most.
const BURST: u64 = 32;
/// The soak's datagrams carry this after the UDP header.
const MAGIC: u32 = 0x50a4_1b1b;
/// Bytes of a datagram: IPv4 (20), UDP (8), magic (4), host (4), sequence (8).
const DATAGRAM_LEN: usize = 44;
/// The UDP port the datagrams go to.
const UDP_PORT: u16 = 9400;

/// A fault planted in the soak's own application, to show that its checks catch what
/// they are for (used by its tests; never in a real soak).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mutation {
    /// Each application keeps one received buffer in 500 for good: buffers out grow.
    HoldBuffers,
    /// Each application receives one datagram in 500 without counting it: packets go
    /// unaccounted for.
    UncountedRx,
}

/// Every 500th received datagram is the one a [`Mutation`] touches.
const MUTATION_EVERY: u64 = 500;

/// What the driver tells the applications: whether to send, and to which groups.
#[derive(Debug)]
pub struct TrafficCtl {
    /// Set while the driver measures: no application sends (Relaxed: a request, not a
    /// synchronisation; the driver waits for the counters to be quiet).
    pub paused: AtomicBool,
    /// Per host: bit `g` set means the host sends to group `g`.
    pub masks: Box<[AtomicU64]>,
}

impl TrafficCtl {
    /// `hosts` send masks, all empty, traffic not paused.
    pub fn new(hosts: usize) -> TrafficCtl {
        TrafficCtl {
            paused: AtomicBool::new(false),
            masks: (0..hosts).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

/// One application's counts (it is the single writer of each).
#[derive(Debug, Default)]
pub struct AppCounters {
    /// Unicast datagrams pushed into the lane.
    pub sent_unicast: Counter,
    /// Multicast datagrams pushed into the lane.
    pub sent_mcast: Counter,
    /// Packets received (the stack handed them to the application), counted.
    pub received: Counter,
    /// Of those, the soak's datagrams that came through a multicast group.
    pub received_mcast: Counter,
    /// Of those, packets that were not the soak's datagrams.
    pub foreign: Counter,
    /// Buffer allocations that failed (nothing was sent for them).
    pub nombuf: Counter,
    /// Buffers kept for good ([`Mutation::HoldBuffers`] only).
    pub held: Counter,
}

/// A copy of an application's counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppCounts {
    /// Datagrams pushed, unicast and multicast.
    pub sent: u64,
    /// Of those, multicast.
    pub sent_mcast: u64,
    /// Packets received and counted.
    pub received: u64,
    /// Of those, through a multicast group.
    pub received_mcast: u64,
    /// Of those, not the soak's.
    pub foreign: u64,
    /// Allocation failures.
    pub nombuf: u64,
}

impl AppCounters {
    /// A copy of the counts.
    pub fn read(&self) -> AppCounts {
        let sent_mcast = self.sent_mcast.get();
        AppCounts {
            sent: self.sent_unicast.get() + sent_mcast,
            sent_mcast,
            received: self.received.get(),
            received_mcast: self.received_mcast.get(),
            foreign: self.foreign.get(),
            nombuf: self.nombuf.get(),
        }
    }
}

/// The application of one host's data lcore.
#[derive(Debug)]
pub struct SoakApp {
    host: usize,
    ip: [u8; 4],
    /// The other hosts' addresses (unicast next hops on the subnet).
    peers: Vec<[u8; 4]>,
    /// The multicast groups, by index in the send mask.
    groups: Vec<[u8; 4]>,
    ctl: Arc<TrafficCtl>,
    counters: Arc<AppCounters>,
    rate_pps: f64,
    /// Start of the current sending window and datagrams sent in it.
    window: Option<(Instant, u64)>,
    seq: u64,
    group_cursor: usize,
    mutation: Option<Mutation>,
    received: u64,
    held: Vec<Mbuf>,
}

impl SoakApp {
    /// The application of host `host` at `ip`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        host: usize,
        ip: [u8; 4],
        peers: Vec<[u8; 4]>,
        groups: Vec<[u8; 4]>,
        ctl: Arc<TrafficCtl>,
        counters: Arc<AppCounters>,
        rate_pps: f64,
        mutation: Option<Mutation>,
    ) -> SoakApp {
        SoakApp {
            host,
            ip,
            peers,
            groups,
            ctl,
            counters,
            rate_pps,
            window: None,
            seq: 0,
            group_cursor: 0,
            mutation,
            received: 0,
            held: Vec::new(),
        }
    }

    /// Datagrams due now at the configured rate. A window that fell more than a
    /// second behind (the lcore was descheduled) starts again rather than bursting.
    fn due(&mut self, now: Instant) -> u64 {
        let (t0, sent) = *self.window.get_or_insert((now, 0));
        let due = (now.saturating_duration_since(t0).as_secs_f64() * self.rate_pps) as u64;
        let behind = due.saturating_sub(sent);
        if behind as f64 > self.rate_pps {
            self.window = Some((now, 0));
            return 0;
        }
        behind
    }

    /// The next destination: unicast and multicast in turn; unicast when the send mask
    /// is empty.
    fn next_dest(&mut self) -> (Dest, [u8; 4], bool) {
        let mask = self.ctl.masks[self.host].load(Ordering::Relaxed);
        if self.seq % 2 == 1 && mask != 0 {
            for _ in 0..self.groups.len() {
                self.group_cursor = (self.group_cursor + 1) % self.groups.len();
                if mask & (1 << self.group_cursor) != 0 {
                    let g = self.groups[self.group_cursor];
                    return (Dest::NextHop(g), g, true);
                }
            }
        }
        let p = self.peers[(self.seq / 2) as usize % self.peers.len()];
        (Dest::NextHop(p), p, false)
    }

    fn count_received(&mut self, m: &Mbuf) -> bool {
        self.received += 1;
        let touched = self.received % MUTATION_EVERY == 0;
        if touched && self.mutation == Some(Mutation::UncountedRx) {
            return false;
        }
        self.counters.received.inc();
        let d = m.data();
        if d.len() >= DATAGRAM_LEN && d[0] == 0x45 && d[28..32] == MAGIC.to_be_bytes() {
            if m.meta().flags & MBUF_F_MCAST != 0 {
                self.counters.received_mcast.inc();
            }
        } else {
            self.counters.foreign.inc();
        }
        touched && self.mutation == Some(Mutation::HoldBuffers)
    }
}

impl App for SoakApp {
    fn on_burst(&mut self, _ctx: &LcoreCtx, rx: &mut MbufArray, _tx: &mut Tx) {
        let mut i = 0;
        while i < rx.len() {
            let hold = self.count_received(&rx.as_slice()[i]);
            if hold {
                self.held.push(rx.swap_remove(i));
                self.counters.held.inc();
                continue;
            }
            i += 1;
        }
        // Consumed: freed here in bulk.
        rx.clear();
    }

    fn poll(&mut self, ctx: &LcoreCtx, tx: &mut Tx) -> bool {
        if self.ctl.paused.load(Ordering::Relaxed) {
            self.window = None;
            return false;
        }
        let n = self.due(ctx.now).min(BURST).min(tx.room(0) as u64);
        let mut sent = 0;
        for _ in 0..n {
            let Some(mut m) = tx.alloc() else {
                self.counters.nombuf.inc();
                break;
            };
            let (dest, dst, mcast) = self.next_dest();
            build(&mut m, self.ip, dst, self.host as u32, self.seq);
            self.seq += 1;
            if mcast {
                self.counters.sent_mcast.inc();
            } else {
                self.counters.sent_unicast.inc();
            }
            tx.push(0, m, dest);
            sent += 1;
        }
        if let Some((_, s)) = &mut self.window {
            *s += sent;
        }
        sent > 0
    }
}

/// Writes the soak's IPv4/UDP datagram from `src` to `dst` into `m`.
fn build(m: &mut Mbuf, src: [u8; 4], dst: [u8; 4], host: u32, seq: u64) {
    let Some(d) = m.append(DATAGRAM_LEN) else {
        return;
    };
    d.fill(0);
    d[0] = 0x45;
    d[2..4].copy_from_slice(&(DATAGRAM_LEN as u16).to_be_bytes());
    d[8] = 64;
    d[9] = 17;
    d[12..16].copy_from_slice(&src);
    d[16..20].copy_from_slice(&dst);
    let sum = ipv4_checksum(&d[..20]);
    d[10..12].copy_from_slice(&sum.to_be_bytes());
    d[20..22].copy_from_slice(&UDP_PORT.to_be_bytes());
    d[22..24].copy_from_slice(&UDP_PORT.to_be_bytes());
    d[24..26].copy_from_slice(&((DATAGRAM_LEN - 20) as u16).to_be_bytes());
    d[28..32].copy_from_slice(&MAGIC.to_be_bytes());
    d[32..36].copy_from_slice(&host.to_be_bytes());
    d[36..44].copy_from_slice(&seq.to_be_bytes());
}

/// The IPv4 header checksum (RFC 791) of `h`, whose checksum field is zero.
fn ipv4_checksum(h: &[u8]) -> u16 {
    let mut sum: u32 = h
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_is_rfc_1071s() {
        // RFC 1071's example words 0001 f203 f4f5 f6f7 sum to ddf2 (one's complement).
        let h = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(ipv4_checksum(&h), !0xddf2);
    }
}
