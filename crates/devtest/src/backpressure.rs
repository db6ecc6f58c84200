//! [`Backpressure`]: a port whose send queues refuse part of what they are offered and
//! complete sends late, by seeded amounts, whatever driver is underneath; and a checker
//! of the address-handle precondition of [`Port::destroy_ah`].
//!
//! Each send queue of a QP created through the wrapper takes a seeded number of the
//! packets a burst offers (from `accept_min` to `accept_max`, never more than its free
//! room of `depth` sends taken and not completed), so that the caller's retry path runs.
//! It holds what it took: a send is handed to the driver's queue only after a seeded
//! delay of `delay_min` to `delay_max` ticks (a tick is one call of `tx_burst` or
//! `completed` on that queue), and completes when the driver completed it, in posting
//! order. `completed()` therefore lags by seeded amounts too, and never runs ahead of the
//! driver's.
//!
//! The checker: every send's address handle is recorded from the moment the wrapper takes
//! the send until it completes. Destroying a handle that a taken send still names, or
//! taking a send that names a destroyed handle, is a violation of the contract, counted
//! in [`AhViolations`]. The wrapper keeps the driver safe from both: it defers the
//! driver's `destroy_ah` until the last send naming the handle completed, and frees a
//! send naming a destroyed handle (it completes, in order, without reaching the driver).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use ibpoll_dev::{
    AddressHandle, AhAttr, Error, Parked, Port, TxCounters, TxDst, TxQueue, UdQp, UdQpConfig,
};
use ibpoll_mem::MbufArray;
use ibpoll_wire::{QKey, Qpn};

use crate::held::Held;
use crate::rng::SplitMix64;

/// How a [`Backpressure`] port's send queues behave. Build it with
/// [`BackpressureConfig::new`] and the setters.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackpressureConfig {
    /// Seeds every draw (each QP's queue draws from its own generator, seeded in QP
    /// creation order).
    pub seed: u64,
    /// The fewest sends one burst takes (when offered and when there is room).
    pub accept_min: usize,
    /// The most sends one burst takes.
    pub accept_max: usize,
    /// Sends taken and not yet completed, at most; `None`: the QP's `tx_ring_size`.
    pub depth: Option<usize>,
    /// The fewest ticks a send waits before it is handed to the driver.
    pub delay_min: u64,
    /// The most ticks a send waits.
    pub delay_max: u64,
}

impl BackpressureConfig {
    /// Bursts take 0 to 32 sends, the QP's ring size bounds what is held, and sends
    /// wait 0 to 4 ticks.
    pub fn new(seed: u64) -> BackpressureConfig {
        BackpressureConfig {
            seed,
            accept_min: 0,
            accept_max: 32,
            depth: None,
            delay_min: 0,
            delay_max: 4,
        }
    }

    /// Each burst takes from `min` to `max` of what it is offered.
    pub fn accept(mut self, min: usize, max: usize) -> BackpressureConfig {
        self.accept_min = min;
        self.accept_max = max.max(min);
        self
    }

    /// At most `depth` sends taken and not completed per queue.
    pub fn depth(mut self, depth: usize) -> BackpressureConfig {
        self.depth = Some(depth.max(1));
        self
    }

    /// Each send waits from `min` to `max` ticks before it goes to the driver.
    pub fn delay(mut self, min: u64, max: u64) -> BackpressureConfig {
        self.delay_min = min;
        self.delay_max = max.max(min);
        self
    }
}

/// Breaches of the address-handle precondition, counted since the wrapper was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AhViolations {
    /// `destroy_ah` of a handle that a send taken and not yet completed names.
    pub destroyed_in_flight: u64,
    /// Sends taken that name a handle already destroyed.
    pub sent_to_destroyed: u64,
}

impl AhViolations {
    /// Both kinds together.
    pub fn total(&self) -> u64 {
        self.destroyed_in_flight + self.sent_to_destroyed
    }
}

/// What the send queues did, summed over every queue of the port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackpressureStats {
    /// Sends offered to `tx_burst`.
    pub offered: u64,
    /// Sends taken.
    pub taken: u64,
    /// Sends completed (as the wrapper reported them).
    pub completed: u64,
}

/// Every live send's address handle, and the handles destroyed.
#[derive(Debug, Default)]
struct AhLedger {
    /// Sends taken and not completed, per handle (raw value).
    outstanding: HashMap<u32, u64>,
    /// Handles destroyed through this port and not handed out again by the driver.
    destroyed: HashSet<u32>,
    /// Destroyed while sends named them: the driver's destroy waits for the last one.
    deferred: HashSet<u32>,
    violations: AhViolations,
}

