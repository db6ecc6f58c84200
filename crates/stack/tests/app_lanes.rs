//! Lanes driven by the application's own threads: a stack built without threads, its
//! control poller and its two lanes each on a test thread, exchanging UDP traffic with
//! another stack that runs on its own lcores (unicast echoed on lane 0, a multicast
//! group joined by a socket on lane 1 and received there only), then stopped through
//! the stop flag with every group left at the SA and every buffer home.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use ibpoll::udp::{encapsulate, HeaderFields};
use ibpoll::{
    App, Dest, Discard, GroupAddr, JoinStatus, Lane, LcoreCtx, MbufArray, Poll, Stack, Tx,
};
use ibpoll_testkit::stack;

const A_IP: [u8; 4] = [10, 0, 0, 1];
const B_IP: [u8; 4] = [10, 0, 0, 2];
const ECHO_PORT: u16 = 9000;
const FEED_PORT: u16 = 5000;
const GROUP: Ipv4Addr = Ipv4Addr::new(239, 1, 0, 1);
const UNICAST: u64 = 2000;
const MCAST: u64 = 1000;

/// Stack B's application: echoes UDP datagrams to port 9000 back to their sender
/// (addresses and ports swapped in place: both checksums stay right), and sends
/// `budget` numbered datagrams to GROUP:5000 once `go` is set.
struct EchoAndFeed {
    go: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    echoed: Arc<AtomicU64>,
}

