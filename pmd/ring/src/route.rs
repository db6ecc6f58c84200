//! Routes: what a send to one destination (address handle, remote QPN, Q_Key) does,
//! resolved on the control path (under the registry's lock) the first time a send
//! queue meets the destination, and cached in the queue until the pair's route
//! generation moves.

use std::sync::Arc;

use ibpoll_dev::{Counter, PortAttr, PortState, TxDst};
use ibpoll_mem::{MbufMeta, MBUF_F_GRH, MBUF_F_MCAST};
use ibpoll_wire::{bth, crc, deth, grh, Gid, PKey};

use crate::pair::{Control, Link, Pair, RingCounters, Side};

/// Slots of a send queue's route cache (a power of two).
pub(crate) const ROUTE_SLOTS: usize = 16;

/// The slot of a destination in the route cache.
#[inline]
pub(crate) fn route_slot(d: &TxDst) -> usize {
    // Address handle values are small and dense; the QPN separates unicast QPs reached
    // through one handle.
    (d.ah.raw() ^ d.qpn.get().rotate_left(3)) as usize & (ROUTE_SLOTS - 1)
}

/// Why a packet was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    UnknownLid,
    UnknownQpn,
    QKey,
    PKey,
    PortDown,
    NoReceiveQueue,
    NoReceiver,
    TooLong,
    Malformed,
    BadAh,
    NoHeadroom,
}

impl Reason {
    /// The pair's counter of this reason.
    pub(crate) fn counter(self, c: &RingCounters) -> &Counter {
        match self {
            Reason::UnknownLid => &c.unknown_lid,
            Reason::UnknownQpn => &c.unknown_qpn,
            Reason::QKey => &c.qkey,
            Reason::PKey => &c.pkey,
            Reason::PortDown => &c.port_down,
            Reason::NoReceiveQueue => &c.no_receive_queue,
            Reason::NoReceiver => &c.no_receiver,
            Reason::TooLong => &c.too_long,
            Reason::Malformed => &c.malformed,
            Reason::BadAh => &c.bad_ah,
            Reason::NoHeadroom => &c.no_headroom,
        }
    }
}

/// What happens to a packet sent along a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    /// Into the rings of `Route::targets`.
    Deliver,
    /// Freed and counted at the pair (UD is unreliable: the send succeeds).
    Drop(Reason),
    /// The send completes in error: counted at the pair and in `TxCounters::errors`.
    Error(Reason),
}

/// Receivers of a group that drop every packet, by reason, counted per packet sent.
pub(crate) const GROUP_DROPS: [Reason; 4] = [
    Reason::QKey,
    Reason::PKey,
    Reason::PortDown,
    Reason::NoReceiveQueue,
];

/// One cached decision.
#[derive(Debug)]
pub(crate) struct Route {
    /// The route generation it was resolved under; `None`: the slot is empty.
    gen: Option<u64>,
    /// (address handle, remote QPN, Q_Key) it was resolved for.
    key: (u32, u32, u32),
    pub(crate) fate: Fate,
    /// The longest packet the path carries (from the IPoIB header on).
    pub(crate) len_max: usize,
    /// The completion metadata every receiver gets (`port` is set per receiver).
    pub(crate) meta: MbufMeta,
    /// The GRH every receiver gets, PayLen still to fill in per packet.
    pub(crate) grh: Option<[u8; grh::HEADER_LEN]>,
    /// The receiving QPs' links: the first gets the packet, the others copies.
    pub(crate) targets: Vec<Arc<Link>>,
    /// Per packet, receivers of a group that drop it, by [`GROUP_DROPS`] reason.
    pub(crate) group_drops: [u64; 4],
}

impl Default for Route {
    fn default() -> Route {
        Route {
            gen: None,
            key: (0, 0, 0),
            fate: Fate::Drop(Reason::NoReceiver),
            len_max: 0,
            meta: MbufMeta::default(),
            grh: None,
            targets: Vec::new(),
            group_drops: [0; 4],
        }
    }
}

