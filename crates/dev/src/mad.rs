use ibpoll_wire::{Lid, QKey, Qpn};

use crate::Error;

/// Every MAD is 256 bytes.
pub const MAD_LEN: usize = 256;

/// One management datagram.
pub type Mad = [u8; MAD_LEN];

/// The other end of a MAD: where a request goes, or where an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MadAddr {
    /// The remote LID (the SM's LID for the subnet administrator).
    pub lid: Lid,
    /// The remote QP (1 for the GSI).
    pub qpn: Qpn,
    /// The Q_Key (0x8001_0000 for the GSI).
    pub qkey: QKey,
    /// The service level.
    pub sl: u8,
    /// The P_Key index used.
    pub pkey_index: u16,
}

/// A port's channel to the general services interface (QP1, libibumad's role).
/// Non-blocking: the control core polls it.
///
/// TransactionIDs: **the transport owns bits 32..63.** The kernel's umad writes its
/// agent's id there in every request and routes the answer back by it (ibsim writes its
/// client slot into bits 48..63 the same way), so an answer may come back with other
/// high bits than the request was sent with. Callers put their own transaction counter in
/// bits 0..31, send bits 32..63 as zero, and match answers on the low 32 bits only.
///
/// Timeouts: a request is sent with a timeout (the transport may resend it); a transport
/// that gives up on a request reports it in its own way (umad returns the request with
/// status ETIMEDOUT), never as an answer.
pub trait MadChannel: Send + std::fmt::Debug {
    /// Sends one MAD. Fails only when it cannot be queued at all.
    fn send(&mut self, mad: &Mad, to: MadAddr) -> Result<(), Error>;
    /// The next MAD received, if any.
    fn recv(&mut self) -> Option<(Mad, MadAddr)>;
}
