//! The controller: one pollable state machine that owns every piece of mutable control
//! state (groups, neighbours, SA transactions, flush) for one IPoIB interface.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use crossbeam::queue::ArrayQueue;
use ibpoll_dev::{
    AhAttr, Clock, Counter, GrhAttr, Nanos, Port, PortEvent, PortState, TxDesc, TxQueue,
};
use ibpoll_mem::{Mbuf, Mempool};
use ibpoll_rcu::Publisher;
use ibpoll_wire::ipoib::{self, HwAddr};
use ibpoll_wire::mad::Method;
use ibpoll_wire::mcmember::{self, JoinState};
use ibpoll_wire::sa::{Attribute, Selector};
use ibpoll_wire::{Gid, IbMtu, Qpn};

use crate::mcast::{
    Backoff, Group, GroupKind, GroupPhase, GroupState, Membership, RetryAt, Unconfirmed,
};
use crate::ring::{DataCore, GroupAddr, Request, RequestRing, RequestSender};
use crate::sa::{self, SaClient, SaEvent, Tid, TxnKind};
use crate::snapshot::{AhGuard, McastEntry, Snapshot};
use crate::table::{Change, ChangeLog, GroupTable, NeighTable};
use crate::{CtrlConfig, CtrlStats, Error};

/// Whether a poll did any work (SPDK's pollers: busy and idle cycles are counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poll {
    /// Something was done.
    Busy,
    /// Nothing to do.
    Idle,
}

/// How much a flush tears down (the kernel's `ipoib_flush_level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FlushLevel {
    /// ClientReregister, SmChange: leave and rejoin every group; the link stays up;
    /// neighbours' paths are revalidated.
    Light,
    /// Port Error/Active/LidChange, interface down: the link goes down, every group is
    /// left, neighbours are dropped; joins start again when allowed.
    Normal,
    /// PkeyChange: as Normal, then the P_Key index is re-read and the stack is asked to
    /// rebuild its QP ([`CtrlEvent::RebuildQp`]).
    Heavy,
}

/// What the controller tells the stack that owns it (drained with
/// [`Controller::take_event`]; at most 64 wait, the oldest go first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtrlEvent {
    /// The link came up: the broadcast group is Joined.
    LinkUp,
    /// The link went down.
    LinkDown,
    /// A heavy flush found the interface's P_Key at this index of the port's table: the
    /// stack must move its UD QP there (`Port::set_qp_pkey_index`, keeping its QPN and
    /// queues), or create a new QP with it and hand the new send queue over with
    /// [`Controller::replace_qp`].
    RebuildQp {
        /// The P_Key index the QP must use.
        pkey_index: u16,
    },
}

const EVENTS_MAX: usize = 64;
const PORT_EVENTS_PER_POLL: usize = 16;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Flush {
    pub(crate) level: FlushLevel,
    pub(crate) started: Nanos,
    /// False while in-flight joins and path queries drain; true once leaves go out.
    pub(crate) leaving: bool,
}

/// The control plane of one IPoIB interface. See the crate docs.
pub struct Controller {
    pub(crate) cfg: CtrlConfig,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) port: Arc<dyn Port>,
    pub(crate) qpn: Qpn,
    pub(crate) tx: Box<dyn TxQueue>,
    pub(crate) pool: Mempool,
    pub(crate) sa: SaClient,
    publisher: Publisher<Snapshot>,
    rings: Vec<RequestRing>,
    /// Every write goes through the table, which keeps the indexes the schedulers read
    /// (see `table`). The order joins and leaves go out in must not depend on a
    /// per-process hash seed, so that a simulated run replays exactly: it comes from the
    /// ordered indexes, never from the map.
    pub(crate) groups: GroupTable,
    pub(crate) bcast_mgid: Gid,
    /// The broadcast group's record from its last successful join: the parameters every
    /// other join copies (RFC 4391).
    pub(crate) bcast_record: Option<mcmember::Repr>,
    /// An ordered map: neighbours are scanned in address order.
    pub(crate) neighbours: NeighTable,
    pub(crate) port_gid: Gid,
    pub(crate) port_active: bool,
    admin_up: bool,
    pkey_index: Option<u16>,
    pub(crate) flush: Option<Flush>,
    pub(crate) link_up: bool,
    pub(crate) dirty: bool,
    pub(crate) stats: CtrlStats,
    ah_destroyed: Arc<Counter>,
    tx_descs: VecDeque<TxDesc>,
    tx_guards: VecDeque<Arc<AhGuard>>,
    events: VecDeque<CtrlEvent>,
    next_expiry_check: Nanos,
    generation: u64,
    /// What changed in the published view since the oldest snapshot still alive.
    pub(crate) changes: ChangeLog,
    /// A snapshot no reader holds, up to date with the state as of its generation: the
    /// next publish rewrites it instead of allocating one.
    spare: Option<Box<Snapshot>>,
    pub(crate) gratuitous_arp: bool,
    sa_events: Vec<SaEvent>,
    scratch: Vec<Gid>,
}

impl fmt::Debug for Controller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Controller")
            .field("qpn", &self.qpn)
            .field("groups", &self.groups.len())
            .field("neighbours", &self.neighbours.len())
            .field("link_up", &self.link_up)
            .field("flush", &self.flush)
            .field("sa", &self.sa)
            .finish_non_exhaustive()
    }
}

impl Controller {
    /// Creates the controller of the interface whose UD QP is `qpn` on `port`, and one
    /// [`DataCore`] handle per data core (`cfg.data_cores`).
    ///
    /// `tx` is a send queue of that same QP, owned by the control core from now on: the
    /// controller sends queued packets, ARP and gratuitous ARP through it. `pool` is where
    /// it takes buffers for the packets it builds (ARP). Time comes only from `clock`.
    pub fn new(
        cfg: CtrlConfig,
        port: Arc<dyn Port>,
        qpn: Qpn,
        tx: Box<dyn TxQueue>,
        pool: Mempool,
        clock: Arc<dyn Clock>,
    ) -> Result<(Controller, Vec<DataCore>), Error> {
        cfg.check()?;
        let attr = port.attr();
        let pkey_index = attr.pkey_index(cfg.pkey).ok_or(Error::NoPkey {
            port: attr.port_num,
            pkey: cfg.pkey,
        })?;
        let chan = port
            .open_mad_channel()
            .map_err(|source| Error::MadChannel {
                port: attr.port_num,
                source,
            })?;
        let initial = Snapshot {
            pkey: cfg.pkey,
            scope: cfg.scope,
            ..Snapshot::default()
        };
        let (mut publisher, registry) =
            ibpoll_rcu::new(initial, cfg.data_cores).map_err(|source| Error::Snapshot {
                data_cores: cfg.data_cores,
                source,
            })?;
        // One reclaimed snapshot is enough to publish without allocating: readers that
        // quiesce every loop give the previous one back before the next publish.
        publisher.set_recycle_max(1);
        let mut rings = Vec::with_capacity(cfg.data_cores);
        let mut cores = Vec::with_capacity(cfg.data_cores);
        for _ in 0..cfg.data_cores {
            let ring = Arc::new(ArrayQueue::new(cfg.ring_size));
            let full = Arc::new(Counter::new());
            let reader = registry.register().map_err(|source| Error::Snapshot {
                data_cores: cfg.data_cores,
                source,
            })?;
            cores.push(DataCore {
                reader,
                requests: RequestSender::new(ring.clone(), full.clone()),
            });
            rings.push(RequestRing { ring, full });
        }
        let now = clock.now();
        let bcast_mgid = ipoib::broadcast_mgid(cfg.pkey);
        let mut groups = GroupTable::with_touched_capacity(cfg.groups_max.min(4096));
        groups.insert(Group::new(bcast_mgid, GroupKind::Broadcast, now));
        let sa = SaClient::new(chan, &attr, cfg.sa_window, cfg.sa_timeout);
        let ctl = Controller {
            clock,
            port,
            qpn,
            tx,
            pool,
            sa,
            publisher,
            rings,
            groups,
            bcast_mgid,
            bcast_record: None,
            neighbours: NeighTable::with_touched_capacity(cfg.neigh_max.min(4096)),
            port_gid: attr.gid,
            port_active: attr.state == PortState::Active,
            admin_up: true,
            pkey_index: Some(pkey_index),
            flush: None,
            link_up: false,
            dirty: true,
            stats: CtrlStats::default(),
            ah_destroyed: Arc::new(Counter::new()),
            tx_descs: VecDeque::with_capacity(cfg.tx_backlog_max),
            tx_guards: VecDeque::with_capacity(cfg.tx_backlog_max),
            events: VecDeque::with_capacity(EVENTS_MAX),
            next_expiry_check: now.saturating_add(Nanos::from_secs(1)),
            generation: 0,
            changes: ChangeLog::new(1),
            spare: None,
            gratuitous_arp: false,
            sa_events: Vec::with_capacity(sa::RECV_PER_POLL + cfg.sa_window),
            scratch: Vec::with_capacity(cfg.groups_max),
            cfg,
        };
        Ok((ctl, cores))
    }

