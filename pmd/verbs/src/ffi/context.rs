//! Device list, device context, device and port attributes, GID and P_Key tables, and the
//! asynchronous event queue.

use std::ptr::NonNull;
use std::sync::Arc;

use super::{c_string, errno, verbs_ctx_op, Library};
use crate::error::NoDevice;
use crate::sys::verbs::{
    ibv_async_event, ibv_context, ibv_device, ibv_device_attr_ex, ibv_gid, ibv_port_attr,
    verbs_context, IBV_EVENT_CLIENT_REREGISTER, IBV_EVENT_CQ_ERR, IBV_EVENT_DEVICE_FATAL,
    IBV_EVENT_GID_CHANGE, IBV_EVENT_LID_CHANGE, IBV_EVENT_PKEY_CHANGE, IBV_EVENT_PORT_ACTIVE,
    IBV_EVENT_PORT_ERR, IBV_EVENT_QP_ACCESS_ERR, IBV_EVENT_QP_FATAL, IBV_EVENT_QP_REQ_ERR,
    IBV_EVENT_SM_CHANGE, IBV_LINK_LAYER_ETHERNET, IBV_LINK_LAYER_INFINIBAND, IBV_PORT_ACTIVE,
    IBV_PORT_ACTIVE_DEFER, IBV_PORT_ARMED, IBV_PORT_DOWN, IBV_PORT_INIT,
};
use crate::sys::DEVICE_BLOCK_MULTICAST_LOOPBACK;
use crate::Error;

/// Device names are at most this long (`IBV_SYSFS_NAME_MAX`).
pub const DEVICE_NAME_MAX: usize = 64;

/// One entry of the device list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// `mlx5_0`, `rxe0`, ...
    pub name: String,
    /// The node GUID, host order.
    pub node_guid: u64,
}

/// What `ibv_query_device_ex` says, reduced to what a UD driver needs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeviceAttr {
    /// Firmware version string.
    pub fw_ver: String,
    /// Node GUID, host order.
    pub node_guid: u64,
    /// Ports on the device.
    pub phys_port_cnt: u8,
    /// Most QPs.
    pub max_qp: u32,
    /// Most work requests per queue.
    pub max_qp_wr: u32,
    /// Most scatter/gather entries per work request.
    pub max_sge: u32,
    /// Most CQ entries.
    pub max_cqe: u32,
    /// Most address handles.
    pub max_ah: u32,
    /// Most multicast groups.
    pub max_mcast_grp: u32,
    /// Most QPs attached to one multicast group.
    pub max_mcast_qp_attach: u32,
    /// `device_cap_flags_ex` (the 64-bit flags; the legacy 32 bits when the provider
    /// has no extended query).
    pub device_cap_flags: u64,
}

impl DeviceAttr {
    /// Whether a QP can be created with `IBV_QP_CREATE_BLOCK_SELF_MCAST_LB`.
    pub fn can_block_self_mcast_lb(&self) -> bool {
        self.device_cap_flags & DEVICE_BLOCK_MULTICAST_LOOPBACK != 0
    }
}

/// A port's link layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkLayer {
    /// InfiniBand: LIDs, a subnet manager, an SA.
    InfiniBand,
    /// Ethernet (RoCE): no SA, GRH always, GIDs from IP addresses.
    Ethernet,
    /// Unspecified (old providers: InfiniBand) or a value this crate does not know.
    Unspecified(u8),
}

/// A port's logical state (`ibv_port_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortState {
    /// `IBV_PORT_NOP` or a value this crate does not know.
    Unknown(u32),
    /// Down.
    Down,
    /// Initialising (waiting for the subnet manager).
    Init,
    /// Armed.
    Armed,
    /// Active: traffic flows.
    Active,
    /// Active, deferred.
    ActiveDefer,
}

impl PortState {
    fn from_raw(s: u32) -> PortState {
        match s {
            IBV_PORT_DOWN => PortState::Down,
            IBV_PORT_INIT => PortState::Init,
            IBV_PORT_ARMED => PortState::Armed,
            IBV_PORT_ACTIVE => PortState::Active,
            IBV_PORT_ACTIVE_DEFER => PortState::ActiveDefer,
            other => PortState::Unknown(other),
        }
    }

