//! RSS where the device offers it, and bad configurations answered with typed errors.

mod common;

use std::sync::Arc;

use common::*;
use ibpoll::{ControlCore, Dest, Error, Stack};
use ibpoll_wire::PKey;

const A_IP: [u8; 4] = [10, 0, 0, 1];
const B_IP: [u8; 4] = [10, 0, 0, 2];

/// Where the device spreads a QPN's traffic over receive queues by a flow hash (RSS, an
/// opt-in capability of the simulated fabric; raw-packet QPs on Ethernet ports in
/// verbs), the interface's QP gets one receive queue per lane: unicast flows spread.
#[test]
fn with_rss_two_lanes_share_the_unicast_flows() {
    let _serial = serial();
    let fabric =
        ibpoll_pmd_sim::SimFabric::new(ibpoll_pmd_sim::FabricConfig::default().with_rss(2));
    let cpus: Vec<usize> = core_affinity::get_core_ids()
        .map(|v| v.into_iter().map(|c| c.id).collect())
        .unwrap_or_else(|| vec![0]);
    // a: two data lcores (CPUs permitting), the controller polled from lcore 0.
    let probes_a: Vec<Arc<Probe>> = (0..2).map(|_| Arc::new(Probe::default())).collect();
    let data_cores = cpus.len().min(2);
    let a = {
        let probes = probes_a.clone();
        host(&fabric, "a", A_IP, 0)
            .data_cores(data_cores)
            .cpus(cpus[..data_cores].to_vec())
            .start(move |i| TestApp::new(probes[i].clone(), A_IP, B_IP, None))
            .expect("stack a")
    };
    assert_eq!(a.data_cores(), data_cores);
    let pb = Arc::new(Probe::default());
    let b = {
        let p = pb.clone();
        host(&fabric, "b", B_IP, 1)
            .pin(false)
            .start(move |_| {
                TestApp::new(p.clone(), B_IP, A_IP, Some(Dest::NextHop(A_IP))).flows(64)
            })
            .expect("stack b")
    };
    assert!(a.wait_link_up(T).unwrap() && b.wait_link_up(T).unwrap());
    // First contact: no more than the neighbour queue holds (3) until resolved.
    pb.allow(3);
    let received = || probes_a.iter().map(|p| p.received.get()).sum::<u64>();
    wait_for("the first 3 datagrams at a", T, || received() == 3);
    pb.allow(4000);
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // UD is unreliable: a receive ring that overflows while its lcore sleeps drops
        // (counted by the fabric).
        wait_for("4000 datagrams at a or counted as overruns", T, || {
            received() + fabric.stats().drop_count("no_receive_posted") == 4000
        })
    }));
    assert_eq!(
        received() + fabric.stats().drop_count("no_receive_posted"),
        4000,
        "a: {:?}\nb: {:?}\nctrl a {:?}\nctrl b {:?}\nfabric {:?}",
        a.all_stats(),
        b.all_stats(),
        a.ctrl_stats(),
        b.ctrl_stats(),
        fabric.stats()
    );
    let stats = a.all_stats();
    if data_cores == 2 {
        for (i, s) in stats.iter().enumerate() {
            assert!(s.app_rx > 0, "lcore {i} received nothing: {stats:?}");
            assert!(s.iterations > 0);
            assert!(probes_a[i].received.get() > 0);
        }
    }
    let ra = a.stop().unwrap();
    assert_conserved(&ra);
    let rb = b.stop().unwrap();
    assert_conserved(&rb);
    assert_eq!(ra.pool_in_use + rb.pool_in_use, 0);
    assert_eq!(
        ra.total().app_rx + fabric.stats().drop_count("no_receive_posted"),
        4000
    );
}

#[test]
fn the_default_polls_the_controller_from_data_lcore_0() {
    assert_eq!(ControlCore::default(), ControlCore::OnDataLcore0);
}

fn start_err(b: ibpoll::StackBuilder) -> Error {
    match b.start(|_| ibpoll::Discard) {
        Ok(s) => {
            let _ = s.stop();
            panic!("the configuration was accepted");
        }
        Err(e) => e,
    }
}

