//! `ibpoll`: the stack. Lanes (one per thread) poll the UD queue pairs of each
//! interface in datagram-mode IPoIB, hand IP packets to the application in bursts, or to
//! its UDP sockets, and send what it pushes, resolving destinations against the control
//! plane's snapshots when they are pushed; the control core (`ibpoll-ctrl`, one
//! controller per interface) owns every multicast join, ARP and path record.
//!
//! `ibpoll` alone is a working dependency: it re-exports the buffer types ([`Mbuf`],
//! [`MbufArray`], [`Mempool`]...), the wire types ([`PKey`], [`Gid`], [`IbMtu`],
//! [`Qpn`]...), the driver contract ([`Device`], [`Port`]...) and, with the default
//! feature `sim`, the simulated fabric ([`SimFabric`]).
//!
//! # Two ways to run a stack
//!
//! **The application's own loop** (SPDK's `spdk_thread_poll`): [`StackBuilder::build`]
//! starts nothing and [`StackParts::split`] hands over a [`Control`] poller and one
//! [`Lane`] per thread, which the application polls from threads it owns:
//!
//! ```
//! use std::net::{Ipv4Addr, SocketAddrV4};
//! use ibpoll::{Discard, FabricConfig, SimFabric, Stack};
//!
//! // Two hosts on one simulated subnet (a real HCA: `.device(device, port)`).
//! let fabric = SimFabric::new(FabricConfig::default());
//! let host = |name: &str, ip: [u8; 4]| {
//!     Stack::builder().name(name).fabric(&fabric, name).ipv4(ip).data_cores(1).build()
//! };
//! let (_a, mut ctl_a, mut lanes_a) = host("a", [10, 0, 0, 1])?.split();
//! let (_b, mut ctl_b, mut lanes_b) = host("b", [10, 0, 0, 2])?.split();
//! let (la, lb) = (&mut lanes_a[0], &mut lanes_b[0]);
//! let (sa, sb) = (la.udp_bind(0, 7000)?, lb.udp_bind(0, 7000)?);
//! let to_b = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 7000);
//! // One thread drives everything here; each poller may have a thread of its own.
//! let mut got = None;
//! for _ in 0..200_000 {
//!     ctl_a.poll();
//!     ctl_b.poll();
//!     la.poll(&mut Discard);
//!     lb.poll(&mut Discard);
//!     if la.link_up(0) && lb.link_up(0) && la.udp_stats(sa)?.tx == 0 {
//!         la.udp_send_slice(sa, b"hello", to_b)?;
//!     }
//!     let mut buf = [0u8; 64];
//!     if let Some((n, from)) = lb.udp_recv_slice(sb, &mut buf) {
//!         got = Some((buf[..n].to_vec(), from));
//!         break;
//!     }
//! }
//! let (data, from) = got.expect("a datagram within the loop");
//! assert_eq!((&data[..], from.port()), (&b"hello"[..], 7000));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! **The stack's own threads**: [`StackBuilder::start`] spawns one pinned lcore thread
//! per lane, each running an [`App`] (callbacks per received burst and per iteration),
//! and the controllers on data lcore 0 or on a control lcore of their own:
//!
//! ```no_run
//! use ibpoll::{Dest, LcoreCtx, MbufArray, SimFabric, FabricConfig, Stack, Tx};
//! let fabric = SimFabric::new(FabricConfig::default());
//! let stack = Stack::builder()
//!     .fabric(&fabric, "fwd")
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
//! A stack always names its device: [`StackBuilder::device`] (any driver's
//! [`Device`]) or [`StackBuilder::fabric`] (the simulated fabric); without either,
//! `build` and `start` fail with [`Error::NoDevice`].
//!
//! # UDP sockets
//!
//! See [`udp`]: sockets bound per lane and interface, zero-copy sends and receives
//! with a copying convenience, and multicast joins that make the control core join the
//! group at the SA as a full member, reporting the join's state ([`JoinStatus`]).
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
//! - optionally ([`StackBuilder::fanout`]), lane 0 spreads the unicast and broadcast
//!   that arrive on the interface's QP over every lane by flow, through bounded rings
//!   (software fan-out, DPDK's distributor: see [`fanout`]), where the device has no
//!   RSS to do it.
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
//! applications that want smoltcp's sockets (an `Interface` and its sockets per lane;
//! IPv4). smoltcp's own multicast joins (`Interface::join_multicast_group`, with its
//! `multicast` feature, on in ibpoll's feature set) become SA joins: the device sees
//! smoltcp's IGMP reports and leaves and subscribes the lane as a socket would.
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
mod control;
mod error;
pub mod fanout;
mod lane;
mod lane_api;
mod lcore;
mod setup;
mod signal;
pub mod smol;
mod stack;
mod stats;
mod tee;
pub mod telemetry;
mod tx;
pub mod udp;

pub use app::{App, Discard, LcoreCtx};
pub use control::{Control, ControlReport, StackParts};
pub use error::Error;
pub use fanout::{flow_hash, flow_lane, Fanout};
pub use lane::Lane;
pub use lcore::{IdlePolicy, COMMANDS_PER_ITERATION};
pub use setup::{ControlCore, IfaceConfig, StackBuilder, IFACES_MAX};
pub use udp::{JoinStatus, UdpConfig, UdpError, UdpSocket, UdpStats};

// What an application needs from the crates below, so that `ibpoll` alone is enough.
pub use ibpoll_ctrl::{Controller, CtrlConfig, CtrlStats, GroupAddr, NhId, Poll};
pub use ibpoll_dev::{
    Clock, Device, LinkLayer, MonotonicClock, Nanos, Port, PortAttr, PortEvent, PortState, RxQueue,
    TxQueue, UdQp, UdQpConfig,
};
pub use ibpoll_mem::{HugepagePolicy, Mbuf, MbufArray, MbufMeta, Mempool, MempoolConfig};
#[cfg(feature = "sim")]
pub use ibpoll_pmd_sim::{FabricConfig, FaultConfig, SimFabric};
pub use ibpoll_wire::ipoib::{HwAddr, McastScope};
pub use ibpoll_wire::{Gid, IbMtu, Lid, PKey, QKey, Qpn};

/// The control plane (`ibpoll-ctrl`): controllers, snapshots, group states.
pub use ibpoll_ctrl as ctrl;
/// The driver contract (`ibpoll-dev`): what a PMD implements.
pub use ibpoll_dev as dev;
/// Packet buffers (`ibpoll-mem`): pools, `Mbuf`, lcore registration.
pub use ibpoll_mem as mem;
/// The simulated fabric (`ibpoll-pmd-sim`), with the `sim` feature.
#[cfg(feature = "sim")]
pub use ibpoll_pmd_sim as sim;
/// Wire formats (`ibpoll-wire`): IPoIB, MADs, GIDs.
pub use ibpoll_wire as wire;
pub use signal::{ctrl_c_pressed, install_ctrl_c, register_stop_signals};
pub use stack::{ctrl_packet_drops, Stack, StopReport};
pub use stats::{LcoreCounters, LcoreStats};
pub use tx::{find as find_nh, Dest, Tx, BURST_MAX, TX_TABLE_MAX, TX_TRIES};
