//! The send side of a lane: one TX table per interface (DPDK l3fwd's
//! `qconf->tx_mbufs[port]`), filled by the application's pushes and flushed with one
//! `tx_burst` as soon as it holds a burst, and at the end of every iteration.
//!
//! A packet's destination is resolved when it is pushed, against the lane's current
//! snapshot of that interface's control plane: a [`Dest`] goes through a small table of
//! the destinations this lane already found (valid for one snapshot generation) to a
//! next-hop id, and the id indexes the snapshot's flat next-hop array, which holds the
//! address handle, QPN and Q_Key to send with ([`TxDst`]). An application that keeps
//! next-hop ids ([`Tx::resolve`], [`Tx::push_nh`]) skips the table. A miss hands the
//! packet to the control core (ARP and path resolution, or a send-only join).
//!
//! What a send queue refuses (back-pressure) stays in its table, with its resolved
//! destination, and is offered again at the next flush; after [`TX_TRIES`] flushes in
//! a row that leave packets behind, they are dropped and counted (`tx_full`). While a
//! table holds packets its lane does not report a quiescent point for that interface,
//! so the snapshot their address handles came from stays alive; and the control core
//! destroys an address handle only after every send posted before it was retired has
//! completed (see `ibpoll_ctrl::TxProgress`).

use ibpoll_ctrl::{DataCore, GroupAddr, NhId, Request, Snapshot};
use ibpoll_dev::{TxDst, TxQueue};
use ibpoll_mem::{Mbuf, MbufArray, Mempool};
use ibpoll_wire::ipoib::{self, EtherType};

use crate::stats::LcoreStats;

/// Packets received per `rx_burst`, and the size at which a TX table is flushed.
pub const BURST_MAX: usize = 32;
/// Packets a TX table holds: a burst, and a burst's worth refused by a full queue.
pub const TX_TABLE_MAX: usize = 2 * BURST_MAX;
/// Flushes in a row that may leave packets in a table before they are dropped.
pub const TX_TRIES: u8 = 4;
/// Slots of a lane's table of resolved destinations, per interface (a power of two).
const RESOLVED_SLOTS: usize = 16;

/// Where a packet goes. Resolved when it is pushed, against the lane's snapshot of the
/// interface's control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Dest {
    /// A next hop on this IPoIB subnet, by IPv4 address. An IPv4 multicast address is
    /// sent to its group, and 255.255.255.255 to the broadcast group.
    NextHop([u8; 4]),
    /// A next hop on this IPoIB subnet, by IPv6 address, resolved by neighbour
    /// discovery. An IPv6 multicast address (`ff00::/8`) is sent to its group.
    NextHop6([u8; 16]),
    /// A multicast group (by IPv4 or IPv6 group address, or by MGID).
    Group(GroupAddr),
}

/// One interface's send side on one lane.
pub(crate) struct TxIface {
    q: Box<dyn TxQueue>,
    pub(crate) core: DataCore,
    /// Packets waiting for `tx_burst`, data from the IPoIB header on.
    pkts: MbufArray,
    /// `dst[i]` is where `pkts[i]` goes.
    dst: Box<[TxDst]>,
    /// Flushes in a row that left packets behind.
    stalls: u8,
    /// The control core parked this interface's queues: nothing is sent until it lets
    /// them go (pushes fill the table, then count `tx_full`).
    pub(crate) parked: bool,
    /// Sends posted on `q` since it was created.
    posted: u64,
    /// Destinations this lane resolved, valid while the snapshot's generation is
    /// `resolved_gen`.
    resolved: [Option<(Dest, NhId)>; RESOLVED_SLOTS],
    resolved_gen: u64,
}

impl std::fmt::Debug for TxIface {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxIface")
            .field("src_qpn", &self.q.src_qpn())
            .field("queued", &self.pkts.len())
            .field("stalls", &self.stalls)
            .field("posted", &self.posted)
            .finish_non_exhaustive()
    }
}

