//! Creates what a checked configuration describes: the device's port, the pool, per
//! interface one UD QP per lane and a send-only QP for the control core, the
//! controllers, and the lanes. Starts no thread.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use ibpoll_ctrl::{Controller, CtrlConfig, CtrlQps, DataCore};
use ibpoll_dev::{Clock, Device, MonotonicClock, Port, PortAttr, UdQp, UdQpConfig};
use ibpoll_mem::Mempool;
use ibpoll_wire::{QKey, Qpn};

use super::check::Plan;
use super::{DeviceChoice, StackBuilder};
use crate::app::LcoreCtx;
use crate::control::{Control, StackParts};
use crate::lane::{Lane, RxIface};
use crate::lcore::{CtlHost, IfShared, Shared};
use crate::signal::StopState;
use crate::stack::IfaceInfo;
use crate::stack::Stack;
use crate::stats::{LcoreCounterSet, LcoreCounters};
use crate::tx::{Tx, TxIface};
use crate::Error;
use std::net::Ipv4Addr;

/// Everything a stack is made of, before any thread runs it.
pub(crate) struct Built {
    pub(crate) port: Arc<dyn Port>,
    pub(crate) pool: Mempool,
    pub(crate) shared: Arc<Shared>,
    pub(crate) hosts: Vec<CtlHost>,
    pub(crate) lanes: Vec<Lane>,
    pub(crate) counters: Vec<LcoreCounterSet>,
    pub(crate) infos: Vec<IfaceInfo>,
}

/// One interface's QPs: one per lane (lane 0's is the interface's own) and the control
/// core's send-only one.
struct IfaceQps {
    lanes: Vec<UdQp>,
    ctl: UdQp,
    /// The HCA drops our own multicast before it loops back.
    hw_blocks_loopback: bool,
}

impl IfaceQps {
    fn lane_qpns(&self) -> Vec<Qpn> {
        self.lanes.iter().map(|q| q.qpn).collect()
    }

    /// What the lanes' loopback filter compares against: every QPN, or none when the
    /// HCA filters.
    fn own_qpns(&self) -> Box<[u32]> {
        if self.hw_blocks_loopback {
            return Box::new([]);
        }
        let ctl = std::iter::once(self.ctl.qpn);
        self.lanes
            .iter()
            .map(|q| q.qpn)
            .chain(ctl)
            .map(Qpn::get)
            .collect()
    }
}

/// The parts of a stack: its handle, its control core and its lanes; nothing runs yet.
pub(super) fn parts(b: &StackBuilder, plan: &Plan) -> Result<StackParts, Error> {
    let Built {
        port,
        pool,
        shared,
        hosts,
        lanes,
        counters,
        infos,
    } = build(b, plan)?;
    let stop_state = Arc::new(StopState::new(b.stop_flag.clone().unwrap_or_default()));
    let telemetry = b
        .telemetry
        .then(|| crate::telemetry::Parts::new(b, &port, &shared, &counters, &infos));
    let mut stack = Stack::new(
        shared.clone(),
        counters,
        pool,
        port,
        infos,
        b.stop_timeout,
        stop_state.clone(),
    );
    // Served from now on: its counters are live, its control messages wait for the
    // control core (the lcores, or the application's own poller).
    stack.telemetry = telemetry.map(crate::telemetry::Parts::register);
    let control = Control::new(hosts, shared, stop_state, b.stop_timeout);
    Ok(StackParts {
        stack,
        control,
        lanes,
    })
}

