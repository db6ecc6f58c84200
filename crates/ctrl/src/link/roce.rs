//! RoCE v2: no subnet manager, no SA. A join is local: the group's record is made here
//! with the parameters IPoIB would copy from the broadcast group (the kernel's
//! `cma_iboe_join_multicast` makes the same one: P_Key 0xffff, MTU and rate from the
//! netdev, hop limit `IPV6_DEFAULT_HOPLIMIT` for an IPv4 group on RoCE v2, MLID 0), and
//! the attach the controller does next is the whole join (the HCA driver joins the
//! mapped IP multicast group on its netdev). A leave is local too: the detach before it
//! is the leave. Paths are computed: a GRH to the neighbour's GID, which is in its ARP
//! hardware address (its interface address's IPv4-mapped GID), from the GID-table entry
//! of ours. Every packet carries a GRH; LIDs are 0.
//!
//! The answers are made when the transaction starts and handed to the controller by
//! its next poll, so the multicast state machine runs unchanged (`Joining` for one
//! poll). Nothing on RoCE times out.

use std::net::IpAddr;

use std::collections::VecDeque;

use ibpoll_dev::{AhAttr, GrhAttr, LinkLayer, Nanos, PortAttr};
use ibpoll_wire::mad::Status;
use ibpoll_wire::mcmember::{self, JoinState};
use ibpoll_wire::sa::Selector;
use ibpoll_wire::{Gid, IbMtu, Lid, PKey, QKey, Rate};

use super::{JoinGranted, JoinRequest, LinkEvent, LinkLayerOps, ListStart, Tid, TxnKind, Txns};
use crate::mcast::GroupKind;
use crate::mgid::{ipv4_mapped_gid, McastMap};
use crate::{CtrlStats, Error};

/// The hop limit of RoCE v2 packets to IPv4 destinations (the kernel's
/// `IPV6_DEFAULT_HOPLIMIT`, which rdma_cm puts in a RoCE v2 group's record).
pub(crate) const HOP_LIMIT: u8 = 64;
/// The MGID scope field of a synthesized record (link-local, as IPoIB's groups).
const SCOPE_LINK_LOCAL: u8 = 2;

/// The RoCE v2 strategy.
#[derive(Debug)]
pub(crate) struct RoceLink {
    txns: Txns,
    /// Answers made when their transaction started, delivered by the next poll (one per
    /// transaction in flight at most: bounded by the window).
    ready: VecDeque<LinkEvent>,
    /// The interface address.
    ip: [u8; 4],
    /// Its IPv4-mapped GID: the interface's GID.
    gid: Gid,
    /// The index of `gid` in the port's GID table, while it is there.
    sgid_index: Option<u8>,
    mtu: IbMtu,
    rate: Rate,
}

impl RoceLink {
    /// The strategy of an interface with address `ip` on a RoCE port with `attr`. The
    /// port's GID table must hold the address's IPv4-mapped GID (the address is
    /// configured on the port's netdev).
    pub(crate) fn new(
        attr: &PortAttr,
        ip: Option<[u8; 4]>,
        window: usize,
        timeout: Nanos,
    ) -> Result<RoceLink, Error> {
        let ip = ip.ok_or(Error::RoceNeedsIpv4 {
            port: attr.port_num,
        })?;
        let gid = ipv4_mapped_gid(ip);
        let sgid_index = gid_index(attr, &gid).ok_or(Error::RoceNoGid {
            port: attr.port_num,
            ip,
        })?;
        Ok(RoceLink {
            txns: Txns::new(
                super::tid_first(u64::from(u32::from_be_bytes(ip))),
                window,
                timeout,
            ),
            ready: VecDeque::with_capacity(window),
            ip,
            gid,
            sgid_index: Some(sgid_index),
            mtu: attr.active_mtu,
            rate: attr.rate,
        })
    }

