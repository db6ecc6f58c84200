//! The soak (`ibpoll-soak`, `scripts/soak.sh`): several stacks exchange traffic on one
//! simulated fabric for minutes while the churn never stops, and the run fails on any
//! growth or any packet lost without a counter.
//!
//! - Hosts ([`hosts`]): `--stacks` stacks (threads: one data lcore each, the controller
//!   polled from it) on one [`SimFabric`], 10.0.0.1 upwards, one partition.
//! - Traffic ([`traffic`]): each host sends `--rate` datagrams a second, unicast to the
//!   other hosts and multicast to the groups its send mask names (send-only joins), and
//!   receives what the hosts subscribed to.
//! - Churn ([`churn`]): seeded and printed; joins, leaves, send-mask changes, port
//!   flaps, subnet-manager restarts, P_Key and LID changes, at random intervals.
//! - Every `--interval` ([`sample`]): the churn's disruptions end, traffic pauses, the
//!   hosts settle (links up, nothing in flight or queued, the SA's memberships equal to
//!   what the controllers hold, the counters quiet), and the soak prints RSS, buffers
//!   out of every pool, memberships at the SA, and packets unaccounted for ([`ledger`]);
//!   then traffic and churn resume.
//! - Verdict: after `--warmup` reports, RSS may not grow by more than
//!   `--rss-tolerance-kib`, the heap's outstanding bytes by more than
//!   `--heap-tolerance-kib`, buffers out by more than `--buffers-tolerance`, memberships
//!   the SA holds that no controller holds by more than `--stale-tolerance`; every
//!   report must settle, account for every packet and stay within the membership bound
//!   (every host a member of the broadcast group and every group). At the end every
//!   stack stops (leaving its groups): the SA must hold no membership, every buffer
//!   must be back, and the final ledger must balance.

pub mod churn;
pub mod hosts;
pub mod ledger;
pub mod sample;
pub mod traffic;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ibpoll_pmd_sim::{FabricConfig, SimFabric};
use serde_json::{json, Value};

use churn::{Churn, Targets};
use hosts::Host;
use ledger::{HostCounts, Ledger};
use sample::Sample;
use traffic::{Mutation, TrafficCtl};

/// How the soak runs (see the module docs).
#[derive(Debug, Clone)]
pub struct Config {
    /// How long traffic and churn run (measurements pause both and are not counted).
    pub duration: Duration,
    /// Time between two measurements.
    pub interval: Duration,
    /// Measurements before growth is judged (the first ones warm up).
    pub warmup: usize,
    /// Seeds the churn and the fabric.
    pub seed: u64,
    /// Hosts.
    pub stacks: usize,
    /// Multicast groups.
    pub groups: usize,
    /// Datagrams per second per host.
    pub rate_pps: f64,
    /// Mean time between churn events.
    pub churn_mean: Duration,
    /// RSS growth allowed after the warm-up, KiB.
    pub rss_tolerance_kib: u64,
    /// Growth allowed of the heap's outstanding bytes after the warm-up, KiB (judged
    /// only where the program counts them: `ibpoll-soak` installs the counting
    /// allocator).
    pub heap_tolerance_kib: u64,
    /// Buffers-out growth allowed after the warm-up.
    pub buffers_tolerance: usize,
    /// Growth allowed of memberships the SA holds that no controller holds.
    pub stale_tolerance: usize,
    /// How long a measurement may wait for the hosts to settle.
    pub settle_max: Duration,
    /// A fault planted in the soak's application (its tests only).
    pub mutation: Option<Mutation>,
}

/// Why the soak could not run on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SoakError {
    /// A stack refused or failed an operation.
    #[error("host h{host}: {source}")]
    Stack {
        /// The host.
        host: usize,
        /// What the stack said.
        #[source]
        source: ibpoll::Error,
    },
    /// A host's link did not come up at the start.
    #[error("host h{host}: the link did not come up within {secs} s")]
    LinkUp {
        /// The host.
        host: usize,
        /// The limit.
        secs: u64,
    },
    /// A controller refused to subscribe to a group.
    #[error("host h{host}: the controller refused to join {}.{}.{}.{}", group[0], group[1], group[2], group[3])]
    JoinRefused {
        /// The host.
        host: usize,
        /// The group.
        group: [u8; 4],
    },
    /// A host was used after it stopped.
    #[error("host {host} is stopped")]
    Stopped {
        /// The host.
        host: String,
    },
}

