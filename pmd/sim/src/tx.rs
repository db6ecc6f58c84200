//! The send path and the switch: route each UD send by LID and QPN (or replicate it by
//! MLID), check Q_Key, P_Key and MTU, and "DMA" the payload into the receivers' posted
//! buffers.
//!
//! Each send queue caches the switch's decision per destination (address handle,
//! remote QPN, Q_Key) in a small [`Route`] table: the receive rings a packet goes to,
//! the GRH fields, the completion metadata and the path MTU. A route is valid while
//! the fabric's `route_gen` is unchanged; every control call that could change a
//! decision (QPs, Q_Keys, address handles, attachments, port state, P_Keys, LIDs, the
//! SA's groups) bumps it. A packet on a cached route costs no table lookup and no
//! reference count; misses, errors, drops at the switch and a running pcap tap take
//! the full path ([`switch`]), which counts everything as before.

use std::sync::Arc;

use ibpoll_dev::{TxCounters, TxDst, TxQueue};
use ibpoll_mem::{Mbuf, MbufArray, MbufMeta, MBUF_F_GRH, MBUF_F_MCAST};
use ibpoll_wire::{bth, crc, grh, ipoib, Gid, PKey, QKey, Qpn};

use crate::fabric::{Control, DropReason, RxRing};
use crate::rng::SimRng;
use crate::setup::QpGuard;

/// One send queue of a simulated UD QP.
#[derive(Debug)]
pub(crate) struct SimTxQueue {
    pub(crate) qp: Arc<QpGuard>,
    pub(crate) counters: Arc<TxCounters>,
    /// Sends completed (all of them, at once: the switch copies synchronously).
    pub(crate) completed: u64,
    /// Draws packet-loss and reordering faults for this queue.
    pub(crate) rng: SimRng,
    /// Deliveries held back by the reordering fault: placed after the next packet.
    pub(crate) held: Vec<(Arc<RxRing>, Mbuf)>,
    /// The switch's decisions for recent destinations, [`ROUTE_SLOTS`] of them, indexed
    /// by [`route_slot`].
    pub(crate) routes: Box<[Route]>,
    /// The route generation the cache was last checked against: when the fabric's
    /// moves on, every slot is emptied, so no ring outlives its QP by more than a burst.
    pub(crate) routes_gen: u64,
}

/// Slots of a send queue's route cache (a power of two).
pub(crate) const ROUTE_SLOTS: usize = 16;

/// The slot of a destination in the route cache.
#[inline]
fn route_slot(ah: u32, remote_qpn: u32) -> usize {
    // Address handle indices are small and dense; the QPN separates unicast QPs
    // reached through one address handle.
    (ah ^ remote_qpn.rotate_left(3)) as usize & (ROUTE_SLOTS - 1)
}

/// One cached switch decision: what [`switch`] would do with a packet of at most
/// `len_max` bytes sent to (`ah`, `remote_qpn`, `remote_qkey`), while the fabric's
/// `route_gen` is `gen`. Only decisions that deliver (or drop at some receivers of a
/// group) are cached; send errors always take the full path.
#[derive(Debug, Default)]
pub(crate) struct Route {
    /// The `route_gen` it was computed under; `None`: the slot is empty.
    gen: Option<u64>,
    ah: u32,
    remote_qpn: u32,
    remote_qkey: u32,
    /// The longest payload the path carries (the smaller of the ports' MTUs, or the
    /// group's MTU): longer packets take the full path and fail there.
    len_max: usize,
    /// Receive rings of the receiving QPs, each QP's run in `qps`.
    pub(crate) rings: Vec<Arc<RxRing>>,
    /// Per receiving QP: (first ring, rings): the QP's receive queues, one chosen per
    /// packet by the flow hash.
    pub(crate) qps: Vec<(u32, u32)>,
    /// Whether any receiving QP has several receive queues.
    pub(crate) rss: bool,
    /// The GRH every copy carries, and its source GID.
    pub(crate) grh: Option<ibpoll_dev::GrhAttr>,
    pub(crate) sgid: Gid,
    /// The completion metadata (source QPN, SLID, flags).
    pub(crate) meta: MbufMeta,
    /// Copies the switch drops per packet at some receivers of a group: Q_Key, P_Key,
    /// port down, no receive queue (a send-only QP).
    pub(crate) drops: [u64; 4],
}