    // ----- the public control surface --------------------------------------------------

    /// Runs one bounded round of work; never blocks. Reads the time once, from the clock.
    pub fn poll(&mut self) -> Poll {
        let now = self.clock.now();
        let mut work = 0;
        work += self.port_events(now);
        work += self.sa_poll(now);
        work += self.requests(now);
        work += self.flush_progress(now);
        work += self.schedule_joins(now);
        work += self.neigh_timers(now);
        if now >= self.next_expiry_check {
            self.next_expiry_check = now.saturating_add(Nanos::from_secs(1));
            work += self.expire(now);
        }
        work += self.tx_flush();
        self.reindex();
        if self.dirty {
            self.publish();
            work += 1;
        }
        self.publisher.reclaim();
        self.recycle();
        if work > 0 {
            self.stats.polls_busy += 1;
            Poll::Busy
        } else {
            self.stats.polls_idle += 1;
            Poll::Idle
        }
    }

    /// A copy of the counters.
    pub fn stats(&self) -> CtrlStats {
        let mut s = self.stats;
        s.ring_full = self.rings.iter().map(|r| r.full.get()).sum();
        s.ah_destroyed = self.ah_destroyed.get();
        s
    }

    /// The next event for the stack, if any.
    pub fn take_event(&mut self) -> Option<CtrlEvent> {
        self.events.pop_front()
    }

    /// Brings the interface up or down (`ip link set ... up/down`). Down runs a normal
    /// flush and keeps joins off until it is up again.
    pub fn set_admin_up(&mut self, up: bool) {
        if up == self.admin_up {
            return;
        }
        self.admin_up = up;
        if !up {
            tracing::info!(pkey = %self.cfg.pkey, "ibpoll-ctrl: interface set down");
            let now = self.clock.now();
            self.start_flush(FlushLevel::Normal, now);
        }
    }

    /// Subscribes the interface to a group (it will receive it): a full-member join,
    /// sent once the broadcast group is Joined. False if the table is full or the address
    /// is not a multicast group of this partition.
    pub fn join_group(&mut self, group: GroupAddr) -> bool {
        let now = self.clock.now();
        let Some(mgid) = self.mgid_of(group) else {
            self.stats.mcast_bad_group += 1;
            return false;
        };
        if let Some(g) = self.groups.get_mut(&mgid) {
            g.remove_after_leave = false;
            if g.kind == GroupKind::SendOnly {
                // Upgrade: `schedule_joins` leaves the send-only membership, then the
                // group joins as a full member.
                g.kind = GroupKind::Full;
            }
            return true;
        }
        if self.groups.len() >= self.cfg.groups_max {
            self.stats.mcast_table_full += 1;
            return false;
        }
        self.groups.insert(Group::new(mgid, GroupKind::Full, now));
        true
    }

    /// Unsubscribes: the group is left (if Joined) and removed.
    pub fn leave_group(&mut self, group: GroupAddr) {
        let now = self.clock.now();
        let Some(mgid) = self.mgid_of(group) else {
            return;
        };
        if mgid == self.bcast_mgid {
            return;
        }
        let Some(g) = self.groups.get_mut(&mgid) else {
            return;
        };
        g.remove_after_leave = true;
        match g.state {
            GroupState::Joined { .. } => {
                self.begin_leave(mgid, now, true);
            }
            GroupState::Idle { .. } => self.remove_idle_group(mgid),
            // Joining: removed once the answer (or timeout) has come and been left;
            // Leaving: removed when the leave ends.
            _ => {}
        }
    }

    /// Hands over the send queue of a rebuilt QP (after [`CtrlEvent::RebuildQp`]).
    pub fn replace_qp(&mut self, qpn: Qpn, tx: Box<dyn TxQueue>) {
        self.tx_descs.clear();
        self.tx_guards.clear();
        self.qpn = qpn;
        self.tx = tx;
    }

    /// Whether a flush runs.
    pub fn is_flushing(&self) -> bool {
        self.flush.is_some()
    }

    /// The level of the running flush.
    pub fn flush_level(&self) -> Option<FlushLevel> {
        self.flush.map(|f| f.level)
    }

    /// Whether the link is up (the broadcast group is Joined).
    pub fn link_up(&self) -> bool {
        self.link_up
    }

    /// The coarse state of a group, if it is in the table.
    pub fn group_phase(&self, group: GroupAddr) -> Option<GroupPhase> {
        let mgid = self.mgid_of(group)?;
        self.groups.get(&mgid).map(|g| g.state.phase())
    }

    /// The state of a group, if it is in the table.
    pub fn group_state(&self, group: GroupAddr) -> Option<&GroupState> {
        let mgid = self.mgid_of(group)?;
        self.groups.get(&mgid).map(|g| &g.state)
    }

    /// Groups in the table (broadcast included).
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// Packets queued for groups that are not Joined.
    pub fn mcast_queued(&self) -> usize {
        self.groups.values().map(|g| g.queue.len()).sum()
    }

    /// Packets queued for one group (0 when it is not in the table).
    pub fn group_queued(&self, group: GroupAddr) -> usize {
        self.mgid_of(group)
            .and_then(|m| self.groups.get(&m))
            .map_or(0, |g| g.queue.len())
    }

    /// Packets queued for one unresolved neighbour (0 when it is not in the table).
    pub fn neigh_queued_for(&self, ip: [u8; 4]) -> usize {
        self.neighbours.get(&ip).map_or(0, |n| n.queue.len())
    }

    /// Neighbours in the table.
    pub fn neighbour_count(&self) -> usize {
        self.neighbours.len()
    }