impl TxIface {
    pub(crate) fn new(q: Box<dyn TxQueue>, core: DataCore) -> TxIface {
        let zero = TxDst {
            ah: ibpoll_dev::AddressHandle::from_raw(0),
            qpn: ibpoll_wire::Qpn::from_bits(0),
            qkey: ibpoll_wire::QKey(0),
        };
        TxIface {
            q,
            core,
            pkts: MbufArray::with_capacity(TX_TABLE_MAX),
            dst: vec![zero; TX_TABLE_MAX].into_boxed_slice(),
            stalls: 0,
            parked: false,
            posted: 0,
            resolved: [None; RESOLVED_SLOTS],
            resolved_gen: u64::MAX,
        }
    }

    /// The send queue's driver counters.
    pub(crate) fn counters(&self) -> std::sync::Arc<ibpoll_dev::TxCounters> {
        self.q.counters()
    }

    /// Packets waiting in the table.
    #[inline]
    pub(crate) fn queued(&self) -> usize {
        self.pkts.len()
    }

    /// One `tx_burst` of the whole table; what the queue refused moves to the front.
    #[inline]
    fn flush(&mut self, st: &mut LcoreStats) -> usize {
        let len = self.pkts.len();
        if len == 0 || self.parked {
            return 0;
        }
        let bytes: u64 = self.pkts.as_slice().iter().map(|m| m.len() as u64).sum();
        let n = self.q.tx_burst(&mut self.pkts, &self.dst[..len]);
        self.posted += n as u64;
        st.tx_posted += n as u64;
        if n < len {
            self.dst.copy_within(n..len, 0);
            let left: u64 = self.pkts.as_slice().iter().map(|m| m.len() as u64).sum();
            st.tx_bytes += bytes - left;
        } else {
            st.tx_bytes += bytes;
        }
        n
    }

    /// The end-of-iteration flush: what stays is retried, up to [`TX_TRIES`] flushes in a
    /// row, then dropped; then the send progress is published for the control core.
    pub(crate) fn flush_end(&mut self, st: &mut LcoreStats, trash: &mut MbufArray) {
        if !self.pkts.is_empty() {
            self.flush(st);
            let left = self.pkts.len();
            if left == 0 {
                self.stalls = 0;
            } else {
                self.stalls += 1;
                st.tx_retries += left as u64;
                if self.stalls >= TX_TRIES {
                    st.tx_full += left as u64;
                    drop_all(&mut self.pkts, trash);
                    self.stalls = 0;
                }
            }
        }
        let completed = self.q.completed();
        self.core.progress.publish(self.posted, completed);
    }

    /// At stop: what is still queued, freed; returns how many.
    pub(crate) fn discard(&mut self) -> usize {
        let n = self.pkts.len();
        self.pkts.clear();
        n
    }

    /// Sends still posted and not yet completed, after polling the queue once.
    pub(crate) fn in_flight(&mut self) -> u64 {
        let completed = self.q.completed();
        self.core.progress.publish(self.posted, completed);
        self.posted.saturating_sub(completed)
    }
}

/// Moves every packet of `pkts` to `trash` (freed in bulk with it), freeing at once what
/// does not fit.
fn drop_all(pkts: &mut MbufArray, trash: &mut MbufArray) {
    trash.extend_from(pkts);
    pkts.clear();
}

/// The next-hop id of `dest` in the snapshot's tables (the lookup behind
/// [`Tx::resolve`], without the lane's table of resolved destinations).
pub fn find(snap: &Snapshot, dest: Dest) -> Option<NhId> {
    match dest {
        Dest::NextHop([255, 255, 255, 255]) => snap.broadcast_nh(),
        Dest::NextHop(ip) if ip[0] & 0xf0 == 0xe0 => snap.group_nh(&snap.ipv4_mgid(ip)),
        Dest::NextHop(ip) => snap.neighbour_nh(&ip),
        Dest::NextHop6(ip) if ip[0] == 0xff => snap.group_nh(&snap.ipv6_mgid(ip)),
        Dest::NextHop6(ip) => snap.neighbour6_nh(&ip),
        Dest::Group(GroupAddr::Ipv4(ip)) => snap.group_nh(&snap.ipv4_mgid(ip)),
        Dest::Group(GroupAddr::Ipv6(ip)) => snap.group_nh(&snap.ipv6_mgid(ip)),
        Dest::Group(GroupAddr::Mgid(g)) => snap.group_nh(&g),
    }
}

