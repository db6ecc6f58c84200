//! RoCE v2 ports on the simulated fabric: link layer Ethernet, LID 0, GIDs from the
//! port's IPv4 address, no SA, multicast by MGID attachment alone, a GRH on every
//! packet, unicast by GID; isolated from the InfiniBand ports of the same fabric.

mod common;

use std::sync::Arc;

use common::{make_qp, packet_in, pool, Qp, QpOpts, ETHERTYPE_TEST};
use ibpoll_dev::{
    AddressHandle, AhAttr, Device, GrhAttr, LinkLayer, Port, PortEvent, PortState, TxDst,
};
use ibpoll_mem::{Mempool, MBUF_F_GRH, MBUF_F_MCAST};
use ibpoll_pmd_sim::{FabricConfig, SimDevice, SimFabric};
use ibpoll_wire::{grh, Gid, Lid, PKey, QKey, Qpn};

fn mapped(ip: [u8; 4]) -> Gid {
    Gid([
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, ip[0], ip[1], ip[2], ip[3],
    ])
}

struct RoceHost {
    dev: Arc<SimDevice>,
    port: Arc<dyn Port>,
    pool: Mempool,
    qp: Qp,
}

impl RoceHost {
    fn new(f: &SimFabric, name: &str, ip: [u8; 4]) -> RoceHost {
        let dev = f.add_roce_node(name, &[ip]);
        let port = dev.open_port(1).expect("port 1");
        let pool = pool(&format!("{name}-pool"), 256);
        let qp = make_qp(&*port, &pool, &QpOpts::default());
        RoceHost {
            dev,
            port,
            pool,
            qp,
        }
    }

    /// An address handle to `dgid` from GID-table entry 1 (the address's mapped GID).
    fn ah(&self, dgid: Gid) -> AddressHandle {
        self.port
            .create_ah(&AhAttr {
                dlid: Lid(0),
                sl: 0,
                src_path_bits: 0,
                static_rate: self.port.attr().rate,
                grh: Some(GrhAttr {
                    dgid,
                    flow_label: 0,
                    sgid_index: 1,
                    hop_limit: 64,
                    traffic_class: 0,
                }),
            })
            .expect("a RoCE address handle")
    }

    fn send(&mut self, body: &[u8], ah: AddressHandle, qpn: Qpn) {
        let m = packet_in(&self.pool, ETHERTYPE_TEST, body);
        self.qp.send(vec![(
            m,
            TxDst {
                ah,
                qpn,
                qkey: QKey::IPOIB_DEFAULT,
            },
        )]);
    }
}

fn grh_before(m: &ibpoll_mem::Mbuf) -> grh::Repr {
    let off = m.data_offset();
    let area = &m.buf()[off - grh::HEADER_LEN..off];
    grh::Repr::parse(&grh::Packet::new_checked(area).expect("40 bytes")).expect("a GRH")
}

#[test]
fn a_roce_port_has_no_lid_no_sa_and_gids_from_its_address() {
    let f = SimFabric::new(FabricConfig::default());
    let a = RoceHost::new(&f, "a", [10, 0, 0, 1]);
    let attr = a.port.attr();
    assert_eq!(attr.link_layer, LinkLayer::Ethernet);
    assert_eq!((attr.lid, attr.sm_lid), (Lid(0), Lid(0)));
    assert_eq!(attr.state, PortState::Active);
    assert_eq!(attr.gids.len(), 2);
    assert_eq!(attr.gids[0], attr.gid);
    assert_eq!(
        &attr.gid.0[..8],
        &[0xfe, 0x80, 0, 0, 0, 0, 0, 0],
        "link-local"
    );
    assert_eq!(attr.gids[1], mapped([10, 0, 0, 1]));
    assert_eq!(attr.pkeys, vec![PKey::DEFAULT]);
    assert!(
        a.port.open_mad_channel().is_err(),
        "Ethernet has no subnet administrator"
    );
    // An address handle without a GRH, or naming a GID entry that is not there.
    let mut bad = AhAttr {
        dlid: Lid(0),
        sl: 0,
        src_path_bits: 0,
        static_rate: attr.rate,
        grh: None,
    };
    assert!(a.port.create_ah(&bad).is_err());
    bad.grh = Some(GrhAttr {
        dgid: mapped([10, 0, 0, 2]),
        flow_label: 0,
        sgid_index: 2,
        hop_limit: 64,
        traffic_class: 0,
    });
    assert!(a.port.create_ah(&bad).is_err());
    // The address goes and comes back: GidChange, and the table follows.
    f.set_port_ipv4(a.dev.port_id(1), None);
    assert_eq!(a.port.poll_event(), Some(PortEvent::GidChange));
    assert_eq!(a.port.attr().gids.len(), 1);
    f.set_port_ipv4(a.dev.port_id(1), Some([10, 0, 0, 9]));
    assert_eq!(a.port.poll_event(), Some(PortEvent::GidChange));
    assert_eq!(a.port.attr().gids[1], mapped([10, 0, 0, 9]));
}

