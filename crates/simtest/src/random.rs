//! Seeded runs: the knobs a seed draws and the random driver.

use std::fmt;
use std::panic::{self, AssertUnwindSafe};

use ibpoll_ctrl::{CtrlConfig, GroupAddr};
use ibpoll_dev::Nanos;
use ibpoll_pmd_sim::{FaultConfig, SimRng};
use ibpoll_wire::{IbMtu, PKey};

use crate::sim::{Sim, SimConfig};

/// What one seed drew.
#[derive(Debug, Clone)]
pub struct Knobs {
    /// Hosts on the fabric.
    pub hosts: usize,
    /// Data cores per host.
    pub data_cores: usize,
    /// Steps before the final flush.
    pub steps: usize,
    /// The longest ordinary step, in ms.
    pub step_ms_max: u64,
    /// Chance per step of a long jump of time (1 to 20 s).
    pub p_jump: f64,
    /// SA faults.
    pub faults: FaultConfig,
    /// Chance per step of an SA outage starting or ending (requests lost).
    pub p_outage: f64,
    /// Hosts whose path queries are never answered (one bit per host).
    pub path_silent: u8,
    /// Multicast groups in use (besides the broadcast group).
    pub groups: usize,
    /// Next hops in use (other hosts' addresses and unknown ones).
    pub next_hops: usize,
    /// Chance per step and host of a burst of packets from a data core.
    pub p_send: f64,
    /// Most packets in one burst.
    pub burst_max: usize,
    /// Share of unicast packets in a burst.
    pub unicast_share: f64,
    /// Chance per step and host of a subscription change.
    pub p_churn: f64,
    /// Chance per step and host of interface down/up.
    pub p_admin: f64,
    /// Chance per step and host of a port flap (Error/Active).
    pub p_port: f64,
    /// Chance per step of a subnet-manager restart.
    pub p_sm: f64,
    /// Chance per step and host of a P_Key table change.
    pub p_pkey: f64,
    /// Chance per step and host of a LID change.
    pub p_lid: f64,
    /// The controllers' configuration.
    pub ctrl: CtrlConfig,
    /// The seed of the back-pressure wrapper around every port, if the run draws one.
    pub backpressure: Option<u64>,
}

impl Knobs {
    /// Draws the knobs of `seed` (`steps` overrides the drawn number of steps).
    pub fn draw(seed: u64, steps: Option<usize>) -> Knobs {
        let mut rng = SimRng::seed_from_u64(seed ^ 0x5eed_0f1b_0011);
        let ms = Nanos::from_millis;
        let delay_max = rng.pick(&[0, 0, 10, 200, 900, 1500, 5000]);
        let delay_min = if rng.chance(0.5) { 0 } else { delay_max / 2 };
        let faults = FaultConfig {
            sa_delay_min: ms(delay_min),
            sa_delay_max: ms(delay_max),
            sa_request_loss: rng.pick(&[0.0, 0.0, 0.01, 0.1, 0.3]),
            sa_answer_loss: rng.pick(&[0.0, 0.0, 0.01, 0.1, 0.3]),
            sa_duplicate: rng.pick(&[0.0, 0.05, 0.3]),
            sa_error: rng.pick(&[0.0, 0.0, 0.02, 0.2]),
            // Not ERR_REQ_INVALID: to a Delete it means "you hold no such membership",
            // which no client could tell from a refusal that did nothing.
            sa_error_status: rng.pick(&[0x0100, 0x0001]),
            packet_loss: rng.pick(&[0.0, 0.01]),
            packet_reorder: rng.pick(&[0.0, 0.05]),
        };
        let sa_window = rng.pick(&[64, 64, 8, 2]);
        let ctrl = CtrlConfig {
            data_cores: rng.range_inclusive(1, 2) as usize,
            ring_size: rng.pick(&[1024, 1024, 16]),
            groups_max: rng.pick(&[1024, 1024, 8]),
            sa_window,
            sa_timeout: ms(rng.pick(&[1000, 1000, 500, 2000])),
            sendonly_idle: Nanos::from_secs(rng.pick(&[5, 20, 60])),
            neigh_idle: Nanos::from_secs(rng.pick(&[10, 300])),
            flush_max: Nanos::from_secs(rng.pick(&[60, 60, 10])),
            ..CtrlConfig::default()
        };
        let hosts = rng.range_inclusive(1, 3) as usize;
        let scale = rng.pick(&[0.0, 0.3, 1.0, 3.0]);
        Knobs {
            hosts,
            data_cores: ctrl.data_cores,
            steps: steps.unwrap_or(rng.range_inclusive(300, 1500) as usize),
            step_ms_max: rng.pick(&[5, 20, 100, 400]),
            p_jump: rng.pick(&[0.0, 0.01, 0.05]),
            faults,
            p_outage: rng.pick(&[0.0, 0.0, 0.005, 0.02]),
            path_silent: if rng.chance(0.15) {
                rng.next_u64() as u8
            } else {
                0
            },
            groups: rng.pick(&[1, 4, 16, 40, 150]),
            next_hops: rng.range_inclusive(1, 6) as usize,
            p_send: rng.pick(&[0.05, 0.3, 0.8]),
            burst_max: rng.pick(&[1, 4, 80]),
            unicast_share: rng.pick(&[0.0, 0.2, 0.5]),
            p_churn: rng.pick(&[0.0, 0.02, 0.2]),
            p_admin: 0.004 * scale,
            p_port: 0.004 * scale,
            p_sm: 0.002 * scale,
            p_pkey: 0.001 * scale,
            p_lid: 0.001 * scale,
            ctrl,
            // Drawn last, so that every earlier knob of a seed stays as it was.
            backpressure: rng.chance(0.25).then(|| rng.next_u64()),
        }
    }
}

