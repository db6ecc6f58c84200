//! Bounds under attack (DESIGN rule 9: "a flood of packets to a million distinct groups
//! costs a counter, not memory"): a running stack's application pushes packets to a
//! million distinct IPv4 multicast groups, and separately to a million distinct unicast
//! next hops on its subnet (10.0.0.0/8), as fast as its lane goes. The group and
//! neighbour tables are bounded (`groups_max`, `neigh_max`), so almost every packet is a
//! counted drop at the control core; the few that get a table entry are queued, then
//! sent (a send-only join) or dropped (an unanswered ARP) and counted.
//!
//! Each flood is measured:
//! - the pool: buffers in use are back to their baseline once the tables emptied again
//!   (send-only groups expire, unresolved neighbours give up): no buffer lost;
//! - the heap (the counting global allocator, every thread): bytes and allocations
//!   outstanding after the flood are those before it, within a small constant, and the
//!   peak during the flood does not grow with it: each kind is flooded at two sizes,
//!   2^17 and 2^20 packets, and the large flood may not cost more than the small one;
//! - the counters: every packet pushed is accounted for, hop by hop (the application's
//!   pushes, the lane's send law, the control core's requests, drops and queues), and
//!   the drops are the bounds' own counters (`mcast_table_full`, `neigh_table_full`).

mod common;

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use ibpoll::{App, CtrlConfig, CtrlStats, Dest, IfaceConfig, LcoreCtx, LcoreStats, Stack, Tx};
use ibpoll_dev::{Counter, Nanos};
use ibpoll_mem::MbufArray;
use ibpoll_testkit::alloc::{self, CountingAlloc, Heap};
use ibpoll_wire::PKey;

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

const IP: [u8; 4] = [10, 0, 0, 1];
const GROUPS_MAX: usize = 1024;
const NEIGH_MAX: usize = 1024;
/// Packets pushed per lane iteration: the control core (polled every iteration) takes
/// up to 256 requests per poll, so its ring of 1024 never overflows and every packet
/// reaches the bounds under test.
const PER_ITERATION: u64 = 32;
/// Heap bytes a flood may leave behind: a few allocations that live on in caches (none
/// is expected; the figure is independent of the flood's size either way).
const HEAP_LEFT_MAX: i64 = 64 * 1024;
/// Allocations a flood may leave behind.
const ALLOCS_LEFT_MAX: i64 = 64;
/// How much more the heap may peak during the large flood than during the small one.
/// The tables are bounded, so both peaks are the same sizes plus timing (which groups
/// happen to be queued at once); a cost per packet would be 8 times larger (megabytes).
const PEAK_GROWTH_MAX: i64 = 512 * 1024;

/// What to flood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Mcast = 1,
    Unicast = 2,
    /// One datagram to 255.255.255.255 (see `settle`).
    Probe = 3,
}

/// The test's orders to the flooding application and its counts. The test writes the
/// plan, then bumps `generation` (Release); the application reads the generation
/// (Acquire) once per iteration and floods `count` distinct addresses from `base`.
#[derive(Debug, Default)]
struct Plan {
    kind: AtomicU8,
    base: AtomicU32,
    count: AtomicU64,
    generation: AtomicU64,
    /// The last generation the application finished (Release after its last push).
    done: AtomicU64,
    /// Packets pushed (the application is the single writer).
    pushed: Counter,
    /// Buffer allocations that failed (the push waits for the next iteration).
    nombuf: Counter,
}

/// Pushes one packet per destination of the current plan, `PER_ITERATION` at a time.
struct Flood {
    plan: Arc<Plan>,
    generation: u64,
    kind: u8,
    base: u32,
    count: u64,
    next: u64,
}

impl App for Flood {
    fn on_burst(&mut self, _: &LcoreCtx, rx: &mut MbufArray, _: &mut Tx) {
        rx.clear();
    }

    fn poll(&mut self, _: &LcoreCtx, tx: &mut Tx) -> bool {
        let g = self.plan.generation.load(Ordering::Acquire);
        if g != self.generation {
            self.generation = g;
            self.kind = self.plan.kind.load(Ordering::Relaxed);
            self.base = self.plan.base.load(Ordering::Relaxed);
            self.count = self.plan.count.load(Ordering::Relaxed);
            self.next = 0;
        }
        if self.next == self.count {
            return false;
        }
        for _ in 0..PER_ITERATION {
            let Some(mut m) = tx.alloc() else {
                self.plan.nombuf.inc();
                break;
            };
            let dst = (self.base + self.next as u32).to_be_bytes();
            build(&mut m, IP, dst, 9000, self.next as u32);
            let dest = if self.kind == Kind::Mcast as u8 {
                Dest::Group(ibpoll::GroupAddr::Ipv4(dst))
            } else {
                Dest::NextHop(dst)
            };
            tx.push(0, m, dest);
            self.plan.pushed.inc();
            self.next += 1;
            if self.next == self.count {
                // Release: pairs with the Acquire in `flood`; the pushes counted above
                // are seen by the test once it sees this.
                self.plan.done.store(self.generation, Ordering::Release);
                break;
            }
        }
        true
    }
}

