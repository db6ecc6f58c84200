//! The fabric: subnet manager, switch tables and the public control handle.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use ibpoll_dev::{
    AddressHandle, AhAttr, Clock, Device, Error, LinkLayer, MadChannel, MonotonicClock, Parked,
    Port, PortAttr, PortEvent, PortState, RxCounters, UdCaps, UdQp, UdQpConfig,
};
use ibpoll_mem::Mempool;
use ibpoll_wire::{Gid, IbMtu, Lid, PKey, QKey, Qpn, Rate};

use crate::fault::FaultConfig;
use crate::mad::MadInbox;
use crate::pcap::{PcapError, PcapStatus, PcapWriter};
use crate::ring::InboxRing;
use crate::sa::{SaConfig, SubnetAdmin};

/// The LID of the subnet manager's own port, where the SA answers (as under ibsim).
pub(crate) const SM_LID: Lid = Lid(1);
/// QPNs handed to UD QPs start here (QP0 and QP1 are special; stay clear of them).
const QPN_BASE: u32 = 0x48;
/// Address handles per fabric (the index part of a handle is 16 bits).
const AH_MAX: usize = 1 << 16;
/// QPs per port.
const QP_PER_PORT_MAX: usize = 1024;
/// Work requests a simulated queue holds.
const SIM_MAX_WR: u32 = 32768;
/// Multicast attachments per QP, as HCAs bound them (mlx5: thousands; keep it large).
const ATTACH_PER_QP_MAX: usize = 1 << 14;

/// How to build a simulated subnet.
#[derive(Debug, Clone)]
pub struct FabricConfig {
    /// Seeds every random draw of the fabric (faults, reordering).
    pub seed: u64,
    /// The subnet prefix of every port GID.
    pub subnet_prefix: u64,
    /// Every port's initial P_Key table; each partition gets a broadcast group.
    pub partitions: Vec<PKey>,
    /// The MTU of the broadcast groups (sets the IPoIB MTU).
    pub broadcast_mtu: IbMtu,
    /// The active MTU of every link.
    pub port_mtu: IbMtu,
    /// The link rate of every port.
    pub rate: Rate,
    /// Faults to inject from the start.
    pub faults: FaultConfig,
    /// Where time comes from (SA answer delays).
    pub clock: Arc<dyn Clock>,
    /// What every port's UD QPs can do. The default is an InfiniBand HCA's answer through
    /// verbs (one receive queue per QPN, one send queue per QP, no loopback block);
    /// [`FabricConfig::with_rss`] and [`FabricConfig::with_mcast_lb_block`] opt in to more.
    pub ud_caps: UdCaps,
}

impl FabricConfig {
    /// Lets a QPN have up to `queues` receive queues, spread by a flow hash over the
    /// IPv4 addresses, protocol and ports (RSS, which verbs offers only for raw-packet
    /// QPs on Ethernet ports).
    pub fn with_rss(mut self, queues: u16) -> FabricConfig {
        self.ud_caps.rx_queues_per_qpn = queues.max(1);
        self
    }

    /// Lets QPs ask the HCA to drop the multicast they send before it loops back
    /// (`IBV_QP_CREATE_BLOCK_SELF_MCAST_LB`, as mlx5 offers).
    pub fn with_mcast_lb_block(mut self) -> FabricConfig {
        self.ud_caps.block_self_mcast_lb = true;
        self
    }
}

impl Default for FabricConfig {
    fn default() -> Self {
        FabricConfig {
            seed: 0x1b_1b_1b,
            subnet_prefix: Gid::DEFAULT_SUBNET_PREFIX,
            partitions: vec![PKey::DEFAULT],
            broadcast_mtu: IbMtu::Mtu2048,
            port_mtu: IbMtu::Mtu4096,
            rate: Rate::GBPS_10,
            faults: FaultConfig::default(),
            clock: Arc::new(MonotonicClock::new()),
            ud_caps: UdCaps::verbs(SIM_MAX_WR, QP_PER_PORT_MAX as u32),
        }
    }
}

/// A node (one simulated HCA) of the fabric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u32);

/// A port of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortId {
    /// The node.
    pub node: NodeId,
    /// The port number (1-based).
    pub port: u8,
}

/// Why the fabric dropped a packet. Each reason has its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(usize)]
pub(crate) enum DropReason {
    /// The receive queue had no free posted buffer (receiver overrun), or the QP has
    /// no receive queue (a send-only QP).
    NoReceivePosted,
    /// The receiver's pool was empty (`rx_nombuf`).
    NoBuffer,
    /// Q_Key mismatch.
    QKey,
    /// P_Key mismatch.
    PKey,
    /// Longer than the path or group MTU.
    TooLong,
    /// No port has the destination LID, or no group the MLID.
    UnknownLid,
    /// No RoCE port has the destination GID in its GID table.
    UnknownGid,
    /// No QP with that number on the destination port.
    UnknownQpn,
    /// The sending or receiving port is not Active.
    PortDown,
    /// Sent to a group the sending port is not a member of.
    McastNotMember,
    /// The address handle was destroyed or never existed.
    BadAh,
    /// Lost by fault injection.
    FaultLoss,
    /// Shorter than an IPoIB header.
    Malformed,
}