/// The slot of `dest` in the resolved table: a few address bytes, so that the next
/// hops and groups of one subnet spread.
#[inline]
fn resolved_slot(dest: &Dest) -> usize {
    let b = match dest {
        Dest::NextHop(ip) => ip[3] ^ ip[2].rotate_left(3),
        Dest::NextHop6(ip) => ip[15] ^ ip[14].rotate_left(3) ^ 0x9,
        Dest::Group(GroupAddr::Ipv4(ip)) => ip[3] ^ ip[2].rotate_left(3) ^ 0x5,
        Dest::Group(GroupAddr::Ipv6(ip)) => ip[15] ^ ip[14].rotate_left(3) ^ 0x6,
        Dest::Group(GroupAddr::Mgid(g)) => g.0[15] ^ g.0[14].rotate_left(3) ^ 0x3,
    };
    usize::from(b) & (RESOLVED_SLOTS - 1)
}

/// Why a packet cannot be prepared for sending.
enum Unfit {
    LinkDown,
    TooLong,
    Malformed,
}

/// Checks a packet (data at its IP header) against the interface and prepends the
/// IPoIB header in its headroom, ethertype from the IP version.
#[inline]
fn prepare(m: &mut Mbuf, snap: &Snapshot) -> Result<(), Unfit> {
    if !snap.link_up {
        return Err(Unfit::LinkDown);
    }
    let ethertype = match m.data().first().map(|b| b >> 4) {
        Some(4) => EtherType::IPV4,
        Some(6) => EtherType::IPV6,
        _ => return Err(Unfit::Malformed),
    };
    if m.len() > snap.mtu {
        return Err(Unfit::TooLong);
    }
    let h = m.prepend(ipoib::HEADER_LEN).ok_or(Unfit::Malformed)?;
    // What `ipoib::Repr::emit` writes (ethertype, then the reserved field, zero), in
    // one store.
    let [hi, lo] = ethertype.0.to_be_bytes();
    h.copy_from_slice(&[hi, lo, 0, 0]);
    Ok(())
}

/// The send side of a lane: what an application pushes packets into. One per lane,
/// allocated at start-up; nothing here allocates.
///
/// Each packet's data window must start at its IPv4 or IPv6 header: the stack prepends
/// the 4-byte IPoIB header in place, in the buffer's headroom (zero copy), with the
/// ethertype from the IP version nibble. A received buffer (whose IPoIB header the
/// stack stripped) can therefore be pushed back as it is, after rewriting its IP header.
#[derive(Debug)]
pub struct Tx {
    pub(crate) ifaces: Vec<TxIface>,
    pool: Mempool,
    /// This iteration's counts, published once per iteration.
    pub(crate) st: LcoreStats,
    /// Packets dropped on the send path, freed in bulk at the end of the iteration.
    pub(crate) trash: MbufArray,
}

impl Tx {
    pub(crate) fn new(ifaces: Vec<TxIface>, pool: Mempool) -> Tx {
        Tx {
            ifaces,
            pool,
            st: LcoreStats::default(),
            trash: MbufArray::with_capacity(2 * TX_TABLE_MAX),
        }
    }

    /// Sends `m` on interface `iface` (`0..ifaces()`) to `dest`: queued for the send
    /// queue, or handed to the control core when the snapshot does not know `dest` yet
    /// (counted in `to_ctrl_resolve` / `to_ctrl_mcast`: it goes out once the control core
    /// resolved the destination, or the control core counts its drop). `false` when it
    /// was dropped here (counted: link down, too long, not IP, no such interface, the
    /// control core's ring full, or the send queue full).
    #[inline]
    pub fn push(&mut self, iface: usize, mut m: Mbuf, dest: Dest) -> bool {
        self.st.app_tx += 1;
        let Some(ifc) = self.ifaces.get_mut(iface) else {
            return self.refuse_no_iface(m);
        };
        let id = ifc.lookup_in(dest);
        let snap = ifc.core.reader.get();
        let outcome = prepare(&mut m, snap).map(|()| {
            let id = id?;
            let dst = *snap.nh(id)?;
            snap.mark_used(id);
            Some(dst)
        });
        match outcome {
            Ok(Some(dst)) => self.enqueue(iface, m, dst),
            Ok(None) => self.hand_to_ctrl(iface, m, dest),
            Err(why) => self.refuse(why, m),
        }
    }

