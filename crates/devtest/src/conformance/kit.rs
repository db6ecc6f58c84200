//! What the conformance tests share: a side (port and attributes), QPs made the same
//! way, numbered packets, a sender that checks every partial burst, and receivers that
//! wait as long as the fixture says a driver may take.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ibpoll_dev::{
    AddressHandle, AhAttr, GrhAttr, LinkLayer, Port, PortAttr, RxQueue, TxDst, TxQueue, UdQp,
    UdQpConfig,
};
use ibpoll_mem::{Mbuf, MbufArray, Mempool};
use ibpoll_wire::{ipoib, Gid, QKey, Qpn};

use super::Fixture;

/// Receive and send burst size of the tests.
pub(crate) const BURST: usize = 32;
/// The ethertype of test packets: local experimental, never IP, so no stack or tap
/// mistakes them for traffic of its own.
pub(crate) const ETHERTYPE_TEST: ipoib::EtherType = ipoib::EtherType(0x88B5);
/// The Q_Key of the tests' QPs.
pub(crate) const QKEY: QKey = QKey::IPOIB_DEFAULT;

/// One of the fixture's two ports.
pub(crate) struct Side {
    pub(crate) port: Arc<dyn Port>,
    pub(crate) attr: PortAttr,
    /// The GID index its address handles send from ([`Fixture::sgid_index`]).
    pub(crate) sgid_index: u8,
}

impl Side {
    /// Both ports of the fixture.
    pub(crate) fn both<F: Fixture + ?Sized>(f: &F) -> [Side; 2] {
        let [a, b] = f.ports();
        [(a, 0), (b, 1)].map(|(port, i)| Side {
            attr: port.attr(),
            port,
            sgid_index: f.sgid_index(i),
        })
    }

    /// The GID the side's packets come from and go to: the entry of the GID table at
    /// its source GID index.
    pub(crate) fn gid(&self) -> Gid {
        match self.attr.gids.get(usize::from(self.sgid_index)) {
            Some(g) => *g,
            None => panic!(
                "port {}: GID index {} is past the GID table ({} entries)",
                self.attr.port_num,
                self.sgid_index,
                self.attr.gids.len()
            ),
        }
    }

    /// Whether `other` is this same port (a fixture whose two sides are one port gives
    /// the same `Arc` twice).
    pub(crate) fn same_port(&self, other: &Side) -> bool {
        std::ptr::addr_eq(Arc::as_ptr(&self.port), Arc::as_ptr(&other.port))
    }

    /// A QP configuration in partition `pkey_index`, with `rx_ring_size` receive
    /// buffers from `pool` and 256 send work requests.
    pub(crate) fn qp_config(pool: &Mempool, pkey_index: u16, rx_ring_size: u32) -> UdQpConfig {
        let mut cfg = UdQpConfig::new(pool.clone(), pkey_index, QKEY);
        cfg.rx_ring_size = rx_ring_size;
        cfg.tx_ring_size = 256;
        cfg
    }

    /// A QP made from `cfg`; panics (the test fails) if the driver refuses it.
    pub(crate) fn qp(&self, cfg: &UdQpConfig) -> UdQp {
        match self.port.create_ud_qp(cfg) {
            Ok(qp) => qp,
            Err(e) => panic!(
                "port {}: create_ud_qp({cfg:?}) failed: {e}",
                self.attr.port_num
            ),
        }
    }

    /// An address handle to `to`'s port: by LID, with a GRH on RoCE (where every packet
    /// carries one) or when `global`.
    pub(crate) fn ah_to(&self, to: &Side, global: bool) -> AddressHandle {
        let grh = (global || self.attr.link_layer == LinkLayer::Ethernet).then_some(GrhAttr {
            dgid: to.gid(),
            flow_label: 0x1_2345,
            sgid_index: self.sgid_index,
            hop_limit: 64,
            traffic_class: 0,
        });
        let attr = AhAttr {
            dlid: to.attr.lid,
            sl: 0,
            src_path_bits: 0,
            static_rate: to.attr.rate,
            grh,
        };
        self.port
            .create_ah(&attr)
            .unwrap_or_else(|e| panic!("create_ah({attr:?}) failed: {e}"))
    }
}

