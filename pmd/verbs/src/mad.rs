//! The MAD channel to the subnet administrator over libibumad (QP1 through the kernel's
//! `ib_umad`): [`UmadChannel`] implements [`MadChannel`].
//!
//! Contract, as the kernel's MAD layer and libibumad behave:
//! - One agent is registered for the SA class (0x03, version 2) on the port.
//! - A request (response bit clear) is sent with the channel's `timeout_ms` and
//!   `retries`: the kernel resends it and, when no answer came, hands the request back
//!   as a received MAD with status ETIMEDOUT. That is surfaced as
//!   [`MadEvent::Timeout`] by [`UmadChannel::poll`] (and counted, and kept for
//!   [`UmadChannel::take_timeout`], when read through [`MadChannel::recv`]). A timeout of
//!   0 would make a request unsolicited (nothing awaited), so the configuration refuses
//!   it. Answers (response bit set) are sent with timeout 0.
//! - **The transport owns TransactionID bits 32..63**: the kernel writes its agent's id
//!   there (ibsim's umad2sim writes the agent in 32..47 and ibsim its client slot in
//!   48..63) and routes the answer back by them. Callers match answers on the low 32
//!   bits only.
//! - Receiving never blocks (`umad_recv` with timeout 0); [`UmadChannel::fd`] can be
//!   given to poll(2).

use std::collections::VecDeque;
use std::sync::Arc;

use ibpoll_dev::{Error as DevError, Mad, MadAddr, MadChannel};
use ibpoll_wire::{Lid, QKey, Qpn};

use crate::ffi::umad::{Received, UmadPort, MAD_BYTES};
use crate::ffi::{UmadLibrary, UmadPortInfo};
use crate::Error;

/// The SA's management class and its class version.
pub const SA_CLASS: u8 = 0x03;
/// The SA class version.
pub const SA_CLASS_VERSION: u8 = 2;
/// Timed-out TIDs kept for [`UmadChannel::take_timeout`] (older ones are dropped and
/// counted).
pub const TIMEOUTS_KEPT: usize = 64;

/// MAD byte 3: method; bit 7 is the response bit. Bytes 8..16: TransactionID.
const METHOD: usize = 3;
const RESPONSE_BIT: u8 = 0x80;
const TID: core::ops::Range<usize> = 8..16;

/// How to open a [`UmadChannel`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UmadConfig {
    /// The HCA (`None`: the first).
    pub ca: Option<String>,
    /// The port (1-based).
    pub port_num: u8,
    /// How long the kernel waits for each answer to a request, in ms (at least 1).
    pub timeout_ms: u32,
    /// How many times the kernel resends an unanswered request.
    pub retries: u32,
}

impl Default for UmadConfig {
    fn default() -> Self {
        UmadConfig {
            ca: None,
            port_num: 1,
            timeout_ms: 200,
            retries: 2,
        }
    }
}

/// What [`UmadChannel::poll`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MadEvent {
    /// A MAD from the fabric and where it came from.
    Answer(Box<Mad>, MadAddr),
    /// A request of ours was not answered within the timeout and retries; its TID as
    /// sent (bits 32..63 are the transport's).
    Timeout {
        /// The request's TransactionID.
        tid: u64,
    },
}

/// What a [`UmadChannel`] has counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UmadCounters {
    /// MADs sent.
    pub tx: u64,
    /// Sends libibumad refused.
    pub tx_errors: u64,
    /// MADs received with status 0.
    pub rx: u64,
    /// Requests the transport timed out (status ETIMEDOUT).
    pub rx_timeouts: u64,
    /// Received MADs with another non-zero status.
    pub rx_bad_status: u64,
    /// umad_recv failures.
    pub rx_errors: u64,
    /// Timed-out TIDs dropped because nobody took them.
    pub timeouts_dropped: u64,
}

/// The SA's MAD channel over libibumad. See the module docs.
#[derive(Debug)]
pub struct UmadChannel {
    port: UmadPort,
    cfg: UmadConfig,
    counters: UmadCounters,
    timeouts: VecDeque<u64>,
}

impl std::fmt::Debug for UmadPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UmadPort")
            .field("ca", &self.ca_name())
            .finish()
    }
}

fn tid(m: &Mad) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&m[TID]);
    u64::from_be_bytes(b)
}

