//! A lane driven by the application's own loop (SPDK's `spdk_thread_poll`): the
//! application owns the thread and calls the lane, either one whole iteration at a
//! time ([`Lane::poll`]) or step by step ([`Lane::quiescent`], [`Lane::rx_burst`],
//! [`Lane::tx`], [`Lane::flush`]).
//!
//! # The contract
//!
//! - One thread drives a lane at a time (a `Lane` is `Send`, not `Sync`).
//! - Call [`Lane::quiescent`] (or [`Lane::poll`], which does) once per loop iteration,
//!   and at least every few milliseconds: it is the lane's quiescent point for the
//!   control plane's snapshots (an old snapshot, and the address handles it names, are
//!   freed only after every lane passed one) and where it answers a park request (a
//!   P_Key change moves the QPs only once every lane stopped using them). A lane that
//!   will not be called for a while (the application blocks or sleeps) goes
//!   [`offline`](Lane::offline) meanwhile, holding nothing back.
//! - Call [`Lane::flush`] (or `poll`) when done pushing: it sends what the TX tables
//!   hold, frees the iteration's drops and publishes the lane's counters.
//! - The first call registers the thread as an lcore of the buffer pools
//!   (`ibpoll_mem::register_lcore`, the first free id), so its allocations and frees go
//!   through a per-lcore cache without locks; the registration lasts until the thread
//!   exits. A thread that registered itself already keeps its id.
//! - When [`Lane::stopping`] turns true (the control poller saw the stop flag and the
//!   flush ended), the application calls [`Lane::finish`]: the lane frees what it holds,
//!   drains its receive queues and tells the control core it is gone. Dropping a lane
//!   does the same.

use std::cell::RefCell;
use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;
use std::time::Instant;

use ibpoll_mem::MbufArray;

use crate::app::{App, LcoreCtx};
use crate::burst::{classify_burst, Own};
use crate::fanout::{classify_fanout_burst, fanin_burst};
use crate::lane::RxIface;
use crate::lcore::Shared;
use crate::stats::LcoreStats;
use crate::tx::{Tx, BURST_MAX};
use crate::udp::UdpTable;
use crate::Lane;

/// What the application-driven API keeps in a lane.
#[derive(Debug)]
pub(crate) struct LaneExt {
    /// The burst `poll` receives into.
    burst: MbufArray,
    /// The lane's UDP sockets.
    pub(crate) udp: UdpTable,
    /// The lane was drained (`finish`, the drop, or its lcore's stop).
    pub(crate) finished: bool,
}

impl Default for LaneExt {
    fn default() -> Self {
        LaneExt {
            burst: MbufArray::with_capacity(BURST_MAX),
            udp: UdpTable::default(),
            finished: false,
        }
    }
}

impl LaneExt {
    /// The lane's interfaces' IPv4 addresses (the sockets' source addresses).
    pub(crate) fn set_addrs(&mut self, addrs: Vec<Option<Ipv4Addr>>) {
        self.udp.set_addrs(addrs);
    }
}

thread_local! {
    /// The lcore id a lane registered for this thread (dropped, so given back, when the
    /// thread exits: `LcoreGuard` flushes the thread's caches on the thread itself).
    static LANE_LCORE: RefCell<Option<ibpoll_mem::LcoreGuard>> = const { RefCell::new(None) };
}

/// Registers the calling thread as an lcore of the buffer pools unless it is one.
#[inline]
fn ensure_lcore() {
    if ibpoll_mem::current_lcore().is_some() {
        return;
    }
    let guard = crate::setup::register_lcore("application lane");
    LANE_LCORE.with(|g| *g.borrow_mut() = guard);
}

impl Lane {
    /// This lane's index among the stack's lanes (`0..data_cores`).
    pub fn index(&self) -> usize {
        self.index
    }

    /// Interfaces of the stack.
    pub fn ifaces(&self) -> usize {
        self.rx.len()
    }

    /// What an application callback would see: the lane's index, the interfaces' link
    /// state and MTU as of the last [`quiescent`](Self::quiescent) point.
    pub fn ctx(&self) -> &LcoreCtx {
        &self.ctx
    }

    /// Whether interface `iface`'s link was up at the last quiescent point.
    pub fn link_up(&self, iface: usize) -> bool {
        self.rx.get(iface).is_some_and(|r| r.link_up)
    }

    /// Interface `iface`'s MTU (the largest IP packet) at the last quiescent point; 0
    /// before the link first came up.
    pub fn mtu(&self, iface: usize) -> usize {
        self.rx.get(iface).map_or(0, |r| r.mtu)
    }

