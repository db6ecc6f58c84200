//! MCMemberRecord Get and GetTable (OpenSM `mcmr_query_mgrp`).

use ibpoll_wire::mcmember::{self, mask as mcm, JoinState};
use ibpoll_wire::sa::ComponentMask;
use ibpoll_wire::Gid;

use super::mcmember::validate_more_comp_fields;
use super::rules::has_pkey;
use super::{Requester, SubnetAdmin};

impl SubnetAdmin {
    /// OpenSM `mcmr_query_mgrp` / `mcmr_by_comp_mask`.
    pub(super) fn query(
        &self,
        mask: ComponentMask,
        trusted: bool,
        q: &mcmember::Repr,
        from: &Requester,
    ) -> Vec<mcmember::Repr> {
        let mut out = Vec::new();
        for g in self.groups.values() {
            let r = &g.rec;
            if mask.contains(mcm::MGID) && q.mgid != r.mgid {
                continue;
            }
            if mask.contains(mcm::MLID) && q.mlid != r.mlid {
                continue;
            }
            if !has_pkey(&from.pkeys, r.pkey) {
                continue;
            }
            if (mask.contains(mcm::QKEY) && q.qkey != r.qkey)
                || (mask.contains(mcm::PKEY) && q.pkey != r.pkey)
                || (mask.contains(mcm::TCLASS) && q.tclass != r.tclass)
                || (mask.contains(mcm::SL) && q.sl != r.sl)
                || (mask.contains(mcm::FLOW_LABEL) && q.flow_label != r.flow_label)
                || (mask.contains(mcm::HOP_LIMIT) && q.hop_limit != r.hop_limit)
                || (mask.contains(mcm::PROXY_JOIN) && q.proxy_join != r.proxy_join)
            {
                continue;
            }
            if !validate_more_comp_fields(mask, q, r) {
                continue;
            }
            let mut ss_mask = 0u8;
            if mask.contains(mcm::SCOPE) {
                ss_mask |= 0xF0;
            }
            if mask.contains(mcm::JOIN_STATE) {
                ss_mask |= 0x0F;
            }
            let q_ss = (q.scope << 4) | q.join_state.bits();
            let record = |ss: u8, port_gid: Gid, proxy: bool| {
                let mut m = *r;
                m.scope = ss >> 4;
                m.join_state = JoinState::from_bits_truncate(ss);
                m.port_gid = port_gid;
                m.proxy_join = proxy;
                m
            };
            if mask.contains(mcm::PORT_GID) {
                let Some(m) = g.members.get(&q.port_gid.guid()) else {
                    continue;
                };
                if ss_mask & q_ss == ss_mask & m.scope_state {
                    out.push(record(m.scope_state, m.port_gid, m.proxy));
                }
            } else if trusted {
                for m in g.members.values() {
                    if ss_mask & q_ss == ss_mask & m.scope_state {
                        out.push(record(m.scope_state, m.port_gid, m.proxy));
                    }
                }
            } else {
                let ss = (r.scope << 4) | r.join_state.bits();
                if ss_mask & q_ss == ss_mask & ss {
                    out.push(record(ss, Gid::default(), false));
                }
            }
        }
        // p923: PortGID, JoinState and ProxyJoin are zero except for trusted requests.
        if !trusted {
            for m in &mut out {
                m.port_gid = Gid::default();
                m.join_state = JoinState::NONE;
                m.proxy_join = false;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sa::testutil::*;
    use ibpoll_wire::mad::{Method, Status};
    use ibpoll_wire::sa::{self, Attribute, SaMad};
    use ibpoll_wire::Lid;

    #[test]
    fn get_mcmember_record() {
        let mut sa = sa();
        join(&mut sa, 1, BCAST, JoinState::FULL_MEMBER);
        let q = mcmember::Repr {
            mgid: BCAST,
            ..Default::default()
        };
        let m = send(&mut sa, 2, &mad(Method::GET, mcm::MGID, q));
        assert_eq!(status(&m), Status::OK);
        assert_eq!(m.header.mad.method, Method::GET_RESP);
        let r = mcr(&m);
        assert_eq!(r.mlid, Lid(0xC000));
        // Untrusted: PortGID, JoinState and ProxyJoin zero.
        assert_eq!(
            (r.port_gid, r.join_state),
            (Gid::default(), JoinState::NONE)
        );
        assert_eq!(r.scope, 2);
        // Unknown MGID: no records.
        let q = mcmember::Repr {
            mgid: ipv4_group(1),
            ..Default::default()
        };
        assert_eq!(
            status(&send(&mut sa, 2, &mad(Method::GET, mcm::MGID, q))),
            Status::ERR_NO_RECORDS
        );
        // No MGID and two groups: too many for a Get; GetTable has both.
        join(&mut sa, 1, ipv4_group(1), JoinState::FULL_MEMBER);
        let all = mcmember::Repr::default();
        assert_eq!(
            status(&send(
                &mut sa,
                2,
                &mad(Method::GET, ComponentMask::NONE, all)
            )),
            Status::ERR_TOO_MANY_RECORDS
        );
        let resp = sa
            .handle(
                &mad(Method::GET_TABLE, ComponentMask::NONE, all),
                &host(2),
                &oracle,
            )
            .unwrap();
        let p = sa::Packet::new_checked(&resp[..]).unwrap();
        assert_eq!(p.mad().method(), Method::GET_TABLE_RESP);
        assert_eq!((p.rmpp_type(), p.rmpp_rtime_flags()), (1, 7));
        assert_eq!(p.attribute_offset(), 7);
        // MGID order: ff12:401b:ffff::e000:1 sorts before the broadcast group.
        let second =
            mcmember::Repr::parse(&mcmember::Packet::new_unchecked(&p.data()[56..])).unwrap();
        assert_eq!(second.mgid, BCAST);
        // With PortGID: the port's own membership (trusted SM_Key shows the GID).
        let q = mcmember::Repr {
            mgid: BCAST,
            port_gid: gid(1),
            ..Default::default()
        };
        let mut req = SaMad::request(
            Method::GET,
            1,
            mcm::MGID | mcm::PORT_GID,
            Attribute::McMember(q),
        );
        req.header.sm_key = 1;
        let m = send(&mut sa, 2, &req.to_bytes());
        assert_eq!(m.header.sm_key, 0);
        assert_eq!(
            (mcr(&m).port_gid, mcr(&m).join_state),
            (gid(1), JoinState::FULL_MEMBER)
        );
    }
}
