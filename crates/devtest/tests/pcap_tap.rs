//! The pcap tap: both sides of a conversation captured by taps on two ports, each frame
//! checked with the wire crate (CRCs, LRH, GRH, BTH, DETH), the receive side's
//! reconstruction checked against the send side's frames, and both files decoded by
//! tshark; the size bound; write errors reported, not panicked.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use common::{join_broadcast, tshark, two_ports, Host};
use ibpoll_dev::{Device, Port, TxDst};
use ibpoll_devtest::capture::{read_capture, CaptureError};
use ibpoll_devtest::{PcapTap, PcapTapConfig};
use ibpoll_mem::{MbufArray, Mempool};
use ibpoll_pmd_sim::FabricConfig;
use ibpoll_wire::{bth, crc, deth, grh, ipoib, lrh, Gid, Lid, PKey, QKey, Qpn};

fn temp_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("ibpoll-devtest-{}-{tag}.pcap", std::process::id()))
}

/// An IPoIB + IPv4/UDP packet to `dst` (checksums 0: nothing here checks them).
fn ipv4_udp(pool: &Mempool, dst: [u8; 4], seq: u8) -> ibpoll_mem::Mbuf {
    let mut m = pool.alloc().expect("a buffer");
    let d = m.append(4 + 20 + 8 + 4).expect("room");
    d[..2].copy_from_slice(&ipoib::EtherType::IPV4.0.to_be_bytes());
    let ip = &mut d[4..];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&32u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
    ip[16..20].copy_from_slice(&dst);
    ip[20..22].copy_from_slice(&5000u16.to_be_bytes());
    ip[22..24].copy_from_slice(&5001u16.to_be_bytes());
    ip[24..26].copy_from_slice(&12u16.to_be_bytes());
    ip[28..32].fill(seq);
    m
}

/// One frame, taken apart with the wire crate (CRCs checked).
#[derive(Debug, Clone, PartialEq)]
struct Parsed {
    dlid: Lid,
    slid: Lid,
    grh: Option<(Gid, Gid)>,
    pkey: PKey,
    dest_qpn: Qpn,
    qkey: QKey,
    src_qpn: Qpn,
    payload: Vec<u8>,
}

fn parse(f: &[u8]) -> Parsed {
    let body = crc::verify_crcs(f).expect("ICRC and VCRC");
    let lp = lrh::Packet::new_checked(f).expect("LRH");
    let l = lrh::Repr::parse(&lp).expect("LRH parses");
    assert_eq!(
        usize::from(lp.pkt_len()) * 4,
        f.len() - crc::VCRC_LEN,
        "PktLen"
    );
    let mut at = lrh::HEADER_LEN;
    let g = (l.lnh == lrh::Lnh::IbaGlobal).then(|| {
        let g = grh::Repr::parse(&grh::Packet::new_checked(&f[at..]).unwrap()).unwrap();
        at += grh::HEADER_LEN;
        assert_eq!(
            usize::from(g.payload_len),
            f.len() - crc::VCRC_LEN - at,
            "PayLen"
        );
        (g.sgid, g.dgid)
    });
    let b = bth::Repr::parse(&bth::Packet::new_checked(&f[at..]).unwrap()).unwrap();
    assert_eq!(b.opcode, bth::OpCode::UD_SEND_ONLY);
    at += bth::HEADER_LEN;
    let d = deth::Repr::parse(&deth::Packet::new_checked(&f[at..]).unwrap()).unwrap();
    at += deth::HEADER_LEN;
    Parsed {
        dlid: l.dlid,
        slid: l.slid,
        grh: g,
        pkey: b.pkey,
        dest_qpn: b.dest_qpn,
        qkey: d.qkey,
        src_qpn: d.src_qpn,
        payload: f[at..body - usize::from(b.pad_count)].to_vec(),
    }
}

fn frames(path: &PathBuf) -> Vec<Parsed> {
    let bytes = std::fs::read(path).expect("the capture file");
    let recs = read_capture(&bytes).expect("a whole ERF capture");
    recs.iter().map(|r| parse(&r.frame)).collect()
}

/// Sends everything in one burst (the simulator takes whole bursts).
fn send(h: &mut Host, sends: Vec<(ibpoll_mem::Mbuf, TxDst)>) {
    let mut pkts = MbufArray::with_capacity(sends.len());
    let mut dst = Vec::new();
    for (m, d) in sends {
        pkts.push(m).unwrap();
        dst.push(d);
    }
    assert_eq!(h.tx.tx_burst(&mut pkts, &dst), dst.len());
}

