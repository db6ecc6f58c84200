//! A forwarder node: the configuration, the stack with one interface per partition,
//! and one [`Forwarder`] per data lcore.

use std::sync::Arc;
use std::time::Duration;

use ibpoll::{IdlePolicy, IfaceConfig, LcoreStats, Stack, StackBuilder, StopReport, IFACES_MAX};
use ibpoll_ctrl::GroupPhase;
use ibpoll_pmd_sim::SimFabric;
use ibpoll_wire::{IbMtu, PKey};

use crate::fwd::{Forwarder, FwdCounters, FwdStats};
use crate::lpm::RouteTable;
use crate::mroute::{MRoute, MrouteTable};
use crate::mroute6::{MRoute6, MrouteTable6};
use crate::node6::subscriptions_on;
use crate::route::Route;
use crate::route6::{Route6, RouteTable6};
use crate::Error;

/// What a forwarder node is: its interfaces (one per partition), its routes and its
/// lcores. [`Default`] is the two-partition node of `ipoib-fwd`'s built-in topology:
/// interface 0 on P_Key 0xffff as 10.1.0.1/16 and fd00:1::1/64, interface 1 on P_Key
/// 0x8001 as 10.2.0.1/16 and fd00:2::1/64, connected routes only, one data lcore.
#[derive(Debug, Clone)]
pub struct FwdConfig {
    /// The interfaces, in order (routes name them by index). Each needs an IPv4
    /// address: it answers ARP there and makes the interface's connected route.
    pub ifaces: Vec<IfaceConfig>,
    /// Routes besides the connected ones (which come first, so a route given here
    /// with the same prefix replaces a connected one). Two of them with the same
    /// prefix are refused, and a gateway must be on its interface's subnet
    /// ([`validate`](Self::validate)).
    pub routes: Vec<Route>,
    /// Static multicast routes: the forwarder subscribes (full member) to every group
    /// they cover on their ingress interface and sends them on their egress interface.
    pub mroutes: Vec<MRoute>,
    /// IPv6 routes besides the connected ones (from the interfaces' IPv6 addresses),
    /// checked as `routes` are.
    pub routes6: Vec<Route6>,
    /// Static IPv6 multicast routes (as `mroutes`; together at most
    /// [`MCAST_GROUPS_MAX`](crate::MCAST_GROUPS_MAX) groups).
    pub mroutes6: Vec<MRoute6>,
    /// Data lcores (each polls every interface).
    pub data_cores: usize,
    /// CPUs to pin the lcores to (default: the stack's choice).
    pub cpus: Option<Vec<usize>>,
    /// Whether to pin the lcores.
    pub pin: bool,
    /// What idle lcores do.
    pub idle: IdlePolicy,
    /// Buffers in the pool (default: the stack's choice).
    pub pool_size: Option<u32>,
    /// Receive buffers per queue.
    pub rx_ring_size: u32,
    /// Send descriptors per queue.
    pub tx_ring_size: u32,
    /// The largest InfiniBand MTU received (sizes the buffers).
    pub mtu: IbMtu,
    /// The node's name (threads, logs).
    pub name: String,
    /// How long stop waits for the flush of every interface.
    pub stop_timeout: Duration,
    /// The stop flag the node's stack shares with the program (see
    /// [`StackBuilder::stop_flag`]); `None`: the stack's own.
    pub stop_flag: Option<Arc<std::sync::atomic::AtomicBool>>,
}

