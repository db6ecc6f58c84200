//! A verbs device as an [`ibpoll_dev::Device`]: the context, its one protection domain,
//! the memory regions of the pools (one per pool, registered once), the asynchronous
//! events shared out to the ports, and the registry of live QPs.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use ibpoll_dev::{Device, Error as DevError, Port, PortAttr, PortEvent, UdCaps};
use ibpoll_mem::Mempool;
use ibpoll_wire::Qpn;

use crate::ah::AhTable;
use crate::ffi::{
    AsyncEvent, Context, Cq, DeviceAttr, DeviceInfo, Library, Mr, Pd, QpHandle, UdQpConfig,
};
use crate::mcast::PortGroups;
use crate::port::VerbsPort;
use crate::setup::QpShared;
use crate::Error;

/// Events kept per port until its owner polls them; older ones are dropped (and logged)
/// beyond this.
pub const EVENTS_KEPT: usize = 256;

/// How often `poll_event` reads the async fd when no event is queued: a controller
/// polls its port every few microseconds, and a port event may wait this long to be
/// seen rather than cost a system call each time.
pub const EVENT_READ_INTERVAL: Duration = Duration::from_millis(1);

/// The inline sizes tried, largest first, when a device is opened: the first a probe QP
/// accepts is what [`UdCaps::max_inline`] says.
const INLINE_PROBES: [u32; 3] = [256, 128, 64];

/// An RDMA device opened through libibverbs, with every port's shared state.
#[derive(Debug, Clone)]
pub struct VerbsDevice {
    pub(crate) dev: Arc<DevShared>,
}

/// One port's share of the device state.
#[derive(Debug, Default)]
pub(crate) struct PortSlot {
    /// Events for this port, oldest first.
    events: VecDeque<PortEvent>,
    /// The GID and P_Key tables, read again after any event of the port.
    tables: Option<(Vec<[u8; 16]>, Vec<u16>)>,
    /// Multicast attachments and, on RoCE, the IP memberships under them.
    pub(crate) groups: PortGroups,
}

/// A live QP in the registry.
#[derive(Debug)]
pub(crate) struct QpEntry {
    pub(crate) port: u8,
    pub(crate) qp: Weak<QpShared>,
}

/// What the mutex guards.
#[derive(Debug, Default)]
pub(crate) struct DevState {
    /// Index `port - 1`.
    pub(crate) ports: Vec<PortSlot>,
    /// By QPN.
    pub(crate) qps: HashMap<u32, QpEntry>,
    /// When the async fd was last read.
    events_read: Option<Instant>,
}

/// Shared by the device, its ports and its QPs' queues.
pub(crate) struct DevShared {
    pub(crate) ctx: Arc<Context>,
    pub(crate) pd: Arc<Pd>,
    pub(crate) attr: DeviceAttr,
    pub(crate) caps: UdCaps,
    state: Mutex<DevState>,
    /// By pool id: the pool's memory region (it keeps the pool mapped, so the id is not
    /// reused while registered).
    mrs: Mutex<Vec<Option<Arc<Mr>>>>,
    /// Index `port - 1`, made on first use.
    ahs: Vec<OnceLock<AhTable>>,
}

impl std::fmt::Debug for DevShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevShared")
            .field("device", &self.ctx.name())
            .field("caps", &self.caps)
            .finish()
    }
}

/// The RDMA devices libibverbs lists (loading it first).
pub fn devices() -> Result<Vec<DeviceInfo>, Error> {
    Context::devices(&*Library::load()?)
}

impl VerbsDevice {
    /// Opens the device called `name` (`mlx5_0`, `rxe0`, ...; see [`devices`]).
    pub fn open(name: &str) -> Result<VerbsDevice, Error> {
        VerbsDevice::open_with(&Library::load()?, Some(name))
    }

    /// Opens the first device libibverbs lists.
    pub fn open_first() -> Result<VerbsDevice, Error> {
        VerbsDevice::open_with(&Library::load()?, None)
    }