/// What a flood is measured against.
#[derive(Debug, Clone, Copy)]
struct Point {
    heap: Heap,
    lane: LcoreStats,
    ctrl: CtrlStats,
    pushed: u64,
    in_use: usize,
}

fn point(stack: &Stack, plan: &Plan) -> Point {
    Point {
        heap: alloc::heap(),
        lane: stack.total_stats(),
        ctrl: stack.ctrl_stats().expect("controller"),
        pushed: plan.pushed.get(),
        in_use: stack.pool().in_use(),
    }
}

/// The tables' high-water marks while a flood ran.
#[derive(Debug, Default, Clone, Copy)]
struct Highs {
    groups: usize,
    neighbours: usize,
    queued: usize,
}

/// Floods `count` distinct addresses from `base` and waits until the application
/// pushed them all, sampling the controller's tables meanwhile.
fn flood(stack: &Stack, plan: &Plan, kind: Kind, base: [u8; 4], count: u64) -> Highs {
    plan.kind.store(kind as u8, Ordering::Relaxed);
    plan.base.store(u32::from_be_bytes(base), Ordering::Relaxed);
    plan.count.store(count, Ordering::Relaxed);
    // Release: pairs with the Acquire in `Flood::poll`.
    let g = plan.generation.fetch_add(1, Ordering::Release) + 1;
    let mut highs = Highs::default();
    let start = Instant::now();
    // Acquire: pairs with the Release in `Flood::poll`.
    while plan.done.load(Ordering::Acquire) != g {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "the flood of {count} did not end"
        );
        let (groups, neighbours, queued) = stack
            .with_controller(|c| {
                (
                    c.group_count(),
                    c.neighbour_count(),
                    c.mcast_queued() + c.neigh_queued(),
                )
            })
            .expect("controller");
        highs.groups = highs.groups.max(groups);
        highs.neighbours = highs.neighbours.max(neighbours);
        highs.queued = highs.queued.max(queued);
        std::thread::sleep(Duration::from_millis(2));
    }
    highs
}

/// Waits until the flood left nothing behind: only the broadcast group (at the SA too),
/// no neighbour, nothing queued or in flight, every address handle destroyed, the pool
/// at `in_use`; then sends the probe and waits for the lane's counters to be quiet.
///
/// The probe is one datagram to the broadcast group (it loops back to the stack's own
/// QP and is dropped there): the simulated switch rebuilds its multicast forwarding
/// table lazily, at the next multicast send, so without it the table of the groups that
/// just left (about 150 KB for 1023 groups) would stay in the heap until some later
/// multicast and count against whichever flood came next.
fn settle(stack: &Stack, fabric: &ibpoll_pmd_sim::SimFabric, plan: &Plan, in_use: usize) {
    let gid = stack.hwaddr().gid();
    wait_for("the tables to empty after the flood", T * 4, || {
        let idle = stack
            .with_controller(|c| {
                c.group_count() == 1
                    && c.neighbour_count() == 0
                    && c.mcast_queued() + c.neigh_queued() == 0
                    && c.sa_in_flight() == 0
                    && c.ah_waiting() == 0
                    && !c.is_flushing()
            })
            .expect("controller");
        idle && stack.pool().in_use() == in_use
            && fabric.with_sa(|sa| sa.memberships_of(&gid).count()) == 1
    });
    flood(stack, plan, Kind::Probe, [255, 255, 255, 255], 1);
    settle_counts(stack);
}

fn settle_counts(stack: &Stack) {
    let s = || {
        let t = stack.total_stats();
        t.rx_packets + t.app_tx + t.iterations.min(1)
    };
    common::settle(s, Duration::from_millis(100), T);
}

/// The drops the lane counted on the send path.
fn lane_tx_drops(s: &LcoreStats) -> u64 {
    s.tx_dropped()
}

