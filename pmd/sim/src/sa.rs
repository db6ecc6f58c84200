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

use std::collections::BTreeMap;

use ibpoll_wire::mad::{self, AttributeId, Method, MgmtClass, Status, MAD_LEN};
use ibpoll_wire::mcmember::{self, mask as mcm, JoinState};
use ibpoll_wire::path_record::{self, mask as prm};
use ibpoll_wire::sa::{self, Attribute, ComponentMask, SaMad, Selector};
use ibpoll_wire::{Gid, IbMtu, Lid, PKey, QKey, Rate};

/// The IPoIB IPv4 MGID signature (bytes 2..4), RFC 4391.
const IPV4_SIGNATURE: u16 = 0x401B;
/// The IPoIB IPv6 MGID signature.
const IPV6_SIGNATURE: u16 = 0x601B;
/// The signature of MGIDs the SA allocates itself (OpenSM `build_new_mgid`).
const SA_SIGNATURE: u16 = 0xA01B;
/// Link-local multicast scope.
const SCOPE_LINK_LOCAL: u8 = 2;
/// RMPP flags Active | First | Last, as OpenSM sets them for a one-packet GetTableResp.
const RMPP_FLAGS_SINGLE: u8 = 0x07;
/// RMPP type DATA.
const RMPP_TYPE_DATA: u8 = 1;

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

/// One port's membership of a group (OpenSM `osm_mcm_alias_guid_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Member {
    port_gid: Gid,
    /// Scope (high nibble) and JoinState (low nibble), as OpenSM stores them.
    scope_state: u8,
    proxy: bool,
}

impl Member {
    fn join_state(&self) -> JoinState {
        JoinState::from_bits_truncate(self.scope_state)
    }
}

