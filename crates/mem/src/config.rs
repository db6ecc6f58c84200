//! Pool configuration and its validation (control path).

use crate::Error;

/// Bytes of headroom the IPoIB datagram receive path needs in front of the payload:
/// a 40-byte GRH plus the 4-byte IPoIB encapsulation header.
pub const HEADROOM_MIN: u32 = 40 + 4;
/// Default headroom (DPDK's `RTE_PKTMBUF_HEADROOM`).
pub const HEADROOM_DEFAULT: u32 = 128;
/// Largest headroom accepted.
pub const HEADROOM_MAX: u32 = 64 * 1024;
/// Default data room: one 4 KiB IPoIB datagram MTU.
pub const DATA_ROOM_DEFAULT: u32 = 4096;
/// Largest `headroom + data_room` accepted (1 MiB).
pub const BUF_LEN_MAX: u32 = 1 << 20;
/// Largest number of buffers in one pool (indices are `u32`; this keeps the
/// per-pool bookkeeping sane).
pub const N_BUFS_MAX: u32 = 1 << 24;
/// Default per-lcore cache size (DPDK `rte_mempool_cache`).
pub const CACHE_SIZE_DEFAULT: u32 = 256;
/// Largest per-lcore cache (DPDK's `RTE_MEMPOOL_CACHE_MAX_SIZE`).
pub const CACHE_SIZE_MAX: u32 = 512;
/// Largest mapping one pool may ask for (1 TiB): anything bigger is a unit mistake.
pub const POOL_BYTES_MAX: u64 = 1 << 40;

/// Whether a pool's memory comes from 2 MiB hugepages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HugepagePolicy {
    /// Try 2 MiB hugepages (`MAP_HUGETLB`); when none can be had, fall back to
    /// normal pages with `madvise(MADV_HUGEPAGE)` and log the fallback once per process.
    #[default]
    Prefer,
    /// Fail with `Error::HugepagesUnavailable` when no hugepages can be mapped.
    Require,
    /// Normal pages only (still `madvise(MADV_HUGEPAGE)`).
    Never,
}

/// How to build a `Mempool`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MempoolConfig {
    /// Name used in logs and errors.
    pub name: String,
    /// Number of buffers, `1..=N_BUFS_MAX`.
    pub n_bufs: u32,
    /// Bytes usable for data after the headroom, `>= 1`.
    pub data_room: u32,
    /// Bytes reserved in front of the data, `>= HEADROOM_MIN` (44).
    pub headroom: u32,
    /// Buffers each lcore may keep in its private cache; 0 disables the caches.
    /// `<= CACHE_SIZE_MAX` and `<= n_bufs`.
    pub cache_size: u32,
    /// Where the memory comes from.
    pub hugepages: HugepagePolicy,
}

impl Default for MempoolConfig {
    fn default() -> Self {
        MempoolConfig {
            name: String::from("mempool"),
            n_bufs: 8192,
            data_room: DATA_ROOM_DEFAULT,
            headroom: HEADROOM_DEFAULT,
            cache_size: CACHE_SIZE_DEFAULT,
            hugepages: HugepagePolicy::Prefer,
        }
    }
}

impl MempoolConfig {
    /// A config with the defaults and the given name and buffer count.
    pub fn new(name: impl Into<String>, n_bufs: u32) -> Self {
        MempoolConfig {
            name: name.into(),
            n_bufs,
            ..Self::default()
        }
    }

    fn bad(&self, field: &'static str, value: u64, fix: &'static str) -> Error {
        Error::BadConfig {
            pool: self.name.clone(),
            field,
            value,
            fix,
        }
    }

    /// Checks every field; returns the first bad one as `Error::BadConfig`.
    pub fn validate(&self) -> Result<(), Error> {
        if self.n_bufs == 0 {
            return Err(self.bad("n_bufs", 0, "a pool needs at least 1 buffer"));
        }
        if self.n_bufs > N_BUFS_MAX {
            return Err(self.bad(
                "n_bufs",
                self.n_bufs.into(),
                "at most 16777216 (N_BUFS_MAX) buffers per pool; create several pools",
            ));
        }
        if self.headroom < HEADROOM_MIN {
            return Err(self.bad(
                "headroom",
                self.headroom.into(),
                "must be >= 44 (40-byte GRH + 4-byte IPoIB header); the default is 128",
            ));
        }
        if self.headroom > HEADROOM_MAX {
            return Err(self.bad(
                "headroom",
                self.headroom.into(),
                "must be <= 65536 (HEADROOM_MAX); the default is 128",
            ));
        }
        if self.data_room == 0 {
            return Err(self.bad(
                "data_room",
                0,
                "must be >= 1; use the MTU of the port, e.g. 4096",
            ));
        }
        let buf_len = u64::from(self.headroom) + u64::from(self.data_room);
        if buf_len > u64::from(BUF_LEN_MAX) {
            return Err(self.bad(
                "data_room",
                self.data_room.into(),
                "headroom + data_room must be <= 1 MiB (BUF_LEN_MAX); chain buffers for larger messages",
            ));
        }
        if self.cache_size > CACHE_SIZE_MAX {
            return Err(self.bad(
                "cache_size",
                self.cache_size.into(),
                "must be <= 512 (CACHE_SIZE_MAX); 256 is the default",
            ));
        }
        if self.cache_size > self.n_bufs {
            return Err(self.bad(
                "cache_size",
                self.cache_size.into(),
                "must be <= n_bufs (one lcore could otherwise hoard the pool); lower it, or 0 to disable caches",
            ));
        }
        // Each element is a 64-byte header followed by the buffer (see `pool.rs`).
        let total = crate::pool::element_stride(buf_len) * u64::from(self.n_bufs);
        if total > POOL_BYTES_MAX {
            return Err(self.bad(
                "n_bufs",
                self.n_bufs.into(),
                "n_bufs * (headroom + data_room) exceeds 1 TiB (POOL_BYTES_MAX); check the units",
            ));
        }
        Ok(())
    }
}
