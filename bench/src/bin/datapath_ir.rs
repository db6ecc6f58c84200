//! Instructions per packet of a data lcore's classify + resolve (no NIC), under
//! callgrind:
//!
//! ```text
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*Fixture*run_bursts*' \
//!     target/release/datapath-ir --case unicast_1 --bursts 1000
//! ```
//!
//! Only `Fixture::run_bursts` is counted (set-up and the controller are not), so Ir /
//! packets is exact. It prints one JSON line: the case, bursts and packets; divide
//! callgrind's total by `packets`. See `ibpoll_bench::datapath` for the cases.

use clap::Parser;
use ibpoll_bench::datapath::{dests, Fixture, BURST, CASES};

/// Runs bursts of one data-path case (for callgrind).
#[derive(Debug, Parser)]
#[command(name = "datapath-ir")]
struct Args {
    /// unicast_1, unicast_8, mcast_4 or mcast_32_of_10k.
    #[arg(long, default_value = "unicast_1")]
    case: String,
    /// Bursts of 32 packets.
    #[arg(long, default_value_t = 1000)]
    bursts: u64,
}

fn main() {
    ibpoll_bench::init_logging();
    let a = Args::parse();
    let Some(d) = dests(&a.case) else {
        eprintln!(
            "datapath-ir: --case {:?} is not a case: give one of {}",
            a.case,
            CASES.join(", ")
        );
        std::process::exit(2);
    };
    if a.bursts == 0 || a.bursts > 100_000_000 {
        eprintln!(
            "datapath-ir: --bursts {} is out of range: give 1 to 100000000",
            a.bursts
        );
        std::process::exit(2);
    }
    let mut f = Fixture::new();
    f.run_bursts(&d, a.bursts);
    if let Err(e) = f.check() {
        eprintln!("datapath-ir: {e}");
        std::process::exit(1);
    }
    println!(
        "{{\"case\":\"{}\",\"bursts\":{},\"packets\":{}}}",
        a.case,
        a.bursts,
        a.bursts * BURST as u64
    );
}
