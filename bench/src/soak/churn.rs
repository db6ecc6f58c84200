//! The churn: events drawn from a seeded generator ([`SimRng`], whose output is fixed by
//! its reference, so a printed seed replays the same schedule), at uniformly random
//! intervals, against the hosts and the fabric.
//!
//! Kinds come in cycles of ten, shuffled per cycle, so every kind happens within the
//! first ten events whatever the seed: a host joins a group (full member), a host
//! leaves one, a host starts or stops sending to a group (a send-only join, later its
//! expiry), each twice per cycle; a port flaps (down for 20 to 600 ms); the subnet
//! manager restarts (every group wiped, ClientReregister); a port's P_Key table
//! changes (the partition moves to another index, or leaves the table for 20 to
//! 600 ms); a port gets a new LID.
//!
//! Before each measurement [`Churn::restore_all`] ends every pending disruption at once
//! (ports up, the partition back in the table), so the hosts can settle.

use std::time::{Duration, Instant};

use ibpoll::{GroupAddr, Stack};
use ibpoll_pmd_sim::{PortId, SimFabric, SimRng};
use ibpoll_wire::{Lid, PKey};
use serde_json::{json, Value};

use super::traffic::TrafficCtl;
use super::SoakError;

/// A partition that is in no host's configuration: it takes the default partition's
/// index when the table changes.
const OTHER_PKEY: PKey = PKey(0x8001);
/// The shortest and longest disruption (port down, partition gone).
const DOWN_MIN_MS: u64 = 20;
const DOWN_MAX_MS: u64 = 600;
/// New LIDs are taken from here upwards (the subnet manager hands out 2, 3, ...).
const LID_FIRST: u16 = 0x1000;
/// The highest unicast LID.
const LID_LAST: u16 = 0xBFFF;

/// What the churn does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A host subscribes to a group it is not subscribed to.
    Join,
    /// A host unsubscribes from a group.
    Leave,
    /// A host starts or stops sending to a group.
    SendMask,
    /// A port goes down and comes back.
    PortFlap,
    /// The subnet manager restarts.
    SmRestart,
    /// A port's P_Key table changes.
    PkeyChange,
    /// A port gets a new LID.
    LidChange,
}

/// One cycle of events (shuffled each time).
const CYCLE: [Event; 10] = [
    Event::Join,
    Event::Leave,
    Event::SendMask,
    Event::Join,
    Event::Leave,
    Event::SendMask,
    Event::PortFlap,
    Event::SmRestart,
    Event::PkeyChange,
    Event::LidChange,
];

/// Events done so far, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChurnCounts {
    /// Subscriptions.
    pub joins: u64,
    /// Unsubscriptions.
    pub leaves: u64,
    /// Send-mask changes.
    pub send_masks: u64,
    /// Port flaps.
    pub flaps: u64,
    /// Subnet-manager restarts.
    pub sm_restarts: u64,
    /// P_Key table changes (restores included).
    pub pkey_changes: u64,
    /// LID changes.
    pub lid_changes: u64,
}

impl ChurnCounts {
    /// Every event.
    pub fn total(&self) -> u64 {
        self.joins
            + self.leaves
            + self.send_masks
            + self.flaps
            + self.sm_restarts
            + self.pkey_changes
            + self.lid_changes
    }

    /// One line: `join 4 leave 3 ...`.
    pub fn text(&self) -> String {
        format!(
            "join {} leave {} mask {} flap {} sm {} pkey {} lid {}",
            self.joins,
            self.leaves,
            self.send_masks,
            self.flaps,
            self.sm_restarts,
            self.pkey_changes,
            self.lid_changes
        )
    }

    /// As a JSON object.
    pub fn json(&self) -> Value {
        json!({
            "joins": self.joins,
            "leaves": self.leaves,
            "send_masks": self.send_masks,
            "port_flaps": self.flaps,
            "sm_restarts": self.sm_restarts,
            "pkey_changes": self.pkey_changes,
            "lid_changes": self.lid_changes,
        })
    }
}

/// Where a port's default partition is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pkeys {
    /// `[default]`: index 0.
    Home,
    /// `[other, default]`: index 1.
    Moved,
    /// `[other]`: not in the table.
    Gone,
}

impl Pkeys {
    fn table(self) -> Vec<PKey> {
        match self {
            Pkeys::Home => vec![PKey::DEFAULT],
            Pkeys::Moved => vec![OTHER_PKEY, PKey::DEFAULT],
            Pkeys::Gone => vec![OTHER_PKEY],
        }
    }
}

/// A disruption that ends later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Restore {
    /// The port comes back up.
    PortUp(usize),
    /// The partition comes back (to index 0).
    Pkeys(usize),
}

