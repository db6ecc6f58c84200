//! A join that creates a group (OpenSM `mcmr_rcv_create_new_mgrp`): the MGID (given,
//! checked against the IPoIB rules, or allocated), the MTU and rate the creating port
//! can carry, and a free MLID.

use ibpoll_wire::mad::Status;
use ibpoll_wire::mcmember::{self, mask as mcm};
use ibpoll_wire::sa::{ComponentMask, Selector};
use ibpoll_wire::{Gid, Rate};

use super::groups::ipoib_broadcast_mgid;
use super::mcmember::validate_other_comp_fields;
use super::rules::rate_prev;
use super::{PathEnd, SubnetAdmin, IPV4_SIGNATURE, IPV6_SIGNATURE, SA_SIGNATURE, SCOPE_LINK_LOCAL};

impl SubnetAdmin {
    /// OpenSM `mcmr_rcv_create_new_mgrp`: the new group's MGID.
    pub(super) fn create_group(
        &mut self,
        mask: ComponentMask,
        req: &mcmember::Repr,
        port: &PathEnd,
    ) -> Result<Gid, Status> {
        let mut rec = *req;
        if rec.mgid.0.iter().all(|&b| b == 0) {
            rec.mgid = self
                .build_new_mgid(mask, req)
                .ok_or(Status::ERR_NO_RESOURCES)?;
        } else {
            self.validate_requested_mgid(mask, req)?;
        }
        realize(mask, &mut rec, port)?;
        if self.groups.len() >= self.cfg.max_groups {
            return Err(Status::ERR_NO_RESOURCES);
        }
        let mlid = self.new_mlid(req.mlid).ok_or(Status::ERR_NO_RESOURCES)?;
        rec.mlid = mlid;
        rec.mtu_selector = Selector::Exactly;
        rec.rate_selector = Selector::Exactly;
        rec.packet_life_time_selector = Selector::Exactly;
        let mgid = rec.mgid;
        self.insert_group(rec, false);
        Ok(mgid)
    }

    /// OpenSM `build_new_mgid`: ff1S:a01b, the subnet prefix in bytes 4..12, a counter
    /// (host byte order, as OpenSM's memcpy of a u32 on x86) over bytes 10..14.
    fn build_new_mgid(&mut self, mask: ComponentMask, req: &mcmember::Repr) -> Option<Gid> {
        let scope = if mask.contains(mcm::SCOPE) {
            req.scope & 0x0F
        } else {
            SCOPE_LINK_LOCAL
        };
        let mut g = req.mgid.0;
        g[0] = 0xff;
        g[1] = 0x10 | scope;
        g[2] = 0xa0;
        g[3] = 0x1b;
        g[4..12].copy_from_slice(&self.cfg.subnet_prefix.to_be_bytes());
        for _ in 0..1000 {
            g[10..14].copy_from_slice(&self.mgid_counter.to_le_bytes());
            self.mgid_counter = self.mgid_counter.wrapping_add(1);
            if !self.groups.contains_key(&Gid(g)) {
                return Some(Gid(g));
            }
        }
        None
    }

    /// OpenSM `validate_requested_mgid` plus the IPoIB broadcast-group check of
    /// `mcmr_rcv_create_new_mgrp` (`ipoib_mcgroup_creation_validation`, on by default).
    fn validate_requested_mgid(
        &self,
        mask: ComponentMask,
        req: &mcmember::Repr,
    ) -> Result<(), Status> {
        let m = &req.mgid.0;
        if m[0] != 0xFF {
            return Err(Status::ERR_REQ_INVALID);
        }
        let signature = u16::from_be_bytes([m[2], m[3]]);
        if signature != IPV4_SIGNATURE && signature != IPV6_SIGNATURE {
            if m[1] & 0xE0 != 0 {
                return Err(Status::ERR_REQ_INVALID);
            }
            if signature == SA_SIGNATURE && m[1] & 0x0F == SCOPE_LINK_LOCAL {
                return Err(Status::ERR_REQ_INVALID);
            }
            return Ok(());
        }
        let bcast = ipoib_broadcast_mgid(m[1] & 0x0F, [m[4], m[5]]);
        if signature != IPV4_SIGNATURE || bcast != req.mgid {
            let Some(b) = self.groups.get(&bcast) else {
                tracing::debug!(mgid = %req.mgid, "SA: IPoIB group without its broadcast group");
                return Err(Status::ERR_REQ_INVALID);
            };
            if !validate_other_comp_fields(mask, req, &b.rec) {
                return Err(Status::ERR_REQ_INVALID);
            }
        }
        Ok(())
    }
}

