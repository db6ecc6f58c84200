//! The controller's group and neighbour tables, the indexes that spare a poll from
//! scanning them, and the log of what changed for the next snapshot.
//!
//! Every mutable access to an entry goes through the table ([`GroupTable::get_mut`],
//! [`NeighTable::get_mut`], `insert`, `remove`, ...), which notes the key. Before anything
//! reads an index, [`GroupTable::reindex`] (and [`NeighTable::reindex`]) derives each noted
//! entry's place again from its state and records the snapshot entries that changed in
//! the [`ChangeLog`]. So an index cannot miss a state change, however it was made, and a
//! poll with nothing noted and nothing due touches no entry at all.
//!
//! Group indexes, all ordered so that a run replays exactly:
//! * `join_due`: Idle groups waiting for `retry_at` (a subscribed or send-only group);
//!   `schedule_joins` sends the joins due, up to the SA window, without looking further.
//! * `leave_due`: groups `schedule_joins` must leave or remove: unsubscribed ones that are
//!   Joined or Idle, and Joined ones whose membership lacks their kind's JoinState (a
//!   send-only group the interface subscribed to since).
//! * `flush_leave`: what a flush leaves (Joined, or holding an `Unconfirmed` token not
//!   deferred), and the count of Leaving groups: a flush ends when both are empty.
//! * `send_only`: Joined send-only groups, the only ones rule 7 expires.
//!
//! Neighbours are fewer; their table keeps the earliest time a timer is due
//! (`scan_at`) and a flag set by every mutation, so `neigh_timers` scans only when one
//! may be due.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;
use std::ops::Deref;
use std::sync::Arc;

use ibpoll_dev::Nanos;
use ibpoll_wire::Gid;

use crate::mcast::{Group, GroupKind, GroupState, RetryAt};
use crate::neigh::{Neigh, NeighState};
use crate::snapshot::FastHash;
use crate::SnapshotMismatch;

/// One change of what the snapshot publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// The group's published entry (or its absence) changed.
    Group(Gid),
    /// The neighbour's published entry (or its absence) changed.
    Neigh(IpAddr),
    /// Every group may have changed (a flush started or ended).
    AllGroups,
    /// Every neighbour may have changed (the table was cleared).
    AllNeighbours,
}

/// Entries kept in the log at most; snapshots older than what was dropped are rebuilt.
pub(crate) const CHANGES_MAX: usize = 4096;

/// What changed in the published view, by the generation that first publishes it.
///
/// A snapshot of generation `s` is brought up to date by applying every entry whose
/// generation is greater than `s`; applying one reads the current state of its key, so
/// applying an entry twice, or one older than needed, is harmless.
#[derive(Debug)]
pub(crate) struct ChangeLog {
    /// `(generation, change)`, generations non-decreasing front to back.
    entries: VecDeque<(u64, Change)>,
    /// Entries of generations up to this one may have been dropped: a snapshot of an
    /// older generation cannot be brought up to date from the log.
    floor: u64,
    /// The generation of the next publish: new entries are tagged with it.
    next: u64,
}

impl ChangeLog {
    pub(crate) fn new(next: u64) -> Self {
        ChangeLog {
            entries: VecDeque::with_capacity(CHANGES_MAX),
            floor: 0,
            next,
        }
    }

    pub(crate) fn push(&mut self, change: Change) {
        if self.entries.len() == CHANGES_MAX {
            let (generation, _) = self.entries.pop_front().expect("full");
            self.floor = self.floor.max(generation);
        }
        self.entries.push_back((self.next, change));
    }

    /// From now on entries belong to generation `next`.
    pub(crate) fn set_next(&mut self, next: u64) {
        debug_assert!(next >= self.next, "generations go forward");
        self.next = next;
    }

