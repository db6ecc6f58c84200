//! What an inspection tool shows of the control state (`ip maddr`, `ip neigh`): copies
//! of every group and neighbour, taken on the control core between two polls. Nothing
//! here changes the state.

use ibpoll_wire::ipoib::HwAddr;
use ibpoll_wire::mcmember::JoinState;
use ibpoll_wire::{Gid, Lid, Qpn};

use super::Controller;
use crate::mcast::{GroupKind, GroupPhase, GroupState};
use crate::neigh::NeighState;

/// One multicast group of an interface, as [`Controller::groups`] copies it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupInfo {
    /// The group.
    pub mgid: Gid,
    /// Why the interface is in it.
    pub kind: GroupKind,
    /// Idle, Joining, Joined or Leaving.
    pub phase: GroupPhase,
    /// The JoinState bits: held (Joined), being left (Leaving), or wanted (Idle,
    /// Joining).
    pub join_state: JoinState,
    /// The MLID the SA gave (Joined only).
    pub mlid: Option<Lid>,
    /// The QP the group is attached to (Joined full members only; a send-only group is
    /// attached to none).
    pub qpn: Option<Qpn>,
    /// Packets waiting for the join.
    pub queued: usize,
    /// Failed joins since the last success.
    pub failures: u32,
    /// A join that timed out may be held at the SA (a leave for it is owed).
    pub unconfirmed: bool,
}

/// The resolution state of a neighbour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NeighPhase {
    /// ARP requests are going out; the hardware address is not known.
    Incomplete,
    /// The hardware address is known; the path record is being queried.
    Resolving,
    /// Published: packets to it go out on the data path.
    Reachable,
}

/// The path to a neighbour, from its PathRecord.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PathInfo {
    /// The destination LID.
    pub dlid: Lid,
    /// The service level.
    pub sl: u8,
}

/// One neighbour of an interface, as [`Controller::neighbours`] copies it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NeighInfo {
    /// Its IP address (IPv4, or IPv6 found by neighbour discovery).
    pub ip: std::net::IpAddr,
    /// Where its resolution stands.
    pub phase: NeighPhase,
    /// Its IPoIB hardware address, once ARP found it.
    pub hwaddr: Option<HwAddr>,
    /// The path in use (Reachable, or Resolving while an older path is still used).
    pub path: Option<PathInfo>,
    /// Packets waiting for the resolution.
    pub queued: usize,
    /// ARP requests sent so far (Incomplete).
    pub arp_tries: u8,
}

impl Controller {
    /// Every group of the interface (the broadcast group included), in MGID order.
    pub fn groups(&self) -> Vec<GroupInfo> {
        let mut v: Vec<GroupInfo> = self
            .groups
            .values()
            .map(|g| {
                let wanted = g.kind.join_state();
                let (join_state, mlid, qpn, failures, unconfirmed) = match &g.state {
                    GroupState::Idle {
                        backoff,
                        unconfirmed,
                        ..
                    } => (wanted, None, None, backoff.failures, unconfirmed.is_some()),
                    GroupState::Joining {
                        backoff,
                        unconfirmed,
                        ..
                    } => (wanted, None, None, backoff.failures, unconfirmed.is_some()),
                    GroupState::Joined { membership, entry } => (
                        membership.join_state(),
                        Some(entry.mlid),
                        (!entry.send_only).then_some(entry.qpn),
                        0,
                        false,
                    ),
                    GroupState::Leaving { leave, .. } => (leave.join_state(), None, None, 0, false),
                };
                GroupInfo {
                    mgid: g.mgid,
                    kind: g.kind,
                    phase: g.state.phase(),
                    join_state,
                    mlid,
                    qpn,
                    queued: g.queue.len(),
                    failures,
                    unconfirmed,
                }
            })
            .collect();
        v.sort_unstable_by_key(|g| g.mgid);
        v
    }

    /// Every neighbour of the interface, in address order.
    pub fn neighbours(&self) -> Vec<NeighInfo> {
        self.neighbours
            .iter()
            .map(|(ip, n)| {
                let path_of = |e: &crate::snapshot::Neighbour| PathInfo {
                    dlid: e.dlid,
                    sl: e.sl,
                };
                let (phase, hwaddr, path, arp_tries) = match &n.state {
                    NeighState::Incomplete { tries, .. } => {
                        (NeighPhase::Incomplete, None, None, *tries)
                    }
                    NeighState::Resolving { hwaddr, old, .. } => (
                        NeighPhase::Resolving,
                        Some(*hwaddr),
                        old.as_deref().map(path_of),
                        0,
                    ),
                    NeighState::Reachable { entry } => (
                        NeighPhase::Reachable,
                        Some(entry.hwaddr),
                        Some(path_of(entry)),
                        0,
                    ),
                };
                NeighInfo {
                    ip: *ip,
                    phase,
                    hwaddr,
                    path,
                    queued: n.queue.len(),
                    arp_tries,
                }
            })
            .collect()
    }
}