    /// Sends `m` on interface `iface` through a next-hop id from [`resolve`]
    /// (the fast path: no lookup). Gives the packet back, untouched, when the id is no
    /// longer valid in the current snapshot (resolve again) or the interface does not
    /// exist; otherwise as [`push`](Self::push).
    ///
    /// [`resolve`]: Self::resolve
    #[inline]
    pub fn push_nh(&mut self, iface: usize, mut m: Mbuf, nh: NhId) -> Result<bool, Mbuf> {
        let Some(ifc) = self.ifaces.get(iface) else {
            return Err(m);
        };
        let snap = ifc.core.reader.get();
        let Some(dst) = snap.nh(nh).copied() else {
            return Err(m);
        };
        let ready = prepare(&mut m, snap);
        if ready.is_ok() {
            snap.mark_used(nh);
        }
        self.st.app_tx += 1;
        Ok(match ready {
            Ok(()) => self.enqueue(iface, m, dst),
            Err(why) => self.refuse(why, m),
        })
    }

    /// The next-hop id of `dest` on interface `iface` in the current snapshot, for
    /// [`push_nh`](Self::push_nh): valid until the control plane replaces that next
    /// hop (then `push_nh` gives the packet back). `None` while it is not resolved (a
    /// [`push`](Self::push) to it starts the resolution).
    pub fn resolve(&mut self, iface: usize, dest: Dest) -> Option<NhId> {
        let ifc = self.ifaces.get_mut(iface)?;
        ifc.lookup_in(dest)
    }

    #[inline(always)]
    fn enqueue(&mut self, iface: usize, m: Mbuf, dst: TxDst) -> bool {
        let ifc = &mut self.ifaces[iface];
        if ifc.pkts.is_full() {
            ifc.flush(&mut self.st);
            if ifc.pkts.is_full() {
                return self.refuse_full(m);
            }
        }
        let Some(slot) = ifc.dst.get_mut(ifc.pkts.len()) else {
            // Unreachable: `dst` has the table's capacity and the table is not full.
            return self.refuse_full(m);
        };
        *slot = dst;
        if let Err(m) = ifc.pkts.push(m) {
            // Unreachable: not full, checked above.
            return self.refuse_full(m);
        }
        if ifc.pkts.len() >= BURST_MAX {
            ifc.flush(&mut self.st);
        }
        true
    }

    /// A packet for a destination the snapshot does not have: to the control core.
    #[cold]
    #[inline(never)]
    fn hand_to_ctrl(&mut self, iface: usize, m: Mbuf, dest: Dest) -> bool {
        let req = match dest {
            Dest::NextHop([255, 255, 255, 255]) => {
                // No broadcast group: the link is down or a flush runs.
                self.st.tx_link_down += 1;
                self.drop_pkt(m);
                return false;
            }
            Dest::NextHop(ip) if ip[0] & 0xf0 == 0xe0 => Request::Mcast {
                group: GroupAddr::Ipv4(ip),
                mbuf: m,
            },
            Dest::NextHop(next_hop) => Request::Resolve { next_hop, mbuf: m },
            Dest::NextHop6(ip) if ip[0] == 0xff => Request::Mcast {
                group: GroupAddr::Ipv6(ip),
                mbuf: m,
            },
            Dest::NextHop6(next_hop) => Request::Resolve6 { next_hop, mbuf: m },
            Dest::Group(group) => Request::Mcast { group, mbuf: m },
        };
        let mcast = matches!(req, Request::Mcast { .. });
        match self.ifaces[iface].core.requests.send(req) {
            Ok(()) if mcast => self.st.to_ctrl_mcast += 1,
            Ok(()) => self.st.to_ctrl_resolve += 1,
            Err(_req) => {
                self.st.tx_ctrl_full += 1;
                return false;
            }
        }
        true
    }

