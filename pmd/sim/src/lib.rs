//! `ibpoll-pmd-sim`: a simulated InfiniBand subnet, ibpoll's embedded default driver.
//!
//! The stack reaches it only through the driver contract of `ibpoll-dev`, exactly as it
//! would reach a real HCA. The fabric has:
//! - a subnet manager that assigns LIDs, and ports with GUIDs/GIDs, P_Key tables, MTU
//!   and state;
//! - a subnet administrator ([`sa`]) answering MAD bytes on QP1 with OpenSM's rules;
//! - a switch: UD unicast by LID and QPN with Q_Key and P_Key checks, multicast
//!   replication by MLID to every attached QP (the sender's own included, as the HCA's
//!   loopback does), drops counted per reason ([`FabricStats`]);
//! - "DMA": the payload is copied into a buffer of the receiver's pool, after the 40-byte
//!   GRH area (a GRH is written for multicast and for sends with global routing), with
//!   source QPN, SLID and flags in the buffer's metadata. This copy is the NIC's;
//! - seeded fault injection ([`FaultConfig`], drawn from [`SimRng`], a generator whose
//!   output is fixed by its published reference) and control calls that flap ports, restart
//!   the subnet manager, change P_Keys and LIDs;
//! - RoCE v2 ports beside the InfiniBand ones ([`SimFabric::add_roce_node`]): link
//!   layer Ethernet, LID 0, GIDs from the port's IPv4 address, no SA, multicast by MGID
//!   attachment, a GRH on every packet, unicast by GID (see `roce.rs`);
//! - a pcap tap writing native InfiniBand frames (ERF record type 21 in a link type 197
//!   pcap) that tshark decodes.
//!
//! Everything is in-process. Shared state holds indices, not pointers, so that a later
//! version can place it in shared memory.
//!
//! Locking: one mutex guards the fabric's control state, including the switch tables. A
//! send burst takes it once per burst, never per packet, and routes each packet through
//! its queue's cache of switch decisions (invalidated by a generation that every control
//! change bumps), so a packet costs no table lookup. Receive bursts never take it: they
//! drain a single-producer single-consumer ring (`ibpoll-ring`, `ring.rs`) that the
//! switch fills under the lock. Polling a port's events or a MAD channel with nothing
//! due does not take it either, so a controller polling on a receiving lcore never waits
//! for a send burst.

mod fabric;
mod fault;
mod mad;
mod pcap;
mod ring;
mod rng;
mod roce;
mod rx;
pub mod sa;
mod setup;
mod tx;

pub use fabric::{FabricConfig, FabricStats, NodeId, PortId, SimDevice, SimFabric, SimPort};
pub use fault::FaultConfig;
pub use pcap::{PcapError, PcapStatus};
pub use rng::{SimRng, SplitMix64};
