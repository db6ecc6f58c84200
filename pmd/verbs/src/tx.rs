//! The send path: post linked lists of signaled sends (one SGE per packet, the lkey of
//! the packet's pool), poll their completions in bursts, count them in posting order.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use ibpoll_dev::{TxCounters, TxDst, TxQueue};
use ibpoll_mem::{Mbuf, MbufArray, Mempool};
use ibpoll_wire::{QKey, Qpn};

use crate::ah::AhTable;
use crate::device::DevShared;
use crate::ffi::RawSend;
use crate::setup::{QpShared, TxState, BURST, LKEY_FAILED, LKEY_KNOWN};

/// The send queue of a verbs UD QP.
#[derive(Debug)]
pub(crate) struct VerbsTxQueue {
    qp: Arc<QpShared>,
    counters: Arc<TxCounters>,
}

impl VerbsTxQueue {
    pub(crate) fn new(qp: Arc<QpShared>) -> VerbsTxQueue {
        // SAFETY: the queue is being made: nothing else uses the send state yet.
        let counters = unsafe { qp.tx() }.counters.clone();
        VerbsTxQueue { qp, counters }
    }
}

impl TxQueue for VerbsTxQueue {
    fn src_qpn(&self) -> Qpn {
        self.qp.qpn
    }

    #[inline]
    fn tx_burst(&mut self, pkts: &mut MbufArray, dst: &[TxDst]) -> usize {
        let qp = &*self.qp;
        // SAFETY: this queue (`&mut self`, the QP's only send queue) is the send state's
        // user; a move touches it only while the queue is parked.
        let tx = unsafe { qp.tx() };
        if tx.sq.room() < pkts.len() {
            reap(tx);
        }
        let ahs = qp.dev.ahs(qp.port);
        let mut taken = 0;
        while taken < dst.len() && !pkts.is_empty() && tx.sq.room() > 0 {
            let k = resolve(tx, qp, ahs, pkts, &dst[taken..]);
            if k == 0 {
                // The front packet cannot be sent (its pool cannot be registered, or its
                // address handle is unknown): it is taken, dropped and counted, and
                // completes in order.
                drop(pkts.take(0));
                tx.sq.push_unposted();
                tx.counters.errors.add(1);
                taken += 1;
                continue;
            }
            let sends = &tx.sends;
            // SAFETY: each send's buffer is a packet of `pkts` in a registered pool
            // (its lkey), given up right below for the posted ones and taken back once
            // when its completion is polled (or a reset or the QP's destruction returns
            // it); each AH is live, and the caller keeps it so until the send completed
            // (`Port::destroy_ah`'s contract).
            let posted = unsafe { tx.sq.post_with(k, |i| sends[i]) };
            let mut bytes = 0;
            for m in pkts.drain_front(posted) {
                bytes += m.len() as u64;
                let _ = m.into_raw();
            }
            tx.counters.packets.add(posted as u64);
            tx.counters.bytes.add(bytes);
            taken += posted;
            if posted < k {
                break;
            }
        }
        taken
    }

    fn completed(&mut self) -> u64 {
        // SAFETY: as in `tx_burst`.
        let tx = unsafe { self.qp.tx() };
        reap(tx);
        tx.sq.completed()
    }

    fn counters(&self) -> Arc<TxCounters> {
        self.counters.clone()
    }
}

/// Fills `tx.sends` for the packets at the front of `pkts` (at most a burst and the
/// queue's room) up to the first one that cannot be sent; returns how many.
#[inline]
fn resolve(
    tx: &mut TxState,
    qp: &QpShared,
    ahs: &AhTable,
    pkts: &MbufArray,
    dst: &[TxDst],
) -> usize {
    let n = pkts.len().min(dst.len()).min(tx.sq.room()).min(BURST);
    tx.sends.clear();
    for (m, d) in pkts.as_slice()[..n].iter().zip(dst) {
        let Some(lkey) = lkey(tx, &qp.dev, m) else {
            break;
        };
        let ah = ahs.get(d.ah);
        if ah.is_null() {
            break;
        }
        tx.sends.push(RawSend {
            wr_id: m.as_raw() as u64,
            addr: (m.buf_addr() + m.data_offset()) as u64,
            len: m.len() as u32,
            lkey,
            ah,
            remote_qpn: d.qpn.get(),
            remote_qkey: remote_qkey(qp, d.qkey),
        });
    }
    tx.sends.len()
}

/// The Q_Key a send carries. A controlled Q_Key (high bit set) means the sending QP's
/// own (the InfiniBand spec has the HCA substitute it); not every provider does (rxe sends
/// the value as it is), so the driver does it for all.
#[inline]
fn remote_qkey(qp: &QpShared, qkey: QKey) -> u32 {
    if qkey.is_controlled() {
        // Relaxed: the Q_Key is set by the control path (`set_qp_qkey`) and carries no
        // other data; a send posted across the change may use either value.
        qp.qkey.load(Ordering::Relaxed)
    } else {
        qkey.0
    }
}

/// The lkey of `m`'s pool: from the queue's table, or registered now (once per pool and
/// device) the first time the queue sends from the pool.
#[inline]
fn lkey(tx: &mut TxState, dev: &DevShared, m: &Mbuf) -> Option<u32> {
    let id = usize::from(m.pool_id());
    match tx.lkeys.get(id) {
        Some(&v) if v & LKEY_KNOWN != 0 => Some(v as u32),
        Some(&v) if v & LKEY_FAILED != 0 => None,
        _ => lkey_slow(tx, dev, m, id),
    }
}

#[cold]
fn lkey_slow(tx: &mut TxState, dev: &DevShared, m: &Mbuf, id: usize) -> Option<u32> {
    if tx.lkeys.len() <= id {
        tx.lkeys.resize(id + 1, 0);
    }
    let registered = match Mempool::of(m) {
        Some(pool) => dev.lkey(&pool).map_err(|e| e.to_string()),
        None => Err("the pool has no handle left".to_owned()),
    };
    match registered {
        Ok(k) => {
            tx.lkeys[id] = LKEY_KNOWN | u64::from(k);
            Some(k)
        }
        Err(e) => {
            tracing::error!(
                device = %dev.ctx.name(),
                pool_id = id,
                error = %e,
                "a send's pool cannot be registered: its sends are dropped (tx errors)"
            );
            tx.lkeys[id] = LKEY_FAILED;
            None
        }
    }
}

/// Polls send completions until the CQ is empty, returning each buffer to its pool, and
/// publishes the completion count.
fn reap(tx: &mut TxState) {
    loop {
        let n = tx.sq.poll_burst(&mut tx.wc);
        let mut errors = 0;
        for w in &tx.wc[..n] {
            if !w.is_ok() {
                errors += 1;
            }
            // SAFETY: the wr_id is the into_raw word of a buffer this queue posted, just
            // popped from its ring, so it is taken back exactly once.
            drop(unsafe { Mbuf::from_raw(w.wr_id() as usize) });
        }
        if errors > 0 {
            tx.counters.errors.add(errors);
        }
        if n < tx.wc.len() {
            break;
        }
    }
    let c = tx.sq.completed();
    tx.counters.completed.add(c - tx.published);
    tx.published = c;
}
