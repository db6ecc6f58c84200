//! The crate's one error type: set-up failures only. The data path never returns an
//! `Error`; an empty pool is a `None` plus a counter (`PoolStats::alloc_fail`).

use std::io;

/// Everything that can fail while creating a pool or registering an lcore.
#[non_exhaustive]
#[derive(thiserror::Error, Debug)]
pub enum Error {
    /// A `MempoolConfig` field is out of range.
    #[error("mempool {pool:?}: bad config: {field} = {value}: {fix}")]
    BadConfig {
        /// The pool's name from its config.
        pool: String,
        /// The offending field of `MempoolConfig`.
        field: &'static str,
        /// The value that was passed.
        value: u64,
        /// What the field must be, and how to fix it.
        fix: &'static str,
    },

    /// The pool's anonymous mapping could not be created.
    #[error("mempool {pool:?}: mmap of {len} bytes ({kind}) failed")]
    Mmap {
        /// The pool's name.
        pool: String,
        /// Bytes asked for.
        len: usize,
        /// "2 MiB hugepages" or "normal pages".
        kind: &'static str,
        /// The errno of mmap.
        #[source]
        source: io::Error,
    },

    /// `HugepagePolicy::Require` and no 2 MiB hugepages could be mapped.
    #[error(
        "mempool {pool:?}: hugepages required but {pages} free 2 MiB hugepages could not be \
         mapped ({len} bytes); reserve them as root: echo {pages} > /proc/sys/vm/nr_hugepages \
         (or more, if other users hold some), or use HugepagePolicy::Prefer"
    )]
    HugepagesUnavailable {
        /// The pool's name.
        pool: String,
        /// Bytes asked for.
        len: usize,
        /// 2 MiB pages needed.
        pages: usize,
        /// The errno of mmap(MAP_HUGETLB).
        #[source]
        source: io::Error,
    },

    /// Every pool id is taken: `POOL_IDS_MAX` pools are live (or leaked with buffers out).
    #[error(
        "mempool {pool:?}: all {max} pool ids are in use; drop pools that are no longer \
         needed (a pool dropped while its buffers are out keeps its id)"
    )]
    TooManyPools {
        /// The pool's name.
        pool: String,
        /// `POOL_IDS_MAX`.
        max: usize,
    },

    /// `register_lcore` was given an id `>= MAX_LCORES`.
    #[error("lcore id {lcore_id} out of range: ids are 0..{max}")]
    LcoreOutOfRange {
        /// The id that was asked for.
        lcore_id: usize,
        /// `MAX_LCORES`.
        max: usize,
    },

    /// Another thread holds this lcore id.
    #[error(
        "lcore id {lcore_id} is already registered by another thread; drop its LcoreGuard \
         first or pick a free id"
    )]
    LcoreTaken {
        /// The id that was asked for.
        lcore_id: usize,
    },

    /// The calling thread already holds an lcore id.
    #[error(
        "this thread is already registered as lcore {current}, cannot also register {lcore_id}; \
         drop the first LcoreGuard first"
    )]
    ThreadAlreadyRegistered {
        /// The id that was asked for.
        lcore_id: usize,
        /// The id this thread holds.
        current: usize,
    },
}
