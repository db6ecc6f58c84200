//! tshark as the judge of captures (Debian `tshark` 4.0, see shared/notes/tshark.md).

use std::path::Path;
use std::process::Command;

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| {
            use std::os::unix::fs::PermissionsExt;
            let p = dir.join(program);
            std::fs::metadata(&p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// tshark's reading of `fields` in every frame of the capture at `path`, one row per
/// frame (empty strings for fields a frame lacks). Without tshark on PATH: a failure
/// when the environment variable CI is set (CI installs it), otherwise `None` and a note
/// that the check was skipped.
pub fn fields(path: &Path, fields: &[&str]) -> Option<Vec<Vec<String>>> {
    if !on_path("tshark") {
        assert!(
            std::env::var_os("CI").is_none(),
            "tshark is not on PATH and CI is set: CI must install tshark (Debian package \
             `tshark`) so that captures are checked by a real dissector"
        );
        eprintln!("SKIPPED the tshark half of this test: tshark is not on PATH");
        return None;
    }
    let mut cmd = Command::new("tshark");
    cmd.arg("-r")
        .arg(path)
        .args(["-T", "fields", "-E", "separator=|"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("tshark runs");
    assert!(
        out.status.success(),
        "tshark failed on {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("tshark prints UTF-8");
    let rows = text
        .lines()
        .map(|line| {
            let row: Vec<String> = line.split('|').map(str::to_owned).collect();
            assert_eq!(row.len(), fields.len(), "tshark line {line:?}");
            row
        })
        .collect();
    Some(rows)
}

/// A tshark number: hexadecimal with `0x`, else decimal.
pub fn number(s: &str) -> u64 {
    let s = s.trim();
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    }
    .unwrap_or_else(|e| panic!("tshark printed {s:?}, not a number: {e}"))
}
