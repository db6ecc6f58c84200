//! `ibpoll-soak`: stacks exchanging unicast and multicast traffic on the embedded
//! simulated fabric under continuous churn (joins and leaves, port flaps, subnet-manager
//! restarts, P_Key and LID changes), measured every interval for growth and for packets
//! lost without a counter. See `ibpoll_bench::soak` for what is measured and how.

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use ibpoll_bench::soak::traffic::Mutation;
use ibpoll_bench::soak::{self, Config, Outcome};
use ipoib_fwd::cli::{self, bad, limits, note, BadFlag, ResultFile, Signals, Stdout};

/// Counts the heap's outstanding bytes and allocations (every thread), which each
/// measurement reports beside RSS: a leak shows there exactly, where RSS also moves
/// with the allocator's own caching.
#[global_allocator]
static GLOBAL: ibpoll_testkit::alloc::CountingAlloc = ibpoll_testkit::alloc::CountingAlloc;

const PROG: &str = "ibpoll-soak";

const ABOUT: &str = "\
Soak: stacks on the embedded simulated fabric exchange unicast and multicast traffic
while the churn never stops (joins and leaves, send-only groups, port flaps, subnet-
manager restarts, P_Key and LID changes, at seeded random intervals). Every interval the
churn's disruptions end, traffic pauses until the hosts settle, and one line reports RSS,
buffers out of every pool, memberships at the SA and packets unaccounted for.

Exit status: 0 the run passed; 1 it failed (growth beyond a tolerance after the warm-up,
a packet unaccounted for, a measurement that did not settle, a membership or buffer left
after stop, an output that could not be written); 2 a refused command line; 128 + the
signal when SIGINT or SIGTERM ended it early (the run still stops and checks).";

/// The command line.
#[derive(Debug, Parser)]
#[command(name = PROG, version, about = ABOUT)]
struct Args {
    /// Seconds of traffic and churn, measurements included (at most 86400).
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 600.0,
        allow_negative_numbers = true
    )]
    duration: f64,
    /// Seconds between two measurements.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 60.0,
        allow_negative_numbers = true
    )]
    interval: f64,
    /// Measurements before growth is judged (the first ones warm up).
    #[arg(long, value_name = "N", default_value_t = 1)]
    warmup: usize,
    /// Seed of the churn and the fabric (default: from the clock; printed either way).
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// Hosts (one stack each), 2 to 8.
    #[arg(long, value_name = "N", default_value_t = 4)]
    stacks: usize,
    /// IPv4 multicast groups (239.1.1.1 upwards), 1 to 64.
    #[arg(long, value_name = "N", default_value_t = 16)]
    groups: usize,
    /// Datagrams per second each host sends (half unicast, half multicast), 1 to 1e6.
    #[arg(
        long,
        value_name = "PPS",
        default_value_t = 2000.0,
        allow_negative_numbers = true
    )]
    rate: f64,
    /// Mean milliseconds between two churn events (uniform from 0 to twice this), 1 to 60000.
    #[arg(
        long,
        value_name = "MS",
        default_value_t = 300.0,
        allow_negative_numbers = true
    )]
    churn_ms: f64,
    /// RSS growth allowed after the warm-up, KiB.
    #[arg(long, value_name = "KIB", default_value_t = 4096)]
    rss_tolerance_kib: u64,
    /// Growth allowed of the heap's outstanding bytes after the warm-up, KiB.
    #[arg(long, value_name = "KIB", default_value_t = 1024)]
    heap_tolerance_kib: u64,
    /// Growth of buffers out allowed after the warm-up.
    #[arg(long, value_name = "N", default_value_t = 0)]
    buffers_tolerance: usize,
    /// Growth allowed of memberships the SA holds that no controller holds.
    #[arg(long, value_name = "N", default_value_t = 0)]
    stale_tolerance: usize,
    /// Seconds a measurement may wait for the hosts to settle, 1 to 600.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 120.0,
        allow_negative_numbers = true
    )]
    settle_max: f64,
    /// Write the run as one JSON object to FILE (replaced only once complete), or to
    /// standard output as the last line with `-`.
    #[arg(long, value_name = "FILE|-")]
    json: Option<String>,
    /// A fault planted in the soak's own application, to show its checks catch it
    /// (its tests).
    #[arg(long, value_enum, hide = true)]
    mutate: Option<Mutation>,
}

