//! The fixture of the fan-out cost measurement (`fanout-ir`): the receiving lane's work
//! per packet with software fan-out ([`ibpoll::Fanout::FlowHash`]) and without, and the
//! worker's per packet taken from its ring.
//!
//! Two stacks on the embedded simulated fabric, driven by the application's own loop on
//! one thread (no lcore threads): `a` with two data lanes receives, `b` with one sends
//! 64-byte IPv4/UDP packets of [`FLOWS`] flows to `a`'s address, one burst of
//! [`BURST`] per round. Per round: `b`'s lane sends a burst (the fabric delivers it into
//! `a`'s interface QP, lane 0's), then `a`'s lane 0 polls once ([`Fixture::round`]:
//! receive, classify, with fan-out hash and hand the other lane's flows to its ring,
//! give its own to the application, which frees them in bulk), then lane 1 polls once
//! (its own queue is empty; with fan-out it takes its ring's packets). The controllers
//! are polled between rounds, outside what is measured.
//!
//! [`receiver_poll`] and [`worker_poll`] are never inlined, so that callgrind can count
//! each lane's polls (`callgrind_annotate --inclusive=yes`): divided by the packets lane
//! 0 received, that is the cost per packet of each lane, the simulated NIC's receive
//! included (the same with and without fan-out; the difference is fan-out's).

use std::time::{Duration, Instant};

use ibpoll::{
    App, Control, Dest, FabricConfig, Fanout, Lane, LcoreCtx, LcoreStats, MbufArray, SimFabric,
    Stack, Tx,
};

/// Flows, by UDP source port.
pub const FLOWS: u16 = 64;
/// Packets per round.
pub const BURST: usize = 32;
/// IP packet size.
pub const SIZE: usize = 64;

const A_IP: [u8; 4] = [10, 0, 0, 1];
const B_IP: [u8; 4] = [10, 0, 0, 2];

/// The application of `a`'s lanes: frees what it receives (in bulk, as a consumer
/// that is done with its packets would).
#[derive(Debug, Default)]
pub struct Sink {
    /// Packets received.
    pub received: u64,
}

impl App for Sink {
    fn on_burst(&mut self, _ctx: &LcoreCtx, rx: &mut MbufArray, _tx: &mut Tx) {
        self.received += rx.len() as u64;
        rx.clear();
    }
}

/// `b`'s application: `budget` packets per poll, round-robin over the flows.
#[derive(Debug, Default)]
struct Gen {
    budget: usize,
    seq: u32,
}

impl App for Gen {
    fn on_burst(&mut self, _: &LcoreCtx, rx: &mut MbufArray, _: &mut Tx) {
        rx.clear();
    }

    fn poll(&mut self, _ctx: &LcoreCtx, tx: &mut Tx) -> bool {
        let n = std::mem::take(&mut self.budget);
        for _ in 0..n {
            let Some(mut m) = tx.alloc() else { break };
            let Some(d) = m.append(SIZE) else { break };
            udp_packet(d, 10_000 + (self.seq % u32::from(FLOWS)) as u16, self.seq);
            self.seq = self.seq.wrapping_add(1);
            tx.push(0, m, Dest::NextHop(A_IP));
        }
        n > 0
    }
}

/// A 64-byte IPv4/UDP packet from B to A, source port `sport`.
fn udp_packet(d: &mut [u8], sport: u16, seq: u32) {
    d.fill(0);
    d[0] = 0x45;
    d[2..4].copy_from_slice(&(SIZE as u16).to_be_bytes());
    d[8] = 64;
    d[9] = 17;
    d[12..16].copy_from_slice(&B_IP);
    d[16..20].copy_from_slice(&A_IP);
    d[20..22].copy_from_slice(&sport.to_be_bytes());
    d[22..24].copy_from_slice(&9000u16.to_be_bytes());
    d[24..26].copy_from_slice(&((SIZE - 20) as u16).to_be_bytes());
    d[28..32].copy_from_slice(&seq.to_be_bytes());
}

