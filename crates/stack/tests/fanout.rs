//! Software fan-out on the simulated fabric with the hardware's answers (one receive
//! queue per QPN, no RSS): a receiver with 2 or 3 data lanes and `Fanout::FlowHash`
//! gets unicast from many flows on lane 0's QP, and every lane's application sees a
//! share: each flow on exactly the lane that owns its hash, in order, every packet
//! accounted for, every buffer home. The broadcast group's flows spread too, while
//! other groups stay on the lanes their QPs are attached to. A slow worker's full ring
//! is a counted drop; without fan-out lane 0 keeps everything, and with RSS the device
//! spreads and fan-out stays off; a P_Key index move parks and resumes a fanning-out
//! stack; lanes driven by the application fan out too, and the ring of a worker that
//! stopped first is emptied by the receiving lane.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use ibpoll::mem::MBUF_F_MCAST;
use ibpoll::{
    flow_hash, flow_lane, App, Dest, Fanout, GroupAddr, Lane, LcoreCtx, LcoreStats, MbufArray,
    Stack, StackBuilder, StopReport, Tx,
};
use ibpoll_pmd_sim::SimFabric;
use ibpoll_wire::PKey;

const A_IP: [u8; 4] = [10, 0, 0, 1];
const B_IP: [u8; 4] = [10, 0, 0, 2];
const FLOWS: u16 = 64;

/// A flow: destination address and source port.
type Flow = ([u8; 4], u16);

/// What one lane's application saw.
#[derive(Debug, Default)]
struct LaneLog {
    /// Per flow: datagrams, and the last sequence number.
    flows: BTreeMap<Flow, (u64, u32)>,
    received: u64,
    /// Datagrams of a flow that came after a later one of the same flow.
    out_of_order: u64,
    /// Unicast and broadcast datagrams whose flow another lane owns (`flow_lane` of
    /// `flow_hash`).
    not_owned: u64,
    /// Datagrams whose multicast flag disagrees with their destination, or without a
    /// source QPN.
    bad_meta: u64,
}

/// Records each test datagram (UDP to port 9000 from `common::build`) by flow, and
/// counts every one in `total` (shared by the lanes: a read-modify-write).
struct Recorder {
    log: Arc<Mutex<LaneLog>>,
    total: Arc<Probe>,
    /// Sleeps this long per burst (a slow worker).
    slow: Option<Duration>,
}

impl App for Recorder {
    fn on_burst(&mut self, ctx: &LcoreCtx, rx: &mut MbufArray, _tx: &mut Tx) {
        if let Some(d) = self.slow {
            std::thread::sleep(d);
        }
        let mut log = self.log.lock().unwrap();
        let mut n = 0;
        for m in rx.as_slice() {
            let d = m.data();
            if d.len() < 36 || d[0] != 0x45 || d[9] != 17 || d[22..24] != 9000u16.to_be_bytes() {
                continue;
            }
            let sport = u16::from_be_bytes([d[20], d[21]]);
            let seq = u32::from_be_bytes([d[32], d[33], d[34], d[35]]);
            let dst = [d[16], d[17], d[18], d[19]];
            let group = dst[0] & 0xf0 == 0xe0;
            if !group && flow_lane(flow_hash(d), ctx.data_cores) != ctx.lcore {
                log.not_owned += 1;
            }
            let mcast = m.meta().flags & MBUF_F_MCAST != 0;
            if mcast != (group || dst == [255; 4]) || m.meta().src_qpn == 0 {
                log.bad_meta += 1;
            }
            let (count, last) = log.flows.entry((dst, sport)).or_insert((0, 0));
            let late = *count > 0 && seq <= *last;
            *count += 1;
            *last = seq;
            log.out_of_order += u64::from(late);
            log.received += 1;
            n += 1;
        }
        self.total.received.add_shared(n);
        rx.clear();
    }
}

/// Receiver `a` with `lanes` data lanes on one CPU (unpinned), logging per lane.
fn receiver(
    fabric: &SimFabric,
    lanes: usize,
    fanout: Fanout,
) -> (StackBuilder, Vec<Arc<Mutex<LaneLog>>>) {
    let cpu = core_affinity::get_core_ids().map_or(0, |v| v[0].id);
    let logs: Vec<_> = (0..lanes).map(|_| Arc::default()).collect();
    let b = host(fabric, "a", A_IP, 0)
        .data_cores(lanes)
        .cpus(vec![cpu; lanes])
        .pin(false)
        .pool_size(8192)
        .fanout(fanout);
    (b, logs)
}

