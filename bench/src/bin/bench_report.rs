//! `bench-report`: turns the runs `scripts/bench.sh` collected into `latest.json` and the
//! plots (see `ibpoll_bench::report` for the input and the aggregation).
//!
//! ```text
//! bench-report --input DIR --out bench/results [--criterion target/criterion]
//! ```
//!
//! Writes `latest.json`, `throughput.svg`, `latency_cdf.svg` and `summary.md` (the
//! headline tables in Markdown) into `--out`, and prints the ratios and the targets.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use ibpoll_bench::{plot, report};

/// Aggregates bench.sh's runs: medians, min and max, ratios ibpoll/kernel, targets, plots.
#[derive(Debug, Parser)]
#[command(name = "bench-report")]
struct Args {
    /// The directory bench.sh collected the runs in (runs.jsonl, meta.json, CDF and
    /// callgrind files).
    #[arg(long)]
    input: PathBuf,
    /// Where latest.json and the SVG plots go.
    #[arg(long)]
    out: PathBuf,
    /// criterion's output directory, for the snapshot-read figure (qsbr/*).
    #[arg(long)]
    criterion: Option<PathBuf>,
}

fn main() -> ExitCode {
    ibpoll_bench::init_logging();
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-report: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), report::ReportError> {
    let r = report::build(&args.input, args.criterion.as_deref())?;
    let io = |path: PathBuf| move |source| report::ReportError::Io { path, source };
    std::fs::create_dir_all(&args.out).map_err(io(args.out.clone()))?;
    let latest = args.out.join("latest.json");
    let mut text = serde_json::to_string_pretty(&r.to_json()).expect("a Value serialises");
    text.push('\n');
    std::fs::write(&latest, text).map_err(io(latest.clone()))?;
    plot::throughput(&r, &args.out.join("throughput.svg"))?;
    plot::latency_cdf(&r, &args.out.join("latency_cdf.svg"))?;
    let summary = args.out.join("summary.md");
    std::fs::write(&summary, r.to_markdown()).map_err(io(summary.clone()))?;

    println!("bench-report: wrote {}", latest.display());
    for ratio in &r.ratios {
        let s = ratio.stat;
        println!(
            "  {}: {:.3} (min {:.3}, max {:.3}, n {})",
            ratio.what, s.median, s.min, s.max, s.n
        );
    }
    for (case, v) in &r.instructions {
        let f = |k: &str| fmt_opt(v[k].as_f64());
        println!(
            "  callgrind {case}, one run: {} Ir per packet end to end (TX+fabric {}, forwarder {}, RX {}); all threads: {} per tx packet",
            f("path_ir_per_packet"),
            f("tx_ir_per_packet"),
            f("fwd_core_ir_per_packet"),
            f("rx_ir_per_packet"),
            f("ir_per_tx_packet"),
        );
        let m = &v["marginal"];
        if m.is_object() {
            let f = |k: &str| fmt_opt(m[k].as_f64());
            let fwd = if m.get("fwd_core_ir_per_packet").is_some() {
                let [all, nic, ctl, rest, excl, iters] = report::FWD_CORE_SPLIT.map(f);
                format!(
                    ", forwarder {all} = NIC {nic} + controller {ctl} + stack/ipoib-fwd {rest}, forwarder without the NIC {excl}, {iters} loop iterations per packet"
                )
            } else {
                String::new()
            };
            println!(
                "  callgrind {case}, marginal (--count {} -> {}): {} Ir per packet end to end (TX+fabric {}{fwd}, RX {}){}",
                m["counts"][0],
                m["counts"][1],
                f("path_ir_per_packet"),
                f("tx_ir_per_packet"),
                f("rx_ir_per_packet"),
                m["note"].as_str().map_or(String::new(), |n| format!("; not valid: {n}")),
            );
        }
    }
    for t in &r.targets {
        let met = match t.met() {
            Some(true) => "met",
            Some(false) => "NOT met",
            None => "not measured",
        };
        println!("  target {}: {} ({met})", t.target, fmt_opt(t.measured));
    }
    Ok(())
}

fn fmt_opt(x: Option<f64>) -> String {
    match x {
        Some(v) if v.abs() >= 100.0 => format!("{v:.0}"),
        Some(v) => format!("{v:.3}"),
        None => String::from("-"),
    }
}
