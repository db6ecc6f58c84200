//! For tests: the controller's derived state (the group indexes, the published
//! snapshot) against what a fresh derivation from its tables gives.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

use super::Controller;
use crate::snapshot::{McastEntry, Snapshot};
use crate::{SnapshotMismatch, SnapshotSide};

impl Controller {
    /// For tests: the group table's indexes match its entries, and the published
    /// snapshot equals one built from scratch from the current state: same groups and
    /// neighbours (the very same entries), same link state, MTU and broadcast group.
    /// `Err` names the first difference. The snapshot is compared only when nothing
    /// waits to be published (after a poll whose publish went through).
    #[doc(hidden)]
    pub fn check_snapshot(&mut self) -> Result<(), SnapshotMismatch> {
        self.reindex();
        self.groups.check()?;
        if self.dirty {
            return Ok(());
        }
        let mut fresh = Snapshot::new(
            self.cfg.pkey,
            self.cfg.scope,
            self.map,
            self.nh.used.clone(),
        );
        self.refresh(&mut fresh);
        let snap = self.publisher.current();
        if !snap.nh_consistent() {
            return Err(SnapshotMismatch::NextHops);
        }
        if snap.generation != self.generation {
            return Err(SnapshotMismatch::Generation {
                published: snap.generation,
                built: self.generation,
            });
        }
        compare_snapshots(snap, &fresh)
    }
}

/// The first difference between a published snapshot and a fresh one, generations
/// aside. Entries compare by identity: the same `Arc`, not equal contents.
fn compare_snapshots(snap: &Snapshot, fresh: &Snapshot) -> Result<(), SnapshotMismatch> {
    let scalars = [
        ("link_up", u64::from(snap.link_up), u64::from(fresh.link_up)),
        ("mtu", snap.mtu as u64, fresh.mtu as u64),
        ("pkey", u64::from(snap.pkey.0), u64::from(fresh.pkey.0)),
        (
            "scope",
            u64::from(snap.scope.get()),
            u64::from(fresh.scope.get()),
        ),
    ];
    if let Some(&(field, published, fresh)) = scalars.iter().find(|(_, a, b)| a != b) {
        return Err(SnapshotMismatch::Scalar {
            field,
            published,
            fresh,
        });
    }
    let same = |a: &Option<Arc<McastEntry>>, b: &Option<Arc<McastEntry>>| match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    };
    if !same(&snap.broadcast, &fresh.broadcast) {
        return Err(SnapshotMismatch::Broadcast);
    }
    if let Some((mgid, side)) = first_unshared(&snap.groups, &fresh.groups) {
        return Err(SnapshotMismatch::Group { mgid, side });
    }
    if let Some((ip, side)) = first_unshared(&snap.neighbours, &fresh.neighbours) {
        return Err(SnapshotMismatch::Neighbour {
            ip: ip.into(),
            side,
        });
    }
    if let Some((ip, side)) = first_unshared(&snap.neighbours6, &fresh.neighbours6) {
        return Err(SnapshotMismatch::Neighbour {
            ip: ip.into(),
            side,
        });
    }
    Ok(())
}

/// A key whose entry one map has and the other lacks (or holds another entry for), and
/// the side that has it; the published side is searched first.
fn first_unshared<K, V, S>(
    published: &HashMap<K, Arc<V>, S>,
    fresh: &HashMap<K, Arc<V>, S>,
) -> Option<(K, SnapshotSide)>
where
    K: Hash + Eq + Copy,
    S: BuildHasher,
{
    let unshared = |a: &HashMap<K, Arc<V>, S>, b: &HashMap<K, Arc<V>, S>| {
        a.iter()
            .find(|(k, e)| !b.get(*k).is_some_and(|f| Arc::ptr_eq(e, f)))
            .map(|(k, _)| *k)
    };
    unshared(published, fresh)
        .map(|k| (k, SnapshotSide::Published))
        .or_else(|| unshared(fresh, published).map(|k| (k, SnapshotSide::Fresh)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mgid::McastMap;

    #[test]
    fn entries_compare_by_identity_published_side_first() {
        let (a, b) = (Arc::new(7u32), Arc::new(7u32));
        let mut published: HashMap<u8, Arc<u32>> = HashMap::new();
        let mut fresh: HashMap<u8, Arc<u32>> = HashMap::new();
        published.insert(1, a.clone());
        fresh.insert(1, a.clone());
        assert_eq!(first_unshared(&published, &fresh), None);
        fresh.insert(2, a.clone());
        assert_eq!(
            first_unshared(&published, &fresh),
            Some((2, SnapshotSide::Fresh))
        );
        // Equal contents in another Arc is another entry.
        published.insert(2, b);
        assert_eq!(
            first_unshared(&published, &fresh),
            Some((2, SnapshotSide::Published))
        );
    }

    #[test]
    fn the_first_differing_scalar_is_named() {
        let used: Arc<[std::sync::atomic::AtomicBool]> = Arc::new([]);
        let snap = Snapshot::new(
            Default::default(),
            Default::default(),
            McastMap::RoceV2,
            used.clone(),
        );
        let mut fresh = Snapshot::new(
            Default::default(),
            Default::default(),
            McastMap::RoceV2,
            used,
        );
        assert_eq!(compare_snapshots(&snap, &fresh), Ok(()));
        fresh.mtu = 2044;
        fresh.link_up = true;
        let err = compare_snapshots(&snap, &fresh).unwrap_err();
        assert_eq!(
            err,
            SnapshotMismatch::Scalar {
                field: "link_up",
                published: 0,
                fresh: 1
            }
        );
        assert_eq!(
            err.to_string(),
            "snapshot field link_up: published 0, fresh 1"
        );
    }
}