    /// Registers a transaction whose answer `answer` makes, to be delivered next poll.
    fn local(
        &mut self,
        now: Nanos,
        kind: TxnKind,
        join_state: JoinState,
        stats: &mut CtrlStats,
        answer: impl FnOnce(Tid) -> LinkEvent,
    ) -> Option<(Tid, Nanos)> {
        let (tid, deadline) = self.txns.begin(now, kind, join_state, stats)?;
        self.ready.push_back(answer(tid));
        Some((tid, deadline))
    }

    /// The record of a group joined on RoCE.
    fn record(&self, req: &JoinRequest<'_>) -> Option<mcmember::Repr> {
        let mut rec = mcmember::Repr {
            mgid: req.mgid,
            port_gid: self.gid,
            pkey: req.pkey,
            join_state: req.kind.join_state(),
            scope: SCOPE_LINK_LOCAL,
            mlid: Lid(0),
            ..mcmember::Repr::default()
        };
        match (req.kind, req.bcast_record) {
            (GroupKind::Broadcast, _) => {
                rec.qkey = QKey::IPOIB_DEFAULT;
                rec.mtu_selector = Selector::Exactly;
                rec.mtu = self.mtu.code();
                rec.rate_selector = Selector::Exactly;
                rec.rate = self.rate;
                rec.hop_limit = HOP_LIMIT;
            }
            // DESIGN rule 1 holds on RoCE too: other groups copy the broadcast group's.
            (_, Some(b)) => super::ib::copy_broadcast_parameters(&mut rec, b),
            (_, None) => return None,
        }
        Some(rec)
    }
}

/// The index of `gid` in the port's GID table.
fn gid_index(attr: &PortAttr, gid: &Gid) -> Option<u8> {
    attr.gids
        .iter()
        .position(|g| g == gid)
        .and_then(|i| u8::try_from(i).ok())
}

impl LinkLayerOps for RoceLink {
    fn link_layer(&self) -> LinkLayer {
        LinkLayer::Ethernet
    }

    fn port_gid(&self) -> Gid {
        self.gid
    }

    fn mcast_map(&self) -> McastMap {
        McastMap::RoceV2
    }

    fn port_changed(&mut self, attr: &PortAttr) {
        let was = self.sgid_index;
        self.sgid_index = gid_index(attr, &self.gid);
        if was.is_some() && self.sgid_index.is_none() {
            tracing::warn!(
                ip = ?self.ip,
                "ibpoll-ctrl: the interface address left the RoCE port's GID table; joins and paths fail until it is back"
            );
        }
        self.mtu = attr.active_mtu;
        self.rate = attr.rate;
    }

    fn start_join(
        &mut self,
        now: Nanos,
        req: &JoinRequest<'_>,
        stats: &mut CtrlStats,
    ) -> Option<(Tid, Nanos)> {
        let rec = self.record(req)?;
        let mgid = req.mgid;
        let usable = self.sgid_index.is_some();
        self.local(now, TxnKind::Join(mgid), rec.join_state, stats, |tid| {
            if usable {
                LinkEvent::Joined {
                    tid,
                    mgid,
                    granted: JoinGranted {
                        record: rec,
                        join_state: rec.join_state,
                    },
                }
            } else {
                LinkEvent::JoinRefused {
                    tid,
                    mgid,
                    status: Status::ERR_REQ_INVALID_GID,
                }
            }
        })
    }

    fn start_leave(
        &mut self,
        now: Nanos,
        mgid: Gid,
        join_state: JoinState,
        stats: &mut CtrlStats,
    ) -> Option<(Tid, Nanos)> {
        self.local(now, TxnKind::Leave(mgid), join_state, stats, |tid| {
            LinkEvent::Left { tid, mgid }
        })
    }

    fn start_path(
        &mut self,
        now: Nanos,
        ip: IpAddr,
        dgid: Gid,
        stats: &mut CtrlStats,
    ) -> Option<(Tid, Nanos)> {
        let ah = self.sgid_index.map(|sgid_index| AhAttr {
            dlid: Lid(0),
            sl: 0,
            src_path_bits: 0,
            static_rate: self.rate,
            grh: Some(GrhAttr {
                dgid,
                flow_label: 0,
                sgid_index,
                hop_limit: HOP_LIMIT,
                traffic_class: 0,
            }),
        });
        self.local(
            now,
            TxnKind::Path(ip),
            JoinState::NONE,
            stats,
            |tid| match ah {
                Some(ah) => LinkEvent::Path { tid, ip, ah },
                None => LinkEvent::PathRefused { tid, ip },
            },
        )
    }

