//! The send path: each packet goes, the mbuf itself, into the ring of the QP its route
//! names (copies for a group's other receivers), in two passes over a chunk of the
//! burst: `plan` resolves routes, checks each packet, writes its completion metadata
//! and GRH, and reserves ring slots (stopping at the first packet whose ring is full:
//! back-pressure); `post` moves the planned packets into the rings, a run of packets
//! to one ring with one publishing store, and frees what was dropped in bulk.

use std::sync::Arc;

use ibpoll_dev::{TxCounters, TxDst, TxQueue};
use ibpoll_mem::{Mbuf, MbufArray, MbufMeta};
use ibpoll_wire::{grh, ipoib, Qpn};

use crate::pair::Link;
use crate::port::QpGuard;
use crate::route::{self, route_slot, Fate, Reason, Route, GROUP_DROPS, ROUTE_SLOTS};

/// Packets planned and posted at a time.
const CHUNK: usize = 64;
/// Plan codes past the route slots: a send error of the packet itself.
const PLAN_TOO_LONG: u8 = 0xF0;
const PLAN_MALFORMED: u8 = 0xF1;
const PLAN_NO_HEADROOM: u8 = 0xF2;
/// Reasons counted per burst (`Reason as usize` indexes them).
const REASONS: usize = 11;
/// Distinct rings one chunk reserves slots in, at most (a chunk that meets more is
/// posted, and the next chunk goes on).
const RESV_MAX: usize = 8;
/// `resv_of` of a slot with no reservation in this chunk yet.
const NO_RESV: u8 = u8::MAX;

/// Why planning stopped before the end of the chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Every packet of the chunk is planned.
    Done,
    /// A receiver's ring is full: back-pressure, the burst ends.
    Full,
    /// The chunk reserves in as many rings as it may: post, then plan on.
    Rings,
}

/// One send queue of a ring QP: the only producer of the links from its QP.
#[derive(Debug)]
pub(crate) struct RingTxQueue {
    qp: Arc<QpGuard>,
    counters: Arc<TxCounters>,
    /// Sends posted, all completed (the ring took the buffer).
    posted: u64,
    /// The route generation the cache was last checked against.
    gen: u64,
    /// Resolved destinations, indexed by [`route_slot`].
    routes: Box<[Route]>,
    /// Per packet of the chunk: its route slot, or a `PLAN_*` send error.
    plan: [u8; CHUNK],
    /// The rings this chunk reserves slots in: (the link's address, slots free and not
    /// yet planned).
    /// A ring's own count moves only when `post` pushes, so reservations are counted
    /// here, per ring (several routes may lead to one ring: unicast and groups to one
    /// QP).
    resv: [(usize, usize); RESV_MAX],
    resv_len: usize,
    /// Per route slot: the index in `resv` of its (first) ring, or `NO_RESV`.
    resv_of: [u8; ROUTE_SLOTS],
    /// What the chunk drops, freed in bulk at its end.
    free_later: MbufArray,
}

/// What one burst counted, published once at its end.
#[derive(Default)]
struct Tally {
    bytes: u64,
    errors: u64,
    reasons: [u64; REASONS],
    overrun: u64,
    nombuf: u64,
    copies: u64,
}

impl RingTxQueue {
    pub(crate) fn new(qp: Arc<QpGuard>) -> RingTxQueue {
        RingTxQueue {
            qp,
            counters: Arc::new(TxCounters::default()),
            posted: 0,
            gen: u64::MAX,
            routes: (0..ROUTE_SLOTS).map(|_| Route::default()).collect(),
            plan: [0; CHUNK],
            resv: [(0, 0); RESV_MAX],
            resv_len: 0,
            resv_of: [NO_RESV; ROUTE_SLOTS],
            free_later: MbufArray::with_capacity(CHUNK),
        }
    }

    /// Resolves `d` into route slot `s` (control path: the registry's lock).
    #[cold]
    fn resolve(&mut self, s: usize, d: &TxDst) {
        let pair = &self.qp.pair;
        let mut ctl = pair.lock();
        route::resolve(
            pair,
            &mut ctl,
            self.qp.side,
            self.qp.qpn.get(),
            d,
            self.gen,
            &mut self.routes[s],
        );
    }

    /// The index in `resv` of `link`'s ring, reserving it on first use with what is
    /// free in it (`want` at most is needed); `None` when the table is full.
    fn reservation(&mut self, link: &Arc<Link>, want: usize) -> Option<usize> {
        // The address names the link while the routes hold it (the whole chunk).
        let key = Arc::as_ptr(link) as usize;
        if let Some(i) = self.resv[..self.resv_len].iter().position(|r| r.0 == key) {
            return Some(i);
        }
        if self.resv_len == RESV_MAX {
            return None;
        }
        // SAFETY: this send queue (`&mut self`) is the only producer of the links from
        // its QP.
        let free = unsafe { link.ring.free(want) };
        self.resv[self.resv_len] = (key, free);
        self.resv_len += 1;
        Some(self.resv_len - 1)
    }

