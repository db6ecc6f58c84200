//! UD queue pairs: creation, state transitions, posting and polling in bursts, and the
//! rings of posted work-request ids that let the driver give every buffer back.
//!
//! Completion order: a UD QP's receive queue completes in posting order, and so does its
//! send queue (every send is signaled), so each ring's front is the next completion's
//! `wr_id`; the two are checked against each other on every completion (a mismatch is
//! counted, and asserted in debug builds). The QP's two CQs are its own: a completion of
//! another QP found there is counted and not matched.

use std::collections::VecDeque;
use std::ptr::NonNull;
use std::sync::Arc;

use super::{errno, verbs_ctx_op, Ah, Cq, Pd, Wc};
use crate::sys::verbs::{
    ibv_gid, ibv_qp, ibv_qp_attr, ibv_qp_init_attr_ex, ibv_recv_wr, ibv_send_wr, ibv_sge,
    verbs_context, IBV_QPS_INIT, IBV_QPS_RESET, IBV_QPS_RTR, IBV_QPS_RTS, IBV_QPT_UD,
    IBV_QP_CREATE_BLOCK_SELF_MCAST_LB, IBV_QP_INIT_ATTR_CREATE_FLAGS, IBV_QP_INIT_ATTR_PD,
    IBV_QP_PKEY_INDEX, IBV_QP_PORT, IBV_QP_QKEY, IBV_QP_SQ_PSN, IBV_QP_STATE, IBV_SEND_INLINE,
    IBV_SEND_SIGNALED, IBV_WR_SEND,
};
use crate::Error;

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
    /// Returned in the completion.
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

/// A UD queue pair, owned by one lcore: `Send`, not `Sync`; every data-path method takes
/// `&mut self`.
pub struct UdQp {
    pd: Arc<Pd>,
    send_cq: Arc<Cq>,
    recv_cq: Arc<Cq>,
    qp: NonNull<ibv_qp>,
    qpn: u32,
    cfg: UdQpConfig,
    send_cap: usize,
    recv_cap: usize,
    recv_ring: VecDeque<u64>,
    send_ring: VecDeque<u64>,
    recv_scratch: Vec<ibv_recv_wr>,
    send_scratch: Vec<ibv_send_wr>,
    sge_scratch: Vec<ibv_sge>,
    counters: QpCounters,
}

// SAFETY: the QP handle and the scratch arrays' pointers are owned by this value; the
// provider allows a QP to be used from any one thread at a time, and `&mut self` on
// every data-path method makes that one thread.
unsafe impl Send for UdQp {}

impl std::fmt::Debug for UdQp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdQp")
            .field("qpn", &format_args!("{:#x}", self.qpn))
            .field("pkey_index", &self.cfg.pkey_index)
            .field("recv_posted", &self.recv_ring.len())
            .field("send_outstanding", &self.send_ring.len())
            .finish()
    }
}

