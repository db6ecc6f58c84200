//! Protection domains, memory regions and address handles.

use std::ptr::NonNull;
use std::sync::Arc;

use ibpoll_mem::Mempool;

use super::{errno, Context};
use crate::sys::verbs::{ibv_ah, ibv_ah_attr, ibv_gid, ibv_mr, ibv_pd, IBV_ACCESS_LOCAL_WRITE};
use crate::Error;

/// A protection domain (`ibv_alloc_pd`).
pub struct Pd {
    ctx: Arc<Context>,
    pd: NonNull<ibv_pd>,
}

// SAFETY: a PD is a kernel handle; libibverbs allows its use from any thread.
unsafe impl Send for Pd {}
// SAFETY: as above; nothing mutates it through `&self`.
unsafe impl Sync for Pd {}

impl std::fmt::Debug for Pd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pd")
            .field("device", &self.ctx.name())
            .finish()
    }
}

impl Pd {
    /// Allocates a protection domain on `ctx`.
    pub fn new(ctx: &Arc<Context>) -> Result<Arc<Pd>, Error> {
        // SAFETY: the context is live (the Arc keeps it).
        let pd = unsafe { ctx.lib().ibv.ibv_alloc_pd(ctx.as_ptr()) };
        let pd = NonNull::new(pd).ok_or_else(|| Error::verbs_errno("ibv_alloc_pd", ctx.name()))?;
        Ok(Arc::new(Pd {
            ctx: ctx.clone(),
            pd,
        }))
    }

    /// The context it was allocated on.
    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    pub(crate) fn as_ptr(&self) -> *mut ibv_pd {
        self.pd.as_ptr()
    }
}

impl Drop for Pd {
    fn drop(&mut self) {
        // SAFETY: MRs, QPs and AHs hold an Arc to the PD, so none is left; freed once.
        let rc = unsafe { self.ctx.lib().ibv.ibv_dealloc_pd(self.as_ptr()) };
        if rc != 0 {
            tracing::warn!(device = %self.ctx.name(), rc, "ibv_dealloc_pd failed");
        }
    }
}

/// A registered memory region (`ibv_reg_mr`, local write): one per pool, its `lkey` in
/// every scatter/gather entry that points into the pool.
pub struct Mr {
    pd: Arc<Pd>,
    mr: NonNull<ibv_mr>,
    addr: usize,
    len: usize,
    lkey: u32,
    // Keeps the pool's mapping alive while it is registered.
    _pool: Option<Mempool>,
}

// SAFETY: an MR is a kernel handle plus two keys; usable from any thread.
unsafe impl Send for Mr {}
// SAFETY: as above; immutable after creation.
unsafe impl Sync for Mr {}

impl std::fmt::Debug for Mr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mr")
            .field("addr", &format_args!("{:#x}", self.addr))
            .field("len", &self.len)
            .field("lkey", &format_args!("{:#x}", self.lkey))
            .finish()
    }
}

/// RLIMIT_MEMLOCK's soft limit, or `None` when it is unlimited.
fn memlock_limit() -> Option<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid out struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) } != 0 {
        return None;
    }
    (r.rlim_cur != libc::RLIM_INFINITY).then_some(r.rlim_cur)
}

/// CAP_IPC_LOCK's bit (linux/capability.h).
const CAP_IPC_LOCK: u32 = 14;

/// Whether this process may lock memory beyond RLIMIT_MEMLOCK (CAP_IPC_LOCK in the
/// effective capability set).
fn has_cap_ipc_lock() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}

/// The check made before `ibv_reg_mr`: registering `len` bytes pins them, which counts
/// against RLIMIT_MEMLOCK unless the process has CAP_IPC_LOCK.
pub(crate) fn check_memlock(
    len: usize,
    limit: Option<u64>,
    cap_ipc_lock: bool,
) -> Result<(), Error> {
    match limit {
        Some(limit) if !cap_ipc_lock && len as u64 > limit => Err(Error::MemlockTooLow {
            len,
            limit,
            source: None,
        }),
        _ => Ok(()),
    }
}

impl Mr {
    /// Registers a pool's whole mapping ([`Mempool::region`]) once; the region keeps the
    /// pool's memory mapped while it lives.
    pub fn register_pool(pd: &Arc<Pd>, pool: &Mempool) -> Result<Mr, Error> {
        let r = pool.region();
        // SAFETY: the region is the pool's mapping, kept alive by the clone stored in
        // the Mr until deregistration.
        let mut mr = unsafe { Mr::register(pd, r.addr, r.len) }?;
        mr._pool = Some(pool.clone());
        Ok(mr)
    }

