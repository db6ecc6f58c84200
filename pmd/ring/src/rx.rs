//! The receive path: drain the rings into a QP, round-robin, as they are.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use ibpoll_dev::{RxCounters, RxQueue};
use ibpoll_mem::MbufArray;

use crate::pair::{Link, RxEnd};
use crate::port::QpGuard;

/// One receive queue of a ring QP: the consumer of every link into its QP.
#[derive(Debug)]
pub(crate) struct RingRxQueue {
    end: Arc<RxEnd>,
    /// The links into this QP, as of `seen_gen`.
    links: Vec<Arc<Link>>,
    seen_gen: u64,
    /// The link the next burst starts with (round-robin, so no sender starves another).
    next: usize,
    _qp: Arc<QpGuard>,
}

impl RingRxQueue {
    pub(crate) fn new(end: Arc<RxEnd>, qp: Arc<QpGuard>) -> RingRxQueue {
        RingRxQueue {
            end,
            links: Vec::new(),
            seen_gen: u64::MAX,
            next: 0,
            _qp: qp,
        }
    }

    /// Takes the current list of links (a new sender appeared, or a gone one was
    /// drained).
    #[cold]
    fn refresh(&mut self, gen: u64) {
        let list = self.end.links.lock().unwrap_or_else(|p| p.into_inner());
        self.links.clone_from(&list);
        self.seen_gen = gen;
        self.next = 0;
    }
}

impl RxQueue for RingRxQueue {
    #[inline]
    fn rx_burst(&mut self, pkts: &mut MbufArray) -> usize {
        // Relaxed: the list is read under its mutex in `refresh`; this only says when.
        let gen = self.end.links_gen.load(Ordering::Relaxed);
        if gen != self.seen_gen {
            self.refresh(gen);
        }
        let nl = self.links.len();
        let mut room = pkts.room();
        let (mut total, mut bytes) = (0, 0u64);
        for k in 0..nl {
            if room == 0 {
                break;
            }
            let link = &self.links[(self.next + k) % nl];
            // SAFETY: this queue (`&mut self`) is the ring's only consumer while it
            // lives, except while parked, when it is not called (a P_Key move then
            // drains the ring under the `Parked` token).
            let got = unsafe {
                link.ring.pop_with(room, |m| {
                    bytes += m.len() as u64;
                    // Cannot fail: at most `room` are popped.
                    drop(pkts.push(m));
                })
            };
            room -= got;
            total += got;
        }
        if nl > 1 {
            self.next = (self.next + 1) % nl;
        }
        if total > 0 {
            // This lcore is the only writer of packets/bytes.
            self.end.counters.packets.add(total as u64);
            self.end.counters.bytes.add(bytes);
        }
        total
    }

    fn counters(&self) -> Arc<RxCounters> {
        self.end.counters.clone()
    }
}
