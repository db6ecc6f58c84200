//! What a data core does with an IPoIB interface, for tests that play the data core
//! themselves: the UD QP, packets, receive, send through the snapshot.

use ibpoll_ctrl::CtrlQps;
use ibpoll_ctrl::DataCore;
use ibpoll_dev::{Port, RxQueue, TxDst, TxQueue, UdQpConfig};
use ibpoll_mem::{HugepagePolicy, Mbuf, MbufArray, Mempool, MempoolConfig};
use ibpoll_wire::ipoib::{self, EtherType};
use ibpoll_wire::{Gid, QKey, Qpn};

/// Receive burst size of [`drain_rx`].
pub const BURST: usize = 32;

/// A pool of `n_bufs` buffers of 2048 bytes, without lcore caches (so that `in_use` is
/// exact from any thread) and without hugepages.
pub fn pool(name: &str, n_bufs: u32) -> Mempool {
    Mempool::new(MempoolConfig {
        name: name.to_owned(),
        n_bufs,
        data_room: 2048,
        cache_size: 0,
        hugepages: HugepagePolicy::Never,
        ..MempoolConfig::default()
    })
    .expect("mempool")
}

/// An IPoIB interface's QPs as the stack makes them for one lane: the lane's QP (the
/// interface's own) and the control core's send-only QP.
#[derive(Debug)]
pub struct IpoibQp {
    /// The interface's QPN (the lane's QP).
    pub qpn: Qpn,
    /// The controller's QPs (its own send queue inside).
    pub ctl: CtrlQps,
    /// The lane's send queue.
    pub tx: Box<dyn TxQueue>,
    /// The lane's receive queue.
    pub rx: Box<dyn RxQueue>,
    /// Every QPN of the interface (lane and control core), to recognise our own
    /// looped-back multicast.
    pub own: Vec<Qpn>,
}

/// The QPs of an IPoIB interface with one lane on `port` (partition `pkey_index`), the
/// IPoIB Q_Key, rings of `ring_size`, receiving into `pool`.
pub fn ipoib_qp(port: &dyn Port, pkey_index: u16, pool: &Mempool, ring_size: u32) -> IpoibQp {
    let mut cfg = UdQpConfig::new(pool.clone(), pkey_index, QKey::IPOIB_DEFAULT);
    cfg.rx_ring_size = ring_size;
    cfg.tx_ring_size = ring_size;
    let (ctl, mut lanes) = CtrlQps::create(port, &cfg, 1).expect("UD QPs");
    let lane = lanes.pop().expect("one lane");
    let mut rx = lane.rx;
    let own = vec![lane.qpn, ctl.tx.src_qpn()];
    IpoibQp {
        qpn: lane.qpn,
        ctl,
        tx: lane.tx,
        rx: rx.pop().expect("one receive queue"),
        own,
    }
}

/// A buffer of `pool` holding an IPoIB header (IPv4) and `seq` as 4 bytes; `None` when
/// the pool is empty.
pub fn seq_packet(pool: &Mempool, seq: u32) -> Option<Mbuf> {
    let mut m = pool.alloc()?;
    let d = m.append(ipoib::HEADER_LEN + 4).expect("room");
    ipoib::Repr {
        ethertype: EtherType::IPV4,
    }
    .emit(&mut ipoib::Packet::new_unchecked(
        &mut d[..ipoib::HEADER_LEN],
    ));
    d[ipoib::HEADER_LEN..].copy_from_slice(&seq.to_be_bytes());
    Some(m)
}

/// A buffer of `pool` holding an IPoIB header (IPv6) and `seq` as 4 bytes (no IPv6
/// header: the control plane does not read it); `None` when the pool is empty.
pub fn seq_packet6(pool: &Mempool, seq: u32) -> Option<Mbuf> {
    let mut m = seq_packet(pool, seq)?;
    ipoib::Packet::new_unchecked(m.data_mut()).set_ethertype(EtherType::IPV6);
    Some(m)
}

/// Whether an IPoIB packet [`drain_rx`] passed on is an IPv6 Neighbor Solicitation or
/// Advertisement (the stack's test: for the control core).
pub fn is_nd(m: &Mbuf) -> bool {
    ibpoll_wire::ndisc::is_neighbor_discovery(payload(m))
}

/// What follows the IPoIB header of a packet [`drain_rx`] passed on.
pub fn payload(m: &Mbuf) -> &[u8] {
    &m.data()[ipoib::HEADER_LEN..]
}

/// The sequence number at the start of an IPv4 packet's payload, if it holds one.
pub fn seq_of(m: &Mbuf) -> Option<u32> {
    let p = payload(m);
    Some(u32::from_be_bytes(p.get(..4)?.try_into().ok()?))
}

/// Drains `rx` as a data core does: `on` gets every ARP, IPv4 and IPv6 packet, in
/// arrival order, with its EtherType (IPv6 neighbour discovery is for the control
/// core: see [`is_nd`]). Our own looped-back multicast (QPNs are unique across the
/// simulated fabric: ours are `own`), what is not IPoIB and other EtherTypes are freed.
pub fn drain_rx(rx: &mut dyn RxQueue, own: &[Qpn], mut on: impl FnMut(EtherType, Mbuf)) {
    let mut pkts = MbufArray::with_capacity(BURST);
    loop {
        let n = rx.rx_burst(&mut pkts);
        if n == 0 {
            return;
        }
        for m in pkts.drain_front(n) {
            if own.iter().any(|q| q.get() == m.meta().src_qpn) {
                continue;
            }
            let Ok(p) = ipoib::Packet::new_checked(m.data()) else {
                continue;
            };
            if let Ok(t @ (EtherType::ARP | EtherType::IPV4 | EtherType::IPV6)) =
                ipoib::Repr::parse(&p).map(|r| r.ethertype)
            {
                on(t, m);
            }
        }
    }
}

/// Where a data core sends a packet through its snapshot.
#[derive(Debug, Clone, Copy)]
pub enum Direct<'a> {
    /// A multicast group, by MGID.
    Group(&'a Gid),
    /// A unicast next hop, by IPv4 address.
    NextHop(&'a [u8; 4]),
    /// A unicast next hop, by IPv6 address.
    NextHop6(&'a [u8; 16]),
}

/// A data core's send: when `to` is in `core`'s snapshot (a group Joined, a next hop
/// resolved), `m` goes out on `tx` to it (the next hop marked used) and the answer is
/// how many packets `tx` took (a packet it did not take is freed); else `m` comes back,
/// for the control core.
pub fn send_direct(
    core: &DataCore,
    tx: &mut dyn TxQueue,
    to: Direct<'_>,
    m: Mbuf,
) -> Result<usize, Mbuf> {
    let snap = core.reader.get();
    let nh = match to {
        Direct::Group(mgid) => snap.group_nh(mgid),
        Direct::NextHop(ip) => snap.neighbour_nh(ip),
        Direct::NextHop6(ip) => snap.neighbour6_nh(ip),
    };
    let Some((nh, dst)) = nh.and_then(|id| snap.nh(id).map(|d| (id, *d))) else {
        return Err(m);
    };
    snap.mark_used(nh);
    let mut pkts = MbufArray::with_capacity(1);
    let _ = pkts.push(m);
    let dst: [TxDst; 1] = [dst];
    Ok(tx.tx_burst(&mut pkts, &dst))
}
