//! `ibpoll`: the stack. Lanes (one per pinned lcore thread) poll the UD queue pairs of
//! each interface in datagram-mode IPoIB, hand IP packets to an application in bursts
//! and send what it pushes, resolving destinations against the control plane's
//! snapshots when they are pushed; the control core (`ibpoll-ctrl`, one controller per
//! interface) runs on its own lcore or is polled from data lcore 0.
//!
//! ```no_run
//! use ibpoll::{Dest, LcoreCtx, Stack, Tx};
//! use ibpoll_mem::MbufArray;
//! let stack = Stack::builder()
//!     .data_cores(1)
//!     .ipv4([10, 0, 0, 1])
//!     .start(|_lcore| {
//!         // A forwarder: every IP packet goes back out to 10.0.0.2, zero copy.
//!         |ctx: &LcoreCtx, rx: &mut MbufArray, tx: &mut Tx| {
//!             while let Some(m) = rx.pop() {
//!                 tx.push(ctx.iface, m, Dest::NextHop([10, 0, 0, 2]));
//!             }
//!         }
//!     })?;
//! let report = stack.run_until_ctrl_c(None)?;
//! println!("{:?}", report.total());
//! # Ok::<(), ibpoll::Error>(())
//! ```
//!
//! # Lanes and queue pairs
//!
//! A UD QP has one receive queue and one send queue (what verbs gives on an InfiniBand
//! port; see `ibpoll-dev`). Per interface the stack creates one QP per data lcore (its
//! lane) and a send-only QP for the control core:
//!
//! - lane 0's QP is the interface's: its QPN is in the hardware address, so unicast and
//!   the broadcast group (ARP) arrive there;
//! - every lane sends from its own QP (the loopback filter knows every QPN of the
//!   interface, or the HCA blocks self multicast loopback when it can);
//! - the control core attaches each multicast group it joins to one lane's QP (an MGID
//!   hash picks the lane), so multicast-heavy work (market data) spreads over the lanes
//!   in hardware.
//!
//! By default there is one data lcore per usable CPU and the controller is polled from
//! data lcore 0 ([`ControlCore::OnDataLcore0`]).
//!
//! # Several interfaces
//!
//! A stack has one interface by default (the builder's `pkey` and `ipv4`). Like a DPDK
//! l3fwd lcore polling several ports, it can serve up to [`IFACES_MAX`] partitions of
//! its port: [`StackBuilder::interface`] once per [`IfaceConfig`]. Each interface has its
//! own QPs and controller; all share one buffer pool, so a buffer received on one
//! interface can be sent on another without a copy. Each burst names its interface in
//! [`LcoreCtx::iface`]; [`Tx::push`] names the outgoing one.
//!
//! # One iteration of a lane
//!
//! See [`Lane`]: park requests and quiescent points; one receive burst per interface,
//! classified in place ([`burst::classify_burst`]: our own looped-back multicast
//! dropped, ARP to the control core, IPv4/IPv6 to the application with the IPoIB header
//! stripped); [`App::on_burst`] per burst and [`App::poll`]; each interface's TX table
//! flushed with one `tx_burst` (also as soon as it holds a burst); drops freed in bulk;
//! counters published once.
//!
//! No lock, allocation, system call or atomic read-modify-write happens per packet: the
//! counters are per-iteration integers published once, the snapshot is one load, the
//! request rings are bounded, and every array is allocated at start-up.
//!
//! # Packets the application sees and sends
//!
//! Received packets start at their IP header: the stack strips the 4-byte IPoIB header
//! (`Mbuf::adj`), so the headroom still holds it. Packets to send also start at their IP
//! header: the stack prepends the IPoIB header in place, with the ethertype from the IP
//! version. A forwarder can therefore send the very buffer it received.
//!
//! # smoltcp
//!
//! [`smol::IpDevice`] is a `smoltcp` device with `Medium::Ip` over the burst API, for
//! applications that want sockets (an `Interface` and its sockets per data lcore; IPv4).
//!
//! # Counters and stop
//!
//! [`Stack::stats`] reads an lcore's [`LcoreCounters`] live. [`Stack::stop`] takes the
//! interface down, waits for the flush (every membership left), stops the lcores (they
//! free what they hold and drain their receive queues, counting it) and reports
//! ([`StopReport`]); [`Stack::run_until_ctrl_c`] does so on Ctrl-C.
//!
//! # Stop requests, signals and panics
//!
//! A stack never replaces a program's signal handlers. The program gives its stacks a
//! stop flag ([`StackBuilder::stop_flag`]), sets it from its own handlers (signal-hook's
//! `flag::register`, or [`register_stop_signals`]) and, when it sees
//! [`Stack::stop_requested`], calls [`Stack::stop`], which still leaves every group. A
//! panic in an application callback is caught on its lcore and sets the same flag
//! ([`StopReport::app_panics`] names the lcore), so a crashing application leaves no
//! membership behind either.

mod app;
pub mod burst;
mod error;
mod lane;
mod lcore;
mod setup;
mod signal;
pub mod smol;
mod stack;
mod stats;
mod tee;
pub mod telemetry;
mod tx;

pub use app::{App, Discard, LcoreCtx};
pub use error::Error;
pub use ibpoll_ctrl::{CtrlConfig, CtrlStats, GroupAddr, NhId};
pub use lane::Lane;
pub use lcore::{IdlePolicy, COMMANDS_PER_ITERATION};
pub use setup::{ControlCore, IfaceConfig, StackBuilder, IFACES_MAX};
pub use signal::{ctrl_c_pressed, install_ctrl_c, register_stop_signals};
pub use stack::{ctrl_packet_drops, Stack, StopReport};
pub use stats::{LcoreCounters, LcoreStats};
pub use tx::{find as find_nh, Dest, Tx, BURST_MAX, TX_TABLE_MAX, TX_TRIES};
