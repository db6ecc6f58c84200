//! The forwarder node of `--topology fwd`: an ipoib-fwd node (the `ipoib_fwd` library)
//! with one interface in the generator's partition and one in the sink's (with IPv6
//! addresses too for `--ipv6`), connected routes, and one multicast route (IPv4 or IPv6)
//! for pktgen's groups from the generator's side to the sink's: the forwarder subscribes to the groups (full member) in the generator's
//! partition and sends them on in the sink's (a send-only join there), where the sink
//! subscribes to them.

use std::time::Duration;

use ibpoll::IfaceConfig;
use ibpoll_pmd_sim::SimFabric;
use ibpoll_wire::{Gid, PKey};
use ipoib_fwd::{FwdConfig, FwdNode as Node, MRoute, MRoute6};

use crate::packet::Ip;

use crate::report::Drops;
use crate::run::{stack_drops, Placement};

/// The forwarder's two sides: (partition, its IPv4 address there, its IPv6 address
/// there if any).
#[derive(Debug, Clone)]
pub struct FwdPlan {
    pub gen_side: (PKey, [u8; 4], Option<[u8; 16]>),
    pub sink_side: (PKey, [u8; 4], Option<[u8; 16]>),
    /// Serve the node on the process's telemetry socket.
    pub telemetry: bool,
}

/// What a stopped forwarder reports.
#[derive(Debug)]
pub struct FwdFinal {
    pub drops: Drops,
    pub gids: Vec<Gid>,
    pub flushed: bool,
    pub pool_in_use: usize,
    /// Multicast packets the forwarder sent on.
    pub mcast_forwarded: u64,
    /// Lcores whose forwarder panicked.
    pub app_panics: usize,
}

/// The smallest multicast route from interface 0 to 1 that covers the IPv4 `groups`
/// (none for no IPv4 groups).
pub fn mroute_for(groups: &[Ip]) -> Option<MRoute> {
    let v4 = groups.iter().filter_map(|g| match g {
        Ip::V4(a) => Some(u32::from_be_bytes(*a)),
        Ip::V6(_) => None,
    });
    let (lo, hi) = v4.fold(None, |m: Option<(u32, u32)>, g| {
        Some(m.map_or((g, g), |(lo, hi)| (lo.min(g), hi.max(g))))
    })?;
    let len = (lo ^ hi).leading_zeros() as u8;
    Some(MRoute::new(lo.to_be_bytes(), len, 0, 1))
}

/// The smallest IPv6 multicast route from interface 0 to 1 that covers the IPv6
/// `groups` (none for no IPv6 groups).
pub fn mroute6_for(groups: &[Ip]) -> Option<MRoute6> {
    let v6 = groups.iter().filter_map(|g| match g {
        Ip::V6(a) => Some(u128::from_be_bytes(*a)),
        Ip::V4(_) => None,
    });
    let (lo, hi) = v6.fold(None, |m: Option<(u128, u128)>, g| {
        Some(m.map_or((g, g), |(lo, hi)| (lo.min(g), hi.max(g))))
    })?;
    let len = (lo ^ hi).leading_zeros() as u8;
    Some(MRoute6::new(lo.to_be_bytes(), len, 0, 1))
}

/// A running forwarder node.
#[derive(Debug)]
pub struct FwdNode {
    node: Node,
}

fn fwd_drops(d: &mut Drops, f: &ipoib_fwd::FwdStats) {
    for (r, n) in f.drops() {
        // `tx_refused` is also in the stack's tx_buffer_full / tx_no_iface.
        if r != "tx_refused" {
            d.add("fwd", r, n);
        }
    }
}