/// The sending QP as the switch sees it.
pub(crate) struct Sender {
    pub(crate) port: usize,
    pub(crate) qpn: Qpn,
    pub(crate) qkey: QKey,
    pub(crate) pkey: PKey,
    pub(crate) gid: Gid,
    pub(crate) slid: ibpoll_wire::Lid,
    /// The QP asked the HCA to drop its own multicast before it loops back.
    pub(crate) block_mcast_lb: bool,
}

impl TxQueue for SimTxQueue {
    fn src_qpn(&self) -> Qpn {
        self.qp.qpn
    }

    fn tx_burst(&mut self, pkts: &mut MbufArray, dst: &[TxDst]) -> usize {
        let n = pkts.len().min(dst.len());
        if n == 0 {
            return 0;
        }
        let fabric = self.qp.fabric.clone();
        let mut ctl = fabric.lock();
        let pcap = ctl.pcap.is_some();
        if pcap {
            ctl.clock_now = fabric.clock.now();
        }
        let port = self.qp.port;
        let Some(qp) = ctl.qps.get(&(port, self.qp.qpn.get())) else {
            // The QP was destroyed under us; cannot happen while a queue lives.
            return 0;
        };
        let pkey = ctl.qp_pkey(port, qp);
        let sender = Sender {
            port,
            qpn: self.qp.qpn,
            qkey: qp.qkey,
            pkey,
            gid: ctl.port_gid(port),
            slid: ctl.ports[port].lid,
            block_mcast_lb: qp.block_mcast_lb,
        };
        let gen = ctl.route_gen;
        if gen != self.routes_gen {
            for r in self.routes.iter_mut() {
                r.clear();
            }
            self.routes_gen = gen;
        }
        let mut bytes = 0u64;
        let mut errors = 0u64;
        for (m, d) in pkts.drain_front(n).zip(dst) {
            ctl.stats.sent += 1;
            let held_before = self.held.len();
            let payload = m.data();
            bytes += payload.len() as u64;
            let slot = route_slot(d.ah.raw(), d.qpn.get());
            let key = (d.ah.raw(), d.qpn.get(), d.qkey.0);
            let r = &mut self.routes[slot];
            // A running tap sees every frame through the full path.
            let cached =
                !pcap && (r.matches(gen, key) || build_route(&mut ctl, &sender, d, r, gen));
            let result =
                if cached && payload.len() <= r.len_max && payload.len() >= ipoib::HEADER_LEN {
                    forward(&mut ctl, r, payload, &mut self.rng, &mut self.held);
                    Ok(())
                } else {
                    switch(&mut ctl, &sender, d, payload, &mut self.rng, &mut self.held)
                };
            if let Err(why) = result {
                ctl.stats.count(why, 1);
                errors += 1;
            }
            // Release what an earlier packet held back, now that this one went first.
            if held_before > 0 {
                release_held(&mut ctl, &mut self.held, held_before);
            }
            // `m` drops here: the send completed and its buffer returns to its pool.
        }
        let h = self.held.len();
        release_held(&mut ctl, &mut self.held, h);
        drop(ctl);
        self.completed += n as u64;
        // This lcore is the only writer of its send counters.
        let c = &self.counters;
        c.packets.add(n as u64);
        c.bytes.add(bytes);
        c.completed.add(n as u64);
        c.errors.add(errors);
        n
    }

    fn completed(&mut self) -> u64 {
        self.completed
    }

    fn counters(&self) -> Arc<TxCounters> {
        self.counters.clone()
    }
}

/// Delivers the first `n` held packets in order.
fn release_held(ctl: &mut Control, held: &mut Vec<(Arc<RxRing>, Mbuf)>, n: usize) {
    for (ring, m) in held.drain(..n) {
        enqueue(ctl, &ring, m);
    }
}

/// Places a filled buffer in a receive queue, or counts the overrun.
#[inline]
fn enqueue(ctl: &mut Control, ring: &RxRing, m: Mbuf) {
    // SAFETY: `ctl` is the fabric's locked state: we are the ring's only producer.
    match unsafe { ring.inbox.push(m) } {
        Ok(()) => ctl.stats.delivered += 1,
        Err(m) => {
            drop(m);
            overrun(ctl, ring);
        }
    }
}