impl DropReason {
    pub(crate) const ALL: [DropReason; 13] = [
        DropReason::NoReceivePosted,
        DropReason::NoBuffer,
        DropReason::QKey,
        DropReason::PKey,
        DropReason::TooLong,
        DropReason::UnknownLid,
        DropReason::UnknownGid,
        DropReason::UnknownQpn,
        DropReason::PortDown,
        DropReason::McastNotMember,
        DropReason::BadAh,
        DropReason::FaultLoss,
        DropReason::Malformed,
    ];

    /// The counter's name.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            DropReason::NoReceivePosted => "no_receive_posted",
            DropReason::NoBuffer => "no_buffer",
            DropReason::QKey => "qkey_mismatch",
            DropReason::PKey => "pkey_mismatch",
            DropReason::TooLong => "too_long",
            DropReason::UnknownLid => "unknown_lid",
            DropReason::UnknownGid => "unknown_gid",
            DropReason::UnknownQpn => "unknown_qpn",
            DropReason::PortDown => "port_down",
            DropReason::McastNotMember => "mcast_not_member",
            DropReason::BadAh => "bad_ah",
            DropReason::FaultLoss => "fault_loss",
            DropReason::Malformed => "malformed",
        }
    }
}

/// What the fabric did, in counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FabricStats {
    /// Packets handed to a transmit queue.
    pub sent: u64,
    /// Copies placed in a receive queue (a multicast packet counts once per receiver).
    pub delivered: u64,
    /// Drops, indexed like the reasons in [`FabricStats::drops`].
    drop_counts: [u64; DropReason::ALL.len()],
    /// MADs received by the subnet administrator.
    pub sa_requests: u64,
    /// Answers the subnet administrator queued.
    pub sa_answers: u64,
    /// Requests lost by fault injection before the SA saw them.
    pub sa_requests_lost: u64,
    /// Answers lost by fault injection after the SA acted.
    pub sa_answers_lost: u64,
    /// Answers delivered twice by fault injection.
    pub sa_answers_duplicated: u64,
    /// Requests answered with an injected error status (the SA did not act on them).
    pub sa_errors_injected: u64,
    /// Frames written to the pcap tap.
    pub pcap_frames: u64,
}

impl FabricStats {
    /// Every drop reason with its count, in a fixed order.
    pub fn drops(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        DropReason::ALL
            .iter()
            .map(move |d| (d.name(), self.drop_counts[*d as usize]))
    }

    /// The count for one drop reason by name (`"qkey_mismatch"`, ...); 0 if unknown.
    pub fn drop_count(&self, name: &str) -> u64 {
        self.drops().find(|(n, _)| *n == name).map_or(0, |(_, c)| c)
    }

    /// All drops together.
    pub fn dropped(&self) -> u64 {
        self.drop_counts.iter().sum()
    }

    pub(crate) fn count(&mut self, why: DropReason, n: u64) {
        self.drop_counts[why as usize] += n;
    }
}

/// A port as the subnet manager sees it.
#[derive(Debug)]
pub(crate) struct PortData {
    pub(crate) num: u8,
    pub(crate) guid: u64,
    /// InfiniBand, or Ethernet (RoCE v2: LID 0, GIDs from `ipv4`, no SA).
    pub(crate) link_layer: LinkLayer,
    /// A RoCE port's netdev address: its GID table holds the IPv4-mapped GID.
    pub(crate) ipv4: Option<[u8; 4]>,
    pub(crate) lid: Lid,
    pub(crate) state: PortState,
    pub(crate) pkeys: Vec<PKey>,
    pub(crate) mtu: IbMtu,
    pub(crate) events: VecDeque<PortEvent>,
    /// `events.len()`, mirrored outside the lock: stored (Relaxed) under the lock by
    /// every change of `events`, loaded (Relaxed) by `SimPort::poll_event` without it, so
    /// that a controller polling an empty queue never takes the fabric lock (which a send
    /// burst on another lcore may hold). It orders nothing: the events themselves are
    /// read under the lock, and a stale 0 only delays an event to the next poll.
    pub(crate) events_queued: Arc<AtomicUsize>,
}

#[derive(Debug)]
pub(crate) struct Node {
    pub(crate) name: String,
    pub(crate) first_port: usize,
    pub(crate) nports: u8,
}

/// One receive queue's posted buffers, shared by the senders that fill it and the lcore
/// that drains it.
#[derive(Debug)]
pub(crate) struct RxRing {
    /// Filled buffers waiting for `rx_burst`; its capacity is the number of posted
    /// receive buffers. The switch (under the fabric lock) produces, the queue's lcore
    /// consumes.
    pub(crate) inbox: InboxRing,
    /// Where the "DMA" takes its buffers from.
    pub(crate) pool: Mempool,
    pub(crate) counters: Arc<RxCounters>,
    /// The queue's index within its QP (`MbufMeta::queue` of what it receives).
    pub(crate) queue_id: u16,
    /// The receiving port's number (`MbufMeta::port` of what it receives).
    pub(crate) port_num: u8,
}

