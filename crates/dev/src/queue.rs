//! UD queue pairs: what the hardware offers ([`UdCaps`]), how a QP is asked for
//! ([`UdQpConfig`]), and its queues ([`RxQueue`], [`TxQueue`]), each owned by one lcore.

use std::sync::Arc;

use ibpoll_mem::{MbufArray, Mempool};
use ibpoll_wire::{QKey, Qpn};

use crate::{AddressHandle, Counter};

/// What a port's UD queue pairs can do (from `ibv_query_device_ex` on a verbs device).
/// The stack adapts to these; it never assumes more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct UdCaps {
    /// Receive queues one UD QPN can have. 1 on every InfiniBand HCA through verbs
    /// (RSS exists only for raw-packet QPs on Ethernet ports); more only where the
    /// device spreads one QPN's traffic over several queues by a flow hash.
    pub rx_queues_per_qpn: u16,
    /// Whether several send queues can share one QPN (never through verbs: a UD QP has
    /// one send queue, and more send queues are more QPs with their own QPNs).
    pub send_qps_share_qpn: bool,
    /// The largest payload a send can carry inline (0: none).
    pub max_inline: u16,
    /// The most work requests a send or receive queue can hold.
    pub max_wr: u32,
    /// Whether the HCA can drop the multicast a QP sends before it loops back to the
    /// port's own attached QPs (`IBV_QP_CREATE_BLOCK_SELF_MCAST_LB`).
    pub block_self_mcast_lb: bool,
    /// UD QPs the port can have.
    pub max_qp: u32,
}

impl UdCaps {
    /// What an InfiniBand HCA answers through verbs: one receive queue per QPN, one send
    /// queue per QP, no loopback block, `max_wr` work requests, `max_qp` QPs.
    pub const fn verbs(max_wr: u32, max_qp: u32) -> UdCaps {
        UdCaps {
            rx_queues_per_qpn: 1,
            send_qps_share_qpn: false,
            max_inline: 0,
            max_wr,
            block_self_mcast_lb: false,
            max_qp,
        }
    }
}

/// How to create a UD queue pair. Build it with [`UdQpConfig::new`] and set fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct UdQpConfig {
    /// Index into the port's P_Key table of the partition the QP belongs to.
    pub pkey_index: u16,
    /// The Q_Key the QP accepts and sends with (changeable with
    /// [`Port::set_qp_qkey`](crate::Port::set_qp_qkey)).
    pub qkey: QKey,
    /// Receive queues: 1, or up to [`UdCaps::rx_queues_per_qpn`] where the device spreads
    /// a QPN's traffic by a flow hash.
    pub rx_queues: u16,
    /// Receive buffers posted per receive queue: a power of two from 32 to
    /// [`UdCaps::max_wr`], or 0 for a send-only QP (no receive queue).
    pub rx_ring_size: u32,
    /// Send work requests the send queue holds (a power of two from 32 to `max_wr`):
    /// sends posted and not yet completed.
    pub tx_ring_size: u32,
    /// Ask the HCA to drop the multicast this QP sends before it loops back to the
    /// port's own QPs; refused unless [`UdCaps::block_self_mcast_lb`].
    pub block_self_mcast_lb: bool,
    /// Where receive buffers come from.
    pub pool: Mempool,
}

impl UdQpConfig {
    /// One receive queue of 1024 buffers, 1024 send work requests, no loopback block.
    pub fn new(pool: Mempool, pkey_index: u16, qkey: QKey) -> UdQpConfig {
        UdQpConfig {
            pkey_index,
            qkey,
            rx_queues: 1,
            rx_ring_size: 1024,
            tx_ring_size: 1024,
            block_self_mcast_lb: false,
            pool,
        }
    }

    /// The checks every driver makes on a configuration against its capabilities; a
    /// driver calls it first in `create_ud_qp`.
    pub fn check(&self, caps: &UdCaps) -> Result<(), crate::Error> {
        let bad = |field, value: u64, fix| Err(crate::Error::QpConfig { field, value, fix });
        let ring_ok = |v: u32| (32..=caps.max_wr).contains(&v) && v.is_power_of_two();
        if self.rx_ring_size != 0 && !ring_ok(self.rx_ring_size) {
            return bad(
                "rx_ring_size",
                self.rx_ring_size.into(),
                "use 0 (send-only) or a power of two from 32 to the device's max_wr",
            );
        }
        if !ring_ok(self.tx_ring_size) {
            return bad(
                "tx_ring_size",
                self.tx_ring_size.into(),
                "use a power of two from 32 to the device's max_wr",
            );
        }
        let rx_max = if self.rx_ring_size == 0 {
            0
        } else {
            caps.rx_queues_per_qpn
        };
        if self.rx_ring_size != 0 && !(1..=rx_max).contains(&self.rx_queues) {
            return bad(
                "rx_queues",
                self.rx_queues.into(),
                "use 1 (more only where the device's rx_queues_per_qpn allows)",
            );
        }
        if self.block_self_mcast_lb && !caps.block_self_mcast_lb {
            return bad(
                "block_self_mcast_lb",
                1,
                "the device cannot block multicast loopback; filter it in software",
            );
        }
        Ok(())
    }
}