impl SoakError {
    /// Wraps a stack error of host `host`.
    pub fn stack(host: usize) -> impl Fn(ibpoll::Error) -> SoakError {
        move |source| SoakError::Stack { host, source }
    }
}

/// What the end of the run found, once every stack stopped.
#[derive(Debug, Clone)]
pub struct Final {
    /// Memberships the SA still holds (every group, every port).
    pub sa_memberships: usize,
    /// Buffers still out of the hosts' pools.
    pub buffers_out: usize,
    /// Hosts whose flush did not complete before their lcores stopped.
    pub unflushed: Vec<String>,
    /// Hosts whose application panicked.
    pub panicked: Vec<String>,
    /// The ledger from the final counters.
    pub ledger: Ledger,
}

/// The whole run.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// One per measurement, the last at the end of the run.
    pub samples: Vec<Sample>,
    /// After stop.
    pub fin: Final,
    /// Why the run failed (empty: it passed).
    pub failures: Vec<String>,
    /// Whether the stop flag ended the run early.
    pub interrupted: bool,
}

/// The limits a run is judged by, from its configuration.
fn membership_bound(cfg: &Config) -> usize {
    cfg.stacks * (1 + cfg.groups)
}

/// Runs the soak, printing each measurement with `print`. `stop` (a signal) ends the
/// traffic early; the run still measures, stops and checks.
pub fn run(
    cfg: &Config,
    stop: &Arc<AtomicBool>,
    mut print: impl FnMut(&str),
) -> Result<Outcome, SoakError> {
    let fabric = SimFabric::new(FabricConfig {
        seed: cfg.seed,
        ..FabricConfig::default()
    });
    let groups = hosts::groups(cfg.groups);
    let traffic = Arc::new(TrafficCtl::new(cfg.stacks));
    let mut hosts = hosts::start(
        &fabric,
        cfg.stacks,
        &groups,
        &traffic,
        cfg.rate_pps,
        cfg.mutation,
        stop,
    )?;
    for (i, h) in hosts.iter().enumerate() {
        let limit = Duration::from_secs(30);
        if !h
            .stack()?
            .wait_link_up(limit)
            .map_err(SoakError::stack(i))?
        {
            return Err(SoakError::LinkUp {
                host: i,
                secs: limit.as_secs(),
            });
        }
    }
    let t0 = Instant::now();
    let mut churn = Churn::new(cfg.seed, cfg.churn_mean, cfg.stacks, t0);
    {
        let stacks: Vec<&ibpoll::Stack> =
            hosts.iter().map(Host::stack).collect::<Result<_, _>>()?;
        let ports: Vec<_> = hosts.iter().map(|h| h.port).collect();
        let t = Targets {
            fabric: &fabric,
            ports: &ports,
            stacks: &stacks,
            traffic: &traffic,
            groups: &groups,
        };
        churn.initial(&t)?;
    }
    let (samples, interrupted) = drive(
        cfg, &fabric, &hosts, &groups, &traffic, &mut churn, stop, t0, &mut print,
    )?;
    let fin = finish(&fabric, &mut hosts)?;
    let failures = verdict(cfg, &samples, &fin, interrupted);
    Ok(Outcome {
        samples,
        fin,
        failures,
        interrupted,
    })
}