    /// The name ibv_devinfo prints.
    pub fn name(self) -> &'static str {
        match self {
            PortState::Unknown(_) => "PORT_NOP",
            PortState::Down => "PORT_DOWN",
            PortState::Init => "PORT_INIT",
            PortState::Armed => "PORT_ARMED",
            PortState::Active => "PORT_ACTIVE",
            PortState::ActiveDefer => "PORT_ACTIVE_DEFER",
        }
    }
}

/// What `ibv_query_port` says.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PortInfo {
    /// Logical state.
    pub state: PortState,
    /// Largest MTU (IBA code: 1 = 256 ... 5 = 4096).
    pub max_mtu: u32,
    /// Active MTU (IBA code).
    pub active_mtu: u32,
    /// GID table length.
    pub gid_tbl_len: u32,
    /// P_Key table length.
    pub pkey_tbl_len: u16,
    /// LID (0 on Ethernet).
    pub lid: u16,
    /// The subnet manager's LID.
    pub sm_lid: u16,
    /// The subnet manager's SL.
    pub sm_sl: u8,
    /// LMC.
    pub lmc: u8,
    /// Link layer.
    pub link_layer: LinkLayer,
    /// Capability mask.
    pub port_cap_flags: u32,
    /// Active width code.
    pub active_width: u8,
    /// Active speed code.
    pub active_speed: u8,
}

/// An asynchronous event, copied out and acknowledged (`ibv_ack_async_event`) before it
/// is returned, so no libibverbs object is referenced by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AsyncEvent {
    /// The port became Active.
    PortActive(u8),
    /// The port left Active.
    PortError(u8),
    /// The port's LID changed.
    LidChange(u8),
    /// The port's P_Key table changed.
    PkeyChange(u8),
    /// Another subnet manager took over.
    SmChange(u8),
    /// The subnet manager asks clients to register again (rejoin multicast groups).
    ClientReregister(u8),
    /// The port's GID table changed.
    GidChange(u8),
    /// The device is unusable.
    DeviceFatal,
    /// A QP failed (fatal, request or access error), by QPN.
    QpFatal(u32),
    /// A CQ overran or failed.
    CqError,
    /// Another event, by its `ibv_event_type`.
    Other(u32),
}

/// An open device (`ibv_open_device`): thread-safe, shared by the objects created on it.
pub struct Context {
    lib: Arc<Library>,
    ctx: NonNull<ibv_context>,
    name: String,
    node_guid: u64,
}

// SAFETY: libibverbs contexts may be used from any thread (every verb locks what it
// shares); the pointer is owned and freed once, in Drop.
unsafe impl Send for Context {}
// SAFETY: as above; no method hands out the pointer for unsynchronised mutation.
unsafe impl Sync for Context {}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("name", &self.name)
            .field("node_guid", &format_args!("{:#018x}", self.node_guid))
            .finish()
    }
}

/// The device list, freed on drop.
struct DeviceList<'a> {
    lib: &'a Library,
    list: *mut *mut ibv_device,
    n: usize,
}

impl<'a> DeviceList<'a> {
    fn get(lib: &'a Library) -> Result<DeviceList<'a>, Error> {
        let mut n = 0;
        // SAFETY: `n` is a valid out pointer; the list is freed in Drop.
        let list = unsafe { lib.ibv.ibv_get_device_list(&mut n) };
        if list.is_null() || n <= 0 {
            if !list.is_null() {
                // SAFETY: the list came from ibv_get_device_list and is freed once.
                unsafe { lib.ibv.ibv_free_device_list(list) };
            }
            let why = if std::path::Path::new("/sys/class/infiniband_verbs").exists() {
                NoDevice::NoneFound
            } else {
                NoDevice::NoUverbs
            };
            return Err(Error::NoDevice(why));
        }
        Ok(DeviceList {
            lib,
            list,
            n: n as usize,
        })
    }

    fn iter(&self) -> impl Iterator<Item = (*mut ibv_device, DeviceInfo)> + '_ {
        (0..self.n).map(move |i| {
            // SAFETY: the list holds `n` valid device pointers while it lives.
            let dev = unsafe { *self.list.add(i) };
            // SAFETY: `dev` is valid; the name is a NUL-terminated string it owns.
            let name = unsafe { c_string(self.lib.ibv.ibv_get_device_name(dev)) };
            // SAFETY: `dev` is valid.
            let guid = u64::from_be(unsafe { self.lib.ibv.ibv_get_device_guid(dev) });
            (
                dev,
                DeviceInfo {
                    name,
                    node_guid: guid,
                },
            )
        })
    }
}

