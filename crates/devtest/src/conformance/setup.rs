//! Set-up: capabilities, attributes, and the queues a QP comes with.

use std::collections::HashSet;

use ibpoll_dev::{LinkLayer, PortState};
use ibpoll_wire::Qpn;

use super::kit::{self, Sender, Side};
use super::Fixture;

/// The caps are possible, both ports are Active with distinct addresses (unless the
/// fixture's two sides are one port), the GID table starts with the port GID and holds
/// a GID at each side's source GID index, and the ports share a partition.
pub fn caps_and_attributes<F: Fixture + ?Sized>(f: &F) {
    let [a, b] = Side::both(f);
    for s in [&a, &b] {
        let caps = s.port.ud_caps();
        let n = s.attr.port_num;
        assert!(caps.rx_queues_per_qpn >= 1, "port {n}: {caps:?}");
        assert!(
            caps.max_wr >= 32,
            "port {n}: max_wr below the smallest ring: {caps:?}"
        );
        assert!(caps.max_qp >= 2, "port {n}: {caps:?}");
        assert_eq!(s.attr.state, PortState::Active, "port {n}");
        assert_eq!(s.port.port_num(), n, "port_num() and attr().port_num");
        assert_eq!(
            s.attr.gids.first(),
            Some(&s.attr.gid),
            "port {n}: GID index 0"
        );
        if s.attr.link_layer == LinkLayer::InfiniBand {
            assert!(s.attr.lid.is_unicast(), "port {n}: LID {:?}", s.attr.lid);
        }
    }
    if a.same_port(&b) {
        // One port for both sides (soft-RoCE on lo has one): QPs tell them apart.
        assert_eq!(a.attr.gid, b.attr.gid, "one port, one GID table");
    } else {
        assert_ne!(a.attr.gid, b.attr.gid, "the two ports have one GID");
        if a.attr.link_layer == LinkLayer::InfiniBand {
            assert_ne!(a.attr.lid, b.attr.lid, "the two ports have one LID");
        }
    }
    for s in [&a, &b] {
        assert_ne!(
            s.gid(),
            ibpoll_wire::Gid::default(),
            "port {}: the source GID index {} holds no GID",
            s.attr.port_num,
            s.sgid_index
        );
    }
    kit::common_partition(&a.attr, &b.attr);
}

/// A QP has one send queue sending as its QPN and as many receive queues as asked
/// (none for a send-only QP, whose sends still arrive); QPNs are distinct and never
/// QP0 or QP1; the caps' RSS, if any, gives that many receive queues.
pub fn qp_setup<F: Fixture + ?Sized>(f: &F) {
    let [a, b] = Side::both(f);
    let (pi_a, pi_b) = kit::common_partition(&a.attr, &b.attr);
    let pool = f.pool("conf-setup", 512);
    let mut qpns = HashSet::new();
    let mut keep = Vec::new();
    for _ in 0..3 {
        let qp = a.qp(&Side::qp_config(&pool, pi_a, 64));
        assert_eq!(qp.rx.len(), 1, "one receive queue");
        assert_eq!(qp.tx.src_qpn(), qp.qpn, "the send queue sends as its QP");
        assert!(qp.qpn != Qpn::SMI && qp.qpn != Qpn::GSI, "QPN {}", qp.qpn);
        assert!(qpns.insert(qp.qpn), "QPN {} handed out twice", qp.qpn);
        keep.push(qp);
    }

    let send_only = a.qp(&Side::qp_config(&pool, pi_a, 0));
    assert!(send_only.rx.is_empty(), "rx_ring_size 0: no receive queue");
    assert!(qpns.insert(send_only.qpn));
    let mut rx_qp = b.qp(&Side::qp_config(&pool, pi_b, 64));
    let ah = a.ah_to(&b, false);
    let mut s = Sender::new(send_only.tx);
    s.send_completed(
        kit::numbered(&pool, 0, 3, 1, kit::to(ah, rx_qp.qpn)),
        f.patience(),
    );
    let got = kit::recv(&mut *rx_qp.rx[0], 3, f.patience());
    assert_eq!(got.len(), 3, "a send-only QP's sends arrive");
    assert!(got.iter().all(|m| m.meta().src_qpn == send_only.qpn.get()));
    s.wait_completed(f.patience());

    let caps = a.port.ud_caps();
    if caps.rx_queues_per_qpn > 1 {
        let mut cfg = Side::qp_config(&pool, pi_a, 64);
        cfg.rx_queues = caps.rx_queues_per_qpn;
        let qp = a.qp(&cfg);
        assert_eq!(
            qp.rx.len(),
            usize::from(caps.rx_queues_per_qpn),
            "RSS queues"
        );
    }
    drop((got, keep, rx_qp));
    // SAFETY: every send naming `ah` completed above.
    unsafe { kit::destroy_ah(&*a.port, ah) };
}
