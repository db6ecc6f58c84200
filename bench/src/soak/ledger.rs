//! Packets unaccounted for: every hop a packet takes, with what went in, what came out,
//! what was dropped (by a named counter) and what is still held there.
//!
//! A multicast packet becomes as many copies as its group has receivers at that
//! instant, and membership churns, so "sent - received - drops" cannot be one sum over
//! datagrams. It is checked hop by hop instead, over every packet the stacks and the
//! fabric carry (the soak's datagrams, ARP, looped-back copies), each hop with its own
//! counters:
//!
//! | hop | in | out, drops, held |
//! |---|---|---|
//! | `app_tx` | datagrams the applications pushed | the lanes' `app_tx` |
//! | `lane_tx` | `app_tx` | `tx_posted`, `to_ctrl_*`, the lanes' send drops |
//! | `ctrl` | `to_ctrl_*`, ARP the control cores built | `tx_sent`, the control cores' drops, packets queued (groups, neighbours) |
//! | `fabric_in` | `tx_posted` + the control cores' `tx_sent` | packets the fabric took (`sent`) |
//! | `fabric_out` | copies the fabric delivered to a receive queue | `rx_packets` + receives flushed by a P_Key move |
//! | `lane_rx` | `rx_packets` | looped back, malformed, other ethertypes, ARP to the control core, ring full, `app_rx`, drained at stop |
//! | `app_rx` | `app_rx` | packets the applications counted (they keep none) |
//!
//! Between `fabric_in` and `fabric_out` the switch replicates multicast and counts its
//! drops per reason ([`FabricStats`]); that one step is the fabric's own (tested in
//! `pmd/sim`) and has no counter of copies made to check it against.
//!
//! Each hop's residual (in - out - drops - held) is zero when nothing is lost without a
//! counter; [`Ledger::unaccounted`] adds their magnitudes. The figures are exact only
//! when nothing moves (traffic paused and the counters quiet) or after stop.

use std::collections::BTreeMap;

use ibpoll::{CtrlStats, LcoreStats};
use ibpoll_pmd_sim::FabricStats;
use serde_json::{json, Value};

use super::traffic::AppCounts;

/// One host's counters at a quiet moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostCounts {
    /// The application's.
    pub app: AppCounts,
    /// The data lcores', summed.
    pub lane: LcoreStats,
    /// The controller's.
    pub ctrl: CtrlStats,
    /// Packets the controller holds in its queues (groups not Joined, neighbours not
    /// resolved).
    pub ctrl_queued: u64,
}

/// The hops, in the order a packet takes them.
pub const HOPS: [&str; 7] = [
    "app_tx",
    "lane_tx",
    "ctrl",
    "fabric_in",
    "fabric_out",
    "lane_rx",
    "app_rx",
];

/// Packets in, out and lost, hop by hop, over every host and the fabric.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ledger {
    /// Each hop's residual (in - out - drops - held), in [`HOPS`] order.
    pub residuals: [i64; 7],
    /// Datagrams the applications sent.
    pub sent: u64,
    /// Packets the applications received (multicast copies each count).
    pub received: u64,
    /// Packets dropped and counted, every reason of every hop (our own looped-back
    /// multicast, which is not a loss, not included).
    pub dropped: u64,
    /// Those drops by `where.reason` (`lane.`, `ctrl.`, `fabric.`), reasons that
    /// counted something only.
    pub by_reason: BTreeMap<String, u64>,
}

