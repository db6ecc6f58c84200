//! Two hosts on one simulated InfiniBand subnet, driven only through the driver
//! contract (`ibpoll-dev`) and real SA MADs:
//!
//! 1. both join the IPoIB broadcast group (MCMemberRecord Set, JoinState FullMember,
//!    component mask MGID|PortGID|P_Key|JoinState) and attach their UD QP to it;
//! 2. A sends an IPoIB ARP request for B's IPv4 address to the broadcast group; B asks
//!    the SA for a path to A and answers unicast; A asks for a path to B;
//! 3. A sends `--count` IPoIB/IPv4/UDP datagrams to B by unicast and as many to the
//!    broadcast group;
//! 4. both leave the group (SubnAdmDelete).
//!
//! It prints its counters and exits 0 only if every datagram arrived exactly once and
//! the SA holds no membership afterwards.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use ibpoll_dev::{
    AddressHandle, AhAttr, Device, GrhAttr, MadAddr, MadChannel, Port, PortAttr, RxQueue, TxDst,
    TxQueue, UdQpConfig,
};
use ibpoll_mem::{Mbuf, MbufArray, Mempool, MempoolConfig, MBUF_F_MCAST};
use ibpoll_pmd_sim::{FabricConfig, SimFabric};
use ibpoll_wire::mad::{Method, Status};
use ibpoll_wire::mcmember::{self, JoinState};
use ibpoll_wire::sa::{Attribute, SaMad};
use ibpoll_wire::{arp, ipoib, path_record, Gid, Lid, PKey, QKey, Qpn};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{IpProtocol, Ipv4Address, Ipv4Packet, Ipv4Repr, UdpPacket, UdpRepr};