    /// The changes a snapshot of generation `generation` lacks, or `None` when the log
    /// no longer reaches back that far (rebuild it whole).
    pub(crate) fn since(&self, generation: u64) -> Option<impl Iterator<Item = Change> + '_> {
        if generation < self.floor {
            return None;
        }
        let start = self.entries.partition_point(|(g, _)| *g <= generation);
        Some(self.entries.range(start..).map(|(_, c)| *c))
    }

    /// Forgets the changes every snapshot still alive already has (those of generations
    /// up to `generation`).
    pub(crate) fn trim(&mut self, generation: u64) {
        while self.entries.front().is_some_and(|(g, _)| *g <= generation) {
            self.entries.pop_front();
        }
    }

    /// Entries kept.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Where a group stands in the indexes; derived from its state by [`GroupIndex::of`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct GroupIndex {
    join_at: Option<Nanos>,
    leave_at: Option<Nanos>,
    flush_leave: bool,
    leaving: bool,
    send_only_joined: bool,
    /// The address of the entry the snapshot publishes for it (identity only, never
    /// dereferenced), if it is Joined.
    published: Option<usize>,
}

impl GroupIndex {
    fn of(g: &Group) -> GroupIndex {
        let idle_at = match &g.state {
            GroupState::Idle {
                retry_at: RetryAt::At(t),
                ..
            } => Some(*t),
            _ => None,
        };
        let (joined, lacks_bits, published) = match &g.state {
            GroupState::Joined { membership, entry } => (
                true,
                !membership.join_state().contains(g.kind.join_state()),
                Some(Arc::as_ptr(entry) as usize),
            ),
            _ => (false, false, None),
        };
        let unconfirmed = matches!(
            g.state,
            GroupState::Idle {
                unconfirmed: Some(_),
                ..
            }
        );
        let leave_first = g.leave_first && unconfirmed;
        let leave_at = if g.remove_after_leave || leave_first {
            idle_at.or(joined.then_some(Nanos::ZERO))
        } else {
            lacks_bits.then_some(Nanos::ZERO)
        };
        GroupIndex {
            join_at: idle_at.filter(|_| !g.remove_after_leave && !leave_first),
            leave_at,
            flush_leave: joined || (unconfirmed && !g.leave_deferred),
            leaving: matches!(g.state, GroupState::Leaving { .. }),
            send_only_joined: joined && g.kind == GroupKind::SendOnly,
            published,
        }
    }
}

/// The multicast groups, by MGID, with their indexes. Reads go through `Deref` to the
/// map; every write goes through a method that notes the group for [`reindex`](Self::reindex).
///
/// The map is a hash map (lookups are most of the controller's work in a rejoin storm);
/// its order is per process and nothing may depend on it: every order that reaches the
/// SA or the fabric comes from the indexes, which are ordered (or is sorted first).
#[derive(Debug, Default)]
pub(crate) struct GroupTable {
    map: HashMap<Gid, Group, FastHash>,
    /// Groups written since the last reindex (may repeat).
    touched: Vec<Gid>,
    /// Every group may have been written since the last reindex.
    all_touched: bool,
    /// Index moves of a whole-table reindex (kept for its capacity).
    moves: Vec<(Gid, GroupIndex, GroupIndex)>,
    join_due: BTreeSet<(Nanos, Gid)>,
    leave_due: BTreeSet<(Nanos, Gid)>,
    flush_leave: BTreeSet<Gid>,
    leaving: usize,
    send_only: BTreeSet<Gid>,
}

