//! Per-lcore counters: counted per burst in a plain [`LcoreStats`] on the lcore's stack,
//! published into the live [`LcoreCounters`] once per loop iteration (one load and store
//! per counter that moved, as DPDK's mlx5 bumps its queue counters once per burst), and
//! read live by any thread.

use std::sync::Arc;

use ibpoll_ctrl::RequestDrops;
use ibpoll_dev::{Counter, RxCounters, TxCounters};

/// Declares the live counters, their plain copy (also the per-iteration accumulator),
/// `read`, `publish` and `+=` from one list, so that no field can be missing from any.
macro_rules! lcore_counters {
    ($( $(#[doc = $doc:literal])* $name:ident, )*) => {
        /// The live counters of one data lcore. Only the lcore writes them (a relaxed
        /// load and store each, once per iteration); any thread may read them while it
        /// runs, without stopping it.
        ///
        /// Conservation, per lcore once it has stopped:
        ///
        /// * receive: `rx_packets + fanout_in` is the sum of `rx_loopback`,
        ///   `rx_malformed`, `rx_unknown_ethertype`, `rx_arp`, `rx_nd`, `rx_ctrl_full`,
        ///   `app_rx`, `stop_dropped_rx`, `fanout_out` and `fanout_full` (the `fanout_*`
        ///   counters are zero without [`Fanout`](crate::Fanout); with it, `fanout_out`
        ///   summed over the lanes equals `fanout_in` summed), and every packet handed
        ///   to the application (`app_rx`) was consumed by it or counted in
        ///   `app_dropped`;
        /// * send: `app_tx` is the sum of `tx_posted`, `to_ctrl_resolve`,
        ///   `to_ctrl_mcast`, `tx_link_down`, `tx_too_long`, `tx_malformed`,
        ///   `tx_no_iface`, `tx_ctrl_full`, `tx_full` and `stop_dropped_tx`, where
        ///   `tx_posted` (sends the driver took) splits into the driver's completions
        ///   and its errors.
        #[derive(Debug, Default)]
        #[repr(C, align(64))]
        pub struct LcoreCounters {
            $( $(#[doc = $doc])* pub $name: Counter, )*
        }

        /// A copy of one data lcore's counters (see [`LcoreCounters`] for each field),
        /// plus its queues' driver counters. The lcore also counts each iteration into
        /// one of these before publishing it.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct LcoreStats {
            $( $(#[doc = $doc])* pub $name: u64, )*
            /// The send queues' driver count of sends completed.
            pub driver_tx_completed: u64,
            /// The send queues' driver count of sends that completed in error (bad
            /// address handle, too long, port down).
            pub driver_tx_errors: u64,
            /// Receive buffers the driver could not repost for want of a free buffer.
            pub driver_rx_nombuf: u64,
            /// Receive buffers the driver returned when a QP moved through Reset.
            pub driver_rx_flushed: u64,
            /// Of the packets handed to the control core for an unresolved next hop
            /// (`to_ctrl_resolve`), those it dropped on arrival: the neighbour's queue
            /// already held `neigh_queue_max` (3) while ARP and the path query ran, or
            /// the neighbour table was full. `push` had returned true for them.
            pub ctrl_resolve_dropped: u64,
            /// Of the packets handed to the control core for a group not Joined
            /// (`to_ctrl_mcast`), those it dropped on arrival: the group's queue already
            /// held `mcast_queue_max` (64), the group table was full, or the group was
            /// not one of the partition's.
            pub ctrl_mcast_dropped: u64,
        }

        impl LcoreCounters {
            /// A copy of the counters (the driver fields are zero).
            pub fn read(&self) -> LcoreStats {
                LcoreStats {
                    $( $name: self.$name.get(), )*
                    ..LcoreStats::default()
                }
            }
        }

        impl LcoreStats {
            /// Adds what this iteration counted to the live counters and zeroes it. Only
            /// the counters' single writer (the lcore) may call this.
            #[inline]
            pub(crate) fn publish(&mut self, live: &LcoreCounters) {
                $(
                    if self.$name != 0 {
                        live.$name.add(self.$name);
                        self.$name = 0;
                    }
                )*
            }

            /// Every counter's name and value, in declaration order (driver fields last).
            pub fn fields(&self) -> Vec<(&'static str, u64)> {
                vec![
                    $( (stringify!($name), self.$name), )*
                    ("driver_tx_completed", self.driver_tx_completed),
                    ("driver_tx_errors", self.driver_tx_errors),
                    ("driver_rx_nombuf", self.driver_rx_nombuf),
                    ("driver_rx_flushed", self.driver_rx_flushed),
                    ("ctrl_resolve_dropped", self.ctrl_resolve_dropped),
                    ("ctrl_mcast_dropped", self.ctrl_mcast_dropped),
                ]
            }
        }

        impl std::ops::AddAssign for LcoreStats {
            fn add_assign(&mut self, o: LcoreStats) {
                $( self.$name += o.$name; )*
                self.driver_tx_completed += o.driver_tx_completed;
                self.driver_tx_errors += o.driver_tx_errors;
                self.driver_rx_nombuf += o.driver_rx_nombuf;
                self.driver_rx_flushed += o.driver_rx_flushed;
                self.ctrl_resolve_dropped += o.ctrl_resolve_dropped;
                self.ctrl_mcast_dropped += o.ctrl_mcast_dropped;
            }
        }
    };
}

lcore_counters! {
    /// Loop iterations.
    iterations,
    /// Nanoseconds spent in iterations that did work.
    busy_ns,
    /// Nanoseconds spent in iterations that found nothing to do.
    idle_ns,
    /// Packets taken from the receive queues.
    rx_packets,
    /// Bytes taken from the receive queues (from the IPoIB header on).
    rx_bytes,
    /// Our own multicast, looped back by the HCA (dropped by SLID and source QPN).
    rx_loopback,
    /// Packets too short for their headers or whose IP version disagrees with the
    /// IPoIB ethertype (dropped).
    rx_malformed,
    /// Packets with an ethertype other than IPv4, IPv6 and ARP (dropped).
    rx_unknown_ethertype,
    /// ARP packets handed to the control core.
    rx_arp,
    /// IPv6 neighbour-discovery packets (solicitations, advertisements) handed to the
    /// control core.
    rx_nd,
    /// ARP and neighbour-discovery packets dropped because the request ring to the
    /// control core was full.
    rx_ctrl_full,
    /// IPv4/IPv6 packets handed to the application.
    app_rx,
    /// Packets this lane received and handed to another lane's fan-out ring (see
    /// [`Fanout`](crate::Fanout)); not in its `app_rx`.
    fanout_out,
    /// Packets dropped because the fan-out ring to the lane that owns their flow was
    /// full.
    fanout_full,
    /// Packets this lane took from its fan-out rings: handed to its application (counted
    /// in `app_rx` too), or freed at stop (counted in `stop_dropped_rx` too).
    fanout_in,
    /// Packets the application left in its receive burst (freed by the stack).
    app_dropped,
    /// Packets the application pushed for transmission.
    app_tx,
    /// Sends the driver took (`tx_burst`).
    tx_posted,
    /// Bytes of those sends (from the IPoIB header on).
    tx_bytes,
    /// Packets handed to the control core because the snapshot had no neighbour for
    /// their next hop (ARP and path resolution follow).
    to_ctrl_resolve,
    /// Packets handed to the control core because their group was not Joined.
    to_ctrl_mcast,
    /// Packets dropped because the link was down.
    tx_link_down,
    /// Packets longer than the interface MTU (dropped).
    tx_too_long,
    /// Packets that were not IPv4/IPv6 or had no headroom for the IPoIB header (dropped).
    tx_malformed,
    /// Packets pushed on an interface the stack does not have (dropped).
    tx_no_iface,
    /// Packets dropped because the request ring to the control core was full.
    tx_ctrl_full,
    /// Packets a send queue refused (full), kept for the next flush.
    tx_retries,
    /// Packets dropped because the send queue stayed full for `TX_TRIES` flushes in a
    /// row, or refused a packet pushed on a table that was still full.
    tx_full,
    /// Received packets drained and freed while stopping.
    stop_dropped_rx,
    /// Packets waiting for transmission freed while stopping.
    stop_dropped_tx,
    /// Iterations an interface's queues were parked for a control operation.
    parked_iterations,
}

impl LcoreStats {
    /// Packets handed to the send path that were dropped by the stack on this lcore,
    /// every reason summed (driver errors not included).
    pub fn tx_dropped(&self) -> u64 {
        self.tx_link_down
            + self.tx_too_long
            + self.tx_malformed
            + self.tx_no_iface
            + self.tx_ctrl_full
            + self.tx_full
            + self.stop_dropped_tx
    }

    /// Packets of this lcore the control core dropped on arrival (its queues for
    /// unresolved next hops and groups not Joined were full): counted in `app_tx` and
    /// `to_ctrl_*` too, so not part of [`tx_dropped`](Self::tx_dropped).
    pub fn ctrl_dropped(&self) -> u64 {
        self.ctrl_resolve_dropped + self.ctrl_mcast_dropped
    }

    /// Received packets dropped by the stack on this lcore, every reason summed (our
    /// own looped-back multicast included).
    pub fn rx_dropped(&self) -> u64 {
        self.rx_loopback
            + self.rx_malformed
            + self.rx_unknown_ethertype
            + self.rx_ctrl_full
            + self.fanout_full
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
    /// Per interface: what the control core dropped of this lane's packets.
    pub(crate) ctrl: Vec<Arc<RequestDrops>>,
}

impl LcoreCounterSet {
    pub(crate) fn read(&self) -> LcoreStats {
        let mut s = self.lcore.read();
        s.driver_tx_completed = self.tx.iter().map(|t| t.completed.get()).sum();
        s.driver_tx_errors = self.tx.iter().map(|t| t.errors.get()).sum();
        s.driver_rx_nombuf = self.rx.iter().map(|r| r.nombuf.get()).sum();
        s.driver_rx_flushed = self.rx.iter().map(|r| r.flushed.get()).sum();
        s.ctrl_resolve_dropped = self.ctrl.iter().map(|c| c.resolve.get()).sum();
        s.ctrl_mcast_dropped = self.ctrl.iter().map(|c| c.mcast.get()).sum();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_adds_what_moved_and_zeroes_the_iteration() {
        let live = LcoreCounters::default();
        let mut it = LcoreStats {
            rx_packets: 32,
            app_tx: 5,
            ..LcoreStats::default()
        };
        it.publish(&live);
        assert_eq!(it, LcoreStats::default());
        it.rx_packets = 1;
        it.publish(&live);
        let r = live.read();
        assert_eq!((r.rx_packets, r.app_tx, r.tx_posted), (33, 5, 0));
        let names: Vec<_> = r.fields().into_iter().map(|(n, _)| n).collect();
        assert!(names.contains(&"parked_iterations") && names.contains(&"driver_rx_flushed"));
        let mut sum = r;
        sum += r;
        assert_eq!(sum.rx_packets, 66);
    }
}
