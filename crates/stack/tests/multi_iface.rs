//! One stack serving two interfaces (partitions) of its port, as a DPDK l3fwd lcore
//! polls several ports: each received burst names its interface, and a packet is sent
//! on the interface the application names.

mod common;

use std::sync::Arc;

use common::*;
use ibpoll::{App, Dest, Error, IfaceConfig, LcoreCtx, Stack, Tx};
use ibpoll_dev::Counter;
use ibpoll_pmd_sim::{FabricConfig, SimFabric};
use ibpoll_wire::PKey;

const R0_IP: [u8; 4] = [10, 0, 0, 1];
const R1_IP: [u8; 4] = [10, 8, 0, 1];
const A_IP: [u8; 4] = [10, 0, 0, 2];
const B_IP: [u8; 4] = [10, 8, 0, 2];

fn two_partitions() -> SimFabric {
    SimFabric::new(FabricConfig {
        partitions: vec![PKey::DEFAULT, PKey(0x8001)],
        ..FabricConfig::default()
    })
}

fn r_builder(fabric: &SimFabric) -> ibpoll::StackBuilder {
    host(fabric, "r", R0_IP, 1)
        .interface(IfaceConfig {
            pkey: PKey::DEFAULT,
            ipv4: Some(R0_IP),
            prefix_len: 16,
        })
        .interface(IfaceConfig {
            pkey: PKey(0x8001),
            ipv4: Some(R1_IP),
            prefix_len: 16,
        })
}

/// Counts what arrives per interface and sends every datagram back to its sender on
/// the interface it came in on (addresses swapped: the checksum stays valid).
#[derive(Default)]
struct Echo {
    per_iface: [Counter; 2],
    links_seen: Counter,
}

struct EchoApp(Arc<Echo>);

impl App for EchoApp {
    fn on_burst(&mut self, ctx: &LcoreCtx, rx: &mut ibpoll_mem::MbufArray, tx: &mut Tx) {
        assert_eq!(ctx.ifaces, 2);
        assert!(ctx.link_up && ctx.link_up_on(ctx.iface));
        if ctx.link_up_on(0) && ctx.link_up_on(1) {
            self.0.links_seen.inc();
        }
        while let Some(mut m) = rx.pop() {
            self.0.per_iface[ctx.iface].inc();
            let d = m.data_mut();
            let mut src = [0u8; 4];
            src.copy_from_slice(&d[12..16]);
            let dst: [u8; 4] = d[16..20].try_into().unwrap();
            d[12..16].copy_from_slice(&dst);
            d[16..20].copy_from_slice(&src);
            assert!(tx.push(ctx.iface, m, Dest::NextHop(src)));
        }
    }
}

#[test]
fn one_stack_serves_two_partitions_and_names_the_interface_of_each_packet() {
    let _serial = serial();
    let fabric = two_partitions();
    let echo = Arc::new(Echo::default());
    let r = {
        let e = echo.clone();
        r_builder(&fabric)
            .start(move |_| EchoApp(e.clone()))
            .expect("stack r")
    };
    assert_eq!(r.ifaces(), 2);
    assert_eq!(r.iface_config(1).pkey, PKey(0x8001));
    assert_ne!(r.iface_qpn(0), r.iface_qpn(1));
    let (pa, pb) = (Arc::new(Probe::default()), Arc::new(Probe::default()));
    let a = {
        let p = pa.clone();
        host(&fabric, "a", A_IP, 0)
            .start(move |_| {
                TestApp::new(p.clone(), A_IP, R0_IP, Some(Dest::NextHop(R0_IP))).window(&p, 64)
            })
            .expect("stack a")
    };
    let b = {
        let p = pb.clone();
        host(&fabric, "b", B_IP, 0)
            .pkey(PKey(0x8001))
            .start(move |_| {
                TestApp::new(p.clone(), B_IP, R1_IP, Some(Dest::NextHop(R1_IP))).window(&p, 64)
            })
            .expect("stack b")
    };
    for s in [&r, &a, &b] {
        assert!(s.wait_link_up(T).unwrap());
    }
    assert!(r.link_up_on(0).unwrap() && r.link_up_on(1).unwrap());
    // First contact on each partition: 3 datagrams wait for ARP and the path record.
    pa.allow(3);
    pb.allow(3);
    wait_for("3 echoes at a and b", T, || {
        pa.received.get() == 3 && pb.received.get() == 3
    });
    pa.allow(503);
    pb.allow(303);
    wait_for("all echoes", T, || {
        pa.received.get() == 503 && pb.received.get() == 303
    });
    assert_eq!(echo.per_iface[0].get(), 503);
    assert_eq!(echo.per_iface[1].get(), 303);
    assert!(echo.links_seen.get() > 0);
    assert_eq!(pa.foreign.get() + pb.foreign.get(), 0);
    let c1 = r.ctrl_stats_on(1).unwrap();
    assert!(c1.arp_replies_sent >= 1 && c1.paths_ok >= 1, "{c1:?}");
    assert!(matches!(
        r.ctrl_stats_on(2),
        Err(Error::NoSuchIface {
            iface: 2,
            ifaces: 2
        })
    ));
    let gr = r.hwaddr().gid();
    assert_eq!(r.iface_hwaddr(1).gid(), gr, "one port, one GID");
    assert_eq!(
        fabric.with_sa(|sa| sa.memberships_of(&gr).count()),
        2,
        "r is a member of both partitions' broadcast groups"
    );
    let (rr, ra, rb) = (r.stop().unwrap(), a.stop().unwrap(), b.stop().unwrap());
    for rep in [&rr, &ra, &rb] {
        assert_conserved(rep);
    }
    assert!(rr.flushed, "both interfaces flushed");
    assert_eq!(rr.ctrl_ifaces.len(), 2);
    assert!(rr.ctrl_ifaces[1].arp_replies_sent >= 1);
    let t = rr.total();
    assert_eq!(t.app_rx, 806);
    assert_eq!(t.app_tx, 806);
    assert_eq!(rr.pool_in_use + ra.pool_in_use + rb.pool_in_use, 0);
    assert_eq!(
        fabric.with_sa(|sa| sa.memberships_of(&gr).count()),
        0,
        "every interface left its broadcast group"
    );
}

