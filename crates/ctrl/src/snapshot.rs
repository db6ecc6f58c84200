//! What the data cores read: an immutable table published through `ibpoll-rcu`.
//!
//! A data core reads one [`Snapshot`] per burst ([`Reader::get`](ibpoll_rcu::Reader::get))
//! and sends with the address handles it finds there; it never takes a lock, never
//! touches a reference count. Entries are shared between snapshots as `Arc`s whose counts
//! only the control core changes (when it builds or frees a snapshot).
//!
//! Next hops: every group and neighbour entry owns a slot ([`NhId`]) of the snapshot's
//! flat next-hop array, which holds what a send needs ([`TxDst`]: address handle, QPN,
//! Q_Key). A data core resolves a destination to an id once (through the maps) and
//! sends through the array: one indexed load per packet.
//!
//! Address-handle lifetime: an [`AhGuard`] retires its handle when dropped (see
//! `reaper`: it is destroyed once the sends that could name it completed). Every
//! snapshot that names a handle holds an `Arc` to its guard, and the publisher gives a
//! snapshot back (to be dropped or rewritten) only after every data core passed a
//! quiescent point. A snapshot given back is rewritten at once to the current state
//! (see `Controller::recycle`), so it keeps a handle alive that no published snapshot
//! names only while publishing is held up (a stalled reader): the handle is then
//! destroyed late, never early.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::nh::{NhId, NhSlot};
use crate::reaper::AhGuard;
use std::sync::Arc;

use ibpoll_dev::{AddressHandle, TxDst};
use ibpoll_wire::ipoib::{HwAddr, McastScope};

use crate::mgid::McastMap;
use ibpoll_wire::{Gid, Lid, PKey, QKey, Qpn};

/// The hasher of the snapshot's tables: foldhash (hashbrown's default), seeded per
/// process. Data cores hash a 16-byte MGID or IPv6 address or a 4-byte IPv4 address once
/// per destination per burst; SipHash costs several times as much for keys this short, and the tables
/// hold only what the control core admitted (bounded by `groups_max` and `neigh_max`).
pub(crate) type FastHash = foldhash::fast::RandomState;

/// A Joined multicast group as the data path sees it.
#[derive(Debug)]
pub struct McastEntry {
    /// The group.
    pub mgid: Gid,
    /// Its MLID.
    pub mlid: Lid,
    /// The Q_Key to send with.
    pub qkey: QKey,
    /// Whether this port is a full member (receives) or send-only.
    pub send_only: bool,
    /// The QP the group is attached to (full members; the lane that receives it).
    pub qpn: Qpn,
    pub(crate) ah: Arc<AhGuard>,
    pub(crate) nh: NhSlot,
}

impl McastEntry {
    pub(crate) fn new(
        mgid: Gid,
        mlid: Lid,
        qkey: QKey,
        send_only: bool,
        qpn: Qpn,
        ah: Arc<AhGuard>,
        nh: NhSlot,
    ) -> Self {
        McastEntry {
            mgid,
            mlid,
            qkey,
            send_only,
            qpn,
            ah,
            nh,
        }
    }

    /// The address handle to send with ([`Qpn::MULTICAST`] as remote QPN).
    pub fn ah(&self) -> AddressHandle {
        self.ah.ah()
    }

    /// Its next-hop id.
    pub fn nh(&self) -> NhId {
        self.nh.id
    }

    /// Where a send to the group goes.
    pub fn tx_dst(&self) -> TxDst {
        TxDst {
            ah: self.ah(),
            qpn: Qpn::MULTICAST,
            qkey: self.qkey,
        }
    }
}

/// A resolved neighbour as the data path sees it.
#[derive(Debug)]
pub struct Neighbour {
    /// Its IP address (resolved by ARP for IPv4, by neighbour discovery for IPv6).
    pub ip: IpAddr,
    /// Its IPoIB hardware address.
    pub hwaddr: HwAddr,
    /// The Q_Key to send with (the broadcast group's).
    pub qkey: QKey,
    /// The path's destination LID (from its PathRecord).
    pub dlid: Lid,
    /// The path's service level.
    pub sl: u8,
    pub(crate) ah: Arc<AhGuard>,
    pub(crate) nh: NhSlot,
}

impl Neighbour {
    pub(crate) fn new(
        ip: IpAddr,
        hwaddr: HwAddr,
        qkey: QKey,
        (dlid, sl): (Lid, u8),
        ah: Arc<AhGuard>,
        nh: NhSlot,
    ) -> Self {
        Neighbour {
            ip,
            hwaddr,
            qkey,
            dlid,
            sl,
            ah,
            nh,
        }
    }

