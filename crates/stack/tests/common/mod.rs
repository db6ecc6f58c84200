//! Test helpers: stacks on one simulated fabric, with a test application that generates
//! numbered UDP datagrams and counts what it receives.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ibpoll::{App, Dest, LcoreCtx, Stack, StackBuilder, Tx};
use ibpoll_dev::Counter;
use ibpoll_mem::{Mbuf, MbufArray};
use ibpoll_pmd_sim::{FabricConfig, SimFabric};
use ibpoll_testkit::stack;

/// The tests share 2 CPUs: run them one at a time.
pub use ibpoll_testkit::serial;

pub fn fabric() -> SimFabric {
    SimFabric::new(FabricConfig::default())
}

pub fn usable_cpus() -> usize {
    core_affinity::get_core_ids().map_or(1, |v| v.len()).max(1)
}

/// A builder for a test host: small rings and pool, idle lcores sleep (the tests share
/// two CPUs), pinned to `cpu` modulo the usable CPUs.
pub fn host(fabric: &SimFabric, name: &str, ip: [u8; 4], cpu: usize) -> StackBuilder {
    let cpus = core_affinity::get_core_ids()
        .map(|v| v.into_iter().map(|c| c.id).collect::<Vec<_>>())
        .unwrap_or_else(|| vec![0]);
    stack::small(fabric, name)
        .ipv4(ip)
        .cpus(vec![cpus[cpu % cpus.len()]])
        .pool_cache(64)
        .stop_timeout(Duration::from_secs(30))
}

/// What the test thread and one lcore's test application share. The application is
/// the single writer of the counters; the test thread writes `budget` and `flows`.
#[derive(Debug, Default)]
pub struct Probe {
    /// Datagrams the generator may have sent in total.
    pub budget: AtomicU64,
    /// Set to stop generating for good.
    pub halt: AtomicBool,
    /// Datagrams pushed into the lane's Tx.
    pub sent: Counter,
    /// Datagrams received (ours, by magic).
    pub received: Counter,
    /// Received datagrams that were not ours.
    pub foreign: Counter,
    /// Received multicast datagrams.
    pub received_mcast: Counter,
    /// Buffer allocation failures.
    pub nombuf: Counter,
}

impl Probe {
    pub fn allow(&self, n: u64) {
        self.budget.store(n, Ordering::Relaxed);
    }
}

const MAGIC: u32 = 0x1b1b_cafe;

/// Generates datagrams to `dest` (round-robin over `flows` source ports), counts what
/// arrives.
pub struct TestApp {
    pub probe: Arc<Probe>,
    pub dest: Option<Dest>,
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub flows: u16,
    pub per_iteration: usize,
    /// Flow control for exact counts: send only while the peer's probe has received
    /// all but `window` of what we sent (UD drops what overflows a receive ring).
    pub peer: Option<(Arc<Probe>, u64)>,
    seq: u32,
}

impl TestApp {
    pub fn new(probe: Arc<Probe>, src: [u8; 4], dst: [u8; 4], dest: Option<Dest>) -> TestApp {
        TestApp {
            probe,
            dest,
            src,
            dst,
            flows: 1,
            per_iteration: 8,
            peer: None,
            seq: 0,
        }
    }

    /// Sends only while `peer` has received all but `window` datagrams.
    pub fn window(mut self, peer: &Arc<Probe>, window: u64) -> Self {
        self.peer = Some((peer.clone(), window));
        self
    }

    pub fn flows(mut self, n: u16) -> Self {
        self.flows = n.max(1);
        self
    }
}