    /// Packets queued for unresolved neighbours.
    pub fn neigh_queued(&self) -> usize {
        self.neighbours.values().map(|n| n.queue.len()).sum()
    }

    /// SA transactions in flight.
    pub fn sa_in_flight(&self) -> usize {
        self.sa.in_flight()
    }

    /// The broadcast group's record from its last successful join.
    pub fn broadcast_record(&self) -> Option<&mcmember::Repr> {
        self.bcast_record.as_ref()
    }

    /// The IPoIB hardware address of this interface.
    pub fn hwaddr(&self) -> HwAddr {
        HwAddr::new(0, self.qpn, self.port_gid)
    }

    /// The MGID a group address maps to on this interface, if it is one of its groups.
    pub fn mgid_of(&self, group: GroupAddr) -> Option<Gid> {
        let mgid = match group {
            GroupAddr::Mgid(m) => m,
            GroupAddr::Ipv4(ip) => {
                if ip[0] & 0xf0 != 0xe0 {
                    return None;
                }
                ipoib::ipv4_mcast_mgid(ip, self.cfg.pkey, self.cfg.scope)
            }
        };
        let in_partition = ipoib::mgid_pkey(&mgid).is_none_or(|p| p.base() == self.cfg.pkey.base());
        (mgid.is_multicast() && in_partition).then_some(mgid)
    }

    // ----- port events and flush ---------------------------------------------------------

    fn port_events(&mut self, now: Nanos) -> usize {
        let mut n = 0;
        while n < PORT_EVENTS_PER_POLL {
            let Some(ev) = self.port.poll_event() else {
                break;
            };
            n += 1;
            let attr = self.port.attr();
            self.port_active = attr.state == PortState::Active;
            self.port_gid = attr.gid;
            self.sa.set_port(&attr);
            let level = match ev {
                PortEvent::ClientReregister | PortEvent::SmChange => FlushLevel::Light,
                PortEvent::Active | PortEvent::Error | PortEvent::LidChange => FlushLevel::Normal,
                PortEvent::PkeyChange => FlushLevel::Heavy,
            };
            if level == FlushLevel::Light {
                tracing::info!(
                    pkey = %self.cfg.pkey,
                    event = ?ev,
                    groups = self.groups.len(),
                    "ibpoll-ctrl: the subnet manager restarted or asked to reregister; rejoining every group"
                );
            } else {
                tracing::info!(pkey = %self.cfg.pkey, event = ?ev, "ibpoll-ctrl: port event");
            }
            self.start_flush(level, now);
        }
        n
    }

    /// Starts a flush, or raises the level of the running one.
    pub(crate) fn start_flush(&mut self, level: FlushLevel, now: Nanos) {
        match level {
            FlushLevel::Light => self.stats.flushes_light += 1,
            FlushLevel::Normal => self.stats.flushes_normal += 1,
            FlushLevel::Heavy => self.stats.flushes_heavy += 1,
        }
        let f = match self.flush {
            Some(mut f) => {
                f.level = f.level.max(level);
                f
            }
            None => {
                tracing::info!(
                    pkey = %self.cfg.pkey,
                    ?level,
                    groups = self.groups.len(),
                    "ibpoll-ctrl: flush started"
                );
                // No group is published while a flush runs.
                self.changes.push(Change::AllGroups);
                Flush {
                    level,
                    started: now,
                    leaving: false,
                }
            }
        };
        self.flush = Some(f);
        // The next publish drops every group (see `publish`).
        self.dirty = true;
        if f.level >= FlushLevel::Normal {
            self.set_link(false);
            self.drop_neighbours();
        }
    }

    fn set_link(&mut self, up: bool) {
        if self.link_up != up {
            self.link_up = up;
            self.dirty = true;
            self.push_event(if up {
                CtrlEvent::LinkUp
            } else {
                CtrlEvent::LinkDown
            });
            if up {
                self.gratuitous_arp = true;
            }
        }
    }

    fn push_event(&mut self, ev: CtrlEvent) {
        if self.events.len() == EVENTS_MAX {
            self.events.pop_front();
        }
        self.events.push_back(ev);
    }

    /// Drives a running flush: drain joins and path queries, then leave everything, then
    /// end (bounded by `flush_max` however silent the SA is).
    fn flush_progress(&mut self, now: Nanos) -> usize {
        let Some(mut f) = self.flush else {
            return 0;
        };
        let mut work = 0;
        if now.saturating_sub(f.started) >= self.cfg.flush_max {
            work += self.flush_abandon(now);
            self.flush_end(f.level, now);
            return work + 1;
        }
        if !f.leaving {
            let draining = self
                .sa
                .in_flight_where(|k| matches!(k, TxnKind::Join(_) | TxnKind::Path(_)));
            if draining > 0 {
                return 0;
            }
            f.leaving = true;
            self.flush = Some(f);
            work += 1;
        }
        // Leave every Joined group (exactly once: the token is consumed) and every group
        // whose join timed out (the SA may hold it), as the window allows, in MGID order.
        self.reindex();
        self.scratch.clear();
        let room = self.sa.room();
        self.scratch
            .extend(self.groups.flush_leave().iter().take(room).copied());
        for i in 0..self.scratch.len() {
            if !self.sa.has_room() {
                break;
            }
            let mgid = self.scratch[i];
            if self.begin_leave(mgid, now, false) {
                work += 1;
            }
        }
        // Still to leave, and leaves in flight.
        self.reindex();
        let pending = self.groups.flush_leave().len() + self.groups.leaving();
        if pending == 0 {
            self.flush_end(f.level, now);
            work += 1;
        }
        work
    }

    /// `flush_max` passed with transactions still open (the window had to be cycled
    /// more often than the time allowed). Their transactions are abandoned (answers to
    /// them will count as late), but no obligation to leave is dropped: whatever may
    /// still be held at the SA stays as an `Unconfirmed` token for the next flush.
    fn flush_abandon(&mut self, now: Nanos) -> usize {
        let mut n = 0;
        self.scratch.clear();
        self.scratch.extend(self.groups.keys().copied());
        // In MGID order, so that a simulated run replays exactly.
        self.scratch.sort_unstable();
        for i in 0..self.scratch.len() {
            let mgid = self.scratch[i];
            let Some(g) = self.groups.get_mut(&mgid) else {
                continue;
            };
            let old = std::mem::replace(&mut g.state, GroupState::idle_now(now));
            let unconfirmed = match old {
                GroupState::Idle { unconfirmed, .. } => unconfirmed,
                GroupState::Joining {
                    tid, unconfirmed, ..
                } => {
                    self.sa.abandon(tid);
                    n += 1;
                    unconfirmed.or(Some(Unconfirmed::from_timeout(mgid, g.kind.join_state())))
                }
                GroupState::Leaving { tid, leave, .. } => {
                    self.sa.abandon(tid);
                    n += 1;
                    Some(leave.into_unconfirmed())
                }
                GroupState::Joined { membership, entry } => {
                    if !entry.send_only {
                        let _ = self.port.detach_mcast(self.qpn, &entry.mgid, entry.mlid);
                    }
                    self.dirty = true;
                    n += 1;
                    Some(membership.leave().into_unconfirmed())
                }
            };
            g.state = GroupState::Idle {
                backoff: Backoff::default(),
                retry_at: RetryAt::At(now),
                unconfirmed,
            };
        }
        self.stats.flush_abandoned += 1;
        tracing::warn!(
            pkey = %self.cfg.pkey,
            transactions = n,
            "ibpoll-ctrl: the flush ran out of time (flush_max); what the SA may still hold is left by the next flush"
        );
        n
    }

