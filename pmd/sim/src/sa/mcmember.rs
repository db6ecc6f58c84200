//! MCMemberRecord Set and Delete: OpenSM's join and leave rules
//! (`osm_sa_mcmember_record.c`: `mcmr_rcv_join_mgrp`, `mcmr_rcv_leave_mgrp`, the
//! `validate_*` checks) and the dispatch of the record's methods.

use ibpoll_wire::mad::{Method, Status};
use ibpoll_wire::mcmember::{self, mask as mcm, JoinState};
use ibpoll_wire::sa::{ComponentMask, Selector};
use ibpoll_wire::Gid;

use super::groups::{Group, Member};
use super::rules::{has_pkey, share_pkey};
use super::{Answer, Outcome, PathEnd, Requester, SubnetAdmin};

impl SubnetAdmin {
    pub(super) fn mcmember(
        &mut self,
        method: Method,
        mask: ComponentMask,
        trusted: bool,
        rec: &mcmember::Repr,
        from: &Requester,
        oracle: &dyn Fn(&Gid) -> Option<PathEnd>,
    ) -> Outcome {
        match method {
            Method::SET | Method::DELETE => {
                // osm_mcmr_rcv_process ERR 1B18 / 1B20.
                if !mcmember::Repr::join_mask_ok(mask) {
                    return Err(Status::ERR_REQ_INSUFFICIENT_COMPONENTS);
                }
                let r = if method == Method::SET {
                    self.join(mask, rec, from, oracle)?
                } else {
                    self.leave(rec, from)?
                };
                Ok(Answer::McMember(vec![with_exact_selectors(r)]))
            }
            _ => Ok(Answer::McMember(self.query(mask, trusted, rec, from))),
        }
    }

    /// OpenSM `mcmr_rcv_join_mgrp`.
    fn join(
        &mut self,
        mask: ComponentMask,
        req: &mcmember::Repr,
        from: &Requester,
        oracle: &dyn Fn(&Gid) -> Option<PathEnd>,
    ) -> Result<mcmember::Repr, Status> {
        let (port, proxy) = self.joining_port(mask, req, from, oracle)?;
        let (mgid, new_group) = self.join_target(mask, req, &port)?;
        self.check_join(mask, req, from, &port, &mgid, new_group)?;
        // copy_from_create_mc_rec, then osm_mgrp_add_port.
        let mut resp = copy_from_create_mc_rec(req, &self.groups[&mgid].rec);
        let scope_state = self.add_member(&mgid, req, proxy);
        resp.scope = scope_state >> 4;
        resp.join_state = JoinState::from_bits_truncate(scope_state);
        tracing::trace!(mgid = %mgid, port = %req.port_gid, js = ?resp.join_state, "SA: join");
        Ok(resp)
    }

    /// The port a join is for, and whether another port asks for it (a proxy join).
    fn joining_port(
        &self,
        mask: ComponentMask,
        req: &mcmember::Repr,
        from: &Requester,
        oracle: &dyn Fn(&Gid) -> Option<PathEnd>,
    ) -> Result<(PathEnd, bool), Status> {
        if req.port_gid.subnet_prefix() != self.cfg.subnet_prefix {
            return Err(Status::ERR_REQ_INVALID_GID);
        }
        // "make sure the requested port guid is known to the SM"
        let port = oracle(&req.port_gid).ok_or(Status::ERR_REQ_INVALID)?;
        let proxy = req.port_gid.guid() != from.port_gid.guid();
        if proxy && !share_pkey(&port.pkeys, &from.pkeys) {
            return Err(Status::ERR_REQ_INVALID);
        }
        if mask.contains(mcm::PKEY) && req.pkey.base() == 0 {
            return Err(Status::ERR_REQ_INVALID);
        }
        Ok((port, proxy))
    }