#[derive(Debug)]
pub(crate) struct QpData {
    pub(crate) qkey: QKey,
    pub(crate) pkey_index: u16,
    /// Multicast this QP sends is not looped back to its own port.
    pub(crate) block_mcast_lb: bool,
    pub(crate) rx: Vec<Arc<RxRing>>,
    pub(crate) attached: usize,
}

#[derive(Debug, Default)]
pub(crate) struct AhSlot {
    pub(crate) generation: u16,
    pub(crate) ah: Option<(usize, AhAttr)>,
}

/// One multicast group in the switches' forwarding tables.
#[derive(Debug)]
pub(crate) struct MftEntry {
    /// The group's MTU.
    pub(crate) mtu: IbMtu,
    /// Ports with any membership (they may send to the group).
    pub(crate) members: Vec<usize>,
    /// Ports that receive: FullMember or NonMember (send-only members do not).
    pub(crate) receivers: Vec<usize>,
}

/// Everything mutable about the fabric, behind one lock.
#[derive(Debug)]
pub(crate) struct Control {
    pub(crate) nodes: Vec<Node>,
    pub(crate) ports: Vec<PortData>,
    pub(crate) sa: SubnetAdmin,
    /// UD QPs by (port index, QPN).
    pub(crate) qps: BTreeMap<(usize, u32), QpData>,
    next_qpn: u32,
    pub(crate) ahs: Vec<AhSlot>,
    ah_free: Vec<u32>,
    /// Multicast attachments by (port index, MGID).
    pub(crate) attach: BTreeMap<(usize, Gid), Vec<Qpn>>,
    pub(crate) mad_inboxes: Vec<Option<MadInbox>>,
    pub(crate) faults: FaultConfig,
    pub(crate) rng: crate::rng::SimRng,
    pub(crate) stats: FabricStats,
    pub(crate) pcap: Option<PcapWriter>,
    /// The switches' multicast forwarding tables, derived from the SA's groups.
    pub(crate) mft: BTreeMap<Lid, MftEntry>,
    /// Set when the SA's groups changed since `mft` was built.
    pub(crate) mft_dirty: bool,
    /// Bumped by every change that could alter a switch decision (see
    /// [`Control::routes_changed`]); the send queues' route caches are valid only for
    /// the generation they were built under.
    pub(crate) route_gen: u64,
    /// Reused by multicast replication so that it allocates nothing per packet.
    pub(crate) scratch_ports: Vec<usize>,
    pub(crate) scratch_rings: Vec<Arc<RxRing>>,
    /// The fabric clock's reading at the start of the current send burst (pcap stamps).
    pub(crate) clock_now: ibpoll_dev::Nanos,
    next_lid: u16,
    cfg_partitions: Vec<PKey>,
    cfg_port_mtu: IbMtu,
    pub(crate) ud_caps: UdCaps,
    pub(crate) rate: Rate,
    pub(crate) subnet_prefix: u64,
    next_tx_seed: u64,
}

/// The fabric's shared state.
#[derive(Debug)]
pub(crate) struct Fabric {
    ctl: Mutex<Control>,
    pub(crate) clock: Arc<dyn Clock>,
}