fn config_error(field: &'static str, value: u64, fix: &'static str) -> Error {
    Error::Config {
        what: "UD QP",
        field,
        value,
        fix,
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
        let burst = cfg.burst_max;
        let mut q = UdQp {
            pd: pd.clone(),
            send_cq: send_cq.clone(),
            recv_cq: recv_cq.clone(),
            qp,
            qpn,
            cfg: *cfg,
            send_cap: cap.0 as usize,
            recv_cap: cap.1 as usize,
            recv_ring: VecDeque::with_capacity(cap.1 as usize),
            send_ring: VecDeque::with_capacity(cap.0 as usize),
            recv_scratch: vec![ibv_recv_wr::default(); burst],
            send_scratch: vec![ibv_send_wr::default(); burst],
            sge_scratch: vec![ibv_sge::default(); burst],
            counters: QpCounters::default(),
        };
        q.bring_up(cfg.pkey_index)?;
        Ok(q)
    }

    /// The QP number.
    pub fn qpn(&self) -> u32 {
        self.qpn
    }

    /// The P_Key index it is on.
    pub fn pkey_index(&self) -> u16 {
        self.cfg.pkey_index
    }

    /// The counters.
    pub fn counters(&self) -> QpCounters {
        self.counters
    }

    /// Receives posted and not yet completed.
    pub fn recv_posted(&self) -> usize {
        self.recv_ring.len()
    }

    /// Room in the receive queue.
    pub fn recv_room(&self) -> usize {
        self.recv_cap - self.recv_ring.len()
    }

    /// Sends posted and not yet completed.
    pub fn send_outstanding(&self) -> usize {
        self.send_ring.len()
    }

    /// Room in the send queue.
    pub fn send_room(&self) -> usize {
        self.send_cap - self.send_ring.len()
    }

    fn device(&self) -> &str {
        self.pd.context().name()
    }

    fn modify(&mut self, attr: &mut ibv_qp_attr, mask: u32, op: &'static str) -> Result<(), Error> {
        // SAFETY: the QP is live and owned; `attr` is a valid attribute struct.
        let rc = unsafe {
            self.pd
                .context()
                .lib()
                .ibv
                .ibv_modify_qp(self.qp.as_ptr(), attr, mask as i32)
        };
        if rc != 0 {
            return Err(Error::verbs(op, self.device(), rc));
        }
        Ok(())
    }

    /// RESET -> INIT (port, P_Key index, Q_Key) -> RTR -> RTS.
    fn bring_up(&mut self, pkey_index: u16) -> Result<(), Error> {
        let mut a = ibv_qp_attr {
            qp_state: IBV_QPS_INIT,
            pkey_index,
            port_num: self.cfg.port_num,
            qkey: self.cfg.qkey,
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
        self.modify(&mut a, IBV_QP_STATE | IBV_QP_SQ_PSN, "ibv_modify_qp(RTS)")?;
        self.cfg.pkey_index = pkey_index;
        Ok(())
    }

    /// Changes the Q_Key the QP accepts (RTS -> RTS), as IPoIB does when it learns the
    /// broadcast group's.
    pub fn set_qkey(&mut self, qkey: u32) -> Result<(), Error> {
        let mut a = ibv_qp_attr {
            qkey,
            ..Default::default()
        };
        self.modify(&mut a, IBV_QP_QKEY, "ibv_modify_qp(Q_Key)")?;
        self.cfg.qkey = qkey;
        Ok(())
    }

    /// Moves the QP to another P_Key index through RESET (a verbs QP cannot change it in
    /// RTS), as the kernel's IPoIB does after a P_Key change. The owner must have parked
    /// it (`&mut self`). Returns what the reset took off the QP; the QP is back in RTS
    /// with nothing posted.
    pub fn move_pkey_index(&mut self, pkey_index: u16) -> Result<QpReset, Error> {
        let out = self.reset()?;
        self.bring_up(pkey_index)?;
        Ok(out)
    }

    /// Moves the QP to RESET and returns every posted work request: completions still in
    /// the CQs are polled (they precede the reset), the rest of each ring is what the
    /// reset discarded. The QP stays in RESET until [`UdQp::move_pkey_index`] or drop.
    pub fn reset(&mut self) -> Result<QpReset, Error> {
        let mut a = ibv_qp_attr {
            qp_state: IBV_QPS_RESET,
            ..Default::default()
        };
        self.modify(&mut a, IBV_QP_STATE, "ibv_modify_qp(RESET)")?;
        let mut out = QpReset::default();
        let mut wc = [Wc::default(); 32];
        // In RESET nothing new completes: the CQs hold at most the rings' worth.
        for _ in 0..=self.recv_cap.div_ceil(wc.len()) {
            let n = self.poll_recv_burst(&mut wc);
            out.recv_completed.extend_from_slice(&wc[..n]);
            if n < wc.len() {
                break;
            }
        }
        for _ in 0..=self.send_cap.div_ceil(wc.len()) {
            let n = self.poll_send_burst(&mut wc);
            out.send_completed.extend_from_slice(&wc[..n]);
            if n < wc.len() {
                break;
            }
        }
        out.recv_unused = self.recv_ring.drain(..).collect();
        out.send_unfinished = self.send_ring.drain(..).collect();
        Ok(out)
    }

    /// Attaches the QP to a multicast group (`ibv_attach_mcast`).
    pub fn attach_mcast(&self, mgid: &[u8; 16], mlid: u16) -> Result<(), Error> {
        let g = ibv_gid { raw: *mgid };
        // SAFETY: the QP is live; `g` is a valid GID.
        let rc = unsafe {
            self.pd
                .context()
                .lib()
                .ibv
                .ibv_attach_mcast(self.qp.as_ptr(), &g, mlid)
        };
        if rc != 0 {
            return Err(Error::verbs("ibv_attach_mcast", self.device(), rc));
        }
        Ok(())
    }

    /// Detaches the QP from a multicast group (`ibv_detach_mcast`).
    pub fn detach_mcast(&self, mgid: &[u8; 16], mlid: u16) -> Result<(), Error> {
        let g = ibv_gid { raw: *mgid };
        // SAFETY: the QP is live; `g` is a valid GID.
        let rc = unsafe {
            self.pd
                .context()
                .lib()
                .ibv
                .ibv_detach_mcast(self.qp.as_ptr(), &g, mlid)
        };
        if rc != 0 {
            return Err(Error::verbs("ibv_detach_mcast", self.device(), rc));
        }
        Ok(())
    }

    /// Posts up to `min(wrs.len(), burst_max, recv_room)` receives as one linked list
    /// (verbs.h's inline `ibv_post_recv`: `qp->context->ops.post_recv`); returns how
    /// many were posted. What was not posted stays the caller's.
    ///
    /// # Safety
    /// Each buffer must lie inside the memory region of its `lkey` and stay valid, and
    /// untouched by the caller, until its completion has been polled or a reset
    /// returned it.
    pub unsafe fn post_recv_burst(&mut self, wrs: &[RecvWr]) -> usize {
        let n = wrs.len().min(self.cfg.burst_max).min(self.recv_room());
        if n == 0 {
            return 0;
        }
        let base = self.recv_scratch.as_mut_ptr();
        for (i, w) in wrs[..n].iter().enumerate() {
            self.sge_scratch[i] = ibv_sge {
                addr: w.addr,
                length: w.len,
                lkey: w.lkey,
            };
            self.recv_scratch[i] = ibv_recv_wr {
                wr_id: w.wr_id,
                // Links to the next entry of the scratch array (i + 1 < n <= burst_max).
                next: if i + 1 < n {
                    base.wrapping_add(i + 1)
                } else {
                    std::ptr::null_mut()
                },
                // Entry i of the SGE scratch (i < burst_max, its length).
                sg_list: self.sge_scratch.as_mut_ptr().wrapping_add(i),
                num_sge: 1,
            };
        }
        let mut bad: *mut ibv_recv_wr = std::ptr::null_mut();
        let qp = self.qp.as_ptr();
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
        self.recv_ring.extend(wrs[..posted].iter().map(|w| w.wr_id));
        self.counters.recv_posted += posted as u64;
        posted
    }

    /// Posts up to `min(wrs.len(), burst_max, send_room)` signaled sends as one linked
    /// list (verbs.h's inline `ibv_post_send`: `qp->context->ops.post_send`); returns how
    /// many were posted. A full send queue is back-pressure: the rest stays the caller's.
    ///
    /// # Safety
    /// Each buffer must lie inside the memory region of its `lkey` and stay valid until
    /// its send completion has been polled or a reset returned it; each `ah` must not be
    /// dropped before then either.
    pub unsafe fn post_send_burst(&mut self, wrs: &[SendWr<'_>]) -> usize {
        let n = wrs.len().min(self.cfg.burst_max).min(self.send_room());
        if n < wrs.len() && n < self.cfg.burst_max {
            self.counters.send_full += 1;
        }
        if n == 0 {
            return 0;
        }
        let base = self.send_scratch.as_mut_ptr();
        for (i, w) in wrs[..n].iter().enumerate() {
            self.sge_scratch[i] = ibv_sge {
                addr: w.addr,
                length: w.len,
                lkey: w.lkey,
            };
            let inline = if w.len <= self.cfg.max_inline {
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
                sg_list: self.sge_scratch.as_mut_ptr().wrapping_add(i),
                num_sge: 1,
                opcode: IBV_WR_SEND,
                send_flags: IBV_SEND_SIGNALED | inline,
                ..Default::default()
            };
            s.wr.ud.ah = w.ah.as_ptr();
            s.wr.ud.remote_qpn = w.remote_qpn;
            s.wr.ud.remote_qkey = w.remote_qkey;
            self.send_scratch[i] = s;
        }
        let mut bad: *mut ibv_send_wr = std::ptr::null_mut();
        let qp = self.qp.as_ptr();
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
        self.send_ring.extend(wrs[..posted].iter().map(|w| w.wr_id));
        self.counters.send_posted += posted as u64;
        posted
    }

    /// Polls the receive CQ for up to `wc.len()` completions; each is matched with the
    /// front of the ring of posted receives. Returns how many were written to `wc`.
    pub fn poll_recv_burst(&mut self, wc: &mut [Wc]) -> usize {
        let n = match self.recv_cq.poll_burst(wc) {
            Ok(n) => n,
            Err(_) => {
                self.counters.poll_errors += 1;
                return 0;
            }
        };
        for w in &wc[..n] {
            match_front(&mut self.recv_ring, w, self.qpn, &mut self.counters);
            if w.is_ok() {
                self.counters.recv_ok += 1;
            } else {
                self.counters.recv_errors += 1;
            }
        }
        n
    }

    /// Polls the send CQ for up to `wc.len()` completions, matched with the ring of
    /// posted sends: a send is complete (its buffer and AH free) once polled here.
    pub fn poll_send_burst(&mut self, wc: &mut [Wc]) -> usize {
        let n = match self.send_cq.poll_burst(wc) {
            Ok(n) => n,
            Err(_) => {
                self.counters.poll_errors += 1;
                return 0;
            }
        };
        for w in &wc[..n] {
            match_front(&mut self.send_ring, w, self.qpn, &mut self.counters);
            if w.is_ok() {
                self.counters.send_ok += 1;
            } else {
                self.counters.send_errors += 1;
            }
        }
        n
    }
}

/// Pops the ring's front for a completion of this QP, checking that it is the
/// completion's wr_id (pairs with the push when posting).
fn match_front(ring: &mut VecDeque<u64>, w: &Wc, qpn: u32, c: &mut QpCounters) {
    if w.qp_num() != qpn {
        c.foreign_completions += 1;
        return;
    }
    match ring.front() {
        Some(&id) if id == w.wr_id() => {
            ring.pop_front();
        }
        _ => {
            c.ring_mismatch += 1;
            debug_assert!(false, "completion {:#x} is not the ring's front", w.wr_id());
            if let Some(i) = ring.iter().position(|&id| id == w.wr_id()) {
                ring.remove(i);
            }
        }
    }
}

/// `ibv_create_qp`, or verbs.h's inline `ibv_create_qp_ex` when a create flag is needed.
/// Returns the QP and its real (send, recv) depths.
fn create_qp(
    pd: &Arc<Pd>,
    send_cq: &Cq,
    recv_cq: &Cq,
    cfg: &UdQpConfig,
) -> Result<(NonNull<ibv_qp>, (u32, u32)), Error> {
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
    Ok((qp, (a.cap.max_send_wr, a.cap.max_recv_wr)))
}

impl Drop for UdQp {
    fn drop(&mut self) {
        if !self.recv_ring.is_empty() || !self.send_ring.is_empty() {
            tracing::warn!(
                qpn = self.qpn,
                recv = self.recv_ring.len(),
                send = self.send_ring.len(),
                "UD QP destroyed with work requests posted: their buffers are not returned \
                 (reset() first)"
            );
        }
        // SAFETY: destroyed once; the CQs and PD outlive it (Arcs held).
        let rc = unsafe { self.pd.context().lib().ibv.ibv_destroy_qp(self.qp.as_ptr()) };
        if rc != 0 {
            tracing::warn!(qpn = self.qpn, rc, "ibv_destroy_qp failed");
        }
    }
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
        match_front(&mut ring, &wc(1, 7), 7, &mut c);
        match_front(&mut ring, &wc(2, 9), 7, &mut c);
        assert_eq!(c.foreign_completions, 1);
        assert_eq!(ring, [2, 3]);
        match_front(&mut ring, &wc(2, 7), 7, &mut c);
        match_front(&mut ring, &wc(3, 7), 7, &mut c);
        assert!(ring.is_empty());
        assert_eq!(c.ring_mismatch, 0);
    }
}
