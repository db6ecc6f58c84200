//! The lcores' loops: a data lcore's per-iteration pipeline, and the control core
//! (hosted on its own lcore or on data lcore 0).
//!
//! Per iteration a data lcore: reports a quiescent point; runs the controller when it
//! hosts it (a bounded poll plus at most [`COMMANDS_PER_ITERATION`] control messages);
//! receives up to [`BURST_MAX`] packets per queue, classifies them and hands IP packets
//! to the application; lets the application generate; resolves every queued packet
//! against one snapshot (each destination is looked up once per burst, see
//! [`burst::Resolver`](crate::burst::Resolver)); sends them in one `tx_burst`; and
//! adds the iteration's time to the busy or idle counter. None of this takes a lock, allocates, makes a system call
//! or does an atomic read-modify-write per packet (the time is read once per iteration).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::queue::ArrayQueue;
use ibpoll_ctrl::{Controller, CtrlEvent, CtrlStats, DataCore, Poll, Request};
use ibpoll_dev::{Port, RxQueue, TxDesc, TxQueue};
use ibpoll_mem::{Mbuf, MBUF_F_MCAST};
use ibpoll_wire::ipoib;
use ibpoll_wire::Qpn;

use crate::app::{App, Dest, LcoreCtx, TxBuffer};
use crate::burst::{classify, Class, Resolver};
use crate::stats::LcoreCounters;

/// Packets received per `rx_burst`.
pub const BURST_MAX: usize = 32;
/// Packets an application may queue per iteration (its [`TxBuffer`]'s capacity).
pub const TX_BUFFER_MAX: usize = 2 * BURST_MAX;
/// Times a packet is offered to `tx_burst` before it is dropped (`tx_full`).
pub const TX_TRIES: u8 = 4;
/// Control messages (commands from the [`Stack`](crate::Stack) handle) run per iteration
/// by the lcore that hosts the controller.
pub const COMMANDS_PER_ITERATION: usize = 8;
/// Slots of the command queue to the control core.
pub(crate) const COMMANDS_MAX: usize = 64;
/// Receive bursts drained at stop, per queue (bounds the stop).
const STOP_DRAIN_BURSTS: usize = 4096;

/// A control message: runs on the control core with the controller.
pub(crate) type Command = Box<dyn FnOnce(&mut Controller) + Send>;

/// What a data lcore does when an iteration found nothing to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdlePolicy {
    /// Spin (DPDK's default): lowest latency, one CPU at 100 %.
    #[default]
    Spin,
    /// After `after` idle iterations in a row, yield the CPU once per idle iteration.
    Yield {
        /// Idle iterations before yielding.
        after: u32,
    },
    /// After `after` idle iterations in a row, sleep `sleep` per idle iteration (the
    /// lcore goes offline for the snapshot protocol while asleep, holding nothing back).
    Sleep {
        /// Idle iterations before sleeping.
        after: u32,
        /// How long to sleep.
        sleep: Duration,
    },
}

/// State shared by the lcores and the [`Stack`](crate::Stack) handle. Nothing here is
/// written per packet.
pub(crate) struct Shared {
    /// Set once by `Stack::stop`; every lcore loads it (Relaxed) once per iteration. The
    /// lcores' exit is synchronised by `JoinHandle::join`, not by this flag.
    pub(crate) stop: AtomicBool,
    /// Per interface: what its controller shares with the data lcores and the handle.
    pub(crate) ifaces: Box<[IfShared]>,
}

/// What one interface's control core shares.
pub(crate) struct IfShared {
    /// The port's LID, to recognise our own looped-back multicast. Written by the
    /// control core when the link comes up (a LID change flushes the link), read
    /// (Relaxed) once per burst by the data lcores: it orders nothing.
    pub(crate) own_lid: AtomicU32,
    /// Commands for the control core (bounded; the producer waits when it is full).
    pub(crate) commands: ArrayQueue<Command>,
    /// Cleared (Release) by the control core when it stops; loaded (Acquire) by a
    /// command's sender, to stop waiting for an answer that cannot come.
    pub(crate) ctl_alive: AtomicBool,
}

impl IfShared {
    pub(crate) fn new(lid: u16) -> IfShared {
        IfShared {
            own_lid: AtomicU32::new(u32::from(lid)),
            commands: ArrayQueue::new(COMMANDS_MAX),
            ctl_alive: AtomicBool::new(true),
        }
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("stop", &self.stop)
            .field("ifaces", &self.ifaces)
            .finish()
    }
}

