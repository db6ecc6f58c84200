//! Bad set-up input: each is a typed error naming what is wrong, and changes nothing.

use ibpoll_dev::{Error, Parked, UdQpConfig};
use ibpoll_wire::{QKey, Qpn};

use super::kit::{self, Sender, Side};
use super::Fixture;

/// Expects `create_ud_qp(cfg)` to fail with a `QpConfig` error naming `field`.
fn refused(side: &Side, cfg: &UdQpConfig, field: &str) {
    match side.port.create_ud_qp(cfg) {
        Err(e @ Error::QpConfig { field: f, .. }) => {
            assert_eq!(f, field, "{e}");
            assert!(
                e.to_string().contains(field),
                "the message names {field}: {e}"
            );
        }
        Err(e) => panic!("{field}: expected a QpConfig error, got {e}"),
        Ok(qp) => panic!("{field}: {cfg:?} was accepted as QP {}", qp.qpn),
    }
}

/// Receive rings that are not 0 or a power of two from 32 to `max_wr`, and send rings
/// that are not a power of two from 32 to `max_wr`, are refused naming the field.
pub fn bad_ring_sizes_are_refused<F: Fixture + ?Sized>(f: &F) {
    let [a, b] = Side::both(f);
    let (pi, _) = kit::common_partition(&a.attr, &b.attr);
    let pool = f.pool("conf-rings", 64);
    let max_wr = a.port.ud_caps().max_wr;
    let mut rx_bad = vec![100, 16, 1, 33];
    let mut tx_bad = vec![0, 33, 16, 1000];
    if let Some(over) = max_wr.checked_mul(2) {
        rx_bad.push(over);
        tx_bad.push(over);
    }
    for size in rx_bad {
        refused(&a, &Side::qp_config(&pool, pi, size), "rx_ring_size");
    }
    for size in tx_bad {
        let mut cfg = Side::qp_config(&pool, pi, 32);
        cfg.tx_ring_size = size;
        refused(&a, &cfg, "tx_ring_size");
    }
    let mut cfg = Side::qp_config(&pool, pi, 32);
    cfg.tx_ring_size = 32;
    drop(a.qp(&cfg));
    assert_eq!(pool.in_use(), 0, "refused and dropped QPs hold no buffer");
}

/// More receive queues than `rx_queues_per_qpn` (or none), and loopback blocking on a
/// device that cannot, are refused naming the field.
pub fn rx_queues_beyond_the_caps_are_refused<F: Fixture + ?Sized>(f: &F) {
    let [a, b] = Side::both(f);
    let (pi, _) = kit::common_partition(&a.attr, &b.attr);
    let pool = f.pool("conf-caps", 64);
    let caps = a.port.ud_caps();
    for n in [0, caps.rx_queues_per_qpn.saturating_add(1)] {
        let mut cfg = Side::qp_config(&pool, pi, 32);
        cfg.rx_queues = n;
        refused(&a, &cfg, "rx_queues");
    }
    if !caps.block_self_mcast_lb {
        let mut cfg = Side::qp_config(&pool, pi, 32);
        cfg.block_self_mcast_lb = true;
        refused(&a, &cfg, "block_self_mcast_lb");
    }
}

/// A P_Key index past the table (or on an invalid entry) is `PkeyIndex`, at creation
/// and in a move; the QP that was refused a move still receives.
pub fn invalid_pkey_index_is_refused<F: Fixture + ?Sized>(f: &F) {
    let [a, b] = Side::both(f);
    let (pi_a, pi_b) = kit::common_partition(&a.attr, &b.attr);
    let pool = f.pool("conf-pkey", 256);
    let mut bad: Vec<u16> = vec![b.attr.pkeys.len() as u16, u16::MAX];
    bad.extend(
        b.attr
            .pkeys
            .iter()
            .enumerate()
            .filter(|(_, p)| p.base() == 0)
            .map(|(i, _)| i as u16),
    );
    for &index in &bad {
        match b.port.create_ud_qp(&Side::qp_config(&pool, index, 32)) {
            Err(Error::PkeyIndex { index: i, .. }) => assert_eq!(i, index),
            other => panic!("create at P_Key index {index}: {other:?}"),
        }
    }
    let qa = a.qp(&Side::qp_config(&pool, pi_a, 32));
    let mut qb = b.qp(&Side::qp_config(&pool, pi_b, 32));
    for &index in &bad {
        // SAFETY: this test owns every queue of `qb` and calls none while parked.
        let parked = unsafe { Parked::assume(qb.qpn) };
        match b.port.move_qp_pkey_index(&parked, index) {
            Err(Error::PkeyIndex { index: i, .. }) => assert_eq!(i, index),
            other => panic!("move to P_Key index {index}: {other:?}"),
        }
    }
    let ah = a.ah_to(&b, false);
    let mut s = Sender::new(qa.tx);
    s.send_completed(
        kit::numbered(&pool, 0, 1, 1, kit::to(ah, qb.qpn)),
        f.patience(),
    );
    assert_eq!(
        kit::recv(&mut *qb.rx[0], 1, f.patience()).len(),
        1,
        "unchanged"
    );
    s.wait_completed(f.patience());
    drop(s);
    // SAFETY: every send naming `ah` completed.
    unsafe { kit::destroy_ah(&*a.port, ah) };
}

/// Control operations on a QPN the port does not have are refused: `set_qp_qkey` and
/// a P_Key move with `NoSuchQp`, a multicast attach with an error.
pub fn unknown_qpn_is_refused<F: Fixture + ?Sized>(f: &F) {
    let [a, b] = Side::both(f);
    let (pi, _) = kit::common_partition(&a.attr, &b.attr);
    // Drivers hand out QPNs from the bottom of the 24-bit space; this one is at the top.
    let unknown = Qpn::from_bits(0x00FF_FFF0);
    match a.port.set_qp_qkey(unknown, QKey(1)) {
        Err(Error::NoSuchQp { qpn, .. }) => assert_eq!(qpn, unknown),
        other => panic!("set_qp_qkey({unknown}): {other:?}"),
    }
    // SAFETY: no queue of `unknown` exists on this port, so none is called.
    let parked = unsafe { Parked::assume(unknown) };
    match a.port.move_qp_pkey_index(&parked, pi) {
        Err(Error::NoSuchQp { qpn, .. }) => assert_eq!(qpn, unknown),
        other => panic!("move_qp_pkey_index({unknown}): {other:?}"),
    }
    let mgid = ibpoll_wire::ipoib::broadcast_mgid(a.attr.pkeys[usize::from(pi)]);
    assert!(
        a.port
            .attach_mcast(unknown, &mgid, ibpoll_wire::Lid(0xC000))
            .is_err(),
        "attach of QPN {unknown}"
    );
}

/// Destroying an address handle twice is `NoSuchAh` with its value.
pub fn destroyed_ah_is_refused<F: Fixture + ?Sized>(f: &F) {
    let [a, b] = Side::both(f);
    let ah = a.ah_to(&b, false);
    // SAFETY: no send ever named `ah`.
    unsafe { kit::destroy_ah(&*a.port, ah) };
    // SAFETY: as above; a driver must recognise the stale handle without using it.
    match unsafe { a.port.destroy_ah(ah) } {
        Err(Error::NoSuchAh(raw)) => assert_eq!(raw, ah.raw()),
        other => panic!("second destroy_ah: {other:?}"),
    }
}