    /// Opens `name` (or the first device) through an already loaded libibverbs.
    pub fn open_with(lib: &Arc<Library>, name: Option<&str>) -> Result<VerbsDevice, Error> {
        let ctx = Context::open(lib, name)?;
        let attr = ctx.query_device()?;
        let pd = Pd::new(&ctx)?;
        let max_inline = probe_inline(&pd);
        let caps = crate::attr::ud_caps(&attr, max_inline);
        let nports = usize::from(attr.phys_port_cnt);
        let dev = DevShared {
            state: Mutex::new(DevState {
                ports: (0..nports).map(|_| PortSlot::default()).collect(),
                qps: HashMap::new(),
                events_read: None,
            }),
            mrs: Mutex::new(Vec::new()),
            ahs: (0..nports).map(|_| OnceLock::new()).collect(),
            ctx,
            pd,
            attr,
            caps,
        };
        tracing::debug!(device = %dev.ctx.name(), caps = ?dev.caps, "verbs device opened");
        Ok(VerbsDevice { dev: Arc::new(dev) })
    }

    /// The open context (for the verbs wrappers of [`crate::ffi`]).
    pub fn context(&self) -> &Arc<Context> {
        &self.dev.ctx
    }

    /// What `ibv_query_device_ex` said when the device was opened.
    pub fn device_attr(&self) -> &DeviceAttr {
        &self.dev.attr
    }

    /// Port `port_num` (1-based), with the verbs error when there is no such port.
    pub fn port(&self, port_num: u8) -> Result<VerbsPort, Error> {
        if port_num == 0 || port_num > self.dev.attr.phys_port_cnt {
            return Err(Error::NoSuchPort {
                device: self.dev.ctx.name().to_owned(),
                port: port_num,
                count: self.dev.attr.phys_port_cnt,
            });
        }
        Ok(VerbsPort::new(self.dev.clone(), port_num))
    }

    /// Port `port_num`, refused with [`Error::PortNotActive`] unless it is Active: the
    /// check a program makes before it builds a stack on the port.
    pub fn active_port(&self, port_num: u8) -> Result<VerbsPort, Error> {
        let port = self.port(port_num)?;
        self.dev.ctx.require_active(port_num)?;
        Ok(port)
    }
}

impl Device for VerbsDevice {
    fn name(&self) -> &str {
        self.dev.ctx.name()
    }

    fn node_guid(&self) -> u64 {
        self.dev.ctx.node_guid()
    }

    fn port_count(&self) -> u8 {
        self.dev.attr.phys_port_cnt
    }

    fn open_port(&self, port_num: u8) -> Result<Arc<dyn Port>, DevError> {
        match self.port(port_num) {
            Ok(p) => Ok(Arc::new(p)),
            Err(_) => Err(DevError::NoSuchPort {
                device: self.dev.ctx.name().to_owned(),
                port: port_num,
                count: self.dev.attr.phys_port_cnt,
            }),
        }
    }
}

/// The largest inline size a UD QP of this device accepts, found with a throwaway QP
/// (verbs reports it per QP, not per device); 0 when none is.
fn probe_inline(pd: &Arc<Pd>) -> u32 {
    let (Ok(scq), Ok(rcq)) = (Cq::new(pd.context(), 1), Cq::new(pd.context(), 1)) else {
        return 0;
    };
    for want in INLINE_PROBES {
        let cfg = UdQpConfig {
            max_send_wr: 1,
            max_recv_wr: 1,
            max_inline: want,
            burst_max: 1,
            ..UdQpConfig::default()
        };
        if let Ok(qp) = QpHandle::create(pd, &scq, &rcq, &cfg) {
            return qp.max_inline().max(want);
        }
    }
    0
}

