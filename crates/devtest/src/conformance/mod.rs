//! The driver contract's conformance suite: one set of tests that every PMD runs.
//!
//! A driver author writes a [`Fixture`] (two ports that reach each other, buffer pools,
//! and, where the driver's environment allows, a multicast group and hooks that cause
//! port events) and instantiates the suite with
//! [`conformance_tests!`](crate::conformance_tests):
//!
//! ```ignore
//! // tests/conformance.rs of a PMD
//! struct MyFixture { /* two ports of the device under test */ }
//! impl ibpoll_devtest::conformance::Fixture for MyFixture { /* ... */ }
//!
//! mod my_pmd {
//!     ibpoll_devtest::conformance_tests!(super::MyFixture::new());
//! }
//! ```
//!
//! Each test is then a `#[test]` named after the function here ([`TESTS`] lists them),
//! run by `cargo test -p <the PMD> --test conformance`. The expression is evaluated
//! once per test, so every test gets fresh ports and pools. Every test function is also
//! public, for a harness that runs them its own way (a VM runner, one at a time).
//!
//! What the suite checks, in the contract's words (`ibpoll-dev`):
//! - set-up: caps and attributes are sane, a QP has one send queue and the receive
//!   queues its configuration asks for (none for a send-only QP);
//! - bursts: every packet sent arrives once with its metadata, every buffer goes home
//!   (the sender's when its send completes, or when the receiver lets go of it where
//!   the driver hands the sent buffer over, as a ring does; the receiver's when the QP
//!   is gone),
//!   `rx_burst` fills only the room it is given and appends;
//! - back-pressure: a burst takes from the front, and what it leaves stays in the
//!   caller's array in order; no more sends are outstanding than the send queue holds;
//! - completions: `completed()` is monotonic, never ahead of what was posted, and
//!   reaches it;
//! - multicast: attach, detach and the self-loopback per [`UdCaps`](ibpoll_dev::UdCaps)
//!   (when the fixture has a group);
//! - parking: a P_Key index move of a parked QP returns its buffers (and counts them in
//!   `RxCounters::flushed`), and the QP then receives the new partition only (when the
//!   ports share a second partition);
//! - events: each event the fixture can cause is reported, and an idle port reports
//!   none;
//! - bad set-up input: ring sizes, receive queues beyond the caps, loopback blocking
//!   without the cap, invalid P_Key indexes, unknown QPNs and destroyed address handles
//!   are typed errors, and change nothing.
//!
//! A driver that delivers asynchronously (a real HCA) is waited for up to
//! [`Fixture::patience`]; a check that something does *not* arrive waits
//! [`Fixture::quiet`].

mod burst;
mod errors;
mod events;
mod kit;
mod mcast;
mod park;
mod sa;
mod setup;

use std::sync::Arc;
use std::time::Duration;

use ibpoll_dev::{AhAttr, Port, PortEvent};
use ibpoll_mem::Mempool;
use ibpoll_wire::{Gid, Lid, PKey, QKey};

pub use burst::{
    completions_count_in_order, full_send_queue_keeps_the_rest_in_order, qkey_mismatch_is_dropped,
    rx_burst_fills_only_its_room, unicast_bursts_account_for_every_buffer,
    unicast_with_grh_carries_it,
};
pub use errors::{
    bad_ring_sizes_are_refused, destroyed_ah_is_refused, invalid_pkey_index_is_refused,
    rx_queues_beyond_the_caps_are_refused, unknown_qpn_is_refused,
};
pub use events::events_follow_the_hooks;
pub use mcast::{mcast_attach_and_detach, mcast_self_loopback_follows_the_caps};
pub use park::pkey_move_of_a_parked_qp_returns_its_buffers;
pub use sa::{join_broadcast, sa_addr};
pub use setup::{caps_and_attributes, qp_setup};

/// Every test of the suite, in the order [`conformance_tests!`](crate::conformance_tests)
/// declares them.
pub const TESTS: &[&str] = &[
    "caps_and_attributes",
    "qp_setup",
    "unicast_bursts_account_for_every_buffer",
    "rx_burst_fills_only_its_room",
    "full_send_queue_keeps_the_rest_in_order",
    "completions_count_in_order",
    "unicast_with_grh_carries_it",
    "qkey_mismatch_is_dropped",
    "mcast_attach_and_detach",
    "mcast_self_loopback_follows_the_caps",
    "pkey_move_of_a_parked_qp_returns_its_buffers",
    "events_follow_the_hooks",
    "bad_ring_sizes_are_refused",
    "rx_queues_beyond_the_caps_are_refused",
    "invalid_pkey_index_is_refused",
    "unknown_qpn_is_refused",
    "destroyed_ah_is_refused",
];

/// A multicast group both of the fixture's ports are full members of (joined at the
/// subnet administrator, or on RoCE simply named): the suite attaches QPs to it and
/// sends to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Group {
    /// The group's MGID.
    pub mgid: Gid,
    /// Its MLID.
    pub mlid: Lid,
    /// The Q_Key its members use.
    pub qkey: QKey,
    /// The partition it belongs to.
    pub pkey: PKey,
    /// The address-handle attributes of a send to it (DLID = MLID, GRH with the MGID).
    pub ah: AhAttr,
}

impl Group {
    /// A group from its record.
    pub fn new(mgid: Gid, mlid: Lid, qkey: QKey, pkey: PKey, ah: AhAttr) -> Group {
        Group {
            mgid,
            mlid,
            qkey,
            pkey,
            ah,
        }
    }
}