/// What the churn acts on.
#[derive(Debug)]
pub struct Targets<'a> {
    /// The fabric.
    pub fabric: &'a SimFabric,
    /// Each host's port.
    pub ports: &'a [PortId],
    /// Each host's stack.
    pub stacks: &'a [&'a Stack],
    /// The applications' send masks.
    pub traffic: &'a TrafficCtl,
    /// The groups, by index.
    pub groups: &'a [[u8; 4]],
}

/// The churn's state and schedule.
#[derive(Debug)]
pub struct Churn {
    rng: SimRng,
    mean: Duration,
    next_at: Instant,
    cycle: [Event; 10],
    pos: usize,
    pending: Vec<(Instant, Restore)>,
    down: Vec<bool>,
    pkeys: Vec<Pkeys>,
    /// Per host: bit `g` set while subscribed to group `g`.
    subscribed: Vec<u64>,
    next_lid: u16,
    /// Events done so far.
    pub counts: ChurnCounts,
}

impl Churn {
    /// The churn of `hosts` hosts and `groups` groups, drawn from `seed`, one event every
    /// `mean` on average, the first due `mean` after `now`.
    pub fn new(seed: u64, mean: Duration, hosts: usize, now: Instant) -> Churn {
        Churn {
            rng: SimRng::seed_from_u64(seed),
            mean,
            next_at: now + mean,
            cycle: CYCLE,
            pos: CYCLE.len(),
            pending: Vec::new(),
            down: vec![false; hosts],
            pkeys: vec![Pkeys::Home; hosts],
            subscribed: vec![0; hosts],
            next_lid: LID_FIRST,
            counts: ChurnCounts::default(),
        }
    }

