//! Next-hop ids: stable names for the snapshot's flat next-hop array.
//!
//! Every group and neighbour the data path can send to gets a slot when the control core
//! creates its entry; the slot is the entry's for its whole life and returns to the slab
//! when the entry's last reference (table, snapshot) is gone. A [`NhId`] carries the
//! slot's generation, so an id kept by an application after its entry was replaced
//! finds a different generation in the array and is refused, never misdirected.

use std::fmt;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

/// The name of a next hop (a neighbour or a multicast group) in the snapshots of one
/// interface: an index into the snapshot's next-hop array and the generation of the
/// entry that owns it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct NhId {
    pub(crate) index: u32,
    pub(crate) gen: u32,
}

impl fmt::Debug for NhId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NhId({}#{})", self.index, self.gen)
    }
}

impl NhId {
    /// The slot index.
    pub fn index(self) -> usize {
        self.index as usize
    }
}

/// The slots of one interface's next hops.
#[derive(Debug)]
struct Slots {
    /// Generation per slot, bumped at every allocation (never 0 for a live slot).
    gens: Vec<u32>,
    free: Vec<u32>,
}

/// Hands out next-hop slots; shared by the controller and the entries that give their
/// slot back when dropped.
#[derive(Debug)]
pub(crate) struct NhSlab {
    slots: Mutex<Slots>,
    /// Per slot: set by data cores when they send to it, read and cleared by the control
    /// core (send-only groups and neighbours that go unused are removed).
    pub(crate) used: Arc<[AtomicBool]>,
}

impl NhSlab {
    /// A slab of `cap` slots.
    pub(crate) fn new(cap: usize) -> NhSlab {
        NhSlab {
            slots: Mutex::new(Slots {
                gens: vec![0; cap],
                free: (0..cap as u32).rev().collect(),
            }),
            used: (0..cap).map(|_| AtomicBool::new(false)).collect(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A free slot, marked used; `None` when every slot is taken.
    pub(crate) fn alloc(&self) -> Option<NhId> {
        let mut s = self.lock();
        let index = s.free.pop()?;
        let g = &mut s.gens[index as usize];
        *g = g.wrapping_add(1).max(1);
        let id = NhId { index, gen: *g };
        // Relaxed: a usage hint (see `Snapshot::mark_used`).
        self.used[index as usize].store(true, std::sync::atomic::Ordering::Relaxed);
        Some(id)
    }

    /// Gives a slot back (its entry is gone from every table and snapshot).
    pub(crate) fn free(&self, id: NhId) {
        let mut s = self.lock();
        debug_assert_eq!(s.gens[id.index as usize], id.gen);
        debug_assert!(!s.free.contains(&id.index));
        s.free.push(id.index);
    }

    /// Reads and clears the usage mark of `id` (control core only).
    pub(crate) fn take_used(&self, id: NhId) -> bool {
        // Relaxed: a usage hint only.
        self.used[id.index as usize].swap(false, std::sync::atomic::Ordering::Relaxed)
    }
}

/// A slot owned by an entry: given back when the entry is dropped.
pub(crate) struct NhSlot {
    pub(crate) id: NhId,
    slab: Arc<NhSlab>,
}

impl NhSlot {
    pub(crate) fn new(slab: &Arc<NhSlab>) -> Option<NhSlot> {
        Some(NhSlot {
            id: slab.alloc()?,
            slab: slab.clone(),
        })
    }
}

impl Drop for NhSlot {
    fn drop(&mut self) {
        self.slab.free(self.id);
    }
}

impl fmt::Debug for NhSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.id.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_reused_with_a_new_generation() {
        let slab = Arc::new(NhSlab::new(2));
        let a = NhSlot::new(&slab).unwrap();
        let b = NhSlot::new(&slab).unwrap();
        assert_ne!(a.id.index, b.id.index);
        assert!(NhSlot::new(&slab).is_none(), "bounded");
        let old = a.id;
        drop(a);
        let c = NhSlot::new(&slab).unwrap();
        assert_eq!(c.id.index, old.index);
        assert_ne!(c.id, old, "a reused slot has a new generation");
        assert!(slab.take_used(c.id), "a new slot starts used");
        assert!(!slab.take_used(c.id));
    }
}
