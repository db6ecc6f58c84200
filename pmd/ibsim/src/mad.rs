//! The MAD path: [`MadChannel`] over ibsim's data sockets. Never blocks; failures
//! other than "cannot queue at all" are counters.

use std::io::ErrorKind;

use ibpoll_dev::{Error, Mad, MadAddr, MadChannel, MAD_LEN};
use ibpoll_wire::{Lid, QKey, Qpn};

use crate::proto::{SimRequest, REQ_LEN, STATUS_UNDELIVERABLE};
use crate::setup::{IbsimMadChannel, TID_HISTORY};

/// MAD bytes 8..16: TransactionID; byte 3 bit 7: the response bit.
const TID: core::ops::Range<usize> = 8..16;
const METHOD: usize = 3;
const RESPONSE_BIT: u8 = 0x80;
/// The TID bits ibsim leaves alone.
const TID_LOW_MASK: u64 = (1 << 48) - 1;
/// At most this many datagrams are looked at in one `recv` (bounded work per poll).
const RECV_BATCH_MAX: usize = 32;

fn tid(m: &Mad) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&m[TID]);
    u64::from_be_bytes(b)
}

/// The TIDs of the last [`TID_HISTORY`] requests, as the caller sent them (a ring;
/// `next` is the oldest slot).
#[derive(Debug, Clone)]
pub(crate) struct TidHistory {
    sent: [u64; TID_HISTORY],
    next: usize,
}

impl TidHistory {
    pub(crate) const fn new() -> TidHistory {
        TidHistory {
            sent: [0; TID_HISTORY],
            next: 0,
        }
    }

    /// Remembers the TID of a request as sent.
    fn remember(&mut self, t: u64) {
        self.sent[self.next] = t;
        self.next = (self.next + 1) % TID_HISTORY;
    }

    /// Gives an answer the TID its request was sent with when ibsim rewrote bits 48..63
    /// (the newest request with the same low 48 bits wins). True if it changed.
    fn restore(&self, m: &mut Mad) -> bool {
        let got = tid(m);
        let found = (1..=TID_HISTORY)
            .map(|back| self.sent[(self.next + TID_HISTORY - back) % TID_HISTORY])
            .find(|&sent| sent & TID_LOW_MASK == got & TID_LOW_MASK);
        match found {
            Some(sent) if sent != got => {
                m[TID].copy_from_slice(&sent.to_be_bytes());
                true
            }
            _ => false,
        }
    }
}

impl MadChannel for IbsimMadChannel {
    fn send(&mut self, mad: &Mad, to: MadAddr) -> Result<(), Error> {
        if to.lid == Lid(0) {
            return Err(Error::MadSend {
                dlid: to.lid,
                dqpn: to.qpn,
                reason: "LID 0: the subnet manager has not swept this port yet (no SM LID)",
            });
        }
        let req = SimRequest {
            dlid: to.lid,
            // ibsim fills in the sender's LID.
            slid: Lid(0),
            dqp: to.qpn.get(),
            sqp: Qpn::GSI.get(),
            status: 0,
            length: MAD_LEN as u64,
            mad: *mad,
        };
        match self.data.send(&req.emit()) {
            Ok(REQ_LEN) => {
                if mad[METHOD] & RESPONSE_BIT == 0 {
                    self.tids.remember(tid(mad));
                }
                self.counters.tx += 1;
                Ok(())
            }
            Ok(_) => Err(Error::MadSend {
                dlid: to.lid,
                dqpn: to.qpn,
                reason: "short datagram write to ibsim",
            }),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                self.counters.tx_full += 1;
                Err(Error::MadSend {
                    dlid: to.lid,
                    dqpn: to.qpn,
                    reason: "ibsim's socket queue is full; retry later",
                })
            }
            Err(source) => Err(Error::Io {
                op: "sending a MAD to ibsim",
                source,
            }),
        }
    }

    fn recv(&mut self) -> Option<(Mad, MadAddr)> {
        // One byte more than a sim_request, so that a longer datagram is seen as such.
        let mut buf = [0u8; REQ_LEN + 1];
        for _ in 0..RECV_BATCH_MAX {
            let n = match self.data.recv(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return None,
                Err(e) => {
                    self.counters.rx_errors += 1;
                    tracing::debug!(error = %e, "ibsim: receive failed");
                    return None;
                }
            };
            let Some(mut r) = SimRequest::parse(&buf[..n]) else {
                self.counters.rx_malformed += 1;
                continue;
            };
            if r.status != 0 {
                // Our own MAD, back from ibsim: no route to the LID, or nobody there.
                self.counters.rx_undeliverable += 1;
                tracing::debug!(
                    dlid = r.dlid.0,
                    status = r.status,
                    tid = format_args!("{:#x}", tid(&r.mad)),
                    why = if r.status == STATUS_UNDELIVERABLE {
                        "no route to the LID, or no client there"
                    } else {
                        "unknown ibsim status"
                    },
                    "ibsim returned our MAD undelivered"
                );
                continue;
            }
            if r.mad[METHOD] & RESPONSE_BIT != 0 && self.tids.restore(&mut r.mad) {
                self.counters.tid_restored += 1;
            }
            self.counters.rx += 1;
            let from = MadAddr {
                lid: r.slid,
                qpn: Qpn::from_bits(r.sqp),
                // ibsim carries no Q_Key or SL; QP1 traffic uses the GSI Q_Key.
                qkey: QKey::GSI,
                sl: 0,
                pkey_index: 0,
            };
            return Some((r.mad, from));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(t: u64) -> Mad {
        let mut m = [0u8; MAD_LEN];
        m[METHOD] = 0x81;
        m[TID].copy_from_slice(&t.to_be_bytes());
        m
    }

    #[test]
    fn tid_rewrite_is_undone() {
        let mut h = TidHistory::new();
        h.remember(0xABCD_0000_0000_0001);
        h.remember(0x0000_1234_5678_0002);
        // ibsim wrote client slot 3 into bits 48..63.
        let mut m = answer(0x0003_0000_0000_0001);
        assert!(h.restore(&mut m));
        assert_eq!(tid(&m), 0xABCD_0000_0000_0001);
        let mut m = answer(0x0003_1234_5678_0002);
        assert!(h.restore(&mut m));
        assert_eq!(tid(&m), 0x0000_1234_5678_0002);
        // Unchanged TIDs and unknown ones pass as they are.
        let mut m = answer(0xABCD_0000_0000_0001);
        assert!(!h.restore(&mut m));
        let mut m = answer(0x0003_0000_0000_0009);
        assert!(!h.restore(&mut m));
        assert_eq!(tid(&m), 0x0003_0000_0000_0009);
    }

    #[test]
    fn newest_of_equal_low_bits_wins_and_old_ones_are_forgotten() {
        let mut h = TidHistory::new();
        h.remember(0x1111_0000_0000_0005);
        h.remember(0x2222_0000_0000_0005);
        let mut m = answer(0x0001_0000_0000_0005);
        assert!(h.restore(&mut m));
        assert_eq!(tid(&m), 0x2222_0000_0000_0005);
        let mut h = TidHistory::new();
        h.remember(0x7777_0000_0000_0001);
        for t in 0..TID_HISTORY as u64 {
            h.remember(0x7777_0000_0001_0000 + t);
        }
        let mut m = answer(0x0001_0000_0000_0001);
        assert!(!h.restore(&mut m), "pushed out of the history");
    }
}
