//! Multicast replication by MLID: every attached QP of every receiving member port gets
//! a copy, the sender's own included (HCA loopback); send-only members send but do not
//! receive; detach and leave stop delivery.

mod common;

use common::{Host, QpOpts};
use ibpoll_pmd_sim::{FabricConfig, SimFabric};
use ibpoll_wire::mcmember::JoinState;
use ibpoll_wire::{Lid, Qpn};

fn fabric() -> SimFabric {
    SimFabric::new(FabricConfig::default())
}

/// (source QPN, source LID, body) of what a QP received.
fn received(qp: &mut common::Qp) -> Vec<(u32, u16, Vec<u8>)> {
    qp.recv()
        .iter()
        .map(|m| (m.meta().src_qpn, m.meta().slid, common::body(m).to_vec()))
        .collect()
}

#[test]
fn every_attached_qp_gets_one_copy_the_senders_own_included() {
    let f = fabric();
    let mut a = Host::new(&f, "a");
    let mut b = Host::new(&f, "b");
    let mut c = Host::new(&f, "c");
    let g = a.join_broadcast();
    b.join_broadcast();
    c.join_broadcast();
    let mut a2 = a.new_qp(&QpOpts::default());
    a.port.attach_mcast(a2.qpn, &g.mgid, g.mlid).unwrap();

    let ah = a.mcast_ah(&g);
    a.send_one(b"from a", ah, Qpn::MULTICAST);
    let from_a = vec![(a.qp.qpn.get(), a.lid().0, b"from a".to_vec())];
    assert_eq!(
        received(&mut a.qp),
        from_a,
        "HCA loopback to the sender's QP"
    );
    assert_eq!(received(&mut a2), from_a);
    assert_eq!(received(&mut b.qp), from_a);
    assert_eq!(received(&mut c.qp), from_a);
    assert_eq!(f.stats().delivered, 4);

    let ah = b.mcast_ah(&g);
    b.send_one(b"from b", ah, Qpn::MULTICAST);
    let from_b = vec![(b.qp.qpn.get(), b.lid().0, b"from b".to_vec())];
    for qp in [&mut a.qp, &mut a2, &mut b.qp, &mut c.qp] {
        assert_eq!(received(qp), from_b);
    }
    let s = f.stats();
    assert_eq!((s.sent, s.delivered, s.dropped()), (2, 8, 0));
}

#[test]
fn send_only_members_send_but_do_not_receive_and_non_members_receive() {
    let f = fabric();
    let mut a = Host::new(&f, "a");
    let mut sofm = Host::new(&f, "send-only-full");
    let mut sonm = Host::new(&f, "send-only-non");
    let mut nm = Host::new(&f, "non-member");
    let g = a.create_group([239, 1, 2, 3]);
    a.attach(&g);
    assert!(g.mlid.is_multicast());
    assert_ne!(g.mlid, Lid(0xC000), "the broadcast group has 0xC000");
    let j = sofm.join(g.mgid, JoinState::SEND_ONLY_FULL_MEMBER);
    assert_eq!(j.mlid, g.mlid);
    sonm.join(g.mgid, JoinState::SEND_ONLY_NON_MEMBER);
    nm.join(g.mgid, JoinState::NON_MEMBER);
    // Attached at the HCA, yet the switch must not forward to send-only ports.
    sofm.attach(&g);
    sonm.attach(&g);
    nm.attach(&g);

    let ah = a.mcast_ah(&g);
    a.send_one(b"a", ah, Qpn::MULTICAST);
    assert_eq!(received(&mut nm.qp).len(), 1, "a NonMember receives");
    assert!(received(&mut sofm.qp).is_empty());
    assert!(received(&mut sonm.qp).is_empty());
    assert_eq!(received(&mut a.qp).len(), 1);

    for (sender, tag) in [(&mut sofm, b"sofm"), (&mut sonm, b"sonm")] {
        let ah = sender.mcast_ah(&g);
        sender.send_one(tag, ah, Qpn::MULTICAST);
        let want = vec![(sender.qp.qpn.get(), sender.lid().0, tag.to_vec())];
        assert_eq!(received(&mut a.qp), want, "a send-only member may send");
        assert_eq!(received(&mut nm.qp), want);
    }
    assert!(received(&mut sofm.qp)
        .iter()
        .all(|(q, _, _)| *q == sofm.qp.qpn.get()));
    assert!(received(&mut sonm.qp)
        .iter()
        .all(|(q, _, _)| *q == sonm.qp.qpn.get()));
    assert_eq!(f.stats().dropped(), 0);
}

