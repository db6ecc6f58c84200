//! The two queues of a UD QP, each owned by one thread: [`RecvQueue`] and [`SendQueue`]
//! post and poll in bursts, each with the ring of posted work-request ids that lets the
//! driver give every buffer back.
//!
//! Completion order: a UD QP's receive queue completes in posting order, and so does its
//! send queue (every send is signaled), so each ring's front is the next completion's
//! `wr_id`; the two are checked against each other on every completion (a mismatch is
//! counted, and asserted in debug builds). The QP's two CQs are its own: a completion of
//! another QP found there is counted and not matched.

use std::collections::VecDeque;
use std::sync::Arc;

use super::{Ah, QpHandle, Wc};
use crate::sys::verbs::{
    ibv_ah, ibv_recv_wr, ibv_send_wr, ibv_sge, IBV_SEND_INLINE, IBV_SEND_SIGNALED, IBV_WR_SEND,
};

/// The `wr_id` that marks a send taken and dropped without being posted (its pool could
/// not be registered): it completes, in order, when it reaches the front of the ring.
/// No posted send may use it.
pub const UNPOSTED: u64 = u64::MAX;

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
    pub(super) fn merge(self, o: QpCounters) -> QpCounters {
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

/// How many work requests of the list of `n` at `base` a post call took: all of them
/// when it returned 0; else those before `bad`, the one it stopped at (verbs.h), and
/// the failure is counted.
///
/// # Safety
/// When `rc` is not 0, `bad` must point into the list.
unsafe fn posted_of<T>(rc: i32, base: *mut T, bad: *mut T, n: usize, c: &mut QpCounters) -> usize {
    if rc == 0 {
        return n;
    }
    c.post_errors += 1;
    // SAFETY: `bad` points into the list that starts at `base` (the caller's contract).
    unsafe { bad.offset_from(base) }.clamp(0, n as isize) as usize
}

/// After a QP was reset: what its CQ still holds, polled by `poll` in bursts of 32
/// until a burst comes back short. In RESET nothing new completes, so the CQ holds at
/// most the ring's worth (`cap`): at most `cap / 32 + 1` bursts are polled.
fn drain_cq(cap: usize, mut poll: impl FnMut(&mut [Wc]) -> usize) -> Vec<Wc> {
    let mut done = Vec::new();
    let mut wc = [Wc::default(); 32];
    for _ in 0..=cap.div_ceil(wc.len()) {
        let n = poll(&mut wc);
        done.extend_from_slice(&wc[..n]);
        if n < wc.len() {
            break;
        }
    }
    done
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
        // SAFETY: on failure `bad` points into the list we passed (verbs.h).
        let posted = unsafe { posted_of(rc, base, bad, n, &mut self.counters) };
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
        let done = drain_cq(self.cap, |wc| self.poll_burst(wc));
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
        // SAFETY: on failure `bad` points into the list we passed (verbs.h).
        let posted = unsafe { posted_of(rc, base, bad, n, &mut self.counters) };
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
        let done = drain_cq(self.cap, |wc| self.poll_burst(wc));
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