/// Traffic and churn until the end of the run (or the stop flag), measuring every
/// interval and once at the end.
#[allow(clippy::too_many_arguments)]
fn drive(
    cfg: &Config,
    fabric: &SimFabric,
    hosts: &[Host],
    groups: &[[u8; 4]],
    traffic: &TrafficCtl,
    churn: &mut Churn,
    stop: &AtomicBool,
    t0: Instant,
    print: &mut impl FnMut(&str),
) -> Result<(Vec<Sample>, bool), SoakError> {
    let stacks: Vec<&ibpoll::Stack> = hosts.iter().map(Host::stack).collect::<Result<_, _>>()?;
    let ports: Vec<_> = hosts.iter().map(|h| h.port).collect();
    let t = Targets {
        fabric,
        ports: &ports,
        stacks: &stacks,
        traffic,
        groups,
    };
    // Time runs in traffic seconds: measurements pause traffic and churn, and the
    // time they take is not part of `duration` or of any interval.
    let mut paused = Duration::ZERO;
    let mut next_report = cfg.interval;
    let mut samples = Vec::new();
    let interrupted = loop {
        if stop.load(Ordering::SeqCst) {
            break true;
        }
        let now = Instant::now();
        let run_t = now.duration_since(t0).saturating_sub(paused);
        if run_t >= cfg.duration {
            break false;
        }
        if run_t >= next_report {
            samples.push(pause_and_measure(
                cfg,
                &t,
                hosts,
                churn,
                (t0, run_t),
                print,
            )?);
            t.traffic.paused.store(false, Ordering::Relaxed);
            paused += now.elapsed();
            next_report += cfg.interval;
            continue;
        }
        churn.step(&t, now)?;
        let wake = churn
            .next_due()
            .min(now + (next_report.min(cfg.duration) - run_t));
        std::thread::sleep(
            wake.saturating_duration_since(Instant::now())
                .min(Duration::from_millis(10)),
        );
    };
    // The last measurement leaves traffic paused: the stacks stop from a quiet state.
    let run_t = t0.elapsed().saturating_sub(paused);
    samples.push(pause_and_measure(
        cfg,
        &t,
        hosts,
        churn,
        (t0, run_t),
        print,
    )?);
    Ok((samples, interrupted))
}

/// Ends the churn's disruptions, pauses traffic and measures (the caller resumes).
fn pause_and_measure(
    cfg: &Config,
    t: &Targets<'_>,
    hosts: &[Host],
    churn: &mut Churn,
    (t0, run_t): (Instant, Duration),
    print: &mut impl FnMut(&str),
) -> Result<Sample, SoakError> {
    let paused_at = Instant::now();
    churn.restore_all(t);
    t.traffic.paused.store(true, Ordering::Relaxed);
    let mut s = sample::measure(hosts, t.fabric, t.groups, churn.counts, cfg.settle_max)?;
    s.t_s = run_t.as_secs_f64();
    s.wall_s = t0.elapsed().as_secs_f64();
    print(&s.line());
    churn.postpone(paused_at.elapsed());
    Ok(s)
}

/// Stops every host (each leaves its groups) and checks what is left.
fn finish(fabric: &SimFabric, hosts: &mut [Host]) -> Result<Final, SoakError> {
    let mut counts = Vec::with_capacity(hosts.len());
    let mut fin = Final {
        sa_memberships: 0,
        buffers_out: 0,
        unflushed: Vec::new(),
        panicked: Vec::new(),
        ledger: Ledger::default(),
    };
    for (i, h) in hosts.iter_mut().enumerate() {
        let r = h.stop(i)?;
        if !r.flushed {
            fin.unflushed.push(h.name.clone());
        }
        if !r.app_panics.is_empty() {
            fin.panicked.push(h.name.clone());
        }
        fin.buffers_out += r.pool_in_use;
        counts.push(HostCounts {
            app: h.app.read(),
            lane: r.total(),
            ctrl: r.ctrl,
            // A stopped controller holds nothing: its flush counted what it queued.
            ctrl_queued: 0,
        });
    }
    fin.sa_memberships = sample::total_memberships(fabric);
    fin.ledger = Ledger::new(&counts, &fabric.stats());
    Ok(fin)
}

/// Growth of `f` over the samples after the warm-up: the largest value minus the first.
fn growth<T: Copy + Ord + std::ops::Sub<Output = T>>(
    judged: &[Sample],
    f: impl Fn(&Sample) -> T,
) -> Option<T> {
    let first = f(judged.first()?);
    judged.iter().map(&f).max().map(|m| m - first)
}

fn signed_kib(kib: u64) -> i64 {
    i64::try_from(kib.saturating_mul(1024)).unwrap_or(i64::MAX)
}

/// Why the run failed, if it did. A run the stop flag cut short is not failed for
/// having too few measurements to judge growth.
pub fn verdict(cfg: &Config, samples: &[Sample], fin: &Final, interrupted: bool) -> Vec<String> {
    let mut why = Vec::new();
    for s in samples {
        sample_failures(cfg, s, &mut why);
    }
    let judged = samples.get(cfg.warmup..).unwrap_or(&[]);
    if judged.len() >= 2 {
        growth_failures(cfg, judged, &mut why);
    } else if !interrupted {
        why.push(format!(
            "growth not judged: {} measurements after the warm-up of {} (need 2)",
            judged.len(),
            cfg.warmup
        ));
    }
    final_failures(fin, &mut why);
    why
}