impl Fabric {
    /// Locks the control state. A panic while it was held (a bug, or an assertion in a
    /// test) poisons it; the fabric's tables are still consistent at every unlock point,
    /// so the poison is cleared rather than cascading into every other thread.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Control> {
        self.ctl.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Control {
    /// Invalidates every send queue's cached switch decisions. Called by every change of
    /// what `tx::switch` reads: QPs and their Q_Keys, address handles, multicast
    /// attachments, port state, P_Keys and LIDs, and the SA's groups (the MFT).
    pub(crate) fn routes_changed(&mut self) {
        self.route_gen = self.route_gen.wrapping_add(1);
    }

    pub(crate) fn port_gid(&self, port: usize) -> Gid {
        Gid::new(self.subnet_prefix, self.ports[port].guid)
    }

    /// Whether `index` names a valid entry (base not 0) of port `port`'s P_Key table: a
    /// QP may be created at, or moved to, that index.
    pub(crate) fn pkey_index_valid(&self, port: usize, index: u16) -> bool {
        self.ports[port]
            .pkeys
            .get(usize::from(index))
            .is_some_and(|p| p.base() != 0)
    }

    /// The P_Key a QP on `port` sends and accepts: its P_Key-table entry, or the invalid
    /// P_Key (which matches nothing) when the table no longer has that index.
    pub(crate) fn qp_pkey(&self, port: usize, qp: &QpData) -> PKey {
        self.ports[port]
            .pkeys
            .get(usize::from(qp.pkey_index))
            .copied()
            .unwrap_or(PKey::INVALID)
    }

    /// The InfiniBand port with base LID `lid`, if any.
    pub(crate) fn port_by_lid(&self, lid: Lid) -> Option<usize> {
        self.ports
            .iter()
            .position(|p| p.lid == lid && p.link_layer == LinkLayer::InfiniBand)
    }

    /// The InfiniBand port with GID `gid`, if any.
    pub(crate) fn port_by_gid(&self, gid: &Gid) -> Option<usize> {
        if gid.subnet_prefix() != self.subnet_prefix {
            return None;
        }
        self.ports
            .iter()
            .position(|p| p.guid == gid.guid() && p.link_layer == LinkLayer::InfiniBand)
    }

    /// Entry `index` of port `port`'s GID table.
    pub(crate) fn port_gid_at(&self, port: usize, index: u8) -> Option<Gid> {
        crate::roce::gid_table(self, port)
            .get(usize::from(index))
            .copied()
    }

    pub(crate) fn port_attr(&self, port: usize) -> PortAttr {
        let p = &self.ports[port];
        let mut a = PortAttr::new(p.num);
        a.link_layer = p.link_layer;
        a.state = p.state;
        a.lid = p.lid;
        a.gids = crate::roce::gid_table(self, port);
        a.gid = a.gids[0];
        if p.link_layer == LinkLayer::InfiniBand {
            a.sm_lid = SM_LID;
        }
        a.pkeys = p.pkeys.clone();
        a.max_mtu = IbMtu::Mtu4096;
        a.active_mtu = p.mtu;
        a.rate = self.rate;
        a
    }

    pub(crate) fn push_event(&mut self, port: usize, ev: PortEvent) {
        // Bounded like an HCA's async event queue: the oldest events go first.
        let p = &mut self.ports[port];
        if p.events.len() >= 64 {
            p.events.pop_front();
        }
        p.events.push_back(ev);
        // Relaxed: see `PortData::events_queued`.
        p.events_queued.store(p.events.len(), Ordering::Relaxed);
    }

    pub(crate) fn alloc_qpn(&mut self) -> u32 {
        let q = self.next_qpn;
        self.next_qpn += 1;
        if self.next_qpn > Qpn::MAX - 1 {
            self.next_qpn = QPN_BASE;
        }
        q
    }

    pub(crate) fn qp_count(&self, port: usize) -> usize {
        self.qps.range((port, 0)..(port + 1, 0)).count()
    }

    pub(crate) fn create_ah(&mut self, port: usize, attr: &AhAttr) -> Result<AddressHandle, Error> {
        if self.ports[port].link_layer == LinkLayer::Ethernet {
            crate::roce::check_ah(self, port, attr)?;
        } else if attr.dlid == Lid(0) {
            return Err(Error::AhAttr {
                dlid: attr.dlid,
                reason: "LID 0 is reserved",
            });
        }
        if attr.dlid.is_multicast() && attr.grh.is_none() {
            return Err(Error::AhAttr {
                dlid: attr.dlid,
                reason: "a multicast address handle needs global routing (a GRH with the MGID)",
            });
        }
        let index = match self.ah_free.pop() {
            Some(i) => i as usize,
            None if self.ahs.len() < AH_MAX => {
                self.ahs.push(AhSlot::default());
                self.ahs.len() - 1
            }
            None => {
                return Err(Error::Exhausted {
                    what: "address handles",
                    limit: AH_MAX,
                })
            }
        };
        let slot = &mut self.ahs[index];
        slot.ah = Some((port, *attr));
        Ok(AddressHandle::from_raw(
            (u32::from(slot.generation) << 16) | index as u32,
        ))
    }

    pub(crate) fn destroy_ah(&mut self, port: usize, ah: AddressHandle) -> Result<(), Error> {
        let index = (ah.raw() & 0xFFFF) as usize;
        let generation = (ah.raw() >> 16) as u16;
        match self.ahs.get_mut(index) {
            Some(slot)
                if slot.generation == generation
                    && matches!(slot.ah, Some((p, _)) if p == port) =>
            {
                slot.ah = None;
                slot.generation = slot.generation.wrapping_add(1);
                self.ah_free.push(index as u32);
                self.routes_changed();
                Ok(())
            }
            _ => Err(Error::NoSuchAh(ah.raw())),
        }
    }

    /// The live address handle `ah` created on `port`.
    pub(crate) fn ah(&self, port: usize, ah: AddressHandle) -> Option<&AhAttr> {
        let slot = self.ahs.get((ah.raw() & 0xFFFF) as usize)?;
        match &slot.ah {
            Some((p, attr)) if *p == port && slot.generation == (ah.raw() >> 16) as u16 => {
                Some(attr)
            }
            _ => None,
        }
    }

    pub(crate) fn attach(
        &mut self,
        port: usize,
        qpn: Qpn,
        mgid: &Gid,
        mlid: Lid,
    ) -> Result<(), Error> {
        let err = |reason| Error::Mcast {
            op: "attach",
            qpn,
            mgid: *mgid,
            mlid,
            reason,
        };
        if self.ports[port].link_layer == LinkLayer::Ethernet {
            // RoCE: the MGID names the group (an IPv4-mapped or IPv6 multicast
            // address); the LID is ignored, as verbs ignores it there.
            if !crate::roce::is_group(mgid) {
                return Err(err(
                    "not a RoCE multicast GID (IPv4-mapped 224.0.0.0/4 or IPv6 ff00::/8)",
                ));
            }
        } else {
            if !mgid.is_multicast() {
                return Err(err("not a multicast GID"));
            }
            if !mlid.is_multicast() {
                return Err(err("not a multicast LID"));
            }
        }
        let qp = self
            .qps
            .get_mut(&(port, qpn.get()))
            .ok_or_else(|| err("no such UD QP on this port"))?;
        let list = self.attach.entry((port, *mgid)).or_default();
        if list.contains(&qpn) {
            // ibv_attach_mcast of an attached QP succeeds and changes nothing.
            return Ok(());
        }
        if qp.attached >= ATTACH_PER_QP_MAX {
            return Err(err(
                "the QP is attached to as many groups as the HCA allows",
            ));
        }
        qp.attached += 1;
        list.push(qpn);
        self.routes_changed();
        Ok(())
    }

    pub(crate) fn detach(
        &mut self,
        port: usize,
        qpn: Qpn,
        mgid: &Gid,
        mlid: Lid,
    ) -> Result<(), Error> {
        let err = |reason| Error::Mcast {
            op: "detach",
            qpn,
            mgid: *mgid,
            mlid,
            reason,
        };
        let list = self
            .attach
            .get_mut(&(port, *mgid))
            .ok_or_else(|| err("the QP is not attached to this group"))?;
        let at = list
            .iter()
            .position(|q| *q == qpn)
            .ok_or_else(|| err("the QP is not attached to this group"))?;
        list.swap_remove(at);
        if list.is_empty() {
            self.attach.remove(&(port, *mgid));
        }
        if let Some(qp) = self.qps.get_mut(&(port, qpn.get())) {
            qp.attached -= 1;
        }
        self.routes_changed();
        Ok(())
    }

    /// Removes a QP and its multicast attachments (its last queue was dropped).
    pub(crate) fn destroy_qp(&mut self, port: usize, qpn: Qpn) {
        self.routes_changed();
        if let Some(qp) = self.qps.remove(&(port, qpn.get())) {
            // A send queue's route cache may keep a ring a little longer (until its next
            // burst sees the new route generation): return what the ring holds to its
            // pool now, as the QP's end would.
            for ring in &qp.rx {
                // SAFETY: the QP's receive queues are gone (this runs when its last
                // queue drops), so this, under the fabric lock, is the only consumer.
                unsafe { ring.inbox.clear() };
            }
        }
        self.attach.retain(|(p, _), list| {
            if *p == port {
                list.retain(|q| *q != qpn);
            }
            !list.is_empty()
        });
    }

    /// Rebuilds the multicast forwarding tables if the SA's groups changed (as the SM
    /// reprograms switches after a join or leave).
    pub(crate) fn refresh_mft(&mut self) {
        if !self.mft_dirty {
            return;
        }
        self.mft_dirty = false;
        let mut mft = BTreeMap::new();
        for g in self.sa.groups() {
            let mut e = MftEntry {
                mtu: g.mtu,
                members: Vec::new(),
                receivers: Vec::new(),
            };
            for (gid, js) in g.members() {
                let Some(p) = self.port_by_gid(&gid) else {
                    continue;
                };
                e.members.push(p);
                if js.receives() {
                    e.receivers.push(p);
                }
            }
            mft.insert(g.mlid, e);
        }
        self.mft = mft;
    }

    pub(crate) fn next_tx_seed(&mut self) -> u64 {
        self.next_tx_seed = self.next_tx_seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        self.next_tx_seed
    }

    /// Adds a node and brings its ports up: InfiniBand ports with fresh LIDs, or (with
    /// `roce`, one address per port) RoCE ports with LID 0.
    fn add_node(&mut self, name: &str, nports: u8, guid: u64, roce: &[[u8; 4]]) -> usize {
        let node = self.nodes.len();
        let first_port = self.ports.len();
        for num in 1..=nports {
            let ipv4 = roce.get(usize::from(num) - 1).copied();
            let (link_layer, lid, pkeys) = match ipv4 {
                Some(_) => (LinkLayer::Ethernet, Lid(0), vec![PKey::DEFAULT]),
                None => {
                    let lid = Lid(self.next_lid);
                    self.next_lid += 1;
                    (LinkLayer::InfiniBand, lid, self.cfg_partitions.clone())
                }
            };
            self.ports.push(PortData {
                num,
                // As in ibsim: port GUID = node GUID + port number.
                guid: guid + u64::from(num),
                link_layer,
                ipv4,
                lid,
                state: PortState::Active,
                pkeys,
                mtu: self.cfg_port_mtu,
                events: VecDeque::new(),
                events_queued: Arc::new(AtomicUsize::new(0)),
            });
        }
        self.nodes.push(Node {
            name: name.to_owned(),
            first_port,
            nports,
        });
        node
    }
}

/// The public handle to a simulated subnet: creates nodes and drives faults. Clones
/// share the fabric.
#[derive(Debug, Clone)]
pub struct SimFabric {
    inner: Arc<Fabric>,
}

impl SimFabric {
    /// A subnet with a subnet manager and no hosts yet.
    pub fn new(cfg: FabricConfig) -> SimFabric {
        let sa = SubnetAdmin::new(SaConfig {
            subnet_prefix: cfg.subnet_prefix,
            partitions: cfg.partitions.clone(),
            broadcast_mtu: cfg.broadcast_mtu,
            broadcast_rate: cfg.rate,
            // A SendOnlyFullMember join may create a group (IBA 1.3; what IPoIB's
            // send-only joins use), as OpenSM 3.3.23 allows.
            send_only_full_member: true,
            ..SaConfig::default()
        });
        let ctl = Control {
            nodes: Vec::new(),
            ports: Vec::new(),
            sa,
            qps: BTreeMap::new(),
            next_qpn: QPN_BASE,
            ahs: Vec::new(),
            ah_free: Vec::new(),
            attach: BTreeMap::new(),
            mad_inboxes: Vec::new(),
            faults: cfg.faults,
            rng: crate::rng::SimRng::seed_from_u64(cfg.seed),
            stats: FabricStats::default(),
            pcap: None,
            mft: BTreeMap::new(),
            mft_dirty: true,
            route_gen: 0,
            scratch_ports: Vec::new(),
            scratch_rings: Vec::new(),
            clock_now: ibpoll_dev::Nanos::ZERO,
            next_lid: SM_LID.0 + 1,
            cfg_partitions: cfg.partitions,
            cfg_port_mtu: cfg.port_mtu,
            ud_caps: cfg.ud_caps,
            rate: cfg.rate,
            subnet_prefix: cfg.subnet_prefix,
            next_tx_seed: cfg.seed,
        };
        SimFabric {
            inner: Arc::new(Fabric {
                ctl: Mutex::new(ctl),
                clock: cfg.clock,
            }),
        }
    }

