use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use ibpoll_dev::{Mad, MadAddr, MadChannel, Nanos, PortAttr, PortState};
use ibpoll_wire::ipoib::{self, McastScope};
use ibpoll_wire::mad::{Method, Status};
use ibpoll_wire::mcmember::{self, mask as mcm, JoinState};
use ibpoll_wire::sa::{self as wsa, Attribute, SaMad, Selector};
use ibpoll_wire::{Gid, IbMtu, Lid, PKey, QKey, Qpn, Rate};

use super::*;
use crate::link::{JoinRequest, LinkEvent, LinkLayerOps, ListStart};
use crate::mcast::GroupKind;

/// A channel whose inbox the test fills and whose sent MADs it reads.
#[derive(Debug, Default, Clone)]
struct Fake {
    sent: Arc<Mutex<Vec<Mad>>>,
    inbox: Arc<Mutex<VecDeque<Mad>>>,
}

impl MadChannel for Fake {
    fn send(&mut self, mad: &Mad, _to: MadAddr) -> Result<(), ibpoll_dev::Error> {
        self.sent.lock().unwrap().push(*mad);
        Ok(())
    }
    fn recv(&mut self) -> Option<(Mad, MadAddr)> {
        let m = self.inbox.lock().unwrap().pop_front()?;
        Some((
            m,
            MadAddr {
                lid: Lid(1),
                qpn: Qpn::GSI,
                qkey: QKey::GSI,
                sl: 0,
                pkey_index: 0,
            },
        ))
    }
}

fn attr() -> PortAttr {
    let mut a = PortAttr::new(1);
    a.state = PortState::Active;
    a.lid = Lid(2);
    a.sm_lid = Lid(1);
    a.gid = Gid::new(Gid::DEFAULT_SUBNET_PREFIX, 0x1234);
    a.gids = vec![a.gid];
    a.pkeys = vec![PKey::DEFAULT];
    a.max_mtu = IbMtu::Mtu4096;
    a.active_mtu = IbMtu::Mtu4096;
    a.rate = Rate::GBPS_10;
    a
}

fn link(fake: &Fake, window: usize) -> IbLink {
    IbLink::new(
        Box::new(fake.clone()),
        &attr(),
        PKey::DEFAULT,
        McastScope::LINK_LOCAL,
        window,
        Nanos::from_secs(1),
    )
}

fn answer_to(req: &Mad, status: u16) -> Mad {
    let mut m = SaMad::parse(req).unwrap();
    m.header.mad.method = m.header.mad.method.response();
    if m.header.mad.method == Method::SET.response() {
        m.header.mad.method = Method::GET_RESP;
    }
    m.header.mad.status = Status(status);
    m.to_bytes()
}

fn join(l: &mut IbLink, now: Nanos, stats: &mut CtrlStats, mgid: Gid) -> Option<Tid> {
    let req = JoinRequest {
        mgid,
        kind: GroupKind::Broadcast,
        pkey: PKey::DEFAULT,
        bcast_record: None,
    };
    l.start_join(now, &req, stats).map(|(t, _)| t)
}

const MGID: Gid = Gid([
    0xff, 0x12, 0x40, 0x1b, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0xe0, 0, 0, 1,
]);

fn bcast_record() -> mcmember::Repr {
    mcmember::Repr {
        qkey: QKey(0x0B1B),
        mlid: Lid(0xC000),
        mtu: 4,
        tclass: 3,
        rate: Rate::GBPS_40,
        sl: 2,
        flow_label: 0x12345,
        hop_limit: 7,
        ..mcmember::Repr::default()
    }
}

