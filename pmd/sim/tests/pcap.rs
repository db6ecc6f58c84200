//! The pcap tap: native InfiniBand frames in ERF records (link type 197), read back
//! byte by byte with the wire crate and, when it is installed, decoded by tshark.

mod common;

use common::capture::{self, Frame};
use common::Host;
use ibpoll_dev::TxDst;
use ibpoll_pmd_sim::{FabricConfig, SimFabric};
use ibpoll_wire::mad::Method;
use ibpoll_wire::mcmember::{self, JoinState};
use ibpoll_wire::sa::{Attribute, SaMad};
use ibpoll_wire::{ipoib, lrh, Gid, Lid, PKey, QKey, Qpn};

/// What one captured frame must say.
#[derive(Debug)]
struct Expect {
    dlid: Lid,
    slid: Lid,
    dest_qp: Qpn,
    qkey: QKey,
    src_qp: Qpn,
    /// (SGID, DGID) for a globally routed frame.
    grh: Option<(Gid, Gid)>,
}

fn check(i: usize, fr: &Frame, e: &Expect) {
    let what = format!("frame {i}: {e:?}");
    assert_eq!(fr.lrh.dlid, e.dlid, "{what}");
    assert_eq!(fr.lrh.slid, e.slid, "{what}");
    assert_eq!(fr.bth.dest_qpn, e.dest_qp, "{what}");
    assert_eq!(fr.bth.pkey, PKey::DEFAULT, "{what}");
    assert_eq!(fr.deth.qkey, e.qkey, "{what}");
    assert_eq!(fr.deth.src_qpn, e.src_qp, "{what}");
    match e.grh {
        Some((sgid, dgid)) => {
            assert_eq!(fr.lrh.lnh, lrh::Lnh::IbaGlobal, "{what}");
            let g = fr.grh.expect("a GRH");
            assert_eq!((g.sgid, g.dgid), (sgid, dgid), "{what}");
        }
        None => {
            assert_eq!(fr.lrh.lnh, lrh::Lnh::IbaLocal, "{what}");
            assert!(fr.grh.is_none());
        }
    }
}

