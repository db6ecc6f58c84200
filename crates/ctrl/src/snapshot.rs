//! What the data cores read: an immutable table published through `ibpoll-rcu`.
//!
//! A data core reads one [`Snapshot`] per burst ([`Reader::get`](ibpoll_rcu::Reader::get))
//! and sends with the address handles it finds there; it never takes a lock, never
//! touches a reference count. Entries are shared between snapshots as `Arc`s whose counts
//! only the control core changes (when it builds or frees a snapshot).
//!
//! Address-handle lifetime: an [`AhGuard`] destroys its handle when dropped. Every
//! snapshot that names a handle holds an `Arc` to its guard, and the publisher gives a
//! snapshot back (to be dropped or rewritten) only after every data core passed a
//! quiescent point, so a handle is destroyed only after no data core can still read it.
//! A snapshot given back is rewritten at once to the current state (see
//! `Controller::recycle`), so it keeps a handle alive that no published snapshot names
//! only while publishing is held up (a stalled reader): the handle is then destroyed
//! late, never early.
//! The control core sends synchronously in `poll` and holds no descriptor across polls
//! with a handle it no longer has.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ibpoll_dev::{AddressHandle, Counter, Port};
use ibpoll_wire::ipoib::{self, HwAddr, McastScope};
use ibpoll_wire::{Gid, Lid, PKey, QKey, Qpn};

/// The hasher of the snapshot's tables: foldhash (hashbrown's default), seeded per
/// process. Data cores hash a 16-byte MGID or a 4-byte IPv4 address once per destination
/// per burst; SipHash costs several times as much for keys this short, and the tables
/// hold only what the control core admitted (bounded by `groups_max` and `neigh_max`).
pub(crate) type FastHash = foldhash::fast::RandomState;

/// Owns an address handle: destroys it when the last snapshot or table naming it goes.
pub struct AhGuard {
    port: Arc<dyn Port>,
    ah: AddressHandle,
    destroyed: Arc<Counter>,
}

impl AhGuard {
    pub(crate) fn new(port: Arc<dyn Port>, ah: AddressHandle, destroyed: Arc<Counter>) -> Self {
        AhGuard {
            port,
            ah,
            destroyed,
        }
    }

    /// The handle.
    pub fn ah(&self) -> AddressHandle {
        self.ah
    }
}

impl Drop for AhGuard {
    fn drop(&mut self) {
        // Runs on the control core (the rcu publisher frees snapshots on its thread), or
        // on the last reader's thread if the controller is gone first: the shared add.
        if self.port.destroy_ah(self.ah).is_ok() {
            self.destroyed.add_shared(1);
        }
    }
}

impl fmt::Debug for AhGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AhGuard({:#x})", self.ah.raw())
    }
}

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
    pub(crate) ah: Arc<AhGuard>,
    /// Set by data cores when they send to the group; cleared by the control core when
    /// it checks for idle send-only groups (DESIGN rule 7).
    used: AtomicBool,
}

impl McastEntry {
    pub(crate) fn new(mgid: Gid, mlid: Lid, qkey: QKey, send_only: bool, ah: Arc<AhGuard>) -> Self {
        McastEntry {
            mgid,
            mlid,
            qkey,
            send_only,
            ah,
            used: AtomicBool::new(true),
        }
    }

    /// The address handle to send with ([`Qpn::MULTICAST`] as remote QPN).
    pub fn ah(&self) -> AddressHandle {
        self.ah.ah()
    }

    /// Marks the group used. One relaxed load per call and a store only when the flag was
    /// clear (about once per idle-check period), never a read-modify-write.
    #[inline]
    pub fn mark_used(&self) {
        // Relaxed: a usage hint; pairs with the control core's `take_used` swap only in
        // the sense that a lost mark costs at most one early expiry check.
        if !self.used.load(Ordering::Relaxed) {
            self.used.store(true, Ordering::Relaxed);
        }
    }

    /// Reads and clears the usage flag (control core only).
    pub(crate) fn take_used(&self) -> bool {
        // Relaxed: see `mark_used`.
        self.used.swap(false, Ordering::Relaxed)
    }
}

/// A resolved neighbour as the data path sees it.
#[derive(Debug)]
pub struct Neighbour {
    /// Its IPv4 address.
    pub ip: [u8; 4],
    /// Its IPoIB hardware address.
    pub hwaddr: HwAddr,
    /// The Q_Key to send with (the broadcast group's).
    pub qkey: QKey,
    pub(crate) ah: Arc<AhGuard>,
    used: AtomicBool,
}

impl Neighbour {
    pub(crate) fn new(ip: [u8; 4], hwaddr: HwAddr, qkey: QKey, ah: Arc<AhGuard>) -> Self {
        Neighbour {
            ip,
            hwaddr,
            qkey,
            ah,
            used: AtomicBool::new(true),
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

    /// Marks the neighbour used (as [`McastEntry::mark_used`]).
    #[inline]
    pub fn mark_used(&self) {
        // Relaxed: a usage hint only.
        if !self.used.load(Ordering::Relaxed) {
            self.used.store(true, Ordering::Relaxed);
        }
    }

    pub(crate) fn take_used(&self) -> bool {
        // Relaxed: a usage hint only.
        self.used.swap(false, Ordering::Relaxed)
    }
}

/// One immutable view of the control state. Published after every poll that changed it.
///
/// The control core rewrites a snapshot that no data core holds any more (reclaimed by
/// the publisher) with the changes since its generation, rather than building each one
/// anew: readers cannot tell, since they see it again only through a later publish.
#[derive(Debug, Default)]
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
    /// The broadcast group, when Joined and no flush runs (while one runs no group is
    /// published: packets for groups go to the control core, which queues them).
    pub broadcast: Option<Arc<McastEntry>>,
    pub(crate) groups: HashMap<Gid, Arc<McastEntry>, FastHash>,
    pub(crate) neighbours: HashMap<[u8; 4], Arc<Neighbour>, FastHash>,
}

impl Snapshot {
    /// The Joined group `mgid`, if any.
    #[inline]
    pub fn group(&self, mgid: &Gid) -> Option<&McastEntry> {
        self.groups.get(mgid).map(|g| &**g)
    }

    /// The MGID of IPv4 group `group` on this interface.
    #[inline]
    pub fn ipv4_mgid(&self, group: [u8; 4]) -> Gid {
        ipoib::ipv4_mcast_mgid(group, self.pkey, self.scope)
    }

    /// The resolved neighbour `ip`, if any.
    #[inline]
    pub fn neighbour(&self, ip: &[u8; 4]) -> Option<&Neighbour> {
        self.neighbours.get(ip).map(|n| &**n)
    }

    /// Joined groups.
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// Resolved neighbours.
    pub fn neighbour_count(&self) -> usize {
        self.neighbours.len()
    }
}
