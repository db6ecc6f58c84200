//! The link layer under an interface, as a strategy of the controller: what joining and
//! leaving a group, resolving a path and naming groups mean on InfiniBand and on RoCE.
//! The multicast state machine, the flush, ARP, the neighbour table and the snapshot
//! are the same for both; the controller picks the strategy once, from
//! `PortAttr::link_layer`, and never branches on the link layer itself.
//!
//! | | InfiniBand ([`ib::IbLink`]) | RoCE v2 ([`roce::RoceLink`]) |
//! |---|---|---|
//! | join | SA MCMemberRecord Set; the answer is the record | local: the record is synthesized (Q_Key 0x0B1B, MTU and rate from the port, MLID 0, hop limit 64); the attach that follows is the whole join (the HCA driver joins the mapped IP group) |
//! | leave | SA MCMemberRecord Delete | local (the detach before it is the leave) |
//! | path | SA PathRecord Get -> DLID, SL, rate | computed: GRH to the neighbour's GID (its ARP hardware address), SGID index of the interface address's IPv4-mapped GID |
//! | groups | IPoIB MGIDs (`ff12:401b:PPPP::...`) | IPv4-mapped GIDs (`::ffff:239.1.2.3`), broadcast = 224.0.0.1 |
//! | port GID | GID index 0 | the IPv4-mapped GID of the interface address |
//! | startup cleanup | SA GetTable of this port's memberships, leaves | nothing to clean (no SA) |
//!
//! Every operation is a transaction ([`txn::Txns`]): it starts, and ends with exactly
//! one [`LinkEvent`] (an answer, or a timeout), which `Controller::poll` applies. On
//! RoCE the answer is made at once and delivered by the next poll, so the state machine
//! cannot tell a local join from one the SA granted.

pub(crate) mod ib;
pub(crate) mod roce;
pub(crate) mod sa;
pub(crate) mod txn;

use std::fmt;
use std::net::IpAddr;

use ibpoll_dev::{AhAttr, LinkLayer, Nanos, PortAttr};
use ibpoll_wire::mad::Status;
use ibpoll_wire::mcmember::{self, JoinState};
use ibpoll_wire::{Gid, PKey};

use crate::mcast::GroupKind;
use crate::mgid::McastMap;
use crate::CtrlStats;

pub(crate) use txn::{Tid, Txns};

/// What a transaction is for; the controller finds its object by this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TxnKind {
    /// Joining a group.
    Join(Gid),
    /// Leaving a group the controller holds.
    Leave(Gid),
    /// The path to a neighbour (by IP address).
    Path(IpAddr),
    /// Listing this port's memberships (startup cleanup).
    Memberships,
}

/// A join the link layer granted: the only way to make a
/// [`Membership`](crate::mcast::Membership). Its fields are private to this module, so
/// nothing but a successful, TID-matched join answer (or, on RoCE, the local join) can
/// produce one.
#[derive(Debug)]
pub struct JoinGranted {
    pub(crate) record: mcmember::Repr,
    pub(crate) join_state: JoinState,
}

/// MGIDs of one membership listing (one MAD holds at most 3 MCMemberRecords).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct MgidList {
    mgids: [Gid; MGIDS_PER_LIST],
    len: u8,
}

/// Records one SA answer can hold: 200 data bytes / 56-byte MCMemberRecords.
pub(crate) const MGIDS_PER_LIST: usize = 3;

impl MgidList {
    /// Adds `mgid`; false when full.
    pub(crate) fn push(&mut self, mgid: Gid) -> bool {
        let Some(slot) = self.mgids.get_mut(usize::from(self.len)) else {
            return false;
        };
        *slot = mgid;
        self.len += 1;
        true
    }

    /// The MGIDs listed.
    pub(crate) fn as_slice(&self) -> &[Gid] {
        &self.mgids[..usize::from(self.len)]
    }
}