/// Counts a packet dropped because every posted receive buffer of `ring` is full.
fn overrun(ctl: &mut Control, _ring: &RxRing) {
    // A real HCA drops it silently (a port counter at most), so no queue counts it.
    ctl.stats.count(DropReason::NoReceivePosted, 1);
}

/// Routes one send. Errors are the sender's (the send completes in error); drops at a
/// receiver are counted there and the send still succeeds, as UD is unreliable.
fn switch(
    ctl: &mut Control,
    s: &Sender,
    d: &TxDst,
    payload: &[u8],
    rng: &mut SimRng,
    held: &mut Vec<(Arc<RxRing>, Mbuf)>,
) -> Result<(), DropReason> {
    if payload.len() < ipoib::HEADER_LEN {
        return Err(DropReason::Malformed);
    }
    if ctl.ports[s.port].state != ibpoll_dev::PortState::Active {
        return Err(DropReason::PortDown);
    }
    let ah = *ctl.ah(s.port, d.ah).ok_or(DropReason::BadAh)?;
    // A UD message longer than the sending port's MTU fails in its HCA (a local length
    // error): it never reaches the wire, so neither the tap nor the switch sees it (and
    // an LRH could not describe it past 8 KiB).
    if payload.len() > ctl.ports[s.port].mtu.bytes() {
        return Err(DropReason::TooLong);
    }
    let qkey = effective_qkey(s, d);
    if ctl.ports[s.port].link_layer == ibpoll_dev::LinkLayer::Ethernet {
        return crate::roce::switch(ctl, s, &ah, d, qkey, payload, rng, held);
    }
    if ctl.pcap.is_some() {
        crate::pcap::capture(
            ctl, s.slid, s.qpn, s.pkey, &s.gid, &ah, d.qpn, qkey, payload,
        );
    }
    if ah.dlid.is_multicast() {
        return multicast(ctl, s, &ah, qkey, payload, rng, held);
    }
    let dst = ctl.port_by_lid(ah.dlid).ok_or(DropReason::UnknownLid)?;
    let mtu = ctl.ports[s.port].mtu.min(ctl.ports[dst].mtu);
    if payload.len() > mtu.bytes() {
        return Err(DropReason::TooLong);
    }
    if ctl.ports[dst].state != ibpoll_dev::PortState::Active {
        ctl.stats.count(DropReason::PortDown, 1);
        return Ok(());
    }
    let Some(qp) = ctl.qps.get(&(dst, d.qpn.get())) else {
        ctl.stats.count(DropReason::UnknownQpn, 1);
        return Ok(());
    };
    if qp.qkey != qkey {
        ctl.stats.count(DropReason::QKey, 1);
        return Ok(());
    }
    let dst_pkey = ctl.qp_pkey(dst, qp);
    if !s.pkey.matches(dst_pkey) {
        ctl.stats.count(DropReason::PKey, 1);
        return Ok(());
    }
    if qp.rx.is_empty() {
        // A send-only QP: no receive queue, so never a posted buffer.
        ctl.stats.count(DropReason::NoReceivePosted, 1);
        return Ok(());
    }
    let hash = rss_hash(payload);
    let ring = qp.rx[rss_pick(hash, qp.rx.len())].clone();
    let grh = ah.grh.map(|g| {
        grh_bytes(
            g.traffic_class,
            g.flow_label,
            g.hop_limit,
            payload.len(),
            &s.gid,
            &g.dgid,
        )
    });
    let meta = MbufMeta {
        src_qpn: s.qpn.get(),
        slid: s.slid.0,
        flags: if grh.is_some() { MBUF_F_GRH } else { 0 },
        ..MbufMeta::default()
    };
    deliver(ctl, &ring, payload, hash, grh.as_ref(), meta, rng, held);
    Ok(())
}

/// A Q_Key with the high bit set means "use the QP's own" (IBA 10.2.5).
#[inline]
pub(crate) fn effective_qkey(s: &Sender, d: &TxDst) -> QKey {
    if d.qkey.is_controlled() {
        s.qkey
    } else {
        d.qkey
    }
}

impl Route {
    /// Empties the slot (keeping its lists' capacity).
    fn clear(&mut self) {
        self.gen = None;
        self.rings.clear();
        self.qps.clear();
        self.rss = false;
        self.drops = [0; 4];
    }

