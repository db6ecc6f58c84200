//! Bytes on the wire: InfiniBand, IPoIB, subnet-administration and the IPv6 neighbour
//! discovery formats.
//!
//! Every header is a zero-copy view `Packet<T: AsRef<[u8]>>` over a buffer with a
//! private `field` table of byte ranges (smoltcp's `src/wire` model):
//! `new_unchecked` wraps any buffer, `new_checked` / `check_len` validate the length,
//! and once `check_len` has returned `Ok` no accessor panics. Each header also has a
//! `Repr` (a parsed, owned description) with `parse`, `emit` and `buffer_len`.
//! Fixed-layout records use `bytemuck` with compile-time size asserts.
//!
//! This crate does no I/O and never allocates.
#![no_std]
#![forbid(unsafe_code)]

mod types;

pub mod arp;
pub mod bth;
pub mod crc;
pub mod deth;
pub mod grh;
pub mod ipoib;
pub mod ipv6;
pub mod lrh;
pub mod mad;
pub mod mcmember;
pub mod ndisc;
pub mod ndisc_option;
pub mod path_record;
pub mod sa;

pub use types::{Gid, IbMtu, Lid, PKey, QKey, Qpn, Rate};

/// Why a buffer could not be read as a given format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Error {
    /// The buffer is shorter than the header (or than a length field inside it says).
    Truncated,
    /// A field holds a value the format does not allow (version, reserved bits, ...).
    Malformed,
    /// The buffer is well formed but carries something this crate does not handle.
    Unsupported,
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::Truncated => f.write_str("truncated packet"),
            Error::Malformed => f.write_str("malformed packet"),
            Error::Unsupported => f.write_str("unsupported packet"),
        }
    }
}

impl core::error::Error for Error {}

/// Result of parsing wire bytes.
pub type Result<T> = core::result::Result<T, Error>;

/// A byte range of a header, as used by the private `field` tables.
pub(crate) type Field = core::ops::Range<usize>;

/// Reads a big-endian `u16` at `at`. Callers have checked the length.
#[inline]
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Reads a big-endian `u32` at `at`. Callers have checked the length.
#[inline]
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Reads a big-endian `u64` at `at`. Callers have checked the length.
#[inline]
pub(crate) fn be64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(x)
}

/// Writes a big-endian `u16` at `at`. Callers have checked the length.
#[inline]
pub(crate) fn put_be16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// Writes a big-endian `u32` at `at`. Callers have checked the length.
#[inline]
pub(crate) fn put_be32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

/// Writes a big-endian `u64` at `at`. Callers have checked the length.
#[inline]
pub(crate) fn put_be64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}
