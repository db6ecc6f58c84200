//! The back-pressure wrapper: bursts taken k of n with the rest left in order, sends
//! held and completed later in order, a bounded depth, replay by seed, and the
//! address-handle checker catching an early `destroy_ah` and a send to a destroyed
//! handle.

mod common;

use std::sync::Arc;

use common::{to, two_ports, Host};
use ibpoll_dev::{Device, Error, Port};
use ibpoll_devtest::{AhViolations, Backpressure, BackpressureConfig};
use ibpoll_pmd_sim::{FabricConfig, SimFabric};

/// Host a behind a back-pressure wrapper made with `cfg`, host b plain.
fn pair(cfg: BackpressureConfig) -> (SimFabric, Arc<Backpressure>, Host, Host) {
    let (fabric, devs, _) = two_ports(FabricConfig::default(), |p| p);
    let bp = Backpressure::new(devs[0].open_port(1).unwrap(), cfg);
    let a = Host::new(bp.clone(), "a", 512, 256);
    let b = Host::new(devs[1].open_port(1).unwrap(), "b", 512, 256);
    (fabric, bp, a, b)
}

#[test]
fn a_burst_takes_k_of_n_and_leaves_the_rest_in_order() {
    let (_f, bp, mut a, mut b) = pair(BackpressureConfig::new(1).accept(5, 5).delay(0, 0));
    let ah = a.ah_to(&b, false);
    let (mut pkts, mut dst) = a.burst(0..12, to(ah, &b));
    let kept: Vec<usize> = pkts.as_slice().iter().map(|m| m.buf_addr()).collect();
    for (round, want_left) in [(0, 7), (1, 2), (2, 0)] {
        let n = a.tx.tx_burst(&mut pkts, &dst);
        assert_eq!(n, 12 - want_left - 5 * round, "round {round}");
        dst.drain(..n);
        let left: Vec<usize> = pkts.as_slice().iter().map(|m| m.buf_addr()).collect();
        assert_eq!(
            left,
            kept[12 - want_left..],
            "the rest, in order, still the caller's"
        );
    }
    assert_eq!(a.tx.completed(), 12);
    assert_eq!(b.seqs(), (0..12).collect::<Vec<_>>());
    let st = bp.stats();
    assert_eq!((st.offered, st.taken, st.completed), (12 + 7 + 2, 12, 12));
}

#[test]
fn sends_complete_later_in_order_and_the_wrapper_holds_their_buffers() {
    let (_f, bp, mut a, mut b) = pair(BackpressureConfig::new(2).accept(32, 32).delay(2, 12));
    let ah = a.ah_to(&b, false);
    let (mut pkts, dst) = a.burst(0..20, to(ah, &b));
    assert_eq!(a.tx.tx_burst(&mut pkts, &dst), 20);
    let mut seen = Vec::new();
    let mut counts = Vec::new();
    for _ in 0..40 {
        let c = a.tx.completed();
        counts.push(c);
        // The driver (the simulator) frees a buffer when it sends it: the ones still
        // out are the ones the wrapper holds, not yet completed.
        assert_eq!(a.pool.in_use() as u64, 20 - c, "held until completed");
        seen.extend(b.seqs());
        assert_eq!(
            seen.len() as u64,
            c,
            "a completed send has left, no other has"
        );
    }
    assert!(
        counts.windows(2).all(|w| w[0] <= w[1]),
        "monotonic: {counts:?}"
    );
    assert_eq!(counts[0], 0, "nothing before its delay: {counts:?}");
    assert!(
        counts.iter().any(|&c| c > 0 && c < 20),
        "completions spread over several polls: {counts:?}"
    );
    assert_eq!(counts.last(), Some(&20));
    assert_eq!(seen, (0..20).collect::<Vec<_>>(), "in posting order");
    assert_eq!(bp.violations(), AhViolations::default());
}

#[test]
fn a_full_queue_takes_nothing_until_sends_complete() {
    let cfg = BackpressureConfig::new(3)
        .accept(32, 32)
        .depth(8)
        .delay(5, 5);
    let (_f, _bp, mut a, b) = pair(cfg);
    let ah = a.ah_to(&b, false);
    let (mut pkts, mut dst) = a.burst(0..20, to(ah, &b));
    assert_eq!(
        a.tx.tx_burst(&mut pkts, &dst),
        8,
        "the depth bounds what it takes"
    );
    dst.drain(..8);
    assert_eq!(a.tx.tx_burst(&mut pkts, &dst), 0, "full");
    assert_eq!(pkts.len(), 12);
    let mut polls = 0;
    while a.tx.completed() < 8 {
        polls += 1;
        assert!(polls < 10, "the delay is 5 ticks");
    }
    // Taken at tick 1, due at tick 6; the refused burst was tick 2, the polls ticks 3
    // to 6 (the last one completes them).
    assert_eq!(
        polls, 3,
        "complete five ticks after the burst that took them"
    );
    assert_eq!(a.tx.tx_burst(&mut pkts, &dst), 8, "room again");
}

