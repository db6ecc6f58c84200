//! UD queue pairs: the QP itself ([`QpHandle`]: creation, state transitions, multicast),
//! its two queues ([`RecvQueue`], [`SendQueue`]: posting and polling in bursts, each with
//! the ring of posted work-request ids that lets the driver give every buffer back), and
//! [`UdQp`], the three together for one owner.
//!
//! Completion order: a UD QP's receive queue completes in posting order, and so does its
//! send queue (every send is signaled), so each ring's front is the next completion's
//! `wr_id`; the two are checked against each other on every completion (a mismatch is
//! counted, and asserted in debug builds). The QP's two CQs are its own: a completion of
//! another QP found there is counted and not matched.
//!
//! The two queues may be owned by two threads (the driver's receive and send queues):
//! each is `Send` and moves only its own ring; the [`QpHandle`] they share is `Sync`
//! (state changes and multicast attach are thread-safe verbs).

use std::collections::VecDeque;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Arc;

use super::{errno, verbs_ctx_op, Ah, Cq, Pd, Wc};
use crate::sys::verbs::{
    ibv_ah, ibv_gid, ibv_qp, ibv_qp_attr, ibv_qp_init_attr_ex, ibv_recv_wr, ibv_send_wr, ibv_sge,
    verbs_context, IBV_QPS_INIT, IBV_QPS_RESET, IBV_QPS_RTR, IBV_QPS_RTS, IBV_QPT_UD,
    IBV_QP_CREATE_BLOCK_SELF_MCAST_LB, IBV_QP_INIT_ATTR_CREATE_FLAGS, IBV_QP_INIT_ATTR_PD,
    IBV_QP_PKEY_INDEX, IBV_QP_PORT, IBV_QP_QKEY, IBV_QP_SQ_PSN, IBV_QP_STATE, IBV_SEND_INLINE,
    IBV_SEND_SIGNALED, IBV_WR_SEND,
};
use crate::Error;

/// The `wr_id` that marks a send taken and dropped without being posted (its pool could
/// not be registered): it completes, in order, when it reaches the front of the ring.
/// No posted send may use it.
pub const UNPOSTED: u64 = u64::MAX;

/// Whether the HCA delivers a QP's own multicast sends back to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SelfMcastLoopback {
    /// Delivered (the default of every HCA); the receiver filters by source QPN.
    #[default]
    Allow,
    /// Dropped by the HCA (`IBV_QP_CREATE_BLOCK_SELF_MCAST_LB`); refused at creation
    /// when the device cannot (see `DeviceAttr::can_block_self_mcast_lb`).
    Block,
}

/// How to create a UD QP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdQpConfig {
    /// The port (1-based).
    pub port_num: u8,
    /// The P_Key index it sends with and receives on.
    pub pkey_index: u16,
    /// The Q_Key it accepts.
    pub qkey: u32,
    /// Send queue depth.
    pub max_send_wr: u32,
    /// Receive queue depth.
    pub max_recv_wr: u32,
    /// Bytes a send may carry inline (0: none).
    pub max_inline: u32,
    /// The most work requests one post call takes (the scratch arrays' size).
    pub burst_max: usize,
    /// Self multicast loopback.
    pub self_mcast: SelfMcastLoopback,
}

impl Default for UdQpConfig {
    fn default() -> Self {
        UdQpConfig {
            port_num: 1,
            pkey_index: 0,
            qkey: 0x0B1B,
            max_send_wr: 256,
            max_recv_wr: 512,
            max_inline: 0,
            burst_max: 64,
            self_mcast: SelfMcastLoopback::Allow,
        }
    }
}

/// A receive buffer to post: `len` bytes at `addr` (the 40-byte GRH area first), inside
/// the memory region of `lkey`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvWr {
    /// Returned in the completion (e.g. an `Mbuf::into_raw` word).
    pub wr_id: u64,
    /// First byte.
    pub addr: u64,
    /// Length.
    pub len: u32,
    /// The memory region's local key.
    pub lkey: u32,
}

/// A UD send: `len` bytes at `addr` to `remote_qpn` through `ah`.
#[derive(Debug, Clone, Copy)]
pub struct SendWr<'a> {
    /// Returned in the completion; not [`UNPOSTED`].
    pub wr_id: u64,
    /// First byte of the payload (what follows the BTH/DETH on the wire).
    pub addr: u64,
    /// Length.
    pub len: u32,
    /// The memory region's local key.
    pub lkey: u32,
    /// The destination.
    pub ah: &'a Ah,
    /// The destination QPN (0xFFFFFF for multicast).
    pub remote_qpn: u32,
    /// The Q_Key to send with.
    pub remote_qkey: u32,
}

/// A send as the driver posts it: the address handle is a pointer from its table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawSend {
    pub(crate) wr_id: u64,
    pub(crate) addr: u64,
    pub(crate) len: u32,
    pub(crate) lkey: u32,
    pub(crate) ah: *mut ibv_ah,
    pub(crate) remote_qpn: u32,
    pub(crate) remote_qkey: u32,
}

