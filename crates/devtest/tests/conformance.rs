//! The driver contract's conformance suite against the simulator: as an InfiniBand HCA
//! answers through verbs, as a RoCE v2 port, with every optional capability, and under
//! each test-device wrapper. A template for other PMDs' `tests/conformance.rs`.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{RoceFixture, SimFixture};
use ibpoll_dev::Port;
use ibpoll_devtest::capture::read_capture;
use ibpoll_devtest::conformance::{EventCause, Fixture, Group};
use ibpoll_devtest::{
    Backpressure, BackpressureConfig, FaultConfig, FaultInjector, PcapTap, PcapTapConfig,
};
use ibpoll_mem::Mempool;

mod sim {
    ibpoll_devtest::conformance_tests!(super::SimFixture::new());
}

mod sim_roce {
    ibpoll_devtest::conformance_tests!(super::RoceFixture::new());
}

mod sim_all_caps {
    ibpoll_devtest::conformance_tests!(super::SimFixture::all_caps());
}

mod sim_backpressure {
    ibpoll_devtest::conformance_tests!(super::backpressure());
}

mod sim_fault_injector {
    ibpoll_devtest::conformance_tests!(super::fault_injector());
}

mod sim_pcap_tap {
    ibpoll_devtest::conformance_tests!(super::PcapFixture::new());
}

mod sim_stacked {
    ibpoll_devtest::conformance_tests!(super::stacked());
}

/// The simulator behind [`Backpressure`]: bursts take 0 to 32, sends wait 0 to 4 ticks.
fn backpressure() -> SimFixture {
    let seed = std::sync::atomic::AtomicU64::new(0xb9);
    SimFixture::wrapped(Box::new(move |p| {
        let s = seed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Backpressure::new(p, BackpressureConfig::new(s)) as Arc<dyn Port>
    }))
}

/// The simulator behind a [`FaultInjector`] with no faults drawn: the wrapper must be
/// transparent (its faults are tested in `tests/fault_injector.rs`).
fn fault_injector() -> SimFixture {
    SimFixture::wrapped(Box::new(|p| {
        FaultInjector::new(p, FaultConfig::new(0xfa)) as Arc<dyn Port>
    }))
}

/// All three wrappers at once: a tap over a (fault-free) injector over back-pressure,
/// so the injector's and the tap's queues sit on a queue that refuses and completes
/// late.
fn stacked() -> SimFixture {
    let seed = std::sync::atomic::AtomicU64::new(0x57);
    SimFixture::wrapped(Box::new(move |p| {
        let s = seed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let bp = Backpressure::new(p, BackpressureConfig::new(s).accept(0, 8).delay(0, 8));
        let fi = FaultInjector::new(bp, FaultConfig::new(s));
        let sink = Box::new(std::io::sink());
        let tap = PcapTap::new(fi, sink, "sink", PcapTapConfig::new()).expect("a sink");
        tap as Arc<dyn Port>
    }))
}

/// A capture kept in memory.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The taps of a fixture's ports, each with its capture.
type Taps = Arc<Mutex<Vec<(Arc<PcapTap>, Buffer)>>>;

/// The simulator behind a [`PcapTap`] on each port; when the fixture goes, every frame
/// both captures hold must parse back with correct CRCs.
struct PcapFixture {
    sim: SimFixture,
    taps: Taps,
}

impl PcapFixture {
    fn new() -> PcapFixture {
        let taps = Taps::default();
        let keep = taps.clone();
        let sim = SimFixture::wrapped(Box::new(move |p| {
            let buf = Buffer::default();
            let tap = PcapTap::new(p, Box::new(buf.clone()), "memory", PcapTapConfig::new())
                .expect("an in-memory capture starts");
            keep.lock().unwrap().push((tap.clone(), buf));
            tap as Arc<dyn Port>
        }));
        PcapFixture { sim, taps }
    }
}

impl Fixture for PcapFixture {
    fn ports(&self) -> [Arc<dyn Port>; 2] {
        self.sim.ports()
    }
    fn pool(&self, name: &str, n_bufs: u32) -> Mempool {
        self.sim.pool(name, n_bufs)
    }
    fn group(&self) -> Option<Group> {
        self.sim.group()
    }
    fn cause(&self, side: usize, cause: EventCause) -> bool {
        self.sim.cause(side, cause)
    }
    fn quiet(&self) -> std::time::Duration {
        self.sim.quiet()
    }
}

impl Drop for PcapFixture {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        for (tap, buf) in self.taps.lock().unwrap().iter() {
            let status = tap.finish().expect("the in-memory capture cannot fail");
            assert!(status.frames >= 2, "the joins at least: {status:?}");
            let bytes = buf.0.lock().unwrap();
            let records = read_capture(&bytes).expect("the capture reads back");
            assert_eq!(records.len() as u64, status.frames);
            for r in &records {
                ibpoll_wire::crc::verify_crcs(&r.frame).expect("every frame's CRCs");
            }
        }
    }
}
