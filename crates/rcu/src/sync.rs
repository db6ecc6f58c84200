//! The atomics this crate uses: `std`'s in normal builds, loom's under `--cfg loom` so that
//! `tests/loom.rs` model-checks the very code that ships.

#[cfg(loom)]
pub(crate) use loom::sync::{
    atomic::{fence, AtomicPtr, AtomicU64, Ordering},
    Arc,
};
#[cfg(not(loom))]
pub(crate) use std::sync::{
    atomic::{fence, AtomicPtr, AtomicU64, Ordering},
    Arc,
};