/// What a UD QP has counted (hot-path failures are counters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QpCounters {
    /// Receives posted.
    pub recv_posted: u64,
    /// Receive completions with success.
    pub recv_ok: u64,
    /// Receive completions with an error status.
    pub recv_errors: u64,
    /// Sends posted.
    pub send_posted: u64,
    /// Send completions with success.
    pub send_ok: u64,
    /// Send completions with an error status.
    pub send_errors: u64,
    /// Send bursts cut short because the send queue was full (back-pressure).
    pub send_full: u64,
    /// Post calls the provider refused part of.
    pub post_errors: u64,
    /// CQ polls that returned an error.
    pub poll_errors: u64,
    /// Completions whose wr_id was not the ring's front (or found the ring empty).
    pub ring_mismatch: u64,
    /// Completions of another QP found on this QP's CQs.
    pub foreign_completions: u64,
}

impl QpCounters {
    fn merge(self, o: QpCounters) -> QpCounters {
        QpCounters {
            recv_posted: self.recv_posted + o.recv_posted,
            recv_ok: self.recv_ok + o.recv_ok,
            recv_errors: self.recv_errors + o.recv_errors,
            send_posted: self.send_posted + o.send_posted,
            send_ok: self.send_ok + o.send_ok,
            send_errors: self.send_errors + o.send_errors,
            send_full: self.send_full + o.send_full,
            post_errors: self.post_errors + o.post_errors,
            poll_errors: self.poll_errors + o.poll_errors,
            ring_mismatch: self.ring_mismatch + o.ring_mismatch,
            foreign_completions: self.foreign_completions + o.foreign_completions,
        }
    }
}

/// Everything a reset took off the QP: completions that were waiting in the CQs, and the
/// work requests that were still posted (their buffers are the caller's again).
#[derive(Debug, Default)]
pub struct QpReset {
    /// Receive completions polled during the reset (packets that had arrived).
    pub recv_completed: Vec<Wc>,
    /// Receives that were posted and never completed, in posting order.
    pub recv_unused: Vec<u64>,
    /// Send completions polled during the reset.
    pub send_completed: Vec<Wc>,
    /// Sends that were posted and never completed (perhaps never sent).
    pub send_unfinished: Vec<u64>,
}

fn config_error(field: &'static str, value: u64, fix: &'static str) -> Error {
    Error::Config {
        what: "UD QP",
        field,
        value,
        fix,
    }
}

/// A UD QP (`ibv_create_qp`) with its two CQs: state changes and multicast. Shared by
/// its queues; destroyed when the last of them goes (or by [`QpHandle::destroy`]).
pub struct QpHandle {
    pd: Arc<Pd>,
    send_cq: Arc<Cq>,
    recv_cq: Arc<Cq>,
    /// Null once destroyed.
    qp: AtomicPtr<ibv_qp>,
    qpn: u32,
    port_num: u8,
    send_cap: u32,
    recv_cap: u32,
    max_inline: u32,
}

// SAFETY: a QP is a handle libibverbs allows to be used from any thread; the state
// changes and attach/detach made through `&self` are thread-safe verbs, and posting is
// reserved to the one owner of each queue (`RecvQueue`, `SendQueue`: `&mut self`).
unsafe impl Send for QpHandle {}
// SAFETY: as above.
unsafe impl Sync for QpHandle {}

impl std::fmt::Debug for QpHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QpHandle")
            .field("qpn", &format_args!("{:#x}", self.qpn))
            .field("port", &self.port_num)
            .finish()
    }
}

impl QpHandle {
    /// Creates a UD QP on `pd` with its own send and receive CQs, in RESET (see
    /// [`QpHandle::bring_up`]).
    pub fn create(
        pd: &Arc<Pd>,
        send_cq: &Arc<Cq>,
        recv_cq: &Arc<Cq>,
        cfg: &UdQpConfig,
    ) -> Result<Arc<QpHandle>, Error> {
        if Arc::ptr_eq(send_cq, recv_cq) {
            return Err(config_error(
                "recv_cq",
                0,
                "give the QP two CQs of its own: each ring of posted work requests is \
                 matched against its own CQ",
            ));
        }
        if cfg.max_send_wr == 0 || cfg.max_recv_wr == 0 || cfg.burst_max == 0 {
            return Err(config_error(
                "max_send_wr/max_recv_wr/burst_max",
                0,
                "at least 1 each",
            ));
        }
        let (qp, cap) = create_qp(pd, send_cq, recv_cq, cfg)?;
        // SAFETY: the QP was just created; qp_num is set and immutable.
        let qpn = unsafe { (*qp.as_ptr()).qp_num };
        Ok(Arc::new(QpHandle {
            pd: pd.clone(),
            send_cq: send_cq.clone(),
            recv_cq: recv_cq.clone(),
            qp: AtomicPtr::new(qp.as_ptr()),
            qpn,
            port_num: cfg.port_num,
            send_cap: cap.send,
            recv_cap: cap.recv,
            max_inline: cap.inline,
        }))
    }

    /// The QP number.
    pub fn qpn(&self) -> u32 {
        self.qpn
    }

    /// The send queue's depth as the provider made it (at least what was asked).
    pub fn send_cap(&self) -> u32 {
        self.send_cap
    }

    /// The receive queue's depth as the provider made it.
    pub fn recv_cap(&self) -> u32 {
        self.recv_cap
    }

    /// Bytes a send can carry inline, as the provider made it.
    pub fn max_inline(&self) -> u32 {
        self.max_inline
    }

