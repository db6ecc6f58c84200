//! A poll with nothing due allocates nothing: the controller may be polled from a data
//! lcore, where nothing allocates after start-up. A counting global allocator watches
//! this test's thread while a controller with joined groups (full and send-only) and a
//! resolved neighbour is polled through several expiry checks.

use ibpoll_ctrl::{CtrlConfig, GroupAddr, GroupPhase, Poll};
use ibpoll_dev::Nanos;
use ibpoll_pmd_sim::FaultConfig;
use ibpoll_testkit::alloc::{self, CountingAlloc};
use ibpoll_testkit::{run, CtlHost, Net};

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// A host with IPv4 address `ip` and a pool of 1024 buffers.
fn host(net: &Net, name: &'static str, ip: [u8; 4]) -> CtlHost {
    let cfg = CtrlConfig {
        ipv4: Some(ip),
        ..CtrlConfig::default()
    };
    CtlHost::with_pool(net, name, cfg, 1024)
}

#[test]
fn idle_poll_allocates_nothing() {
    const PEER: [u8; 4] = [10, 0, 0, 2];
    let net = Net::new(FaultConfig::NONE);
    let mut a = host(&net, "a", [10, 0, 0, 1]);
    let mut b = host(&net, "b", PEER);
    let full: Vec<GroupAddr> = (0..32).map(|i| GroupAddr::Ipv4([239, 2, 0, i])).collect();
    let send_only = GroupAddr::Ipv4([239, 3, 0, 1]);
    for g in &full {
        assert!(a.ctl.join_group(*g));
    }
    // Neither is in the snapshot yet: both go to the control core's ring.
    assert!(a.data_send_mcast(0, send_only, 0), "ring");
    assert!(a.data_send_unicast(0, PEER, 1), "ring");
    run(
        &net,
        &mut [&mut a, &mut b],
        Nanos::from_secs(5),
        Nanos::from_millis(10),
    );
    for g in full.iter().chain([&send_only]) {
        assert_eq!(a.ctl.group_phase(*g), Some(GroupPhase::Joined), "{g:?}");
    }
    assert!(
        a.cores[0].reader.get().neighbour(&PEER).is_some(),
        "resolved"
    );

    // Polls with nothing due, across several once-a-second expiry checks (the
    // send-only group is used meanwhile, so it stays).
    let mut idle = 0;
    alloc::reset_allocs();
    alloc::count_this_thread(true);
    for i in 0..20_000u32 {
        if a.ctl.poll() == Poll::Idle {
            idle += 1;
        }
        for c in &mut a.cores {
            c.reader.quiescent();
        }
        if i % 1000 == 0 {
            let snap = a.cores[0].reader.get();
            if let Some(id) = snap.group_nh(&snap.ipv4_mgid([239, 3, 0, 1])) {
                snap.mark_used(id);
            }
        }
        net.clock.advance(Nanos(500_000));
    }
    alloc::count_this_thread(false);
    assert_eq!(alloc::allocs(), 0, "allocations in idle polls");
    assert!(idle >= 19_990, "{idle} of 20000 polls idle");
    assert_eq!(a.ctl.group_phase(send_only), Some(GroupPhase::Joined));
}
