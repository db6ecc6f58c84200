//! The forwarder between two partitions of one simulated fabric: source on 0xffff,
//! forwarder with one interface on each, sink on 0x8001.

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use common::*;
use ibpoll::{App, GroupAddr, LcoreCtx, Tx};
use ibpoll_ctrl::GroupPhase;
use ibpoll_dev::{Device, Port, TxCounters, TxQueue, UdQp, UdQpConfig};
use ibpoll_wire::{PKey, QKey, Qpn};
use ipoib_fwd::traffic::{datagram_seq, Sink, Source, SourceConfig, TrafficCounters};
use ipoib_fwd::{start_forwarder, Forwarder, FwdCounters};

fn source_cfg(window: u64) -> SourceConfig {
    SourceConfig {
        window,
        flows: 4,
        ..SourceConfig::default()
    }
}

#[test]
fn unicast_across_two_partitions_with_arp_and_path_resolution_on_first_contact() {
    let _s = serial();
    let fabric = fabric();
    let (sc, kc) = (
        arc(TrafficCounters::default()),
        arc(TrafficCounters::default()),
    );
    sc.budget.store(0, Ordering::Relaxed);
    let sink = {
        let k = kc.clone();
        endpoint(&fabric, "sink", PKey(0x8001), SINK_IP)
            .start(move |_| Sink::new(k.clone()))
            .unwrap()
    };
    let fwd = start_forwarder(&fabric, "fwd", &fwd_config()).unwrap();
    assert_eq!(fwd.stack().ifaces(), 2);
    let source = {
        let (s, k) = (sc.clone(), kc.clone());
        endpoint(&fabric, "source", PKey::DEFAULT, SRC_IP)
            .start(move |_| Source::new(source_cfg(128), s.clone(), Some(k.clone())))
            .unwrap()
    };
    assert!(sink.wait_link_up(T).unwrap());
    assert!(fwd.wait_link_up(T).unwrap());
    assert!(source.wait_link_up(T).unwrap());
    let s = fwd.stack();
    assert_ne!(s.iface_qpn(0), s.iface_qpn(1), "one UD QP per partition");

    // First contact on both hops: 3 datagrams wait in each control core (ARP, then a
    // path record), then go out.
    sc.budget.store(3, Ordering::Relaxed);
    wait_for("3 datagrams at the sink", T, || kc.received.get() == 3);
    let c0 = s.ctrl_stats_on(0).unwrap();
    let c1 = s.ctrl_stats_on(1).unwrap();
    assert!(
        c0.arp_replies_sent >= 1,
        "the forwarder answers the source's ARP on 0xffff: {c0:?}"
    );
    assert!(
        c1.arp_requests_sent >= 1,
        "the forwarder resolves the sink on 0x8001: {c1:?}"
    );
    assert!(c1.paths_ok >= 1, "{c1:?}");
    assert!(c1.neigh_sent_from_queue >= 1, "{c1:?}");
    let src_ctrl = source.ctrl_stats().unwrap();
    assert!(
        src_ctrl.arp_requests_sent >= 1 && src_ctrl.paths_ok >= 1,
        "{src_ctrl:?}"
    );

    sc.budget.store(2003, Ordering::Relaxed);
    wait_for("2003 datagrams at the sink", T, || {
        kc.received.get() == 2003
    });
    assert_eq!(kc.bad_ttl.get(), 0, "every datagram arrives with TTL 63");
    assert_eq!(kc.foreign.get(), 0);
    let (rs, rf, rk) = (
        source.stop().unwrap(),
        fwd.stop().unwrap(),
        sink.stop().unwrap(),
    );
    for r in [&rs, &rf.stack, &rk] {
        assert_conserved(r);
    }
    assert_eq!(rf.fwd.rx, 2003);
    assert_eq!(rf.fwd.forwarded, 2003);
    assert_eq!(rf.fwd.dropped(), 0, "{:?}", rf.fwd);
    assert_eq!(rf.stack.ctrl_ifaces.len(), 2);
    assert_eq!(rs.pool_in_use + rf.stack.pool_in_use + rk.pool_in_use, 0);
    assert_eq!(fabric.stats().dropped(), 0, "{:?}", fabric.stats());
}