    /// The group a join goes to: an existing one whose parameters the request matches,
    /// or one it creates. Returns its MGID and whether it is new.
    fn join_target(
        &mut self,
        mask: ComponentMask,
        req: &mcmember::Repr,
        port: &PathEnd,
    ) -> Result<(Gid, bool), Status> {
        let existing = self.groups.contains_key(&req.mgid) && !req.mgid.0.iter().all(|&b| b == 0);
        if existing {
            let g = &self.groups[&req.mgid];
            if !validate_other_comp_fields(mask, req, &g.rec) {
                return Err(Status::ERR_REQ_INVALID);
            }
            return Ok((req.mgid, false));
        }
        // o15.0.1.9: only a full member creates.
        if !self.is_full(req.join_state) {
            return Err(Status::ERR_REQ_INVALID);
        }
        if !mask.contains(mcmember::CREATE_MASK) {
            return Err(Status::ERR_REQ_INSUFFICIENT_COMPONENTS);
        }
        Ok((self.create_group(mask, req, port)?, true))
    }

    /// The checks of a join against its group; a group the join created goes again
    /// when they fail.
    fn check_join(
        &mut self,
        mask: ComponentMask,
        req: &mcmember::Repr,
        from: &Requester,
        port: &PathEnd,
        mgid: &Gid,
        new_group: bool,
    ) -> Result<(), Status> {
        let group = &self.groups[mgid];
        if !validate_more_comp_fields(mask, req, &group.rec)
            || !port_can_join(port, &group.rec)
            || req.join_state.is_empty()
            || !has_pkey(&port.pkeys, group.rec.pkey)
        {
            if new_group {
                self.cleanup(mgid);
            }
            return Err(Status::ERR_REQ_INVALID);
        }
        if !new_group && !validate_modify(group, req, from) {
            return Err(Status::ERR_REQ_INVALID);
        }
        Ok(())
    }

    /// OpenSM `osm_mgrp_add_port`: adds the request's JoinState to the port's
    /// membership (creating it) and counts a new full member. Returns the member's
    /// resulting scope/state byte.
    fn add_member(&mut self, mgid: &Gid, req: &mcmember::Repr, proxy: bool) -> u8 {
        let join_state = req.join_state;
        let is_full_join = self.is_full(join_state);
        let group = self.groups.get_mut(mgid).expect("the join's group exists");
        let scope = group.rec.scope;
        let (was, scope_state) = match group.members.get_mut(&req.port_gid.guid()) {
            Some(m) => {
                let was = m.join_state();
                m.scope_state |= join_state.bits();
                (was, m.scope_state)
            }
            None => {
                let m = Member {
                    port_gid: req.port_gid,
                    scope_state: (scope << 4) | join_state.bits(),
                    proxy,
                };
                group.members.insert(req.port_gid.guid(), m);
                (JoinState::NONE, m.scope_state)
            }
        };
        if is_full_join && !self.is_full(was) {
            if let Some(g) = self.groups.get_mut(mgid) {
                g.full_members += 1;
            }
        }
        scope_state
    }

    /// OpenSM `mcmr_rcv_leave_mgrp`.
    fn leave(&mut self, req: &mcmember::Repr, from: &Requester) -> Result<mcmember::Repr, Status> {
        if req.port_gid.subnet_prefix() != self.cfg.subnet_prefix {
            return Err(Status::ERR_REQ_INVALID_GID);
        }
        let group = self.groups.get(&req.mgid).ok_or(Status::ERR_REQ_INVALID)?;
        // validate_delete (o15-0.1.14).
        let member = group
            .members
            .get(&req.port_gid.guid())
            .ok_or(Status::ERR_REQ_INVALID)?;
        let held = member.join_state();
        let asked = req.join_state;
        if !asked.intersects(held) || !held.contains(asked) {
            return Err(Status::ERR_REQ_INVALID);
        }
        if !validate_modify(group, req, from) {
            return Err(Status::ERR_REQ_INVALID);
        }
        let mgid = req.mgid;
        let scope_state = self.remove_member(&mgid, req.port_gid.guid(), asked);
        let mut resp = *req;
        resp.scope = scope_state >> 4;
        resp.join_state = JoinState::from_bits_truncate(scope_state);
        Ok(resp)
    }
}

