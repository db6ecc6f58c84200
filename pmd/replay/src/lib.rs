//! `ibpoll-pmd-replay`: a port wrapper that replays prebuilt frames on receive and frees
//! data sends (DPDK's `net_pcap` with `infinite_rx`): the software NIC for one-lcore
//! benchmarks, whose cost is a copy into a fresh buffer per received packet and a bulk
//! free per sent burst, as `net_pcap`'s.
//!
//! A [`ReplayPort`] wraps any port (in practice one of the embedded simulated fabric, so
//! that the control plane has a subnet administrator and neighbours that answer ARP):
//!
//! - Receive: a QP with a receive queue in the partition of a [`Stream`] replays it.
//!   Each `rx_burst` first returns what the wrapped queue received (ARP replies, the
//!   control plane's traffic), then fills the rest of the caller's room with the
//!   stream's [`Frames`], in order and over again, each copied into a fresh buffer of
//!   the QP's pool (bulk allocated) with the stream's source QPN and LID as completion
//!   metadata: a full burst every call, while the stream runs ([`StreamControl`]:
//!   run, run for N frames, pause). A pool that runs dry shortens the burst and is
//!   counted (`rx_nombuf`). QPs of other partitions, and send-only QPs, are the wrapped
//!   port's.
//! - Send: IPv4 and IPv6 packets are freed, in bulk, and counted ([`ReplayStats`]);
//!   anything else (ARP) goes to the wrapped port's send queue, so that neighbours
//!   resolve. Completions are immediate for what was freed, and follow the wrapped
//!   queue's for what it was given (in order: a send completes when every send before
//!   it did). A send queue never refuses.
//! - Everything else (attributes, events, address handles, attachments, the MAD
//!   channel, Q_Key and P_Key changes) is the wrapped port's.
//!
//! [`ReplayDevice`] wraps one port of a device, for a stack's builder.

mod frames;
mod port;
mod rx;
mod tx;

pub use frames::{
    ipv4_header_checksum, Frames, FramesError, FRAMES_MAX, FRAME_LEN_MAX, UDP_PACKET_MIN,
};
pub use port::{ReplayDevice, ReplayPort, ReplayStats, Stream, StreamControl};
