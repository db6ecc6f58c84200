//! What a data core does with an IPoIB interface, for tests that play the data core
//! themselves: the UD QP, packets, receive, send through the snapshot.

use ibpoll_ctrl::DataCore;
use ibpoll_dev::{Port, RxQueue, TxDesc, TxQueue, UdQpConfig};
use ibpoll_mem::{HugepagePolicy, Mbuf, Mempool, MempoolConfig};
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

/// An IPoIB interface's UD QP, split as the stack splits it.
#[derive(Debug)]
pub struct IpoibQp {
    /// The QP's number.
    pub qpn: Qpn,
    /// The control core's send queue.
    pub ctl_tx: Box<dyn TxQueue>,
    /// The data cores' send queue.
    pub tx: Box<dyn TxQueue>,
    /// The data cores' receive queue.
    pub rx: Box<dyn RxQueue>,
}

/// A UD QP with the IPoIB Q_Key on `port` (partition `pkey_index`), one receive queue
/// and two send queues of `ring_size` descriptors, receiving into `pool`.
pub fn ipoib_qp(port: &dyn Port, pkey_index: u16, pool: &Mempool, ring_size: u32) -> IpoibQp {
    let mut qp = port
        .create_ud_qp(&UdQpConfig {
            pkey_index,
            qkey: QKey::IPOIB_DEFAULT,
            rx_queues: 1,
            tx_queues: 2,
            rx_ring_size: ring_size,
            tx_ring_size: ring_size,
            pool: pool.clone(),
        })
        .expect("UD QP");
    let ctl_tx = qp.tx.pop().expect("two send queues");
    let tx = qp.tx.pop().expect("two send queues");
    let rx = qp.rx.pop().expect("one receive queue");
    IpoibQp {
        qpn: qp.qpn,
        ctl_tx,
        tx,
        rx,
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

/// What follows the IPoIB header of a packet [`drain_rx`] passed on.
pub fn payload(m: &Mbuf) -> &[u8] {
    &m.data()[ipoib::HEADER_LEN..]
}

/// The sequence number at the start of an IPv4 packet's payload, if it holds one.
pub fn seq_of(m: &Mbuf) -> Option<u32> {
    let p = payload(m);
    Some(u32::from_be_bytes(p.get(..4)?.try_into().ok()?))
}

/// Drains `rx` as a data core does: `on` gets every ARP and IPv4 packet, in arrival
/// order, with its EtherType. Our own looped-back multicast (QPNs are unique across the
/// simulated fabric: ours is the one from `own_qpn`), what is not IPoIB and other
/// EtherTypes are freed.
pub fn drain_rx(rx: &mut dyn RxQueue, own_qpn: Qpn, mut on: impl FnMut(EtherType, Mbuf)) {
    let mut pkts: [Option<Mbuf>; BURST] = Default::default();
    loop {
        let n = rx.rx_burst(&mut pkts);
        if n == 0 {
            return;
        }
        for slot in &mut pkts[..n] {
            let m = slot.take().expect("filled");
            if m.meta().src_qpn == own_qpn.get() {
                continue;
            }
            let Ok(p) = ipoib::Packet::new_checked(m.data()) else {
                continue;
            };
            if let Ok(t @ (EtherType::ARP | EtherType::IPV4)) =
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
}

/// A data core's send: when `to` is in `core`'s snapshot (a group Joined, a next hop
/// resolved), `m` goes out on `tx` to it (the entry marked used) and the answer is how
/// many packets `tx` took (a packet it did not take is freed); else `m` comes back, for
/// the control core.
pub fn send_direct(
    core: &DataCore,
    tx: &mut dyn TxQueue,
    to: Direct<'_>,
    m: Mbuf,
) -> Result<usize, Mbuf> {
    let snap = core.reader.get();
    let (ah, remote_qpn, remote_qkey) = match to {
        Direct::Group(mgid) => match snap.group(mgid) {
            Some(e) => {
                e.mark_used();
                (e.ah(), Qpn::MULTICAST, e.qkey)
            }
            None => return Err(m),
        },
        Direct::NextHop(ip) => match snap.neighbour(ip) {
            Some(n) => {
                n.mark_used();
                (n.ah(), n.qpn(), n.qkey)
            }
            None => return Err(m),
        },
    };
    let mut d = [TxDesc {
        mbuf: Some(m),
        ah,
        remote_qpn,
        remote_qkey,
    }];
    Ok(tx.tx_burst(&mut d))
}
