//! Instructions per packet of the receiving lane with software fan-out and without, and
//! of the worker lane that takes the fanned-out packets, under callgrind:
//!
//! ```text
//! valgrind --tool=callgrind --callgrind-out-file=cg.fanout target/release/fanout-ir \
//!     --fanout on --rounds 5000
//! callgrind_annotate --inclusive=yes cg.fanout | grep -E 'receiver_poll|worker_poll'
//! ```
//!
//! Divide each function's inclusive Ir by the JSON line's `lane0_rx_packets` (every
//! packet of the measured rounds arrives at lane 0). See `ibpoll_bench::fanout` for the
//! set-up; run it with `--fanout off` for the baseline.

use clap::Parser;
use ibpoll::Fanout;
use ibpoll_bench::fanout::{Fixture, BURST, FLOWS, SIZE};

/// Runs rounds of one burst through a receiver with two lanes (for callgrind).
#[derive(Debug, Parser)]
#[command(name = "fanout-ir")]
struct Args {
    /// Software fan-out on the receiver: on or off.
    #[arg(long, default_value = "on")]
    fanout: String,
    /// Measured rounds (one burst of 32 packets each).
    #[arg(long, default_value_t = 5000)]
    rounds: u64,
}

fn main() {
    ibpoll_bench::init_logging();
    let a = Args::parse();
    let fanout = match a.fanout.as_str() {
        "on" => Fanout::flow_hash(),
        "off" => Fanout::Off,
        other => fail(&format!("--fanout {other:?}: give on or off")),
    };
    if a.rounds == 0 || a.rounds > 10_000_000 {
        fail(&format!("--rounds {}: give 1 to 10000000", a.rounds));
    }
    let mut f = Fixture::new(fanout).unwrap_or_else(|e| fail(&e));
    let before = f.stats();
    for _ in 0..a.rounds {
        f.round();
    }
    let after = f.stats();
    let d = |i: usize, g: fn(&ibpoll::LcoreStats) -> u64| g(&after[i]) - g(&before[i]);
    let rx = d(0, |s| s.rx_packets);
    let expected = a.rounds * BURST as u64;
    let s = &after[0];
    let dropped = s.rx_dropped() - s.rx_loopback + s.app_dropped + after[1].app_dropped;
    if rx != expected || dropped != 0 {
        fail(&format!(
            "lane 0 received {rx} of {expected} packets ({dropped} dropped): {after:?}"
        ));
    }
    println!(
        "{{\"fanout\":\"{}\",\"lanes\":2,\"flows\":{FLOWS},\"size\":{SIZE},\"rounds\":{},\
         \"lane0_rx_packets\":{rx},\"lane0_app_rx\":{},\"lane0_fanout_out\":{},\
         \"lane1_fanout_in\":{}}}",
        a.fanout,
        a.rounds,
        d(0, |s| s.app_rx),
        d(0, |s| s.fanout_out),
        d(1, |s| s.fanout_in),
    );
}

fn fail(msg: &str) -> ! {
    eprintln!("fanout-ir: {msg}");
    std::process::exit(2);
}