/// What is wrong with one measurement on its own.
fn sample_failures(cfg: &Config, s: &Sample, why: &mut Vec<String>) {
    if let Some(u) = &s.unsettled {
        why.push(format!(
            "at {:.0} s the hosts did not settle within {} s: {u}",
            s.t_s,
            cfg.settle_max.as_secs()
        ));
    }
    if s.ledger.unaccounted() > 0 {
        why.push(format!(
            "at {:.0} s {} packets were unaccounted for ({})",
            s.t_s,
            s.ledger.unaccounted(),
            s.ledger.leaks().join(" ")
        ));
    }
    if s.sa_memberships > membership_bound(cfg) {
        why.push(format!(
            "at {:.0} s the SA held {} memberships, more than the {} the hosts can hold",
            s.t_s,
            s.sa_memberships,
            membership_bound(cfg)
        ));
    }
}

/// Growth beyond a tolerance over the measurements after the warm-up.
fn growth_failures(cfg: &Config, judged: &[Sample], why: &mut Vec<String>) {
    let rss = growth(judged, |s| s.rss_kib).unwrap_or(0);
    if rss > cfg.rss_tolerance_kib {
        why.push(format!(
            "RSS grew by {rss} KiB after the warm-up (tolerance {} KiB)",
            cfg.rss_tolerance_kib
        ));
    }
    let heap = growth(judged, |s| s.heap.bytes).unwrap_or(0);
    if heap > signed_kib(cfg.heap_tolerance_kib) {
        why.push(format!(
            "the heap's outstanding bytes grew by {heap} after the warm-up (tolerance {} KiB)",
            cfg.heap_tolerance_kib
        ));
    }
    let bufs = growth(judged, |s| s.buffers_out).unwrap_or(0);
    if bufs > cfg.buffers_tolerance {
        why.push(format!(
            "buffers out grew by {bufs} after the warm-up (tolerance {})",
            cfg.buffers_tolerance
        ));
    }
    let stale = growth(judged, |s| s.stale).unwrap_or(0);
    if stale > cfg.stale_tolerance {
        why.push(format!(
            "memberships at the SA that no controller holds grew by {stale} after the warm-up (tolerance {})",
            cfg.stale_tolerance
        ));
    }
}

/// What is left once every stack stopped.
fn final_failures(fin: &Final, why: &mut Vec<String>) {
    if fin.sa_memberships > 0 {
        why.push(format!(
            "{} memberships left at the SA after every stack stopped",
            fin.sa_memberships
        ));
    }
    if fin.buffers_out > 0 {
        why.push(format!(
            "{} buffers still out after every stack stopped",
            fin.buffers_out
        ));
    }
    if !fin.unflushed.is_empty() {
        why.push(format!(
            "the flush did not complete on {}",
            fin.unflushed.join(", ")
        ));
    }
    if !fin.panicked.is_empty() {
        why.push(format!(
            "the application panicked on {}",
            fin.panicked.join(", ")
        ));
    }
    if fin.ledger.unaccounted() > 0 {
        why.push(format!(
            "after stop {} packets were unaccounted for ({})",
            fin.ledger.unaccounted(),
            fin.ledger.leaks().join(" ")
        ));
    }
}

