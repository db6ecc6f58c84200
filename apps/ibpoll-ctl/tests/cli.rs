//! ibpoll-ctl's command line: exit statuses and messages without a process to ask.

use std::process::{Command, Output};

fn ctl(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ibpoll-ctl"))
        .args(args)
        .env("IBPOLL_RUNTIME_DIR", dir)
        .output()
        .expect("run ibpoll-ctl")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn exit_statuses_say_what_went_wrong() {
    let dir = std::env::temp_dir().join(format!("ibpoll-ctl-cli-{}", std::process::id()));
    let missing = dir.join("missing");

    let o = ctl(&dir, &["--version"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("ibpoll-ctl "));

    // A refused command line: 2, naming what is wrong.
    let o = ctl(&dir, &["groups", "--pid", "abc"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).starts_with("ibpoll-ctl: error:") && stderr(&o).contains("--pid"),
        "{}",
        stderr(&o)
    );
    let o = ctl(&dir, &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("Usage: ibpoll-ctl"), "{}", stderr(&o));
    let o = ctl(&dir, &["route"]);
    assert_eq!(o.status.code(), Some(2));

    // No answer: 1, saying where it looked.
    let o = ctl(&missing, &["ifaces"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(&missing.display().to_string()),
        "{}",
        stderr(&o)
    );
    std::fs::create_dir_all(&dir).unwrap();
    let o = ctl(&dir, &["stats"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no running ibpoll process"),
        "{}",
        stderr(&o)
    );
    let o = ctl(&dir, &["--pid", "1", "neigh"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("process 1 serves no telemetry"),
        "{}",
        stderr(&o)
    );
    // A file that is not an ibpoll socket is ignored by the search.
    std::fs::write(dir.join("12.sock"), b"not a socket").unwrap();
    let o = ctl(&dir, &["ifaces"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no running ibpoll process"),
        "{}",
        stderr(&o)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
