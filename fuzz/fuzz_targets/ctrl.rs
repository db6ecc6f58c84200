//! The control plane fed arbitrary SA answers, port events, ARP packets, subscriptions,
//! data-core packets and time: one controller on a simulated port whose SA is the
//! input, every invariant checked after every step (`ibpoll_simtest::ctrlfuzz`, where
//! the input language is described).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ibpoll_simtest::ctrlfuzz::run(data);
});
