//! Per-lcore counters: one writer (the lcore), any number of live readers.

use std::sync::Arc;

use ibpoll_dev::{Counter, RxCounters, TxCounters};

/// The live counters of one data lcore. Only the lcore writes them (a relaxed load and
/// store each, [`Counter`]); any thread may read them while it runs, without stopping it.
///
/// Conservation, per lcore once it has stopped:
///
/// * receive: `rx_packets == rx_loopback + rx_malformed + rx_unknown_ethertype + rx_arp
///   + rx_ctrl_full + app_rx + stop_dropped_rx`, and every packet handed to the
///   application (`app_rx`) was consumed by it or counted in `app_dropped`;
/// * send: `app_tx == tx_burst_consumed + to_ctrl + tx_link_down + tx_too_long
///   + tx_malformed + tx_no_iface + tx_ctrl_full + tx_full + stop_dropped_tx + tx_buffer_full`, where
///   `tx_burst_consumed` (descriptors the driver took) splits into the driver's own
///   `tx_packets` and `tx_errors`.
#[derive(Debug, Default)]
#[repr(C, align(64))]
pub struct LcoreCounters {
    /// Loop iterations.
    pub iterations: Counter,
    /// Nanoseconds spent in iterations that did work.
    pub busy_ns: Counter,
    /// Nanoseconds spent in iterations that found nothing to do.
    pub idle_ns: Counter,

    /// Packets taken from the receive queues.
    pub rx_packets: Counter,
    /// Bytes taken from the receive queues (from the IPoIB header on).
    pub rx_bytes: Counter,
    /// Our own multicast, looped back by the HCA (dropped by SLID and source QPN).
    pub rx_loopback: Counter,
    /// Packets too short for their headers or whose IP version disagrees with the
    /// IPoIB ethertype (dropped).
    pub rx_malformed: Counter,
    /// Packets with an ethertype other than IPv4, IPv6 and ARP (dropped).
    pub rx_unknown_ethertype: Counter,
    /// ARP packets handed to the control core.
    pub rx_arp: Counter,
    /// ARP packets dropped because the request ring to the control core was full.
    pub rx_ctrl_full: Counter,
    /// IPv4/IPv6 packets handed to the application.
    pub app_rx: Counter,
    /// Packets the application left in its receive slots (freed by the stack).
    pub app_dropped: Counter,

    /// Packets the application queued for transmission (pushes into its `TxBuffer`,
    /// retries not counted again).
    pub app_tx: Counter,
    /// Packets dropped because the application's `TxBuffer` was full.
    pub tx_buffer_full: Counter,
    /// Descriptors the driver consumed (sent, or failed and counted in `tx_errors`).
    pub tx_burst_consumed: Counter,
    /// Bytes of those descriptors (from the IPoIB header on).
    pub tx_bytes: Counter,
    /// Packets handed to the control core because the snapshot had no neighbour for
    /// their next hop (ARP and path resolution follow).
    pub to_ctrl_resolve: Counter,
    /// Packets handed to the control core because their group was not Joined.
    pub to_ctrl_mcast: Counter,
    /// Packets dropped because the link was down.
    pub tx_link_down: Counter,
    /// Packets longer than the interface MTU (dropped).
    pub tx_too_long: Counter,
    /// Packets that were not IPv4/IPv6 or had no headroom for the IPoIB header (dropped).
    pub tx_malformed: Counter,
    /// Packets pushed on an interface the stack does not have (dropped).
    pub tx_no_iface: Counter,
    /// Packets dropped because the request ring to the control core was full.
    pub tx_ctrl_full: Counter,
    /// Descriptors the send queue handed back, to be retried next iteration.
    pub tx_retries: Counter,
    /// Packets dropped after the send queue handed them back `TX_TRIES` times.
    pub tx_full: Counter,
    /// Received packets drained and freed while stopping.
    pub stop_dropped_rx: Counter,
    /// Packets waiting for transmission freed while stopping.
    pub stop_dropped_tx: Counter,
}

