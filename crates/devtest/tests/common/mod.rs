//! The simulator as a conformance fixture, plain or with its ports wrapped, and what the
//! wrappers' own tests share: pools, two hosts on one simulated subnet, SA joins made
//! of real MAD bytes.
#![allow(dead_code)] // each test binary uses a different part

pub mod tshark;

use std::sync::Arc;
use std::time::Duration;

use ibpoll_dev::{AhAttr, Device, GrhAttr, Port};
pub use ibpoll_devtest::conformance::join_broadcast;
use ibpoll_devtest::conformance::{EventCause, Fixture, Group};
use ibpoll_mem::{HugepagePolicy, Mempool, MempoolConfig};
use ibpoll_pmd_sim::{FabricConfig, SimDevice, SimFabric};
use ibpoll_wire::{Lid, PKey, QKey, Qpn};

/// A pool without lcore caches (so `in_use` is exact from any thread), normal pages.
pub fn pool(name: &str, n_bufs: u32) -> Mempool {
    Mempool::new(MempoolConfig {
        name: name.to_owned(),
        n_bufs,
        cache_size: 0,
        hugepages: HugepagePolicy::Never,
        ..MempoolConfig::default()
    })
    .expect("a small test pool can be created")
}

/// The partitions of every fixture port: the default and a second one, so that the
/// P_Key move test can move a QP between them.
pub const PARTITIONS: [PKey; 2] = [PKey::DEFAULT, PKey(0x8001)];

/// How a port is wrapped.
pub type Wrap = Box<dyn Fn(Arc<dyn Port>) -> Arc<dyn Port>>;

/// Two one-port nodes on a simulated subnet, both full members of the default
/// partition's broadcast group, their ports wrapped by `wrap`.
pub struct SimFixture {
    pub fabric: SimFabric,
    pub devs: [Arc<SimDevice>; 2],
    pub ports: [Arc<dyn Port>; 2],
    pub group: Group,
}

impl SimFixture {
    /// The simulator as an InfiniBand HCA answers through verbs (default caps).
    pub fn new() -> SimFixture {
        SimFixture::with(FabricConfig::default(), Box::new(|p| p))
    }

    /// The simulator with every optional capability: RSS over 4 queues and
    /// self-loopback blocking.
    pub fn all_caps() -> SimFixture {
        let cfg = FabricConfig::default().with_rss(4).with_mcast_lb_block();
        SimFixture::with(cfg, Box::new(|p| p))
    }

    /// The default simulator with its ports wrapped.
    pub fn wrapped(wrap: Wrap) -> SimFixture {
        SimFixture::with(FabricConfig::default(), wrap)
    }

    pub fn with(cfg: FabricConfig, wrap: Wrap) -> SimFixture {
        let fabric = SimFabric::new(FabricConfig {
            partitions: PARTITIONS.to_vec(),
            ..cfg
        });
        let devs = [fabric.add_node("a", 1), fabric.add_node("b", 1)];
        let ports = [0, 1].map(|i| wrap(devs[i].open_port(1).expect("port 1")));
        let group = join_broadcast(&*ports[0]);
        let again = join_broadcast(&*ports[1]);
        assert_eq!((group.mlid, group.qkey), (again.mlid, again.qkey));
        SimFixture {
            fabric,
            devs,
            ports,
            group,
        }
    }
}

impl Fixture for SimFixture {
    fn ports(&self) -> [Arc<dyn Port>; 2] {
        self.ports.clone()
    }

    fn pool(&self, name: &str, n_bufs: u32) -> Mempool {
        pool(name, n_bufs)
    }

    fn group(&self) -> Option<Group> {
        Some(self.group)
    }

    fn cause(&self, side: usize, cause: EventCause) -> bool {
        let id = self.devs[side].port_id(1);
        match cause {
            EventCause::LinkDown => self.fabric.set_port_up(id, false),
            EventCause::LinkUp => self.fabric.set_port_up(id, true),
            EventCause::PkeyChange => self.fabric.set_pkeys(id, PARTITIONS.to_vec()),
            EventCause::LidChange => self.fabric.set_lid(id, Lid(0x0777)),
            EventCause::SmRestart => self.fabric.restart_sm(None),
            _ => return false,
        }
        true
    }

    /// The simulator delivers within the call that sends.
    fn quiet(&self) -> Duration {
        Duration::ZERO
    }
}

/// Two one-port RoCE v2 nodes (10.0.0.1 and 10.0.0.2) on a simulated fabric: link
/// layer Ethernet, LID 0, no SA; the multicast group is 239.1.2.3's IPv4-mapped GID,
/// attached without a join.
pub struct RoceFixture {
    pub fabric: SimFabric,
    pub devs: [Arc<SimDevice>; 2],
    pub ports: [Arc<dyn Port>; 2],
}

impl RoceFixture {
    pub fn new() -> RoceFixture {
        let fabric = SimFabric::new(FabricConfig::default());
        let devs = [
            fabric.add_roce_node("a", &[[10, 0, 0, 1]]),
            fabric.add_roce_node("b", &[[10, 0, 0, 2]]),
        ];
        let ports = [0, 1].map(|i| devs[i].open_port(1).expect("port 1"));
        RoceFixture {
            fabric,
            devs,
            ports,
        }
    }
}

impl Fixture for RoceFixture {
    fn ports(&self) -> [Arc<dyn Port>; 2] {
        self.ports.clone()
    }

    fn pool(&self, name: &str, n_bufs: u32) -> Mempool {
        pool(name, n_bufs)
    }

