//! Helpers for the SA's unit tests: a small fabric of hosts and request builders.

use ibpoll_wire::mad::{Method, Status, MAD_LEN};
use ibpoll_wire::mcmember::{self, mask as mcm, JoinState};
use ibpoll_wire::path_record;
use ibpoll_wire::sa::{Attribute, ComponentMask, SaMad, Selector};
use ibpoll_wire::{Gid, IbMtu, Lid, PKey, QKey, Rate};

use super::{PathEnd, Requester, SaConfig, SubnetAdmin};

pub(super) const PREFIX: u64 = Gid::DEFAULT_SUBNET_PREFIX;
pub(super) const BCAST: Gid = Gid([
    0xff, 0x12, 0x40, 0x1b, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff,
]);

pub(super) fn gid(n: u64) -> Gid {
    Gid::new(PREFIX, 0x0002_c903_0000_0000 + n)
}

pub(super) fn host(n: u64) -> Requester {
    Requester {
        port_gid: gid(n),
        lid: Lid(n as u16),
        pkeys: vec![PKey::DEFAULT],
    }
}

/// A fabric of hosts 1..=8, 4096 MTU and 40 Gb/s, in the default partition; host 7
/// has 1024 MTU and 10 Gb/s; host 8 is only in partition 0x8001.
pub(super) fn oracle(g: &Gid) -> Option<PathEnd> {
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

pub(super) fn sa() -> SubnetAdmin {
    SubnetAdmin::new(SaConfig::default())
}

/// What Linux IPoIB sends to join or create a non-broadcast group: the broadcast
/// group's parameters, MTU and rate "exactly" (ipoib_mcast_join).
pub(super) fn ipoib_rec(mgid: Gid, port: Gid, js: JoinState) -> (ComponentMask, mcmember::Repr) {
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

pub(super) fn mad(method: Method, mask: ComponentMask, rec: mcmember::Repr) -> [u8; MAD_LEN] {
    SaMad::request(
        method,
        0x1122_3344_5566_7788,
        mask,
        Attribute::McMember(rec),
    )
    .to_bytes()
}

pub(super) fn send(sa: &mut SubnetAdmin, from: u64, req: &[u8; MAD_LEN]) -> SaMad {
    let resp = sa.handle(req, &host(from), &oracle).expect("an answer");
    SaMad::parse(&resp).expect("a well-formed answer")
}

pub(super) fn status(m: &SaMad) -> Status {
    m.header.mad.status
}

pub(super) fn mcr(m: &SaMad) -> mcmember::Repr {
    match m.attribute {
        Attribute::McMember(r) => r,
        _ => panic!("not an MCMemberRecord"),
    }
}

pub(super) fn join(sa: &mut SubnetAdmin, from: u64, mgid: Gid, js: JoinState) -> SaMad {
    let (mask, rec) = ipoib_rec(mgid, gid(from), js);
    send(sa, from, &mad(Method::SET, mask, rec))
}

pub(super) fn leave(sa: &mut SubnetAdmin, from: u64, mgid: Gid, js: JoinState) -> SaMad {
    let rec = mcmember::Repr {
        mgid,
        port_gid: gid(from),
        join_state: js,
        ..mcmember::Repr::default()
    };
    send(sa, from, &mad(Method::DELETE, mcmember::JOIN_MASK, rec))
}

pub(super) fn ipv4_group(last: u8) -> Gid {
    // IPv4 224.0.0.last on partition 0xFFFF (RFC 4391 section 4).
    Gid([
        0xff, 0x12, 0x40, 0x1b, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0xe0, 0, 0, last,
    ])
}

pub(super) fn path_req(
    method: Method,
    mask: ComponentMask,
    pr: path_record::Repr,
) -> [u8; MAD_LEN] {
    SaMad::request(method, 42, mask, Attribute::PathRecord(pr)).to_bytes()
}

pub(super) fn pr(m: &SaMad) -> path_record::Repr {
    match m.attribute {
        Attribute::PathRecord(r) => r,
        _ => panic!("not a PathRecord"),
    }
}