/// Pushes on an interface that does not exist.
struct Stray;

impl App for Stray {
    fn on_burst(&mut self, _: &LcoreCtx, _: &mut ibpoll_mem::MbufArray, _: &mut Tx) {}
    fn poll(&mut self, ctx: &LcoreCtx, tx: &mut Tx) -> bool {
        if ctx.link_up && ctx.lcore == 0 {
            if let Some(m) = tx.alloc() {
                assert!(!tx.push(7, m, Dest::NextHop([10, 0, 0, 9])));
            }
        }
        false
    }
}

#[test]
fn a_push_on_a_missing_interface_is_counted() {
    let _serial = serial();
    let fabric = two_partitions();
    let r = r_builder(&fabric).start(|_| Stray).unwrap();
    assert!(r.wait_link_up(T).unwrap());
    wait_for("tx_no_iface", T, || r.total_stats().tx_no_iface > 0);
    let rep = r.stop().unwrap();
    assert_conserved(&rep);
    assert_eq!(rep.pool_in_use, 0);
}

#[test]
fn bad_interface_lists_are_typed_errors() {
    let _serial = serial();
    let fabric = two_partitions();
    let one = |pkey| IfaceConfig {
        pkey,
        ipv4: Some([10, 0, 0, 1]),
        prefix_len: 24,
    };
    let e = host(&fabric, "dup", R0_IP, 0)
        .interface(one(PKey::DEFAULT))
        .interface(one(PKey::DEFAULT))
        .start(|_| ibpoll::Discard)
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::BadConfig {
                field: "interface.pkey",
                ..
            }
        ),
        "{e}"
    );
    let e = host(&fabric, "missing", R0_IP, 0)
        .interface(one(PKey::DEFAULT))
        .interface(one(PKey(0x7777)))
        .start(|_| ibpoll::Discard)
        .unwrap_err();
    assert!(matches!(e, Error::Partition { .. }), "{e}");
    let mut b = Stack::builder().fabric(&fabric, "many");
    for i in 0..9u16 {
        b = b.interface(one(PKey(0x8000 | (i + 1))));
    }
    let e = b.start(|_| ibpoll::Discard).unwrap_err();
    assert!(
        matches!(
            e,
            Error::BadConfig {
                field: "interface",
                ..
            }
        ),
        "{e}"
    );
    let e = host(&fabric, "len", R0_IP, 0)
        .interface(IfaceConfig {
            prefix_len: 33,
            ..one(PKey::DEFAULT)
        })
        .start(|_| ibpoll::Discard)
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::BadConfig {
                field: "prefix_len",
                ..
            }
        ),
        "{e}"
    );
}

/// Pushes a full burst on each of four interfaces in every iteration, `bursts` times:
/// what a forwarder with four busy ports does.
struct FourWide {
    bursts: u64,
    sent: Arc<Counter>,
}

impl App for FourWide {
    fn on_burst(&mut self, _: &LcoreCtx, _: &mut ibpoll_mem::MbufArray, _: &mut Tx) {}
    fn poll(&mut self, ctx: &LcoreCtx, tx: &mut Tx) -> bool {
        if self.bursts == 0 || (0..4).any(|i| !ctx.link_up_on(i)) {
            return false;
        }
        self.bursts -= 1;
        for iface in 0..4 {
            for seq in 0..ibpoll::BURST_MAX as u32 {
                let Some(mut m) = tx.alloc() else { return true };
                build(&mut m, R0_IP, [255; 4], 9000, seq);
                assert!(tx.push(iface, m, Dest::NextHop([255; 4])));
                self.sent.inc();
            }
        }
        true
    }
}

#[test]
fn four_busy_interfaces_send_full_bursts_without_drops() {
    let _serial = serial();
    let pkeys = [PKey::DEFAULT, PKey(0x8001), PKey(0x8002), PKey(0x8003)];
    let fabric = SimFabric::new(FabricConfig {
        partitions: pkeys.to_vec(),
        ..FabricConfig::default()
    });
    let mut b = host(&fabric, "r", R0_IP, 0).pool_size(16384);
    for (i, pkey) in pkeys.iter().enumerate() {
        b = b.interface(IfaceConfig {
            pkey: *pkey,
            ipv4: Some([10, i as u8, 0, 1]),
            prefix_len: 24,
        });
    }
    let sent = Arc::new(Counter::new());
    let r = {
        let sent = sent.clone();
        b.start(move |_| FourWide {
            bursts: 200,
            sent: sent.clone(),
        })
        .unwrap()
    };
    assert!(r.wait_link_up(T).unwrap());
    wait_for("every burst", T, || sent.get() == 200 * 4 * 32);
    settle(
        || r.total_stats().tx_posted,
        std::time::Duration::from_millis(100),
        T,
    );
    let rep = r.stop().unwrap();
    assert_conserved(&rep);
    let t = rep.total();
    // Each interface's table flushed as soon as it held a burst: nothing refused,
    // nothing dropped for want of room.
    assert_eq!(t.app_tx, 200 * 4 * 32);
    assert_eq!(t.tx_posted, t.app_tx, "{t:?}");
    assert_eq!(t.tx_full + t.tx_retries, 0, "{t:?}");
    assert_eq!(rep.pool_in_use, 0);
}