fn start_receiver(
    b: StackBuilder,
    logs: &[Arc<Mutex<LaneLog>>],
    total: &Arc<Probe>,
    slow_lane: Option<(usize, Duration)>,
) -> Stack {
    let (logs, total) = (logs.to_vec(), total.clone());
    b.start(move |i| Recorder {
        log: logs[i].clone(),
        total: total.clone(),
        slow: slow_lane.filter(|(k, _)| *k == i).map(|(_, d)| d),
    })
    .expect("stack a")
}

/// Sender `b`: one lane, `FLOWS` flows to `a`, at most `window` datagrams in flight.
fn sender(fabric: &SimFabric, pb: &Arc<Probe>, pa: &Arc<Probe>, window: u64) -> Stack {
    let (p, peer) = (pb.clone(), pa.clone());
    host(fabric, "b", B_IP, 1)
        .start(move |_| {
            TestApp::new(p.clone(), B_IP, A_IP, Some(Dest::NextHop(A_IP)))
                .flows(FLOWS)
                .window(&peer, window)
        })
        .expect("stack b")
}

/// `from` sends `n` more datagrams: three first (ARP and the path record resolve
/// meanwhile; the control core holds 3 per unresolved neighbour), then the rest.
fn send(from: &Probe, to: &Probe, n: u64, what: &str) {
    let (sent, received) = (from.sent.get(), to.received.get());
    from.allow(sent + 3);
    wait_for(what, T, || to.received.get() == received + 3);
    from.allow(sent + n);
    wait_for(what, T, || to.received.get() == received + n);
}

/// What a run ended with.
struct Outcome {
    logs: Vec<LaneLog>,
    ra: StopReport,
    sent: u64,
    received: u64,
}

/// `a` with `lanes` lanes and `fanout` receives `n` datagrams of `FLOWS` flows from
/// `b`; both stop; conservation and the buffers are checked.
fn run(lanes: usize, fanout: Fanout, n: u64) -> Outcome {
    run_on(fabric(), lanes, fanout, n)
}

/// [`run`] on `fabric`.
fn run_on(fabric: SimFabric, lanes: usize, fanout: Fanout, n: u64) -> Outcome {
    let _serial = serial();
    let (pa, pb) = (Arc::new(Probe::default()), Arc::new(Probe::default()));
    let (builder, logs) = receiver(&fabric, lanes, fanout);
    let a = start_receiver(builder, &logs, &pa, None);
    let b = sender(&fabric, &pb, &pa, 256);
    assert!(a.wait_link_up(T).unwrap() && b.wait_link_up(T).unwrap());
    send(&pb, &pa, n, "every datagram at a");
    settle(|| pa.received.get(), Duration::from_millis(100), T);
    let ra = a.stop().expect("a stops");
    let rb = b.stop().expect("b stops");
    assert_conserved(&ra);
    assert_conserved(&rb);
    assert_eq!(ra.pool_in_use + rb.pool_in_use, 0, "buffers still out");
    let (sent, received) = (pb.sent.get(), pa.received.get());
    // Conservation end to end: sent == received + counted drops.
    let t = ra.total();
    let drops = t.rx_dropped() - t.rx_loopback
        + rb.total().tx_dropped()
        + rb.total().ctrl_dropped()
        + fabric.stats().dropped();
    assert_eq!(
        sent,
        received + drops,
        "a {t:?}\nfabric {:?}",
        fabric.stats()
    );
    let logs = logs
        .iter()
        .map(|l| std::mem::take(&mut *l.lock().unwrap()))
        .collect();
    Outcome {
        logs,
        ra,
        sent,
        received,
    }
}

/// Each flow on exactly one lane, the one that owns it, in order; every lane busy;
/// what lane 0 handed over is what the workers took.
fn assert_spread(o: &Outcome, lanes: usize) {
    assert_eq!(
        o.received, o.sent,
        "at most 256 in flight: nothing is dropped"
    );
    let mut owner = BTreeMap::new();
    for (k, log) in o.logs.iter().enumerate() {
        assert!(log.received > 0, "lane {k} got nothing: {:?}", o.logs);
        assert_eq!(log.out_of_order, 0, "lane {k}: a flow out of order");
        assert_eq!(log.not_owned, 0, "lane {k}: a flow another lane owns");
        assert_eq!(log.bad_meta, 0, "lane {k}: receive metadata lost");
        for &flow in log.flows.keys() {
            if let Some(other) = owner.insert(flow, k) {
                panic!("flow {flow:?} on lanes {other} and {k}");
            }
        }
        assert_eq!(o.ra.lcores[k].app_rx, log.received, "lane {k}");
    }
    assert_eq!(owner.len(), usize::from(FLOWS));
    let s = &o.ra.lcores;
    let workers: u64 = s[1..].iter().map(|s| s.fanout_in).sum();
    assert_eq!(s[0].fanout_out, workers);
    assert_eq!(s[0].fanout_out, o.sent - o.logs[0].received);
    assert!(s.iter().all(|s| s.fanout_full == 0), "{s:?}");
    assert!(
        s[1..].iter().all(|s| s.rx_packets == 0),
        "unicast only on lane 0's QP"
    );
    assert_eq!(lanes, s.len());
}

