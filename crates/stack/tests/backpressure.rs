//! The send path under back-pressure and late completions (`ibpoll_devtest::Backpressure`
//! wrapping the simulated port): send queues take part of each burst and complete sends
//! several iterations later, so the TX tables hold packets across iterations and retry
//! them (and drop what stays refused, counted), while the port flaps under traffic:
//! every flap drops the neighbour and retires its address handle, across several
//! snapshot publications. The wrapper checks the contract throughout: no handle is
//! destroyed while a send naming it is outstanding, no send names a destroyed handle.
//! (`crates/ctrl/tests/ah_lifetime.rs` pins the handle's lifetime down step by step.)

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use ibpoll_dev::Port;
use ibpoll_devtest::{Backpressure, BackpressureConfig, WrappedDevice};

const A_IP: [u8; 4] = [10, 0, 0, 1];
const B_IP: [u8; 4] = [10, 0, 0, 2];

#[test]
fn retries_and_address_handles_through_late_completions() {
    let _serial = serial();
    let fabric = fabric();
    let dev_a = fabric.add_node("a", 1);
    let port_a = dev_a.port_id(1);
    let bp: Arc<Mutex<Option<Arc<Backpressure>>>> = Arc::default();
    let wrapped = {
        let bp = bp.clone();
        WrappedDevice::new(dev_a.clone(), move |p| {
            // Bursts take 0 to 8 of what they are offered; sends complete 10 to 40 ticks
            // after they are taken.
            let w = Backpressure::new(p, BackpressureConfig::new(7).accept(0, 8).delay(10, 40));
            *bp.lock().unwrap() = Some(w.clone());
            Ok(w as Arc<dyn Port>)
        })
    };
    let (pa, pb) = (Arc::new(Probe::default()), Arc::new(Probe::default()));
    // No flow-control window: the flaps drop packets (counted), which a window would
    // wait for forever.
    let a = {
        let p = pa.clone();
        host(&fabric, "a", A_IP, 0)
            .device(wrapped, 1)
            .clock(fabric.clock())
            .start(move |_| TestApp::new(p.clone(), A_IP, B_IP, Some(ibpoll::Dest::NextHop(B_IP))))
            .expect("stack a")
    };
    let b = start_unicast(host(&fabric, "b", B_IP, 1), &pb, &pa, (B_IP, A_IP), 256);
    assert!(a.wait_link_up(T).unwrap() && b.wait_link_up(T).unwrap());
    let bp = bp.lock().unwrap().clone().expect("a's port is wrapped");
    pa.allow(3);
    wait_for("first contact", T, || pb.received.get() == 3);
    let mut allowed = 3;
    for round in 0..4 {
        // Traffic flows (the neighbour is resolved) and is in the middle of a burst
        // when the port goes down.
        allowed += 2000;
        pa.allow(allowed);
        let before = pb.received.get();
        wait_for("traffic", T, || pb.received.get() >= before + 500);
        // Flap a's port under traffic: a normal flush drops the neighbour, whose
        // address handle sends held in the wrapper still name.
        fabric.set_port_up(port_a, false);
        std::thread::sleep(Duration::from_millis(20));
        fabric.set_port_up(port_a, true);
        assert!(a.wait_link_up(T).unwrap(), "round {round}: link not back");
        // Whatever the app pushed meanwhile went to the control core (counted); first
        // contact again: 3 datagrams resolve the neighbour before the next burst.
        settle(|| pa.sent.get(), Duration::from_millis(50), T);
        allowed = pa.sent.get() + 3;
        pa.allow(allowed);
        wait_for("the neighbour again", T, || {
            a.with_controller(move |c| c.snapshot().neighbour_nh(&B_IP).is_some())
                .unwrap()
        });
    }
    pa.halt.store(true, std::sync::atomic::Ordering::Relaxed);
    settle(
        || pb.received.get() + a.total_stats().tx_posted,
        Duration::from_millis(300),
        T,
    );
    let ra = a.stop().unwrap();
    let rb = b.stop().unwrap();
    assert_conserved(&rb);
    ibpoll_testkit::stack::assert_conserved(&ra);
    let (ta, ca) = (ra.total(), &ra.ctrl);
    // The retry path ran, and the handles of four flaps died through it safely.
    assert!(ta.tx_retries > 0, "{ta:?}");
    assert!(ca.ah_destroyed >= 4, "{ca:?}");
    assert_eq!(bp.violations().total(), 0, "{:?}", bp.violations());
    let s = bp.stats();
    assert!(s.offered > s.taken, "{s:?}");
    assert_eq!(s.taken, s.completed, "every send taken completed: {s:?}");
    // The wrapper took what the lanes and the control core (ARP, queued packets) posted.
    assert_eq!(ta.tx_posted + ca.tx_sent, s.taken, "{ta:?} {s:?}");
    // Every datagram a sent is at b or counted somewhere.
    let drops = ta.tx_dropped() + ibpoll::ctrl_packet_drops(ca) + fabric.stats().dropped();
    assert_eq!(
        pa.sent.get(),
        pb.received.get() + drops,
        "a {ta:?}\nctrl {ca:?}\nfabric {:?}\nb {:?}\nctrl b {:?}",
        fabric.stats(),
        rb.total(),
        rb.ctrl
    );
    assert_eq!(ra.pool_in_use + rb.pool_in_use, 0);
}
