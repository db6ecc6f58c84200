//! The send path and the switch: route each UD send by LID and QPN (or replicate it by
//! MLID), check Q_Key, P_Key and MTU, and "DMA" the payload into the receivers' posted
//! buffers.

use std::sync::Arc;

use ibpoll_dev::{TxCounters, TxDesc, TxQueue};
use ibpoll_mem::{Mbuf, MbufMeta, MBUF_F_GRH, MBUF_F_MCAST};
use ibpoll_wire::{bth, crc, grh, ipoib, Gid, PKey, QKey, Qpn};
use rand::rngs::SmallRng;
use rand::Rng;

use crate::fabric::{Control, DropReason, RxRing};
use crate::setup::QpGuard;

/// One send queue of a simulated UD QP.
#[derive(Debug)]
pub(crate) struct SimTxQueue {
    pub(crate) qp: Arc<QpGuard>,
    pub(crate) queue_id: u16,
    pub(crate) counters: Arc<TxCounters>,
    /// Draws packet-loss and reordering faults for this queue.
    pub(crate) rng: SmallRng,
    /// Deliveries held back by the reordering fault: placed after the next packet.
    pub(crate) held: Vec<(Arc<RxRing>, Mbuf)>,
}

/// The sending QP as the switch sees it.
struct Sender {
    port: usize,
    qpn: Qpn,
    qkey: QKey,
    pkey: PKey,
    gid: Gid,
    slid: ibpoll_wire::Lid,
}

impl TxQueue for SimTxQueue {
    fn tx_burst(&mut self, descs: &mut [TxDesc]) -> usize {
        let fabric = self.qp.fabric.clone();
        let mut ctl = fabric.lock();
        if ctl.pcap.is_some() {
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
        };
        let mut consumed = 0;
        let mut bytes = 0u64;
        let mut errors = 0u64;
        for d in descs.iter_mut() {
            let Some(m) = d.mbuf.take() else {
                // An empty descriptor is the caller's bug; consume and count it.
                consumed += 1;
                errors += 1;
                continue;
            };
            consumed += 1;
            ctl.stats.sent += 1;
            let held_before = self.held.len();
            match switch(&mut ctl, &sender, d, &m, &mut self.rng, &mut self.held) {
                Ok(()) => bytes += m.len() as u64,
                Err(why) => {
                    ctl.stats.count(why, 1);
                    errors += 1;
                }
            }
            // Release what an earlier packet held back, now that this one went first.
            if held_before > 0 {
                release_held(&mut ctl, &mut self.held, held_before);
            }
            // `m` drops here: the send completed and its buffer returns to its pool.
        }
        let n = self.held.len();
        release_held(&mut ctl, &mut self.held, n);
        drop(ctl);
        // This lcore is the only writer of its send counters.
        self.counters.packets.add((consumed as u64) - errors);
        self.counters.bytes.add(bytes);
        self.counters.errors.add(errors);
        consumed
    }

    fn queue_id(&self) -> u16 {
        self.queue_id
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
fn enqueue(ctl: &mut Control, ring: &RxRing, m: Mbuf) {
    match ring.inbox.push(m) {
        Ok(()) => ctl.stats.delivered += 1,
        Err(m) => {
            drop(m);
            ring.counters.overrun.add_shared(1);
            ctl.stats.count(DropReason::NoReceivePosted, 1);
        }
    }
}

/// Routes one send. Errors are the sender's (the send completes in error); drops at a
/// receiver are counted there and the send still succeeds, as UD is unreliable.
fn switch(
    ctl: &mut Control,
    s: &Sender,
    d: &TxDesc,
    m: &Mbuf,
    rng: &mut SmallRng,
    held: &mut Vec<(Arc<RxRing>, Mbuf)>,
) -> Result<(), DropReason> {
    let payload = m.data();
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
    // A Q_Key with the high bit set means "use the QP's own" (IBA 10.2.5).
    let qkey = if d.remote_qkey.is_controlled() {
        s.qkey
    } else {
        d.remote_qkey
    };
    if ctl.pcap.is_some() {
        crate::pcap::capture(
            ctl,
            s.slid,
            s.qpn,
            s.pkey,
            &s.gid,
            &ah,
            d.remote_qpn,
            qkey,
            payload,
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
    let Some(qp) = ctl.qps.get(&(dst, d.remote_qpn.get())) else {
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
    let ring = qp.rx[rss_queue(payload, qp.rx.len())].clone();
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
    deliver(ctl, &ring, payload, grh.as_ref(), meta, rng, held);
    Ok(())
}

fn multicast(
    ctl: &mut Control,
    s: &Sender,
    ah: &ibpoll_dev::AhAttr,
    qkey: QKey,
    payload: &[u8],
    rng: &mut SmallRng,
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
    let mut rings = std::mem::take(&mut ctl.scratch_rings);
    rings.clear();
    let mut qkey_drops = 0;
    let mut pkey_drops = 0;
    let mut down = 0;
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
            rings.push(qp.rx[rss_queue(payload, qp.rx.len())].clone());
        }
    }
    ctl.stats.count(DropReason::QKey, qkey_drops);
    ctl.stats.count(DropReason::PKey, pkey_drops);
    ctl.stats.count(DropReason::PortDown, down);
    for ring in &rings {
        deliver(ctl, ring, payload, Some(&grh), meta, rng, held);
    }
    rings.clear();
    ctl.scratch_rings = rings;
    ctl.scratch_ports = ports;
    Ok(())
}

/// The NIC's DMA: copy the payload into a buffer of the receiver's pool after the GRH
/// area, fill in the completion metadata and queue it (or hold it back, or lose it, as
/// the faults say).
fn deliver(
    ctl: &mut Control,
    ring: &Arc<RxRing>,
    payload: &[u8],
    grh: Option<&[u8; grh::HEADER_LEN]>,
    meta: MbufMeta,
    rng: &mut SmallRng,
    held: &mut Vec<(Arc<RxRing>, Mbuf)>,
) {
    let faults = ctl.faults;
    if faults.packet_loss > 0.0 && rng.gen::<f64>() < faults.packet_loss {
        ctl.stats.count(DropReason::FaultLoss, 1);
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
        rss_hash: rss_hash(payload),
        queue: ring.queue_id,
        port: u16::from(ring.port_num),
        ..meta
    };
    if faults.packet_reorder > 0.0
        && rng.gen::<f64>() < faults.packet_reorder
        && held.len() < held.capacity()
    {
        held.push((ring.clone(), m));
        return;
    }
    enqueue(ctl, ring, m);
}

/// The GRH the receiver finds in the first 40 bytes of its buffer.
fn grh_bytes(
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
/// one flow always lands on one receive queue (RSS).
pub(crate) fn rss_hash(payload: &[u8]) -> u32 {
    let ip = &payload[ipoib::HEADER_LEN..];
    let ethertype = u16::from_be_bytes([payload[0], payload[1]]);
    if ethertype != ipoib::EtherType::IPV4.0 || ip.len() < 20 {
        return 0;
    }
    let ihl = usize::from(ip[0] & 0x0F) * 4;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut mix = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    mix(&ip[12..20]);
    mix(&ip[9..10]);
    let fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x3FFF != 0;
    if (ip[9] == 6 || ip[9] == 17) && !fragment && ihl >= 20 && ip.len() >= ihl + 4 {
        mix(&ip[ihl..ihl + 4]);
    }
    (h ^ (h >> 32)) as u32
}

fn rss_queue(payload: &[u8], queues: usize) -> usize {
    if queues == 1 {
        0
    } else {
        rss_hash(payload) as usize % queues
    }
}
