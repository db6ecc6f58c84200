//! Shared set-up for the fabric's integration tests: a small [`Host`] (one port, one
//! buffer pool, one UD QP, QP1), packet builders and SA calls made of real MAD bytes.
//! Everything goes through the driver contract of `ibpoll-dev`, as the stack would.
#![allow(dead_code)] // every test binary uses a different part of this module

pub mod capture;

use std::sync::Arc;

use ibpoll_dev::{
    AddressHandle, AhAttr, Device, GrhAttr, MadAddr, MadChannel, Parked, Port, PortAttr, RxQueue,
    TxDst, TxQueue, UdQpConfig,
};
use ibpoll_mem::{HugepagePolicy, Mbuf, MbufArray, Mempool, MempoolConfig};
use ibpoll_pmd_sim::{PortId, SimDevice, SimFabric};
use ibpoll_wire::mad::{Method, Status};
use ibpoll_wire::mcmember::{self, JoinState};
use ibpoll_wire::sa::{Attribute, ComponentMask, SaMad};
use ibpoll_wire::{ipoib, Gid, Lid, PKey, QKey, Qpn};

/// Receive burst size of the helpers.
pub const BURST: usize = 32;
/// An ethertype from the local-experimental range, for bodies that are not IP: the
/// fabric's flow hash then sends everything to queue 0.
pub const ETHERTYPE_TEST: ipoib::EtherType = ipoib::EtherType(0x88B5);

/// A buffer pool of `n_bufs` default-sized buffers (4096 bytes of data room, 128 of
/// headroom), without lcore caches so that `in_use` is exact from any thread.
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

/// How a test QP is made.
#[derive(Debug, Clone)]
pub struct QpOpts {
    /// Index into the port's P_Key table.
    pub pkey_index: u16,
    /// The QP's Q_Key.
    pub qkey: QKey,
    /// Receive queues.
    pub rx_queues: u16,
    /// Posted receive buffers per queue (0: a send-only QP).
    pub rx_ring_size: u32,
    /// Ask the HCA to drop this QP's own multicast before it loops back.
    pub block_self_mcast_lb: bool,
}

impl Default for QpOpts {
    fn default() -> Self {
        QpOpts {
            pkey_index: 0,
            qkey: QKey::IPOIB_DEFAULT,
            rx_queues: 1,
            rx_ring_size: 256,
            block_self_mcast_lb: false,
        }
    }
}

/// One send: a packet and where it goes.
pub type Outgoing = (Mbuf, TxDst);

/// A UD QP with its receive queues (none for a send-only QP) and its send queue.
#[derive(Debug)]
pub struct Qp {
    pub qpn: Qpn,
    pub rx: Vec<Box<dyn RxQueue>>,
    pub tx: Box<dyn TxQueue>,
}

impl Qp {
    /// Sends everything in one `tx_burst` and checks that the simulated queue took every
    /// packet (it completes each send before `tx_burst` returns).
    pub fn send(&mut self, sends: Vec<Outgoing>) {
        let mut pkts = MbufArray::with_capacity(sends.len().max(1));
        let mut dst = Vec::with_capacity(sends.len());
        for (m, d) in sends {
            pkts.push(m).expect("the array was sized for the burst");
            dst.push(d);
        }
        let offered = pkts.len() as u64;
        let before = self.tx.completed();
        let n = self.tx.tx_burst(&mut pkts, &dst);
        assert_eq!(n, dst.len(), "the simulated send queue takes whole bursts");
        assert!(pkts.is_empty(), "tx_burst took every packet it counted");
        assert_eq!(
            self.tx.completed() - before,
            offered,
            "the simulated sends complete within the burst"
        );
    }

    /// Everything waiting on receive queue `q`, in arrival order.
    pub fn recv_queue(&mut self, q: usize) -> Vec<Mbuf> {
        let mut out = Vec::new();
        let mut pkts = MbufArray::with_capacity(BURST);
        loop {
            let n = self.rx[q].rx_burst(&mut pkts);
            assert_eq!(n, pkts.len(), "rx_burst appends to an empty array");
            out.extend(pkts.drain_front(n));
            if n < BURST {
                return out;
            }
        }
    }

    /// Moves this QP (its queues parked: this test owns them and is not calling them)
    /// to P_Key index `pkey_index`; returns the buffers the move gave back.
    pub fn move_pkey_index(
        &mut self,
        port: &dyn Port,
        pkey_index: u16,
    ) -> Result<usize, ibpoll_dev::Error> {
        // SAFETY: `&mut self` holds every queue of this QP, and none is called while the
        // token lives (it is dropped at the end of this function).
        let parked = unsafe { Parked::assume(self.qpn) };
        port.move_qp_pkey_index(&parked, pkey_index)
    }

