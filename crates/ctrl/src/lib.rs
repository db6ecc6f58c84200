//! `ibpoll-ctrl`: the control plane of an ibpoll IPoIB interface.
//!
//! One control core owns every piece of mutable control state: the multicast groups and
//! their join state machine, the link layer (the SA client on InfiniBand, local joins on
//! RoCE, see [Link layers](#link-layers)), ARP, IPv6 neighbour discovery (`nd`: the
//! all-nodes and solicited-node groups, solicitations and advertisements with the
//! 20-byte IPoIB link-layer address option) and the neighbour table, and the flush
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
//!                                       │  sends queued packets (its own QP)   │
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
//!    the port's table, no flush runs and the startup cleanup (below) is over.
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
//!    use with [`Snapshot::mark_used`] (a relaxed load, rarely a store).
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
//! # Link layers
//!
//! What differs between InfiniBand and RoCE is a strategy the controller picks once,
//! from `PortAttr::link_layer` (the `link` module's `LinkLayerOps`): how a group is
//! joined and left, how a path is resolved, how groups are named ([`McastMap`]), and
//! whether there is an SA to clean up. The multicast state machine, the rules above,
//! the flush, ARP, the neighbour table and the snapshots are the same code for both.
//!
//! * **InfiniBand**: joins (MCMemberRecord Set), leaves (Delete), paths (PathRecord
//!   Get) and the startup listing (GetTable) are SA transactions over the port's MAD
//!   channel; groups are IPoIB MGIDs (`ff12:401b:PPPP::...`).
//! * **RoCE v2**: there is no SA. A join is local: the record is made from the port
//!   (Q_Key 0x0B1B, the port's active MTU and rate, hop limit 64, MLID 0, the other
//!   groups copying the broadcast group's parameters as on InfiniBand), and the attach
//!   that follows is the whole join (the HCA driver joins the mapped IP multicast group
//!   on its netdev, as the kernel's `cma_iboe_join_multicast` relies on). A leave is the
//!   detach. Paths are computed: a GRH to the neighbour's GID, which its ARP hardware
//!   address carries, from the GID-table index of our interface address's IPv4-mapped
//!   GID (`::ffff:a.b.c.d`); every packet has a GRH, LIDs are 0. The interface's GID
//!   (in its hardware address) is that IPv4-mapped GID, so a RoCE interface needs an
//!   IPv4 address that its port's netdev has ([`Error::RoceNoGid`]). Groups are the
//!   IPv4-mapped addresses themselves (`::ffff:239.1.2.3`, what rdma_cm uses for an
//!   IPv4 group on a RoCE v2 port, `cma_iboe_set_mgid`). RoCE has no broadcast: the
//!   broadcast group of an ibpoll interface on RoCE is the all-hosts group 224.0.0.1
//!   (every IPv4 host is in it, it is never routed and needs no IGMP report), where ARP
//!   requests go. Memberships are the kernel's (IGMP, counted per netdev), so the port
//!   ownership below does not apply.
//!
//! # SA memberships belong to a port
//!
//! The SA keeps one membership per (port, group): two processes on one port that join
//! and leave a group independently break each other (the first leave ends the
//! membership, the switch stops forwarding the group to the port). The kernel solves it
//! for its own users with a per-port multiplexer (ib_sa's multicast module, under
//! rdma_cm and IPoIB). ibpoll does not join through it: rdma_cm's joins fix their own
//! record (JoinState, Q_Key, parameters) and deliver answers on its own thread, while
//! the rules above need every join parameter of IPoIB and the answers on the control
//! core. The design ibpoll takes instead: **one ibpoll control process per InfiniBand
//! port**, enforced, and a startup cleanup:
//!
//! * **Ownership** ([`PortClaim`]): with [`CtrlConfig::owner_lock_dir`] set (a stack on
//!   a real HCA sets [`default_owner_lock_dir`]), the controller takes an exclusive
//!   `flock` on `ibpoll-port-<GUID>.lock` before it opens the MAD channel, and writes
//!   its PID there. A second process is refused with [`Error::PortOwned`], which names
//!   the owner's PID and the lock file. The controllers of one process share the claim
//!   (one per partition; a partition claimed twice is refused). The kernel drops the
//!   lock with the process, `kill -9` included. Other processes that need the port's
//!   multicast go through the owner (it is the port's IPoIB interface), and the
//!   kernel's IPoIB interface of the same partition on that port must be down: the
//!   kernel multiplexes its own users only.
//! * **Startup cleanup** ([`CtrlConfig::sa_cleanup`], on by default): memberships
//!   outlive a killed process. Before its first join the controller lists the port's
//!   memberships in its partition (MCMemberRecord GetTable, component mask PortGID |
//!   P_Key) and, since the owner lock makes it the only one of its partition on the
//!   port, hands every group listed to the state machine as an `Unconfirmed`
//!   obligation, which leaves it bit by bit like a join whose answer was lost (see
//!   `controller::cleanup`). No join goes out meanwhile, at most for `cleanup_max` of
//!   usable time; the cleanup is counted (`cleanup_runs`, `cleanup_found`,
//!   `cleanup_failed`) and logged. Without RMPP one SA answer holds three records, so
//!   rounds repeat until a listing shows nothing new; once `cleanup_max` passed and the
//!   interface joined, a cleanup still running is best effort (its own memberships may
//!   hide stale ones that sort after them). Groups listed with JoinState bits ibpoll
//!   never joins with are left alone and counted.
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
//! # Queue pairs and next hops
//!
//! The controller knows the interface's QPs ([`CtrlQps`]): one per lane (data core),
//! lane 0's being the interface's own (its QPN is in the hardware address, unicast and
//! the broadcast group arrive there), and a send-only QP of its own for what it sends
//! (ARP, queued packets). It attaches every other multicast group it joins to one lane's
//! QP ([`Controller::lane_qpn_for`]), so received multicast spreads over the lanes in
//! hardware, and sets the broadcast group's Q_Key on every QP.
//!
//! Every published group and neighbour owns a slot of the snapshot's flat next-hop array
//! ([`NhId`]): a data core resolves a destination to an id once and reads the address
//! handle, QPN and Q_Key to send with ([`ibpoll_dev::TxDst`]) with one indexed load.
//!
//! # Address handles
//!
//! An address handle lives in an `Arc<AhGuard>` shared by the controller's tables, the
//! snapshots that name it and the control core's sends until they completed. When the
//! last one goes, the handle is retired, not destroyed: a verbs HCA reads it when it
//! processes a send, which may be after `tx_burst` returned. The reaper notes how many
//! sends each data core has posted by then ([`TxProgress`], published once per loop
//! iteration; a data core holding packets in a TX table does not pass a quiescent
//! point, so those count as held) and destroys the handle once each data core's send
//! queue completed that many (completions are in order). The `Arc` counts change only on
//! the control core, never per packet. `tests/ah_lifetime.rs` checks it step by step
//! under the `ibpoll-devtest` back-pressure wrapper, and `ibpoll-simtest` draws that
//! wrapper.

#![deny(unsafe_code)]

mod config;
mod controller;
mod error;
mod link;
pub mod mcast;
mod mgid;
mod nd;
mod neigh;
mod nh;
mod owner;
mod reaper;
mod ring;
mod snapshot;
mod stats;
mod subs;
mod table;

pub use config::CtrlConfig;
pub use controller::{
    Controller, CtrlEvent, CtrlQps, FlushLevel, GroupInfo, NeighInfo, NeighPhase, PathInfo, Poll,
};
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
pub use subs::{JoinStatus, RequestDrops, SubBoard, SubSlot, SUB_SLOTS};
