//! What an application sees: bursts of received IP packets, and a bounded buffer of
//! packets to send with their destinations.

use std::sync::Arc;

use ibpoll_ctrl::GroupAddr;
use ibpoll_mem::{Mbuf, Mempool};

use crate::stats::LcoreCounters;

/// Where a packet goes. The stack resolves it against the current snapshot of the
/// control plane on the same lcore, in the same iteration; a miss hands the packet to
/// the control core (ARP and path resolution, or a send-only join), which sends it once
/// it can or drops and counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dest {
    /// A next hop on this IPoIB subnet, by IPv4 address. An IPv4 multicast address is
    /// sent to its group, and 255.255.255.255 to the broadcast group.
    NextHop([u8; 4]),
    /// A multicast group (by IPv4 group address or by MGID).
    Group(GroupAddr),
}

/// What an application callback learns about the lcore it runs on; refreshed every
/// loop iteration from the snapshot (no extra cost per packet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LcoreCtx {
    /// The data lcore's index, `0..data_cores`.
    pub lcore: usize,
    /// Data lcores of the stack.
    pub data_cores: usize,
    /// Whether the link is up (the broadcast group is Joined). While it is down every
    /// packet sent is dropped and counted (`tx_link_down`).
    pub link_up: bool,
    /// The interface MTU: the largest IP packet (IPoIB header not included) that can be
    /// sent; 0 before the link first came up.
    pub mtu: usize,
    /// When this iteration started (read once per iteration): for rate control and
    /// timestamps without a clock read per packet.
    pub now: std::time::Instant,
    /// The interface this burst came in on (`0..ifaces`, in the order of
    /// [`StackBuilder::interface`](crate::StackBuilder::interface)); `link_up` and `mtu`
    /// describe this interface. In [`App::poll`] it is 0.
    pub iface: usize,
    /// Interfaces of the stack (1 unless several were configured).
    pub ifaces: usize,
    /// Bit `i` set: interface `i`'s link is up (its broadcast group is Joined).
    pub links_up: u64,
}

impl LcoreCtx {
    /// Whether interface `iface`'s link is up.
    #[inline]
    pub fn link_up_on(&self, iface: usize) -> bool {
        iface < 64 && self.links_up & (1 << iface) != 0
    }
}

/// Packets an application queues for transmission in one iteration: a fixed capacity
/// ([`TX_BUFFER_MAX`](crate::TX_BUFFER_MAX)), allocated once at start-up.
///
/// Each packet's data window must start at its IPv4 or IPv6 header: the stack prepends
/// the 4-byte IPoIB header in place, in the buffer's headroom (zero copy), with the
/// ethertype taken from the IP version nibble. A received buffer (whose IPoIB header
/// the stack stripped) can therefore be pushed back as it is, after rewriting its IP
/// header, and goes out without a copy.
///
/// With several interfaces, [`push_on`](Self::push_on) names the outgoing one;
/// [`push`](Self::push) sends on interface 0. The capacity is shared by all interfaces.
#[derive(Debug)]
pub struct TxBuffer {
    /// Packets queued per interface (each list has the whole capacity reserved, so no
    /// push allocates).
    pub(crate) pkts: Vec<Vec<(Mbuf, Dest)>>,
    len: usize,
    cap: usize,
    pool: Mempool,
    counters: Arc<LcoreCounters>,
}

impl TxBuffer {
    pub(crate) fn new(
        cap: usize,
        ifaces: usize,
        pool: Mempool,
        counters: Arc<LcoreCounters>,
    ) -> TxBuffer {
        TxBuffer {
            pkts: (0..ifaces).map(|_| Vec::with_capacity(cap)).collect(),
            len: 0,
            cap,
            pool,
            counters,
        }
    }

    /// Called by the send stage once it has taken every queued packet.
    #[inline]
    pub(crate) fn reset_len(&mut self) {
        debug_assert!(self.pkts.iter().all(Vec::is_empty));
        self.len = 0;
    }

    /// Queues `mbuf` for `dest`. When the buffer is full the packet is freed, counted
    /// (`tx_buffer_full`) and `false` returned; check [`room`](Self::room) first to
    /// apply back-pressure instead.
    #[inline]
    pub fn push(&mut self, mbuf: Mbuf, dest: Dest) -> bool {
        self.push_on(0, mbuf, dest)
    }