/// OpenSM `mgrp_request_is_realizable`: fills in the new group's MTU and rate.
fn realize(mask: ComponentMask, rec: &mut mcmember::Repr, port: &PathEnd) -> Result<(), Status> {
    let (mtu_sel, mtu) = realize_mtu(mask, rec, port.mtu.code())?;
    rec.mtu_selector = mtu_sel;
    rec.mtu = mtu;
    let (rate_sel, rate) = realize_rate(mask, rec, port.rate)?;
    rec.rate_selector = rate_sel;
    rec.rate = rate;
    Ok(())
}

/// The MTU half of `mgrp_request_is_realizable`: the selector and MTU code a new group
/// gets from the request and the creating port's MTU code.
fn realize_mtu(
    mask: ComponentMask,
    rec: &mcmember::Repr,
    port_mtu: u8,
) -> Result<(Selector, u8), Status> {
    if !mask.contains(mcm::MTU)
        || !mask.contains(mcm::MTU_SELECTOR)
        || rec.mtu_selector == Selector::Best
    {
        let sel = if mask.contains(mcm::MTU) && mask.contains(mcm::MTU_SELECTOR) {
            Selector::Best
        } else {
            Selector::Exactly
        };
        return Ok((sel, port_mtu));
    }
    let required = rec.mtu;
    let v = match rec.mtu_selector {
        Selector::GreaterThan => {
            if required >= port_mtu {
                return Err(Status::ERR_REQ_INVALID);
            }
            port_mtu
        }
        Selector::LessThan => {
            if required > port_mtu {
                port_mtu
            } else {
                required.wrapping_sub(1)
            }
        }
        _ => required,
    };
    if !(1..=5).contains(&v) {
        return Err(Status::ERR_REQ_INVALID);
    }
    Ok((rec.mtu_selector, v))
}