impl std::fmt::Debug for IfShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IfShared")
            .field("own_lid", &self.own_lid)
            .field("commands", &self.commands.len())
            .field("ctl_alive", &self.ctl_alive)
            .finish()
    }
}

/// The controller and what it needs to run, on whichever lcore hosts it.
#[derive(Debug)]
pub(crate) struct CtlHost {
    pub(crate) ctl: Controller,
    pub(crate) port: Arc<dyn Port>,
    pub(crate) shared: Arc<Shared>,
    /// The interface this controller serves.
    pub(crate) iface: usize,
}

impl CtlHost {
    /// One bounded round: the controller's poll, up to `COMMANDS_PER_ITERATION`
    /// commands, and its events. Whether anything was done.
    pub(crate) fn poll(&mut self) -> bool {
        let shared = &self.shared.ifaces[self.iface];
        let mut busy = self.ctl.poll() == Poll::Busy;
        for _ in 0..COMMANDS_PER_ITERATION {
            let Some(cmd) = shared.commands.pop() else {
                break;
            };
            cmd(&mut self.ctl);
            busy = true;
        }
        while let Some(ev) = self.ctl.take_event() {
            busy = true;
            match ev {
                CtrlEvent::LinkUp => {
                    let lid = self.port.attr().lid.0;
                    shared.own_lid.store(u32::from(lid), Ordering::Relaxed);
                    tracing::info!(lid, iface = self.iface, "ibpoll: link up");
                }
                CtrlEvent::LinkDown => tracing::info!(iface = self.iface, "ibpoll: link down"),
                CtrlEvent::RebuildQp { pkey_index } => {
                    // The heavy flush left every group (no attachment remains) and the
                    // link is down; the QP takes the partition's new P_Key index in
                    // place (the kernel's ipoib_ib_dev_open), keeping its QPN and the
                    // data lcores' queues. The rejoin that follows brings the link up.
                    let qpn = self.ctl.hwaddr().qpn();
                    match self.port.set_qp_pkey_index(qpn, pkey_index) {
                        Ok(()) => tracing::info!(
                            pkey_index,
                            iface = self.iface,
                            "ibpoll: P_Key table changed; the UD QP moved to the new index"
                        ),
                        Err(e) => {
                            // A QP left in another partition must carry nothing: the
                            // interface goes administratively down (no rejoin).
                            self.ctl.set_admin_up(false);
                            tracing::error!(
                                pkey_index,
                                iface = self.iface,
                                error = %e,
                                "ibpoll: P_Key table changed and the UD QP could not \
                                 follow; the interface is set down"
                            );
                        }
                    }
                }
            }
        }
        busy
    }

    /// Stops hosting: says so to command senders and returns the final counters.
    pub(crate) fn finish(mut self) -> (usize, CtrlStats) {
        let shared = &self.shared.ifaces[self.iface];
        // Run the commands still queued so that their senders get an answer; one that
        // comes later finds `ctl_alive` false and stops waiting.
        while let Some(cmd) = shared.commands.pop() {
            cmd(&mut self.ctl);
        }
        let stats = self.ctl.stats();
        // Release: pairs with the Acquire in `Stack::with_controller_on`.
        shared.ctl_alive.store(false, Ordering::Release);
        (self.iface, stats)
    }
}

/// Tracks idle iterations and applies the [`IdlePolicy`].
#[derive(Debug)]
pub(crate) struct Idler {
    policy: IdlePolicy,
    streak: u32,
}

impl Idler {
    pub(crate) fn new(policy: IdlePolicy) -> Idler {
        Idler { policy, streak: 0 }
    }

    /// Called after every iteration. Returns whether it gave the CPU away.
    #[inline]
    pub(crate) fn after(&mut self, worked: bool, offline: impl FnOnce(&dyn Fn())) -> bool {
        if worked {
            self.streak = 0;
            return false;
        }
        self.streak = self.streak.saturating_add(1);
        match self.policy {
            IdlePolicy::Spin => {
                std::hint::spin_loop();
                false
            }
            IdlePolicy::Yield { after } if self.streak > after => {
                std::thread::yield_now();
                true
            }
            IdlePolicy::Sleep { after, sleep } if self.streak > after => {
                offline(&|| std::thread::sleep(sleep));
                true
            }
            _ => {
                std::hint::spin_loop();
                false
            }
        }
    }
}

