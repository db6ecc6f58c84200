//! The forwarder node of `--topology fwd`: an ipoib-fwd node (the `ipoib_fwd` library)
//! with one interface in the generator's partition and one in the sink's, connected
//! routes only.
//!
//! ipoib-fwd routes unicast only (it drops multicast and counts it, `not_unicast`), so
//! pktgen's multicast groups are not forwarded: the sink subscribes to them on a second
//! interface in the generator's partition (see `run.rs`).

use std::time::Duration;

use ibpoll::IfaceConfig;
use ibpoll_pmd_sim::SimFabric;
use ibpoll_wire::{Gid, PKey};
use ipoib_fwd::{FwdConfig, FwdNode as Node};

use crate::report::Drops;
use crate::run::{stack_drops, Placement};

/// The forwarder's two sides: (partition, its address there).
#[derive(Debug, Clone)]
pub struct FwdPlan {
    pub gen_side: (PKey, [u8; 4]),
    pub sink_side: (PKey, [u8; 4]),
}

/// What a stopped forwarder reports.
#[derive(Debug)]
pub struct FwdFinal {
    pub drops: Drops,
    pub gids: Vec<Gid>,
    pub flushed: bool,
    pub pool_in_use: usize,
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
        lcores: usize,
        cpus: Vec<usize>,
        p: &Placement,
    ) -> Result<FwdNode, String> {
        let iface = |(pkey, ip): (PKey, [u8; 4])| IfaceConfig {
            pkey,
            ipv4: Some(ip),
            prefix_len: 24,
        };
        let cfg = FwdConfig {
            ifaces: vec![iface(plan.gen_side), iface(plan.sink_side)],
            routes: Vec::new(),
            data_cores: lcores,
            cpus: Some(cpus),
            pin: p.pin,
            idle: p.idle,
            mtu: ibpoll_wire::IbMtu::Mtu4096,
            name: "fwd".to_owned(),
            stop_timeout: Duration::from_secs(15),
            ..FwdConfig::default()
        };
        let node = ipoib_fwd::start_forwarder(fabric, "fwd", &cfg).map_err(|e| e.to_string())?;
        Ok(FwdNode { node })
    }

    pub fn wait_ready(&self, timeout: Duration) -> Result<(), String> {
        match self.node.wait_link_up(timeout) {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!("its links did not come up within {timeout:?}")),
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
        })
    }
}
