//! The driver contract's conformance suite against the ring pair: plain, and under the
//! back-pressure wrapper of `ibpoll-devtest` (whose held sends and late completions sit
//! on a queue that completes at once).

mod common;

use std::sync::Arc;

use common::RingFixture;
use ibpoll_dev::Port;
use ibpoll_devtest::{Backpressure, BackpressureConfig};

mod ring {
    ibpoll_devtest::conformance_tests!(super::RingFixture::new());
}

mod ring_backpressure {
    ibpoll_devtest::conformance_tests!(super::backpressure());
}

/// The ring pair behind [`Backpressure`]: bursts take 0 to 32, sends wait 0 to 4 ticks.
fn backpressure() -> RingFixture {
    let seed = std::sync::atomic::AtomicU64::new(0x71);
    RingFixture::wrapped(Box::new(move |p| {
        let s = seed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Backpressure::new(p, BackpressureConfig::new(s)) as Arc<dyn Port>
    }))
}