#[test]
fn ttl_1_is_dropped_and_counted_and_ttl_2_arrives_with_1() {
    let _s = serial();
    let fabric = fabric();
    let (sc, kc) = (
        arc(TrafficCounters::default()),
        arc(TrafficCounters::default()),
    );
    let (sc2, _) = (arc(TrafficCounters::default()), ());
    sc.budget.store(0, Ordering::Relaxed);
    sc2.budget.store(0, Ordering::Relaxed);
    let sink = {
        let k = kc.clone();
        endpoint(&fabric, "sink", PKey(0x8001), SINK_IP)
            .start(move |_| {
                let mut s = Sink::new(k.clone());
                s.ttl = 1;
                s
            })
            .unwrap()
    };
    let fwd = start_forwarder(&fabric, "fwd", &fwd_config()).unwrap();
    // Two sources: TTL 1 and TTL 2.
    let mk = |name: &str, ip: [u8; 4], ttl: u8, c: &Arc<TrafficCounters>| {
        let c = c.clone();
        let cfg = SourceConfig {
            src: ip,
            ttl,
            window: 0,
            ..SourceConfig::default()
        };
        endpoint(&fabric, name, PKey::DEFAULT, ip)
            .start(move |_| Source::new(cfg, c.clone(), None))
            .unwrap()
    };
    let s1 = mk("ttl1", SRC_IP, 1, &sc);
    let s2 = mk("ttl2", [10, 1, 0, 3], 2, &sc2);
    for st in [&sink, fwd.stack(), &s1, &s2] {
        assert!(st.wait_link_up(T).unwrap());
    }
    sc2.budget.store(3, Ordering::Relaxed);
    wait_for("3 TTL-2 datagrams at the sink", T, || {
        kc.received.get() == 3
    });
    sc.budget.store(3, Ordering::Relaxed);
    wait_for("3 TTL-1 datagrams dropped", T, || {
        fwd.stats().ttl_expired == 3
    });
    sc.budget.store(50, Ordering::Relaxed);
    sc2.budget.store(50, Ordering::Relaxed);
    wait_for("50 TTL-1 datagrams dropped", T, || {
        fwd.stats().ttl_expired == 50
    });
    wait_for("50 TTL-2 datagrams at the sink", T, || {
        kc.received.get() == 50
    });
    let (r1, r2, rf, rk) = (
        s1.stop().unwrap(),
        s2.stop().unwrap(),
        fwd.stop().unwrap(),
        sink.stop().unwrap(),
    );
    for r in [&r1, &r2, &rf.stack, &rk] {
        assert_conserved(r);
    }
    assert_eq!(rf.fwd.ttl_expired, 50);
    assert_eq!(rf.fwd.forwarded, 50);
    assert_eq!(rf.fwd.dropped(), 50, "{:?}", rf.fwd);
    assert_eq!(
        rf.stack.total().app_dropped,
        50,
        "the stack counts the verdicts too"
    );
    assert_eq!(kc.bad_ttl.get(), 0, "forwarded datagrams arrive with TTL 1");
    assert_eq!(kc.received.get(), 50);
}

// ---- multicast -------------------------------------------------------------------

const GROUP: [u8; 4] = [239, 1, 0, 5];

/// The forwarder with a multicast route 239.1.0.0/29 from interface 0 (0xffff) to 1
/// (0x8001).
fn mcast_fwd_config() -> ipoib_fwd::FwdConfig {
    ipoib_fwd::FwdConfig {
        mroutes: vec!["239.1.0.0/29,from=0,to=1".parse().unwrap()],
        ..fwd_config()
    }
}

