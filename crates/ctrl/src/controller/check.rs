//! For tests: the published snapshot against one built afresh from the state.

use std::sync::Arc;

use super::Controller;
use crate::snapshot::{McastEntry, Snapshot};

impl Controller {
    /// For tests: the group table's indexes match its entries, and the published
    /// snapshot equals one built from scratch from the current state: same groups and
    /// neighbours (the very same entries), same link state, MTU and broadcast group.
    /// `Err` names the first difference. The snapshot is compared only when nothing
    /// waits to be published (after a poll whose publish went through).
    #[doc(hidden)]
    pub fn check_snapshot(&mut self) -> Result<(), String> {
        self.reindex();
        self.groups.check()?;
        if self.dirty {
            return Ok(());
        }
        let mut fresh = Snapshot::default();
        self.refresh(&mut fresh);
        let snap = self.publisher.current();
        if snap.generation != self.generation {
            return Err(format!(
                "published generation {} but {} was built",
                snap.generation, self.generation
            ));
        }
        if (snap.link_up, snap.mtu, snap.pkey, snap.scope)
            != (fresh.link_up, fresh.mtu, fresh.pkey, fresh.scope)
        {
            return Err(format!(
                "scalars differ: published {snap:?}, fresh {fresh:?}"
            ));
        }
        let same = |a: &Option<Arc<McastEntry>>, b: &Option<Arc<McastEntry>>| match (a, b) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if !same(&snap.broadcast, &fresh.broadcast) {
            return Err(String::from("broadcast entry differs"));
        }
        for (what, a, b) in [
            ("published", &snap.groups, &fresh.groups),
            ("fresh", &fresh.groups, &snap.groups),
        ] {
            for (mgid, e) in a {
                if !b.get(mgid).is_some_and(|f| Arc::ptr_eq(e, f)) {
                    return Err(format!("group {mgid}: {what} has an entry the other lacks"));
                }
            }
        }
        for (what, a, b) in [
            ("published", &snap.neighbours, &fresh.neighbours),
            ("fresh", &fresh.neighbours, &snap.neighbours),
        ] {
            for (ip, e) in a {
                if !b.get(ip).is_some_and(|f| Arc::ptr_eq(e, f)) {
                    return Err(format!(
                        "neighbour {ip:?}: {what} has an entry the other lacks"
                    ));
                }
            }
        }
        Ok(())
    }
}
