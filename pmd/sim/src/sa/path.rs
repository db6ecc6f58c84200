//! PathRecord Get and GetTable (OpenSM `osm_sa_path_record.c`): unicast paths between
//! two known ports, and the path to a multicast group.

use ibpoll_wire::mad::{Method, Status};
use ibpoll_wire::path_record::{self, mask as prm};
use ibpoll_wire::sa::{ComponentMask, Selector};
use ibpoll_wire::{Gid, PKey, Rate};

use super::rules::{common_pkey, rate_prev, share_pkey, share_this_pkey};
use super::{Answer, Outcome, PathEnd, Requester, SubnetAdmin, SCOPE_LINK_LOCAL};

impl SubnetAdmin {
    /// OpenSM `osm_pr_rcv_process`.
    pub(super) fn path_record(
        &self,
        method: Method,
        mask: ComponentMask,
        q: &path_record::Repr,
        from: &Requester,
        oracle: &dyn Fn(&Gid) -> Option<PathEnd>,
    ) -> Outcome {
        if method != Method::GET && method != Method::GET_TABLE {
            return Err(Status::UNSUP_METHOD_ATTR);
        }
        if mask.contains(prm::RATE_SELECTOR | prm::RATE) && q.rate.mbps().is_none() {
            return Err(Status::ERR_REQ_INVALID);
        }
        if mask.contains(prm::MTU_SELECTOR | prm::MTU) && !(1..=5).contains(&q.mtu) {
            return Err(Status::ERR_REQ_INVALID);
        }
        if mask.intersects(prm::SERVICE_ID) && !mask.contains(prm::SERVICE_ID) {
            return Err(Status::ERR_REQ_INSUFFICIENT_COMPONENTS);
        }
        if mask.contains(prm::DGID) && q.dgid.is_multicast() {
            return Ok(Answer::PathRecord(
                self.multicast_path(mask, q).into_iter().collect(),
            ));
        }
        let mut out = Vec::new();
        let Some((src_gid, src)) = self.path_end(mask, q, true, from, oracle)? else {
            return Ok(Answer::PathRecord(out));
        };
        let Some((dst_gid, dst)) = self.path_end(mask, q, false, from, oracle)? else {
            return Ok(Answer::PathRecord(out));
        };
        // pr_rcv_get_port_pair_paths: requester, source and destination share a P_Key.
        if !share_pkey(&from.pkeys, &src.pkeys)
            || !share_pkey(&from.pkeys, &dst.pkeys)
            || !share_pkey(&src.pkeys, &dst.pkeys)
        {
            return Ok(Answer::PathRecord(out));
        }
        if let Some(r) = self.unicast_path(mask, q, (src_gid, &src), (dst_gid, &dst)) {
            out.push(r);
        }
        Ok(Answer::PathRecord(out))
    }

    /// One end of a unicast path (OpenSM `osm_pr_get_end_points`). `Ok(None)` when it
    /// cannot be found (no records), `Err` when SGID/SLID or DGID/DLID disagree.
    ///
    /// The oracle resolves GIDs only, so an end named by LID alone is found only when it
    /// is the requester's own LID, and an end named by neither is the requester's port
    /// (OpenSM would walk every port).
    fn path_end(
        &self,
        mask: ComponentMask,
        q: &path_record::Repr,
        source: bool,
        from: &Requester,
        oracle: &dyn Fn(&Gid) -> Option<PathEnd>,
    ) -> Result<Option<(Gid, PathEnd)>, Status> {
        let (gid_bit, lid_bit, gid, lid) = if source {
            (prm::SGID, prm::SLID, q.sgid, q.slid)
        } else {
            (prm::DGID, prm::DLID, q.dgid, q.dlid)
        };
        let end = if mask.contains(gid_bit) {
            let link_local = gid.0[0] == 0xFE && gid.0[1] & 0xC0 == 0x80;
            if !link_local && gid.subnet_prefix() != self.cfg.subnet_prefix {
                // INVALID_GID in OpenSM's log, but the answer is an empty list.
                return Ok(None);
            }
            let port_gid = Gid::new(self.cfg.subnet_prefix, gid.guid());
            match oracle(&port_gid) {
                Some(e) => (port_gid, e),
                None => return Ok(None),
            }
        } else if mask.contains(lid_bit) {
            if lid != from.lid {
                return Ok(None);
            }
            match oracle(&from.port_gid) {
                Some(e) => (from.port_gid, e),
                None => return Ok(None),
            }
        } else if source {
            match oracle(&from.port_gid) {
                Some(e) => (from.port_gid, e),
                None => return Ok(None),
            }
        } else {
            return Ok(None);
        };
        if mask.contains(gid_bit) && mask.contains(lid_bit) && end.1.lid != lid {
            return Err(Status::ERR_REQ_INVALID);
        }
        Ok(Some(end))
    }

