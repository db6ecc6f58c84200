//! Snapshot publication: the tables' indexes brought up to date, a snapshot no reader
//! holds rewritten from the change log, published through the rcu publisher, and the
//! ones readers gave back recycled.

use ibpoll_wire::IbMtu;

use super::Controller;
use crate::mcast::{Group, GroupState};
use crate::snapshot::Snapshot;
use crate::table::Change;

impl Controller {
    /// Publishes what changed since the last publish, if anything did, and takes back
    /// the snapshots readers are done with. Returns the work done (1 for a publish).
    pub(super) fn publish_changes(&mut self) -> usize {
        self.reindex();
        let work = if self.dirty {
            self.publish();
            1
        } else {
            0
        };
        self.publisher.reclaim();
        self.recycle();
        work
    }

    /// Brings the indexes up to date with every write to the tables since the last call
    /// (cheap when there was none); a published entry that changed makes the snapshot
    /// dirty.
    pub(crate) fn reindex(&mut self) {
        let groups = self.groups.reindex(&mut self.changes);
        let neighbours = self.neighbours.reindex(&mut self.changes);
        if groups || neighbours {
            self.dirty = true;
        }
    }

    /// Publishes the current state. Rewrites a snapshot no reader holds (the spare, or
    /// one the publisher just reclaimed) by applying what changed since its generation,
    /// and builds one only when there is none: in steady state nothing is allocated.
    fn publish(&mut self) {
        self.reindex();
        self.publisher.reclaim();
        self.generation += 1;
        let mut snap = match self.spare.take() {
            Some(snap) => snap,
            None => match self.publisher.take_reclaimed() {
                Some(snap) => snap,
                None => {
                    self.stats.snapshots_built += 1;
                    Box::new(Snapshot::new(
                        self.cfg.pkey,
                        self.cfg.scope,
                        self.map,
                        self.nh.used.clone(),
                    ))
                }
            },
        };
        self.refresh(&mut snap);
        snap.generation = self.generation;
        // What changes from now on is published by the next generation.
        self.changes.set_next(self.generation + 1);
        match self.publisher.publish_box(snap) {
            Ok(_) => {
                self.stats.publishes += 1;
                self.dirty = false;
            }
            Err(full) => {
                // Up to date as of this generation: the next try starts from it.
                self.stats.publish_full += 1;
                self.spare = Some(full.into_snapshot());
            }
        }
        self.recycle();
    }

    /// Brings `snap` up to date with the current state: the changes logged since its
    /// generation (or everything, when the log does not reach back that far), and the
    /// scalar fields. Allocates only when a table outgrows its capacity.
    pub(super) fn refresh(&mut self, snap: &mut Snapshot) {
        let (mut all_groups, mut all_neighbours) = match self.changes.since(snap.generation) {
            None => (true, true),
            Some(changes) => rebuilds_needed(changes),
        };
        if snap.generation == 0 && snap.groups.is_empty() && snap.neighbour_count() == 0 {
            // A fresh (or the initial) snapshot: filling it is cheaper than a replay.
            (all_groups, all_neighbours) = (true, true);
        }
        if all_groups {
            self.stats.snapshot_rebuilds += 1;
            self.refill_groups(snap);
        }
        if all_neighbours {
            self.refill_neighbours(snap);
        }
        if !(all_groups && all_neighbours) {
            self.apply_changes(snap, all_groups, all_neighbours);
        }
        self.refresh_scalars(snap);
    }

    /// Every Joined group, none while a flush runs.
    fn refill_groups(&self, snap: &mut Snapshot) {
        snap.clear_groups();
        if self.flush.is_none() {
            for g in self.groups.values() {
                if let GroupState::Joined { entry, .. } = &g.state {
                    snap.insert_group(entry.clone());
                }
            }
        }
    }

    /// Every neighbour with a published entry.
    fn refill_neighbours(&self, snap: &mut Snapshot) {
        snap.clear_neighbours();
        for ip in self.neighbours.keys() {
            if let Some(entry) = self.neigh_published(ip) {
                snap.insert_neighbour(entry.clone());
            }
        }
    }

