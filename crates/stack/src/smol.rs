//! smoltcp over the burst API: an [`IpDevice`] is a `smoltcp::phy::Device` with
//! `Medium::Ip`, fed from an application's received bursts and drained into its
//! [`Tx`]. An application owns one `Interface`, its sockets and one `IpDevice` per
//! data lcore:
//!
//! ```text
//! on_burst(ctx, rx, tx): dev.bind(tx); dev.stage_rx(rx); iface.poll(now, &mut dev, &mut sockets); dev.flush_tx(0, tx)
//! poll(ctx, tx):         dev.bind(tx); (socket work);    iface.poll(now, &mut dev, &mut sockets); dev.flush_tx(0, tx)
//! ```
//!
//! Received packets reach smoltcp in their own buffers (no copy); smoltcp writes each
//! packet it sends straight into a pool buffer, which goes out as it is. IPv4 only for
//! now: destinations are on-link next hops (the packet's destination address), IPv4
//! multicast groups, or the broadcast group; the stack resolves them as for any packet.
//!
//! # Multicast
//!
//! On InfiniBand a host receives a group only once its port joined it at the subnet
//! administrator (an MCMemberRecord join) and its QP is attached; IGMP does nothing
//! there. So the device mirrors smoltcp's own memberships into SA joins: with smoltcp's
//! `multicast` feature, `Interface::join_multicast_group` makes smoltcp send an IGMP
//! membership report, and `leave_multicast_group` an IGMP leave, at its next poll. The
//! device takes those out of what smoltcp sends (they never reach the wire) and asks
//! the control core, through the lane's request ring, to join the group as a full
//! member and attach this lane's QP, or to end that subscription: what a UDP socket's
//! [`Lane::udp_join`](crate::Lane::udp_join) does. [`IpDevice::membership`] says how a
//! join stands. smoltcp reports only groups of an interface that has an IPv4 address.
//! A report for a group already mirrored (smoltcp answering a query) changes nothing.

use std::collections::VecDeque;
use std::net::Ipv4Addr;

use ibpoll_ctrl::{GroupAddr, JoinStatus, SubSlot};
use ibpoll_mem::{Mbuf, MbufArray, Mempool};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

use crate::{Dest, Tx, BURST_MAX, TX_TABLE_MAX};

/// IPv4's protocol number of IGMP.
const IPPROTO_IGMP: u8 = 2;

/// Counters of one [`IpDevice`] (owned by its lcore; plain integers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct IpDeviceStats {
    /// Packets handed to smoltcp.
    pub rx: u64,
    /// Received packets left to the stack because the receive stage was full.
    pub rx_full: u64,
    /// Packets smoltcp sent.
    pub tx: u64,
    /// Packets smoltcp wanted to send when no buffer could be allocated (dropped).
    pub tx_nombuf: u64,
    /// Packets longer than a buffer (dropped).
    pub tx_too_long: u64,
    /// Packets that were not IPv4 (dropped; IPv6 is not supported yet).
    pub tx_not_ipv4: u64,
    /// IGMP membership reports and leaves of smoltcp's, mirrored into subscriptions
    /// (not sent).
    pub igmp_mirrored: u64,
    /// Other IGMP packets of smoltcp's (not sent).
    pub igmp_other: u64,
    /// Subscriptions that could not be made: the lane's table of them full.
    pub igmp_failed: u64,
}

/// One of smoltcp's memberships mirrored into a subscription of the lane.
#[derive(Debug, Clone, Copy)]
struct Mirrored {
    iface: usize,
    group: Ipv4Addr,
    slot: SubSlot,
}

/// A membership change waiting for room in the request ring.
#[derive(Debug, Clone, Copy)]
enum Pending {
    Join { iface: usize, group: Ipv4Addr },
    Leave { iface: usize, slot: SubSlot },
}

/// The sending half, borrowed by transmit tokens.
#[derive(Debug)]
struct TxSide {
    staged: Vec<Mbuf>,
    pool: Option<Mempool>,
    /// Where smoltcp writes a packet that has no buffer (it is then dropped, counted).
    scratch: Vec<u8>,
    stats: IpDeviceStats,
}

