//! The only module with raw pointers (STYLE rule 12). Each verbs object is an owning type
//! that holds an `Arc` to what it was created from, so `Drop` runs in dependency order
//! (rust-ibverbs's model): an [`Ah`] or a [`UdQp`] keeps its [`Pd`] alive, a `Pd` and a
//! [`Cq`] their [`Context`], a `Context` its [`Library`] (the `dlopen()` handle).
//!
//! Calls that verbs.h makes `static inline` (they are not symbols of libibverbs) are made
//! here as verbs.h makes them: `ibv_post_send`, `ibv_post_recv` and `ibv_poll_cq` through
//! the context's ops table (`ctx->ops.post_send`, ...); `ibv_query_port`,
//! `ibv_query_device_ex` and `ibv_create_qp_ex` through the `verbs_context` op when the
//! provider has one (`verbs_get_ctx_op`), else through the exported compat symbol.

mod context;
mod cq;
mod pd;
mod qp;
mod queue;
mod udqp;
pub(crate) mod umad;

use std::ffi::CStr;
use std::sync::Arc;

pub use context::{
    AsyncEvent, Context, DeviceAttr, DeviceInfo, LinkLayer, PortInfo, PortState, DEVICE_NAME_MAX,
};
pub use cq::{Cq, Wc, WcOpcode};
pub use pd::{Ah, AhAttr, GrhAttr, Mr, Pd};
pub use qp::{QpHandle, SelfMcastLoopback, UdQpConfig};
pub(crate) use queue::RawSend;
pub use queue::{QpCounters, RecvQueue, RecvWr, SendQueue, SendWr, UNPOSTED};
pub use udqp::{QpReset, UdQp};
pub use umad::{UmadLibrary, UmadPortInfo};

use crate::sys::verbs::{ibv_context, verbs_context, IbvLib};
use crate::sys::VERBS_ABI_IS_EXTENDED;
use crate::Error;

/// The soname loaded by [`Library::load`].
pub const LIBIBVERBS: &str = "libibverbs.so.1";

/// The environment variable that names another libibverbs for [`Library::load`] (a
/// path or a soname).
pub const LIBIBVERBS_ENV: &str = "IBPOLL_LIBIBVERBS";

/// libibverbs, `dlopen()`ed, with every symbol the driver uses resolved (a library that
/// lacks one is refused at load, not at first use).
pub struct Library {
    pub(crate) ibv: IbvLib,
}

impl std::fmt::Debug for Library {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Library(libibverbs)")
    }
}

impl Library {
    /// Loads [`LIBIBVERBS`], or what the environment variable [`LIBIBVERBS_ENV`] names
    /// when it is set and not empty.
    pub fn load() -> Result<Arc<Library>, Error> {
        match std::env::var(LIBIBVERBS_ENV) {
            Ok(name) if !name.is_empty() => Library::load_from(&name),
            _ => Library::load_from(LIBIBVERBS),
        }
    }

    /// Loads libibverbs from `name` (a soname or a path).
    pub fn load_from(name: &str) -> Result<Arc<Library>, Error> {
        // SAFETY: loading libibverbs runs its constructors, which only initialise its
        // own state; every symbol is resolved against the prototypes bindgen took from
        // verbs.h of the same rdma-core ABI (IBVERBS_1.1 default versions).
        let ibv = unsafe { IbvLib::new(name) }.map_err(|source| Error::LibraryMissing {
            lib: name.to_owned(),
            packages: "ibverbs-providers rdma-core",
            source,
        })?;
        Ok(Arc::new(Library { ibv }))
    }
}

/// `verbs_get_ctx_op(ctx, op)` of verbs.h: the `verbs_context` around `ctx` when the
/// provider fills in the op at `op_offset` (a byte offset into `verbs_context`), else
/// null.
///
/// # Safety
/// `ctx` must be a live context returned by `ibv_open_device`.
unsafe fn verbs_ctx_op(ctx: *mut ibv_context, op_offset: usize) -> Option<*mut verbs_context> {
    // SAFETY: the caller passes a live context; abi_compat is its first-class field.
    if unsafe { (*ctx).abi_compat } as usize != VERBS_ABI_IS_EXTENDED {
        return None;
    }
    let ctx_offset = std::mem::offset_of!(verbs_context, context);
    // SAFETY: an extended context is embedded in a verbs_context at `ctx_offset`
    // (verbs_get_ctx's open-coded container_of).
    let vctx = unsafe { (ctx as *mut u8).sub(ctx_offset) } as *mut verbs_context;
    // SAFETY: `sz` is the field just before `context`, present in every extended context.
    let sz = unsafe { (*vctx).sz };
    if sz < std::mem::size_of::<verbs_context>() - op_offset {
        return None;
    }
    // SAFETY: the provider's verbs_context is at least `sz` bytes from its end, so the
    // pointer-sized op at `op_offset` lies inside it.
    let op = unsafe { *((vctx as *const u8).add(op_offset) as *const usize) };
    (op != 0).then_some(vctx)
}

/// A C string owned by the library, as an owned Rust string.
///
/// # Safety
/// `p` must be null or point to a NUL-terminated string.
unsafe fn c_string(p: *const std::ffi::c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: per the caller.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// errno after a failed call.
fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}
