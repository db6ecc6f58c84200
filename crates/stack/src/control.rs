//! The control core driven by the application's own loop, and the parts a stack is
//! made of before anything runs them ([`StackParts`]).
//!
//! [`Control::poll`] is one bounded round of every interface's controller (port events,
//! SA answers, the lanes' requests, joins and leaves, the snapshot), the commands the
//! [`Stack`] handle queued, and the park handshake that P_Key changes need (the QPs
//! move once every lane stopped using them). It never blocks; it says whether it did
//! any work ([`Poll::Busy`] / [`Poll::Idle`], SPDK's poller convention). Run it on its
//! own thread, or between lane polls on one of the lanes' threads.
//!
//! Stopping: when the stack's stop flag is set ([`Control::request_stop`], the
//! [`StackBuilder::stop_flag`](crate::StackBuilder::stop_flag) a signal handler sets,
//! or a panic caught by [`Stack::start`](crate::StackBuilder::start)'s lcores), the next
//! poll takes every interface down: the flush leaves every group at the SA. Once it
//! ended (or `stop_timeout` passed) the lanes see [`Lane::stopping`](crate::Lane::stopping)
//! and finish; [`Control::stopped`] turns true when every lane has, and
//! [`Control::finish`] reports.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ibpoll_ctrl::{Controller, CtrlStats, GroupAddr, Poll};

use crate::lane::PARK_ACK_GONE;
use crate::lcore::{CtlHost, Shared};
use crate::signal::StopState;
use crate::stack::Stack;
use crate::{Error, Lane};

/// What the control core reports when it finishes.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ControlReport {
    /// Every interface's controller's final counters, by interface.
    pub ctrl: Vec<CtrlStats>,
    /// Whether the stop's flush (every membership left) ended on every interface before
    /// the lanes were told to stop (false also when no stop ran).
    pub flushed: bool,
}

/// Where a finished control core leaves its report for the [`Stack`] handle.
#[derive(Debug, Default)]
pub(crate) struct ControlDone {
    pub(crate) report: Mutex<Option<ControlReport>>,
}

/// The control core of an application-driven stack. See the module docs.
#[derive(Debug)]
pub struct Control {
    hosts: Vec<CtlHost>,
    shared: Arc<Shared>,
    stop: Arc<StopState>,
    stop_timeout: Duration,
    stopping_since: Option<Instant>,
    flushed: bool,
    done: Arc<ControlDone>,
}

impl Control {
    pub(crate) fn new(
        hosts: Vec<CtlHost>,
        shared: Arc<Shared>,
        stop: Arc<StopState>,
        stop_timeout: Duration,
    ) -> Control {
        Control {
            hosts,
            shared,
            stop,
            stop_timeout,
            stopping_since: None,
            flushed: false,
            done: Arc::new(ControlDone::default()),
        }
    }

    /// One bounded round of every interface's controller and of the stop; never blocks.
    #[inline]
    pub fn poll(&mut self) -> Poll {
        let mut busy = false;
        if self.stopping_since.is_none() && self.stop.requested() {
            self.begin_stop();
            busy = true;
        }
        for h in &mut self.hosts {
            busy |= h.poll();
        }
        if let Some(since) = self.stopping_since {
            busy |= self.stop_progress(since);
        }
        if busy {
            Poll::Busy
        } else {
            Poll::Idle
        }
    }

    fn begin_stop(&mut self) {
        tracing::info!("ibpoll: stop requested; taking the interfaces down (leaving every group)");
        for h in &mut self.hosts {
            h.ctl.set_admin_up(false);
        }
        self.stopping_since = Some(Instant::now());
    }

    /// Once the flush ended (or timed out), tells the lanes to stop.
    fn stop_progress(&mut self, since: Instant) -> bool {
        // Relaxed: see `Shared::stop`.
        if self.shared.stop.load(Ordering::Relaxed) {
            return false;
        }
        let flushing = self.hosts.iter().any(|h| h.ctl.is_flushing());
        if flushing && since.elapsed() < self.stop_timeout {
            return false;
        }
        self.flushed = !flushing;
        if flushing {
            tracing::warn!(
                secs = self.stop_timeout.as_secs_f64(),
                "ibpoll: the flush did not end within stop_timeout; stopping the lanes anyway"
            );
        }
        self.shared.stop.store(true, Ordering::Relaxed);
        true
    }

    /// Sets the stack's stop flag: the next [`poll`](Self::poll) starts the stop.
    pub fn request_stop(&self) {
        self.stop.flag.store(true, Ordering::SeqCst);
    }

    /// Whether a stop was requested (the stop flag is set).
    pub fn stop_requested(&self) -> bool {
        self.stop.requested()
    }

    /// Whether the stop is complete: the flush ended (or timed out) and every lane
    /// finished (or was dropped). Then [`finish`](Self::finish).
    pub fn stopped(&self) -> bool {
        // Relaxed: see `Shared::stop`.
        self.shared.stop.load(Ordering::Relaxed)
            && self.shared.ifaces.iter().all(|i| {
                // Acquire: pairs with the Release store of `PARK_ACK_GONE` in
                // `Lane::drain`: the lane's last use of its queues happened before.
                i.park_acks
                    .iter()
                    .all(|a| a.load(Ordering::Acquire) == PARK_ACK_GONE)
            })
    }

