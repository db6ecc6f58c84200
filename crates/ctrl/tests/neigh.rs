//! ARP over IPoIB and the neighbour table, end to end on the simulated fabric.

mod common;

use common::*;
use ibpoll_ctrl::{CtrlConfig, Request};
use ibpoll_pmd_sim::FaultConfig;
use ibpoll_wire::{arp, Lid};

const IP_A: [u8; 4] = [10, 0, 0, 1];
const IP_B: [u8; 4] = [10, 0, 0, 2];

fn cfg(ip: [u8; 4], cores: usize) -> CtrlConfig {
    CtrlConfig {
        ipv4: Some(ip),
        data_cores: cores,
        ..CtrlConfig::default()
    }
}

#[test]
fn arp_resolves_and_sends_queued_packets() {
    let net = Net::new(FaultConfig::NONE);
    let mut b = Host::new(&net, "b", cfg(IP_B, 1));
    run_until(&net, &mut [&mut b], secs(5), ms(10), |h| h[0].ctl.link_up());
    let mut a = Host::new(&net, "a", cfg(IP_A, 2));
    run_until(&net, &mut [&mut a, &mut b], secs(5), ms(10), |h| {
        h[0].ctl.link_up() && !h[1].arp_seen.is_empty()
    });
    // A's gratuitous ARP on link up.
    let g = b.arp_seen[0];
    assert_eq!(g.operation, arp::Operation::Request);
    assert_eq!((g.source_ip, g.target_ip), (IP_A, IP_A));
    assert_eq!(g.source_hwaddr, a.ctl.hwaddr());

    // Two data cores ask for the same new destination at once: one entry, at most 3
    // packets waiting, the 4th dropped and counted.
    assert!(a.data_send_unicast(0, IP_B, 0));
    assert!(a.data_send_unicast(1, IP_B, 1));
    assert!(a.data_send_unicast(0, IP_B, 2));
    assert!(a.data_send_unicast(1, IP_B, 3));
    a.ctl.poll();
    assert_eq!(a.ctl.neighbour_count(), 1);
    assert_eq!(a.ctl.stats().neigh_queue_full, 1);
    run_until(&net, &mut [&mut a, &mut b], secs(5), ms(10), |h| {
        h[1].received.len() >= 3
    });
    // Per data core, order is kept (core 0: 0, 2; core 1: 1; its second was dropped).
    let mut got = b.received.clone();
    got.sort();
    assert_eq!(got, [0, 1, 2]);
    let sa = a.ctl.stats();
    assert_eq!(sa.neigh_sent_from_queue, 3);
    assert_eq!(sa.paths_ok, 1);
    assert!(sa.arp_requests_sent >= 2, "gratuitous + request");
    assert_eq!(b.ctl.stats().arp_replies_sent, 1);

    // Resolved: the data cores send by themselves.
    let requests = a.ctl.stats().requests;
    assert!(a.cores[0].reader.get().neighbour(&IP_B).is_some());
    assert!(a.data_send_unicast(0, IP_B, 10));
    run(&net, &mut [&mut a, &mut b], ms(50), ms(10));
    assert_eq!(a.ctl.stats().requests, requests);
    assert_eq!(b.received[3..], [10]);

    // Malformed ARP: a counted drop, no panic.
    let mut m = a.pool.alloc().expect("buffer");
    m.append(10)
        .expect("room")
        .copy_from_slice(&[8, 6, 0, 0, 0, 32, 8, 0, 20, 4]);
    a.cores[0].requests.send(Request::Arp { mbuf: m }).unwrap();
    a.ctl.poll();
    assert_eq!(a.ctl.stats().arp_malformed, 1);

    // ClientReregister revalidates the path; the neighbour stays published meanwhile.
    net.fabric.restart_sm(None);
    run_until(&net, &mut [&mut a, &mut b], secs(10), ms(10), |h| {
        assert!(h[0].cores[0].reader.get().neighbour(&IP_B).is_some());
        h[0].ctl.stats().paths_ok == 2 && !h[0].ctl.is_flushing()
    });
    assert!(a.data_send_unicast(0, IP_B, 11));
    run(&net, &mut [&mut a, &mut b], ms(50), ms(10));
    assert_eq!(b.received.last(), Some(&11));

    // Ageing: unused neighbours go.
    let idle = CtrlConfig::default().neigh_idle;
    run(
        &net,
        &mut [&mut a, &mut b],
        idle.saturating_add(secs(5)),
        ms(500),
    );
    assert_eq!(a.ctl.neighbour_count(), 0);
    assert!(a.ctl.stats().neigh_expired >= 1);
    assert!(a.cores[0].reader.get().neighbour(&IP_B).is_none());
}

#[test]
fn unresolvable_neighbour_drops_its_queue() {
    let net = Net::new(FaultConfig::NONE);
    let mut a = Host::new(&net, "a", cfg(IP_A, 1));
    run_until(&net, &mut [&mut a], secs(5), ms(10), |h| h[0].ctl.link_up());
    for i in 0..3 {
        a.data_send_unicast(0, [10, 0, 0, 99], i);
    }
    run(&net, &mut [&mut a], secs(10), ms(100));
    let s = a.ctl.stats();
    assert_eq!(s.neigh_unresolved_dropped, 3);
    assert_eq!(a.ctl.neighbour_count(), 0);
    assert_eq!(s.arp_requests_sent, 1 + 3, "gratuitous + 3 tries");
}

#[test]
fn a_neighbour_that_comes_back_at_another_lid_is_reached_there() {
    let net = Net::new(FaultConfig::NONE);
    let mut a = Host::new(&net, "a", cfg(IP_A, 1));
    let mut b = Host::new(&net, "b", cfg(IP_B, 1));
    run_until(&net, &mut [&mut a, &mut b], secs(5), ms(10), |h| {
        h[0].ctl.link_up() && h[1].ctl.link_up()
    });
    assert!(a.data_send_unicast(0, IP_B, 0));
    run_until(&net, &mut [&mut a, &mut b], secs(5), ms(10), |h| {
        !h[1].received.is_empty()
    });
    let dlid = |a: &Host| a.cores[0].reader.get().neighbour(&IP_B).map(|n| n.dlid);
    assert!(dlid(&a).is_some_and(|l| l != Lid(0x77)));

    // B's LID changes: B flushes, comes back up and sends a gratuitous ARP; its hardware
    // address (QPN, GID) is the same, so only a new path query finds the new LID. The
    // neighbour stays published meanwhile, and is not left to age out (300 s).
    net.fabric.set_lid(b.port_id, Lid(0x77));
    let paths = a.ctl.stats().paths_ok;
    run_until(&net, &mut [&mut a, &mut b], secs(10), ms(10), |h| {
        assert!(dlid(h[0]).is_some());
        dlid(h[0]) == Some(Lid(0x77))
    });
    assert_eq!(a.ctl.stats().paths_ok, paths + 1);
    assert!(a.data_send_unicast(0, IP_B, 1));
    run(&net, &mut [&mut a, &mut b], ms(50), ms(10));
    assert_eq!(b.received.last(), Some(&1));
}