/// The control core on its own lcore: every interface's controller in turn.
pub(crate) fn run_control(
    mut hosts: Vec<CtlHost>,
    shared: Arc<Shared>,
    idle: IdlePolicy,
) -> Vec<(usize, CtrlStats)> {
    let mut idler = Idler::new(idle);
    // Relaxed: see `Shared::stop`.
    while !shared.stop.load(Ordering::Relaxed) {
        let mut worked = false;
        for h in &mut hosts {
            worked |= h.poll();
        }
        idler.after(worked, |f| f());
    }
    hosts.into_iter().map(CtlHost::finish).collect()
}

/// A packet on its way out: where it goes and how often it was offered.
#[derive(Debug, Clone, Copy)]
struct Pending {
    dest: Dest,
    tries: u8,
}

/// One data lcore: its queues, its side of the control plane, its application.
#[derive(Debug)]
pub(crate) struct DataLcore<A> {
    pub(crate) ctx: LcoreCtx,
    /// Per interface: this lcore's queues and its side of that interface's control plane.
    ifaces: Vec<LcoreIface>,
    /// The controllers this lcore hosts (all of them on data lcore 0 when the control
    /// core is not dedicated; none elsewhere).
    ctl: Vec<CtlHost>,
    pub(crate) app: A,
    pub(crate) counters: Arc<LcoreCounters>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) idle: IdlePolicy,
    ctl_interval: Duration,
    ctl_next: Instant,
    rx_pkts: [Option<Mbuf>; BURST_MAX],
    app_pkts: [Option<Mbuf>; BURST_MAX],
    txbuf: TxBuffer,
}

/// One interface as seen by one data lcore.
#[derive(Debug)]
struct LcoreIface {
    rx: Box<dyn RxQueue>,
    tx: Box<dyn TxQueue>,
    core: DataCore,
    qpn: Qpn,
    /// Link state and MTU from this iteration's snapshot.
    link_up: bool,
    mtu: usize,
    /// Packets the send queue handed back, offered again next iteration (resolved again
    /// against that iteration's snapshot: a descriptor never outlives the snapshot its
    /// address handle came from).
    retry: Vec<(Mbuf, Pending)>,
    descs: Vec<TxDesc>,
    pending: Vec<Pending>,
}

/// One interface's part of a data lcore, before its buffers are allocated.
pub(crate) struct LcoreIfaceParts {
    pub(crate) rx: Box<dyn RxQueue>,
    pub(crate) tx: Box<dyn TxQueue>,
    pub(crate) core: DataCore,
    pub(crate) qpn: Qpn,
}

/// Everything a data lcore is made of, before its buffers are allocated.
pub(crate) struct DataLcoreParts<A> {
    pub(crate) ctx: LcoreCtx,
    pub(crate) ifaces: Vec<LcoreIfaceParts>,
    pub(crate) ctl: Vec<CtlHost>,
    pub(crate) app: A,
    pub(crate) counters: Arc<LcoreCounters>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) idle: IdlePolicy,
    pub(crate) ctl_interval: Duration,
    pub(crate) pool: ibpoll_mem::Mempool,
}

/// Takes every reader offline (nested) while `f` runs.
fn offline_all(ifaces: &mut [LcoreIface], f: &dyn Fn()) {
    match ifaces.split_first_mut() {
        None => f(),
        Some((first, rest)) => first.core.reader.offline_while(|| offline_all(rest, f)),
    }
}