    fn flush_end(&mut self, level: FlushLevel, now: Nanos) {
        if let Some(f) = self.flush {
            tracing::info!(
                pkey = %self.cfg.pkey,
                ?level,
                ms = now.saturating_sub(f.started).0 / 1_000_000,
                "ibpoll-ctrl: flush ended"
            );
        }
        self.flush = None;
        // Groups are published again.
        self.changes.push(Change::AllGroups);
        // Send-only groups go with the flush (the kernel's mcast_dev_flush); what they
        // still queued is counted.
        self.scratch.clear();
        self.scratch.extend(
            self.groups
                .values()
                .filter(|g| {
                    // After a light flush (a subnet-manager restart) the link is still
                    // up: a send-only group with packets queued meanwhile is rejoined
                    // and sends them, rather than dropping them.
                    let keep = level == FlushLevel::Light && !g.queue.is_empty();
                    (g.kind == GroupKind::SendOnly && !keep) || g.remove_after_leave
                })
                .map(|g| g.mgid),
        );
        // In MGID order, not the hash map's: what is freed, and in which order, is the
        // same on every run (the simulator replays seeds bit for bit).
        self.scratch.sort_unstable();
        for i in 0..self.scratch.len() {
            let mgid = self.scratch[i];
            self.remove_idle_group(mgid);
        }
        for g in self.groups.values_mut() {
            g.leave_deferred = false;
            if let GroupState::Idle { unconfirmed, .. } = &mut g.state {
                // Keep what the SA may still hold (an abandoned leave or flush): a
                // subscribed group's rejoin settles it, an unsubscribed or send-only one
                // without packets is left again by `schedule_joins`.
                let unconfirmed = unconfirmed.take();
                if unconfirmed.is_some() && g.kind == GroupKind::SendOnly && g.queue.is_empty() {
                    g.remove_after_leave = true;
                }
                g.state = GroupState::Idle {
                    backoff: Backoff::default(),
                    retry_at: RetryAt::At(now),
                    unconfirmed,
                };
            }
        }
        match level {
            FlushLevel::Light => self.revalidate_neighbours(),
            FlushLevel::Normal => {}
            FlushLevel::Heavy => {
                let attr = self.port.attr();
                self.pkey_index = attr.pkey_index(self.cfg.pkey);
                match self.pkey_index {
                    Some(pkey_index) => self.push_event(CtrlEvent::RebuildQp { pkey_index }),
                    None => self.stats.pkey_missing += 1,
                }
            }
        }
        self.dirty = true;
    }

    /// Removes an Idle group (no token left), counting its queue. Other states stay.
    fn remove_idle_group(&mut self, mgid: Gid) {
        if mgid == self.bcast_mgid {
            return;
        }
        let removable = matches!(
            self.groups.get(&mgid).map(|g| &g.state),
            Some(GroupState::Idle {
                unconfirmed: None,
                ..
            })
        );
        if removable {
            if let Some(g) = self.groups.remove(&mgid, &mut self.changes) {
                self.stats.mcast_flush_dropped += g.queue.len() as u64;
            }
        }
    }

    // ----- joins ----------------------------------------------------------------------

    fn joins_allowed(&self) -> bool {
        self.port_active && self.admin_up && self.flush.is_none() && self.pkey_index.is_some()
    }

    /// Sends the joins that are due: the broadcast group first, the others only once it
    /// is Joined (DESIGN rule 1), all only while allowed (rule 2) and the window has room.
    /// Reads only the groups due now (the table's indexes), never the whole table.
    fn schedule_joins(&mut self, now: Nanos) -> usize {
        if !self.joins_allowed() {
            return 0;
        }
        self.reindex();
        let bcast_joined = matches!(
            self.groups.get(&self.bcast_mgid).map(|g| &g.state),
            Some(GroupState::Joined { .. })
        );
        let mut n = 0;
        // Groups left behind by `leave_group` (or expired) that still hold an
        // `Unconfirmed` token are not joined again: their leave is tried again. So is
        // a group unsubscribed while its join was in flight, Joined when the window had
        // no room for its leave. And a send-only membership of a group the interface
        // now subscribes to is left first (once the broadcast group is Joined); the
        // group then rejoins as a full member.
        if self.groups.has_leave_due(now) {
            self.scratch.clear();
            self.scratch.extend(self.groups.leave_due(now));
            for i in 0..self.scratch.len() {
                let mgid = self.scratch[i];
                let Some(g) = self.groups.get(&mgid) else {
                    continue;
                };
                if g.remove_after_leave {
                    self.remove_idle_group(mgid);
                    if self.groups.contains_key(&mgid) && self.begin_leave(mgid, now, true) {
                        n += 1;
                    }
                } else if bcast_joined && self.begin_leave(mgid, now, false) {
                    n += 1;
                }
            }
            self.reindex();
        }
        if !bcast_joined {
            let due = matches!(
                self.groups[&self.bcast_mgid].state,
                GroupState::Idle { retry_at: RetryAt::At(t), .. } if t <= now
            );
            if due && self.sa.has_room() {
                self.send_join(self.bcast_mgid, now);
                return n + 1;
            }
            return n;
        }
        // The joins due, earliest first, as many as the window takes.
        self.scratch.clear();
        let room = self.sa.room();
        let bcast = self.bcast_mgid;
        self.scratch.extend(
            self.groups
                .join_due(now)
                .filter(|m| *m != bcast)
                .take(room + 1),
        );
        for i in 0..self.scratch.len() {
            if !self.sa.has_room() {
                self.stats.sa_window_full += 1;
                break;
            }
            let mgid = self.scratch[i];
            self.send_join(mgid, now);
            n += 1;
        }
        n
    }

    /// Idle -> Joining.
    fn send_join(&mut self, mgid: Gid, now: Nanos) {
        let Some(g) = self.groups.get(&mgid) else {
            return;
        };
        let kind = g.kind;
        let mut rec = mcmember::Repr {
            mgid,
            port_gid: self.port_gid,
            pkey: self.cfg.pkey,
            join_state: kind.join_state(),
            ..mcmember::Repr::default()
        };
        let mask = if kind == GroupKind::Broadcast {
            sa::broadcast_join_mask()
        } else {
            let Some(b) = &self.bcast_record else {
                return;
            };
            rec.qkey = b.qkey;
            rec.mtu_selector = Selector::Exactly;
            rec.mtu = b.mtu;
            rec.tclass = b.tclass;
            rec.rate_selector = Selector::Exactly;
            rec.rate = b.rate;
            rec.sl = b.sl;
            rec.flow_label = b.flow_label;
            rec.hop_limit = b.hop_limit;
            sa::group_join_mask()
        };
        let Some((tid, deadline)) = self.sa.start(
            now,
            Method::SET,
            mask,
            Attribute::McMember(rec),
            TxnKind::Join(mgid),
            &mut self.stats,
        ) else {
            return;
        };
        tracing::debug!(pkey = %self.cfg.pkey, %mgid, ?tid, join_state = ?rec.join_state, "ibpoll-ctrl: join sent");
        let g = self.groups.get_mut(&mgid).expect("looked up above");
        let old = std::mem::replace(
            &mut g.state,
            GroupState::Joining {
                tid,
                deadline,
                backoff: Backoff::default(),
                unconfirmed: None,
            },
        );
        if let (
            GroupState::Idle {
                backoff: b,
                unconfirmed: u,
                ..
            },
            GroupState::Joining {
                backoff,
                unconfirmed,
                ..
            },
        ) = (old, &mut g.state)
        {
            *backoff = b;
            *unconfirmed = u;
        }
    }

