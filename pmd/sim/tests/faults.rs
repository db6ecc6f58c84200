//! Seeded fault injection: packet loss and reordering on the switch, and delay, loss,
//! duplication and error answers at the subnet administrator, under virtual time.

mod common;

use std::sync::Arc;

use common::{Host, QpOpts};
use ibpoll_dev::{Nanos, VirtualClock};
use ibpoll_pmd_sim::{FabricConfig, FaultConfig, SimFabric};
use ibpoll_wire::mad::{Method, Status};
use ibpoll_wire::sa::SaMad;
use ibpoll_wire::QKey;

/// Sends `count` numbered packets from a to b in bursts of 32, draining b after each
/// burst, and returns the numbers in the order b received them.
fn numbered_run(f: &SimFabric, count: u32) -> Vec<u32> {
    let mut a = Host::new(f, "a");
    let mut b = Host::with(f, "b", &QpOpts::default(), 256);
    let ah = a.ah(b.lid());
    let mut seqs = Vec::new();
    let mut next = 0;
    while next < count {
        let end = (next + 32).min(count);
        let descs = (next..end)
            .map(|i| a.desc(&i.to_be_bytes(), ah, b.qp.qpn, QKey::IPOIB_DEFAULT))
            .collect();
        a.qp.send(descs);
        seqs.extend(b.qp.recv().iter().map(common::seq_of));
        next = end;
    }
    assert_eq!(a.pool.in_use(), 0);
    seqs
}

fn lossy(seed: u64) -> (Vec<u32>, u64) {
    let f = SimFabric::new(FabricConfig {
        seed,
        faults: FaultConfig {
            packet_loss: 0.3,
            ..FaultConfig::NONE
        },
        ..FabricConfig::default()
    });
    let seqs = numbered_run(&f, 2000);
    (seqs, f.stats().drop_count("fault_loss"))
}

#[test]
fn packet_loss_loses_about_its_share_and_replays_exactly() {
    let (first, lost) = lossy(42);
    let got = first.len() as u64;
    assert!(
        (1200..=1600).contains(&got),
        "30% loss over 2000 packets kept {got}"
    );
    assert_eq!(got + lost, 2000, "every loss is counted as fault_loss");
    assert!(
        first.windows(2).all(|w| w[0] < w[1]),
        "loss does not reorder"
    );

    let (again, _) = lossy(42);
    assert_eq!(first, again, "the same seed loses the same packets");
    let (other, _) = lossy(43);
    assert_ne!(first, other, "another seed loses other packets");
}

#[test]
fn packet_reorder_reorders_without_losing_or_duplicating() {
    let f = SimFabric::new(FabricConfig {
        seed: 7,
        faults: FaultConfig {
            packet_reorder: 0.2,
            ..FaultConfig::NONE
        },
        ..FabricConfig::default()
    });
    let seqs = numbered_run(&f, 1000);
    let inversions = seqs.windows(2).filter(|w| w[0] > w[1]).count();
    assert!(inversions > 0, "some packet overtook another");
    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        (0..1000).collect::<Vec<_>>(),
        "none lost or duplicated"
    );
    assert_eq!(f.stats().dropped(), 0);
}

/// A fabric on virtual time with `faults`, and its clock.
fn virtual_fabric(faults: FaultConfig) -> (SimFabric, Arc<VirtualClock>) {
    let clock = Arc::new(VirtualClock::new());
    let f = SimFabric::new(FabricConfig {
        faults,
        clock: clock.clone(),
        ..FabricConfig::default()
    });
    (f, clock)
}

fn member_count(f: &SimFabric, h: &Host) -> usize {
    h.memberships(f)
}

fn send_join(h: &mut Host) -> u64 {
    let (mask, attr) = common::broadcast_join(h.gid());
    h.sa_send(Method::SET, mask, attr)
}

#[test]
fn a_delayed_answer_arrives_at_its_time_and_not_before() {
    let (f, clock) = virtual_fabric(FaultConfig {
        sa_delay_min: Nanos::from_millis(5),
        sa_delay_max: Nanos::from_millis(5),
        ..FaultConfig::NONE
    });
    let mut a = Host::new(&f, "a");
    let tid = send_join(&mut a);
    assert_eq!(member_count(&f, &a), 1, "the SA acted at once");
    assert!(a.sa_recv().is_none());
    clock.advance_to(Nanos(Nanos::from_millis(5).0 - 1));
    assert!(a.sa_recv().is_none(), "not before its time");
    clock.advance(Nanos(1));
    let answer = a.sa_recv().expect("due now");
    assert_eq!(answer.header.mad.transaction_id, tid);
    assert_eq!(answer.header.mad.status, Status::OK);
    assert!(a.sa_recv().is_none());
}