impl<A: App> DataLcore<A> {
    pub(crate) fn new(p: DataLcoreParts<A>) -> DataLcore<A> {
        // A packet is offered at most TX_TRIES times, so the retry list holds at most
        // TX_TRIES - 1 iterations' worth of packets, and one burst at most TX_TRIES.
        let desc_max = usize::from(TX_TRIES) * TX_BUFFER_MAX;
        let n_ifaces = p.ifaces.len();
        DataLcore {
            txbuf: TxBuffer::new(TX_BUFFER_MAX, n_ifaces, p.pool, p.counters.clone()),
            ctx: p.ctx,
            ifaces: p
                .ifaces
                .into_iter()
                .map(|i| LcoreIface {
                    rx: i.rx,
                    tx: i.tx,
                    core: i.core,
                    qpn: i.qpn,
                    link_up: false,
                    mtu: 0,
                    retry: Vec::with_capacity(desc_max),
                    descs: Vec::with_capacity(desc_max),
                    pending: Vec::with_capacity(desc_max),
                })
                .collect(),
            ctl: p.ctl,
            app: p.app,
            counters: p.counters,
            shared: p.shared,
            idle: p.idle,
            ctl_interval: p.ctl_interval,
            ctl_next: Instant::now(),
            rx_pkts: Default::default(),
            app_pkts: Default::default(),
        }
    }

    /// The loop, until the stack stops; then the drain. Returns the final counters of
    /// the controllers this lcore hosted, by interface.
    pub(crate) fn run(mut self) -> Vec<(usize, CtrlStats)> {
        let mut idler = Idler::new(self.idle);
        let mut t0 = Instant::now();
        // Relaxed: see `Shared::stop`.
        while !self.shared.stop.load(Ordering::Relaxed) {
            let worked = self.iteration(t0);
            let t1 = Instant::now();
            let dt = t1.duration_since(t0).as_nanos() as u64;
            self.counters.iterations.inc();
            if worked {
                self.counters.busy_ns.add(dt);
            } else {
                self.counters.idle_ns.add(dt);
            }
            t0 = t1;
            let ifaces = &mut self.ifaces;
            if idler.after(worked, |f| offline_all(ifaces, f)) {
                let t2 = Instant::now();
                self.counters
                    .idle_ns
                    .add(t2.duration_since(t0).as_nanos() as u64);
                t0 = t2;
            }
        }
        self.drain();
        self.ctl.drain(..).map(CtlHost::finish).collect()
    }

    /// One iteration of the pipeline. Whether it did any work.
    #[inline]
    fn iteration(&mut self, now: Instant) -> bool {
        let mut worked = false;
        let mut links_up = 0u64;
        for (i, ifc) in self.ifaces.iter_mut().enumerate() {
            ifc.core.reader.quiescent();
            let snap = ifc.core.reader.get();
            ifc.link_up = snap.link_up;
            ifc.mtu = snap.mtu;
            links_up |= u64::from(snap.link_up) << i;
        }
        if !self.ctl.is_empty() && now >= self.ctl_next {
            self.ctl_next = now + self.ctl_interval;
            for host in &mut self.ctl {
                worked |= host.poll();
            }
        }
        self.ctx.now = now;
        self.ctx.links_up = links_up;
        for i in 0..self.ifaces.len() {
            worked |= self.rx_stage(i);
        }
        self.set_ctx_iface(0);
        worked |= self.app.poll(&self.ctx, &mut self.txbuf);
        for i in 0..self.ifaces.len() {
            worked |= self.tx_stage(i);
        }
        self.txbuf.reset_len();
        worked
    }

    /// Points the context at interface `i` (the one whose burst the app is handed).
    #[inline]
    fn set_ctx_iface(&mut self, i: usize) {
        let ifc = &self.ifaces[i];
        self.ctx.iface = i;
        self.ctx.link_up = ifc.link_up;
        self.ctx.mtu = ifc.mtu;
    }

