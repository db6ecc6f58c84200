//! The send path: IP packets are freed (counted), anything else (ARP, the control
//! plane's traffic) goes to the wrapped port's send queue so that neighbours still
//! resolve.

use std::collections::VecDeque;
use std::sync::Arc;

use ibpoll_dev::{TxCounters, TxDst, TxQueue};
use ibpoll_mem::{Mbuf, MbufArray};
use ibpoll_wire::{ipoib, Qpn};

use crate::port::QueueCounters;

/// Sends handed to the wrapped queue per burst at most (more wait for the next burst:
/// control traffic comes a few packets at a time).
const CTRL_MAX: usize = 64;

/// Whether a send is data (IPv4 or IPv6), to be freed here.
#[inline]
fn is_ip(m: &Mbuf) -> bool {
    let d = m.data();
    d.len() >= ipoib::HEADER_LEN
        && matches!(
            ipoib::EtherType(u16::from_be_bytes([d[0], d[1]])),
            ipoib::EtherType::IPV4 | ipoib::EtherType::IPV6
        )
}

/// A send queue of a replay port.
#[derive(Debug)]
pub(crate) struct ReplayTxQueue {
    inner: Box<dyn TxQueue>,
    counters: Arc<TxCounters>,
    replay: Arc<QueueCounters>,
    /// Sends taken.
    posted: u64,
    /// Sends handed to the wrapped queue so far.
    inner_posted: u64,
    /// Completions added to `counters` so far.
    reported: u64,
    /// Per burst that handed sends to the wrapped queue: (the first of them in this
    /// queue's count, the wrapped queue's count once they complete). Every send before
    /// the front's first has completed.
    pending: VecDeque<(u64, u64)>,
    /// Control sends and their destinations, for the wrapped queue.
    ctrl: MbufArray,
    ctrl_dst: Vec<TxDst>,
    /// Data sends to free in bulk when the burst is mixed.
    free_later: MbufArray,
}

impl ReplayTxQueue {
    pub(crate) fn new(inner: Box<dyn TxQueue>, replay: Arc<QueueCounters>) -> ReplayTxQueue {
        ReplayTxQueue {
            inner,
            counters: Arc::new(TxCounters::default()),
            replay,
            posted: 0,
            inner_posted: 0,
            reported: 0,
            pending: VecDeque::with_capacity(64),
            ctrl: MbufArray::with_capacity(CTRL_MAX),
            ctrl_dst: Vec::with_capacity(CTRL_MAX),
            free_later: MbufArray::with_capacity(CTRL_MAX),
        }
    }

    /// Splits the first `n` sends of a mixed burst: data freed, control to the
    /// wrapped queue (up to `CTRL_MAX` of them: the burst is cut after the last that
    /// fits); returns how many were taken and their bytes.
    #[cold]
    fn mixed(&mut self, pkts: &mut MbufArray, dst: &[TxDst], n: usize) -> (usize, u64) {
        let (mut taken, mut bytes) = (0, 0u64);
        let (mut freed, mut freed_bytes) = (0u64, 0u64);
        let mut first_ctrl = None;
        for (i, m) in pkts.drain_front(n).enumerate() {
            bytes += m.len() as u64;
            if is_ip(&m) {
                freed += 1;
                freed_bytes += m.len() as u64;
                if self.free_later.is_full() {
                    self.free_later.clear();
                }
                let _ = self.free_later.push(m);
            } else {
                first_ctrl.get_or_insert(self.posted + i as u64);
                let _ = self.ctrl.push(m);
                self.ctrl_dst.push(dst[i]);
            }
            taken += 1;
            if self.ctrl.is_full() {
                break;
            }
        }
        self.free_later.clear();
        self.replay.freed.add(freed);
        self.replay.freed_bytes.add(freed_bytes);
        let offered = self.ctrl.len();
        let sent = self.inner.tx_burst(&mut self.ctrl, &self.ctrl_dst);
        self.inner_posted += sent as u64;
        if let Some(first) = first_ctrl.filter(|_| sent > 0) {
            self.pending.push_back((first, self.inner_posted));
        }
        self.replay.to_inner.add(sent as u64);
        if sent < offered {
            // The wrapped queue is full: these are dropped, counted (the control plane
            // retries what it needs).
            self.replay.inner_refused.add((offered - sent) as u64);
            self.ctrl.clear();
        }
        self.ctrl_dst.clear();
        (taken, bytes)
    }

    /// Adds the completions since the last report to the counters.
    #[inline]
    fn report(&mut self, completed: u64) {
        if completed > self.reported {
            // This lcore is the only writer of its send counters.
            self.counters.completed.add(completed - self.reported);
            self.reported = completed;
        }
    }
}

impl TxQueue for ReplayTxQueue {
    fn src_qpn(&self) -> Qpn {
        self.inner.src_qpn()
    }

    #[inline]
    fn tx_burst(&mut self, pkts: &mut MbufArray, dst: &[TxDst]) -> usize {
        let n = pkts.len().min(dst.len());
        if n == 0 {
            return 0;
        }
        let mut bytes = 0u64;
        let mut all_ip = true;
        for m in &pkts.as_slice()[..n] {
            bytes += m.len() as u64;
            all_ip &= is_ip(m);
        }
        let taken = if all_ip {
            // All data: freed in bulk, the common case.
            if n == pkts.len() {
                pkts.clear();
            } else {
                for m in pkts.drain_front(n) {
                    if self.free_later.is_full() {
                        self.free_later.clear();
                    }
                    let _ = self.free_later.push(m);
                }
                self.free_later.clear();
            }
            self.replay.freed.add(n as u64);
            self.replay.freed_bytes.add(bytes);
            n
        } else {
            let (taken, b) = self.mixed(pkts, dst, n);
            bytes = b;
            taken
        };
        self.posted += taken as u64;
        // This lcore is the only writer of its send counters.
        self.counters.packets.add(taken as u64);
        self.counters.bytes.add(bytes);
        if self.pending.is_empty() {
            self.report(self.posted);
        }
        taken
    }

    fn completed(&mut self) -> u64 {
        let mut c = self.posted;
        if !self.pending.is_empty() {
            let done = self.inner.completed();
            while let Some(&(first, until)) = self.pending.front() {
                if done < until {
                    c = first;
                    break;
                }
                self.pending.pop_front();
            }
        }
        self.report(c);
        c
    }

    fn counters(&self) -> Arc<TxCounters> {
        self.counters.clone()
    }
}