    /// Its next-hop id.
    pub fn nh(&self) -> NhId {
        self.nh.id
    }

    /// Where a send to it goes.
    pub fn tx_dst(&self) -> TxDst {
        TxDst {
            ah: self.ah(),
            qpn: self.qpn(),
            qkey: self.qkey,
        }
    }

    /// The remote QPN.
    pub fn qpn(&self) -> Qpn {
        self.hwaddr.qpn()
    }

    /// The address handle of the path to it.
    pub fn ah(&self) -> AddressHandle {
        self.ah.ah()
    }
}

/// One immutable view of the control state. Published after every poll that changed it.
///
/// The control core rewrites a snapshot that no data core holds any more (reclaimed by
/// the publisher) with the changes since its generation, rather than building each one
/// anew: readers cannot tell, since they see it again only through a later publish.
#[derive(Debug)]
pub struct Snapshot {
    /// Incremented with every publish.
    pub generation: u64,
    /// The link is up: the broadcast group is Joined and no normal or heavy flush runs.
    pub link_up: bool,
    /// The interface MTU: the broadcast group's IB MTU minus the 4-byte IPoIB header
    /// (0 while the broadcast group was never joined).
    pub mtu: usize,
    /// The interface's partition.
    pub pkey: PKey,
    /// The scope of IPv4 multicast MGIDs.
    pub scope: McastScope,
    /// How the interface names its groups (IPoIB MGIDs, or IPv4-mapped GIDs on RoCE).
    pub mcast_map: McastMap,
    /// The broadcast group, when Joined and no flush runs (while one runs no group is
    /// published: packets for groups go to the control core, which queues them).
    pub(crate) broadcast: Option<Arc<McastEntry>>,
    /// Read anywhere in the crate; written only through the methods below, which keep
    /// the next-hop array in step.
    pub(crate) groups: HashMap<Gid, Arc<McastEntry>, FastHash>,
    /// IPv4 and IPv6 neighbours in maps of their own, so that an IPv4 lookup hashes 4
    /// bytes, not an address enum.
    pub(crate) neighbours: HashMap<[u8; 4], Arc<Neighbour>, FastHash>,
    pub(crate) neighbours6: HashMap<[u8; 16], Arc<Neighbour>, FastHash>,
    /// The next-hop array: entry `i` is where sends to the group or neighbour owning
    /// slot `i` go, with that owner's generation (0: no owner in this snapshot).
    nh: Box<[NhEntry]>,
    /// Usage marks per slot, shared with the control core and every snapshot.
    used: Arc<[AtomicBool]>,
}

/// One slot of the next-hop array.
#[derive(Debug, Clone, Copy)]
struct NhEntry {
    dst: TxDst,
    gen: u32,
}

const NH_EMPTY: NhEntry = NhEntry {
    dst: TxDst {
        ah: AddressHandle::from_raw(0),
        qpn: Qpn::from_bits(0),
        qkey: QKey(0),
    },
    gen: 0,
};

const _: () = assert!(std::mem::size_of::<NhEntry>() == 16);

/// Empties slot `id` of `nh` if `id`'s entry still owns it.
fn clear_slot(nh: &mut [NhEntry], id: NhId) {
    let e = &mut nh[id.index as usize];
    if e.gen == id.gen {
        *e = NH_EMPTY;
    }
}

impl Snapshot {
    /// An empty snapshot of an interface in partition `pkey` whose next hops come from a
    /// slab with the usage marks `used`.
    pub(crate) fn new(
        pkey: PKey,
        scope: McastScope,
        mcast_map: McastMap,
        used: Arc<[AtomicBool]>,
    ) -> Snapshot {
        Snapshot {
            generation: 0,
            link_up: false,
            mtu: 0,
            pkey,
            scope,
            mcast_map,
            broadcast: None,
            groups: HashMap::default(),
            neighbours: HashMap::default(),
            neighbours6: HashMap::default(),
            nh: vec![NH_EMPTY; used.len()].into_boxed_slice(),
            used,
        }
    }

    /// Where sends through next hop `id` go; `None` if `id` names no entry of this
    /// snapshot (never resolved, or replaced since: resolve again).
    #[inline]
    pub fn nh(&self, id: NhId) -> Option<&TxDst> {
        let e = self.nh.get(id.index as usize)?;
        (e.gen == id.gen).then_some(&e.dst)
    }

