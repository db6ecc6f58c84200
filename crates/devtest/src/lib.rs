//! Test devices for ibpoll's driver contract (`ibpoll-dev`), and the contract's
//! conformance suite.
//!
//! # Wrappers
//!
//! Each wraps any [`Port`](ibpoll_dev::Port) (and the queues and MAD channel it makes)
//! and is a `Port` itself, as smoltcp's `phy` devices wrap any device, so a test runs the
//! stack over "any driver, but with back-pressure" without that driver's help:
//!
//! - [`Backpressure`]: send queues take a seeded part of each burst and complete sends
//!   late by seeded amounts; a checker counts breaches of the address-handle lifetime
//!   rule ([`AhViolations`]).
//! - [`FaultInjector`]: seeded loss and reordering of sends, loss and delay of MADs.
//! - [`PcapTap`]: a capture file of every frame sent and received, as native
//!   InfiniBand frames tshark decodes ([`capture`]).
//!
//! They stack (`PcapTap::create(Backpressure::new(port, ..), ..)`), and
//! [`WrappedDevice`] applies one to every port a [`Device`](ibpoll_dev::Device) opens.
//! Seeds draw from SplitMix64, a specified generator: a seed replays with later builds.
//!
//! # Running the conformance suite against a PMD
//!
//! [`conformance`] holds one test per rule of the contract. A PMD's author:
//!
//! 1. adds `ibpoll-devtest` to the PMD's `[dev-dependencies]`;
//! 2. writes a [`conformance::Fixture`] in `tests/conformance.rs`: two Active ports of
//!    the device under test that reach each other and share a partition, a pool
//!    constructor, and optionally a multicast group both ports joined (for the
//!    multicast tests), hooks that cause port events, and how long to wait
//!    ([`patience`](conformance::Fixture::patience),
//!    [`quiet`](conformance::Fixture::quiet)) when delivery is asynchronous;
//! 3. instantiates the suite: `mod my_pmd { ibpoll_devtest::conformance_tests!(MyFixture::new()); }`;
//! 4. runs `cargo test -p <pmd> --test conformance`. Each test is named after the rule
//!    it checks ([`conformance::TESTS`]); a test that needs what the fixture lacks says
//!    SKIPPED on stderr and passes.
//!
//! The simulator's fixtures (plain and under each wrapper) are in this crate's
//! `tests/conformance.rs`, a template; `pmd/ring` runs every test (plain and under
//! [`Backpressure`]), `pmd/replay` every test with its streams paused and those that
//! apply with them running (its `tests/conformance.rs` says which do not, and why).
//! A fixture on a fabric with a subnet administrator gets its group from
//! [`conformance::join_broadcast`]. A libibverbs PMD runs the same suite on two ports
//! of one soft-RoCE device in a VM (patience of a second or two, a multicast group joined
//! through the SA or named on RoCE, and no event hooks unless the VM script can flap the
//! link).

mod backpressure;
pub mod capture;
pub mod conformance;
mod device;
mod fault;
mod held;
mod pcap_tap;
mod rng;

pub use backpressure::{AhViolations, Backpressure, BackpressureConfig, BackpressureStats};
pub use device::WrappedDevice;
pub use fault::{FaultConfig, FaultInjector, FaultStats};
pub use pcap_tap::{PcapTap, PcapTapConfig};
