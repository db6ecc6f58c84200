//! [`FaultInjector`]: seeded packet loss and reordering on a port's sends, and loss and
//! delay of the MADs on its channel to the subnet administrator, in front of any driver
//! (smoltcp's `phy::FaultInjector`, for the driver contract).
//!
//! Sends: each packet a send queue takes is lost with probability `packet_loss` (freed;
//! it completes, in order, without reaching the driver), and otherwise overtaken by the
//! next packet of the same burst with probability `packet_reorder`. Loss here drops the
//! whole send, every copy of a multicast one; the simulator's own fault injection
//! (`ibpoll-pmd-sim`'s `FaultConfig`) drops copies one receiver at a time.
//!
//! MADs: a request is lost before the driver sends it with probability
//! `mad_request_loss`; an answer is lost with probability `mad_answer_loss`, and
//! otherwise held back by a delay drawn from `mad_delay_min` to `mad_delay_max` on the
//! wrapper's clock (answers may overtake each other, as datagrams do).
//!
//! Every draw comes from a SplitMix64 generator seeded from `seed` (one per queue or
//! channel, in creation order), so a single-threaded run replays exactly.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ibpoll_dev::{
    Clock, Error, Mad, MadAddr, MadChannel, MonotonicClock, Nanos, Port, TxCounters, TxDst,
    TxQueue, UdQp, UdQpConfig,
};
use ibpoll_mem::MbufArray;
use ibpoll_wire::Qpn;

use crate::held::Held;
use crate::rng::SplitMix64;

/// What goes wrong, and how often (probabilities per event, 0.0 to 1.0). Build it with
/// [`FaultConfig::new`] (no faults) and set fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FaultConfig {
    /// Seeds every draw.
    pub seed: u64,
    /// A send is lost.
    pub packet_loss: f64,
    /// A send is overtaken by the next one of its burst.
    pub packet_reorder: f64,
    /// A MAD request is lost before the driver sends it.
    pub mad_request_loss: f64,
    /// A MAD answer is lost.
    pub mad_answer_loss: f64,
    /// The least a MAD answer is held back.
    pub mad_delay_min: Nanos,
    /// The most a MAD answer is held back (uniform between the two).
    pub mad_delay_max: Nanos,
    /// The clock MAD delays are measured on.
    pub clock: Arc<dyn Clock>,
}

impl FaultConfig {
    /// No faults, on the monotonic clock.
    pub fn new(seed: u64) -> FaultConfig {
        FaultConfig {
            seed,
            packet_loss: 0.0,
            packet_reorder: 0.0,
            mad_request_loss: 0.0,
            mad_answer_loss: 0.0,
            mad_delay_min: Nanos::ZERO,
            mad_delay_max: Nanos::ZERO,
            clock: Arc::new(MonotonicClock::new()),
        }
    }

    /// Sends are lost with probability `p`.
    pub fn packet_loss(mut self, p: f64) -> FaultConfig {
        self.packet_loss = p;
        self
    }

    /// Sends are overtaken by the next one with probability `p`.
    pub fn packet_reorder(mut self, p: f64) -> FaultConfig {
        self.packet_reorder = p;
        self
    }

    /// MAD requests and answers are lost with these probabilities.
    pub fn mad_loss(mut self, request: f64, answer: f64) -> FaultConfig {
        self.mad_request_loss = request;
        self.mad_answer_loss = answer;
        self
    }

    /// MAD answers are held back from `min` to `max`, measured on `clock`.
    pub fn mad_delay(mut self, min: Nanos, max: Nanos, clock: Arc<dyn Clock>) -> FaultConfig {
        self.mad_delay_min = min;
        self.mad_delay_max = max.max(min);
        self.clock = clock;
        self
    }
}

/// What the injector did, summed over the port's queues and channels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FaultStats {
    /// Sends taken.
    pub packets: u64,
    /// Sends lost.
    pub packets_lost: u64,
    /// Sends overtaken by the next one.
    pub packets_reordered: u64,
    /// MAD requests lost.
    pub mad_requests_lost: u64,
    /// MAD answers lost.
    pub mad_answers_lost: u64,
    /// MAD answers held back by a delay above zero.
    pub mad_answers_delayed: u64,
}

#[derive(Debug, Default)]
struct Counts {
    packets: AtomicU64,
    packets_lost: AtomicU64,
    packets_reordered: AtomicU64,
    mad_requests_lost: AtomicU64,
    mad_answers_lost: AtomicU64,
    mad_answers_delayed: AtomicU64,
}

