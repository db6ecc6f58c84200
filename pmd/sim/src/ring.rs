//! A receive queue's filled buffers: the shared SPSC ring of `ibpoll-ring`
//! (loom-checked there).
//!
//! Who plays its two roles in the simulator:
//! - the producer is the switch, which runs only under the fabric lock: successive
//!   producers (the send bursts of any lcore) are serialised, and ordered, by that mutex;
//! - the consumer is the lcore that owns the receive queue (`SimRxQueue`, `&mut self`),
//!   or, while that queue is parked or once it is gone, the control path under the
//!   fabric lock.

use ibpoll_mem::Mbuf;

/// A receive queue's ring of filled buffers.
pub(crate) type InboxRing = ibpoll_ring::SpscRing<Mbuf>;