impl fmt::Display for Knobs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let x = &self.faults;
        write!(
            f,
            "hosts={} cores={} steps={} step_ms_max={} p_jump={} | sa_delay={}..{}ms req_loss={} \
             ans_loss={} dup={} err={}({:#06x}) pkt_loss={} reorder={} outage={} path_silent={:#x} | \
             groups={} next_hops={} p_send={} burst_max={} unicast={} churn={} | admin={:.4} \
             port={:.4} sm={:.4} pkey={:.4} lid={:.4} | window={} ring={} groups_max={} \
             sa_timeout={}ms sendonly_idle={}s neigh_idle={}s flush_max={}s backpressure={}",
            self.hosts,
            self.data_cores,
            self.steps,
            self.step_ms_max,
            self.p_jump,
            x.sa_delay_min.0 / 1_000_000,
            x.sa_delay_max.0 / 1_000_000,
            x.sa_request_loss,
            x.sa_answer_loss,
            x.sa_duplicate,
            x.sa_error,
            x.sa_error_status,
            x.packet_loss,
            x.packet_reorder,
            self.p_outage,
            self.path_silent,
            self.groups,
            self.next_hops,
            self.p_send,
            self.burst_max,
            self.unicast_share,
            self.p_churn,
            self.p_admin,
            self.p_port,
            self.p_sm,
            self.p_pkey,
            self.p_lid,
            self.ctrl.sa_window,
            self.ctrl.ring_size,
            self.ctrl.groups_max,
            self.ctrl.sa_timeout.0 / 1_000_000,
            self.ctrl.sendonly_idle.0 / 1_000_000_000,
            self.ctrl.neigh_idle.0 / 1_000_000_000,
            self.ctrl.flush_max.0 / 1_000_000_000,
            self.backpressure.is_some(),
        )
    }
}

/// The group `i` of a run.
pub fn group(i: usize) -> GroupAddr {
    GroupAddr::Ipv4([239, 1, (i >> 8) as u8, i as u8])
}

/// What one seed did.
#[derive(Debug, Clone)]
pub struct SeedResult {
    /// The seed.
    pub seed: u64,
    /// What it drew.
    pub knobs: Knobs,
    /// The trace hash (0 when it failed).
    pub trace: u64,
    /// Virtual time the run covered.
    pub virtual_time: Nanos,
    /// The first invariant it broke.
    pub failure: Option<String>,
}

/// A deliberate bug, for the tests that show the checker catches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutant {
    /// Leaves are tried once, never again (DESIGN rule 6's retries removed): the
    /// liveness check must fail on it.
    NoLeaveRetries,
}

/// Runs seed `seed` with the random driver; catches the first broken invariant.
pub fn run_seed(seed: u64, steps: Option<usize>) -> SeedResult {
    run(seed, steps, None)
}

/// Runs seed `seed` as [`run_seed`] does, with every controller mutated by `mutant`.
pub fn run_seed_mutant(seed: u64, steps: Option<usize>, mutant: Mutant) -> SeedResult {
    run(seed, steps, Some(mutant))
}

