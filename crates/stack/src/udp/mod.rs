//! UDP sockets on a lane: non-blocking, burst-capable, zero-copy.
//!
//! A socket is bound to a port of one interface on one lane ([`Lane::udp_bind`]); the
//! lane keeps a small table of its sockets and, from every burst it receives, moves
//! the datagrams for a bound port (IPv4, not fragmented, protocol UDP) into that
//! socket's queue, with their data window on the UDP payload; everything else goes on
//! to the application (or stays in the caller's burst). A socket belongs to its lane:
//! it is used from the thread that drives the lane, between polls.
//!
//! - Receive, zero copy: [`Lane::udp_recv_from`] (one datagram and its source),
//!   [`Lane::udp_recv_burst`] (up to a burst); copying: [`Lane::udp_recv_slice`].
//! - Send, zero copy: [`Lane::udp_send_to`] takes a buffer whose data window is the
//!   payload and prepends the UDP and IPv4 headers in its headroom ([`encapsulate`]),
//!   the UDP checksum computed or left out per [`UdpConfig::tx_checksum`] (RFC 768
//!   allows none over IPv4); copying: [`Lane::udp_send_slice`]. Datagrams queue in the
//!   lane's TX table: [`Lane::flush`] (or the next poll) sends them. A destination not
//!   resolved yet waits at the control core (3 per neighbour, 64 per group); what
//!   overflows is counted in the lane's counters ([`Lane::stats`]:
//!   `ctrl_resolve_dropped`, `ctrl_mcast_dropped`).
//! - Multicast: [`Lane::udp_join`] asks the control core (through the lane's bounded
//!   request ring; it never waits) to join the group at the SA as a full member and to
//!   attach this lane's QP to it; [`Lane::udp_membership`] says how the join stands
//!   ([`JoinStatus`]: pending, joined, refused with the SA's MAD status...).
//!   [`Lane::udp_leave`] (or closing the socket) ends it; the control core leaves the
//!   group at the SA once no subscription names it. Sending to a group the socket did
//!   not join needs no join: the stack sends through a send-only membership.
//!
//! Unicast datagrams arrive on lane 0 only (its QP is the interface's: its QPN is the
//! hardware address neighbours send to), unless the device spreads that QP's receive
//! queue over the lanes (RSS): then on any lane, and a port is bound on each. A group
//! arrives on every lane whose sockets joined it.
//!
//! [`Lane::udp_bind`]: crate::Lane::udp_bind
//! [`Lane::udp_recv_from`]: crate::Lane::udp_recv_from
//! [`Lane::udp_recv_burst`]: crate::Lane::udp_recv_burst
//! [`Lane::udp_recv_slice`]: crate::Lane::udp_recv_slice
//! [`Lane::udp_send_to`]: crate::Lane::udp_send_to
//! [`Lane::udp_send_slice`]: crate::Lane::udp_send_slice
//! [`Lane::flush`]: crate::Lane::flush
//! [`Lane::stats`]: crate::Lane::stats
//! [`Lane::udp_join`]: crate::Lane::udp_join
//! [`Lane::udp_membership`]: crate::Lane::udp_membership
//! [`Lane::udp_leave`]: crate::Lane::udp_leave

mod api;
mod wire;

pub(crate) use api::{membership, subscribe, unsubscribe};

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddrV4};

use ibpoll_ctrl::SubSlot;
use ibpoll_mem::{Mbuf, MbufArray};

pub use ibpoll_ctrl::JoinStatus;
pub use wire::{encapsulate, EncapError, HeaderFields, HEADERS_LEN, PAYLOAD_MAX};

/// Sockets one lane can hold.
pub const SOCKETS_MAX: usize = 64;
/// Groups one socket can join.
pub const GROUPS_PER_SOCKET_MAX: usize = 256;
/// The first port [`Lane::udp_bind`](crate::Lane::udp_bind) picks for port 0 (the
/// IANA dynamic range, 49152..=65535).
pub const EPHEMERAL_FIRST: u16 = 49152;