pub(super) fn build(b: &StackBuilder, plan: &Plan) -> Result<Built, Error> {
    let (device, port_num, clock) = device(b)?;
    let dev_err = |op: &'static str| {
        let device = device.name().to_owned();
        move |source| Error::Device { op, device, source }
    };
    let port = device.open_port(port_num).map_err(dev_err("open_port"))?;
    let attr = port.attr();
    let pkey_indexes = pkey_indexes(plan, &attr, port_num)?;
    let pool = Mempool::new(plan.pool.clone()).map_err(|source| Error::Pool {
        n_bufs: plan.pool.n_bufs,
        data_room: plan.pool.data_room,
        source,
    })?;
    let mut qps = Vec::with_capacity(plan.ifaces.len());
    for &pkey_index in &pkey_indexes {
        qps.push(create_qps(b, plan, &port, &pool, pkey_index).map_err(dev_err("create_ud_qp"))?);
    }
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        ifaces: qps
            .iter()
            .map(|q| IfShared::new(attr.lid.0, q.lane_qpns()))
            .collect(),
    });
    // One controller per interface; each must see every port event, so with several
    // they read them through a tee (one interface reads the port itself, unchanged).
    let ctl_ports: Vec<Arc<dyn Port>> = if qps.len() == 1 {
        vec![port.clone()]
    } else {
        crate::tee::tee(&port, qps.len())
    };
    let n_ifaces = qps.len();
    let mut hosts = Vec::with_capacity(n_ifaces);
    let mut infos = Vec::with_capacity(n_ifaces);
    let mut lane_parts: Vec<Vec<(RxIface, TxIface)>> = (0..plan.data_cores)
        .map(|_| Vec::with_capacity(n_ifaces))
        .collect();
    for (i, q) in qps.into_iter().enumerate() {
        let f = plan.ifaces[i];
        let ctrl_cfg = CtrlConfig {
            pkey: f.pkey,
            scope: b.scope,
            ipv4: f.ipv4,
            ipv6: f.ipv6,
            data_cores: plan.data_cores,
            ..b.ctrl.clone()
        };
        let own_qpns = q.own_qpns();
        let lane_qpns = q.lane_qpns();
        let ctl_qps = CtrlQps::new(lane_qpns[0], lane_qpns, q.ctl.tx);
        let (ctl, cores) = Controller::new(
            ctrl_cfg,
            ctl_ports[i].clone(),
            ctl_qps,
            pool.clone(),
            clock.clone(),
        )
        .map_err(|source| Error::Controller { source })?;
        infos.push(IfaceInfo {
            config: f,
            qpn: ctl.hwaddr().qpn(),
            hwaddr: ctl.hwaddr(),
        });
        hosts.push(CtlHost {
            ctl,
            port: ctl_ports[i].clone(),
            shared: shared.clone(),
            iface: i,
            pending_move: None,
        });
        add_iface(&mut lane_parts, q.lanes, cores, &own_qpns, plan.fanout_ring);
    }
    let (lanes, counters) = lanes(plan, lane_parts, &pool, &shared);
    Ok(Built {
        port,
        pool,
        shared,
        hosts,
        lanes,
        counters,
        infos,
    })
}

/// A device, the port to open on it, and the control plane's clock.
type Opened = (Arc<dyn Device>, u8, Arc<dyn Clock>);

/// The device and port to open, and the control plane's clock. A stack names its
/// device: there is no silent default.
fn device(b: &StackBuilder) -> Result<Opened, Error> {
    match b.device.clone() {
        #[cfg(feature = "sim")]
        Some(DeviceChoice::Fabric { fabric, node }) => {
            let clock = b.clock.clone().unwrap_or_else(|| fabric.clock());
            Ok((fabric.add_node(&node, 1), 1, clock))
        }
        Some(DeviceChoice::Device { device, port }) => {
            let clock = b
                .clock
                .clone()
                .unwrap_or_else(|| Arc::new(MonotonicClock::new()));
            Ok((device, port, clock))
        }
        None => Err(Error::NoDevice),
    }
}