/// The number taken by each of 30 bursts of 10 and the completion count after each.
fn trace(seed: u64) -> Vec<(usize, u64)> {
    let (_f, _bp, mut a, b) = pair(BackpressureConfig::new(seed).accept(0, 10).delay(0, 6));
    let ah = a.ah_to(&b, false);
    (0..30)
        .map(|i| {
            let (mut pkts, dst) = a.burst(i * 10..i * 10 + 10, to(ah, &b));
            let n = a.tx.tx_burst(&mut pkts, &dst);
            (n, a.tx.completed())
        })
        .collect()
}

#[test]
fn a_seed_replays_exactly_and_another_seed_differs() {
    let first = trace(42);
    assert_eq!(first, trace(42));
    assert_ne!(first, trace(43));
    let taken: Vec<usize> = first.iter().map(|t| t.0).collect();
    assert!(taken.iter().all(|&n| n <= 10), "{taken:?}");
    let distinct: std::collections::BTreeSet<_> = taken.iter().collect();
    assert!(distinct.len() >= 5, "the part taken varies: {taken:?}");
}

#[test]
fn destroying_an_ah_before_its_sends_completed_is_a_violation_and_is_deferred() {
    let (f, bp, mut a, mut b) = pair(BackpressureConfig::new(4).accept(32, 32).delay(3, 3));
    let ah = a.ah_to(&b, false);
    let (mut pkts, dst) = a.burst(0..2, to(ah, &b));
    assert_eq!(a.tx.tx_burst(&mut pkts, &dst), 2);
    assert_eq!(bp.outstanding(ah), 2);
    // SAFETY: deliberately breaks the precondition (two sends name `ah` and have not
    // completed): the wrapper must count it and keep the driver from seeing it.
    unsafe { bp.destroy_ah(ah) }.expect("deferred, not refused");
    let v = bp.violations();
    assert_eq!((v.destroyed_in_flight, v.sent_to_destroyed), (1, 0));
    // The sends still go out with the handle alive, and then it is destroyed.
    while a.tx.completed() < 2 {}
    assert_eq!(b.seqs(), [0, 1]);
    assert_eq!(
        f.stats().drop_count("bad_ah"),
        0,
        "the driver never saw a dead handle"
    );
    assert_eq!(bp.outstanding(ah), 0);
    // SAFETY: nothing names `ah`; the driver destroyed it when the last send completed,
    // so this second destroy must be refused by it.
    let again = unsafe { bp.destroy_ah(ah) };
    assert!(matches!(again, Err(Error::NoSuchAh(_))), "{again:?}");

    // A send naming the destroyed handle: counted, freed, completed in order, and the
    // driver never sees it.
    let (mut pkts, dst) = a.burst(2..3, to(ah, &b));
    assert_eq!(a.tx.tx_burst(&mut pkts, &dst), 1);
    while a.tx.completed() < 3 {}
    assert_eq!(bp.violations().sent_to_destroyed, 1);
    assert_eq!(bp.violations().total(), 2);
    assert!(b.seqs().is_empty());
    assert_eq!(f.stats().drop_count("bad_ah"), 0);
    assert_eq!(a.pool.in_use(), 0, "its buffer went home");
}

#[test]
fn destroying_an_ah_after_its_sends_completed_is_no_violation() {
    let (_f, bp, mut a, mut b) = pair(BackpressureConfig::new(5).accept(1, 3).delay(0, 3));
    let ah = a.ah_to(&b, false);
    let (mut pkts, mut dst) = a.burst(0..50, to(ah, &b));
    while !pkts.is_empty() {
        let n = a.tx.tx_burst(&mut pkts, &dst);
        dst.drain(..n);
    }
    while a.tx.completed() < 50 {}
    assert_eq!(b.seqs().len(), 50);
    // SAFETY: all 50 sends completed; none is posted after.
    unsafe { bp.destroy_ah(ah) }.expect("destroy");
    assert_eq!(bp.violations().total(), 0);
}

#[test]
fn a_queue_dropped_with_held_sends_releases_their_handles() {
    let (f, bp, mut a, b) = pair(BackpressureConfig::new(6).accept(32, 32).delay(50, 50));
    let ah = a.ah_to(&b, false);
    let (mut pkts, dst) = a.burst(0..4, to(ah, &b));
    assert_eq!(a.tx.tx_burst(&mut pkts, &dst), 4);
    // SAFETY: deliberately early (4 sends held): deferred and counted.
    unsafe { bp.destroy_ah(ah) }.unwrap();
    let Host { tx, pool, .. } = a;
    drop(tx);
    assert_eq!(bp.outstanding(ah), 0, "the queue's sends went with it");
    assert_eq!(pool.in_use(), 0, "and their buffers");
    // The deferred destroy ran when the queue went: the driver no longer knows it.
    // SAFETY: nothing names `ah` any more.
    let again = unsafe { bp.destroy_ah(ah) };
    assert!(matches!(again, Err(Error::NoSuchAh(_))), "{again:?}");
    assert_eq!(f.stats().sent, 0);
    assert_eq!(bp.violations().destroyed_in_flight, 1);
}
