//! The controller: one pollable state machine that owns every piece of mutable control
//! state (groups, neighbours, SA transactions, flush) for one IPoIB interface.
//!
//! [`Controller::poll`] runs one bounded round of each part, in this order, each in its
//! own module as another `impl Controller` block:
//!
//! - `flush`: port events start a flush (or raise its level); a running flush drains
//!   joins and path queries, leaves every group, and ends;
//! - `link_events`: the ends of link-layer transactions (SA answers and timeouts on
//!   InfiniBand, local answers on RoCE; see `crate::link`), handed to the multicast
//!   state machine (`join`, `leave`), to path resolution (`neigh`) and to the startup
//!   cleanup;
//! - `cleanup`: before the first join, leave what an earlier instance on this port left
//!   at the SA;
//! - `requests`: what the data cores ask through their rings (multicast packets for
//!   groups not Joined, unresolved next hops, ARP);
//! - `join` and `leave`: the multicast state machine's transitions (Idle -> Joining ->
//!   Joined -> Leaving -> Idle or removed);
//! - `neigh` (beside this module): ARP and path records;
//! - `expire`: send-only groups unused for too long, and neighbours;
//! - `ctl_tx`: the control core's own send backlog;
//! - `publish`: the snapshot the data cores read, rewritten in place from the change log;
//!   `check` compares it with one built afresh (for tests).

mod check;
mod cleanup;
mod ctl_tx;
mod expire;
mod flush;
mod inspect;
mod join;
mod leave;
mod link_events;
mod publish;
mod requests;
mod subscribe;

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use crossbeam::queue::ArrayQueue;
use ibpoll_dev::{Clock, Counter, LinkLayer, Nanos, Port, PortAttr, PortState, TxDst, TxQueue};
use ibpoll_mem::{MbufArray, Mempool};
use ibpoll_rcu::{Publisher, Registry};
use ibpoll_wire::ipoib::HwAddr;
use ibpoll_wire::mcmember;
use ibpoll_wire::{Gid, Qpn};

use crate::link::ib::IbLink;
use crate::link::roce::RoceLink;
use crate::link::{self, LinkEvent, LinkLayerOps};
use crate::mcast::{Group, GroupKind, GroupPhase, GroupState};
use crate::mgid::McastMap;
use crate::nh::NhSlab;
use crate::owner::PortClaim;
use crate::reaper::{AhGuard, AhReaper, TxProgress};
use crate::ring::{DataCore, GroupAddr, RequestRing, RequestSender};
use crate::snapshot::Snapshot;
use crate::subs::{RequestDrops, SubBoard, Subscriptions};
use crate::table::{ChangeLog, GroupTable, NeighTable};
use crate::{CtrlConfig, CtrlStats, Error};

pub use inspect::{GroupInfo, NeighInfo, NeighPhase, PathInfo};

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
    /// queues).
    RebuildQp {
        /// The P_Key index the QP must use.
        pkey_index: u16,
    },
}

