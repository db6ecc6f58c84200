//! The data path does not allocate: a counting global allocator watches the data lcores
//! of a sender and a receiver during steady traffic (neighbours resolved, nothing
//! changing in the control plane), with the controllers on their own lcores.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;
use ibpoll::{App, ControlCore, Dest, LcoreCtx, Tx};
use ibpoll_testkit::alloc::{self, CountingAlloc};

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Switches counting for this lcore from the test's switch every iteration.
struct Tracked {
    inner: TestApp,
    on: Arc<AtomicBool>,
}

impl App for Tracked {
    fn on_burst(&mut self, ctx: &LcoreCtx, rx: &mut ibpoll_mem::MbufArray, tx: &mut Tx) {
        self.inner.on_burst(ctx, rx, tx);
    }

    fn poll(&mut self, ctx: &LcoreCtx, tx: &mut Tx) -> bool {
        alloc::count_this_thread(self.on.load(Ordering::Relaxed));
        self.inner.poll(ctx, tx)
    }
}

#[test]
fn steady_traffic_allocates_nothing_on_the_data_lcores() {
    let _serial = serial();
    let cpus: Vec<usize> = core_affinity::get_core_ids()
        .map(|v| v.into_iter().map(|c| c.id).collect())
        .unwrap_or_else(|| vec![0]);
    if cpus.len() < 2 {
        eprintln!("skipped: needs 2 usable CPUs for dedicated control lcores");
        return;
    }
    const A_IP: [u8; 4] = [10, 0, 0, 1];
    const B_IP: [u8; 4] = [10, 0, 0, 2];
    let fabric = fabric();
    let on = Arc::new(AtomicBool::new(false));
    let (pa, pb) = (Arc::new(Probe::default()), Arc::new(Probe::default()));
    let a = {
        let (p, peer, on) = (pa.clone(), pb.clone(), on.clone());
        host(&fabric, "a", A_IP, 0)
            .control(ControlCore::Dedicated)
            .cpus(vec![cpus[0], cpus[1]])
            .start(move |_| Tracked {
                inner: TestApp::new(p.clone(), A_IP, B_IP, Some(Dest::NextHop(B_IP)))
                    .window(&peer, 256),
                on: on.clone(),
            })
            .expect("stack a")
    };
    let b = {
        let (p, on) = (pb.clone(), on.clone());
        host(&fabric, "b", B_IP, 1)
            .control(ControlCore::Dedicated)
            .cpus(vec![cpus[1], cpus[0]])
            .start(move |_| Tracked {
                inner: TestApp::new(p.clone(), B_IP, A_IP, None),
                on: on.clone(),
            })
            .expect("stack b")
    };
    assert!(a.wait_link_up(T).unwrap() && b.wait_link_up(T).unwrap());
    pa.allow(3);
    wait_for("first contact", T, || pb.received.get() == 3);
    pa.allow(1003);
    wait_for("warm-up traffic", T, || pb.received.get() == 1003);

    pa.allow(u64::MAX);
    on.store(true, Ordering::Relaxed);
    let start = pb.received.get();
    wait_for("20000 datagrams while counting", T, || {
        pb.received.get() >= start + 20_000
    });
    on.store(false, Ordering::Relaxed);
    pa.halt.store(true, Ordering::Relaxed);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let allocs = alloc::allocs();
    let (ra, rb) = (a.stop().unwrap(), b.stop().unwrap());
    assert_conserved(&ra);
    assert_conserved(&rb);
    assert_eq!(
        allocs,
        0,
        "the data lcores allocated during steady traffic\na: {:?}\nb: {:?}",
        ra.total(),
        rb.total()
    );
}