impl Route {
    /// Whether this slot holds the decision for `d` under generation `gen`.
    #[inline]
    pub(crate) fn matches(&self, gen: u64, d: &TxDst) -> bool {
        self.gen == Some(gen) && self.key == (d.ah.raw(), d.qpn.get(), d.qkey.0)
    }

    /// Empties the slot (its links let go).
    pub(crate) fn clear(&mut self) {
        self.gen = None;
        self.targets.clear();
    }

    /// Writes the GRH for a packet of `len` bytes (from the IPoIB header on) into the
    /// 40 bytes before the data, `area`.
    #[inline]
    pub(crate) fn write_grh(g: &[u8; grh::HEADER_LEN], area: &mut [u8], len: usize) {
        area.copy_from_slice(g);
        // PayLen covers everything after the GRH through the ICRC.
        let pay = bth::HEADER_LEN
            + deth::HEADER_LEN
            + len
            + usize::from(bth::pad_count_for(len))
            + crc::ICRC_LEN;
        grh::Packet::new_unchecked(area).set_payload_len(pay as u16);
    }
}

/// The sending QP as routes see it.
struct Sender<'a> {
    side: Side,
    qpn: u32,
    attr: &'a PortAttr,
    pkey: PKey,
    qkey: ibpoll_wire::QKey,
    block_lb: bool,
}

/// Resolves `d` for QP `qpn` of `side` into `r`, under the registry's lock (`ctl`), for
/// route generation `gen` (read before the lock was taken: a change after it bumps the
/// generation again and the next burst resolves again).
pub(crate) fn resolve(
    pair: &Pair,
    ctl: &mut Control,
    side: Side,
    qpn: u32,
    d: &TxDst,
    gen: u64,
    r: &mut Route,
) {
    r.clear();
    r.gen = Some(gen);
    r.key = (d.ah.raw(), d.qpn.get(), d.qkey.0);
    r.group_drops = [0; 4];
    r.grh = None;
    r.fate = fate(pair, ctl, side, qpn, d, r);
    if r.fate != Fate::Deliver {
        r.targets.clear();
    }
}

/// Fills in `r` (length bound, metadata, GRH, targets) and says what happens.
fn fate(pair: &Pair, ctl: &mut Control, side: Side, qpn: u32, d: &TxDst, r: &mut Route) -> Fate {
    let attrs = [pair.ports[0].attr(), pair.ports[1].attr()];
    let Some(qp) = ctl.qps.get(&(side, qpn)) else {
        // The sending QP is being destroyed: nothing it sends goes anywhere.
        return Fate::Error(Reason::PortDown);
    };
    let s = Sender {
        side,
        qpn,
        attr: &attrs[side],
        pkey: attrs[side]
            .pkeys
            .get(usize::from(qp.pkey_index))
            .copied()
            .unwrap_or(PKey::INVALID),
        qkey: if d.qkey.is_controlled() {
            qp.qkey
        } else {
            d.qkey
        },
        block_lb: qp.block_lb,
    };
    if s.attr.state != PortState::Active {
        return Fate::Error(Reason::PortDown);
    }
    let Some(ah) = ctl.ahs.get(&(side, d.ah.raw())).copied() else {
        return Fate::Error(Reason::BadAh);
    };
    r.len_max = s.attr.active_mtu.bytes();
    r.meta = MbufMeta {
        src_qpn: qpn,
        slid: s.attr.lid.0,
        ..MbufMeta::default()
    };
    let sgid = |g: &ibpoll_dev::GrhAttr| {
        s.attr
            .gids
            .get(usize::from(g.sgid_index))
            .copied()
            .unwrap_or(s.attr.gid)
    };
    if ah.dlid.is_multicast() {
        let Some(g) = ah.grh else {
            return Fate::Error(Reason::BadAh);
        };
        r.meta.flags = MBUF_F_GRH | MBUF_F_MCAST;
        r.grh = Some(grh_template(&g, sgid(&g)));
        return group(pair, ctl, &s, &attrs, &g.dgid, r);
    }
    let Some(to) = attrs.iter().position(|a| a.lid == ah.dlid) else {
        return Fate::Drop(Reason::UnknownLid);
    };
    if attrs[to].state != PortState::Active {
        return Fate::Drop(Reason::PortDown);
    }
    r.len_max = r.len_max.min(attrs[to].active_mtu.bytes());
    let Some(rq) = ctl.qps.get(&(to, d.qpn.get())) else {
        return Fate::Drop(Reason::UnknownQpn);
    };
    if rq.qkey != s.qkey {
        return Fate::Drop(Reason::QKey);
    }
    if !s.pkey.matches(qp_pkey(&attrs[to], rq.pkey_index)) {
        return Fate::Drop(Reason::PKey);
    }
    let Some(end) = rq.rx.clone() else {
        return Fate::Drop(Reason::NoReceiveQueue);
    };
    if let Some(g) = ah.grh {
        r.meta.flags = MBUF_F_GRH;
        r.grh = Some(grh_template(&g, sgid(&g)));
    }
    r.targets
        .push(pair.link(ctl, (s.side, s.qpn), (to, d.qpn.get()), &end));
    Fate::Deliver
}