    /// Whether this slot holds the decision for `key` (AH, remote QPN, Q_Key) under
    /// route generation `gen`.
    #[inline]
    fn matches(&self, gen: u64, key: (u32, u32, u32)) -> bool {
        self.gen == Some(gen) && (self.ah, self.remote_qpn, self.remote_qkey) == key
    }
}

/// Computes what [`switch`] decides for `d` (for a packet that fits the path) into
/// `r`, without counting anything, and returns whether the decision may be cached:
/// false (and `r` left empty) for every send error and for a unicast drop at the
/// receiver, which the full path then takes and counts.
fn build_route(ctl: &mut Control, s: &Sender, d: &TxDst, r: &mut Route, gen: u64) -> bool {
    use ibpoll_dev::PortState::Active;
    r.clear();
    if ctl.ports[s.port].state != Active {
        return false;
    }
    let Some(ah) = ctl.ah(s.port, d.ah).copied() else {
        return false;
    };
    let qkey = effective_qkey(s, d);
    let mut len_max = ctl.ports[s.port].mtu.bytes();
    r.sgid = s.gid;
    if ctl.ports[s.port].link_layer == ibpoll_dev::LinkLayer::Ethernet {
        match crate::roce::route(ctl, s, &ah, d, qkey, r) {
            Some(max) => len_max = max,
            None => {
                r.clear();
                return false;
            }
        }
    } else if ah.dlid.is_multicast() {
        let Some(g) = ah.grh else {
            return false;
        };
        ctl.refresh_mft();
        let ctl = &*ctl;
        let Some(group) = ctl.mft.get(&ah.dlid) else {
            return false;
        };
        if !group.members.contains(&s.port) {
            return false;
        }
        len_max = len_max.min(group.mtu.bytes());
        // As `multicast`: every receiving member port, and the sender's own unless the
        // sending QP blocks its loopback.
        let own = (!group.receivers.contains(&s.port)).then_some(s.port);
        for &p in group.receivers.iter().chain(own.iter()) {
            if p == s.port && s.block_mcast_lb {
                continue;
            }
            if ctl.ports[p].state != Active {
                r.drops[2] += 1;
                continue;
            }
            let Some(qpns) = ctl.attach.get(&(p, g.dgid)) else {
                continue;
            };
            for qpn in qpns {
                let Some(qp) = ctl.qps.get(&(p, qpn.get())) else {
                    continue;
                };
                if qp.qkey != qkey {
                    r.drops[0] += 1;
                    continue;
                }
                if !s.pkey.matches(ctl.qp_pkey(p, qp)) {
                    r.drops[1] += 1;
                    continue;
                }
                if qp.rx.is_empty() {
                    r.drops[3] += 1;
                    continue;
                }
                push_qp(r, &qp.rx);
            }
        }
        r.grh = Some(g);
        r.meta = MbufMeta {
            src_qpn: s.qpn.get(),
            slid: s.slid.0,
            flags: MBUF_F_GRH | MBUF_F_MCAST,
            ..MbufMeta::default()
        };
    } else {
        let Some(dst) = ctl.port_by_lid(ah.dlid) else {
            return false;
        };
        len_max = len_max.min(ctl.ports[dst].mtu.bytes());
        if ctl.ports[dst].state != Active {
            return false;
        }
        let Some(qp) = ctl.qps.get(&(dst, d.qpn.get())) else {
            return false;
        };
        if qp.qkey != qkey || !s.pkey.matches(ctl.qp_pkey(dst, qp)) || qp.rx.is_empty() {
            return false;
        }
        push_qp(r, &qp.rx);
        r.grh = ah.grh;
        r.meta = MbufMeta {
            src_qpn: s.qpn.get(),
            slid: s.slid.0,
            flags: if ah.grh.is_some() { MBUF_F_GRH } else { 0 },
            ..MbufMeta::default()
        };
    }
    r.len_max = len_max;
    r.ah = d.ah.raw();
    r.remote_qpn = d.qpn.get();
    r.remote_qkey = d.qkey.0;
    r.gen = Some(gen);
    true
}