/// OpenSM `copy_from_create_mc_rec`: the answer to a join is the request with the
/// group's parameters.
fn copy_from_create_mc_rec(req: &mcmember::Repr, grec: &mcmember::Repr) -> mcmember::Repr {
    let mut resp = *req;
    resp.mgid = grec.mgid;
    resp.qkey = grec.qkey;
    resp.mlid = grec.mlid;
    resp.tclass = grec.tclass;
    resp.pkey = grec.pkey;
    resp.sl = grec.sl;
    resp.flow_label = grec.flow_label;
    resp.hop_limit = grec.hop_limit;
    resp.scope = grec.scope;
    resp.mtu_selector = grec.mtu_selector;
    resp.mtu = grec.mtu;
    resp.rate_selector = grec.rate_selector;
    resp.rate = grec.rate;
    resp.packet_life_time_selector = grec.packet_life_time_selector;
    resp.packet_life_time = grec.packet_life_time;
    resp
}

/// The MTU, rate and PacketLifeTime selectors of an answer say "exactly"
/// (OpenSM `mcmr_rcv_respond`).
fn with_exact_selectors(mut r: mcmember::Repr) -> mcmember::Repr {
    r.mtu_selector = Selector::Exactly;
    r.rate_selector = Selector::Exactly;
    r.packet_life_time_selector = Selector::Exactly;
    r
}

/// OpenSM `validate_other_comp_fields`: Q_Key, P_Key (same partition, not both
/// limited), TClass, SL, FlowLabel and HopLimit, where the mask names them.
pub(super) fn validate_other_comp_fields(
    mask: ComponentMask,
    q: &mcmember::Repr,
    g: &mcmember::Repr,
) -> bool {
    if mask.contains(mcm::QKEY) && q.qkey != g.qkey {
        return false;
    }
    let both_limited = !(q.pkey.is_full_member() || g.pkey.is_full_member());
    if mask.contains(mcm::PKEY) && (both_limited || q.pkey.base() != g.pkey.base()) {
        return false;
    }
    !((mask.contains(mcm::TCLASS) && q.tclass != g.tclass)
        || (mask.contains(mcm::SL) && q.sl != g.sl)
        || (mask.contains(mcm::FLOW_LABEL) && q.flow_label != g.flow_label)
        || (mask.contains(mcm::HOP_LIMIT) && q.hop_limit != g.hop_limit))
}

