//! The MAD path: [`MadChannel`] over ibsim's data sockets. Never blocks; failures
//! other than "cannot queue at all" are counters.

use std::io::ErrorKind;

use ibpoll_dev::{Error, Mad, MadAddr, MadChannel, MAD_LEN};
use ibpoll_wire::{Lid, QKey, Qpn};

use crate::proto::{SimRequest, REQ_LEN, STATUS_UNDELIVERABLE};
use crate::setup::IbsimMadChannel;

/// MAD bytes 8..16: TransactionID.
const TID: core::ops::Range<usize> = 8..16;
/// At most this many datagrams are looked at in one `recv` (bounded work per poll).
const RECV_BATCH_MAX: usize = 32;

fn tid(m: &Mad) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&m[TID]);
    u64::from_be_bytes(b)
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
            let Some(r) = SimRequest::parse(&buf[..n]) else {
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
            self.counters.rx += 1;
            let mut mad = r.mad;
            // The sender wrote `length` bytes (OpenSM answers with the SA header and
            // its records only: 112 bytes for one MCMemberRecord); umad2sim leaves the
            // rest of its buffer uninitialised. Zero it, as a MAD arrives from the
            // kernel's umad: a table's records then end at the first all-zero one.
            let len = usize::try_from(r.length).unwrap_or(MAD_LEN).min(MAD_LEN);
            mad[len..].fill(0);
            let from = MadAddr {
                lid: r.slid,
                qpn: Qpn::from_bits(r.sqp),
                // ibsim carries no Q_Key or SL; QP1 traffic uses the GSI Q_Key.
                qkey: QKey::GSI,
                sl: 0,
                pkey_index: 0,
            };
            return Some((mad, from));
        }
        None
    }
}