/// A socket of a lane: a handle (index and generation) into the lane's table; `Copy`.
/// A closed socket's handle is refused ([`UdpError::BadSocket`]).
///
/// A zero-copy echo server on lane 0 (unicast arrives there), a burst at a time:
///
/// ```no_run
/// use std::net::{Ipv4Addr, SocketAddrV4};
/// use ibpoll::{Discard, FabricConfig, MbufArray, SimFabric, Stack};
/// let fabric = SimFabric::new(FabricConfig::default());
/// let (_stack, mut control, mut lanes) = Stack::builder()
///     .fabric(&fabric, "echo")
///     .ipv4([10, 0, 0, 1])
///     .data_cores(1)
///     .build()?
///     .split();
/// let lane = &mut lanes[0];
/// let sock = lane.udp_bind(0, 7)?;
/// let mut burst = MbufArray::with_capacity(32);
/// let mut from = [SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0); 32];
/// while !lane.stopping() {
///     control.poll();
///     lane.poll(&mut Discard);
///     let n = lane.udp_recv_burst(sock, &mut burst, &mut from);
///     for (m, to) in burst.drain_front(n).zip(from) {
///         // The payload goes back in its own buffer; the headers go into its headroom.
///         let _ = lane.udp_send_to(sock, m, to);
///     }
///     lane.flush();
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UdpSocket {
    index: u16,
    gen: u16,
}

/// A socket's settings.
///
/// ```
/// use ibpoll::UdpConfig;
/// let mut cfg = UdpConfig::with_rx_queue(4096);
/// cfg.tx_checksum = false; // RFC 768: optional over IPv4; the ICRC covers the wire
/// assert_eq!((cfg.rx_queue, cfg.ttl, cfg.multicast_ttl), (4096, 64, 1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct UdpConfig {
    /// Datagrams the receive queue holds (allocated at bind); more are dropped and
    /// counted (`rx_queue_full`). Default 1024.
    pub rx_queue: usize,
    /// Compute the UDP checksum of what is sent (default true). Without it the field
    /// is 0: no checksum, which RFC 768 allows over IPv4; InfiniBand's ICRC still
    /// covers the datagram on the wire.
    pub tx_checksum: bool,
    /// Check the IPv4 and UDP checksums of what is received (default true); a datagram
    /// that fails is dropped and counted (`rx_bad_checksum`). A UDP checksum of 0 means
    /// none was sent and is accepted.
    pub rx_checksum: bool,
    /// IPv4 time to live of unicast datagrams (default 64).
    pub ttl: u8,
    /// IPv4 time to live of multicast datagrams (default 1, as Linux's
    /// `IP_MULTICAST_TTL`).
    pub multicast_ttl: u8,
}

impl Default for UdpConfig {
    fn default() -> Self {
        UdpConfig {
            rx_queue: 1024,
            tx_checksum: true,
            rx_checksum: true,
            ttl: 64,
            multicast_ttl: 1,
        }
    }
}

impl UdpConfig {
    /// The defaults with a receive queue of `n` datagrams.
    pub fn with_rx_queue(n: usize) -> UdpConfig {
        UdpConfig {
            rx_queue: n,
            ..UdpConfig::default()
        }
    }
}

/// One socket's counters (plain integers, kept by its lane).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UdpStats {
    /// Datagrams queued for the application.
    pub rx: u64,
    /// Payload bytes of those.
    pub rx_bytes: u64,
    /// Datagrams dropped because the receive queue was full.
    pub rx_queue_full: u64,
    /// Datagrams dropped for a wrong IPv4 or UDP checksum.
    pub rx_bad_checksum: u64,
    /// Datagrams taken from the socket by the application.
    pub rx_taken: u64,
    /// Copying receives that truncated a datagram to the caller's buffer.
    pub rx_truncated: u64,
    /// Datagrams handed to the lane's send path (queued for the send queue, or waiting
    /// at the control core for their destination).
    pub tx: u64,
    /// Payload bytes of those.
    pub tx_bytes: u64,
    /// Datagrams the send path dropped at once (link down, longer than the MTU, the
    /// control core's ring or the send queue full: the lane's counters say which).
    pub tx_dropped: u64,
    /// Datagrams that could not be built (no headroom, too long for IPv4, no buffer,
    /// no address on the interface).
    pub tx_unbuilt: u64,
}

