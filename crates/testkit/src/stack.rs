//! Stacks for tests on the simulated fabric: small rings and pool, lcores that sleep
//! when idle (the tests share a few CPUs), and the stack's counter conservation laws.

use std::time::{Duration, Instant};

use ibpoll::{IdlePolicy, Stack, StackBuilder, StopReport};
use ibpoll_pmd_sim::SimFabric;
use ibpoll_wire::IbMtu;

/// Idle lcores sleep 200 µs after 64 idle iterations.
pub fn sleepy() -> IdlePolicy {
    IdlePolicy::Sleep {
        after: 64,
        sleep: Duration::from_micros(200),
    }
}

/// A builder for stack `name` on node `name` of `fabric`: one data core, MTU 2048, 4096
/// buffers, receive rings of 1024 and send rings of 256, [`sleepy`] lcores. The test
/// adds its interfaces, CPUs and stop timeout.
pub fn small(fabric: &SimFabric, name: &str) -> StackBuilder {
    Stack::builder()
        .name(name)
        .fabric(fabric, name)
        .data_cores(1)
        .mtu(IbMtu::Mtu2048)
        .pool_size(4096)
        .rx_ring_size(1024)
        .tx_ring_size(256)
        .idle(sleepy())
}

/// Polls `cond` every `every` until it holds; panics with `what` after `timeout`.
pub fn wait_for_every(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut cond: impl FnMut() -> bool,
) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(every);
    }
}

/// The per-lcore receive and send conservation laws of `LcoreCounters`, for a stopped
/// stack: every packet received and every packet the application sent is accounted for
/// exactly once.
pub fn assert_conserved(r: &StopReport) {
    for (i, s) in r.lcores.iter().enumerate() {
        assert_eq!(
            s.rx_packets + s.fanout_in,
            s.rx_loopback
                + s.rx_malformed
                + s.rx_unknown_ethertype
                + s.rx_arp
                + s.rx_nd
                + s.rx_ctrl_full
                + s.app_rx
                + s.stop_dropped_rx
                + s.fanout_out
                + s.fanout_full,
            "lcore {i}: receive counters do not add up: {s:?}"
        );
        assert_eq!(
            s.app_tx,
            s.tx_posted
                + s.to_ctrl_resolve
                + s.to_ctrl_mcast
                + s.tx_link_down
                + s.tx_too_long
                + s.tx_malformed
                + s.tx_no_iface
                + s.tx_ctrl_full
                + s.tx_full
                + s.stop_dropped_tx,
            "lcore {i}: send counters do not add up: {s:?}"
        );
    }
    // Software fan-out: every packet one lane handed to another's ring was taken out
    // of it (to the application, or freed at stop).
    let (out, inn) = r
        .lcores
        .iter()
        .fold((0, 0), |(o, n), s| (o + s.fanout_out, n + s.fanout_in));
    assert_eq!(
        out, inn,
        "fan-out rings: {out} handed over, {inn} taken out"
    );
}
