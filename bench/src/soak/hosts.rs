//! The soak's hosts: one stack each (one data lcore, the controller polled from it) on
//! its own node of the shared simulated fabric, and what the driver reads of them.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use ibpoll::{CtrlConfig, GroupAddr, IdlePolicy, Stack, StopReport};
use ibpoll_ctrl::GroupPhase;
use ibpoll_dev::Nanos;
use ibpoll_mem::HugepagePolicy;
use ibpoll_pmd_sim::{PortId, SimFabric};
use ibpoll_wire::{ipoib, Gid, IbMtu, PKey};

use super::ledger::HostCounts;
use super::traffic::{AppCounters, Mutation, SoakApp, TrafficCtl};
use super::SoakError;

/// Buffers in each host's pool.
const POOL_SIZE: u32 = 4096;
/// A send-only group unused this long is left: short, so that the send-mask churn
/// makes send-only joins expire within the run.
const SENDONLY_IDLE: Nanos = Nanos::from_secs(5);

/// Host `i`'s address: 10.0.0.(i + 1).
pub fn host_ip(i: usize) -> [u8; 4] {
    [10, 0, 0, (i + 1) as u8]
}

/// The soak's groups: 239.1.1.1 upwards.
pub fn groups(n: usize) -> Vec<[u8; 4]> {
    (0..n).map(|g| [239, 1, 1, (g + 1) as u8]).collect()
}

/// One host.
#[derive(Debug)]
pub struct Host {
    /// `h0`, `h1`, ...
    pub name: String,
    /// Its port on the fabric.
    pub port: PortId,
    /// Its port GID (memberships at the SA are by port).
    pub gid: Gid,
    /// The running stack (`None` once stopped).
    pub stack: Option<Stack>,
    /// Its application's counts.
    pub app: Arc<AppCounters>,
}

/// What a host's controller says at one moment.
#[derive(Debug, Clone, Default)]
pub struct CtlView {
    /// The link is up (the broadcast group is Joined).
    pub link_up: bool,
    /// A flush runs, a QP move waits, or SA transactions are in flight.
    pub busy: bool,
    /// Packets queued in the controller.
    pub queued: u64,
    /// The groups it holds Joined, by MGID (broadcast included).
    pub joined: Vec<Gid>,
    /// Its counters.
    pub stats: ibpoll::CtrlStats,
}

/// Starts `n` hosts on `fabric`, each sending `rate_pps` datagrams a second.
#[allow(clippy::too_many_arguments)]
pub fn start(
    fabric: &SimFabric,
    n: usize,
    groups: &[[u8; 4]],
    traffic: &Arc<TrafficCtl>,
    rate_pps: f64,
    mutation: Option<Mutation>,
    stop: &Arc<AtomicBool>,
) -> Result<Vec<Host>, SoakError> {
    let mut hosts = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("h{i}");
        let dev = fabric.add_node(&name, 1);
        let ip = host_ip(i);
        let peers: Vec<[u8; 4]> = (0..n).filter(|&j| j != i).map(host_ip).collect();
        let app = Arc::new(AppCounters::default());
        let (a, t, g) = (app.clone(), traffic.clone(), groups.to_vec());
        let stack = Stack::builder()
            .name(&name)
            .device(dev.clone(), 1)
            .clock(fabric.clock())
            .ipv4(ip)
            .data_cores(1)
            .pin(false)
            .mtu(IbMtu::Mtu2048)
            .pool_size(POOL_SIZE)
            .pool_cache(64)
            .hugepages(HugepagePolicy::Never)
            .rx_ring_size(1024)
            .tx_ring_size(256)
            .idle(IdlePolicy::Sleep {
                after: 64,
                sleep: Duration::from_micros(200),
            })
            .ctrl_config(CtrlConfig {
                sendonly_idle: SENDONLY_IDLE,
                ..CtrlConfig::default()
            })
            .stop_flag(stop.clone())
            .start(move |_| {
                SoakApp::new(
                    i,
                    ip,
                    peers.clone(),
                    g.clone(),
                    t.clone(),
                    a.clone(),
                    rate_pps,
                    mutation,
                )
            })
            .map_err(SoakError::stack(i))?;
        hosts.push(Host {
            name,
            port: dev.port_id(1),
            gid: stack.hwaddr().gid(),
            stack: Some(stack),
            app,
        });
    }
    Ok(hosts)
}

impl Host {
    /// The running stack.
    pub fn stack(&self) -> Result<&Stack, SoakError> {
        self.stack.as_ref().ok_or(SoakError::Stopped {
            host: self.name.clone(),
        })
    }

    /// What the controller says now; `groups` are the soak's groups (the controller
    /// cannot be asked for its table, so the soak asks about each group it uses).
    pub fn view(&self, index: usize, groups: &[[u8; 4]]) -> Result<CtlView, SoakError> {
        let groups = groups.to_vec();
        self.stack()?
            .with_controller(move |c| {
                let bcast = ipoib::broadcast_mgid(PKey::DEFAULT);
                let mut joined = Vec::new();
                for addr in std::iter::once(GroupAddr::Mgid(bcast))
                    .chain(groups.iter().map(|g| GroupAddr::Ipv4(*g)))
                {
                    if c.group_phase(addr) == Some(GroupPhase::Joined) {
                        joined.extend(c.mgid_of(addr));
                    }
                }
                joined.sort();
                CtlView {
                    link_up: c.link_up(),
                    busy: c.is_flushing() || c.qp_move_pending().is_some() || c.sa_in_flight() > 0,
                    queued: (c.mcast_queued() + c.neigh_queued()) as u64,
                    joined,
                    stats: c.stats(),
                }
            })
            .map_err(SoakError::stack(index))
    }

    /// The host's counters (its controller's from `view`).
    pub fn counts(&self, view: &CtlView) -> Result<HostCounts, SoakError> {
        Ok(HostCounts {
            app: self.app.read(),
            lane: self.stack()?.total_stats(),
            ctrl: view.stats,
            ctrl_queued: view.queued,
        })
    }

    /// Buffers of the host's pool out now.
    pub fn buffers_out(&self) -> Result<usize, SoakError> {
        Ok(self.stack()?.pool().in_use())
    }

    /// Stops the stack (it leaves every group on the way) and reports.
    pub fn stop(&mut self, index: usize) -> Result<StopReport, SoakError> {
        let stack = self.stack.take().ok_or(SoakError::Stopped {
            host: self.name.clone(),
        })?;
        stack.stop().map_err(SoakError::stack(index))
    }
}
