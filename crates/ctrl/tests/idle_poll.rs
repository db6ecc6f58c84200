//! A poll with nothing due allocates nothing: the controller may be polled from a data
//! lcore, where nothing allocates after start-up. A counting global allocator watches
//! this test's thread while a controller with joined groups (full and send-only) and a
//! resolved neighbour is polled through several expiry checks.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ibpoll_ctrl::{Controller, CtrlConfig, DataCore, GroupAddr, GroupPhase, Poll, Request};
use ibpoll_dev::{Device, Nanos, RxQueue, UdQpConfig, VirtualClock};
use ibpoll_mem::{HugepagePolicy, Mbuf, Mempool, MempoolConfig};
use ibpoll_pmd_sim::{FabricConfig, FaultConfig, SimDevice, SimFabric};
use ibpoll_wire::ipoib::{self, EtherType};
use ibpoll_wire::{PKey, QKey};

struct Counting;

thread_local! {
    /// Whether allocations on this thread are counted (const, no destructor: readable
    /// from inside the allocator).
    static TRACK: Cell<bool> = const { Cell::new(false) };
}

static ALLOCS: AtomicU64 = AtomicU64::new(0);

fn track() {
    if TRACK.try_with(Cell::get).unwrap_or(false) {
        // Relaxed: a count read on the same thread.
        ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; counting touches
// only an atomic and a const thread-local.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        track();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        track();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        track();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

struct Node {
    _dev: Arc<SimDevice>,
    ctl: Controller,
    cores: Vec<DataCore>,
    rx: Box<dyn RxQueue>,
    pool: Mempool,
}

impl Node {
    fn new(fabric: &SimFabric, clock: &Arc<VirtualClock>, name: &str, ip: [u8; 4]) -> Node {
        let dev = fabric.add_node(name, 1);
        let port = dev.open_port(1).expect("port");
        let attr = port.attr();
        let pool = Mempool::new(MempoolConfig {
            name: name.to_owned(),
            n_bufs: 1024,
            data_room: 2048,
            cache_size: 0,
            hugepages: HugepagePolicy::Never,
            ..MempoolConfig::default()
        })
        .expect("mempool");
        let mut qp = port
            .create_ud_qp(&UdQpConfig {
                pkey_index: attr.pkey_index(PKey::DEFAULT).expect("default partition"),
                qkey: QKey::IPOIB_DEFAULT,
                rx_queues: 1,
                tx_queues: 1,
                rx_ring_size: 1024,
                tx_ring_size: 1024,
                pool: pool.clone(),
            })
            .expect("qp");
        let cfg = CtrlConfig {
            ipv4: Some(ip),
            ..CtrlConfig::default()
        };
        let tx = qp.tx.pop().expect("tx");
        let clock: Arc<dyn ibpoll_dev::Clock> = clock.clone();
        let (ctl, cores) =
            Controller::new(cfg, port, qp.qpn, tx, pool.clone(), clock).expect("ctl");
        Node {
            _dev: dev,
            ctl,
            cores,
            rx: qp.rx.pop().expect("rx"),
            pool,
        }
    }

    fn packet(&self) -> Mbuf {
        let mut m = self.pool.alloc().expect("buffer");
        let d = m.append(ipoib::HEADER_LEN + 4).expect("room");
        ipoib::Repr {
            ethertype: EtherType::IPV4,
        }
        .emit(&mut ipoib::Packet::new_unchecked(
            &mut d[..ipoib::HEADER_LEN],
        ));
        m
    }

    fn step(&mut self) {
        self.ctl.poll();
        for c in &mut self.cores {
            c.reader.quiescent();
        }
        let mut pkts: [Option<Mbuf>; 32] = Default::default();
        loop {
            let n = self.rx.rx_burst(&mut pkts);
            if n == 0 {
                return;
            }
            for slot in &mut pkts[..n] {
                let m = slot.take().expect("filled");
                let arp = ipoib::Packet::new_checked(m.data())
                    .and_then(|h| ipoib::Repr::parse(&h))
                    .is_ok_and(|r| r.ethertype == EtherType::ARP);
                if arp {
                    let _ = self.cores[0].requests.send(Request::Arp { mbuf: m });
                }
            }
        }
    }
}

#[test]
fn idle_poll_allocates_nothing() {
    const PEER: [u8; 4] = [10, 0, 0, 2];
    let clock = Arc::new(VirtualClock::new());
    let fabric = SimFabric::new(FabricConfig {
        clock: clock.clone(),
        faults: FaultConfig::NONE,
        ..FabricConfig::default()
    });
    let mut a = Node::new(&fabric, &clock, "a", [10, 0, 0, 1]);
    let mut b = Node::new(&fabric, &clock, "b", PEER);
    let full: Vec<GroupAddr> = (0..32).map(|i| GroupAddr::Ipv4([239, 2, 0, i])).collect();
    let send_only = GroupAddr::Ipv4([239, 3, 0, 1]);
    for g in &full {
        assert!(a.ctl.join_group(*g));
    }
    let m = a.packet();
    a.cores[0]
        .requests
        .send(Request::Mcast {
            group: send_only,
            mbuf: m,
        })
        .expect("ring");
    let m = a.packet();
    a.cores[0]
        .requests
        .send(Request::Resolve {
            next_hop: PEER,
            mbuf: m,
        })
        .expect("ring");
    for _ in 0..500 {
        a.step();
        b.step();
        clock.advance(Nanos::from_millis(10));
    }
    for g in full.iter().chain([&send_only]) {
        assert_eq!(a.ctl.group_phase(*g), Some(GroupPhase::Joined), "{g:?}");
    }
    assert!(
        a.cores[0].reader.get().neighbour(&PEER).is_some(),
        "resolved"
    );

    // Polls with nothing due, across several once-a-second expiry checks (the
    // send-only group is used meanwhile, so it stays).
    let mut idle = 0;
    // Relaxed: counted and read on this thread only.
    ALLOCS.store(0, Ordering::Relaxed);
    TRACK.with(|t| t.set(true));
    for i in 0..20_000u32 {
        if a.ctl.poll() == Poll::Idle {
            idle += 1;
        }
        for c in &mut a.cores {
            c.reader.quiescent();
        }
        if i % 1000 == 0 {
            let snap = a.cores[0].reader.get();
            if let Some(e) = snap.group(&snap.ipv4_mgid([239, 3, 0, 1])) {
                e.mark_used();
            }
        }
        clock.advance(Nanos(500_000));
    }
    TRACK.with(|t| t.set(false));
    assert_eq!(
        ALLOCS.load(Ordering::Relaxed),
        0,
        "allocations in idle polls"
    );
    assert!(idle >= 19_990, "{idle} of 20000 polls idle");
    assert_eq!(a.ctl.group_phase(send_only), Some(GroupPhase::Joined));
}