    /// Queues `mbuf` for `dest` on interface `iface` (`0..ifaces`, see
    /// [`LcoreCtx::ifaces`]): `dest` is resolved by that interface's control plane
    /// (its ARP, path records and groups). A forwarder pushes the buffer it received on
    /// one interface to another this way, zero copy. When the buffer is full the packet
    /// is freed and counted (`tx_buffer_full`); an interface that does not exist frees
    /// it and counts `tx_no_iface`; both return `false`.
    #[inline]
    pub fn push_on(&mut self, iface: usize, mbuf: Mbuf, dest: Dest) -> bool {
        self.counters.app_tx.inc();
        match self.pkts.get_mut(iface) {
            Some(q) if self.len < self.cap => {
                // Within the capacity reserved at start-up: no allocation.
                q.push((mbuf, dest));
                self.len += 1;
                true
            }
            _ => self.refuse(iface, mbuf),
        }
    }

    /// A packet `push_on` cannot queue: freed and counted.
    #[cold]
    #[inline(never)]
    fn refuse(&self, iface: usize, mbuf: Mbuf) -> bool {
        if iface >= self.pkts.len() {
            self.counters.tx_no_iface.inc();
        } else {
            self.counters.tx_buffer_full.inc();
        }
        drop(mbuf);
        false
    }

    /// Packets that can still be queued this iteration (all interfaces together).
    #[inline]
    pub fn room(&self) -> usize {
        self.cap - self.len
    }

    /// Packets queued (all interfaces together).
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Nothing queued.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Interfaces packets can be pushed on.
    #[inline]
    pub fn ifaces(&self) -> usize {
        self.pkts.len()
    }

    /// A fresh buffer from the stack's pool (this lcore's cache), with an empty data
    /// window after the headroom: append the IP packet, then [`push`](Self::push) it.
    /// `None` when the pool is empty (counted in the pool's `alloc_fail`).
    #[inline]
    pub fn alloc(&self) -> Option<Mbuf> {
        self.pool.alloc()
    }

    /// The stack's buffer pool.
    pub fn pool(&self) -> &Mempool {
        &self.pool
    }
}

/// An application on a data lcore: one instance per lcore, moved to it at start-up and
/// dropped on it at stop. Callbacks run on the data path: they must not block, and
/// should not allocate, lock or make system calls per packet.
pub trait App: Send + 'static {
    /// Packets received on this lcore's queue in one burst (at most
    /// [`BURST_MAX`](crate::BURST_MAX)): IPv4 and IPv6 packets whose data window starts
    /// at the IP header (the IPoIB header is stripped; the receive metadata, e.g. source
    /// QPN and the multicast flag, is in [`Mbuf::meta`]). Take a packet out of its slot
    /// to keep it or to send it on through `tx`; the stack frees whatever is left in the
    /// slots and counts it in `app_dropped`.
    fn on_burst(&mut self, ctx: &LcoreCtx, rx: &mut [Option<Mbuf>], tx: &mut TxBuffer);

    /// Called once per loop iteration, whether or not packets arrived: the hook for
    /// generating packets (pktgen) or timers. Returns whether it did any work (for the
    /// busy/idle accounting).
    fn poll(&mut self, ctx: &LcoreCtx, tx: &mut TxBuffer) -> bool {
        let _ = (ctx, tx);
        false
    }
}

/// A closure is an application that only handles received bursts.
impl<F> App for F
where
    F: FnMut(&LcoreCtx, &mut [Option<Mbuf>], &mut TxBuffer) + Send + 'static,
{
    fn on_burst(&mut self, ctx: &LcoreCtx, rx: &mut [Option<Mbuf>], tx: &mut TxBuffer) {
        self(ctx, rx, tx)
    }
}

/// An application that drops everything it receives (the stack counts it in
/// `app_dropped`) and sends nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct Discard;

impl App for Discard {
    fn on_burst(&mut self, _ctx: &LcoreCtx, _rx: &mut [Option<Mbuf>], _tx: &mut TxBuffer) {}
}
