//! Test helpers: the two-partition topology (source on 0xffff, forwarder, sink on
//! 0x8001) on one simulated fabric.
#![allow(dead_code)]

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ibpoll::{IdlePolicy, IfaceConfig, Stack, StackBuilder};
use ibpoll_pmd_sim::{FabricConfig, SimFabric};
use ibpoll_wire::{IbMtu, PKey};
use ipoib_fwd::FwdConfig;

pub const SRC_IP: [u8; 4] = [10, 1, 0, 2];
pub const SINK_IP: [u8; 4] = [10, 2, 0, 2];
pub const T: Duration = Duration::from_secs(30);

/// The tests share 2 CPUs: run them one at a time.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn fabric() -> SimFabric {
    SimFabric::new(FabricConfig {
        partitions: vec![PKey::DEFAULT, PKey(0x8001)],
        broadcast_mtu: IbMtu::Mtu2048,
        port_mtu: IbMtu::Mtu2048,
        ..FabricConfig::default()
    })
}

fn sleepy() -> IdlePolicy {
    IdlePolicy::Sleep {
        after: 64,
        sleep: Duration::from_micros(200),
    }
}

/// An endpoint with one interface on `pkey`.
pub fn endpoint(fabric: &SimFabric, name: &str, pkey: PKey, ip: [u8; 4]) -> StackBuilder {
    Stack::builder()
        .name(name)
        .fabric(fabric, name)
        .interface(IfaceConfig {
            pkey,
            ipv4: Some(ip),
            prefix_len: 16,
        })
        .data_cores(1)
        .pin(false)
        .mtu(IbMtu::Mtu2048)
        .pool_size(4096)
        .rx_ring_size(1024)
        .tx_ring_size(256)
        .idle(sleepy())
        .stop_timeout(Duration::from_secs(20))
}

/// The forwarder's configuration for tests: small, sleepy, unpinned.
pub fn fwd_config() -> FwdConfig {
    FwdConfig {
        pin: false,
        idle: sleepy(),
        pool_size: Some(8192),
        tx_ring_size: 256,
        stop_timeout: Duration::from_secs(20),
        ..FwdConfig::default()
    }
}

/// Polls `cond` every 2 ms until it holds; panics with `what` after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The stack's per-lcore conservation laws, for a stopped stack.
pub fn assert_conserved(r: &ibpoll::StopReport) {
    for (i, s) in r.lcores.iter().enumerate() {
        assert_eq!(
            s.rx_packets,
            s.rx_loopback
                + s.rx_malformed
                + s.rx_unknown_ethertype
                + s.rx_arp
                + s.rx_ctrl_full
                + s.app_rx
                + s.stop_dropped_rx,
            "lcore {i}: {s:?}"
        );
        assert_eq!(
            s.app_tx,
            s.tx_burst_consumed + s.to_ctrl_resolve + s.to_ctrl_mcast + s.tx_dropped(),
            "lcore {i}: {s:?}"
        );
    }
}

pub fn arc<T>(t: T) -> Arc<T> {
    Arc::new(t)
}