    /// The groups and neighbours changed since `snap`'s generation, for the tables not
    /// refilled whole.
    fn apply_changes(&self, snap: &mut Snapshot, all_groups: bool, all_neighbours: bool) {
        let changes = self
            .changes
            .since(snap.generation)
            .expect("the log reaches back to the snapshot's generation (checked by refresh)");
        for c in changes {
            match c {
                Change::Group(mgid) if !all_groups => {
                    let entry = match self.flush {
                        Some(_) => None,
                        None => match self.groups.get(&mgid).map(|g| &g.state) {
                            Some(GroupState::Joined { entry, .. }) => Some(entry),
                            _ => None,
                        },
                    };
                    snap.set_group(mgid, entry);
                }
                Change::Neigh(ip) if !all_neighbours => {
                    snap.set_neighbour(ip, self.neigh_published(&ip));
                }
                _ => {}
            }
        }
    }

    /// The broadcast entry (none while a flush runs), link state, MTU, P_Key and scope.
    fn refresh_scalars(&self, snap: &mut Snapshot) {
        let broadcast = match (&self.flush, self.groups.get(&self.bcast_mgid)) {
            (
                None,
                Some(Group {
                    state: GroupState::Joined { entry, .. },
                    ..
                }),
            ) => Some(entry),
            _ => None,
        };
        snap.set_broadcast_entry(broadcast);
        snap.link_up = self.link_up;
        snap.mtu = self
            .bcast_record
            .and_then(|r| IbMtu::from_code(r.mtu))
            .map_or(0, |m| m.ipoib_mtu());
        snap.pkey = self.cfg.pkey;
        snap.scope = self.cfg.scope;
    }

    /// Takes a snapshot the publisher reclaimed and keeps it as the spare, brought up to
    /// date at once: it then names no entry the published snapshot does not (an address
    /// handle is destroyed as soon as no published or retired snapshot names it). Then
    /// forgets the changes every live snapshot has.
    fn recycle(&mut self) {
        if let Some(mut snap) = self.publisher.take_reclaimed() {
            if self.spare.is_none() {
                self.refresh(&mut snap);
                snap.generation = self.generation;
                self.spare = Some(snap);
            }
        }
        if self.changes.len() == 0 {
            return;
        }
        // The oldest generation a snapshot that may come back for reuse has: the current
        // one, the retired ones, the spare.
        let mut oldest = self.publisher.current().generation;
        if let Some(retired) = self.publisher.pending_oldest() {
            oldest = oldest.min(retired.generation);
        }
        if let Some(spare) = &self.spare {
            oldest = oldest.min(spare.generation);
        }
        self.changes.trim(oldest);
    }
}

/// Which tables a list of changes makes rebuild whole (groups, neighbours): a flush
/// starting or ending changes every group at once.
fn rebuilds_needed(changes: impl IntoIterator<Item = Change>) -> (bool, bool) {
    let (mut all_groups, mut all_neighbours) = (false, false);
    for c in changes {
        match c {
            Change::AllGroups => all_groups = true,
            Change::AllNeighbours => all_neighbours = true,
            Change::Group(_) | Change::Neigh(_) => {}
        }
    }
    (all_groups, all_neighbours)
}

#[cfg(test)]
mod tests {
    use ibpoll_wire::Gid;

    use super::*;

    #[test]
    fn only_a_flush_or_a_cleared_table_rebuilds_whole() {
        let gid = Gid::new(Gid::DEFAULT_SUBNET_PREFIX, 1);
        assert_eq!(rebuilds_needed([]), (false, false));
        assert_eq!(
            rebuilds_needed([Change::Group(gid), Change::Neigh([10, 0, 0, 1].into())]),
            (false, false)
        );
        assert_eq!(
            rebuilds_needed([Change::Group(gid), Change::AllGroups]),
            (true, false)
        );
        assert_eq!(
            rebuilds_needed([Change::AllNeighbours, Change::Neigh([10, 0, 0, 1].into())]),
            (false, true)
        );
    }
}
