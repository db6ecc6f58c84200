//! Software fan-out of an interface's received traffic over the lanes (DPDK's
//! distributor), for devices that give the interface's QP one receive queue: every
//! InfiniBand HCA through verbs (RSS exists there only for raw-packet QPs on Ethernet).
//! The interface's unicast, the broadcast group and the multicast groups the control
//! core attached to lane 0's QP then all arrive at lane 0.
//!
//! With [`Fanout::FlowHash`] (see [`StackBuilder::fanout`](crate::StackBuilder::fanout)),
//! lane 0, while it classifies a burst it received on the interface's QP (ARP and IPv6
//! neighbour discovery go to the control core, our own looped-back multicast and
//! malformed packets are dropped, as without fan-out), hashes the flow of each IP
//! packet that came by unicast or on the broadcast group ([`flow_hash`]) and hands it
//! to the lane that owns the hash ([`flow_lane`]) over a bounded single-producer
//! single-consumer ring (`ibpoll-ring`), one per interface and worker lane; it keeps its
//! own share without a ring. Packets of the other groups stay where they arrived: the
//! control core attached each group to the QP of the lane that is to receive it (by MGID
//! hash, or the lane whose UDP socket joined it), lane 0's included. A worker lane takes its rings' packets
//! in its own loop and gives them to [`App::on_burst`](crate::App::on_burst) as
//! packets it received itself: the interface in
//! [`LcoreCtx::iface`](crate::LcoreCtx::iface), the receive metadata (source QPN and
//! LID, the multicast flag) in the buffer, the IPoIB header stripped.
//!
//! # Contract
//!
//! - **Per-flow order.** A flow's packets arrive in one receive queue and go through one
//!   ring (or none), so each flow reaches exactly one lane, in order. A group's packets
//!   reach the lanes whose QPs it is attached to, as without fan-out.
//! - **A full ring is a counted drop** (`fanout_full` on the receiving lane, one of the
//!   drops by reason in telemetry and `ibpoll-ctl stats`); the receiving lane never
//!   waits for a worker.
//! - **Counters.** The receiving lane counts what it handed over (`fanout_out`) and
//!   what it dropped for a full ring (`fanout_full`), neither in its `app_rx`; a worker
//!   counts what it took from its rings (`fanout_in`) and, of that, what went to its
//!   application (`app_rx`). Per lane, once stopped:
//!   `rx_packets + fanout_in` = the receive drops + `rx_arp` + `rx_nd` + `app_rx` +
//!   `fanout_out` + `fanout_full` (see [`LcoreCounters`](crate::LcoreCounters)); over the
//!   stack, `fanout_out` sums to `fanout_in`.
//! - **Parking.** While the control core parks an interface (a P_Key index move), no lane
//!   receives on it: its rings are neither filled nor emptied, and resume afterwards.
//! - **Stop.** Whichever end of a ring stops last empties it (the [`Link`] hand-over:
//!   a lock taken once per ring at stop, never on the data path), counting what it frees
//!   as `fanout_in` and `stop_dropped_rx` on its own lane: no buffer stays in a ring,
//!   whatever order the lanes stop in.
//! - No lock, allocation or atomic read-modify-write per packet: a push is a store of
//!   the ring's tail (its producer reads the consumer's index only when its cached view
//!   says the ring is full), a worker's take is one load and one store per burst.
//!
//! # The flow
//!
//! [`flow_hash`] reads the IP header the application will see:
//! - IPv4: source and destination address and protocol, and for TCP and UDP the two
//!   ports, unless the packet is a fragment. **Every fragment (the first included)
//!   hashes by addresses and protocol only**: the first fragment carries the ports and
//!   the others do not, so hashing the first with its ports would split a datagram over
//!   two lanes; this way a fragmented datagram reaches one lane, where it can be
//!   reassembled. (A UDP flow whose datagrams are sometimes fragmented may therefore see
//!   its fragmented datagrams on another lane than its whole ones.)
//! - IPv6: source and destination address and next header, and for TCP and UDP right
//!   after the fixed header the two ports. A packet with extension headers (a Fragment
//!   header among them) hashes by addresses and next header.
//! - The hash is not symmetric (the two directions of a conversation may map to
//!   different lanes): a host receives one direction of each.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use ibpoll_ctrl::RequestSender;
use ibpoll_mem::{Mbuf, MbufArray, MBUF_F_GRH, MBUF_F_MCAST};
use ibpoll_ring::{Consumer, Producer};
use ibpoll_wire::ipoib;
use ibpoll_wire::Gid;