/// OpenSM `validate_more_comp_fields`: the MTU and rate selectors against the group's.
pub(super) fn validate_more_comp_fields(
    mask: ComponentMask,
    q: &mcmember::Repr,
    g: &mcmember::Repr,
) -> bool {
    if mask.contains(mcm::MTU_SELECTOR) {
        let ok = match q.mtu_selector {
            Selector::GreaterThan => g.mtu > q.mtu,
            Selector::LessThan => g.mtu < q.mtu,
            Selector::Exactly => g.mtu == q.mtu,
            Selector::Best => true,
        };
        if !ok {
            return false;
        }
    }
    if mask.contains(mcm::RATE_SELECTOR) {
        let c = g.rate.cmp_speed(q.rate);
        let ok = match q.rate_selector {
            Selector::GreaterThan => c.is_gt(),
            Selector::LessThan => c.is_lt(),
            Selector::Exactly => c.is_eq(),
            Selector::Best => true,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// OpenSM `validate_port_caps`: the joining port can carry the group's MTU and rate.
fn port_can_join(port: &PathEnd, g: &mcmember::Repr) -> bool {
    port.mtu.code() >= g.mtu && !port.rate.cmp_speed(g.rate).is_lt()
}

/// OpenSM `validate_modify` (o15-0.2.1): only the port itself changes a membership it
/// holds, or, for a proxy membership, a port of the group's partition.
fn validate_modify(g: &Group, req: &mcmember::Repr, from: &Requester) -> bool {
    let Some(m) = g.members.get(&req.port_gid.guid()) else {
        return true;
    };
    if m.proxy {
        has_pkey(&from.pkeys, g.rec.pkey)
    } else {
        m.port_gid.guid() == from.port_gid.guid()
            && m.port_gid.subnet_prefix() == from.port_gid.subnet_prefix()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sa::testutil::*;
    use ibpoll_wire::mad;
    use ibpoll_wire::sa::SaMad;
    use ibpoll_wire::{Lid, PKey, QKey, Rate};

    #[test]
    fn join_and_leave_need_mgid_port_gid_and_join_state() {
        let mut sa = sa();
        let rec = mcmember::Repr {
            mgid: BCAST,
            port_gid: gid(1),
            join_state: JoinState::FULL_MEMBER,
            ..mcmember::Repr::default()
        };
        let req = mad(Method::SET, mcm::MGID | mcm::PORT_GID, rec);
        let m = send(&mut sa, 1, &req);
        assert_eq!(status(&m), Status::ERR_REQ_INSUFFICIENT_COMPONENTS);
        assert_eq!(m.header.mad.method, Method::GET_RESP);
        assert_eq!(m.header.mad.transaction_id, 0x1122_3344_5566_7788);
        // osm_sa_send_error echoes the request's record.
        assert_eq!(mcr(&m), rec);
        let m = send(
            &mut sa,
            1,
            &mad(Method::DELETE, mcm::MGID | mcm::JOIN_STATE, rec),
        );
        assert_eq!(status(&m), Status::ERR_REQ_INSUFFICIENT_COMPONENTS);
        assert_eq!(m.header.mad.method, Method::DELETE_RESP);
    }

    #[test]
    fn join_answers_the_group_record_with_the_ports_join_state() {
        let mut sa = sa();
        let (mask, mut rec) = ipoib_rec(BCAST, gid(1), JoinState::FULL_MEMBER);
        rec.mtu = 0;
        let req = mad(Method::SET, mask & !(mcm::MTU | mcm::MTU_SELECTOR), rec);
        let resp = sa.handle(&req, &host(1), &oracle).unwrap();
        // osm_sa_respond: header copied, GetResp, SM_Key 0, AttributeOffset 56 / 8.
        assert_eq!(&resp[..3], &req[..3]);
        assert_eq!(resp[3], 0x81);
        assert_eq!(&resp[4..6], &[0, 0]);
        assert_eq!(&resp[8..24], &req[8..24]);
        assert_eq!(&resp[44..46], &[0, 7]);
        assert_eq!(&resp[48..56], &req[48..56]);
        let r = mcr(&SaMad::parse(&resp).unwrap());
        assert_eq!(r.mgid, BCAST);
        assert_eq!(r.port_gid, gid(1));
        assert_eq!(r.mlid, Lid(0xC000));
        assert_eq!((r.mtu_selector, r.mtu), (Selector::Exactly, 4));
        assert_eq!(
            (r.rate_selector, r.rate),
            (Selector::Exactly, Rate::GBPS_10)
        );
        assert_eq!(r.packet_life_time, 18);
        assert_eq!(r.qkey, QKey::IPOIB_DEFAULT);
        assert_eq!((r.scope, r.join_state), (2, JoinState::FULL_MEMBER));
        assert!(resp[56 + 52..].iter().all(|&b| b == 0));
    }

    #[test]
    fn joining_another_port_needs_a_shared_partition() {
        let mut sa = sa();
        // Host 1 joins host 2 (a proxy join): they share 0xFFFF, so OpenSM allows it.
        let (mask, rec) = ipoib_rec(BCAST, gid(2), JoinState::FULL_MEMBER);
        let m = send(&mut sa, 1, &mad(Method::SET, mask, rec));
        assert_eq!(status(&m), Status::OK);
        // Only host 2 or a partition member may change it; host 2 may not leave what
        // it did not... it may: the membership is a proxy one and host 2 is in 0xFFFF.
        assert_eq!(sa.memberships_of(&gid(2)).count(), 1);
        // Host 8 (partition 0x8001 only) shares nothing with host 1.
        let (mask, rec) = ipoib_rec(BCAST, gid(8), JoinState::FULL_MEMBER);
        let m = send(&mut sa, 1, &mad(Method::SET, mask, rec));
        assert_eq!(status(&m), Status::ERR_REQ_INVALID);
        // An unknown port.
        let (mask, rec) = ipoib_rec(BCAST, gid(99), JoinState::FULL_MEMBER);
        assert_eq!(
            status(&send(&mut sa, 1, &mad(Method::SET, mask, rec))),
            Status::ERR_REQ_INVALID
        );
        // Another subnet prefix.
        let (mask, rec) = ipoib_rec(
            BCAST,
            Gid::new(0xfec0_0000_0000_0000, 1),
            JoinState::FULL_MEMBER,
        );
        assert_eq!(
            status(&send(&mut sa, 1, &mad(Method::SET, mask, rec))),
            Status::ERR_REQ_INVALID_GID
        );
    }

    #[test]
    fn a_non_proxy_membership_is_changed_only_by_its_port() {
        let mut sa = sa();
        assert_eq!(
            status(&join(&mut sa, 1, BCAST, JoinState::FULL_MEMBER)),
            Status::OK
        );
        // Host 3 tries to add NonMember to host 1's own membership, then to leave it.
        let (mask, rec) = ipoib_rec(BCAST, gid(1), JoinState::NON_MEMBER);
        assert_eq!(
            status(&send(&mut sa, 3, &mad(Method::SET, mask, rec))),
            Status::ERR_REQ_INVALID
        );
        let rec = mcmember::Repr {
            mgid: BCAST,
            port_gid: gid(1),
            join_state: JoinState::FULL_MEMBER,
            ..Default::default()
        };
        assert_eq!(
            status(&send(
                &mut sa,
                3,
                &mad(Method::DELETE, mcmember::JOIN_MASK, rec)
            )),
            Status::ERR_REQ_INVALID
        );
        assert_eq!(
            sa.memberships_of(&gid(1)).next(),
            Some((BCAST, JoinState::FULL_MEMBER))
        );
    }

    #[test]
    fn joining_with_other_parameters_fails_and_selectors_are_honoured() {
        let mut sa = sa();
        let (mask, mut rec) = ipoib_rec(BCAST, gid(1), JoinState::FULL_MEMBER);
        rec.qkey = QKey(0x1234);
        assert_eq!(
            status(&send(&mut sa, 1, &mad(Method::SET, mask, rec))),
            Status::ERR_REQ_INVALID
        );
        rec.qkey = QKey::IPOIB_DEFAULT;
        rec.pkey = PKey(0x7FFF); // limited member of the same partition: allowed
        assert_eq!(
            status(&send(&mut sa, 1, &mad(Method::SET, mask, rec))),
            Status::OK
        );
        // Selectors against the group's MTU code 4 and 10 Gb/s.
        let cases = [
            (Selector::GreaterThan, 4, false),
            (Selector::GreaterThan, 3, true),
            (Selector::LessThan, 4, false),
            (Selector::LessThan, 5, true),
            (Selector::Exactly, 5, false),
            (Selector::Best, 1, true),
        ];
        for (sel, mtu, ok) in cases {
            let (mask, mut rec) = ipoib_rec(BCAST, gid(2), JoinState::NON_MEMBER);
            rec.mtu_selector = sel;
            rec.mtu = mtu;
            let want = if ok {
                Status::OK
            } else {
                Status::ERR_REQ_INVALID
            };
            assert_eq!(
                status(&send(&mut sa, 2, &mad(Method::SET, mask, rec))),
                want,
                "mtu {sel:?} {mtu}"
            );
        }
        for (sel, rate, ok) in [
            (Selector::GreaterThan, Rate::GBPS_5, true), // 5 Gb/s is code 5, slower than code 3
            (Selector::GreaterThan, Rate::GBPS_10, false),
            (Selector::LessThan, Rate::GBPS_20, true),
            (Selector::Exactly, Rate::GBPS_40, false),
        ] {
            let (mask, mut rec) = ipoib_rec(BCAST, gid(3), JoinState::NON_MEMBER);
            rec.rate_selector = sel;
            rec.rate = rate;
            let want = if ok {
                Status::OK
            } else {
                Status::ERR_REQ_INVALID
            };
            assert_eq!(
                status(&send(&mut sa, 3, &mad(Method::SET, mask, rec))),
                want,
                "rate {sel:?} {rate:?}"
            );
        }
        // A port that cannot carry the group's MTU (host 7: 1024 < 2048).
        assert_eq!(
            status(&join(&mut sa, 7, BCAST, JoinState::FULL_MEMBER)),
            Status::ERR_REQ_INVALID
        );
    }

    #[test]
    fn the_joining_port_must_hold_the_groups_pkey() {
        let mut sa = sa();
        // Host 8 is only in 0x8001 and joins the 0xFFFF broadcast group itself.
        let rec = mcmember::Repr {
            mgid: BCAST,
            port_gid: gid(8),
            join_state: JoinState::FULL_MEMBER,
            ..Default::default()
        };
        let from = Requester {
            pkeys: vec![PKey(0x8001)],
            ..host(8)
        };
        let resp = sa
            .handle(&mad(Method::SET, mcmember::JOIN_MASK, rec), &from, &oracle)
            .unwrap();
        assert_eq!(
            mad::Packet::new_unchecked(&resp[..]).status(),
            Status::ERR_REQ_INVALID
        );
        assert_eq!(sa.memberships_of(&gid(8)).count(), 0);
    }

    #[test]
    fn join_state_is_the_or_of_the_joins() {
        let mut sa = sa();
        assert_eq!(
            mcr(&join(&mut sa, 1, BCAST, JoinState::SEND_ONLY_NON_MEMBER)).join_state,
            JoinState::SEND_ONLY_NON_MEMBER
        );
        let r = mcr(&join(&mut sa, 1, BCAST, JoinState::FULL_MEMBER));
        assert_eq!(
            r.join_state,
            JoinState::FULL_MEMBER | JoinState::SEND_ONLY_NON_MEMBER
        );
        assert_eq!(
            sa.memberships_of(&gid(1)).collect::<Vec<_>>(),
            vec![(BCAST, JoinState::from_bits_truncate(5))]
        );
        // JoinState 0 is refused.
        assert_eq!(
            status(&join(&mut sa, 2, BCAST, JoinState::NONE)),
            Status::ERR_REQ_INVALID
        );
    }

    #[test]
    fn leave_rules() {
        let mut sa = sa();
        let g = ipv4_group(9);
        assert_eq!(
            status(&join(&mut sa, 1, g, JoinState::FULL_MEMBER)),
            Status::OK
        );
        assert_eq!(
            status(&join(&mut sa, 2, g, JoinState::FULL_MEMBER)),
            Status::OK
        );
        assert_eq!(
            status(&join(&mut sa, 3, g, JoinState::NON_MEMBER)),
            Status::OK
        );
        // Bits the port does not hold.
        assert_eq!(
            status(&leave(&mut sa, 3, g, JoinState::FULL_MEMBER)),
            Status::ERR_REQ_INVALID
        );
        assert_eq!(
            status(&leave(
                &mut sa,
                3,
                g,
                JoinState::NON_MEMBER | JoinState::FULL_MEMBER
            )),
            Status::ERR_REQ_INVALID
        );
        // Not a member; unknown group.
        assert_eq!(
            status(&leave(&mut sa, 4, g, JoinState::FULL_MEMBER)),
            Status::ERR_REQ_INVALID
        );
        assert_eq!(
            status(&leave(&mut sa, 1, ipv4_group(10), JoinState::FULL_MEMBER)),
            Status::ERR_REQ_INVALID
        );
        // A good leave: DeleteResp carrying the request's record, the resulting
        // JoinState (0: the port is gone) and "exactly" selectors.
        let m = leave(&mut sa, 1, g, JoinState::FULL_MEMBER);
        assert_eq!(status(&m), Status::OK);
        assert_eq!(m.header.mad.method, Method::DELETE_RESP);
        assert_eq!(m.header.attribute_offset, 7);
        let r = mcr(&m);
        assert_eq!(
            (r.mgid, r.port_gid, r.join_state, r.scope),
            (g, gid(1), JoinState::NONE, 0)
        );
        assert_eq!(r.mtu_selector, Selector::Exactly);
        assert_eq!(sa.memberships_of(&gid(1)).count(), 0);
        // Last full member leaves: the group dies with its NonMember and its MLID frees.
        assert_eq!(
            status(&leave(&mut sa, 2, g, JoinState::FULL_MEMBER)),
            Status::OK
        );
        assert!(sa.group_by_mgid(&g).is_none());
        assert!(sa.group_by_mlid(Lid(0xC001)).is_none());
        assert_eq!(sa.memberships_of(&gid(3)).count(), 0);
        assert_eq!(
            mcr(&join(&mut sa, 1, ipv4_group(11), JoinState::FULL_MEMBER)).mlid,
            Lid(0xC001)
        );
    }
}