impl FwdNode {
    pub fn start(
        fabric: &SimFabric,
        plan: &FwdPlan,
        groups: &[Ip],
        lcores: usize,
        cpus: Vec<usize>,
        p: &Placement,
        stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> Result<FwdNode, String> {
        let iface = |(pkey, ip, ip6): (PKey, [u8; 4], Option<[u8; 16]>)| IfaceConfig {
            pkey,
            ipv4: Some(ip),
            prefix_len: 24,
            ipv6: ip6,
            ipv6_prefix_len: 64,
        };
        let cfg = FwdConfig {
            ifaces: vec![iface(plan.gen_side), iface(plan.sink_side)],
            routes: Vec::new(),
            mroutes: mroute_for(groups).into_iter().collect(),
            mroutes6: mroute6_for(groups).into_iter().collect(),
            data_cores: lcores,
            cpus: Some(cpus),
            pin: p.pin,
            idle: p.idle,
            mtu: ibpoll_wire::IbMtu::Mtu4096,
            name: "fwd".to_owned(),
            stop_timeout: Duration::from_secs(15),
            stop_flag: Some(stop.clone()),
            ..FwdConfig::default()
        };
        let builder = cfg
            .stack_builder()
            .fabric(fabric, "fwd")
            .telemetry(plan.telemetry);
        let node = ipoib_fwd::start_on(builder, &cfg).map_err(|e| e.to_string())?;
        Ok(FwdNode { node })
    }

    /// Links up and every group subscribed to in the generator's partition.
    pub fn wait_ready(&self, timeout: Duration) -> Result<(), String> {
        match self.node.wait_ready(timeout) {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!(
                "its links did not come up, or its {} group subscriptions were not joined, within {timeout:?}",
                self.node.mroutes().subscriptions().len()
                    + self.node.mroutes6().subscriptions().len()
            )),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Drops so far (live counters; the control cores' too).
    pub fn live_drops(&self, d: &mut Drops) {
        let s = self.node.stack();
        let ctrl: Vec<_> = (0..s.ifaces())
            .filter_map(|i| s.ctrl_stats_on(i).ok())
            .collect();
        stack_drops(d, "fwd", &s.total_stats(), &ctrl, false);
        fwd_drops(d, &self.node.stats());
    }

    /// A number that changes while packets move through the forwarder.
    pub fn activity(&self) -> u64 {
        let s = self.node.stats();
        s.rx + s.forwarded
    }

    pub fn stop(self) -> Result<FwdFinal, String> {
        let s = self.node.stack();
        let gids = (0..s.ifaces()).map(|i| s.iface_hwaddr(i).gid()).collect();
        let r = self.node.stop().map_err(|e| e.to_string())?;
        let mut drops = Drops::default();
        stack_drops(
            &mut drops,
            "fwd",
            &r.stack.total(),
            &r.stack.ctrl_ifaces,
            false,
        );
        fwd_drops(&mut drops, &r.fwd);
        Ok(FwdFinal {
            drops,
            gids,
            flushed: r.stack.flushed,
            pool_in_use: r.stack.pool_in_use,
            mcast_forwarded: r.fwd.mcast_forwarded,
            app_panics: r.stack.app_panics.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_route_covers_the_groups() {
        let r = mroute_for(&crate::run::groups(4, false)).unwrap();
        assert_eq!(r.to_string(), "239.1.0.0/29,from=0,to=1");
        let r = mroute_for(&crate::run::groups(250, false)).unwrap();
        assert_eq!(r.to_string(), "239.1.0.0/24,from=0,to=1");
        assert_eq!(
            mroute_for(&crate::run::groups(1, false))
                .unwrap()
                .prefix_len,
            32
        );
        assert!(mroute_for(&[]).is_none());
        assert!(mroute_for(&crate::run::groups(4, true)).is_none());
        let r = mroute6_for(&crate::run::groups(4, true)).unwrap();
        assert_eq!(r.to_string(), "ff05::1:0/125,from=0,to=1");
        let r = mroute6_for(&crate::run::groups(250, true)).unwrap();
        assert_eq!(r.to_string(), "ff05::1:0/120,from=0,to=1");
        assert!(mroute6_for(&crate::run::groups(4, false)).is_none());
    }
}
