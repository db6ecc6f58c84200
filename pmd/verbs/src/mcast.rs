//! A port's multicast attachments, and on RoCE the IP memberships under them.
//!
//! On a RoCE v2 port a multicast packet is a UDP datagram to an IP multicast address,
//! received by the netdev's IP layer before the RDMA driver sees it: the IP layer drops
//! it unless the host is a member of that group on the netdev. rdma_cm joins for its
//! users; a verbs user that attaches a QP must join itself (on soft-RoCE `rdma_rxe`,
//! `ibv_attach_mcast` alone receives nothing). So on an Ethernet port the first QP
//! attached to a group joins the mapped IP group (an IPv4-mapped MGID `::ffff:a.b.c.d`
//! joins `a.b.c.d`, any other MGID the IPv6 group it is) on a socket of the port, and the
//! last one detached leaves it. The kernel keeps memberships per socket; the sockets
//! live as long as the device.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, UdpSocket};

use crate::roce::mapped_ipv4;

/// IPv4 groups one socket may join (Linux's `net.ipv4.igmp_max_memberships` default);
/// more sockets are opened for more.
const V4_PER_SOCKET: usize = 20;

/// Where the port's IP memberships are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Netdev {
    /// The IPv4 address the port's IPv4-mapped GID names (the interface of IPv4 joins),
    /// or unspecified.
    pub(crate) ipv4: Ipv4Addr,
    /// The netdev's interface index (IPv6 joins), or 0 (the kernel's choice).
    pub(crate) ifindex: u32,
}

/// One port's attachments (`(QPN, MGID)`) and IP memberships.
#[derive(Debug, Default)]
pub(crate) struct PortGroups {
    attached: HashSet<(u32, [u8; 16])>,
    /// MGID -> (QPs attached, the socket that joined it).
    ip: HashMap<[u8; 16], (usize, usize)>,
    v4: Vec<(UdpSocket, usize)>,
    v6: Option<UdpSocket>,
}

impl PortGroups {
    /// Whether QP `qpn` is attached to `mgid`.
    pub(crate) fn is_attached(&self, qpn: u32, mgid: &[u8; 16]) -> bool {
        self.attached.contains(&(qpn, *mgid))
    }

    /// Records an attachment; on RoCE (`netdev` given) the first of a group joins its IP
    /// group. On an error nothing is recorded.
    pub(crate) fn attach(
        &mut self,
        qpn: u32,
        mgid: &[u8; 16],
        netdev: Option<Netdev>,
    ) -> io::Result<()> {
        if let Some(nd) = netdev {
            match self.ip.get_mut(mgid) {
                Some((refs, _)) => *refs += 1,
                None => {
                    let sock = self.join(mgid, nd)?;
                    self.ip.insert(*mgid, (1, sock));
                }
            }
        }
        self.attached.insert((qpn, *mgid));
        Ok(())
    }

    /// Forgets an attachment; the last of a group on RoCE leaves its IP group. False when
    /// there was none.
    pub(crate) fn detach(&mut self, qpn: u32, mgid: &[u8; 16], netdev: Option<Netdev>) -> bool {
        if !self.attached.remove(&(qpn, *mgid)) {
            return false;
        }
        if let Some(nd) = netdev {
            self.unref(mgid, nd);
        }
        true
    }

    /// Forgets every attachment of a destroyed QP (the kernel detached it).
    pub(crate) fn forget_qp(&mut self, qpn: u32, netdev: Option<Netdev>) {
        let gone: Vec<[u8; 16]> = self
            .attached
            .iter()
            .filter(|(q, _)| *q == qpn)
            .map(|(_, g)| *g)
            .collect();
        for g in gone {
            self.detach(qpn, &g, netdev);
        }
    }

    fn unref(&mut self, mgid: &[u8; 16], nd: Netdev) {
        let Some((refs, sock)) = self.ip.get_mut(mgid) else {
            return;
        };
        *refs -= 1;
        if *refs > 0 {
            return;
        }
        let sock = *sock;
        self.ip.remove(mgid);
        if let Err(e) = self.leave(mgid, sock, nd) {
            tracing::warn!(error = %e, "leaving the IP multicast group of an MGID");
        }
    }

