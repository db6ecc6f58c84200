//! `ibpoll-pmd-ibsim`: a [`MadChannel`](ibpoll_dev::MadChannel) to the InfiniBand
//! simulator `ibsim` (package `ibsim-utils`), so that a real subnet manager, OpenSM
//! running under ibsim's `libumad2sim.so`, answers ibpoll's SA requests instead of the
//! simulated SA of `ibpoll-pmd-sim`.
//!
//! ibsim simulates the management side of a fabric only: SMPs, and MADs routed by LID
//! to the programs attached to its nodes. It carries no data traffic; IPoIB payloads
//! stay on ibpoll's own fabric.
//!
//! [`IbsimMadChannel::connect`] attaches to ibsim as a client of one node of its
//! topology (what `SIM_HOST` names for umad2sim), speaking ibsim's client protocol over
//! AF_UNIX datagram sockets in the abstract namespace (see `proto`):
//! - it binds its control socket `sim:ctl<id>` and connects it to ibsim's `sim:ctl`;
//! - it binds its inbound data socket `sim:in<id>` **before** sending CONNECT (ibsim
//!   connects back to that name at once and exits if it cannot);
//! - CONNECT names the node and returns ibsim's client slot `n`; the data socket is
//!   then connected to ibsim's `sim:out<n>`;
//! - NodeInfo, PortInfo and the P_Key table come from control calls
//!   ([`IbsimMadChannel::port_info`]): the LID, the SM's LID and the GID prefix are those
//!   the subnet manager wrote during its sweeps;
//! - DISCONNECT is sent on drop.
//!
//! Every abstract name includes its terminating NUL (`sim:ctl\0`, 8 bytes), as ibsim and
//! umad2sim pass `strlen + 1` as the name length; without it nothing connects.
//!
//! `<id>` is `pid | (k << 22)` for the k-th channel of a process (k >= 1; pid_max is at
//! most 2^22), so several channels (one per simulated host) can live in one process
//! without their socket names colliding, nor with umad2sim's `sim:ctl<pid>` in a
//! process it is preloaded into.
//! Only the local (abstract socket) mode is supported, not ibsim's TCP remote mode.
//!
//! Contract of the channel, as ibsim 0.10 (Debian 12) behaves:
//! - [`send`](ibpoll_dev::MadChannel::send) and [`recv`](ibpoll_dev::MadChannel::recv)
//!   never block. MADs are sent from QP1; ibsim fills in the source LID.
//! - ibsim overwrites TransactionID bits 48..63 of every request with the sender's
//!   client slot and routes the answer back by those bits (so several requests may be
//!   outstanding; checked with 64). The SA echoes the rewritten TID, and the channel
//!   passes it on as it came: bits 32..63 belong to the transport (see
//!   [`MadChannel`](ibpoll_dev::MadChannel)), and callers match answers on the low 32
//!   bits, as they must over umad too.
//! - A MAD shorter than 256 bytes (ibsim passes on the length its sender wrote; OpenSM
//!   writes its SA answers without their unused tail, which umad2sim leaves
//!   uninitialised) comes with the rest zeroed, as the kernel's umad delivers it.
//! - A request ibsim cannot route (no such LID, nobody attached there) comes back as
//!   our own MAD with a non-zero status; it is counted
//!   ([`IbsimCounters::rx_undeliverable`]) and not returned.
//!
//! Set-up errors are the typed [`Error`].
//!
//! [`hybrid`] pairs an ibsim node with a port of `ibpoll-pmd-sim`'s simulated fabric into
//! one [`Port`](ibpoll_dev::Port) ([`HybridPort`]): management MADs go to OpenSM, data
//! goes over the simulated fabric. A test and interop device, so that the real control
//! plane can be run against OpenSM.
#![deny(unsafe_code)]

mod error;
pub mod hybrid;
mod mad;
mod port;
mod proto;
mod setup;

pub use error::Error;
pub use hybrid::{HybridCounters, HybridFabric, HybridPort, MadOpener};
pub use port::{IbsimPort, NODE_TYPE_CA, NODE_TYPE_SWITCH};
pub use setup::{IbsimCounters, IbsimMadChannel, DEFAULT_CTL_TIMEOUT};