#[test]
fn both_sides_are_captured_consistently_and_tshark_decodes_them() {
    let paths = [temp_path("tap-a"), temp_path("tap-b")];
    let taps: std::sync::Mutex<Vec<Arc<PcapTap>>> = Default::default();
    let (_f, _devs, ports) = two_ports(FabricConfig::default(), |p| {
        let path = &paths[taps.lock().unwrap().len()];
        let tap = PcapTap::create(p, path, PcapTapConfig::new()).expect("the file opens");
        taps.lock().unwrap().push(tap.clone());
        tap as Arc<dyn Port>
    });
    let taps = taps.into_inner().unwrap();
    let group = join_broadcast(&*ports[0]);
    join_broadcast(&*ports[1]);
    let mut a = Host::new(ports[0].clone(), "a", 256, 64);
    let mut b = Host::new(ports[1].clone(), "b", 256, 64);
    for h in [&a, &b] {
        h.port.attach_mcast(h.qpn, &group.mgid, group.mlid).unwrap();
    }
    let (plain, global) = (a.ah_to(&b, false), a.ah_to(&b, true));
    let to_group = a.port.create_ah(&group.ah).unwrap();
    let ucast = |ah| TxDst {
        ah,
        qpn: b.qpn,
        qkey: QKey(0x8000_0000), // controlled: the QP's own, 0x0B1B
    };
    let mcast = TxDst {
        ah: to_group,
        qpn: Qpn::MULTICAST,
        qkey: group.qkey,
    };
    let sends = vec![
        (ipv4_udp(&a.pool, [10, 0, 0, 2], 1), ucast(plain)),
        (ipv4_udp(&a.pool, [10, 0, 0, 2], 2), ucast(global)),
        (ipv4_udp(&a.pool, [10, 0, 0, 2], 3), ucast(plain)),
        (ipv4_udp(&a.pool, [224, 0, 0, 1], 4), mcast),
    ];
    send(&mut a, sends);
    assert_eq!(b.drain().len(), 4);
    assert_eq!(a.drain().len(), 1, "a's own multicast, looped back");
    let st: Vec<_> = taps.iter().map(|t| t.finish().expect("flushed")).collect();
    // a: join request and answer, 4 sends, 1 receive; b: join, 4 receives.
    assert_eq!((st[0].frames, st[1].frames), (7, 6));
    assert!(st
        .iter()
        .all(|s| s.error.is_none() && s.frames_over_limit == 0));

    let (fa, fb) = (frames(&paths[0]), frames(&paths[1]));
    let (al, bl) = (a.lid(), b.lid());
    let sm = a.port.attr().sm_lid;
    // MADs: QP1 to QP1 with the GSI Q_Key, to the SM and back.
    for (f, lid) in [(&fa, al), (&fb, bl)] {
        assert_eq!((f[0].slid, f[0].dlid), (lid, sm), "join request");
        assert_eq!((f[1].slid, f[1].dlid), (sm, lid), "join answer");
        for m in &f[..2] {
            assert_eq!(
                (m.src_qpn, m.dest_qpn, m.qkey),
                (Qpn::GSI, Qpn::GSI, QKey::GSI)
            );
            assert_eq!(m.payload.len(), 256);
        }
    }
    let sent = &fa[2..6];
    for s in sent {
        assert_eq!((s.slid, s.src_qpn, s.pkey), (al, a.qpn, PKey::DEFAULT));
        assert_eq!(
            s.qkey,
            QKey::IPOIB_DEFAULT,
            "a controlled Q_Key is the QP's own"
        );
    }
    assert_eq!(sent[1].grh, Some((a.port.attr().gid, b.port.attr().gid)));
    assert_eq!(
        (sent[3].dlid, sent[3].dest_qpn),
        (group.mlid, Qpn::MULTICAST)
    );
    assert_eq!(sent[3].grh.map(|g| g.1), Some(group.mgid));
    // What b's tap rebuilt from its completions is what a's tap saw leave.
    assert_eq!(&fb[2..6], sent, "receive side against send side");
    assert_eq!(fa[6], sent[3], "a's looped-back copy");

    let fields = [
        "infiniband.lrh.dlid",
        "infiniband.bth.destqp",
        "infiniband.deth.q_key",
        "infiniband.deth.srcqp",
        "infiniband.mad.method",
        "ip.dst",
        "infiniband.grh.dgid",
    ];
    for (path, frames) in paths.iter().zip([&fa, &fb]) {
        let Some(rows) = tshark::fields(path, &fields) else {
            break;
        };
        assert_eq!(rows.len(), frames.len(), "{rows:?}");
        for (row, f) in rows.iter().zip(frames.iter()) {
            let n = |i: usize| tshark::number(&row[i]);
            assert_eq!(n(0), u64::from(f.dlid.0), "{row:?}");
            assert_eq!(n(1), u64::from(f.dest_qpn.get()), "{row:?}");
            assert_eq!(n(2), u64::from(f.qkey.0), "{row:?}");
            assert_eq!(n(3), u64::from(f.src_qpn.get()), "{row:?}");
        }
        assert_eq!(rows[0][4], "0x02", "SubnAdmSet");
        assert_eq!(rows[1][4], "0x81", "SubnAdmGetResp");
        let ips: Vec<&str> = rows[2..6].iter().map(|r| r[5].as_str()).collect();
        assert_eq!(ips, ["10.0.0.2", "10.0.0.2", "10.0.0.2", "224.0.0.1"]);
        assert_eq!(rows[5][6], "ff12:401b:ffff::ffff:ffff", "the group's MGID");
    }
    for p in &paths {
        std::fs::remove_file(p).ok();
    }
}