/// A sink on 0x8001 subscribed (full member) to `GROUP`, Joined.
fn mcast_sink(
    fabric: &ibpoll_pmd_sim::SimFabric,
    kc: &Arc<TrafficCounters>,
    ttl: u8,
) -> ibpoll::Stack {
    let k = kc.clone();
    let sink = endpoint(fabric, "sink", PKey(0x8001), SINK_IP)
        .start(move |_| {
            let mut s = Sink::new(k.clone());
            s.ttl = ttl;
            s
        })
        .unwrap();
    assert!(sink.join_group(GroupAddr::Ipv4(GROUP)).unwrap());
    assert!(sink.wait_link_up(T).unwrap());
    wait_for("the sink's subscription", T, || {
        sink.with_controller(|c| c.group_phase(GroupAddr::Ipv4(GROUP)))
            .unwrap()
            == Some(GroupPhase::Joined)
    });
    sink
}

/// A source on 0xffff sending to `GROUP` with TTL `ttl`, held by its budget; with the
/// sink's counters (`peer`) at most 128 datagrams in flight, else open loop.
fn mcast_source(
    fabric: &ibpoll_pmd_sim::SimFabric,
    name: &str,
    ip: [u8; 4],
    ttl: u8,
    c: &Arc<TrafficCounters>,
    peer: Option<&Arc<TrafficCounters>>,
) -> ibpoll::Stack {
    c.budget.store(0, Ordering::Relaxed);
    let c = c.clone();
    let cfg = SourceConfig {
        src: ip,
        dst: GROUP,
        // A multicast next hop is the group itself: a send-only join on the source.
        gateway: GROUP,
        ttl,
        window: if peer.is_some() { 128 } else { 0 },
        flows: 4,
        ..SourceConfig::default()
    };
    let peer = peer.cloned();
    endpoint(fabric, name, PKey::DEFAULT, ip)
        .start(move |_| Source::new(cfg, c.clone(), peer.clone()))
        .unwrap()
}

#[test]
fn multicast_crosses_two_partitions_after_the_joins() {
    let _s = serial();
    let fabric = fabric();
    let (sc, kc) = (
        arc(TrafficCounters::default()),
        arc(TrafficCounters::default()),
    );
    let sink = mcast_sink(&fabric, &kc, 63);
    let fwd = start_forwarder(&fabric, "fwd", &mcast_fwd_config()).unwrap();
    assert_eq!(fwd.mroutes().subscriptions().len(), 8);
    assert!(fwd.wait_ready(T).unwrap());
    assert_eq!(fwd.subscriptions_joined().unwrap(), 8);
    let s = fwd.stack();
    // Full member on the ingress interface only; nothing yet on the egress interface.
    let g = GroupAddr::Ipv4(GROUP);
    assert_eq!(
        s.with_controller_on(0, move |c| c.group_phase(g)).unwrap(),
        Some(GroupPhase::Joined)
    );
    assert_eq!(
        s.with_controller_on(1, move |c| c.group_phase(g)).unwrap(),
        None
    );
    let source = mcast_source(&fabric, "source", SRC_IP, 64, &sc, Some(&kc));
    assert!(source.wait_link_up(T).unwrap());

    // First packets: they wait at the source's control core (send-only join on 0xffff),
    // then at the forwarder's interface-1 control core (send-only join on 0x8001).
    sc.budget.store(3, Ordering::Relaxed);
    wait_for("3 multicast datagrams at the sink", T, || {
        kc.received.get() == 3
    });
    let c1 = s.ctrl_stats_on(1).unwrap();
    assert!(
        c1.mcast_queued >= 1,
        "the first packets waited for the join: {c1:?}"
    );
    assert!(c1.mcast_sent_from_queue >= 1, "{c1:?}");
    assert_eq!(
        s.with_controller_on(1, move |c| c.group_phase(g)).unwrap(),
        Some(GroupPhase::Joined),
        "a send-only join on the egress interface"
    );
    assert!(source.ctrl_stats().unwrap().mcast_queued >= 1);

    const N: u64 = 2003;
    sc.budget.store(N, Ordering::Relaxed);
    wait_for("every multicast datagram at the sink", T, || {
        kc.received.get() == N
    });
    assert_eq!(kc.bad_ttl.get(), 0, "every datagram arrives with TTL 63");
    assert_eq!(kc.foreign.get(), 0);
    let (rs, rf, rk) = (
        source.stop().unwrap(),
        fwd.stop().unwrap(),
        sink.stop().unwrap(),
    );
    for r in [&rs, &rf.stack, &rk] {
        assert_conserved(r);
    }
    assert_eq!(rf.fwd.rx, N);
    assert_eq!(rf.fwd.forwarded, N);
    assert_eq!(rf.fwd.mcast_forwarded, N);
    assert_eq!(rf.fwd.dropped(), 0, "{:?}", rf.fwd);
    assert_eq!(sc.sent.get(), N);
    assert_eq!(rs.pool_in_use + rf.stack.pool_in_use + rk.pool_in_use, 0);
    assert_eq!(fabric.stats().dropped(), 0, "{:?}", fabric.stats());
    let left = fabric.with_sa(|sa| sa.groups().map(|g| g.members().count()).sum::<usize>());
    assert_eq!(left, 0, "every membership left at stop");
}