impl Deref for GroupTable {
    type Target = HashMap<Gid, Group, FastHash>;

    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl GroupTable {
    pub(crate) fn with_touched_capacity(capacity: usize) -> Self {
        GroupTable {
            touched: Vec::with_capacity(capacity),
            ..GroupTable::default()
        }
    }

    /// The group, for writing; noted for the next reindex.
    pub(crate) fn get_mut(&mut self, mgid: &Gid) -> Option<&mut Group> {
        let g = self.map.get_mut(mgid)?;
        if !g.noted && !self.all_touched {
            // Noted once per reindex: the list holds each group at most once.
            g.noted = true;
            self.touched.push(*mgid);
        }
        Some(g)
    }

    /// Adds a group that is not in the table.
    pub(crate) fn insert(&mut self, mut group: Group) {
        let mgid = group.mgid;
        group.noted = !self.all_touched;
        if group.noted {
            self.touched.push(mgid);
        }
        let old = self.map.insert(mgid, group);
        assert!(old.is_none(), "group inserted twice");
    }

    /// Removes a group; its published entry (if any) is logged as gone.
    pub(crate) fn remove(&mut self, mgid: &Gid, log: &mut ChangeLog) -> Option<Group> {
        let g = self.map.remove(mgid)?;
        self.unindex(*mgid, g.index, log);
        Some(g)
    }

    /// Every group, for writing; all are reindexed.
    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut Group> {
        self.all_touched = true;
        self.map.values_mut()
    }

    fn unindex(&mut self, mgid: Gid, old: GroupIndex, log: &mut ChangeLog) {
        self.apply(mgid, old, GroupIndex::default(), log);
    }

    /// Moves a group from `old` to `new` in every index. Returns whether its published
    /// entry changed (then logged).
    fn apply(&mut self, mgid: Gid, old: GroupIndex, new: GroupIndex, log: &mut ChangeLog) -> bool {
        if old == new {
            return false;
        }
        if old.join_at != new.join_at {
            if let Some(t) = old.join_at {
                self.join_due.remove(&(t, mgid));
            }
            if let Some(t) = new.join_at {
                self.join_due.insert((t, mgid));
            }
        }
        if old.leave_at != new.leave_at {
            if let Some(t) = old.leave_at {
                self.leave_due.remove(&(t, mgid));
            }
            if let Some(t) = new.leave_at {
                self.leave_due.insert((t, mgid));
            }
        }
        if old.flush_leave != new.flush_leave {
            if new.flush_leave {
                self.flush_leave.insert(mgid);
            } else {
                self.flush_leave.remove(&mgid);
            }
        }
        if old.leaving != new.leaving {
            if new.leaving {
                self.leaving += 1;
            } else {
                self.leaving -= 1;
            }
        }
        if old.send_only_joined != new.send_only_joined {
            if new.send_only_joined {
                self.send_only.insert(mgid);
            } else {
                self.send_only.remove(&mgid);
            }
        }
        let published = old.published != new.published;
        if published {
            log.push(Change::Group(mgid));
        }
        published
    }

    /// Brings the indexes up to date with every group written since the last call.
    /// Returns whether a published entry changed (logged in `log`).
    #[inline]
    pub(crate) fn reindex(&mut self, log: &mut ChangeLog) -> bool {
        if self.is_indexed() {
            return false;
        }
        self.reindex_noted(log)
    }

    fn reindex_noted(&mut self, log: &mut ChangeLog) -> bool {
        let mut changed = false;
        if self.all_touched {
            self.all_touched = false;
            self.touched.clear();
            // The new places first, then the index moves (which need `&mut self`): the
            // list of moves reuses `moves`, whose capacity stays.
            let mut moves = std::mem::take(&mut self.moves);
            for g in self.map.values_mut() {
                g.noted = false;
                let new = GroupIndex::of(g);
                let old = std::mem::replace(&mut g.index, new);
                if old != new {
                    moves.push((g.mgid, old, new));
                }
            }
            for &(mgid, old, new) in &moves {
                changed |= self.apply(mgid, old, new, log);
            }
            moves.clear();
            self.moves = moves;
            return changed;
        }
        for i in 0..self.touched.len() {
            let mgid = self.touched[i];
            let Some(g) = self.map.get_mut(&mgid) else {
                // Removed since (and unindexed then).
                continue;
            };
            g.noted = false;
            let new = GroupIndex::of(g);
            let old = std::mem::replace(&mut g.index, new);
            changed |= self.apply(mgid, old, new, log);
        }
        self.touched.clear();
        changed
    }

    /// Whether writes wait for a reindex.
    pub(crate) fn is_indexed(&self) -> bool {
        !self.all_touched && self.touched.is_empty()
    }

    /// Groups to join from `now` on, earliest first (then by MGID).
    pub(crate) fn join_due(&self, now: Nanos) -> impl Iterator<Item = Gid> + '_ {
        debug_assert!(self.is_indexed());
        self.join_due
            .iter()
            .take_while(move |(t, _)| *t <= now)
            .map(|(_, m)| *m)
    }