#[test]
fn the_tap_writes_frames_that_the_wire_crate_and_tshark_decode() {
    let f = SimFabric::new(FabricConfig::default());
    let mut a = Host::new(&f, "a");
    let mut b = Host::new(&f, "b");
    b.join_broadcast();
    let path = common::temp_path("tap");
    f.start_pcap(&path)
        .expect("the capture file can be created");

    let g = a.join_broadcast();
    let to_b = a.ah(b.lid());
    let to_group = a.mcast_ah(&g);
    // Lengths 1, 2 and 7 after the UDP header: every pad count from 3 to 1.
    let mut bodies = Vec::new();
    let mut descs = Vec::new();
    for (n, dst, ah, qpn) in [
        (1, [10, 0, 0, 2], to_b, b.qp.qpn),
        (2, [10, 0, 0, 2], to_b, b.qp.qpn),
        (7, [10, 0, 0, 2], to_b, b.qp.qpn),
        (3, [255, 255, 255, 255], to_group, Qpn::MULTICAST),
        (4, [224, 0, 0, 1], to_group, Qpn::MULTICAST),
    ] {
        let udp = common::ipv4_udp([10, 0, 0, 1], dst, 1234, 5678, &vec![0xA5; n]);
        let m = a.packet(ipoib::EtherType::IPV4, &udp);
        bodies.push(m.data().to_vec());
        descs.push((
            m,
            TxDst {
                ah,
                qpn,
                qkey: QKey::IPOIB_DEFAULT,
            },
        ));
    }
    a.qp.send(descs);
    assert_eq!(b.qp.recv().len(), 5);
    f.stop_pcap().expect("the capture is flushed");
    assert_eq!(f.stats().pcap_frames, 7);

    let frames = capture::read_frames(&path);
    assert_eq!(frames.len(), 7);
    let parsed: Vec<Frame> = frames.iter().map(|fr| capture::parse_frame(fr)).collect();
    let gsi = |dlid, slid| Expect {
        dlid,
        slid,
        dest_qp: Qpn::GSI,
        qkey: QKey::GSI,
        src_qp: Qpn::GSI,
        grh: None,
    };
    let sm = a.attr().sm_lid;
    check(0, &parsed[0], &gsi(sm, a.lid()));
    check(1, &parsed[1], &gsi(a.lid(), sm));
    for (i, method) in [(0, Method::SET), (1, Method::GET_RESP)] {
        let mad = SaMad::parse(&parsed[i].payload).expect("a whole SA MAD");
        assert_eq!(parsed[i].payload.len(), 256);
        assert_eq!(mad.header.mad.method, method);
        let Attribute::McMember(r) = mad.attribute else {
            panic!("frame {i} carries no MCMemberRecord");
        };
        assert_eq!(r.mgid, g.mgid);
        assert_eq!(r.join_state, JoinState::FULL_MEMBER);
        assert_eq!(
            mad.header.component_mask,
            mcmember::JOIN_MASK.union(mcmember::mask::PKEY)
        );
    }
    for (i, fr) in parsed[2..].iter().enumerate() {
        let e = if i < 3 {
            Expect {
                dlid: b.lid(),
                slid: a.lid(),
                dest_qp: b.qp.qpn,
                qkey: QKey::IPOIB_DEFAULT,
                src_qp: a.qp.qpn,
                grh: None,
            }
        } else {
            Expect {
                dlid: Lid(0xC000),
                slid: a.lid(),
                dest_qp: Qpn::MULTICAST,
                qkey: QKey::IPOIB_DEFAULT,
                src_qp: a.qp.qpn,
                grh: Some((a.gid(), g.mgid)),
            }
        };
        check(i + 2, fr, &e);
        assert_eq!(fr.payload, bodies[i], "frame {}: payload", i + 2);
    }

    let Some(rows) = capture::tshark(&path) else {
        std::fs::remove_file(&path).ok();
        return;
    };
    assert_eq!(rows.len(), 7, "{rows:?}");
    let (al, bl) = (u64::from(a.lid().0), u64::from(b.lid().0));
    for (i, (row, dlid)) in rows[..2].iter().zip([1, al]).enumerate() {
        assert_eq!(
            (row.dlid, row.dest_qp, row.qkey, row.src_qp),
            (dlid, 1, 0x8001_0000, 1),
            "row {i}"
        );
        assert_eq!(row.mad_method, Some([0x02, 0x81][i]), "row {i}");
        assert_eq!(row.mgid.as_deref(), Some("ff12:401b:ffff::ffff:ffff"));
        assert_eq!(row.join_state, Some(1));
        assert_eq!(row.component_mask, Some(0x10083));
    }
    let aq = u64::from(a.qp.qpn.get());
    for (row, (dlid, dq, ip)) in rows[2..].iter().zip([
        (bl, u64::from(b.qp.qpn.get()), "10.0.0.2"),
        (bl, u64::from(b.qp.qpn.get()), "10.0.0.2"),
        (bl, u64::from(b.qp.qpn.get()), "10.0.0.2"),
        (0xC000, 0xFF_FFFF, "255.255.255.255"),
        (0xC000, 0xFF_FFFF, "224.0.0.1"),
    ]) {
        assert_eq!(
            (row.dlid, row.dest_qp, row.qkey, row.src_qp),
            (dlid, dq, 0x0B1B, aq),
            "{row:?}"
        );
        assert_eq!(row.ip_dst.as_deref(), Some(ip), "{row:?}");
        assert_eq!(row.mad_method, None);
    }
    std::fs::remove_file(&path).ok();
}

#[test]
fn a_send_longer_than_the_link_mtu_fails_before_the_tap_sees_it() {
    // A UD send longer than the port's MTU never leaves the HCA (a local length error),
    // so the tap must not see it, whatever its size (an LRH cannot even describe 9000
    // bytes: PktLen is 11 bits of 4-byte words).
    let f = SimFabric::new(FabricConfig::default());
    let mut a = Host::new(&f, "a");
    let mut b = Host::new(&f, "b");
    let big = ibpoll_mem::Mempool::new(ibpoll_mem::MempoolConfig {
        name: "jumbo".into(),
        n_bufs: 4,
        data_room: 9216,
        cache_size: 0,
        hugepages: ibpoll_mem::HugepagePolicy::Never,
        ..ibpoll_mem::MempoolConfig::default()
    })
    .unwrap();
    let path = common::temp_path("too-long");
    f.start_pcap(&path).unwrap();
    let ah = a.ah(b.lid());
    let mut descs = Vec::new();
    for len in [4097 - 4, 9000] {
        descs.push((
            common::packet_in(&big, common::ETHERTYPE_TEST, &vec![0; len]),
            TxDst {
                ah,
                qpn: b.qp.qpn,
                qkey: QKey::IPOIB_DEFAULT,
            },
        ));
    }
    a.send_one(b"fits", ah, b.qp.qpn);
    a.qp.send(descs);
    f.stop_pcap().unwrap();
    assert_eq!(b.qp.recv().len(), 1);
    assert_eq!(f.stats().drop_count("too_long"), 2);
    assert_eq!(a.qp.tx.counters().errors.get(), 2);
    assert_eq!(big.in_use(), 0);
    let frames = capture::read_frames(&path);
    assert_eq!(frames.len(), 1, "only the packet that went on the wire");
    assert_eq!(capture::parse_frame(&frames[0]).payload.len(), 8);
    std::fs::remove_file(&path).ok();
}
