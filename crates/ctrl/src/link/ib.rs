//! InfiniBand: joins, leaves, paths and the membership listing are SA transactions
//! over the port's MAD channel ([`SaTransport`]).

use std::net::IpAddr;

use ibpoll_dev::{AhAttr, GrhAttr, LinkLayer, MadChannel, Nanos, PortAttr};
use ibpoll_wire::ipoib::McastScope;
use ibpoll_wire::mad::Method;
use ibpoll_wire::mcmember::{self, JoinState};
use ibpoll_wire::sa::{Attribute, ComponentMask, Selector};
use ibpoll_wire::{path_record, Gid, PKey};

use super::sa::{self, SaTransport};
use super::{JoinRequest, LinkEvent, LinkLayerOps, ListStart, Tid, TxnKind, Txns};
use crate::mcast::GroupKind;
use crate::mgid::McastMap;
use crate::CtrlStats;

/// The InfiniBand strategy: the SA does the work.
#[derive(Debug)]
pub(crate) struct IbLink {
    sa: SaTransport,
    txns: Txns,
    port_gid: Gid,
    map: McastMap,
    /// The partition whose records a listing keeps.
    pkey: PKey,
}

impl IbLink {
    /// The strategy of an interface in partition `pkey` (IPv4 groups in `scope`) on a
    /// port with `attr`, whose SA is reached over `chan`.
    pub(crate) fn new(
        chan: Box<dyn MadChannel>,
        attr: &PortAttr,
        pkey: PKey,
        scope: McastScope,
        window: usize,
        timeout: Nanos,
    ) -> IbLink {
        IbLink {
            sa: SaTransport::new(chan, attr),
            txns: Txns::new(super::tid_first(attr.gid.guid()), window, timeout),
            port_gid: attr.gid,
            map: McastMap::Ipoib { pkey, scope },
            pkey,
        }
    }

    /// Registers a transaction and sends its MAD.
    fn start(
        &mut self,
        now: Nanos,
        method: Method,
        mask: ComponentMask,
        attribute: Attribute,
        kind: TxnKind,
        stats: &mut CtrlStats,
    ) -> Option<(Tid, Nanos)> {
        let join_state = match &attribute {
            Attribute::McMember(r) => r.join_state,
            _ => JoinState::NONE,
        };
        let (tid, deadline) = self.txns.begin(now, kind, join_state, stats)?;
        self.sa.send(tid, method, mask, attribute, stats);
        match kind {
            TxnKind::Join(_) => stats.sa_joins_sent += 1,
            TxnKind::Leave(_) => stats.sa_leaves_sent += 1,
            TxnKind::Path(_) => stats.sa_paths_sent += 1,
            TxnKind::Memberships => stats.sa_lists_sent += 1,
        }
        Some((tid, deadline))
    }

    /// Matches one received MAD to its transaction.
    fn answer(&mut self, bytes: &ibpoll_dev::Mad, stats: &mut CtrlStats) -> Option<LinkEvent> {
        let (tid, mad) = sa::response_tid(bytes, stats)?;
        let Some(txn) = self.txns.get(tid).copied() else {
            self.txns.count_stray(tid, stats);
            return None;
        };
        let Some(ev) = sa::decode(&txn, &mad, bytes, self.pkey) else {
            // A matching TID with the wrong shape: not trusted; the transaction runs
            // on to its deadline.
            stats.sa_malformed += 1;
            return None;
        };
        self.txns.answered(tid);
        stats.sa_answers += 1;
        if !mad.header.mad.status.is_ok() {
            stats.sa_error_answers += 1;
        }
        Some(ev)
    }
}

impl LinkLayerOps for IbLink {
    fn link_layer(&self) -> LinkLayer {
        LinkLayer::InfiniBand
    }

    fn port_gid(&self) -> Gid {
        self.port_gid
    }

    fn mcast_map(&self) -> McastMap {
        self.map
    }

    fn port_changed(&mut self, attr: &PortAttr) {
        self.port_gid = attr.gid;
        self.sa.set_port(attr);
    }

    fn start_join(
        &mut self,
        now: Nanos,
        req: &JoinRequest<'_>,
        stats: &mut CtrlStats,
    ) -> Option<(Tid, Nanos)> {
        let (mask, rec) = join_request(req, self.port_gid)?;
        self.start(
            now,
            Method::SET,
            mask,
            Attribute::McMember(rec),
            TxnKind::Join(req.mgid),
            stats,
        )
    }