    fn group(&self) -> Option<Group> {
        let mgid = ibpoll_wire::Gid([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 239, 1, 2, 3]);
        let ah = AhAttr {
            dlid: Lid(0),
            sl: 0,
            src_path_bits: 0,
            static_rate: self.ports[0].attr().rate,
            grh: Some(GrhAttr {
                dgid: mgid,
                flow_label: 0,
                // The IPv4-mapped GID of the port's address.
                sgid_index: 1,
                hop_limit: 64,
                traffic_class: 0,
            }),
        };
        Some(Group::new(
            mgid,
            Lid(0),
            QKey::IPOIB_DEFAULT,
            PKey::DEFAULT,
            ah,
        ))
    }

    fn cause(&self, side: usize, cause: EventCause) -> bool {
        let id = self.devs[side].port_id(1);
        match cause {
            EventCause::LinkDown => self.fabric.set_port_up(id, false),
            EventCause::LinkUp => self.fabric.set_port_up(id, true),
            _ => return false,
        }
        true
    }

    fn quiet(&self) -> Duration {
        Duration::ZERO
    }
}

/// A port with a pool and one UD QP (partition index 0, the IPoIB Q_Key), its queues
/// at hand.
pub struct Host {
    pub port: Arc<dyn Port>,
    pub pool: Mempool,
    pub qpn: Qpn,
    pub rx: Box<dyn ibpoll_dev::RxQueue>,
    pub tx: Box<dyn ibpoll_dev::TxQueue>,
}

impl Host {
    /// A host on `port` with a pool of `n_bufs` and a QP of `tx_ring_size` sends.
    pub fn new(port: Arc<dyn Port>, name: &str, n_bufs: u32, tx_ring_size: u32) -> Host {
        let pool = pool(name, n_bufs);
        let mut cfg = ibpoll_dev::UdQpConfig::new(pool.clone(), 0, QKey::IPOIB_DEFAULT);
        cfg.rx_ring_size = 1024;
        cfg.tx_ring_size = tx_ring_size;
        let mut qp = port.create_ud_qp(&cfg).expect("a valid QP");
        Host {
            pool,
            qpn: qp.qpn,
            rx: qp.rx.pop().expect("a receive queue"),
            tx: qp.tx,
            port,
        }
    }

    pub fn lid(&self) -> Lid {
        self.port.attr().lid
    }

    /// An address handle to `to`'s port, with a GRH when `global`.
    pub fn ah_to(&self, to: &Host, global: bool) -> ibpoll_dev::AddressHandle {
        let attr = to.port.attr();
        self.port
            .create_ah(&AhAttr {
                dlid: attr.lid,
                sl: 0,
                src_path_bits: 0,
                static_rate: attr.rate,
                grh: global.then_some(GrhAttr {
                    dgid: attr.gid,
                    flow_label: 0x1_2345,
                    sgid_index: 0,
                    hop_limit: 7,
                    traffic_class: 0x20,
                }),
            })
            .expect("an address handle")
    }

    /// A packet of this host's pool carrying `seq` (test ethertype).
    pub fn packet(&self, seq: u32) -> ibpoll_mem::Mbuf {
        let mut m = self.pool.alloc().expect("a free buffer");
        let d = m.append(8).expect("room");
        d[..4].copy_from_slice(&[0x88, 0xB5, 0, 0]);
        d[4..].copy_from_slice(&seq.to_be_bytes());
        m
    }

    /// A burst of packets `seqs`, each to `dst`.
    pub fn burst(
        &self,
        seqs: std::ops::Range<u32>,
        dst: ibpoll_dev::TxDst,
    ) -> (ibpoll_mem::MbufArray, Vec<ibpoll_dev::TxDst>) {
        let mut pkts = ibpoll_mem::MbufArray::with_capacity(seqs.len().max(1));
        let mut dsts = Vec::new();
        for s in seqs {
            pkts.push(self.packet(s)).expect("sized for the burst");
            dsts.push(dst);
        }
        (pkts, dsts)
    }

    /// Everything waiting on the receive queue, in order.
    pub fn drain(&mut self) -> Vec<ibpoll_mem::Mbuf> {
        let mut out = Vec::new();
        let mut pkts = ibpoll_mem::MbufArray::with_capacity(64);
        while self.rx.rx_burst(&mut pkts) > 0 {
            let n = pkts.len();
            out.extend(pkts.drain_front(n));
        }
        out
    }

    /// The sequence numbers of everything waiting.
    pub fn seqs(&mut self) -> Vec<u32> {
        self.drain().iter().map(seq_of).collect()
    }
}

/// The sequence number of a packet made by [`Host::packet`].
pub fn seq_of(m: &ibpoll_mem::Mbuf) -> u32 {
    let d = m.data();
    u32::from_be_bytes([d[4], d[5], d[6], d[7]])
}

/// Where unicast to `to` goes, through `ah`.
pub fn to(ah: ibpoll_dev::AddressHandle, to: &Host) -> ibpoll_dev::TxDst {
    ibpoll_dev::TxDst {
        ah,
        qpn: to.qpn,
        qkey: QKey::IPOIB_DEFAULT,
    }
}

/// A fabric with two one-port nodes, their ports wrapped by `wrap`.
pub fn two_ports(
    cfg: FabricConfig,
    wrap: impl Fn(Arc<dyn Port>) -> Arc<dyn Port>,
) -> (SimFabric, [Arc<SimDevice>; 2], [Arc<dyn Port>; 2]) {
    let fabric = SimFabric::new(cfg);
    let devs = [fabric.add_node("a", 1), fabric.add_node("b", 1)];
    let ports = [0, 1].map(|i| wrap(devs[i].open_port(1).expect("port 1")));
    (fabric, devs, ports)
}
