//! The driver contract's conformance suite against the replay port.
//!
//! - `replay_paused`: every test, with the streams paused: the replay port is then its
//!   wrapped port plus its send path (which passes the suite's packets, of a
//!   non-IP test ethertype, to the wrapped port as it passes ARP).
//! - `replay_streaming`: the tests whose rules hold while a stream runs on the
//!   partition the suite uses. The others do not apply, by design: a streaming receive
//!   queue is never empty and fills every burst's room, so no test can check that
//!   exactly the packets it sent arrive, that nothing arrives (a wrong Q_Key, a
//!   detached group, the packets a P_Key move flushed), that only multicast arrives on
//!   a group member, that the receive counters equal what was sent, or wait for an
//!   empty burst: `qp_setup`, `unicast_bursts_account_for_every_buffer`,
//!   `rx_burst_fills_only_its_room`, `full_send_queue_keeps_the_rest_in_order` (it
//!   passes only because its receive loop ends when the pool runs dry),
//!   `unicast_with_grh_carries_it`, `qkey_mismatch_is_dropped`,
//!   `mcast_attach_and_detach`, `pkey_move_of_a_parked_qp_returns_its_buffers` and
//!   `invalid_pkey_index_is_refused` (its last check receives). What a streaming queue
//!   does is checked in `tests/replay.rs`. `completions_count_in_order` applies (the
//!   wrapped queue's packets come first in every burst, so its 320 arrive whole), and
//!   `mcast_self_loopback_follows_the_caps` (the simulator offers no loopback blocking:
//!   the test checks that it is refused).

mod common;

use common::ReplayFixture;

mod replay_paused {
    ibpoll_devtest::conformance_tests!(super::ReplayFixture::paused());
}

mod replay_streaming {
    ibpoll_devtest::conformance_tests!(@each super::ReplayFixture::streaming();
        caps_and_attributes,
        completions_count_in_order,
        mcast_self_loopback_follows_the_caps,
        events_follow_the_hooks,
        bad_ring_sizes_are_refused,
        rx_queues_beyond_the_caps_are_refused,
        unknown_qpn_is_refused,
        destroyed_ah_is_refused,
    );
}