    /// One iteration, `spdk_thread_poll` style: the quiescent point, one receive burst
    /// per interface (UDP datagrams for bound sockets to their queues, the rest to
    /// `app.on_burst`), `app.poll`, the flush of every TX table. Whether it did any
    /// work.
    ///
    /// ```no_run
    /// # let fabric = ibpoll::SimFabric::new(ibpoll::FabricConfig::default());
    /// use ibpoll::{Discard, Stack};
    /// let (_stack, mut control, mut lanes) = Stack::builder()
    ///     .fabric(&fabric, "a")
    ///     .data_cores(1)
    ///     .build()?
    ///     .split();
    /// let mut lane = lanes.pop().unwrap();
    /// // One thread drives both here; control and lanes may run on different threads.
    /// while !lane.link_up(0) {
    ///     control.poll();
    ///     lane.poll(&mut Discard);
    /// }
    /// control.request_stop();
    /// while !lane.stopping() {
    ///     control.poll();
    ///     lane.poll(&mut Discard);
    /// }
    /// let counters = lane.finish();
    /// let report = control.finish();
    /// assert!(report.flushed);
    /// # let _ = counters;
    /// # Ok::<(), ibpoll::Error>(())
    /// ```
    pub fn poll<A: App>(&mut self, app: &mut A) -> bool {
        self.quiescent();
        let mut worked = false;
        let Lane {
            ctx,
            rx,
            tx,
            shared,
            ext,
            ..
        } = self;
        for (i, r) in rx.iter_mut().enumerate() {
            let burst = &mut ext.burst;
            // The queues' burst, then (a worker of a fanning-out stack) the ring's.
            for from_ring in [false, true] {
                worked |= if from_ring {
                    fanin_into(i, r, tx, &mut ext.udp, burst)
                } else {
                    rx_into(i, r, shared, tx, &mut ext.udp, burst)
                };
                if !burst.is_empty() {
                    ctx.iface = i;
                    ctx.link_up = r.link_up;
                    ctx.mtu = r.mtu;
                    app.on_burst(ctx, burst, tx);
                    let left = burst.len();
                    if left > 0 {
                        tx.st.app_dropped += left as u64;
                        burst.clear();
                    }
                }
            }
        }
        ctx.iface = 0;
        ctx.link_up = rx.first().is_some_and(|r| r.link_up);
        ctx.mtu = rx.first().map_or(0, |r| r.mtu);
        worked |= app.poll(ctx, tx);
        worked |= tx.ifaces.iter().any(|i| i.queued() > 0);
        self.flush();
        worked
    }

    /// The start of an iteration: registers the thread with the pools on first use,
    /// answers park requests, passes a quiescent point (unless a TX table still holds
    /// packets resolved against the current snapshot), reads every interface's link
    /// state, and sends subscription changes that waited for room in the request ring.
    #[inline]
    pub fn quiescent(&mut self) {
        ensure_lcore();
        self.begin(Instant::now());
        self.retry_unsubscribes();
    }

    /// Receives one burst on interface `iface` (up to [`BURST_MAX`], as `out` has room):
    /// packets classified (our own looped-back multicast dropped, ARP to the control
    /// core), UDP datagrams for this lane's bound sockets moved to their queues, and the
    /// other IP packets appended to `out`, data window at the IP header. Returns how many
    /// were appended. Nothing is received while the interface is parked.
    ///
    /// With [`Fanout`](crate::Fanout) on, the receiving lane (0) keeps only the flows it
    /// owns and hands the others over; a worker lane takes what was handed to it first
    /// (its ring), then receives on its own queues into the room left. A lane's UDP
    /// sockets then see the flows that lane owns (and the groups on its own QP).
    ///
    /// ```no_run
    /// use ibpoll::{Dest, FabricConfig, MbufArray, SimFabric, Stack};
    /// let fabric = SimFabric::new(FabricConfig::default());
    /// let (_stack, mut control, mut lanes) = Stack::builder()
    ///     .fabric(&fabric, "fwd")
    ///     .ipv4([10, 0, 0, 1])
    ///     .data_cores(1)
    ///     .build()?
    ///     .split();
    /// let lane = &mut lanes[0];
    /// let mut burst = MbufArray::with_capacity(32);
    /// // The finer steps of one iteration: a forwarder back to 10.0.0.2.
    /// loop {
    ///     control.poll();
    ///     lane.quiescent();
    ///     lane.rx_burst(0, &mut burst);
    ///     let n = burst.len();
    ///     for m in burst.drain_front(n) {
    ///         lane.tx().push(0, m, Dest::NextHop([10, 0, 0, 2]));
    ///     }
    ///     lane.flush();
    ///     if lane.stopping() {
    ///         break;
    ///     }
    /// }
    /// # Ok::<(), ibpoll::Error>(())
    /// ```
    pub fn rx_burst(&mut self, iface: usize, out: &mut MbufArray) -> usize {
        let before = out.len();
        let Lane {
            rx,
            tx,
            shared,
            ext,
            ..
        } = self;
        if let Some(r) = rx.get_mut(iface) {
            fanin_into(iface, r, tx, &mut ext.udp, out);
            rx_into(iface, r, shared, tx, &mut ext.udp, out);
        }
        out.len() - before
    }

