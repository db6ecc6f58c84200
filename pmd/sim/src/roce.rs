//! RoCE v2 ports: link layer Ethernet, no subnet manager and no SA. What differs from
//! an InfiniBand port:
//!
//! - LID 0. The GID table is the link-local GID (`fe80::` and the EUI-64 of the port's
//!   MAC, as the kernel's default GID) and, while the port's netdev has an IPv4
//!   address, the address's IPv4-mapped GID `::ffff:a.b.c.d` at index 1 (what
//!   `rdma_rxe` and mlx5 list for a RoCE v2 address).
//! - An address handle must have a GRH (verbs refuses one without it on RoCE) whose
//!   SGID index names a GID-table entry; the DLID is ignored.
//! - Unicast goes by the GRH's destination GID to the RoCE port whose GID table has it.
//! - Multicast needs no join: a send to a group GID (IPv4-mapped 224.0.0.0/4, or an
//!   IPv6 multicast address) reaches every QP attached to that GID on every RoCE port,
//!   the sender's own port included (the HCA loops it back) unless the QP blocks that.
//! - Every packet arrives with a GRH whose SGID is the sender's GID-table entry named
//!   by the address handle; the completion's SLID is 0.
//! - RoCE ports never reach InfiniBand ports (nor the other way round).

use std::sync::Arc;

use ibpoll_dev::{AhAttr, Error, GrhAttr, LinkLayer, PortState, TxDst};
use ibpoll_mem::{Mbuf, MbufMeta, MBUF_F_GRH, MBUF_F_MCAST};
use ibpoll_wire::{Gid, QKey};

use crate::fabric::{Control, DropReason, RxRing};
use crate::rng::SimRng;
use crate::tx::{self, Route, Sender};

/// The IPv4-mapped GID of `ip`.
fn ipv4_mapped(ip: [u8; 4]) -> Gid {
    Gid([
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, ip[0], ip[1], ip[2], ip[3],
    ])
}

/// A RoCE port's link-local GID: `fe80::` and the modified EUI-64 of its MAC (a locally
/// administered MAC made from the port GUID's low 40 bits).
fn link_local(guid: u64) -> Gid {
    let g = guid.to_be_bytes();
    let mac = [0x02, g[3], g[4], g[5], g[6], g[7]];
    Gid([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        mac[0] ^ 0x02,
        mac[1],
        mac[2],
        0xff,
        0xfe,
        mac[3],
        mac[4],
        mac[5],
    ])
}

/// Port `port`'s GID table.
pub(crate) fn gid_table(ctl: &Control, port: usize) -> Vec<Gid> {
    let p = &ctl.ports[port];
    match p.link_layer {
        LinkLayer::Ethernet => std::iter::once(link_local(p.guid))
            .chain(p.ipv4.map(ipv4_mapped))
            .collect(),
        _ => vec![ctl.port_gid(port)],
    }
}

/// Whether `gid` names a multicast group on RoCE.
pub(crate) fn is_group(gid: &Gid) -> bool {
    let b = &gid.0;
    gid.is_multicast()
        || (b[..10] == [0; 10] && b[10] == 0xff && b[11] == 0xff && b[12] & 0xf0 == 0xe0)
}

/// What a RoCE port accepts as an address handle.
pub(crate) fn check_ah(ctl: &Control, port: usize, attr: &AhAttr) -> Result<(), Error> {
    let err = |reason| Error::AhAttr {
        dlid: attr.dlid,
        reason,
    };
    let Some(g) = attr.grh else {
        return Err(err(
            "a RoCE address handle needs a GRH (every RoCE packet has one)",
        ));
    };
    if ctl.port_gid_at(port, g.sgid_index).is_none() {
        return Err(err("the SGID index names no entry of the port's GID table"));
    }
    Ok(())
}

/// The RoCE port whose GID table has `gid`.
fn port_by_gid(ctl: &Control, gid: &Gid) -> Option<usize> {
    (0..ctl.ports.len()).find(|&p| {
        let d = &ctl.ports[p];
        d.link_layer == LinkLayer::Ethernet
            && (link_local(d.guid) == *gid || d.ipv4.map(ipv4_mapped) == Some(*gid))
    })
}

/// The completion metadata of a RoCE packet.
fn meta(s: &Sender, mcast: bool) -> MbufMeta {
    MbufMeta {
        src_qpn: s.qpn.get(),
        slid: 0,
        flags: MBUF_F_GRH | if mcast { MBUF_F_MCAST } else { 0 },
        ..MbufMeta::default()
    }
}

