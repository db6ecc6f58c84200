//! Completion queues and polling in bursts.

use std::ptr::NonNull;
use std::sync::Arc;

use super::Context;
use crate::sys::verbs::{ibv_cq, ibv_wc, IBV_WC_GRH, IBV_WC_RECV, IBV_WC_SEND, IBV_WC_SUCCESS};
use crate::Error;

/// A completion queue (`ibv_create_cq`), without a completion channel: it is polled.
pub struct Cq {
    ctx: Arc<Context>,
    cq: NonNull<ibv_cq>,
    cqe: u32,
}

// SAFETY: providers lock their CQs; the handle may move between threads.
unsafe impl Send for Cq {}
// SAFETY: ibv_poll_cq is thread-safe in libibverbs providers (they lock); the driver
// polls each CQ from one lcore anyway.
unsafe impl Sync for Cq {}

impl std::fmt::Debug for Cq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cq").field("cqe", &self.cqe).finish()
    }
}

/// One work completion, as the provider wrote it (`struct ibv_wc`), plain data for burst
/// arrays.
#[derive(Clone, Copy, Default)]
#[repr(transparent)]
pub struct Wc(ibv_wc);

/// What a completion completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WcOpcode {
    /// A send.
    Send,
    /// A receive.
    Recv,
    /// Anything else (`ibv_wc_opcode`).
    Other(u32),
}

impl Wc {
    /// The work request's id.
    pub fn wr_id(&self) -> u64 {
        self.0.wr_id
    }
    /// True when the work request succeeded.
    pub fn is_ok(&self) -> bool {
        self.0.status == IBV_WC_SUCCESS
    }
    /// `ibv_wc_status`.
    pub fn status(&self) -> u32 {
        self.0.status
    }
    /// What completed. Only valid for successful completions (verbs.h).
    pub fn opcode(&self) -> WcOpcode {
        match self.0.opcode {
            IBV_WC_SEND => WcOpcode::Send,
            IBV_WC_RECV => WcOpcode::Recv,
            o => WcOpcode::Other(o),
        }
    }
    /// Bytes received, the 40-byte GRH area included.
    pub fn byte_len(&self) -> u32 {
        self.0.byte_len
    }
    /// The sender's QPN (receives).
    pub fn src_qp(&self) -> u32 {
        self.0.src_qp
    }
    /// The sender's LID (receives, InfiniBand).
    pub fn slid(&self) -> u16 {
        self.0.slid
    }
    /// The P_Key index the packet came in on (receives, GSI QPs).
    pub fn pkey_index(&self) -> u16 {
        self.0.pkey_index
    }
    /// The QP the completion belongs to.
    pub fn qp_num(&self) -> u32 {
        self.0.qp_num
    }
    /// Whether the first 40 bytes of the buffer hold a GRH (always on RoCE).
    pub fn has_grh(&self) -> bool {
        self.0.wc_flags & IBV_WC_GRH != 0
    }
}

impl std::fmt::Debug for Wc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wc")
            .field("wr_id", &format_args!("{:#x}", self.0.wr_id))
            .field("status", &self.0.status)
            .field("opcode", &self.0.opcode)
            .field("byte_len", &self.0.byte_len)
            .field("src_qp", &self.0.src_qp)
            .finish()
    }
}

impl Cq {
    /// Creates a CQ of at least `cqe` entries on `ctx`.
    pub fn new(ctx: &Arc<Context>, cqe: u32) -> Result<Arc<Cq>, Error> {
        if cqe == 0 || cqe > i32::MAX as u32 {
            return Err(Error::Config {
                what: "CQ",
                field: "cqe",
                value: u64::from(cqe),
                fix: "between 1 and the device's max_cqe",
            });
        }
        // SAFETY: the context is live; no channel, no context pointer, vector 0.
        let cq = unsafe {
            ctx.lib().ibv.ibv_create_cq(
                ctx.as_ptr(),
                cqe as i32,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
            )
        };
        let cq = NonNull::new(cq).ok_or_else(|| Error::verbs_errno("ibv_create_cq", ctx.name()))?;
        // SAFETY: the context is live; its ops table is filled in by the provider.
        if unsafe { (*ctx.as_ptr()).ops.poll_cq }.is_none() {
            return Err(Error::Unsupported {
                device: ctx.name().to_owned(),
                what: "poll a CQ (its provider has no ops.poll_cq)",
                fix: "use a provider that implements the data path (ibverbs-providers)",
            });
        }
        // SAFETY: the provider sets the real size at creation.
        let real = unsafe { (*cq.as_ptr()).cqe } as u32;
        Ok(Arc::new(Cq {
            ctx: ctx.clone(),
            cq,
            cqe: real,
        }))
    }

    /// The number of entries the provider gave it.
    pub fn cqe(&self) -> u32 {
        self.cqe
    }

    pub(crate) fn as_ptr(&self) -> *mut ibv_cq {
        self.cq.as_ptr()
    }

    /// Polls up to `wc.len()` completions (verbs.h's inline `ibv_poll_cq`:
    /// `cq->context->ops.poll_cq`). `Err(rc)` when the provider reports an error.
    #[inline]
    pub(crate) fn poll_burst(&self, wc: &mut [Wc]) -> Result<usize, i32> {
        let cq = self.as_ptr();
        // SAFETY: the CQ and its context are live; ops.poll_cq was checked non-null at
        // creation; `Wc` is `ibv_wc` (repr transparent) and the slice has room for `len`
        // of them.
        let n = unsafe {
            let poll = (*(*cq).context).ops.poll_cq.unwrap_unchecked();
            poll(
                cq,
                wc.len().min(i32::MAX as usize) as i32,
                wc.as_mut_ptr().cast(),
            )
        };
        if n < 0 {
            Err(n)
        } else {
            Ok(n as usize)
        }
    }
}

impl Drop for Cq {
    fn drop(&mut self) {
        // SAFETY: QPs hold an Arc to their CQs, so none is left; destroyed once.
        let rc = unsafe { self.ctx.lib().ibv.ibv_destroy_cq(self.as_ptr()) };
        if rc != 0 {
            tracing::warn!(rc, "ibv_destroy_cq failed");
        }
    }
}