    /// Everything waiting on every receive queue, queue by queue.
    pub fn recv(&mut self) -> Vec<Mbuf> {
        (0..self.rx.len())
            .flat_map(|q| self.recv_queue(q))
            .collect()
    }
}

/// One simulated host: a one-port node, a pool, a UD QP and QP1.
#[derive(Debug)]
pub struct Host {
    pub dev: Arc<SimDevice>,
    pub port: Arc<dyn Port>,
    pub pool: Mempool,
    pub qp: Qp,
    pub mad: Box<dyn MadChannel>,
    tid: u64,
}

impl Host {
    /// A host with a default QP and a 512-buffer pool.
    pub fn new(fabric: &SimFabric, name: &str) -> Host {
        Host::with(fabric, name, &QpOpts::default(), 512)
    }

    /// A host whose QP is made with `opts`, its pool holding `n_bufs` buffers.
    pub fn with(fabric: &SimFabric, name: &str, opts: &QpOpts, n_bufs: u32) -> Host {
        let dev = fabric.add_node(name, 1);
        let port = dev.open_port(1).expect("port 1 exists");
        let pool = pool(&format!("{name}-pool"), n_bufs);
        let qp = make_qp(&*port, &pool, opts);
        let mad = port.open_mad_channel().expect("QP1 opens");
        Host {
            dev,
            port,
            pool,
            qp,
            mad,
            tid: 0x7e57_0000,
        }
    }

    /// Another QP on this host's port, receiving into this host's pool.
    pub fn new_qp(&self, opts: &QpOpts) -> Qp {
        make_qp(&*self.port, &self.pool, opts)
    }

    pub fn attr(&self) -> PortAttr {
        self.port.attr()
    }

    pub fn lid(&self) -> Lid {
        self.attr().lid
    }

    pub fn gid(&self) -> Gid {
        self.attr().gid
    }

    pub fn port_id(&self) -> PortId {
        self.dev.port_id(1)
    }

    /// How many groups this host's port belongs to at the SA. (Reads the GID first:
    /// `with_sa` holds the fabric's lock, which `attr` takes too.)
    pub fn memberships(&self, f: &SimFabric) -> usize {
        let gid = self.gid();
        f.with_sa(|sa| sa.memberships_of(&gid).count())
    }

    /// An address handle to a unicast LID, without global routing.
    pub fn ah(&self, dlid: Lid) -> AddressHandle {
        self.unicast_ah(dlid, None)
    }

    /// An address handle to a unicast LID with a GRH towards `dgid`.
    pub fn ah_global(&self, dlid: Lid, dgid: Gid) -> AddressHandle {
        self.unicast_ah(
            dlid,
            Some(GrhAttr {
                dgid,
                flow_label: 0x12345,
                sgid_index: 0,
                hop_limit: 7,
                traffic_class: 0x20,
            }),
        )
    }

    /// An address handle to a unicast LID on SL 0 at 10 Gb/s, with `grh` if given.
    fn unicast_ah(&self, dlid: Lid, grh: Option<GrhAttr>) -> AddressHandle {
        self.port
            .create_ah(&AhAttr {
                dlid,
                sl: 0,
                src_path_bits: 0,
                static_rate: ibpoll_wire::Rate::GBPS_10,
                grh,
            })
            .expect("unicast address handle")
    }

    /// An address handle to a group, from the group's MCMemberRecord.
    pub fn mcast_ah(&self, g: &mcmember::Repr) -> AddressHandle {
        self.port
            .create_ah(&AhAttr {
                dlid: g.mlid,
                sl: g.sl,
                src_path_bits: 0,
                static_rate: g.rate,
                grh: Some(GrhAttr {
                    dgid: g.mgid,
                    flow_label: g.flow_label,
                    sgid_index: 0,
                    hop_limit: g.hop_limit,
                    traffic_class: g.tclass,
                }),
            })
            .expect("multicast address handle")
    }

    /// Attaches this host's QP to a group.
    pub fn attach(&self, g: &mcmember::Repr) {
        self.port
            .attach_mcast(self.qp.qpn, &g.mgid, g.mlid)
            .expect("attach");
    }

    /// A buffer of this host's pool holding an IPoIB header with `ethertype` and `body`.
    pub fn packet(&self, ethertype: ipoib::EtherType, body: &[u8]) -> Mbuf {
        packet_in(&self.pool, ethertype, body)
    }