    /// The live QP; null once destroyed.
    #[inline]
    pub(crate) fn ptr(&self) -> *mut ibv_qp {
        // Relaxed: the pointer is published with the handle itself (an Arc) and nulled
        // only by `destroy`, which its caller orders after every other use.
        self.qp.load(Ordering::Relaxed)
    }

    fn device(&self) -> &str {
        self.pd.context().name()
    }

    fn modify(&self, attr: &mut ibv_qp_attr, mask: u32, op: &'static str) -> Result<(), Error> {
        let qp = self.ptr();
        if qp.is_null() {
            return Err(Error::verbs(op, self.device(), libc::ENODEV));
        }
        // SAFETY: the QP is live (not destroyed); `attr` is a valid attribute struct.
        let rc = unsafe {
            self.pd
                .context()
                .lib()
                .ibv
                .ibv_modify_qp(qp, attr, mask as i32)
        };
        if rc != 0 {
            return Err(Error::verbs(op, self.device(), rc));
        }
        Ok(())
    }

    /// RESET -> INIT (port, P_Key index, Q_Key) -> RTR -> RTS.
    pub fn bring_up(&self, pkey_index: u16, qkey: u32) -> Result<(), Error> {
        let mut a = ibv_qp_attr {
            qp_state: IBV_QPS_INIT,
            pkey_index,
            port_num: self.port_num,
            qkey,
            ..Default::default()
        };
        let mask = IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_QKEY;
        self.modify(&mut a, mask, "ibv_modify_qp(INIT)")?;
        let mut a = ibv_qp_attr {
            qp_state: IBV_QPS_RTR,
            ..Default::default()
        };
        self.modify(&mut a, IBV_QP_STATE, "ibv_modify_qp(RTR)")?;
        let mut a = ibv_qp_attr {
            qp_state: IBV_QPS_RTS,
            sq_psn: 0,
            ..Default::default()
        };
        self.modify(&mut a, IBV_QP_STATE | IBV_QP_SQ_PSN, "ibv_modify_qp(RTS)")
    }

    /// Moves the QP to RESET: the provider drops every posted work request without a
    /// completion (the queues' rings still name them: see `RecvQueue::drain`).
    pub fn reset(&self) -> Result<(), Error> {
        let mut a = ibv_qp_attr {
            qp_state: IBV_QPS_RESET,
            ..Default::default()
        };
        self.modify(&mut a, IBV_QP_STATE, "ibv_modify_qp(RESET)")
    }

    /// Changes the Q_Key the QP accepts (RTS -> RTS), as IPoIB does when it learns the
    /// broadcast group's.
    pub fn set_qkey(&self, qkey: u32) -> Result<(), Error> {
        let mut a = ibv_qp_attr {
            qkey,
            ..Default::default()
        };
        self.modify(&mut a, IBV_QP_QKEY, "ibv_modify_qp(Q_Key)")
    }

    /// Attaches the QP to a multicast group (`ibv_attach_mcast`).
    pub fn attach_mcast(&self, mgid: &[u8; 16], mlid: u16) -> Result<(), Error> {
        self.mcast(mgid, mlid, true)
    }

    /// Detaches the QP from a multicast group (`ibv_detach_mcast`).
    pub fn detach_mcast(&self, mgid: &[u8; 16], mlid: u16) -> Result<(), Error> {
        self.mcast(mgid, mlid, false)
    }

    fn mcast(&self, mgid: &[u8; 16], mlid: u16, attach: bool) -> Result<(), Error> {
        let op = if attach {
            "ibv_attach_mcast"
        } else {
            "ibv_detach_mcast"
        };
        let qp = self.ptr();
        if qp.is_null() {
            return Err(Error::verbs(op, self.device(), libc::ENODEV));
        }
        let g = ibv_gid { raw: *mgid };
        let ibv = &self.pd.context().lib().ibv;
        // SAFETY: the QP is live; `g` is a valid GID.
        let rc = unsafe {
            if attach {
                ibv.ibv_attach_mcast(qp, &g, mlid)
            } else {
                ibv.ibv_detach_mcast(qp, &g, mlid)
            }
        };
        if rc != 0 {
            return Err(Error::verbs(op, self.device(), rc));
        }
        Ok(())
    }

    /// Destroys the QP now; later calls do nothing. Once it returns the HCA touches none
    /// of the buffers still posted: the queues' rings name them, and they are the
    /// caller's again.
    ///
    /// The caller makes sure no queue posts to the QP concurrently (the driver calls it
    /// from the drop of what owns both queues).
    pub(crate) fn destroy(&self) {
        let qp = self.qp.swap(std::ptr::null_mut(), Ordering::Relaxed);
        if qp.is_null() {
            return;
        }
        // SAFETY: taken out of the handle above, so destroyed once; the CQs and PD
        // outlive it (Arcs held).
        let rc = unsafe { self.pd.context().lib().ibv.ibv_destroy_qp(qp) };
        if rc != 0 {
            tracing::warn!(qpn = self.qpn, rc, "ibv_destroy_qp failed");
        }
    }
}

impl Drop for QpHandle {
    fn drop(&mut self) {
        self.destroy();
    }
}