#[test]
fn answers_matched_by_tid_and_odd_ones_counted() {
    let fake = Fake::default();
    let mut l = link(&fake, 2);
    let mut stats = CtrlStats::default();
    let mgid = ipoib::broadcast_mgid(PKey::DEFAULT);
    let t1 = join(&mut l, Nanos::ZERO, &mut stats, mgid).unwrap();
    let _t2 = join(&mut l, Nanos::ZERO, &mut stats, mgid).unwrap();
    assert!(
        join(&mut l, Nanos::ZERO, &mut stats, mgid).is_none(),
        "window of 2"
    );
    assert_eq!(stats.sa_window_full, 1);

    let req1 = fake.sent.lock().unwrap()[0];
    let ok = answer_to(&req1, 0);
    let mut unknown = SaMad::parse(&ok).unwrap();
    unknown.header.mad.transaction_id = 0xdead;
    {
        let mut inbox = fake.inbox.lock().unwrap();
        inbox.push_back(ok);
        inbox.push_back(ok); // duplicate
        inbox.push_back(unknown.to_bytes());
        inbox.push_back([0xff; 256]); // garbage
        inbox.push_back(req1); // a request, not an answer
    }
    let mut out = Vec::new();
    l.poll(Nanos::ZERO, &mut stats, &mut out);
    assert_eq!(out.len(), 1);
    assert!(matches!(out[0], LinkEvent::Joined { tid, .. } if tid == t1));
    assert_eq!(stats.sa_duplicate_answers, 1);
    assert_eq!(stats.sa_unknown_answers, 1);
    assert_eq!(stats.sa_malformed, 2);

    // The second times out; its late answer is counted and ignored.
    out.clear();
    l.poll(Nanos::from_secs(1), &mut stats, &mut out);
    assert!(matches!(out[0], LinkEvent::Timeout { .. }));
    let req2 = fake.sent.lock().unwrap()[1];
    fake.inbox.lock().unwrap().push_back(answer_to(&req2, 0));
    out.clear();
    l.poll(Nanos::from_secs(2), &mut stats, &mut out);
    assert!(out.is_empty());
    assert_eq!(stats.sa_late_answers, 1);
    assert_eq!(l.txns().in_flight(), 0);
}

#[test]
fn answers_match_on_the_low_32_bits_whatever_the_transport_wrote_above() {
    let fake = Fake::default();
    let mut l = link(&fake, 4);
    let mut stats = CtrlStats::default();
    let mgid = ipoib::broadcast_mgid(PKey::DEFAULT);
    let t = join(&mut l, Nanos::ZERO, &mut stats, mgid).unwrap();
    let req = fake.sent.lock().unwrap()[0];
    let sent = SaMad::parse(&req).unwrap().header.mad.transaction_id;
    assert_eq!(
        sent >> 32,
        0,
        "the client leaves bits 32..63 to the transport"
    );
    assert_eq!(sent as u32, t);
    // umad writes its agent id into bits 32..63; the answer echoes it.
    let mut ans = SaMad::parse(&answer_to(&req, 0)).unwrap();
    ans.header.mad.transaction_id |= 0x0003_0017_0000_0000;
    // Same high bits, another low half: not ours.
    let mut other = ans;
    other.header.mad.transaction_id ^= 0x8000;
    fake.inbox.lock().unwrap().push_back(other.to_bytes());
    fake.inbox.lock().unwrap().push_back(ans.to_bytes());
    let mut out = Vec::new();
    l.poll(Nanos::ZERO, &mut stats, &mut out);
    assert_eq!(out.len(), 1);
    assert!(matches!(out[0], LinkEvent::Joined { tid, .. } if tid == t));
    assert_eq!(stats.sa_unknown_answers, 1);
}

#[test]
fn error_status_is_a_refusal() {
    let fake = Fake::default();
    let mut l = link(&fake, 64);
    let mut stats = CtrlStats::default();
    let mgid = ipoib::broadcast_mgid(PKey::DEFAULT);
    join(&mut l, Nanos::ZERO, &mut stats, mgid).unwrap();
    let req = fake.sent.lock().unwrap()[0];
    fake.inbox
        .lock()
        .unwrap()
        .push_back(answer_to(&req, 0x0100));
    let mut out = Vec::new();
    l.poll(Nanos::ZERO, &mut stats, &mut out);
    assert!(matches!(out[0], LinkEvent::JoinRefused { .. }));
    assert_eq!(stats.sa_error_answers, 1);
}