/// Sends one packet (no longer than `r.len_max`, at least an IPoIB header) along a
/// cached route: what [`switch`] does for it, without the table lookups.
#[inline]
fn forward(
    ctl: &mut Control,
    r: &Route,
    payload: &[u8],
    rng: &mut SimRng,
    held: &mut Vec<(Arc<RxRing>, Mbuf)>,
) {
    if r.drops != [0; 4] {
        ctl.stats.count(DropReason::QKey, r.drops[0]);
        ctl.stats.count(DropReason::PKey, r.drops[1]);
        ctl.stats.count(DropReason::PortDown, r.drops[2]);
        ctl.stats.count(DropReason::NoReceivePosted, r.drops[3]);
    }
    if r.qps.is_empty() {
        return;
    }
    let grh = r.grh.map(|g| {
        grh_bytes(
            g.traffic_class,
            g.flow_label,
            g.hop_limit,
            payload.len(),
            &r.sgid,
            &g.dgid,
        )
    });
    let hash = rss_hash(payload);
    for &(first, n) in &r.qps {
        let i = first as usize + if r.rss { rss_pick(hash, n as usize) } else { 0 };
        deliver(
            ctl,
            &r.rings[i],
            payload,
            hash,
            grh.as_ref(),
            r.meta,
            rng,
            held,
        );
    }
}

fn multicast(
    ctl: &mut Control,
    s: &Sender,
    ah: &ibpoll_dev::AhAttr,
    qkey: QKey,
    payload: &[u8],
    rng: &mut SimRng,
    held: &mut Vec<(Arc<RxRing>, Mbuf)>,
) -> Result<(), DropReason> {
    let Some(g) = ah.grh else {
        return Err(DropReason::BadAh);
    };
    ctl.refresh_mft();
    let Some(group) = ctl.mft.get(&ah.dlid) else {
        return Err(DropReason::UnknownLid);
    };
    if !group.members.contains(&s.port) {
        return Err(DropReason::McastNotMember);
    }
    if payload.len() > group.mtu.bytes() {
        return Err(DropReason::TooLong);
    }
    let grh = grh_bytes(
        g.traffic_class,
        g.flow_label,
        g.hop_limit,
        payload.len(),
        &s.gid,
        &g.dgid,
    );
    let meta = MbufMeta {
        src_qpn: s.qpn.get(),
        slid: s.slid.0,
        flags: MBUF_F_GRH | MBUF_F_MCAST,
        ..MbufMeta::default()
    };
    // The switch forwards to every receiving member port; the sender's own HCA loops
    // the packet back to its own attached QPs. Each port's HCA hands a copy to every
    // QP attached to the GRH's DGID.
    let mut ports = std::mem::take(&mut ctl.scratch_ports);
    ports.clear();
    ports.extend(group.receivers.iter().copied());
    if !ports.contains(&s.port) {
        ports.push(s.port);
    }
    if s.block_mcast_lb {
        ports.retain(|&p| p != s.port);
    }
    let hash = rss_hash(payload);
    let mut rings = std::mem::take(&mut ctl.scratch_rings);
    rings.clear();
    let mut qkey_drops = 0;
    let mut pkey_drops = 0;
    let mut down = 0;
    let mut no_rq = 0;
    for &p in &ports {
        if ctl.ports[p].state != ibpoll_dev::PortState::Active {
            down += 1;
            continue;
        }
        let Some(qpns) = ctl.attach.get(&(p, g.dgid)) else {
            continue;
        };
        for qpn in qpns {
            let Some(qp) = ctl.qps.get(&(p, qpn.get())) else {
                continue;
            };
            if qp.qkey != qkey {
                qkey_drops += 1;
                continue;
            }
            let pk = ctl.qp_pkey(p, qp);
            if !s.pkey.matches(pk) {
                pkey_drops += 1;
                continue;
            }
            if qp.rx.is_empty() {
                no_rq += 1;
                continue;
            }
            rings.push(qp.rx[rss_pick(hash, qp.rx.len())].clone());
        }
    }
    ctl.stats.count(DropReason::QKey, qkey_drops);
    ctl.stats.count(DropReason::PKey, pkey_drops);
    ctl.stats.count(DropReason::PortDown, down);
    ctl.stats.count(DropReason::NoReceivePosted, no_rq);
    for ring in &rings {
        deliver(ctl, ring, payload, hash, Some(&grh), meta, rng, held);
    }
    rings.clear();
    ctl.scratch_rings = rings;
    ctl.scratch_ports = ports;
    Ok(())
}

