//! The socket calls, as methods of the [`Lane`] that holds the sockets.

use std::net::{Ipv4Addr, SocketAddrV4};

use ibpoll_ctrl::{GroupAddr, Request, SubSlot};
use ibpoll_mem::{Mbuf, MbufArray};

use super::wire::{self, HeaderFields};
use super::{JoinStatus, UdpConfig, UdpError, UdpSocket, UdpStats, GROUPS_PER_SOCKET_MAX};
use crate::tx::{Dest, Tx};
use crate::Lane;

impl Lane {
    /// Binds a UDP socket to `port` on interface `iface` of this lane (port 0: a free
    /// port from 49152 up), with the default [`UdpConfig`].
    ///
    /// ```no_run
    /// # let fabric = ibpoll::SimFabric::new(ibpoll::FabricConfig::default());
    /// use ibpoll::Stack;
    /// let (_stack, _control, mut lanes) = Stack::builder()
    ///     .fabric(&fabric, "a")
    ///     .ipv4([10, 0, 0, 1])
    ///     .data_cores(1)
    ///     .build()?
    ///     .split();
    /// let lane = &mut lanes[0];
    /// let sock = lane.udp_bind(0, 7000)?;
    /// assert_eq!(lane.udp_local(sock)?.port(), 7000);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn udp_bind(&mut self, iface: usize, port: u16) -> Result<UdpSocket, UdpError> {
        self.udp_bind_with(iface, port, UdpConfig::default())
    }

    /// [`udp_bind`](Self::udp_bind) with settings of its own.
    pub fn udp_bind_with(
        &mut self,
        iface: usize,
        port: u16,
        cfg: UdpConfig,
    ) -> Result<UdpSocket, UdpError> {
        self.ext.udp.bind(iface, port, cfg)
    }

    /// Closes a socket: frees what it queued, ends its group subscriptions (the
    /// control core leaves a group once no subscription names it).
    pub fn udp_close(&mut self, s: UdpSocket) -> Result<(), UdpError> {
        let iface = self.ext.udp.sock(s)?.iface;
        for (_, slot) in self.ext.udp.close(s)? {
            self.unsubscribe(iface, slot);
        }
        Ok(())
    }

    /// The socket's interface address and port (the address is unspecified when the
    /// interface has none).
    pub fn udp_local(&self, s: UdpSocket) -> Result<SocketAddrV4, UdpError> {
        let k = self.ext.udp.sock(s)?;
        let ip = self.ext.udp.addrs[k.iface].unwrap_or(Ipv4Addr::UNSPECIFIED);
        Ok(SocketAddrV4::new(ip, k.port))
    }

    /// The socket's counters.
    pub fn udp_stats(&self, s: UdpSocket) -> Result<UdpStats, UdpError> {
        Ok(self.ext.udp.sock(s)?.stats)
    }

    /// Datagrams waiting in the socket's queue.
    pub fn udp_pending(&self, s: UdpSocket) -> Result<usize, UdpError> {
        Ok(self.ext.udp.sock(s)?.rx.len())
    }

    /// The next datagram and its source, zero copy: the buffer's data window is the
    /// UDP payload (the headers are still in front of it). `None` when the queue is
    /// empty (or the handle is bad).
    #[inline]
    pub fn udp_recv_from(&mut self, s: UdpSocket) -> Option<(Mbuf, SocketAddrV4)> {
        let k = self.ext.udp.sock_mut(s).ok()?;
        let d = k.rx.pop_front()?;
        k.stats.rx_taken += 1;
        Some(d)
    }

    /// Moves up to a burst of datagrams to the back of `out` and their sources to the
    /// front of `from` (the `i`-th appended buffer came from `from[i]`), as many as both
    /// have room for; returns how many.
    pub fn udp_recv_burst(
        &mut self,
        s: UdpSocket,
        out: &mut MbufArray,
        from: &mut [SocketAddrV4],
    ) -> usize {
        let Ok(k) = self.ext.udp.sock_mut(s) else {
            return 0;
        };
        let n = k.rx.len().min(out.room()).min(from.len());
        for (i, (m, src)) in k.rx.drain(..n).enumerate() {
            from[i] = src;
            // Cannot fail: `n <= out.room()`.
            let _ = out.push(m);
        }
        k.stats.rx_taken += n as u64;
        n
    }

    /// Copies the next datagram's payload into `buf` (truncated to its length, counted
    /// in `rx_truncated`) and frees the buffer; returns the bytes copied and the
    /// source.
    pub fn udp_recv_slice(
        &mut self,
        s: UdpSocket,
        buf: &mut [u8],
    ) -> Option<(usize, SocketAddrV4)> {
        let (m, src) = self.udp_recv_from(s)?;
        let n = m.len().min(buf.len());
        buf[..n].copy_from_slice(&m.data()[..n]);
        if n < m.len() {
            if let Ok(k) = self.ext.udp.sock_mut(s) {
                k.stats.rx_truncated += 1;
            }
        }
        Some((n, src))
    }

    /// Sends the payload in `m`'s data window to `to`, zero copy: the UDP and IPv4
    /// headers go into the buffer's headroom, and the datagram joins the lane's TX table
    /// for the socket's interface (sent by [`flush`](Self::flush) or the next poll, at
    /// once when the table holds a burst). `m` is consumed whatever happens; a datagram
    /// that cannot go is counted (socket and lane counters).
    #[inline]
    pub fn udp_send_to(
        &mut self,
        s: UdpSocket,
        mut m: Mbuf,
        to: SocketAddrV4,
    ) -> Result<(), UdpError> {
        let udp = &mut self.ext.udp;
        let Ok(k) = udp.sock_mut(s) else {
            return Err(UdpError::BadSocket);
        };
        let (iface, port) = (k.iface, k.port);
        let Some(ip) = udp.addrs[iface] else {
            let k = udp.sock_mut(s).expect("checked");
            k.stats.tx_unbuilt += 1;
            return Err(UdpError::NoAddress { iface });
        };
        let k = udp.sock_mut(s).expect("checked");
        let group = wire::is_group(*to.ip());
        let fields = HeaderFields {
            ttl: if group {
                k.cfg.multicast_ttl
            } else {
                k.cfg.ttl
            },
            ident: k.ident,
            udp_checksum: k.cfg.tx_checksum,
        };
        let payload = m.len() as u64;
        if let Err(e) = wire::encapsulate(&mut m, SocketAddrV4::new(ip, port), to, fields) {
            k.stats.tx_unbuilt += 1;
            return Err(UdpError::Build(e));
        }
        k.ident = k.ident.wrapping_add(1);
        let dest = if group {
            Dest::Group(GroupAddr::Ipv4(to.ip().octets()))
        } else {
            Dest::NextHop(to.ip().octets())
        };
        if self.tx.push(iface, m, dest) {
            k.stats.tx += 1;
            k.stats.tx_bytes += payload;
            Ok(())
        } else {
            k.stats.tx_dropped += 1;
            Err(UdpError::Dropped)
        }
    }

    /// Copies `data` into a fresh buffer of the stack's pool and sends it as
    /// [`udp_send_to`](Self::udp_send_to) does.
    pub fn udp_send_slice(
        &mut self,
        s: UdpSocket,
        data: &[u8],
        to: SocketAddrV4,
    ) -> Result<(), UdpError> {
        self.ext.udp.sock(s)?;
        let Some(mut m) = self.tx.alloc() else {
            self.ext.udp.sock_mut(s)?.stats.tx_unbuilt += 1;
            return Err(UdpError::NoBuffer);
        };
        let Some(buf) = m.append(data.len()) else {
            self.ext.udp.sock_mut(s)?.stats.tx_unbuilt += 1;
            return Err(UdpError::TooLong {
                len: data.len(),
                room: m.tailroom(),
            });
        };
        buf.copy_from_slice(data);
        self.udp_send_to(s, m, to)
    }

    /// Joins multicast group `group` on the socket's interface: asks the control core,
    /// through the lane's request ring (no waiting), to join the group at the SA as a
    /// full member and attach this lane's QP, so that the group's datagrams to the
    /// socket's port arrive here. [`udp_membership`](Self::udp_membership) says how the
    /// join stands. [`UdpError::WouldBlock`] when the ring is full (nothing changed).
    ///
    /// ```no_run
    /// # let fabric = ibpoll::SimFabric::new(ibpoll::FabricConfig::default());
    /// use std::net::Ipv4Addr;
    /// use ibpoll::{Discard, JoinStatus, Stack};
    /// let (_stack, mut control, mut lanes) = Stack::builder()
    ///     .fabric(&fabric, "sub")
    ///     .ipv4([10, 0, 0, 2])
    ///     .data_cores(1)
    ///     .build()?
    ///     .split();
    /// let lane = &mut lanes[0];
    /// let sock = lane.udp_bind(0, 5000)?;
    /// let group = Ipv4Addr::new(239, 1, 0, 1);
    /// lane.udp_join(sock, group)?;
    /// while lane.udp_membership(sock, group)? == JoinStatus::Pending {
    ///     control.poll();
    ///     lane.poll(&mut Discard);
    /// }
    /// assert!(lane.udp_membership(sock, group)?.is_joined());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn udp_join(&mut self, s: UdpSocket, group: Ipv4Addr) -> Result<(), UdpError> {
        if !wire::is_group(group) {
            return Err(UdpError::NotAGroup { group });
        }
        let k = self.ext.udp.sock(s)?;
        if k.groups.iter().any(|(g, _)| *g == group) {
            return Err(UdpError::AlreadyJoined { group });
        }
        if k.groups.len() >= GROUPS_PER_SOCKET_MAX {
            return Err(UdpError::TooManyGroups);
        }
        let iface = k.iface;
        let slot = subscribe(&mut self.tx, iface, group)?;
        self.ext.udp.sock_mut(s)?.groups.push((group, slot));
        Ok(())
    }

    /// Leaves a group the socket joined (the control core leaves it at the SA once no
    /// subscription names it).
    pub fn udp_leave(&mut self, s: UdpSocket, group: Ipv4Addr) -> Result<(), UdpError> {
        let k = self.ext.udp.sock_mut(s)?;
        let at = k
            .groups
            .iter()
            .position(|(g, _)| *g == group)
            .ok_or(UdpError::NotJoined { group })?;
        let (_, slot) = k.groups.swap_remove(at);
        let iface = k.iface;
        self.unsubscribe(iface, slot);
        Ok(())
    }

    /// How the socket's join of `group` stands (as the control core last reported it).
    pub fn udp_membership(&self, s: UdpSocket, group: Ipv4Addr) -> Result<JoinStatus, UdpError> {
        let k = self.ext.udp.sock(s)?;
        let (_, slot) = k
            .groups
            .iter()
            .find(|(g, _)| *g == group)
            .ok_or(UdpError::NotJoined { group })?;
        Ok(membership(&self.tx, k.iface, *slot))
    }

    /// The groups the socket joined, with how each stands.
    pub fn udp_groups(&self, s: UdpSocket) -> Result<Vec<(Ipv4Addr, JoinStatus)>, UdpError> {
        let k = self.ext.udp.sock(s)?;
        let board = &self.tx.ifaces[k.iface].core.subs;
        Ok(k.groups
            .iter()
            .map(|(g, slot)| (*g, board.status(*slot)))
            .collect())
    }

    /// Ends a subscription: its `Unsubscribe` goes out now, or at the next poll when the
    /// ring is full; the slot is released once it went.
    fn unsubscribe(&mut self, iface: usize, slot: SubSlot) {
        if !unsubscribe(&mut self.tx, iface, slot) {
            self.ext.udp.unsubs.push((iface, slot));
        }
    }

    /// Sends the unsubscriptions the ring had no room for before.
    pub(crate) fn retry_unsubscribes(&mut self) {
        if self.ext.udp.unsubs.is_empty() {
            return;
        }
        let tx = &mut self.tx;
        self.ext
            .udp
            .unsubs
            .retain(|&(iface, slot)| !unsubscribe(tx, iface, slot));
    }
}