#[test]
fn two_lanes_share_the_flows_of_the_interface_qp() {
    let o = run(2, Fanout::flow_hash(), 4000);
    assert_spread(&o, 2);
}

#[test]
fn three_lanes_share_the_flows_of_the_interface_qp() {
    let o = run(3, Fanout::FlowHash { ring_size: 256 }, 6000);
    assert_spread(&o, 3);
}

#[test]
fn without_fanout_lane_0_keeps_the_unicast() {
    let o = run(2, Fanout::Off, 2000);
    assert_eq!(o.received, o.sent);
    assert_eq!(o.logs[0].received, o.sent);
    assert_eq!(o.logs[1].received, 0);
    assert_eq!(o.logs[0].flows.len(), usize::from(FLOWS));
    assert_eq!(o.logs[0].out_of_order, 0);
    for s in &o.ra.lcores {
        assert_eq!(
            (s.fanout_out, s.fanout_in, s.fanout_full),
            (0, 0, 0),
            "{s:?}"
        );
    }
}

/// Where the device spreads the interface's QP over the lanes itself (RSS, an opt-in
/// capability of the simulated fabric), fan-out stays off: the lanes share the flows
/// through their own receive queues.
#[test]
fn with_rss_the_device_spreads_and_fanout_stays_off() {
    let rss = SimFabric::new(ibpoll_pmd_sim::FabricConfig::default().with_rss(2));
    let o = run_on(rss, 2, Fanout::flow_hash(), 2000);
    assert_eq!(o.received, o.sent);
    for (k, s) in o.ra.lcores.iter().enumerate() {
        assert!(
            s.rx_packets > 0 && o.logs[k].received > 0,
            "lane {k}: {s:?}"
        );
        assert_eq!(
            (s.fanout_out, s.fanout_in, s.fanout_full),
            (0, 0, 0),
            "{s:?}"
        );
        assert_eq!(o.logs[k].out_of_order, 0);
    }
}

#[test]
fn a_slow_worker_fills_its_ring_and_the_drops_are_counted() {
    let _serial = serial();
    let fabric = fabric();
    let (pa, pb) = (Arc::new(Probe::default()), Arc::new(Probe::default()));
    let (builder, logs) = receiver(&fabric, 2, Fanout::FlowHash { ring_size: 32 });
    // Lane 1 takes a burst every 5 ms: its ring of 32 fills.
    let a = start_receiver(builder, &logs, &pa, Some((1, Duration::from_millis(5))));
    // No flow control: b sends as fast as it can.
    let b = sender(&fabric, &pb, &pa, u64::MAX / 2);
    assert!(a.wait_link_up(T).unwrap() && b.wait_link_up(T).unwrap());
    let n = 20_000;
    send(&pb, &pa, 3, "the first datagrams");
    pb.allow(n);
    wait_for("b's datagrams sent", T, || pb.sent.get() == n);
    wait_for("a ring drop", T, || a.stats(0).fanout_full > 0);
    // Everything sent was received or dropped and counted: wait for the last arrivals.
    let accounted = || {
        let (t, f) = (a.stats(0), fabric.stats().dropped());
        pa.received.get() + t.fanout_full + f
    };
    settle(accounted, Duration::from_millis(300), T);
    let ra = a.stop().expect("a stops");
    let rb = b.stop().expect("b stops");
    assert_conserved(&ra);
    assert_conserved(&rb);
    assert_eq!(ra.pool_in_use + rb.pool_in_use, 0, "buffers still out");
    let (s0, s1) = (&ra.lcores[0], &ra.lcores[1]);
    assert!(s0.fanout_full > 0, "{s0:?}");
    assert_eq!(s1.fanout_full, 0);
    let t = ra.total();
    let drops = t.rx_dropped() - t.rx_loopback
        + rb.total().tx_dropped()
        + rb.total().ctrl_dropped()
        + fabric.stats().dropped();
    assert_eq!(
        n,
        pa.received.get() + drops,
        "a {t:?}\nfabric {:?}",
        fabric.stats()
    );
    // The receiving lane kept going: its own flows arrived meanwhile.
    let l0 = logs[0].lock().unwrap();
    assert!(l0.received > 0 && l0.out_of_order == 0, "{l0:?}");
    assert_eq!(logs[1].lock().unwrap().out_of_order, 0);
    assert_eq!(s1.app_rx, logs[1].lock().unwrap().received);
    assert_eq!(s0.fanout_out, s1.fanout_in);
}