impl UmadChannel {
    /// Opens the port's umad file and registers an SA agent.
    pub fn open(lib: &Arc<UmadLibrary>, cfg: &UmadConfig) -> Result<UmadChannel, Error> {
        if cfg.timeout_ms == 0 {
            return Err(Error::Config {
                what: "umad channel",
                field: "timeout_ms",
                value: 0,
                fix: "requests must carry a timeout (0 would send them as unsolicited); use at least 1 ms",
            });
        }
        let port = UmadPort::open(
            lib,
            cfg.ca.as_deref(),
            cfg.port_num,
            SA_CLASS,
            SA_CLASS_VERSION,
        )?;
        Ok(UmadChannel {
            port,
            cfg: cfg.clone(),
            counters: UmadCounters::default(),
            timeouts: VecDeque::with_capacity(TIMEOUTS_KEPT),
        })
    }

    /// The port's attributes as umad reports them (LID, SM LID, GID prefix, P_Keys).
    pub fn port_info(&self) -> Result<UmadPortInfo, Error> {
        self.port.info()
    }

    /// The counters.
    pub fn counters(&self) -> UmadCounters {
        self.counters
    }

    /// The file descriptor that becomes readable when a MAD arrives.
    pub fn fd(&self) -> i32 {
        self.port.fd()
    }

    /// The next MAD or transport timeout, if any (non-blocking).
    pub fn poll(&mut self) -> Option<MadEvent> {
        loop {
            match self.port.recv() {
                Received::Empty => return None,
                Received::Failed(rc) => {
                    self.counters.rx_errors += 1;
                    tracing::debug!(rc, "umad_recv failed");
                    return None;
                }
                Received::Mad {
                    mad,
                    status,
                    lid,
                    qpn,
                    qkey,
                    sl,
                    pkey_index,
                } => {
                    if status == libc::ETIMEDOUT {
                        self.counters.rx_timeouts += 1;
                        return Some(MadEvent::Timeout { tid: tid(&mad) });
                    }
                    if status != 0 {
                        self.counters.rx_bad_status += 1;
                        tracing::debug!(
                            status,
                            tid = format_args!("{:#x}", tid(&mad)),
                            "umad: MAD with a bad status"
                        );
                        continue;
                    }
                    self.counters.rx += 1;
                    let from = MadAddr {
                        lid: Lid(lid),
                        qpn: Qpn::from_bits(qpn),
                        qkey: QKey(qkey),
                        sl,
                        pkey_index,
                    };
                    return Some(MadEvent::Answer(Box::new(mad), from));
                }
            }
        }
    }

    /// The oldest request timed out by the transport and not yet taken (by TID).
    pub fn take_timeout(&mut self) -> Option<u64> {
        self.timeouts.pop_front()
    }

    fn keep_timeout(&mut self, t: u64) {
        if self.timeouts.len() == TIMEOUTS_KEPT {
            self.timeouts.pop_front();
            self.counters.timeouts_dropped += 1;
        }
        self.timeouts.push_back(t);
    }
}

impl MadChannel for UmadChannel {
    fn send(&mut self, mad: &Mad, to: MadAddr) -> Result<(), DevError> {
        if to.lid == Lid(0) {
            return Err(DevError::MadSend {
                dlid: to.lid,
                dqpn: to.qpn,
                reason: "LID 0: no subnet manager has swept this port yet (no SM LID)",
            });
        }
        let request = mad[METHOD] & RESPONSE_BIT == 0;
        let (timeout_ms, retries) = if request {
            (self.cfg.timeout_ms, self.cfg.retries)
        } else {
            (0, 0)
        };
        let bytes: &[u8; MAD_BYTES] = mad;
        match self.port.send(
            bytes,
            to.lid.0,
            to.qpn.get(),
            to.sl,
            to.qkey.0,
            to.pkey_index,
            timeout_ms,
            retries,
        ) {
            Ok(()) => {
                self.counters.tx += 1;
                Ok(())
            }
            Err(rc) => {
                self.counters.tx_errors += 1;
                Err(DevError::Io {
                    op: "umad_send",
                    source: std::io::Error::from_raw_os_error(rc.unsigned_abs() as i32),
                })
            }
        }
    }

    fn recv(&mut self) -> Option<(Mad, MadAddr)> {
        // Bounded: a burst of timeouts ends the call after the ring's worth.
        for _ in 0..TIMEOUTS_KEPT {
            match self.poll()? {
                MadEvent::Answer(m, from) => return Some((*m, from)),
                MadEvent::Timeout { tid } => self.keep_timeout(tid),
            }
        }
        None
    }
}