#[test]
fn unicast_goes_by_gid_with_a_grh_and_slid_0() {
    let f = SimFabric::new(FabricConfig::default());
    let mut a = RoceHost::new(&f, "a", [10, 0, 0, 1]);
    let mut b = RoceHost::new(&f, "b", [10, 0, 0, 2]);
    let ah = a.ah(mapped([10, 0, 0, 2]));
    let bq = b.qp.qpn;
    a.send(b"to b", ah, bq);
    let got = b.qp.recv();
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert_eq!(common::body(m), b"to b");
    assert_eq!(m.meta().flags & (MBUF_F_GRH | MBUF_F_MCAST), MBUF_F_GRH);
    assert_eq!((m.meta().slid, m.meta().src_qpn), (0, a.qp.qpn.get()));
    let h = grh_before(m);
    assert_eq!(
        (h.sgid, h.dgid),
        (mapped([10, 0, 0, 1]), mapped([10, 0, 0, 2]))
    );
    assert_eq!(h.hop_limit, 64);
    // And back.
    let ah = b.ah(mapped([10, 0, 0, 1]));
    let aq = a.qp.qpn;
    b.send(b"to a", ah, aq);
    assert_eq!(a.qp.recv().len(), 1);
    // A GID no port has: counted, nothing delivered.
    let nowhere = a.ah(mapped([10, 0, 0, 77]));
    a.send(b"lost", nowhere, bq);
    assert_eq!(f.stats().drop_count("unknown_gid"), 1);
    assert!(b.qp.recv().is_empty());
}

#[test]
fn multicast_reaches_attached_qps_without_any_join() {
    let f = SimFabric::new(FabricConfig::default());
    let mut a = RoceHost::new(&f, "a", [10, 0, 0, 1]);
    let mut b = RoceHost::new(&f, "b", [10, 0, 0, 2]);
    let mut c = RoceHost::new(&f, "c", [10, 0, 0, 3]);
    let group = mapped([239, 1, 2, 3]);
    // b and c attach (MLID ignored on RoCE); a only sends.
    b.port.attach_mcast(b.qp.qpn, &group, Lid(0)).unwrap();
    c.port.attach_mcast(c.qp.qpn, &group, Lid(0)).unwrap();
    assert!(
        b.port
            .attach_mcast(b.qp.qpn, &mapped([10, 0, 0, 9]), Lid(0))
            .is_err(),
        "a unicast address is no group"
    );
    let ah = a.ah(group);
    a.send(b"to the group", ah, Qpn::MULTICAST);
    for h in [&mut b, &mut c] {
        let got = h.qp.recv();
        assert_eq!(got.len(), 1);
        let m = &got[0];
        assert_eq!(
            m.meta().flags & (MBUF_F_GRH | MBUF_F_MCAST),
            MBUF_F_GRH | MBUF_F_MCAST
        );
        assert_eq!(grh_before(m).dgid, group);
        assert_eq!(grh_before(m).sgid, mapped([10, 0, 0, 1]));
    }
    assert!(a.qp.recv().is_empty(), "a is not attached");
    // b sends: its own attached QP gets the loopback copy, c its copy.
    let ah = b.ah(group);
    b.send(b"from b", ah, Qpn::MULTICAST);
    assert_eq!(b.qp.recv().len(), 1, "the HCA loops multicast back");
    assert_eq!(c.qp.recv().len(), 1);
    // Detached: nothing more.
    c.port.detach_mcast(c.qp.qpn, &group, Lid(0)).unwrap();
    b.send(b"again", ah, Qpn::MULTICAST);
    assert!(c.qp.recv().is_empty());
    assert_eq!(f.stats().dropped(), 0, "{:?}", f.stats());
}

#[test]
fn roce_and_infiniband_ports_do_not_reach_each_other() {
    let f = SimFabric::new(FabricConfig::default());
    let mut r = RoceHost::new(&f, "roce", [10, 0, 0, 1]);
    let ib = f.add_node("ib", 1);
    let ib_port = ib.open_port(1).unwrap();
    let ib_pool = pool("ib", 64);
    let mut ib_qp = make_qp(&*ib_port, &ib_pool, &QpOpts::default());
    let ib_attr = ib_port.attr();
    assert_eq!(ib_attr.link_layer, LinkLayer::InfiniBand);
    assert_eq!(ib_attr.lid, Lid(2), "a RoCE node takes no LID");
    // By the InfiniBand port's GID: not a RoCE port's.
    let ah = r.ah(ib_attr.gid);
    r.send(b"x", ah, ib_qp.qpn);
    assert_eq!(f.stats().drop_count("unknown_gid"), 1);
    assert!(ib_qp.recv().is_empty());
    // An InfiniBand send to LID 0 cannot even be addressed.
    let to_roce = AhAttr {
        dlid: Lid(0),
        sl: 0,
        src_path_bits: 0,
        static_rate: ib_attr.rate,
        grh: Some(GrhAttr {
            dgid: mapped([10, 0, 0, 1]),
            flow_label: 0,
            sgid_index: 0,
            hop_limit: 64,
            traffic_class: 0,
        }),
    };
    assert!(ib_port.create_ah(&to_roce).is_err());
}
