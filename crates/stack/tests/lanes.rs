//! Two data lcores on one interface with the hardware's answers (one receive queue per
//! QPN, no RSS): unicast and broadcast arrive on lane 0's QP (the interface's QPN), the
//! control core attaches each multicast group to one lane's QP, so 64 groups spread over
//! both lanes; every packet is accounted for.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use ibpoll::{App, Dest, GroupAddr, LcoreCtx, Tx};
use ibpoll_dev::Counter;
use ibpoll_mem::MbufArray;

const A_IP: [u8; 4] = [10, 0, 0, 1];
const B_IP: [u8; 4] = [10, 0, 0, 2];
const GROUPS: u8 = 64;
/// Datagrams per destination: unicast, broadcast and each group.
const PER_DEST: u64 = 20;

fn group(i: u8) -> [u8; 4] {
    [239, 2, 0, i]
}

/// What one lane of the receiver saw, by kind of destination.
#[derive(Debug, Default)]
struct Seen {
    unicast: Counter,
    broadcast: Counter,
    mcast: Counter,
    /// Groups (bit i: group i) received on this lane.
    groups: AtomicU64,
}

struct Receiver(Arc<Seen>);

impl App for Receiver {
    fn on_burst(&mut self, _ctx: &LcoreCtx, rx: &mut MbufArray, _tx: &mut Tx) {
        for m in rx.as_slice() {
            let d = m.data();
            let dst = [d[16], d[17], d[18], d[19]];
            match dst {
                A_IP => self.0.unicast.inc(),
                [255, 255, 255, 255] => self.0.broadcast.inc(),
                [239, 2, 0, i] => {
                    self.0.mcast.inc();
                    // Single writer (this lane): a load and a store.
                    let bits = self.0.groups.load(Ordering::Relaxed) | 1 << i;
                    self.0.groups.store(bits, Ordering::Relaxed);
                }
                _ => {}
            }
        }
        rx.clear();
    }
}

/// Sends `PER_DEST` datagrams to each destination in turn, a few per iteration.
struct Sender {
    dests: Vec<([u8; 4], Dest)>,
    sent: Arc<Counter>,
    next: usize,
    seq: u32,
}

impl App for Sender {
    fn on_burst(&mut self, _: &LcoreCtx, _: &mut MbufArray, _: &mut Tx) {}

    fn poll(&mut self, ctx: &LcoreCtx, tx: &mut Tx) -> bool {
        if !ctx.link_up || self.next >= self.dests.len() * PER_DEST as usize {
            return false;
        }
        for _ in 0..4 {
            let i = self.next % self.dests.len();
            let (dst, dest) = self.dests[i];
            // First contact with the unicast next hop: one datagram (the control core
            // holds at most 3 while it resolves), then only once it is resolved.
            if i == 0 && self.next > 0 && tx.resolve(0, dest).is_none() {
                return true;
            }
            let Some(mut m) = tx.alloc() else { break };
            build(&mut m, B_IP, dst, 10_000, self.seq);
            self.seq += 1;
            tx.push(0, m, dest);
            self.sent.inc();
            self.next += 1;
            if self.next >= self.dests.len() * PER_DEST as usize {
                break;
            }
        }
        true
    }
}