    /// Marks next hop `id` used: one relaxed load, and a store only when the mark was
    /// clear (about once per idle-check period), never a read-modify-write. The control
    /// core reads and clears the marks to age send-only groups and neighbours.
    #[inline]
    pub fn mark_used(&self, id: NhId) {
        if let Some(u) = self.used.get(id.index as usize) {
            // Relaxed: a usage hint; a lost mark costs at most one early expiry check.
            if !u.load(Ordering::Relaxed) {
                u.store(true, Ordering::Relaxed);
            }
        }
    }

    /// The broadcast group's next hop, when it is published.
    #[inline]
    pub fn broadcast_nh(&self) -> Option<NhId> {
        self.broadcast.as_ref().map(|b| b.nh())
    }

    /// The Joined group `mgid`'s next hop.
    #[inline]
    pub fn group_nh(&self, mgid: &Gid) -> Option<NhId> {
        self.groups.get(mgid).map(|g| g.nh())
    }

    /// The resolved neighbour `ip`'s next hop.
    #[inline]
    pub fn neighbour_nh(&self, ip: &[u8; 4]) -> Option<NhId> {
        self.neighbours.get(ip).map(|n| n.nh())
    }

    /// The resolved IPv6 neighbour `ip`'s next hop.
    #[inline]
    pub fn neighbour6_nh(&self, ip: &[u8; 16]) -> Option<NhId> {
        self.neighbours6.get(ip).map(|n| n.nh())
    }

    /// The broadcast group, when Joined and no flush runs.
    pub fn broadcast(&self) -> Option<&McastEntry> {
        self.broadcast.as_deref()
    }

    fn nh_set(&mut self, id: NhId, dst: TxDst) {
        self.nh[id.index as usize] = NhEntry { dst, gen: id.gen };
    }

    fn nh_clear(&mut self, id: NhId) {
        clear_slot(&mut self.nh, id);
    }

    /// Publishes (or, `None`, withdraws) the broadcast group.
    pub(crate) fn set_broadcast(&mut self, b: Option<Arc<McastEntry>>) {
        if let Some(old) = self.broadcast.take() {
            // The broadcast group's slot is shared with its entry in `groups`.
            if !self
                .groups
                .get(&old.mgid)
                .is_some_and(|g| Arc::ptr_eq(g, &old))
            {
                self.nh_clear(old.nh());
            }
        }
        if let Some(b) = &b {
            self.nh_set(b.nh(), b.tx_dst());
        }
        self.broadcast = b;
    }

    /// Publishes a Joined group (replacing the entry it had, if any).
    pub(crate) fn insert_group(&mut self, e: Arc<McastEntry>) {
        self.nh_set(e.nh(), e.tx_dst());
        if let Some(old) = self.groups.insert(e.mgid, e) {
            self.nh_clear(old.nh());
        }
    }

    /// Publishes a resolved neighbour (replacing the entry it had, if any).
    pub(crate) fn insert_neighbour(&mut self, n: Arc<Neighbour>) {
        self.nh_set(n.nh(), n.tx_dst());
        let old = match n.ip {
            IpAddr::V4(a) => self.neighbours.insert(a.octets(), n),
            IpAddr::V6(a) => self.neighbours6.insert(a.octets(), n),
        };
        if let Some(old) = old {
            self.nh_clear(old.nh());
        }
    }

    /// Withdraws neighbour `ip`.
    pub(crate) fn remove_neighbour(&mut self, ip: &IpAddr) -> Option<Arc<Neighbour>> {
        let old = match ip {
            IpAddr::V4(a) => self.neighbours.remove(&a.octets()),
            IpAddr::V6(a) => self.neighbours6.remove(&a.octets()),
        }?;
        self.nh_clear(old.nh());
        Some(old)
    }

    /// The published entry of neighbour `ip`, if any.
    fn neighbour_entry(&self, ip: &IpAddr) -> Option<&Arc<Neighbour>> {
        match ip {
            IpAddr::V4(a) => self.neighbours.get(&a.octets()),
            IpAddr::V6(a) => self.neighbours6.get(&a.octets()),
        }
    }

    /// Withdraws group `mgid`.
    pub(crate) fn remove_group(&mut self, mgid: &Gid) -> Option<Arc<McastEntry>> {
        let old = self.groups.remove(mgid)?;
        if !self
            .broadcast
            .as_ref()
            .is_some_and(|b| Arc::ptr_eq(b, &old))
        {
            self.nh_clear(old.nh());
        }
        Some(old)
    }

    /// Makes the published broadcast group `b` (the same entry), or none.
    pub(crate) fn set_broadcast_entry(&mut self, b: Option<&Arc<McastEntry>>) {
        let same = match (&self.broadcast, b) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if !same {
            self.set_broadcast(b.cloned());
        }
    }

