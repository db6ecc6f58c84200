//! Subscriptions of the data cores' sockets to multicast groups, and what the control
//! core dropped of the packets each data core handed it.
//!
//! A socket on a data core subscribes through the data core's request ring
//! ([`Request::Subscribe`](crate::Request::Subscribe)): it never waits for the control
//! core. It first claims a slot of the data core's [`SubBoard`]; the control core
//! writes how the subscription stands into that slot ([`JoinStatus`]: pending, joined,
//! or failed with the SA's status), and the socket reads it whenever it likes. A slot
//! carries a generation, so a status written for an earlier subscription in the same
//! slot is never taken for the current one's.
//!
//! On the control core a group is wanted while any subscription names it (or
//! [`Controller::join_group`](crate::Controller::join_group) did); it is attached to
//! the QP of every data core whose subscriptions name it, so each such data core
//! receives it on its own receive queue.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use ibpoll_dev::Counter;
use ibpoll_wire::Gid;

use crate::snapshot::FastHash;

/// Subscription slots per data core and interface.
pub const SUB_SLOTS: usize = 256;

/// A claimed slot of a data core's [`SubBoard`]: its index and the generation of this
/// claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubSlot {
    index: u16,
    gen: u32,
}

impl SubSlot {
    /// The slot's index, `0..SUB_SLOTS`.
    pub fn index(&self) -> usize {
        usize::from(self.index)
    }
}

/// How a subscription stands, as the control core last reported it.
///
/// ```
/// use ibpoll_ctrl::JoinStatus;
/// let s = JoinStatus::Refused { sa_status: 0x0200 };
/// assert!(s.is_failed() && !s.is_joined());
/// assert_eq!(s.to_string(), "refused by the SA (MAD status 0x0200); retried with backoff");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum JoinStatus {
    /// The control core has not joined the group yet: the request waits in the ring,
    /// the join waits for the link (the broadcast group), for a flush to end or for its
    /// backoff, or the SA has not answered yet.
    Pending,
    /// The SA granted the join (full member) and the data core's QP is attached:
    /// datagrams to the group arrive.
    Joined,
    /// The SA refused the last join with this MAD status (e.g. 0x0200, invalid request;
    /// 0x0100, no resources). The control core tries again with backoff (2, 4, 8, 16 s).
    Refused {
        /// The MAD status of the SA's answer.
        sa_status: u16,
    },
    /// The SA did not answer the last join in time. The control core tries again with
    /// backoff.
    TimedOut,
    /// The control core's group table is full (`CtrlConfig::groups_max`): the group is
    /// not joined, and not tried again; unsubscribe and subscribe later.
    TableFull,
    /// The address is not a multicast group of the interface's partition: never joined.
    NotAGroup,
}

impl JoinStatus {
    /// Whether datagrams to the group arrive.
    pub fn is_joined(self) -> bool {
        self == JoinStatus::Joined
    }

    /// Whether the last attempt failed (refused, timed out, or not attempted at all).
    pub fn is_failed(self) -> bool {
        !matches!(self, JoinStatus::Pending | JoinStatus::Joined)
    }

    fn encode(self) -> u32 {
        match self {
            JoinStatus::Pending => 0,
            JoinStatus::Joined => 1,
            JoinStatus::Refused { sa_status } => 2 << 16 | u32::from(sa_status),
            JoinStatus::TimedOut => 3 << 16,
            JoinStatus::TableFull => 4 << 16,
            JoinStatus::NotAGroup => 5 << 16,
        }
    }

    fn decode(w: u32) -> JoinStatus {
        match (w >> 16, w as u16) {
            (0, 1) => JoinStatus::Joined,
            (2, sa_status) => JoinStatus::Refused { sa_status },
            (3, _) => JoinStatus::TimedOut,
            (4, _) => JoinStatus::TableFull,
            (5, _) => JoinStatus::NotAGroup,
            _ => JoinStatus::Pending,
        }
    }
}

