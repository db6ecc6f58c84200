//! Seeds 0..200 through the simulator (CI). More: `scripts/simtest.sh`.

use ibpoll_simtest::run_seed;

#[test]
fn seeds_0_to_200() {
    // A debug build is ~10x slower: it runs the first 20.
    let n = if cfg!(debug_assertions) { 20 } else { 200 };
    let mut failed = Vec::new();
    for seed in 0..n {
        let r = run_seed(seed, None);
        if let Some(msg) = r.failure {
            failed.push(format!(
                "seed {seed}: {msg}\n  knobs: {}\n  replay: cargo run --release -p ibpoll-simtest -- --seeds {seed}..{} --verbose",
                r.knobs,
                seed + 1
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {n} seeds failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}
