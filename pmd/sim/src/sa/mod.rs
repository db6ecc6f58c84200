//! The simulated subnet administrator: MCMemberRecord joins, leaves and queries and
//! PathRecord queries, answered as MAD bytes with OpenSM 3.3's rules
//! (opensm/osm_sa_mcmember_record.c, osm_multicast.c, osm_sa_path_record.c, osm_sa.c,
//! osm_sa_mad_ctrl.c), so that a real OpenSM can stand in for it.
//!
//! Contract: [`SubnetAdmin`] is a pure, deterministic state machine. It does no I/O, reads
//! no clock and starts no thread; the same requests in the same order give the same
//! answers byte for byte. Its state holds no pointers (maps keyed by MGID, port GUID and
//! MLID) and is bounded: at most [`SaConfig::max_groups`] groups, MLIDs from 0xC000 to
//! [`SaConfig::mlid_max`].
//!
//! Responses follow OpenSM's `osm_sa_respond` / `osm_sa_send_error`:
//! - success: the request's 56 header bytes, method `| 0x80` (`Set` is answered by
//!   `GetResp`), SM_Key 0, AttributeOffset = record size / 8, then the record(s);
//! - error: the whole request (its record included) with the status, the same method
//!   change and SM_Key 0 (AttributeOffset 0 for `GetTable`).
//!
//! MADs OpenSM does not answer get `None`: a bad base version, another class, a response
//! method, a method other than Get/GetTable/Set/Delete, a non-zero SM_Key other than
//! [`SaConfig::sa_key`], an attribute OpenSM does not know.
//!
//! Layout: `dispatch` (MAD checks and answers), `mcmember` (MCMemberRecord Set and
//! Delete: OpenSM's join and leave rules), `create` (a join that creates a group: MGID,
//! MTU and rate), `query` (MCMemberRecord Get and GetTable), `path` (PathRecord),
//! `groups` (the group table, MLID allocation and member counts) and `rules` (the
//! partition and rate rules that joins and paths share).

mod create;
mod dispatch;
mod groups;
mod mcmember;
mod path;
mod query;
mod rules;
#[cfg(test)]
mod testutil;

pub use groups::GroupView;

use std::collections::BTreeMap;

use ibpoll_wire::mad::{self, Status, MAD_LEN};
use ibpoll_wire::path_record;
use ibpoll_wire::{Gid, IbMtu, Lid, PKey, QKey, Rate};

use groups::Group;

/// The IPoIB IPv4 MGID signature (bytes 2..4), RFC 4391.
const IPV4_SIGNATURE: u16 = 0x401B;
/// The IPoIB IPv6 MGID signature.
const IPV6_SIGNATURE: u16 = 0x601B;
/// The signature of MGIDs the SA allocates itself (OpenSM `build_new_mgid`).
const SA_SIGNATURE: u16 = 0xA01B;
/// Link-local multicast scope.
const SCOPE_LINK_LOCAL: u8 = 2;

/// How the subnet administrator is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaConfig {
    /// The subnet prefix of every port GID (OpenSM `subnet_prefix`).
    pub subnet_prefix: u64,
    /// One IPoIB broadcast group per partition, created in this order (the first gets
    /// MLID 0xC000). Default `[0xFFFF]`.
    pub partitions: Vec<PKey>,
    /// MTU of the broadcast groups. Default 2048.
    pub broadcast_mtu: IbMtu,
    /// Rate of the broadcast groups. Default 10 Gb/s.
    pub broadcast_rate: Rate,
    /// SL of the broadcast groups and of paths in the configured partitions. Default 0.
    pub broadcast_sl: u8,
    /// Q_Key of the broadcast groups. Default 0x0B1B.
    pub broadcast_qkey: QKey,
    /// OpenSM `subnet_timeout` (default 18): the broadcast groups' PacketLifeTime and
    /// that of every non-loopback path.
    pub subnet_timeout: u8,
    /// OpenSM `sa_key` (default 1): a request with a non-zero SM_Key other than this is
    /// dropped; one with this key is trusted (sees port GIDs in queries).
    pub sa_key: u64,
    /// Most groups at once; a join that would create one more is answered
    /// ERR_NO_RESOURCES. Default 16384.
    pub max_groups: usize,
    /// The highest MLID handed out (OpenSM `max_mcast_lid_ho`). Default 0xFFFE.
    pub mlid_max: Lid,
    /// IBA 1.3 SendOnlyFullMember support: when set, JoinState SendOnlyFullMember may
    /// create a group and counts as a full member (it keeps the group alive). OpenSM
    /// 3.3.23 does both (checked against it under ibsim by `ibpoll-pmd-ibsim`'s
    /// `tests/opensm.rs`), so the default is `true`; `false` gives the IBA 1.2 rules,
    /// where only FullMember creates and counts.
    pub send_only_full_member: bool,
}

