use std::sync::Arc;

use ibpoll_mem::{Mbuf, Mempool};
use ibpoll_wire::{QKey, Qpn};

use crate::{AddressHandle, Counter};

/// How to create a UD queue pair.
#[derive(Debug, Clone)]
pub struct UdQpConfig {
    /// Index into the port's P_Key table of the partition the QP belongs to.
    pub pkey_index: u16,
    /// The Q_Key the QP accepts and sends with (changeable with
    /// [`Port::set_qp_qkey`](crate::Port::set_qp_qkey)).
    pub qkey: QKey,
    /// Receive queues, spread by a flow hash (RSS); 1 to 64.
    pub rx_queues: u16,
    /// Send queues; 1 to 64.
    pub tx_queues: u16,
    /// Receive buffers posted per receive queue (a power of two, 32 to 32768).
    pub rx_ring_size: u32,
    /// Send descriptors per send queue (a power of two, 32 to 32768).
    pub tx_ring_size: u32,
    /// Where receive buffers come from.
    pub pool: Mempool,
}

/// A created UD queue pair, split into per-core queues. The QP lives as long as any of
/// its queues.
#[derive(Debug)]
pub struct UdQp {
    /// The QP number remote ports send to.
    pub qpn: Qpn,
    /// Receive queues, indexed by queue id.
    pub rx: Vec<Box<dyn RxQueue>>,
    /// Send queues, indexed by queue id.
    pub tx: Vec<Box<dyn TxQueue>>,
}

/// Receive-side counters of one queue: written by the lcore that owns the queue (or by
/// the driver on its behalf), readable live from any thread.
#[derive(Debug, Default)]
#[repr(C, align(64))]
pub struct RxCounters {
    /// Packets handed to the caller.
    pub packets: Counter,
    /// Bytes handed to the caller (from the IPoIB header on).
    pub bytes: Counter,
    /// Packets dropped because no receive buffer could be allocated (`rx_nombuf`).
    pub nombuf: Counter,
    /// Packets dropped because every posted receive buffer was full (receiver overrun).
    pub overrun: Counter,
}

/// Send-side counters of one queue, written by its owner, readable live.
#[derive(Debug, Default)]
#[repr(C, align(64))]
pub struct TxCounters {
    /// Packets accepted for transmission.
    pub packets: Counter,
    /// Bytes accepted (from the IPoIB header on).
    pub bytes: Counter,
    /// Descriptors consumed but failed (bad address handle, longer than the path MTU,
    /// port down): the buffer was freed and the packet counted here.
    pub errors: Counter,
}

/// One send: the packet (data from the IPoIB header on) and where it goes.
#[derive(Debug)]
pub struct TxDesc {
    /// The packet; `tx_burst` takes it out of every descriptor it consumed.
    pub mbuf: Option<Mbuf>,
    /// The destination port or group.
    pub ah: AddressHandle,
    /// The destination QP ([`Qpn::MULTICAST`] for a group).
    pub remote_qpn: Qpn,
    /// The destination's Q_Key.
    pub remote_qkey: QKey,
}

/// A receive queue, owned by one lcore.
pub trait RxQueue: Send + std::fmt::Debug {
    /// Receives up to `pkts.len()` packets into the slots from index 0 and returns how
    /// many. Slots past that are left as they were. Never blocks.
    fn rx_burst(&mut self, pkts: &mut [Option<Mbuf>]) -> usize;
    /// The queue's index within its QP.
    fn queue_id(&self) -> u16;
    /// Live counters.
    fn counters(&self) -> Arc<RxCounters>;
}

/// A send queue, owned by one lcore.
pub trait TxQueue: Send + std::fmt::Debug {
    /// Sends descriptors from index 0 and returns how many it consumed (sent, or failed
    /// and counted in [`TxCounters::errors`]); their `mbuf`s are taken. Descriptors from
    /// the returned index on are untouched and still the caller's. Never blocks.
    fn tx_burst(&mut self, descs: &mut [TxDesc]) -> usize;
    /// The queue's index within its QP.
    fn queue_id(&self) -> u16;
    /// Live counters.
    fn counters(&self) -> Arc<TxCounters>;
}