#[test]
fn answer_delays_are_drawn_between_min_and_max() {
    let (f, clock) = virtual_fabric(FaultConfig {
        sa_delay_min: Nanos::from_millis(10),
        sa_delay_max: Nanos::from_millis(20),
        ..FaultConfig::NONE
    });
    let mut a = Host::new(&f, "a");
    let tids: Vec<u64> = (0..20).map(|_| send_join(&mut a)).collect();
    let mut arrived_ms = Vec::new();
    let mut got = Vec::new();
    for ms in 0..=20 {
        clock.advance_to(Nanos::from_millis(ms));
        while let Some(answer) = a.sa_recv() {
            got.push(answer.header.mad.transaction_id);
            arrived_ms.push(ms);
        }
    }
    got.sort_unstable();
    assert_eq!(got, tids, "every answer arrived once");
    assert!(arrived_ms.iter().all(|ms| (10..=20).contains(ms)));
    assert!(
        arrived_ms.iter().any(|ms| *ms != arrived_ms[0]),
        "delays vary: {arrived_ms:?}"
    );
}

#[test]
fn a_lost_answer_leaves_the_sa_having_acted() {
    let (f, clock) = virtual_fabric(FaultConfig {
        sa_answer_loss: 1.0,
        ..FaultConfig::NONE
    });
    let mut a = Host::new(&f, "a");
    send_join(&mut a);
    clock.advance(Nanos::from_secs(10));
    assert!(a.sa_recv().is_none(), "the answer is lost");
    assert_eq!(member_count(&f, &a), 1, "but the join happened");
    let s = f.stats();
    assert_eq!((s.sa_requests, s.sa_answers, s.sa_answers_lost), (1, 1, 1));
}

#[test]
fn a_lost_request_never_reaches_the_sa() {
    let (f, clock) = virtual_fabric(FaultConfig {
        sa_request_loss: 1.0,
        ..FaultConfig::NONE
    });
    let mut a = Host::new(&f, "a");
    send_join(&mut a);
    clock.advance(Nanos::from_secs(10));
    assert!(a.sa_recv().is_none());
    assert_eq!(member_count(&f, &a), 0, "the SA did not act");
    assert_eq!(f.with_sa(|sa| sa.stats().received), 0);
    assert_eq!(f.stats().sa_requests_lost, 1);
}

#[test]
fn a_duplicated_answer_arrives_twice() {
    let (f, _clock) = virtual_fabric(FaultConfig {
        sa_duplicate: 1.0,
        ..FaultConfig::NONE
    });
    let mut a = Host::new(&f, "a");
    let tid = send_join(&mut a);
    let (first, _) = a.mad.recv().expect("the answer");
    let (second, _) = a.mad.recv().expect("its duplicate");
    assert_eq!(first, second, "the same answer, byte for byte");
    assert!(a.mad.recv().is_none(), "only twice");
    let answer = SaMad::parse(&first).unwrap();
    assert_eq!(answer.header.mad.transaction_id, tid);
    assert_eq!(answer.header.mad.status, Status::OK);
    assert_eq!(member_count(&f, &a), 1, "the SA acted once");
    assert_eq!(f.stats().sa_answers_duplicated, 1);
}

#[test]
fn an_injected_error_is_answered_with_its_status_and_the_sa_does_nothing() {
    let (f, _clock) = virtual_fabric(FaultConfig {
        sa_error: 1.0,
        sa_error_status: Status::ERR_REQ_INVALID_GID.0,
        ..FaultConfig::NONE
    });
    let mut a = Host::new(&f, "a");
    let tid = send_join(&mut a);
    let answer = a.sa_recv().expect("an error answer");
    assert_eq!(answer.header.mad.transaction_id, tid);
    assert_eq!(answer.header.mad.method, Method::GET_RESP);
    assert_eq!(answer.header.mad.status, Status::ERR_REQ_INVALID_GID);
    assert_eq!(member_count(&f, &a), 0, "the SA did not act");
    assert_eq!(f.with_sa(|sa| sa.stats().received), 0);
    assert_eq!(f.stats().sa_errors_injected, 1);

    // Without the fault the same request succeeds.
    f.set_faults(FaultConfig::NONE);
    send_join(&mut a);
    assert_eq!(a.sa_recv().expect("answer").header.mad.status, Status::OK);
    assert_eq!(member_count(&f, &a), 1);
}