impl Default for SaConfig {
    fn default() -> SaConfig {
        SaConfig {
            subnet_prefix: Gid::DEFAULT_SUBNET_PREFIX,
            partitions: vec![PKey::DEFAULT],
            broadcast_mtu: IbMtu::Mtu2048,
            broadcast_rate: Rate::GBPS_10,
            broadcast_sl: 0,
            broadcast_qkey: QKey::IPOIB_DEFAULT,
            subnet_timeout: 18,
            sa_key: 1,
            max_groups: 16384,
            mlid_max: Lid::MULTICAST_LAST,
            send_only_full_member: true,
        }
    }
}

/// The port a request came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requester {
    /// Its port GID.
    pub port_gid: Gid,
    /// Its LID.
    pub lid: Lid,
    /// Its P_Key table.
    pub pkeys: Vec<PKey>,
}

/// What the fabric knows about a port, for joins and paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathEnd {
    /// Its LID.
    pub lid: Lid,
    /// Its MTU capability.
    pub mtu: IbMtu,
    /// Its link rate.
    pub rate: Rate,
    /// Its P_Key table.
    pub pkeys: Vec<PKey>,
}

/// Counters. Methods and statuses are few (at most 256 and 65536 keys, in practice a
/// dozen), so the maps stay small.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SaStats {
    /// MADs handed to [`SubnetAdmin::handle`].
    pub received: u64,
    /// MADs dropped without an answer (see the module docs for which).
    pub dropped: u64,
    /// Requests accepted, per method byte.
    pub by_method: BTreeMap<u8, u64>,
    /// Answers sent, per status.
    pub by_status: BTreeMap<u16, u64>,
    /// Groups created (broadcast groups included).
    pub groups_created: u64,
    /// Groups deleted.
    pub groups_deleted: u64,
}
/// The subnet administrator.
#[derive(Debug, Clone)]
pub struct SubnetAdmin {
    cfg: SaConfig,
    /// Groups by MGID (byte order, as OpenSM's `mgrp_mgid_tbl`).
    groups: BTreeMap<Gid, Group>,
    /// MGID of the group using each MLID.
    mlids: BTreeMap<Lid, Gid>,
    /// Every MLID from `Lid::MULTICAST_BASE` up to (not including) this one is in use:
    /// the search for the lowest free MLID starts here, so creating n groups in a row
    /// costs O(n log n), not O(n^2). Lowered when a group is deleted.
    mlid_free_from: std::cell::Cell<u16>,
    /// OpenSM `build_new_mgid`'s `uniq_count`.
    mgid_counter: u32,
    stats: SaStats,
}

/// The outcome of handling one request: an answer with records, or an error status.
type Outcome = Result<Answer, Status>;

/// A successful answer.
#[derive(Debug)]
enum Answer {
    McMember(Vec<ibpoll_wire::mcmember::Repr>),
    PathRecord(Vec<path_record::Repr>),
}
impl SubnetAdmin {
    /// A subnet administrator with each partition's broadcast group and no member.
    pub fn new(cfg: SaConfig) -> SubnetAdmin {
        let mut sa = SubnetAdmin {
            cfg,
            groups: BTreeMap::new(),
            mlids: BTreeMap::new(),
            mlid_free_from: std::cell::Cell::new(Lid::MULTICAST_BASE.0),
            mgid_counter: 0,
            stats: SaStats::default(),
        };
        sa.create_broadcast_groups();
        sa
    }

    /// The configuration in force.
    pub fn config(&self) -> &SaConfig {
        &self.cfg
    }

    /// Handles one request MAD received on QP1; the response MAD, or `None` for a MAD
    /// the SA does not answer (module docs).
    pub fn handle(
        &mut self,
        req: &[u8; MAD_LEN],
        from: &Requester,
        path_oracle: &dyn Fn(&Gid) -> Option<PathEnd>,
    ) -> Option<[u8; MAD_LEN]> {
        self.stats.received += 1;
        let answer = self.dispatch(req, from, path_oracle);
        self.check_invariants();
        match &answer {
            Some(bytes) => {
                let status = mad::Packet::new_unchecked(&bytes[..]).status();
                *self.stats.by_status.entry(status.0).or_default() += 1;
            }
            None => self.stats.dropped += 1,
        }
        answer
    }