#[test]
fn unicast_broadcast_and_64_groups_over_two_lanes() {
    let _serial = serial();
    let cpus: Vec<usize> = core_affinity::get_core_ids()
        .map(|v| v.into_iter().map(|c| c.id).collect())
        .unwrap_or_else(|| vec![0]);
    let fabric = fabric();
    let seen: Vec<Arc<Seen>> = (0..2).map(|_| Arc::new(Seen::default())).collect();
    // Two lanes even on one CPU (unpinned): the model does not depend on the CPUs.
    let a = {
        let seen = seen.clone();
        host(&fabric, "a", A_IP, 0)
            .data_cores(2)
            .cpus(vec![cpus[0], cpus[cpus.len() - 1]])
            .pin(false)
            .pool_size(8192)
            .start(move |i| Receiver(seen[i].clone()))
            .expect("stack a")
    };
    assert_eq!(a.data_cores(), 2);
    assert!(a.wait_link_up(T).unwrap());
    for i in 0..GROUPS {
        assert!(a.join_group(GroupAddr::Ipv4(group(i))).unwrap());
    }
    wait_for("a's joins", T, || {
        a.with_controller(|c| {
            (0..GROUPS).all(|i| {
                c.group_phase(GroupAddr::Ipv4(group(i))) == Some(ibpoll_ctrl::GroupPhase::Joined)
            })
        })
        .unwrap()
    });
    // The groups spread over both lanes' QPs.
    let qpns = a
        .with_controller(|c| {
            (0..GROUPS)
                .map(|i| {
                    let mgid = c.mgid_of(GroupAddr::Ipv4(group(i))).unwrap();
                    c.lane_qpn_for(&mgid)
                })
                .collect::<Vec<_>>()
        })
        .unwrap();
    let on_lane0 = qpns.iter().filter(|q| **q == a.qpn()).count();
    assert!(
        on_lane0 > 8 && on_lane0 < 56,
        "{on_lane0} of 64 groups on lane 0"
    );

    let mut dests = vec![
        (A_IP, Dest::NextHop(A_IP)),
        ([255; 4], Dest::NextHop([255; 4])),
    ];
    dests.extend((0..GROUPS).map(|i| (group(i), Dest::Group(GroupAddr::Ipv4(group(i))))));
    let n_dests = dests.len() as u64;
    let sent = Arc::new(Counter::new());
    let b = {
        let sent = sent.clone();
        let dests = dests.clone();
        host(&fabric, "b", B_IP, 1)
            .pin(false)
            .start(move |_| Sender {
                dests: dests.clone(),
                sent: sent.clone(),
                next: 0,
                seq: 0,
            })
            .expect("stack b")
    };
    assert!(b.wait_link_up(T).unwrap());
    let received = || -> u64 {
        seen.iter()
            .map(|s| s.unicast.get() + s.broadcast.get() + s.mcast.get())
            .sum()
    };
    let waited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for("every datagram at a", T, || {
            received() == n_dests * PER_DEST
        })
    }));
    assert!(
        waited.is_ok(),
        "received {} of {}: {seen:?}\na {:?}\nb {:?}\nctrl a {:?}\nctrl b {:?}\nfabric {:?}",
        received(),
        n_dests * PER_DEST,
        a.all_stats(),
        b.all_stats(),
        a.ctrl_stats(),
        b.ctrl_stats(),
        fabric.stats()
    );
    settle(received, Duration::from_millis(200), T);
    assert_eq!(sent.get(), n_dests * PER_DEST);

    // Unicast and broadcast: lane 0 only (one receive queue per QPN).
    assert_eq!(seen[0].unicast.get(), PER_DEST);
    assert_eq!(seen[0].broadcast.get(), PER_DEST);
    assert_eq!(seen[1].unicast.get() + seen[1].broadcast.get(), 0);
    // Multicast: each group on the lane its QP is attached to, none twice.
    let (g0, g1) = (
        seen[0].groups.load(Ordering::Relaxed),
        seen[1].groups.load(Ordering::Relaxed),
    );
    assert_eq!(g0 & g1, 0, "a group reached both lanes");
    assert_eq!(g0 | g1, u64::MAX, "every group reached a lane");
    assert_eq!(g0.count_ones() as usize, on_lane0);
    assert_eq!(
        seen[0].mcast.get() + seen[1].mcast.get(),
        u64::from(GROUPS) * PER_DEST
    );

    let rb = b.stop().unwrap();
    assert_conserved(&rb);
    let ra = a.stop().unwrap();
    assert_conserved(&ra);
    assert_eq!(ra.lcores.len(), 2);
    assert!(ra.lcores[1].app_rx > 0 && ra.lcores[0].app_rx > 0);
    assert_eq!(ra.pool_in_use + rb.pool_in_use, 0);
    assert_eq!(fabric.stats().dropped(), 0, "{:?}", fabric.stats());
}