/// Checks every flag and builds the configuration.
fn config(a: &Args) -> Result<Config, BadFlag> {
    let duration = limits::duration("--duration", a.duration)?;
    let interval = limits::duration("--interval", a.interval)?;
    if !(2..=8).contains(&a.stacks) {
        return Err(bad(
            "--stacks",
            format!("{} is out of range: give 2 to 8 hosts", a.stacks),
        ));
    }
    if !(1..=64).contains(&a.groups) {
        return Err(bad(
            "--groups",
            format!("{} is out of range: give 1 to 64 groups", a.groups),
        ));
    }
    if !(a.rate.is_finite() && (1.0..=1e6).contains(&a.rate)) {
        return Err(bad(
            "--rate",
            format!(
                "{} is out of range: give 1 to 1e6 datagrams per second",
                a.rate
            ),
        ));
    }
    if !(a.churn_ms.is_finite() && (1.0..=60_000.0).contains(&a.churn_ms)) {
        return Err(bad(
            "--churn-ms",
            format!(
                "{} is out of range: give 1 to 60000 milliseconds",
                a.churn_ms
            ),
        ));
    }
    if !(a.settle_max.is_finite() && (1.0..=600.0).contains(&a.settle_max)) {
        return Err(bad(
            "--settle-max",
            format!("{} is out of range: give 1 to 600 seconds", a.settle_max),
        ));
    }
    // Measurements: one per interval before the end, and one at the end.
    let needed = (a.warmup as f64 + 2.0) * a.interval;
    if a.duration < needed {
        return Err(bad(
            "--duration",
            format!(
                "{} s with a measurement every {} s leaves fewer than 2 measurements after the warm-up of {}: give at least {needed} s (or a shorter --interval, a smaller --warmup)",
                a.duration, a.interval, a.warmup
            ),
        ));
    }
    let seed = a.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    Ok(Config {
        duration,
        interval,
        warmup: a.warmup,
        seed,
        stacks: a.stacks,
        groups: a.groups,
        rate_pps: a.rate,
        churn_mean: Duration::from_secs_f64(a.churn_ms / 1e3),
        rss_tolerance_kib: a.rss_tolerance_kib,
        heap_tolerance_kib: a.heap_tolerance_kib,
        buffers_tolerance: a.buffers_tolerance,
        stale_tolerance: a.stale_tolerance,
        settle_max: Duration::from_secs_f64(a.settle_max),
        mutation: a.mutate,
    })
}

/// Where the JSON goes.
enum JsonOut {
    Stdout,
    File(ResultFile),
}

fn main() -> ExitCode {
    cli::init_logging();
    let args = match cli::parse_args::<Args>(PROG) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let cfg = match config(&args) {
        Ok(c) => c,
        Err(e) => {
            note(&format!("{PROG}: error: {e}"));
            return ExitCode::from(cli::EXIT_USAGE);
        }
    };
    let json = match args.json.as_deref() {
        None => None,
        Some("-") => Some(JsonOut::Stdout),
        Some(p) => match ResultFile::check(std::path::Path::new(p)) {
            Ok(f) => Some(JsonOut::File(f)),
            Err(e) => {
                note(&format!("{PROG}: error: --json: {}", cli::describe(&e)));
                return ExitCode::from(cli::EXIT_USAGE);
            }
        },
    };
    let stop = Arc::new(AtomicBool::new(false));
    let signals = match Signals::install(&stop) {
        Ok(s) => s,
        Err(e) => {
            note(&format!(
                "{PROG}: error: installing the signal handlers: {e}"
            ));
            return ExitCode::from(cli::EXIT_FAILED);
        }
    };
    let mut out = Stdout::new();
    out.line(&header(&cfg));
    let outcome = match soak::run(&cfg, &stop, |l| {
        out.line(l);
    }) {
        Ok(o) => o,
        Err(e) => {
            note(&format!("{PROG}: error: {}", cli::describe(&e)));
            return ExitCode::from(cli::EXIT_FAILED);
        }
    };
    let mut failed = !outcome.failures.is_empty();
    summary(&mut out, &cfg, &outcome);
    if let Some(j) = json {
        let text = outcome.json(&cfg).to_string();
        match j {
            JsonOut::Stdout => {
                out.line(&text);
            }
            JsonOut::File(f) => {
                if let Err(e) = f.write(format!("{text}\n").as_bytes()) {
                    note(&format!(
                        "{PROG}: error: writing the result: {}",
                        cli::describe(&e)
                    ));
                    failed = true;
                }
            }
        }
    }
    if let Some(e) = out.error() {
        note(&format!("{PROG}: error: writing to standard output: {e}"));
        failed = true;
    }
    cli::exit_status(failed, signals.received())
}

fn header(cfg: &Config) -> String {
    format!(
        "{PROG}: seed {} (replay with --seed {}); {} stacks, {} groups, {} datagrams/s per host, a churn event every {:.0} ms on average; {:.0} s, a measurement every {:.0} s, warm-up {}; {} CPUs, load {}",
        cfg.seed,
        cfg.seed,
        cfg.stacks,
        cfg.groups,
        cfg.rate_pps,
        cfg.churn_mean.as_secs_f64() * 1e3,
        cfg.duration.as_secs_f64(),
        cfg.interval.as_secs_f64(),
        cfg.warmup,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        ibpoll_bench::loadavg_text(),
    )
}

fn summary(out: &mut Stdout, cfg: &Config, o: &Outcome) {
    let f = &o.fin;
    out.line(&format!(
        "after stop: SA memberships {} | buffers out {} | flushed {} | unaccounted {} (sent {} received {} dropped {})",
        f.sa_memberships,
        f.buffers_out,
        if f.unflushed.is_empty() { "all" } else { "NOT all" },
        f.ledger.unaccounted(),
        f.ledger.sent,
        f.ledger.received,
        f.ledger.dropped,
    ));
    if o.interrupted {
        out.line(&format!("{PROG}: stopped early by a signal"));
    }
    if o.failures.is_empty() {
        out.line(&format!("{PROG}: passed (seed {})", cfg.seed));
    } else {
        for why in &o.failures {
            out.line(&format!("{PROG}: FAILED: {why}"));
        }
    }
}
