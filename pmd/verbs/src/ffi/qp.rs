//! UD queue pairs: the QP itself ([`QpHandle`]: creation, state transitions, multicast)
//! and how it is asked for ([`UdQpConfig`]). Its two queues are in `queue.rs`, the three
//! together for one owner ([`UdQp`](super::UdQp)) in `udqp.rs`.
//!
//! The two queues may be owned by two threads (the driver's receive and send queues):
//! each is `Send` and moves only its own ring; the [`QpHandle`] they share is `Sync`
//! (state changes and multicast attach are thread-safe verbs).

use std::ptr::NonNull;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Arc;

use super::{errno, verbs_ctx_op, Cq, Pd};
use crate::sys::verbs::{
    ibv_gid, ibv_qp, ibv_qp_attr, ibv_qp_init_attr_ex, verbs_context, IBV_QPS_INIT, IBV_QPS_RESET,
    IBV_QPS_RTR, IBV_QPS_RTS, IBV_QPT_UD, IBV_QP_CREATE_BLOCK_SELF_MCAST_LB,
    IBV_QP_INIT_ATTR_CREATE_FLAGS, IBV_QP_INIT_ATTR_PD, IBV_QP_PKEY_INDEX, IBV_QP_PORT,
    IBV_QP_QKEY, IBV_QP_SQ_PSN, IBV_QP_STATE,
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
    pub(super) pd: Arc<Pd>,
    pub(super) send_cq: Arc<Cq>,
    pub(super) recv_cq: Arc<Cq>,
    /// Null once destroyed.
    qp: AtomicPtr<ibv_qp>,
    pub(super) qpn: u32,
    pub(super) port_num: u8,
    pub(super) send_cap: u32,
    pub(super) recv_cap: u32,
    pub(super) max_inline: u32,
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