/// Pops the ring's front for a completion of this QP, checking that it is the
/// completion's wr_id (pairs with the push when posting). Returns whether the completion
/// named a work request of the ring (and took it out); one that did not is counted.
fn match_front(ring: &mut VecDeque<u64>, w: &Wc, qpn: u32, c: &mut QpCounters) -> bool {
    if w.qp_num() != qpn {
        c.foreign_completions += 1;
        return false;
    }
    match ring.front() {
        Some(&id) if id == w.wr_id() => {
            ring.pop_front();
            true
        }
        _ => {
            c.ring_mismatch += 1;
            debug_assert!(false, "completion {:#x} is not the ring's front", w.wr_id());
            match ring.iter().position(|&id| id == w.wr_id()) {
                Some(i) => {
                    ring.remove(i);
                    true
                }
                None => false,
            }
        }
    }
}

/// The receive queue of a UD QP, owned by one thread: posts buffers and polls their
/// completions in bursts, keeping the ring of what is posted.
pub struct RecvQueue {
    qp: Arc<QpHandle>,
    cap: usize,
    burst_max: usize,
    ring: VecDeque<u64>,
    wr_scratch: Vec<ibv_recv_wr>,
    sge_scratch: Vec<ibv_sge>,
    counters: QpCounters,
}

// SAFETY: the scratch arrays' pointers point into the arrays this value owns; the QP
// handle is Send + Sync; `&mut self` on every posting method makes one thread post.
unsafe impl Send for RecvQueue {}

impl std::fmt::Debug for RecvQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvQueue")
            .field("qpn", &format_args!("{:#x}", self.qp.qpn))
            .field("posted", &self.ring.len())
            .field("cap", &self.cap)
            .finish()
    }
}

impl RecvQueue {
    /// The receive queue of `qp`, holding at most `cap` posted buffers (at most the QP's
    /// receive depth), posting at most `burst_max` per call.
    pub fn new(qp: &Arc<QpHandle>, cap: usize, burst_max: usize) -> RecvQueue {
        let cap = cap.min(qp.recv_cap as usize);
        let burst_max = burst_max.max(1);
        RecvQueue {
            qp: qp.clone(),
            cap,
            burst_max,
            ring: VecDeque::with_capacity(cap),
            wr_scratch: vec![ibv_recv_wr::default(); burst_max],
            sge_scratch: vec![ibv_sge::default(); burst_max],
            counters: QpCounters::default(),
        }
    }

    /// Buffers posted and not yet completed.
    pub fn posted(&self) -> usize {
        self.ring.len()
    }

    /// Room for more posted buffers.
    pub fn room(&self) -> usize {
        self.cap - self.ring.len()
    }

    /// The counters (receive side).
    pub fn counters(&self) -> QpCounters {
        self.counters
    }

    /// Posts up to `min(wrs.len(), burst_max, room)` receives as one linked list; returns
    /// how many were posted. What was not posted stays the caller's.
    ///
    /// # Safety
    /// Each buffer must lie inside the memory region of its `lkey` and stay valid, and
    /// untouched by the caller, until its completion has been polled or a reset or the
    /// QP's destruction returned it.
    pub unsafe fn post_burst(&mut self, wrs: &[RecvWr]) -> usize {
        // SAFETY: forwarded to the caller.
        unsafe { self.post_with(wrs.len(), |i| wrs[i]) }
    }

    /// Posts up to `min(n, burst_max, room)` receives, the `i`-th made by `wr(i)`
    /// (verbs.h's inline `ibv_post_recv`: `qp->context->ops.post_recv`); returns how
    /// many were posted: the first ones.
    ///
    /// # Safety
    /// As [`RecvQueue::post_burst`], for every work request `wr` makes.
    pub(crate) unsafe fn post_with(&mut self, n: usize, wr: impl Fn(usize) -> RecvWr) -> usize {
        let n = n.min(self.burst_max).min(self.room());
        let qp = self.qp.ptr();
        if n == 0 || qp.is_null() {
            return 0;
        }
        let base = self.wr_scratch.as_mut_ptr();
        let sges = self.sge_scratch.as_mut_ptr();
        for i in 0..n {
            let w = wr(i);
            self.sge_scratch[i] = ibv_sge {
                addr: w.addr,
                length: w.len,
                lkey: w.lkey,
            };
            self.wr_scratch[i] = ibv_recv_wr {
                wr_id: w.wr_id,
                // Links to the next entry of the scratch array (i + 1 < n <= burst_max).
                next: if i + 1 < n {
                    base.wrapping_add(i + 1)
                } else {
                    std::ptr::null_mut()
                },
                // Entry i of the SGE scratch (i < burst_max, its length).
                sg_list: sges.wrapping_add(i),
                num_sge: 1,
            };
        }
        let mut bad: *mut ibv_recv_wr = std::ptr::null_mut();
        // SAFETY: the QP is live and its provider's post_recv was checked at creation;
        // the list is well formed; the buffers are valid per the caller.
        let rc = unsafe { ((*(*qp).context).ops.post_recv.unwrap_unchecked())(qp, base, &mut bad) };
        let posted = if rc == 0 {
            n
        } else {
            self.counters.post_errors += 1;
            // SAFETY: on failure `bad` points into the list we passed (verbs.h).
            unsafe { bad.offset_from(base) }.clamp(0, n as isize) as usize
        };
        for i in 0..posted {
            self.ring.push_back(self.wr_scratch[i].wr_id);
        }
        self.counters.recv_posted += posted as u64;
        posted
    }