    /// OpenSM `pr_rcv_get_path_parms` + `pr_rcv_build_pr` for a subnet without switches
    /// in the way: MTU and rate are the smaller of the two ends'.
    fn unicast_path(
        &self,
        mask: ComponentMask,
        q: &path_record::Repr,
        src: (Gid, &PathEnd),
        dst: (Gid, &PathEnd),
    ) -> Option<path_record::Repr> {
        let (src_gid, s) = src;
        let (dst_gid, d) = dst;
        let loopback = src_gid.guid() == dst_gid.guid();
        let mut mtu = s.mtu.code().min(d.mtu.code());
        let mut rate = if s.rate.cmp_speed(d.rate).is_le() {
            s.rate
        } else {
            d.rate
        };
        let mut pkt_life = if loopback { 0 } else { self.cfg.subnet_timeout };

        if mask.contains(prm::MTU_SELECTOR | prm::MTU) {
            mtu = select_code(mtu, q.mtu_selector, q.mtu)?;
        }
        if mask.contains(prm::RATE_SELECTOR | prm::RATE) {
            rate = select_rate(rate, q.rate_selector, q.rate)?;
        }
        if mask.contains(prm::PACKET_LIFE_TIME_SELECTOR | prm::PACKET_LIFE_TIME) {
            pkt_life = select_code(pkt_life, q.packet_life_time_selector, q.packet_life_time)?;
        }
        let raw = mask.contains(prm::RAW_TRAFFIC) && q.raw_traffic;
        let pkey = if raw {
            common_pkey(&s.pkeys, &d.pkeys).unwrap_or(PKey(0))
        } else if mask.contains(prm::PKEY) {
            if !share_this_pkey(&s.pkeys, &d.pkeys, q.pkey) {
                return None;
            }
            q.pkey
        } else {
            common_pkey(&s.pkeys, &d.pkeys)?
        };
        let sl = if mask.contains(prm::SL) {
            q.sl
        } else if self.cfg.partitions.iter().any(|p| p.base() == pkey.base()) {
            self.cfg.broadcast_sl
        } else {
            0
        };
        // The reverse path has the same parameters here, so every path is reversible;
        // a request that demands reversibility is always satisfied.
        Some(path_record::Repr {
            service_id: 0,
            dgid: dst_gid,
            sgid: if mask.contains(prm::SGID) {
                q.sgid
            } else {
                src_gid
            },
            dlid: d.lid,
            slid: s.lid,
            raw_traffic: false,
            flow_label: 0,
            hop_limit: 0,
            tclass: 0,
            reversible: true,
            numb_path: 0,
            pkey: if raw { PKey(0) } else { pkey },
            qos_class: 0,
            sl,
            mtu_selector: Selector::Exactly,
            mtu,
            rate_selector: Selector::Exactly,
            rate,
            packet_life_time_selector: Selector::Exactly,
            packet_life_time: pkt_life,
            preference: 0,
        })
    }

    /// OpenSM `pr_process_multicast`.
    fn multicast_path(
        &self,
        mask: ComponentMask,
        q: &path_record::Repr,
    ) -> Option<path_record::Repr> {
        let g = self.groups.get(&q.dgid)?;
        let r = &g.rec;
        if mask.contains(prm::DLID) && q.dlid != r.mlid {
            return None;
        }
        if mask.contains(prm::SGID) && !g.members.contains_key(&q.sgid.guid()) {
            return None;
        }
        if (mask.contains(prm::PKEY) && q.pkey != r.pkey)
            || (mask.contains(prm::SL) && q.sl != r.sl)
            || (mask.contains(prm::FLOW_LABEL) && q.flow_label != r.flow_label)
            || (mask.contains(prm::HOP_LIMIT) && q.hop_limit != r.hop_limit)
            || (mask.contains(prm::TCLASS) && q.tclass != r.tclass)
        {
            return None;
        }
        let mut p = *q;
        p.dgid = r.mgid;
        p.dlid = r.mlid;
        p.tclass = r.tclass;
        p.reversible = false;
        p.numb_path = 1;
        p.pkey = r.pkey;
        p.mtu_selector = Selector::Exactly;
        p.mtu = r.mtu;
        p.rate_selector = Selector::Exactly;
        p.rate = r.rate;
        p.packet_life_time_selector = Selector::Exactly;
        p.packet_life_time = r.packet_life_time;
        p.sl = r.sl;
        p.qos_class = 0;
        p.raw_traffic = false;
        p.flow_label = r.flow_label;
        p.hop_limit = if r.mgid.mcast_scope() == SCOPE_LINK_LOCAL {
            r.hop_limit
        } else {
            0xFF
        };
        Some(p)
    }
}

