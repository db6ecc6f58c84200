//! Control-plane benchmark: how long one controller takes to rejoin every group after a
//! subnet-manager restart, and how many SA transactions it keeps in flight meanwhile.
//!
//! One controller on the simulated fabric (embedded SA, zero answer delay, real time)
//! joins `--groups` IPv4 groups and the broadcast group; then `SimFabric::restart_sm`
//! wipes the SA's groups and sends ClientReregister. The controller runs its light flush
//! (waits for nothing in flight, leaves every group, rejoins the broadcast group first,
//! then the rest) and the clock stops when every group is Joined again and published.
//! The peak of `Controller::sa_in_flight` after any poll is recorded; the join window
//! (`--window`, CtrlConfig::sa_window) bounds it.
//!
//! Everything runs on the calling thread, the simulated SA included: the figure is the
//! controller's and the simulated SA's CPU time, not a fabric's latency.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use ibpoll_bench::ctrl_host::{CtrlHost, Drive};
use ibpoll_ctrl::Poll;
use serde_json::json;

/// Rejoin after a ClientReregister: time and SA transactions in flight.
#[derive(Debug, Parser)]
#[command(name = "rejoin")]
struct Args {
    /// IPv4 groups joined besides the broadcast group.
    #[arg(long, default_value_t = 10_000)]
    groups: u32,
    /// SA transactions in flight at most (CtrlConfig::sa_window).
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// Give up (exit status 1) when a phase takes longer than this many seconds.
    #[arg(long, default_value_t = 120.0)]
    limit: f64,
    /// After the rejoin, run this many polls with nothing due and report their mean cost
    /// (for `valgrind --tool=callgrind`: the difference between two counts of this
    /// option, divided by it, is the instruction count of one idle poll).
    #[arg(long, default_value_t = 0)]
    idle_polls: u64,
    /// Write one JSON object to FILE, or to stdout as the last line with `-`.
    #[arg(long, value_name = "FILE|-")]
    json: Option<String>,
}

fn main() -> ExitCode {
    ibpoll_bench::init_logging();
    let args = Args::parse();
    if args.groups == 0 || args.groups >= 1 << 24 {
        eprintln!("rejoin: --groups {} must be 1..16777216", args.groups);
        return ExitCode::from(2);
    }
    if args.window == 0 {
        eprintln!("rejoin: --window must be at least 1");
        return ExitCode::from(2);
    }
    if !(args.limit.is_finite() && args.limit > 0.0) {
        eprintln!(
            "rejoin: --limit {} must be a positive number of seconds",
            args.limit
        );
        return ExitCode::from(2);
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rejoin: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let limit = Duration::from_secs_f64(args.limit);
    let mut host = CtrlHost::new(args.groups as usize, args.window);
    host.join(args.groups);
    let join = host.join_all(limit)?;
    host.verify_joined()?;
    let before = host.ctl.stats();
    let rejoin = host.reregister(limit)?;
    host.verify_joined()?;
    let after = host.ctl.stats();
    let idle = idle_polls(&mut host, args.idle_polls);

    let ms = |d: &Drive| d.elapsed.as_secs_f64() * 1e3;
    println!(
        "rejoin: {} groups (+ broadcast), SA window {}, embedded SA with zero delay",
        args.groups, args.window
    );
    println!(
        "  initial join: {:.2} ms, peak SA in flight {}, {} polls",
        ms(&join),
        join.sa_in_flight_peak,
        join.polls
    );
    println!(
        "  after ClientReregister: all Joined again in {:.2} ms, peak SA in flight {}, {} polls",
        ms(&rejoin),
        rejoin.sa_in_flight_peak,
        rejoin.polls
    );
    println!(
        "  during the rejoin: {} joins and {} leaves sent, window full {} times",
        after.sa_joins_sent - before.sa_joins_sent,
        after.sa_leaves_sent - before.sa_leaves_sent,
        after.sa_window_full - before.sa_window_full
    );
    if let Some(idle) = &idle {
        println!(
            "  idle polls: {} ({} busy), {:.1} ns each",
            args.idle_polls, idle.busy, idle.ns_per_poll
        );
    }
    println!("  load average {}", ibpoll_bench::loadavg_text());

    let Some(dest) = &args.json else {
        return Ok(());
    };
    let line = json!({
        "groups": args.groups,
        "window": args.window,
        "join_ms": ms(&join),
        "join_sa_in_flight_peak": join.sa_in_flight_peak,
        "rejoin_ms": ms(&rejoin),
        "sa_in_flight_peak": rejoin.sa_in_flight_peak,
        "rejoin_polls": rejoin.polls,
        "rejoin_joins_sent": after.sa_joins_sent - before.sa_joins_sent,
        "rejoin_leaves_sent": after.sa_leaves_sent - before.sa_leaves_sent,
        "idle_polls": args.idle_polls,
        "idle_poll_ns": idle.as_ref().map(|i| i.ns_per_poll),
        "loadavg": ibpoll_bench::loadavg_json(),
    })
    .to_string();
    if dest == "-" {
        println!("{line}");
    } else {
        std::fs::write(dest, format!("{line}\n"))?;
    }
    Ok(())
}

/// What the polls after the rejoin cost.
struct Idle {
    /// Mean wall-clock time of one poll.
    ns_per_poll: f64,
    /// Polls that reported work (an expiry check that came due, say).
    busy: u64,
}

/// Polls the rejoined controller `n` times, every data core quiescing after each poll as
/// in the timed drives. `None` when `n` is 0.
#[inline(never)] // a symbol of its own, for `valgrind --toggle-collect=*idle_polls*`
fn idle_polls(host: &mut CtrlHost, n: u64) -> Option<Idle> {
    if n == 0 {
        return None;
    }
    let mut busy = 0;
    let start = Instant::now();
    for _ in 0..n {
        if host.ctl.poll() == Poll::Busy {
            busy += 1;
        }
        for c in &mut host.cores {
            c.reader.quiescent();
        }
    }
    Some(Idle {
        ns_per_poll: start.elapsed().as_secs_f64() * 1e9 / n as f64,
        busy,
    })
}