    /// Polls the receive CQ for up to `wc.len()` completions; each is matched with the
    /// front of the ring of posted receives. Returns how many were written to `wc`: only
    /// completions of work requests of the ring (others are counted and left out), so
    /// each `wr_id` returned was posted here and is returned once.
    #[inline]
    pub fn poll_burst(&mut self, wc: &mut [Wc]) -> usize {
        let n = match self.qp.recv_cq.poll_burst(wc) {
            Ok(n) => n,
            Err(_) => {
                self.counters.poll_errors += 1;
                return 0;
            }
        };
        let mut kept = 0;
        for i in 0..n {
            let w = wc[i];
            if !match_front(&mut self.ring, &w, self.qp.qpn, &mut self.counters) {
                continue;
            }
            if w.is_ok() {
                self.counters.recv_ok += 1;
            } else {
                self.counters.recv_errors += 1;
            }
            wc[kept] = w;
            kept += 1;
        }
        kept
    }

    /// After the QP was reset: the completions its CQ still held (they precede the
    /// reset), then the ids the reset discarded, in posting order. The ring is empty
    /// afterwards.
    pub fn drain(&mut self) -> (Vec<Wc>, Vec<u64>) {
        let mut done = Vec::new();
        let mut wc = [Wc::default(); 32];
        // In RESET nothing new completes: the CQ holds at most the ring's worth.
        for _ in 0..=self.cap.div_ceil(wc.len()) {
            let n = self.poll_burst(&mut wc);
            done.extend_from_slice(&wc[..n]);
            if n < wc.len() {
                break;
            }
        }
        (done, self.ring.drain(..).collect())
    }

    /// After the QP was destroyed: every id still posted (completed or not), in posting
    /// order; nothing is polled (the QP is gone, so the HCA writes none of them).
    pub fn take_all(&mut self) -> Vec<u64> {
        self.ring.drain(..).collect()
    }
}

/// The send queue of a UD QP, owned by one thread: posts signaled sends and polls their
/// completions in bursts, keeping the ring of what is outstanding and counting, in
/// posting order, what completed.
pub struct SendQueue {
    qp: Arc<QpHandle>,
    cap: usize,
    burst_max: usize,
    ring: VecDeque<u64>,
    completed: u64,
    wr_scratch: Vec<ibv_send_wr>,
    sge_scratch: Vec<ibv_sge>,
    counters: QpCounters,
}

// SAFETY: as for `RecvQueue`.
unsafe impl Send for SendQueue {}

impl std::fmt::Debug for SendQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendQueue")
            .field("qpn", &format_args!("{:#x}", self.qp.qpn))
            .field("outstanding", &self.ring.len())
            .field("cap", &self.cap)
            .field("completed", &self.completed)
            .finish()
    }
}

impl SendQueue {
    /// The send queue of `qp`, holding at most `cap` outstanding sends (at most the
    /// QP's send depth), posting at most `burst_max` per call.
    pub fn new(qp: &Arc<QpHandle>, cap: usize, burst_max: usize) -> SendQueue {
        let cap = cap.min(qp.send_cap as usize);
        let burst_max = burst_max.max(1);
        SendQueue {
            qp: qp.clone(),
            cap,
            burst_max,
            ring: VecDeque::with_capacity(cap),
            completed: 0,
            wr_scratch: vec![ibv_send_wr::default(); burst_max],
            sge_scratch: vec![ibv_sge::default(); burst_max],
            counters: QpCounters::default(),
        }
    }

    /// Sends posted (or taken unposted) and not yet completed.
    pub fn outstanding(&self) -> usize {
        self.ring.len()
    }

    /// Room for more sends.
    pub fn room(&self) -> usize {
        self.cap - self.ring.len()
    }

    /// Sends completed since creation (popped from the ring in order, [`UNPOSTED`] ones
    /// included).
    pub fn completed(&self) -> u64 {
        self.completed
    }

    /// The counters (send side).
    pub fn counters(&self) -> QpCounters {
        self.counters
    }