    /// Makes the published entry of group `mgid` `entry` (the same `Arc`), or none.
    pub(crate) fn set_group(&mut self, mgid: Gid, entry: Option<&Arc<McastEntry>>) {
        match (entry, self.groups.get(&mgid)) {
            (Some(e), Some(cur)) if Arc::ptr_eq(e, cur) => {}
            (Some(e), _) => self.insert_group(e.clone()),
            (None, Some(_)) => {
                self.remove_group(&mgid);
            }
            (None, None) => {}
        }
    }

    /// Makes the published entry of neighbour `ip` `entry` (the same `Arc`), or none.
    pub(crate) fn set_neighbour(&mut self, ip: IpAddr, entry: Option<&Arc<Neighbour>>) {
        match (entry, self.neighbour_entry(&ip)) {
            (Some(e), Some(cur)) if Arc::ptr_eq(e, cur) => {}
            (Some(e), _) => self.insert_neighbour(e.clone()),
            (None, Some(_)) => {
                self.remove_neighbour(&ip);
            }
            (None, None) => {}
        }
    }

    /// Withdraws every group (the broadcast group stays as it is). Keeps the map's
    /// capacity: a rebuild in place allocates nothing.
    pub(crate) fn clear_groups(&mut self) {
        for g in self.groups.values() {
            if !self.broadcast.as_ref().is_some_and(|b| Arc::ptr_eq(b, g)) {
                clear_slot(&mut self.nh, g.nh());
            }
        }
        self.groups.clear();
    }

    /// Withdraws every neighbour, keeping the maps' capacity.
    pub(crate) fn clear_neighbours(&mut self) {
        for n in self.neighbours.values().chain(self.neighbours6.values()) {
            clear_slot(&mut self.nh, n.nh());
        }
        self.neighbours.clear();
        self.neighbours6.clear();
    }

    /// The Joined groups.
    pub fn groups(&self) -> impl Iterator<Item = &McastEntry> {
        self.groups.values().map(|g| &**g)
    }

    /// The resolved neighbours, IPv4 and IPv6.
    pub fn neighbours(&self) -> impl Iterator<Item = &Neighbour> {
        self.neighbours
            .values()
            .chain(self.neighbours6.values())
            .map(|n| &**n)
    }

    /// Whether the next-hop array agrees with the maps: every published entry's slot
    /// names it, and no other slot is live (checked by the controller's tests).
    pub(crate) fn nh_consistent(&self) -> bool {
        let entries = self
            .groups
            .values()
            .map(|g| (g.nh(), g.tx_dst()))
            .chain(
                self.neighbours
                    .values()
                    .chain(self.neighbours6.values())
                    .map(|n| (n.nh(), n.tx_dst())),
            )
            .chain(self.broadcast.iter().map(|b| (b.nh(), b.tx_dst())));
        let mut live = 0;
        for (id, dst) in entries {
            if self.nh(id) != Some(&dst) {
                return false;
            }
            live += 1;
        }
        // The broadcast group is also in `groups` when published there.
        let in_groups = self
            .broadcast
            .as_ref()
            .is_some_and(|b| self.groups.get(&b.mgid).is_some_and(|g| Arc::ptr_eq(g, b)));
        live -= usize::from(in_groups);
        self.nh.iter().filter(|e| e.gen != 0).count() == live
    }

    /// The Joined group `mgid`, if any.
    #[inline]
    pub fn group(&self, mgid: &Gid) -> Option<&McastEntry> {
        self.groups.get(mgid).map(|g| &**g)
    }

    /// The MGID of IPv4 group `group` on this interface.
    #[inline]
    pub fn ipv4_mgid(&self, group: [u8; 4]) -> Gid {
        self.mcast_map.ipv4(group)
    }

    /// The MGID of IPv6 group `group` on this interface (signature 0x601B).
    #[inline]
    pub fn ipv6_mgid(&self, group: [u8; 16]) -> Gid {
        self.mcast_map.ipv6(group)
    }

    /// The resolved neighbour `ip`, if any.
    #[inline]
    pub fn neighbour(&self, ip: &[u8; 4]) -> Option<&Neighbour> {
        self.neighbours.get(ip).map(|n| &**n)
    }

    /// The resolved IPv6 neighbour `ip`, if any.
    #[inline]
    pub fn neighbour6(&self, ip: &[u8; 16]) -> Option<&Neighbour> {
        self.neighbours6.get(ip).map(|n| &**n)
    }

    /// Joined groups.
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// Resolved neighbours, IPv4 and IPv6.
    pub fn neighbour_count(&self) -> usize {
        self.neighbours.len() + self.neighbours6.len()
    }
}
