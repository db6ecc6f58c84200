//! The driver contract of ibpoll: what every poll-mode driver (PMD) implements, and the
//! only way the stack reaches an InfiniBand port. It plays the part of DPDK's
//! `rte_ethdev` and of libibverbs.
//!
//! - A [`Device`] opens [`Port`]s. A port reports its attributes ([`PortAttr`]: LID,
//!   GID, P_Key table, MTU, state) and delivers [`PortEvent`]s.
//! - A UD queue pair is created on a port and split into [`RxQueue`]s and [`TxQueue`]s,
//!   each owned by exactly one lcore (`Send`, not `Sync`). Bursts are batched like
//!   `rte_eth_rx_burst` / `rte_eth_tx_burst`: they return how many packets they handled;
//!   failures on bursts are counters ([`RxCounters`], [`TxCounters`]), never `Result`s.
//!   What a `tx_burst` could not send stays in the caller's slice, never lost.
//! - [`AddressHandle`]s name remote ports; [`Port::attach_mcast`] joins a QP to a
//!   multicast group at the HCA; a [`MadChannel`] reaches the subnet administrator on
//!   QP1.
//! - Set-up paths return the typed [`Error`].
//!
//! Buffer contract: a received [`Mbuf`](ibpoll_mem::Mbuf)'s data starts at the 4-byte
//! IPoIB header. The 40 bytes before it are the GRH area of the UD receive buffer; they
//! hold a GRH when the metadata flag [`MBUF_F_GRH`](ibpoll_mem::MBUF_F_GRH) is set. A
//! transmitted mbuf's data starts at the IPoIB header too; the driver adds the
//! InfiniBand headers.
#![forbid(unsafe_code)]

mod ah;
mod clock;
mod counter;
mod counters;
mod error;
mod mad;
mod port;
mod queue;

use std::sync::Arc;

pub use ah::{AddressHandle, AhAttr, GrhAttr};
pub use clock::{Clock, MonotonicClock, Nanos, VirtualClock};
pub use counter::Counter;
pub use error::Error;
pub use mad::{Mad, MadAddr, MadChannel, MAD_LEN};
pub use port::{PortAttr, PortEvent, PortState};
pub use queue::{RxCounters, RxQueue, TxCounters, TxDesc, TxQueue, UdQp, UdQpConfig};

/// An InfiniBand device (an HCA, or a simulated one).
pub trait Device: Send + Sync + std::fmt::Debug {
    /// The device name (`mlx5_0`, `sim0`, ...).
    fn name(&self) -> &str;
    /// The node GUID.
    fn node_guid(&self) -> u64;
    /// How many ports the device has; ports are numbered from 1.
    fn port_count(&self) -> u8;
    /// Opens port `port_num` (1-based).
    fn open_port(&self, port_num: u8) -> Result<Arc<dyn Port>, Error>;
}

/// One port of a device. Control-path methods take `&self` and may be called from any
/// thread; the hot path lives in the queues a port creates.
pub trait Port: Send + Sync + std::fmt::Debug {
    /// The port number (1-based).
    fn port_num(&self) -> u8;
    /// The port's current attributes.
    fn attr(&self) -> PortAttr;
    /// The next asynchronous port event, if any (non-blocking).
    fn poll_event(&self) -> Option<PortEvent>;
    /// Creates a UD queue pair with `cfg.rx_queues` receive queues (spread by a flow
    /// hash) and `cfg.tx_queues` send queues.
    fn create_ud_qp(&self, cfg: &UdQpConfig) -> Result<UdQp, Error>;
    /// Changes the Q_Key a UD QP accepts and sends with (IPoIB takes it from the
    /// broadcast group's record).
    fn set_qp_qkey(&self, qpn: ibpoll_wire::Qpn, qkey: ibpoll_wire::QKey) -> Result<(), Error>;
    /// Moves a UD QP to another entry of the port's P_Key table, as the kernel's IPoIB
    /// does after a P_Key change (`ibv_modify_qp` with `IBV_QP_PKEY_INDEX`, through
    /// RESET and INIT): from then on it sends with that P_Key and receives that
    /// partition. Its QPN and its queues stay; its multicast attachments must already
    /// be gone (the heavy flush left every group).
    fn set_qp_pkey_index(&self, qpn: ibpoll_wire::Qpn, pkey_index: u16) -> Result<(), Error>;
    /// Creates an address handle for sends to a remote port or multicast group.
    fn create_ah(&self, attr: &AhAttr) -> Result<AddressHandle, Error>;
    /// Destroys an address handle. The caller guarantees that no send using it is still
    /// queued; sends posted with a destroyed handle fail and are counted.
    fn destroy_ah(&self, ah: AddressHandle) -> Result<(), Error>;
    /// Attaches a UD QP to a multicast group so that packets sent to `mlid` reach it.
    fn attach_mcast(
        &self,
        qpn: ibpoll_wire::Qpn,
        mgid: &ibpoll_wire::Gid,
        mlid: ibpoll_wire::Lid,
    ) -> Result<(), Error>;
    /// Detaches a UD QP from a multicast group.
    fn detach_mcast(
        &self,
        qpn: ibpoll_wire::Qpn,
        mgid: &ibpoll_wire::Gid,
        mlid: ibpoll_wire::Lid,
    ) -> Result<(), Error>;
    /// Opens this port's channel to the general services interface (QP1), over which the
    /// subnet administrator is reached.
    fn open_mad_channel(&self) -> Result<Box<dyn MadChannel>, Error>;
}