/// A path's MTU or PacketLifeTime code under the request's selector (OpenSM
/// `pr_rcv_get_path_parms`): `None` when the path cannot satisfy it.
fn select_code(have: u8, selector: Selector, required: u8) -> Option<u8> {
    match selector {
        Selector::GreaterThan if have <= required => None,
        Selector::LessThan if have >= required => (required > 1).then(|| required - 1),
        Selector::Exactly if have < required => None,
        Selector::Exactly => Some(required),
        _ => Some(have),
    }
}

/// A path's rate under the request's selector (OpenSM `pr_rcv_get_path_parms`).
fn select_rate(have: Rate, selector: Selector, required: Rate) -> Option<Rate> {
    match selector {
        Selector::GreaterThan if have.cmp_speed(required).is_le() => None,
        Selector::LessThan if have.cmp_speed(required).is_ge() => rate_prev(required),
        Selector::Exactly if have.cmp_speed(required).is_ne() => None,
        Selector::Exactly => Some(required),
        _ => Some(have),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sa::testutil::*;
    use ibpoll_wire::sa::SaMad;
    use ibpoll_wire::{Lid, PKey};

    #[test]
    fn path_record_get() {
        let mut sa = sa();
        // As Linux IPoIB asks (path_rec_start): DGID, SGID, NumbPath, TClass, P_Key.
        let q = path_record::Repr {
            dgid: gid(7),
            sgid: gid(1),
            numb_path: 1,
            pkey: PKey::DEFAULT,
            ..Default::default()
        };
        let mask = prm::DGID | prm::SGID | prm::NUMB_PATH | prm::TCLASS | prm::PKEY;
        let resp = sa
            .handle(&path_req(Method::GET, mask, q), &host(1), &oracle)
            .unwrap();
        assert_eq!(&resp[44..46], &[0, 8]);
        let m = SaMad::parse(&resp).unwrap();
        assert_eq!(status(&m), Status::OK);
        let r = pr(&m);
        assert_eq!(
            (r.dgid, r.sgid, r.dlid, r.slid),
            (gid(7), gid(1), Lid(7), Lid(1))
        );
        assert_eq!((r.mtu_selector, r.mtu), (Selector::Exactly, 3)); // min(4096, 1024)
        assert_eq!(r.rate, Rate::GBPS_10); // min(40, 10)
        assert_eq!(r.packet_life_time, 18);
        assert_eq!(r.pkey, PKey::DEFAULT);
        assert_eq!((r.sl, r.reversible, r.numb_path), (0, true, 0));
        let raw = r.to_bytes();
        assert_eq!(
            &raw[48..58],
            &[0x00, 0x80, 0xff, 0xff, 0x00, 0x00, 0x83, 0x83, 0x92, 0x00]
        );

        // Loopback: PacketLifeTime 0.
        let q = path_record::Repr {
            dgid: gid(1),
            sgid: gid(1),
            ..Default::default()
        };
        let m = send(&mut sa, 1, &path_req(Method::GET, prm::DGID | prm::SGID, q));
        assert_eq!(pr(&m).packet_life_time, 0);
        // No source given: the requester's port.
        let q = path_record::Repr {
            dgid: gid(2),
            ..Default::default()
        };
        let m = send(&mut sa, 3, &path_req(Method::GET, prm::DGID, q));
        assert_eq!(pr(&m).slid, Lid(3));
        // MTU selector: exactly 4096 is more than the path has.
        let q = path_record::Repr {
            dgid: gid(7),
            sgid: gid(1),
            mtu_selector: Selector::Exactly,
            mtu: 5,
            ..Default::default()
        };
        let m = send(
            &mut sa,
            1,
            &path_req(
                Method::GET,
                prm::DGID | prm::SGID | prm::MTU | prm::MTU_SELECTOR,
                q,
            ),
        );
        assert_eq!(status(&m), Status::ERR_NO_RECORDS);
        // Less than 4096 between two 4096 ports: 2048.
        let q = path_record::Repr {
            dgid: gid(2),
            sgid: gid(1),
            mtu_selector: Selector::LessThan,
            mtu: 5,
            ..Default::default()
        };
        let m = send(
            &mut sa,
            1,
            &path_req(
                Method::GET,
                prm::DGID | prm::SGID | prm::MTU | prm::MTU_SELECTOR,
                q,
            ),
        );
        assert_eq!(pr(&m).mtu, 4);
    }

    #[test]
    fn path_record_without_a_path() {
        let mut sa = sa();
        let mask = prm::DGID | prm::SGID;
        // Unknown destination GID.
        let q = path_record::Repr {
            dgid: gid(50),
            sgid: gid(1),
            ..Default::default()
        };
        let m = send(&mut sa, 1, &path_req(Method::GET, mask, q));
        assert_eq!(status(&m), Status::ERR_NO_RECORDS);
        assert_eq!(pr(&m), q); // the request echoed
                               // No shared partition (host 8 is only in 0x8001).
        let q = path_record::Repr {
            dgid: gid(8),
            sgid: gid(1),
            ..Default::default()
        };
        assert_eq!(
            status(&send(&mut sa, 1, &path_req(Method::GET, mask, q))),
            Status::ERR_NO_RECORDS
        );
        // A P_Key they do not share.
        let q = path_record::Repr {
            dgid: gid(2),
            sgid: gid(1),
            pkey: PKey(0x8001),
            ..Default::default()
        };
        assert_eq!(
            status(&send(
                &mut sa,
                1,
                &path_req(Method::GET, mask | prm::PKEY, q)
            )),
            Status::ERR_NO_RECORDS
        );
        // DLID disagreeing with DGID.
        let q = path_record::Repr {
            dgid: gid(2),
            sgid: gid(1),
            dlid: Lid(3),
            ..Default::default()
        };
        assert_eq!(
            status(&send(
                &mut sa,
                1,
                &path_req(Method::GET, mask | prm::DLID, q)
            )),
            Status::ERR_REQ_INVALID
        );
        // Half a ServiceID.
        let q = path_record::Repr {
            dgid: gid(2),
            sgid: gid(1),
            ..Default::default()
        };
        assert_eq!(
            status(&send(
                &mut sa,
                1,
                &path_req(Method::GET, mask | prm::SERVICE_ID_MSB, q)
            )),
            Status::ERR_REQ_INSUFFICIENT_COMPONENTS
        );
    }

    #[test]
    fn selectors_narrow_or_refuse_a_path() {
        // A path of MTU code 4 (2048).
        assert_eq!(select_code(4, Selector::GreaterThan, 4), None);
        assert_eq!(select_code(4, Selector::GreaterThan, 3), Some(4));
        assert_eq!(select_code(4, Selector::LessThan, 4), Some(3));
        assert_eq!(select_code(4, Selector::LessThan, 5), Some(4));
        assert_eq!(select_code(1, Selector::LessThan, 1), None);
        assert_eq!(select_code(4, Selector::Exactly, 5), None);
        assert_eq!(select_code(4, Selector::Exactly, 3), Some(3));
        assert_eq!(select_code(4, Selector::Best, 1), Some(4));
        // A 40 Gb/s path.
        let have = Rate::GBPS_40;
        assert_eq!(
            select_rate(have, Selector::GreaterThan, Rate::GBPS_40),
            None
        );
        assert_eq!(
            select_rate(have, Selector::GreaterThan, Rate::GBPS_10),
            Some(have)
        );
        assert_eq!(
            select_rate(have, Selector::LessThan, Rate::GBPS_10),
            Some(Rate::GBPS_5)
        );
        assert_eq!(select_rate(have, Selector::Exactly, Rate::GBPS_20), None);
        assert_eq!(
            select_rate(have, Selector::Best, Rate::GBPS_2_5),
            Some(have)
        );
    }
}