#[test]
fn a_fanning_out_stack_parks_for_a_pkey_move_and_resumes() {
    let _serial = serial();
    let fabric = fabric();
    let dev_a = fabric.add_node("a", 1);
    let port_a = dev_a.port_id(1);
    let (pa, pb) = (Arc::new(Probe::default()), Arc::new(Probe::default()));
    let (builder, logs) = receiver(&fabric, 2, Fanout::flow_hash());
    let builder = builder.device(dev_a, 1).clock(fabric.clock());
    let a = start_receiver(builder, &logs, &pa, None);
    let b = sender(&fabric, &pb, &pa, 256);
    assert!(a.wait_link_up(T).unwrap() && b.wait_link_up(T).unwrap());
    send(&pb, &pa, 1000, "b to a");
    fabric.set_pkeys(port_a, vec![PKey(0x8001), PKey::DEFAULT]);
    wait_for("a's heavy flush", T, || {
        a.ctrl_stats().unwrap().flushes_heavy == 1
    });
    assert!(
        a.wait_link_up(T).unwrap(),
        "a: link not back after the move"
    );
    send(&pb, &pa, 1000, "b to a after the move");
    let ra = a.stop().expect("a stops");
    let rb = b.stop().expect("b stops");
    assert_conserved(&ra);
    assert_conserved(&rb);
    assert_eq!(ra.pool_in_use + rb.pool_in_use, 0, "buffers still out");
    assert!(ra.lcores.iter().all(|s| s.parked_iterations > 0), "{ra:?}");
    assert!(ra.lcores[0].fanout_out > 0);
    assert_eq!(pa.received.get(), 2000);
    for l in &logs {
        let l = l.lock().unwrap();
        assert!(
            l.received > 0 && l.out_of_order == 0 && l.not_owned == 0,
            "{l:?}"
        );
    }
}

/// Sends `total` datagrams round-robin over `dests`, 16 flows (source ports) each, at
/// most 256 in flight towards `peer`.
struct MixedSender {
    dests: Vec<([u8; 4], Dest)>,
    probe: Arc<Probe>,
    peer: Arc<Probe>,
    total: u64,
    next: u64,
}

impl App for MixedSender {
    fn on_burst(&mut self, _: &LcoreCtx, rx: &mut MbufArray, _: &mut Tx) {
        rx.clear();
    }

    fn poll(&mut self, ctx: &LcoreCtx, tx: &mut Tx) -> bool {
        if !ctx.link_up {
            return false;
        }
        let n = self.dests.len() as u64;
        for _ in 0..8 {
            if self.next >= self.total || self.probe.sent.get() >= self.peer.received.get() + 256 {
                break;
            }
            let (dst, dest) = self.dests[(self.next % n) as usize];
            // The unicast next hop: one datagram first, the rest once it is resolved.
            if self.next > 0 && tx.resolve(0, self.dests[0].1).is_none() {
                return true;
            }
            let Some(mut m) = tx.alloc() else { break };
            let sport = 10_000 + (self.next / n % 16) as u16;
            build(&mut m, B_IP, dst, sport, self.next as u32);
            tx.push(0, m, dest);
            self.probe.sent.inc();
            self.next += 1;
        }
        true
    }
}