/// Checks that every packet of a flood between `a` and `b` is accounted for, and that
/// the bound's own counter took the flood. Returns the bound's drops.
fn check_accounting(kind: Kind, count: u64, a: &Point, b: &Point) -> u64 {
    let d = |f: fn(&LcoreStats) -> u64| f(&b.lane) - f(&a.lane);
    let c = |f: fn(&CtrlStats) -> u64| f(&b.ctrl) - f(&a.ctrl);
    let pushed = b.pushed - a.pushed;
    assert_eq!(
        pushed,
        count + 1,
        "the application pushed the whole flood and the probe"
    );
    assert_eq!(d(|s| s.app_tx), pushed, "the lane counted every push");
    // The lane's send law: sent, handed to the control core, or dropped and counted.
    assert_eq!(
        d(|s| s.app_tx),
        d(|s| s.tx_posted) + d(|s| s.to_ctrl_mcast) + d(|s| s.to_ctrl_resolve) + d(lane_tx_drops),
        "lane send law: {:?}",
        b.lane
    );
    // Every destination is new: the snapshot never has it, so only the probe (to the
    // broadcast group, which the snapshot has) is sent directly.
    assert_eq!(d(|s| s.tx_posted), 1);
    // The stack's own ARP is looped back and dropped by the lane; none reaches the
    // control core (whose ARP counters would otherwise share the drop counters).
    assert_eq!(d(|s| s.rx_arp), 0);
    assert_eq!(c(|s| s.ring_full), 0, "the request ring never overflows");
    match kind {
        Kind::Mcast => {
            let to_ctrl = d(|s| s.to_ctrl_mcast);
            assert_eq!(d(|s| s.to_ctrl_resolve), 0);
            // At the control core: queued for a new group, or dropped (table full,
            // queue full, not a group of the partition).
            assert_eq!(
                to_ctrl,
                c(|s| s.mcast_queued)
                    + c(|s| s.mcast_table_full)
                    + c(|s| s.mcast_queue_full)
                    + c(|s| s.mcast_bad_group),
                "control core, multicast requests: {:?}",
                b.ctrl
            );
            // Once settled, every queued packet went out or was dropped and counted.
            assert_eq!(
                c(|s| s.mcast_queued),
                c(|s| s.mcast_sent_from_queue)
                    + c(|s| s.mcast_sendonly_dropped)
                    + c(|s| s.mcast_flush_dropped),
                "control core, multicast queues: {:?}",
                b.ctrl
            );
            assert!(c(|s| s.mcast_table_full) >= to_ctrl - c(|s| s.mcast_queued));
            assert!(
                c(|s| s.mcast_table_full) > to_ctrl / 2,
                "the group table's bound took the flood: {:?}",
                b.ctrl
            );
            c(|s| s.mcast_table_full)
        }
        Kind::Probe => panic!("the probe is not a flood"),
        Kind::Unicast => {
            let to_ctrl = d(|s| s.to_ctrl_resolve);
            assert_eq!(d(|s| s.to_ctrl_mcast), 0);
            // Queued behind ARP and given up after `arp_tries` (no host answers), or
            // dropped at once (table full, queue full).
            assert_eq!(
                to_ctrl,
                c(|s| s.neigh_table_full)
                    + c(|s| s.neigh_queue_full)
                    + c(|s| s.neigh_unresolved_dropped)
                    + c(|s| s.neigh_sent_from_queue),
                "control core, unicast requests: {:?}",
                b.ctrl
            );
            assert_eq!(c(|s| s.neigh_sent_from_queue), 0, "nobody answers the ARP");
            assert!(
                c(|s| s.neigh_table_full) > to_ctrl / 2,
                "the neighbour table's bound took the flood: {:?}",
                b.ctrl
            );
            c(|s| s.neigh_table_full)
        }
    }
}

/// What one flood cost.
#[derive(Debug)]
struct Cost {
    kind: Kind,
    count: u64,
    secs: f64,
    settle_secs: f64,
    left: Heap,
    peak: i64,
    bound_drops: u64,
    highs: Highs,
}

impl std::fmt::Display for Cost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "flood of {} to {:?}: pushed in {:.3} s, settled in {:.1} s; heap left {} B in {} \
             allocations, peak {} B above the start; {} drops at the bound; tables at most \
             {} groups, {} neighbours, {} packets queued",
            self.count,
            self.kind,
            self.secs,
            self.settle_secs,
            self.left.bytes,
            self.left.allocs,
            self.peak,
            self.bound_drops,
            self.highs.groups,
            self.highs.neighbours,
            self.highs.queued,
        )
    }
}