#[test]
fn multicast_ttl_1_is_dropped_and_counted_and_ttl_2_arrives_with_1() {
    let _s = serial();
    let fabric = fabric();
    let (sc, sc2, kc) = (
        arc(TrafficCounters::default()),
        arc(TrafficCounters::default()),
        arc(TrafficCounters::default()),
    );
    let sink = mcast_sink(&fabric, &kc, 1);
    let fwd = start_forwarder(&fabric, "fwd", &mcast_fwd_config()).unwrap();
    assert!(fwd.wait_ready(T).unwrap());
    let s1 = mcast_source(&fabric, "ttl1", SRC_IP, 1, &sc, None);
    let s2 = mcast_source(&fabric, "ttl2", [10, 1, 0, 3], 2, &sc2, None);
    for st in [&s1, &s2] {
        assert!(st.wait_link_up(T).unwrap());
    }
    sc2.budget.store(3, Ordering::Relaxed);
    wait_for("3 TTL-2 datagrams at the sink", T, || {
        kc.received.get() == 3
    });
    sc.budget.store(50, Ordering::Relaxed);
    sc2.budget.store(50, Ordering::Relaxed);
    wait_for("50 TTL-1 datagrams dropped", T, || {
        fwd.stats().mcast_ttl_expired == 50
    });
    wait_for("50 TTL-2 datagrams at the sink", T, || {
        kc.received.get() == 50
    });
    let (r1, r2, rf, rk) = (
        s1.stop().unwrap(),
        s2.stop().unwrap(),
        fwd.stop().unwrap(),
        sink.stop().unwrap(),
    );
    for r in [&r1, &r2, &rf.stack, &rk] {
        assert_conserved(r);
    }
    assert_eq!(rf.fwd.rx, 100);
    assert_eq!(rf.fwd.mcast_ttl_expired, 50);
    assert_eq!(rf.fwd.ttl_expired, 0, "unicast's counter is its own");
    assert_eq!(rf.fwd.mcast_forwarded, 50);
    assert_eq!(rf.fwd.dropped(), 50, "{:?}", rf.fwd);
    assert_eq!(
        rf.stack.total().app_dropped,
        50,
        "the stack counts the verdicts too"
    );
    assert_eq!(kc.bad_ttl.get(), 0, "forwarded datagrams arrive with TTL 1");
    assert_eq!(kc.received.get(), 50);
}

// ---- zero copy --------------------------------------------------------------------

type Log = Arc<Mutex<HashMap<u32, usize>>>;

