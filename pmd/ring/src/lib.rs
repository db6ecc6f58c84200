//! `ibpoll-pmd-ring`: two ports joined by single-producer single-consumer rings, mbufs
//! handed over without a copy (DPDK's `net_ring`): the benchmark NIC that leaves the
//! stack's own cost. The simulator (`pmd/sim`) stays the correctness fabric; this is what
//! a stack-to-stack run measures without the simulator's switch (one lock per burst, a
//! copy per packet).
//!
//! # What it is
//!
//! A [`RingPair`] wraps two ports of any driver (in practice two ports of the embedded
//! simulated fabric) and is itself two ports ([`RingPair::port`], and one-port devices,
//! [`RingPair::device`], for a stack's builder). The control path is the wrapped ports':
//! attributes, events, address handles, multicast attachments, the MAD channel to the
//! subnet administrator (so the stack's joins, path records and ARP work as on the
//! fabric) and the QPNs of created QPs. Only the queues are replaced:
//!
//! - A send whose destination is a QP of either port (unicast by LID and QPN, or
//!   multicast to a group a QP of either port is attached to, looked up from the
//!   attributes recorded at `create_ah` and `attach_mcast`) is pushed, the mbuf itself,
//!   into an SPSC ring from the sending QP to the receiving QP ([`ibpoll_ring`]). A
//!   ring is created on the control path the first time a send queue resolves that
//!   destination, and each send queue caches its resolved destinations (cleared when any
//!   control operation of the pair bumps its route generation). No lock, no switch, no
//!   copy on the data path: per packet a few metadata stores (source QPN and LID,
//!   flags, and the GRH in the headroom when the address handle has global routing or
//!   the destination is a group) and one slot of the ring.
//! - Multicast to several receivers: the first receiver gets the mbuf, every other one
//!   a copy in a buffer of its own QP's pool (a pool that is empty drops that copy,
//!   counted).
//! - Send completions are immediate (the ring took the buffer): `completed()` is what
//!   was posted. A full ring is back-pressure: `tx_burst` takes fewer, and leaves the
//!   rest in the caller's array. Slots are reserved per ring while a burst is planned
//!   (unicast and groups may lead to one QP), and a group packet waits until every
//!   receiver has room, so nothing the ring accepted is dropped for want of room;
//!   except for a group of more than 8 receiving QPs, which waits for its first one
//!   only (a copy for a full ring is then dropped, counted as `overrun`).
//! - What the ring cannot place (an unknown LID or QPN, a Q_Key or P_Key mismatch, a
//!   port that is down, a send-only QP) is freed and counted ([`RingStats`]); so is
//!   multicast to a group no QP receives, but not as a drop (a switch forwards it
//!   nowhere: a host's first ARP, before its peer attached, is one); send errors (a destroyed address handle, a packet shorter than the
//!   IPoIB header or longer than the path MTU, data with fewer than 40 bytes of
//!   headroom for the GRH) complete in error and are counted in `TxCounters::errors`
//!   too.
//! - A receive queue drains the rings into it, round-robin, and stamps nothing: the
//!   sender wrote the completion metadata. Received mbufs come from the sender's pool,
//!   as with `net_ring` (receive buffers of the QP's own pool are used only for
//!   multicast copies).
//!
//! Caps: one receive queue per QPN, one send queue per QP, and `block_self_mcast_lb`:
//! a QP that asks for it gets none of its own multicast, nor does any other QP of its
//! port (the simulator's rule); a QP that does not ask gets its own multicast back, as
//! an InfiniBand HCA loops it back.
//!
//! What it does not do: faults, a pcap tap (wrap its ports in `ibpoll-devtest`'s
//! wrappers for those), multicast group membership at the SA (a group reaches every QP
//! attached to it, joined or not), P_Key enforcement beyond the QPs' partitions, or
//! delivery to ports other than its two.
//!
//! Parking: a P_Key move of a parked QP takes back what waits in the rings into it (as
//! the control path plays their consumer while the owner is parked) and counts it in
//! `RxCounters::flushed`.

mod pair;
mod port;
mod route;
mod rx;
mod tx;

pub use pair::{RingDevice, RingPair, RingStats};
pub use port::RingPort;