/// What the link layer tells the controller: one event per transaction.
#[derive(Debug)]
pub(crate) enum LinkEvent {
    /// A join granted.
    Joined {
        tid: Tid,
        mgid: Gid,
        granted: JoinGranted,
    },
    /// A join refused (nothing was joined).
    JoinRefused { tid: Tid, mgid: Gid, status: Status },
    /// A leave done, or refused with ERR_REQ_INVALID (the port holds no such
    /// membership): either way nothing is held for those bits now.
    Left { tid: Tid, mgid: Gid },
    /// A leave refused with any other status: the membership may still be held; it is
    /// tried again like a lost one.
    LeaveRefused { tid: Tid, mgid: Gid, status: Status },
    /// A path resolved: the address handle to make.
    Path { tid: Tid, ip: IpAddr, ah: AhAttr },
    /// A path not resolved.
    PathRefused { tid: Tid, ip: IpAddr },
    /// This port's memberships in the interface's partition (the first ones, in MGID
    /// order: the SA answers with one MAD).
    Memberships { tid: Tid, found: MgidList },
    /// The listing refused (an error status other than "no records").
    ListRefused { tid: Tid, status: Status },
    /// A transaction reached its deadline.
    Timeout {
        tid: Tid,
        kind: TxnKind,
        join_state: JoinState,
    },
}

/// A join to start.
#[derive(Debug, Clone, Copy)]
pub(crate) struct JoinRequest<'a> {
    /// The group.
    pub(crate) mgid: Gid,
    /// Why this port is in it (the JoinState to ask for).
    pub(crate) kind: GroupKind,
    /// The interface's partition.
    pub(crate) pkey: PKey,
    /// The broadcast group's record, whose parameters every other join copies (RFC
    /// 4391); `None` before the broadcast group is joined.
    pub(crate) bcast_record: Option<&'a mcmember::Repr>,
}

/// Whether a startup cleanup could start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListStart {
    /// The listing is in flight.
    Started(Tid),
    /// No room in the window; try again on a later poll.
    Later,
    /// This link layer has no memberships to list (RoCE: no SA).
    NotApplicable,
}

/// What differs between link layers (see the module docs). Each `start_*` returns the
/// transaction's `(tid, deadline)`, or `None` when the window is full (counted) or the
/// request cannot be made (the caller tries again later).
pub(crate) trait LinkLayerOps: Send + fmt::Debug {
    /// The link layer served.
    fn link_layer(&self) -> LinkLayer;
    /// The GID of the interface (in its hardware address).
    fn port_gid(&self) -> Gid;
    /// How the interface names its groups.
    fn mcast_map(&self) -> McastMap;
    /// The port's attributes after a port event (a new SM, LID, MTU, GID table).
    fn port_changed(&mut self, attr: &PortAttr);
    /// Starts a join.
    fn start_join(
        &mut self,
        now: Nanos,
        req: &JoinRequest<'_>,
        stats: &mut CtrlStats,
    ) -> Option<(Tid, Nanos)>;
    /// Starts leaving the `join_state` bits of `mgid`.
    fn start_leave(
        &mut self,
        now: Nanos,
        mgid: Gid,
        join_state: JoinState,
        stats: &mut CtrlStats,
    ) -> Option<(Tid, Nanos)>;
    /// Starts resolving the path to neighbour `ip`, whose GID is `dgid`.
    fn start_path(
        &mut self,
        now: Nanos,
        ip: IpAddr,
        dgid: Gid,
        stats: &mut CtrlStats,
    ) -> Option<(Tid, Nanos)>;
    /// Starts listing this port's memberships in partition `pkey` (startup cleanup).
    fn start_list(&mut self, now: Nanos, pkey: PKey, stats: &mut CtrlStats) -> ListStart;
    /// Reads answers and expires transactions; one event per transaction ended is
    /// pushed to `out`. Returns the work done.
    fn poll(&mut self, now: Nanos, stats: &mut CtrlStats, out: &mut Vec<LinkEvent>) -> usize;
    /// The address handle of a joined group, from its record.
    fn group_ah(&self, rec: &mcmember::Repr) -> AhAttr;
    /// The transactions in flight.
    fn txns(&self) -> &Txns;
    /// The transactions in flight, to abandon one.
    fn txns_mut(&mut self) -> &mut Txns;
}

/// Answers read per poll at most.
pub(crate) const RECV_PER_POLL: usize = 64;

/// The first TID of a port's transactions: derived from its GUID, so that answers meant
/// for an earlier client on this port are unlikely to be taken for ours.
pub(crate) fn tid_first(port_guid: u64) -> Tid {
    (((port_guid & 0xffff) as u32) << 16) | 1
}