    /// Counters.
    pub fn stats(&self) -> &SaStats {
        &self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;
    use ibpoll_wire::mad::Method;
    use ibpoll_wire::mcmember::{self, JoinState};
    use ibpoll_wire::sa::ComponentMask;

    /// A whole life cycle, as ibpoll's control plane drives it: broadcast joins,
    /// an IPv4 group, a send-only join, leaves, a port going away, an SM restart.
    #[test]
    fn life_cycle() {
        let mut sa = sa();
        for h in 1..=3 {
            let r = mcr(&join(&mut sa, h, BCAST, JoinState::FULL_MEMBER));
            assert_eq!(
                (r.mlid, r.mtu, r.join_state),
                (Lid(0xC000), 4, JoinState::FULL_MEMBER)
            );
        }
        // Host 1 creates 224.0.0.251; host 2 joins it; host 3 sends to it only.
        let mdns = ipv4_group(251);
        assert_eq!(
            mcr(&join(&mut sa, 1, mdns, JoinState::FULL_MEMBER)).mlid,
            Lid(0xC001)
        );
        assert_eq!(
            status(&join(&mut sa, 2, mdns, JoinState::FULL_MEMBER)),
            Status::OK
        );
        assert_eq!(
            status(&join(&mut sa, 3, mdns, JoinState::SEND_ONLY_NON_MEMBER)),
            Status::OK
        );
        let g = sa.group_by_mlid(Lid(0xC001)).unwrap();
        assert_eq!(g.full_members(), 2);
        assert_eq!(g.qkey, QKey::IPOIB_DEFAULT);
        assert_eq!(
            sa.receivers(Lid(0xC001)).collect::<Vec<_>>(),
            vec![gid(1), gid(2)]
        );
        assert_eq!(
            sa.memberships_of(&gid(3)).collect::<Vec<_>>(),
            vec![
                (mdns, JoinState::SEND_ONLY_NON_MEMBER),
                (BCAST, JoinState::FULL_MEMBER)
            ]
        );
        // A duplicate join changes nothing.
        assert_eq!(
            mcr(&join(&mut sa, 2, mdns, JoinState::FULL_MEMBER)).join_state,
            JoinState::FULL_MEMBER
        );
        assert_eq!(sa.group_by_mlid(Lid(0xC001)).unwrap().full_members(), 2);
        // Host 1 leaves; the group lives on with host 2.
        assert_eq!(
            status(&leave(&mut sa, 1, mdns, JoinState::FULL_MEMBER)),
            Status::OK
        );
        assert_eq!(
            status(&leave(&mut sa, 1, mdns, JoinState::FULL_MEMBER)),
            Status::ERR_REQ_INVALID
        );
        assert_eq!(sa.group_by_mlid(Lid(0xC001)).unwrap().members().count(), 2);
        // Host 2's port goes away: the group dies, host 3's send-only membership too.
        sa.remove_port(&gid(2));
        assert!(sa.group_by_mgid(&mdns).is_none());
        assert_eq!(
            sa.memberships_of(&gid(3)).collect::<Vec<_>>(),
            vec![(BCAST, JoinState::FULL_MEMBER)]
        );
        // The broadcast group still has hosts 1 and 3.
        assert_eq!(
            sa.receivers(Lid(0xC000)).collect::<Vec<_>>(),
            vec![gid(1), gid(3)]
        );
        // SM restart.
        sa.wipe();
        assert_eq!(sa.receivers(Lid(0xC000)).count(), 0);
        assert_eq!(
            mcr(&join(&mut sa, 3, mdns, JoinState::FULL_MEMBER)).mlid,
            Lid(0xC001)
        );
        let s = sa.stats();
        assert_eq!(s.by_method.get(&0x02), Some(&8));
        assert_eq!(s.by_method.get(&0x15), Some(&2));
    }

    /// Mutated requests (a fixed xorshift stream, no dependency) never panic, and an
    /// answer is always a response to the request's transaction.
    #[test]
    fn arbitrary_requests_never_panic() {
        let mut sa = sa();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let seeds = [
            mad(
                Method::SET,
                ipoib_rec(BCAST, gid(1), JoinState::FULL_MEMBER).0,
                ipoib_rec(BCAST, gid(1), JoinState::FULL_MEMBER).1,
            ),
            mad(
                Method::DELETE,
                mcmember::JOIN_MASK,
                ipoib_rec(ipv4_group(3), gid(2), JoinState::NON_MEMBER).1,
            ),
            mad(Method::GET, ComponentMask(!0), mcmember::Repr::default()),
            path_req(Method::GET, ComponentMask(!0), path_record::Repr::default()),
        ];
        for i in 0..20_000u32 {
            let mut req = seeds[i as usize % seeds.len()];
            for _ in 0..(next() % 8) {
                let r = next();
                req[(r % MAD_LEN as u64) as usize] = (r >> 32) as u8;
            }
            let from = host(next() % 10);
            if let Some(resp) = sa.handle(&req, &from, &oracle) {
                let p = mad::Packet::new_unchecked(&resp[..]);
                assert!(p.method().is_response());
                assert_eq!(
                    p.transaction_id(),
                    mad::Packet::new_unchecked(&req[..]).transaction_id()
                );
            }
        }
        assert!(sa.groups().count() <= sa.config().max_groups);
        assert_eq!(sa.stats().received, 20_000);
    }

    #[test]
    fn deterministic() {
        let run = || {
            let mut sa = sa();
            let mut out = Vec::new();
            for (h, g, js) in [
                (1, BCAST, 1),
                (2, ipv4_group(1), 1),
                (3, Gid::default(), 1),
                (2, ipv4_group(1), 2),
            ] {
                let (mask, rec) = ipoib_rec(g, gid(h), JoinState::from_bits_truncate(js));
                out.push(sa.handle(&mad(Method::SET, mask, rec), &host(h), &oracle));
            }
            out
        };
        assert_eq!(run(), run());
    }
}