impl App for EchoAndFeed {
    fn on_burst(&mut self, _ctx: &LcoreCtx, rx: &mut MbufArray, tx: &mut Tx) {
        // In order (`pop` would take from the back).
        let n = rx.len();
        for mut m in rx.drain_front(n) {
            let d = m.data_mut();
            let udp_to_echo = d.len() >= 28
                && d[0] == 0x45
                && d[9] == 17
                && u16::from_be_bytes([d[22], d[23]]) == ECHO_PORT;
            if !udp_to_echo {
                continue;
            }
            let src: [u8; 4] = d[12..16].try_into().unwrap();
            for i in 0..4 {
                d.swap(12 + i, 16 + i);
            }
            d.swap(20, 22);
            d.swap(21, 23);
            if tx.push(0, m, Dest::NextHop(src)) {
                self.echoed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn poll(&mut self, _ctx: &LcoreCtx, tx: &mut Tx) -> bool {
        if !self.go.load(Ordering::Relaxed) {
            return false;
        }
        let mut did = false;
        let dest = Dest::Group(GroupAddr::Ipv4(GROUP.octets()));
        // A few per iteration: the receiving lane's ring has room for them.
        for _ in 0..4 {
            let seq = self.sent.load(Ordering::Relaxed);
            // The first datagram makes the control core join the group send-only (it
            // queues what comes meanwhile, up to 64): wait for the join before more.
            if seq >= MCAST || (seq > 0 && tx.resolve(0, dest).is_none()) {
                break;
            }
            let Some(mut m) = tx.alloc() else { break };
            m.append(8).unwrap().copy_from_slice(&seq.to_be_bytes());
            let from = SocketAddrV4::new(B_IP.into(), 6000);
            let to = SocketAddrV4::new(GROUP, FEED_PORT);
            let fields = HeaderFields {
                ttl: 1,
                ident: seq as u16,
                udp_checksum: true,
            };
            encapsulate(&mut m, from, to, fields).unwrap();
            tx.push(0, m, dest);
            self.sent.store(seq + 1, Ordering::Relaxed);
            did = true;
        }
        did
    }
}

/// Idles like a polite test thread: offline for the snapshot protocol while asleep.
fn idle(lane: &mut Lane, worked: bool) {
    if !worked {
        lane.offline(|| std::thread::sleep(Duration::from_micros(100)));
    }
}

/// Lane 0's loop: sends numbered datagrams to B's echo port and counts the echoes in
/// order: the first alone (ARP and path records resolve both ways meanwhile; the
/// control core holds 3 datagrams per unresolved neighbour), then at most 32 in flight; a socket on FEED_PORT that did not join counts what
/// reaches it (nothing should: the group is attached to lane 1's QP only).
fn lane0(mut lane: Lane, misrouted: Arc<AtomicU64>) -> (u64, ibpoll::LcoreStats) {
    let sock = lane.udp_bind(0, 7000).unwrap();
    let feed = lane.udp_bind(0, FEED_PORT).unwrap();
    let to = SocketAddrV4::new(B_IP.into(), ECHO_PORT);
    let (mut next, mut echoed) = (0u64, 0u64);
    let mut buf = [0u8; 64];
    while !lane.stopping() {
        let mut worked = lane.poll(&mut Discard);
        let window = if echoed == 0 { 1 } else { 32 };
        while next < UNICAST && next < echoed + window && lane.link_up(0) {
            lane.udp_send_slice(sock, &next.to_be_bytes(), to).unwrap();
            next += 1;
            worked = true;
        }
        lane.flush();
        while let Some((n, from)) = lane.udp_recv_slice(sock, &mut buf) {
            assert_eq!((n, from), (8, to), "an echo of 8 bytes from B");
            let seq = u64::from_be_bytes(buf[..8].try_into().unwrap());
            assert_eq!(
                seq,
                echoed,
                "echoes arrive in order: {:?} {:?}",
                lane.stats(),
                lane.udp_stats(sock)
            );
            echoed += 1;
            worked = true;
        }
        while lane.udp_recv_from(feed).is_some() {
            misrouted.fetch_add(1, Ordering::Relaxed);
        }
        idle(&mut lane, worked);
    }
    (echoed, lane.finish())
}

/// Lane 1's loop: joins GROUP on a socket, says when the join is Joined, and checks
/// the feed's sequence.
fn lane1(mut lane: Lane, joined: Arc<AtomicBool>) -> (u64, Vec<JoinStatus>, ibpoll::LcoreStats) {
    let sock = lane.udp_bind(0, FEED_PORT).unwrap();
    lane.udp_join(sock, GROUP).unwrap();
    let mut seen = vec![lane.udp_membership(sock, GROUP).unwrap()];
    let mut received = 0u64;
    let mut burst = MbufArray::with_capacity(32);
    let mut from = [SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0); 32];
    while !lane.stopping() {
        let mut worked = lane.poll(&mut Discard);
        let status = lane.udp_membership(sock, GROUP).unwrap();
        if seen.last() != Some(&status) {
            seen.push(status);
        }
        joined.store(status.is_joined(), Ordering::Relaxed);
        let n = lane.udp_recv_burst(sock, &mut burst, &mut from);
        for (i, m) in burst.as_slice().iter().enumerate() {
            assert_eq!(from[i], SocketAddrV4::new(B_IP.into(), 6000));
            let seq = u64::from_be_bytes(m.data().try_into().unwrap());
            assert_eq!(seq, received, "the feed arrives in order");
            received += 1;
        }
        burst.clear();
        worked |= n > 0;
        idle(&mut lane, worked);
    }
    (received, seen, lane.finish())
}

/// Sets the stop flag when dropped (also while a failed assertion unwinds).
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[test]
fn two_lanes_and_the_control_poller_on_application_threads() {
    let _serial = serial();
    let fabric = fabric();
    let (go, fed, echoed) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let b = {
        let (go, sent, echoed) = (go.clone(), fed.clone(), echoed.clone());
        host(&fabric, "b", B_IP, 1)
            .start(move |_| EchoAndFeed {
                go: go.clone(),
                sent: sent.clone(),
                echoed: echoed.clone(),
            })
            .expect("stack b")
    };
    let (a, mut control, mut lanes) = stack::small(&fabric, "a")
        .ipv4(A_IP)
        .data_cores(2)
        .stop_timeout(T)
        .build()
        .expect("stack a, built")
        .split();
    assert_eq!(lanes.len(), 2);
    assert_eq!((lanes[0].index(), lanes[1].index()), (0, 1));
    let (l1, l0) = (lanes.pop().unwrap(), lanes.pop().unwrap());
    let misrouted = Arc::new(AtomicU64::new(0));
    let joined = Arc::new(AtomicBool::new(false));
    let gid = a.hwaddr().gid();
    let pool = a.pool().clone();
    let ((echoes, s0), (received, seen, s1), ctl) = std::thread::scope(|s| {
        let t0 = {
            let m = misrouted.clone();
            s.spawn(move || lane0(l0, m))
        };
        let t1 = {
            let j = joined.clone();
            s.spawn(move || lane1(l1, j))
        };
        let tc = s.spawn(move || {
            while !control.stopped() {
                if control.poll() == Poll::Idle {
                    std::thread::sleep(Duration::from_micros(100));
                }
            }
            control.finish()
        });
        // Whatever happens below, the threads stop (a failed assertion must not hang).
        let _stop = StopOnDrop(a.stop_flag().clone());
        // The control core is polled on its thread: the handle's commands work.
        assert!(a.wait_link_up(T).unwrap());
        wait_for("lane 1's join", T, || joined.load(Ordering::Relaxed));
        let attached = a
            .with_controller(|c| c.attached_lanes(GroupAddr::Ipv4(GROUP.octets())))
            .unwrap();
        assert_eq!(attached, 0b10, "the group is attached to lane 1's QP only");
        go.store(true, Ordering::Relaxed);
        wait_for("the feed sent", T, || fed.load(Ordering::Relaxed) == MCAST);
        wait_for("every echo", T, || {
            echoed.load(Ordering::Relaxed) == UNICAST
        });
        // Let the last datagrams land, then stop through the flag (what a signal does).
        std::thread::sleep(Duration::from_millis(100));
        let start = Instant::now();
        let report = a.stop().expect("a stops");
        assert!(start.elapsed() < T);
        assert!(report.flushed, "{report:?}");
        (t0.join().unwrap(), t1.join().unwrap(), tc.join().unwrap())
    });
    assert_eq!(echoes, UNICAST);
    assert_eq!(received, MCAST, "lane 1 lost some of the feed");
    assert_eq!(misrouted.load(Ordering::Relaxed), 0);
    assert_eq!(seen[0], JoinStatus::Pending);
    assert!(seen.contains(&JoinStatus::Joined), "{seen:?}");
    assert!(ctl.flushed);
    assert_eq!(ctl.ctrl[0].subscriptions, 1);
    assert!(ctl.ctrl[0].leaves_done >= 2, "{:?}", ctl.ctrl[0]);
    // Lane 0 sent the unicast; lane 1 only received.
    assert!(s0.app_tx >= UNICAST && s1.app_tx == 0, "{s0:?} {s1:?}");
    assert_eq!(s0.tx_dropped() + s1.tx_dropped(), 0);
    assert_eq!(fabric.with_sa(|sa| sa.memberships_of(&gid).count()), 0);
    assert_eq!(pool.in_use(), 0, "buffers still out");
    let rb = b.stop().unwrap();
    assert_conserved(&rb);
}

#[test]
fn a_lane_registers_its_thread_with_the_pools_and_dropped_lanes_let_the_stop_end() {
    let _serial = serial();
    let fabric = fabric();
    let (_a, mut control, lanes) = stack::small(&fabric, "a")
        .ipv4(A_IP)
        .data_cores(2)
        .build()
        .expect("built")
        .split();
    // Both threads hold their ids at once (an id is given back when its thread exits).
    let both = std::sync::Barrier::new(2);
    let ids: Vec<Option<usize>> = std::thread::scope(|s| {
        lanes
            .into_iter()
            .map(|mut lane| {
                let both = &both;
                s.spawn(move || {
                    assert_eq!(ibpoll::mem::current_lcore(), None);
                    lane.poll(&mut Discard);
                    let id = ibpoll::mem::current_lcore();
                    both.wait();
                    // Dropped without `finish`: it still says it is gone.
                    drop(lane);
                    id
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect()
    });
    assert!(ids.iter().all(Option::is_some), "{ids:?}");
    assert_ne!(ids[0], ids[1], "each thread has an lcore id of its own");
    control.request_stop();
    let start = Instant::now();
    while !control.stopped() {
        control.poll();
        assert!(start.elapsed() < T, "the stop never ended");
    }
    let report = control.finish();
    assert!(report.flushed);
}

#[test]
fn the_handle_of_an_application_driven_stack_does_not_stop_it_on_drop() {
    let _serial = serial();
    let fabric = fabric();
    let (a, mut control, mut lanes) = stack::small(&fabric, "a")
        .ipv4(A_IP)
        .build()
        .expect("built")
        .split();
    drop(a);
    assert!(!control.stop_requested());
    let lane = &mut lanes[0];
    let start = Instant::now();
    while !lane.link_up(0) {
        control.poll();
        lane.poll(&mut Discard);
        assert!(start.elapsed() < T, "link never came up");
    }
    assert!(control.link_up());
    assert!(!lane.stopping());
    let _ = Stack::builder;
}