/// The first P_Key index at which both ports hold the same valid partition, and the
/// index of that partition on the second port.
pub(crate) fn common_partition(a: &PortAttr, b: &PortAttr) -> (u16, u16) {
    common_partitions(a, b).next().unwrap_or_else(|| {
        panic!(
            "the fixture's ports share no partition: {:?} and {:?}",
            a.pkeys, b.pkeys
        )
    })
}

/// Every (index on `a`, index on `b`) pair of a partition both ports hold.
pub(crate) fn common_partitions<'a>(
    a: &'a PortAttr,
    b: &'a PortAttr,
) -> impl Iterator<Item = (u16, u16)> + 'a {
    a.pkeys.iter().enumerate().filter_map(move |(i, p)| {
        if p.base() == 0 {
            return None;
        }
        let j = b.pkeys.iter().position(|q| q.base() == p.base())?;
        Some((i as u16, j as u16))
    })
}

/// A packet of `pool`: an IPoIB header with the test ethertype, then `seq` and `tag`.
pub(crate) fn packet(pool: &Mempool, seq: u32, tag: u8) -> Mbuf {
    let mut m = pool
        .alloc()
        .unwrap_or_else(|| panic!("pool {} is empty", pool.name()));
    let d = m
        .append(ipoib::HEADER_LEN + 8)
        .expect("a pool buffer holds 12 bytes");
    ipoib::Repr {
        ethertype: ETHERTYPE_TEST,
    }
    .emit(&mut ipoib::Packet::new_unchecked(
        &mut d[..ipoib::HEADER_LEN],
    ));
    d[4..8].copy_from_slice(&seq.to_be_bytes());
    d[8..12].fill(tag);
    m
}

/// The sequence number and tag of a packet made by [`packet`]; `None` for anything else.
pub(crate) fn seq_tag(m: &Mbuf) -> Option<(u32, u8)> {
    let d = m.data();
    if d.len() != 12 || d[..2] != ETHERTYPE_TEST.0.to_be_bytes() {
        return None;
    }
    Some((u32::from_be_bytes([d[4], d[5], d[6], d[7]]), d[8]))
}

/// A send queue with its own count of what was posted, checking the contract on every
/// call: a burst takes from the front and leaves the rest in order, `completed()` never
/// falls and never passes what was posted.
pub(crate) struct Sender {
    pub(crate) tx: Box<dyn TxQueue>,
    pub(crate) posted: u64,
    last_completed: u64,
    /// How many bursts took fewer than offered.
    pub(crate) partial_bursts: u64,
}

impl Sender {
    pub(crate) fn new(mut tx: Box<dyn TxQueue>) -> Sender {
        let last_completed = tx.completed();
        Sender {
            posted: last_completed,
            tx,
            last_completed,
            partial_bursts: 0,
        }
    }

    /// Polls completions, checking monotonicity and the bound.
    pub(crate) fn completed(&mut self) -> u64 {
        let c = self.tx.completed();
        assert!(
            c >= self.last_completed,
            "completed() fell from {} to {c}",
            self.last_completed
        );
        assert!(
            c <= self.posted,
            "completed() is {c} but only {} sends were posted",
            self.posted
        );
        self.last_completed = c;
        c
    }

    /// Offers `pkts` once; checks what was taken and what was left.
    pub(crate) fn burst(&mut self, pkts: &mut MbufArray, dst: &mut Vec<TxDst>) -> usize {
        let before: Vec<usize> = pkts.as_slice().iter().map(Mbuf::buf_addr).collect();
        let n = self.tx.tx_burst(pkts, dst);
        assert!(n <= before.len(), "tx_burst took {n} of {}", before.len());
        let left: Vec<usize> = pkts.as_slice().iter().map(Mbuf::buf_addr).collect();
        assert_eq!(
            left,
            before[n..],
            "tx_burst took {n}: the rest must stay in the caller's array, in order"
        );
        dst.drain(..n);
        self.posted += n as u64;
        if n < before.len() {
            self.partial_bursts += 1;
        }
        n
    }