/// Something a fixture can make happen to a port, and the event it must cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventCause {
    /// The link goes down: [`PortEvent::Error`], the port not Active.
    LinkDown,
    /// The link comes back: [`PortEvent::Active`].
    LinkUp,
    /// The P_Key table is rewritten: [`PortEvent::PkeyChange`].
    PkeyChange,
    /// The subnet manager gives the port another LID: [`PortEvent::LidChange`].
    LidChange,
    /// The subnet manager restarts: [`PortEvent::ClientReregister`].
    SmRestart,
}

impl EventCause {
    /// Every cause, in the order the events test tries them.
    pub const ALL: [EventCause; 5] = [
        EventCause::LinkDown,
        EventCause::LinkUp,
        EventCause::PkeyChange,
        EventCause::LidChange,
        EventCause::SmRestart,
    ];

    /// The event the cause must produce.
    pub const fn expected(self) -> PortEvent {
        match self {
            EventCause::LinkDown => PortEvent::Error,
            EventCause::LinkUp => PortEvent::Active,
            EventCause::PkeyChange => PortEvent::PkeyChange,
            EventCause::LidChange => PortEvent::LidChange,
            EventCause::SmRestart => PortEvent::ClientReregister,
        }
    }
}

/// What a driver gives the suite to test it with.
pub trait Fixture {
    /// Two Active ports that reach each other by unicast and share a partition (the
    /// first common P_Key is used). They may be on one device or two, or be one port
    /// (the same `Arc` twice: soft-RoCE on `lo` has one port), the QPs of the tests
    /// then telling the two sides apart.
    fn ports(&self) -> [Arc<dyn Port>; 2];

    /// The index in the GID table of port `side` of the GID its address handles send
    /// from and are sent to: 0 (the port GID) on InfiniBand; on RoCE the entry of the
    /// netdev's address (on RoCE v2 an IPv4-mapped GID), the one the network routes.
    fn sgid_index(&self, side: usize) -> u8 {
        let _ = side;
        0
    }

    /// A fresh pool of `n_bufs` buffers, usable for receives on either port and for
    /// sends (default data room, at least 44 bytes of headroom). Its `in_use` must be
    /// exact from the test's thread (no lcore cache holding buffers back).
    fn pool(&self, name: &str, n_bufs: u32) -> Mempool;

    /// A multicast group both ports are members of; `None` skips the multicast tests.
    fn group(&self) -> Option<Group> {
        None
    }

    /// Makes `cause` happen to port `side` (0 or 1 of [`ports`](Self::ports)); false
    /// when the fixture cannot (that cause is then not tested).
    fn cause(&self, side: usize, cause: EventCause) -> bool {
        let _ = (side, cause);
        false
    }

    /// The longest a packet, a completion or an event may take.
    fn patience(&self) -> Duration {
        Duration::from_secs(2)
    }

    /// How long to wait before concluding that a packet will not arrive.
    fn quiet(&self) -> Duration {
        Duration::from_millis(200)
    }
}

/// Declares one `#[test]` per conformance test ([`TESTS`]), each running it against a
/// fresh fixture: `$fixture` is evaluated once per test.
///
/// ```ignore
/// mod sim {
///     ibpoll_devtest::conformance_tests!(crate::SimFixture::new());
/// }
/// ```
///
/// Where the device may be absent (real hardware), `optional:` takes an expression of
/// type `Option<F>`: a test whose fixture is `None` returns at once (the expression
/// says why on standard error, and fails instead where the device must be there).
///
/// ```ignore
/// mod verbs {
///     ibpoll_devtest::conformance_tests!(optional: crate::RxeFixture::open_or_skip());
/// }
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($fixture:expr) => {
        $crate::conformance_tests!(@each $fixture;
            caps_and_attributes,
            qp_setup,
            unicast_bursts_account_for_every_buffer,
            rx_burst_fills_only_its_room,
            full_send_queue_keeps_the_rest_in_order,
            completions_count_in_order,
            unicast_with_grh_carries_it,
            qkey_mismatch_is_dropped,
            mcast_attach_and_detach,
            mcast_self_loopback_follows_the_caps,
            pkey_move_of_a_parked_qp_returns_its_buffers,
            events_follow_the_hooks,
            bad_ring_sizes_are_refused,
            rx_queues_beyond_the_caps_are_refused,
            invalid_pkey_index_is_refused,
            unknown_qpn_is_refused,
            destroyed_ah_is_refused,
        );
    };
    (@each $fixture:expr; $($name:ident),+ $(,)?) => {
        $(
            #[test]
            fn $name() {
                let fixture = $fixture;
                $crate::conformance::$name(&fixture);
            }
        )+
    };
    (optional: $fixture:expr) => {
        $crate::conformance_tests!(@maybe $fixture;
            caps_and_attributes,
            qp_setup,
            unicast_bursts_account_for_every_buffer,
            rx_burst_fills_only_its_room,
            full_send_queue_keeps_the_rest_in_order,
            completions_count_in_order,
            unicast_with_grh_carries_it,
            qkey_mismatch_is_dropped,
            mcast_attach_and_detach,
            mcast_self_loopback_follows_the_caps,
            pkey_move_of_a_parked_qp_returns_its_buffers,
            events_follow_the_hooks,
            bad_ring_sizes_are_refused,
            rx_queues_beyond_the_caps_are_refused,
            invalid_pkey_index_is_refused,
            unknown_qpn_is_refused,
            destroyed_ah_is_refused,
        );
    };
    (@maybe $fixture:expr; $($name:ident),+ $(,)?) => {
        $(
            #[test]
            fn $name() {
                let Some(fixture) = $fixture else {
                    return;
                };
                $crate::conformance::$name(&fixture);
            }
        )+
    };
}
