//! Parking: a P_Key index move of a parked QP.

use ibpoll_dev::{Parked, Port, UdQp};

use super::kit::{self, Sender, Side};
use super::Fixture;

/// Moves the parked `qp` to `pkey_index` and returns how many buffers came back.
fn park_and_move(port: &dyn Port, qp: &mut UdQp, pkey_index: u16) -> usize {
    // SAFETY: `&mut qp` holds every queue of the QP, and none is called while the token
    // lives (it is dropped at the end of this function).
    let parked = unsafe { Parked::assume(qp.qpn) };
    port.move_qp_pkey_index(&parked, pkey_index)
        .unwrap_or_else(|e| panic!("move of QP {} to P_Key index {pkey_index}: {e}", qp.qpn))
}

/// Five packets wait, unpolled, in a QP's receive queue; the QP is parked and moved (to
/// the same P_Key index: through Reset): the move returns at least those five buffers
/// and counts what it returned in `RxCounters::flushed`; none of the five is received
/// after it; the QP still receives; every buffer is home once the QP is gone. Where the
/// ports share a second partition, a move there makes the QP receive that partition
/// only.
pub fn pkey_move_of_a_parked_qp_returns_its_buffers<F: Fixture + ?Sized>(f: &F) {
    let [a, b] = Side::both(f);
    let mut shared = kit::common_partitions(&a.attr, &b.attr);
    let (pi_a, pi_b) = shared.next().expect("a common partition");
    let second = shared.next();
    let (tx_pool, rx_pool) = (f.pool("conf-park-tx", 256), f.pool("conf-park-rx", 256));
    let qa = a.qp(&Side::qp_config(&tx_pool, pi_a, 32));
    let mut qb = b.qp(&Side::qp_config(&rx_pool, pi_b, 64));
    let ah = a.ah_to(&b, false);
    let mut s = Sender::new(qa.tx);
    s.send_completed(
        kit::numbered(&tx_pool, 0, 5, 1, kit::to(ah, qb.qpn)),
        f.patience(),
    );
    s.wait_completed(f.patience());
    // Give an asynchronous driver the time to land them.
    std::thread::sleep(f.quiet());

    let returned = park_and_move(&*b.port, &mut qb, pi_b);
    assert!(
        returned >= 5,
        "the move returned {returned} buffers; 5 were filled"
    );
    let flushed = qb.rx[0].counters().flushed.get();
    assert_eq!(
        flushed, returned as u64,
        "RxCounters::flushed counts what was returned"
    );
    let stale = kit::recv(&mut *qb.rx[0], 1, f.quiet());
    assert!(
        stale.is_empty(),
        "{} packets from before the move",
        stale.len()
    );

    s.send_completed(
        kit::numbered(&tx_pool, 5, 3, 1, kit::to(ah, qb.qpn)),
        f.patience(),
    );
    let got = kit::recv(&mut *qb.rx[0], 3, f.patience());
    let seqs: Vec<u32> = got
        .iter()
        .filter_map(|m| kit::seq_tag(m).map(|x| x.0))
        .collect();
    assert_eq!(seqs, [5, 6, 7], "the moved QP receives");
    drop(got);

    if let Some((pj_a, pj_b)) = second {
        park_and_move(&*b.port, &mut qb, pj_b);
        s.send_completed(
            kit::numbered(&tx_pool, 8, 1, 1, kit::to(ah, qb.qpn)),
            f.patience(),
        );
        let old = kit::recv(&mut *qb.rx[0], 1, f.quiet());
        assert!(old.is_empty(), "the old partition's packet was received");
        let qa2 = a.qp(&Side::qp_config(&tx_pool, pj_a, 32));
        let mut s2 = Sender::new(qa2.tx);
        s2.send_completed(
            kit::numbered(&tx_pool, 9, 1, 1, kit::to(ah, qb.qpn)),
            f.patience(),
        );
        let new = kit::recv(&mut *qb.rx[0], 1, f.patience());
        let seqs: Vec<u32> = new
            .iter()
            .filter_map(|m| kit::seq_tag(m).map(|x| x.0))
            .collect();
        assert_eq!(seqs, [9], "the new partition's packet");
        assert_eq!(new[0].meta().src_qpn, qa2.qpn.get());
        s2.wait_completed(f.patience());
    } else {
        eprintln!("the ports share one partition: the move to another was not tested");
    }
    s.wait_completed(f.patience());
    drop((s, qb));
    // SAFETY: every send naming `ah` completed, and the queues are gone.
    unsafe { kit::destroy_ah(&*a.port, ah) };
    assert_eq!(rx_pool.in_use(), 0, "every receive buffer is home");
}