impl AhLedger {
    /// One send naming `ah` completed; true when a deferred destroy may now go ahead.
    fn complete(&mut self, ah: u32) -> bool {
        let Some(n) = self.outstanding.get_mut(&ah) else {
            return false;
        };
        *n -= 1;
        if *n > 0 {
            return false;
        }
        self.outstanding.remove(&ah);
        self.deferred.remove(&ah)
    }
}

/// State shared by the port and its queues.
#[derive(Debug)]
struct Shared {
    inner: Arc<dyn Port>,
    ledger: Mutex<AhLedger>,
    seeds: Mutex<SplitMix64>,
    offered: AtomicU64,
    taken: AtomicU64,
    completed: AtomicU64,
}

impl Shared {
    fn ledger(&self) -> MutexGuard<'_, AhLedger> {
        // The ledger is consistent at every unlock; a panic elsewhere does not spoil it.
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Destroys handles whose last send completed, at the driver.
    fn destroy_deferred(&self, ahs: &[u32]) {
        for &raw in ahs {
            // SAFETY: the last send naming this handle completed at the driver (the
            // ledger counted it down to zero), and the handle is marked destroyed, so
            // the wrapper passes no later send naming it to the driver.
            if let Err(e) = unsafe { self.inner.destroy_ah(AddressHandle::from_raw(raw)) } {
                tracing::warn!(ah = raw, error = %e, "backpressure: deferred destroy_ah failed");
            }
        }
    }
}

/// A port wrapper whose send queues refuse sends and complete them late (see the module
/// docs), and which checks the address-handle precondition.
#[derive(Debug)]
pub struct Backpressure {
    inner: Arc<dyn Port>,
    shared: Arc<Shared>,
    cfg: BackpressureConfig,
}

impl Backpressure {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Port>, cfg: BackpressureConfig) -> Arc<Backpressure> {
        Arc::new(Backpressure {
            shared: Arc::new(Shared {
                inner: inner.clone(),
                ledger: Mutex::new(AhLedger::default()),
                seeds: Mutex::new(SplitMix64::new(cfg.seed)),
                offered: AtomicU64::new(0),
                taken: AtomicU64::new(0),
                completed: AtomicU64::new(0),
            }),
            inner,
            cfg,
        })
    }

    /// The contract violations seen so far.
    pub fn violations(&self) -> AhViolations {
        self.shared.ledger().violations
    }

    /// Sends taken and not yet completed that name `ah`.
    pub fn outstanding(&self, ah: AddressHandle) -> u64 {
        let ledger = self.shared.ledger();
        ledger.outstanding.get(&ah.raw()).copied().unwrap_or(0)
    }

    /// What the send queues did so far.
    pub fn stats(&self) -> BackpressureStats {
        // Relaxed: statistics, read by tests after the queues' owners are done.
        BackpressureStats {
            offered: self.shared.offered.load(Ordering::Relaxed),
            taken: self.shared.taken.load(Ordering::Relaxed),
            completed: self.shared.completed.load(Ordering::Relaxed),
        }
    }
}

impl Port for Backpressure {
    ibpoll_dev::delegate_port!(inner: info, events, mcast, mad);

    fn create_ud_qp(&self, cfg: &UdQpConfig) -> Result<UdQp, Error> {
        let qp = self.shared.inner.create_ud_qp(cfg)?;
        let seed = self
            .shared
            .seeds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .next_u64();
        let depth = self.cfg.depth.unwrap_or(cfg.tx_ring_size as usize);
        let UdQp { qpn, rx, tx, .. } = qp;
        let tx = BackpressureTx {
            held: Held::new(tx, depth),
            shared: self.shared.clone(),
            cfg: self.cfg.clone(),
            rng: SplitMix64::new(seed),
            tick: 0,
            ready: Vec::new(),
            on_drop: DeferredDestroy {
                shared: self.shared.clone(),
                ahs: Vec::new(),
            },
        };
        Ok(UdQp::new(qpn, rx, Box::new(tx)))
    }

    fn set_qp_qkey(&self, qpn: Qpn, qkey: QKey) -> Result<(), Error> {
        self.shared.inner.set_qp_qkey(qpn, qkey)
    }

    fn move_qp_pkey_index(&self, parked: &Parked, pkey_index: u16) -> Result<usize, Error> {
        self.shared.inner.move_qp_pkey_index(parked, pkey_index)
    }

    fn create_ah(&self, attr: &AhAttr) -> Result<AddressHandle, Error> {
        let ah = self.shared.inner.create_ah(attr)?;
        // A driver may hand out a destroyed handle's value again: it is live now.
        self.shared.ledger().destroyed.remove(&ah.raw());
        Ok(ah)
    }