    /// Joined|Idle(unconfirmed) -> Leaving. Consumes the token. Returns whether a leave
    /// went out (false: nothing to leave, or no room in the window).
    pub(crate) fn begin_leave(&mut self, mgid: Gid, now: Nanos, remove_after: bool) -> bool {
        if !self.sa.has_room() {
            self.stats.sa_window_full += 1;
            return false;
        }
        let Some(g) = self.groups.get_mut(&mgid) else {
            return false;
        };
        let old = std::mem::replace(&mut g.state, GroupState::idle_now(now));
        let leave = match old {
            GroupState::Joined { membership, entry } => {
                // The snapshot drops the entry at the next publish; its address handle
                // is destroyed once every data core has moved past it.
                if !entry.send_only {
                    let _ = self.port.detach_mcast(self.qpn, &entry.mgid, entry.mlid);
                }
                self.dirty = true;
                membership.leave()
            }
            GroupState::Idle {
                unconfirmed: Some(u),
                ..
            } => {
                self.stats.leaves_unconfirmed += 1;
                u.leave()
            }
            other => {
                g.state = other;
                return false;
            }
        };
        g.remove_after_leave |= remove_after;
        self.send_leave(mgid, leave, 1, now);
        true
    }

    fn send_leave(&mut self, mgid: Gid, leave: crate::mcast::Leave, tries: u8, now: Nanos) {
        // A Delete must name only bits the port holds, or the SA refuses it and leaves
        // nothing (o15-0.1.14). A confirmed membership names exactly what the SA said it
        // holds; an unconfirmed one may name bits of several timed-out joins, of which
        // the SA may hold any subset: those are left one bit per Delete.
        let join_state = if leave.confirmed {
            leave.join_state
        } else {
            lowest_bit(leave.join_state)
        };
        let rec = mcmember::Repr {
            mgid: leave.mgid,
            port_gid: self.port_gid,
            join_state,
            ..mcmember::Repr::default()
        };
        // Leaves bypass the window check here: the caller checked for room, and a retry
        // reuses the slot its timed-out try just freed.
        let started = self.sa.start(
            now,
            Method::DELETE,
            sa::leave_mask(),
            Attribute::McMember(rec),
            TxnKind::Leave(mgid),
            &mut self.stats,
        );
        let Some(g) = self.groups.get_mut(&mgid) else {
            return;
        };
        g.state = match started {
            Some((tid, deadline)) => GroupState::Leaving {
                tid,
                deadline,
                tries,
                leave,
            },
            // No room (cannot happen after a timeout freed a slot): keep the obligation
            // as an unconfirmed membership, so the flush tries again.
            None => GroupState::Idle {
                backoff: Backoff::default(),
                retry_at: RetryAt::At(now),
                unconfirmed: Some(Unconfirmed::from_timeout(leave.mgid, leave.join_state)),
            },
        };
    }

    // ----- SA answers -------------------------------------------------------------------

    fn sa_poll(&mut self, now: Nanos) -> usize {
        let mut events = std::mem::take(&mut self.sa_events);
        events.clear();
        let n = self.sa.poll(now, &mut self.stats, &mut events);
        for ev in events.drain(..) {
            self.on_sa_event(ev, now);
        }
        self.sa_events = events;
        n
    }

    fn on_sa_event(&mut self, ev: SaEvent, now: Nanos) {
        match ev {
            SaEvent::Joined { tid, mgid, granted } => {
                self.on_joined(tid, mgid, Membership::new(granted), now)
            }
            SaEvent::JoinRefused { tid, mgid, status } => {
                if self.joining_tid(&mgid) == Some(tid) {
                    tracing::warn!(
                        pkey = %self.cfg.pkey,
                        %mgid,
                        sa_status = format_args!("{:#06x}", status.0),
                        "ibpoll-ctrl: the SA refused the join"
                    );
                }
                self.on_join_failed(tid, mgid, None, now)
            }
            SaEvent::Timeout {
                tid,
                kind: TxnKind::Join(mgid),
                join_state,
            } => {
                if self.joining_tid(&mgid) == Some(tid) {
                    tracing::warn!(
                        pkey = %self.cfg.pkey,
                        %mgid,
                        "ibpoll-ctrl: the join timed out (no answer from the SA)"
                    );
                }
                self.on_join_failed(tid, mgid, Some(join_state), now)
            }
            SaEvent::Left { tid, mgid, .. } => self.on_leave_done(tid, mgid, now),
            SaEvent::LeaveRefused { tid, mgid, status } => {
                if self.leaving_tid(&mgid) == Some(tid) {
                    tracing::warn!(
                        pkey = %self.cfg.pkey,
                        %mgid,
                        sa_status = format_args!("{:#06x}", status.0),
                        "ibpoll-ctrl: the SA refused the leave"
                    );
                }
                self.on_leave_timeout(tid, mgid, now)
            }
            SaEvent::Timeout {
                tid,
                kind: TxnKind::Leave(mgid),
                ..
            } => self.on_leave_timeout(tid, mgid, now),
            SaEvent::Path { tid, ip, path } => self.on_path(tid, ip, Some(path), now),
            SaEvent::PathRefused { tid, ip }
            | SaEvent::Timeout {
                tid,
                kind: TxnKind::Path(ip),
                ..
            } => self.on_path(tid, ip, None, now),
        }
    }

    fn joining_tid(&self, mgid: &Gid) -> Option<Tid> {
        match self.groups.get(mgid).map(|g| &g.state) {
            Some(GroupState::Joining { tid, .. }) => Some(*tid),
            _ => None,
        }
    }