const EVENTS_MAX: usize = 64;

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
    /// The interface's QPN (in its hardware address): lane 0's QP.
    pub(crate) qpn: Qpn,
    /// Each lane's QP, in lane order: the QP a group assigned to that lane is attached to.
    pub(crate) lane_qpns: Vec<Qpn>,
    /// The control core's own send-only QP.
    pub(crate) tx: Box<dyn TxQueue>,
    pub(crate) pool: Mempool,
    /// The link layer's strategy: joins, leaves, paths and group names (see `link`).
    pub(crate) link: Box<dyn LinkLayerOps>,
    /// How groups are named on this interface (the strategy's, kept at hand).
    pub(crate) map: McastMap,
    /// This process's claim on the port (InfiniBand with `owner_lock_dir`); released
    /// when the controller is dropped.
    _claim: Option<PortClaim>,
    /// The startup cleanup's progress (see `cleanup`).
    pub(crate) cleanup: cleanup::Cleanup,
    publisher: Publisher<Snapshot>,
    rings: Vec<RequestRing>,
    /// The data cores' sockets' subscriptions (see `subs`).
    pub(crate) subs: Subscriptions,
    sub_scratch: Vec<Gid>,
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
    /// The device reported a fatal error: the port never counts as Active again.
    pub(crate) device_dead: bool,
    /// A heavy flush asked the stack to move the QPs to a new P_Key index
    /// ([`CtrlEvent::RebuildQp`]); nothing is joined or sent until it says it did
    /// ([`Controller::qps_moved`]).
    pub(crate) qp_move_pending: bool,
    admin_up: bool,
    pkey_index: Option<u16>,
    pub(crate) flush: Option<Flush>,
    pub(crate) link_up: bool,
    pub(crate) dirty: bool,
    pub(crate) stats: CtrlStats,
    ah_destroyed: Arc<Counter>,
    pub(crate) reaper: Arc<AhReaper>,
    pub(crate) nh: Arc<NhSlab>,
    /// The control core's send backlog: packets, where each goes, and the guards that
    /// keep their address handles alive until they went out...
    pub(crate) tx_pkts: MbufArray,
    pub(crate) tx_dst: Box<[TxDst]>,
    pub(crate) tx_guards: VecDeque<Arc<AhGuard>>,
    /// ... and, once posted, until they completed: (posting sequence, guard).
    pub(crate) tx_inflight: VecDeque<(u64, Arc<AhGuard>)>,
    /// Sends posted on `tx` so far.
    pub(crate) tx_posted: u64,
    events: VecDeque<CtrlEvent>,
    next_expiry_check: Nanos,
    generation: u64,
    /// What changed in the published view since the oldest snapshot still alive.
    pub(crate) changes: ChangeLog,
    /// A snapshot no reader holds, up to date with the state as of its generation: the
    /// next publish rewrites it instead of allocating one.
    spare: Option<Box<Snapshot>>,
    pub(crate) gratuitous_arp: bool,
    link_events: Vec<LinkEvent>,
    scratch: Vec<Gid>,
    /// The mutation `ibpoll-simtest` must catch: a leave is tried once, never again
    /// (see [`Controller::mutate_no_leave_retries`]). Always false outside that test.
    pub(crate) no_leave_retries: bool,
}

impl fmt::Debug for Controller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Controller")
            .field("qpn", &self.qpn)
            .field("groups", &self.groups.len())
            .field("neighbours", &self.neighbours.len())
            .field("link_up", &self.link_up)
            .field("flush", &self.flush)
            .field("link", &self.link)
            .finish_non_exhaustive()
    }
}

