//! Test helpers: hosts running the real controller on the simulated fabric, driven in
//! virtual time.
#![allow(dead_code, unused_imports)] // every test binary uses a different part

use ibpoll_dev::Nanos;

pub use ibpoll_testkit::{run, run_until, CtlHost as Host, Net};

pub const MS: Nanos = Nanos::from_millis(1);
pub const S: Nanos = Nanos::from_secs(1);

pub fn ms(n: u64) -> Nanos {
    Nanos::from_millis(n)
}

pub fn secs(n: u64) -> Nanos {
    Nanos::from_secs(n)
}