/// The two stacks, their pollers and lanes (see the module docs).
pub struct Fixture {
    _fabric: SimFabric,
    _stacks: [Stack; 2],
    ctl: [Control; 2],
    /// `a`'s lanes: 0 receives on the interface's QP, 1 is the worker.
    pub a: Vec<Lane>,
    b: Lane,
    gen: Gen,
    /// `a`'s applications, by lane.
    pub sinks: [Sink; 2],
}

impl std::fmt::Debug for Fixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fixture").finish_non_exhaustive()
    }
}

/// Lane 0's poll, counted apart by callgrind (`--toggle-collect='*receiver_poll*'`).
#[inline(never)]
pub fn receiver_poll(lane: &mut Lane, app: &mut Sink) -> bool {
    // Different from `worker_poll`'s body, so that the linker does not fold the two.
    lane.poll(app) | std::hint::black_box(false)
}

/// Lane 1's poll, counted apart by callgrind (`--toggle-collect='*worker_poll*'`).
#[inline(never)]
pub fn worker_poll(lane: &mut Lane, app: &mut Sink) -> bool {
    lane.poll(app) & std::hint::black_box(true)
}

impl Fixture {
    /// Both stacks up, `b`'s next hop to `a` resolved (ARP and the path record).
    pub fn new(fanout: Fanout) -> Result<Fixture, String> {
        let fabric = SimFabric::new(FabricConfig::default());
        let build = |name: &str, ip: [u8; 4], lanes: usize| {
            Stack::builder()
                .name(name)
                .fabric(&fabric, name)
                .ipv4(ip)
                .data_cores(lanes)
                .fanout(fanout)
                .pool_size(16_384)
                .build()
                .map(|p| p.split())
                .map_err(|e| format!("stack {name}: {e}"))
        };
        let (sa, ca, a) = build("a", A_IP, 2)?;
        let (sb, cb, mut b) = build("b", B_IP, 1)?;
        let mut f = Fixture {
            _fabric: fabric,
            _stacks: [sa, sb],
            ctl: [ca, cb],
            a,
            b: b.remove(0),
            gen: Gen::default(),
            sinks: [Sink::default(), Sink::default()],
        };
        f.warm_up()?;
        Ok(f)
    }

    /// Links up, then one packet through (resolving the next hop), then a few rounds.
    fn warm_up(&mut self) -> Result<(), String> {
        let start = Instant::now();
        let limit = Duration::from_secs(30);
        while !(self.a[0].link_up(0) && self.b.link_up(0)) {
            self.poll_all();
            if start.elapsed() > limit {
                return Err(String::from("the links did not come up"));
            }
        }
        self.gen.budget = 1;
        while self.sinks[0].received + self.sinks[1].received == 0 {
            self.poll_all();
            if start.elapsed() > limit {
                return Err(String::from("the first packet did not arrive"));
            }
        }
        for _ in 0..100 {
            self.gen.budget = BURST;
            self.poll_all();
        }
        Ok(())
    }

    /// Everything polls once (not counted apart).
    fn poll_all(&mut self) {
        for c in &mut self.ctl {
            c.poll();
        }
        self.b.poll(&mut self.gen);
        let [s0, s1] = &mut self.sinks;
        self.a[0].poll(s0);
        self.a[1].poll(s1);
    }

    /// One measured round: `b` sends a burst, lane 0 polls ([`receiver_poll`]), lane 1
    /// polls ([`worker_poll`]), the controllers poll.
    #[inline]
    pub fn round(&mut self) {
        self.gen.budget = BURST;
        self.b.poll(&mut self.gen);
        let [s0, s1] = &mut self.sinks;
        receiver_poll(&mut self.a[0], s0);
        worker_poll(&mut self.a[1], s1);
        for c in &mut self.ctl {
            c.poll();
        }
    }

    /// `a`'s lanes' counters.
    pub fn stats(&self) -> [LcoreStats; 2] {
        [self.a[0].stats(), self.a[1].stats()]
    }
}
