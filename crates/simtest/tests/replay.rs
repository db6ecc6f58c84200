//! The same seed replays bit for bit: no hash-map order, wall clock or thread timing
//! leaks into a run.

use ibpoll_simtest::run_seed;

#[test]
fn a_seed_replays_bit_for_bit() {
    let mut traces = Vec::new();
    for seed in [3, 42, 1234, 5_000_017] {
        let a = run_seed(seed, Some(400));
        let b = run_seed(seed, Some(400));
        assert!(a.failure.is_none(), "seed {seed}: {:?}", a.failure);
        assert_ne!(a.trace, 0);
        assert_eq!(
            a.trace, b.trace,
            "seed {seed} ran differently twice ({})",
            a.knobs
        );
        assert_eq!(a.virtual_time, b.virtual_time);
        traces.push(a.trace);
    }
    traces.sort_unstable();
    traces.dedup();
    assert_eq!(traces.len(), 4, "different seeds, different runs");
}
