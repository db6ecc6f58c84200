//! Address-handle lifetime through send completions.
//!
//! A data core takes an address handle from a snapshot and posts sends naming it; a verbs
//! HCA reads the handle when it processes the send, which may be after `tx_burst`
//! returned (rdma-core: "the address handle must remain valid until a work completion
//! for this request has been retrieved"). So a handle dies in two steps:
//!
//! 1. Its [`AhGuard`] is dropped when the last snapshot and table naming it are gone: the
//!    snapshot protocol's grace period has passed, so no data core can *post* with it
//!    any more (a lane with packets still queued in a TX table does not report a
//!    quiescent point, so those count as held).
//! 2. The drop only *retires* it: the reaper notes, per data core, how many sends that
//!    core has posted by now ([`TxProgress`], published once per loop iteration), and
//!    destroys the handle once every data core's send queue has *completed* that many.
//!    Completions are in posting order, so every send that could name the handle has
//!    completed by then.
//!
//! The control core's own sends hold their guard until their own completion.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam::utils::CachePadded;
use ibpoll_dev::{AddressHandle, Counter, Port};

/// One data core's send progress on one interface: sends posted and completed on its send
/// queue, published by the data core once per loop iteration.
#[derive(Debug, Default)]
pub struct TxProgress {
    posted: CachePadded<AtomicU64>,
    completed: CachePadded<AtomicU64>,
}

impl TxProgress {
    /// Publishes the counts (only the data core that owns the send queue calls this).
    #[inline]
    pub fn publish(&self, posted: u64, completed: u64) {
        // Release: pairs with the Acquire loads in `AhReaper::retire` and `reap`. The
        // posted count is stored before the data core's next quiescent point, so a
        // handle retired after the grace period sees every post that could name it.
        self.posted.store(posted, Ordering::Release);
        self.completed.store(completed, Ordering::Release);
    }

    /// Sends posted so far, as last published.
    pub fn posted(&self) -> u64 {
        // Acquire: pairs with the Release store in `publish`.
        self.posted.load(Ordering::Acquire)
    }

    /// Sends completed so far, as last published.
    pub fn completed(&self) -> u64 {
        // Acquire: pairs with the Release store in `publish`.
        self.completed.load(Ordering::Acquire)
    }
}

/// A retired handle and, per data core, the completion count it waits for.
struct Retired {
    ah: AddressHandle,
    targets: Box<[u64]>,
}

/// Destroys retired address handles once the sends that could name them completed.
pub(crate) struct AhReaper {
    port: Arc<dyn Port>,
    progress: Vec<Arc<TxProgress>>,
    retired: Mutex<VecDeque<Retired>>,
    destroyed: Arc<Counter>,
}

impl fmt::Debug for AhReaper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AhReaper")
            .field("retired", &self.lock().len())
            .field("destroyed", &self.destroyed.get())
            .finish()
    }
}

impl AhReaper {
    pub(crate) fn new(
        port: Arc<dyn Port>,
        progress: Vec<Arc<TxProgress>>,
        destroyed: Arc<Counter>,
    ) -> AhReaper {
        AhReaper {
            port,
            progress,
            retired: Mutex::new(VecDeque::new()),
            destroyed,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Retired>> {
        // The queue is consistent at every unlock: a panic elsewhere does not matter.
        self.retired.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `ah` can no longer be posted by anyone: destroy it once what was posted completed.
    pub(crate) fn retire(&self, ah: AddressHandle) {
        let targets: Box<[u64]> = self.progress.iter().map(|p| p.posted()).collect();
        let mut q = self.lock();
        q.push_back(Retired { ah, targets });
        drop(q);
        self.reap();
    }

    /// Destroys the retired handles whose sends all completed (oldest first); returns
    /// how many are still waiting.
    pub(crate) fn reap(&self) -> usize {
        let mut q = self.lock();
        while let Some(r) = q.front() {
            let done = self
                .progress
                .iter()
                .zip(r.targets.iter())
                .all(|(p, &t)| p.completed() >= t);
            if !done {
                break;
            }
            let ah = r.ah;
            q.pop_front();
            self.destroy(ah);
        }
        q.len()
    }

    /// Handles waiting for completions.
    pub(crate) fn waiting(&self) -> usize {
        self.lock().len()
    }

    #[allow(unsafe_code)] // calling `destroy_ah`, whose precondition is argued below
    fn destroy(&self, ah: AddressHandle) {
        // SAFETY: `ah` was retired after the last snapshot naming it was freed (no data
        // core can post it again) and every data core's send queue completed the sends
        // it had posted by then (completions are in order), so no posted or future send
        // names it.
        if unsafe { self.port.destroy_ah(ah) }.is_ok() {
            self.destroyed.add_shared(1);
        }
    }
}

impl Drop for AhReaper {
    fn drop(&mut self) {
        // The last guard and the controller are gone: the data cores stopped with the
        // stack (their queues drained), so what waits can go.
        let left: Vec<AddressHandle> = self.lock().drain(..).map(|r| r.ah).collect();
        for ah in left {
            self.destroy(ah);
        }
    }
}

/// Owns an address handle: retires it (see the module docs) when the last snapshot,
/// table or queued control-core send naming it goes.
pub struct AhGuard {
    ah: AddressHandle,
    reaper: Arc<AhReaper>,
}

impl AhGuard {
    pub(crate) fn new(reaper: Arc<AhReaper>, ah: AddressHandle) -> Self {
        AhGuard { ah, reaper }
    }

    /// The handle.
    pub fn ah(&self) -> AddressHandle {
        self.ah
    }
}

impl Drop for AhGuard {
    fn drop(&mut self) {
        // Runs on the control core (the rcu publisher frees snapshots on its thread), or
        // on the last reader's thread if the controller is gone first.
        self.reaper.retire(self.ah);
    }
}

impl fmt::Debug for AhGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AhGuard({:#x})", self.ah.raw())
    }
}