impl Drop for DeviceList<'_> {
    fn drop(&mut self) {
        // SAFETY: the list came from ibv_get_device_list and is freed once; opened
        // contexts do not depend on it.
        unsafe { self.lib.ibv.ibv_free_device_list(self.list) };
    }
}

impl Context {
    /// The RDMA devices libibverbs lists.
    pub fn devices(lib: &Library) -> Result<Vec<DeviceInfo>, Error> {
        Ok(DeviceList::get(lib)?.iter().map(|(_, d)| d).collect())
    }

    /// Opens the device called `name`, or the first one when `name` is `None`, and makes
    /// its asynchronous event file descriptor non-blocking.
    pub fn open(lib: &Arc<Library>, name: Option<&str>) -> Result<Arc<Context>, Error> {
        let list = DeviceList::get(lib)?;
        let found = list.iter().find(|(_, d)| name.is_none_or(|n| n == d.name));
        let Some((dev, info)) = found else {
            let available: Vec<String> = list.iter().map(|(_, d)| d.name).collect();
            return Err(Error::NoSuchDevice {
                name: name.unwrap_or_default().to_owned(),
                available: available.join(", "),
            });
        };
        // SAFETY: `dev` is valid while the list lives; the context outlives the list.
        let ctx = unsafe { lib.ibv.ibv_open_device(dev) };
        let Some(ctx) = NonNull::new(ctx) else {
            return Err(Error::verbs_errno("ibv_open_device", &info.name));
        };
        let c = Context {
            lib: lib.clone(),
            ctx,
            name: info.name,
            node_guid: info.node_guid,
        };
        c.set_async_nonblocking()?;
        Ok(Arc::new(c))
    }

    /// The device name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node GUID, host order.
    pub fn node_guid(&self) -> u64 {
        self.node_guid
    }

    pub(crate) fn lib(&self) -> &Library {
        &self.lib
    }

    pub(crate) fn as_ptr(&self) -> *mut ibv_context {
        self.ctx.as_ptr()
    }