/// Why a socket call failed. Nothing here is a panic: bad handles and full tables are
/// answered, and a datagram that cannot be sent is freed and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UdpError {
    /// The handle names no open socket of this lane.
    #[error("ibpoll: no such UDP socket on this lane (closed, or another lane's)")]
    BadSocket,
    /// The interface index is out of range.
    #[error("ibpoll: no interface {iface} on this lane (it has {ifaces})")]
    NoSuchIface {
        /// The index asked for.
        iface: usize,
        /// Interfaces of the stack.
        ifaces: usize,
    },
    /// Another socket of this lane has the port on that interface.
    #[error("ibpoll: UDP port {port} is already bound on interface {iface} of this lane")]
    PortInUse {
        /// The interface.
        iface: usize,
        /// The port.
        port: u16,
    },
    /// The lane's socket table is full ([`SOCKETS_MAX`]), or every dynamic port is taken.
    #[error("ibpoll: no room for another UDP socket on this lane (at most {SOCKETS_MAX})")]
    TooManySockets,
    /// The interface has no IPv4 address to send from (give one to the builder).
    #[error("ibpoll: interface {iface} has no IPv4 address to send from; configure one with StackBuilder::ipv4 or IfaceConfig::ipv4")]
    NoAddress {
        /// The interface.
        iface: usize,
    },
    /// The address is not an IPv4 multicast group (224.0.0.0/4).
    #[error("ibpoll: {group} is not an IPv4 multicast group (224.0.0.0/4)")]
    NotAGroup {
        /// The address.
        group: Ipv4Addr,
    },
    /// The socket already joined the group.
    #[error("ibpoll: the socket already joined {group}")]
    AlreadyJoined {
        /// The group.
        group: Ipv4Addr,
    },
    /// The socket did not join the group.
    #[error("ibpoll: the socket did not join {group}")]
    NotJoined {
        /// The group.
        group: Ipv4Addr,
    },
    /// The socket (or the lane: 256 subscriptions per lane and interface) has joined as
    /// many groups as it can.
    #[error("ibpoll: no room for another group subscription on this socket or lane")]
    TooManyGroups,
    /// The request ring to the control core is full: nothing was changed; try again
    /// after a poll.
    #[error("ibpoll: the control core's request ring is full; try again after a poll")]
    WouldBlock,
    /// The datagram could not be built: [`EncapError`] says why. It was freed (counted
    /// in `tx_unbuilt`).
    #[error("ibpoll: the datagram could not be built: {0:?}")]
    Build(EncapError),
    /// No buffer could be allocated for a copying send (the pool is empty).
    #[error("ibpoll: the buffer pool is empty")]
    NoBuffer,
    /// The payload does not fit a buffer of the stack's pool.
    #[error("ibpoll: a payload of {len} bytes does not fit a buffer ({room} bytes)")]
    TooLong {
        /// The payload's length.
        len: usize,
        /// What a buffer holds after its headroom.
        room: usize,
    },
    /// The send path dropped the datagram at once (link down, longer than the MTU, the
    /// control core's ring or the send queue full); the lane's counters say which.
    #[error("ibpoll: the datagram was dropped on the send path (see the lane's counters)")]
    Dropped,
}

/// One socket.
#[derive(Debug)]
struct Sock {
    iface: usize,
    port: u16,
    cfg: UdpConfig,
    rx: VecDeque<(Mbuf, SocketAddrV4)>,
    groups: Vec<(Ipv4Addr, SubSlot)>,
    stats: UdpStats,
    ident: u16,
}

/// A lane's sockets and what they need of it. Everything is allocated at bind; nothing
/// per packet.
#[derive(Debug)]
pub(crate) struct UdpTable {
    socks: Vec<Option<Sock>>,
    gens: Vec<u16>,
    /// Bound (interface, port) -> socket index: searched linearly (a lane holds few
    /// sockets; the search stops at the first match).
    bound: Vec<(usize, u16, u16)>,
    /// Bound sockets per interface, to skip the search on interfaces without any.
    bound_on: Vec<u16>,
    /// Each interface's IPv4 address (the source of what is sent).
    addrs: Vec<Option<Ipv4Addr>>,
    /// Unsubscriptions the request ring had no room for: sent at the next poll.
    unsubs: Vec<(usize, SubSlot)>,
    /// Datagrams dropped on receive, freed in bulk.
    trash: MbufArray,
    next_port: u16,
}

impl Default for UdpTable {
    fn default() -> Self {
        UdpTable {
            socks: Vec::new(),
            gens: Vec::new(),
            bound: Vec::new(),
            bound_on: Vec::new(),
            addrs: Vec::new(),
            unsubs: Vec::new(),
            trash: MbufArray::with_capacity(crate::BURST_MAX),
            next_port: EPHEMERAL_FIRST,
        }
    }
}

impl UdpTable {
    /// Each interface's IPv4 address, set when the lane is built.
    pub(crate) fn set_addrs(&mut self, addrs: Vec<Option<Ipv4Addr>>) {
        self.bound_on = vec![0; addrs.len()];
        self.addrs = addrs;
    }

    /// Whether any socket is bound on `iface`.
    #[inline]
    pub(crate) fn any_on(&self, iface: usize) -> bool {
        self.bound_on.get(iface).is_some_and(|n| *n > 0)
    }

    fn sock(&self, s: UdpSocket) -> Result<&Sock, UdpError> {
        match self.socks.get(usize::from(s.index)) {
            Some(Some(k)) if self.gens[usize::from(s.index)] == s.gen => Ok(k),
            _ => Err(UdpError::BadSocket),
        }
    }

