//! Set-up errors are typed, name the input at fault and say how to fix it.

mod common;

use common::Host;
use ibpoll_dev::{Device, Error, MadAddr, PortState, UdQpConfig};
use ibpoll_pmd_sim::{FabricConfig, SimFabric};
use ibpoll_wire::{ipoib, Lid, PKey, QKey, Qpn};

fn fabric() -> SimFabric {
    SimFabric::new(FabricConfig::default())
}

fn qp_config(pool: &ibpoll_mem::Mempool) -> UdQpConfig {
    let mut cfg = UdQpConfig::new(pool.clone(), 0, QKey::IPOIB_DEFAULT);
    cfg.rx_ring_size = 256;
    cfg.tx_ring_size = 256;
    cfg
}

#[test]
fn opening_a_port_the_device_lacks_is_no_such_port() {
    let f = fabric();
    let dev = f.add_node("two-ports", 2);
    assert!(dev.open_port(1).is_ok());
    assert!(dev.open_port(2).is_ok());
    for bad in [0u8, 3, 9] {
        match dev.open_port(bad) {
            Err(e @ Error::NoSuchPort { port, count: 2, .. }) if port == bad => {
                let msg = e.to_string();
                assert!(msg.contains("two-ports"), "{msg}");
                assert!(msg.contains("numbered from 1"), "{msg}");
            }
            other => panic!("open_port({bad}): {other:?}"),
        }
    }
}

#[test]
fn bad_ring_and_queue_sizes_are_qp_config_errors_naming_the_field() {
    let f = fabric();
    let a = Host::new(&f, "a");
    type Spoil = fn(&mut UdQpConfig);
    let cases: [(&str, Spoil); 9] = [
        ("rx_ring_size", |c| c.rx_ring_size = 100),
        ("rx_ring_size", |c| c.rx_ring_size = 16),
        ("rx_ring_size", |c| c.rx_ring_size = 65536),
        ("tx_ring_size", |c| c.tx_ring_size = 33),
        ("tx_ring_size", |c| c.tx_ring_size = 0),
        ("rx_queues", |c| c.rx_queues = 0),
        ("rx_queues", |c| c.rx_queues = 2),
        ("rx_queues", |c| c.rx_queues = 65),
        ("block_self_mcast_lb", |c| c.block_self_mcast_lb = true),
    ];
    for (want, spoil) in cases {
        let mut cfg = qp_config(&a.pool);
        spoil(&mut cfg);
        match a.port.create_ud_qp(&cfg) {
            Err(e @ Error::QpConfig { field, .. }) => {
                assert_eq!(field, want);
                assert!(e.to_string().contains(want), "{e}");
            }
            other => panic!("{want}: {other:?}"),
        }
    }
    let mut cfg = qp_config(&a.pool);
    cfg.rx_ring_size = 32;
    assert!(a.port.create_ud_qp(&cfg).is_ok(), "32 is the smallest ring");
    cfg.rx_ring_size = 0;
    cfg.rx_queues = 0;
    let send_only = a.port.create_ud_qp(&cfg).expect("0 is a send-only QP");
    assert!(send_only.rx.is_empty());
}

#[test]
fn a_pkey_index_outside_the_table_or_on_an_invalid_entry_is_refused() {
    let f = fabric();
    let a = Host::new(&f, "a");
    f.set_pkeys(a.port_id(), vec![PKey::DEFAULT, PKey(0)]);
    for index in [1u16, 2, 100] {
        let mut cfg = qp_config(&a.pool);
        cfg.pkey_index = index;
        match a.port.create_ud_qp(&cfg) {
            Err(Error::PkeyIndex { port: 1, index: i }) => assert_eq!(i, index),
            other => panic!("pkey_index {index}: {other:?}"),
        }
    }
}

#[test]
fn attaching_to_a_unicast_gid_is_a_multicast_error() {
    let f = fabric();
    let a = Host::new(&f, "a");
    let unicast = a.gid();
    match a.port.attach_mcast(a.qp.qpn, &unicast, Lid(0xC000)) {
        Err(Error::Mcast {
            op: "attach", qpn, ..
        }) => assert_eq!(qpn, a.qp.qpn),
        other => panic!("{other:?}"),
    }
    // A multicast GID with a unicast LID is refused too.
    let mgid = ipoib::broadcast_mgid(PKey::DEFAULT);
    assert!(matches!(
        a.port.attach_mcast(a.qp.qpn, &mgid, Lid(5)),
        Err(Error::Mcast { .. })
    ));
    // And a QP the port does not have.
    assert!(matches!(
        a.port
            .attach_mcast(Qpn::new(0xabcd).unwrap(), &mgid, Lid(0xC000)),
        Err(Error::Mcast { .. })
    ));
    assert!(a.port.attach_mcast(a.qp.qpn, &mgid, Lid(0xC000)).is_ok());
}

#[test]
fn destroying_an_address_handle_twice_is_no_such_ah() {
    let f = fabric();
    let a = Host::new(&f, "a");
    let b = Host::new(&f, "b");
    let ah = a.ah(b.lid());
    // Another port cannot destroy it.
    assert!(matches!(b.destroy_ah(ah), Err(Error::NoSuchAh(_))));
    a.destroy_ah(ah).unwrap();
    match a.destroy_ah(ah) {
        Err(Error::NoSuchAh(raw)) => assert_eq!(raw, ah.raw()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_mad_to_anyone_but_the_sm_is_a_mad_send_error() {
    let f = fabric();
    let mut a = Host::new(&f, "a");
    let b = Host::new(&f, "b");
    let (mask, attr) = common::broadcast_join(a.gid());
    let mad = ibpoll_wire::sa::SaMad::request(ibpoll_wire::mad::Method::SET, 1, mask, attr);
    let to = MadAddr {
        lid: b.lid(),
        ..common::sa_addr(&a.attr())
    };
    match a.mad.send(&mad.to_bytes(), to) {
        Err(Error::MadSend { dlid, dqpn, .. }) => {
            assert_eq!(dlid, b.lid());
            assert_eq!(dqpn, Qpn::GSI);
        }
        other => panic!("{other:?}"),
    }
    // The SM's LID but not QP1 is refused as well.
    let to = MadAddr {
        qpn: Qpn::new(0x48).unwrap(),
        ..common::sa_addr(&a.attr())
    };
    assert!(matches!(
        a.mad.send(&mad.to_bytes(), to),
        Err(Error::MadSend { .. })
    ));
    assert_eq!(f.stats().sa_requests, 0);
}

#[test]
fn a_mad_on_a_down_port_is_port_not_active() {
    let f = fabric();
    let mut a = Host::new(&f, "a");
    f.set_port_up(a.port_id(), false);
    let (mask, attr) = common::broadcast_join(a.gid());
    let mad = ibpoll_wire::sa::SaMad::request(ibpoll_wire::mad::Method::SET, 1, mask, attr);
    match a.mad.send(&mad.to_bytes(), common::sa_addr(&a.attr())) {
        Err(Error::PortNotActive {
            port: 1,
            state: PortState::Down,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(f.stats().sa_requests, 0);
}