/// A driver wrapper that records, for every datagram of the source handed to a send
/// queue, the address of the buffer the driver was given.
#[derive(Debug)]
struct RecDevice {
    inner: Arc<dyn Device>,
    sent: Log,
}

#[derive(Debug)]
struct RecPort {
    inner: Arc<dyn Port>,
    sent: Log,
}

#[derive(Debug)]
struct RecTx {
    inner: Box<dyn TxQueue>,
    sent: Log,
}

impl Device for RecDevice {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn node_guid(&self) -> u64 {
        self.inner.node_guid()
    }
    fn port_count(&self) -> u8 {
        self.inner.port_count()
    }
    fn open_port(&self, n: u8) -> Result<Arc<dyn Port>, ibpoll_dev::Error> {
        Ok(Arc::new(RecPort {
            inner: self.inner.open_port(n)?,
            sent: self.sent.clone(),
        }))
    }
}

impl Port for RecPort {
    ibpoll_dev::delegate_port!(inner: info, events, ah, mcast, mad);

    fn create_ud_qp(&self, cfg: &UdQpConfig) -> Result<UdQp, ibpoll_dev::Error> {
        let qp = self.inner.create_ud_qp(cfg)?;
        let tx = Box::new(RecTx {
            inner: qp.tx,
            sent: self.sent.clone(),
        });
        Ok(UdQp::new(qp.qpn, qp.rx, tx))
    }
    fn set_qp_qkey(&self, qpn: Qpn, qkey: QKey) -> Result<(), ibpoll_dev::Error> {
        self.inner.set_qp_qkey(qpn, qkey)
    }
    fn move_qp_pkey_index(
        &self,
        parked: &ibpoll_dev::Parked,
        pkey_index: u16,
    ) -> Result<usize, ibpoll_dev::Error> {
        self.inner.move_qp_pkey_index(parked, pkey_index)
    }
}

impl TxQueue for RecTx {
    fn src_qpn(&self) -> Qpn {
        self.inner.src_qpn()
    }
    fn tx_burst(&mut self, pkts: &mut ibpoll_mem::MbufArray, dst: &[ibpoll_dev::TxDst]) -> usize {
        {
            let mut log = self.sent.lock().unwrap();
            for m in pkts.as_slice() {
                // The data starts at the IPoIB header (4 bytes) the stack prepended.
                if let Some(seq) = m.data().get(4..).and_then(datagram_seq) {
                    let prev = log.insert(seq, m.buf_addr());
                    assert!(prev.is_none(), "datagram {seq} handed to the driver twice");
                }
            }
        }
        // A datagram the queue refuses comes back to the table and is offered again:
        // unlog what was not taken.
        let n = self.inner.tx_burst(pkts, dst);
        let mut log = self.sent.lock().unwrap();
        for m in pkts.as_slice() {
            if let Some(seq) = m.data().get(4..).and_then(datagram_seq) {
                log.remove(&seq);
            }
        }
        n
    }
    fn completed(&mut self) -> u64 {
        self.inner.completed()
    }
    fn counters(&self) -> Arc<TxCounters> {
        self.inner.counters()
    }
}

/// The forwarder, recording the address of every datagram's buffer as it is received.
struct Spy {
    fwd: Forwarder,
    received: Log,
}

impl App for Spy {
    fn on_burst(&mut self, ctx: &LcoreCtx, rx: &mut ibpoll_mem::MbufArray, tx: &mut Tx) {
        {
            let mut log = self.received.lock().unwrap();
            for m in rx.as_slice() {
                assert_eq!(
                    ctx.iface, 0,
                    "the source's datagrams come in on interface 0"
                );
                if let Some(seq) = datagram_seq(m.data()) {
                    log.insert(seq, m.buf_addr());
                }
            }
        }
        self.fwd.on_burst(ctx, rx, tx);
    }
}

#[test]
fn the_forwarder_transmits_the_very_buffer_it_received() {
    zero_copy(false);
}

#[test]
fn the_forwarder_transmits_the_very_multicast_buffer_it_received() {
    zero_copy(true);
}