    /// Receives one burst from interface `i`'s queue, classifies it and hands the IP
    /// packets to the application.
    #[inline]
    fn rx_stage(&mut self, i: usize) -> bool {
        let ifc = &mut self.ifaces[i];
        let n = ifc.rx.rx_burst(&mut self.rx_pkts);
        if n == 0 {
            return false;
        }
        let c = &*self.counters;
        c.rx_packets.add(n as u64);
        // Relaxed: see `IfShared::own_lid`.
        let own_lid = self.shared.ifaces[i].own_lid.load(Ordering::Relaxed) as u16;
        let own_qpn = ifc.qpn.get();
        let mut n_app = 0;
        let mut bytes = 0u64;
        for slot in &mut self.rx_pkts[..n] {
            let Some(mut m) = slot.take() else {
                continue;
            };
            bytes += m.len() as u64;
            let meta = *m.meta();
            if meta.flags & MBUF_F_MCAST != 0 && meta.src_qpn == own_qpn && meta.slid == own_lid {
                c.rx_loopback.inc();
                continue;
            }
            match classify(m.data()) {
                Class::Ip => {
                    // Cannot fail: classify checked the length.
                    m.adj(ipoib::HEADER_LEN);
                    self.app_pkts[n_app] = Some(m);
                    n_app += 1;
                }
                Class::Arp => match ifc.core.requests.send(Request::Arp { mbuf: m }) {
                    Ok(()) => c.rx_arp.inc(),
                    Err(_req) => c.rx_ctrl_full.inc(),
                },
                Class::Malformed => c.rx_malformed.inc(),
                Class::Unknown => c.rx_unknown_ethertype.inc(),
            }
        }
        c.rx_bytes.add(bytes);
        if n_app > 0 {
            c.app_rx.add(n_app as u64);
            self.set_ctx_iface(i);
            self.app
                .on_burst(&self.ctx, &mut self.app_pkts[..n_app], &mut self.txbuf);
            let mut left = 0;
            for slot in &mut self.app_pkts[..n_app] {
                if slot.take().is_some() {
                    left += 1;
                }
            }
            if left > 0 {
                self.counters.app_dropped.add(left);
            }
        }
        true
    }

    /// Resolves interface `i`'s retried and newly queued packets against one snapshot
    /// and sends them in one burst.
    #[inline]
    fn tx_stage(&mut self, i: usize) -> bool {
        let ifc = &mut self.ifaces[i];
        let queued = &mut self.txbuf.pkts[i];
        if ifc.retry.is_empty() && queued.is_empty() {
            return false;
        }
        let c = &*self.counters;
        let mut bytes = 0u64;
        {
            let snap = ifc.core.reader.get();
            let mut r = Resolver::new(snap, &mut ifc.core.requests, c);
            let fresh = queued
                .drain(..)
                .map(|(m, dest)| (m, Pending { dest, tries: 0 }));
            for (m, p) in ifc.retry.drain(..).chain(fresh) {
                if let Some(d) = r.resolve(m, p.dest) {
                    bytes += d.mbuf.as_ref().map_or(0, |m| m.len() as u64);
                    // Within the capacity reserved at start-up (see `DataLcore::new`).
                    debug_assert!(ifc.descs.len() < ifc.descs.capacity());
                    ifc.descs.push(d);
                    ifc.pending.push(p);
                }
            }
        }
        if !ifc.descs.is_empty() {
            let n = ifc.tx.tx_burst(&mut ifc.descs);
            c.tx_burst_consumed.add(n as u64);
            for (d, p) in ifc.descs[n..].iter_mut().zip(&ifc.pending[n..]) {
                let Some(mut m) = d.mbuf.take() else {
                    continue;
                };
                bytes -= m.len() as u64;
                if p.tries + 1 >= TX_TRIES {
                    c.tx_full.inc();
                    continue;
                }
                // Strip the IPoIB header again: the packet is resolved afresh next time.
                m.adj(ipoib::HEADER_LEN);
                c.tx_retries.inc();
                ifc.retry.push((
                    m,
                    Pending {
                        dest: p.dest,
                        tries: p.tries + 1,
                    },
                ));
            }
            ifc.descs.clear();
            ifc.pending.clear();
        }
        c.tx_bytes.add(bytes);
        true
    }

    /// At stop: frees what is queued and drains the receive queues (bounded), counting
    /// everything. The application is dropped with the lcore, on this thread.
    fn drain(&mut self) {
        let c = &*self.counters;
        let mut queued = 0;
        for (ifc, q) in self.ifaces.iter_mut().zip(&mut self.txbuf.pkts) {
            queued += (q.len() + ifc.retry.len()) as u64;
            q.clear();
            ifc.retry.clear();
        }
        self.txbuf.reset_len();
        c.stop_dropped_tx.add(queued);
        for ifc in &mut self.ifaces {
            for _ in 0..STOP_DRAIN_BURSTS {
                let n = ifc.rx.rx_burst(&mut self.rx_pkts);
                if n == 0 {
                    break;
                }
                c.rx_packets.add(n as u64);
                c.stop_dropped_rx.add(n as u64);
                for slot in &mut self.rx_pkts[..n] {
                    if let Some(m) = slot.take() {
                        c.rx_bytes.add(m.len() as u64);
                    }
                }
            }
        }
    }
}
