//! Test set-up shared by ibpoll's test suites and its simulator.
//!
//! - [`data`]: what a data core does, written once: the IPoIB UD QP an interface uses,
//!   numbered IPv4 packets, draining a receive queue (ARP to the control core), sending
//!   through the published snapshot.
//! - [`host`]: an IPoIB host running the real controller ([`CtlHost`]), and a simulated
//!   fabric in virtual time ([`Net`]) that drives such hosts step by step.
//! - `stack` (feature `stack`): test-sized stacks on the simulated fabric and the
//!   stack's counter conservation laws.
//! - [`alloc`]: a global allocator that counts the allocations of chosen threads, for
//!   tests that check a path allocates nothing.
//!
//! Set-up failures panic with what failed: these are test fixtures, not library code.

pub mod alloc;
pub mod data;
pub mod host;
#[cfg(feature = "stack")]
pub mod stack;

use std::sync::{Mutex, MutexGuard};

pub use data::{ipoib_qp, pool, IpoibQp};
pub use host::{run, run_until, CtlHost, Net};

/// Runs the tests of one test binary one at a time (they share a few CPUs, and their
/// lcores poll): hold the guard for the whole test.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
