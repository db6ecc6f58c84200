//! The partition check: no packet is ever delivered to a QP whose P_Key does not match
//! the sender's (IBA 10.9.3: same partition number, not both limited members).
//!
//! The simulated switch decides a packet's receivers while the sender's `tx_burst` runs
//! (it copies the payload into the receivers' rings then; the reordering fault only
//! delays the enqueue), and the receiver finds it on a later `rx_burst`, possibly after
//! its P_Key table or its QP's P_Key index changed. So the check is made of two halves,
//! both in wrappers that [`ObsPort`](crate::obs::ObsPort) puts around the queues of
//! every QP it creates (the fabric itself is not touched, so its send path costs nothing
//! more when nobody observes):
//!
//! * at the send: the P_Key every observed QP has at that instant (its port's table at
//!   its P_Key index, read from the fabric, not from the switch's own state) is noted as
//!   an *epoch* (a new one only when something changed), and the payload's digest is
//!   noted with the sender and the epoch;
//! * at the receive: the payload's digest names the sends it can come from, and one of
//!   them must have had a P_Key that matches the receiver's P_Key *of that send's
//!   epoch*. A payload no observed QP sent is a violation too.
//!
//! Identical payloads (repeated ARP requests) share a digest; the receive passes if any
//! of their sends may legally reach the receiver, so a crossing hidden behind an
//! identical legal packet would be missed, which the simulator's unique sequence
//! numbers make rare.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use ibpoll_dev::{RxCounters, RxQueue, TxCounters, TxDst, TxQueue};
use ibpoll_mem::{Mbuf, MbufArray};
use ibpoll_pmd_sim::{PortId, SimFabric};
use ibpoll_wire::{PKey, Qpn};

use crate::trace::Fnv;

/// One observed QP.
#[derive(Debug, Clone, Copy)]
struct QpView {
    host: usize,
    port: PortId,
    qpn: u32,
    pkey_index: u16,
}

/// What the partition check knows of the run.
#[derive(Debug)]
pub struct Partitions {
    fabric: SimFabric,
    qps: Vec<QpView>,
    /// Every distinct assignment of P_Keys to the observed QPs, by epoch (index).
    epochs: Vec<Vec<PKey>>,
    /// Payload digest -> the sends with that payload: (epoch << 16 | sender QP index).
    sends: HashMap<u64, Vec<u64>>,
    /// Packets received and checked.
    pub checked: u64,
}

/// A receive or send that broke the partition rule, with what was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crossing {
    /// The receiving host.
    pub host: usize,
    /// What is wrong.
    pub what: String,
}

impl Partitions {
    /// No QP observed yet.
    pub fn new(fabric: SimFabric) -> Partitions {
        Partitions {
            fabric,
            qps: Vec::new(),
            epochs: Vec::new(),
            sends: HashMap::new(),
            checked: 0,
        }
    }

    /// A QP of `host`'s port `port` was created at `pkey_index`; its index here.
    pub fn add_qp(&mut self, host: usize, port: PortId, qpn: u32, pkey_index: u16) -> usize {
        self.qps.push(QpView {
            host,
            port,
            qpn,
            pkey_index,
        });
        self.qps.len() - 1
    }

    /// The QP `qpn` of `host` moved to another P_Key index.
    pub fn set_pkey_index(&mut self, host: usize, qpn: u32, pkey_index: u16) {
        for q in &mut self.qps {
            if q.host == host && q.qpn == qpn {
                q.pkey_index = pkey_index;
            }
        }
    }

    /// The epoch of the P_Keys every observed QP has now.
    fn epoch_now(&mut self) -> u64 {
        let now: Vec<PKey> = self
            .qps
            .iter()
            .map(|q| {
                let attr = self.fabric.port_attr(q.port);
                attr.pkeys
                    .get(usize::from(q.pkey_index))
                    .copied()
                    .unwrap_or(PKey::INVALID)
            })
            .collect();
        if self.epochs.last() != Some(&now) {
            self.epochs.push(now);
        }
        (self.epochs.len() - 1) as u64
    }

