//! The fault-injecting wrapper: send loss within its bounds and replayed by seed,
//! reordering without loss or duplicates, MAD loss and delay on virtual time, and
//! composition with back-pressure.

mod common;

use std::sync::Arc;

use common::{join_broadcast, to, two_ports, Host};
use ibpoll_dev::{Device, MadChannel, Nanos, Port, VirtualClock};
use ibpoll_devtest::conformance::sa_addr;
use ibpoll_devtest::{Backpressure, BackpressureConfig, FaultConfig, FaultInjector};
use ibpoll_pmd_sim::{FabricConfig, SimFabric};
use ibpoll_wire::mad::{Method, Status};
use ibpoll_wire::sa::SaMad;

/// Host a behind a fault injector made with `cfg` (and `wrap` around it), host b
/// plain.
fn pair(cfg: FaultConfig) -> (SimFabric, Arc<FaultInjector>, Host, Host) {
    let (fabric, devs, _) = two_ports(FabricConfig::default(), |p| p);
    let fi = FaultInjector::new(devs[0].open_port(1).unwrap(), cfg);
    let a = Host::new(fi.clone(), "a", 512, 256);
    let b = Host::new(devs[1].open_port(1).unwrap(), "b", 1024, 256);
    (fabric, fi, a, b)
}

/// Sends `count` numbered packets from a to b in bursts of 32 (retrying what a burst
/// leaves), draining b as it goes; the sequence numbers b got, in order.
fn numbered_run(a: &mut Host, b: &mut Host, count: u32) -> Vec<u32> {
    let ah = a.ah_to(b, false);
    let mut seqs = Vec::new();
    for first in (0..count).step_by(32) {
        let (mut pkts, mut dst) = a.burst(first..(first + 32).min(count), to(ah, b));
        while !pkts.is_empty() {
            let n = a.tx.tx_burst(&mut pkts, &dst);
            dst.drain(..n);
            a.tx.completed();
        }
        seqs.extend(b.seqs());
    }
    let mut polls = 0;
    while a.tx.completed() < u64::from(count) {
        polls += 1;
        assert!(polls < 1000, "every send completes, lost ones too");
        seqs.extend(b.seqs());
    }
    seqs.extend(b.seqs());
    assert_eq!(a.pool.in_use(), 0, "every sent buffer is home");
    seqs
}

fn lossy(seed: u64) -> (Vec<u32>, u64) {
    let cfg = FaultConfig::new(seed).packet_loss(0.3);
    let (_f, fi, mut a, mut b) = pair(cfg);
    let seqs = numbered_run(&mut a, &mut b, 2000);
    let st = fi.stats();
    assert_eq!(st.packets, 2000);
    (seqs, st.packets_lost)
}

#[test]
fn packet_loss_is_within_bounds_counted_and_replayed_by_seed() {
    let (first, lost) = lossy(42);
    let got = first.len() as u64;
    // 30% of 2000: the mean is 600 lost, the standard deviation about 20.5; 500..=700
    // is nearly five deviations either side.
    assert!(
        (500..=700).contains(&lost),
        "30% loss over 2000 lost {lost}"
    );
    assert_eq!(got + lost, 2000, "every loss is counted");
    assert!(
        first.windows(2).all(|w| w[0] < w[1]),
        "loss does not reorder"
    );
    let (again, _) = lossy(42);
    assert_eq!(first, again, "the same seed loses the same packets");
    let (other, _) = lossy(43);
    assert_ne!(first, other, "another seed loses others");
}

#[test]
fn packet_reorder_swaps_neighbours_without_losing_or_duplicating() {
    let cfg = FaultConfig::new(7).packet_reorder(0.2);
    let (_f, fi, mut a, mut b) = pair(cfg);
    let seqs = numbered_run(&mut a, &mut b, 1000);
    let inversions = seqs.windows(2).filter(|w| w[0] > w[1]).count() as u64;
    let st = fi.stats();
    assert!(st.packets_reordered > 100, "{st:?}");
    assert_eq!(
        inversions, st.packets_reordered,
        "each reorder is one swap of neighbours"
    );
    let mut sorted = seqs;
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        (0..1000).collect::<Vec<_>>(),
        "none lost or duplicated"
    );
}

#[test]
fn loss_under_back_pressure_still_accounts_for_every_send() {
    // FaultInjector over Backpressure over the simulator: the injector's queue fills
    // when the back-pressure queue refuses, and hands its sends on later.
    let (fabric, devs, _) = two_ports(FabricConfig::default(), |p| p);
    let bp = Backpressure::new(
        devs[0].open_port(1).unwrap(),
        BackpressureConfig::new(9).accept(0, 8).delay(0, 3),
    );
    let fi = FaultInjector::new(bp.clone(), FaultConfig::new(9).packet_loss(0.25));
    let mut a = Host::new(fi.clone(), "a", 512, 64);
    let mut b = Host::new(devs[1].open_port(1).unwrap(), "b", 1024, 256);
    let seqs = numbered_run(&mut a, &mut b, 1000);
    let st = fi.stats();
    assert_eq!(seqs.len() as u64 + st.packets_lost, 1000);
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order");
    assert!(
        bp.stats().taken < bp.stats().offered,
        "back-pressure happened"
    );
    assert_eq!(bp.violations().total(), 0);
    assert_eq!(fabric.stats().sent, 1000 - st.packets_lost);
}