    /// Joins the IP group of `mgid`; returns the index of the socket that did.
    fn join(&mut self, mgid: &[u8; 16], nd: Netdev) -> io::Result<usize> {
        if let Some(ip) = mapped_ipv4(mgid) {
            let group = Ipv4Addr::from(ip);
            if let Some(i) = self.v4.iter().position(|(_, n)| *n < V4_PER_SOCKET) {
                let (s, n) = &mut self.v4[i];
                s.join_multicast_v4(&group, &nd.ipv4)?;
                *n += 1;
                return Ok(i);
            }
            let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
            s.join_multicast_v4(&group, &nd.ipv4)?;
            self.v4.push((s, 1));
            return Ok(self.v4.len() - 1);
        }
        let group = Ipv6Addr::from(*mgid);
        if self.v6.is_none() {
            self.v6 = Some(UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0))?);
        }
        let s = self.v6.as_ref().expect("opened above");
        s.join_multicast_v6(&group, nd.ifindex)?;
        Ok(0)
    }

    fn leave(&mut self, mgid: &[u8; 16], sock: usize, nd: Netdev) -> io::Result<()> {
        if let Some(ip) = mapped_ipv4(mgid) {
            let (s, n) = &mut self.v4[sock];
            *n -= 1;
            return s.leave_multicast_v4(&Ipv4Addr::from(ip), &nd.ipv4);
        }
        match &self.v6 {
            Some(s) => s.leave_multicast_v6(&Ipv6Addr::from(*mgid), nd.ifindex),
            None => Ok(()),
        }
    }
}

/// The netdev of RoCE port `port` of device `device`, from sysfs
/// (`/sys/class/infiniband/DEV/ports/N/gid_attrs/ndevs/IDX` names the netdev of GID
/// index IDX) and the port's GID table.
pub(crate) fn netdev(device: &str, port: u8, gids: &[[u8; 16]]) -> Netdev {
    let v4 = gids.iter().position(|g| mapped_ipv4(g).is_some());
    let ipv4 = v4
        .and_then(|i| mapped_ipv4(&gids[i]))
        .map_or(Ipv4Addr::UNSPECIFIED, Ipv4Addr::from);
    let index = v4.unwrap_or(0);
    let ndev = format!("/sys/class/infiniband/{device}/ports/{port}/gid_attrs/ndevs/{index}");
    let ifindex = std::fs::read_to_string(ndev)
        .ok()
        .and_then(|name| {
            std::fs::read_to_string(format!("/sys/class/net/{}/ifindex", name.trim())).ok()
        })
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    Netdev { ipv4, ifindex }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::roce::ipv4_mapped;

    fn lo() -> Netdev {
        Netdev {
            ipv4: Ipv4Addr::LOCALHOST,
            ifindex: 1,
        }
    }

    #[test]
    fn the_first_attach_joins_and_the_last_detach_leaves() {
        let mut g = PortGroups::default();
        let mgid = ipv4_mapped([239, 7, 7, 7]);
        // Without a netdev (InfiniBand): bookkeeping only.
        g.attach(5, &mgid, None).unwrap();
        assert!(g.is_attached(5, &mgid));
        assert!(g.ip.is_empty());
        assert!(g.detach(5, &mgid, None));
        assert!(!g.detach(5, &mgid, None), "a second detach finds nothing");
        // RoCE on lo: two QPs share one IP membership.
        g.attach(5, &mgid, Some(lo())).unwrap();
        g.attach(6, &mgid, Some(lo())).unwrap();
        assert_eq!(g.ip.get(&mgid).map(|x| x.0), Some(2));
        assert_eq!(g.v4.len(), 1);
        assert_eq!(g.v4[0].1, 1);
        g.forget_qp(5, Some(lo()));
        assert!(!g.is_attached(5, &mgid));
        assert_eq!(g.ip.get(&mgid).map(|x| x.0), Some(1));
        assert!(g.detach(6, &mgid, Some(lo())));
        assert!(g.ip.is_empty());
        assert_eq!(g.v4[0].1, 0, "left");
    }

    #[test]
    fn more_groups_than_a_socket_holds_open_more_sockets() {
        let mut g = PortGroups::default();
        for i in 0..(V4_PER_SOCKET + 3) {
            let mgid = ipv4_mapped([239, 8, 0, i as u8 + 1]);
            g.attach(9, &mgid, Some(lo())).unwrap();
        }
        assert_eq!(g.v4.len(), 2);
        assert_eq!(g.v4[1].1, 3);
        g.forget_qp(9, Some(lo()));
        assert!(g.ip.is_empty() && g.attached.is_empty());
    }
}