    /// Posts up to `min(wrs.len(), burst_max, room)` signaled sends as one linked list;
    /// returns how many were posted. A full send queue is back-pressure: the rest stays
    /// the caller's.
    ///
    /// # Safety
    /// Each buffer must lie inside the memory region of its `lkey` and stay valid until
    /// its send completion has been polled or a reset or the QP's destruction returned
    /// it; each `ah` must not be dropped before then either.
    pub unsafe fn post_burst(&mut self, wrs: &[SendWr<'_>]) -> usize {
        let raw = |i: usize| {
            let w = &wrs[i];
            RawSend {
                wr_id: w.wr_id,
                addr: w.addr,
                len: w.len,
                lkey: w.lkey,
                ah: w.ah.as_ptr(),
                remote_qpn: w.remote_qpn,
                remote_qkey: w.remote_qkey,
            }
        };
        // SAFETY: forwarded to the caller.
        unsafe { self.post_with(wrs.len(), raw) }
    }

    /// Posts up to `min(n, burst_max, room)` signaled sends, the `i`-th made by
    /// `wr(i)` (verbs.h's inline `ibv_post_send`: `qp->context->ops.post_send`); a
    /// payload of at most the QP's inline size goes inline. Returns how many were
    /// posted: the first ones.
    ///
    /// # Safety
    /// As [`SendQueue::post_burst`], for every work request `wr` makes (its `ah` a live
    /// address handle of the QP's protection domain).
    pub(crate) unsafe fn post_with(&mut self, n: usize, wr: impl Fn(usize) -> RawSend) -> usize {
        let want = n.min(self.burst_max);
        let n = want.min(self.room());
        if n < want {
            self.counters.send_full += 1;
        }
        let qp = self.qp.ptr();
        if n == 0 || qp.is_null() {
            return 0;
        }
        let base = self.wr_scratch.as_mut_ptr();
        let sges = self.sge_scratch.as_mut_ptr();
        for i in 0..n {
            let w = wr(i);
            debug_assert_ne!(w.wr_id, UNPOSTED, "wr_id u64::MAX is reserved");
            self.sge_scratch[i] = ibv_sge {
                addr: w.addr,
                length: w.len,
                lkey: w.lkey,
            };
            let inline = if w.len <= self.qp.max_inline {
                IBV_SEND_INLINE
            } else {
                0
            };
            let mut s = ibv_send_wr {
                wr_id: w.wr_id,
                // Links to the next entry of the scratch array (i + 1 < n <= burst_max).
                next: if i + 1 < n {
                    base.wrapping_add(i + 1)
                } else {
                    std::ptr::null_mut()
                },
                // Entry i of the SGE scratch (i < burst_max, its length).
                sg_list: sges.wrapping_add(i),
                num_sge: 1,
                opcode: IBV_WR_SEND,
                send_flags: IBV_SEND_SIGNALED | inline,
                ..Default::default()
            };
            s.wr.ud.ah = w.ah;
            s.wr.ud.remote_qpn = w.remote_qpn;
            s.wr.ud.remote_qkey = w.remote_qkey;
            self.wr_scratch[i] = s;
        }
        let mut bad: *mut ibv_send_wr = std::ptr::null_mut();
        // SAFETY: the QP is live and its provider's post_send was checked at creation;
        // the list is well formed; buffers and AHs are valid per the caller.
        let rc = unsafe { ((*(*qp).context).ops.post_send.unwrap_unchecked())(qp, base, &mut bad) };
        let posted = if rc == 0 {
            n
        } else {
            self.counters.post_errors += 1;
            // SAFETY: on failure `bad` points into the list we passed (verbs.h).
            unsafe { bad.offset_from(base) }.clamp(0, n as isize) as usize
        };
        for i in 0..posted {
            self.ring.push_back(self.wr_scratch[i].wr_id);
        }
        self.counters.send_posted += posted as u64;
        posted
    }

    /// Records a send taken and dropped without posting: it completes in order, when
    /// the sends posted before it have. Returns false (and records nothing) when the
    /// queue is full.
    pub fn push_unposted(&mut self) -> bool {
        if self.room() == 0 {
            return false;
        }
        self.ring.push_back(UNPOSTED);
        self.pop_unposted();
        true
    }

    /// Completes the [`UNPOSTED`] entries at the front of the ring.
    fn pop_unposted(&mut self) {
        while self.ring.front() == Some(&UNPOSTED) {
            self.ring.pop_front();
            self.completed += 1;
        }
    }

    /// Polls the send CQ for up to `wc.len()` completions, matched with the ring of
    /// outstanding sends: a send is complete (its buffer and AH free) once polled here.
    #[inline]
    pub fn poll_burst(&mut self, wc: &mut [Wc]) -> usize {
        self.pop_unposted();
        if self.ring.is_empty() {
            return 0;
        }
        let n = match self.qp.send_cq.poll_burst(wc) {
            Ok(n) => n,
            Err(_) => {
                self.counters.poll_errors += 1;
                return 0;
            }
        };
        let mut kept = 0;
        for i in 0..n {
            let w = wc[i];
            if !match_front(&mut self.ring, &w, self.qp.qpn, &mut self.counters) {
                continue;
            }
            self.completed += 1;
            self.pop_unposted();
            if w.is_ok() {
                self.counters.send_ok += 1;
            } else {
                self.counters.send_errors += 1;
            }
            wc[kept] = w;
            kept += 1;
        }
        kept
    }

    /// After the QP was reset: the completions its CQ still held, then the sends the
    /// reset discarded (counted as completed: they never will), in posting order,
    /// [`UNPOSTED`] ones left out. The ring is empty afterwards.
    pub fn drain(&mut self) -> (Vec<Wc>, Vec<u64>) {
        let mut done = Vec::new();
        let mut wc = [Wc::default(); 32];
        for _ in 0..=self.cap.div_ceil(wc.len()) {
            let n = self.poll_burst(&mut wc);
            done.extend_from_slice(&wc[..n]);
            if n < wc.len() {
                break;
            }
        }
        self.completed += self.ring.len() as u64;
        let rest = self.ring.drain(..).filter(|&id| id != UNPOSTED).collect();
        (done, rest)
    }

    /// After the QP was destroyed: every id still outstanding, [`UNPOSTED`] ones left
    /// out; nothing is polled.
    pub fn take_all(&mut self) -> Vec<u64> {
        self.completed += self.ring.len() as u64;
        self.ring.drain(..).filter(|&id| id != UNPOSTED).collect()
    }
}

/// A UD queue pair with both its queues, owned by one thread: `Send`, not `Sync`; every
/// data-path method takes `&mut self`.
pub struct UdQp {
    qp: Arc<QpHandle>,
    recv: RecvQueue,
    send: SendQueue,
    pkey_index: u16,
    qkey: u32,
}

impl std::fmt::Debug for UdQp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdQp")
            .field("qpn", &format_args!("{:#x}", self.qp.qpn))
            .field("pkey_index", &self.pkey_index)
            .field("recv_posted", &self.recv.posted())
            .field("send_outstanding", &self.send.outstanding())
            .finish()
    }
}

