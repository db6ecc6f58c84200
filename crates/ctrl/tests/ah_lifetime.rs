//! An address handle outlives every send that names it (DESIGN, driver contract v2):
//! the controller retires it when the last snapshot naming it is reclaimed, and destroys
//! it only once every data core's send queue completed what it had posted by then. Here
//! a data core's send is held by `ibpoll_devtest::Backpressure` (it completes only after
//! its queue was polled `DELAY` times) while the neighbour it went to is dropped by a
//! flush; the wrapper checks the precondition of `destroy_ah`.

mod common;

use std::sync::Arc;

use common::*;
use ibpoll_ctrl::CtrlConfig;
use ibpoll_dev::{Clock, Device, Port};
use ibpoll_devtest::{Backpressure, BackpressureConfig};
use ibpoll_pmd_sim::FaultConfig;
use ibpoll_testkit::data;
use ibpoll_wire::PKey;

const IP_A: [u8; 4] = [10, 0, 0, 1];
const IP_B: [u8; 4] = [10, 0, 0, 2];
/// Polls of a send queue before a send it took completes.
const DELAY: u64 = 20_000;

fn cfg(ip: [u8; 4]) -> CtrlConfig {
    CtrlConfig {
        ipv4: Some(ip),
        data_cores: 1,
        ..CtrlConfig::default()
    }
}

/// Host `a` on a port whose send queues complete a send only after `delay` polls.
fn held_host(net: &Net, delay: u64) -> (Host, Arc<Backpressure>) {
    let dev = net.fabric.add_node("a", 1);
    let bp = Backpressure::new(
        dev.open_port(1).expect("port"),
        BackpressureConfig::new(1)
            .accept(64, 64)
            .delay(delay, delay),
    );
    let port: Arc<dyn Port> = bp.clone();
    let pkey_index = port.attr().pkey_index(PKey::DEFAULT).expect("partition");
    let pool = data::pool("a", 1024);
    let qp = data::ipoib_qp(&*port, pkey_index, &pool, 256);
    let clock: Arc<dyn Clock> = net.clock.clone();
    let host = Host::on_port("a", dev.port_id(1), port, qp, cfg(IP_A), pool, clock);
    (host, bp)
}

#[test]
fn a_handle_is_destroyed_only_after_the_sends_naming_it_completed() {
    let net = Net::new(FaultConfig::NONE);
    let mut b = Host::new(&net, "b", cfg(IP_B));
    let (mut a, bp) = held_host(&net, DELAY);
    run_until(&net, &mut [&mut a, &mut b], secs(5), ms(10), |h| {
        h[0].ctl.link_up() && h[1].ctl.link_up()
    });
    // Resolve b. The control core's own sends (ARP, the first packet) are held too:
    // each controller poll polls its queue once.
    assert!(a.data_send_unicast(0, IP_B, 0));
    for _ in 0..200 {
        run(&net, &mut [&mut a, &mut b], ms(10), ms(10));
        for _ in 0..DELAY {
            a.ctl.poll();
        }
        if a.cores[0].reader.get().neighbour_nh(&IP_B).is_some() {
            break;
        }
    }
    for _ in 0..DELAY + 1 {
        a.ctl.poll();
    }
    let ah = {
        let snap = a.cores[0].reader.get();
        let id = snap.neighbour_nh(&IP_B).expect("b resolved");
        snap.nh(id).expect("published").ah
    };
    // A data core's send to b: taken by the queue, completed only much later.
    let before = bp.outstanding(ah);
    assert!(a.data_send_unicast(0, IP_B, 1));
    assert_eq!(bp.outstanding(ah), before + 1, "the send is held");
    // The interface goes down: the neighbour is dropped, every snapshot naming it is
    // reclaimed (the data core passes quiescent points in `step`).
    a.ctl.set_admin_up(false);
    run(&net, &mut [&mut a, &mut b], secs(1), ms(10));
    assert_eq!(a.ctl.neighbour_count(), 0);
    assert!(bp.outstanding(ah) > 0, "still held");
    assert!(
        a.ctl.ah_waiting() >= 1,
        "b's handle is retired and waits for the send to complete"
    );
    assert_eq!(bp.violations().total(), 0, "{:?}", bp.violations());
    // The send completes; the next poll destroys the handle.
    while a.tx.completed() < a.posted {}
    assert_eq!(bp.outstanding(ah), 0);
    let destroyed = a.ctl.stats().ah_destroyed;
    run(&net, &mut [&mut a, &mut b], ms(50), ms(10));
    assert_eq!(a.ctl.ah_waiting(), 0);
    assert!(a.ctl.stats().ah_destroyed > destroyed);
    assert_eq!(bp.violations().total(), 0, "{:?}", bp.violations());
}