    /// Adds a host with `nports` ports, all Active with LIDs from the subnet manager.
    /// Node GUIDs are assigned in order from 0x0002_c903_00a0_0000 (a Mellanox OUI) in
    /// steps of 0x100.
    pub fn add_node(&self, name: &str, nports: u8) -> Arc<SimDevice> {
        let nports = nports.max(1);
        let mut ctl = self.inner.lock();
        let guid = 0x0002_c903_00a0_0000 + 0x100 * ctl.nodes.len() as u64;
        let node = ctl.add_node(name, nports, guid, &[]);
        Arc::new(SimDevice {
            fabric: self.inner.clone(),
            node,
            name: name.to_owned(),
            guid,
            nports,
        })
    }

    /// Adds a host with one RoCE v2 port per address of `ipv4` (at least one): link
    /// layer Ethernet, LID 0, no subnet manager or SA, a GID table of the link-local GID
    /// (from the port's MAC) and the address's IPv4-mapped GID (`::ffff:a.b.c.d`, index
    /// 1), the default P_Key only. Multicast reaches the QPs attached to the MGID on
    /// every RoCE port (no join at an SA); every packet carries a GRH; unicast goes by
    /// the GRH's destination GID. RoCE and InfiniBand ports of one fabric never reach
    /// each other.
    pub fn add_roce_node(&self, name: &str, ipv4: &[[u8; 4]]) -> Arc<SimDevice> {
        assert!(
            !ipv4.is_empty() && ipv4.len() <= usize::from(u8::MAX),
            "a RoCE node needs 1..=255 addresses, one per port"
        );
        let nports = ipv4.len() as u8;
        let mut ctl = self.inner.lock();
        let guid = 0x0002_c903_00a0_0000 + 0x100 * ctl.nodes.len() as u64;
        let node = ctl.add_node(name, nports, guid, ipv4);
        Arc::new(SimDevice {
            fabric: self.inner.clone(),
            node,
            name: name.to_owned(),
            guid,
            nports,
        })
    }

