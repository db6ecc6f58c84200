//! A lane: one thread's share of the data path, on every interface: its receive queues,
//! its send queue and TX table, its snapshot readers and request rings, and its counters.
//! An lcore of the stack drives one; so can an application's own thread.
//!
//! One iteration ([`Lane::iteration`]):
//! 1. per interface: honour a park request of the control core (stop using that
//!    interface's queues and say so), report a quiescent point unless the TX table still
//!    holds packets resolved against the current snapshot, and read the link state;
//! 2. per interface: one receive burst from its queues (up to [`BURST_MAX`]), classified
//!    in place ([`classify_burst`]), spread by flow over the lanes when the stack fans
//!    out ([`Fanout`](crate::Fanout): lane 0 keeps its share) and handed to the
//!    application; then, on a worker lane of a fanning-out stack, one burst from its
//!    fan-out ring, to the application too;
//! 3. the application's generator hook;
//! 4. per interface: flush the TX table (one `tx_burst`), publish the send progress;
//! 5. free the iteration's drops in bulk and publish the iteration's counters (one store
//!    per counter that moved).
//!
//! No lock, allocation, system call or atomic read-modify-write happens per packet.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use ibpoll_dev::RxQueue;
use ibpoll_mem::MbufArray;

use crate::app::{App, LcoreCtx};
use crate::burst::{classify_burst, Own};
use crate::fanout::{classify_fanout_burst, fanin_burst, FanIn, FanOut};
use crate::lcore::Shared;
use crate::stats::LcoreCounters;
use crate::tx::{Tx, BURST_MAX};

/// The ack a lane leaves when it exits: it will never use its queues again.
pub(crate) const PARK_ACK_GONE: u64 = u64::MAX;

/// One interface's receive side on one lane.
#[derive(Debug)]
pub(crate) struct RxIface {
    /// The receive queues this lane polls (its own QP's, and a share of the interface
    /// QP's where the device spreads it).
    pub(crate) qs: Vec<Box<dyn RxQueue>>,
    /// Every QPN of the interface, to drop our own looped-back multicast; empty when the
    /// HCA blocks that loopback itself.
    pub(crate) own_qpns: Box<[u32]>,
    /// This lane's last acknowledged park request (0: none).
    park_acked: u64,
    /// The interface is parked this iteration.
    pub(crate) parked: bool,
    pub(crate) link_up: bool,
    pub(crate) mtu: usize,
    /// Fan-out on the lane that receives the interface's traffic: a ring to each other
    /// lane.
    pub(crate) fan_out: Option<FanOut>,
    /// Fan-out on a worker lane: the ring from the receiving lane (taken at stop).
    pub(crate) fan_in: Option<FanIn>,
}

impl RxIface {
    pub(crate) fn new(qs: Vec<Box<dyn RxQueue>>, own_qpns: Box<[u32]>) -> RxIface {
        RxIface {
            qs,
            own_qpns,
            park_acked: 0,
            parked: false,
            link_up: false,
            mtu: 0,
            fan_out: None,
            fan_in: None,
        }
    }
}

/// A lane: see the module docs.
#[derive(Debug)]
pub struct Lane {
    pub(crate) ctx: LcoreCtx,
    /// This lane's index among the stack's lanes (its park-ack slot).
    pub(crate) index: usize,
    pub(crate) rx: Vec<RxIface>,
    pub(crate) tx: Tx,
    burst: MbufArray,
    pub(crate) counters: Arc<LcoreCounters>,
    pub(crate) shared: Arc<Shared>,
    /// What an application driving the lane itself uses (its UDP sockets; see
    /// `lane_api`).
    pub(crate) ext: crate::lane_api::LaneExt,
}

impl Lane {
    pub(crate) fn new(
        ctx: LcoreCtx,
        index: usize,
        rx: Vec<RxIface>,
        tx: Tx,
        counters: Arc<LcoreCounters>,
        shared: Arc<Shared>,
    ) -> Lane {
        Lane {
            ctx,
            index,
            rx,
            tx,
            burst: MbufArray::with_capacity(BURST_MAX),
            counters,
            shared,
            ext: crate::lane_api::LaneExt::default(),
        }
    }

    /// Step 1: park requests, quiescent points, link state.
    #[inline]
    pub(crate) fn begin(&mut self, now: Instant) {
        let mut links_up = 0u64;
        for (i, (rx, tx)) in self.rx.iter_mut().zip(&mut self.tx.ifaces).enumerate() {
            let sh = &self.shared.ifaces[i];
            // Acquire: pairs with the Release stores of `park_seq` in
            // `CtlHost::park`/`unpark`: the control operation on our queues happened
            // before we see the request gone.
            let seq = sh.park_seq.load(Ordering::Acquire);
            rx.parked = seq & 1 == 1;
            tx.parked = rx.parked;
            if rx.parked {
                if rx.park_acked != seq {
                    // Release: pairs with the Acquire load in `CtlHost::parked`: our
                    // last use of the queues happens before the control operation.
                    sh.park_acks[self.index].store(seq, Ordering::Release);
                    rx.park_acked = seq;
                }
                self.tx.st.parked_iterations += 1;
            }
            if tx.queued() == 0 {
                tx.core.reader.quiescent();
            }
            let snap = tx.core.reader.get();
            rx.link_up = snap.link_up;
            rx.mtu = snap.mtu;
            if let Some(fan) = &mut rx.fan_out {
                fan.broadcast = snap.broadcast().map(|b| b.mgid);
            }
            links_up |= u64::from(snap.link_up) << i;
        }
        self.ctx.now = now;
        self.ctx.links_up = links_up;
    }

