//! A ring pair over two ports of a simulated fabric, as a conformance fixture and for
//! the ring's own tests.
#![allow(dead_code)] // each test binary uses a different part

use std::sync::Arc;
use std::time::Duration;

use ibpoll_dev::{Device, Port};
use ibpoll_devtest::conformance::{join_broadcast, EventCause, Fixture, Group};
use ibpoll_mem::{HugepagePolicy, Mempool, MempoolConfig};
use ibpoll_pmd_ring::RingPair;
use ibpoll_pmd_sim::{FabricConfig, SimDevice, SimFabric};
use ibpoll_wire::{Lid, PKey};

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

/// The partitions of both ports: the default and a second one (the P_Key move test).
pub const PARTITIONS: [PKey; 2] = [PKey::DEFAULT, PKey(0x8001)];

/// How the pair's ports are wrapped.
pub type Wrap = Box<dyn Fn(Arc<dyn Port>) -> Arc<dyn Port>>;

/// Two one-port nodes of a simulated subnet joined by a ring pair, both full members
/// of the default partition's broadcast group (joined through the ring ports' MAD
/// channels, which are the fabric's).
pub struct RingFixture {
    pub fabric: SimFabric,
    pub devs: [Arc<SimDevice>; 2],
    pub pair: RingPair,
    pub ports: [Arc<dyn Port>; 2],
    pub group: Group,
}

impl RingFixture {
    pub fn new() -> RingFixture {
        RingFixture::wrapped(Box::new(|p| p))
    }

    pub fn wrapped(wrap: Wrap) -> RingFixture {
        let fabric = SimFabric::new(FabricConfig {
            partitions: PARTITIONS.to_vec(),
            ..FabricConfig::default()
        });
        let devs = [fabric.add_node("a", 1), fabric.add_node("b", 1)];
        let [a, b] = [0, 1].map(|i| devs[i].open_port(1).expect("port 1"));
        let pair = RingPair::from_ports(a, b);
        let ports = [0, 1].map(|i| wrap(pair.port(i)));
        let group = join_broadcast(&*ports[0]);
        let again = join_broadcast(&*ports[1]);
        assert_eq!((group.mlid, group.qkey), (again.mlid, again.qkey));
        RingFixture {
            fabric,
            devs,
            pair,
            ports,
            group,
        }
    }
}

impl Fixture for RingFixture {
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

    /// The ring delivers within the call that sends.
    fn quiet(&self) -> Duration {
        Duration::ZERO
    }
}