impl UdQp {
    /// Creates a UD QP on `pd` with its own send and receive CQs and brings it to RTS
    /// with `cfg.pkey_index` and `cfg.qkey`.
    pub fn new(
        pd: &Arc<Pd>,
        send_cq: &Arc<Cq>,
        recv_cq: &Arc<Cq>,
        cfg: &UdQpConfig,
    ) -> Result<UdQp, Error> {
        let qp = QpHandle::create(pd, send_cq, recv_cq, cfg)?;
        qp.bring_up(cfg.pkey_index, cfg.qkey)?;
        Ok(UdQp {
            recv: RecvQueue::new(&qp, qp.recv_cap as usize, cfg.burst_max),
            send: SendQueue::new(&qp, qp.send_cap as usize, cfg.burst_max),
            qp,
            pkey_index: cfg.pkey_index,
            qkey: cfg.qkey,
        })
    }

    /// The QP number.
    pub fn qpn(&self) -> u32 {
        self.qp.qpn
    }

    /// The P_Key index it is on.
    pub fn pkey_index(&self) -> u16 {
        self.pkey_index
    }

    /// The counters of both queues.
    pub fn counters(&self) -> QpCounters {
        self.recv.counters.merge(self.send.counters)
    }

    /// Receives posted and not yet completed.
    pub fn recv_posted(&self) -> usize {
        self.recv.posted()
    }

    /// Room in the receive queue.
    pub fn recv_room(&self) -> usize {
        self.recv.room()
    }

    /// Sends posted and not yet completed.
    pub fn send_outstanding(&self) -> usize {
        self.send.outstanding()
    }

    /// Room in the send queue.
    pub fn send_room(&self) -> usize {
        self.send.room()
    }

    /// Changes the Q_Key the QP accepts (RTS -> RTS).
    pub fn set_qkey(&mut self, qkey: u32) -> Result<(), Error> {
        self.qp.set_qkey(qkey)?;
        self.qkey = qkey;
        Ok(())
    }

    /// Moves the QP to another P_Key index through RESET (a verbs QP cannot change it in
    /// RTS), as the kernel's IPoIB does after a P_Key change. Returns what the reset took
    /// off the QP; the QP is back in RTS with nothing posted.
    pub fn move_pkey_index(&mut self, pkey_index: u16) -> Result<QpReset, Error> {
        let out = self.reset()?;
        self.qp.bring_up(pkey_index, self.qkey)?;
        self.pkey_index = pkey_index;
        Ok(out)
    }

    /// Moves the QP to RESET and returns every posted work request: completions still in
    /// the CQs are polled (they precede the reset), the rest of each ring is what the
    /// reset discarded. The QP stays in RESET until [`UdQp::move_pkey_index`] or drop.
    pub fn reset(&mut self) -> Result<QpReset, Error> {
        self.qp.reset()?;
        let (recv_completed, recv_unused) = self.recv.drain();
        let (send_completed, send_unfinished) = self.send.drain();
        Ok(QpReset {
            recv_completed,
            recv_unused,
            send_completed,
            send_unfinished,
        })
    }

    /// Attaches the QP to a multicast group (`ibv_attach_mcast`).
    pub fn attach_mcast(&self, mgid: &[u8; 16], mlid: u16) -> Result<(), Error> {
        self.qp.attach_mcast(mgid, mlid)
    }

    /// Detaches the QP from a multicast group (`ibv_detach_mcast`).
    pub fn detach_mcast(&self, mgid: &[u8; 16], mlid: u16) -> Result<(), Error> {
        self.qp.detach_mcast(mgid, mlid)
    }

    /// Posts up to `min(wrs.len(), burst_max, recv_room)` receives as one linked list;
    /// returns how many were posted. What was not posted stays the caller's.
    ///
    /// # Safety
    /// As [`RecvQueue::post_burst`].
    pub unsafe fn post_recv_burst(&mut self, wrs: &[RecvWr]) -> usize {
        // SAFETY: forwarded to the caller.
        unsafe { self.recv.post_burst(wrs) }
    }

