//! What an application sees: bursts of received IP packets, and the send side of its
//! lane ([`Tx`]) to push packets into.

use ibpoll_mem::MbufArray;

use crate::tx::Tx;

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

/// An application on a data lcore: one instance per lcore, moved to it at start-up and
/// dropped on it at stop. Callbacks run on the data path: they must not block, and
/// should not allocate, lock or make system calls per packet.
pub trait App: Send + 'static {
    /// Packets received on this lcore's queues of one interface in one burst (at most
    /// [`BURST_MAX`](crate::BURST_MAX)): IPv4 and IPv6 packets whose data window starts
    /// at the IP header (the IPoIB header is stripped; the receive metadata, e.g. source
    /// QPN and the multicast flag, is in [`Mbuf::meta`](ibpoll_mem::Mbuf::meta)). Take
    /// packets out of `rx` (`pop`, `drain_front`, `swap_remove`...) to keep them or to
    /// send them on through `tx`; the stack frees whatever is left, in bulk, and counts
    /// it in `app_dropped`.
    fn on_burst(&mut self, ctx: &LcoreCtx, rx: &mut MbufArray, tx: &mut Tx);

    /// Called once per loop iteration, whether or not packets arrived: the hook for
    /// generating packets (pktgen) or timers. Returns whether it did any work (for the
    /// busy/idle accounting).
    fn poll(&mut self, ctx: &LcoreCtx, tx: &mut Tx) -> bool {
        let _ = (ctx, tx);
        false
    }
}

/// A closure is an application that only handles received bursts.
impl<F> App for F
where
    F: FnMut(&LcoreCtx, &mut MbufArray, &mut Tx) + Send + 'static,
{
    fn on_burst(&mut self, ctx: &LcoreCtx, rx: &mut MbufArray, tx: &mut Tx) {
        self(ctx, rx, tx)
    }
}

/// An application that drops everything it receives (the stack counts it in
/// `app_dropped`) and sends nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct Discard;

impl App for Discard {
    fn on_burst(&mut self, _ctx: &LcoreCtx, _rx: &mut MbufArray, _tx: &mut Tx) {}
}
