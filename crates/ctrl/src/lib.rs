//! `ibpoll-ctrl`: the control plane of an ibpoll IPoIB interface.
//!
//! One control core owns every piece of mutable control state: the multicast groups and
//! their join state machine, the SA client, ARP and the neighbour table, and the flush
//! that port events and interface up/down start. Everything else talks to it through
//! bounded single-producer rings (one per data core, [`RequestSender`]) and reads what it
//! publishes: an immutable [`Snapshot`] swapped in through `ibpoll-rcu`.
//!
//! The [`Controller`] is a pollable state machine: [`Controller::poll`] never blocks, does
//! a bounded amount of work, says [`Poll::Busy`] or [`Poll::Idle`], and reads the time only
//! from the [`Clock`](ibpoll_dev::Clock) it was given, so tests run it in virtual time.
//!
//! ```text
//!  data core 0..N                         control core
//!  ┌──────────────┐  Request (bounded)  ┌──────────────────────────────────────┐
//!  │ reader.get() │ ──────────────────► │ Controller::poll()                   │
//!  │ per burst    │                     │  port events -> flush                │
//!  │ tx_burst     │ ◄── Snapshot (rcu)─ │  SA answers/timeouts (QP1) -> groups │
//!  └──────────────┘                     │  requests -> queues, joins, ARP      │
//!                                       │  sends queued packets (its TxQueue)  │
//!                                       └──────────────────────────────────────┘
//! ```
//!
//! # Multicast groups
//!
//! Each group is a [`GroupState`] enum (see [`mcast`]): `Idle { backoff, retry_at }`,
//! `Joining { tid, deadline }`, `Joined { membership, entry }`,
//! `Leaving { tid, deadline, tries }`. The [`Membership`] token is neither `Clone` nor
//! `Copy` and is only made from a TID-matched, successful SA join answer; leaving consumes
//! it. The rules of DESIGN.md, each a test in `tests/rules.rs`:
//!
//! 1. The broadcast group (mask MGID|PortGID|P_Key|JoinState, FullMember) is joined first;
//!    no other join goes out before it is Joined and the link is reported up only then.
//!    Other joins copy Q_Key, MTU (selector exactly), TClass, rate (selector exactly),
//!    SL, FlowLabel and HopLimit from the broadcast group's record.
//! 2. Joins go out only while the port is Active, the interface is up, the P_Key is in
//!    the port's table and no flush runs.
//! 3. Failed joins back off 2, 4, 8, 16, 16 ... s, reset on success; a send-only group
//!    that failed twice drops its queue (counted) and waits for the next packet.
//! 4. The data path never joins: a packet for a group that is not Joined becomes a
//!    [`Request::Mcast`]; the control core queues up to 64 per group (more are counted
//!    drops), joins SendOnlyFullMember, and sends the queue once Joined.
//! 5. A flush first waits for every join and path query in flight to be answered or to
//!    time out, then leaves every Joined group exactly once (the token is consumed) and
//!    every group whose join timed out ("the SA may hold it", see [`mcast`]), and ends
//!    within `flush_max` whatever the SA does. After a flush that could reach the SA, it
//!    holds no membership of this port.
//! 6. Every SA transaction has a deadline (`sa_timeout`); leaves are tried 3 times. At
//!    most `sa_window` (64) transactions are in flight, so a fabric-wide reregister does
//!    not storm the SA; late, duplicate, unknown and malformed answers are counted and
//!    ignored.
//! 7. Send-only groups unused for `sendonly_idle` are left and removed. Data cores mark
//!    use with [`McastEntry::mark_used`] (a relaxed load, rarely a store).
//! 8. Flush levels: ClientReregister/SmChange light (leave and rejoin everything, the
//!    link stays up, paths are revalidated); port Error/Active/LidChange and interface
//!    down normal (link down, leave everything, drop neighbours, rejoin when allowed);
//!    PkeyChange heavy (as normal, then the P_Key index is re-read and
//!    [`CtrlEvent::RebuildQp`] asks the stack, which owns the QP, to move it to that
//!    index in place with `Port::set_qp_pkey_index`, as the kernel does). While any
//!    flush runs the snapshot publishes no multicast group (the SA may already have lost
//!    it, and its MLID with it); packets for groups are queued on the control core
//!    meanwhile, and a light flush keeps send-only groups that queued packets.
//! 9. Everything is bounded: groups (`groups_max`), queues (64 per group, 3 per
//!    neighbour), neighbours, rings, the send backlog, the SA window. A flood costs
//!    counters ([`CtrlStats`]), not memory.
//!
//! # Why the kernel's multicast races cannot happen here
//!
//! The seed (`IB/ipoib: fix MCAST_FLAG_BUSY usage`) describes two races between
//! `ib_sa_join_multicast`, its completion callback and `ipoib_mcast_dev_flush`, all on
//! different threads, sharing `mcast->mc` and flag bits:
//!
//! * **Race 1: the flush skips the leave of a join that succeeded.** The callback ran
//!   and completed `mcast->done`; the flush, waiting on it, saw `mcast->mc` not yet set
//!   (the joining thread had not returned from `ib_sa_join_multicast`), skipped the leave,
//!   and then `mcast->mc` was set: a permanent, unbalanced membership. Here there is no
//!   second thread and no "pointer set after the callback": the join answer is a MAD read
//!   by [`Controller::poll`] itself, and applying it (`Joining -> Joined`, making the
//!   [`Membership`]) is one step of that same poll. A flush is also a step of `poll`. So
//!   the flush sees a group either `Joining` (it waits: rule 5 drains joins before
//!   leaving) or `Joined` with its token (it leaves it), never in between. And a join
//!   whose answer never came is not forgotten either: it leaves an `Unconfirmed` token
//!   that the flush turns into a leave.
//!
//! * **Race 2: the flush leaves an invalid membership and hangs.** The callback failed
//!   the join (making `mcast->mc` an error pointer) after the flush had decided to leave
//!   it, and `ib_sa_multicast_leave` ran on the invalid handle. Here a leave can only be
//!   built by *consuming* a `Membership` (or an `Unconfirmed` from a timeout), which only
//!   a successful answer creates; a failed join leaves the group `Idle` without a
//!   `Membership`, and there is nothing to leave. `Leaving` owns the consumed token, so a
//!   second leave of the same join cannot be written, and every leave has a deadline and
//!   three tries, so nothing waits forever.
//!
//! Neither needs a lock: there is no shared mutable state to lock. The data cores only
//! read snapshots and push requests into rings.
//!
//! # Publication and polling cost
//!
//! A poll publishes a snapshot only when something it shows changed, and builds none in
//! steady state: the rcu publisher hands back snapshots no data core holds any more, and
//! the controller rewrites one in place with what changed since its generation (a log of
//! changed MGIDs and neighbours, see `table`), rebuilding its tables whole only when a
//! flush starts or ends or the log no longer reaches back that far.
//!
//! The group and neighbour tables note every write; indexes derived from the states
//! (groups due to join, to leave, to be left by a flush, send-only groups, the earliest
//! neighbour timer) tell each poll what is due, so a poll with nothing due reads no
//! entry and allocates nothing, and a rejoin storm sends the joins that fit the window
//! without rescanning the table.
//!
//! # Address handles
//!
//! An address handle lives in an `Arc<AhGuard>` shared by the controller's tables, the
//! snapshots that name it and the control core's send backlog; its `Drop` destroys it.
//! Snapshots are freed by the rcu publisher only after every data core passed a
//! quiescent point, so a handle is destroyed only after no data core can use it. The
//! `Arc` counts change only on the control core (building and freeing snapshots), never
//! per packet.

#![deny(unsafe_code)]

mod config;
mod controller;
mod error;
mod link;
pub mod mcast;
mod mgid;
mod neigh;
mod nh;
mod owner;
mod reaper;
mod ring;
mod snapshot;
mod stats;
mod table;

pub use config::CtrlConfig;
pub use controller::{Controller, CtrlEvent, CtrlQps, FlushLevel, Poll};
pub use error::{Error, SnapshotMismatch, SnapshotSide};
pub use link::JoinGranted;
pub use mcast::{Backoff, GroupKind, GroupPhase, GroupState, Membership, RetryAt};
pub use mgid::{ipv4_mapped_gid, ipv4_of_mapped, McastMap, ROCE_BROADCAST_GROUP};
pub use nh::NhId;
pub use owner::{default_owner_lock_dir, owner_lock_path, PortClaim};
pub use reaper::{AhGuard, TxProgress};
pub use ring::{DataCore, GroupAddr, Request, RequestSender};
pub use snapshot::{McastEntry, Neighbour, Snapshot};
pub use stats::CtrlStats;