/// Asks the control core, through the lane's request ring of `iface`, to subscribe the
/// lane to `group`: claims a slot of the lane's board (where the control core reports
/// the join's state) and queues `Request::Subscribe`. Nothing changes on error.
pub(crate) fn subscribe(tx: &mut Tx, iface: usize, group: Ipv4Addr) -> Result<SubSlot, UdpError> {
    let ifaces = tx.ifaces.len();
    let core = &mut tx
        .ifaces
        .get_mut(iface)
        .ok_or(UdpError::NoSuchIface { iface, ifaces })?
        .core;
    let slot = core.subs.claim().ok_or(UdpError::TooManyGroups)?;
    let req = Request::Subscribe {
        group: GroupAddr::Ipv4(group.octets()),
        slot,
    };
    if core.requests.send(req).is_err() {
        core.subs.release(slot);
        return Err(UdpError::WouldBlock);
    }
    Ok(slot)
}

/// Queues the end of subscription `slot` on `iface` and releases its slot; false (and
/// nothing done) when the ring is full.
pub(crate) fn unsubscribe(tx: &mut Tx, iface: usize, slot: SubSlot) -> bool {
    let Some(core) = tx.ifaces.get_mut(iface).map(|i| &mut i.core) else {
        return true;
    };
    let sent = core.requests.send(Request::Unsubscribe { slot }).is_ok();
    if sent {
        core.subs.release(slot);
    }
    sent
}

/// How subscription `slot` on `iface` stands.
pub(crate) fn membership(tx: &Tx, iface: usize, slot: SubSlot) -> JoinStatus {
    tx.ifaces
        .get(iface)
        .map_or(JoinStatus::Pending, |i| i.core.subs.status(slot))
}
