//! The `ibpoll-simtest` binary: a run of nothing never passes, and every u64 seed can
//! be run.

use std::process::{Command, Output};

fn simtest(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ibpoll-simtest"))
        .args(args)
        .output()
        .expect("run ibpoll-simtest")
}

fn refused(args: &[&str], says: &str) {
    let o = simtest(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
    assert!(err.starts_with("ibpoll-simtest: error:"), "{args:?}: {err}");
    assert!(err.contains(says), "{args:?}: expected {says:?} in {err}");
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("passed"),
        "{args:?}"
    );
}

#[test]
fn empty_ranges_and_zero_steps_are_refused() {
    refused(&["--seeds", "5..3"], "5..3 is empty");
    refused(&["--seeds", "5..5"], "5..5 is empty");
    refused(&["--seeds", "5..=4"], "5..=4 is empty");
    refused(&["--seeds", "0..1", "--steps", "0"], "'--steps <N>'");
    refused(&["--seeds", "-1..3"], "\"-1\" is not a seed");
    refused(&["--seeds", "18446744073709551616"], "is not a seed");
    refused(
        &["--seeds", "0..1", "--seeds", "2..3"],
        "cannot be used multiple times",
    );
    refused(&[], "--seeds");
}

fn passes(args: &[&str], n: u64) {
    let o = simtest(args);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{args:?}: {out}");
    assert_eq!(
        out.lines().last(),
        Some(format!("{n} passed, 0 failed").as_str()),
        "{args:?}: {out}"
    );
}

#[test]
fn the_last_seeds_of_u64_run() {
    passes(&["--seeds", "18446744073709551615", "--steps", "50"], 1);
    passes(
        &[
            "--seeds",
            "18446744073709551614..=18446744073709551615",
            "--steps",
            "50",
        ],
        2,
    );
    passes(
        &[
            "--seeds",
            "18446744073709551613..18446744073709551615",
            "--steps",
            "50",
        ],
        2,
    );
    passes(&["--seeds", "7..=7", "--steps", "50"], 1);
}
