//! The data cores' side: one bounded single-producer request ring per data core.

use std::fmt;
use std::sync::Arc;

use crossbeam::queue::ArrayQueue;
use ibpoll_dev::Counter;
use ibpoll_mem::Mbuf;
use ibpoll_rcu::Reader;
use ibpoll_wire::Gid;

use crate::subs::{RequestDrops, SubBoard, SubSlot};
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

/// What a data core asks of the control core. A packet request carries the packet that
/// made it ask: the control core sends it once it can, or drops it and counts why (in
/// [`CtrlStats`](crate::CtrlStats) and in the data core's [`RequestDrops`]).
/// Subscriptions carry none.
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
    /// A socket of this data core subscribes to a group: the control core joins it as a
    /// full member (once the link is up), attaches this data core's QP to it, and reports
    /// how the join stands in the data core's [`SubBoard`] slot `slot` (claimed with
    /// [`SubBoard::claim`]). Carries no packet.
    Subscribe {
        /// The group.
        group: GroupAddr,
        /// Where the control core reports the subscription's state.
        slot: SubSlot,
    },
    /// The subscription in `slot` ends: the data core's QP is detached from the group once
    /// no other subscription of the data core names it, and the group is left once no
    /// subscription (of any data core, or of [`Controller::join_group`]) names it.
    ///
    /// [`Controller::join_group`]: crate::Controller::join_group
    Unsubscribe {
        /// The subscription's slot.
        slot: SubSlot,
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
    /// Where the control core reports how this data core's subscriptions stand.
    pub subs: Arc<SubBoard>,
    /// The packets this data core handed over that the control core dropped on arrival
    /// (queue or table full), by kind: the data core's own view of those losses.
    pub drops: Arc<RequestDrops>,
}

/// The consumer end, owned by the controller.
#[derive(Debug)]
pub(crate) struct RequestRing {
    pub(crate) ring: Arc<ArrayQueue<Request>>,
    pub(crate) full: Arc<Counter>,
    pub(crate) subs: Arc<SubBoard>,
    pub(crate) drops: Arc<RequestDrops>,
}
