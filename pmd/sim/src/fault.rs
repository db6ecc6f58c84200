//! Seeded fault injection. Every draw comes from the fabric's seeded generators
//! ([`SimRng`](crate::SimRng): xoshiro256++, specified to the bit), so a single-threaded
//! run replays exactly, with this build or any later one.

use ibpoll_dev::Nanos;

/// What goes wrong, and how often. Probabilities are per event, from 0.0 to 1.0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultConfig {
    /// The least an SA answer is delayed.
    pub sa_delay_min: Nanos,
    /// The most an SA answer is delayed (uniform between the two).
    pub sa_delay_max: Nanos,
    /// A request is lost before the SA sees it.
    pub sa_request_loss: f64,
    /// The SA acts on a request but its answer is lost.
    pub sa_answer_loss: f64,
    /// An answer is delivered twice.
    pub sa_duplicate: f64,
    /// The SA refuses a request with `sa_error_status` without acting on it.
    pub sa_error: f64,
    /// The status of injected refusals (default 0x0100, ERR_NO_RESOURCES).
    pub sa_error_status: u16,
    /// A packet copy is lost on its way to a receiver.
    pub packet_loss: f64,
    /// A packet copy is overtaken by the next packet of the same send queue.
    pub packet_reorder: f64,
}

impl FaultConfig {
    /// No faults and no delays.
    pub const NONE: FaultConfig = FaultConfig {
        sa_delay_min: Nanos::ZERO,
        sa_delay_max: Nanos::ZERO,
        sa_request_loss: 0.0,
        sa_answer_loss: 0.0,
        sa_duplicate: 0.0,
        sa_error: 0.0,
        sa_error_status: 0x0100,
        packet_loss: 0.0,
        packet_reorder: 0.0,
    };
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig::NONE
    }
}