    fn start_leave(
        &mut self,
        now: Nanos,
        mgid: Gid,
        join_state: JoinState,
        stats: &mut CtrlStats,
    ) -> Option<(Tid, Nanos)> {
        let rec = mcmember::Repr {
            mgid,
            port_gid: self.port_gid,
            join_state,
            ..mcmember::Repr::default()
        };
        self.start(
            now,
            Method::DELETE,
            sa::leave_mask(),
            Attribute::McMember(rec),
            TxnKind::Leave(mgid),
            stats,
        )
    }

    fn start_path(
        &mut self,
        now: Nanos,
        ip: IpAddr,
        dgid: Gid,
        stats: &mut CtrlStats,
    ) -> Option<(Tid, Nanos)> {
        let rec = path_record::Repr {
            dgid,
            sgid: self.port_gid,
            numb_path: 1,
            pkey: self.pkey,
            ..path_record::Repr::default()
        };
        self.start(
            now,
            Method::GET,
            sa::path_mask(),
            Attribute::PathRecord(rec),
            TxnKind::Path(ip),
            stats,
        )
    }

    fn start_list(&mut self, now: Nanos, pkey: PKey, stats: &mut CtrlStats) -> ListStart {
        let rec = mcmember::Repr {
            port_gid: self.port_gid,
            pkey,
            ..mcmember::Repr::default()
        };
        match self.start(
            now,
            Method::GET_TABLE,
            sa::list_mask(),
            Attribute::McMember(rec),
            TxnKind::Memberships,
            stats,
        ) {
            Some((tid, _)) => ListStart::Started(tid),
            None => ListStart::Later,
        }
    }

    fn poll(&mut self, now: Nanos, stats: &mut CtrlStats, out: &mut Vec<LinkEvent>) -> usize {
        let mut work = 0;
        for _ in 0..super::RECV_PER_POLL {
            let Some(bytes) = self.sa.recv() else {
                break;
            };
            work += 1;
            if let Some(ev) = self.answer(&bytes, stats) {
                out.push(ev);
            }
        }
        work + self.txns.expire(now, stats, out)
    }

    fn group_ah(&self, rec: &mcmember::Repr) -> AhAttr {
        mcast_ah_attr(rec)
    }

    fn txns(&self) -> &Txns {
        &self.txns
    }

    fn txns_mut(&mut self) -> &mut Txns {
        &mut self.txns
    }
}

/// The MCMemberRecord Set that joins a group (IPoIB's `ipoib_mcast_join`): the
/// broadcast group with MGID, PortGID, P_Key and JoinState; any other group with the
/// parameters of the broadcast group's record as well (DESIGN rule 1), so `None`
/// without one.
pub(crate) fn join_request(
    req: &JoinRequest<'_>,
    port_gid: Gid,
) -> Option<(ComponentMask, mcmember::Repr)> {
    let mut rec = mcmember::Repr {
        mgid: req.mgid,
        port_gid,
        pkey: req.pkey,
        join_state: req.kind.join_state(),
        ..mcmember::Repr::default()
    };
    if req.kind == GroupKind::Broadcast {
        return Some((sa::broadcast_join_mask(), rec));
    }
    let b = req.bcast_record?;
    copy_broadcast_parameters(&mut rec, b);
    Some((sa::group_join_mask(), rec))
}

/// What every other join copies from the broadcast group's record (RFC 4391).
pub(crate) fn copy_broadcast_parameters(rec: &mut mcmember::Repr, b: &mcmember::Repr) {
    rec.qkey = b.qkey;
    rec.mtu_selector = Selector::Exactly;
    rec.mtu = b.mtu;
    rec.tclass = b.tclass;
    rec.rate_selector = Selector::Exactly;
    rec.rate = b.rate;
    rec.sl = b.sl;
    rec.flow_label = b.flow_label;
    rec.hop_limit = b.hop_limit;
}

/// The address handle of a joined group: its MLID, and a GRH to its MGID with the
/// record's flow label, hop limit and traffic class.
fn mcast_ah_attr(rec: &mcmember::Repr) -> AhAttr {
    AhAttr {
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
    }
}

#[cfg(test)]
mod tests;