#[test]
fn the_size_bound_keeps_the_file_whole_and_counts_what_it_left_out() {
    let path = temp_path("bound");
    let (_f, devs, _) = two_ports(FabricConfig::default(), |p| p);
    let mut cfg = PcapTapConfig::new();
    // The file header and three records of 8-byte payloads: pcap and ERF headers
    // (16 + 16) and a 42-byte frame (LRH 8, BTH 12, DETH 8, payload 8, ICRC 4, VCRC 2).
    cfg.max_bytes = 24 + 3 * 74;
    let tap = PcapTap::create(devs[0].open_port(1).unwrap(), &path, cfg).unwrap();
    let mut a = Host::new(tap.clone(), "a", 64, 64);
    let mut b = Host::new(devs[1].open_port(1).unwrap(), "b", 64, 64);
    let ah = a.ah_to(&b, false);
    let (mut pkts, dst) = a.burst(0..10, common::to(ah, &b));
    assert_eq!(a.tx.tx_burst(&mut pkts, &dst), 10);
    assert_eq!(b.seqs().len(), 10, "the traffic goes on");
    let st = tap.finish().unwrap();
    assert_eq!((st.frames, st.frames_over_limit), (3, 7), "{st:?}");
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len() as u64, st.bytes);
    assert!(st.bytes <= st.max_bytes);
    assert_eq!(read_capture(&bytes).unwrap().len(), 3, "whole records only");
    if let Some(rows) = tshark::fields(&path, &["infiniband.deth.srcqp"]) {
        assert_eq!(rows.len(), 3);
    }
    std::fs::remove_file(&path).ok();
}

/// A writer that fails once `room` bytes were written.
struct FailingWriter {
    room: usize,
}

impl Write for FailingWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if b.len() > self.room {
            return Err(std::io::Error::other("disk full (test)"));
        }
        self.room -= b.len();
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_write_error_is_reported_not_panicked_and_traffic_goes_on() {
    let (_f, devs, _) = two_ports(FabricConfig::default(), |p| p);
    let out = Box::new(FailingWriter { room: 24 + 74 + 10 });
    let tap = PcapTap::new(
        devs[0].open_port(1).unwrap(),
        out,
        "full.pcap",
        PcapTapConfig::new(),
    )
    .expect("the header fits");
    let mut a = Host::new(tap.clone(), "a", 64, 64);
    let mut b = Host::new(devs[1].open_port(1).unwrap(), "b", 64, 64);
    let ah = a.ah_to(&b, false);
    let (mut pkts, dst) = a.burst(0..5, common::to(ah, &b));
    assert_eq!(a.tx.tx_burst(&mut pkts, &dst), 5);
    assert_eq!(
        b.seqs(),
        [0, 1, 2, 3, 4],
        "the failure does not touch the traffic"
    );
    let st = tap.status();
    assert_eq!(st.frames, 1);
    assert!(
        st.error.as_deref().is_some_and(|e| e.contains("disk full")),
        "{st:?}"
    );
    match tap.finish() {
        Err(e @ CaptureError::Io { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("full.pcap") && msg.contains("disk full"),
                "{msg}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(tap.status().error.is_some(), "the status keeps the error");
    // A header that cannot be written is an error at once.
    let none = Box::new(FailingWriter { room: 3 });
    let refused = PcapTap::new(
        devs[0].open_port(1).unwrap(),
        none,
        "x",
        PcapTapConfig::new(),
    );
    assert!(matches!(refused, Err(CaptureError::Io { .. })));
}

#[test]
fn a_send_longer_than_the_link_mtu_is_not_captured() {
    let path = temp_path("mtu");
    let (f, devs, _) = two_ports(FabricConfig::default(), |p| p);
    let tap = PcapTap::create(devs[0].open_port(1).unwrap(), &path, PcapTapConfig::new()).unwrap();
    let mut a = Host::new(tap.clone(), "a", 64, 64);
    let b = Host::new(devs[1].open_port(1).unwrap(), "b", 64, 64);
    let big = Mempool::new(ibpoll_mem::MempoolConfig {
        name: "jumbo".into(),
        n_bufs: 4,
        data_room: 9216,
        cache_size: 0,
        hugepages: ibpoll_mem::HugepagePolicy::Never,
        ..Default::default()
    })
    .unwrap();
    let ah = a.ah_to(&b, false);
    let mut m = big.alloc().unwrap();
    m.append(9000).unwrap()[..2].copy_from_slice(&[0x88, 0xB5]);
    send(&mut a, vec![(m, common::to(ah, &b))]);
    let small = a.packet(1);
    send(&mut a, vec![(small, common::to(ah, &b))]);
    assert_eq!(f.stats().drop_count("too_long"), 1);
    let st = tap.finish().unwrap();
    assert_eq!((st.frames, st.frames_too_long), (1, 0), "{st:?}");
    assert_eq!(frames(&path).len(), 1);
    std::fs::remove_file(&path).ok();
}
