//! The receive path: poll the QP's receive CQ in bursts, hand the filled buffers over,
//! repost as many fresh ones.

use std::sync::Arc;

use ibpoll_dev::{RxCounters, RxQueue};
use ibpoll_mem::{Mbuf, MbufArray, MBUF_F_GRH, MBUF_F_MCAST};

use crate::roce::{self, GRH_AREA};
use crate::setup::{QpShared, RxState};
use crate::sys::verbs::IBV_WC_WR_FLUSH_ERR;

/// The receive queue of a verbs UD QP.
#[derive(Debug)]
pub(crate) struct VerbsRxQueue {
    qp: Arc<QpShared>,
    counters: Arc<RxCounters>,
}

impl VerbsRxQueue {
    pub(crate) fn new(qp: Arc<QpShared>) -> VerbsRxQueue {
        // SAFETY: the queue is being made: nothing else uses the receive state yet.
        let counters = unsafe { qp.rx() }
            .map(|rx| rx.counters.clone())
            .unwrap_or_default();
        VerbsRxQueue { qp, counters }
    }
}

impl RxQueue for VerbsRxQueue {
    #[inline]
    fn rx_burst(&mut self, pkts: &mut MbufArray) -> usize {
        // SAFETY: this queue (`&mut self`, the QP's only receive queue) is the receive
        // state's user; a move touches it only while the queue is parked.
        let Some(rx) = (unsafe { self.qp.rx() }) else {
            return 0;
        };
        let n = rx_burst(rx, pkts);
        rx.refill();
        n
    }

    fn counters(&self) -> Arc<RxCounters> {
        self.counters.clone()
    }
}

/// Moves up to `pkts.room()` (at most a burst) completed receives to `pkts`.
#[inline]
fn rx_burst(rx: &mut RxState, pkts: &mut MbufArray) -> usize {
    let room = pkts.room().min(rx.wc.len());
    if room == 0 {
        return 0;
    }
    let n = rx.rq.poll_burst(&mut rx.wc[..room]);
    let (mut taken, mut bytes, mut errors) = (0usize, 0u64, 0u64);
    for i in 0..n {
        let w = rx.wc[i];
        // SAFETY: the wr_id is the into_raw word of a buffer this queue posted, just
        // popped from its ring (`poll_burst`), so it is taken back exactly once.
        let mut m = unsafe { Mbuf::from_raw(w.wr_id() as usize) };
        if !w.is_ok() {
            errors += 1;
            if w.status() == IBV_WC_WR_FLUSH_ERR {
                rx.dead = true;
            }
            continue;
        }
        let Some(len) = (w.byte_len() as usize).checked_sub(GRH_AREA) else {
            errors += 1;
            continue;
        };
        let off = m.data_offset();
        if !m.set_data(off, len) {
            errors += 1;
            continue;
        }
        let mut flags = 0;
        if w.has_grh() {
            let area: &mut [u8; GRH_AREA] = (&mut m.buf_mut()[off - GRH_AREA..off])
                .try_into()
                .expect("40 bytes");
            if !rx.roce || roce::normalize(area) {
                flags |= MBUF_F_GRH;
                let dgid: &[u8; 16] = area[24..].try_into().expect("16 bytes");
                if roce::gid_is_multicast(dgid) {
                    flags |= MBUF_F_MCAST;
                }
            }
        }
        let meta = m.meta_mut();
        meta.src_qpn = w.src_qp();
        meta.slid = w.slid();
        meta.flags = flags;
        meta.queue = 0;
        meta.port = rx.port_num;
        bytes += len as u64;
        taken += 1;
        // Cannot fail: at most `room` completions were polled.
        let _ = pkts.push(m);
    }
    if taken > 0 {
        rx.counters.packets.add(taken as u64);
        rx.counters.bytes.add(bytes);
    }
    if errors > 0 {
        rx.counters.errors.add(errors);
    }
    taken
}