    /// Joining -> Joined. Runs on the control core, in `poll`: nothing else runs at the
    /// same time, a flush included.
    fn on_joined(&mut self, tid: Tid, mgid: Gid, mut membership: Membership, now: Nanos) {
        if self.joining_tid(&mgid) != Some(tid) {
            // Cannot happen: the SA client hands out an answer only for a transaction in
            // flight, and a Joining group is the only holder of its TID.
            panic!("join answer for a group not Joining with that TID");
        }
        // An earlier timed-out join of this group may have been granted with other
        // JoinState bits: the answer names every bit the port now holds (the SA merges
        // them), so the leave of this membership covers exactly those.
        if let Some(GroupState::Joining { unconfirmed, .. }) =
            self.groups.get_mut(&mgid).map(|g| &mut g.state)
        {
            if let Some(u) = unconfirmed.take() {
                membership.absorb(u);
            }
        }
        self.stats.joins_ok += 1;
        let rec = *membership.record();
        tracing::info!(
            pkey = %self.cfg.pkey,
            %mgid,
            mlid = format_args!("{:#06x}", rec.mlid.0),
            join_state = ?membership.join_state(),
            "ibpoll-ctrl: joined group"
        );
        let is_bcast = mgid == self.bcast_mgid;
        let kind = self.groups[&mgid].kind;
        if is_bcast {
            if self.port.set_qp_qkey(self.qpn, rec.qkey).is_err() {
                self.stats.qp_errors += 1;
            }
            self.bcast_record = Some(rec);
        }
        if kind != GroupKind::SendOnly
            && self
                .port
                .attach_mcast(self.qpn, &rec.mgid, rec.mlid)
                .is_err()
        {
            self.stats.qp_errors += 1;
        }
        let ah = self.port.create_ah(&AhAttr {
            dlid: rec.mlid,
            sl: rec.sl,
            src_path_bits: 0,
            static_rate: rec.rate,
            grh: Some(GrhAttr {
                dgid: rec.mgid,
                flow_label: rec.flow_label,
                sgid_index: 0,
                hop_limit: rec.hop_limit,
                traffic_class: rec.tclass,
            }),
        });
        let ah = match ah {
            Ok(ah) => {
                self.stats.ah_created += 1;
                Arc::new(AhGuard::new(
                    self.port.clone(),
                    ah,
                    self.ah_destroyed.clone(),
                ))
            }
            Err(_) => {
                // A membership without a handle is useless: leave it (the token is
                // consumed; the answer just freed a window slot) and retry later.
                self.stats.ah_errors += 1;
                if kind != GroupKind::SendOnly {
                    let _ = self.port.detach_mcast(self.qpn, &rec.mgid, rec.mlid);
                }
                self.send_leave(mgid, membership.leave(), 1, now);
                return;
            }
        };
        let entry = Arc::new(McastEntry::new(
            mgid,
            rec.mlid,
            rec.qkey,
            kind == GroupKind::SendOnly,
            ah,
        ));
        let g = self.groups.get_mut(&mgid).expect("checked above");
        g.state = GroupState::Joined {
            membership,
            entry: entry.clone(),
        };
        g.last_used = now;
        let unsubscribed = g.remove_after_leave;
        self.dirty = true;
        if self.flush.is_some() {
            // The flush leaves it; the queue waits for the rejoin.
            return;
        }
        if unsubscribed {
            // `leave_group` came while the join was in flight: leave it now (or, with
            // the window full, from `schedule_joins`).
            self.begin_leave(mgid, now, true);
            return;
        }
        if is_bcast {
            self.set_link(true);
        }
        let queue = std::mem::take(&mut self.groups.get_mut(&mgid).expect("present").queue);
        for m in queue {
            self.stats.mcast_sent_from_queue += 1;
            self.send_mcast(&entry, m);
        }
    }

    /// Joining -> Idle with backoff (and, after a timeout, an Unconfirmed token).
    fn on_join_failed(&mut self, tid: Tid, mgid: Gid, timed_out: Option<JoinState>, now: Nanos) {
        if self.joining_tid(&mgid) != Some(tid) {
            return;
        }
        self.stats.joins_failed += 1;
        tracing::debug!(pkey = %self.cfg.pkey, %mgid, "ibpoll-ctrl: join failed; backing off");
        let max_s = self.cfg.backoff_s_max;
        let so_max = self.cfg.sendonly_failures_max;
        let g = self.groups.get_mut(&mgid).expect("checked above");
        let GroupState::Joining {
            backoff,
            unconfirmed,
            ..
        } = std::mem::replace(&mut g.state, GroupState::idle_now(now))
        else {
            unreachable!("checked above");
        };
        let backoff = Backoff {
            failures: backoff.failures + 1,
        };
        let unconfirmed = match (unconfirmed, timed_out) {
            // Two timed-out joins (of different JoinState bits, after an upgrade from
            // send-only): the SA may hold either, the token covers both.
            (Some(u), Some(js)) => Some(u.with(js)),
            (Some(u), None) => Some(u),
            (None, Some(js)) => Some(Unconfirmed::from_timeout(mgid, js)),
            (None, None) => None,
        };
        let at = now.saturating_add(backoff.delay(max_s));
        let retry_at = if g.kind == GroupKind::SendOnly && backoff.failures >= so_max {
            self.stats.mcast_sendonly_dropped += g.queue.len() as u64;
            g.queue.clear();
            RetryAt::NextPacket(at)
        } else {
            RetryAt::At(at)
        };
        let unsubscribed = g.remove_after_leave;
        g.state = GroupState::Idle {
            backoff,
            retry_at,
            unconfirmed,
        };
        if mgid == self.bcast_mgid && self.flush.is_none() {
            // The link stayed up across a light flush, but the broadcast group could not
            // be joined again: it is up only while the broadcast group is Joined.
            self.set_link(false);
        }
        if unsubscribed {
            // `leave_group` came while the join was in flight: nothing to leave unless
            // the join timed out (then `schedule_joins` leaves what the SA may hold).
            self.remove_idle_group(mgid);
            self.leave_when_due(mgid);
        }
    }

    /// An unsubscribed group still holding an `Unconfirmed` token: `schedule_joins`
    /// leaves it (instead of joining it) as soon as it may.
    fn leave_when_due(&mut self, mgid: Gid) {
        if let Some(GroupState::Idle { retry_at, .. }) =
            self.groups.get_mut(&mgid).map(|g| &mut g.state)
        {
            let at = match *retry_at {
                RetryAt::At(t) | RetryAt::NextPacket(t) => t,
            };
            *retry_at = RetryAt::At(at.min(self.clock.now()));
        }
    }

    fn leaving_tid(&self, mgid: &Gid) -> Option<Tid> {
        match self.groups.get(mgid).map(|g| &g.state) {
            Some(GroupState::Leaving { tid, .. }) => Some(*tid),
            _ => None,
        }
    }

    fn on_leave_done(&mut self, tid: Tid, mgid: Gid, now: Nanos) {
        if self.leaving_tid(&mgid) != Some(tid) {
            return;
        }
        self.stats.leaves_done += 1;
        tracing::info!(pkey = %self.cfg.pkey, %mgid, "ibpoll-ctrl: left group");
        // An unconfirmed leave names one JoinState bit per Delete (see `send_leave`):
        // go on with the bits left.
        let g = self.groups.get_mut(&mgid).expect("checked above");
        if let GroupState::Leaving { leave, .. } = &g.state {
            let rest = leave.join_state.difference(lowest_bit(leave.join_state));
            if !leave.confirmed && !rest.is_empty() {
                let GroupState::Leaving { mut leave, .. } =
                    std::mem::replace(&mut g.state, GroupState::idle_now(now))
                else {
                    unreachable!("matched above");
                };
                leave.join_state = rest;
                self.send_leave(mgid, leave, 1, now);
                return;
            }
        }
        self.after_leave(mgid, now);
    }

    fn on_leave_timeout(&mut self, tid: Tid, mgid: Gid, now: Nanos) {
        if self.leaving_tid(&mgid) != Some(tid) {
            return;
        }
        let g = self.groups.get_mut(&mgid).expect("checked above");
        let GroupState::Leaving { tries, leave, .. } =
            std::mem::replace(&mut g.state, GroupState::idle_now(now))
        else {
            unreachable!("checked above");
        };
        if tries < self.cfg.leave_tries {
            self.send_leave(mgid, leave, tries + 1, now);
        } else {
            // Every try was lost or refused: the SA may still hold the membership. The
            // obligation is kept as an `Unconfirmed` token (a leave that did not happen
            // must not be forgotten, or the SA keeps the membership for good): the
            // running flush, which must end in bounded time, does not try it again; the
            // next flush does, or `schedule_joins` for an unsubscribed group after the
            // longest backoff.
            self.stats.leaves_abandoned += 1;
            tracing::warn!(
                pkey = %self.cfg.pkey,
                %mgid,
                tries,
                "ibpoll-ctrl: every try to leave the group was lost or refused; the next flush tries again"
            );
            let retry = Nanos::from_secs(self.cfg.backoff_s_max);
            let g = self.groups.get_mut(&mgid).expect("checked above");
            g.state = GroupState::Idle {
                backoff: Backoff::default(),
                retry_at: RetryAt::At(now.saturating_add(retry)),
                unconfirmed: Some(leave.into_unconfirmed()),
            };
            g.leave_deferred = self.flush.is_some();
        }
    }

