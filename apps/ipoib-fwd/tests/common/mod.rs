//! Test helpers: the two-partition topology (source on 0xffff, forwarder, sink on
//! 0x8001) on one simulated fabric.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use ibpoll::{IfaceConfig, StackBuilder};
use ibpoll_pmd_sim::{FabricConfig, SimFabric};
use ibpoll_testkit::stack;
use ibpoll_wire::{IbMtu, PKey};
use ipoib_fwd::FwdConfig;

pub const SRC_IP: [u8; 4] = [10, 1, 0, 2];
pub const SINK_IP: [u8; 4] = [10, 2, 0, 2];
pub const T: Duration = Duration::from_secs(30);

/// The tests share 2 CPUs: run them one at a time.
pub use ibpoll_testkit::serial;
/// The stack's per-lcore conservation laws, for a stopped stack.
pub use ibpoll_testkit::stack::assert_conserved;

pub fn fabric() -> SimFabric {
    SimFabric::new(FabricConfig {
        partitions: vec![PKey::DEFAULT, PKey(0x8001)],
        broadcast_mtu: IbMtu::Mtu2048,
        port_mtu: IbMtu::Mtu2048,
        ..FabricConfig::default()
    })
}

/// An endpoint with one interface on `pkey`.
pub fn endpoint(fabric: &SimFabric, name: &str, pkey: PKey, ip: [u8; 4]) -> StackBuilder {
    stack::small(fabric, name)
        .interface(IfaceConfig {
            pkey,
            ipv4: Some(ip),
            prefix_len: 16,
            ..IfaceConfig::default()
        })
        .pin(false)
        .stop_timeout(Duration::from_secs(20))
}

/// The forwarder's configuration for tests: small, sleepy, unpinned.
pub fn fwd_config() -> FwdConfig {
    FwdConfig {
        pin: false,
        idle: stack::sleepy(),
        pool_size: Some(8192),
        tx_ring_size: 256,
        stop_timeout: Duration::from_secs(20),
        ..FwdConfig::default()
    }
}

/// Polls `cond` every 2 ms until it holds; panics with `what` after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, cond: impl FnMut() -> bool) {
    stack::wait_for_every(what, timeout, Duration::from_millis(2), cond);
}

pub fn arc<T>(t: T) -> Arc<T> {
    Arc::new(t)
}