/// A smoltcp device over the burst API. See the module docs.
///
/// ```no_run
/// use std::net::Ipv4Addr;
/// use ibpoll::smol::IpDevice;
/// use ibpoll::{FabricConfig, JoinStatus, SimFabric, Stack};
/// use smoltcp::iface::{Config, Interface, SocketSet};
/// use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};
///
/// let fabric = SimFabric::new(FabricConfig::default());
/// let (_stack, mut control, mut lanes) = Stack::builder()
///     .fabric(&fabric, "smol")
///     .ipv4([10, 0, 0, 2])
///     .data_cores(1)
///     .build()?
///     .split();
/// let lane = &mut lanes[0];
/// let mut dev = IpDevice::new(2044);
/// let t = smoltcp::time::Instant::from_millis(0);
/// let mut iface = Interface::new(Config::new(HardwareAddress::Ip), &mut dev, t);
/// iface.update_ip_addrs(|a| a.push(IpCidr::new(IpAddress::v4(10, 0, 0, 2), 24)).unwrap());
/// let mut sockets = SocketSet::new(Vec::new());
/// let group = Ipv4Addr::new(239, 1, 2, 3);
/// iface.join_multicast_group(group)?; // becomes a full-member join at the SA
/// let mut burst = ibpoll::MbufArray::with_capacity(32);
/// while dev.membership(lane.tx(), 0, group) != Some(JoinStatus::Joined) {
///     control.poll();
///     lane.quiescent();
///     dev.bind(lane.tx());
///     lane.rx_burst(0, &mut burst);
///     dev.stage_rx(&mut burst);
///     iface.poll(t, &mut dev, &mut sockets);
///     dev.flush_tx(0, lane.tx());
///     lane.flush();
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct IpDevice {
    rx: VecDeque<Mbuf>,
    tx: TxSide,
    mtu: usize,
    groups: Vec<Mirrored>,
    pending: Vec<Pending>,
}

impl IpDevice {
    /// A device with IP MTU `mtu` (e.g. 2044 for a 2048-byte IB MTU; update it from
    /// [`LcoreCtx::mtu`](crate::LcoreCtx::mtu) with [`set_mtu`](Self::set_mtu)). It sends
    /// through the stack's pool once [`bind`](Self::bind) has shown it a [`Tx`].
    /// Everything it needs is allocated here.
    pub fn new(mtu: usize) -> IpDevice {
        IpDevice::build(None, mtu)
    }

    /// A device that sends through buffers of `pool`.
    pub fn with_pool(pool: Mempool, mtu: usize) -> IpDevice {
        IpDevice::build(Some(pool), mtu)
    }

    fn build(pool: Option<Mempool>, mtu: usize) -> IpDevice {
        IpDevice {
            rx: VecDeque::with_capacity(BURST_MAX),
            tx: TxSide {
                staged: Vec::with_capacity(TX_TABLE_MAX),
                pool,
                scratch: vec![0; 64 * 1024],
                stats: IpDeviceStats::default(),
            },
            mtu,
            groups: Vec::new(),
            pending: Vec::new(),
        }
    }

    /// Sends through `tx`'s pool from now on (the first call clones the pool handle;
    /// later calls only check). Call it at the top of every callback.
    #[inline]
    pub fn bind(&mut self, tx: &Tx) {
        if self.tx.pool.is_none() {
            self.tx.pool = Some(tx.pool().clone());
        }
    }

    /// Takes received packets out of the application's burst for smoltcp (as many as
    /// fit: [`BURST_MAX`]; the rest stay in the burst and are counted by the stack).
    pub fn stage_rx(&mut self, rx: &mut MbufArray) {
        let room = BURST_MAX - self.rx.len();
        let n = rx.len().min(room);
        self.tx.stats.rx_full += (rx.len() - n) as u64;
        // Within the capacity reserved in `new`.
        self.rx.extend(rx.drain_front(n));
    }

    /// Queues what smoltcp sent for transmission: each to its IPv4 destination as an
    /// on-link next hop, or its multicast group, on interface `iface`. smoltcp's IGMP
    /// reports and leaves become subscriptions of the lane instead (see the module
    /// docs).
    pub fn flush_tx(&mut self, iface: usize, tx: &mut Tx) {
        self.retry_pending(tx);
        let mut staged = std::mem::take(&mut self.tx.staged);
        for m in staged.drain(..) {
            let d = m.data();
            if d.len() < 20 || d[0] >> 4 != 4 {
                self.tx.stats.tx_not_ipv4 += 1;
                continue;
            }
            if d[9] == IPPROTO_IGMP {
                self.igmp(iface, d, tx);
                continue;
            }
            let dst = [d[16], d[17], d[18], d[19]];
            let dest = if dst[0] & 0xf0 == 0xe0 {
                Dest::Group(GroupAddr::Ipv4(dst))
            } else {
                Dest::NextHop(dst)
            };
            tx.push(iface, m, dest);
        }
        self.tx.staged = staged;
    }

