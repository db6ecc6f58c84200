//! What `ipoib-fwd` and `pktgen` share as programs: the limits of their flags and the
//! wording of refusals ([`limits`]), checked outputs ([`output`]), command-line
//! parsing with clap, signals, logging and exit statuses.
//!
//! Conventions of both programs:
//! - a refused flag: `PROG: error: --flag: what is wrong: what to give`, exit 2 (clap's
//!   own refusals too: an unknown or repeated flag, a value that does not parse);
//! - a run that failed (conservation broken, a membership left at the SA, an output
//!   that could not be written): `PROG: error: ...`, exit 1;
//! - a run stopped by SIGINT or SIGTERM: the traffic stops, every group is left, the
//!   summary and the JSON are written, and the exit status is 128 + the signal (130,
//!   143), unless the run failed (1); a second signal ends the process at once with
//!   the same status;
//! - logs (`tracing`) go to standard error, filtered by `RUST_LOG` (default `warn`).

pub mod capture;
pub mod limits;
pub mod output;

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

pub use limits::{bad, BadFlag};
pub use output::{note, CaptureFile, OutputError, ResultFile, Stdout};

/// Exit status of a run that worked.
pub const EXIT_OK: u8 = 0;
/// Exit status of a run that failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit status of a refused command line or configuration.
pub const EXIT_USAGE: u8 = 2;

/// An error and its causes on one line (`a: b: c`), each cause once.
pub fn describe(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let m = c.to_string();
        if !s.contains(&m) {
            s = format!("{s}: {m}");
        }
        src = c.source();
    }
    s
}

/// Parses the command line with clap. `--help` and `--version` are written to standard
/// output, checked (`Err(1)` with a message if that fails); a refused command line is
/// `PROG: error: ...` on standard error and `Err(2)`.
pub fn parse_args<T: clap::Parser>(prog: &str) -> Result<T, ExitCode> {
    let e = match T::try_parse() {
        Ok(a) => return Ok(a),
        Err(e) => e,
    };
    let text = e.render().to_string();
    match e.kind() {
        clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
            let mut out = Stdout::new();
            if out.line(text.trim_end()) {
                Err(ExitCode::SUCCESS)
            } else {
                let why = out.error().map(|e| e.to_string()).unwrap_or_default();
                note(&format!("{prog}: error: writing to standard output: {why}"));
                Err(ExitCode::from(EXIT_FAILED))
            }
        }
        // A subcommand is missing: the usage, as it is, is the message.
        clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            note(text.trim_end());
            Err(ExitCode::from(EXIT_USAGE))
        }
        _ => {
            note(&format!("{prog}: {}", text.trim_end()));
            Err(ExitCode::from(EXIT_USAGE))
        }
    }
}

/// Installs the `tracing` subscriber: standard error, filtered by `RUST_LOG` (default
/// `warn`), so that the library's warnings (hugepage fallback, pinning) are seen.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .try_init();
}

/// SIGINT and SIGTERM routed to a stop flag (signal-hook): the first sets the flag and
/// records the signal; a second one ends the process at once (exit 128 + signal).
#[derive(Debug)]
pub struct Signals {
    which: Arc<AtomicUsize>,
}

impl Signals {
    /// Registers SIGINT and SIGTERM: each sets `stop` (the flag the program's stacks
    /// share) the first time, and exits at once the second time.
    pub fn install(stop: &Arc<AtomicBool>) -> std::io::Result<Signals> {
        let which = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(AtomicBool::new(false));
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            // The order matters: the exit is armed by an earlier signal only.
            signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, seen.clone())?;
            signal_hook::flag::register_usize(sig, which.clone(), sig as usize)?;
            signal_hook::flag::register(sig, seen.clone())?;
            signal_hook::flag::register(sig, stop.clone())?;
        }
        Ok(Signals { which })
    }

    /// The signal that stopped the run, if one did.
    pub fn received(&self) -> Option<i32> {
        match self.which.load(Ordering::SeqCst) {
            0 => None,
            s => Some(s as i32),
        }
    }

    /// The signal's name, for messages.
    pub fn name(sig: i32) -> &'static str {
        match sig {
            signal_hook::consts::SIGINT => "SIGINT",
            signal_hook::consts::SIGTERM => "SIGTERM",
            _ => "a signal",
        }
    }
}

/// The exit status of a finished run: 1 if it failed, else 128 + the signal that
/// stopped it, else 0.
pub fn exit_status(failed: bool, signal: Option<i32>) -> ExitCode {
    if failed {
        return ExitCode::from(EXIT_FAILED);
    }
    match signal {
        Some(s) => ExitCode::from(u8::try_from(128 + s).unwrap_or(EXIT_FAILED)),
        None => ExitCode::from(EXIT_OK),
    }
}