    /// Groups to leave or remove from `now` on, earliest first (then by MGID).
    pub(crate) fn leave_due(&self, now: Nanos) -> impl Iterator<Item = Gid> + '_ {
        debug_assert!(self.is_indexed());
        self.leave_due
            .iter()
            .take_while(move |(t, _)| *t <= now)
            .map(|(_, m)| *m)
    }

    /// Whether a group is due to be left or removed at `now`.
    pub(crate) fn has_leave_due(&self, now: Nanos) -> bool {
        self.leave_due.first().is_some_and(|(t, _)| *t <= now)
    }

    /// What a flush still has to leave, by MGID.
    pub(crate) fn flush_leave(&self) -> &BTreeSet<Gid> {
        debug_assert!(self.is_indexed());
        &self.flush_leave
    }

    /// Groups Leaving.
    pub(crate) fn leaving(&self) -> usize {
        debug_assert!(self.is_indexed());
        self.leaving
    }

    /// Joined send-only groups, by MGID.
    pub(crate) fn send_only_joined(&self) -> &BTreeSet<Gid> {
        debug_assert!(self.is_indexed());
        &self.send_only
    }

    /// Checks every index against one derived afresh from the groups' states; `Err`
    /// names the first difference. Call after a reindex.
    pub(crate) fn check(&self) -> Result<(), SnapshotMismatch> {
        let mut fresh = GroupTable::default();
        let mut log = ChangeLog::new(0);
        for g in self.map.values() {
            let new = GroupIndex::of(g);
            if g.index != new || g.noted {
                return Err(SnapshotMismatch::GroupIndex { mgid: g.mgid });
            }
            fresh.apply(g.mgid, GroupIndex::default(), new, &mut log);
        }
        let same = fresh.join_due == self.join_due
            && fresh.leave_due == self.leave_due
            && fresh.flush_leave == self.flush_leave
            && fresh.leaving == self.leaving
            && fresh.send_only == self.send_only;
        if !same {
            return Err(SnapshotMismatch::GroupIndexes);
        }
        Ok(())
    }
}

/// The address of the entry the snapshot publishes for a neighbour, if any.
pub(crate) fn neigh_published(n: &Neigh) -> Option<usize> {
    match &n.state {
        NeighState::Reachable { entry }
        | NeighState::Resolving {
            old: Some(entry), ..
        } => Some(Arc::as_ptr(entry) as usize),
        _ => None,
    }
}

/// The neighbours, by IP address (IPv4 ones first, then IPv6, each in address order). Reads go through `Deref` to the map; every write goes
/// through a method that notes it, for `neigh_timers` (scan again) and for the snapshot
/// (reindex).
#[derive(Debug, Default)]
pub(crate) struct NeighTable {
    map: BTreeMap<IpAddr, Neigh>,
    touched: Vec<IpAddr>,
    all_touched: bool,
    /// A neighbour was written since the last timer scan.
    written: bool,
    /// No timer is due before this time (unless `written`).
    scan_at: Nanos,
}