#[test]
fn unicast_and_broadcast_spread_and_groups_stay_on_their_lanes() {
    let _serial = serial();
    let fabric = fabric();
    let (pa, pb) = (Arc::new(Probe::default()), Arc::new(Probe::default()));
    let (builder, logs) = receiver(&fabric, 2, Fanout::flow_hash());
    let a = start_receiver(builder, &logs, &pa, None);
    assert!(a.wait_link_up(T).unwrap());
    let groups: Vec<[u8; 4]> = (1..=8).map(|i| [239, 3, 0, i]).collect();
    for g in &groups {
        assert!(a.join_group(GroupAddr::Ipv4(*g)).unwrap());
    }
    wait_for("a's joins", T, || {
        let gs = groups.clone();
        a.with_controller(move |c| {
            gs.iter().all(|g| {
                c.group_phase(GroupAddr::Ipv4(*g)) == Some(ibpoll_ctrl::GroupPhase::Joined)
            })
        })
        .unwrap()
    });
    // Each group's lane: the one whose QP the control core attached it to.
    let (gs, qpn) = (groups.clone(), a.qpn());
    let on_lane1: Vec<bool> = a
        .with_controller(move |c| {
            gs.iter()
                .map(|g| c.lane_qpn_for(&c.mgid_of(GroupAddr::Ipv4(*g)).unwrap()) != qpn)
                .collect()
        })
        .unwrap();
    assert!(
        on_lane1.iter().any(|x| *x) && !on_lane1.iter().all(|x| *x),
        "{on_lane1:?}"
    );
    let mut dests = vec![
        (A_IP, Dest::NextHop(A_IP)),
        ([255; 4], Dest::NextHop([255; 4])),
    ];
    dests.extend(
        groups
            .iter()
            .map(|g| (*g, Dest::Group(GroupAddr::Ipv4(*g)))),
    );
    let total = 3000;
    let b = {
        let (probe, peer, dests) = (pb.clone(), pa.clone(), dests.clone());
        host(&fabric, "b", B_IP, 1)
            .start(move |_| MixedSender {
                dests: dests.clone(),
                probe: probe.clone(),
                peer: peer.clone(),
                total,
                next: 0,
            })
            .expect("stack b")
    };
    wait_for("every datagram at a", T, || pa.received.get() == total);
    settle(|| pa.received.get(), Duration::from_millis(100), T);
    let ra = a.stop().expect("a stops");
    let rb = b.stop().expect("b stops");
    assert_conserved(&ra);
    assert_conserved(&rb);
    assert_eq!(ra.pool_in_use + rb.pool_in_use, 0, "buffers still out");
    assert_eq!(pb.sent.get(), total);
    assert_placed(&logs, &groups, &on_lane1, dests.len());
    // Lane 1 got its groups on its own QP and the rest through the ring.
    let (s0, s1) = (&ra.lcores[0], &ra.lcores[1]);
    assert!(s1.rx_packets > 0 && s1.fanout_in > 0, "{s1:?}");
    assert_eq!(s0.fanout_out, s1.fanout_in);
}

/// Every flow of `n_dests` destinations (16 each) on exactly one lane: a group's on the
/// lane its QP is attached to (`on_lane1`), the broadcast's spread over both lanes, all
/// in order with their metadata.
fn assert_placed(
    logs: &[Arc<Mutex<LaneLog>>],
    groups: &[[u8; 4]],
    on_lane1: &[bool],
    n_dests: usize,
) {
    let logs: Vec<LaneLog> = logs
        .iter()
        .map(|l| std::mem::take(&mut *l.lock().unwrap()))
        .collect();
    let mut lanes_of: BTreeMap<Flow, Vec<usize>> = BTreeMap::new();
    for (k, log) in logs.iter().enumerate() {
        assert_eq!(
            (log.out_of_order, log.not_owned, log.bad_meta),
            (0, 0, 0),
            "lane {k}"
        );
        for flow in log.flows.keys() {
            lanes_of.entry(*flow).or_default().push(k);
        }
    }
    assert_eq!(lanes_of.len(), n_dests * 16, "every flow arrived");
    let mut bcast_lanes = [false; 2];
    for ((dst, sport), lanes) in &lanes_of {
        assert_eq!(lanes.len(), 1, "flow {dst:?}:{sport} on lanes {lanes:?}");
        if let Some(i) = groups.iter().position(|g| g == dst) {
            assert_eq!(
                lanes[0],
                usize::from(on_lane1[i]),
                "group {dst:?} off its lane"
            );
        }
        if *dst == [255; 4] {
            bcast_lanes[lanes[0]] = true;
        }
    }
    assert_eq!(
        bcast_lanes,
        [true, true],
        "the broadcast's flows spread over both lanes"
    );
}

