//! The group table (OpenSM `osm_multicast.c`, `osm_mgrp_t`): groups by MGID, MLID
//! allocation, member counts, the partitions' broadcast groups, and the read-only views
//! the fabric's switch and the tests use.

use std::collections::BTreeMap;

use ibpoll_wire::mcmember::{self, JoinState};
use ibpoll_wire::sa::Selector;
use ibpoll_wire::{Gid, IbMtu, Lid, PKey, QKey, Rate};

use super::{SubnetAdmin, SCOPE_LINK_LOCAL};

/// One port's membership of a group (OpenSM `osm_mcm_alias_guid_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Member {
    pub(super) port_gid: Gid,
    /// Scope (high nibble) and JoinState (low nibble), as OpenSM stores them.
    pub(super) scope_state: u8,
    pub(super) proxy: bool,
}

impl Member {
    pub(super) fn join_state(&self) -> JoinState {
        JoinState::from_bits_truncate(self.scope_state)
    }
}

/// A multicast group (OpenSM `osm_mgrp_t`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Group {
    /// The record as created: the creating request with MGID, MLID, MTU and rate filled
    /// in and the MTU, rate and PacketLifeTime selectors set to "exactly".
    pub(super) rec: mcmember::Repr,
    /// Members by port GUID.
    pub(super) members: BTreeMap<u64, Member>,
    /// Members holding a full membership.
    pub(super) full_members: u32,
    /// A partition's broadcast group: it outlives its last full member.
    pub(super) well_known: bool,
}

/// A read-only view of a group.
#[derive(Debug, Clone, Copy)]
pub struct GroupView<'a> {
    /// MGID.
    pub mgid: Gid,
    /// MLID.
    pub mlid: Lid,
    /// Q_Key.
    pub qkey: QKey,
    /// P_Key.
    pub pkey: PKey,
    /// MTU.
    pub mtu: IbMtu,
    /// Rate.
    pub rate: Rate,
    /// SL.
    pub sl: u8,
    /// TClass.
    pub tclass: u8,
    /// FlowLabel.
    pub flow_label: u32,
    /// HopLimit.
    pub hop_limit: u8,
    /// Scope of the stored record (the MGID carries its own scope nibble).
    pub scope: u8,
    /// True for a partition's broadcast group.
    pub well_known: bool,
    group: &'a Group,
}

impl<'a> GroupView<'a> {
    fn new(group: &'a Group) -> GroupView<'a> {
        let r = &group.rec;
        GroupView {
            mgid: r.mgid,
            mlid: r.mlid,
            qkey: r.qkey,
            pkey: r.pkey,
            // Creation only accepts MTU codes 1..=5 (mgrp_request_is_realizable).
            mtu: IbMtu::from_code(r.mtu).unwrap_or(IbMtu::Mtu256),
            rate: r.rate,
            sl: r.sl,
            tclass: r.tclass,
            flow_label: r.flow_label,
            hop_limit: r.hop_limit,
            scope: r.scope,
            well_known: group.well_known,
            group,
        }
    }

    /// Members: port GID and the JoinState it holds, in port GUID order.
    pub fn members(&self) -> impl Iterator<Item = (Gid, JoinState)> + 'a {
        self.group
            .members
            .values()
            .map(|m| (m.port_gid, m.join_state()))
    }

    /// The number of members holding a full membership.
    pub fn full_members(&self) -> u32 {
        self.group.full_members
    }

    /// The stored MCMemberRecord.
    pub fn record(&self) -> &'a mcmember::Repr {
        &self.group.rec
    }
}

impl SubnetAdmin {
    /// Whether `js` is a full membership: FullMember, and SendOnlyFullMember when
    /// [`SaConfig::send_only_full_member`](super::SaConfig::send_only_full_member) is set.
    pub(super) fn is_full(&self, js: JoinState) -> bool {
        let full = if self.cfg.send_only_full_member {
            JoinState::FULL_MEMBER | JoinState::SEND_ONLY_FULL_MEMBER
        } else {
            JoinState::FULL_MEMBER
        };
        js.intersects(full)
    }

    /// Adds a group with no member and takes its MLID.
    pub(super) fn insert_group(&mut self, rec: mcmember::Repr, well_known: bool) {
        self.mlids.insert(rec.mlid, rec.mgid);
        self.groups.insert(
            rec.mgid,
            Group {
                rec,
                members: BTreeMap::new(),
                full_members: 0,
                well_known,
            },
        );
        self.stats.groups_created += 1;
        debug_assert_eq!(self.mlids.len(), self.groups.len());
    }