/// The lanes' drops by reason.
fn lane_drops(s: &LcoreStats) -> [(&'static str, u64); 12] {
    [
        ("tx_link_down", s.tx_link_down),
        ("tx_too_long", s.tx_too_long),
        ("tx_malformed", s.tx_malformed),
        ("tx_no_iface", s.tx_no_iface),
        ("tx_ctrl_full", s.tx_ctrl_full),
        ("tx_full", s.tx_full),
        ("stop_dropped_tx", s.stop_dropped_tx),
        ("rx_malformed", s.rx_malformed),
        ("rx_unknown_ethertype", s.rx_unknown_ethertype),
        ("rx_ctrl_full", s.rx_ctrl_full),
        ("fanout_full", s.fanout_full),
        ("stop_dropped_rx", s.stop_dropped_rx),
    ]
}

impl Ledger {
    fn add(&mut self, place: &str, reasons: impl IntoIterator<Item = (&'static str, u64)>) {
        for (r, n) in reasons {
            if n > 0 {
                self.dropped += n;
                *self.by_reason.entry(format!("{place}.{r}")).or_default() += n;
            }
        }
    }
}

fn signed(x: u64) -> i64 {
    i64::try_from(x).unwrap_or(i64::MAX)
}

/// The lanes' receive drops (looped-back copies are not losses and not included).
fn lane_rx_drops(s: &LcoreStats) -> u64 {
    s.rx_malformed + s.rx_unknown_ethertype + s.rx_ctrl_full + s.fanout_full + s.stop_dropped_rx
}

impl Ledger {
    /// The ledger of `hosts` and the fabric's counters `fabric`, all read while
    /// nothing moved.
    pub fn new(hosts: &[HostCounts], fabric: &FabricStats) -> Ledger {
        let mut r = [0i64; 7];
        let mut l = Ledger::default();
        let mut posted = 0u64;
        let mut rx_total = 0u64;
        for h in hosts {
            let (s, c) = (&h.lane, &h.ctrl);
            r[0] += signed(h.app.sent) - signed(s.app_tx);
            r[1] += signed(s.app_tx)
                - signed(s.tx_posted + s.to_ctrl_resolve + s.to_ctrl_mcast + s.tx_dropped());
            let ctrl_in =
                s.to_ctrl_resolve + s.to_ctrl_mcast + c.arp_requests_sent + c.arp_replies_sent;
            r[2] += signed(ctrl_in) - signed(c.tx_sent + c.dropped() + h.ctrl_queued);
            posted += s.tx_posted + c.tx_sent;
            rx_total += s.rx_packets + s.driver_rx_flushed;
            r[5] += signed(s.rx_packets + s.fanout_in)
                - signed(s.rx_loopback + s.rx_arp + s.app_rx + s.fanout_out + lane_rx_drops(s));
            r[6] += signed(s.app_rx) - signed(h.app.received);
            l.sent += h.app.sent;
            l.received += h.app.received;
            l.add("lane", lane_drops(s));
            l.add("ctrl", c.drops());
        }
        r[3] = signed(posted) - signed(fabric.sent);
        r[4] = signed(fabric.delivered) - signed(rx_total);
        l.add("fabric", fabric.drops());
        debug_assert_eq!(
            l.dropped,
            hosts
                .iter()
                .map(|h| h.lane.tx_dropped() + lane_rx_drops(&h.lane) + h.ctrl.dropped())
                .sum::<u64>()
                + fabric.dropped()
        );
        l.residuals = r;
        l
    }

    /// Packets unaccounted for: the residuals' magnitudes, summed.
    pub fn unaccounted(&self) -> u64 {
        self.residuals.iter().map(|r| r.unsigned_abs()).sum()
    }

    /// The hops whose residual is not zero, as `hop=residual`.
    pub fn leaks(&self) -> Vec<String> {
        HOPS.iter()
            .zip(self.residuals)
            .filter(|(_, r)| *r != 0)
            .map(|(h, r)| format!("{h}={r}"))
            .collect()
    }

    /// The ledger as a JSON object.
    pub fn json(&self) -> Value {
        let hops: serde_json::Map<String, Value> = HOPS
            .iter()
            .zip(self.residuals)
            .map(|(h, r)| ((*h).to_owned(), json!(r)))
            .collect();
        json!({
            "sent": self.sent,
            "received": self.received,
            "dropped": self.dropped,
            "dropped_by_reason": self.by_reason,
            "unaccounted": self.unaccounted(),
            "residuals": hops,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Host a sends 10 datagrams to host b: 8 straight out, 2 through the control core
    /// (resolution); the fabric drops one (counted there) and delivers 9, all counted by
    /// b's application.
    fn balanced() -> (Vec<HostCounts>, FabricStats) {
        let mut a = HostCounts::default();
        a.app.sent = 10;
        a.lane.app_tx = 10;
        a.lane.tx_posted = 8;
        a.lane.to_ctrl_resolve = 2;
        a.ctrl.tx_sent = 2;
        let mut b = HostCounts::default();
        b.lane.rx_packets = 9;
        b.lane.app_rx = 9;
        b.app.received = 9;
        let mut fabric = FabricStats::default();
        fabric.sent = 10;
        fabric.delivered = 9;
        (vec![a, b], fabric)
    }

    #[test]
    fn a_balanced_exchange_leaves_nothing_unaccounted() {
        let (hosts, fabric) = balanced();
        let l = Ledger::new(&hosts, &fabric);
        assert_eq!(l.unaccounted(), 0, "{l:?}");
        assert_eq!((l.sent, l.received), (10, 9));
        // Multicast: the fabric made more copies than it took packets; each copy is
        // checked at the receiver.
        let (mut hosts, mut fabric) = balanced();
        fabric.delivered = 12;
        hosts[1].lane.rx_packets = 12;
        hosts[1].lane.rx_loopback = 3;
        assert_eq!(Ledger::new(&hosts, &fabric).unaccounted(), 0);
    }

    #[test]
    fn a_packet_lost_without_a_counter_shows_at_its_hop() {
        // The control core sent one of its two packets and counted nothing for the
        // other...
        let (mut hosts, mut fabric) = balanced();
        hosts[0].ctrl.tx_sent = 1;
        fabric.sent = 9;
        let l = Ledger::new(&hosts, &fabric);
        assert_eq!(l.leaks(), ["ctrl=1"]);
        assert_eq!(l.unaccounted(), 1);
        // ... unless it counted the drop, or still holds the packet.
        hosts[0].ctrl.neigh_queue_full = 1;
        let l = Ledger::new(&hosts, &fabric);
        assert_eq!(l.unaccounted(), 0);
        assert_eq!(l.dropped, 1);
        assert_eq!(l.by_reason.get("ctrl.neigh_queue_full"), Some(&1));
        hosts[0].ctrl.neigh_queue_full = 0;
        hosts[0].ctrl_queued = 1;
        assert_eq!(Ledger::new(&hosts, &fabric).unaccounted(), 0);
        // A receiver's application that does not count a packet the lane gave it.
        let (mut hosts, fabric) = balanced();
        hosts[1].app.received = 8;
        let l = Ledger::new(&hosts, &fabric);
        assert_eq!(l.leaks(), ["app_rx=1"]);
        // A copy delivered to a receive queue that no lane ever took.
        let (hosts, mut fabric) = balanced();
        fabric.delivered = 10;
        assert_eq!(Ledger::new(&hosts, &fabric).leaks(), ["fabric_out=1"]);
    }
}
