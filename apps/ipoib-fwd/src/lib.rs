//! `ipoib-fwd`: the L3 forwarder of ibpoll (the l3fwd of IP over InfiniBand).
//!
//! One [`ibpoll::Stack`] with one interface per partition (P_Key) of the port; every
//! data lcore polls every interface and runs a [`Forwarder`]: IPv4 header checks
//! (RFC 1812), longest-prefix match in a [`RouteTable`] (DIR-16-8-8, no allocation on
//! lookup), TTL decrement with an incremental checksum update (RFC 1624), TTL <= 1
//! dropped and counted, and the very buffer that came in pushed on the outgoing
//! interface to `Dest::NextHop` (the route's gateway, or the destination for a
//! connected route), which that interface's control plane resolves (ARP, path record).
//! No payload is copied anywhere: the stack strips the IPoIB header on receive and
//! writes it back in place into the headroom on send.
//!
//! ```no_run
//! use ipoib_fwd::{start_forwarder, FwdConfig};
//! let fabric = ibpoll_pmd_sim::SimFabric::new(ibpoll_pmd_sim::FabricConfig {
//!     partitions: vec![ibpoll_wire::PKey(0xffff), ibpoll_wire::PKey(0x8001)],
//!     ..Default::default()
//! });
//! let cfg = FwdConfig {
//!     routes: vec!["10.3.0.0/16,via=10.2.0.9,if=1".parse()?],
//!     ..FwdConfig::default() // 10.1.0.1/16 on 0xffff, 10.2.0.1/16 on 0x8001
//! };
//! let node = start_forwarder(&fabric, "fwd", &cfg)?;
//! node.wait_link_up(std::time::Duration::from_secs(10))?;
//! println!("{:?}", node.stats());
//! let report = node.stop()?;
//! # Ok::<(), ipoib_fwd::Error>(())
//! ```
//!
//! [`traffic`] has the built-in source and sink the binary uses on the embedded fabric.

mod error;
mod fwd;
mod lpm;
mod node;
mod route;
pub mod traffic;

pub use error::Error;
pub use fwd::{
    checksum_adjust, decrement_ttl, ipv4_checksum, Forwarder, FwdCounters, FwdStats, Verdict,
};
pub use lpm::{lookup_linear, RouteTable, ROUTES_MAX};
pub use node::{build_forwarder_stack, start_forwarder, start_on, FwdConfig, FwdNode, FwdReport};
pub use route::{mask, parse_ipv4, parse_routes, read_routes_file, NextHop, Route};