impl std::fmt::Display for JoinStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JoinStatus::Pending => f.write_str("pending"),
            JoinStatus::Joined => f.write_str("joined"),
            JoinStatus::Refused { sa_status } => write!(
                f,
                "refused by the SA (MAD status {sa_status:#06x}); retried with backoff"
            ),
            JoinStatus::TimedOut => f.write_str("the SA did not answer; retried with backoff"),
            JoinStatus::TableFull => f.write_str("the control core's group table is full"),
            JoinStatus::NotAGroup => f.write_str("not a multicast group of this partition"),
        }
    }
}

/// One data core's subscription slots: claimed and released by the data core, written
/// by the control core. Nothing here is touched per packet.
#[derive(Debug)]
pub struct SubBoard {
    /// Per slot: the claim's generation (high 32 bits) and its [`JoinStatus`] (low 32).
    /// Relaxed everywhere: the word is the whole message, nothing else is published
    /// with it, and a reader that sees another generation's word treats it as Pending.
    words: Box<[AtomicU64]>,
    /// Per slot: the generation of its latest claim. Written by the data core only.
    gens: Box<[AtomicU32]>,
    /// Claimed slots, one bit each. Written by the data core only.
    claimed: Box<[AtomicU64]>,
}

impl SubBoard {
    pub(crate) fn new() -> SubBoard {
        SubBoard {
            words: (0..SUB_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            gens: (0..SUB_SLOTS).map(|_| AtomicU32::new(0)).collect(),
            claimed: (0..SUB_SLOTS.div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }

    /// Claims a free slot for a new subscription (its status reads Pending until the
    /// control core writes it); `None` when all [`SUB_SLOTS`] are claimed.
    pub fn claim(&self) -> Option<SubSlot> {
        for (w, bits) in self.claimed.iter().enumerate() {
            // Relaxed: the bitmap has one writer, the data core (see `claimed`).
            let b = bits.load(Ordering::Relaxed);
            if b == u64::MAX {
                continue;
            }
            let bit = (!b).trailing_zeros() as usize;
            let index = w * 64 + bit;
            if index >= SUB_SLOTS {
                return None;
            }
            bits.store(b | 1 << bit, Ordering::Relaxed);
            let gen = self.gens[index].load(Ordering::Relaxed).wrapping_add(1);
            self.gens[index].store(gen, Ordering::Relaxed);
            let slot = SubSlot {
                index: index as u16,
                gen,
            };
            self.set(slot, JoinStatus::Pending);
            return Some(slot);
        }
        None
    }

    /// Gives a slot back (after its `Unsubscribe` was queued).
    pub fn release(&self, slot: SubSlot) {
        let (w, bit) = (slot.index() / 64, slot.index() % 64);
        if let Some(bits) = self.claimed.get(w) {
            // Relaxed: see `claimed`.
            let b = bits.load(Ordering::Relaxed);
            bits.store(b & !(1 << bit), Ordering::Relaxed);
        }
    }

    /// How the subscription in `slot` stands.
    pub fn status(&self, slot: SubSlot) -> JoinStatus {
        let Some(word) = self.words.get(slot.index()) else {
            return JoinStatus::Pending;
        };
        // Relaxed: see `words`.
        let w = word.load(Ordering::Relaxed);
        if (w >> 32) as u32 != slot.gen {
            return JoinStatus::Pending;
        }
        JoinStatus::decode(w as u32)
    }

    /// Writes the status of the subscription in `slot` (the control core; and the data
    /// core when it claims the slot).
    pub(crate) fn set(&self, slot: SubSlot, status: JoinStatus) {
        if let Some(word) = self.words.get(slot.index()) {
            let w = u64::from(slot.gen) << 32 | u64::from(status.encode());
            // Relaxed: see `words`.
            word.store(w, Ordering::Relaxed);
        }
    }
}

/// Packets one data core handed to the control core that the control core dropped on
/// arrival, because a bounded queue or table was full. Written by the control core only.
#[derive(Debug, Default)]
pub struct RequestDrops {
    /// Packets for an unresolved next hop dropped: its queue held `neigh_queue_max`
    /// packets (3 by default) while ARP and the path query ran, or the neighbour table
    /// was full.
    pub resolve: Counter,
    /// Packets for a group not Joined dropped: its queue held `mcast_queue_max` (64 by
    /// default), the group table was full, or the group was not one of the partition's.
    pub mcast: Counter,
}

/// The group a claimed slot names and the claim's generation.
type SlotEntry = Option<(Gid, u32)>;

/// The control core's record of every data core's subscriptions.
#[derive(Debug)]
pub(crate) struct Subscriptions {
    /// Per data core, per slot: the group and the claim's generation.
    slots: Vec<Box<[SlotEntry]>>,
    /// Per group: its subscriptions, as (data core, slot).
    by_group: HashMap<Gid, Vec<(usize, SubSlot)>, FastHash>,
    boards: Vec<Arc<SubBoard>>,
    /// Groups whose subscriptions' status may have changed since the last sync.
    dirty: Vec<Gid>,
    all_dirty: bool,
}

/// What removing a subscription left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Removed {
    pub(crate) mgid: Gid,
    /// The data core still has another subscription to the group.
    pub(crate) core_still_subscribed: bool,
    /// Some data core still has a subscription to the group.
    pub(crate) group_still_subscribed: bool,
}

impl Subscriptions {
    pub(crate) fn new(boards: Vec<Arc<SubBoard>>) -> Subscriptions {
        Subscriptions {
            slots: boards
                .iter()
                .map(|_| vec![None; SUB_SLOTS].into())
                .collect(),
            by_group: HashMap::default(),
            boards,
            dirty: Vec::new(),
            all_dirty: false,
        }
    }

    /// Records a subscription; returns whether it is the data core's first to `mgid`.
    /// A slot still holding an older subscription (its `Unsubscribe` lost) is freed
    /// first: `Some` says what that left.
    pub(crate) fn add(
        &mut self,
        core: usize,
        slot: SubSlot,
        mgid: Gid,
    ) -> Option<(bool, Option<Removed>)> {
        let index = slot.index();
        let old = match self.slots.get(core)?.get(index)? {
            Some(_) => self.remove(core, index),
            None => None,
        };
        self.slots[core][index] = Some((mgid, slot.gen));
        let subs = self.by_group.entry(mgid).or_default();
        let first = !subs.iter().any(|(c, _)| *c == core);
        subs.push((core, slot));
        Some((first, old))
    }

    /// Forgets the subscription in data core `core`'s slot `index`, if any.
    pub(crate) fn remove(&mut self, core: usize, index: usize) -> Option<Removed> {
        let (mgid, _) = self.slots.get_mut(core)?.get_mut(index)?.take()?;
        let subs = self.by_group.get_mut(&mgid)?;
        subs.retain(|(c, s)| !(*c == core && s.index() == index));
        let core_still_subscribed = subs.iter().any(|(c, _)| *c == core);
        let group_still_subscribed = !subs.is_empty();
        if !group_still_subscribed {
            self.by_group.remove(&mgid);
        }
        Some(Removed {
            mgid,
            core_still_subscribed,
            group_still_subscribed,
        })
    }

    /// The slot a data core's `Unsubscribe` names, if it is still the current claim.
    pub(crate) fn is_current(&self, core: usize, slot: SubSlot) -> bool {
        matches!(
            self.slots.get(core).and_then(|s| s.get(slot.index())),
            Some(Some((_, gen))) if *gen == slot.gen
        )
    }

    /// The data cores subscribed to `mgid`, one bit each.
    pub(crate) fn cores_of(&self, mgid: &Gid) -> u64 {
        self.by_group.get(mgid).map_or(0, |subs| {
            subs.iter()
                .fold(0, |m, (c, _)| m | 1u64.checked_shl(*c as u32).unwrap_or(0))
        })
    }

    /// Every group a subscription names.
    pub(crate) fn groups(&self) -> impl Iterator<Item = Gid> + '_ {
        self.by_group.keys().copied()
    }

    /// Whether any subscription names `mgid`.
    pub(crate) fn has(&self, mgid: &Gid) -> bool {
        self.by_group.contains_key(mgid)
    }

    /// Writes `status` to every subscription of `mgid`.
    pub(crate) fn report(&self, mgid: &Gid, status: JoinStatus) {
        for (core, slot) in self.by_group.get(mgid).into_iter().flatten() {
            self.report_one(*core, *slot, status);
        }
    }

    /// Writes `status` to one subscription.
    pub(crate) fn report_one(&self, core: usize, slot: SubSlot, status: JoinStatus) {
        if let Some(b) = self.boards.get(core) {
            b.set(slot, status);
        }
    }

    /// `mgid`'s subscriptions may see another status: the next sync reports it.
    pub(crate) fn touch(&mut self, mgid: Gid) {
        if self.by_group.contains_key(&mgid) {
            self.dirty.push(mgid);
        }
    }

    /// Every subscription may see another status (a flush started or ended).
    pub(crate) fn touch_all(&mut self) {
        if !self.by_group.is_empty() {
            self.all_dirty = true;
        }
    }

    /// The groups to report again, emptied: every subscribed one after `touch_all`.
    pub(crate) fn take_dirty(&mut self, out: &mut Vec<Gid>) {
        out.clear();
        if std::mem::take(&mut self.all_dirty) {
            out.extend(self.by_group.keys().copied());
            self.dirty.clear();
        } else {
            out.append(&mut self.dirty);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_survives_the_board_word() {
        for s in [
            JoinStatus::Pending,
            JoinStatus::Joined,
            JoinStatus::Refused { sa_status: 0 },
            JoinStatus::Refused { sa_status: 0x0200 },
            JoinStatus::Refused { sa_status: 0xffff },
            JoinStatus::TimedOut,
            JoinStatus::TableFull,
            JoinStatus::NotAGroup,
        ] {
            assert_eq!(JoinStatus::decode(s.encode()), s);
        }
    }

    #[test]
    fn a_slot_reused_does_not_show_the_earlier_claims_status() {
        let b = SubBoard::new();
        let first = b.claim().unwrap();
        b.set(first, JoinStatus::Joined);
        assert_eq!(b.status(first), JoinStatus::Joined);
        b.release(first);
        let second = b.claim().unwrap();
        assert_eq!(second.index(), first.index());
        assert_eq!(b.status(second), JoinStatus::Pending);
        // A late write for the first claim is not the second's.
        b.set(first, JoinStatus::TimedOut);
        assert_eq!(b.status(second), JoinStatus::Pending);
        assert_eq!(b.status(first), JoinStatus::TimedOut);
    }

    #[test]
    fn the_board_hands_out_each_slot_once() {
        let b = SubBoard::new();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..SUB_SLOTS {
            assert!(seen.insert(b.claim().unwrap().index()));
        }
        assert!(b.claim().is_none());
    }

    #[test]
    fn subscriptions_count_per_core_and_per_group() {
        let boards = vec![Arc::new(SubBoard::new()), Arc::new(SubBoard::new())];
        let mut subs = Subscriptions::new(boards.clone());
        let g = Gid::new(0xff12_401b_ffff_0000, 1);
        let (a, b, c) = (
            boards[0].claim().unwrap(),
            boards[0].claim().unwrap(),
            boards[1].claim().unwrap(),
        );
        assert_eq!(subs.add(0, a, g), Some((true, None)));
        assert_eq!(subs.add(0, b, g), Some((false, None)));
        assert_eq!(subs.add(1, c, g), Some((true, None)));
        assert_eq!(subs.cores_of(&g), 0b11);
        subs.report(&g, JoinStatus::Joined);
        assert!([(0, a), (0, b), (1, c)]
            .iter()
            .all(|(core, s)| boards[*core].status(*s) == JoinStatus::Joined));
        let r = subs.remove(0, a.index()).unwrap();
        assert!(r.core_still_subscribed && r.group_still_subscribed);
        let r = subs.remove(0, b.index()).unwrap();
        assert!(!r.core_still_subscribed && r.group_still_subscribed);
        assert_eq!(subs.cores_of(&g), 0b10);
        let r = subs.remove(1, c.index()).unwrap();
        assert!(!r.group_still_subscribed && !subs.has(&g));
        assert!(subs.remove(1, c.index()).is_none());
    }
}
