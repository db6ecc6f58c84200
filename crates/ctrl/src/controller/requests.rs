//! Requests from the data cores (DESIGN rule 4): a bounded number per ring and poll.

use ibpoll_dev::Nanos;
use ibpoll_mem::Mbuf;

use super::Controller;
use crate::mcast::{Group, GroupKind, GroupState, RetryAt};
use crate::ring::{GroupAddr, Request};

impl Controller {
    pub(super) fn requests(&mut self, now: Nanos) -> usize {
        let mut n = 0;
        for i in 0..self.rings.len() {
            for _ in 0..self.cfg.requests_per_poll {
                let Some(req) = self.rings[i].ring.pop() else {
                    break;
                };
                n += 1;
                self.stats.requests += 1;
                match req {
                    Request::Mcast { group, mbuf } => {
                        self.counted(i, |c| c.mcast_request(group, mbuf, now))
                    }
                    Request::Resolve { next_hop, mbuf } => {
                        self.counted(i, |c| c.resolve_request(next_hop.into(), mbuf, now))
                    }
                    // An IPv6 group goes the multicast way; its drops count as such.
                    Request::Resolve6 { next_hop, mbuf } => {
                        self.counted(i, |c| c.resolve6_request(next_hop, mbuf, now))
                    }
                    Request::Arp { mbuf } => self.arp_input(mbuf, now),
                    Request::Nd { mbuf } => self.nd_input(mbuf, now),
                    Request::Subscribe { group, slot } => self.subscribe(i, group, slot, now),
                    Request::Unsubscribe { slot } => self.unsubscribe(i, slot, now),
                }
            }
        }
        n
    }

    /// The counters of a multicast packet request's drops on arrival.
    fn mcast_drops(&self) -> u64 {
        let s = &self.stats;
        s.mcast_queue_full + s.mcast_table_full + s.mcast_bad_group
    }

    /// Handles a packet request of data core `i` and adds the drops it caused on
    /// arrival to that core's request counters.
    fn counted(&mut self, i: usize, handle: impl FnOnce(&mut Self)) {
        let before = (self.resolve_drops(), self.mcast_drops());
        handle(self);
        let drops = &self.rings[i].drops;
        drops.resolve.add(self.resolve_drops() - before.0);
        drops.mcast.add(self.mcast_drops() - before.1);
    }

    /// The counters of a next-hop packet request's drops on arrival.
    fn resolve_drops(&self) -> u64 {
        let s = &self.stats;
        s.neigh_queue_full + s.neigh_table_full + s.nd_no_address
    }

    /// A packet for a group the data core had no Joined entry for (DESIGN rule 4).
    pub(crate) fn mcast_request(&mut self, group: GroupAddr, mbuf: Mbuf, now: Nanos) {
        let Some(mgid) = self.mgid_of(group) else {
            self.stats.mcast_bad_group += 1;
            return;
        };
        if !self.groups.contains_key(&mgid) {
            if self.groups.len() >= self.cfg.groups_max {
                self.stats.mcast_table_full += 1;
                return;
            }
            self.groups
                .insert(Group::new(mgid, GroupKind::SendOnly, now));
        }
        let g = self.groups.get_mut(&mgid).expect("present");
        g.last_used = now;
        let sendable = match &g.state {
            GroupState::Joined { entry, .. } if self.flush.is_none() => Some(entry.clone()),
            _ => None,
        };
        if let Some(entry) = sendable {
            self.snapshot().mark_used(entry.nh());
            self.send_mcast(&entry, mbuf);
            return;
        }
        if let GroupState::Idle {
            retry_at: r @ RetryAt::NextPacket(_),
            ..
        } = &mut g.state
        {
            let RetryAt::NextPacket(t) = *r else {
                unreachable!()
            };
            *r = RetryAt::At(t.max(now));
        }
        if g.queue.len() >= self.cfg.mcast_queue_max {
            self.stats.mcast_queue_full += 1;
            return;
        }
        self.stats.mcast_queued += 1;
        g.queue.push_back(mbuf);
    }
}
