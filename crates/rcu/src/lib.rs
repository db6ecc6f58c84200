//! Snapshot publication from one control core to N data cores, with quiescent-state-based
//! reclamation in the manner of DPDK's `rte_rcu_qsbr`.
//!
//! The control core builds an immutable table, [`Publisher::publish`]es it (one pointer
//! swap), and frees the table it replaced once every data core has passed a quiescent
//! point. Each data core owns a [`Reader`]: per poll-loop iteration it calls
//! [`Reader::quiescent`] (one load, plus one store to its own cache line when something
//! was published), and per burst [`Reader::get`] (one load). No lock, no read-modify-write,
//! no fence on the data path. QSBR was chosen over crossbeam-epoch and arc-swap by
//! measurement: see `benches/read.rs`.
//!
//! ```
//! let (mut publisher, registry) = ibpoll_rcu::new(vec![1u32], 4)?;
//! let mut reader = registry.register()?;           // on the data core
//! assert_eq!(reader.get()[0], 1);
//! publisher.publish(vec![2])?;                     // on the control core
//! reader.quiescent();                              // top of the next loop iteration
//! assert_eq!(reader.get()[0], 2);
//! assert_eq!(publisher.reclaim(), 0);              // the old table is freed
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Contract
//!
//! * One [`Publisher`] per domain (not `Clone`); up to [`Config::readers_max`] readers
//!   (at most [`READERS_MAX`]), registered through a [`Registry`]; more is
//!   [`Error::ReadersExhausted`].
//! * A snapshot from [`Reader::get`] is borrowed from the reader and valid until its next
//!   `quiescent`, `offline` or drop; the borrow checker enforces it, so a data core cannot
//!   hold a snapshot (a guard) for its whole life.
//! * A reader that is online and does not quiesce holds back every snapshot retired after
//!   its last quiescent point. A core that blocks or idles goes offline
//!   ([`Reader::offline`], [`Reader::offline_while`]) and then holds back nothing.
//! * Everything is bounded: at most [`Config::retired_max`] retired snapshots wait; when
//!   that many do, `publish` hands its snapshot back in [`Full`] (counted in
//!   [`PublisherStats::publish_full`]) instead of blocking or growing.
//! * A snapshot is freed (dropped) exactly once, on the publisher's thread, never while a
//!   reader may hold it; dropping the publisher and every reader frees all of them
//!   (retired ones the publisher could not free yet are freed with the last reader).
//! * Or, with [`Publisher::set_recycle_max`], a reclaimed snapshot is kept instead of
//!   freed, under the same condition, and handed back by [`Publisher::take_reclaimed`]:
//!   the publisher may rewrite it in place and publish it again
//!   ([`Publisher::publish_box`]), so publishing allocates nothing. Readers cannot tell:
//!   the rewrite happens after their last read of it, and they see it again only
//!   through a later publish's Release swap, like any new snapshot.
//!
//! # Protocol
//!
//! A global token counts publishes; each reader slot holds the last token its reader saw
//! at a quiescent point, or `OFFLINE` (`u64::MAX`).
//!
//! * `publish`: swap `current` (Release) -> store `token = t` (Release) -> retire the old
//!   snapshot tagged `t`. A reader that loads token `t` (Acquire) then loads `current`
//!   (Acquire) gets the new snapshot or a later one.
//! * `quiescent`: load `token` (Acquire); if it changed, store it to the own slot
//!   (Release). `get`: load `current` (Acquire).
//! * `reclaim`: `fence(SeqCst)`, load every slot (Acquire), free the retired snapshots
//!   whose tag is `<=` the minimum. The slot's Release store makes the reader's reads of
//!   the old snapshot happen before the free.
//! * `online` (registration too): load `token` (Acquire), store it to the slot (Release),
//!   `fence(SeqCst)`. The two SeqCst fences order the reader's slot store against the
//!   publisher's slot loads (Dekker), so a reader coming online is either seen by the
//!   publisher or sees every swap the publisher made before reclaiming.
//! * `offline`: store `OFFLINE` to the slot (Release).
//!
//! `tests/loom.rs` model-checks this with loom (`RUSTFLAGS="--cfg loom"`; see the file).

mod domain;
mod error;
mod publisher;
mod reader;
mod setup;
mod sync;

pub use domain::{READERS_MAX, RETIRED_MAX_DEFAULT};
pub use error::{Error, Full};
pub use publisher::{Publisher, PublisherStats};
pub use reader::{OfflineReader, Reader};
pub use setup::{new, with_config, Config, Registry};
