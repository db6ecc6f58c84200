//! `ibpoll-simtest`: the deterministic whole-system simulator (DESIGN.md, testing tier 2).
//!
//! One or more real [`Controller`](ibpoll_ctrl::Controller)s, stand-in data cores and the
//! simulated fabric (`ibpoll-pmd-sim`) run on one thread in virtual time. A seed draws
//! the [`Knobs`] (how many hosts, which SA faults, how often ports flap ...) and every
//! random choice of the run, so a seed replays bit for bit: every draw comes from
//! [`SimRng`](ibpoll_pmd_sim::SimRng) (xoshiro256++ seeded by SplitMix64, outputs pinned
//! against the reference implementations, so a seed printed today replays with a later
//! build of any dependency), nothing reads the wall clock,
//! no thread runs, the controller iterates ordered maps only, and [`SeedResult::trace`]
//! hashes what happened so that two runs can be compared.
//!
//! A *step* ([`Sim::step`]) is the actions of one instant, then time moves forward, then
//! every controller polls until idle, data cores pass a quiescent point, receive queues
//! are drained, and [`Sim::check`] asserts, on every host:
//!
//! * b. no flush has run longer than its bound ([`Sim::flush_bound`]: one SA timeout to
//!   drain, `leave_tries` per round of leaves through the SA window, at most
//!   `flush_max`), whatever the SA did;
//! * c. the link is up only while the broadcast group is Joined, no other group is Joined
//!   without it, and (checked at the SA, in [`obs`]) no join of another group is sent
//!   while the SA does not hold the broadcast membership; no QP is attached to a group
//!   twice or detached from one it is not attached to;
//! * d. every packet handed to the control core is sent, dropped under a named counter,
//!   or still held in a bounded queue; every queue is within its bound;
//! * e. no data-core snapshot shows a group Joined that the SA does not hold, beyond the
//!   publication the controller had not made yet when the SA lost it behind its back;
//! * every change of the SA's memberships is explained by a request of that port or by a
//!   subnet-manager restart ([`obs::Obs`]);
//! * no packet is received by a QP whose P_Key does not match the sender's at the instant
//!   it was sent ([`partition`], checked on every receive);
//! * g. a membership the controller gave up (Leaving, an `Unconfirmed` obligation, Joined
//!   but unsubscribed or under a flush) is gone at the SA within [`Sim::leave_bound`],
//!   derived from `sa_timeout`, `leave_tries`, the SA window and the longest backoff,
//!   not counting the time the SA was unreachable for the host (some transaction of it
//!   failing by the fault schedule), unless the fault schedule says why otherwise
//!   (`leave_tries` of its requests for the group lost, refused by an injected error,
//!   unsendable or unanswered in time, or a flush abandoned at `flush_max`); a
//!   controller without leave retries fails it ([`Mutant`]).
//!
//! and at the end ([`Sim::finish`]: faults off, everything up, then a final interface
//! down with every answer delivered):
//!
//! * a. the SA holds no membership of any port, and every membership it granted was
//!   removed exactly once (per group and JoinState bit), by a leave or a restart;
//! * f. every buffer is back in its pool once the hosts are gone.
//!
//! Invariants are `assert!`s, on in release builds; [`run_seed`] catches the first one a
//! seed breaks so that one failing seed does not stop a run of many.

pub mod ctrlfuzz;
pub mod liveness;
pub mod obs;
pub mod partition;
mod random;
mod sim;
pub mod trace;

pub use random::{group, run_seed, run_seed_mutant, Knobs, Mutant, SeedResult};
pub use sim::{Host, Sim, SimConfig};
