//! The control core's own sends (queued multicast packets, ARP, queued unicast packets):
//! a bounded backlog in front of its send-only QP, each send with the guard that keeps
//! its address handle alive until the send completed.

use std::sync::Arc;

use ibpoll_dev::TxDst;
use ibpoll_mem::Mbuf;

use super::Controller;
use crate::reaper::AhGuard;
use crate::snapshot::McastEntry;

impl Controller {
    pub(crate) fn send_mcast(&mut self, entry: &Arc<McastEntry>, mbuf: Mbuf) {
        self.tx_push(mbuf, entry.tx_dst(), entry.ah.clone());
    }

    /// Queues one send; the guard keeps its address handle alive until it completed.
    pub(crate) fn tx_push(&mut self, mbuf: Mbuf, dst: TxDst, guard: Arc<AhGuard>) {
        if self.tx_pkts.is_full() {
            self.tx_flush();
            if self.tx_pkts.is_full() {
                self.stats.tx_backlog_full += 1;
                return;
            }
        }
        self.tx_dst[self.tx_pkts.len()] = dst;
        // Cannot fail: not full, checked above.
        let _ = self.tx_pkts.push(mbuf);
        self.tx_guards.push_back(guard);
    }

    /// Releases the guards of completed sends and posts the backlog; returns how many
    /// were posted.
    pub(super) fn tx_flush(&mut self) -> usize {
        let completed = self.tx.completed();
        while self
            .tx_inflight
            .front()
            .is_some_and(|&(seq, _)| seq <= completed)
        {
            self.tx_inflight.pop_front();
        }
        let len = self.tx_pkts.len();
        if len == 0 {
            return 0;
        }
        let n = self.tx.tx_burst(&mut self.tx_pkts, &self.tx_dst[..len]);
        self.tx_dst.copy_within(n..len, 0);
        for g in self.tx_guards.drain(..n) {
            self.tx_posted += 1;
            self.tx_inflight.push_back((self.tx_posted, g));
        }
        self.stats.tx_sent += n as u64;
        n
    }
}
