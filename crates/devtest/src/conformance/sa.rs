//! Joining a group at the subnet administrator through a port's own MAD channel, for
//! fixtures whose ports sit on a fabric with an SA (the simulator, OpenSM under ibsim):
//! the multicast tests need a group both ports are members of.

use std::time::{Duration, Instant};

use ibpoll_dev::{AhAttr, GrhAttr, MadAddr, Port};
use ibpoll_wire::mad::{Method, Status};
use ibpoll_wire::mcmember::{self, JoinState};
use ibpoll_wire::sa::{Attribute, SaMad};
use ibpoll_wire::{ipoib, PKey, QKey, Qpn};

use super::Group;

/// Where the subnet administrator answers, as a port sees it.
pub fn sa_addr(port: &dyn Port) -> MadAddr {
    let attr = port.attr();
    MadAddr {
        lid: attr.sm_lid,
        qpn: Qpn::GSI,
        qkey: QKey::GSI,
        sl: attr.sm_sl,
        pkey_index: 0,
    }
}

/// Joins the default partition's broadcast group as a full member through the port's
/// own MAD channel (MCMemberRecord Set, IPoIB's join mask) and returns the group.
///
/// # Panics
/// A fixture's set-up helper: it fails the test (panics, naming why) when the MAD
/// channel does not open, the SA does not answer within 2 s, or refuses the join.
pub fn join_broadcast(port: &dyn Port) -> Group {
    let mut mad = port.open_mad_channel().expect("QP1 opens");
    let rec = mcmember::Repr {
        mgid: ipoib::broadcast_mgid(PKey::DEFAULT),
        port_gid: port.attr().gid,
        pkey: PKey::DEFAULT,
        join_state: JoinState::FULL_MEMBER,
        ..mcmember::Repr::default()
    };
    let mask = mcmember::JOIN_MASK.union(mcmember::mask::PKEY);
    let tid = 0x7e57;
    let req = SaMad::request(Method::SET, tid, mask, Attribute::McMember(rec));
    mad.send(&req.to_bytes(), sa_addr(port))
        .expect("the SA is reachable");
    let deadline = Instant::now() + Duration::from_secs(2);
    let answer = loop {
        if let Some((bytes, _)) = mad.recv() {
            break SaMad::parse(&bytes).expect("a parseable answer");
        }
        assert!(Instant::now() < deadline, "no SA answer to the join");
        std::thread::yield_now();
    };
    assert_eq!(answer.header.mad.transaction_id, tid);
    assert_eq!(answer.header.mad.status, Status::OK, "the join was refused");
    let Attribute::McMember(g) = answer.attribute else {
        panic!("the join answer carries no MCMemberRecord");
    };
    let ah = AhAttr {
        dlid: g.mlid,
        sl: g.sl,
        src_path_bits: 0,
        static_rate: g.rate,
        grh: Some(GrhAttr {
            dgid: g.mgid,
            flow_label: g.flow_label,
            sgid_index: 0,
            hop_limit: g.hop_limit,
            traffic_class: g.tclass,
        }),
    };
    Group::new(g.mgid, g.mlid, g.qkey, g.pkey, ah)
}
