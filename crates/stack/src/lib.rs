//! `ibpoll`: the stack. Lcores (pinned threads) poll the queues of one InfiniBand UD
//! queue pair per interface in datagram-mode IPoIB, hand IP packets to an application
//! in bursts and send what it queues, resolving destinations against the control
//! plane's snapshots; the control core (`ibpoll-ctrl`, one controller per interface)
//! runs on its own lcore or is polled from data lcore 0.
//!
//! ```no_run
//! use ibpoll::{Dest, Stack};
//! let stack = Stack::builder()
//!     .data_cores(1)
//!     .ipv4([10, 0, 0, 1])
//!     .start(|_lcore| {
//!         // A forwarder: every IP packet goes back out to 10.0.0.2, zero copy.
//!         |_ctx: &ibpoll::LcoreCtx, rx: &mut [Option<ibpoll_mem::Mbuf>], tx: &mut ibpoll::TxBuffer| {
//!             for slot in rx {
//!                 if let Some(m) = slot.take() {
//!                     tx.push(m, Dest::NextHop([10, 0, 0, 2]));
//!                 }
//!             }
//!         }
//!     })?;
//! let report = stack.run_until_ctrl_c(None)?;
//! println!("{:?}", report.total());
//! # Ok::<(), ibpoll::Error>(())
//! ```
//!
//! # Lcores and queues
//!
//! The interface's UD QP has one receive and one send queue per data lcore (the driver
//! spreads received packets over the receive queues by a flow hash, RSS) and one more
//! send queue for the control core. Each queue is owned by one lcore. By default there
//! is one data lcore per usable CPU and the controller is polled from data lcore 0
//! ([`ControlCore::OnDataLcore0`]), so a 2-CPU machine does data work on both.
//!
//! # Several interfaces
//!
//! A stack has one interface by default (the builder's `pkey` and `ipv4`). Like a DPDK
//! l3fwd lcore polling several ports, it can serve up to [`IFACES_MAX`] partitions of
//! its port: [`StackBuilder::interface`] once per [`IfaceConfig`] (P_Key, IPv4 address,
//! prefix length). Each interface has its own UD QP (its P_Key index from the port's
//! table), its own controller (broadcast group, ARP, path records, multicast; all
//! hosted where the single one would be, and each sees every port event), and its own
//! receive and send queue on every data lcore; all share one buffer pool, so a buffer
//! received on one interface can be sent on another without a copy.
//!
//! - Receive: each burst comes from one interface, named by [`LcoreCtx::iface`]
//!   (`link_up` and `mtu` describe that interface; [`LcoreCtx::links_up`] has them
//!   all). In [`App::poll`], `iface` is 0.
//! - Send: [`TxBuffer::push_on`] names the outgoing interface, whose control plane
//!   resolves the [`Dest`]; [`TxBuffer::push`] is `push_on(0, ..)`. An interface that
//!   does not exist is a counted drop (`tx_no_iface`).
//! - The handle: [`Stack::ifaces`], [`Stack::iface_qpn`], [`Stack::with_controller_on`],
//!   [`Stack::link_up_on`], [`Stack::ctrl_stats_on`]; `set_admin_up`, `link_up`,
//!   `wait_link_up` and `stop` act on every interface; [`StopReport::ctrl_ifaces`] has
//!   every controller's counters.
//!
//! # One iteration of a data lcore
//!
//! 1. report a quiescent point to the snapshot protocol (`Reader::quiescent`);
//! 2. on the lcore that hosts the controller: `Controller::poll` (bounded) and at most
//!    [`COMMANDS_PER_ITERATION`] control messages from the [`Stack`] handle (on data
//!    lcore 0 at most once per `ctrl_poll_interval`, 20 µs by default);
//! 3. `rx_burst` (up to [`BURST_MAX`]) on each of its receive queues (one per
//!    interface), and classify: our
//!    own looped-back multicast (by SLID and source QPN) is dropped; ARP goes to the
//!    control core; IPv4/IPv6 go to the application with the IPoIB header stripped;
//!    malformed packets and unknown ethertypes are dropped; every drop is counted;
//! 4. [`App::on_burst`] per received burst, then [`App::poll`] (the generator hook);
//! 5. resolve every queued packet against one snapshot of its interface's control
//!    plane: a group's address handle, QPN
//!    0xFFFFFF and Q_Key, or a neighbour's address handle and QPN; a miss goes to the
//!    control core with its packet; link down, too long and ring full are counted drops;
//! 6. one `tx_burst` per interface with packets; what the queue hands back is retried next iteration (resolved
//!    again, so no descriptor outlives its snapshot) up to [`TX_TRIES`] times, then
//!    dropped and counted (`tx_full`);
//! 7. the iteration's time (one `Instant::now()` per iteration) goes to `busy_ns` or
//!    `idle_ns`; idle iterations follow the [`IdlePolicy`].
//!
//! No lock, allocation, system call or atomic read-modify-write happens per packet: the
//! counters are single-writer [`Counter`](ibpoll_dev::Counter)s (load + store), the
//! snapshot is one load per burst, the request rings are bounded, and every buffer
//! (bursts, descriptors, the [`TxBuffer`]) is allocated at start-up.
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
mod lcore;
mod setup;
mod signal;
pub mod smol;
mod stack;
mod stats;
mod tee;

pub use app::{App, Dest, Discard, LcoreCtx, TxBuffer};
pub use error::Error;
pub use ibpoll_ctrl::{CtrlConfig, CtrlStats, GroupAddr};
pub use lcore::{IdlePolicy, BURST_MAX, COMMANDS_PER_ITERATION, TX_BUFFER_MAX, TX_TRIES};
pub use setup::{ControlCore, IfaceConfig, StackBuilder, IFACES_MAX};
pub use signal::{ctrl_c_pressed, install_ctrl_c, register_stop_signals};
pub use stack::{ctrl_packet_drops, Stack, StopReport};
pub use stats::{LcoreCounters, LcoreStats};