    /// Gives a RoCE port another address, or none (`ip addr add/del` on its netdev):
    /// its GID table changes (PortEvent::GidChange).
    pub fn set_port_ipv4(&self, port: PortId, ipv4: Option<[u8; 4]>) {
        let mut ctl = self.inner.lock();
        let i = Self::port_index(&ctl, port);
        assert_eq!(
            ctl.ports[i].link_layer,
            LinkLayer::Ethernet,
            "only a RoCE port's GIDs come from addresses"
        );
        ctl.ports[i].ipv4 = ipv4;
        ctl.routes_changed();
        ctl.push_event(i, PortEvent::GidChange);
    }

    /// Replaces the fault configuration.
    pub fn set_faults(&self, faults: FaultConfig) {
        self.inner.lock().faults = faults;
    }

    /// The fabric's counters.
    pub fn stats(&self) -> FabricStats {
        self.inner.lock().stats.clone()
    }

    /// The fabric's clock.
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.inner.clock.clone()
    }

    /// Reads the subnet administrator's state (for checks and tests). The fabric is
    /// locked while `f` runs: calling back into the fabric (a port's `attr()`, a send)
    /// from `f` deadlocks.
    pub fn with_sa<R>(&self, f: impl FnOnce(&SubnetAdmin) -> R) -> R {
        f(&self.inner.lock().sa)
    }

    fn port_index(ctl: &Control, port: PortId) -> usize {
        let node = &ctl.nodes[port.node.0 as usize];
        assert!(
            port.port >= 1 && port.port <= node.nports,
            "node {} has no port {}",
            node.name,
            port.port
        );
        node.first_port + usize::from(port.port) - 1
    }