/// Adds a receiving QP's queues to a route.
pub(crate) fn push_qp(r: &mut Route, rx: &[Arc<RxRing>]) {
    r.qps.push((r.rings.len() as u32, rx.len() as u32));
    r.rss |= rx.len() > 1;
    r.rings.extend(rx.iter().cloned());
}

/// The NIC's DMA: copy the payload into a buffer of the receiver's pool after the GRH
/// area, fill in the completion metadata (`hash` is the packet's [`rss_hash`]) and
/// queue it (or hold it back, or lose it, as the faults say).
// Always inlined: it runs once per copy, and the call would pass eight arguments and
// save most registers each time.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn deliver(
    ctl: &mut Control,
    ring: &Arc<RxRing>,
    payload: &[u8],
    hash: u32,
    grh: Option<&[u8; grh::HEADER_LEN]>,
    meta: MbufMeta,
    rng: &mut SimRng,
    held: &mut Vec<(Arc<RxRing>, Mbuf)>,
) {
    let faults = ctl.faults;
    if faults.packet_loss > 0.0 && rng.chance(faults.packet_loss) {
        ctl.stats.count(DropReason::FaultLoss, 1);
        return;
    }
    // No receive buffer posted: the HCA drops the packet without a DMA. (Under the
    // reordering fault the packet may be held back, so the ring is checked when it is
    // queued instead.)
    // SAFETY: `ctl` is the fabric's locked state: we are the ring's only producer.
    if faults.packet_reorder == 0.0 && unsafe { ring.inbox.is_full() } {
        overrun(ctl, ring);
        return;
    }
    let Some(mut m) = ring.pool.alloc() else {
        ring.counters.nombuf.add_shared(1);
        ctl.stats.count(DropReason::NoBuffer, 1);
        return;
    };
    let off = m.data_offset();
    if off < grh::HEADER_LEN || !m.set_data(off, payload.len()) {
        // The posted buffer is smaller than the packet: a real HCA completes the
        // receive in error; count it with the buffer shortages.
        ring.counters.nombuf.add_shared(1);
        ctl.stats.count(DropReason::NoBuffer, 1);
        return;
    }
    m.data_mut().copy_from_slice(payload);
    if let Some(g) = grh {
        m.buf_mut()[off - grh::HEADER_LEN..off].copy_from_slice(g);
    }
    *m.meta_mut() = MbufMeta {
        rss_hash: hash,
        queue: ring.queue_id,
        port: u16::from(ring.port_num),
        ..meta
    };
    if faults.packet_reorder > 0.0
        && rng.chance(faults.packet_reorder)
        && held.len() < held.capacity()
    {
        held.push((ring.clone(), m));
        return;
    }
    enqueue(ctl, ring, m);
}

/// The GRH the receiver finds in the first 40 bytes of its buffer.
pub(crate) fn grh_bytes(
    tclass: u8,
    flow_label: u32,
    hop_limit: u8,
    payload_len: usize,
    sgid: &Gid,
    dgid: &Gid,
) -> [u8; grh::HEADER_LEN] {
    let mut b = [0u8; grh::HEADER_LEN];
    let repr = grh::Repr {
        traffic_class: tclass,
        flow_label,
        // PayLen covers everything after the GRH up to and including the ICRC.
        payload_len: (crate::pcap::BTH_DETH_LEN
            + payload_len
            + usize::from(bth::pad_count_for(payload_len))
            + crc::ICRC_LEN) as u16,
        next_header: grh::NXT_HDR_IBA,
        hop_limit,
        sgid: *sgid,
        dgid: *dgid,
    };
    repr.emit(&mut grh::Packet::new_unchecked(&mut b[..]));
    b
}