    #[cold]
    #[inline(never)]
    fn refuse(&mut self, why: Unfit, m: Mbuf) -> bool {
        match why {
            Unfit::LinkDown => self.st.tx_link_down += 1,
            Unfit::TooLong => self.st.tx_too_long += 1,
            Unfit::Malformed => self.st.tx_malformed += 1,
        }
        self.drop_pkt(m);
        false
    }

    #[cold]
    #[inline(never)]
    fn refuse_no_iface(&mut self, m: Mbuf) -> bool {
        self.st.tx_no_iface += 1;
        self.drop_pkt(m);
        false
    }

    #[cold]
    #[inline(never)]
    fn refuse_full(&mut self, m: Mbuf) -> bool {
        self.st.tx_full += 1;
        self.drop_pkt(m);
        false
    }

    #[inline]
    fn drop_pkt(&mut self, m: Mbuf) {
        if let Err(m) = self.trash.push(m) {
            drop(m);
        }
    }

    /// Sends what every table holds (one `tx_burst` each); the stack does this at the
    /// end of every iteration, an application driving a lane calls it when it is done
    /// pushing.
    pub fn flush(&mut self) {
        for ifc in &mut self.ifaces {
            ifc.flush(&mut self.st);
        }
    }

    /// Packets that can still be pushed on `iface` before its table is full (the
    /// send queue's back-pressure shows here).
    #[inline]
    pub fn room(&self, iface: usize) -> usize {
        self.ifaces.get(iface).map_or(0, |i| i.pkts.room())
    }

    /// Interfaces packets can be pushed on.
    #[inline]
    pub fn ifaces(&self) -> usize {
        self.ifaces.len()
    }

    /// A fresh buffer from the stack's pool (this lcore's cache), with an empty data
    /// window after the headroom: append the IP packet, then push it. `None` when the
    /// pool is empty (counted in the pool's `alloc_fail`).
    #[inline]
    pub fn alloc(&self) -> Option<Mbuf> {
        self.pool.alloc()
    }

    /// Appends up to `n` fresh buffers to `out`; returns how many.
    #[inline]
    pub fn alloc_bulk(&self, out: &mut MbufArray, n: usize) -> usize {
        self.pool.alloc_bulk_into(out, n)
    }

    /// The stack's buffer pool.
    pub fn pool(&self) -> &Mempool {
        &self.pool
    }
}

impl TxIface {
    /// `lookup` against this interface's current snapshot.
    #[inline]
    fn lookup_in(&mut self, dest: Dest) -> Option<NhId> {
        // The reader is a field of `core`, the table another field: split the borrow.
        let TxIface {
            core,
            resolved,
            resolved_gen,
            ..
        } = self;
        let snap = core.reader.get();
        if *resolved_gen != snap.generation {
            *resolved = [None; RESOLVED_SLOTS];
            *resolved_gen = snap.generation;
        }
        let slot = resolved_slot(&dest);
        if let Some((d, id)) = resolved[slot] {
            if d == dest {
                return Some(id);
            }
        }
        let id = find(snap, dest)?;
        resolved[slot] = Some((dest, id));
        Some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolved_slots_spread_a_subnets_next_hops_and_groups() {
        let mut dests = vec![Dest::NextHop([10, 0, 0, 2])];
        dests.extend((1..=4).map(|i| Dest::Group(GroupAddr::Ipv4([239, 1, 0, i]))));
        let mut v6 = [0xfd, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2];
        dests.push(Dest::NextHop6(v6));
        v6[15] = 3;
        dests.push(Dest::NextHop6(v6));
        let mut slots: Vec<usize> = dests.iter().map(resolved_slot).collect();
        slots.sort_unstable();
        slots.dedup();
        assert_eq!(slots.len(), dests.len(), "{slots:?}");
        let mut slots: Vec<usize> = (1..=RESOLVED_SLOTS as u8)
            .map(|i| resolved_slot(&Dest::NextHop([10, 0, 0, i])))
            .collect();
        slots.sort_unstable();
        slots.dedup();
        assert_eq!(slots.len(), RESOLVED_SLOTS);
    }
}
