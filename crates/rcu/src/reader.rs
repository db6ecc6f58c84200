//! The data core's side: read the current snapshot, report quiescent points. The fast path
//! is two plain loads and, once per publish, one store to the reader's own cache line: no
//! lock, no read-modify-write, no fence.

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;

use crate::domain::Domain;
use crate::sync::{Arc, Ordering};

/// A claimed slot. Dropping it takes the reader offline and frees the slot.
struct Registration<T> {
    domain: Arc<Domain<T>>,
    index: usize,
}

impl<T> Drop for Registration<T> {
    fn drop(&mut self) {
        self.domain.offline(self.index);
        self.domain.release_slot(self.index);
    }
}

/// An online reader: one per data core. `Send` (create it anywhere, move it to its lcore),
/// not `Sync`, not `Clone`.
///
/// Call [`quiescent`](Self::quiescent) once per poll-loop iteration, and
/// [`get`](Self::get) for the snapshot to use in between. A snapshot borrowed from `get`
/// cannot outlive the next `quiescent`, `offline` or drop: those take `&mut self` or
/// `self`, so the borrow checker ends every read-side critical section at the next
/// quiescent point, and a reader cannot hold a snapshot for its whole life.
///
/// A reader that stops calling `quiescent` while online holds back every snapshot
/// published after its last quiescent point; a core that blocks or idles goes
/// [`offline`](Self::offline) (or runs the blocking part in
/// [`offline_while`](Self::offline_while)).
///
/// Holding a snapshot across a quiescent point does not compile:
///
/// ```compile_fail,E0502
/// let (_publisher, registry) = ibpoll_rcu::new(1u32, 1).unwrap();
/// let mut reader = registry.register().unwrap();
/// let snapshot = reader.get();
/// reader.quiescent(); // error: `reader` is still borrowed by `snapshot`
/// assert_eq!(*snapshot, 1);
/// ```
pub struct Reader<T> {
    reg: Registration<T>,
    /// The value in our slot (mirrors it so that `quiescent` need not load it).
    token_seen: u64,
    /// `!Sync`: a slot announces one thread's quiescent points.
    _not_sync: PhantomData<Cell<()>>,
}

impl<T> Reader<T> {
    pub(crate) fn new(domain: Arc<Domain<T>>, index: usize) -> Self {
        let token_seen = domain.online(index);
        Reader {
            reg: Registration { domain, index },
            token_seen,
            _not_sync: PhantomData,
        }
    }

    /// The current snapshot. One `Acquire` load (a plain `mov` on x86_64). Two calls may
    /// return different snapshots if a publish came in between; use one per burst.
    #[inline]
    pub fn get(&self) -> &T {
        // Acquire: pairs with the Release swap in `Publisher::publish`: we see the
        // snapshot as it was built.
        let current = self.reg.domain.head.current.load(Ordering::Acquire);
        // SAFETY: `current` is non-null and came from `Box::into_raw`. We are online
        // (a `Reader` always is) and our slot holds a token t that we loaded before this
        // load of `current`, so `current` is the snapshot published at t or a later one,
        // which the publisher frees only once our slot is > t or OFFLINE. Our slot
        // changes only through `quiescent(&mut self)`, `offline(self)`,
        // `offline_while(&mut self)` and drop, all excluded while the returned borrow of
        // `self` lives. The domain itself lives as long as our `Arc`.
        unsafe { &*current }
    }

    /// A quiescent point: this core holds no snapshot from [`get`](Self::get) any more.
    /// One `Acquire` load of the token, and a `Release` store to our own slot only when
    /// the token changed since the last call (DPDK's `rte_rcu_qsbr_quiescent`).
    #[inline]
    pub fn quiescent(&mut self) {
        // Acquire: pairs with the Release store of `token` in `Publisher::publish`:
        // having seen token t, our next loads of `current` return the snapshot published
        // at t or later, which is what announcing t promises.
        let token = self.reg.domain.head.token.load(Ordering::Acquire);
        if token != self.token_seen {
            debug_assert!(token > self.token_seen, "token went backwards");
            self.token_seen = token;
            // Release: pairs with the Acquire loads of the slots in
            // `Publisher::reclaim`: our reads of older snapshots happen before any free
            // the publisher bases on this value.
            self.reg.domain.slots[self.reg.index].store(token, Ordering::Release);
        }
    }

    /// Goes offline: holds back no reclamation, and cannot read until
    /// [`OfflineReader::online`]. For a core that blocks or idles
    /// (`rte_rcu_qsbr_thread_offline`).
    pub fn offline(self) -> OfflineReader<T> {
        self.reg.domain.offline(self.reg.index);
        OfflineReader { reg: self.reg }
    }

    /// Runs `f` offline and comes back online afterwards, also when `f` panics. For a
    /// blocking call in the middle of a loop that keeps its `&mut Reader`.
    pub fn offline_while<R>(&mut self, f: impl FnOnce() -> R) -> R {
        /// Brings the reader back online when dropped, panics included. Private, so it
        /// cannot be leaked with the reader left offline but usable.
        struct Online<'a, T>(&'a mut Reader<T>);
        impl<T> Drop for Online<'_, T> {
            fn drop(&mut self) {
                let reader = &mut *self.0;
                reader.token_seen = reader.reg.domain.online(reader.reg.index);
            }
        }

        self.reg.domain.offline(self.reg.index);
        let _online = Online(self);
        f()
    }

    /// The token our slot announces: the last one seen at a quiescent point.
    pub fn token(&self) -> u64 {
        self.token_seen
    }

    /// Our slot in the domain, `0..readers_max`.
    pub fn slot(&self) -> usize {
        self.reg.index
    }
}

impl<T> fmt::Debug for Reader<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reader")
            .field("slot", &self.reg.index)
            .field("token", &self.token_seen)
            .finish_non_exhaustive()
    }
}

/// A reader that is offline: it keeps its slot but holds nothing back and cannot read.
/// [`online`](Self::online) turns it back into a [`Reader`].
pub struct OfflineReader<T> {
    reg: Registration<T>,
}

impl<T> OfflineReader<T> {
    /// Comes back online: sees the current snapshot from now on and holds back
    /// reclamation again (`rte_rcu_qsbr_thread_online`). One store and a full fence.
    pub fn online(self) -> Reader<T> {
        let token_seen = self.reg.domain.online(self.reg.index);
        Reader {
            reg: self.reg,
            token_seen,
            _not_sync: PhantomData,
        }
    }

    /// Our slot in the domain.
    pub fn slot(&self) -> usize {
        self.reg.index
    }
}

impl<T> fmt::Debug for OfflineReader<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OfflineReader")
            .field("slot", &self.reg.index)
            .finish_non_exhaustive()
    }
}