/// A flow hash over the IPv4 addresses, protocol and (unfragmented TCP/UDP) ports, so
/// one flow always lands on one receive queue (RSS). Word-wise (two multiplications),
/// as it runs once per packet on the send path.
pub(crate) fn rss_hash(payload: &[u8]) -> u32 {
    let word = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let ip = &payload[ipoib::HEADER_LEN..];
    let ethertype = u16::from_be_bytes([payload[0], payload[1]]);
    if ethertype != ipoib::EtherType::IPV4.0 || ip.len() < 20 {
        return 0;
    }
    let ihl = usize::from(ip[0] & 0x0F) * 4;
    let fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x3FFF != 0;
    let ports = if (ip[9] == 6 || ip[9] == 17) && !fragment && ihl >= 20 && ip.len() >= ihl + 4 {
        word(&ip[ihl..ihl + 4])
    } else {
        0
    };
    let addrs = (u64::from(word(&ip[12..16])) << 32) | u64::from(word(&ip[16..20]));
    let mut h = (addrs ^ 0xcbf2_9ce4_8422_2325).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h ^= (u64::from(ports) << 8) | u64::from(ip[9]);
    h = (h ^ (h >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    (h ^ (h >> 32)) as u32
}

/// The receive queue, of `queues`, for a packet with flow hash `hash`.
#[inline]
pub(crate) fn rss_pick(hash: u32, queues: usize) -> usize {
    if queues == 1 {
        0
    } else {
        hash as usize % queues
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPoIB + IPv4 header (20 bytes, protocol `proto`) + 4 port bytes.
    fn v4(src: [u8; 4], dst: [u8; 4], proto: u8, ports: [u8; 4], frag: u16) -> Vec<u8> {
        let mut p = vec![0u8; 4 + 24];
        p[..2].copy_from_slice(&ipoib::EtherType::IPV4.0.to_be_bytes());
        p[4] = 0x45;
        p[4 + 6..4 + 8].copy_from_slice(&frag.to_be_bytes());
        p[4 + 9] = proto;
        p[4 + 12..4 + 16].copy_from_slice(&src);
        p[4 + 16..4 + 20].copy_from_slice(&dst);
        p[4 + 20..].copy_from_slice(&ports);
        p
    }

    #[test]
    fn rss_hash_covers_addresses_protocol_and_ports() {
        let (s, d) = ([10, 0, 0, 1], [10, 0, 0, 2]);
        let h = rss_hash(&v4(s, d, 17, [1, 2, 3, 4], 0));
        assert_eq!(h, rss_hash(&v4(s, d, 17, [1, 2, 3, 4], 0)), "deterministic");
        assert_ne!(h, rss_hash(&v4(s, d, 17, [1, 3, 3, 4], 0)), "source port");
        assert_ne!(
            h,
            rss_hash(&v4(s, d, 17, [1, 2, 3, 5], 0)),
            "destination port"
        );
        assert_ne!(h, rss_hash(&v4(d, s, 17, [1, 2, 3, 4], 0)), "direction");
        assert_ne!(h, rss_hash(&v4(s, d, 6, [1, 2, 3, 4], 0)), "protocol");
        // Fragments and other protocols: addresses and protocol only.
        let frag = rss_hash(&v4(s, d, 17, [1, 2, 3, 4], 0x2000));
        assert_eq!(frag, rss_hash(&v4(s, d, 17, [9, 9, 9, 9], 0x2000)));
        let icmp = rss_hash(&v4(s, d, 1, [1, 2, 3, 4], 0));
        assert_eq!(icmp, rss_hash(&v4(s, d, 1, [9, 9, 9, 9], 0)));
        // Not IPv4: no hash.
        let mut arp = v4(s, d, 17, [1, 2, 3, 4], 0);
        arp[..2].copy_from_slice(&ipoib::EtherType::ARP.0.to_be_bytes());
        assert_eq!(rss_hash(&arp), 0);
    }

    #[test]
    fn rss_hash_spreads_source_ports_over_queues() {
        for queues in [2usize, 3, 4, 8] {
            let mut per_queue = vec![0; queues];
            for port in 0..256u16 {
                let p = port.to_be_bytes();
                let h = rss_hash(&v4(
                    [10, 0, 0, 1],
                    [10, 0, 0, 2],
                    17,
                    [p[0], p[1], 0x23, 0x28],
                    0,
                ));
                per_queue[rss_pick(h, queues)] += 1;
            }
            let fair = 256 / queues;
            assert!(
                per_queue.iter().all(|&n| n > fair / 2 && n < fair * 2),
                "{queues} queues: {per_queue:?}"
            );
        }
    }
}