/// Each interface's index in the port's P_Key table.
fn pkey_indexes(plan: &Plan, attr: &PortAttr, port_num: u8) -> Result<Vec<u16>, Error> {
    plan.ifaces
        .iter()
        .map(|f| {
            attr.pkey_index(f.pkey).ok_or_else(|| Error::Partition {
                pkey: f.pkey,
                port: port_num,
                pkeys: attr
                    .pkeys
                    .iter()
                    .filter(|p| p.base() != 0)
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
        })
        .collect()
}

/// One interface's QPs.
fn create_qps(
    b: &StackBuilder,
    plan: &Plan,
    port: &Arc<dyn Port>,
    pool: &Mempool,
    pkey_index: u16,
) -> Result<IfaceQps, ibpoll_dev::Error> {
    let caps = port.ud_caps();
    let mut cfg = UdQpConfig::new(pool.clone(), pkey_index, QKey::IPOIB_DEFAULT);
    cfg.rx_ring_size = b.rx_ring_size;
    cfg.tx_ring_size = b.tx_ring_size;
    cfg.block_self_mcast_lb = caps.block_self_mcast_lb;
    // Where the device spreads one QPN's traffic over several receive queues (RSS),
    // the interface's QP gets one per lane, so unicast spreads over the lanes too.
    let n = plan.data_cores;
    let rss = n > 1 && usize::from(caps.rx_queues_per_qpn) >= n;
    let mut lanes = Vec::with_capacity(n);
    for k in 0..n {
        let mut c = cfg.clone();
        if k == 0 && rss {
            c.rx_queues = n as u16;
        }
        lanes.push(port.create_ud_qp(&c)?);
    }
    cfg.rx_ring_size = 0;
    let ctl = port.create_ud_qp(&cfg)?;
    Ok(IfaceQps {
        lanes,
        ctl,
        hw_blocks_loopback: caps.block_self_mcast_lb,
    })
}

/// The next interface's share of every lane (`parts[k]`): lane `k`'s QP and data core,
/// the interface QP's receive queues beyond the first (RSS) one per other lane, and the
/// fan-out rings when asked for.
fn add_iface(
    parts: &mut [Vec<(RxIface, TxIface)>],
    mut lanes: Vec<UdQp>,
    cores: Vec<DataCore>,
    own_qpns: &[u32],
    fanout_ring: Option<usize>,
) {
    let i = parts[0].len();
    let first = 1.min(lanes[0].rx.len());
    let spread: Vec<_> = lanes[0].rx.drain(first..).collect();
    let rss = !spread.is_empty();
    let mut spread = spread.into_iter();
    for (k, ((parts, mut qp), core)) in parts.iter_mut().zip(lanes).zip(cores).enumerate() {
        if k > 0 {
            qp.rx.extend(spread.next());
        }
        parts.push(lane_iface(qp, core, own_qpns.into()));
    }
    if let Some(ring) = fanout_ring {
        fanout_iface(parts, i, ring, rss);
    }
}

/// Interface `i`'s fan-out rings, from lane 0 (whose QP is the interface's) to every
/// other lane; none where the device spreads the interface's QP itself (RSS).
fn fanout_iface(parts: &mut [Vec<(RxIface, TxIface)>], i: usize, ring: usize, rss: bool) {
    if rss {
        tracing::info!(
            iface = i,
            "ibpoll: the device spreads the interface's traffic over the lanes (RSS); \
             software fan-out stays off for it"
        );
        return;
    }
    let (out, ins) = crate::fanout::rings(parts.len(), 0, ring);
    for (lane, fan_in) in parts.iter_mut().zip(ins) {
        lane[i].0.fan_in = fan_in;
    }
    parts[0][i].0.fan_out = Some(out);
}

/// One lane's share of one interface.
fn lane_iface(qp: UdQp, core: DataCore, own_qpns: Box<[u32]>) -> (RxIface, TxIface) {
    (RxIface::new(qp.rx, own_qpns), TxIface::new(qp.tx, core))
}

/// The lanes and where their counters live.
fn lanes(
    plan: &Plan,
    parts: Vec<Vec<(RxIface, TxIface)>>,
    pool: &Mempool,
    shared: &Arc<Shared>,
) -> (Vec<Lane>, Vec<LcoreCounterSet>) {
    let mut lanes = Vec::with_capacity(parts.len());
    let mut sets = Vec::with_capacity(parts.len());
    for (i, p) in parts.into_iter().enumerate() {
        let counters = Arc::new(LcoreCounters::default());
        let (rx, tx): (Vec<RxIface>, Vec<TxIface>) = p.into_iter().unzip();
        sets.push(LcoreCounterSet {
            lcore: counters.clone(),
            rx: rx
                .iter()
                .flat_map(|r| r.qs.iter().map(|q| q.counters()))
                .collect(),
            tx: tx.iter().map(TxIface::counters).collect(),
            ctrl: tx.iter().map(|t| t.core.drops.clone()).collect(),
        });
        let ctx = LcoreCtx {
            lcore: i,
            data_cores: plan.data_cores,
            link_up: false,
            mtu: 0,
            now: std::time::Instant::now(),
            iface: 0,
            ifaces: plan.ifaces.len(),
            links_up: 0,
        };
        let tx = Tx::new(tx, pool.clone());
        let mut lane = Lane::new(ctx, i, rx, tx, counters, shared.clone());
        lane.ext.set_addrs(
            plan.ifaces
                .iter()
                .map(|f| f.ipv4.map(Ipv4Addr::from))
                .collect(),
        );
        lanes.push(lane);
    }
    (lanes, sets)
}