    fn set_async_nonblocking(&self) -> Result<(), Error> {
        // SAFETY: the context is live; async_fd is its event file descriptor.
        let fd = unsafe { (*self.as_ptr()).async_fd };
        // SAFETY: fcntl on a descriptor the context owns; only O_NONBLOCK is added.
        let rc = unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            if flags < 0 {
                flags
            } else {
                libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK)
            }
        };
        if rc < 0 {
            return Err(Error::verbs_errno(
                "fcntl(async_fd, O_NONBLOCK)",
                &self.name,
            ));
        }
        Ok(())
    }

    /// `ibv_query_device_ex`, as verbs.h's inline does it: the provider's extended query
    /// when it has one, else the legacy `ibv_query_device`.
    pub fn query_device(&self) -> Result<DeviceAttr, Error> {
        let mut a = ibv_device_attr_ex::default();
        let op = std::mem::offset_of!(verbs_context, query_device_ex);
        // SAFETY: the context is live.
        let rc = match unsafe { verbs_ctx_op(self.as_ptr(), op) } {
            // SAFETY: the op is non-null (checked); `a` is a valid, sized out struct.
            Some(v) => unsafe {
                let f = (*v).query_device_ex.unwrap_unchecked();
                f(self.as_ptr(), std::ptr::null(), &mut a, size_of_val(&a))
            },
            None => libc::EOPNOTSUPP,
        };
        let rc = if rc == libc::EOPNOTSUPP || rc == libc::ENOSYS {
            a = ibv_device_attr_ex::default();
            // SAFETY: the context is live; orig_attr is a valid out struct.
            unsafe {
                self.lib
                    .ibv
                    .ibv_query_device(self.as_ptr(), &mut a.orig_attr)
            }
        } else {
            rc
        };
        if rc != 0 {
            return Err(Error::verbs("ibv_query_device_ex", &self.name, rc));
        }
        Ok(device_attr(&a))
    }

    /// `ibv_query_port`, as verbs.h's inline `___ibv_query_port` does it.
    pub fn query_port(&self, port: u8) -> Result<PortInfo, Error> {
        let mut a = ibv_port_attr::default();
        let op = std::mem::offset_of!(verbs_context, query_port);
        // SAFETY: the context is live.
        let rc = match unsafe { verbs_ctx_op(self.as_ptr(), op) } {
            // SAFETY: the op is non-null (checked); `a` is a valid, sized out struct.
            Some(v) => unsafe {
                let f = (*v).query_port.unwrap_unchecked();
                f(self.as_ptr(), port, &mut a, size_of_val(&a))
            },
            // SAFETY: the compat struct is a prefix of ibv_port_attr (what the inline
            // casts it to); the context is live.
            None => unsafe {
                self.lib.ibv.ibv_query_port(
                    self.as_ptr(),
                    port,
                    (&mut a as *mut ibv_port_attr).cast(),
                )
            },
        };
        if rc != 0 {
            return Err(Error::verbs("ibv_query_port", &self.name, rc));
        }
        Ok(port_info(&a))
    }

    /// Fails with [`Error::PortNotActive`] unless the port is Active.
    pub fn require_active(&self, port: u8) -> Result<PortInfo, Error> {
        let p = self.query_port(port)?;
        match p.state {
            PortState::Active | PortState::ActiveDefer => Ok(p),
            s => Err(Error::PortNotActive {
                device: self.name.clone(),
                port,
                state: s.name(),
            }),
        }
    }

    /// The port's GID table, raw 16-byte GIDs (all-zero entries are unused).
    pub fn gid_table(&self, port: u8) -> Result<Vec<[u8; 16]>, Error> {
        let n = self.query_port(port)?.gid_tbl_len;
        let mut t = Vec::with_capacity(n as usize);
        for i in 0..n {
            let mut g = ibv_gid { raw: [0; 16] };
            // SAFETY: the context is live; `g` is a valid out union.
            let rc = unsafe {
                self.lib
                    .ibv
                    .ibv_query_gid(self.as_ptr(), port, i as i32, &mut g)
            };
            // An index the provider cannot read (rxe: a deleted entry) reads as unused.
            // SAFETY: every bit pattern is a valid `raw`.
            t.push(if rc == 0 { unsafe { g.raw } } else { [0; 16] });
        }
        Ok(t)
    }

    /// The port's P_Key table, host order.
    pub fn pkey_table(&self, port: u8) -> Result<Vec<u16>, Error> {
        let n = self.query_port(port)?.pkey_tbl_len;
        let mut t = Vec::with_capacity(usize::from(n));
        for i in 0..i32::from(n) {
            let mut p: u16 = 0;
            // SAFETY: the context is live; `p` is a valid out value.
            let rc = unsafe { self.lib.ibv.ibv_query_pkey(self.as_ptr(), port, i, &mut p) };
            if rc != 0 {
                return Err(Error::verbs("ibv_query_pkey", &self.name, errno()));
            }
            t.push(u16::from_be(p));
        }
        Ok(t)
    }

    /// The next asynchronous event, or `None` when there is none (non-blocking).
    pub fn poll_async_event(&self) -> Result<Option<AsyncEvent>, Error> {
        let mut ev = ibv_async_event::default();
        // SAFETY: the context is live and its async fd non-blocking; `ev` is a valid out
        // struct.
        let rc = unsafe { self.lib.ibv.ibv_get_async_event(self.as_ptr(), &mut ev) };
        if rc != 0 {
            let e = errno();
            if e == libc::EAGAIN {
                return Ok(None);
            }
            return Err(Error::verbs("ibv_get_async_event", &self.name, e));
        }
        let out = async_event(&ev);
        // SAFETY: `ev` came from ibv_get_async_event and is acknowledged once, after
        // everything was copied out of it.
        unsafe { self.lib.ibv.ibv_ack_async_event(&mut ev) };
        Ok(Some(out))
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: every object created on the context holds an Arc to it, so none is
        // left; the context is closed once.
        let rc = unsafe { self.lib.ibv.ibv_close_device(self.as_ptr()) };
        if rc != 0 {
            tracing::warn!(device = %self.name, rc, "ibv_close_device failed");
        }
    }
}