    /// Sends every packet, retrying what the queue leaves after polling completions,
    /// within `patience`.
    pub(crate) fn send_all(&mut self, sends: Vec<(Mbuf, TxDst)>, patience: Duration) {
        let mut pkts = MbufArray::with_capacity(sends.len().max(1));
        let mut dst = Vec::with_capacity(sends.len());
        for (m, d) in sends {
            pkts.push(m).expect("sized for every send");
            dst.push(d);
        }
        let deadline = Instant::now() + patience;
        while !pkts.is_empty() {
            if self.burst(&mut pkts, &mut dst) == 0 {
                assert!(
                    Instant::now() < deadline,
                    "the send queue took nothing for {patience:?} ({} left, {} posted, {} completed)",
                    pkts.len(),
                    self.posted,
                    self.last_completed
                );
                self.completed();
                std::thread::yield_now();
            }
        }
    }

    /// Sends every packet and waits until every send completed: then they have left
    /// (a driver may hold a send until it is polled, as the `Backpressure` wrapper
    /// does; a completed send is on the wire).
    pub(crate) fn send_completed(&mut self, sends: Vec<(Mbuf, TxDst)>, patience: Duration) {
        self.send_all(sends, patience);
        self.wait_completed(patience);
    }

    /// Polls until every posted send completed, within `patience`.
    pub(crate) fn wait_completed(&mut self, patience: Duration) {
        let deadline = Instant::now() + patience;
        while self.completed() < self.posted {
            assert!(
                Instant::now() < deadline,
                "{} of {} sends completed after {patience:?}",
                self.last_completed,
                self.posted
            );
            std::thread::yield_now();
        }
    }
}

/// Everything `rx` hands over until `want` packets arrived (if `want > 0`) or
/// `patience` passed: with `want` 0, everything that arrives within `patience`.
pub(crate) fn recv(rx: &mut dyn RxQueue, want: usize, patience: Duration) -> Vec<Mbuf> {
    let mut out = Vec::new();
    let mut pkts = MbufArray::with_capacity(BURST);
    let deadline = Instant::now() + patience;
    loop {
        let n = rx.rx_burst(&mut pkts);
        assert_eq!(n, pkts.len(), "rx_burst appended {n} to an empty array");
        out.extend(pkts.drain_front(n));
        if (want > 0 && out.len() >= want) || (n == 0 && Instant::now() >= deadline) {
            return out;
        }
        if n == 0 {
            std::thread::yield_now();
        }
    }
}

/// Numbered packets `first..first + count` from `pool`, each to `dst`.
pub(crate) fn numbered(
    pool: &Mempool,
    first: u32,
    count: u32,
    tag: u8,
    dst: TxDst,
) -> Vec<(Mbuf, TxDst)> {
    (first..first + count)
        .map(|i| (packet(pool, i, tag), dst))
        .collect()
}

/// How many of `got` are buffers of `pool`: a driver that hands the sent mbuf itself to
/// the receiver (a ring, as DPDK's `net_ring`) delivers the sender's buffers, a
/// copying one the receiver's own.
pub(crate) fn held_from(got: &[Mbuf], pool: &Mempool) -> usize {
    got.iter().filter(|m| m.pool_id() == pool.id()).count()
}

/// Where unicast to `qpn` goes.
pub(crate) fn to(ah: AddressHandle, qpn: Qpn) -> TxDst {
    TxDst {
        ah,
        qpn,
        qkey: QKEY,
    }
}

/// Destroys an address handle no send names any more.
///
/// # Safety
/// Every send naming `ah` completed, and none is posted after this.
pub(crate) unsafe fn destroy_ah(port: &dyn Port, ah: AddressHandle) {
    // SAFETY: forwarded to the caller.
    if let Err(e) = unsafe { port.destroy_ah(ah) } {
        panic!("destroy_ah of a live handle failed: {e}");
    }
}