/// A multicast group (OpenSM `osm_mgrp_t`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Group {
    /// The record as created: the creating request with MGID, MLID, MTU and rate filled
    /// in and the MTU, rate and PacketLifeTime selectors set to "exactly".
    rec: mcmember::Repr,
    /// Members by port GUID.
    members: BTreeMap<u64, Member>,
    /// Members holding a full membership.
    full_members: u32,
    /// A partition's broadcast group: it outlives its last full member.
    well_known: bool,
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
    McMember(Vec<mcmember::Repr>),
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

    fn dispatch(
        &mut self,
        req: &[u8; MAD_LEN],
        from: &Requester,
        oracle: &dyn Fn(&Gid) -> Option<PathEnd>,
    ) -> Option<[u8; MAD_LEN]> {
        // A bad base version leaves the layout unknown: the MAD layer drops it.
        let m = SaMad::parse(req).ok()?;
        let h = &m.header;
        if h.mad.mgmt_class != MgmtClass::SUBN_ADM || h.mad.method.is_response() {
            return None;
        }
        // C15-0.1.5 (osm_sa_mad_ctrl.c ERR 1A04): a wrong SM_Key is discarded.
        if h.sm_key != 0 && h.sm_key != self.cfg.sa_key {
            tracing::debug!(sm_key = h.sm_key, "SA: MAD with a foreign SM_Key dropped");
            return None;
        }
        let method = h.mad.method;
        // osm_sa_mad_ctrl.c ERR 1A05: other methods are dropped unanswered.
        if ![Method::GET, Method::GET_TABLE, Method::SET, Method::DELETE].contains(&method) {
            return None;
        }
        *self.stats.by_method.entry(method.0).or_default() += 1;
        if h.mad.class_version != mad::SA_CLASS_VERSION {
            return Some(error_response(req, Status::UNSUP_CLASS_VERSION));
        }
        let outcome = match (h.mad.attribute_id, m.attribute) {
            (AttributeId::MCMEMBER_RECORD, Attribute::McMember(rec)) => {
                self.mcmember(method, h.component_mask, h.sm_key != 0, &rec, from, oracle)
            }
            (AttributeId::PATH_RECORD, Attribute::PathRecord(rec)) => {
                self.path_record(method, h.component_mask, &rec, from, oracle)
            }
            (id, _) if known_to_opensm(id) => Err(Status::UNSUP_METHOD_ATTR),
            // osm_sa_mad_ctrl.c ERR 1A01: unknown attributes are dropped.
            _ => return None,
        };
        Some(match outcome {
            Ok(answer) => self.respond(req, method, answer),
            Err(status) => error_response(req, status),
        })
    }

    /// OpenSM `osm_sa_respond`.
    fn respond(&self, req: &[u8; MAD_LEN], method: Method, answer: Answer) -> [u8; MAD_LEN] {
        let n = match &answer {
            Answer::McMember(v) => v.len(),
            Answer::PathRecord(v) => v.len(),
        };
        if method == Method::GET && n > 1 {
            return error_response(req, Status::ERR_TOO_MANY_RECORDS);
        }
        if method == Method::GET && n == 0 {
            return error_response(req, Status::ERR_NO_RECORDS);
        }
        let mut out = [0u8; MAD_LEN];
        out[..sa::DATA_OFFSET].copy_from_slice(&req[..sa::DATA_OFFSET]);
        if method == Method::GET_TABLE {
            // One packet: RMPP DATA with Active | First | Last (osm_sa_respond without
            // vendor RMPP); the rest of the RMPP header is the request's.
            out[25] = RMPP_TYPE_DATA;
            out[26] = RMPP_FLAGS_SINGLE;
        }
        let mut p = sa::Packet::new_unchecked(&mut out[..]);
        p.mad_mut().set_method(method.response());
        p.set_sm_key(0);
        let size = match &answer {
            Answer::McMember(_) => mcmember::RECORD_SIZE,
            Answer::PathRecord(_) => path_record::RECORD_LEN,
        };
        // One MAD only: like OpenSM built without vendor RMPP, trim to what fits.
        let n = n.min(sa::DATA_LEN / size);
        p.set_attribute_offset(if n > 0 { (size / 8) as u16 } else { 0 });
        let data = p.data_mut();
        match answer {
            Answer::McMember(v) => {
                for (i, r) in v.iter().take(n).enumerate() {
                    let at = i * size;
                    r.emit(&mut mcmember::Packet::new_unchecked(
                        &mut data[at..at + size],
                    ));
                }
            }
            Answer::PathRecord(v) => {
                for (i, r) in v.iter().take(n).enumerate() {
                    let at = i * size;
                    r.emit(&mut path_record::Packet::new_unchecked(
                        &mut data[at..at + size],
                    ));
                }
            }
        }
        out
    }

    // ---------------------------------------------------------------- MCMemberRecord

    fn mcmember(
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

    fn is_full(&self, js: JoinState) -> bool {
        let full = if self.cfg.send_only_full_member {
            JoinState::FULL_MEMBER | JoinState::SEND_ONLY_FULL_MEMBER
        } else {
            JoinState::FULL_MEMBER
        };
        js.intersects(full)
    }

    /// OpenSM `mcmr_rcv_join_mgrp`.
    fn join(
        &mut self,
        mask: ComponentMask,
        req: &mcmember::Repr,
        from: &Requester,
        oracle: &dyn Fn(&Gid) -> Option<PathEnd>,
    ) -> Result<mcmember::Repr, Status> {
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
        let join_state = req.join_state;
        let existing = self.groups.contains_key(&req.mgid) && !req.mgid.0.iter().all(|&b| b == 0);
        let mgid = if existing {
            let g = &self.groups[&req.mgid];
            if !validate_other_comp_fields(mask, req, &g.rec) {
                return Err(Status::ERR_REQ_INVALID);
            }
            req.mgid
        } else {
            // o15.0.1.9: only a full member creates.
            if !self.is_full(join_state) {
                return Err(Status::ERR_REQ_INVALID);
            }
            if !mask.contains(mcmember::CREATE_MASK) {
                return Err(Status::ERR_REQ_INSUFFICIENT_COMPONENTS);
            }
            self.create_group(mask, req, &port)?
        };

        let group = &self.groups[&mgid];
        let new_group = !existing;
        if !validate_more_comp_fields(mask, req, &group.rec)
            || !port_can_join(&port, &group.rec)
            || join_state.is_empty()
        {
            if new_group {
                self.cleanup(&mgid);
            }
            return Err(Status::ERR_REQ_INVALID);
        }
        if !has_pkey(&port.pkeys, group.rec.pkey) {
            if new_group {
                self.cleanup(&mgid);
            }
            return Err(Status::ERR_REQ_INVALID);
        }
        if !new_group && !validate_modify(group, req, from) {
            return Err(Status::ERR_REQ_INVALID);
        }

        // copy_from_create_mc_rec, then osm_mgrp_add_port.
        let grec = group.rec;
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

        let is_full_join = self.is_full(join_state);
        let was_full;
        let scope_state;
        {
            let group = self.groups.get_mut(&mgid).expect("group checked above");
            let key = req.port_gid.guid();
            match group.members.get_mut(&key) {
                Some(m) => {
                    was_full = m.join_state();
                    m.scope_state |= join_state.bits();
                    scope_state = m.scope_state;
                }
                None => {
                    was_full = JoinState::NONE;
                    let m = Member {
                        port_gid: req.port_gid,
                        scope_state: (grec.scope << 4) | join_state.bits(),
                        proxy,
                    };
                    scope_state = m.scope_state;
                    group.members.insert(key, m);
                }
            }
        }
        if is_full_join && !self.is_full(was_full) {
            if let Some(g) = self.groups.get_mut(&mgid) {
                g.full_members += 1;
            }
        }
        resp.scope = scope_state >> 4;
        resp.join_state = JoinState::from_bits_truncate(scope_state);
        tracing::trace!(mgid = %mgid, port = %req.port_gid, js = ?resp.join_state, "SA: join");
        Ok(resp)
    }

    /// OpenSM `mcmr_rcv_create_new_mgrp`: the new group's MGID.
    fn create_group(
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
        self.realize(mask, &mut rec, port)?;
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

    fn insert_group(&mut self, rec: mcmember::Repr, well_known: bool) {
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

    /// OpenSM `mgrp_request_is_realizable`: fills in the new group's MTU and rate.
    fn realize(
        &self,
        mask: ComponentMask,
        rec: &mut mcmember::Repr,
        port: &PathEnd,
    ) -> Result<(), Status> {
        let port_mtu = port.mtu.code();
        let mut mtu_sel = Selector::Exactly;
        let mtu;
        if !mask.contains(mcm::MTU)
            || !mask.contains(mcm::MTU_SELECTOR)
            || rec.mtu_selector == Selector::Best
        {
            if mask.contains(mcm::MTU) && mask.contains(mcm::MTU_SELECTOR) {
                mtu_sel = Selector::Best;
            }
            mtu = port_mtu;
        } else {
            mtu_sel = rec.mtu_selector;
            let required = rec.mtu;
            let mut v = required;
            match mtu_sel {
                Selector::GreaterThan => {
                    if required >= port_mtu {
                        return Err(Status::ERR_REQ_INVALID);
                    }
                    v = port_mtu;
                }
                Selector::LessThan => {
                    v = if required > port_mtu {
                        port_mtu
                    } else {
                        required.wrapping_sub(1)
                    };
                }
                _ => {}
            }
            if !(1..=5).contains(&v) {
                return Err(Status::ERR_REQ_INVALID);
            }
            mtu = v;
        }
        rec.mtu_selector = mtu_sel;
        rec.mtu = mtu;

        let port_rate = port.rate;
        let mut rate_sel = Selector::Exactly;
        let rate;
        if !mask.contains(mcm::RATE)
            || !mask.contains(mcm::RATE_SELECTOR)
            || rec.rate_selector == Selector::Best
        {
            if mask.contains(mcm::RATE) && mask.contains(mcm::RATE_SELECTOR) {
                rate_sel = Selector::Best;
            }
            rate = port_rate;
        } else {
            rate_sel = rec.rate_selector;
            let required = rec.rate;
            let mut v = Some(required);
            match rate_sel {
                Selector::GreaterThan => {
                    if required.cmp_speed(port_rate).is_ge() {
                        return Err(Status::ERR_REQ_INVALID);
                    }
                    v = Some(port_rate);
                }
                Selector::LessThan => {
                    v = if required.cmp_speed(port_rate).is_gt() {
                        Some(port_rate)
                    } else {
                        rate_prev(required)
                    };
                }
                _ => {}
            }
            match v {
                Some(r) if r.mbps().is_some() => rate = r,
                _ => return Err(Status::ERR_REQ_INVALID),
            }
        }
        rec.rate_selector = rate_sel;
        rec.rate = rate;
        Ok(())
    }

    /// OpenSM `get_new_mlid`: the requested MLID if free, else the lowest free one.
    fn new_mlid(&self, requested: Lid) -> Option<Lid> {
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
    fn cleanup(&mut self, mgid: &Gid) {
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

    /// OpenSM `osm_mgrp_remove_port`: clears `leave` from a member, removes it when it
    /// is no longer needed, and cleans the group up when its last full member went.
    /// Returns the member's resulting scope/state byte.
    fn remove_member(&mut self, mgid: &Gid, guid: u64, leave: JoinState) -> u8 {
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

    /// OpenSM `mcmr_query_mgrp` / `mcmr_by_comp_mask`.
    fn query(
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

    // ---------------------------------------------------------------- PathRecord

    /// OpenSM `osm_pr_rcv_process`.
    fn path_record(
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
            let required = q.mtu;
            match q.mtu_selector {
                Selector::GreaterThan if mtu <= required => return None,
                Selector::LessThan if mtu >= required => {
                    if required > 1 {
                        mtu = required - 1;
                    } else {
                        return None;
                    }
                }
                Selector::Exactly if mtu < required => return None,
                Selector::Exactly => mtu = required,
                _ => {}
            }
        }
        if mask.contains(prm::RATE_SELECTOR | prm::RATE) {
            let required = q.rate;
            match q.rate_selector {
                Selector::GreaterThan if rate.cmp_speed(required).is_le() => return None,
                Selector::LessThan if rate.cmp_speed(required).is_ge() => {
                    rate = rate_prev(required)?
                }
                Selector::Exactly if rate.cmp_speed(required).is_ne() => return None,
                Selector::Exactly => rate = required,
                _ => {}
            }
        }
        if mask.contains(prm::PACKET_LIFE_TIME_SELECTOR | prm::PACKET_LIFE_TIME) {
            let required = q.packet_life_time;
            match q.packet_life_time_selector {
                Selector::GreaterThan if pkt_life <= required => return None,
                Selector::LessThan if pkt_life >= required => {
                    if required > 1 {
                        pkt_life = required - 1;
                    } else {
                        return None;
                    }
                }
                Selector::Exactly if pkt_life < required => return None,
                Selector::Exactly => pkt_life = required,
                _ => {}
            }
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

    // ---------------------------------------------------------------- state

    fn create_broadcast_groups(&mut self) {
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
    fn check_invariants(&self) {
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

    /// Counters.
    pub fn stats(&self) -> &SaStats {
        &self.stats
    }
}

/// The error answer (OpenSM `osm_sa_send_error`): the request echoed with `status`.
fn error_response(req: &[u8; MAD_LEN], status: Status) -> [u8; MAD_LEN] {
    // Only requests reach this point, so the wire helper always answers.
    mad::error_response(req, status).unwrap_or(*req)
}

/// Attributes OpenSM's SA dispatches (osm_sa_mad_ctrl.c) that this SA does not
/// implement: answered ERR 0x000C rather than dropped.
fn known_to_opensm(id: AttributeId) -> bool {
    matches!(
        id.0,
        0x0001
            | 0x0003
            | 0x0011
            | 0x0012
            | 0x0013
            | 0x0014
            | 0x0015
            | 0x0017
            | 0x0018
            | 0x0020
            | 0x0030
            | 0x0031
            | 0x0033
            | 0x0036
            | 0x00F3
    )
}

/// ff1S:401b:PPPP::ffff:ffff.
fn ipoib_broadcast_mgid(scope: u8, pkey: [u8; 2]) -> Gid {
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

/// The MTU, rate and PacketLifeTime selectors of an answer say "exactly"
/// (OpenSM `mcmr_rcv_respond`).
fn with_exact_selectors(mut r: mcmember::Repr) -> mcmember::Repr {
    r.mtu_selector = Selector::Exactly;
    r.rate_selector = Selector::Exactly;
    r.packet_life_time_selector = Selector::Exactly;
    r
}

/// OpenSM `osm_physp_has_pkey`: the table holds a P_Key of the same partition.
fn has_pkey(table: &[PKey], pkey: PKey) -> bool {
    pkey.base() != 0 && table.iter().any(|p| p.base() == pkey.base())
}

/// OpenSM `osm_physp_share_pkey`: some P_Key lets the two ports talk.
fn share_pkey(a: &[PKey], b: &[PKey]) -> bool {
    a.iter().any(|x| b.iter().any(|y| x.matches(*y)))
}

/// OpenSM `osm_physp_share_this_pkey`.
fn share_this_pkey(a: &[PKey], b: &[PKey], pkey: PKey) -> bool {
    let find = |t: &[PKey]| {
        t.iter()
            .copied()
            .find(|p| p.base() == pkey.base() && pkey.base() != 0)
    };
    match (find(a), find(b)) {
        (Some(x), Some(y)) => x.is_full_member() || y.is_full_member(),
        _ => false,
    }
}

/// OpenSM `osm_physp_find_common_pkey`: the first (lowest partition number) P_Key of
/// `a` that lets it talk to `b`, as `a` holds it.
fn common_pkey(a: &[PKey], b: &[PKey]) -> Option<PKey> {
    let mut sorted: Vec<PKey> = a.iter().copied().filter(|p| p.base() != 0).collect();
    sorted.sort_by_key(|p| p.base());
    sorted.into_iter().find(|x| b.iter().any(|y| x.matches(*y)))
}

/// The next slower IBA rate (OpenSM `ib_path_rate_get_prev`).
fn rate_prev(r: Rate) -> Option<Rate> {
    let speed = r.mbps()?;
    (0u8..64)
        .map(Rate)
        .filter(|c| c.mbps().is_some_and(|s| s < speed))
        .max_by_key(|c| c.mbps())
}

/// OpenSM `validate_other_comp_fields`: Q_Key, P_Key (same partition, not both
/// limited), TClass, SL, FlowLabel and HopLimit, where the mask names them.
fn validate_other_comp_fields(mask: ComponentMask, q: &mcmember::Repr, g: &mcmember::Repr) -> bool {
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
fn validate_more_comp_fields(mask: ComponentMask, q: &mcmember::Repr, g: &mcmember::Repr) -> bool {
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
    use ibpoll_wire::sa::RmppRepr;

    const PREFIX: u64 = Gid::DEFAULT_SUBNET_PREFIX;
    const BCAST: Gid = Gid([
        0xff, 0x12, 0x40, 0x1b, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff,
    ]);

    fn gid(n: u64) -> Gid {
        Gid::new(PREFIX, 0x0002_c903_0000_0000 + n)
    }

    fn host(n: u64) -> Requester {
        Requester {
            port_gid: gid(n),
            lid: Lid(n as u16),
            pkeys: vec![PKey::DEFAULT],
        }
    }

    /// A fabric of hosts 1..=8, 4096 MTU and 40 Gb/s, in the default partition; host 7
    /// has 1024 MTU and 10 Gb/s; host 8 is only in partition 0x8001.
    fn oracle(g: &Gid) -> Option<PathEnd> {
        if g.subnet_prefix() != PREFIX {
            return None;
        }
        let n = g.guid().checked_sub(0x0002_c903_0000_0000)?;
        let (mtu, rate, pkeys) = match n {
            1..=6 => (IbMtu::Mtu4096, Rate::GBPS_40, vec![PKey::DEFAULT]),
            7 => (IbMtu::Mtu1024, Rate::GBPS_10, vec![PKey::DEFAULT]),
            8 => (IbMtu::Mtu4096, Rate::GBPS_40, vec![PKey(0x8001)]),
            _ => return None,
        };
        Some(PathEnd {
            lid: Lid(n as u16),
            mtu,
            rate,
            pkeys,
        })
    }

    fn sa() -> SubnetAdmin {
        SubnetAdmin::new(SaConfig::default())
    }

    /// What Linux IPoIB sends to join or create a non-broadcast group: the broadcast
    /// group's parameters, MTU and rate "exactly" (ipoib_mcast_join).
    fn ipoib_rec(mgid: Gid, port: Gid, js: JoinState) -> (ComponentMask, mcmember::Repr) {
        let rec = mcmember::Repr {
            mgid,
            port_gid: port,
            qkey: QKey::IPOIB_DEFAULT,
            mtu_selector: Selector::Exactly,
            mtu: 4,
            pkey: PKey::DEFAULT,
            rate_selector: Selector::Exactly,
            rate: Rate::GBPS_10,
            join_state: js,
            ..mcmember::Repr::default()
        };
        let mask = mcmember::CREATE_MASK
            | mcm::MTU_SELECTOR
            | mcm::MTU
            | mcm::RATE_SELECTOR
            | mcm::RATE
            | mcm::HOP_LIMIT;
        (mask, rec)
    }

    fn mad(method: Method, mask: ComponentMask, rec: mcmember::Repr) -> [u8; MAD_LEN] {
        SaMad::request(
            method,
            0x1122_3344_5566_7788,
            mask,
            Attribute::McMember(rec),
        )
        .to_bytes()
    }

    fn send(sa: &mut SubnetAdmin, from: u64, req: &[u8; MAD_LEN]) -> SaMad {
        let resp = sa.handle(req, &host(from), &oracle).expect("an answer");
        SaMad::parse(&resp).expect("a well-formed answer")
    }

    fn status(m: &SaMad) -> Status {
        m.header.mad.status
    }

    fn mcr(m: &SaMad) -> mcmember::Repr {
        match m.attribute {
            Attribute::McMember(r) => r,
            _ => panic!("not an MCMemberRecord"),
        }
    }

    fn join(sa: &mut SubnetAdmin, from: u64, mgid: Gid, js: JoinState) -> SaMad {
        let (mask, rec) = ipoib_rec(mgid, gid(from), js);
        send(sa, from, &mad(Method::SET, mask, rec))
    }

    fn leave(sa: &mut SubnetAdmin, from: u64, mgid: Gid, js: JoinState) -> SaMad {
        let rec = mcmember::Repr {
            mgid,
            port_gid: gid(from),
            join_state: js,
            ..mcmember::Repr::default()
        };
        send(sa, from, &mad(Method::DELETE, mcmember::JOIN_MASK, rec))
    }

    fn ipv4_group(last: u8) -> Gid {
        // IPv4 224.0.0.last on partition 0xFFFF (RFC 4391 section 4).
        Gid([
            0xff, 0x12, 0x40, 0x1b, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0xe0, 0, 0, last,
        ])
    }

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

    fn path_req(method: Method, mask: ComponentMask, pr: path_record::Repr) -> [u8; MAD_LEN] {
        SaMad::request(method, 42, mask, Attribute::PathRecord(pr)).to_bytes()
    }

    fn pr(m: &SaMad) -> path_record::Repr {
        match m.attribute {
            Attribute::PathRecord(r) => r,
            _ => panic!("not a PathRecord"),
        }
    }

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
    fn unsupported_methods_and_attributes() {
        let mut sa = sa();
        let q = path_record::Repr {
            dgid: gid(2),
            sgid: gid(1),
            ..Default::default()
        };
        // PathRecord Set: method/attribute combination unsupported (ERR 1F17).
        let m = send(&mut sa, 1, &path_req(Method::SET, prm::DGID, q));
        assert_eq!(status(&m), Status::UNSUP_METHOD_ATTR);
        assert_eq!(m.header.mad.method, Method::GET_RESP);
        // ClassPortInfo: OpenSM has it, this SA answers 0x000C.
        let mut cpi = SaMad::request(Method::GET, 1, ComponentMask::NONE, Attribute::Other);
        cpi.header.mad.attribute_id = AttributeId::CLASS_PORT_INFO;
        assert_eq!(
            status(&send(&mut sa, 1, &cpi.to_bytes())),
            Status::UNSUP_METHOD_ATTR
        );
        // An attribute OpenSM does not know, a Report, a response, a foreign SM_Key,
        // another class, another base version: dropped.
        let mut unknown = cpi;
        unknown.header.mad.attribute_id = AttributeId(0x1234);
        let mut report = cpi;
        report.header.mad.method = Method::REPORT;
        let mut response = cpi;
        response.header.mad.method = Method::GET_RESP;
        let mut keyed = cpi;
        keyed.header.sm_key = 0xdead;
        let mut class = cpi;
        class.header.mad.mgmt_class = MgmtClass::PERF;
        for m in [unknown, report, response, keyed, class] {
            assert_eq!(sa.handle(&m.to_bytes(), &host(1), &oracle), None);
        }
        let mut b = cpi.to_bytes();
        b[0] = 2;
        assert_eq!(sa.handle(&b, &host(1), &oracle), None);
        // Class version 1: bad version.
        let mut v1 = cpi;
        v1.header.mad.class_version = 1;
        assert_eq!(
            status(&send(&mut sa, 1, &v1.to_bytes())),
            Status::UNSUP_CLASS_VERSION
        );
        let s = sa.stats();
        assert_eq!(s.dropped, 6);
        assert_eq!(s.by_status.get(&0x000C), Some(&2));
    }

    #[test]
    fn error_answers_echo_the_request() {
        let mut sa = sa();
        let (mask, mut rec) = ipoib_rec(BCAST, gid(1), JoinState::FULL_MEMBER);
        rec.qkey = QKey(1);
        let mut m = SaMad::request(Method::SET, 9, mask, Attribute::McMember(rec));
        m.header.sm_key = 1;
        m.header.rmpp = RmppRepr {
            version: 1,
            ..RmppRepr::default()
        };
        let req = m.to_bytes();
        let resp = sa.handle(&req, &host(1), &oracle).unwrap();
        let mut want = req;
        want[3] = 0x81;
        want[4..6].copy_from_slice(&[0x02, 0x00]);
        want[36..44].fill(0);
        assert_eq!(resp, want);
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