impl DevShared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, DevState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The address handles of port `num`.
    pub(crate) fn ahs(&self, num: u8) -> &AhTable {
        self.ahs[usize::from(num) - 1].get_or_init(AhTable::new)
    }

    /// The local key of `pool`'s memory region, registering the pool on first use.
    pub(crate) fn lkey(&self, pool: &Mempool) -> Result<u32, Error> {
        let mut mrs = self.mrs.lock().unwrap_or_else(PoisonError::into_inner);
        let id = usize::from(pool.id());
        if let Some(Some(mr)) = mrs.get(id) {
            return Ok(mr.lkey());
        }
        let mr = Mr::register_pool(&self.pd, pool)?;
        tracing::debug!(
            device = %self.ctx.name(),
            pool = pool.name(),
            id,
            lkey = format_args!("{:#x}", mr.lkey()),
            "pool registered"
        );
        if mrs.len() <= id {
            mrs.resize(id + 1, None);
        }
        let lkey = mr.lkey();
        mrs[id] = Some(Arc::new(mr));
        Ok(lkey)
    }

    /// Reads every pending asynchronous event and queues it for its port.
    fn pump_events(&self, st: &mut DevState) {
        st.events_read = Some(Instant::now());
        for _ in 0..EVENTS_KEPT {
            match self.ctx.poll_async_event() {
                Ok(Some(ev)) => self.route(st, ev),
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(device = %self.ctx.name(), error = %e, "reading async events");
                    return;
                }
            }
        }
    }

    fn route(&self, st: &mut DevState, ev: AsyncEvent) {
        let (port, event) = match ev {
            AsyncEvent::PortActive(p) => (Some(p), PortEvent::Active),
            AsyncEvent::PortError(p) => (Some(p), PortEvent::Error),
            AsyncEvent::LidChange(p) => (Some(p), PortEvent::LidChange),
            AsyncEvent::PkeyChange(p) => (Some(p), PortEvent::PkeyChange),
            AsyncEvent::SmChange(p) => (Some(p), PortEvent::SmChange),
            AsyncEvent::ClientReregister(p) => (Some(p), PortEvent::ClientReregister),
            AsyncEvent::GidChange(p) => (Some(p), PortEvent::GidChange),
            AsyncEvent::DeviceFatal => (None, PortEvent::DeviceFatal),
            AsyncEvent::QpFatal(qpn) => match st.qps.get(&qpn) {
                Some(e) => (
                    Some(e.port),
                    PortEvent::QpFatal {
                        qpn: Qpn::from_bits(qpn),
                    },
                ),
                None => {
                    tracing::debug!(qpn, "QP fatal event of a QP no port has");
                    return;
                }
            },
            other => {
                tracing::warn!(device = %self.ctx.name(), event = ?other, "async event");
                return;
            }
        };
        let name = self.ctx.name();
        let targets: Vec<usize> = match port {
            Some(p) if (1..=st.ports.len()).contains(&usize::from(p)) => vec![usize::from(p) - 1],
            Some(p) => {
                tracing::warn!(device = %name, port = p, ?event, "event for an unknown port");
                return;
            }
            None => (0..st.ports.len()).collect(),
        };
        for i in targets {
            let slot = &mut st.ports[i];
            slot.tables = None;
            if slot.events.len() == EVENTS_KEPT {
                let lost = slot.events.pop_front();
                tracing::warn!(device = %name, port = i + 1, ?lost, "port event dropped: nobody polls");
            }
            slot.events.push_back(event);
        }
    }

    /// The next event of port `num`; the async fd is read when none is queued, at most
    /// every [`EVENT_READ_INTERVAL`].
    pub(crate) fn poll_event(&self, num: u8) -> Option<PortEvent> {
        let mut st = self.lock();
        let i = usize::from(num) - 1;
        if let Some(ev) = st.ports[i].events.pop_front() {
            return Some(ev);
        }
        let due = st
            .events_read
            .is_none_or(|t| t.elapsed() >= EVENT_READ_INTERVAL);
        if !due {
            return None;
        }
        self.pump_events(&mut st);
        st.ports[i].events.pop_front()
    }

    /// Port `num`'s attributes: its state now, its tables as of its last event.
    pub(crate) fn port_attr(&self, num: u8) -> PortAttr {
        let info = match self.ctx.query_port(num) {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(device = %self.ctx.name(), port = num, error = %e, "ibv_query_port");
                return PortAttr::new(num);
            }
        };
        let mut st = self.lock();
        let (gids, pkeys) = self.tables(&mut st, num);
        crate::attr::port_attr(num, &info, gids, pkeys)
    }

    /// Port `num`'s GID and P_Key tables, read again after any event of the port (the
    /// pending ones read first).
    pub(crate) fn tables<'a>(
        &self,
        st: &'a mut DevState,
        num: u8,
    ) -> &'a (Vec<[u8; 16]>, Vec<u16>) {
        self.pump_events(st);
        let slot = &mut st.ports[usize::from(num) - 1];
        slot.tables.get_or_insert_with(|| {
            let gids = self.ctx.gid_table(num).unwrap_or_default();
            let pkeys = self.ctx.pkey_table(num).unwrap_or_default();
            (gids, pkeys)
        })
    }

    /// The live QP `qpn` of port `num`.
    pub(crate) fn qp(&self, num: u8, qpn: u32) -> Option<Arc<QpShared>> {
        let st = self.lock();
        let e = st.qps.get(&qpn).filter(|e| e.port == num)?;
        e.qp.upgrade()
    }
}