/// The receivers of a group: every QP of either port attached to `mgid`, the sender's
/// port's only if the sending QP does not block its loopback.
fn group(
    pair: &Pair,
    ctl: &mut Control,
    s: &Sender<'_>,
    attrs: &[PortAttr; 2],
    mgid: &Gid,
    r: &mut Route,
) -> Fate {
    let mut ends = Vec::new();
    for (to, attr) in attrs.iter().enumerate() {
        if to == s.side && s.block_lb {
            continue;
        }
        let Some(qpns) = ctl.attach.get(&(to, *mgid)) else {
            continue;
        };
        for q in qpns {
            let Some(rq) = ctl.qps.get(&(to, q.get())) else {
                continue;
            };
            // Indexes of `GROUP_DROPS`.
            let drop_at = if attr.state != PortState::Active {
                2
            } else if rq.qkey != s.qkey {
                0
            } else if !s.pkey.matches(qp_pkey(attr, rq.pkey_index)) {
                1
            } else if let Some(end) = &rq.rx {
                ends.push(((to, q.get()), end.clone()));
                r.len_max = r.len_max.min(attr.active_mtu.bytes());
                continue;
            } else {
                3
            };
            r.group_drops[drop_at] += 1;
        }
    }
    if ends.is_empty() {
        return Fate::Drop(Reason::NoReceiver);
    }
    for (to, end) in ends {
        let link = pair.link(ctl, (s.side, s.qpn), to, &end);
        r.targets.push(link);
    }
    Fate::Deliver
}

/// The P_Key a QP at `index` of a port with `attr` sends and accepts (the invalid P_Key,
/// which matches nothing, when the table no longer has that entry).
fn qp_pkey(attr: &PortAttr, index: u16) -> PKey {
    attr.pkeys
        .get(usize::from(index))
        .copied()
        .unwrap_or(PKey::INVALID)
}

/// A GRH from the handle's attributes, PayLen 0.
fn grh_template(g: &ibpoll_dev::GrhAttr, sgid: Gid) -> [u8; grh::HEADER_LEN] {
    let mut b = [0u8; grh::HEADER_LEN];
    grh::Repr {
        traffic_class: g.traffic_class,
        flow_label: g.flow_label,
        payload_len: 0,
        next_header: grh::NXT_HDR_IBA,
        hop_limit: g.hop_limit,
        sgid,
        dgid: g.dgid,
    }
    .emit(&mut grh::Packet::new_unchecked(&mut b[..]));
    b
}