    /// Registers `addr..addr + len` for local write.
    ///
    /// # Safety
    /// The memory must stay mapped until the returned `Mr` is dropped.
    pub unsafe fn register(pd: &Arc<Pd>, addr: usize, len: usize) -> Result<Mr, Error> {
        let device = pd.context().name();
        check_memlock(len, memlock_limit(), has_cap_ipc_lock())?;
        // SAFETY: the PD is live; the caller keeps the memory mapped. Plain access flags
        // (no optional ones), so the exported ibv_reg_mr is what verbs.h's macro calls.
        let mr = unsafe {
            pd.context().lib().ibv.ibv_reg_mr(
                pd.as_ptr(),
                addr as *mut std::ffi::c_void,
                len,
                IBV_ACCESS_LOCAL_WRITE as i32,
            )
        };
        let Some(mr) = NonNull::new(mr) else {
            let e = errno();
            return Err(match e {
                libc::ENOMEM | libc::EPERM => Error::MemlockTooLow {
                    len,
                    limit: memlock_limit().unwrap_or(u64::MAX),
                    source: Some(std::io::Error::from_raw_os_error(e)),
                },
                _ => Error::verbs("ibv_reg_mr", device, e),
            });
        };
        // SAFETY: a registered MR's keys are set and immutable.
        let lkey = unsafe { (*mr.as_ptr()).lkey };
        Ok(Mr {
            pd: pd.clone(),
            mr,
            addr,
            len,
            lkey,
            _pool: None,
        })
    }

    /// The local key for scatter/gather entries.
    pub fn lkey(&self) -> u32 {
        self.lkey
    }

    /// Whether `addr..addr + len` lies inside the region.
    pub fn contains(&self, addr: usize, len: usize) -> bool {
        addr >= self.addr
            && addr
                .checked_add(len)
                .is_some_and(|e| e <= self.addr + self.len)
    }
}

impl Drop for Mr {
    fn drop(&mut self) {
        // SAFETY: the MR is deregistered once; the caller's safety contract on posting
        // says no work request still names its lkey.
        let rc = unsafe { self.pd.context().lib().ibv.ibv_dereg_mr(self.mr.as_ptr()) };
        if rc != 0 {
            tracing::warn!(rc, "ibv_dereg_mr failed");
        }
    }
}

/// The GRH part of an address handle (required on RoCE, and for multicast across
/// subnets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GrhAttr {
    /// Destination GID (or MGID).
    pub dgid: [u8; 16],
    /// Index of the source GID in the port's table (on RoCE: the IPv4-mapped entry of
    /// the interface address).
    pub sgid_index: u8,
    /// Flow label.
    pub flow_label: u32,
    /// Hop limit.
    pub hop_limit: u8,
    /// Traffic class.
    pub traffic_class: u8,
}

/// Address-handle attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AhAttr {
    /// Destination LID or MLID (0 on Ethernet).
    pub dlid: u16,
    /// Service level.
    pub sl: u8,
    /// Source path bits.
    pub src_path_bits: u8,
    /// Static rate code (0: the port's).
    pub static_rate: u8,
    /// Local port.
    pub port_num: u8,
    /// The GRH, when there is one.
    pub grh: Option<GrhAttr>,
}

/// An address handle (`ibv_create_ah`).
pub struct Ah {
    pd: Arc<Pd>,
    ah: NonNull<ibv_ah>,
}

// SAFETY: an AH is a handle the provider only reads when a send names it.
unsafe impl Send for Ah {}
// SAFETY: as above.
unsafe impl Sync for Ah {}

impl std::fmt::Debug for Ah {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ah").field("ptr", &self.ah).finish()
    }
}

impl Ah {
    /// Creates an address handle on `pd`.
    pub fn new(pd: &Arc<Pd>, attr: &AhAttr) -> Result<Ah, Error> {
        let mut a = ibv_ah_attr {
            dlid: attr.dlid,
            sl: attr.sl,
            src_path_bits: attr.src_path_bits,
            static_rate: attr.static_rate,
            port_num: attr.port_num,
            ..Default::default()
        };
        if let Some(g) = attr.grh {
            a.is_global = 1;
            a.grh.dgid = ibv_gid { raw: g.dgid };
            a.grh.sgid_index = g.sgid_index;
            a.grh.flow_label = g.flow_label;
            a.grh.hop_limit = g.hop_limit;
            a.grh.traffic_class = g.traffic_class;
        }
        // SAFETY: the PD is live; `a` is a valid attribute struct.
        let ah = unsafe { pd.context().lib().ibv.ibv_create_ah(pd.as_ptr(), &mut a) };
        let ah = NonNull::new(ah)
            .ok_or_else(|| Error::verbs_errno("ibv_create_ah", pd.context().name()))?;
        Ok(Ah { pd: pd.clone(), ah })
    }

    pub(crate) fn as_ptr(&self) -> *mut ibv_ah {
        self.ah.as_ptr()
    }
}

impl Drop for Ah {
    fn drop(&mut self) {
        // SAFETY: destroyed once; the posting contract says no send that names it is
        // still outstanding.
        let rc = unsafe { self.pd.context().lib().ibv.ibv_destroy_ah(self.as_ptr()) };
        if rc != 0 {
            tracing::warn!(rc, "ibv_destroy_ah failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memlock_is_checked_before_registration() {
        assert!(check_memlock(1 << 20, None, false).is_ok(), "unlimited");
        assert!(check_memlock(1 << 20, Some(8 << 20), false).is_ok());
        assert!(
            check_memlock(64 << 20, Some(8 << 20), true).is_ok(),
            "CAP_IPC_LOCK"
        );
        let e = check_memlock(64 << 20, Some(8 << 20), false).unwrap_err();
        assert!(
            matches!(e, Error::MemlockTooLow { len, limit, .. } if len == 64 << 20 && limit == 8 << 20)
        );
        assert!(e.to_string().contains("ulimit -l"), "{e}");
    }
}
