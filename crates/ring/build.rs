//! Declares `cfg(loom)` (set by `RUSTFLAGS="--cfg loom"` for the loom model of the ring) so that
//! `unexpected_cfgs` stays quiet; `[lints] workspace = true` cannot take a `check-cfg`.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(loom)");
    println!("cargo::rerun-if-changed=build.rs");
}