/// A GetTableResp to `req` holding `records`, then `tail` bytes of garbage where a
/// transport left the buffer undefined.
fn table_answer(req: &Mad, records: &[mcmember::Repr], tail: u8) -> Mad {
    let mut out = *req;
    out.fill(tail);
    out[..wsa::DATA_OFFSET].copy_from_slice(&req[..wsa::DATA_OFFSET]);
    let mut p = wsa::Packet::new_unchecked(&mut out[..]);
    p.mad_mut().set_method(Method::GET_TABLE_RESP);
    p.set_attribute_offset((mcmember::RECORD_SIZE / 8) as u16);
    for (i, r) in records.iter().enumerate() {
        let at = i * mcmember::RECORD_SIZE;
        r.emit(&mut mcmember::Packet::new_unchecked(
            &mut p.data_mut()[at..at + mcmember::RECORD_SIZE],
        ));
    }
    out
}

#[test]
fn a_listing_asks_for_the_ports_memberships_in_its_partition_and_reads_the_table() {
    let fake = Fake::default();
    let mut l = link(&fake, 4);
    let mut stats = CtrlStats::default();
    let ListStart::Started(tid) = l.start_list(Nanos::ZERO, PKey::DEFAULT, &mut stats) else {
        panic!("a listing starts");
    };
    let req = fake.sent.lock().unwrap()[0];
    let m = SaMad::parse(&req).unwrap();
    assert_eq!(m.header.mad.method, Method::GET_TABLE);
    assert_eq!(m.header.component_mask, mcm::PORT_GID | mcm::PKEY);
    let Attribute::McMember(q) = m.attribute else {
        panic!("an MCMemberRecord")
    };
    assert_eq!((q.port_gid, q.pkey), (attr().gid, PKey::DEFAULT));

    // Two records as OpenSM answers an untrusted request (PortGID and JoinState zero),
    // then garbage: only the records count.
    let rec = |mgid| mcmember::Repr {
        mgid,
        pkey: PKey::DEFAULT,
        ..bcast_record()
    };
    let g1 = ipoib::broadcast_mgid(PKey::DEFAULT);
    let ans = table_answer(&req, &[rec(MGID), rec(g1)], 0xA5);
    fake.inbox.lock().unwrap().push_back(ans);
    let mut out = Vec::new();
    l.poll(Nanos::ZERO, &mut stats, &mut out);
    let [LinkEvent::Memberships { tid: t, found }] = &out[..] else {
        panic!("{out:?}");
    };
    assert_eq!((*t, found.as_slice()), (tid, &[MGID, g1][..]));
    assert_eq!(stats.sa_lists_sent, 1);

    // No records at all: an empty listing, whichever way the SA says it.
    let ListStart::Started(_) = l.start_list(Nanos::ZERO, PKey::DEFAULT, &mut stats) else {
        panic!("a second listing starts");
    };
    let req = fake.sent.lock().unwrap()[1];
    fake.inbox
        .lock()
        .unwrap()
        .push_back(answer_to(&req, Status::ERR_NO_RECORDS.0));
    out.clear();
    l.poll(Nanos::ZERO, &mut stats, &mut out);
    assert!(
        matches!(&out[..], [LinkEvent::Memberships { found, .. }] if found.as_slice().is_empty())
    );
}

