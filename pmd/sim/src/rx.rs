//! The receive path: drain what the switch placed in a queue's posted buffers.

use std::sync::Arc;

use ibpoll_dev::{RxCounters, RxQueue};
use ibpoll_mem::MbufArray;

use crate::fabric::RxRing;
use crate::setup::QpGuard;

/// One receive queue of a simulated UD QP.
#[derive(Debug)]
pub(crate) struct SimRxQueue {
    pub(crate) ring: Arc<RxRing>,
    pub(crate) _qp: Arc<QpGuard>,
}

impl RxQueue for SimRxQueue {
    #[inline]
    fn rx_burst(&mut self, pkts: &mut MbufArray) -> usize {
        let mut bytes = 0u64;
        // SAFETY: this queue (`&mut self`) is the ring's only consumer while it lives
        // (a P_Key move drains it only while the queue is parked).
        let n = unsafe {
            self.ring.inbox.pop_with(pkts.room(), |m| {
                bytes += m.len() as u64;
                // Cannot fail: at most `room()` are popped.
                let _ = pkts.push(m);
            })
        };
        if n > 0 {
            // This lcore is the only writer of packets/bytes.
            self.ring.counters.packets.add(n as u64);
            self.ring.counters.bytes.add(bytes);
        }
        n
    }

    fn counters(&self) -> Arc<RxCounters> {
        self.ring.counters.clone()
    }
}