    /// One IGMP packet of smoltcp's: a report joins, a leave leaves.
    fn igmp(&mut self, iface: usize, d: &[u8], tx: &mut Tx) {
        let ihl = usize::from(d[0] & 0x0f) * 4;
        let Some(igmp) = d.get(ihl..ihl + 8) else {
            self.tx.stats.igmp_other += 1;
            return;
        };
        let group = Ipv4Addr::new(igmp[4], igmp[5], igmp[6], igmp[7]);
        let known = self
            .groups
            .iter()
            .position(|g| g.iface == iface && g.group == group);
        match (igmp[0], known) {
            // IGMPv1 and v2 membership reports (RFC 1112, RFC 2236).
            (0x12 | 0x16, None) if group.is_multicast() => {
                self.tx.stats.igmp_mirrored += 1;
                self.join(iface, group, tx);
            }
            (0x12 | 0x16, Some(_)) => {}
            // IGMPv2 leave (RFC 2236).
            (0x17, Some(i)) => {
                self.tx.stats.igmp_mirrored += 1;
                let g = self.groups.swap_remove(i);
                if !crate::udp::unsubscribe(tx, g.iface, g.slot) {
                    self.pending.push(Pending::Leave {
                        iface: g.iface,
                        slot: g.slot,
                    });
                }
            }
            _ => self.tx.stats.igmp_other += 1,
        }
    }

    fn join(&mut self, iface: usize, group: Ipv4Addr, tx: &mut Tx) {
        match crate::udp::subscribe(tx, iface, group) {
            Ok(slot) => self.groups.push(Mirrored { iface, group, slot }),
            Err(crate::UdpError::WouldBlock) => self.pending.push(Pending::Join { iface, group }),
            Err(_) => self.tx.stats.igmp_failed += 1,
        }
    }

    /// Membership changes that waited for room in the request ring.
    fn retry_pending(&mut self, tx: &mut Tx) {
        for p in std::mem::take(&mut self.pending) {
            match p {
                Pending::Join { iface, group } => self.join(iface, group, tx),
                Pending::Leave { iface, slot } => {
                    if !crate::udp::unsubscribe(tx, iface, slot) {
                        self.pending.push(p);
                    }
                }
            }
        }
    }

    /// How the SA join mirroring smoltcp's membership of `group` on `iface` stands;
    /// `None` when smoltcp has not reported it (yet).
    pub fn membership(&self, tx: &Tx, iface: usize, group: Ipv4Addr) -> Option<JoinStatus> {
        let g = self
            .groups
            .iter()
            .find(|g| g.iface == iface && g.group == group)?;
        Some(crate::udp::membership(tx, g.iface, g.slot))
    }

    /// The device's counters.
    pub fn stats(&self) -> IpDeviceStats {
        self.tx.stats
    }

    /// Changes the MTU reported to smoltcp (the interface MTU is known once the link
    /// is up).
    pub fn set_mtu(&mut self, mtu: usize) {
        self.mtu = mtu;
    }
}

/// A received packet for smoltcp.
#[derive(Debug)]
pub struct RxToken(Mbuf);

impl phy::RxToken for RxToken {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        f(self.0.data())
    }
}

/// Room for one packet smoltcp sends.
#[derive(Debug)]
pub struct TxToken<'a>(&'a mut TxSide);

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let side = self.0;
        let Some(mut m) = side.pool.as_ref().and_then(Mempool::alloc) else {
            side.stats.tx_nombuf += 1;
            let n = len.min(side.scratch.len());
            return f(&mut side.scratch[..n]);
        };
        let Some(buf) = m.append(len) else {
            side.stats.tx_too_long += 1;
            let n = len.min(side.scratch.len());
            return f(&mut side.scratch[..n]);
        };
        let r = f(buf);
        side.stats.tx += 1;
        // `transmit` handed out this token only while there was room.
        side.staged.push(m);
        r
    }
}

impl phy::Device for IpDevice {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _timestamp: Instant) -> Option<(RxToken, TxToken<'_>)> {
        if self.tx.staged.len() >= TX_TABLE_MAX {
            // No room for an answer: leave the packet until the next flush.
            return None;
        }
        let m = self.rx.pop_front()?;
        self.tx.stats.rx += 1;
        Some((RxToken(m), TxToken(&mut self.tx)))
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<TxToken<'_>> {
        (self.tx.staged.len() < TX_TABLE_MAX).then_some(TxToken(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        caps.max_burst_size = Some(BURST_MAX);
        caps
    }
}
