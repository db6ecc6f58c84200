//! IPv6 neighbours in the simulator: hosts with IPv6 addresses resolve each other by
//! neighbour discovery (solicitation to the solicited-node group, unicast
//! advertisement, path record) while the SA loses, delays, duplicates and refuses, ports
//! flap and the subnet manager restarts; the whole checker runs after every step and the
//! end checks after the final flush. Then seeds of the random driver that give hosts
//! IPv6 addresses.

use ibpoll_ctrl::{CtrlConfig, GroupAddr, GroupPhase};
use ibpoll_dev::Nanos;
use ibpoll_pmd_sim::FaultConfig;
use ibpoll_simtest::{run_seed, Knobs, Sim, SimConfig};
use ibpoll_wire::ipv6;

const BASE: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];

fn ms(n: u64) -> Nanos {
    Nanos::from_millis(n)
}

fn secs(n: u64) -> Nanos {
    Nanos::from_secs(n)
}

fn sim(hosts: usize, faults: FaultConfig) -> Sim {
    Sim::new(SimConfig {
        seed: 17,
        hosts,
        ctrl: CtrlConfig {
            ipv6: Some(BASE),
            ..CtrlConfig::default()
        },
        faults,
        pool_bufs: 4096,
        // Broadcast, all-nodes, solicited-node, and one solicited-node group per peer.
        groups_in_use: 2 + hosts,
        backpressure: None,
    })
}

fn ip6(s: &Sim, h: usize) -> [u8; 16] {
    s.hosts[h].ip6.expect("an IPv6 host")
}

/// Whether every host has every other host as a resolved IPv6 neighbour in its
/// snapshot.
fn all_resolved(s: &Sim) -> bool {
    (0..s.hosts.len()).all(|h| {
        (0..s.hosts.len()).filter(|p| *p != h).all(|p| {
            s.hosts[h].cores[0]
                .reader
                .get()
                .neighbour6(&ip6(s, p))
                .is_some()
        })
    })
}

/// Every host sends one packet to every other host's IPv6 address.
fn mesh(s: &mut Sim) {
    for h in 0..s.hosts.len() {
        for p in 0..s.hosts.len() {
            if p != h {
                let to = ip6(s, p);
                s.send_unicast6(h, 0, to);
            }
        }
    }
}

#[test]
fn ipv6_neighbours_resolve_each_other_and_survive_a_flush() {
    let mut s = sim(3, FaultConfig::NONE);
    s.run_until(secs(30), ms(10), |s| {
        s.hosts.iter().all(|h| {
            h.ctl.link_up()
                && h.ctl.group_phase(GroupAddr::Ipv6(ipv6::ALL_NODES)) == Some(GroupPhase::Joined)
        })
    });
    mesh(&mut s);
    s.run_until(secs(30), ms(10), all_resolved);
    let received: u64 = s.hosts.iter().map(|h| h.received).sum();
    assert_eq!(received, 6, "every first packet waited and went out");
    for h in &s.hosts {
        let st = h.ctl.stats();
        assert!(st.nd_solicits_sent + st.nd_adverts_sent >= 2, "{st:?}");
        assert_eq!(st.nd_malformed, 0);
        assert_eq!(h.ctl.neighbour_count(), 2);
    }
    // A port flap drops the neighbours (normal flush); they resolve again.
    s.port(1, false);
    s.run(secs(1), ms(10));
    s.port(1, true);
    s.run_until(secs(30), ms(10), |s| s.hosts[1].ctl.link_up());
    assert_eq!(s.hosts[1].ctl.neighbour_count(), 0);
    mesh(&mut s);
    s.run_until(secs(30), ms(10), all_resolved);
    s.finish();
}

#[test]
fn ipv6_neighbours_resolve_under_sa_faults_and_restarts() {
    let faults = FaultConfig {
        sa_delay_min: ms(0),
        sa_delay_max: ms(900),
        sa_request_loss: 0.1,
        sa_answer_loss: 0.1,
        sa_duplicate: 0.05,
        sa_error: 0.05,
        sa_error_status: 0x0100,
        packet_loss: 0.01,
        packet_reorder: 0.05,
    };
    let mut s = sim(3, faults);
    // Packets every 100 ms for a minute of virtual time, a subnet-manager restart at 20
    // s: every neighbour resolves (retried, as packets keep coming) and nothing the
    // checker watches breaks.
    for i in 0..600 {
        if i % 10 == 0 {
            mesh(&mut s);
        }
        if i == 200 {
            s.restart_sm(None);
        }
        s.step(ms(100));
    }
    s.set_faults(FaultConfig::NONE);
    let start = s.now();
    while !all_resolved(&s) {
        assert!(
            s.now().saturating_sub(start) < secs(60),
            "not every IPv6 neighbour resolved"
        );
        mesh(&mut s);
        s.run(secs(1), ms(100));
    }
    let st: Vec<_> = s.hosts.iter().map(|h| h.ctl.stats()).collect();
    assert!(st.iter().all(|x| x.paths_ok >= 2), "{st:?}");
    s.finish();
}

#[test]
fn random_seeds_with_ipv6_hosts() {
    // Seeds of the random driver that give hosts IPv6 addresses and send unicast: the
    // first 40 from 10_000 on (the whole checker, and the end checks).
    let mut ran = 0;
    let mut failed = Vec::new();
    for seed in 10_000u64.. {
        if ran == 40 {
            break;
        }
        let k = Knobs::draw(seed, None);
        if !k.ipv6 || k.unicast_share == 0.0 {
            continue;
        }
        ran += 1;
        let r = run_seed(seed, None);
        if let Some(msg) = r.failure {
            failed.push(format!("seed {seed}: {msg}\n  knobs: {}", r.knobs));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
