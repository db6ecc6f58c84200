//! A UD QP with both its queues, for one owner: the low-level API the verbs tests use.

use std::sync::Arc;

use super::{Cq, Pd, QpCounters, QpHandle, RecvQueue, RecvWr, SendQueue, SendWr, UdQpConfig, Wc};
use crate::Error;

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
        self.recv.counters().merge(self.send.counters())
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