impl Controller {
    /// Creates the controller of an interface on `port` whose QPs are `qps`, and one
    /// [`DataCore`] handle per data core (`cfg.data_cores`, one per lane of `qps`).
    ///
    /// The controller owns `qps.tx` (a send-only QP of its own) from now on: it sends
    /// queued packets, ARP and gratuitous ARP through it. `pool` is where it takes
    /// buffers for the packets it builds (ARP). Time comes only from `clock`.
    pub fn new(
        cfg: CtrlConfig,
        port: Arc<dyn Port>,
        qps: CtrlQps,
        pool: Mempool,
        clock: Arc<dyn Clock>,
    ) -> Result<(Controller, Vec<DataCore>), Error> {
        cfg.check()?;
        if qps.lane_qpns.first() != Some(&qps.iface_qpn) {
            return Err(Error::Lanes {
                data_cores: cfg.data_cores,
                lane_qpns: qps.lane_qpns.len(),
            });
        }
        let CtrlQps {
            iface_qpn: qpn,
            lane_qpns,
            tx,
        } = qps;
        let attr = port.attr();
        let pkey_index = attr.pkey_index(cfg.pkey).ok_or(Error::NoPkey {
            port: attr.port_num,
            pkey: cfg.pkey,
        })?;
        let (link, claim) = link_layer(&cfg, &*port, &attr)?;
        // Every group and neighbour can have an entry in the current snapshot and an
        // older one in a snapshot that is still being given back.
        let nh = Arc::new(NhSlab::new(2 * (cfg.groups_max + cfg.neigh_max) + 8));
        let map = link.mcast_map();
        let initial = Snapshot::new(cfg.pkey, cfg.scope, map, nh.used.clone());
        let (mut publisher, registry) =
            ibpoll_rcu::new(initial, cfg.data_cores).map_err(|source| Error::Snapshot {
                data_cores: cfg.data_cores,
                source,
            })?;
        // One reclaimed snapshot is enough to publish without allocating: readers that
        // quiesce every loop give the previous one back before the next publish.
        publisher.set_recycle_max(1);
        let (rings, cores) = data_core_rings(&cfg, &registry)?;
        let subs = Subscriptions::new(rings.iter().map(|r| r.subs.clone()).collect());
        let ah_destroyed = Arc::new(Counter::new());
        let progress = cores.iter().map(|c| c.progress.clone()).collect();
        let reaper = Arc::new(AhReaper::new(port.clone(), progress, ah_destroyed.clone()));
        let inflight_max = cfg.tx_backlog_max + 32768;
        let now = clock.now();
        let bcast_mgid = map.broadcast();
        let mut groups = GroupTable::with_touched_capacity(cfg.groups_max.min(4096));
        groups.insert(Group::new(bcast_mgid, GroupKind::Broadcast, now));
        for mgid in crate::nd::own_groups(&cfg, map) {
            groups.insert(Group::new(mgid, GroupKind::Full, now));
        }
        let port_gid = link.port_gid();
        let ctl = Controller {
            clock,
            port,
            qpn,
            lane_qpns,
            tx,
            pool,
            link,
            map,
            _claim: claim,
            cleanup: cleanup::Cleanup::new(cfg.sa_cleanup),
            publisher,
            rings,
            subs,
            sub_scratch: Vec::new(),
            groups,
            bcast_mgid,
            bcast_record: None,
            neighbours: NeighTable::with_touched_capacity(cfg.neigh_max.min(4096)),
            port_gid,
            port_active: attr.state == PortState::Active,
            device_dead: false,
            qp_move_pending: false,
            admin_up: true,
            pkey_index: Some(pkey_index),
            flush: None,
            link_up: false,
            dirty: true,
            stats: CtrlStats::default(),
            ah_destroyed,
            reaper,
            nh,
            tx_pkts: MbufArray::with_capacity(cfg.tx_backlog_max),
            tx_dst: vec![ctl_tx_dst_zero(); cfg.tx_backlog_max].into_boxed_slice(),
            tx_guards: VecDeque::with_capacity(cfg.tx_backlog_max),
            tx_inflight: VecDeque::with_capacity(inflight_max),
            tx_posted: 0,
            events: VecDeque::with_capacity(EVENTS_MAX),
            next_expiry_check: now.saturating_add(Nanos::from_secs(1)),
            generation: 0,
            changes: ChangeLog::new(1),
            spare: None,
            gratuitous_arp: false,
            link_events: Vec::with_capacity(link::RECV_PER_POLL + cfg.sa_window),
            scratch: Vec::with_capacity(cfg.groups_max),
            no_leave_retries: false,
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
        work += self.link_poll(now);
        work += self.cleanup_progress(now);
        work += self.requests(now);
        work += self.flush_progress(now);
        work += self.schedule_joins(now);
        work += self.neigh_timers(now);
        work += self.expire_due(now);
        if !self.qp_move_pending {
            work += self.tx_flush();
        }
        work += self.publish_changes();
        self.sync_subs();
        self.reaper.reap();
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

    /// The stack moved every QP of the interface to the P_Key index a
    /// [`CtrlEvent::RebuildQp`] named (`ok`), or could not (the interface goes
    /// administratively down: a QP left in another partition must carry nothing). Joins
    /// and the control core's sends resume only after this.
    pub fn qps_moved(&mut self, ok: bool) {
        self.qp_move_pending = false;
        if !ok {
            self.set_admin_up(false);
        }
    }

    /// The P_Key index the QPs are to be moved to, while a [`CtrlEvent::RebuildQp`]
    /// waits for [`qps_moved`](Self::qps_moved).
    pub fn qp_move_pending(&self) -> Option<u16> {
        self.pkey_index.filter(|_| self.qp_move_pending)
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

    /// Packets queued for one unresolved neighbour, by IPv4 (`[u8; 4]`) or IPv6
    /// (`[u8; 16]`) address (0 when it is not in the table).
    pub fn neigh_queued_for(&self, ip: impl Into<std::net::IpAddr>) -> usize {
        self.neighbours.get(&ip.into()).map_or(0, |n| n.queue.len())
    }

    /// Neighbours in the table.
    pub fn neighbour_count(&self) -> usize {
        self.neighbours.len()
    }

    /// Packets queued for unresolved neighbours.
    pub fn neigh_queued(&self) -> usize {
        self.neighbours.values().map(|n| n.queue.len()).sum()
    }

    /// Link-layer transactions (SA transactions on InfiniBand) in flight.
    pub fn sa_in_flight(&self) -> usize {
        self.link.txns().in_flight()
    }

    /// The link layer of the interface's port (what the controller's strategy serves).
    pub fn link_layer(&self) -> LinkLayer {
        self.link.link_layer()
    }

    /// How the interface names its multicast groups.
    pub fn mcast_map(&self) -> McastMap {
        self.map
    }

    /// Whether the startup cleanup (see [`CtrlConfig::sa_cleanup`]) still runs or waits
    /// to run (in the background too, after it stopped blocking joins).
    pub fn cleanup_running(&self) -> bool {
        self.cleanup.is_running()
    }

    /// Whether the startup cleanup holds joins back (at most `cleanup_max`, or until a
    /// listing went unanswered `leave_tries` times).
    pub fn cleanup_blocks_joins(&self) -> bool {
        self.cleanup.blocks_joins()
    }

    /// Whether this port means to stay a member of `mgid` at the SA: the group is Joined
    /// and nothing (a flush, an unsubscription, an upgrade from send-only) is about to
    /// leave it, or its join is in flight for a group still wanted. False once the
    /// controller has decided to leave it (Leaving, an `Unconfirmed` obligation, Joined
    /// but to be left) and for a group not in the table. `ibpoll-simtest`'s liveness
    /// check times how long the SA keeps a membership for which this is false.
    #[doc(hidden)]
    pub fn means_to_keep(&self, mgid: &Gid) -> bool {
        let Some(g) = self.groups.get(mgid) else {
            return false;
        };
        if g.remove_after_leave {
            return false;
        }
        match &g.state {
            GroupState::Joined { membership, .. } => {
                self.flush.is_none() && membership.join_state().contains(g.kind.join_state())
            }
            GroupState::Joining { .. } => true,
            GroupState::Idle { .. } | GroupState::Leaving { .. } => false,
        }
    }

    /// A mutation for `ibpoll-simtest` only: with `on`, a leave that times out or is
    /// refused is not tried again (its obligation waits for the next flush, or for the
    /// longest backoff), as if DESIGN rule 6's retries were removed. The simulator's
    /// liveness check must fail on it; nothing else may call this.
    #[doc(hidden)]
    pub fn mutate_no_leave_retries(&mut self, on: bool) {
        self.no_leave_retries = on;
    }

    /// The broadcast group's record from its last successful join.
    pub fn broadcast_record(&self) -> Option<&mcmember::Repr> {
        self.bcast_record.as_ref()
    }

    /// The IPoIB hardware address of this interface.
    pub fn hwaddr(&self) -> HwAddr {
        HwAddr::new(0, self.qpn, self.port_gid)
    }

    /// The MGID a group address maps to on this interface, if it is one of its groups
    /// (see [`McastMap`]).
    pub fn mgid_of(&self, group: GroupAddr) -> Option<Gid> {
        let mgid = match group {
            GroupAddr::Mgid(m) => m,
            GroupAddr::Ipv4(ip) => {
                if ip[0] & 0xf0 != 0xe0 {
                    return None;
                }
                self.map.ipv4(ip)
            }
            GroupAddr::Ipv6(ip) => {
                if !ibpoll_wire::ipv6::is_multicast(&ip) {
                    return None;
                }
                self.map.ipv6(ip)
            }
        };
        self.map.is_group(&mgid).then_some(mgid)
    }

    /// The snapshot as published last (the control core's view).
    pub fn snapshot(&self) -> &Snapshot {
        self.publisher.current()
    }

    /// The control core's own send-only QP.
    pub fn ctl_qpn(&self) -> Qpn {
        self.tx.src_qpn()
    }

    /// Every QP of the interface: the lanes' and the control core's.
    pub fn qpns(&self) -> impl Iterator<Item = Qpn> + '_ {
        self.lane_qpns
            .iter()
            .copied()
            .chain(std::iter::once(self.ctl_qpn()))
    }

    /// The QP group `mgid` is attached to: the broadcast group on the interface's own
    /// QP (ARP goes to the control core through it), every other group on the lane an
    /// MGID hash picks, so groups spread over the lanes and each is received by one.
    pub fn lane_qpn_for(&self, mgid: &Gid) -> Qpn {
        if *mgid == self.bcast_mgid || self.lane_qpns.len() == 1 {
            return self.qpn;
        }
        let h = mgid
            .0
            .iter()
            .fold(0u32, |h, &b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
        self.lane_qpns[h as usize % self.lane_qpns.len()]
    }

    /// Address handles retired and waiting for their sends to complete.
    pub fn ah_waiting(&self) -> usize {
        self.reaper.waiting()
    }

    /// A guard that retires `ah` through this controller's reaper when dropped.
    pub(crate) fn ah_guard(&self, ah: ibpoll_dev::AddressHandle) -> Arc<AhGuard> {
        Arc::new(AhGuard::new(self.reaper.clone(), ah))
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
}

/// The link layer's strategy for `port`, picked from its link layer, and (InfiniBand
/// with an owner-lock directory) this process's claim on the port, taken before the
/// MAD channel is opened.
fn link_layer(
    cfg: &CtrlConfig,
    port: &dyn Port,
    attr: &PortAttr,
) -> Result<(Box<dyn LinkLayerOps>, Option<PortClaim>), Error> {
    if attr.link_layer == LinkLayer::Ethernet {
        let l = RoceLink::new(attr, cfg.ipv4, cfg.sa_window, cfg.sa_timeout)?;
        return Ok((Box::new(l), None));
    }
    let claim = cfg
        .owner_lock_dir
        .as_deref()
        .map(|dir| PortClaim::claim(dir, attr.gid.guid(), cfg.pkey))
        .transpose()?;
    let chan = port
        .open_mad_channel()
        .map_err(|source| Error::MadChannel {
            port: attr.port_num,
            source,
        })?;
    let l = IbLink::new(
        chan,
        attr,
        cfg.pkey,
        cfg.scope,
        cfg.sa_window,
        cfg.sa_timeout,
    );
    Ok((Box::new(l), claim))
}

/// One request ring and one [`DataCore`] handle (its snapshot reader and the ring's
/// producer end) per data core.
fn data_core_rings(
    cfg: &CtrlConfig,
    registry: &Registry<Snapshot>,
) -> Result<(Vec<RequestRing>, Vec<DataCore>), Error> {
    let mut rings = Vec::with_capacity(cfg.data_cores);
    let mut cores = Vec::with_capacity(cfg.data_cores);
    for _ in 0..cfg.data_cores {
        let ring = Arc::new(ArrayQueue::new(cfg.ring_size));
        let full = Arc::new(Counter::new());
        let reader = registry.register().map_err(|source| Error::Snapshot {
            data_cores: cfg.data_cores,
            source,
        })?;
        let subs = Arc::new(SubBoard::new());
        let drops = Arc::new(RequestDrops::default());
        cores.push(DataCore {
            reader,
            requests: RequestSender::new(ring.clone(), full.clone()),
            progress: Arc::new(TxProgress::default()),
            subs: subs.clone(),
            drops: drops.clone(),
        });
        rings.push(RequestRing {
            ring,
            full,
            subs,
            drops,
        });
    }
    Ok((rings, cores))
}

/// The QPs an interface's controller knows: what it attaches groups to, sets Q_Keys on
/// and sends with.
#[derive(Debug)]
#[non_exhaustive]
pub struct CtrlQps {
    /// The interface's QPN (its hardware address): lane 0's QP, which receives unicast
    /// and the broadcast group.
    pub iface_qpn: Qpn,
    /// The QPs that receive multicast, in lane order (`lane_qpns[0] == iface_qpn`):
    /// usually one per data core; groups spread over them.
    pub lane_qpns: Vec<Qpn>,
    /// The control core's own send-only QP's send queue.
    pub tx: Box<dyn TxQueue>,
}

impl CtrlQps {
    /// The QPs of an interface.
    pub fn new(iface_qpn: Qpn, lane_qpns: Vec<Qpn>, tx: Box<dyn TxQueue>) -> CtrlQps {
        CtrlQps {
            iface_qpn,
            lane_qpns,
            tx,
        }
    }

    /// Creates an interface's QPs on `port`: one per lane from `lane` (the first is the
    /// interface's own), and a send-only one for the control core (`lane` with no
    /// receive ring). Returns the controller's part and the lanes' QPs, in lane order.
    pub fn create(
        port: &dyn Port,
        lane: &ibpoll_dev::UdQpConfig,
        lanes: usize,
    ) -> Result<(CtrlQps, Vec<ibpoll_dev::UdQp>), ibpoll_dev::Error> {
        let qps = (0..lanes.max(1))
            .map(|_| port.create_ud_qp(lane))
            .collect::<Result<Vec<_>, _>>()?;
        let mut ctl = lane.clone();
        ctl.rx_ring_size = 0;
        let ctl = port.create_ud_qp(&ctl)?;
        let lane_qpns: Vec<Qpn> = qps.iter().map(|q| q.qpn).collect();
        Ok((CtrlQps::new(lane_qpns[0], lane_qpns, ctl.tx), qps))
    }
}

/// A placeholder destination for unused backlog slots.
fn ctl_tx_dst_zero() -> TxDst {
    TxDst {
        ah: ibpoll_dev::AddressHandle::from_raw(0),
        qpn: Qpn::from_bits(0),
        qkey: ibpoll_wire::QKey(0),
    }
}
