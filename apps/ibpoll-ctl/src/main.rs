//! `ibpoll-ctl`: inspects a running ibpoll process (pktgen, ipoib-fwd, an application
//! built with `StackBuilder::telemetry(true)`) through its telemetry socket
//! (`ibpoll::telemetry`): its interfaces, multicast groups, neighbours and counters, as
//! tables or as the JSON the process answered.
//!
//! The conventions (exit statuses, checked standard output, logs) are those of the
//! other programs ([`ipoib_fwd::cli`]).

mod client;
mod show;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ipoib_fwd::cli::{self, note, Stdout};

const AFTER_HELP: &str = "\
The process: the only one serving telemetry in the socket directory ($IBPOLL_RUNTIME_DIR,
else $XDG_RUNTIME_DIR/ibpoll, else /run/ibpoll for root or /tmp/ibpoll-UID; sockets of
processes that died are ignored), or the one --pid names.

Exit status: 0 the answer was printed; 1 no answer (no process, several and no --pid,
a socket that does not answer, an error answer) or standard output could not be
written; 2 a refused command line. Logs: RUST_LOG (default warn), on standard error.";

/// ibpoll-ctl: shows the interfaces, multicast groups, neighbours and counters of a
/// running ibpoll process.
#[derive(Debug, Parser)]
#[command(name = "ibpoll-ctl", version, after_help = AFTER_HELP)]
struct Args {
    /// The process to ask (default: the only one running).
    #[arg(long, global = true, value_name = "PID")]
    pid: Option<u32>,

    /// Print the process's answer as it came, one JSON object on one line.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    what: What,
}

#[derive(Debug, Subcommand)]
enum What {
    /// Interfaces: P_Key, device and LID, QPN, link, MTU, IPv4, hardware address
    /// (`ip link`).
    Ifaces,
    /// Multicast groups: MGID, IPv4 group, kind, state, JoinState, MLID, the QP and
    /// lane it is attached to, packets waiting (`ip maddr`).
    Groups,
    /// Neighbours and their paths: IPv4, state, DLID, SL, QPN, packets waiting,
    /// hardware address (`ip neigh`).
    Neigh,
    /// Per-lcore and per-controller counters, then every drop by reason (`ethtool -S`).
    Stats {
        /// Show counters at zero too.
        #[arg(long)]
        all: bool,
    },
}

fn main() -> ExitCode {
    cli::init_logging();
    let args: Args = match cli::parse_args("ibpoll-ctl") {
        Ok(a) => a,
        Err(code) => return code,
    };
    let command = match args.what {
        What::Ifaces => "/ifaces",
        What::Groups => "/groups",
        What::Neigh => "/neigh",
        What::Stats { .. } => "/stats",
    };
    let answer = match client::find(args.pid).and_then(|p| client::ask(&p, command)) {
        Ok(a) => a,
        Err(e) => {
            note(&format!("ibpoll-ctl: error: {}", cli::describe(&e)));
            return ExitCode::from(cli::EXIT_FAILED);
        }
    };
    let lines = if args.json {
        vec![answer.to_string()]
    } else {
        match args.what {
            What::Ifaces => show::ifaces(&answer),
            What::Groups => show::groups(&answer),
            What::Neigh => show::neighbours(&answer),
            What::Stats { all } => show::stats(&answer, all),
        }
    };
    let mut out = Stdout::new();
    for l in &lines {
        if !out.line(l) {
            break;
        }
    }
    if let Some(e) = out.error() {
        note(&format!(
            "ibpoll-ctl: error: writing to standard output: {e}"
        ));
        return ExitCode::from(cli::EXIT_FAILED);
    }
    ExitCode::from(cli::EXIT_OK)
}
