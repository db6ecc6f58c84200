//! Two replay ports over two ports of a simulated fabric, as a conformance fixture and
//! for the replay port's own tests.
#![allow(dead_code)] // each test binary uses a different part

use std::sync::Arc;
use std::time::Duration;

use ibpoll_dev::{Device, Port};
use ibpoll_devtest::conformance::{join_broadcast, EventCause, Fixture, Group};
use ibpoll_mem::{HugepagePolicy, Mempool, MempoolConfig};
use ibpoll_pmd_replay::{Frames, ReplayPort, Stream, StreamControl};
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

/// The partitions of both ports: the default and a second one.
pub const PARTITIONS: [PKey; 2] = [PKey::DEFAULT, PKey(0x8001)];

/// The benchmark's frames: 64-byte IPv4/UDP packets, 4 flows.
pub fn frames() -> Frames {
    Frames::ipv4_udp([10, 1, 0, 2], [10, 2, 0, 2], 64, 4, 64).expect("valid frames")
}

/// Two one-port nodes of a simulated subnet, each port wrapped in a replay port with a
/// stream on the default partition (running or paused), both full members of the
/// default partition's broadcast group.
pub struct ReplayFixture {
    pub fabric: SimFabric,
    pub devs: [Arc<SimDevice>; 2],
    pub ports: [Arc<ReplayPort>; 2],
    pub controls: [StreamControl; 2],
    pub group: Group,
}

impl ReplayFixture {
    /// Streams on the default partition, running.
    pub fn streaming() -> ReplayFixture {
        ReplayFixture::with(true, |p| p)
    }

    /// Streams on the default partition, paused: the wrapped ports' behaviour.
    pub fn paused() -> ReplayFixture {
        ReplayFixture::with(false, |p| p)
    }

    /// `wrap` is applied to each simulated port before the replay port wraps it.
    pub fn with(running: bool, wrap: impl Fn(Arc<dyn Port>) -> Arc<dyn Port>) -> ReplayFixture {
        let fabric = SimFabric::new(FabricConfig {
            partitions: PARTITIONS.to_vec(),
            ..FabricConfig::default()
        });
        let devs = [fabric.add_node("a", 1), fabric.add_node("b", 1)];
        let streams = [0, 1].map(|_| Stream::new(PKey::DEFAULT, frames()));
        let controls = [0, 1].map(|i| streams[i].control());
        if !running {
            controls.iter().for_each(StreamControl::pause);
        }
        let mut streams = streams.into_iter();
        let ports = [0, 1].map(|i| {
            let inner = wrap(devs[i].open_port(1).expect("port 1"));
            ReplayPort::new(inner, vec![streams.next().expect("two streams")])
        });
        let group = join_broadcast(&*ports[0]);
        join_broadcast(&*ports[1]);
        ReplayFixture {
            fabric,
            devs,
            ports,
            controls,
            group,
        }
    }
}

impl Fixture for ReplayFixture {
    fn ports(&self) -> [Arc<dyn Port>; 2] {
        self.ports.clone().map(|p| p as Arc<dyn Port>)
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
