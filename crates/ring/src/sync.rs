//! The atomics, the `Arc` and the slot cell this crate uses: `std`'s in normal builds,
//! loom's under `--cfg loom`, so that `tests/loom.rs` checks the orderings and every slot
//! access of the code that ships.

#[cfg(loom)]
pub(crate) use loom::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};
#[cfg(not(loom))]
pub(crate) use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

/// One slot's cell. Access goes through `with`/`with_mut` (loom's `UnsafeCell` API),
/// which under loom record each read and write so that one not ordered by happens-before
/// with another fails the model.
pub(crate) struct Slot<T> {
    #[cfg(loom)]
    cell: loom::cell::UnsafeCell<T>,
    #[cfg(not(loom))]
    cell: std::cell::UnsafeCell<T>,
}

impl<T> Slot<T> {
    pub(crate) fn new(value: T) -> Self {
        Slot {
            #[cfg(loom)]
            cell: loom::cell::UnsafeCell::new(value),
            #[cfg(not(loom))]
            cell: std::cell::UnsafeCell::new(value),
        }
    }

    /// Runs `f` with a pointer for reading the slot.
    #[inline]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        #[cfg(loom)]
        return self.cell.with(f);
        #[cfg(not(loom))]
        return f(self.cell.get());
    }

    /// Runs `f` with a pointer for writing the slot.
    #[inline]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        #[cfg(loom)]
        return self.cell.with_mut(f);
        #[cfg(not(loom))]
        return f(self.cell.get());
    }
}