    fn sock_mut(&mut self, s: UdpSocket) -> Result<&mut Sock, UdpError> {
        match self.socks.get_mut(usize::from(s.index)) {
            Some(Some(k)) if self.gens[usize::from(s.index)] == s.gen => Ok(k),
            _ => Err(UdpError::BadSocket),
        }
    }

    fn lookup(&self, iface: usize, port: u16) -> Option<usize> {
        self.bound
            .iter()
            .find(|(i, p, _)| *i == iface && *p == port)
            .map(|(_, _, s)| usize::from(*s))
    }

    /// A free dynamic port on `iface`.
    fn ephemeral(&mut self, iface: usize) -> Option<u16> {
        let span = u32::from(u16::MAX - EPHEMERAL_FIRST) + 1;
        for _ in 0..span {
            let p = self.next_port;
            self.next_port = if p == u16::MAX {
                EPHEMERAL_FIRST
            } else {
                p + 1
            };
            if self.lookup(iface, p).is_none() {
                return Some(p);
            }
        }
        None
    }

    fn bind(&mut self, iface: usize, port: u16, cfg: UdpConfig) -> Result<UdpSocket, UdpError> {
        let ifaces = self.addrs.len();
        if iface >= ifaces {
            return Err(UdpError::NoSuchIface { iface, ifaces });
        }
        let port = match port {
            0 => self.ephemeral(iface).ok_or(UdpError::TooManySockets)?,
            p if self.lookup(iface, p).is_some() => {
                return Err(UdpError::PortInUse { iface, port: p })
            }
            p => p,
        };
        let index = match self.socks.iter().position(Option::is_none) {
            Some(i) => i,
            None if self.socks.len() < SOCKETS_MAX => {
                self.socks.push(None);
                self.gens.push(0);
                self.socks.len() - 1
            }
            None => return Err(UdpError::TooManySockets),
        };
        self.gens[index] = self.gens[index].wrapping_add(1);
        self.socks[index] = Some(Sock {
            iface,
            port,
            cfg,
            rx: VecDeque::with_capacity(cfg.rx_queue),
            groups: Vec::new(),
            stats: UdpStats::default(),
            ident: 0,
        });
        self.bound.push((iface, port, index as u16));
        self.bound_on[iface] += 1;
        Ok(UdpSocket {
            index: index as u16,
            gen: self.gens[index],
        })
    }

    /// Closes a socket: its queued datagrams are freed; its subscriptions are returned
    /// for the caller to end.
    fn close(&mut self, s: UdpSocket) -> Result<Vec<(Ipv4Addr, SubSlot)>, UdpError> {
        self.sock(s)?;
        let k = self.socks[usize::from(s.index)].take().expect("checked");
        self.bound.retain(|(_, _, i)| *i != s.index);
        self.bound_on[k.iface] -= 1;
        Ok(k.groups)
    }

    /// Moves the datagrams of `burst[from..]` that bound sockets of `iface` take into
    /// their queues (data window on the payload); the rest stay, in order.
    pub(crate) fn demux(&mut self, iface: usize, burst: &mut MbufArray, from: usize) {
        if !self.any_on(iface) {
            return;
        }
        let UdpTable {
            socks,
            bound,
            trash,
            ..
        } = self;
        burst.filter_map_from(from, |m| {
            let Some(p) = wire::parse(m.data()) else {
                return Some(m);
            };
            let port = p.dst.port();
            let Some(&(_, _, idx)) = bound.iter().find(|(i, b, _)| *i == iface && *b == port)
            else {
                return Some(m);
            };
            let Some(sock) = socks[usize::from(idx)].as_mut() else {
                return Some(m);
            };
            deliver(sock, m, &p, trash);
            None
        });
        self.trash.clear();
    }
}

/// One datagram into its socket's queue, or counted and freed.
#[inline]
fn deliver(sock: &mut Sock, mut m: Mbuf, p: &wire::Parsed, trash: &mut MbufArray) {
    let drop = |m: Mbuf, trash: &mut MbufArray| {
        if let Err(m) = trash.push(m) {
            drop(m);
        }
    };
    if sock.cfg.rx_checksum && !wire::checksums_ok(m.data(), p) {
        sock.stats.rx_bad_checksum += 1;
        return drop(m, trash);
    }
    if sock.rx.len() >= sock.cfg.rx_queue {
        sock.stats.rx_queue_full += 1;
        return drop(m, trash);
    }
    // Both hold: `parse` checked the lengths against the data.
    m.adj(p.headers_len);
    m.trim(m.len() - p.payload_len);
    sock.stats.rx += 1;
    sock.stats.rx_bytes += p.payload_len as u64;
    // Within the capacity reserved at bind (checked above).
    sock.rx.push_back((m, p.src));
}
