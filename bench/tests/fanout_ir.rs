//! Runs the `fanout-ir` binary briefly, with and without fan-out, and checks its JSON
//! report: every packet of the measured rounds reached lane 0, and with fan-out lane 0
//! kept its share and handed the rest to lane 1, which took all of it. No assertion on
//! cost (callgrind measures that; see bench/README.md).

use std::process::Command;

fn run(fanout: &str) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_fanout-ir"))
        .args(["--fanout", fanout, "--rounds", "200"])
        .output()
        .expect("fanout-ir runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "fanout-ir failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().expect("some output");
    serde_json::from_str(last).expect("last line is JSON")
}

#[test]
fn fanout_ir_splits_the_flows_and_the_baseline_does_not() {
    let on = run("on");
    assert_eq!(on["lane0_rx_packets"], 200 * 32, "{on}");
    let kept = on["lane0_app_rx"].as_u64().unwrap();
    let out = on["lane0_fanout_out"].as_u64().unwrap();
    assert!(kept > 0 && out > 0, "{on}");
    assert_eq!(kept + out, 200 * 32, "{on}");
    assert_eq!(on["lane1_fanout_in"], out, "{on}");
    let off = run("off");
    assert_eq!(off["lane0_app_rx"], 200 * 32, "{off}");
    assert_eq!(off["lane0_fanout_out"], 0, "{off}");
    assert_eq!(off["lane1_fanout_in"], 0, "{off}");
}
