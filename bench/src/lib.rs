//! Shared pieces of ibpoll's benchmarks (see `bench/README.md`).
//!
//! * [`ctrl_host`]: one controller on the simulated fabric with many groups joined, used by
//!   the `rejoin` binary and the `snapshot` criterion benchmark.
//! * [`datapath`]: a data lcore's classify + resolve against a real snapshot, used by the
//!   `datapath` criterion benchmark and the `datapath-ir` binary.
//! * [`fanout`]: the receiving lane's cost per packet with software fan-out and without,
//!   used by the `fanout-ir` binary.
//! * [`loadavg`]: the machine load, printed with every figure so that numbers taken on a
//!   shared machine can be judged.
//! * [`report`] and [`plot`]: `bench-report`, the aggregation of `scripts/bench.sh`'s
//!   runs into `bench/results/latest.json` and its SVG plots.
//! * [`peers`]: DPDK measured in the same run (`dpdk-peer`: l3fwd's captures, rates from
//!   DPDK's telemetry socket) and the figures that stand beside it.
//! * [`soak`]: `ibpoll-soak` (`scripts/soak.sh`), stacks under traffic and continuous
//!   churn for minutes, checked for growth and for packets lost without a counter.

pub mod ctrl_host;
pub mod datapath;
pub mod fanout;
pub mod peers;
pub mod plot;
pub mod report;
pub mod soak;

/// The 1-, 5- and 15-minute load averages from `/proc/loadavg`, or `None` where the file
/// cannot be read (not Linux).
pub fn loadavg() -> Option<[f64; 3]> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = s.split_whitespace().map(|w| w.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// The load averages as `"1.00 0.50 0.25"` (or `"unknown"`).
pub fn loadavg_text() -> String {
    match loadavg() {
        Some([a, b, c]) => format!("{a:.2} {b:.2} {c:.2}"),
        None => String::from("unknown"),
    }
}

/// The load averages as a JSON array (or `null`).
pub fn loadavg_json() -> serde_json::Value {
    match loadavg() {
        Some(l) => serde_json::json!(l),
        None => serde_json::Value::Null,
    }
}

/// Installs the `tracing` subscriber of the bench binaries: standard error, filtered
/// by `RUST_LOG` (default `warn`), so that the stack's warnings (hugepage fallback,
/// pinning) are seen beside the figures.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}