#[test]
fn bad_configurations_are_typed_errors_that_name_the_input() {
    let _serial = serial();
    let fabric = fabric();
    let base = || host(&fabric, "bad", A_IP, 0);

    let e = start_err(base().data_cores(0));
    assert!(
        matches!(
            e,
            Error::BadConfig {
                field: "data_cores",
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("data_cores = 0"), "{e}");

    let n = usable_cpus();
    let e = start_err(Stack::builder().fabric(&fabric, "many").data_cores(n + 1));
    assert!(matches!(e, Error::TooManyCores { .. }), "{e}");
    assert!(e.to_string().contains(".data_cores()"), "{e}");
    let e = start_err(
        Stack::builder()
            .fabric(&fabric, "many")
            .data_cores(n)
            .control(ControlCore::Dedicated),
    );
    assert!(matches!(e, Error::TooManyCores { .. }), "{e}");
    assert!(e.to_string().contains("OnDataLcore0"), "{e}");
    let e = start_err(base().cpus(vec![100_000]));
    assert!(matches!(e, Error::NoSuchCpu { cpu: 100_000, .. }), "{e}");

    let e = start_err(base().pool_size(u32::MAX));
    assert!(matches!(e, Error::Pool { .. }), "{e}");
    let chain = format!("{e}: {}", std::error::Error::source(&e).unwrap());
    assert!(chain.contains("n_bufs"), "{chain}");
    let e = start_err(base().pool_size(0));
    assert!(matches!(e, Error::Pool { .. }), "{e}");
    let e = start_err(base().pool_size(100));
    assert!(matches!(e, Error::PoolTooSmall { n_bufs: 100, .. }), "{e}");
    assert!(e.to_string().contains(".pool_size(100)"), "{e}");

    let e = start_err(base().pkey(PKey(0x1234)));
    assert!(matches!(e, Error::Partition { .. }), "{e}");
    assert!(
        e.to_string().contains("0x1234") || e.to_string().contains("1234"),
        "{e}"
    );
    assert!(e.to_string().contains("ffff"), "{e}");
    let e = start_err(base().pkey(PKey(0)));
    assert!(matches!(e, Error::BadConfig { field: "pkey", .. }), "{e}");

    let e = start_err(base().rx_ring_size(33));
    assert!(
        matches!(
            e,
            Error::Device {
                op: "create_ud_qp",
                ..
            }
        ),
        "{e}"
    );
    let chain = format!("{e}: {}", std::error::Error::source(&e).unwrap());
    assert!(chain.contains("rx_ring_size"), "{chain}");
}

#[test]
fn dedicated_control_lcore_and_end_of_run_stop() {
    let _serial = serial();
    let cpus: Vec<usize> = core_affinity::get_core_ids()
        .map(|v| v.into_iter().map(|c| c.id).collect())
        .unwrap_or_else(|| vec![0]);
    if cpus.len() < 2 {
        eprintln!("skipped: a dedicated control lcore needs 2 usable CPUs");
        return;
    }
    let fabric = fabric();
    let pa = Arc::new(Probe::default());
    let pb = Arc::new(Probe::default());
    let a = {
        let (p, peer) = (pa.clone(), pb.clone());
        host(&fabric, "a", A_IP, 0)
            .control(ControlCore::Dedicated)
            .cpus(vec![cpus[0], cpus[1]])
            .start(move |_| {
                TestApp::new(p.clone(), A_IP, B_IP, Some(Dest::NextHop(B_IP))).window(&peer, 256)
            })
            .expect("stack a")
    };
    let b = {
        let p = pb.clone();
        host(&fabric, "b", B_IP, 1)
            .start(move |_| TestApp::new(p.clone(), B_IP, A_IP, None))
            .expect("stack b")
    };
    assert!(a.wait_link_up(T).unwrap() && b.wait_link_up(T).unwrap());
    pa.allow(3);
    wait_for("3 datagrams at b", T, || pb.received.get() == 3);
    pa.allow(1003);
    wait_for("1003 datagrams at b", T, || pb.received.get() == 1003);
    let gid = a.hwaddr().gid();
    // "End of run": stop after a short run, as on Ctrl-C.
    let ra = a
        .run_until_ctrl_c(Some(std::time::Duration::from_millis(20)))
        .unwrap();
    assert_conserved(&ra);
    assert!(ra.flushed);
    assert_eq!(ra.pool_in_use, 0);
    assert!(
        ra.ctrl.joins_ok >= 1 && ra.ctrl.leaves_done >= 1,
        "{:?}",
        ra.ctrl
    );
    assert_eq!(fabric.with_sa(|sa| sa.memberships_of(&gid).count()), 0);
    let rb = b.stop().unwrap();
    assert_conserved(&rb);
    assert_eq!(rb.pool_in_use, 0);
}
