//! The snapshot is rewritten in place from a log of changes (a reclaimed snapshot gets
//! what changed since its generation). After any sequence of joins, leaves, packets to
//! new groups, neighbour resolution, subnet-manager restarts, port flaps, SA faults and
//! readers that quiesce or stall, the published snapshot must equal one built from
//! scratch from the controller's state, and the group indexes must match the groups.

use ibpoll_ctrl::{CtrlConfig, GroupAddr, Request};
use ibpoll_dev::Nanos;
use ibpoll_pmd_sim::FaultConfig;
use ibpoll_testkit::data::seq_packet;
use ibpoll_testkit::{CtlHost, Net};
use proptest::prelude::*;

/// A host with IPv4 address `ip`, two data cores and a pool of 2048 buffers.
fn host(net: &Net, name: &'static str, ip: [u8; 4]) -> CtlHost {
    let cfg = CtrlConfig {
        data_cores: 2,
        groups_max: 24,
        ipv4: Some(ip),
        // Short, so that expiry (rule 7, neighbour ageing) happens within a run.
        sendonly_idle: Nanos::from_secs(3),
        neigh_idle: Nanos::from_secs(3),
        ..CtrlConfig::default()
    };
    CtlHost::with_pool(net, name, cfg, 2048)
}

#[derive(Debug, Clone)]
enum Op {
    Join(u8),
    Leave(u8),
    /// A packet to a group through data core 0's ring (a send-only join).
    Send(u8),
    /// A packet to a next hop: the peer (resolvable) or an address nobody has.
    Resolve(bool),
    Reregister,
    PortFlap,
    AdminDown,
    AdminUp,
    Faults(bool),
    /// Virtual time passes, in milliseconds.
    Advance(u16),
    /// Polls; `stall` keeps data core 1 from quiescing meanwhile.
    Poll {
        polls: u8,
        stall: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..16).prop_map(Op::Join),
        2 => (0u8..16).prop_map(Op::Leave),
        3 => (0u8..16).prop_map(Op::Send),
        1 => any::<bool>().prop_map(Op::Resolve),
        1 => Just(Op::Reregister),
        1 => Just(Op::PortFlap),
        1 => Just(Op::AdminDown),
        1 => Just(Op::AdminUp),
        1 => any::<bool>().prop_map(Op::Faults),
        3 => (1u16..3000).prop_map(Op::Advance),
        6 => (1u8..8, any::<bool>()).prop_map(|(polls, stall)| Op::Poll { polls, stall }),
    ]
}

const PEER_IP: [u8; 4] = [10, 0, 0, 2];

fn group(i: u8) -> GroupAddr {
    GroupAddr::Ipv4([239, 1, 0, i])
}

/// What a run went through, to check that the sequences reach the interesting states.
#[derive(Debug, Default)]
struct Seen {
    neighbours: bool,
    groups: bool,
}

fn run(ops: &[Op]) -> Result<Seen, TestCaseError> {
    let mut seen = Seen::default();
    let net = Net::new(FaultConfig::NONE);
    let (fabric, clock) = (&net.fabric, &net.clock);
    let mut a = host(&net, "a", [10, 0, 0, 1]);
    let mut peer = host(&net, "b", PEER_IP);
    let mut poll =
        |a: &mut CtlHost, peer: &mut CtlHost, stall: bool| -> Result<(), TestCaseError> {
            a.ctl.poll();
            seen.neighbours |= a.ctl.snapshot().neighbour_count() > 0;
            seen.groups |= a.ctl.snapshot().group_count() > 1;
            peer.ctl.poll();
            a.cores[0].reader.quiescent();
            if !stall {
                a.cores[1].reader.quiescent();
            }
            for c in &mut peer.cores {
                c.reader.quiescent();
            }
            a.drain_rx();
            peer.drain_rx();
            a.ctl
                .check_snapshot()
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            peer.ctl
                .check_snapshot()
                .map_err(|e| TestCaseError::fail(e.to_string()))
        };
    for op in ops {
        match *op {
            Op::Join(i) => {
                a.ctl.join_group(group(i));
            }
            Op::Leave(i) => a.ctl.leave_group(group(i)),
            Op::Send(i) => {
                if let Some(mbuf) = seq_packet(&a.pool, 0) {
                    let _ = a.cores[0].requests.send(Request::Mcast {
                        group: group(i),
                        mbuf,
                    });
                }
            }
            Op::Resolve(known) => {
                let next_hop = if known { PEER_IP } else { [10, 0, 0, 99] };
                if let Some(mbuf) = seq_packet(&a.pool, 0) {
                    let _ = a.cores[0]
                        .requests
                        .send(Request::Resolve { next_hop, mbuf });
                }
            }
            Op::Reregister => fabric.restart_sm(None),
            Op::PortFlap => {
                fabric.set_port_up(a.port_id, false);
                poll(&mut a, &mut peer, false)?;
                fabric.set_port_up(a.port_id, true);
            }
            Op::AdminDown => a.ctl.set_admin_up(false),
            Op::AdminUp => a.ctl.set_admin_up(true),
            Op::Faults(on) => fabric.set_faults(if on {
                FaultConfig {
                    sa_delay_max: Nanos::from_millis(50),
                    sa_request_loss: 0.1,
                    sa_answer_loss: 0.1,
                    sa_duplicate: 0.05,
                    sa_error: 0.1,
                    ..FaultConfig::NONE
                }
            } else {
                FaultConfig::NONE
            }),
            Op::Advance(ms) => clock.advance(Nanos::from_millis(u64::from(ms))),
            Op::Poll { polls, stall } => {
                for _ in 0..polls {
                    poll(&mut a, &mut peer, stall)?;
                    clock.advance(Nanos::from_millis(1));
                }
            }
        }
    }
    // Settle: every reader quiesces, and the state converges.
    fabric.set_faults(FaultConfig::NONE);
    a.ctl.set_admin_up(true);
    for _ in 0..200 {
        poll(&mut a, &mut peer, false)?;
        clock.advance(Nanos::from_millis(100));
    }
    Ok(seen)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn rewritten_snapshot_equals_a_fresh_one(ops in proptest::collection::vec(op(), 1..60)) {
        run(&ops)?;
    }
}

/// A long fixed sequence through every kind of change, readers stalling on and off, so
/// that the change log is trimmed, overflows and reclaimed snapshots are several
/// generations old.
#[test]
fn long_run_with_stalled_reader() {
    let mut ops = Vec::new();
    for round in 0u16..40 {
        for i in 0..16 {
            ops.push(if (round + u16::from(i)) % 3 == 0 {
                Op::Leave(i)
            } else {
                Op::Join(i)
            });
            ops.push(Op::Send(i.wrapping_mul(3) % 16));
        }
        ops.push(Op::Resolve(round % 2 == 0));
        ops.push(Op::Poll {
            polls: 6,
            stall: round % 4 < 2,
        });
        match round % 10 {
            3 => ops.push(Op::Reregister),
            6 => ops.push(Op::PortFlap),
            8 => ops.push(Op::Faults(round % 20 == 8)),
            _ => {}
        }
        ops.push(Op::Advance(700));
        ops.push(Op::Poll {
            polls: 4,
            stall: round % 3 == 0,
        });
    }
    let seen = run(&ops).expect("snapshot always equals a fresh build");
    assert!(seen.neighbours && seen.groups, "{seen:?}");
}
