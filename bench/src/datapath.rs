//! The fixture of the data-path benchmarks: a data lcore's per-packet work between
//! `rx_burst` and `tx_burst`, without the NIC. [`ibpoll::burst::classify`] of a
//! received packet, stripping its IPoIB header, and resolution against the published
//! snapshot ([`ibpoll::find_nh`] and the snapshot's next-hop array: the IPoIB header
//! written back, the destination looked up, its `TxDst` read), one snapshot per burst
//! of [`BURST`] as the lcore does. The snapshot is the real one: a controller on the simulated fabric joined
//! [`GROUPS`] IPv4 groups and the broadcast group through the embedded SA, and resolved
//! [`NEIGHBOURS`] neighbours by ARP and PathRecord.
//!
//! The descriptor's buffer is the next burst's received packet (resolve leaves the
//! IPoIB header in place), so no buffer is allocated or freed in the loop.
//!
//! Used by the `datapath` criterion benchmark (time) and the `datapath-ir` binary
//! (instructions per packet under callgrind).

use std::hint::black_box;
use std::time::Duration;

use ibpoll::burst::{classify, Class};
use ibpoll::{Dest, LcoreCounters};
use ibpoll_mem::Mbuf;
use ibpoll_wire::ipoib;

use crate::ctrl_host::{group, CtrlHost};

/// Groups joined besides the broadcast group.
pub const GROUPS: u32 = 10_000;
/// Neighbours resolved: 10.0.0.10 to 10.0.0.17.
pub const NEIGHBOURS: u8 = 8;
/// Packets per burst.
pub const BURST: usize = 32;
/// IP packet size (a 64-byte IPv4/UDP packet, pktgen's default).
pub const SIZE: usize = 64;

/// The destinations of one burst, by case name.
pub const CASES: [&str; 4] = ["unicast_1", "unicast_8", "mcast_4", "mcast_32_of_10k"];

/// The destinations of a burst of case `name` (see [`CASES`]):
/// * `unicast_1`: one next hop (pktgen's and l3fwd's common case: the per-burst table
///   finds it after the first packet);
/// * `unicast_8`: 8 next hops in turn;
/// * `mcast_4`: 4 of the groups in turn;
/// * `mcast_32_of_10k`: 32 different groups per burst, drawn over all of them (every
///   packet a lookup in the big table: the worst case).
pub fn dests(name: &str) -> Option<[Dest; BURST]> {
    let next_hop = |i: usize| Dest::NextHop([10, 0, 0, 10 + (i % usize::from(NEIGHBOURS)) as u8]);
    let grp = |i: u32| Dest::Group(group(i));
    Some(match name {
        "unicast_1" => [next_hop(0); BURST],
        "unicast_8" => std::array::from_fn(next_hop),
        "mcast_4" => std::array::from_fn(|i| grp(i as u32 % 4)),
        // A multiplicative walk over the groups.
        "mcast_32_of_10k" => {
            std::array::from_fn(|i| grp((i as u32).wrapping_mul(2_654_435_761) % GROUPS))
        }
        _ => return None,
    })
}

/// The controller with its snapshot, an lcore's counters and one burst of packets.
pub struct Fixture {
    pub host: CtrlHost,
    pub counters: LcoreCounters,
    pub pkts: [Option<Mbuf>; BURST],
}

impl std::fmt::Debug for Fixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fixture")
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl Fixture {
    /// Joins the groups and resolves the neighbours (a few seconds).
    ///
    /// # Panics
    /// If the controller does not get there (a bug, not a measurement).
    pub fn new() -> Fixture {
        let mut host = CtrlHost::with_ipv4(GROUPS as usize, 64, Some([10, 0, 0, 1]));
        host.join(GROUPS);
        host.join_all(Duration::from_secs(120))
            .expect("the controller joins every group");
        for i in 0..NEIGHBOURS {
            host.resolve_neighbour([10, 0, 0, 10 + i], Duration::from_secs(10))
                .expect("the controller resolves the neighbour");
        }
        let pkts = std::array::from_fn(|_| Some(packet(&host)));
        Fixture {
            host,
            counters: LcoreCounters::default(),
            pkts,
        }
    }

    /// One burst: a quiescent point, one snapshot, then per packet classify, strip and
    /// resolve; each descriptor's buffer goes back in its slot.
    ///
    /// # Panics
    /// If a packet is not classified as IP or does not resolve (every case's
    /// destinations are in the snapshot).
    #[inline]
    pub fn burst(&mut self, dests: &[Dest; BURST]) {
        let core = &mut self.host.cores[0];
        core.reader.quiescent();
        let snap = core.reader.get();
        for (slot, dest) in self.pkts.iter_mut().zip(dests) {
            let Some(m) = slot.as_mut() else {
                continue;
            };
            assert_eq!(classify(m.data()), Class::Ip, "not classified as IP");
            m.adj(ipoib::HEADER_LEN);
            let Some(id) = ibpoll::find_nh(snap, *dest) else {
                panic!("{dest:?} did not resolve");
            };
            let Some(dst) = snap.nh(id) else {
                panic!("{dest:?}: stale next hop");
            };
            snap.mark_used(id);
            let h = m.prepend(ipoib::HEADER_LEN).expect("headroom");
            h[..2].copy_from_slice(&ipoib::EtherType::IPV4.0.to_be_bytes());
            black_box(*dst);
        }
    }

    /// `n` bursts. Never inlined, so that callgrind can count exactly this
    /// (`--toggle-collect='*Fixture*run_bursts*'`, see the `datapath-ir` binary).
    #[inline(never)]
    pub fn run_bursts(&mut self, dests: &[Dest; BURST], n: u64) {
        for _ in 0..n {
            self.burst(dests);
        }
    }

    /// Classification alone, of the burst as it stands.
    #[inline]
    pub fn classify_only(&self) {
        for m in self.pkts.iter().flatten() {
            black_box(classify(black_box(m.data())));
        }
    }

    /// Nothing was dropped or handed to the control core, and no buffer was lost.
    pub fn check(&self) -> Result<(), String> {
        let s = self.counters.read();
        let missed =
            s.tx_link_down + s.tx_malformed + s.tx_too_long + s.to_ctrl_mcast + s.to_ctrl_resolve;
        if missed != 0 {
            return Err(format!("{missed} packets did not resolve: {s:?}"));
        }
        if !self.pkts.iter().all(Option::is_some) {
            return Err(String::from("a packet was lost"));
        }
        Ok(())
    }
}

impl Default for Fixture {
    fn default() -> Fixture {
        Fixture::new()
    }
}

/// A received 64-byte IPv4/UDP packet: IPoIB header, then the IP packet.
fn packet(h: &CtrlHost) -> Mbuf {
    let mut m = h.pool.alloc().expect("a buffer");
    let d = m.append(ipoib::HEADER_LEN + SIZE).expect("room");
    d[..2].copy_from_slice(&ipoib::EtherType::IPV4.0.to_be_bytes());
    let ip = &mut d[ipoib::HEADER_LEN..];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(SIZE as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    m
}
