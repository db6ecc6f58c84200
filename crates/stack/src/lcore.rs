//! The lcores: a data lcore drives one [`Lane`] with its application (and, on data
//! lcore 0 by default, hosts the controllers); the control core runs the controllers
//! (hosted on its own lcore or on data lcore 0), executes commands from the [`Stack`]
//! handle, and parks the lanes' queues for the control operations that need it.
//!
//! [`Stack`]: crate::Stack

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::queue::ArrayQueue;
use crossbeam::utils::CachePadded;
use ibpoll_ctrl::{Controller, CtrlEvent, CtrlStats, Poll};
use ibpoll_dev::{Parked, Port};
use ibpoll_wire::Qpn;

use crate::app::App;
use crate::lane::{Lane, PARK_ACK_GONE};

/// Control messages (commands from the [`Stack`](crate::Stack) handle) run per iteration
/// by the lcore that hosts the controller.
pub const COMMANDS_PER_ITERATION: usize = 8;
/// Slots of the command queue to the control core.
pub(crate) const COMMANDS_MAX: usize = 64;

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
    /// The park handshake: odd while the control core asks the lanes to stop using this
    /// interface's queues. Written (Release) only by the control core, loaded (Acquire)
    /// by every lane once per iteration.
    pub(crate) park_seq: AtomicU64,
    /// Per lane: the `park_seq` it last acknowledged (Release, after its last use of the
    /// queues), or [`PARK_ACK_GONE`] once it exited; loaded (Acquire) by the control core.
    pub(crate) park_acks: Box<[CachePadded<AtomicU64>]>,
    /// Every lane's QP on this interface (lane order), whose queues a park covers.
    pub(crate) lane_qpns: Vec<Qpn>,
}

impl IfShared {
    pub(crate) fn new(lid: u16, lane_qpns: Vec<Qpn>) -> IfShared {
        IfShared {
            own_lid: AtomicU32::new(u32::from(lid)),
            commands: ArrayQueue::new(COMMANDS_MAX),
            ctl_alive: AtomicBool::new(true),
            park_seq: AtomicU64::new(0),
            park_acks: lane_qpns
                .iter()
                .map(|_| CachePadded::new(AtomicU64::new(0)))
                .collect(),
            lane_qpns,
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
    /// A P_Key index move waiting for the lanes to park: the index and the park
    /// sequence asked for.
    pub(crate) pending_move: Option<(u16, u64)>,
}

impl CtlHost {
    /// One bounded round: the controller's poll, up to `COMMANDS_PER_ITERATION`
    /// commands, and its events. Whether anything was done.
    pub(crate) fn poll(&mut self) -> bool {
        let all = self.shared.clone();
        let shared = &all.ifaces[self.iface];
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
                CtrlEvent::RebuildQp { pkey_index } => self.park(pkey_index),
            }
        }
        if let Some((pkey_index, seq)) = self.pending_move {
            if self.parked(seq) {
                self.move_qps(pkey_index);
                self.pending_move = None;
                // Release: pairs with the Acquire load in `Lane::begin`: the moves
                // happen before a lane uses its queues again.
                shared.park_seq.store(seq + 1, Ordering::Release);
                busy = true;
            }
        }
        busy
    }

    /// Asks every lane to park this interface's queues before a P_Key index move.
    fn park(&mut self, pkey_index: u16) {
        let shared = &self.shared.ifaces[self.iface];
        let seq = match self.pending_move {
            // Already parking: the newer index wins, same request.
            Some((_, seq)) => seq,
            None => shared.park_seq.load(Ordering::Relaxed) + 1,
        };
        debug_assert!(seq & 1 == 1);
        // Release: pairs with the Acquire load in `Lane::begin`.
        shared.park_seq.store(seq, Ordering::Release);
        self.pending_move = Some((pkey_index, seq));
    }

    /// Whether every lane acknowledged park request `seq` (or exited).
    fn parked(&self, seq: u64) -> bool {
        self.shared.ifaces[self.iface].park_acks.iter().all(|a| {
            // Acquire: pairs with the Release store in `Lane::begin` / `Lane::drain`.
            let ack = a.load(Ordering::Acquire);
            ack == seq || ack == PARK_ACK_GONE
        })
    }

