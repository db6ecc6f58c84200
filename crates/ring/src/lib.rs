//! `ibpoll-ring`: a bounded, lock-free, single-producer single-consumer ring (DPDK's
//! `rte_ring` in SP/SC mode, with the producer's cached view of the consumer index).
//!
//! Two ways to hold one:
//!
//! - [`channel`] splits a ring into a [`Producer`] and a [`Consumer`], each owned by one
//!   thread at a time (`&mut self` on every operation): the safe API, for rings whose two
//!   ends are fixed (a receiving lcore handing packets to a worker, a control ring).
//! - [`SpscRing`] is the ring itself, shared (`Arc`) between whoever plays the producer
//!   and the consumer, with `unsafe` operations whose contract is the role: for a driver
//!   whose producer is "whoever holds a lock" (the simulated fabric's switch), or whose
//!   consumer passes from an lcore to the control path while the lcore is parked (a
//!   P_Key move takes back a parked receive queue's buffers).
//!
//! The producer publishes a batch with one Release store of `tail` (a plain store on
//! x86) and reads the consumer's `head` only when its cached copy says the ring has no
//! room; the consumer takes a batch with one Acquire load of `tail` and one Release store
//! of `head`. No read-modify-write on either side, producer and consumer indices on
//! cache lines of their own.
//!
//! `tests/loom.rs` model-checks this code under `RUSTFLAGS="--cfg loom"`: the atomics
//! and the slot cells are loom's then, so a slot read before it was published, or
//! refilled while the consumer may still read it, fails the model.

mod halves;
mod spsc;
mod sync;

pub use halves::{channel, Consumer, Producer};
pub use spsc::SpscRing;