    /// The lane's send side: push packets (data window at the IP header) to any
    /// interface.
    pub fn tx(&mut self) -> &mut Tx {
        &mut self.tx
    }

    /// The end of an iteration: one `tx_burst` per TX table that holds packets (what the
    /// queue refuses is retried at the next flushes, then counted `tx_full`), the send
    /// progress published for the control core, the iteration's drops freed in bulk and
    /// its counters published.
    #[inline]
    pub fn flush(&mut self) {
        self.end();
    }

    /// Runs `f` with the lane offline for the snapshot protocol: the control plane does
    /// not wait for it meanwhile. For an application that blocks or sleeps between
    /// polls. The lane must not be used inside `f` (it is borrowed).
    pub fn offline<R>(&mut self, f: impl FnOnce() -> R) -> R {
        fn nest<R>(ifaces: &mut [crate::tx::TxIface], f: &mut Option<impl FnOnce() -> R>) -> R {
            match ifaces.split_first_mut() {
                None => (f.take().expect("called once"))(),
                Some((first, rest)) => first.core.reader.offline_while(|| nest(rest, f)),
            }
        }
        nest(&mut self.tx.ifaces, &mut Some(f))
    }

    /// Whether the stack is stopping: the control poller saw the stop flag and the flush
    /// ended (or [`Stack::stop`](crate::Stack::stop) ran). Then [`finish`](Self::finish)
    /// the lane.
    pub fn stopping(&self) -> bool {
        // Relaxed: see `Shared::stop`; what the lane does next needs no ordering.
        self.shared.stop.load(Ordering::Relaxed)
    }

    /// The lane's counters so far (published at each flush), with its queues' driver
    /// counters and what the control core dropped of the packets it handed over.
    pub fn stats(&self) -> LcoreStats {
        let mut s = self.counters.read();
        for r in &self.rx {
            for q in &r.qs {
                let c = q.counters();
                s.driver_rx_nombuf += c.nombuf.get();
                s.driver_rx_flushed += c.flushed.get();
            }
        }
        for t in &self.tx.ifaces {
            let c = t.counters();
            s.driver_tx_completed += c.completed.get();
            s.driver_tx_errors += c.errors.get();
            s.ctrl_resolve_dropped += t.core.drops.resolve.get();
            s.ctrl_mcast_dropped += t.core.drops.mcast.get();
        }
        s
    }

    /// Ends the lane: frees what its TX tables and sockets hold, drains its receive
    /// queues (counted as stop drops) and tells the control core the lane is gone for
    /// good; returns its final counters.
    pub fn finish(mut self) -> LcoreStats {
        self.finish_once();
        self.stats()
    }

    fn finish_once(&mut self) {
        if !self.ext.finished {
            self.ext.udp = crate::udp::UdpTable::default();
            self.drain();
        }
    }
}

/// Receives one burst on interface `i` (`rx`) into `out` and classifies it; UDP
/// datagrams for bound sockets go to their queues. Mirrors the receive stage of
/// [`Lane::iteration`]. Whether anything arrived.
#[inline]
fn rx_into(
    i: usize,
    rx: &mut RxIface,
    shared: &Shared,
    tx: &mut Tx,
    udp: &mut UdpTable,
    out: &mut MbufArray,
) -> bool {
    if rx.parked {
        return false;
    }
    let start = out.len();
    for q in &mut rx.qs {
        if out.is_full() {
            break;
        }
        q.rx_burst(out);
    }
    if out.len() == start {
        return false;
    }
    // Relaxed: see `IfShared::own_lid`.
    let lid = shared.ifaces[i].own_lid.load(Ordering::Relaxed) as u16;
    let own = (!rx.own_qpns.is_empty()).then_some(Own {
        lid,
        qpns: &rx.own_qpns,
    });
    let requests = &mut tx.ifaces[i].core.requests;
    match &mut rx.fan_out {
        None => classify_burst(out, start, own, requests, &mut tx.st, &mut tx.trash),
        Some(fan) => {
            classify_fanout_burst(out, start, own, requests, &mut tx.st, &mut tx.trash, fan)
        }
    }
    udp.demux(i, out, start);
    true
}

/// On a worker lane of a fanning-out stack: takes what the receiving lane handed over
/// on interface `i` into `out` (as it has room); UDP datagrams for bound sockets go to
/// their queues. Mirrors the fan-in stage of [`Lane::iteration`]. Whether anything came.
#[inline]
fn fanin_into(
    i: usize,
    rx: &mut RxIface,
    tx: &mut Tx,
    udp: &mut UdpTable,
    out: &mut MbufArray,
) -> bool {
    let Some(fan) = rx.fan_in.as_mut() else {
        return false;
    };
    if rx.parked {
        return false;
    }
    let start = out.len();
    if fanin_burst(fan, out, &mut tx.st) == 0 {
        return false;
    }
    udp.demux(i, out, start);
    true
}

impl Drop for Lane {
    fn drop(&mut self) {
        self.finish_once();
    }
}
