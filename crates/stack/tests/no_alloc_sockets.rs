//! The application-driven data path does not allocate either: lane polls, UDP socket
//! sends (copying and zero copy), receives and the lane's demultiplexing, counted by a
//! counting global allocator during steady echo traffic between two stacks driven from
//! the test thread.

mod common;

use std::net::SocketAddrV4;
use std::time::Instant;

use common::*;
use ibpoll::Discard;
use ibpoll_testkit::alloc::{self, CountingAlloc};
use ibpoll_testkit::stack;

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

#[test]
fn steady_socket_traffic_allocates_nothing_on_the_lanes() {
    let _serial = serial();
    let fabric = fabric();
    let (_a, mut ca, mut la) = stack::small(&fabric, "a")
        .ipv4([10, 0, 0, 1])
        .build()
        .unwrap()
        .split();
    let (_b, mut cb, mut lb) = stack::small(&fabric, "b")
        .ipv4([10, 0, 0, 2])
        .build()
        .unwrap()
        .split();
    let (la, lb) = (&mut la[0], &mut lb[0]);
    let (sa, sb) = (la.udp_bind(0, 1000).unwrap(), lb.udp_bind(0, 2000).unwrap());
    let to_b = SocketAddrV4::new([10, 0, 0, 2].into(), 2000);
    let payload = [7u8; 200];
    let start = Instant::now();
    // `count` round trips; counting on for the lanes' work only (the control cores'
    // polls are not the data path).
    let mut round_trips = |n: u64, counting: bool| {
        let mut done = 0;
        let mut in_flight = 0;
        let mut buf = [0u8; 256];
        while done < n {
            assert!(start.elapsed() < T, "timed out");
            ca.poll();
            cb.poll();
            alloc::count_this_thread(counting);
            la.poll(&mut Discard);
            lb.poll(&mut Discard);
            while in_flight < 16 && la.link_up(0) {
                la.udp_send_slice(sa, &payload, to_b).unwrap();
                in_flight += 1;
            }
            la.flush();
            while let Some((m, from)) = lb.udp_recv_from(sb) {
                lb.udp_send_to(sb, m, from).unwrap();
            }
            lb.flush();
            while let Some((len, _)) = la.udp_recv_slice(sa, &mut buf) {
                assert_eq!(len, payload.len());
                in_flight -= 1;
                done += 1;
            }
            alloc::count_this_thread(false);
        }
    };
    round_trips(1000, false);
    let before = alloc::allocs();
    round_trips(20_000, true);
    assert_eq!(alloc::allocs() - before, 0, "the lanes allocated");
    // Every round trip counted was a datagram received (a few of the warm-up's may come
    // in the counted run).
    assert!(la.udp_stats(sa).unwrap().rx >= 21_000);
}