    /// OpenSM `get_new_mlid`: the requested MLID if free, else the lowest free one.
    pub(super) fn new_mlid(&self, requested: Lid) -> Option<Lid> {
        let max = self.cfg.mlid_max.0.min(Lid::MULTICAST_LAST.0);
        if requested.0 >= Lid::MULTICAST_BASE.0
            && requested.0 <= max
            && !self.mlids.contains_key(&requested)
        {
            return Some(requested);
        }
        // Gaps only come from deleted groups; walk the used MLIDs in order from the
        // lowest one that may be free.
        let mut want = self.mlid_free_from.get().max(Lid::MULTICAST_BASE.0);
        for used in self.mlids.range(Lid(want)..).map(|(mlid, _)| mlid) {
            if used.0 > want {
                break;
            }
            if used.0 == want {
                want = want.checked_add(1)?;
            }
        }
        self.mlid_free_from.set(want);
        (want <= max).then_some(Lid(want))
    }

    /// OpenSM `osm_mgrp_cleanup`: a group with no full member loses every member and,
    /// unless it is well known, its existence.
    pub(super) fn cleanup(&mut self, mgid: &Gid) {
        let Some(g) = self.groups.get_mut(mgid) else {
            return;
        };
        if g.full_members > 0 {
            return;
        }
        g.members.clear();
        if g.well_known {
            return;
        }
        let mlid = g.rec.mlid;
        self.groups.remove(mgid);
        self.mlids.remove(&mlid);
        self.mlid_free_from
            .set(self.mlid_free_from.get().min(mlid.0));
        self.stats.groups_deleted += 1;
        tracing::trace!(mgid = %mgid, mlid = mlid.0, "SA: group deleted");
    }

    /// OpenSM `osm_mgrp_remove_port`: clears `leave` from a member, removes it when it
    /// is no longer needed, and cleans the group up when its last full member went.
    /// Returns the member's resulting scope/state byte.
    pub(super) fn remove_member(&mut self, mgid: &Gid, guid: u64, leave: JoinState) -> u8 {
        let full_mask = if self.cfg.send_only_full_member {
            JoinState::FULL_MEMBER | JoinState::SEND_ONLY_FULL_MEMBER
        } else {
            JoinState::FULL_MEMBER
        };
        let Some(group) = self.groups.get_mut(mgid) else {
            return 0;
        };
        let Some(member) = group.members.get_mut(&guid) else {
            return 0;
        };
        let port_js = member.join_state();
        let new_js = port_js.difference(leave);
        let was_full = port_js.intersects(full_mask);
        let is_full = new_js.intersects(full_mask);
        let others_full = group.full_members > u32::from(was_full);
        let scope_state = if is_full || (!new_js.is_empty() && others_full) {
            member.scope_state = (member.scope_state & 0xF0) | new_js.bits();
            member.scope_state
        } else {
            let s = member.scope_state & 0xF0;
            group.members.remove(&guid);
            s
        };
        if was_full && !is_full {
            group.full_members -= 1;
            if group.full_members == 0 {
                self.cleanup(mgid);
            }
        }
        scope_state
    }

    pub(super) fn create_broadcast_groups(&mut self) {
        for i in 0..self.cfg.partitions.len() {
            let pkey = self.cfg.partitions[i].full();
            let mgid = ipoib_broadcast_mgid(SCOPE_LINK_LOCAL, pkey.0.to_be_bytes());
            if self.groups.contains_key(&mgid) || self.groups.len() >= self.cfg.max_groups {
                continue;
            }
            let Some(mlid) = self.new_mlid(Lid(0)) else {
                continue;
            };
            // osm_prtn_add_mcgroup, then mcmr_rcv_create_new_mgrp's selectors.
            let rec = mcmember::Repr {
                mgid,
                port_gid: Gid::default(),
                qkey: self.cfg.broadcast_qkey,
                mlid,
                mtu_selector: Selector::Exactly,
                mtu: self.cfg.broadcast_mtu.code(),
                tclass: 0,
                pkey,
                rate_selector: Selector::Exactly,
                rate: self.cfg.broadcast_rate,
                packet_life_time_selector: Selector::Exactly,
                packet_life_time: self.cfg.subnet_timeout & 0x3F,
                sl: self.cfg.broadcast_sl & 0x0F,
                flow_label: 0,
                hop_limit: 0,
                scope: SCOPE_LINK_LOCAL,
                join_state: JoinState::FULL_MEMBER,
                proxy_join: false,
            };
            self.insert_group(rec, true);
        }
    }