/// A stack whose one data lcore runs the flooding application, with the control core
/// polled every iteration and the bounds under test.
fn flooder(fabric: &ibpoll_pmd_sim::SimFabric, plan: &Arc<Plan>) -> Stack {
    let cfg = CtrlConfig {
        groups_max: GROUPS_MAX,
        neigh_max: NEIGH_MAX,
        // Short timers, so that the tables empty within seconds after each flood:
        // unresolved neighbours give up after 3 ARPs 100 ms apart, send-only groups
        // are left after half a second unused (checked once a second).
        arp_interval: Nanos::from_millis(100),
        sendonly_idle: Nanos::from_millis(500),
        // Expiry leaves at most a window of groups per tick (once a second): with the
        // default 64 the 1023 send-only groups a flood leaves take 16 s to go.
        sa_window: 256,
        ..CtrlConfig::default()
    };
    let plan = plan.clone();
    host(fabric, "flood", IP, 0)
        .interface(IfaceConfig {
            pkey: PKey::DEFAULT,
            ipv4: Some(IP),
            prefix_len: 8,
            ..IfaceConfig::default()
        })
        .ctrl_config(cfg)
        .ctrl_poll_interval(Duration::ZERO)
        .start(move |_| Flood {
            plan: plan.clone(),
            generation: 0,
            kind: 0,
            base: 0,
            count: 0,
            next: 0,
        })
        .expect("the stack starts")
}

/// One measured flood: pushed, settled, accounted for; the pool back where it was.
fn measured_flood(
    stack: &Stack,
    fabric: &ibpoll_pmd_sim::SimFabric,
    plan: &Plan,
    (kind, base, count): (Kind, [u8; 4], u64),
    in_use: usize,
) -> Cost {
    let before = point(stack, plan);
    alloc::reset_peak();
    let start = Instant::now();
    let highs = flood(stack, plan, kind, base, count);
    let secs = start.elapsed().as_secs_f64();
    let settled = Instant::now();
    settle(stack, fabric, plan, in_use);
    let settle_secs = settled.elapsed().as_secs_f64();
    let after = point(stack, plan);
    let bound_drops = check_accounting(kind, count, &before, &after);
    assert_eq!(after.in_use, before.in_use, "no buffer lost");
    Cost {
        kind,
        count,
        secs,
        settle_secs,
        left: after.heap.since(before.heap),
        peak: alloc::peak_live_bytes() - before.heap.bytes,
        bound_drops,
        highs,
    }
}

#[test]
fn a_million_groups_and_a_million_next_hops_cost_counters_not_memory() {
    let _serial = serial();
    let fabric = fabric();
    let plan = Arc::new(Plan::default());
    let stack = flooder(&fabric, &plan);
    assert!(stack.wait_link_up(T).unwrap(), "link up");
    settle_counts(&stack);
    let in_use = stack.pool().in_use();

    // Warm-up: both tables fill to their bounds once, so that every lazily grown
    // structure (hash tables, snapshot arrays, the SA's maps) has its final size.
    for (kind, base) in [
        (Kind::Mcast, [239, 1, 0, 0]),
        (Kind::Unicast, [10, 1, 0, 0]),
    ] {
        flood(&stack, &plan, kind, base, 20_000);
        settle(&stack, &fabric, &plan, in_use);
    }

    let floods = [
        (Kind::Mcast, [239, 2, 0, 0], 1u64 << 17),
        (Kind::Mcast, [239, 16, 0, 0], 1 << 20),
        (Kind::Unicast, [10, 2, 0, 0], 1 << 17),
        (Kind::Unicast, [10, 16, 0, 0], 1 << 20),
    ];
    let mut costs = Vec::new();
    for f in floods {
        let cost = measured_flood(&stack, &fabric, &plan, f, in_use);
        eprintln!("{cost}");
        assert!(cost.highs.groups <= GROUPS_MAX && cost.highs.neighbours <= NEIGH_MAX);
        assert!(
            cost.left.bytes.abs() <= HEAP_LEFT_MAX && cost.left.allocs.abs() <= ALLOCS_LEFT_MAX,
            "the flood left heap behind: {cost}"
        );
        costs.push(cost);
    }
    // The large flood (8 times the packets) peaks no higher than the small one, within
    // timing noise: the memory a flood uses is the tables', not the packets'.
    for pair in costs.chunks(2) {
        let (small, large) = (&pair[0], &pair[1]);
        assert!(
            large.peak <= small.peak + PEAK_GROWTH_MAX,
            "the heap's peak grew with the flood:\n{small}\n{large}"
        );
    }

    let report = stack.stop().expect("stop");
    assert_conserved(&report);
    assert_eq!(report.pool_in_use, 0, "every buffer back after stop");
    assert!(report.flushed);
    assert_eq!(
        plan.nombuf.get(),
        0,
        "the pool never ran dry: the tables bound the buffers queued"
    );
}