    /// Reserves a slot in every ring of route `s` (the unicast fast path: the slot's
    /// cached index); why not, if it cannot.
    #[inline]
    fn reserve(&mut self, s: usize, want: usize) -> Result<(), Stop> {
        if self.routes[s].targets.len() == 1 && self.resv_of[s] != NO_RESV {
            let r = &mut self.resv[usize::from(self.resv_of[s])].1;
            return match r.checked_sub(1) {
                Some(left) => {
                    *r = left;
                    Ok(())
                }
                None => Err(Stop::Full),
            };
        }
        let targets = std::mem::take(&mut self.routes[s].targets);
        // A group with more receivers than the table holds reserves for its first only
        // (its other copies take their chance, and a full ring drops one, counted).
        let n = if targets.len() > RESV_MAX {
            1
        } else {
            targets.len()
        };
        let mut at = [0usize; RESV_MAX];
        let mut why = None;
        for (j, t) in targets[..n].iter().enumerate() {
            match self.reservation(t, want) {
                Some(i) => at[j] = i,
                None => {
                    why = Some(Stop::Rings);
                    break;
                }
            }
        }
        if why.is_none() && at[..n].iter().any(|&i| self.resv[i].1 == 0) {
            why = Some(Stop::Full);
        }
        if why.is_none() {
            at[..n].iter().for_each(|&i| self.resv[i].1 -= 1);
            self.resv_of[s] = at[0] as u8;
        }
        self.routes[s].targets = targets;
        why.map_or(Ok(()), Err)
    }

    /// Plans up to `dst.len()` packets from the front of `pkts` (each a route slot or a
    /// send error, metadata and GRH written, a slot reserved in each receiver's ring)
    /// and returns how many, and why it stopped.
    fn plan(&mut self, pkts: &mut MbufArray, dst: &[TxDst], t: &mut Tally) -> (usize, Stop) {
        self.resv_len = 0;
        self.resv_of = [NO_RESV; ROUTE_SLOTS];
        for (i, d) in dst.iter().enumerate() {
            let s = route_slot(d);
            if !self.routes[s].matches(self.gen, d) {
                self.resolve(s, d);
            }
            let r = &self.routes[s];
            let m = &pkts[i];
            let (len, off) = (m.len(), m.data_offset());
            let code = match r.fate {
                Fate::Deliver if len < ipoib::HEADER_LEN => PLAN_MALFORMED,
                Fate::Deliver if len > r.len_max => PLAN_TOO_LONG,
                Fate::Deliver if off < grh::HEADER_LEN => PLAN_NO_HEADROOM,
                _ => s as u8,
            };
            if code == s as u8 && r.fate == Fate::Deliver {
                if let Err(why) = self.reserve(s, dst.len() - i) {
                    return (i, why);
                }
                let r = &self.routes[s];
                let m = &mut pkts[i];
                *m.meta_mut() = MbufMeta {
                    port: r.targets[0].to.port_num,
                    ..r.meta
                };
                if let Some(g) = &r.grh {
                    Route::write_grh(g, &mut m.buf_mut()[off - grh::HEADER_LEN..off], len);
                }
            }
            t.bytes += len as u64;
            self.plan[i] = code;
        }
        (dst.len(), Stop::Done)
    }

    /// Moves the `k` planned packets from the front of `pkts` into their rings, frees
    /// what is dropped, and counts.
    fn post(&mut self, pkts: &mut MbufArray, k: usize, t: &mut Tally) {
        let Self {
            routes,
            plan,
            free_later,
            ..
        } = self;
        let mut it = pkts.drain_front(k);
        let mut next = || it.next().expect("k packets were planned");
        let mut i = 0;
        while i < k {
            let code = plan[i];
            let run = plan[i..k].iter().take_while(|&&c| c == code).count();
            i += run;
            let Some(r) = routes.get(usize::from(code)) else {
                let why = match code {
                    PLAN_TOO_LONG => Reason::TooLong,
                    PLAN_MALFORMED => Reason::Malformed,
                    _ => Reason::NoHeadroom,
                };
                t.reasons[why as usize] += run as u64;
                t.errors += run as u64;
                (0..run).for_each(|_| drop(free_later.push(next())));
                continue;
            };
            if r.group_drops != [0; 4] {
                for (why, n) in GROUP_DROPS.iter().zip(r.group_drops) {
                    t.reasons[*why as usize] += n * run as u64;
                }
            }
            match r.fate {
                Fate::Deliver if r.targets.len() == 1 => {
                    // SAFETY: the only producer of the links from this QP (`&mut self`).
                    let pushed = unsafe { r.targets[0].ring.push_from(run, &mut next) };
                    // `plan` reserved the slots: never, short of a bug.
                    t.overrun += (run - pushed) as u64;
                    (pushed..run).for_each(|_| drop(free_later.push(next())));
                }
                Fate::Deliver => {
                    for _ in 0..run {
                        multicast(r, next(), t, free_later);
                    }
                }
                Fate::Drop(why) | Fate::Error(why) => {
                    // A group none of whose receivers takes it counts per receiver.
                    if why != Reason::NoReceiver || r.group_drops == [0; 4] {
                        t.reasons[why as usize] += run as u64;
                    }
                    if matches!(r.fate, Fate::Error(_)) {
                        t.errors += run as u64;
                    }
                    (0..run).for_each(|_| drop(free_later.push(next())));
                }
            }
        }
        drop(it);
        free_later.clear();
    }