    /// Every group, in MGID order.
    pub fn groups(&self) -> impl Iterator<Item = GroupView<'_>> {
        self.groups.values().map(GroupView::new)
    }

    /// The group using `mlid`.
    pub fn group_by_mlid(&self, mlid: Lid) -> Option<GroupView<'_>> {
        let mgid = self.mlids.get(&mlid)?;
        self.groups.get(mgid).map(GroupView::new)
    }

    /// The group with `mgid`.
    pub fn group_by_mgid(&self, mgid: &Gid) -> Option<GroupView<'_>> {
        self.groups.get(mgid).map(GroupView::new)
    }

    /// Ports that receive the group on `mlid`: JoinState FullMember or NonMember.
    pub fn receivers(&self, mlid: Lid) -> impl Iterator<Item = Gid> + '_ {
        self.mlids
            .get(&mlid)
            .and_then(|mgid| self.groups.get(mgid))
            .into_iter()
            .flat_map(|g| g.members.values())
            .filter(|m| m.join_state().receives())
            .map(|m| m.port_gid)
    }

    /// The groups `port_gid` belongs to: MGID and JoinState.
    pub fn memberships_of(&self, port_gid: &Gid) -> impl Iterator<Item = (Gid, JoinState)> + '_ {
        let guid = port_gid.guid();
        self.groups
            .values()
            .filter_map(move |g| g.members.get(&guid).map(|m| (g.rec.mgid, m.join_state())))
    }

    /// Subnet-manager restart: every group goes, each partition's broadcast group is
    /// recreated without members (with the MTU of [`SubnetAdmin::set_broadcast_mtu`]).
    pub fn wipe(&mut self) {
        let n = self.groups.len() as u64;
        self.groups.clear();
        self.mlids.clear();
        self.mlid_free_from.set(Lid::MULTICAST_BASE.0);
        self.mgid_counter = 0;
        self.stats.groups_deleted += n;
        self.create_broadcast_groups();
        self.check_invariants();
    }

    /// The broadcast MTU for groups created from now on (next [`SubnetAdmin::wipe`]).
    pub fn set_broadcast_mtu(&mut self, mtu: IbMtu) {
        self.cfg.broadcast_mtu = mtu;
    }

    /// The port is gone: each membership is dropped as a leave of all four JoinState
    /// bits would (OpenSM `osm_mgrp_delete_port`), so a group dies with its last full
    /// member.
    pub fn remove_port(&mut self, port_gid: &Gid) {
        let guid = port_gid.guid();
        let mgids: Vec<Gid> = self
            .groups
            .iter()
            .filter(|(_, g)| g.members.contains_key(&guid))
            .map(|(k, _)| *k)
            .collect();
        for mgid in mgids {
            self.remove_member(&mgid, guid, JoinState::ALL);
        }
        self.check_invariants();
    }

    /// Asserts the bookkeeping (debug builds): one MLID per group, MLIDs in range,
    /// `full_members` equal to the members holding a full membership, the group cap.
    pub(super) fn check_invariants(&self) {
        if !cfg!(debug_assertions) {
            return;
        }
        assert_eq!(self.mlids.len(), self.groups.len());
        assert!(self.groups.len() <= self.cfg.max_groups.max(self.cfg.partitions.len()));
        for (mgid, g) in &self.groups {
            assert_eq!(&g.rec.mgid, mgid);
            assert_eq!(self.mlids.get(&g.rec.mlid), Some(mgid));
            assert!(g.rec.mlid.is_multicast());
            let full = g
                .members
                .values()
                .filter(|m| self.is_full(m.join_state()))
                .count();
            assert_eq!(g.full_members as usize, full, "full members of {mgid}");
            assert!(g.members.values().all(|m| !m.join_state().is_empty()));
        }
    }
}

