//! The `two_nodes` example end to end: join, ARP, 1000 unicast and 1000 broadcast
//! datagrams, leave; then its capture, checked frame by frame and by tshark.

mod common;

// `main` and the report fields the example only prints are unused here.
#[allow(dead_code)]
#[path = "../examples/two_nodes.rs"]
mod two_nodes;

use common::capture::{self, Decoded};
use ibpoll_wire::Lid;

const COUNT: usize = 1000;
const BROADCAST_MGID: &str = "ff12:401b:ffff::ffff:ffff";

fn rows<'a>(all: &'a [Decoded], pred: impl Fn(&Decoded) -> bool + 'a) -> Vec<&'a Decoded> {
    all.iter().filter(|r| pred(r)).collect()
}

#[test]
fn two_nodes_example_runs_clean_and_its_capture_decodes() {
    let path = common::temp_path("two-nodes");
    let report = two_nodes::run(&two_nodes::Args {
        pcap: Some(path.clone()),
        count: COUNT as u32,
        seed: 1,
    })
    .expect("the example runs");
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.unicast_seen, vec![1; COUNT]);
    assert_eq!(report.broadcast_seen, vec![1; COUNT]);
    assert_eq!(
        report.own_loopback_dropped,
        COUNT as u64 + 1,
        "A's ARP and datagrams"
    );
    assert_eq!(report.broadcast_mlid, Lid(0xC000));
    assert_eq!(report.broadcast_qkey.0, 0x0B1B);
    // 4 joins, 4 path queries, 4 leaves (requests and answers), 2 ARP, 2 x COUNT.
    let frames_expected = 12 + 2 + 2 * COUNT;
    assert_eq!(report.pcap_frames, frames_expected as u64);

    // Every frame's CRCs and headers, with the wire crate.
    let frames = capture::read_frames(&path);
    assert_eq!(frames.len(), frames_expected);
    for fr in &frames {
        capture::parse_frame(fr);
    }

    let Some(all) = capture::tshark(&path) else {
        std::fs::remove_file(&path).ok();
        return;
    };
    assert_eq!(all.len(), frames_expected);

    // SA traffic: QP1 to QP1 with the GSI Q_Key.
    let mads = rows(&all, |r| r.mad_method.is_some());
    assert_eq!(mads.len(), 12);
    for r in &mads {
        assert_eq!((r.dest_qp, r.qkey, r.src_qp), (1, 0x8001_0000, 1), "{r:?}");
    }
    let mcm = |m: u64| rows(&all, move |r| r.mad_method == Some(m) && r.mgid.is_some());
    for (method, mask, js) in [(0x02, 0x10083, 1), (0x81, 0x10083, 1), (0x15, 0x10003, 1)] {
        let rs = mcm(method);
        assert_eq!(rs.len(), 2, "MCMemberRecord method {method:#x}: {rs:?}");
        for r in rs {
            assert_eq!(r.mgid.as_deref(), Some(BROADCAST_MGID), "{r:?}");
            assert_eq!(r.component_mask, Some(mask), "{r:?}");
            assert_eq!(r.join_state, Some(js), "{r:?}");
        }
    }
    let delete_resp = mcm(0x95);
    assert_eq!(delete_resp.len(), 2, "DeleteResp");
    assert!(delete_resp.iter().all(|r| r.join_state == Some(0)), "left");
    let path_get = rows(&all, |r| r.mad_method == Some(0x01));
    assert_eq!(path_get.len(), 2, "PathRecord Get");
    assert!(path_get.iter().all(|r| r.component_mask == Some(0x100c)));
    let path_resp = rows(&all, |r| r.mad_method == Some(0x81) && r.mgid.is_none());
    assert_eq!(path_resp.len(), 2, "PathRecord GetResp");
    // The SM answers A's first join first: its DLID is A's LID.
    let a_lid = mcm(0x81)[0].dlid;

    // ARP: the request to the broadcast group, the reply unicast to A.
    let arp = rows(&all, |r| r.arp_hw_type.is_some());
    assert_eq!(arp.len(), 2, "{arp:?}");
    for r in &arp {
        assert_eq!(
            (r.arp_hw_type, r.arp_hw_size),
            (Some(32), Some(20)),
            "{r:?}"
        );
        assert_eq!(r.qkey, 0x0B1B);
    }
    let (request, reply) = (arp[0], arp[1]);
    assert_eq!((request.dlid, request.dest_qp), (0xC000, 0xFF_FFFF));
    assert_eq!(reply.dlid, a_lid);
    assert_eq!(reply.dest_qp, request.src_qp, "the reply goes to A's QP");
    let (a_qpn, b_qpn) = (request.src_qp, reply.src_qp);
    assert_ne!(a_qpn, b_qpn);

    // The datagrams.
    let unicast = rows(&all, |r| r.ip_dst.as_deref() == Some("10.0.0.2"));
    assert_eq!(unicast.len(), COUNT);
    let b_lid = unicast[0].dlid;
    assert!(b_lid != a_lid && b_lid < 0xC000);
    for r in &unicast {
        assert_eq!(
            (r.dlid, r.dest_qp, r.qkey, r.src_qp),
            (b_lid, b_qpn, 0x0B1B, a_qpn),
            "{r:?}"
        );
    }
    let broadcast = rows(&all, |r| r.ip_dst.as_deref() == Some("255.255.255.255"));
    assert_eq!(broadcast.len(), COUNT);
    for r in &broadcast {
        assert_eq!(
            (r.dlid, r.dest_qp, r.qkey, r.src_qp),
            (49152, 0xFF_FFFF, 0x0B1B, a_qpn),
            "{r:?}"
        );
    }
    std::fs::remove_file(&path).ok();
}
