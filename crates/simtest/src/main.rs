//! `cargo run --release -p ibpoll-simtest -- --seeds A..B [--steps N] [--verbose]`
//!
//! Runs every seed of the range through the simulator, prints one line per failing seed
//! with the command that replays it, and ends with `N passed, M failed` (exit status 1
//! when M > 0, 2 for a refused command line). Seeds are any u64: `A..B` (B exclusive,
//! B > A), `A..=B` (B inclusive, B >= A, so `..=18446744073709551615` reaches the last
//! seed) or a bare `A` (that seed alone). An empty range and `--steps 0` are refused: a
//! run of nothing must not pass. `--verbose` prints the knobs each seed drew and its
//! trace hash. `SIMTEST_DEBUG=1` in the environment prints every action and every
//! change of the SA's memberships as it happens (for replaying one failing seed). Logs
//! of the stack (`tracing`) go to standard error, filtered by `RUST_LOG` (default
//! `error`: the injected faults make the control plane's warnings expected here).

use std::cell::RefCell;
use std::io::Write;
use std::ops::RangeInclusive;
use std::process::ExitCode;

use clap::Parser;
use ibpoll_simtest::run_seed;

thread_local! {
    static PANIC_AT: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// ibpoll-simtest: the deterministic whole-system simulator, over a range of seeds.
#[derive(Debug, Parser)]
#[command(name = "ibpoll-simtest", version)]
struct Args {
    /// Seeds to run: A..B (B exclusive), A..=B (B inclusive) or A (one seed); any u64.
    #[arg(long, value_name = "A..B|A..=B|A", value_parser = parse_seeds, allow_hyphen_values = true)]
    seeds: RangeInclusive<u64>,

    /// Steps per seed (default: drawn from the seed); at least 1.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..), allow_hyphen_values = true)]
    steps: Option<u64>,

    /// Print each seed's knobs and trace hash.
    #[arg(long, short)]
    verbose: bool,
}

/// `A..B`, `A..=B` or `A`, as the inclusive range of seeds to run (never empty).
fn parse_seeds(s: &str) -> Result<RangeInclusive<u64>, String> {
    let num = |t: &str| {
        t.trim().parse::<u64>().map_err(|_| {
            format!(
                "{t:?} is not a seed (a whole number from 0 to {})",
                u64::MAX
            )
        })
    };
    if let Some((a, b)) = s.split_once("..=") {
        let (a, b) = (num(a)?, num(b)?);
        if b < a {
            return Err(format!("{s} is empty: give A..=B with B >= A"));
        }
        return Ok(a..=b);
    }
    if let Some((a, b)) = s.split_once("..") {
        let (a, b) = (num(a)?, num(b)?);
        if b <= a {
            return Err(format!(
                "{s} is empty (B is exclusive): give A..B with B > A, or A..=B"
            ));
        }
        return Ok(a..=b - 1);
    }
    let a = num(s)?;
    Ok(a..=a)
}

/// One line to standard output; false if it could not be written.
fn line(text: &str) -> bool {
    let mut o = std::io::stdout().lock();
    writeln!(o, "{text}").and_then(|()| o.flush()).is_ok()
}

fn note(text: &str) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let text = e.render().to_string();
            use clap::error::ErrorKind::{DisplayHelp, DisplayVersion};
            if matches!(e.kind(), DisplayHelp | DisplayVersion) {
                if line(text.trim_end()) {
                    return ExitCode::SUCCESS;
                }
                note("ibpoll-simtest: error: cannot write to standard output");
                return ExitCode::from(1);
            }
            note(&format!("ibpoll-simtest: {}", text.trim_end()));
            return ExitCode::from(2);
        }
    };
    let steps = args.steps.map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    // The first broken invariant is reported once, on the seed's line, with where it was.
    std::panic::set_hook(Box::new(|info| {
        let at = info
            .location()
            .map(|l| format!(" ({}:{})", l.file(), l.line()))
            .unwrap_or_default();
        PANIC_AT.with(|p| *p.borrow_mut() = Some(at));
    }));
    let (mut passed, mut failed) = (0u64, 0u64);
    let mut out_ok = true;
    for seed in args.seeds {
        let r = run_seed(seed, steps);
        let steps_arg = args
            .steps
            .map(|n| format!(" --steps {n}"))
            .unwrap_or_default();
        if args.verbose {
            out_ok &= line(&format!("seed {seed}: {}", r.knobs));
        }
        match &r.failure {
            None => {
                passed += 1;
                if args.verbose {
                    out_ok &= line(&format!(
                        "seed {seed}: ok, {:.1} s virtual, trace {:016x}",
                        r.virtual_time.0 as f64 / 1e9,
                        r.trace
                    ));
                }
            }
            Some(msg) => {
                failed += 1;
                let at = PANIC_AT.with(|p| p.borrow_mut().take()).unwrap_or_default();
                out_ok &= line(&format!(
                    "FAIL seed {seed}: {msg}{at}\n  replay: cargo run --release -p ibpoll-simtest -- --seeds {seed}{steps_arg} --verbose"
                ));
            }
        }
        if !out_ok {
            note("ibpoll-simtest: error: cannot write to standard output");
            return ExitCode::from(1);
        }
    }
    if !line(&format!("{passed} passed, {failed} failed")) {
        note("ibpoll-simtest: error: cannot write to standard output");
        return ExitCode::from(1);
    }
    if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