/// ff1S:401b:PPPP::ffff:ffff.
pub(super) fn ipoib_broadcast_mgid(scope: u8, pkey: [u8; 2]) -> Gid {
    Gid([
        0xff,
        0x10 | (scope & 0x0F),
        0x40,
        0x1b,
        pkey[0],
        pkey[1],
        0,
        0,
        0,
        0,
        0,
        0,
        0xff,
        0xff,
        0xff,
        0xff,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sa::testutil::*;
    use crate::sa::SaConfig;
    use ibpoll_wire::mad::Status;

    #[test]
    fn broadcast_group_exists_from_start_as_opensm_makes_it() {
        let sa = sa();
        let g: Vec<_> = sa.groups().collect();
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].mgid, BCAST);
        assert_eq!(g[0].mlid, Lid(0xC000));
        assert_eq!(g[0].members().count(), 0);
        // Bytes of OpenSM's broadcast record (osm_prtn_add_mcgroup; see the wire
        // crate's mcmember fixture): MTU 0x84, rate 0x83, PacketLifeTime 0x92, scope 2.
        let b = g[0].record().to_bytes();
        assert_eq!(
            &b[32..52],
            &[
                0x00, 0x00, 0x0b, 0x1b, 0xc0, 0x00, 0x84, 0x00, 0xff, 0xff, 0x83, 0x92, 0, 0, 0, 0,
                0x21, 0, 0, 0
            ]
        );

        let two = SubnetAdmin::new(SaConfig {
            partitions: vec![PKey::DEFAULT, PKey(0x0001)],
            ..SaConfig::default()
        });
        let second = two.group_by_mlid(Lid(0xC001)).unwrap();
        assert_eq!(second.mgid.0[4..6], [0x80, 0x01]);
        assert_eq!(second.pkey, PKey(0x8001));
    }

    #[test]
    fn the_broadcast_group_outlives_its_members() {
        let mut sa = sa();
        join(&mut sa, 1, BCAST, JoinState::FULL_MEMBER);
        join(&mut sa, 2, BCAST, JoinState::NON_MEMBER);
        leave(&mut sa, 1, BCAST, JoinState::FULL_MEMBER);
        let b = sa.group_by_mlid(Lid(0xC000)).unwrap();
        assert_eq!(b.mgid, BCAST);
        // osm_mgrp_cleanup: the last full member took the NonMember with it.
        assert_eq!(b.members().count(), 0);
    }

    #[test]
    fn mlids_are_the_lowest_free_and_bounded() {
        let mut sa = SubnetAdmin::new(SaConfig {
            mlid_max: Lid(0xC002),
            ..SaConfig::default()
        });
        assert_eq!(
            mcr(&join(&mut sa, 1, ipv4_group(1), JoinState::FULL_MEMBER)).mlid,
            Lid(0xC001)
        );
        assert_eq!(
            mcr(&join(&mut sa, 1, ipv4_group(2), JoinState::FULL_MEMBER)).mlid,
            Lid(0xC002)
        );
        assert_eq!(
            status(&join(&mut sa, 1, ipv4_group(3), JoinState::FULL_MEMBER)),
            Status::ERR_NO_RESOURCES
        );
        leave(&mut sa, 1, ipv4_group(1), JoinState::FULL_MEMBER);
        assert_eq!(
            mcr(&join(&mut sa, 1, ipv4_group(3), JoinState::FULL_MEMBER)).mlid,
            Lid(0xC001)
        );

        let mut capped = SubnetAdmin::new(SaConfig {
            max_groups: 2,
            ..SaConfig::default()
        });
        assert_eq!(
            status(&join(&mut capped, 1, ipv4_group(1), JoinState::FULL_MEMBER)),
            Status::OK
        );
        assert_eq!(
            status(&join(&mut capped, 1, ipv4_group(2), JoinState::FULL_MEMBER)),
            Status::ERR_NO_RESOURCES
        );
    }

    #[test]
    fn remove_port_and_receivers() {
        let mut sa = sa();
        join(&mut sa, 1, BCAST, JoinState::FULL_MEMBER);
        join(&mut sa, 2, BCAST, JoinState::FULL_MEMBER);
        join(&mut sa, 3, BCAST, JoinState::SEND_ONLY_NON_MEMBER);
        join(&mut sa, 4, BCAST, JoinState::NON_MEMBER);
        let mut r: Vec<_> = sa.receivers(Lid(0xC000)).collect();
        r.sort();
        assert_eq!(r, vec![gid(1), gid(2), gid(4)]);
        sa.remove_port(&gid(1));
        assert_eq!(sa.memberships_of(&gid(1)).count(), 0);
        assert_eq!(sa.receivers(Lid(0xC000)).count(), 2);
        sa.remove_port(&gid(2));
        // The last full member is gone: OpenSM's cleanup empties the group.
        assert_eq!(sa.group_by_mlid(Lid(0xC000)).unwrap().members().count(), 0);
        assert_eq!(sa.receivers(Lid(0xC001)).count(), 0);
    }

    #[test]
    fn wipe_and_broadcast_mtu() {
        let mut sa = sa();
        join(&mut sa, 1, BCAST, JoinState::FULL_MEMBER);
        join(&mut sa, 1, ipv4_group(1), JoinState::FULL_MEMBER);
        sa.set_broadcast_mtu(IbMtu::Mtu4096);
        assert_eq!(sa.group_by_mlid(Lid(0xC000)).unwrap().mtu, IbMtu::Mtu2048);
        sa.wipe();
        let g: Vec<_> = sa.groups().collect();
        assert_eq!(g.len(), 1);
        assert_eq!(
            (g[0].mgid, g[0].mlid, g[0].mtu),
            (BCAST, Lid(0xC000), IbMtu::Mtu4096)
        );
        assert_eq!(g[0].members().count(), 0);
        assert_eq!(sa.memberships_of(&gid(1)).count(), 0);
    }
}
