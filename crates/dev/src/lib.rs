//! The driver contract of ibpoll (v2): what every poll-mode driver (PMD) implements,
//! and the only way the stack reaches an InfiniBand or RoCE port. It plays the part of
//! DPDK's `rte_ethdev`, and its shape is what a libibverbs UD QP is.
//!
//! - A [`Device`] opens [`Port`]s. A port reports its attributes ([`PortAttr`]: link
//!   layer, LID, GID and P_Key tables, MTU, state), what its UD QPs can do
//!   ([`UdCaps`]), and [`PortEvent`]s.
//! - A UD queue pair ([`UdQp`]) has one receive queue (more only where
//!   [`UdCaps::rx_queues_per_qpn`] says the device spreads a QPN by RSS) and one send
//!   queue; its QPN is the one in the IPoIB hardware address. More send queues are more
//!   QPs, each with its own QPN. Each queue is owned by one lcore (`Send`, not `Sync`).
//! - Bursts move [`MbufArray`](ibpoll_mem::MbufArray)s of plain mbufs: `rx_burst`
//!   appends, `tx_burst` takes from the front with a [`TxDst`] beside each packet and
//!   leaves what it did not take. A send queue may refuse (back-pressure). A send
//!   completes later ([`TxQueue::completed`]); the address handle it names must live
//!   until then. Hot-path failures are counters ([`RxCounters`], [`TxCounters`]), never
//!   `Result`s.
//! - Control operations on a QP whose queues lcores own go through a [`Parked`] proof
//!   that the owners stopped using them ([`Port::move_qp_pkey_index`]).
//! - [`AddressHandle`]s name remote ports and groups; [`Port::destroy_ah`] is `unsafe`:
//!   the caller guarantees no posted or future send names the handle.
//!   [`Port::attach_mcast`] attaches a QP to a multicast group at the HCA; a
//!   [`MadChannel`] reaches the subnet administrator on QP1.
//! - Set-up paths return the typed [`Error`]. Public contract types are
//!   `#[non_exhaustive]`; drivers build them with their `new` functions.
//!
//! Memory: receive buffers come from the [`Mempool`](ibpoll_mem::Mempool) named in the
//! QP's configuration; sends may come from any pool. A driver that registers memory does
//! it once per pool ([`Mempool::region`](ibpoll_mem::Mempool::region)), keyed by the
//! pool's id, never per packet.
//!
//! Buffer contract: a received mbuf's data starts at the 4-byte IPoIB header. The 40
//! bytes before it are the GRH area of the UD receive buffer; they hold a GRH when the
//! metadata flag [`MBUF_F_GRH`](ibpoll_mem::MBUF_F_GRH) is set. A transmitted mbuf's
//! data starts at the IPoIB header too; the driver adds the InfiniBand headers.
#![deny(unsafe_code)]

mod ah;
mod clock;
mod counter;
mod counters;
mod delegate;
mod error;
mod mad;
mod port;
mod queue;

use std::sync::Arc;

pub use ah::{AddressHandle, AhAttr, GrhAttr};
#[doc(hidden)]
pub use ibpoll_wire as __wire;

pub use clock::{Clock, MonotonicClock, Nanos, VirtualClock};
pub use counter::Counter;
pub use error::Error;
pub use mad::{Mad, MadAddr, MadChannel, MAD_LEN};
pub use port::{LinkLayer, PortAttr, PortEvent, PortState};
pub use queue::{
    Parked, RxCounters, RxQueue, TxCounters, TxDst, TxQueue, UdCaps, UdQp, UdQpConfig,
};

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
    /// What this port's UD QPs can do.
    fn ud_caps(&self) -> UdCaps;
    /// The next asynchronous port event, if any (non-blocking).
    fn poll_event(&self) -> Option<PortEvent>;
    /// Creates a UD queue pair (checked with [`UdQpConfig::check`] against
    /// [`ud_caps`](Self::ud_caps)), in RTS: ready to receive and send.
    fn create_ud_qp(&self, cfg: &UdQpConfig) -> Result<UdQp, Error>;
    /// Changes the Q_Key a UD QP accepts and sends with (IPoIB takes it from the
    /// broadcast group's record). An RTS-to-RTS change: its owners may keep polling.
    fn set_qp_qkey(&self, qpn: ibpoll_wire::Qpn, qkey: ibpoll_wire::QKey) -> Result<(), Error>;
    /// Moves the parked QP to another entry of the port's P_Key table, as the kernel's
    /// IPoIB does after a P_Key change (`ibv_modify_qp` through RESET, INIT with the new
    /// `pkey_index`, RTR, RTS): from then on it sends with that P_Key and receives that
    /// partition. Its QPN stays. Reset discards the posted receive buffers: the driver
    /// returns them (and any received but not yet polled) to their pool and reposts
    /// fresh ones, and returns how many it returned. Its multicast attachments must
    /// already be gone (the heavy flush left every group).
    fn move_qp_pkey_index(&self, parked: &Parked, pkey_index: u16) -> Result<usize, Error>;
    /// Creates an address handle for sends to a remote port or multicast group.
    fn create_ah(&self, attr: &AhAttr) -> Result<AddressHandle, Error>;
    /// Destroys an address handle.
    ///
    /// # Safety
    /// No send naming `ah` may be posted and not yet completed, and none may be posted
    /// after this call: a verbs driver frees the handle, and a later work request naming
    /// it would read freed memory.
    #[allow(unsafe_code)] // a precondition on the caller, see above
    unsafe fn destroy_ah(&self, ah: AddressHandle) -> Result<(), Error>;
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