/// Command line of the example.
#[derive(Debug, Parser)]
#[command(about = "Two IPoIB hosts on the simulated fabric: join, ARP, unicast, broadcast, leave")]
pub struct Args {
    /// Write every frame the switch forwards to this pcap file (ERF/InfiniBand).
    #[arg(long)]
    pub pcap: Option<std::path::PathBuf>,
    /// Datagrams sent by unicast, and again to the broadcast group.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub count: u32,
    /// Seed of the fabric's random draws.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// What happened, for printing and for tests.
#[derive(Debug, Default)]
pub struct Report {
    /// Unicast datagrams B received, by sequence number.
    pub unicast_seen: Vec<u32>,
    /// Broadcast datagrams B received, by sequence number.
    pub broadcast_seen: Vec<u32>,
    /// A's own broadcasts looped back to A (dropped by source LID and QPN).
    pub own_loopback_dropped: u64,
    /// Datagrams that failed IPv4/UDP parsing or checksums.
    pub malformed: u64,
    /// Memberships the SA still held after both left.
    pub sa_memberships_after: usize,
    /// The broadcast group's MLID and Q_Key as the SA answered them.
    pub broadcast_mlid: Lid,
    /// The Q_Key.
    pub broadcast_qkey: QKey,
    /// Frames written to the pcap.
    pub pcap_frames: u64,
    /// Packets the fabric dropped.
    pub fabric_dropped: u64,
}

impl Report {
    /// Every datagram arrived exactly once and nothing was left at the SA.
    pub fn ok(&self) -> bool {
        self.unicast_seen.iter().all(|&n| n == 1)
            && self.broadcast_seen.iter().all(|&n| n == 1)
            && self.malformed == 0
            && self.sa_memberships_after == 0
            && self.fabric_dropped == 0
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const UDP_PORT: u16 = 4791 + 1000;
const IPV4_BROADCAST: [u8; 4] = [255, 255, 255, 255];
const BURST: usize = 32;

/// Sends waiting for a `tx_burst`: packets, and their destinations beside them.
struct Burst {
    pkts: MbufArray,
    dst: Vec<TxDst>,
}

impl Burst {
    fn new() -> Burst {
        Burst {
            pkts: MbufArray::with_capacity(BURST),
            dst: Vec::with_capacity(BURST),
        }
    }

    /// Adds a send (the caller sends a full burst before it adds more).
    fn push(&mut self, m: Mbuf, dst: TxDst) -> Result<(), BoxError> {
        self.pkts.push(m).map_err(|_| "the burst is full")?;
        self.dst.push(dst);
        Ok(())
    }

    fn is_full(&self) -> bool {
        self.pkts.is_full()
    }
}

/// One IPoIB host: a port, a UD QP with one queue each way, and QP1.
struct Host {
    name: &'static str,
    attr: PortAttr,
    port: Arc<dyn Port>,
    qpn: Qpn,
    rx: Box<dyn RxQueue>,
    tx: Box<dyn TxQueue>,
    mad: Box<dyn MadChannel>,
    pool: Mempool,
    ip: [u8; 4],
    tid: u64,
    broadcast: Option<(mcmember::Repr, AddressHandle)>,
}

impl Host {
    fn new(dev: &dyn Device, name: &'static str, ip: [u8; 4]) -> Result<Host, BoxError> {
        let port = dev.open_port(1)?;
        let attr = port.attr();
        let pool = Mempool::new(MempoolConfig {
            name: format!("{name}-pool"),
            n_bufs: 4096,
            ..MempoolConfig::default()
        })?;
        let pkey_index = attr
            .pkey_index(PKey::DEFAULT)
            .ok_or("the port is not in the default partition")?;
        let mut cfg = UdQpConfig::new(pool.clone(), pkey_index, QKey::IPOIB_DEFAULT);
        cfg.rx_ring_size = 2048;
        cfg.tx_ring_size = 256;
        let mut qp = port.create_ud_qp(&cfg)?;
        let mad = port.open_mad_channel()?;
        Ok(Host {
            name,
            qpn: qp.qpn,
            rx: qp.rx.pop().ok_or("no receive queue")?,
            tx: qp.tx,
            attr,
            port,
            mad,
            pool,
            ip,
            tid: 0x1000,
            broadcast: None,
        })
    }

    fn hwaddr(&self) -> ipoib::HwAddr {
        ipoib::HwAddr::new(0, self.qpn, self.attr.gid)
    }

    /// One SA transaction: send, then poll QP1 for the answer with the same TID.
    fn sa_call(
        &mut self,
        method: Method,
        mask: u64,
        attribute: Attribute,
    ) -> Result<SaMad, BoxError> {
        self.tid += 1;
        let req = SaMad::request(
            method,
            self.tid,
            ibpoll_wire::sa::ComponentMask(mask),
            attribute,
        );
        let to = MadAddr {
            lid: self.attr.sm_lid,
            qpn: Qpn::GSI,
            qkey: QKey::GSI,
            sl: self.attr.sm_sl,
            pkey_index: 0,
        };
        self.mad.send(&req.to_bytes(), to)?;
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Some((bytes, _from)) = self.mad.recv() {
                let answer = SaMad::parse(&bytes)?;
                if answer.header.mad.transaction_id != self.tid {
                    continue;
                }
                if answer.header.mad.status != Status::OK {
                    return Err(format!(
                        "{}: SA answered {:?} with status {:#06x}",
                        self.name, method, answer.header.mad.status.0
                    )
                    .into());
                }
                return Ok(answer);
            }
            std::hint::spin_loop();
        }
        Err(format!("{}: no SA answer to {method:?} within 2 s", self.name).into())
    }

    /// Joins the broadcast group as a full member and attaches the QP to it.
    fn join_broadcast(&mut self) -> Result<(), BoxError> {
        let mgid = ipoib::broadcast_mgid(PKey::DEFAULT);
        let rec = mcmember::Repr {
            mgid,
            port_gid: self.attr.gid,
            pkey: PKey::DEFAULT,
            join_state: JoinState::FULL_MEMBER,
            ..mcmember::Repr::default()
        };
        let mask = mcmember::mask::MGID.0
            | mcmember::mask::PORT_GID.0
            | mcmember::mask::PKEY.0
            | mcmember::mask::JOIN_STATE.0;
        let answer = self.sa_call(Method::SET, mask, Attribute::McMember(rec))?;
        let Attribute::McMember(group) = answer.attribute else {
            return Err("join answer carried no MCMemberRecord".into());
        };
        self.port.set_qp_qkey(self.qpn, group.qkey)?;
        self.port.attach_mcast(self.qpn, &group.mgid, group.mlid)?;
        let ah = self.port.create_ah(&AhAttr {
            dlid: group.mlid,
            sl: group.sl,
            src_path_bits: 0,
            static_rate: group.rate,
            grh: Some(GrhAttr {
                dgid: group.mgid,
                flow_label: group.flow_label,
                sgid_index: 0,
                hop_limit: group.hop_limit,
                traffic_class: group.tclass,
            }),
        })?;
        self.broadcast = Some((group, ah));
        Ok(())
    }

    /// Detaches and leaves the broadcast group.
    fn leave_broadcast(&mut self) -> Result<(), BoxError> {
        let (group, ah) = self.broadcast.take().ok_or("not joined")?;
        self.port.detach_mcast(self.qpn, &group.mgid, group.mlid)?;
        self.destroy_ah(ah)?;
        let rec = mcmember::Repr {
            mgid: group.mgid,
            port_gid: self.attr.gid,
            join_state: JoinState::FULL_MEMBER,
            ..mcmember::Repr::default()
        };
        let mask =
            mcmember::mask::MGID.0 | mcmember::mask::PORT_GID.0 | mcmember::mask::JOIN_STATE.0;
        self.sa_call(Method::DELETE, mask, Attribute::McMember(rec))?;
        Ok(())
    }

    /// Asks the SA for a path to `dgid` and makes an address handle from it.
    fn path_to(&mut self, dgid: Gid) -> Result<AddressHandle, BoxError> {
        let rec = path_record::Repr {
            dgid,
            sgid: self.attr.gid,
            numb_path: 1,
            ..path_record::Repr::default()
        };
        let mask =
            path_record::mask::DGID.0 | path_record::mask::SGID.0 | path_record::mask::NUMB_PATH.0;
        let answer = self.sa_call(Method::GET, mask, Attribute::PathRecord(rec))?;
        let Attribute::PathRecord(path) = answer.attribute else {
            return Err("path answer carried no PathRecord".into());
        };
        Ok(self.port.create_ah(&AhAttr {
            dlid: path.dlid,
            sl: path.sl,
            src_path_bits: 0,
            static_rate: path.rate,
            grh: None,
        })?)
    }

    fn bcast_qkey(&self) -> QKey {
        self.broadcast
            .as_ref()
            .map_or(QKey::IPOIB_DEFAULT, |(g, _)| g.qkey)
    }

    /// A buffer holding the IPoIB header and `body`.
    fn packet(
        &self,
        ethertype: ipoib::EtherType,
        body_len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<Mbuf, BoxError> {
        let mut m = self.pool.alloc().ok_or("buffer pool exhausted")?;
        let d = m
            .append(ipoib::HEADER_LEN + body_len)
            .ok_or("buffer too small")?;
        ipoib::Repr { ethertype }.emit(&mut ipoib::Packet::new_unchecked(
            &mut d[..ipoib::HEADER_LEN],
        ));
        fill(&mut d[ipoib::HEADER_LEN..]);
        Ok(m)
    }

    /// Sends the whole burst, retrying what the send queue leaves (back-pressure) once
    /// completions have made room, and then waits until every send completed (the
    /// address handles they name may be destroyed after that).
    fn send_all(&mut self, b: &mut Burst) {
        let posted = self.tx.completed() + b.pkts.len() as u64;
        while !b.pkts.is_empty() {
            let n = self.tx.tx_burst(&mut b.pkts, &b.dst);
            b.dst.drain(..n);
            if n == 0 {
                self.tx.completed();
                std::hint::spin_loop();
            }
        }
        while self.tx.completed() < posted {
            std::hint::spin_loop();
        }
    }

    /// Destroys an address handle no send names any more.
    fn destroy_ah(&self, ah: AddressHandle) -> Result<(), BoxError> {
        // SAFETY: `send_all` returns only when every send it posted completed, and the
        // callers post nothing naming `ah` after this.
        unsafe { self.port.destroy_ah(ah) }?;
        Ok(())
    }
}

fn udp_datagram(src: [u8; 4], dst: [u8; 4], seq: u32, out: &mut [u8]) {
    let payload = seq.to_be_bytes();
    let caps = ChecksumCapabilities::default();
    let ip = Ipv4Repr {
        src_addr: Ipv4Address::from(src),
        dst_addr: Ipv4Address::from(dst),
        next_header: IpProtocol::Udp,
        payload_len: 8 + payload.len(),
        hop_limit: 64,
    };
    let mut ipp = Ipv4Packet::new_unchecked(&mut *out);
    ip.emit(&mut ipp, &caps);
    let udp = UdpRepr {
        src_port: UDP_PORT,
        dst_port: UDP_PORT,
    };
    udp.emit(
        &mut UdpPacket::new_unchecked(ipp.payload_mut()),
        &ip.src_addr.into(),
        &ip.dst_addr.into(),
        payload.len(),
        |b| b.copy_from_slice(&payload),
        &caps,
    );
}

const DATAGRAM_LEN: usize = 20 + 8 + 4;

/// Parses an IPv4/UDP datagram of this example: (destination, sequence number).
fn parse_datagram(b: &[u8]) -> Option<([u8; 4], u32)> {
    let caps = ChecksumCapabilities::default();
    let ipp = Ipv4Packet::new_checked(b).ok()?;
    let ip = Ipv4Repr::parse(&ipp, &caps).ok()?;
    let udpp = UdpPacket::new_checked(ipp.payload()).ok()?;
    UdpRepr::parse(&udpp, &ip.src_addr.into(), &ip.dst_addr.into(), &caps).ok()?;
    let seq = u32::from_be_bytes(udpp.payload().get(..4)?.try_into().ok()?);
    Some((ip.dst_addr.octets(), seq))
}

/// What a host learned from one receive burst.
#[derive(Default)]
struct Seen {
    arp: Vec<arp::Repr>,
}

/// Drains a host's receive queue: drops its own looped-back multicast, collects ARP and
/// counts datagrams into the report.
fn poll(h: &mut Host, report: &mut Report, seen: &mut Seen) -> usize {
    let mut pkts = MbufArray::with_capacity(BURST);
    let mut total = 0;
    loop {
        let n = h.rx.rx_burst(&mut pkts);
        if n == 0 {
            return total;
        }
        total += n;
        for m in pkts.drain_front(n) {
            let meta = *m.meta();
            if meta.slid == h.attr.lid.0 && meta.src_qpn == h.qpn.get() {
                report.own_loopback_dropped += 1;
                continue;
            }
            let Ok(hdr) = ipoib::Packet::new_checked(m.data()) else {
                report.malformed += 1;
                continue;
            };
            let body = &m.data()[ipoib::HEADER_LEN..];
            match ipoib::Repr::parse(&hdr).map(|r| r.ethertype) {
                Ok(ipoib::EtherType::ARP) => {
                    match arp::Packet::new_checked(body).and_then(|p| arp::Repr::parse(&p)) {
                        Ok(a) => seen.arp.push(a),
                        Err(_) => report.malformed += 1,
                    }
                }
                Ok(ipoib::EtherType::IPV4) => match parse_datagram(body) {
                    Some((dst, seq)) if dst == IPV4_BROADCAST && meta.flags & MBUF_F_MCAST != 0 => {
                        if let Some(c) = report.broadcast_seen.get_mut(seq as usize) {
                            *c += 1;
                        }
                    }
                    Some((dst, seq)) if dst == h.ip => {
                        if let Some(c) = report.unicast_seen.get_mut(seq as usize) {
                            *c += 1;
                        }
                    }
                    _ => report.malformed += 1,
                },
                _ => report.malformed += 1,
            }
        }
    }
}

/// Runs the whole scenario.
pub fn run(args: &Args) -> Result<Report, BoxError> {
    let fabric = SimFabric::new(FabricConfig {
        seed: args.seed,
        ..FabricConfig::default()
    });
    if let Some(path) = &args.pcap {
        fabric.start_pcap(path)?;
    }
    let dev_a = fabric.add_node("hostA", 1);
    let dev_b = fabric.add_node("hostB", 1);
    let mut a = Host::new(&*dev_a, "A", [10, 0, 0, 1])?;
    let mut b = Host::new(&*dev_b, "B", [10, 0, 0, 2])?;
    let count = args.count as usize;
    let mut report = Report {
        unicast_seen: vec![0; count],
        broadcast_seen: vec![0; count],
        ..Report::default()
    };

    a.join_broadcast()?;
    b.join_broadcast()?;
    let (group, bcast_ah) = a.broadcast.ok_or("A did not join")?;
    report.broadcast_mlid = group.mlid;
    report.broadcast_qkey = group.qkey;

    // ARP: A asks the broadcast group who has B's address.
    let request = arp::Repr {
        operation: arp::Operation::Request,
        source_hwaddr: a.hwaddr(),
        source_ip: a.ip,
        target_hwaddr: ipoib::HwAddr::default(),
        target_ip: b.ip,
    };
    let m = a.packet(ipoib::EtherType::ARP, arp::PACKET_LEN, |d| {
        request.emit(&mut arp::Packet::new_unchecked(d))
    })?;
    let qkey = a.bcast_qkey();
    let mut burst = Burst::new();
    let to_group = TxDst {
        ah: bcast_ah,
        qpn: Qpn::MULTICAST,
        qkey,
    };
    burst.push(m, to_group)?;
    a.send_all(&mut burst);
    let mut seen_b = Seen::default();
    poll(&mut b, &mut report, &mut seen_b);
    let req = seen_b
        .arp
        .iter()
        .find(|r| r.operation == arp::Operation::Request && r.target_ip == b.ip)
        .ok_or("B did not receive A's ARP request")?;
    // B answers unicast, over a path the SA gives it.
    let a_hw = req.source_hwaddr;
    let b_to_a = b.path_to(a_hw.gid())?;
    let reply = arp::Repr {
        operation: arp::Operation::Reply,
        source_hwaddr: b.hwaddr(),
        source_ip: b.ip,
        target_hwaddr: a_hw,
        target_ip: req.source_ip,
    };
    let m = b.packet(ipoib::EtherType::ARP, arp::PACKET_LEN, |d| {
        reply.emit(&mut arp::Packet::new_unchecked(d))
    })?;
    let qkey = b.bcast_qkey();
    let to_a = TxDst {
        ah: b_to_a,
        qpn: a_hw.qpn(),
        qkey,
    };
    burst.push(m, to_a)?;
    b.send_all(&mut burst);
    let mut seen_a = Seen::default();
    poll(&mut a, &mut report, &mut seen_a);
    let rep = seen_a
        .arp
        .iter()
        .find(|r| r.operation == arp::Operation::Reply && r.source_ip == b.ip)
        .ok_or("A did not receive B's ARP reply")?;
    let b_hw = rep.source_hwaddr;
    let a_to_b = a.path_to(b_hw.gid())?;

    // Unicast then broadcast datagrams, in bursts, draining both hosts as we go.
    for (dst_ip, ah, qpn) in [
        (b.ip, a_to_b, b_hw.qpn()),
        (IPV4_BROADCAST, bcast_ah, Qpn::MULTICAST),
    ] {
        let qkey = a.bcast_qkey();
        for seq in 0..count as u32 {
            let src = a.ip;
            let m = a.packet(ipoib::EtherType::IPV4, DATAGRAM_LEN, |d| {
                udp_datagram(src, dst_ip, seq, d)
            })?;
            burst.push(m, TxDst { ah, qpn, qkey })?;
            if burst.is_full() || seq as usize == count - 1 {
                a.send_all(&mut burst);
                poll(&mut b, &mut report, &mut seen_b);
                poll(&mut a, &mut report, &mut seen_a);
            }
        }
    }

    a.leave_broadcast()?;
    b.leave_broadcast()?;
    a.destroy_ah(a_to_b)?;
    b.destroy_ah(b_to_a)?;
    report.sa_memberships_after = fabric.with_sa(|sa| {
        sa.memberships_of(&a.attr.gid).count() + sa.memberships_of(&b.attr.gid).count()
    });
    fabric.stop_pcap()?;
    let stats = fabric.stats();
    report.pcap_frames = stats.pcap_frames;
    report.fabric_dropped = stats.dropped();

    println!(
        "fabric: sent {} delivered {} dropped {}",
        stats.sent,
        stats.delivered,
        stats.dropped()
    );
    for (why, n) in stats.drops().filter(|(_, n)| *n > 0) {
        println!("  drop {why}: {n}");
    }
    println!(
        "fabric: SA requests {} answers {}, pcap frames {}",
        stats.sa_requests, stats.sa_answers, stats.pcap_frames
    );
    for h in [&a, &b] {
        let (rx, tx) = (h.rx.counters(), h.tx.counters());
        println!(
            "host {} (LID {:#x}, QPN {}): tx {} pkts {} bytes, {} completed, {} errors; rx {} pkts {} bytes, nombuf {}",
            h.name,
            h.attr.lid.0,
            h.qpn,
            tx.packets.get(),
            tx.bytes.get(),
            tx.completed.get(),
            tx.errors.get(),
            rx.packets.get(),
            rx.bytes.get(),
            rx.nombuf.get()
        );
    }
    let once = |v: &[u32]| v.iter().filter(|&&n| n == 1).count();
    println!(
        "broadcast group MLID {:#06x} Q_Key {:#x}; B received unicast {}/{} and broadcast {}/{} exactly once; A dropped {} of its own looped-back broadcasts; malformed {}; SA memberships left {}",
        report.broadcast_mlid.0,
        report.broadcast_qkey.0,
        once(&report.unicast_seen),
        count,
        once(&report.broadcast_seen),
        count,
        report.own_loopback_dropped,
        report.malformed,
        report.sa_memberships_after
    );
    Ok(report)
}

#[allow(dead_code)] // the integration test includes this file and calls `run` instead
fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    match run(&args) {
        Ok(report) if report.ok() => {
            println!("two_nodes: OK");
            ExitCode::SUCCESS
        }
        Ok(_) => {
            println!("two_nodes: FAILED (see counters above)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("two_nodes: error: {e}");
            ExitCode::FAILURE
        }
    }
}