    /// Leaving ended: back to Idle, or out of the table.
    fn after_leave(&mut self, mgid: Gid, now: Nanos) {
        let Some(g) = self.groups.get_mut(&mgid) else {
            return;
        };
        g.state = GroupState::idle_now(now);
        let remove = mgid != self.bcast_mgid
            && g.queue.is_empty()
            && (g.remove_after_leave || (g.kind == GroupKind::SendOnly && self.flush.is_none()));
        if remove {
            self.groups.remove(&mgid, &mut self.changes);
        } else if let Some(g) = self.groups.get_mut(&mgid) {
            g.remove_after_leave = false;
        }
    }

    // ----- requests from the data cores -------------------------------------------------

    fn requests(&mut self, now: Nanos) -> usize {
        let mut n = 0;
        for i in 0..self.rings.len() {
            for _ in 0..self.cfg.requests_per_poll {
                let Some(req) = self.rings[i].ring.pop() else {
                    break;
                };
                n += 1;
                self.stats.requests += 1;
                match req {
                    Request::Mcast { group, mbuf } => self.mcast_request(group, mbuf, now),
                    Request::Resolve { next_hop, mbuf } => {
                        self.resolve_request(next_hop, mbuf, now)
                    }
                    Request::Arp { mbuf } => self.arp_input(mbuf, now),
                }
            }
        }
        n
    }

    /// A packet for a group the data core had no Joined entry for (DESIGN rule 4).
    fn mcast_request(&mut self, group: GroupAddr, mbuf: Mbuf, now: Nanos) {
        let Some(mgid) = self.mgid_of(group) else {
            self.stats.mcast_bad_group += 1;
            return;
        };
        if !self.groups.contains_key(&mgid) {
            if self.groups.len() >= self.cfg.groups_max {
                self.stats.mcast_table_full += 1;
                return;
            }
            self.groups
                .insert(Group::new(mgid, GroupKind::SendOnly, now));
        }
        let g = self.groups.get_mut(&mgid).expect("present");
        g.last_used = now;
        let sendable = match &g.state {
            GroupState::Joined { entry, .. } if self.flush.is_none() => Some(entry.clone()),
            _ => None,
        };
        if let Some(entry) = sendable {
            entry.mark_used();
            self.send_mcast(&entry, mbuf);
            return;
        }
        if let GroupState::Idle {
            retry_at: r @ RetryAt::NextPacket(_),
            ..
        } = &mut g.state
        {
            let RetryAt::NextPacket(t) = *r else {
                unreachable!()
            };
            *r = RetryAt::At(t.max(now));
        }
        if g.queue.len() >= self.cfg.mcast_queue_max {
            self.stats.mcast_queue_full += 1;
            return;
        }
        self.stats.mcast_queued += 1;
        g.queue.push_back(mbuf);
    }

    pub(crate) fn send_mcast(&mut self, entry: &Arc<McastEntry>, mbuf: Mbuf) {
        let desc = TxDesc {
            mbuf: Some(mbuf),
            ah: entry.ah(),
            remote_qpn: Qpn::MULTICAST,
            remote_qkey: entry.qkey,
        };
        self.tx_push(desc, entry.ah.clone());
    }

    // ----- sending ---------------------------------------------------------------------

    /// Queues one send; the guard keeps its address handle alive until it went out.
    pub(crate) fn tx_push(&mut self, desc: TxDesc, guard: Arc<AhGuard>) {
        if self.tx_descs.len() >= self.cfg.tx_backlog_max {
            self.tx_flush();
            if self.tx_descs.len() >= self.cfg.tx_backlog_max {
                self.stats.tx_backlog_full += 1;
                return;
            }
        }
        self.tx_descs.push_back(desc);
        self.tx_guards.push_back(guard);
    }

    fn tx_flush(&mut self) -> usize {
        if self.tx_descs.is_empty() {
            return 0;
        }
        let n = self.tx.tx_burst(self.tx_descs.make_contiguous());
        self.tx_descs.drain(..n);
        self.tx_guards.drain(..n);
        self.stats.tx_sent += n as u64;
        n
    }

    // ----- expiry ----------------------------------------------------------------------

    /// Leaves send-only groups unused for `sendonly_idle` (DESIGN rule 7) and ages
    /// neighbours.
    fn expire(&mut self, now: Nanos) -> usize {
        let mut n = 0;
        if self.flush.is_none() {
            // Only Joined send-only groups can expire (the table's index of them).
            self.reindex();
            self.scratch.clear();
            self.scratch
                .extend(self.groups.send_only_joined().iter().copied());
            let mut expired = 0;
            for i in 0..self.scratch.len() {
                let mgid = self.scratch[i];
                let Some(g) = self.groups.get_mut(&mgid) else {
                    continue;
                };
                if let GroupState::Joined { entry, .. } = &g.state {
                    if entry.take_used() {
                        g.last_used = now;
                    } else if now.saturating_sub(g.last_used) >= self.cfg.sendonly_idle {
                        self.scratch[expired] = mgid;
                        expired += 1;
                    }
                }
            }
            self.scratch.truncate(expired);
            for i in 0..self.scratch.len() {
                let mgid = self.scratch[i];
                if self.begin_leave(mgid, now, true) {
                    self.stats.mcast_expired += 1;
                    n += 1;
                }
            }
        }
        n + self.neigh_expire(now)
    }

    // ----- publishing ------------------------------------------------------------------

    /// Brings the indexes up to date with every write to the tables since the last call
    /// (cheap when there was none); a published entry that changed makes the snapshot
    /// dirty.
    pub(crate) fn reindex(&mut self) {
        let groups = self.groups.reindex(&mut self.changes);
        let neighbours = self.neighbours.reindex(&mut self.changes);
        if groups || neighbours {
            self.dirty = true;
        }
    }

    /// Publishes the current state. Rewrites a snapshot no reader holds (the spare, or
    /// one the publisher just reclaimed) by applying what changed since its generation,
    /// and builds one only when there is none: in steady state nothing is allocated.
    fn publish(&mut self) {
        self.reindex();
        self.publisher.reclaim();
        self.generation += 1;
        let mut snap = match self.spare.take() {
            Some(snap) => snap,
            None => match self.publisher.take_reclaimed() {
                Some(snap) => snap,
                None => {
                    self.stats.snapshots_built += 1;
                    Box::new(Snapshot {
                        pkey: self.cfg.pkey,
                        scope: self.cfg.scope,
                        ..Snapshot::default()
                    })
                }
            },
        };
        self.refresh(&mut snap);
        snap.generation = self.generation;
        // What changes from now on is published by the next generation.
        self.changes.set_next(self.generation + 1);
        match self.publisher.publish_box(snap) {
            Ok(_) => {
                self.stats.publishes += 1;
                self.dirty = false;
            }
            Err(full) => {
                // Up to date as of this generation: the next try starts from it.
                self.stats.publish_full += 1;
                self.spare = Some(full.into_snapshot());
            }
        }
        self.recycle();
    }

