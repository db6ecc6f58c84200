//! The control core's own sends (queued multicast packets, ARP, queued unicast packets):
//! a bounded backlog in front of its send queue, each send with the guard that keeps
//! its address handle alive until the send went out.

use std::sync::Arc;

use ibpoll_dev::TxDesc;
use ibpoll_mem::Mbuf;
use ibpoll_wire::Qpn;

use super::Controller;
use crate::snapshot::{AhGuard, McastEntry};

impl Controller {
    pub(crate) fn send_mcast(&mut self, entry: &Arc<McastEntry>, mbuf: Mbuf) {
        let desc = TxDesc {
            mbuf: Some(mbuf),
            ah: entry.ah(),
            remote_qpn: Qpn::MULTICAST,
            remote_qkey: entry.qkey,
        };
        self.tx_push(desc, entry.ah.clone());
    }

    /// Queues one send; the guard keeps its address handle alive until it went out.
    pub(crate) fn tx_push(&mut self, desc: TxDesc, guard: Arc<AhGuard>) {
        if self.tx_descs.len() >= self.cfg.tx_backlog_max {
            self.tx_flush();
            if self.tx_descs.len() >= self.cfg.tx_backlog_max {
                self.stats.tx_backlog_full += 1;
                return;
            }
        }
        self.tx_descs.push_back(desc);
        self.tx_guards.push_back(guard);
    }

    pub(super) fn tx_flush(&mut self) -> usize {
        if self.tx_descs.is_empty() {
            return 0;
        }
        let n = self.tx.tx_burst(self.tx_descs.make_contiguous());
        self.tx_descs.drain(..n);
        self.tx_guards.drain(..n);
        self.stats.tx_sent += n as u64;
        n
    }
}