impl LcoreCounters {
    /// A copy of the counters.
    pub fn read(&self) -> LcoreStats {
        LcoreStats {
            iterations: self.iterations.get(),
            busy_ns: self.busy_ns.get(),
            idle_ns: self.idle_ns.get(),
            rx_packets: self.rx_packets.get(),
            rx_bytes: self.rx_bytes.get(),
            rx_loopback: self.rx_loopback.get(),
            rx_malformed: self.rx_malformed.get(),
            rx_unknown_ethertype: self.rx_unknown_ethertype.get(),
            rx_arp: self.rx_arp.get(),
            rx_ctrl_full: self.rx_ctrl_full.get(),
            app_rx: self.app_rx.get(),
            app_dropped: self.app_dropped.get(),
            app_tx: self.app_tx.get(),
            tx_buffer_full: self.tx_buffer_full.get(),
            tx_burst_consumed: self.tx_burst_consumed.get(),
            tx_bytes: self.tx_bytes.get(),
            to_ctrl_resolve: self.to_ctrl_resolve.get(),
            to_ctrl_mcast: self.to_ctrl_mcast.get(),
            tx_link_down: self.tx_link_down.get(),
            tx_too_long: self.tx_too_long.get(),
            tx_malformed: self.tx_malformed.get(),
            tx_no_iface: self.tx_no_iface.get(),
            tx_ctrl_full: self.tx_ctrl_full.get(),
            tx_retries: self.tx_retries.get(),
            tx_full: self.tx_full.get(),
            stop_dropped_rx: self.stop_dropped_rx.get(),
            stop_dropped_tx: self.stop_dropped_tx.get(),
            driver_tx_packets: 0,
            driver_tx_errors: 0,
            driver_rx_nombuf: 0,
            driver_rx_overrun: 0,
        }
    }
}

/// A copy of one data lcore's counters (see [`LcoreCounters`] for each field), plus its
/// queues' driver counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
#[allow(missing_docs)]
pub struct LcoreStats {
    pub iterations: u64,
    pub busy_ns: u64,
    pub idle_ns: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub rx_loopback: u64,
    pub rx_malformed: u64,
    pub rx_unknown_ethertype: u64,
    pub rx_arp: u64,
    pub rx_ctrl_full: u64,
    pub app_rx: u64,
    pub app_dropped: u64,
    pub app_tx: u64,
    pub tx_buffer_full: u64,
    pub tx_burst_consumed: u64,
    pub tx_bytes: u64,
    pub to_ctrl_resolve: u64,
    pub to_ctrl_mcast: u64,
    pub tx_link_down: u64,
    pub tx_too_long: u64,
    pub tx_malformed: u64,
    pub tx_no_iface: u64,
    pub tx_ctrl_full: u64,
    pub tx_retries: u64,
    pub tx_full: u64,
    pub stop_dropped_rx: u64,
    pub stop_dropped_tx: u64,
    /// The send queue's driver count of packets sent.
    pub driver_tx_packets: u64,
    /// The send queue's driver count of failed sends (bad address handle, too long,
    /// port down): consumed descriptors whose packet was freed.
    pub driver_tx_errors: u64,
    /// Packets the driver dropped for want of a receive buffer.
    pub driver_rx_nombuf: u64,
    /// Packets the driver dropped because the receive ring was full.
    pub driver_rx_overrun: u64,
}

impl LcoreStats {
    /// Packets handed to the send path that were dropped by the stack on this lcore,
    /// every reason summed (driver errors not included).
    pub fn tx_dropped(&self) -> u64 {
        self.tx_buffer_full
            + self.tx_link_down
            + self.tx_too_long
            + self.tx_malformed
            + self.tx_no_iface
            + self.tx_ctrl_full
            + self.tx_full
            + self.stop_dropped_tx
    }

    /// Received packets dropped by the stack on this lcore, every reason summed (our
    /// own looped-back multicast included).
    pub fn rx_dropped(&self) -> u64 {
        self.rx_loopback
            + self.rx_malformed
            + self.rx_unknown_ethertype
            + self.rx_ctrl_full
            + self.stop_dropped_rx
    }

    /// Fraction of the loop's time spent in iterations that did work.
    pub fn busy_ratio(&self) -> f64 {
        let total = self.busy_ns + self.idle_ns;
        if total == 0 {
            0.0
        } else {
            self.busy_ns as f64 / total as f64
        }
    }
}

/// Where one data lcore's counters live: its own, and its queues'.
#[derive(Debug, Clone)]
pub(crate) struct LcoreCounterSet {
    pub(crate) lcore: Arc<LcoreCounters>,
    pub(crate) rx: Vec<Arc<RxCounters>>,
    /// One send queue per interface.
    pub(crate) tx: Vec<Arc<TxCounters>>,
}

impl LcoreCounterSet {
    pub(crate) fn read(&self) -> LcoreStats {
        let mut s = self.lcore.read();
        s.driver_tx_packets = self.tx.iter().map(|t| t.packets.get()).sum();
        s.driver_tx_errors = self.tx.iter().map(|t| t.errors.get()).sum();
        s.driver_rx_nombuf = self.rx.iter().map(|r| r.nombuf.get()).sum();
        s.driver_rx_overrun = self.rx.iter().map(|r| r.overrun.get()).sum();
        s
    }
}
