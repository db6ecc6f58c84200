//! Runs the `rejoin` binary on a small table and checks its JSON report. No assertion on
//! speed; the window bound is a property of the controller, so it is checked.

use std::process::Command;

#[test]
fn rejoin_200_groups_within_the_window() {
    let out = Command::new(env!("CARGO_BIN_EXE_rejoin"))
        .args(["--groups", "200", "--window", "16", "--json", "-"])
        .output()
        .expect("rejoin runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "rejoin failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().expect("some output");
    let v: serde_json::Value = serde_json::from_str(last).expect("last line is JSON");
    assert_eq!(v["groups"], 200);
    assert_eq!(v["window"], 16);
    assert!(v["rejoin_ms"].as_f64().is_some_and(|t| t > 0.0), "{v}");
    let peak = v["sa_in_flight_peak"].as_u64().expect("peak");
    assert!((1..=16).contains(&peak), "{v}");
    // Every group and the broadcast group is left once and joined once.
    assert_eq!(v["rejoin_joins_sent"], 201, "{v}");
    assert_eq!(v["rejoin_leaves_sent"], 201, "{v}");
}
