//! `cargo run --release -p ibpoll-simtest -- --seeds A..B [--steps N] [--verbose]`
//!
//! Runs every seed of the range through the simulator, prints one line per failing seed
//! with the command that replays it, and ends with `N passed, M failed` (exit status 1
//! when M > 0). `--verbose` prints the knobs each seed drew and its trace hash.
//! `SIMTEST_DEBUG=1` in the environment prints every action and every change of the SA's
//! memberships as it happens (for replaying one failing seed).

use std::cell::RefCell;
use std::process::ExitCode;

use ibpoll_simtest::run_seed;

thread_local! {
    static PANIC_AT: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn usage() -> ExitCode {
    eprintln!("usage: ibpoll-simtest --seeds A..B [--steps N] [--verbose]");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut seeds = None;
    let mut steps = None;
    let mut verbose = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seeds" => {
                let Some(r) = args.next() else {
                    return usage();
                };
                let parsed = match r.split_once("..") {
                    Some((a, b)) => a.parse::<u64>().ok().zip(b.parse::<u64>().ok()),
                    None => r.parse::<u64>().ok().map(|a| (a, a + 1)),
                };
                let Some(p) = parsed else {
                    return usage();
                };
                seeds = Some(p);
            }
            "--steps" => {
                let Some(n) = args.next().and_then(|n| n.parse().ok()) else {
                    return usage();
                };
                steps = Some(n);
            }
            "--verbose" | "-v" => verbose = true,
            _ => return usage(),
        }
    }
    let Some((first, end)) = seeds else {
        return usage();
    };
    // The first broken invariant is reported once, on the seed's line, with where it was.
    std::panic::set_hook(Box::new(|info| {
        let at = info
            .location()
            .map(|l| format!(" ({}:{})", l.file(), l.line()))
            .unwrap_or_default();
        PANIC_AT.with(|p| *p.borrow_mut() = Some(at));
    }));
    let (mut passed, mut failed) = (0u64, 0u64);
    for seed in first..end {
        let r = run_seed(seed, steps);
        let steps_arg = steps.map(|n| format!(" --steps {n}")).unwrap_or_default();
        if verbose {
            println!("seed {seed}: {}", r.knobs);
        }
        match &r.failure {
            None => {
                passed += 1;
                if verbose {
                    println!(
                        "seed {seed}: ok, {:.1} s virtual, trace {:016x}",
                        r.virtual_time.0 as f64 / 1e9,
                        r.trace
                    );
                }
            }
            Some(msg) => {
                failed += 1;
                let at = PANIC_AT.with(|p| p.borrow_mut().take()).unwrap_or_default();
                println!(
                    "FAIL seed {seed}: {msg}{at}\n  replay: cargo run --release -p ibpoll-simtest -- --seeds {seed}..{}{steps_arg} --verbose",
                    seed + 1
                );
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