    /// Takes a port's link down (PortEvent::Error) or brings it back (PortEvent::Active).
    /// Memberships at the SA are kept, as when a link flaps faster than the SM sweeps.
    pub fn set_port_up(&self, port: PortId, up: bool) {
        let mut ctl = self.inner.lock();
        let i = Self::port_index(&ctl, port);
        let (state, ev) = if up {
            (PortState::Active, PortEvent::Active)
        } else {
            (PortState::Down, PortEvent::Error)
        };
        if ctl.ports[i].state != state {
            ctl.ports[i].state = state;
            ctl.routes_changed();
            ctl.push_event(i, ev);
        }
    }

    /// Restarts the subnet manager: every multicast group is wiped (each partition's
    /// broadcast group is recreated, with `broadcast_mtu` if given) and every Active
    /// port gets a ClientReregister event.
    pub fn restart_sm(&self, broadcast_mtu: Option<IbMtu>) {
        let mut ctl = self.inner.lock();
        if let Some(mtu) = broadcast_mtu {
            ctl.sa.set_broadcast_mtu(mtu);
        }
        ctl.sa.wipe();
        ctl.mft_dirty = true;
        ctl.routes_changed();
        for i in 0..ctl.ports.len() {
            let p = &ctl.ports[i];
            if p.state == PortState::Active && p.link_layer == LinkLayer::InfiniBand {
                ctl.push_event(i, PortEvent::ClientReregister);
            }
        }
    }

    /// Gives a port a new P_Key table (PortEvent::PkeyChange).
    pub fn set_pkeys(&self, port: PortId, pkeys: Vec<PKey>) {
        let mut ctl = self.inner.lock();
        let i = Self::port_index(&ctl, port);
        ctl.ports[i].pkeys = pkeys;
        ctl.routes_changed();
        ctl.push_event(i, PortEvent::PkeyChange);
    }

    /// Gives a port a new LID (PortEvent::LidChange). Panics if another port has it.
    pub fn set_lid(&self, port: PortId, lid: Lid) {
        let mut ctl = self.inner.lock();
        let i = Self::port_index(&ctl, port);
        assert_eq!(
            ctl.ports[i].link_layer,
            LinkLayer::InfiniBand,
            "a RoCE port has no LID"
        );
        assert!(
            lid.is_unicast() && lid != SM_LID,
            "LID {lid:?} is not assignable"
        );
        assert!(
            ctl.port_by_lid(lid).is_none_or(|j| j == i),
            "LID {lid:?} is already assigned"
        );
        ctl.ports[i].lid = lid;
        ctl.routes_changed();
        ctl.push_event(i, PortEvent::LidChange);
    }

    /// The multicast attachments of a port: (MGID, QPN), in MGID order.
    pub fn attachments(&self, port: PortId) -> Vec<(Gid, Qpn)> {
        let ctl = self.inner.lock();
        let i = Self::port_index(&ctl, port);
        ctl.attach
            .range((i, Gid::default())..)
            .take_while(|((p, _), _)| *p == i)
            .flat_map(|((_, mgid), qpns)| qpns.iter().map(move |q| (*mgid, *q)))
            .collect()
    }

    /// The attributes of a port, as the port itself would report them.
    pub fn port_attr(&self, port: PortId) -> PortAttr {
        let ctl = self.inner.lock();
        ctl.port_attr(Self::port_index(&ctl, port))
    }

    /// Starts writing every frame the switch forwards to a pcap file (native InfiniBand
    /// frames in ERF records, link type 197). Replaces any earlier capture.
    pub fn start_pcap(&self, path: &Path) -> Result<(), PcapError> {
        let w = PcapWriter::create(path)?;
        self.inner.lock().pcap = Some(w);
        Ok(())
    }

    /// [`start_pcap`](Self::start_pcap) to a file the caller opened (`path` names it
    /// in messages), bounded: frames that would take the file past `max_bytes` are not
    /// written (the capture stays whole up to there and says so in its status).
    pub fn start_pcap_file(
        &self,
        file: std::fs::File,
        path: &Path,
        max_bytes: u64,
    ) -> Result<(), PcapError> {
        let w = PcapWriter::new(file, path, max_bytes)?;
        self.inner.lock().pcap = Some(w);
        Ok(())
    }

    /// Where the running capture stands (frames, bytes, bound reached, write error).
    pub fn pcap_status(&self) -> Option<PcapStatus> {
        self.inner.lock().pcap.as_ref().map(PcapWriter::status)
    }

    /// Flushes and closes the pcap capture, if one runs, and says where it ended; a
    /// write error (the OS reason) is the error.
    pub fn stop_pcap(&self) -> Result<Option<PcapStatus>, PcapError> {
        let w = self.inner.lock().pcap.take();
        w.map(PcapWriter::finish).transpose()
    }
}

/// A simulated HCA: one node of the fabric.
#[derive(Debug)]
pub struct SimDevice {
    fabric: Arc<Fabric>,
    node: usize,
    name: String,
    guid: u64,
    nports: u8,
}

impl SimDevice {
    /// The node's id in its fabric (for [`SimFabric`]'s fault controls).
    pub fn node_id(&self) -> NodeId {
        NodeId(self.node as u32)
    }

    /// The id of port `port` of this node.
    pub fn port_id(&self, port: u8) -> PortId {
        PortId {
            node: self.node_id(),
            port,
        }
    }
}