use crate::burst::{classify_burst_with, Own};
use crate::stats::LcoreStats;
use crate::tx::BURST_MAX;

/// Whether and how a lane hands received packets to the others. Default: off.
///
/// ```no_run
/// use ibpoll::{Fanout, FabricConfig, SimFabric, Stack};
/// let fabric = SimFabric::new(FabricConfig::default());
/// // Two lanes; unicast arrives at lane 0, which spreads it over both by flow.
/// let stack = Stack::builder()
///     .fabric(&fabric, "a")
///     .ipv4([10, 0, 0, 1])
///     .data_cores(2)
///     .fanout(Fanout::flow_hash())
///     .start(|_lane| ibpoll::Discard)?;
/// stack.stop()?;
/// # Ok::<(), ibpoll::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Fanout {
    /// Each lane handles what its own queues receive (lane 0: the interface's unicast
    /// and broadcast).
    #[default]
    Off,
    /// Lane 0 hands each IP packet it receives on the interface's QP by unicast or on
    /// the broadcast group to the lane that owns the packet's flow ([`flow_lane`] of
    /// [`flow_hash`]) over a ring of
    /// `ring_size` packets per interface and worker lane (a power of two, 32..=32768).
    /// Only where the device gives the interface's QP one receive queue: a device that
    /// spreads it over the lanes (RSS) already does this in hardware, and fan-out stays
    /// off there. No effect with one data lane.
    FlowHash {
        /// Packets one ring holds; what arrives while it is full is dropped and counted
        /// (`fanout_full`).
        ring_size: u32,
    },
}

impl Fanout {
    /// The default ring size of [`Fanout::flow_hash`].
    pub const RING_SIZE_DEFAULT: u32 = 1024;

    /// [`Fanout::FlowHash`] with rings of [`RING_SIZE_DEFAULT`](Self::RING_SIZE_DEFAULT).
    pub const fn flow_hash() -> Fanout {
        Fanout::FlowHash {
            ring_size: Self::RING_SIZE_DEFAULT,
        }
    }

    /// The ring size, when on.
    pub(crate) fn ring_size(self) -> Option<u32> {
        match self {
            Fanout::Off => None,
            Fanout::FlowHash { ring_size } => Some(ring_size),
        }
    }
}

const TCP: u8 = 6;
const UDP: u8 = 17;
/// FxHash's multiplier (the golden ratio in 64 bits).
const K: u64 = 0x9e37_79b9_7f4a_7c15;

/// One word into the hash (FxHash's step; its upper bits, which [`flow_lane`] uses, are
/// mixed from every input bit).
#[inline(always)]
fn mix(h: u64, w: u64) -> u64 {
    (h.rotate_left(5) ^ w).wrapping_mul(K)
}