/// Polls `lanes` and `control` on this thread until `cond`.
fn drive(
    control: &mut ibpoll::Control,
    lanes: &mut [Lane],
    apps: &mut [Recorder],
    mut cond: impl FnMut(&[Lane]) -> bool,
) {
    let start = std::time::Instant::now();
    while !cond(lanes) {
        assert!(start.elapsed() < T, "timed out");
        control.poll();
        for (lane, app) in lanes.iter_mut().zip(apps.iter_mut()) {
            lane.poll(app);
        }
    }
}

#[test]
fn application_driven_lanes_fan_out_and_the_last_end_empties_the_ring() {
    let _serial = serial();
    let fabric = fabric();
    let (pa, pb) = (Arc::new(Probe::default()), Arc::new(Probe::default()));
    let (builder, logs) = receiver(&fabric, 2, Fanout::flow_hash());
    let (a, mut control, mut lanes) = builder.build().expect("a, built").split();
    let mut apps: Vec<Recorder> = logs
        .iter()
        .map(|l| Recorder {
            log: l.clone(),
            total: pa.clone(),
            slow: None,
        })
        .collect();
    let b = sender(&fabric, &pb, &pa, 256);
    drive(&mut control, &mut lanes, &mut apps, |l| l[0].link_up(0));
    assert!(b.wait_link_up(T).unwrap());
    pb.allow(3);
    drive(&mut control, &mut lanes, &mut apps, |_| {
        pa.received.get() == 3
    });
    pb.allow(2000);
    drive(&mut control, &mut lanes, &mut apps, |_| {
        pa.received.get() == 2000
    });
    // Stop a: the flush, then the lanes see it. Lane 1 finishes first; lane 0 keeps
    // receiving b's next datagrams and handing lane 1's flows to its ring, which it
    // empties when it finishes.
    control.request_stop();
    drive(&mut control, &mut lanes, &mut apps, |l| l[0].stopping());
    let l1 = lanes.pop().unwrap();
    let s1 = l1.finish();
    pb.allow(2500);
    let mut l0 = lanes.pop().unwrap();
    let start = std::time::Instant::now();
    while l0.stats().fanout_out == s1.fanout_in {
        assert!(
            start.elapsed() < T,
            "lane 0 handed nothing over after lane 1 stopped"
        );
        l0.poll(&mut apps[0]);
    }
    pb.halt.store(true, std::sync::atomic::Ordering::Relaxed);
    let s0 = l0.finish();
    while !control.stopped() {
        control.poll();
    }
    let report = control.finish();
    assert!(report.flushed);
    let rb = b.stop().expect("b stops");
    assert_conserved(&rb);
    check_lanes(&s0, &s1);
    assert_eq!(a.pool().in_use(), 0, "buffers still out");
    let l0 = logs[0].lock().unwrap();
    let l1 = logs[1].lock().unwrap();
    assert_eq!(l0.out_of_order + l1.out_of_order, 0);
    assert_eq!(l0.not_owned + l1.not_owned, 0);
    assert_eq!(l1.received, s1.app_rx);
}

/// The two lanes' receive laws and the fan-out sums, after the hand-over at stop.
fn check_lanes(s0: &LcoreStats, s1: &LcoreStats) {
    for s in [s0, s1] {
        assert_eq!(
            s.rx_packets + s.fanout_in,
            s.rx_loopback
                + s.rx_malformed
                + s.rx_unknown_ethertype
                + s.rx_arp
                + s.rx_nd
                + s.rx_ctrl_full
                + s.app_rx
                + s.stop_dropped_rx
                + s.fanout_out
                + s.fanout_full,
            "{s:?}"
        );
    }
    assert_eq!(s0.fanout_out, s0.fanout_in + s1.fanout_in);
    // Lane 0 took back (and freed, counting it as a stop drop) what it handed over
    // after lane 1 stopped.
    assert!(s0.fanout_in > 0, "{s0:?}");
    assert!(s0.stop_dropped_rx >= s0.fanout_in, "{s0:?}");
}

#[test]
fn a_fanout_ring_size_out_of_range_is_refused_by_name() {
    let fabric = fabric();
    let cpu = core_affinity::get_core_ids().map_or(0, |v| v[0].id);
    for n in [0, 16, 100, 65_536] {
        let e = Stack::builder()
            .fabric(&fabric, "x")
            .data_cores(2)
            .cpus(vec![cpu; 2])
            .fanout(Fanout::FlowHash { ring_size: n })
            .build()
            .expect_err("refused");
        assert!(
            matches!(
                e,
                ibpoll::Error::BadConfig {
                    field: "fanout.ring_size",
                    ..
                }
            ),
            "{n}: {e}"
        );
    }
}