impl Device for SimDevice {
    fn name(&self) -> &str {
        &self.name
    }

    fn node_guid(&self) -> u64 {
        self.guid
    }

    fn port_count(&self) -> u8 {
        self.nports
    }

    fn open_port(&self, port_num: u8) -> Result<Arc<dyn Port>, Error> {
        if port_num == 0 || port_num > self.nports {
            return Err(Error::NoSuchPort {
                device: self.name.clone(),
                port: port_num,
                count: self.nports,
            });
        }
        let (index, events_queued) = {
            let ctl = self.fabric.lock();
            let index = ctl.nodes[self.node].first_port + usize::from(port_num) - 1;
            (index, ctl.ports[index].events_queued.clone())
        };
        Ok(Arc::new(SimPort {
            fabric: self.fabric.clone(),
            index,
            num: port_num,
            events_queued,
        }))
    }
}

/// A port of a simulated HCA.
#[derive(Debug)]
pub struct SimPort {
    pub(crate) fabric: Arc<Fabric>,
    pub(crate) index: usize,
    num: u8,
    /// The port's `PortData::events_queued`.
    events_queued: Arc<AtomicUsize>,
}

impl Port for SimPort {
    fn port_num(&self) -> u8 {
        self.num
    }

    fn attr(&self) -> PortAttr {
        self.fabric.lock().port_attr(self.index)
    }

    fn poll_event(&self) -> Option<PortEvent> {
        // Relaxed: see `PortData::events_queued`.
        if self.events_queued.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut ctl = self.fabric.lock();
        let p = &mut ctl.ports[self.index];
        let ev = p.events.pop_front();
        p.events_queued.store(p.events.len(), Ordering::Relaxed);
        ev
    }

    fn ud_caps(&self) -> UdCaps {
        self.fabric.lock().ud_caps
    }

    fn create_ud_qp(&self, cfg: &UdQpConfig) -> Result<UdQp, Error> {
        crate::setup::create_ud_qp(&self.fabric, self.index, self.num, cfg)
    }

    fn set_qp_qkey(&self, qpn: Qpn, qkey: QKey) -> Result<(), Error> {
        let mut ctl = self.fabric.lock();
        match ctl.qps.get_mut(&(self.index, qpn.get())) {
            Some(qp) => {
                qp.qkey = qkey;
                ctl.routes_changed();
                Ok(())
            }
            None => Err(Error::NoSuchQp {
                port: self.num,
                qpn,
            }),
        }
    }

    fn move_qp_pkey_index(&self, parked: &Parked, pkey_index: u16) -> Result<usize, Error> {
        let qpn = parked.qpn();
        let mut ctl = self.fabric.lock();
        if !ctl.pkey_index_valid(self.index, pkey_index) {
            return Err(Error::PkeyIndex {
                port: self.num,
                index: pkey_index,
            });
        }
        let Some(qp) = ctl.qps.get_mut(&(self.index, qpn.get())) else {
            return Err(Error::NoSuchQp {
                port: self.num,
                qpn,
            });
        };
        qp.pkey_index = pkey_index;
        // Through Reset: what the receive queues held (posted buffers, filled or not) is
        // given back to the pool.
        let mut flushed = 0;
        for ring in &qp.rx {
            // SAFETY: `parked` says no thread calls this QP's queues, so we (under the
            // fabric lock, which orders us against the switch) are the rings' only
            // consumer until the owners resume.
            let n = unsafe { ring.inbox.clear() };
            ring.counters.flushed.add_shared(n as u64);
            flushed += n;
        }
        ctl.routes_changed();
        Ok(flushed)
    }

    fn create_ah(&self, attr: &AhAttr) -> Result<AddressHandle, Error> {
        self.fabric.lock().create_ah(self.index, attr)
    }

    unsafe fn destroy_ah(&self, ah: AddressHandle) -> Result<(), Error> {
        // The simulated handles are generation-tagged indices: a send that names a
        // destroyed one fails and is counted (`bad_ah`) rather than reading freed memory.
        self.fabric.lock().destroy_ah(self.index, ah)
    }

    fn attach_mcast(&self, qpn: Qpn, mgid: &Gid, mlid: Lid) -> Result<(), Error> {
        self.fabric.lock().attach(self.index, qpn, mgid, mlid)
    }

    fn detach_mcast(&self, qpn: Qpn, mgid: &Gid, mlid: Lid) -> Result<(), Error> {
        self.fabric.lock().detach(self.index, qpn, mgid, mlid)
    }

    fn open_mad_channel(&self) -> Result<Box<dyn MadChannel>, Error> {
        if self.fabric.lock().ports[self.index].link_layer == LinkLayer::Ethernet {
            return Err(Error::Io {
                op: "opening a MAD channel to the SA on a RoCE port (Ethernet has no subnet administrator)",
                source: std::io::ErrorKind::Unsupported.into(),
            });
        }
        Ok(Box::new(crate::mad::SimMadChannel::open(
            self.fabric.clone(),
            self.index,
        )))
    }
}

pub(crate) fn qp_per_port_max() -> usize {
    QP_PER_PORT_MAX
}