/// The cacheable decision for a send along `ah` from `s` (see `tx::build_route`): the
/// receiving queues, GRH and metadata into `r`; the longest payload it carries, or
/// `None` for anything the full path must take (errors, a unicast drop).
pub(crate) fn route(
    ctl: &Control,
    s: &Sender,
    ah: &AhAttr,
    d: &TxDst,
    qkey: QKey,
    r: &mut Route,
) -> Option<usize> {
    let g = ah.grh?;
    r.sgid = ctl.port_gid_at(s.port, g.sgid_index)?;
    r.grh = Some(g);
    let mut len_max = ctl.ports[s.port].mtu.bytes();
    if is_group(&g.dgid) {
        for p in 0..ctl.ports.len() {
            if ctl.ports[p].link_layer != LinkLayer::Ethernet || (p == s.port && s.block_mcast_lb) {
                continue;
            }
            let Some(qpns) = ctl.attach.get(&(p, g.dgid)) else {
                continue;
            };
            if ctl.ports[p].state != PortState::Active {
                r.drops[2] += 1;
                continue;
            }
            for qpn in qpns {
                let Some(qp) = ctl.qps.get(&(p, qpn.get())) else {
                    continue;
                };
                if qp.qkey != qkey {
                    r.drops[0] += 1;
                } else if !s.pkey.matches(ctl.qp_pkey(p, qp)) {
                    r.drops[1] += 1;
                } else if qp.rx.is_empty() {
                    r.drops[3] += 1;
                } else {
                    tx::push_qp(r, &qp.rx);
                }
            }
        }
        r.meta = meta(s, true);
    } else {
        let dst = port_by_gid(ctl, &g.dgid)?;
        len_max = len_max.min(ctl.ports[dst].mtu.bytes());
        if ctl.ports[dst].state != PortState::Active {
            return None;
        }
        let qp = ctl.qps.get(&(dst, d.qpn.get()))?;
        if qp.qkey != qkey || !s.pkey.matches(ctl.qp_pkey(dst, qp)) || qp.rx.is_empty() {
            return None;
        }
        tx::push_qp(r, &qp.rx);
        r.meta = meta(s, false);
    }
    Some(len_max)
}

/// Routes one send from a RoCE port (the full path, counting every drop).
#[allow(clippy::too_many_arguments)]
pub(crate) fn switch(
    ctl: &mut Control,
    s: &Sender,
    ah: &AhAttr,
    d: &TxDst,
    qkey: QKey,
    payload: &[u8],
    rng: &mut SimRng,
    held: &mut Vec<(Arc<RxRing>, Mbuf)>,
) -> Result<(), DropReason> {
    let g: GrhAttr = ah.grh.ok_or(DropReason::BadAh)?;
    // The SGID's entry left the table (the address was removed): the HCA fails it.
    let sgid = ctl
        .port_gid_at(s.port, g.sgid_index)
        .ok_or(DropReason::BadAh)?;
    if ctl.pcap.is_some() {
        crate::pcap::capture(ctl, s.slid, s.qpn, s.pkey, &sgid, ah, d.qpn, qkey, payload);
    }
    let grh = tx::grh_bytes(
        g.traffic_class,
        g.flow_label,
        g.hop_limit,
        payload.len(),
        &sgid,
        &g.dgid,
    );
    let hash = tx::rss_hash(payload);
    if !is_group(&g.dgid) {
        let dst = port_by_gid(ctl, &g.dgid).ok_or(DropReason::UnknownGid)?;
        if payload.len() > ctl.ports[dst].mtu.bytes() {
            return Err(DropReason::TooLong);
        }
        let why = if ctl.ports[dst].state != PortState::Active {
            Some(DropReason::PortDown)
        } else {
            match ctl.qps.get(&(dst, d.qpn.get())) {
                None => Some(DropReason::UnknownQpn),
                Some(qp) if qp.qkey != qkey => Some(DropReason::QKey),
                Some(qp) if !s.pkey.matches(ctl.qp_pkey(dst, qp)) => Some(DropReason::PKey),
                Some(qp) if qp.rx.is_empty() => Some(DropReason::NoReceivePosted),
                Some(qp) => {
                    let ring = qp.rx[tx::rss_pick(hash, qp.rx.len())].clone();
                    tx::deliver(
                        ctl,
                        &ring,
                        payload,
                        hash,
                        Some(&grh),
                        meta(s, false),
                        rng,
                        held,
                    );
                    None
                }
            }
        };
        if let Some(why) = why {
            ctl.stats.count(why, 1);
        }
        return Ok(());
    }
    let mut rings = std::mem::take(&mut ctl.scratch_rings);
    rings.clear();
    let mut drops = [0u64; 4];
    for p in 0..ctl.ports.len() {
        if ctl.ports[p].link_layer != LinkLayer::Ethernet || (p == s.port && s.block_mcast_lb) {
            continue;
        }
        let Some(qpns) = ctl.attach.get(&(p, g.dgid)) else {
            continue;
        };
        if ctl.ports[p].state != PortState::Active {
            drops[2] += 1;
            continue;
        }
        for qpn in qpns {
            let Some(qp) = ctl.qps.get(&(p, qpn.get())) else {
                continue;
            };
            if qp.qkey != qkey {
                drops[0] += 1;
            } else if !s.pkey.matches(ctl.qp_pkey(p, qp)) {
                drops[1] += 1;
            } else if qp.rx.is_empty() {
                drops[3] += 1;
            } else {
                rings.push(qp.rx[tx::rss_pick(hash, qp.rx.len())].clone());
            }
        }
    }
    for (why, n) in [
        DropReason::QKey,
        DropReason::PKey,
        DropReason::PortDown,
        DropReason::NoReceivePosted,
    ]
    .into_iter()
    .zip(drops)
    {
        ctl.stats.count(why, n);
    }
    for ring in &rings {
        tx::deliver(
            ctl,
            ring,
            payload,
            hash,
            Some(&grh),
            meta(s, true),
            rng,
            held,
        );
    }
    rings.clear();
    ctl.scratch_rings = rings;
    Ok(())
}