impl Deref for NeighTable {
    type Target = BTreeMap<IpAddr, Neigh>;

    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl NeighTable {
    pub(crate) fn with_touched_capacity(capacity: usize) -> Self {
        NeighTable {
            touched: Vec::with_capacity(capacity),
            ..NeighTable::default()
        }
    }

    fn touch(&mut self, ip: IpAddr) {
        self.written = true;
        if self.all_touched {
            return;
        }
        if self.touched.len() >= self.map.len().max(16) {
            self.all_touched = true;
            self.touched.clear();
            return;
        }
        self.touched.push(ip);
    }

    /// The neighbour, for writing; noted.
    pub(crate) fn get_mut(&mut self, ip: &IpAddr) -> Option<&mut Neigh> {
        if self.map.contains_key(ip) {
            self.touch(*ip);
        }
        self.map.get_mut(ip)
    }

    /// Adds a neighbour that is not in the table.
    pub(crate) fn insert(&mut self, ip: IpAddr, neigh: Neigh) {
        let old = self.map.insert(ip, neigh);
        assert!(old.is_none(), "neighbour inserted twice");
        self.touch(ip);
    }

    /// Removes a neighbour; its published entry (if any) is logged as gone.
    pub(crate) fn remove(&mut self, ip: &IpAddr, log: &mut ChangeLog) -> Option<Neigh> {
        let n = self.map.remove(ip)?;
        if n.published.is_some() {
            log.push(Change::Neigh(*ip));
        }
        Some(n)
    }

    /// Removes every neighbour.
    pub(crate) fn clear(&mut self, log: &mut ChangeLog) {
        if self.map.values().any(|n| n.published.is_some()) {
            log.push(Change::AllNeighbours);
        }
        self.map.clear();
        self.touched.clear();
        self.all_touched = false;
    }

    /// Keeps the neighbours `keep` says to; removed ones are logged as gone.
    pub(crate) fn retain(
        &mut self,
        log: &mut ChangeLog,
        mut keep: impl FnMut(&IpAddr, &mut Neigh) -> bool,
    ) {
        self.map.retain(|ip, n| {
            let kept = keep(ip, n);
            if !kept && n.published.is_some() {
                log.push(Change::Neigh(*ip));
            }
            kept
        });
    }

    /// Every neighbour, for writing; all are reindexed.
    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut Neigh> {
        self.written = true;
        self.all_touched = true;
        self.touched.clear();
        self.map.values_mut()
    }

    fn reindex_one(&mut self, ip: IpAddr, log: &mut ChangeLog) -> bool {
        let Some(n) = self.map.get_mut(&ip) else {
            return false;
        };
        let published = neigh_published(n);
        if published == n.published {
            return false;
        }
        n.published = published;
        log.push(Change::Neigh(ip));
        true
    }

    /// Logs the published entries written since the last call. Returns whether one
    /// changed.
    #[inline]
    pub(crate) fn reindex(&mut self, log: &mut ChangeLog) -> bool {
        if self.is_indexed() {
            return false;
        }
        self.reindex_noted(log)
    }

    /// Whether writes wait to be logged.
    fn is_indexed(&self) -> bool {
        !self.all_touched && self.touched.is_empty()
    }

    fn reindex_noted(&mut self, log: &mut ChangeLog) -> bool {
        let mut changed = false;
        if self.all_touched {
            self.all_touched = false;
            self.touched.clear();
            for (ip, n) in self.map.iter_mut() {
                let published = neigh_published(n);
                if published != n.published {
                    n.published = published;
                    log.push(Change::Neigh(*ip));
                    changed = true;
                }
            }
            return changed;
        }
        for i in 0..self.touched.len() {
            let ip = self.touched[i];
            changed |= self.reindex_one(ip, log);
        }
        self.touched.clear();
        changed
    }

    /// Whether a timer may be due at `now`: something was written since the last scan,
    /// or the earliest timer it found has come.
    pub(crate) fn scan_due(&self, now: Nanos) -> bool {
        self.written || now >= self.scan_at
    }

    /// A scan ran: nothing is due before `scan_at` unless written again.
    pub(crate) fn scanned(&mut self, scan_at: Nanos) {
        self.written = false;
        self.scan_at = scan_at;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gid(i: u8) -> Gid {
        Gid::new(0xff12_401b_ffff_0000, u64::from(i))
    }

    #[test]
    fn change_log_replays_what_a_generation_lacks_and_knows_when_it_cannot() {
        let mut log = ChangeLog::new(1);
        log.push(Change::Group(gid(1)));
        log.set_next(2);
        log.push(Change::Neigh([10, 0, 0, 1].into()));
        log.push(Change::AllGroups);
        log.set_next(3);
        let since = |log: &ChangeLog, g| log.since(g).map(|c| c.collect::<Vec<_>>());
        assert_eq!(since(&log, 0).unwrap().len(), 3);
        assert_eq!(
            since(&log, 1).unwrap(),
            [Change::Neigh([10, 0, 0, 1].into()), Change::AllGroups]
        );
        assert!(since(&log, 2).unwrap().is_empty());
        log.trim(1);
        assert_eq!(log.len(), 2);
        // Overflow: the oldest entries go, and older snapshots must be rebuilt.
        for i in 0..CHANGES_MAX {
            log.push(Change::Group(gid(i as u8)));
        }
        assert_eq!(log.len(), CHANGES_MAX);
        assert!(log.since(1).is_none(), "generation 2 entries were dropped");
        assert_eq!(since(&log, 2).unwrap().len(), CHANGES_MAX);
    }
}