    /// Publishes a burst's counts.
    fn publish(&self, n: usize, t: &Tally) {
        let c = &self.counters;
        // This lcore is the only writer of its send counters.
        c.packets.add(n as u64);
        c.bytes.add(t.bytes);
        c.completed.add(n as u64);
        if t.errors > 0 {
            c.errors.add(t.errors);
        }
        let stats = &self.qp.pair.stats;
        for (i, &v) in t.reasons.iter().enumerate() {
            if v > 0 {
                REASON_ORDER[i].counter(stats).add_shared(v);
            }
        }
        for (counter, v) in [
            (&stats.overrun, t.overrun),
            (&stats.nombuf, t.nombuf),
            (&stats.mcast_copies, t.copies),
        ] {
            if v > 0 {
                counter.add_shared(v);
            }
        }
    }
}

/// Every reason, at its `as usize` index.
const REASON_ORDER: [Reason; REASONS] = [
    Reason::UnknownLid,
    Reason::UnknownQpn,
    Reason::QKey,
    Reason::PKey,
    Reason::PortDown,
    Reason::NoReceiveQueue,
    Reason::NoReceiver,
    Reason::TooLong,
    Reason::Malformed,
    Reason::BadAh,
    Reason::NoHeadroom,
];

const _: () = {
    let mut i = 0;
    while i < REASONS {
        assert!(REASON_ORDER[i] as usize == i);
        i += 1;
    }
};

/// Sends `m` to every receiver of a group route: copies to all but the first, then
/// the packet itself to the first (whose ring slot `plan` reserved).
fn multicast(r: &Route, m: Mbuf, t: &mut Tally, free_later: &mut MbufArray) {
    for link in &r.targets[1..] {
        let Some(c) = copy_for(link, &m) else {
            link.to.counters.nombuf.add_shared(1);
            t.nombuf += 1;
            continue;
        };
        t.copies += 1;
        // SAFETY: the only producer of the links from this QP (the caller's `&mut`).
        if unsafe { link.ring.push(c) }.is_err() {
            t.overrun += 1;
        }
    }
    // SAFETY: as above.
    if let Err(m) = unsafe { r.targets[0].ring.push(m) } {
        t.overrun += 1;
        drop(free_later.push(m));
    }
}

/// A copy of `m` (data, GRH area, metadata with the receiver's port) in a buffer of
/// the receiving QP's pool; `None` when the pool is empty or its buffers too small.
fn copy_for(link: &Link, m: &Mbuf) -> Option<Mbuf> {
    let mut c = link.to.pool.alloc()?;
    let (off, len) = (c.data_offset(), m.len());
    if off < grh::HEADER_LEN || !c.set_data(off, len) {
        return None;
    }
    c.data_mut().copy_from_slice(m.data());
    let from = m.data_offset();
    c.buf_mut()[off - grh::HEADER_LEN..off].copy_from_slice(&m.buf()[from - grh::HEADER_LEN..from]);
    *c.meta_mut() = MbufMeta {
        port: link.to.port_num,
        ..*m.meta()
    };
    Some(c)
}

impl TxQueue for RingTxQueue {
    fn src_qpn(&self) -> Qpn {
        self.qp.qpn
    }

    fn tx_burst(&mut self, pkts: &mut MbufArray, dst: &[TxDst]) -> usize {
        let n = pkts.len().min(dst.len());
        if n == 0 {
            return 0;
        }
        let gen = self.qp.pair.route_gen();
        if gen != self.gen {
            self.routes.iter_mut().for_each(Route::clear);
            self.gen = gen;
        }
        let mut t = Tally::default();
        let mut taken = 0;
        while taken < n {
            let want = (n - taken).min(CHUNK);
            let (k, stop) = self.plan(pkts, &dst[taken..taken + want], &mut t);
            self.post(pkts, k, &mut t);
            taken += k;
            // (A chunk that stops for the table at its first packet cannot happen: one
            // packet needs at most `RESV_MAX` rings. Stop rather than spin if it did.)
            if stop == Stop::Full || k == 0 {
                break;
            }
        }
        self.posted += taken as u64;
        self.publish(taken, &t);
        taken
    }

    fn completed(&mut self) -> u64 {
        self.posted
    }

    fn counters(&self) -> Arc<TxCounters> {
        self.counters.clone()
    }
}