    /// Draws the starting state: each host subscribes to each group, and sends to it,
    /// with probability one half.
    pub fn initial(&mut self, t: &Targets<'_>) -> Result<(), SoakError> {
        for h in 0..t.stacks.len() {
            for g in 0..t.groups.len() {
                if self.rng.chance(0.5) {
                    self.join(t, h, g)?;
                }
                if self.rng.chance(0.5) {
                    t.traffic.masks[h].fetch_xor(1 << g, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
        self.counts = ChurnCounts::default();
        Ok(())
    }

    /// The next time something is due (an event or a restore).
    pub fn next_due(&self) -> Instant {
        self.pending
            .iter()
            .map(|(at, _)| *at)
            .fold(self.next_at, Instant::min)
    }

    /// Runs what is due at `now`: restores, then at most one event.
    pub fn step(&mut self, t: &Targets<'_>, now: Instant) -> Result<(), SoakError> {
        let mut i = 0;
        while i < self.pending.len() {
            if self.pending[i].0 <= now {
                let (_, r) = self.pending.swap_remove(i);
                self.restore(t, r);
            } else {
                i += 1;
            }
        }
        if now >= self.next_at {
            let ev = self.next_event();
            self.apply(t, ev, now)?;
            let gap = self
                .rng
                .range_inclusive(0, 2 * self.mean.as_micros() as u64);
            self.next_at = now + Duration::from_micros(gap);
        }
        Ok(())
    }

    /// Ends every pending disruption now.
    pub fn restore_all(&mut self, t: &Targets<'_>) {
        for (_, r) in std::mem::take(&mut self.pending) {
            self.restore(t, r);
        }
    }

    /// Pushes the next event back by `by` (the measurement paused the churn).
    pub fn postpone(&mut self, by: Duration) {
        self.next_at += by;
    }

    fn next_event(&mut self) -> Event {
        if self.pos == self.cycle.len() {
            // Fisher-Yates with the seeded generator.
            for i in (1..self.cycle.len()).rev() {
                let j = self.rng.index(i + 1);
                self.cycle.swap(i, j);
            }
            self.pos = 0;
        }
        self.pos += 1;
        self.cycle[self.pos - 1]
    }

    fn down_for(&mut self) -> Duration {
        Duration::from_millis(self.rng.range_inclusive(DOWN_MIN_MS, DOWN_MAX_MS))
    }

    fn apply(&mut self, t: &Targets<'_>, ev: Event, now: Instant) -> Result<(), SoakError> {
        let hosts = t.stacks.len();
        let h = self.rng.index(hosts);
        match ev {
            Event::Join | Event::Leave => {
                let want_join = ev == Event::Join;
                let pairs: Vec<(usize, usize)> = (0..hosts)
                    .flat_map(|h| (0..t.groups.len()).map(move |g| (h, g)))
                    .filter(|&(h, g)| (self.subscribed[h] & (1 << g) != 0) != want_join)
                    .collect();
                // Nothing to join (or leave): do the other one.
                let (join, pairs) = if pairs.is_empty() {
                    let other = (0..hosts)
                        .flat_map(|h| (0..t.groups.len()).map(move |g| (h, g)))
                        .collect::<Vec<_>>();
                    (!want_join, other)
                } else {
                    (want_join, pairs)
                };
                let (h, g) = self.rng.pick(&pairs);
                if join {
                    self.join(t, h, g)?;
                } else {
                    self.leave(t, h, g)?;
                }
            }
            Event::SendMask => {
                let g = self.rng.index(t.groups.len());
                t.traffic.masks[h].fetch_xor(1 << g, std::sync::atomic::Ordering::Relaxed);
                self.counts.send_masks += 1;
            }
            Event::PortFlap => {
                // A port already down flaps another one, if any is up.
                let Some(h) = self.pick_host(|c, i| !c.down[i], h, hosts) else {
                    return Ok(());
                };
                self.down[h] = true;
                t.fabric.set_port_up(t.ports[h], false);
                let at = now + self.down_for();
                self.pending.push((at, Restore::PortUp(h)));
                self.counts.flaps += 1;
            }
            Event::SmRestart => {
                t.fabric.restart_sm(None);
                self.counts.sm_restarts += 1;
            }
            Event::PkeyChange => {
                let next = match (self.pkeys[h], self.rng.chance(0.5)) {
                    (Pkeys::Gone, _) => {
                        // Its restore is pending: it comes back now instead.
                        self.pending.retain(|&(_, r)| r != Restore::Pkeys(h));
                        Pkeys::Home
                    }
                    (_, true) => Pkeys::Gone,
                    (Pkeys::Home, false) => Pkeys::Moved,
                    (Pkeys::Moved, false) => Pkeys::Home,
                };
                self.set_pkeys(t, h, next);
                if next == Pkeys::Gone {
                    let at = now + self.down_for();
                    self.pending.push((at, Restore::Pkeys(h)));
                }
            }
            Event::LidChange => {
                let lid = self.fresh_lid(t);
                t.fabric.set_lid(t.ports[h], lid);
                self.counts.lid_changes += 1;
            }
        }
        Ok(())
    }

    /// `first` if `ok`, else the next host that is, in order.
    fn pick_host(
        &self,
        ok: impl Fn(&Churn, usize) -> bool,
        first: usize,
        hosts: usize,
    ) -> Option<usize> {
        (0..hosts)
            .map(|i| (first + i) % hosts)
            .find(|&i| ok(self, i))
    }

    fn join(&mut self, t: &Targets<'_>, h: usize, g: usize) -> Result<(), SoakError> {
        let ok = t.stacks[h]
            .join_group(GroupAddr::Ipv4(t.groups[g]))
            .map_err(SoakError::stack(h))?;
        if !ok {
            return Err(SoakError::JoinRefused {
                host: h,
                group: t.groups[g],
            });
        }
        self.subscribed[h] |= 1 << g;
        self.counts.joins += 1;
        Ok(())
    }

    fn leave(&mut self, t: &Targets<'_>, h: usize, g: usize) -> Result<(), SoakError> {
        t.stacks[h]
            .leave_group(GroupAddr::Ipv4(t.groups[g]))
            .map_err(SoakError::stack(h))?;
        self.subscribed[h] &= !(1 << g);
        self.counts.leaves += 1;
        Ok(())
    }

    fn set_pkeys(&mut self, t: &Targets<'_>, h: usize, p: Pkeys) {
        self.pkeys[h] = p;
        t.fabric.set_pkeys(t.ports[h], p.table());
        self.counts.pkey_changes += 1;
    }

    fn restore(&mut self, t: &Targets<'_>, r: Restore) {
        match r {
            Restore::PortUp(h) => {
                self.down[h] = false;
                t.fabric.set_port_up(t.ports[h], true);
            }
            Restore::Pkeys(h) => self.set_pkeys(t, h, Pkeys::Home),
        }
    }

    /// A unicast LID no port has.
    fn fresh_lid(&mut self, t: &Targets<'_>) -> Lid {
        let taken: Vec<Lid> = t.ports.iter().map(|p| t.fabric.port_attr(*p).lid).collect();
        loop {
            let lid = Lid(self.next_lid);
            self.next_lid = if self.next_lid >= LID_LAST {
                LID_FIRST
            } else {
                self.next_lid + 1
            };
            if !taken.contains(&lid) {
                return lid;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_comes_once_in_each_cycle_and_a_seed_replays() {
        let now = Instant::now();
        let draw = |seed| {
            let mut c = Churn::new(seed, Duration::from_millis(1), 2, now);
            (0..30).map(|_| c.next_event()).collect::<Vec<_>>()
        };
        let a = draw(7);
        assert_eq!(a, draw(7), "a seed replays");
        assert_ne!(a, draw(8), "another seed draws another order");
        for cycle in a.chunks(CYCLE.len()) {
            for kind in CYCLE {
                let want = CYCLE.iter().filter(|k| **k == kind).count();
                let got = cycle.iter().filter(|k| **k == kind).count();
                assert_eq!(got, want, "{kind:?} in {cycle:?}");
            }
        }
    }
}
