//! Packet buffers for ibpoll: hugepage-backed pools of fixed-size buffers with per-lcore
//! caches, in the manner of DPDK's `rte_mempool`, `rte_mempool_cache` and `rte_mbuf`.
//!
//! # Contract
//!
//! * A [`Mempool`] maps all its memory once, at creation: one anonymous mapping, 2 MiB
//!   hugepages when it can get them (see [`HugepagePolicy`]), holding one element per
//!   buffer: a 64-byte header directly followed by the buffer (headroom, then data
//!   room), each element a multiple of 64 bytes, so a buffer's header and its first
//!   bytes are neighbours. [`Mempool::region`] is that mapping, for a PMD to register
//!   once. Nothing is allocated on the data path.
//! * Every pool has a small id ([`Mempool::id`], a `u16` below [`POOL_IDS_MAX`], unique
//!   among live pools, reused after teardown) that its buffers carry
//!   ([`Mbuf::pool_id`]), so a PMD keeps one memory key per pool in a table.
//! * An [`Mbuf`] owns one buffer: a pointer to its header (8 bytes), not `Clone`, `Send`.
//!   Dropping it returns the buffer, on any thread, with no reference count touched: the
//!   path for cold code.
//! * Hot code moves buffers in bursts: an [`MbufArray`] (a fixed-capacity array of owned
//!   buffers, no `Option` slots) is filled by [`Mempool::alloc_bulk_into`] with one cache
//!   operation, and frees what it drops in bulk, one cache operation per run of buffers
//!   from the same pool (DPDK `rte_pktmbuf_free_bulk`). An [`LcoreMem`] handle, made
//!   once per lcore and pool from the lcore's guard, keeps the cache slot resolved and
//!   skips even the one lookup per call.
//! * A thread that calls [`register_lcore`] gets a private cache slot in every pool; its
//!   allocs and frees touch only that slot (no lock, no atomic read-modify-write) except
//!   for a bulk refill or flush now and then. An lcore id is held by one thread at a time,
//!   which is what makes the slot's unsynchronised part sound. Unregistered threads use the
//!   shared backend directly: correct, one lock per call.
//! * Exhaustion is not an error: `alloc` returns `None` and `PoolStats::alloc_fail` counts it.
//!
//! # When the last `Mempool` handle goes while buffers are out
//!
//! `Mbuf`s hold a raw pointer to their pool, not a reference count, so the pool's
//! lifetime cannot follow them. The last handle's drop counts the buffers that are home
//! (backend plus every lcore cache; each cache's fill level is an atomic only its owner
//! writes). If all are home, the pool is freed and unmapped. Otherwise the pool, mapping
//! included, is leaked, with a `tracing::error!` naming the outstanding count: every
//! outstanding `Mbuf` stays valid and can still be used and dropped. Never UB, at the
//! price of leaking memory in a program that tears down a pool before its buffers. The
//! argument that the count is safe against concurrent frees is on the teardown code
//! (`pool.rs`, `Owner::drop`).

mod alloc;
mod array;
mod config;
mod error;
mod lcore;
mod lcore_mem;
mod mbuf;
mod mmap;
mod pool;

pub use array::{DrainFront, MbufArray};
pub use config::{
    HugepagePolicy, MempoolConfig, BUF_LEN_MAX, CACHE_SIZE_DEFAULT, CACHE_SIZE_MAX,
    DATA_ROOM_DEFAULT, HEADROOM_DEFAULT, HEADROOM_MAX, HEADROOM_MIN, N_BUFS_MAX, POOL_BYTES_MAX,
};
pub use error::Error;
pub use lcore::{current_lcore, register_lcore, LcoreGuard, MAX_LCORES};
pub use lcore_mem::LcoreMem;
pub use mbuf::{Mbuf, MbufMeta, MBUF_F_GRH, MBUF_F_MCAST};
pub use mmap::HUGEPAGE_SIZE;
pub use pool::{MemRegion, Mempool, PoolStats, POOL_IDS_MAX};