impl Outcome {
    /// The run as one JSON object.
    pub fn json(&self, cfg: &Config) -> Value {
        json!({
            "program": "ibpoll-soak",
            "fabric": "sim",
            "seed": cfg.seed,
            "duration_s": cfg.duration.as_secs_f64(),
            "interval_s": cfg.interval.as_secs_f64(),
            "warmup": cfg.warmup,
            "stacks": cfg.stacks,
            "groups": cfg.groups,
            "rate_pps": cfg.rate_pps,
            "churn_mean_ms": cfg.churn_mean.as_secs_f64() * 1e3,
            "tolerances": {
                "rss_kib": cfg.rss_tolerance_kib,
                "heap_kib": cfg.heap_tolerance_kib,
                "buffers": cfg.buffers_tolerance,
                "stale_memberships": cfg.stale_tolerance,
                "memberships_max": membership_bound(cfg),
            },
            "mutation": cfg.mutation.map(|m| format!("{m:?}")),
            "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "samples": self.samples.iter().map(Sample::json).collect::<Vec<_>>(),
            "final": {
                "sa_memberships": self.fin.sa_memberships,
                "buffers_out": self.fin.buffers_out,
                "unflushed": self.fin.unflushed,
                "panicked": self.fin.panicked,
                "ledger": self.fin.ledger.json(),
            },
            "interrupted": self.interrupted,
            "passed": self.failures.is_empty(),
            "failures": self.failures,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ibpoll_testkit::alloc::Heap;

    fn cfg() -> Config {
        Config {
            duration: Duration::from_secs(40),
            interval: Duration::from_secs(10),
            warmup: 1,
            seed: 1,
            stacks: 2,
            groups: 2,
            rate_pps: 10.0,
            churn_mean: Duration::from_millis(100),
            rss_tolerance_kib: 100,
            heap_tolerance_kib: 10,
            buffers_tolerance: 0,
            stale_tolerance: 0,
            settle_max: Duration::from_secs(10),
            mutation: None,
        }
    }

    fn sample(rss_kib: u64, heap_kib: i64, buffers_out: usize, stale: usize) -> Sample {
        Sample {
            t_s: 0.0,
            wall_s: 0.0,
            rss_kib,
            heap: Heap {
                bytes: heap_kib * 1024,
                allocs: 100,
            },
            buffers_out,
            buffers_by_host: vec![buffers_out],
            sa_memberships: 2 + stale,
            held: 2,
            stale,
            lost: 0,
            ledger: Ledger::default(),
            churn: churn::ChurnCounts::default(),
            settled: true,
            unsettled: None,
            settle_s: 0.1,
            load: None,
        }
    }

    fn clean() -> Final {
        Final {
            sa_memberships: 0,
            buffers_out: 0,
            unflushed: Vec::new(),
            panicked: Vec::new(),
            ledger: Ledger::default(),
        }
    }

    #[test]
    fn growth_is_judged_after_the_warm_up_against_each_tolerance() {
        let c = cfg();
        // The warm-up sample may be anything; later ones stay within the tolerances.
        let ok = [
            sample(10, 1, 9, 0),
            sample(500, 100, 0, 0),
            sample(600, 110, 0, 0),
            sample(550, 105, 0, 0),
        ];
        assert_eq!(verdict(&c, &ok, &clean(), false), Vec::<String>::new());
        for (bad, says) in [
            (sample(601, 100, 0, 0), "RSS grew by 101 KiB"),
            (sample(500, 111, 0, 0), "heap's outstanding bytes grew"),
            (sample(500, 100, 1, 0), "buffers out grew by 1"),
            (sample(500, 100, 0, 1), "no controller holds grew by 1"),
        ] {
            let run = [sample(10, 1, 9, 0), sample(500, 100, 0, 0), bad];
            let why = verdict(&c, &run, &clean(), false);
            assert!(why.iter().any(|w| w.contains(says)), "{says}: {why:?}");
        }
        // Too few measurements: judged only when the run was not cut short.
        let short = [sample(10, 1, 0, 0), sample(10, 1, 0, 0)];
        assert_eq!(verdict(&c, &short, &clean(), false).len(), 1);
        assert!(verdict(&c, &short, &clean(), true).is_empty());
    }

    #[test]
    fn anything_left_after_stop_fails_the_run() {
        let c = cfg();
        let ok = [sample(1, 1, 0, 0), sample(1, 1, 0, 0), sample(1, 1, 0, 0)];
        let mut fin = clean();
        fin.sa_memberships = 1;
        fin.buffers_out = 2;
        fin.unflushed.push("h0".into());
        let why = verdict(&c, &ok, &fin, false);
        assert_eq!(why.len(), 3, "{why:?}");
        // A measurement over the membership bound (2 hosts x (1 + 2 groups) = 6).
        let mut over = sample(1, 1, 0, 0);
        over.sa_memberships = 7;
        let why = verdict(&c, &[ok[0].clone(), ok[1].clone(), over], &clean(), false);
        assert!(why.iter().any(|w| w.contains("more than the 6")), "{why:?}");
    }
}