    /// Interfaces (one controller each).
    pub fn ifaces(&self) -> usize {
        self.hosts.len()
    }

    /// Interface `iface`'s controller, to call directly (the control core is this
    /// thread: no message, no waiting).
    pub fn controller(&mut self, iface: usize) -> Option<&mut Controller> {
        self.hosts
            .iter_mut()
            .find(|h| h.iface == iface)
            .map(|h| &mut h.ctl)
    }

    fn ctl(&mut self, iface: usize) -> Result<&mut Controller, Error> {
        let ifaces = self.hosts.len();
        self.controller(iface)
            .ok_or(Error::NoSuchIface { iface, ifaces })
    }

    /// Subscribes interface `iface` to a multicast group (full-member join once the link
    /// is up; attached to the lane an MGID hash picks). False if the group table is full
    /// or the address is not a group of the interface's partition. Sockets subscribe
    /// with [`Lane::udp_join`](crate::Lane::udp_join) instead.
    pub fn join_group_on(&mut self, iface: usize, group: GroupAddr) -> Result<bool, Error> {
        Ok(self.ctl(iface)?.join_group(group))
    }

    /// Ends what [`join_group_on`](Self::join_group_on) subscribed.
    pub fn leave_group_on(&mut self, iface: usize, group: GroupAddr) -> Result<(), Error> {
        self.ctl(iface)?.leave_group(group);
        Ok(())
    }

    /// Whether every interface's link is up (its broadcast group is Joined).
    pub fn link_up(&self) -> bool {
        self.hosts.iter().all(|h| h.ctl.link_up())
    }

    /// Every interface's controller's counters, by interface.
    pub fn ctrl_stats(&self) -> Vec<CtrlStats> {
        let mut v = vec![CtrlStats::default(); self.hosts.len()];
        for h in &self.hosts {
            v[h.iface] = h.ctl.stats();
        }
        v
    }

    /// Ends the control core: runs the commands still queued, tells the [`Stack`]
    /// handle it is gone, and reports. Call it once [`stopped`](Self::stopped) (the
    /// lanes finished), or the lanes' stop drains are not counted.
    pub fn finish(mut self) -> ControlReport {
        self.finish_hosts()
    }

    fn finish_hosts(&mut self) -> ControlReport {
        let n = self.hosts.len();
        let mut ctrl = vec![CtrlStats::default(); n];
        for h in self.hosts.drain(..) {
            let (iface, s) = h.finish();
            if let Some(c) = ctrl.get_mut(iface) {
                *c = s;
            }
        }
        let report = ControlReport {
            ctrl,
            flushed: self.flushed,
        };
        let mut slot = self.done.report.lock().unwrap_or_else(|e| e.into_inner());
        *slot = Some(report.clone());
        report
    }

    /// The controllers, for the stack's own lcores (`start`).
    pub(crate) fn into_hosts(mut self) -> Vec<CtlHost> {
        std::mem::take(&mut self.hosts)
    }

    pub(crate) fn done(&self) -> Arc<ControlDone> {
        self.done.clone()
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        if !self.hosts.is_empty() {
            self.finish_hosts();
        }
    }
}

/// A stack built and not started: its handle, its control core and its lanes, for an
/// application that drives them from threads of its own
/// ([`StackBuilder::build`](crate::StackBuilder::build)).
///
/// ```no_run
/// # let fabric = ibpoll::SimFabric::new(ibpoll::FabricConfig::default());
/// use ibpoll::{Discard, Poll, Stack};
/// let (stack, mut control, lanes) = Stack::builder()
///     .fabric(&fabric, "a")
///     .ipv4([10, 0, 0, 1])
///     .data_cores(2)
///     .build()?
///     .split();
/// std::thread::scope(|s| {
///     for mut lane in lanes {
///         s.spawn(move || {
///             while !lane.stopping() {
///                 lane.poll(&mut Discard);
///             }
///             lane.finish()
///         });
///     }
///     s.spawn(|| {
///         while !control.stopped() {
///             if control.poll() == Poll::Idle {
///                 std::hint::spin_loop();
///             }
///         }
///     });
///     // ... later, from any thread:
///     stack.stop_flag().store(true, std::sync::atomic::Ordering::SeqCst);
/// });
/// let report = control.finish();
/// assert!(report.flushed);
/// # Ok::<(), ibpoll::Error>(())
/// ```
#[derive(Debug)]
pub struct StackParts {
    pub(crate) stack: Stack,
    pub(crate) control: Control,
    pub(crate) lanes: Vec<Lane>,
}

impl StackParts {
    /// The handle (counters, commands to the control core, the stop flag), the control
    /// core and the lanes, lane `i` at index `i`. The handle's
    /// [`with_controller`](Stack::with_controller) and the like need the control core
    /// polled on another thread than the caller's.
    pub fn split(self) -> (Stack, Control, Vec<Lane>) {
        let StackParts {
            mut stack,
            control,
            lanes,
        } = self;
        stack.set_app_driven(control.done());
        (stack, control, lanes)
    }

    /// The handle.
    pub fn stack(&self) -> &Stack {
        &self.stack
    }
}
