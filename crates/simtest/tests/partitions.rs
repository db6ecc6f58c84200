//! No packet crosses partitions: a host whose P_Key table changes under traffic stops
//! receiving its old partition's packets at the switch (counted as P_Key drops), and
//! every packet any QP receives is checked against the P_Keys of the instant it was sent
//! ([`ibpoll_simtest::partition`]).

use ibpoll_ctrl::{CtrlConfig, GroupAddr, GroupPhase};
use ibpoll_dev::Nanos;
use ibpoll_pmd_sim::FaultConfig;
use ibpoll_simtest::{Sim, SimConfig};
use ibpoll_wire::PKey;

const G1: GroupAddr = GroupAddr::Ipv4([239, 1, 0, 1]);

fn checked(s: &Sim) -> u64 {
    let obs = s.obs.lock().unwrap();
    let parts = obs.partitions.lock().unwrap();
    parts.checked
}

fn pkey_drops(s: &Sim) -> u64 {
    s.fabric.stats().drop_count("pkey_mismatch")
}

#[test]
fn a_pkey_change_under_traffic_stops_packets_at_the_switch() {
    let ms = Nanos::from_millis;
    let mut s = Sim::new(SimConfig {
        seed: 11,
        hosts: 2,
        ctrl: CtrlConfig::default(),
        faults: FaultConfig::NONE,
        pool_bufs: 4096,
        groups_in_use: 4,
        backpressure: None,
    });
    for h in 0..2 {
        s.run_until(Nanos::from_secs(30), ms(10), |s| s.hosts[h].ctl.link_up());
        assert!(s.subscribe(h, G1));
    }
    s.run_until(Nanos::from_secs(30), ms(10), |s| {
        (0..2).all(|h| s.hosts[h].ctl.group_phase(G1) == Some(GroupPhase::Joined))
    });
    let ip1 = s.hosts[1].ip;
    for _ in 0..5 {
        s.send_mcast(0, 0, G1);
        s.send_unicast(0, 0, ip1);
    }
    s.run(ms(500), ms(10));
    let received = s.hosts[1].received;
    assert!(received >= 5, "host 1 received {received} in its partition");
    let (checked_before, drops_before) = (checked(&s), pkey_drops(&s));
    assert!(checked_before >= received);

    // Host 1's port leaves the partition: its QP's P_Key index now names 0x8001. Host
    // 0's snapshot still has the group and the neighbour: its packets go out, and the
    // switch must drop every copy for host 1.
    s.set_pkeys(1, vec![PKey(0x8001)]);
    for _ in 0..5 {
        s.send_mcast(0, 0, G1);
        s.send_unicast(0, 0, ip1);
    }
    s.run(ms(500), ms(10));
    assert_eq!(s.hosts[1].received, received, "received across partitions");
    assert!(
        pkey_drops(&s) >= drops_before + 6,
        "P_Key drops {} -> {}",
        drops_before,
        pkey_drops(&s)
    );
    // Host 0 still receives its own multicast (loopback): the check ran on those.
    assert!(checked(&s) > checked_before);
    s.finish();
}
