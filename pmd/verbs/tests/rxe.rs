//! Real verbs on a real device: the kernel's soft-RoCE (rdma_rxe) on `lo`, inside the VM
//! that scripts/vm-test.sh boots. There `IBPOLL_RXE=1` is set and a missing device is a
//! failure; elsewhere, without an RDMA device, each test prints why it is skipped.
//!
//! `IBPOLL_RXE_DEVICE` (default `rxe0`) names the device and `IBPOLL_RXE_ADDR` (default
//! 127.0.0.1) the IPv4 address of its netdev, whose IPv4-mapped GID every address handle
//! uses as its source (RoCE needs a GRH).

use std::net::{Ipv4Addr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ibpoll_mem::{Mbuf, Mempool, MempoolConfig};
use ibpoll_pmd_verbs::{
    gid_index, ipv4_mapped_gid, Ah, AhAttr, Context, Cq, Error, GrhAttr, Library, LinkLayer, Mr,
    Pd, PortState, RecvWr, SelfMcastLoopback, SendWr, UdQp, UdQpConfig, Wc,
};

const QKEY: u32 = 0x0B1B;
const PORT: u8 = 1;
/// The GRH area at the start of every UD receive buffer.
const GRH_LEN: usize = 40;
/// How long a test waits for packets under software emulation.
const WAIT: Duration = Duration::from_secs(60);

fn rxe_expected() -> bool {
    std::env::var_os("IBPOLL_RXE").is_some_and(|v| v == "1")
}

/// The device, a PD, a registered pool and the GID index of the netdev's address.
struct Rig {
    ctx: Arc<Context>,
    pd: Arc<Pd>,
    pool: Mempool,
    mr: Mr,
    sgid_index: u8,
    addr: Ipv4Addr,
}

fn rig_or_skip(test: &str) -> Option<Rig> {
    let name = std::env::var("IBPOLL_RXE_DEVICE").unwrap_or_else(|_| "rxe0".into());
    let addr: Ipv4Addr = std::env::var("IBPOLL_RXE_ADDR")
        .ok()
        .and_then(|a| a.parse().ok())
        .unwrap_or(Ipv4Addr::LOCALHOST);
    let opened = Library::load().and_then(|lib| Context::open(&lib, Some(&name)));
    let ctx = match opened {
        Ok(c) => c,
        Err(e) if !rxe_expected() => {
            eprintln!("SKIPPED {test}: {e} (set IBPOLL_RXE=1 where {name} exists)");
            return None;
        }
        Err(e) => panic!("IBPOLL_RXE=1 but {name} cannot be opened: {e}"),
    };
    let pd = Pd::new(&ctx).expect("ibv_alloc_pd");
    let pool = Mempool::new(MempoolConfig {
        data_room: 2048,
        cache_size: 0,
        ..MempoolConfig::new("rxe", 2048)
    })
    .expect("a pool");
    let mr = Mr::register_pool(&pd, &pool).unwrap_or_else(|e| panic!("{e}"));
    let gids = ctx.gid_table(PORT).expect("GID table");
    let sgid_index = gid_index(&gids, &ipv4_mapped_gid(addr.octets()))
        .unwrap_or_else(|| panic!("no ::ffff:{addr} in the GID table {gids:02x?}"));
    Some(Rig {
        ctx,
        pd,
        pool,
        mr,
        sgid_index,
        addr,
    })
}

impl Rig {
    fn qp(&self, self_mcast: SelfMcastLoopback) -> Result<UdQp, Error> {
        let cfg = UdQpConfig {
            port_num: PORT,
            qkey: QKEY,
            max_send_wr: 128,
            max_recv_wr: 256,
            burst_max: 32,
            self_mcast,
            ..UdQpConfig::default()
        };
        let scq = Cq::new(&self.ctx, 256).expect("send CQ");
        let rcq = Cq::new(&self.ctx, 512).expect("recv CQ");
        UdQp::new(&self.pd, &scq, &rcq, &cfg)
    }

    /// An AH to `dgid` with a GRH from the netdev's address.
    fn ah(&self, dgid: [u8; 16]) -> Ah {
        let attr = AhAttr {
            port_num: PORT,
            grh: Some(GrhAttr {
                dgid,
                sgid_index: self.sgid_index,
                hop_limit: 64,
                ..GrhAttr::default()
            }),
            ..AhAttr::default()
        };
        Ah::new(&self.pd, &attr).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Posts `n` fresh receive buffers (the whole buffer: GRH area first).
    fn post_recvs(&self, qp: &mut UdQp, n: usize) -> usize {
        let wrs: Vec<RecvWr> = (0..n)
            .map_while(|_| self.pool.alloc())
            .map(|m| RecvWr {
                addr: m.buf_addr() as u64,
                len: m.buf_len() as u32,
                lkey: self.mr.lkey(),
                wr_id: m.into_raw() as u64,
            })
            .collect();
        let mut done = 0;
        while done < wrs.len() {
            // SAFETY: each buffer is an Mbuf of the registered pool given up with
            // into_raw; it comes back through from_raw when its completion is polled or
            // a reset returns it.
            let k = unsafe { qp.post_recv_burst(&wrs[done..]) };
            if k == 0 {
                break;
            }
            done += k;
        }
        for w in &wrs[done..] {
            // SAFETY: not posted, so still ours, taken back once.
            drop(unsafe { Mbuf::from_raw(w.wr_id as usize) });
        }
        done
    }

    /// A packet: a 16-byte payload of (tag, seq).
    fn packet(&self, tag: u64, seq: u64) -> Mbuf {
        let mut m = self.pool.alloc().expect("a buffer to send");
        let d = m.append(16).expect("room");
        d[..8].copy_from_slice(&tag.to_be_bytes());
        d[8..].copy_from_slice(&seq.to_be_bytes());
        m
    }

    /// Sends `(tag, seq)` packets; returns how many the send queue took.
    fn send(&self, qp: &mut UdQp, ah: &Ah, qpn: u32, tag: u64, seqs: &[u64]) -> usize {
        let wrs: Vec<SendWr<'_>> = seqs
            .iter()
            .map(|&s| {
                let m = self.packet(tag, s);
                SendWr {
                    addr: (m.buf_addr() + m.data_offset()) as u64,
                    len: m.len() as u32,
                    lkey: self.mr.lkey(),
                    ah,
                    remote_qpn: qpn,
                    remote_qkey: QKEY,
                    wr_id: m.into_raw() as u64,
                }
            })
            .collect();
        // SAFETY: buffers of the registered pool, given up with into_raw and taken back
        // when their completion is polled; `ah` outlives every send (each test drains
        // the send CQ before dropping it).
        let k = unsafe { qp.post_send_burst(&wrs) };
        for w in &wrs[k..] {
            // SAFETY: not posted, so still ours.
            drop(unsafe { Mbuf::from_raw(w.wr_id as usize) });
        }
        k
    }
}

/// Frees completed sends; returns how many completed OK.
fn reap_sends(qp: &mut UdQp) -> usize {
    let mut wc = [Wc::default(); 32];
    let n = qp.poll_send_burst(&mut wc);
    for w in &wc[..n] {
        assert!(w.is_ok(), "send failed: {w:?}");
        // SAFETY: the wr_id is an into_raw word, completed, taken back once.
        drop(unsafe { Mbuf::from_raw(w.wr_id() as usize) });
    }
    n
}

/// Reads completed receives as (tag, seq), frees their buffers, posts as many fresh.
fn reap_recvs(rig: &Rig, qp: &mut UdQp, out: &mut Vec<(u64, u64)>) -> usize {
    let mut wc = [Wc::default(); 32];
    let n = qp.poll_recv_burst(&mut wc);
    for w in &wc[..n] {
        assert!(w.is_ok(), "receive failed: {w:?}");
        // SAFETY: the wr_id is an into_raw word, completed, taken back once.
        let m = unsafe { Mbuf::from_raw(w.wr_id() as usize) };
        assert!(w.has_grh(), "RoCE receives carry a GRH");
        assert_eq!(w.byte_len() as usize, GRH_LEN + 16, "{w:?}");
        let p = &m.buf()[GRH_LEN..GRH_LEN + 16];
        let tag = u64::from_be_bytes(p[..8].try_into().unwrap());
        let seq = u64::from_be_bytes(p[8..].try_into().unwrap());
        out.push((tag, seq));
    }
    rig.post_recvs(qp, n);
    n
}

/// Takes every posted buffer back through a reset; returns how many.
fn drain(qp: &mut UdQp) -> usize {
    let r = qp.reset().expect("reset");
    let mut n = 0;
    for id in r.recv_unused.iter().chain(&r.send_unfinished) {
        // SAFETY: each is an into_raw word still posted until the reset returned it.
        drop(unsafe { Mbuf::from_raw(*id as usize) });
        n += 1;
    }
    for w in r.recv_completed.iter().chain(&r.send_completed) {
        // SAFETY: as above, completed before the reset.
        drop(unsafe { Mbuf::from_raw(w.wr_id() as usize) });
        n += 1;
    }
    n
}

#[test]
fn rxe_port_gids_and_async_events() {
    let Some(rig) = rig_or_skip("rxe_port_gids_and_async_events") else {
        return;
    };
    let dev = rig.ctx.query_device().expect("ibv_query_device_ex");
    println!("{}: {dev:?}", rig.ctx.name());
    assert!(dev.phys_port_cnt >= 1 && dev.max_qp_wr >= 256 && dev.max_mcast_grp >= 1);
    let p = rig
        .ctx
        .require_active(PORT)
        .unwrap_or_else(|e| panic!("{e}"));
    println!("port {PORT}: {p:?}");
    assert_eq!(p.link_layer, LinkLayer::Ethernet, "rxe is RoCE");
    assert!(matches!(p.state, PortState::Active));
    assert_eq!(p.lid, 0, "no LIDs on Ethernet");
    let gids = rig.ctx.gid_table(PORT).unwrap();
    println!("GID[{}] = ::ffff:{}", rig.sgid_index, rig.addr);
    assert_eq!(
        gids[usize::from(rig.sgid_index)],
        ipv4_mapped_gid(rig.addr.octets())
    );
    let pkeys = rig.ctx.pkey_table(PORT).unwrap();
    println!("P_Keys {pkeys:04x?}");
    assert!(pkeys.contains(&0xFFFF), "the default partition");
    let t = Instant::now();
    assert_eq!(
        rig.ctx.poll_async_event().unwrap(),
        None,
        "no event pending"
    );
    assert!(
        t.elapsed() < Duration::from_millis(100),
        "the async fd is non-blocking"
    );
    assert!(matches!(rig.ctx.query_port(9), Err(Error::Verbs { .. })));
}

/// Two UD QPs on one context exchange 1000 packets each way; every buffer is
/// accounted for at the end (the pool is full again).
#[test]
fn two_qps_exchange_1000_packets_each_way() {
    let Some(rig) = rig_or_skip("two_qps_exchange_1000_packets_each_way") else {
        return;
    };
    const N: u64 = 1000;
    const WINDOW: u64 = 64;
    let mut a = rig.qp(SelfMcastLoopback::Allow).expect("QP a");
    let mut b = rig.qp(SelfMcastLoopback::Allow).expect("QP b");
    let ah = rig.ah(ipv4_mapped_gid(rig.addr.octets()));
    assert_eq!(rig.post_recvs(&mut a, 256), 256);
    assert_eq!(rig.post_recvs(&mut b, 256), 256);
    let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
    let (mut sent_ab, mut sent_ba) = (0u64, 0u64);
    let t0 = Instant::now();
    while got_a.len() < N as usize || got_b.len() < N as usize {
        assert!(
            t0.elapsed() < WAIT,
            "a got {}, b got {}; a {:?} b {:?}",
            got_a.len(),
            got_b.len(),
            a.counters(),
            b.counters()
        );
        if sent_ab < N && sent_ab - (got_b.len() as u64) < WINDOW {
            let seqs: Vec<u64> = (sent_ab..N.min(sent_ab + 16)).collect();
            sent_ab += rig.send(&mut a, &ah, b.qpn(), 0xA, &seqs) as u64;
        }
        if sent_ba < N && sent_ba - (got_a.len() as u64) < WINDOW {
            let seqs: Vec<u64> = (sent_ba..N.min(sent_ba + 16)).collect();
            sent_ba += rig.send(&mut b, &ah, a.qpn(), 0xB, &seqs) as u64;
        }
        reap_sends(&mut a);
        reap_sends(&mut b);
        reap_recvs(&rig, &mut a, &mut got_a);
        reap_recvs(&rig, &mut b, &mut got_b);
    }
    let took = t0.elapsed();
    while a.send_outstanding() + b.send_outstanding() > 0 {
        assert!(t0.elapsed() < WAIT);
        reap_sends(&mut a);
        reap_sends(&mut b);
    }
    assert_eq!(
        got_b,
        (0..N).map(|s| (0xA, s)).collect::<Vec<_>>(),
        "b got a's packets in order"
    );
    assert_eq!(got_a, (0..N).map(|s| (0xB, s)).collect::<Vec<_>>());
    let (ca, cb) = (a.counters(), b.counters());
    println!("{N} packets each way in {took:?}; a {ca:?}; b {cb:?}");
    assert_eq!(
        (ca.send_ok, ca.recv_ok, cb.send_ok, cb.recv_ok),
        (N, N, N, N)
    );
    assert_eq!(
        ca.send_errors + ca.recv_errors + ca.ring_mismatch + ca.foreign_completions,
        0
    );
    assert_eq!(
        drain(&mut a) + drain(&mut b),
        512,
        "the posted receives came back"
    );
    assert_eq!(
        rig.pool.available(),
        rig.pool.capacity(),
        "every buffer is home"
    );
}

/// Sends `n` packets from `qps[0]` to the group of `ah`; returns what each of `qps`
/// (the sender included) received (tag, seq) within `wait`.
fn mcast_round(
    rig: &Rig,
    qps: &mut [&mut UdQp],
    ah: &Ah,
    tag: u64,
    n: u64,
    wait: Duration,
) -> Vec<Vec<(u64, u64)>> {
    let seqs: Vec<u64> = (0..n).collect();
    assert_eq!(rig.send(qps[0], ah, 0xFF_FFFF, tag, &seqs) as u64, n);
    let mut got = vec![Vec::new(); qps.len()];
    let t0 = Instant::now();
    while t0.elapsed() < wait {
        reap_sends(qps[0]);
        for (q, g) in qps.iter_mut().zip(got.iter_mut()) {
            reap_recvs(rig, q, g);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    while qps[0].send_outstanding() > 0 {
        reap_sends(qps[0]);
    }
    got
}

fn distinct(v: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut d = v.to_vec();
    d.sort_unstable();
    d.dedup();
    d
}

/// Multicast on RoCE: attach, send to the group, receive (the sender's own copy too,
/// unless the HCA blocks it), detach. The kernel must also be a member of the mapped IP
/// group on the netdev, or the IP layer drops the packets before rxe sees them.
#[test]
fn multicast_attach_send_receive_detach() {
    let Some(rig) = rig_or_skip("multicast_attach_send_receive_detach") else {
        return;
    };
    let group = Ipv4Addr::new(239, 1, 2, 3);
    let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("a UDP socket");
    sock.join_multicast_v4(&group, &rig.addr)
        .expect("IP membership of the group on the netdev");
    let mgid = ipv4_mapped_gid(group.octets());
    let dev = rig.ctx.query_device().unwrap();
    let mut modes = vec![SelfMcastLoopback::Allow];
    if dev.can_block_self_mcast_lb() {
        modes.push(SelfMcastLoopback::Block);
    } else {
        match rig.qp(SelfMcastLoopback::Block) {
            Err(e @ Error::Unsupported { .. }) => {
                println!("as expected on {}: {e}", rig.ctx.name())
            }
            other => panic!("blocking self loopback without the capability: {other:?}"),
        }
    }
    for mode in modes {
        let mut a = rig.qp(mode).expect("sender");
        let mut b = rig.qp(SelfMcastLoopback::Allow).expect("member");
        let ah = rig.ah(mgid);
        rig.post_recvs(&mut a, 64);
        rig.post_recvs(&mut b, 64);
        a.attach_mcast(&mgid, 0).unwrap_or_else(|e| panic!("{e}"));
        b.attach_mcast(&mgid, 0).unwrap_or_else(|e| panic!("{e}"));
        let got = mcast_round(
            &rig,
            &mut [&mut a, &mut b],
            &ah,
            0xC,
            8,
            Duration::from_secs(2),
        );
        let want: Vec<(u64, u64)> = (0..8).map(|s| (0xC, s)).collect();
        println!(
            "{mode:?}: member got {} ({} distinct), sender got {} of its own",
            got[1].len(),
            distinct(&got[1]).len(),
            got[0].len()
        );
        assert_eq!(distinct(&got[1]), want, "the member receives every packet");
        match mode {
            SelfMcastLoopback::Allow => {
                assert_eq!(distinct(&got[0]), want, "the sender's own copies")
            }
            SelfMcastLoopback::Block => assert!(got[0].is_empty(), "blocked, yet looped back"),
        }
        b.detach_mcast(&mgid, 0).unwrap_or_else(|e| panic!("{e}"));
        a.detach_mcast(&mgid, 0).unwrap_or_else(|e| panic!("{e}"));
        let got = mcast_round(
            &rig,
            &mut [&mut a, &mut b],
            &ah,
            0xD,
            4,
            Duration::from_millis(500),
        );
        assert!(
            got.iter().all(|g| g.is_empty()),
            "received after the detach: {got:?}"
        );
        drain(&mut a);
        drain(&mut b);
    }
    assert_eq!(
        rig.pool.available(),
        rig.pool.capacity(),
        "every buffer is home"
    );
}

/// A P_Key index move goes through RESET: the posted receives come back to the caller,
/// and the QP works afterwards.
#[test]
fn pkey_index_move_returns_the_posted_receives() {
    let Some(rig) = rig_or_skip("pkey_index_move_returns_the_posted_receives") else {
        return;
    };
    let pkeys = rig.ctx.pkey_table(PORT).unwrap();
    let target = pkeys
        .iter()
        .rposition(|&p| p & 0x7fff != 0)
        .expect("a valid P_Key") as u16;
    let mut a = rig.qp(SelfMcastLoopback::Allow).unwrap();
    let mut b = rig.qp(SelfMcastLoopback::Allow).unwrap();
    assert_eq!(rig.post_recvs(&mut b, 100), 100);
    let before = rig.pool.available();
    let r = b.move_pkey_index(target).unwrap_or_else(|e| panic!("{e}"));
    println!(
        "moved QP {:#x} to P_Key index {target}: {} unused receives back, {} completed",
        b.qpn(),
        r.recv_unused.len(),
        r.recv_completed.len()
    );
    assert_eq!(r.recv_unused.len() + r.recv_completed.len(), 100);
    assert_eq!(b.recv_posted(), 0);
    assert_eq!(b.pkey_index(), target);
    for id in &r.recv_unused {
        // SAFETY: returned by the reset, taken back once.
        drop(unsafe { Mbuf::from_raw(*id as usize) });
    }
    assert_eq!(
        rig.pool.available(),
        before + 100,
        "all 100 buffers are the caller's again"
    );
    // The QP is back in RTS and receives again.
    rig.post_recvs(&mut b, 16);
    let ah = rig.ah(ipv4_mapped_gid(rig.addr.octets()));
    assert_eq!(rig.send(&mut a, &ah, b.qpn(), 0xE, &[1, 2, 3]), 3);
    let mut got = Vec::new();
    let t0 = Instant::now();
    while got.len() < 3 {
        assert!(t0.elapsed() < WAIT, "after the move: {:?}", b.counters());
        reap_sends(&mut a);
        reap_recvs(&rig, &mut b, &mut got);
    }
    while a.send_outstanding() > 0 {
        reap_sends(&mut a);
    }
    assert_eq!(got, [(0xE, 1), (0xE, 2), (0xE, 3)]);
    drain(&mut a);
    drain(&mut b);
    assert_eq!(rig.pool.available(), rig.pool.capacity());
}

/// The driver's `Device` and `Port` on rxe0: a RoCE port, its capabilities from the
/// device, no MAD channel (there is no SA on Ethernet: a typed error says so), events
/// that do not block, and ports numbered from 1.
#[test]
fn verbs_device_and_port_on_rxe() {
    use ibpoll_dev::{Device, Error as DevError, LinkLayer as Link, PortState as State};
    let Some(rig) = rig_or_skip("verbs_device_and_port_on_rxe") else {
        return;
    };
    let name = rig.ctx.name().to_owned();
    let listed = ibpoll_pmd_verbs::devices().expect("the device list");
    assert!(listed.iter().any(|d| d.name == name), "{listed:?}");
    let dev = ibpoll_pmd_verbs::VerbsDevice::open(&name).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(Device::name(&dev), name);
    assert_eq!(dev.node_guid(), rig.ctx.node_guid());
    for bad in [0, dev.port_count() + 1] {
        match dev.open_port(bad) {
            Err(DevError::NoSuchPort { port, .. }) => assert_eq!(port, bad),
            other => panic!("port {bad}: {other:?}"),
        }
    }
    let port = dev.open_port(PORT).unwrap_or_else(|e| panic!("{e}"));
    let caps = port.ud_caps();
    println!("{name} port {PORT}: {caps:?}");
    let attr = rig.ctx.query_device().unwrap();
    assert_eq!(caps.rx_queues_per_qpn, 1);
    assert!(!caps.send_qps_share_qpn);
    assert_eq!(caps.max_wr, attr.max_qp_wr.min(attr.max_cqe));
    assert_eq!(caps.max_qp, attr.max_qp);
    assert_eq!(caps.block_self_mcast_lb, attr.can_block_self_mcast_lb());
    let a = port.attr();
    assert_eq!((a.link_layer, a.state), (Link::Ethernet, State::Active));
    let mapped = ibpoll_wire::Gid(ipv4_mapped_gid(rig.addr.octets()));
    assert_eq!(a.gids.get(usize::from(rig.sgid_index)), Some(&mapped));
    assert!(
        a.pkeys.contains(&ibpoll_wire::PKey::DEFAULT),
        "{:?}",
        a.pkeys
    );
    match port.open_mad_channel() {
        Err(e @ DevError::NoSubnetAdmin { .. }) => println!("as expected: {e}"),
        other => panic!("a MAD channel on RoCE: {other:?}"),
    }
    let t = Instant::now();
    assert_eq!(port.poll_event(), None, "no event pending");
    assert!(
        t.elapsed() < Duration::from_millis(100),
        "poll_event blocked"
    );
}
