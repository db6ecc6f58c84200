//! Multicast: attach, detach and the self-loopback, per the caps.

use ibpoll_dev::{AddressHandle, RxQueue, TxDst, UdQp};
use ibpoll_mem::{Mbuf, Mempool, MBUF_F_GRH, MBUF_F_MCAST};
use ibpoll_wire::{grh, Qpn};

use super::kit::{self, Sender, Side};
use super::{Fixture, Group};

/// The fixture's group, or `None` (and a note on stderr) when it has none.
fn group_of<F: Fixture + ?Sized>(f: &F, test: &str) -> Option<Group> {
    let g = f.group();
    if g.is_none() {
        eprintln!("{test}: SKIPPED: the fixture offers no multicast group");
    }
    g
}

/// A QP in the group's partition, with the group's Q_Key, attached to it.
fn member(side: &Side, pool: &Mempool, g: &Group, pkey_index: u16, block: bool) -> UdQp {
    let mut cfg = Side::qp_config(pool, pkey_index, 64);
    cfg.qkey = g.qkey;
    cfg.block_self_mcast_lb = block;
    let qp = side.qp(&cfg);
    side.port
        .attach_mcast(qp.qpn, &g.mgid, g.mlid)
        .unwrap_or_else(|e| panic!("attach of QP {} to {}: {e}", qp.qpn, g.mgid));
    qp
}

/// What a QP received, as (sequence number, source QPN), after checking each copy is
/// flagged multicast with a GRH naming the group.
fn copies<F: Fixture + ?Sized>(
    rx: &mut dyn RxQueue,
    want: usize,
    f: &F,
    g: &Group,
) -> Vec<(u32, u32)> {
    let wait = if want == 0 { f.quiet() } else { f.patience() };
    let got: Vec<Mbuf> = kit::recv(rx, want, wait);
    got.iter()
        .map(|m| {
            let flags = m.meta().flags;
            assert_eq!(
                flags & (MBUF_F_GRH | MBUF_F_MCAST),
                MBUF_F_GRH | MBUF_F_MCAST
            );
            let off = m.data_offset();
            let h = grh::Packet::new_checked(&m.buf()[off - grh::HEADER_LEN..off])
                .and_then(|p| grh::Repr::parse(&p))
                .expect("a GRH before a multicast packet");
            assert_eq!(h.dgid, g.mgid, "the GRH's DGID is the group");
            let (seq, _) = kit::seq_tag(m).expect("a test packet");
            (seq, m.meta().src_qpn)
        })
        .collect()
}

/// The group's partition's P_Key index on each port.
fn partition(a: &Side, b: &Side, g: &Group) -> (u16, u16) {
    match (a.attr.pkey_index(g.pkey), b.attr.pkey_index(g.pkey)) {
        (Some(i), Some(j)) => (i, j),
        _ => panic!("the group's partition {} is not on both ports", g.pkey),
    }
}

fn group_ah(side: &Side, g: &Group) -> AddressHandle {
    side.port
        .create_ah(&g.ah)
        .unwrap_or_else(|e| panic!("create_ah for group {}: {e}", g.mgid))
}

/// A send to the group reaches every attached QP once, the other port's and the
/// sender's own port's, the sender itself included (an InfiniBand HCA loops multicast
/// back unless told not to), flagged multicast with the group's GRH. A detached QP gets
/// nothing more; detaching twice is an error.
pub fn mcast_attach_and_detach<F: Fixture + ?Sized>(f: &F) {
    let Some(g) = group_of(f, "mcast_attach_and_detach") else {
        return;
    };
    let [a, b] = Side::both(f);
    let (pi_a, pi_b) = partition(&a, &b, &g);
    let pool = f.pool("conf-mcast", 512);
    let a1 = member(&a, &pool, &g, pi_a, false);
    let a2 = member(&a, &pool, &g, pi_a, false);
    let b1 = member(&b, &pool, &g, pi_b, false);
    let (mut a2_rx, mut b1_rx) = (a2.rx, b1.rx);
    let ah = group_ah(&a, &g);
    let to_group = TxDst {
        ah,
        qpn: Qpn::MULTICAST,
        qkey: g.qkey,
    };
    let UdQp {
        qpn: a1_qpn,
        rx: mut a1_rx,
        tx,
        ..
    } = a1;
    let mut s = Sender::new(tx);
    s.send_completed(kit::numbered(&pool, 0, 3, 5, to_group), f.patience());
    let want: Vec<(u32, u32)> = (0..3).map(|i| (i, a1_qpn.get())).collect();
    assert_eq!(
        copies(&mut *b1_rx[0], 3, f, &g),
        want,
        "the other port's member"
    );
    assert_eq!(
        copies(&mut *a2_rx[0], 3, f, &g),
        want,
        "the sender's port's other member"
    );
    assert_eq!(
        copies(&mut *a1_rx[0], 3, f, &g),
        want,
        "the sender itself (loopback)"
    );

    b.port
        .detach_mcast(b1.qpn, &g.mgid, g.mlid)
        .expect("detach");
    assert!(
        b.port.detach_mcast(b1.qpn, &g.mgid, g.mlid).is_err(),
        "detaching twice is an error"
    );
    s.send_completed(kit::numbered(&pool, 3, 1, 5, to_group), f.patience());
    assert_eq!(
        copies(&mut *a2_rx[0], 1, f, &g).len(),
        1,
        "a2 is still attached"
    );
    assert!(
        copies(&mut *b1_rx[0], 0, f, &g).is_empty(),
        "b1 was detached"
    );
    s.wait_completed(f.patience());
    drop(s);
    // SAFETY: every send naming `ah` completed.
    unsafe { kit::destroy_ah(&*a.port, ah) };
}

/// A QP that asks the HCA to block its own multicast loopback gets no copy of what it
/// sends, while the other port's members do; a device without the capability refuses
/// the request (with a `QpConfig` error naming `block_self_mcast_lb`).
pub fn mcast_self_loopback_follows_the_caps<F: Fixture + ?Sized>(f: &F) {
    let Some(g) = group_of(f, "mcast_self_loopback_follows_the_caps") else {
        return;
    };
    let [a, b] = Side::both(f);
    let (pi_a, pi_b) = partition(&a, &b, &g);
    let pool = f.pool("conf-mcast-lb", 512);
    if !a.port.ud_caps().block_self_mcast_lb {
        let mut cfg = Side::qp_config(&pool, pi_a, 64);
        cfg.block_self_mcast_lb = true;
        match a.port.create_ud_qp(&cfg) {
            Err(ibpoll_dev::Error::QpConfig { field, .. }) => {
                assert_eq!(field, "block_self_mcast_lb");
            }
            other => panic!("loopback blocking without the cap: {other:?}"),
        }
        return;
    }
    let UdQp { mut rx, tx, .. } = member(&a, &pool, &g, pi_a, true);
    let mut b1 = member(&b, &pool, &g, pi_b, false);
    let ah = group_ah(&a, &g);
    let mut s = Sender::new(tx);
    let to_group = TxDst {
        ah,
        qpn: Qpn::MULTICAST,
        qkey: g.qkey,
    };
    s.send_completed(kit::numbered(&pool, 0, 2, 6, to_group), f.patience());
    assert_eq!(
        copies(&mut *b1.rx[0], 2, f, &g).len(),
        2,
        "the other port receives"
    );
    assert!(
        copies(&mut *rx[0], 0, f, &g).is_empty(),
        "no copy to the blocking sender"
    );
    s.wait_completed(f.patience());
    drop(s);
    // SAFETY: every send naming `ah` completed.
    unsafe { kit::destroy_ah(&*a.port, ah) };
}