fn run(seed: u64, steps: Option<usize>, mutant: Option<Mutant>) -> SeedResult {
    let knobs = Knobs::draw(seed, steps);
    let mut end = Nanos::ZERO;
    let r = panic::catch_unwind(AssertUnwindSafe(|| drive(seed, &knobs, mutant, &mut end)));
    let (trace, failure) = match r {
        Ok(h) => (h, None),
        Err(e) => {
            let msg = if let Some(s) = e.downcast_ref::<String>() {
                s.clone()
            } else if let Some(s) = e.downcast_ref::<&str>() {
                (*s).to_owned()
            } else {
                "panic".to_owned()
            };
            (0, Some(msg))
        }
    };
    SeedResult {
        seed,
        knobs,
        trace,
        virtual_time: end,
        failure,
    }
}

fn drive(seed: u64, k: &Knobs, mutant: Option<Mutant>, end: &mut Nanos) -> u64 {
    let mut rng = SimRng::seed_from_u64(seed);
    let mut sim = Sim::new(SimConfig {
        seed,
        hosts: k.hosts,
        ctrl: k.ctrl.clone(),
        faults: k.faults,
        pool_bufs: 8192,
        groups_in_use: k.groups,
        backpressure: k.backpressure,
    });
    if mutant == Some(Mutant::NoLeaveRetries) {
        sim.mutate_no_leave_retries();
    }
    for h in 0..k.hosts {
        if k.path_silent & (1 << h) != 0 {
            sim.drop_path_queries(h, true);
        }
    }
    let mut outage = false;
    let mut subscribed = vec![vec![false; k.groups]; k.hosts];
    let pkey = k.ctrl.pkey;
    let other = PKey(0x8001);
    for _ in 0..k.steps {
        // Faults of this instant.
        if rng.chance(k.p_outage) {
            outage = !outage;
            if outage {
                sim.set_faults(FaultConfig {
                    sa_request_loss: 1.0,
                    ..k.faults
                });
            } else {
                sim.restore_faults();
            }
        }
        if rng.chance(k.p_sm) {
            let mtu = rng.pick(&[
                None,
                Some(IbMtu::Mtu2048),
                Some(IbMtu::Mtu1024),
                Some(IbMtu::Mtu4096),
            ]);
            sim.restart_sm(mtu);
        }
        for (h, subscribed) in subscribed.iter_mut().enumerate() {
            if rng.chance(k.p_admin) {
                let up = !sim.hosts[h].admin_up;
                sim.admin(h, up);
            }
            if rng.chance(k.p_port) {
                let up = !sim.hosts[h].port_up;
                sim.port(h, up);
            }
            if rng.chance(k.p_pkey) {
                let t = match rng.index(4) {
                    0 => vec![pkey],
                    1 => vec![pkey, other],
                    2 => vec![other, pkey],
                    _ => vec![other],
                };
                sim.set_pkeys(h, t);
            }
            if rng.chance(k.p_lid) {
                sim.new_lid(h);
            }
            if rng.chance(k.p_churn) {
                let g = rng.index(k.groups);
                if subscribed[g] {
                    sim.unsubscribe(h, group(g));
                } else {
                    sim.subscribe(h, group(g));
                }
                subscribed[g] = !subscribed[g];
            }
            if rng.chance(k.p_send) {
                let core = rng.index(k.data_cores);
                let n = rng.range_inclusive(1, k.burst_max as u64) as usize;
                let hot = rng.index(k.groups);
                for _ in 0..n {
                    if rng.chance(k.unicast_share) {
                        let i = rng.index(k.next_hops);
                        let ip = if i < k.hosts {
                            [10, 0, 0, i as u8 + 1]
                        } else {
                            [10, 0, 1, i as u8]
                        };
                        sim.send_unicast(h, core, ip);
                    } else {
                        // Mostly one group per burst, sometimes many.
                        let g = if rng.chance(0.7) {
                            hot
                        } else {
                            rng.index(k.groups)
                        };
                        sim.send_mcast(h, core, group(g));
                    }
                }
            }
        }
        let dt = if rng.chance(k.p_jump) {
            Nanos::from_millis(rng.range_inclusive(1000, 20_000))
        } else {
            Nanos::from_millis(rng.range_inclusive(1, k.step_ms_max))
        };
        // A long jump is many small steps with nothing injected: the controllers see
        // time pass as they would.
        if dt > Nanos::from_millis(500) {
            sim.run(dt, Nanos::from_millis(100));
        } else {
            sim.step(dt);
        }
    }
    *end = sim.now();
    sim.finish()
}