/// Relaxed: statistics only; several queues add, tests read after they are done.
fn bump(c: &AtomicU64, n: u64) {
    if n > 0 {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

/// A port wrapper that loses and reorders sends and loses and delays MADs (see the
/// module docs).
#[derive(Debug)]
pub struct FaultInjector {
    inner: Arc<dyn Port>,
    cfg: FaultConfig,
    seeds: Mutex<SplitMix64>,
    counts: Arc<Counts>,
}

impl FaultInjector {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Port>, cfg: FaultConfig) -> Arc<FaultInjector> {
        Arc::new(FaultInjector {
            inner,
            seeds: Mutex::new(SplitMix64::new(cfg.seed)),
            cfg,
            counts: Arc::default(),
        })
    }

    /// What the injector did so far.
    pub fn stats(&self) -> FaultStats {
        let c = &*self.counts;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        FaultStats {
            packets: get(&c.packets),
            packets_lost: get(&c.packets_lost),
            packets_reordered: get(&c.packets_reordered),
            mad_requests_lost: get(&c.mad_requests_lost),
            mad_answers_lost: get(&c.mad_answers_lost),
            mad_answers_delayed: get(&c.mad_answers_delayed),
        }
    }

    fn next_seed(&self) -> u64 {
        self.seeds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .next_u64()
    }
}

impl Port for FaultInjector {
    ibpoll_dev::delegate_port!(inner: info, events, ah, mcast);

    fn create_ud_qp(&self, cfg: &UdQpConfig) -> Result<UdQp, Error> {
        let UdQp { qpn, rx, tx, .. } = self.inner.create_ud_qp(cfg)?;
        let tx = FaultTx {
            held: Held::new(tx, cfg.tx_ring_size as usize),
            cfg: self.cfg.clone(),
            rng: SplitMix64::new(self.next_seed()),
            counts: self.counts.clone(),
        };
        Ok(UdQp::new(qpn, rx, Box::new(tx)))
    }

    fn set_qp_qkey(&self, qpn: Qpn, qkey: ibpoll_wire::QKey) -> Result<(), Error> {
        self.inner.set_qp_qkey(qpn, qkey)
    }

    fn move_qp_pkey_index(&self, parked: &ibpoll_dev::Parked, index: u16) -> Result<usize, Error> {
        self.inner.move_qp_pkey_index(parked, index)
    }

    fn open_mad_channel(&self) -> Result<Box<dyn MadChannel>, Error> {
        Ok(Box::new(FaultMad {
            inner: self.inner.open_mad_channel()?,
            cfg: self.cfg.clone(),
            rng: SplitMix64::new(self.next_seed()),
            counts: self.counts.clone(),
            pending: VecDeque::new(),
            arrivals: 0,
        }))
    }
}

/// A send queue that loses and reorders.
#[derive(Debug)]
struct FaultTx {
    held: Held,
    cfg: FaultConfig,
    rng: SplitMix64,
    counts: Arc<Counts>,
}

impl TxQueue for FaultTx {
    fn src_qpn(&self) -> Qpn {
        self.held.inner().src_qpn()
    }

    fn tx_burst(&mut self, pkts: &mut MbufArray, dst: &[TxDst]) -> usize {
        self.held.poll(|_| {});
        let k = pkts.len().min(dst.len()).min(self.held.room());
        let (mut lost, mut reordered) = (0, 0);
        // A packet drawn for reordering waits here until the next one was taken.
        let mut overtaken = None;
        for (m, d) in pkts.drain_front(k).zip(dst) {
            if self.rng.chance(self.cfg.packet_loss) {
                lost += 1;
                self.held.take(m, *d, 0, true);
                continue;
            }
            if overtaken.is_none() && self.rng.chance(self.cfg.packet_reorder) {
                overtaken = Some((m, *d));
                continue;
            }
            self.held.take(m, *d, 0, false);
            if let Some((m, d)) = overtaken.take() {
                reordered += 1;
                self.held.take(m, d, 0, false);
            }
        }
        if let Some((m, d)) = overtaken {
            // Nothing came after it in this burst: it goes last, in place.
            self.held.take(m, d, 0, false);
        }
        bump(&self.counts.packets, k as u64);
        bump(&self.counts.packets_lost, lost);
        bump(&self.counts.packets_reordered, reordered);
        self.held.pump(0);
        k
    }

    fn completed(&mut self) -> u64 {
        self.held.pump(0);
        self.held.poll(|_| {})
    }

    fn counters(&self) -> Arc<TxCounters> {
        self.held.inner().counters()
    }
}

/// A MAD channel that loses requests and loses or delays answers.
#[derive(Debug)]
struct FaultMad {
    inner: Box<dyn MadChannel>,
    cfg: FaultConfig,
    rng: SplitMix64,
    counts: Arc<Counts>,
    /// Answers held back: (due, arrival number, answer), sorted by (due, arrival).
    pending: VecDeque<(Nanos, u64, Mad, MadAddr)>,
    /// Answers received from the driver so far.
    arrivals: u64,
}

impl MadChannel for FaultMad {
    fn send(&mut self, mad: &Mad, to: MadAddr) -> Result<(), Error> {
        if self.rng.chance(self.cfg.mad_request_loss) {
            bump(&self.counts.mad_requests_lost, 1);
            return Ok(());
        }
        self.inner.send(mad, to)
    }

    fn recv(&mut self) -> Option<(Mad, MadAddr)> {
        let now = self.cfg.clock.now();
        while let Some((mad, from)) = self.inner.recv() {
            if self.rng.chance(self.cfg.mad_answer_loss) {
                bump(&self.counts.mad_answers_lost, 1);
                continue;
            }
            let (lo, hi) = (self.cfg.mad_delay_min.0, self.cfg.mad_delay_max.0);
            let delay = Nanos(self.rng.between(lo, hi));
            if delay > Nanos::ZERO {
                bump(&self.counts.mad_answers_delayed, 1);
            }
            self.arrivals += 1;
            let key = (now.saturating_add(delay), self.arrivals);
            let at = self.pending.partition_point(|p| (p.0, p.1) <= key);
            self.pending.insert(at, (key.0, key.1, mad, from));
        }
        match self.pending.front() {
            Some(p) if p.0 <= now => self.pending.pop_front().map(|p| (p.2, p.3)),
            _ => None,
        }
    }
}
