//! The data cores' side: one bounded single-producer request ring per data core.

use std::fmt;
use std::sync::Arc;

use crossbeam::queue::ArrayQueue;
use ibpoll_dev::Counter;
use ibpoll_mem::Mbuf;
use ibpoll_rcu::Reader;
use ibpoll_wire::Gid;

use crate::Snapshot;

/// A multicast group named by its MGID or by its IP group address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupAddr {
    /// An MGID (any multicast GID of the interface's partition).
    Mgid(Gid),
    /// An IPv4 multicast group, mapped with the interface's P_Key and scope.
    Ipv4([u8; 4]),
    /// An IPv6 multicast group (`ff00::/8`), mapped with the interface's P_Key and
    /// scope to an MGID with the IPv6 signature 0x601B (RFC 4391 section 4).
    Ipv6([u8; 16]),
}

/// What a data core asks of the control core. Each carries the packet that made it ask;
/// the control core sends it once it can, or drops it and counts why.
#[derive(Debug)]
pub enum Request {
    /// A packet (data from the IPoIB header on) for a group that the snapshot does not
    /// have Joined: the control core queues it and asks for a send-only join.
    Mcast {
        /// The group.
        group: GroupAddr,
        /// The packet.
        mbuf: Mbuf,
    },
    /// A packet for a next hop the snapshot has no neighbour for.
    Resolve {
        /// The next hop's IPv4 address.
        next_hop: [u8; 4],
        /// The packet.
        mbuf: Mbuf,
    },
    /// A received ARP packet (data from the IPoIB header on).
    Arp {
        /// The packet.
        mbuf: Mbuf,
    },
    /// A packet for an IPv6 next hop the snapshot has no neighbour for: the control
    /// core queues it and resolves the next hop by neighbour discovery.
    Resolve6 {
        /// The next hop's IPv6 address.
        next_hop: [u8; 16],
        /// The packet.
        mbuf: Mbuf,
    },
    /// A received ICMPv6 Neighbor Solicitation or Advertisement (data from the IPoIB
    /// header on).
    Nd {
        /// The packet.
        mbuf: Mbuf,
    },
}

/// The producer end of one data core's request ring. Not `Clone`: one producer per ring.
pub struct RequestSender {
    ring: Arc<ArrayQueue<Request>>,
    full: Arc<Counter>,
}

impl RequestSender {
    pub(crate) fn new(ring: Arc<ArrayQueue<Request>>, full: Arc<Counter>) -> Self {
        RequestSender { ring, full }
    }

    /// Queues a request. When the ring is full the request comes back (the caller frees
    /// the packet) and the ring's `ring_full` counter says so.
    #[inline]
    pub fn send(&mut self, req: Request) -> Result<(), Request> {
        self.ring.push(req).inspect_err(|_| self.full.inc())
    }

    /// Requests waiting.
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// No request waiting.
    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }
}

impl fmt::Debug for RequestSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestSender")
            .field("len", &self.ring.len())
            .field("capacity", &self.ring.capacity())
            .field("full", &self.full.get())
            .finish()
    }
}

/// What one data core gets from [`Controller::new`](crate::Controller::new).
#[derive(Debug)]
pub struct DataCore {
    /// Its snapshot reader (one `get` per burst, one `quiescent` per loop iteration).
    pub reader: Reader<Snapshot>,
    /// Its request ring.
    pub requests: RequestSender,
    /// Where it publishes its send progress (once per loop iteration), so that the
    /// control core destroys an address handle only after the sends naming it completed.
    pub progress: Arc<crate::TxProgress>,
}

/// The consumer end, owned by the controller.
#[derive(Debug)]
pub(crate) struct RequestRing {
    pub(crate) ring: Arc<ArrayQueue<Request>>,
    pub(crate) full: Arc<Counter>,
}