#[test]
fn a_leave_refused_as_not_held_is_done_any_other_refusal_is_not() {
    let fake = Fake::default();
    let mut l = link(&fake, 4);
    let mut stats = CtrlStats::default();
    for status in [0, Status::ERR_REQ_INVALID.0, Status::ERR_NO_RESOURCES.0] {
        let (tid, _) = l
            .start_leave(Nanos::ZERO, MGID, JoinState::FULL_MEMBER, &mut stats)
            .unwrap();
        let req = *fake.sent.lock().unwrap().last().unwrap();
        assert_eq!(
            SaMad::parse(&req).unwrap().header.component_mask,
            mcm::MGID | mcm::PORT_GID | mcm::JOIN_STATE
        );
        fake.inbox
            .lock()
            .unwrap()
            .push_back(answer_to(&req, status));
        let mut out = Vec::new();
        l.poll(Nanos::ZERO, &mut stats, &mut out);
        match (&out[..], status) {
            ([LinkEvent::Left { tid: t, mgid }], 0 | 0x0200) => {
                assert_eq!((*t, *mgid), (tid, MGID))
            }
            ([LinkEvent::LeaveRefused { status: s, .. }], 0x0100) => assert_eq!(s.0, status),
            other => panic!("status {status:#x}: {other:?}"),
        }
    }
}

#[test]
fn the_broadcast_join_names_only_what_ipoib_names() {
    let port = Gid::new(Gid::DEFAULT_SUBNET_PREFIX, 9);
    let req = JoinRequest {
        mgid: MGID,
        kind: GroupKind::Broadcast,
        pkey: PKey::DEFAULT,
        bcast_record: None,
    };
    let (mask, rec) = join_request(&req, port).unwrap();
    assert_eq!(mask, sa::broadcast_join_mask());
    assert_eq!(
        mask,
        mcm::MGID | mcm::PORT_GID | mcm::PKEY | mcm::JOIN_STATE
    );
    assert_eq!(
        (rec.mgid, rec.port_gid, rec.pkey),
        (MGID, port, PKey::DEFAULT)
    );
    assert_eq!(rec.join_state, JoinState::FULL_MEMBER);
    assert_eq!(rec.qkey, QKey(0));
}

#[test]
fn other_joins_copy_the_broadcast_groups_parameters() {
    let port = Gid::new(Gid::DEFAULT_SUBNET_PREFIX, 9);
    let mut req = JoinRequest {
        mgid: MGID,
        kind: GroupKind::Full,
        pkey: PKey::DEFAULT,
        bcast_record: None,
    };
    // DESIGN rule 1: no other join before the broadcast group's record exists.
    assert!(join_request(&req, port).is_none());
    let b = bcast_record();
    req.bcast_record = Some(&b);
    req.kind = GroupKind::SendOnly;
    let (mask, rec) = join_request(&req, port).unwrap();
    assert_eq!(mask, sa::group_join_mask());
    assert_eq!(rec.join_state, JoinState::SEND_ONLY_FULL_MEMBER);
    assert_eq!((rec.qkey, rec.tclass, rec.sl), (b.qkey, b.tclass, b.sl));
    assert_eq!((rec.flow_label, rec.hop_limit), (b.flow_label, b.hop_limit));
    assert_eq!((rec.mtu_selector, rec.mtu), (Selector::Exactly, b.mtu));
    assert_eq!((rec.rate_selector, rec.rate), (Selector::Exactly, b.rate));
    // The MLID is the SA's to choose.
    assert_eq!(rec.mlid, Lid(0));
    req.kind = GroupKind::Full;
    let (_, full) = join_request(&req, port).unwrap();
    assert_eq!(full.join_state, JoinState::FULL_MEMBER);
}

#[test]
fn a_groups_address_handle_routes_to_its_mlid_with_a_grh_to_its_mgid() {
    let rec = mcmember::Repr {
        mgid: MGID,
        ..bcast_record()
    };
    let ah = mcast_ah_attr(&rec);
    assert_eq!(
        (ah.dlid, ah.sl, ah.static_rate),
        (rec.mlid, rec.sl, rec.rate)
    );
    let grh = ah.grh.expect("multicast is globally routed");
    assert_eq!(grh.dgid, MGID);
    assert_eq!(
        (grh.flow_label, grh.hop_limit, grh.traffic_class),
        (rec.flow_label, rec.hop_limit, rec.tclass)
    );
}