    /// One send carrying `body` (test ethertype) to `ah`/`qpn`.
    pub fn desc(&self, body: &[u8], ah: AddressHandle, qpn: Qpn, qkey: QKey) -> Outgoing {
        (self.packet(ETHERTYPE_TEST, body), TxDst { ah, qpn, qkey })
    }

    /// Sends one `body` to `ah`/`qpn` with the IPoIB Q_Key from this host's QP.
    pub fn send_one(&mut self, body: &[u8], ah: AddressHandle, qpn: Qpn) {
        let d = self.desc(body, ah, qpn, QKey::IPOIB_DEFAULT);
        self.qp.send(vec![d]);
    }

    /// Destroys an address handle of this host's port.
    pub fn destroy_ah(&self, ah: AddressHandle) -> Result<(), ibpoll_dev::Error> {
        // SAFETY: the simulator's handles are generation-tagged indices, never pointers:
        // a send that names a destroyed handle fails and is counted (`bad_ah`), which is
        // what the tests that do so check. The simulator's `destroy_ah` itself does
        // nothing unsafe.
        unsafe { self.port.destroy_ah(ah) }
    }

    /// Sends one SA request and returns its transaction id.
    pub fn sa_send(&mut self, method: Method, mask: ComponentMask, attribute: Attribute) -> u64 {
        self.tid += 1;
        let req = SaMad::request(method, self.tid, mask, attribute);
        let attr = self.attr();
        self.mad
            .send(&req.to_bytes(), sa_addr(&attr))
            .expect("the SA is reachable on QP1");
        self.tid
    }

    /// The next SA answer waiting on QP1, parsed.
    pub fn sa_recv(&mut self) -> Option<SaMad> {
        let (bytes, from) = self.mad.recv()?;
        assert_eq!(from.qpn, Qpn::GSI, "SA answers come from QP1");
        Some(SaMad::parse(&bytes).expect("the SA answers parseable MADs"))
    }

    /// One SA transaction that must be answered at once (no faults configured).
    pub fn sa_call(&mut self, method: Method, mask: ComponentMask, attribute: Attribute) -> SaMad {
        let tid = self.sa_send(method, mask, attribute);
        let answer = self.sa_recv().expect("the SA answers at once");
        assert_eq!(answer.header.mad.transaction_id, tid);
        assert_eq!(answer.header.mad.method, method.response());
        answer
    }

    /// Joins the existing group `mgid` with `join_state` (IPoIB's join mask: MGID,
    /// PortGID, P_Key, JoinState) and returns the group's record. Panics unless the SA
    /// says OK.
    pub fn join(&mut self, mgid: Gid, join_state: JoinState) -> mcmember::Repr {
        let rec = mcmember::Repr {
            mgid,
            port_gid: self.gid(),
            pkey: PKey::DEFAULT,
            join_state,
            ..mcmember::Repr::default()
        };
        let mask = mcmember::JOIN_MASK.union(mcmember::mask::PKEY);
        expect_mcmember(self.sa_call(Method::SET, mask, Attribute::McMember(rec)))
    }

    /// Joins the IPoIB broadcast group of the default partition as a full member and
    /// attaches the QP to it.
    pub fn join_broadcast(&mut self) -> mcmember::Repr {
        let g = self.join(ipoib::broadcast_mgid(PKey::DEFAULT), JoinState::FULL_MEMBER);
        self.attach(&g);
        g
    }

    /// Creates (as its first full member) the IPoIB group of IPv4 multicast `group` in
    /// the default partition, with the broadcast group's Q_Key, SL, TClass and flow
    /// label as the SA requires.
    pub fn create_group(&mut self, group: [u8; 4]) -> mcmember::Repr {
        let rec = mcmember::Repr {
            mgid: ipv4_mgid(group),
            port_gid: self.gid(),
            qkey: QKey::IPOIB_DEFAULT,
            pkey: PKey::DEFAULT,
            join_state: JoinState::FULL_MEMBER,
            ..mcmember::Repr::default()
        };
        expect_mcmember(self.sa_call(Method::SET, mcmember::CREATE_MASK, Attribute::McMember(rec)))
    }

    /// Leaves `mgid` (SubnAdmDelete of `join_state`); panics unless the SA says OK.
    pub fn leave(&mut self, mgid: Gid, join_state: JoinState) {
        let rec = mcmember::Repr {
            mgid,
            port_gid: self.gid(),
            join_state,
            ..mcmember::Repr::default()
        };
        let answer = self.sa_call(
            Method::DELETE,
            mcmember::JOIN_MASK,
            Attribute::McMember(rec),
        );
        assert_eq!(answer.header.mad.status, Status::OK, "leave refused");
    }
}