    fn start_list(&mut self, _now: Nanos, _pkey: PKey, _stats: &mut CtrlStats) -> ListStart {
        ListStart::NotApplicable
    }

    fn poll(&mut self, now: Nanos, stats: &mut CtrlStats, out: &mut Vec<LinkEvent>) -> usize {
        let mut work = 0;
        while let Some(ev) = self.ready.pop_front() {
            work += 1;
            let tid = event_tid(&ev);
            // A transaction a flush abandoned meanwhile: its answer is late.
            if self.txns.answered(tid).is_some() {
                out.push(ev);
            } else {
                self.txns.count_stray(tid, stats);
            }
        }
        work + self.txns.expire(now, stats, out)
    }

    fn group_ah(&self, rec: &mcmember::Repr) -> AhAttr {
        AhAttr {
            dlid: Lid(0),
            sl: rec.sl,
            src_path_bits: 0,
            static_rate: rec.rate,
            grh: Some(GrhAttr {
                dgid: rec.mgid,
                flow_label: rec.flow_label,
                sgid_index: self.sgid_index.unwrap_or(0),
                hop_limit: rec.hop_limit,
                traffic_class: rec.tclass,
            }),
        }
    }

    fn txns(&self) -> &Txns {
        &self.txns
    }

    fn txns_mut(&mut self) -> &mut Txns {
        &mut self.txns
    }
}