    /// QP `qp` is about to send these payloads.
    fn note_sends<'a>(&mut self, qp: usize, payloads: impl Iterator<Item = &'a [u8]>) {
        let epoch = self.epoch_now();
        let send = epoch << 16 | qp as u64;
        for p in payloads {
            let v = self.sends.entry(digest(p)).or_default();
            if !v.contains(&send) {
                v.push(send);
            }
        }
    }

    /// QP `qp` received `payload`: `Err` when no send of it could legally reach it.
    pub fn check_receive(&mut self, qp: usize, payload: &[u8]) -> Result<(), Crossing> {
        self.checked += 1;
        let host = self.qps[qp].host;
        let Some(sends) = self.sends.get(&digest(payload)) else {
            return Err(Crossing {
                host,
                what: format!(
                    "QP {:#x} received a {}-byte packet that no observed QP sent",
                    self.qps[qp].qpn,
                    payload.len()
                ),
            });
        };
        // A QP created after a send's epoch (a restarted host's) has no P_Key in it:
        // the switch chose that send's receivers before the QP existed.
        let verdicts = sends.iter().filter_map(|s| {
            let epoch = &self.epochs[(s >> 16) as usize];
            let sender = (s & 0xffff) as usize;
            Some((sender, *epoch.get(sender)?, *epoch.get(qp)?))
        });
        let mut seen = Vec::new();
        for (sender, theirs, ours) in verdicts {
            if theirs.matches(ours) {
                return Ok(());
            }
            seen.push(format!(
                "host {} QP {:#x} in P_Key {theirs} when ours was {ours}",
                self.qps[sender].host, self.qps[sender].qpn
            ));
        }
        Err(Crossing {
            host,
            what: format!(
                "QP {:#x} received a packet across partitions: sent by {}",
                self.qps[qp].qpn,
                seen.join(", ")
            ),
        })
    }
}

/// FNV-1a of a payload.
fn digest(p: &[u8]) -> u64 {
    let mut f = Fnv::new();
    f.bytes(p);
    f.get()
}

fn lock(p: &Mutex<Partitions>) -> MutexGuard<'_, Partitions> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

/// A send queue whose payloads are noted before they go.
#[derive(Debug)]
pub(crate) struct ObsTx {
    pub(crate) inner: Box<dyn TxQueue>,
    pub(crate) qp: usize,
    pub(crate) parts: Arc<Mutex<Partitions>>,
}

impl TxQueue for ObsTx {
    fn src_qpn(&self) -> Qpn {
        self.inner.src_qpn()
    }

    fn tx_burst(&mut self, pkts: &mut MbufArray, dst: &[TxDst]) -> usize {
        let payloads = pkts.as_slice().iter().map(Mbuf::data);
        lock(&self.parts).note_sends(self.qp, payloads);
        self.inner.tx_burst(pkts, dst)
    }

    fn completed(&mut self) -> u64 {
        self.inner.completed()
    }

    fn counters(&self) -> Arc<TxCounters> {
        self.inner.counters()
    }
}

/// A receive queue whose every packet is checked against the sends it may come from.
#[derive(Debug)]
pub(crate) struct ObsRx {
    pub(crate) inner: Box<dyn RxQueue>,
    pub(crate) qp: usize,
    pub(crate) parts: Arc<Mutex<Partitions>>,
}

impl RxQueue for ObsRx {
    fn rx_burst(&mut self, pkts: &mut MbufArray) -> usize {
        let from = pkts.len();
        let n = self.inner.rx_burst(pkts);
        let mut parts = lock(&self.parts);
        for m in &pkts.as_slice()[from..] {
            if let Err(c) = parts.check_receive(self.qp, m.data()) {
                panic!("host {}: {}", c.host, c.what);
            }
        }
        n
    }

    fn counters(&self) -> Arc<RxCounters> {
        self.inner.counters()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ibpoll_pmd_sim::FabricConfig;

    /// The checker itself: a receive is judged by the P_Keys of the send's instant, and
    /// one across partitions (or from nowhere) is refused.
    #[test]
    fn a_receive_across_partitions_is_refused() {
        let fabric = SimFabric::new(FabricConfig::default());
        let a = fabric.add_node("a", 1).port_id(1);
        let b = fabric.add_node("b", 1).port_id(1);
        let mut p = Partitions::new(fabric.clone());
        let qa = p.add_qp(0, a, 0x100, 0);
        let qb = p.add_qp(1, b, 0x101, 0);
        p.note_sends(qa, [&b"same partition"[..]].into_iter());
        assert_eq!(p.check_receive(qb, b"same partition"), Ok(()));
        let err = p.check_receive(qb, b"never sent").unwrap_err();
        assert!(err.what.contains("no observed QP sent"), "{err:?}");

        // b's table changes: a packet sent now crosses, one sent before does not.
        fabric.set_pkeys(b, vec![PKey(0x8001)]);
        p.note_sends(qa, [&b"after the change"[..]].into_iter());
        let err = p.check_receive(qb, b"after the change").unwrap_err();
        assert_eq!(err.host, 1);
        assert!(err.what.contains("across partitions"), "{err:?}");
        assert_eq!(p.check_receive(qb, b"same partition"), Ok(()));

        // b's QP follows its partition to index 1: matching again.
        fabric.set_pkeys(b, vec![PKey(0x8001), PKey::DEFAULT]);
        p.set_pkey_index(1, 0x101, 1);
        p.note_sends(qa, [&b"moved"[..]].into_iter());
        assert_eq!(p.check_receive(qb, b"moved"), Ok(()));
        assert_eq!(p.epochs.len(), 3);
    }
}