    /// Step 2 for interface `i`: one receive burst, classified, to the application.
    #[inline]
    fn rx_stage<A: App>(&mut self, i: usize, app: &mut A) -> bool {
        let rx = &mut self.rx[i];
        if rx.parked {
            return false;
        }
        for q in &mut rx.qs {
            if self.burst.is_full() {
                break;
            }
            q.rx_burst(&mut self.burst);
        }
        if self.burst.is_empty() {
            return false;
        }
        // Relaxed: see `IfShared::own_lid`.
        let lid = self.shared.ifaces[i].own_lid.load(Ordering::Relaxed) as u16;
        let own = (!rx.own_qpns.is_empty()).then_some(Own {
            lid,
            qpns: &rx.own_qpns,
        });
        let tx = &mut self.tx;
        let (pkts, requests) = (&mut self.burst, &mut tx.ifaces[i].core.requests);
        match &mut rx.fan_out {
            None => classify_burst(pkts, 0, own, requests, &mut tx.st, &mut tx.trash),
            Some(fan) => {
                classify_fanout_burst(pkts, 0, own, requests, &mut tx.st, &mut tx.trash, fan)
            }
        }
        self.deliver(i, app);
        true
    }

    /// Step 2 on a worker lane of a fanning-out stack, for interface `i`: one burst from
    /// the receiving lane's ring, to the application.
    #[inline]
    fn fanin_stage<A: App>(&mut self, i: usize, app: &mut A) -> bool {
        let rx = &mut self.rx[i];
        let Some(fan) = rx.fan_in.as_mut() else {
            return false;
        };
        if rx.parked {
            return false;
        }
        if fanin_burst(fan, &mut self.burst, &mut self.tx.st) == 0 {
            return false;
        }
        self.deliver(i, app);
        true
    }

    /// Hands the burst (received on interface `i`) to the application, and frees and
    /// counts what it left.
    #[inline]
    fn deliver<A: App>(&mut self, i: usize, app: &mut A) {
        if self.burst.is_empty() {
            return;
        }
        let rx = &self.rx[i];
        self.ctx.iface = i;
        self.ctx.link_up = rx.link_up;
        self.ctx.mtu = rx.mtu;
        app.on_burst(&self.ctx, &mut self.burst, &mut self.tx);
        let left = self.burst.len();
        if left > 0 {
            self.tx.st.app_dropped += left as u64;
            self.burst.clear();
        }
    }

    /// Steps 4 and 5.
    #[inline]
    pub(crate) fn end(&mut self) {
        let tx = &mut self.tx;
        for ifc in &mut tx.ifaces {
            if !ifc.parked {
                ifc.flush_end(&mut tx.st, &mut tx.trash);
            }
        }
        tx.trash.clear();
        tx.st.publish(&self.counters);
    }

    /// One iteration (see the module docs); whether it did any work.
    #[inline]
    pub fn iteration<A: App>(&mut self, app: &mut A, now: Instant) -> bool {
        self.begin(now);
        let mut worked = false;
        for i in 0..self.rx.len() {
            worked |= self.rx_stage(i, app);
            worked |= self.fanin_stage(i, app);
        }
        self.ctx.iface = 0;
        self.ctx.link_up = self.rx.first().is_some_and(|r| r.link_up);
        self.ctx.mtu = self.rx.first().map_or(0, |r| r.mtu);
        worked |= app.poll(&self.ctx, &mut self.tx);
        worked |= self.tx.ifaces.iter().any(|i| i.queued() > 0);
        self.end();
        worked
    }

    /// Takes every snapshot reader offline (nested) while `f` runs.
    pub(crate) fn offline_while(&mut self, f: &dyn Fn()) {
        fn nest(ifaces: &mut [crate::tx::TxIface], f: &dyn Fn()) {
            match ifaces.split_first_mut() {
                None => f(),
                Some((first, rest)) => first.core.reader.offline_while(|| nest(rest, f)),
            }
        }
        nest(&mut self.tx.ifaces, f);
    }

    /// At stop: frees what is queued, drains the receive queues (bounded) and the
    /// fan-out rings (see [`crate::fanout`]'s stop), and says to the control core that
    /// this lane's queues are out of use for good.
    pub(crate) fn drain(&mut self) {
        self.ext.finished = true;
        const STOP_DRAIN_BURSTS: usize = 4096;
        let mut queued = 0;
        for ifc in &mut self.tx.ifaces {
            queued += ifc.discard() as u64;
        }
        self.tx.st.stop_dropped_tx += queued;
        for rx in &mut self.rx {
            for q in &mut rx.qs {
                for _ in 0..STOP_DRAIN_BURSTS {
                    let n = q.rx_burst(&mut self.burst);
                    if n == 0 {
                        break;
                    }
                    let bytes: u64 = self.burst.as_slice().iter().map(|m| m.len() as u64).sum();
                    self.tx.st.rx_packets += n as u64;
                    self.tx.st.rx_bytes += bytes;
                    self.tx.st.stop_dropped_rx += n as u64;
                    self.burst.clear();
                }
            }
        }
        for rx in &mut self.rx {
            if let Some(fan) = rx.fan_in.take() {
                fan.finish(&mut self.tx.st);
            }
            if let Some(fan) = &mut rx.fan_out {
                fan.finish(&mut self.tx.st);
            }
        }
        for ifc in &mut self.tx.ifaces {
            ifc.in_flight();
        }
        self.tx.st.publish(&self.counters);
        for sh in self.shared.ifaces.iter() {
            // Release: pairs with the Acquire load in `CtlHost::parked`.
            sh.park_acks[self.index].store(PARK_ACK_GONE, Ordering::Release);
        }
    }
}