/// The configuration of a test QP.
pub fn qp_config(pool: &Mempool, opts: &QpOpts) -> UdQpConfig {
    let mut cfg = UdQpConfig::new(pool.clone(), opts.pkey_index, opts.qkey);
    cfg.rx_queues = opts.rx_queues;
    cfg.rx_ring_size = opts.rx_ring_size;
    cfg.tx_ring_size = 256;
    cfg.block_self_mcast_lb = opts.block_self_mcast_lb;
    cfg
}

pub fn make_qp(port: &dyn Port, pool: &Mempool, opts: &QpOpts) -> Qp {
    let qp = port
        .create_ud_qp(&qp_config(pool, opts))
        .expect("a valid QP configuration");
    assert_eq!(qp.tx.src_qpn(), qp.qpn, "the send queue sends as its QP");
    Qp {
        qpn: qp.qpn,
        tx: qp.tx,
        rx: qp.rx,
    }
}

/// Where the subnet administrator answers.
pub fn sa_addr(attr: &PortAttr) -> MadAddr {
    MadAddr {
        lid: attr.sm_lid,
        qpn: Qpn::GSI,
        qkey: QKey::GSI,
        sl: attr.sm_sl,
        pkey_index: 0,
    }
}

/// A join request (MCMemberRecord Set) of `port_gid` to the default broadcast group,
/// for tests that drive QP1 themselves.
pub fn broadcast_join(port_gid: Gid) -> (ComponentMask, Attribute) {
    let rec = mcmember::Repr {
        mgid: ipoib::broadcast_mgid(PKey::DEFAULT),
        port_gid,
        pkey: PKey::DEFAULT,
        join_state: JoinState::FULL_MEMBER,
        ..mcmember::Repr::default()
    };
    (
        mcmember::JOIN_MASK.union(mcmember::mask::PKEY),
        Attribute::McMember(rec),
    )
}

/// The record of a successful MCMemberRecord answer.
pub fn expect_mcmember(answer: SaMad) -> mcmember::Repr {
    assert_eq!(
        answer.header.mad.status,
        Status::OK,
        "the SA refused the request"
    );
    match answer.attribute {
        Attribute::McMember(r) => r,
        other => panic!("expected an MCMemberRecord, got {other:?}"),
    }
}

/// The link-local IPoIB MGID of an IPv4 multicast group in the default partition.
pub fn ipv4_mgid(group: [u8; 4]) -> Gid {
    ipoib::ipv4_mcast_mgid(group, PKey::DEFAULT, ipoib::McastScope::LINK_LOCAL)
}

/// A buffer of `pool` holding an IPoIB header with `ethertype` and `body`.
pub fn packet_in(pool: &Mempool, ethertype: ipoib::EtherType, body: &[u8]) -> Mbuf {
    let mut m = pool.alloc().expect("the sender's pool has a free buffer");
    let d = m
        .append(ipoib::HEADER_LEN + body.len())
        .expect("the packet fits in one buffer");
    ipoib::Repr { ethertype }.emit(&mut ipoib::Packet::new_unchecked(
        &mut d[..ipoib::HEADER_LEN],
    ));
    d[ipoib::HEADER_LEN..].copy_from_slice(body);
    m
}

/// The body after the IPoIB header of a received packet.
pub fn body(m: &Mbuf) -> &[u8] {
    &m.data()[ipoib::HEADER_LEN..]
}

/// The sequence number a loss or reordering test put at the start of a body.
pub fn seq_of(m: &Mbuf) -> u32 {
    u32::from_be_bytes(body(m)[..4].try_into().expect("4 bytes"))
}

/// A minimal IPv4/UDP datagram (checksums 0: the fabric does not look at them).
pub fn ipv4_udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let total = 20 + 8 + payload.len();
    let mut b = vec![0u8; total];
    b[0] = 0x45;
    b[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    b[8] = 64;
    b[9] = 17;
    b[12..16].copy_from_slice(&src);
    b[16..20].copy_from_slice(&dst);
    b[20..22].copy_from_slice(&sport.to_be_bytes());
    b[22..24].copy_from_slice(&dport.to_be_bytes());
    b[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    b[28..].copy_from_slice(payload);
    b
}

/// A path in the temp directory unique to this process and `tag`.
pub fn temp_path(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "ibpoll-pmd-sim-{}-{}-{tag}.pcap",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ))
}