    /// The heavy flush left every group (no attachment remains) and the link is down:
    /// every QP of the interface takes the partition's new P_Key index in place (the
    /// kernel's ipoib_ib_dev_open), keeping its QPN; the rejoin that follows brings the
    /// link up.
    fn move_qps(&mut self, pkey_index: u16) {
        let shared = &self.shared.ifaces[self.iface];
        let own = self.ctl.ctl_qpn();
        let mut flushed = 0;
        let mut failed = None;
        for &qpn in shared.lane_qpns.iter().chain(std::iter::once(&own)) {
            // SAFETY: every lane acknowledged the park request (or exited), and the
            // controller's own send queue is only used inside `Controller::poll`, which
            // is not running: no thread calls this QP's queues until `park_seq` moves on.
            let parked = unsafe { Parked::assume(qpn) };
            match self.port.move_qp_pkey_index(&parked, pkey_index) {
                Ok(n) => flushed += n,
                Err(e) => failed = Some((qpn, e)),
            }
        }
        self.ctl.qps_moved(failed.is_none());
        match failed {
            None => tracing::info!(
                pkey_index,
                iface = self.iface,
                receive_buffers_returned = flushed,
                "ibpoll: P_Key table changed; the interface's UD QPs moved to the new index"
            ),
            Some((qpn, e)) => {
                // A QP left in another partition must carry nothing: the controller
                // took the interface administratively down (no rejoin).
                tracing::error!(
                    pkey_index,
                    iface = self.iface,
                    %qpn,
                    error = %e,
                    "ibpoll: P_Key table changed and a UD QP could not follow; the \
                     interface is set down"
                );
            }
        }
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

/// One data lcore: its lane, its application, and the controllers it hosts.
#[derive(Debug)]
pub(crate) struct DataLcore<A> {
    pub(crate) lane: Lane,
    /// The controllers this lcore hosts (all of them on data lcore 0 when the control
    /// core is not dedicated; none elsewhere).
    ctl: Vec<CtlHost>,
    pub(crate) app: A,
    pub(crate) idle: IdlePolicy,
    ctl_interval: Duration,
    ctl_next: Instant,
}

impl<A: App> DataLcore<A> {
    pub(crate) fn new(
        lane: Lane,
        ctl: Vec<CtlHost>,
        app: A,
        idle: IdlePolicy,
        ctl_interval: Duration,
    ) -> DataLcore<A> {
        DataLcore {
            lane,
            ctl,
            app,
            idle,
            ctl_interval,
            ctl_next: Instant::now(),
        }
    }

    /// The loop, until the stack stops; then the drain. Returns the final counters of
    /// the controllers this lcore hosted, by interface.
    pub(crate) fn run(mut self) -> Vec<(usize, CtrlStats)> {
        let mut idler = Idler::new(self.idle);
        let mut t0 = Instant::now();
        let shared = self.lane.shared.clone();
        // Relaxed: see `Shared::stop`.
        while !shared.stop.load(Ordering::Relaxed) {
            let mut worked = false;
            if !self.ctl.is_empty() && t0 >= self.ctl_next {
                self.ctl_next = t0 + self.ctl_interval;
                for host in &mut self.ctl {
                    worked |= host.poll();
                }
            }
            worked |= self.lane.iteration(&mut self.app, t0);
            let t1 = Instant::now();
            let dt = t1.duration_since(t0).as_nanos() as u64;
            let c = &self.lane.counters;
            c.iterations.inc();
            if worked {
                c.busy_ns.add(dt);
            } else {
                c.idle_ns.add(dt);
            }
            t0 = t1;
            let lane = &mut self.lane;
            if idler.after(worked, |f| lane.offline_while(f)) {
                let t2 = Instant::now();
                lane.counters
                    .idle_ns
                    .add(t2.duration_since(t0).as_nanos() as u64);
                t0 = t2;
            }
        }
        self.lane.drain();
        self.ctl.drain(..).map(CtlHost::finish).collect()
    }
}