/// The transaction an event ends.
fn event_tid(ev: &LinkEvent) -> Tid {
    match ev {
        LinkEvent::Joined { tid, .. }
        | LinkEvent::JoinRefused { tid, .. }
        | LinkEvent::Left { tid, .. }
        | LinkEvent::LeaveRefused { tid, .. }
        | LinkEvent::Path { tid, .. }
        | LinkEvent::PathRefused { tid, .. }
        | LinkEvent::Memberships { tid, .. }
        | LinkEvent::ListRefused { tid, .. }
        | LinkEvent::Timeout { tid, .. } => *tid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ibpoll_dev::PortState;
    use ibpoll_wire::ipoib;

    const IP: [u8; 4] = [10, 0, 0, 1];

    fn attr() -> PortAttr {
        let mut a = PortAttr::new(1);
        a.link_layer = LinkLayer::Ethernet;
        a.state = PortState::Active;
        a.gid = Gid([0xfe, 0x80, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0xff, 0xfe, 0, 0, 1]);
        a.gids = vec![a.gid, ipv4_mapped_gid(IP)];
        a.pkeys = vec![PKey::DEFAULT];
        a.active_mtu = IbMtu::Mtu1024;
        a
    }

    fn link() -> RoceLink {
        RoceLink::new(&attr(), Some(IP), 4, Nanos::from_secs(1)).unwrap()
    }

    #[test]
    fn a_roce_port_needs_the_interface_address_in_its_gid_table() {
        assert!(matches!(
            RoceLink::new(&attr(), None, 4, Nanos::from_secs(1)),
            Err(Error::RoceNeedsIpv4 { port: 1 })
        ));
        let e = RoceLink::new(&attr(), Some([10, 0, 0, 9]), 4, Nanos::from_secs(1)).unwrap_err();
        assert!(e.to_string().contains("10.0.0.9"), "{e}");
        let l = link();
        assert_eq!(l.port_gid(), ipv4_mapped_gid(IP));
        assert_eq!(l.sgid_index, Some(1));
    }

    #[test]
    fn the_broadcast_join_is_local_and_its_record_comes_from_the_port() {
        let mut l = link();
        let mut stats = CtrlStats::default();
        let mgid = McastMap::RoceV2.broadcast();
        let req = JoinRequest {
            mgid,
            kind: GroupKind::Broadcast,
            pkey: PKey::DEFAULT,
            bcast_record: None,
        };
        let (tid, _) = l.start_join(Nanos::ZERO, &req, &mut stats).unwrap();
        let mut out = Vec::new();
        assert_eq!(l.poll(Nanos::ZERO, &mut stats, &mut out), 1);
        let [LinkEvent::Joined {
            tid: t, granted, ..
        }] = &out[..]
        else {
            panic!("{out:?}");
        };
        assert_eq!(*t, tid);
        let r = granted.record;
        assert_eq!(
            (r.qkey, r.mlid, r.mtu),
            (QKey(0x0B1B), Lid(0), IbMtu::Mtu1024.code())
        );
        assert_eq!((r.hop_limit, r.port_gid), (HOP_LIMIT, ipv4_mapped_gid(IP)));
        assert_eq!(stats.sa_joins_sent, 0, "no SA on RoCE");
        let ah = l.group_ah(&r);
        let g = ah.grh.expect("every RoCE packet has a GRH");
        assert_eq!((ah.dlid, g.dgid, g.sgid_index), (Lid(0), mgid, 1));
        // Another group copies the broadcast group's record, and needs it.
        let g1 = McastMap::RoceV2.ipv4([239, 1, 1, 1]);
        let mut req = JoinRequest {
            mgid: g1,
            kind: GroupKind::Full,
            pkey: PKey::DEFAULT,
            bcast_record: None,
        };
        assert!(l.start_join(Nanos::ZERO, &req, &mut stats).is_none());
        req.bcast_record = Some(&r);
        l.start_join(Nanos::ZERO, &req, &mut stats).unwrap();
        out.clear();
        l.poll(Nanos::ZERO, &mut stats, &mut out);
        assert!(
            matches!(&out[..], [LinkEvent::Joined { granted, .. }] if granted.record.qkey == r.qkey && granted.record.mgid == g1)
        );
        assert_eq!(
            l.start_list(Nanos::ZERO, PKey::DEFAULT, &mut stats),
            ListStart::NotApplicable
        );
        assert!(!ipoib::is_ipv4_mgid(&g1));
    }

    #[test]
    fn paths_are_computed_from_gids_and_fail_without_the_interface_gid() {
        let mut l = link();
        let mut stats = CtrlStats::default();
        let peer = ipv4_mapped_gid([10, 0, 0, 2]);
        l.start_path(Nanos::ZERO, [10, 0, 0, 2].into(), peer, &mut stats)
            .unwrap();
        let mut out = Vec::new();
        l.poll(Nanos::ZERO, &mut stats, &mut out);
        let [LinkEvent::Path { ah, ip, .. }] = &out[..] else {
            panic!("{out:?}");
        };
        assert_eq!(*ip, IpAddr::from([10, 0, 0, 2]));
        let g = ah.grh.expect("GRH always");
        assert_eq!(
            (ah.dlid, g.dgid, g.sgid_index, g.hop_limit),
            (Lid(0), peer, 1, 64)
        );
        // The address left the netdev: the GID table lost it.
        let mut a = attr();
        a.gids.truncate(1);
        l.port_changed(&a);
        l.start_path(Nanos::ZERO, [10, 0, 0, 2].into(), peer, &mut stats)
            .unwrap();
        out.clear();
        l.poll(Nanos::ZERO, &mut stats, &mut out);
        assert!(matches!(&out[..], [LinkEvent::PathRefused { .. }]));
        // An abandoned transaction's answer is late, not applied.
        let (tid, _) = l
            .start_leave(Nanos::ZERO, peer, JoinState::FULL_MEMBER, &mut stats)
            .unwrap();
        l.txns_mut().abandon(tid);
        out.clear();
        l.poll(Nanos::ZERO, &mut stats, &mut out);
        assert!(out.is_empty());
        assert_eq!(stats.sa_late_answers, 1);
    }
}