fn device_attr(a: &ibv_device_attr_ex) -> DeviceAttr {
    let o = &a.orig_attr;
    let fw: Vec<u8> = o
        .fw_ver
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    DeviceAttr {
        fw_ver: String::from_utf8_lossy(&fw).into_owned(),
        node_guid: u64::from_be(o.node_guid),
        phys_port_cnt: o.phys_port_cnt,
        max_qp: o.max_qp as u32,
        max_qp_wr: o.max_qp_wr as u32,
        max_sge: o.max_sge as u32,
        max_cqe: o.max_cqe as u32,
        max_ah: o.max_ah as u32,
        max_mcast_grp: o.max_mcast_grp as u32,
        max_mcast_qp_attach: o.max_mcast_qp_attach as u32,
        device_cap_flags: a.device_cap_flags_ex | u64::from(o.device_cap_flags),
    }
}

fn port_info(a: &ibv_port_attr) -> PortInfo {
    PortInfo {
        state: PortState::from_raw(a.state),
        max_mtu: a.max_mtu,
        active_mtu: a.active_mtu,
        gid_tbl_len: a.gid_tbl_len.max(0) as u32,
        pkey_tbl_len: a.pkey_tbl_len,
        lid: a.lid,
        sm_lid: a.sm_lid,
        sm_sl: a.sm_sl,
        lmc: a.lmc,
        link_layer: match u32::from(a.link_layer) {
            IBV_LINK_LAYER_INFINIBAND => LinkLayer::InfiniBand,
            IBV_LINK_LAYER_ETHERNET => LinkLayer::Ethernet,
            _ => LinkLayer::Unspecified(a.link_layer),
        },
        port_cap_flags: a.port_cap_flags,
        active_width: a.active_width,
        active_speed: a.active_speed,
    }
}

fn async_event(ev: &ibv_async_event) -> AsyncEvent {
    // SAFETY: for port events the union holds port_num (verbs.h's ibv_async_event).
    let port = || unsafe { ev.element.port_num } as u8;
    match ev.event_type {
        IBV_EVENT_PORT_ACTIVE => AsyncEvent::PortActive(port()),
        IBV_EVENT_PORT_ERR => AsyncEvent::PortError(port()),
        IBV_EVENT_LID_CHANGE => AsyncEvent::LidChange(port()),
        IBV_EVENT_PKEY_CHANGE => AsyncEvent::PkeyChange(port()),
        IBV_EVENT_SM_CHANGE => AsyncEvent::SmChange(port()),
        IBV_EVENT_CLIENT_REREGISTER => AsyncEvent::ClientReregister(port()),
        IBV_EVENT_GID_CHANGE => AsyncEvent::GidChange(port()),
        IBV_EVENT_DEVICE_FATAL => AsyncEvent::DeviceFatal,
        IBV_EVENT_QP_FATAL | IBV_EVENT_QP_REQ_ERR | IBV_EVENT_QP_ACCESS_ERR => {
            // SAFETY: for QP events the union holds the QP, live until the ack.
            let qp = unsafe { ev.element.qp };
            let qpn = if qp.is_null() {
                0
            } else {
                // SAFETY: a non-null QP pointer of a QP event is live until the ack.
                unsafe { (*qp).qp_num }
            };
            AsyncEvent::QpFatal(qpn)
        }
        IBV_EVENT_CQ_ERR => AsyncEvent::CqError,
        other => AsyncEvent::Other(other),
    }
}
