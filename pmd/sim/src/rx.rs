//! The receive path: drain what the switch placed in a queue's posted buffers.

use std::sync::Arc;

use ibpoll_dev::{RxCounters, RxQueue};
use ibpoll_mem::Mbuf;

use crate::fabric::RxRing;
use crate::setup::QpGuard;

/// One receive queue of a simulated UD QP.
#[derive(Debug)]
pub(crate) struct SimRxQueue {
    pub(crate) ring: Arc<RxRing>,
    pub(crate) queue_id: u16,
    pub(crate) _qp: Arc<QpGuard>,
}

impl RxQueue for SimRxQueue {
    fn rx_burst(&mut self, pkts: &mut [Option<Mbuf>]) -> usize {
        // SAFETY: this queue (`&mut self`) is the ring's only consumer while it lives.
        let n = unsafe { self.ring.inbox.pop_burst(pkts) };
        if n > 0 {
            let bytes: u64 = pkts[..n].iter().flatten().map(|m| m.len() as u64).sum();
            // This lcore is the only writer of packets/bytes.
            self.ring.counters.packets.add(n as u64);
            self.ring.counters.bytes.add(bytes);
        }
        n
    }

    fn queue_id(&self) -> u16 {
        self.queue_id
    }

    fn counters(&self) -> Arc<RxCounters> {
        self.ring.counters.clone()
    }
}