/// The IPv6 addresses of the default configuration's interfaces: fd00:1::1, fd00:2::1.
const DEFAULT_IPV6: [[u8; 16]; 2] = [
    [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
    [0xfd, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
];

impl Default for FwdConfig {
    fn default() -> Self {
        FwdConfig {
            ifaces: vec![
                IfaceConfig {
                    pkey: PKey::DEFAULT,
                    ipv4: Some([10, 1, 0, 1]),
                    prefix_len: 16,
                    ipv6: Some(DEFAULT_IPV6[0]),
                    ipv6_prefix_len: 64,
                },
                IfaceConfig {
                    pkey: PKey(0x8001),
                    ipv4: Some([10, 2, 0, 1]),
                    prefix_len: 16,
                    ipv6: Some(DEFAULT_IPV6[1]),
                    ipv6_prefix_len: 64,
                },
            ],
            routes: Vec::new(),
            mroutes: Vec::new(),
            routes6: Vec::new(),
            mroutes6: Vec::new(),
            data_cores: 1,
            cpus: None,
            pin: true,
            idle: IdlePolicy::Spin,
            pool_size: None,
            rx_ring_size: 1024,
            tx_ring_size: 1024,
            mtu: IbMtu::Mtu2048,
            name: "fwd".to_owned(),
            stop_timeout: Duration::from_secs(10),
            stop_flag: None,
        }
    }
}

fn bad(field: &'static str, fix: impl Into<String>) -> Error {
    Error::BadConfig {
        field,
        fix: fix.into(),
    }
}

impl FwdConfig {
    /// Checks what the stack does not: every interface has an address, routes name
    /// interfaces that exist, and the table can be built.
    pub fn validate(&self) -> Result<(), Error> {
        if self.ifaces.is_empty() || self.ifaces.len() > IFACES_MAX {
            return Err(bad(
                "ifaces",
                format!(
                    "a forwarder needs 1..={IFACES_MAX} interfaces, got {}",
                    self.ifaces.len()
                ),
            ));
        }
        for (i, f) in self.ifaces.iter().enumerate() {
            if f.ipv4.is_none() {
                return Err(bad(
                    "ifaces",
                    format!("interface {i} (P_Key {}) needs an IPv4 address", f.pkey),
                ));
            }
            if f.prefix_len > 32 {
                return Err(bad(
                    "ifaces",
                    format!("interface {i}: prefix length {} is over 32", f.prefix_len),
                ));
            }
        }
        for (i, r) in self.routes.iter().enumerate() {
            if r.iface >= self.ifaces.len() {
                return Err(Error::NoSuchIface {
                    route: r.to_string(),
                    iface: r.iface,
                    ifaces: self.ifaces.len(),
                });
            }
            self.check_gateway(r)?;
            // As for multicast routes: one route per prefix (the table would keep the
            // last silently).
            if let Some(o) = self.routes[..i]
                .iter()
                .find(|o| o.prefix == r.prefix && o.prefix_len == r.prefix_len)
            {
                return Err(Error::DuplicateRoute {
                    route: r.to_string(),
                    other: o.to_string(),
                });
            }
        }
        if self.data_cores == 0 {
            return Err(bad("data_cores", "at least 1 data lcore"));
        }
        self.mroute_table()?;
        self.validate6()
    }

    /// A gateway must be on its outgoing interface's subnet (it is resolved by ARP
    /// there).
    fn check_gateway(&self, r: &Route) -> Result<(), Error> {
        let (Some(via), Some(f)) = (r.via, self.ifaces.get(r.iface)) else {
            return Ok(());
        };
        let Some(addr) = f.ipv4 else {
            return Ok(());
        };
        let subnet = Route::connected(r.iface, addr, f.prefix_len);
        if subnet.contains(via) {
            return Ok(());
        }
        let p = subnet.prefix;
        Err(Error::GatewayOffLink {
            route: r.to_string(),
            via: via.into(),
            iface: r.iface,
            subnet: format!("{}.{}.{}.{}/{}", p[0], p[1], p[2], p[3], subnet.prefix_len),
        })
    }

    /// Every interface's own addresses, IPv4 and IPv6: the forwarder delivers nothing
    /// to them (`to_local`).
    fn local_addresses(&self) -> (Vec<[u8; 4]>, Vec<[u8; 16]>) {
        (
            self.ifaces.iter().filter_map(|f| f.ipv4).collect(),
            self.ifaces.iter().filter_map(|f| f.ipv6).collect(),
        )
    }

    /// The multicast route table (checked against the interfaces).
    pub fn mroute_table(&self) -> Result<MrouteTable, Error> {
        MrouteTable::new(&self.mroutes, self.ifaces.len())
    }

    /// Connected routes (one per interface), then the configured ones.
    pub fn all_routes(&self) -> Vec<Route> {
        let mut all: Vec<Route> = self
            .ifaces
            .iter()
            .enumerate()
            .filter_map(|(i, f)| f.ipv4.map(|a| Route::connected(i, a, f.prefix_len)))
            .collect();
        all.extend_from_slice(&self.routes);
        all
    }

    /// The route table: connected routes and the configured ones.
    pub fn route_table(&self) -> Result<RouteTable, Error> {
        RouteTable::new(&self.all_routes())
    }

    /// A stack builder with this node's interfaces and lcores; add the device
    /// (`.fabric(..)` or `.device(..)`) and start it with [`start_on`].
    pub fn stack_builder(&self) -> StackBuilder {
        let mut b = Stack::builder()
            .name(self.name.clone())
            .data_cores(self.data_cores)
            .pin(self.pin)
            .idle(self.idle)
            .mtu(self.mtu)
            .rx_ring_size(self.rx_ring_size)
            .tx_ring_size(self.tx_ring_size)
            .stop_timeout(self.stop_timeout);
        for f in &self.ifaces {
            b = b.interface(*f);
        }
        if let Some(c) = &self.cpus {
            b = b.cpus(c.clone());
        }
        if let Some(n) = self.pool_size {
            b = b.pool_size(n);
        }
        if let Some(f) = &self.stop_flag {
            b = b.stop_flag(f.clone());
        }
        b
    }
}

/// A running forwarder: its stack and the forwarders' live counters.
#[derive(Debug)]
pub struct FwdNode {
    stack: Stack,
    counters: Vec<Arc<FwdCounters>>,
    table: Arc<RouteTable>,
    mroutes: Arc<MrouteTable>,
    table6: Arc<RouteTable6>,
    mroutes6: Arc<MrouteTable6>,
}

/// What [`FwdNode::stop`] found.
#[derive(Debug, Clone)]
pub struct FwdReport {
    /// The stack's report.
    pub stack: StopReport,
    /// The forwarders' counters, summed over lcores.
    pub fwd: FwdStats,
}

impl FwdNode {
    /// The stack (interfaces, live counters, controllers).
    pub fn stack(&self) -> &Stack {
        &self.stack
    }

    /// The route table.
    pub fn table(&self) -> &Arc<RouteTable> {
        &self.table
    }

    /// The multicast route table (its [`subscriptions`](MrouteTable::subscriptions) are
    /// the groups the node joined).
    pub fn mroutes(&self) -> &Arc<MrouteTable> {
        &self.mroutes
    }

    /// The IPv6 route table.
    pub fn table6(&self) -> &Arc<RouteTable6> {
        &self.table6
    }

    /// The IPv6 multicast route table.
    pub fn mroutes6(&self) -> &Arc<MrouteTable6> {
        &self.mroutes6
    }

    /// How many of the multicast subscriptions (IPv4 and IPv6) are Joined at the SA now.
    pub fn subscriptions_joined(&self) -> Result<usize, Error> {
        let mut n = 0;
        for iface in 0..self.stack.ifaces() {
            let groups = subscriptions_on(&self.mroutes, &self.mroutes6, iface);
            if groups.is_empty() {
                continue;
            }
            n += self.stack.with_controller_on(iface, move |c| {
                groups
                    .iter()
                    .filter(|g| c.group_phase(**g) == Some(GroupPhase::Joined))
                    .count()
            })?;
        }
        Ok(n)
    }

    /// Waits until every interface's link is up and every multicast subscription is
    /// Joined (so that the fabric delivers the groups to the forwarder), at most
    /// `timeout`; whether it got there.
    pub fn wait_ready(&self, timeout: Duration) -> Result<bool, Error> {
        let start = std::time::Instant::now();
        if !self.stack.wait_link_up(timeout)? {
            return Ok(false);
        }
        let want = self.mroutes.subscriptions().len() + self.mroutes6.subscriptions().len();
        loop {
            if self.subscriptions_joined()? == want {
                return Ok(true);
            }
            if start.elapsed() > timeout {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Every lcore's forwarding counters, summed (live).
    pub fn stats(&self) -> FwdStats {
        let mut t = FwdStats::default();
        for c in &self.counters {
            t += c.read();
        }
        t
    }

    /// One lcore's forwarding counters (live).
    pub fn lcore_stats(&self, lcore: usize) -> FwdStats {
        self.counters[lcore].read()
    }

    /// The stack's counters, summed over lcores (live).
    pub fn stack_stats(&self) -> LcoreStats {
        self.stack.total_stats()
    }

    /// Waits until every interface's link is up.
    pub fn wait_link_up(&self, timeout: Duration) -> Result<bool, Error> {
        Ok(self.stack.wait_link_up(timeout)?)
    }

    /// Stops the stack and reports.
    pub fn stop(self) -> Result<FwdReport, Error> {
        let fwd = self.stats();
        let stack = self.stack.stop()?;
        // The lcores have stopped: read again, nothing moves now.
        let mut fwd_final = FwdStats::default();
        for c in &self.counters {
            fwd_final += c.read();
        }
        debug_assert!(fwd_final.rx >= fwd.rx);
        Ok(FwdReport {
            stack,
            fwd: fwd_final,
        })
    }

    /// The stack alone (the forwarders keep counting; their counters are then only
    /// visible through the stack's `app_rx` / `app_dropped`).
    pub fn into_stack(self) -> Stack {
        self.stack
    }
}

/// Starts a forwarder from `builder` (made by [`FwdConfig::stack_builder`], with a
/// device added): one [`Forwarder`] per data lcore, sharing one route table and one
/// multicast route table, and subscribes (full-member joins, sent once each link is
/// up) to every group of the multicast routes on its ingress interface.
pub fn start_on(builder: StackBuilder, cfg: &FwdConfig) -> Result<FwdNode, Error> {
    cfg.validate()?;
    let table = Arc::new(cfg.route_table()?);
    let mroutes = Arc::new(cfg.mroute_table()?);
    let table6 = Arc::new(cfg.route_table6()?);
    let mroutes6 = Arc::new(cfg.mroute_table6()?);
    let (local, local6) = cfg.local_addresses();
    let counters: Vec<Arc<FwdCounters>> = (0..cfg.data_cores)
        .map(|_| Arc::new(FwdCounters::default()))
        .collect();
    let stack = {
        let (table, mroutes, counters) = (table.clone(), mroutes.clone(), counters.clone());
        let (table6, mroutes6) = (table6.clone(), mroutes6.clone());
        builder.start(move |i| {
            Forwarder::new(table.clone(), &local, counters[i].clone())
                .with_mroutes(mroutes.clone())
                .with_ipv6(table6.clone(), &local6)
                .with_mroutes6(mroutes6.clone())
        })?
    };
    for iface in 0..stack.ifaces() {
        let groups = subscriptions_on(&mroutes, &mroutes6, iface);
        if groups.is_empty() {
            continue;
        }
        let refused = stack.with_controller_on(iface, move |c| {
            groups.into_iter().find(|g| !c.join_group(*g))
        });
        let fail = match refused {
            Ok(None) => continue,
            Ok(Some(g)) => bad(
                "mroutes",
                format!(
                    "interface {iface} refused to subscribe to group {} (its group table is full, or the group is not one of its partition)",
                    crate::node6::group_name(g)
                ),
            ),
            Err(e) => Error::Stack(e),
        };
        let _ = stack.stop();
        return Err(fail);
    }
    Ok(FwdNode {
        stack,
        counters,
        table,
        mroutes,
        table6,
        mroutes6,
    })
}

/// Starts a forwarder node named `node` on the simulated fabric `fabric`, with one
/// interface per configured partition.
pub fn start_forwarder(fabric: &SimFabric, node: &str, cfg: &FwdConfig) -> Result<FwdNode, Error> {
    start_on(cfg.stack_builder().fabric(fabric, node), cfg)
}

/// [`start_forwarder`], returning the stack alone (see [`FwdNode::into_stack`]).
pub fn build_forwarder_stack(
    fabric: &SimFabric,
    node: &str,
    cfg: &FwdConfig,
) -> Result<Stack, Error> {
    Ok(start_forwarder(fabric, node, cfg)?.into_stack())
}