    unsafe fn destroy_ah(&self, ah: AddressHandle) -> Result<(), Error> {
        let raw = ah.raw();
        {
            let mut ledger = self.shared.ledger();
            if ledger.outstanding.get(&raw).is_some_and(|n| *n > 0) {
                ledger.violations.destroyed_in_flight += 1;
                tracing::warn!(
                    ah = raw,
                    in_flight = ledger.outstanding[&raw],
                    "backpressure: destroy_ah while sends naming it are not completed"
                );
                ledger.destroyed.insert(raw);
                ledger.deferred.insert(raw);
                return Ok(());
            }
        }
        // SAFETY: no send naming `ah` is held by this wrapper or in flight at the
        // driver (the ledger has none outstanding), and from here on the wrapper frees
        // every send naming it instead of passing it on.
        unsafe { self.shared.inner.destroy_ah(ah) }?;
        self.shared.ledger().destroyed.insert(raw);
        Ok(())
    }
}

/// A send queue that refuses and delays (see the module docs).
#[derive(Debug)]
struct BackpressureTx {
    held: Held,
    shared: Arc<Shared>,
    cfg: BackpressureConfig,
    rng: SplitMix64,
    /// Calls of `tx_burst` and `completed` so far.
    tick: u64,
    /// Handles whose deferred destroy may go ahead (reused buffer).
    ready: Vec<u32>,
    /// Destroys, once `held` (and with it the driver's queue) is gone, the handles
    /// whose last sends went with the queue. Declared after `held`: fields drop in
    /// order.
    on_drop: DeferredDestroy,
}

/// Deferred destroys to run when dropped.
#[derive(Debug)]
struct DeferredDestroy {
    shared: Arc<Shared>,
    ahs: Vec<u32>,
}

impl Drop for DeferredDestroy {
    fn drop(&mut self) {
        self.shared.destroy_deferred(&self.ahs);
    }
}

impl BackpressureTx {
    /// Hands on what is due and completes what the driver completed, counting each
    /// completion off its handle.
    fn advance(&mut self) -> u64 {
        self.held.pump(self.tick);
        let before = self.held.completed();
        let (shared, ready) = (&self.shared, &mut self.ready);
        let mut ledger = None;
        let done = self.held.poll(|dst| {
            let l = ledger.get_or_insert_with(|| shared.ledger());
            if l.complete(dst.ah.raw()) {
                ready.push(dst.ah.raw());
            }
        });
        drop(ledger);
        // Relaxed: statistics.
        shared.completed.fetch_add(done - before, Ordering::Relaxed);
        if !self.ready.is_empty() {
            self.shared.destroy_deferred(&self.ready);
            self.ready.clear();
        }
        done
    }
}

impl TxQueue for BackpressureTx {
    fn src_qpn(&self) -> Qpn {
        self.held.inner().src_qpn()
    }

    fn tx_burst(&mut self, pkts: &mut MbufArray, dst: &[TxDst]) -> usize {
        self.tick += 1;
        self.advance();
        let offered = pkts.len().min(dst.len());
        let drawn = self
            .rng
            .between(self.cfg.accept_min as u64, self.cfg.accept_max as u64);
        let k = offered.min(self.held.room()).min(drawn as usize);
        if k > 0 {
            let mut ledger = self.shared.ledger();
            for (m, d) in pkts.drain_front(k).zip(dst) {
                let bad = ledger.destroyed.contains(&d.ah.raw());
                if bad {
                    ledger.violations.sent_to_destroyed += 1;
                }
                *ledger.outstanding.entry(d.ah.raw()).or_insert(0) += 1;
                let delay = self.rng.between(self.cfg.delay_min, self.cfg.delay_max);
                self.held.take(m, *d, self.tick + delay, bad);
            }
        }
        // Relaxed: statistics.
        self.shared
            .offered
            .fetch_add(offered as u64, Ordering::Relaxed);
        self.shared.taken.fetch_add(k as u64, Ordering::Relaxed);
        // Sends due now (no delay drawn) go at once.
        self.held.pump(self.tick);
        k
    }

    fn completed(&mut self) -> u64 {
        self.tick += 1;
        self.advance()
    }

    fn counters(&self) -> Arc<TxCounters> {
        self.held.inner().counters()
    }
}

impl Drop for BackpressureTx {
    fn drop(&mut self) {
        // The queue's sends go with it (a destroyed QP flushes its send queue): none of
        // them names its handle any more. Deferred destroys of handles they held up run
        // after the driver's queue is gone (`on_drop`).
        let mut ledger = self.shared.ledger();
        for d in self.held.outstanding_dsts() {
            if ledger.complete(d.ah.raw()) {
                self.on_drop.ahs.push(d.ah.raw());
            }
        }
    }
}
