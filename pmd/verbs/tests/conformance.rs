//! The driver contract's conformance suite over real verbs: the kernel's soft-RoCE
//! (`rdma_rxe`) on `lo`, inside the VM that scripts/vm-test.sh boots.
//!
//! rxe on `lo` has one port, so both sides of the suite are that port (the same `Arc`
//! twice): the tests' QPs tell them apart. Its address handles send from the GID of the
//! netdev's IPv4 address (`::ffff:127.0.0.1`: RoCE v2 routes by it); its multicast group
//! is the IPv4-mapped `::ffff:239.1.2.3`.
//!
//! Environment: `IBPOLL_RXE=1` (set in the VM) makes a missing device a failure;
//! without it the tests say why they are skipped and pass. `IBPOLL_RXE_DEVICE` (default
//! `rxe0`) and `IBPOLL_RXE_ADDR` (default 127.0.0.1) name the device and the netdev's
//! address. `IBPOLL_RXE_EVENTS=1` lets the events test take the netdev down and up
//! (with `ip`): only in the VM, where nothing else uses `lo`; the test binary must then
//! run with one test thread. (A GID change cannot be caused there: the kernel's RoCE GID
//! management follows the IP addresses of Ethernet netdevs only, not of `lo`.)

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ibpoll_dev::{AhAttr, GrhAttr, Port};
use ibpoll_devtest::conformance::{EventCause, Fixture, Group};
use ibpoll_mem::{HugepagePolicy, Mempool, MempoolConfig};
use ibpoll_pmd_verbs::{gid_index, ipv4_mapped_gid, VerbsDevice};
use ibpoll_wire::{Gid, Lid, QKey};

mod rxe {
    ibpoll_devtest::conformance_tests!(optional: super::RxeFixture::open_or_skip());
}

fn env_is(var: &str) -> bool {
    std::env::var_os(var).is_some_and(|v| v == "1")
}

/// One rxe port as both sides of the suite.
struct RxeFixture {
    _dev: VerbsDevice,
    port: Arc<dyn Port>,
    sgid_index: u8,
    group: Group,
    /// `IBPOLL_RXE_EVENTS=1`: the fixture may change the netdev.
    events: bool,
    /// The netdev was taken down: bring it up on drop.
    touched: AtomicBool,
}

impl RxeFixture {
    /// The fixture, or `None` (with the reason on standard error) where no rxe device
    /// exists and `IBPOLL_RXE=1` is not set.
    fn open_or_skip() -> Option<RxeFixture> {
        let name = std::env::var("IBPOLL_RXE_DEVICE").unwrap_or_else(|_| "rxe0".into());
        let addr: Ipv4Addr = std::env::var("IBPOLL_RXE_ADDR")
            .ok()
            .and_then(|a| a.parse().ok())
            .unwrap_or(Ipv4Addr::LOCALHOST);
        let dev = match VerbsDevice::open(&name) {
            Ok(d) => d,
            Err(e) if !env_is("IBPOLL_RXE") => {
                eprintln!("SKIPPED: {e} (set IBPOLL_RXE=1 where {name} exists)");
                return None;
            }
            Err(e) => panic!("IBPOLL_RXE=1 but {name} cannot be opened: {e}"),
        };
        let port = dev.active_port(1).unwrap_or_else(|e| panic!("{e}"));
        let attr = port.attr();
        let table: Vec<[u8; 16]> = attr.gids.iter().map(|g| g.0).collect();
        let sgid_index = gid_index(&table, &ipv4_mapped_gid(addr.octets()))
            .unwrap_or_else(|| panic!("no ::ffff:{addr} in {name}'s GID table {:?}", attr.gids));
        let mgid = Gid(ipv4_mapped_gid([239, 1, 2, 3]));
        let ah = AhAttr {
            dlid: Lid(0),
            sl: 0,
            src_path_bits: 0,
            static_rate: attr.rate,
            grh: Some(GrhAttr {
                dgid: mgid,
                flow_label: 0,
                sgid_index,
                hop_limit: 64,
                traffic_class: 0,
            }),
        };
        let pkey = *attr.pkeys.first().expect("a P_Key table");
        let group = Group::new(mgid, Lid(0), QKey::IPOIB_DEFAULT, pkey, ah);
        Some(RxeFixture {
            _dev: dev,
            port: Arc::new(port),
            sgid_index,
            group,
            events: env_is("IBPOLL_RXE_EVENTS"),
            touched: AtomicBool::new(false),
        })
    }
}

/// Runs `ip ARGS`; whether it worked.
fn ip(args: &[&str]) -> bool {
    match Command::new("ip").args(args).status() {
        Ok(s) if s.success() => true,
        other => {
            eprintln!("ip {}: {other:?}", args.join(" "));
            false
        }
    }
}

impl Fixture for RxeFixture {
    fn ports(&self) -> [Arc<dyn Port>; 2] {
        [self.port.clone(), self.port.clone()]
    }

    fn pool(&self, name: &str, n_bufs: u32) -> Mempool {
        Mempool::new(MempoolConfig {
            cache_size: 0,
            hugepages: HugepagePolicy::Never,
            ..MempoolConfig::new(name, n_bufs)
        })
        .expect("a test pool")
    }

    fn sgid_index(&self, _side: usize) -> u8 {
        self.sgid_index
    }

    fn group(&self) -> Option<Group> {
        Some(self.group)
    }

    fn cause(&self, _side: usize, cause: EventCause) -> bool {
        if !self.events {
            return false;
        }
        let done = match cause {
            EventCause::LinkDown => ip(&["link", "set", "lo", "down"]),
            EventCause::LinkUp => ip(&["link", "set", "lo", "up"]),
            _ => return false,
        };
        self.touched.fetch_or(done, Ordering::Relaxed);
        eprintln!(
            "rxe fixture: {cause:?} on lo: {}",
            if done { "made" } else { "failed" }
        );
        done
    }

    /// Software emulation (TCG) on two shared cores: generous.
    fn patience(&self) -> Duration {
        Duration::from_secs(30)
    }

    fn quiet(&self) -> Duration {
        Duration::from_millis(300)
    }
}

impl Drop for RxeFixture {
    fn drop(&mut self) {
        if self.touched.load(Ordering::Relaxed) {
            ip(&["link", "set", "lo", "up"]);
        }
    }
}