/// The rate half of `mgrp_request_is_realizable`.
fn realize_rate(
    mask: ComponentMask,
    rec: &mcmember::Repr,
    port_rate: Rate,
) -> Result<(Selector, Rate), Status> {
    if !mask.contains(mcm::RATE)
        || !mask.contains(mcm::RATE_SELECTOR)
        || rec.rate_selector == Selector::Best
    {
        let sel = if mask.contains(mcm::RATE) && mask.contains(mcm::RATE_SELECTOR) {
            Selector::Best
        } else {
            Selector::Exactly
        };
        return Ok((sel, port_rate));
    }
    let required = rec.rate;
    let v = match rec.rate_selector {
        Selector::GreaterThan => {
            if required.cmp_speed(port_rate).is_ge() {
                return Err(Status::ERR_REQ_INVALID);
            }
            Some(port_rate)
        }
        Selector::LessThan => {
            if required.cmp_speed(port_rate).is_gt() {
                Some(port_rate)
            } else {
                rate_prev(required)
            }
        }
        _ => Some(required),
    };
    match v {
        Some(r) if r.mbps().is_some() => Ok((rec.rate_selector, r)),
        _ => Err(Status::ERR_REQ_INVALID),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sa::testutil::*;
    use crate::sa::SaConfig;
    use ibpoll_wire::mad::Method;
    use ibpoll_wire::mcmember::JoinState;
    use ibpoll_wire::{Lid, PKey, QKey};

    #[test]
    fn zero_mgid_gets_an_sa_assigned_mgid() {
        let mut sa = sa();
        let (mask, rec) = ipoib_rec(Gid::default(), gid(1), JoinState::FULL_MEMBER);
        let m = send(&mut sa, 1, &mad(Method::SET, mask, rec));
        assert_eq!(status(&m), Status::OK);
        let r = mcr(&m);
        // build_new_mgid: ff12:a01b, subnet prefix at bytes 4..12, counter 0 (little
        // endian) over bytes 10..14.
        assert_eq!(
            r.mgid.0,
            [0xff, 0x12, 0xa0, 0x1b, 0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(r.mlid, Lid(0xC001));
        let m = send(
            &mut sa,
            2,
            &mad(
                Method::SET,
                mask,
                ipoib_rec(Gid::default(), gid(2), JoinState::FULL_MEMBER).1,
            ),
        );
        assert_eq!(mcr(&m).mgid.0[10], 1);
    }

    #[test]
    fn creating_needs_a_full_member() {
        // IBA 1.2 rules: only FullMember creates.
        let mut sa = SubnetAdmin::new(SaConfig {
            send_only_full_member: false,
            ..SaConfig::default()
        });
        for js in [
            JoinState::NON_MEMBER,
            JoinState::SEND_ONLY_NON_MEMBER,
            JoinState::SEND_ONLY_FULL_MEMBER,
        ] {
            assert_eq!(
                status(&join(&mut sa, 1, ipv4_group(1), js)),
                Status::ERR_REQ_INVALID,
                "{js:?}"
            );
        }
        assert_eq!(sa.groups().count(), 1);
        // IBA 1.3 SendOnlyFullMember support (the default, as in OpenSM 3.3.23): a
        // send-only full member creates the group and keeps it alive; the other
        // JoinStates still do not create.
        let mut sa13 = SubnetAdmin::new(SaConfig::default());
        for js in [JoinState::NON_MEMBER, JoinState::SEND_ONLY_NON_MEMBER] {
            assert_eq!(
                status(&join(&mut sa13, 1, ipv4_group(1), js)),
                Status::ERR_REQ_INVALID,
                "{js:?}"
            );
        }
        let m = join(
            &mut sa13,
            1,
            ipv4_group(1),
            JoinState::SEND_ONLY_FULL_MEMBER,
        );
        assert_eq!(status(&m), Status::OK);
        assert_eq!(
            sa13.group_by_mgid(&ipv4_group(1)).unwrap().full_members(),
            1
        );
        assert_eq!(sa13.receivers(Lid(0xC001)).count(), 0);
        assert_eq!(
            status(&leave(
                &mut sa13,
                1,
                ipv4_group(1),
                JoinState::SEND_ONLY_FULL_MEMBER
            )),
            Status::OK
        );
        assert!(sa13.group_by_mgid(&ipv4_group(1)).is_none());
    }

    #[test]
    fn creating_needs_the_create_components() {
        let mut sa = sa();
        let (mask, rec) = ipoib_rec(ipv4_group(1), gid(1), JoinState::FULL_MEMBER);
        for missing in [mcm::QKEY, mcm::TCLASS, mcm::PKEY, mcm::FLOW_LABEL, mcm::SL] {
            let m = send(
                &mut sa,
                1,
                &mad(Method::SET, ComponentMask(mask.0 & !missing.0), rec),
            );
            assert_eq!(status(&m), Status::ERR_REQ_INSUFFICIENT_COMPONENTS);
        }
        // Joining an existing group needs none of them.
        let rec = mcmember::Repr {
            mgid: BCAST,
            port_gid: gid(1),
            join_state: JoinState::FULL_MEMBER,
            ..Default::default()
        };
        assert_eq!(
            status(&send(
                &mut sa,
                1,
                &mad(Method::SET, mcmember::JOIN_MASK, rec)
            )),
            Status::OK
        );
    }

    #[test]
    fn an_ipoib_group_needs_its_partitions_broadcast_group_and_its_parameters() {
        let mut sa = sa();
        // Partition 0x8001 has no broadcast group.
        let mut other = ipv4_group(1);
        other.0[4..6].copy_from_slice(&[0x80, 0x01]);
        let (mask, mut rec) = ipoib_rec(other, gid(8), JoinState::FULL_MEMBER);
        rec.pkey = PKey(0x8001);
        assert_eq!(
            status(&send(&mut sa, 8, &mad(Method::SET, mask, rec))),
            Status::ERR_REQ_INVALID
        );
        // Q_Key, TClass, SL, FlowLabel, HopLimit differing from the broadcast group's.
        for f in 0..5 {
            let (mask, mut rec) = ipoib_rec(ipv4_group(1), gid(1), JoinState::FULL_MEMBER);
            match f {
                0 => rec.qkey = QKey(0x1234),
                1 => rec.tclass = 1,
                2 => rec.sl = 1,
                3 => rec.flow_label = 1,
                _ => rec.hop_limit = 1,
            }
            assert_eq!(
                status(&send(&mut sa, 1, &mad(Method::SET, mask, rec))),
                Status::ERR_REQ_INVALID,
                "{f}"
            );
        }
        // IPv6 groups (601b) are checked against the IPv4 broadcast group too.
        let mut v6 = ipv4_group(1);
        v6.0[2] = 0x60;
        let (mask, mut rec) = ipoib_rec(v6, gid(1), JoinState::FULL_MEMBER);
        rec.qkey = QKey(7);
        assert_eq!(
            status(&send(&mut sa, 1, &mad(Method::SET, mask, rec))),
            Status::ERR_REQ_INVALID
        );
        // A matching one is created with the next MLID.
        let m = join(&mut sa, 1, ipv4_group(1), JoinState::FULL_MEMBER);
        assert_eq!(status(&m), Status::OK);
        assert_eq!(mcr(&m).mlid, Lid(0xC001));
        // A failed create left no group behind.
        assert_eq!(sa.groups().count(), 2);
    }
}