    /// Brings `snap` up to date with the current state: the changes logged since its
    /// generation (or everything, when the log does not reach back that far), and the
    /// scalar fields. Allocates only when a table outgrows its capacity.
    fn refresh(&mut self, snap: &mut Snapshot) {
        let (mut all_groups, mut all_neighbours) = (false, false);
        match self.changes.since(snap.generation) {
            None => (all_groups, all_neighbours) = (true, true),
            Some(changes) => {
                for c in changes {
                    match c {
                        Change::AllGroups => all_groups = true,
                        Change::AllNeighbours => all_neighbours = true,
                        Change::Group(_) | Change::Neigh(_) => {}
                    }
                }
            }
        }
        if snap.generation == 0 && snap.groups.is_empty() && snap.neighbours.is_empty() {
            // A fresh (or the initial) snapshot: filling it is cheaper than a replay.
            (all_groups, all_neighbours) = (true, true);
        }
        if all_groups {
            self.stats.snapshot_rebuilds += 1;
            snap.groups.clear();
            if self.flush.is_none() {
                for g in self.groups.values() {
                    if let GroupState::Joined { entry, .. } = &g.state {
                        snap.groups.insert(g.mgid, entry.clone());
                    }
                }
            }
        }
        if all_neighbours {
            snap.neighbours.clear();
            for ip in self.neighbours.keys() {
                if let Some(entry) = self.neigh_published(ip) {
                    snap.neighbours.insert(*ip, entry.clone());
                }
            }
        }
        if !(all_groups && all_neighbours) {
            let changes = self.changes.since(snap.generation).expect("checked above");
            for c in changes {
                match c {
                    Change::Group(mgid) if !all_groups => {
                        let entry = match self.flush {
                            Some(_) => None,
                            None => match self.groups.get(&mgid).map(|g| &g.state) {
                                Some(GroupState::Joined { entry, .. }) => Some(entry),
                                _ => None,
                            },
                        };
                        set_entry(&mut snap.groups, mgid, entry);
                    }
                    Change::Neigh(ip) if !all_neighbours => {
                        set_entry(&mut snap.neighbours, ip, self.neigh_published(&ip));
                    }
                    _ => {}
                }
            }
        }
        snap.broadcast = match (&self.flush, self.groups.get(&self.bcast_mgid)) {
            (
                None,
                Some(Group {
                    state: GroupState::Joined { entry, .. },
                    ..
                }),
            ) => Some(entry.clone()),
            _ => None,
        };
        snap.link_up = self.link_up;
        snap.mtu = self
            .bcast_record
            .and_then(|r| IbMtu::from_code(r.mtu))
            .map_or(0, |m| m.ipoib_mtu());
        snap.pkey = self.cfg.pkey;
        snap.scope = self.cfg.scope;
    }

    /// Takes a snapshot the publisher reclaimed and keeps it as the spare, brought up to
    /// date at once: it then names no entry the published snapshot does not (an address
    /// handle is destroyed as soon as no published or retired snapshot names it). Then
    /// forgets the changes every live snapshot has.
    fn recycle(&mut self) {
        if let Some(mut snap) = self.publisher.take_reclaimed() {
            if self.spare.is_none() {
                self.refresh(&mut snap);
                snap.generation = self.generation;
                self.spare = Some(snap);
            }
        }
        if self.changes.len() == 0 {
            return;
        }
        // The oldest generation a snapshot that may come back for reuse has: the current
        // one, the retired ones, the spare.
        let mut oldest = self.publisher.current().generation;
        if let Some(retired) = self.publisher.pending_oldest() {
            oldest = oldest.min(retired.generation);
        }
        if let Some(spare) = &self.spare {
            oldest = oldest.min(spare.generation);
        }
        self.changes.trim(oldest);
    }

    /// For tests: the group table's indexes match its entries, and the published
    /// snapshot equals one built from scratch from the current state: same groups and
    /// neighbours (the very same entries), same link state, MTU and broadcast group.
    /// `Err` names the first difference. The snapshot is compared only when nothing
    /// waits to be published (after a poll whose publish went through).
    #[doc(hidden)]
    pub fn check_snapshot(&mut self) -> Result<(), String> {
        self.reindex();
        self.groups.check()?;
        if self.dirty {
            return Ok(());
        }
        let mut fresh = Snapshot::default();
        self.refresh(&mut fresh);
        let snap = self.publisher.current();
        if snap.generation != self.generation {
            return Err(format!(
                "published generation {} but {} was built",
                snap.generation, self.generation
            ));
        }
        if (snap.link_up, snap.mtu, snap.pkey, snap.scope)
            != (fresh.link_up, fresh.mtu, fresh.pkey, fresh.scope)
        {
            return Err(format!(
                "scalars differ: published {snap:?}, fresh {fresh:?}"
            ));
        }
        let same = |a: &Option<Arc<McastEntry>>, b: &Option<Arc<McastEntry>>| match (a, b) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if !same(&snap.broadcast, &fresh.broadcast) {
            return Err(String::from("broadcast entry differs"));
        }
        for (what, a, b) in [
            ("published", &snap.groups, &fresh.groups),
            ("fresh", &fresh.groups, &snap.groups),
        ] {
            for (mgid, e) in a {
                if !b.get(mgid).is_some_and(|f| Arc::ptr_eq(e, f)) {
                    return Err(format!("group {mgid}: {what} has an entry the other lacks"));
                }
            }
        }
        for (what, a, b) in [
            ("published", &snap.neighbours, &fresh.neighbours),
            ("fresh", &fresh.neighbours, &snap.neighbours),
        ] {
            for (ip, e) in a {
                if !b.get(ip).is_some_and(|f| Arc::ptr_eq(e, f)) {
                    return Err(format!(
                        "neighbour {ip:?}: {what} has an entry the other lacks"
                    ));
                }
            }
        }
        Ok(())
    }

    pub(crate) fn ah_destroyed(&self) -> Arc<Counter> {
        self.ah_destroyed.clone()
    }

    /// The snapshot as published last (the control core's view).
    pub fn snapshot(&self) -> &Snapshot {
        self.publisher.current()
    }
}

/// Makes `map[key]` the entry `entry` (the same `Arc`), or removes it.
fn set_entry<K, V, S>(
    map: &mut std::collections::HashMap<K, Arc<V>, S>,
    key: K,
    entry: Option<&Arc<V>>,
) where
    K: std::hash::Hash + Eq,
    S: std::hash::BuildHasher,
{
    match (entry, map.get_mut(&key)) {
        (Some(e), Some(slot)) => {
            if !Arc::ptr_eq(e, slot) {
                *slot = e.clone();
            }
        }
        (Some(e), None) => {
            map.insert(key, e.clone());
        }
        (None, Some(_)) => {
            map.remove(&key);
        }
        (None, None) => {}
    }
}

/// The lowest JoinState bit of `js` (none if empty).
fn lowest_bit(js: JoinState) -> JoinState {
    let b = js.bits();
    JoinState::from_bits_truncate(b & b.wrapping_neg())
}