/// A created UD queue pair: its receive queues (none for a send-only QP) and its one
/// send queue. The QP lives as long as any of its queues.
#[derive(Debug)]
#[non_exhaustive]
pub struct UdQp {
    /// The QP number: the source QPN of its sends, where unicast to it is addressed.
    pub qpn: Qpn,
    /// Receive queues, indexed by queue id (one unless the device spreads by RSS).
    pub rx: Vec<Box<dyn RxQueue>>,
    /// The send queue.
    pub tx: Box<dyn TxQueue>,
}

impl UdQp {
    /// A QP from a driver's parts.
    pub fn new(qpn: Qpn, rx: Vec<Box<dyn RxQueue>>, tx: Box<dyn TxQueue>) -> UdQp {
        UdQp { qpn, rx, tx }
    }
}

/// Receive-side counters of one queue: written by the lcore that owns the queue (or by
/// the driver on its behalf), readable live from any thread.
#[derive(Debug, Default)]
#[repr(C, align(64))]
#[non_exhaustive]
pub struct RxCounters {
    /// Packets handed to the caller.
    pub packets: Counter,
    /// Bytes handed to the caller (from the IPoIB header on).
    pub bytes: Counter,
    /// Receive buffers that could not be reposted because the pool was empty
    /// (`rx_nombuf`): the queue runs with fewer posted buffers until the pool refills.
    pub nombuf: Counter,
    /// Completions with an error status (the buffer was freed).
    pub errors: Counter,
    /// Posted buffers returned unused when the QP moved through Reset (a P_Key index
    /// move), and filled buffers dropped with them.
    pub flushed: Counter,
}

/// Send-side counters of one queue, written by its owner, readable live.
#[derive(Debug, Default)]
#[repr(C, align(64))]
#[non_exhaustive]
pub struct TxCounters {
    /// Sends posted.
    pub packets: Counter,
    /// Bytes posted (from the IPoIB header on).
    pub bytes: Counter,
    /// Sends completed, successfully or not (the buffer is back in its pool).
    pub completed: Counter,
    /// Sends that completed with an error (bad address handle, longer than the path MTU,
    /// port down, QP in error).
    pub errors: Counter,
}

/// Where one send goes: the destination port or group, its QP and its Q_Key. Plain data
/// beside each packet of a burst, copied from a snapshot's next-hop entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxDst {
    /// The address handle of the destination (its path).
    pub ah: AddressHandle,
    /// The destination QP ([`Qpn::MULTICAST`] for a group).
    pub qpn: Qpn,
    /// The destination's Q_Key.
    pub qkey: QKey,
}

const _: () = assert!(std::mem::size_of::<TxDst>() == 12);

/// A receive queue, owned by one lcore.
pub trait RxQueue: Send + std::fmt::Debug {
    /// Moves up to `pkts.room()` received packets to the end of `pkts` and returns how
    /// many; reposts as many fresh buffers. Never blocks.
    ///
    /// Each packet's data starts at its IPoIB header; the 40 bytes before it are the GRH
    /// area, holding a GRH when [`MBUF_F_GRH`](ibpoll_mem::MBUF_F_GRH) is set. The
    /// metadata carries the source QPN, the source LID and
    /// [`MBUF_F_MCAST`](ibpoll_mem::MBUF_F_MCAST) when the GRH's destination is a
    /// multicast GID.
    fn rx_burst(&mut self, pkts: &mut MbufArray) -> usize;
    /// Live counters.
    fn counters(&self) -> Arc<RxCounters>;
}

/// A send queue, owned by one lcore.
///
/// A send is posted by `tx_burst` and completes later (its buffer returns to its pool
/// then). The address handle a send names must stay alive until the send completed:
/// the caller learns that from [`completed`](Self::completed), which counts completions
/// in posting order (a send queue completes in order).
pub trait TxQueue: Send + std::fmt::Debug {
    /// The QPN this queue's sends carry as their source.
    fn src_qpn(&self) -> Qpn;
    /// Posts sends from the front of `pkts`, `dst[i]` naming where `pkts[i]` goes
    /// (`dst.len() >= pkts.len()`), and returns how many it took: they leave `pkts`, and
    /// the rest move to its front, still the caller's. It takes fewer than offered when
    /// the send queue is full (back-pressure: retry after completions). Never blocks.
    fn tx_burst(&mut self, pkts: &mut MbufArray, dst: &[TxDst]) -> usize;
    /// Polls for completions and returns how many sends have completed since the queue
    /// was created: every send posted before the `completed()`-th one has completed.
    fn completed(&mut self) -> u64;
    /// Live counters.
    fn counters(&self) -> Arc<TxCounters>;
}

/// Proof that the lcores owning a QP's queues have parked them: no thread calls any of
/// its receive queues or its send queue until this token is dropped. Control operations
/// that move a QP through Reset need it (a verbs QP in Reset discards its posted receive
/// buffers, which the driver takes back from its queue's ring while no one polls it).
#[derive(Debug)]
pub struct Parked {
    qpn: Qpn,
}

impl Parked {
    /// Asserts that QP `qpn`'s queues are parked.
    ///
    /// # Safety
    /// Until the returned token is dropped, no thread may call a method of any
    /// [`RxQueue`] or [`TxQueue`] of QP `qpn` (the owners parked them and wait).
    #[allow(unsafe_code)] // a precondition only: the body does nothing unsafe
    pub unsafe fn assume(qpn: Qpn) -> Parked {
        Parked { qpn }
    }

    /// The QP whose queues are parked.
    pub fn qpn(&self) -> Qpn {
        self.qpn
    }
}