    /// Posts up to `min(wrs.len(), burst_max, send_room)` signaled sends as one linked
    /// list; returns how many were posted.
    ///
    /// # Safety
    /// As [`SendQueue::post_burst`].
    pub unsafe fn post_send_burst(&mut self, wrs: &[SendWr<'_>]) -> usize {
        // SAFETY: forwarded to the caller.
        unsafe { self.send.post_burst(wrs) }
    }

    /// Polls the receive CQ for up to `wc.len()` completions (see
    /// [`RecvQueue::poll_burst`]).
    pub fn poll_recv_burst(&mut self, wc: &mut [Wc]) -> usize {
        self.recv.poll_burst(wc)
    }

    /// Polls the send CQ for up to `wc.len()` completions (see
    /// [`SendQueue::poll_burst`]).
    pub fn poll_send_burst(&mut self, wc: &mut [Wc]) -> usize {
        self.send.poll_burst(wc)
    }
}

impl Drop for UdQp {
    fn drop(&mut self) {
        if self.recv.posted() > 0 || self.send.outstanding() > 0 {
            tracing::warn!(
                qpn = self.qp.qpn,
                recv = self.recv.posted(),
                send = self.send.outstanding(),
                "UD QP destroyed with work requests posted: their buffers are not returned \
                 (reset() first)"
            );
        }
    }
}

/// The depths and inline size the provider gave a QP.
struct QpCaps {
    send: u32,
    recv: u32,
    inline: u32,
}

/// `ibv_create_qp`, or verbs.h's inline `ibv_create_qp_ex` when a create flag is needed.
/// Returns the QP and what the provider gave it.
fn create_qp(
    pd: &Arc<Pd>,
    send_cq: &Cq,
    recv_cq: &Cq,
    cfg: &UdQpConfig,
) -> Result<(NonNull<ibv_qp>, QpCaps), Error> {
    let ctx = pd.context();
    let mut a = ibv_qp_init_attr_ex {
        send_cq: send_cq.as_ptr(),
        recv_cq: recv_cq.as_ptr(),
        qp_type: IBV_QPT_UD,
        sq_sig_all: 1,
        comp_mask: IBV_QP_INIT_ATTR_PD,
        pd: pd.as_ptr(),
        ..Default::default()
    };
    a.cap.max_send_wr = cfg.max_send_wr;
    a.cap.max_recv_wr = cfg.max_recv_wr;
    a.cap.max_send_sge = 1;
    a.cap.max_recv_sge = 1;
    a.cap.max_inline_data = cfg.max_inline;
    let block = cfg.self_mcast == SelfMcastLoopback::Block;
    let qp = if block {
        a.comp_mask |= IBV_QP_INIT_ATTR_CREATE_FLAGS;
        a.create_flags = IBV_QP_CREATE_BLOCK_SELF_MCAST_LB;
        let op = std::mem::offset_of!(verbs_context, create_qp_ex);
        // SAFETY: the context is live.
        match unsafe { verbs_ctx_op(ctx.as_ptr(), op) } {
            // SAFETY: the op is non-null (checked); `a` is a valid attribute struct.
            Some(v) => unsafe { ((*v).create_qp_ex.unwrap_unchecked())(ctx.as_ptr(), &mut a) },
            None => std::ptr::null_mut(),
        }
    } else {
        // SAFETY: ibv_qp_init_attr_ex starts with ibv_qp_init_attr's fields (verbs.h's
        // ibv_create_qp_ex casts it the same way); the PD and CQs are live.
        unsafe {
            ctx.lib()
                .ibv
                .ibv_create_qp(pd.as_ptr(), (&mut a as *mut ibv_qp_init_attr_ex).cast())
        }
    };
    let Some(qp) = NonNull::new(qp) else {
        let e = errno();
        if block && matches!(e, libc::EINVAL | libc::EOPNOTSUPP | 0) {
            return Err(Error::Unsupported {
                device: ctx.name().to_owned(),
                what: "block a QP's own multicast loopback (IBV_QP_CREATE_BLOCK_SELF_MCAST_LB)",
                fix: "create the QP with SelfMcastLoopback::Allow and drop its own packets by source QPN",
            });
        }
        return Err(Error::verbs("ibv_create_qp", ctx.name(), e));
    };
    // SAFETY: the QP's context is live; the provider filled in the ops table.
    let ops = unsafe { &(*(*qp.as_ptr()).context).ops };
    if ops.post_send.is_none() || ops.post_recv.is_none() {
        // SAFETY: destroyed once, before it is used.
        unsafe { ctx.lib().ibv.ibv_destroy_qp(qp.as_ptr()) };
        return Err(Error::Unsupported {
            device: ctx.name().to_owned(),
            what: "post work requests (its provider has no ops.post_send/post_recv)",
            fix: "use a provider that implements the data path (ibverbs-providers)",
        });
    }
    let cap = QpCaps {
        send: a.cap.max_send_wr,
        recv: a.cap.max_recv_wr,
        inline: a.cap.max_inline_data,
    };
    Ok((qp, cap))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::verbs::ibv_wc;

    fn wc(wr_id: u64, qp_num: u32) -> Wc {
        let mut w = ibv_wc {
            wr_id,
            qp_num,
            ..Default::default()
        };
        w.status = 0;
        // SAFETY: Wc is repr(transparent) over ibv_wc.
        unsafe { std::mem::transmute::<ibv_wc, Wc>(w) }
    }

    #[test]
    fn completions_pop_the_ring_in_order_and_foreign_ones_are_counted() {
        let mut ring: VecDeque<u64> = (1..=3).collect();
        let mut c = QpCounters::default();
        assert!(match_front(&mut ring, &wc(1, 7), 7, &mut c));
        assert!(!match_front(&mut ring, &wc(2, 9), 7, &mut c));
        assert_eq!(c.foreign_completions, 1);
        assert_eq!(ring, [2, 3]);
        assert!(match_front(&mut ring, &wc(2, 7), 7, &mut c));
        assert!(match_front(&mut ring, &wc(3, 7), 7, &mut c));
        assert!(ring.is_empty());
        assert_eq!(c.ring_mismatch, 0);
    }
}