/// Unicast, or multicast to `GROUP`, through a forwarder whose driver records buffers.
fn zero_copy(mcast: bool) {
    let _s = serial();
    let fabric = fabric();
    let (sc, kc) = (
        arc(TrafficCounters::default()),
        arc(TrafficCounters::default()),
    );
    sc.budget.store(0, Ordering::Relaxed);
    let sink = if mcast {
        mcast_sink(&fabric, &kc, 63)
    } else {
        let k = kc.clone();
        endpoint(&fabric, "sink", PKey(0x8001), SINK_IP)
            .start(move |_| Sink::new(k.clone()))
            .unwrap()
    };
    let cfg = if mcast {
        mcast_fwd_config()
    } else {
        fwd_config()
    };
    let mroutes = Arc::new(cfg.mroute_table().unwrap());
    let sent: Log = Arc::default();
    let received: Log = Arc::default();
    let device = Arc::new(RecDevice {
        inner: fabric.add_node("fwd", 1),
        sent: sent.clone(),
    });
    let table = Arc::new(cfg.route_table().unwrap());
    let counters = arc(FwdCounters::default());
    let fwd = {
        let (t, c, r) = (table.clone(), counters.clone(), received.clone());
        let local: Vec<[u8; 4]> = cfg.ifaces.iter().filter_map(|f| f.ipv4).collect();
        cfg.stack_builder()
            .device(device, 1)
            .clock(fabric.clock())
            .start(move |_| Spy {
                fwd: Forwarder::new(t.clone(), &local, c.clone()).with_mroutes(mroutes.clone()),
                received: r.clone(),
            })
            .unwrap()
    };
    if mcast {
        // What `start_on` does: subscribe on the ingress interface.
        let g = GroupAddr::Ipv4(GROUP);
        assert!(fwd.with_controller_on(0, move |c| c.join_group(g)).unwrap());
        wait_for("the forwarder's subscription", T, || {
            fwd.with_controller_on(0, move |c| c.group_phase(g))
                .unwrap()
                == Some(GroupPhase::Joined)
        });
    }
    let source = if mcast {
        mcast_source(&fabric, "source", SRC_IP, 64, &sc, Some(&kc))
    } else {
        let (s, k) = (sc.clone(), kc.clone());
        endpoint(&fabric, "source", PKey::DEFAULT, SRC_IP)
            .start(move |_| Source::new(source_cfg(64), s.clone(), Some(k.clone())))
            .unwrap()
    };
    for st in [&sink, &fwd, &source] {
        assert!(st.wait_link_up(T).unwrap());
    }
    // First contact: at most 3 datagrams wait for resolution per hop.
    sc.budget.store(3, Ordering::Relaxed);
    wait_for("3 datagrams at the sink", T, || kc.received.get() == 3);
    const N: u64 = 500;
    sc.budget.store(N, Ordering::Relaxed);
    wait_for("every datagram at the sink", T, || kc.received.get() == N);
    let (rs, rf, rk) = (
        source.stop().unwrap(),
        fwd.stop().unwrap(),
        sink.stop().unwrap(),
    );
    assert_eq!(
        kc.bad_ttl.get(),
        0,
        "the sink sees the original data, TTL decremented"
    );
    let (sent, received) = (sent.lock().unwrap(), received.lock().unwrap());
    assert_eq!(received.len() as u64, N);
    assert_eq!(
        sent.len() as u64,
        N,
        "every datagram handed to the driver once"
    );
    for (seq, addr) in sent.iter() {
        assert_eq!(
            received.get(seq),
            Some(addr),
            "datagram {seq} left in a different buffer than it came in"
        );
    }
    assert_eq!(counters.read().forwarded, N);
    assert_eq!(counters.read().mcast_forwarded, if mcast { N } else { 0 });
    assert_eq!(rs.pool_in_use + rf.pool_in_use + rk.pool_in_use, 0);
}