/// The 8 bytes at `at`, as a word (0 where `d` is shorter).
#[inline(always)]
fn word(d: &[u8], at: usize) -> u64 {
    d.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// The 4 bytes of ports at `at` (0 where `d` is shorter).
#[inline(always)]
fn ports(d: &[u8], at: usize) -> u64 {
    d.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map_or(0, |b| u64::from(u32::from_le_bytes(b)))
}

/// The flow hash of an IP packet (`ip`: from the IP header on); see the module docs for
/// what it covers. Any input gives an answer (0 for what is neither IPv4 nor IPv6, or
/// too short for its fixed header); equal flows give equal hashes within a process
/// and across processes of one build.
#[inline]
pub fn flow_hash(ip: &[u8]) -> u32 {
    let h = match ip.first().map(|b| b >> 4) {
        Some(4) if ip.len() >= 20 => {
            let proto = ip[9];
            // More Fragments or a fragment offset: a fragment.
            let fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0;
            let p = if !fragment && (proto == TCP || proto == UDP) {
                ports(ip, usize::from(ip[0] & 0x0f) * 4)
            } else {
                0
            };
            mix(mix(0, word(ip, 12)), u64::from(proto) << 32 | p)
        }
        Some(6) if ip.len() >= 40 => {
            let next = ip[6];
            let p = if next == TCP || next == UDP {
                ports(ip, 40)
            } else {
                0
            };
            let a = mix(
                mix(mix(mix(0, word(ip, 8)), word(ip, 16)), word(ip, 24)),
                word(ip, 32),
            );
            mix(a, u64::from(next) << 32 | p)
        }
        _ => return 0,
    };
    (h >> 32) as u32
}

/// The lane, of `lanes`, that owns flow hash `hash`: `hash * lanes / 2^32` (Lemire's
/// range reduction: the hash's upper bits pick the lane). Below `lanes` when `lanes`
/// is at least 1.
#[inline]
pub fn flow_lane(hash: u32, lanes: usize) -> usize {
    ((u64::from(hash) * lanes as u64) >> 32) as usize
}

/// One ring's stop hand-over: whichever end stops last empties the ring.
#[derive(Debug, Default)]
pub(crate) struct Link {
    stop: Mutex<LinkStop>,
}

#[derive(Debug, Default)]
enum LinkStop {
    /// Both ends run.
    #[default]
    Running,
    /// The producer stopped: it pushes no more.
    ProducerGone,
    /// The consumer stopped first and left its end for the producer to empty.
    ConsumerLeft(Consumer<Mbuf>),
}

impl Link {
    fn lock(&self) -> MutexGuard<'_, LinkStop> {
        // A panic elsewhere while holding it left a valid state: take it.
        self.stop.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Counts `n` packets an end freed from a ring at stop.
fn count_stop_drops(st: &mut LcoreStats, n: usize) {
    st.fanout_in += n as u64;
    st.stop_dropped_rx += n as u64;
}

/// The receiving lane's side on one interface: a ring to every other lane.
#[derive(Debug)]
pub(crate) struct FanOut {
    /// This lane's index: its share stays in the burst.
    own: usize,
    /// Per lane, the ring to it (`None` for `own`).
    to: Box<[Option<Producer<Mbuf>>]>,
    /// Per lane, the packets of the burst being split that go to it: pushed to its
    /// ring together (one publication per ring and burst).
    staged: Box<[MbufArray]>,
    links: Box<[Arc<Link>]>,
    /// The interface's broadcast group (from the lane's snapshot, once per iteration):
    /// its packets are spread like unicast, other groups' are not.
    pub(crate) broadcast: Option<Gid>,
}

/// A worker lane's side on one interface: the ring from the receiving lane.
#[derive(Debug)]
pub(crate) struct FanIn {
    from: Consumer<Mbuf>,
    link: Arc<Link>,
}

/// The rings of one interface over `lanes` lanes, from lane `own`: its [`FanOut`] and
/// each lane's [`FanIn`] (`None` for `own`).
pub(crate) fn rings(lanes: usize, own: usize, ring_size: usize) -> (FanOut, Vec<Option<FanIn>>) {
    let mut to = Vec::with_capacity(lanes);
    let mut links = Vec::with_capacity(lanes);
    let mut ins = Vec::with_capacity(lanes);
    for k in 0..lanes {
        if k == own {
            to.push(None);
            ins.push(None);
            continue;
        }
        let (p, c) = ibpoll_ring::channel(ring_size);
        let link = Arc::new(Link::default());
        to.push(Some(p));
        links.push(link.clone());
        ins.push(Some(FanIn { from: c, link }));
    }
    let out = FanOut {
        own,
        to: to.into_boxed_slice(),
        staged: (0..lanes)
            .map(|k| MbufArray::with_capacity(if k == own { 0 } else { BURST_MAX }))
            .collect(),
        links: links.into_boxed_slice(),
        broadcast: None,
    };
    (out, ins)
}

impl FanOut {
    /// At the receiving lane's stop, after its last push: empties the rings whose
    /// consumer stopped first, and tells the others that nothing more comes.
    pub(crate) fn finish(&mut self, st: &mut LcoreStats) {
        for link in self.links.iter() {
            let left = std::mem::replace(&mut *link.lock(), LinkStop::ProducerGone);
            if let LinkStop::ConsumerLeft(mut c) = left {
                count_stop_drops(st, c.clear());
            }
        }
    }
}

impl FanIn {
    /// At a worker lane's stop: empties its ring, and leaves its end to the receiving
    /// lane if that one still runs (it empties the ring again when it stops).
    pub(crate) fn finish(mut self, st: &mut LcoreStats) {
        let mut stop = self.link.lock();
        // Under the lock: a producer that is gone pushed its last before it took it.
        count_stop_drops(st, self.from.clear());
        if matches!(*stop, LinkStop::Running) {
            *stop = LinkStop::ConsumerLeft(self.from);
        }
    }
}

/// The receiving lane's receive burst `pkts[from..]` (just received, data from the
/// IPoIB header on) classified as [`classify_burst`](crate::burst::classify_burst) does,
/// and spread in the same pass: each IP packet whose flow another lane owns is staged
/// for that lane, and each lane's staged packets are pushed to its ring together at the
/// end (one publication per ring and burst); what a full ring cannot take is freed in
/// bulk and counted (`fanout_full`). This lane's share stays in `pkts`, in order
/// (counted `app_rx`); what went to rings is counted `fanout_out`.
#[inline]
pub(crate) fn classify_fanout_burst(
    pkts: &mut MbufArray,
    from: usize,
    own: Option<Own<'_>>,
    requests: &mut RequestSender,
    st: &mut LcoreStats,
    trash: &mut MbufArray,
    fan: &mut FanOut,
) {
    let mut moved = Moved::default();
    classify_burst_with(pkts, from, own, requests, st, trash, |m| {
        fan.stage(m, &mut moved)
    });
    fan.push_staged(&mut moved);
    moved.count(st);
}

impl FanOut {
    /// One IP packet (data at the IP header): kept (returned) if this lane owns its
    /// flow, else staged for the lane that does.
    #[inline]
    fn stage(&mut self, m: Mbuf, moved: &mut Moved) -> Option<Mbuf> {
        if m.meta().flags & MBUF_F_MCAST != 0 && !self.on_broadcast(&m) {
            // A group the control core attached to this lane's QP: this lane's.
            return Some(m);
        }
        let k = flow_lane(flow_hash(m.data()), self.to.len());
        if k == self.own {
            return Some(m);
        }
        let stage = &mut self.staged[k];
        if stage.is_full() {
            // More than a burst for one lane (a caller's array larger than a burst).
            moved.push(&mut self.to[k], stage);
        }
        // Cannot fail: not full. Kept in the burst if it did, never lost.
        stage.push(m).err()
    }

    /// Whether multicast packet `m` (IPoIB header stripped) came on the broadcast group:
    /// the destination GID of the GRH in front of its IPoIB header (the driver
    /// contract's GRH area) is the broadcast MGID.
    #[inline]
    fn on_broadcast(&self, m: &Mbuf) -> bool {
        let Some(bcast) = &self.broadcast else {
            return false;
        };
        // The GRH's last 16 bytes (its DGID) end where the IPoIB header starts.
        let end = m.data_offset().wrapping_sub(ipoib::HEADER_LEN);
        m.meta().flags & MBUF_F_GRH != 0
            && end >= 16
            && m.buf().get(end - 16..end) == Some(&bcast.0[..])
    }

    /// Pushes every lane's staged packets to its ring.
    #[inline]
    fn push_staged(&mut self, moved: &mut Moved) {
        for (ring, stage) in self.to.iter_mut().zip(self.staged.iter_mut()) {
            if !stage.is_empty() {
                moved.push(ring, stage);
            }
        }
    }
}

/// What a fan-out burst moved: to rings, and freed for want of room.
#[derive(Debug, Default)]
struct Moved {
    out: u64,
    full: u64,
}

impl Moved {
    /// Pushes `stage` to `ring` in one publication; frees what does not fit, in bulk,
    /// and counts it.
    #[inline]
    fn push(&mut self, ring: &mut Option<Producer<Mbuf>>, stage: &mut MbufArray) {
        let n = stage.len();
        if let Some(ring) = ring {
            let mut it = stage.drain_front(n);
            // `next` runs at most `n` times (push_from's contract): `it` has `n`.
            let pushed = ring.push_from(n, || it.next().expect("n staged"));
            self.out += pushed as u64;
        }
        self.full += stage.len() as u64;
        stage.clear();
    }

    fn count(&self, st: &mut LcoreStats) {
        st.fanout_out += self.out;
        st.fanout_full += self.full;
    }
}

/// A worker lane's take from its ring: up to `out`'s room, oldest first, appended to
/// `out` for the application; how many. Counted in `st` (`fanout_in`, `app_rx`).
#[inline]
pub(crate) fn fanin_burst(fan: &mut FanIn, out: &mut MbufArray, st: &mut LcoreStats) -> usize {
    let n = fan.from.pop_with(out.room(), |m| {
        // Cannot fail: at most `room` are taken.
        let _ = out.push(m);
    });
    st.fanout_in += n as u64;
    st.app_rx += n as u64;
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use ibpoll_mem::{HugepagePolicy, Mempool, MempoolConfig};

    fn pool(n_bufs: u32) -> Mempool {
        Mempool::new(MempoolConfig {
            n_bufs,
            cache_size: 0,
            hugepages: HugepagePolicy::Never,
            ..MempoolConfig::default()
        })
        .unwrap()
    }

    /// An IPv4 header (20 bytes) and 4 bytes of ports.
    fn v4(src: [u8; 4], dst: [u8; 4], proto: u8, frag: u16, sport: u16, dport: u16) -> Vec<u8> {
        let mut d = vec![0u8; 28];
        d[0] = 0x45;
        d[6..8].copy_from_slice(&frag.to_be_bytes());
        d[9] = proto;
        d[12..16].copy_from_slice(&src);
        d[16..20].copy_from_slice(&dst);
        d[20..22].copy_from_slice(&sport.to_be_bytes());
        d[22..24].copy_from_slice(&dport.to_be_bytes());
        d
    }

    fn v6(src: u8, next: u8, sport: u16) -> Vec<u8> {
        let mut d = vec![0u8; 48];
        d[0] = 0x60;
        d[6] = next;
        d[8] = 0xfe;
        d[23] = src;
        d[24] = 0xfe;
        d[39] = 1;
        d[40..42].copy_from_slice(&sport.to_be_bytes());
        d
    }

    const A: [u8; 4] = [10, 0, 0, 1];
    const B: [u8; 4] = [10, 0, 0, 2];

    #[test]
    fn the_hash_covers_addresses_protocol_and_ports_of_whole_tcp_and_udp() {
        let h = |p: u8, f: u16, s: u16| flow_hash(&v4(A, B, p, f, s, 9000));
        // Ports count for UDP and TCP...
        assert_ne!(h(UDP, 0, 1), h(UDP, 0, 2));
        assert_ne!(h(TCP, 0, 1), h(TCP, 0, 2));
        assert_ne!(h(UDP, 0, 1), h(TCP, 0, 1));
        // ... not for other protocols, and not for any fragment: DF alone is no
        // fragment; MF (the first fragment) and an offset are.
        assert_eq!(h(1, 0, 1), h(1, 0, 2));
        assert_ne!(h(UDP, 0x4000, 1), h(UDP, 0x4000, 2));
        assert_eq!(h(UDP, 0x2000, 1), h(UDP, 0x2000, 2));
        assert_eq!(h(UDP, 0x2000, 1), h(UDP, 0x0010, 7));
        // Addresses count, and a header longer than 20 bytes moves the ports.
        assert_ne!(
            flow_hash(&v4(A, B, UDP, 0, 1, 2)),
            flow_hash(&v4(B, A, UDP, 0, 1, 2))
        );
        let mut opt = v4(A, B, UDP, 0, 0, 0);
        opt[0] = 0x46;
        opt[24..26].copy_from_slice(&1u16.to_be_bytes());
        opt[26..28].copy_from_slice(&9000u16.to_be_bytes());
        // The same ports behind 4 bytes of options: the options do not count.
        assert_eq!(flow_hash(&opt), flow_hash(&v4(A, B, UDP, 0, 1, 9000)));
        assert_ne!(flow_hash(&opt), flow_hash(&v4(A, B, UDP, 0, 0, 0)));
        // IPv6: ports for UDP/TCP right after the header; extension headers (44: a
        // Fragment header) by addresses and next header.
        assert_ne!(flow_hash(&v6(1, UDP, 1)), flow_hash(&v6(1, UDP, 2)));
        assert_ne!(flow_hash(&v6(1, UDP, 1)), flow_hash(&v6(2, UDP, 1)));
        assert_eq!(flow_hash(&v6(1, 44, 1)), flow_hash(&v6(1, 44, 2)));
        // Short or foreign input: an answer, no panic.
        assert_eq!(flow_hash(&[]), 0);
        assert_eq!(flow_hash(&[0x45; 19]), 0);
        assert_eq!(flow_hash(&[0x60; 39]), 0);
        // Ports cut short count as zero.
        let short_ports = &v4(A, B, UDP, 0, 1, 2)[..22];
        assert_eq!(flow_hash(short_ports), flow_hash(&v4(A, B, UDP, 0, 0, 0)));
    }

    #[test]
    fn flows_spread_evenly_over_the_lanes() {
        for lanes in [2, 3, 4, 7] {
            let mut per = vec![0u32; lanes];
            for s in 0..3000u16 {
                per[flow_lane(flow_hash(&v4(A, B, UDP, 0, 10_000 + s, 9000)), lanes)] += 1;
            }
            let even = 3000 / lanes as u32;
            for (k, &n) in per.iter().enumerate() {
                assert!(
                    n > even * 8 / 10 && n < even * 12 / 10,
                    "{lanes} lanes: lane {k} got {n} of 3000 flows: {per:?}"
                );
            }
            // By source address alone, too.
            let mut per = vec![0u32; lanes];
            for i in 0..3000u32 {
                let src = (0x0a00_0000 | i).to_be_bytes();
                per[flow_lane(flow_hash(&v4(src, B, UDP, 0, 1, 2)), lanes)] += 1;
            }
            assert!(per.iter().all(|&n| n > even * 8 / 10), "{per:?}");
        }
        assert_eq!(flow_lane(u32::MAX, 3), 2);
        assert_eq!(flow_lane(0, 3), 0);
    }

    /// A burst of `n` UDP packets over `flows` flows (by source port), numbered in
    /// their source QPN.
    fn burst(pool: &Mempool, n: usize, flows: u16) -> MbufArray {
        let mut a = MbufArray::with_capacity(n);
        for i in 0..n {
            let mut m = pool.alloc().unwrap();
            let d = v4(A, B, UDP, 0, 1000 + i as u16 % flows, 9000);
            m.append(d.len()).unwrap().copy_from_slice(&d);
            m.meta_mut().src_qpn = i as u32;
            a.push(m).unwrap();
        }
        a
    }

    /// The fan-out part of `classify_fanout_burst`, over IP packets.
    fn fanout_burst(pkts: &mut MbufArray, fan: &mut FanOut, st: &mut LcoreStats) {
        let mut moved = Moved::default();
        pkts.filter_map_from(0, |m| fan.stage(m, &mut moved));
        fan.push_staged(&mut moved);
        moved.count(st);
        st.app_rx += pkts.len() as u64;
    }

    #[test]
    fn a_burst_splits_by_flow_in_order_and_a_full_ring_is_counted() {
        let pool = pool(256);
        let (mut out, mut ins) = rings(3, 0, 8);
        let mut b = burst(&pool, 32, 16);
        let mut st = LcoreStats::default();
        fanout_burst(&mut b, &mut out, &mut st);
        let lane_of = |m: &Mbuf| flow_lane(flow_hash(m.data()), 3);
        assert!(b.as_slice().iter().all(|m| lane_of(m) == 0));
        let mut got = vec![Vec::new(); 3];
        got[0] = b.as_slice().iter().map(|m| m.meta().src_qpn).collect();
        for (k, fan) in ins.iter_mut().enumerate() {
            let Some(fan) = fan else { continue };
            let mut a = MbufArray::with_capacity(32);
            fanin_burst(fan, &mut a, &mut st);
            assert!(a.as_slice().iter().all(|m| lane_of(m) == k));
            got[k] = a.as_slice().iter().map(|m| m.meta().src_qpn).collect();
        }
        // Each lane's share in its order; rings of 8: what did not fit was counted.
        for g in &got {
            assert!(g.windows(2).all(|w| w[0] < w[1]), "{got:?}");
        }
        let kept = got[0].len() as u64;
        let moved = (got[1].len() + got[2].len()) as u64;
        assert!(
            kept > 0 && got[1].len() == 8 && got[2].len() == 8,
            "{got:?}"
        );
        assert_eq!(st.fanout_out, moved);
        assert_eq!(st.fanout_in, moved);
        assert_eq!(kept + moved + st.fanout_full, 32);
        // Lane 0's share, then the workers' takes; the full rings' excess was freed.
        assert_eq!(st.app_rx, kept + moved);
        drop((b, ins));
        assert_eq!(pool.in_use(), 0);
    }

    #[test]
    fn whichever_end_stops_last_empties_the_ring() {
        let pool = pool(64);
        for consumer_first in [true, false] {
            let (mut out, mut ins) = rings(2, 0, 32);
            let fan = ins[1].take().unwrap();
            let (mut st0, mut st1) = (LcoreStats::default(), LcoreStats::default());
            fanout_burst(&mut burst(&pool, 16, 16), &mut out, &mut st0);
            let first = st0.fanout_out;
            assert!(first > 0);
            if consumer_first {
                fan.finish(&mut st1);
                // The producer's last iteration after the consumer stopped...
                fanout_burst(&mut burst(&pool, 16, 16), &mut out, &mut st0);
                out.finish(&mut st0);
                // ... is emptied by the producer, counted on its lane.
                assert_eq!(st1.fanout_in, first);
                assert_eq!(st0.fanout_in, st0.fanout_out - first);
            } else {
                out.finish(&mut st0);
                fan.finish(&mut st1);
                assert_eq!((st0.fanout_in, st1.fanout_in), (0, first));
            }
            assert_eq!(st0.fanout_in + st1.fanout_in, st0.fanout_out);
            assert_eq!(st0.stop_dropped_rx + st1.stop_dropped_rx, st0.fanout_out);
            drop(out);
            assert_eq!(pool.in_use(), 0, "consumer first: {consumer_first}");
        }
    }
}