/// An IPv4/UDP datagram carrying MAGIC and a sequence number.
pub fn build(m: &mut Mbuf, src: [u8; 4], dst: [u8; 4], sport: u16, seq: u32) {
    let d = m.append(20 + 8 + 8).expect("room");
    d.fill(0);
    d[0] = 0x45;
    d[2..4].copy_from_slice(&36u16.to_be_bytes());
    d[8] = 64;
    d[9] = 17;
    d[12..16].copy_from_slice(&src);
    d[16..20].copy_from_slice(&dst);
    let mut sum = 0u32;
    for i in (0..20).step_by(2) {
        sum += u32::from(u16::from_be_bytes([d[i], d[i + 1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    d[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    d[20..22].copy_from_slice(&sport.to_be_bytes());
    d[22..24].copy_from_slice(&9000u16.to_be_bytes());
    d[24..26].copy_from_slice(&16u16.to_be_bytes());
    d[28..32].copy_from_slice(&MAGIC.to_be_bytes());
    d[32..36].copy_from_slice(&seq.to_be_bytes());
}

impl App for TestApp {
    fn on_burst(&mut self, _ctx: &LcoreCtx, rx: &mut MbufArray, _tx: &mut Tx) {
        for m in rx.as_slice() {
            let d = m.data();
            if d.len() >= 36 && d[0] == 0x45 && d[28..32] == MAGIC.to_be_bytes() {
                self.probe.received.inc();
                if m.meta().flags & ibpoll_mem::MBUF_F_MCAST != 0 {
                    self.probe.received_mcast.inc();
                }
            } else {
                self.probe.foreign.inc();
            }
        }
        // Consumed: freed here, not counted as left over.
        rx.clear();
    }

    fn poll(&mut self, _ctx: &LcoreCtx, tx: &mut Tx) -> bool {
        let Some(dest) = self.dest else { return false };
        if self.probe.halt.load(Ordering::Relaxed) {
            return false;
        }
        let budget = self.probe.budget.load(Ordering::Relaxed);
        let mut did = false;
        for _ in 0..self.per_iteration {
            if self.probe.sent.get() >= budget || tx.room(0) == 0 {
                break;
            }
            if let Some((peer, window)) = &self.peer {
                if self.probe.sent.get() >= peer.received.get() + window {
                    break;
                }
            }
            let Some(mut m) = tx.alloc() else {
                self.probe.nombuf.inc();
                break;
            };
            let sport = 10_000 + (self.seq % u32::from(self.flows)) as u16;
            build(&mut m, self.src, self.dst, sport, self.seq);
            self.seq += 1;
            self.probe.sent.inc();
            tx.push(0, m, dest);
            did = true;
        }
        did
    }
}

/// Polls `cond` every 5 ms until it holds; panics with `what` after `timeout`.
/// Starts `builder` with a [`TestApp`] per lcore that sends unicast datagrams from `src`
/// to `dst` (its next hop) into `probe`, keeping at most `window` of them in flight
/// towards `peer` (the other side's probe): so no receive ring overflows and every count
/// is exact.
pub fn start_unicast(
    builder: StackBuilder,
    probe: &Arc<Probe>,
    peer: &Arc<Probe>,
    (src, dst): ([u8; 4], [u8; 4]),
    window: u64,
) -> Stack {
    let (p, peer) = (probe.clone(), peer.clone());
    builder
        .start(move |_| {
            TestApp::new(p.clone(), src, dst, Some(Dest::NextHop(dst))).window(&peer, window)
        })
        .expect("the stack starts")
}

pub fn wait_for(what: &str, timeout: Duration, cond: impl FnMut() -> bool) {
    stack::wait_for_every(what, timeout, Duration::from_millis(5), cond);
}

/// Waits until `value` has not changed for `quiet`.
pub fn settle(mut value: impl FnMut() -> u64, quiet: Duration, timeout: Duration) {
    let start = Instant::now();
    let mut last = value();
    let mut since = Instant::now();
    while since.elapsed() < quiet {
        assert!(start.elapsed() < timeout, "counters never settled");
        std::thread::sleep(Duration::from_millis(10));
        let v = value();
        if v != last {
            last = v;
            since = Instant::now();
        }
    }
}

pub const T: Duration = Duration::from_secs(30);

/// The per-lcore conservation laws of `LcoreCounters`, for a stopped stack: receive and
/// send, and every burst the driver consumed was sent or counted as an error.
pub fn assert_conserved(r: &ibpoll::StopReport) {
    stack::assert_conserved(r);
    for (i, s) in r.lcores.iter().enumerate() {
        assert_eq!(s.tx_posted, s.driver_tx_completed, "lcore {i}: {s:?}");
    }
}