/// Sends a broadcast join on `mad` from `port` and returns its TID.
fn send_join(port: &dyn Port, mad: &mut dyn MadChannel, tid: u64) {
    let (mask, attr) = {
        let rec = ibpoll_wire::mcmember::Repr {
            mgid: ibpoll_wire::ipoib::broadcast_mgid(ibpoll_wire::PKey::DEFAULT),
            port_gid: port.attr().gid,
            pkey: ibpoll_wire::PKey::DEFAULT,
            join_state: ibpoll_wire::mcmember::JoinState::FULL_MEMBER,
            ..Default::default()
        };
        (
            ibpoll_wire::mcmember::JOIN_MASK.union(ibpoll_wire::mcmember::mask::PKEY),
            ibpoll_wire::sa::Attribute::McMember(rec),
        )
    };
    let req = SaMad::request(Method::SET, tid, mask, attr);
    mad.send(&req.to_bytes(), sa_addr(port)).expect("sent");
}

fn memberships(f: &SimFabric, port: &dyn Port) -> usize {
    let gid = port.attr().gid;
    f.with_sa(|sa| sa.memberships_of(&gid).count())
}

#[test]
fn a_lost_mad_request_never_reaches_the_sa() {
    let cfg = FaultConfig::new(1).mad_loss(1.0, 0.0);
    let (f, fi, _a, _b) = pair(cfg);
    let mut mad = fi.open_mad_channel().unwrap();
    send_join(&*fi, &mut *mad, 1);
    assert!(mad.recv().is_none());
    assert_eq!(f.stats().sa_requests, 0);
    assert_eq!(memberships(&f, &*fi), 0);
    assert_eq!(fi.stats().mad_requests_lost, 1);
}

#[test]
fn a_lost_mad_answer_leaves_the_sa_having_acted() {
    let cfg = FaultConfig::new(2).mad_loss(0.0, 1.0);
    let (f, fi, _a, _b) = pair(cfg);
    let mut mad = fi.open_mad_channel().unwrap();
    send_join(&*fi, &mut *mad, 1);
    assert!(mad.recv().is_none(), "the answer is lost");
    assert_eq!(memberships(&f, &*fi), 1, "but the join happened");
    assert_eq!((f.stats().sa_answers, fi.stats().mad_answers_lost), (1, 1));
}

#[test]
fn mad_answers_are_delayed_on_the_wrappers_clock_between_min_and_max() {
    let clock = Arc::new(VirtualClock::new());
    let cfg = FaultConfig::new(3).mad_delay(
        Nanos::from_millis(10),
        Nanos::from_millis(20),
        clock.clone(),
    );
    let (f, fi, _a, _b) = pair(cfg);
    let mut mad = fi.open_mad_channel().unwrap();
    for tid in 1..=20 {
        send_join(&*fi, &mut *mad, tid);
    }
    let mut arrived = Vec::new();
    for ms in 0..=20 {
        clock.advance_to(Nanos::from_millis(ms));
        while let Some((bytes, _)) = mad.recv() {
            let answer = SaMad::parse(&bytes).unwrap();
            assert_eq!(answer.header.mad.status, Status::OK);
            arrived.push((ms, answer.header.mad.transaction_id));
        }
    }
    let mut tids: Vec<u64> = arrived.iter().map(|a| a.1).collect();
    tids.sort_unstable();
    assert_eq!(tids, (1..=20).collect::<Vec<_>>(), "each answer once");
    assert!(
        arrived.iter().all(|(ms, _)| (10..=20).contains(ms)),
        "{arrived:?}"
    );
    assert!(
        arrived.iter().any(|a| a.0 != arrived[0].0),
        "delays vary: {arrived:?}"
    );
    assert_eq!(fi.stats().mad_answers_delayed, 20);
    assert_eq!(
        f.stats().sa_requests,
        20,
        "the SA answered at once; the wrapper held"
    );
}

#[test]
fn without_faults_the_wrapper_is_transparent_to_a_join() {
    let (f, fi, _a, _b) = pair(FaultConfig::new(4));
    let g = join_broadcast(&*fi);
    assert_eq!(g.mlid, ibpoll_wire::Lid(0xC000));
    assert_eq!(memberships(&f, &*fi), 1);
    assert_eq!(fi.stats(), Default::default());
}

#[test]
fn the_injector_never_reports_a_send_complete_before_the_driver_under_it() {
    // Under the injector, a back-pressure wrapper holds every send 2 to 6 ticks: once
    // the injector says all sends completed, destroying their address handle must
    // break no send still held below.
    let (_fabric, devs, _) = two_ports(FabricConfig::default(), |p| p);
    let bp = Backpressure::new(
        devs[0].open_port(1).unwrap(),
        BackpressureConfig::new(11).accept(0, 16).delay(2, 6),
    );
    let fi = FaultInjector::new(
        bp.clone(),
        FaultConfig::new(11).packet_loss(0.1).packet_reorder(0.2),
    );
    let mut a = Host::new(fi.clone(), "a", 512, 64);
    let mut b = Host::new(devs[1].open_port(1).unwrap(), "b", 1024, 256);
    let ah = a.ah_to(&b, false);
    let (mut pkts, mut dst) = a.burst(0..300, to(ah, &b));
    while !pkts.is_empty() {
        let n = a.tx.tx_burst(&mut pkts, &dst);
        dst.drain(..n);
        a.tx.completed();
    }
    while a.tx.completed() < 300 {}
    // SAFETY: the injector reports every send naming `ah` completed; if it lied, the
    // back-pressure wrapper below counts the breach (and defers the destroy).
    unsafe { fi.destroy_ah(ah) }.expect("destroy");
    assert_eq!(bp.violations().total(), 0, "{:?}", bp.violations());
    assert_eq!(bp.outstanding(ah), 0);
    let got = b.seqs().len() as u64;
    assert_eq!(got + fi.stats().packets_lost, 300);
}