#[test]
fn detach_stops_delivery_to_that_qp() {
    let f = fabric();
    let mut a = Host::new(&f, "a");
    let mut b = Host::new(&f, "b");
    let g = a.join_broadcast();
    b.join_broadcast();
    let mut b2 = b.new_qp(&QpOpts::default());
    b.port.attach_mcast(b2.qpn, &g.mgid, g.mlid).unwrap();
    let ah = a.mcast_ah(&g);

    a.send_one(b"1", ah, Qpn::MULTICAST);
    assert_eq!(received(&mut b.qp).len(), 1);
    assert_eq!(received(&mut b2).len(), 1);

    b.port.detach_mcast(b.qp.qpn, &g.mgid, g.mlid).unwrap();
    assert!(
        b.port.detach_mcast(b.qp.qpn, &g.mgid, g.mlid).is_err(),
        "detaching twice is an error"
    );
    a.send_one(b"2", ah, Qpn::MULTICAST);
    assert!(received(&mut b.qp).is_empty(), "detached");
    assert_eq!(received(&mut b2).len(), 1, "the other QP stays attached");
    // b is still a member at the SA: detach is the HCA's business only.
    assert_eq!(b.memberships(&f), 1);
}

#[test]
fn the_last_full_member_leaving_deletes_the_group() {
    let f = fabric();
    let mut a = Host::new(&f, "a");
    let mut b = Host::new(&f, "b");
    let g = a.create_group([239, 0, 0, 7]);
    a.attach(&g);
    b.join(g.mgid, JoinState::NON_MEMBER);
    b.attach(&g);
    let members = f.with_sa(|sa| sa.group_by_mgid(&g.mgid).map(|v| v.members().count()));
    assert_eq!(members, Some(2));

    a.leave(g.mgid, JoinState::FULL_MEMBER);
    assert!(
        f.with_sa(|sa| sa.group_by_mgid(&g.mgid).is_none()),
        "a group dies with its last full member"
    );
    assert_eq!(b.memberships(&f), 0);
    // The switch forgot the MLID too.
    let ah = a.mcast_ah(&g);
    a.send_one(b"gone", ah, Qpn::MULTICAST);
    assert!(received(&mut b.qp).is_empty());
    assert_eq!(f.stats().drop_count("unknown_lid"), 1);

    // The broadcast group, by contrast, outlives its last member.
    let bc = a.join_broadcast();
    a.leave(bc.mgid, JoinState::FULL_MEMBER);
    let left = f.with_sa(|sa| sa.group_by_mgid(&bc.mgid).map(|v| v.members().count()));
    assert_eq!(left, Some(0));
}

#[test]
fn a_qp_that_blocks_self_loopback_sends_no_copy_to_its_own_port() {
    let f = SimFabric::new(FabricConfig::default().with_mcast_lb_block());
    let mut a = Host::new(&f, "a");
    let mut b = Host::new(&f, "b");
    assert!(a.port.ud_caps().block_self_mcast_lb);
    let g = a.join_broadcast();
    b.join_broadcast();
    // A second QP of a's, attached too, and a sender that blocks its own loopback.
    let mut a2 = a.new_qp(&QpOpts::default());
    a.port.attach_mcast(a2.qpn, &g.mgid, g.mlid).unwrap();
    let mut blocking = a.new_qp(&QpOpts {
        block_self_mcast_lb: true,
        ..QpOpts::default()
    });
    a.port.attach_mcast(blocking.qpn, &g.mgid, g.mlid).unwrap();

    let ah = a.mcast_ah(&g);
    let d = a.desc(b"blocked", ah, Qpn::MULTICAST, g.qkey);
    blocking.send(vec![d]);
    let want = vec![(blocking.qpn.get(), a.lid().0, b"blocked".to_vec())];
    assert_eq!(received(&mut b.qp), want, "the other port gets its copy");
    assert!(received(&mut blocking).is_empty(), "not the sender itself");
    assert!(
        received(&mut a.qp).is_empty(),
        "nor the sender's port's other QPs"
    );
    assert!(received(&mut a2).is_empty());
    assert_eq!(f.stats().delivered, 1);

    // A QP of the same port that does not block still loops back to all of them.
    a.send_one(b"looped", ah, Qpn::MULTICAST);
    assert_eq!(received(&mut blocking).len(), 1);
    assert_eq!(received(&mut a.qp).len(), 1);
    assert_eq!(received(&mut a2).len(), 1);
    assert_eq!(received(&mut b.qp).len(), 1);
    assert_eq!(f.stats().dropped(), 0);
}

#[test]
fn blocking_self_loopback_without_the_capability_is_refused() {
    let f = fabric();
    let a = Host::new(&f, "a");
    assert!(!a.port.ud_caps().block_self_mcast_lb, "off by default");
    let cfg = common::qp_config(
        &a.pool,
        &QpOpts {
            block_self_mcast_lb: true,
            ..QpOpts::default()
        },
    );
    match a.port.create_ud_qp(&cfg) {
        Err(e @ ibpoll_dev::Error::QpConfig { field, .. }) => {
            assert_eq!(field, "block_self_mcast_lb");
            assert!(e.to_string().contains("filter it in software"), "{e}");
        }
        other => panic!("{other:?}"),
    }
}
