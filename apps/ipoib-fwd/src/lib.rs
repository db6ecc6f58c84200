//! `ipoib-fwd`: the L3 forwarder of ibpoll (the l3fwd of IP over InfiniBand).
//!
//! One [`ibpoll::Stack`] with one interface per partition (P_Key) of the port; every
//! data lcore polls every interface and runs a [`Forwarder`]: IPv4 header checks
//! (RFC 1812), longest-prefix match in a [`RouteTable`] (DIR-16-8-8, no allocation on
//! lookup), TTL decrement with an incremental checksum update (RFC 1624), TTL <= 1
//! dropped and counted, and the very buffer that came in pushed on the outgoing
//! interface to `Dest::NextHop` (the route's gateway, or the destination for a
//! connected route), which that interface's control plane resolves (ARP, path record).
//!
//! IPv6 is forwarded the same way: [`Route6`]s in a [`RouteTable6`] (one hash map per
//! prefix length in use), connected routes from the interfaces' IPv6 addresses, the hop
//! limit decremented (no header checksum in IPv6), hop limit <= 1 dropped and counted,
//! link-local sources and destinations never forwarded (RFC 4291 section 2.5.6), next
//! hops resolved by neighbour discovery (`Dest::NextHop6`); and IPv6 multicast by
//! [`MRoute6`]s, as IPv4 multicast below.
//!
//! Multicast crosses it by static [`MRoute`]s (`GROUP/LEN,from=N,to=M`): the node
//! subscribes as a full member to every group of a route on its ingress interface `N`
//! (InfiniBand delivers a group only to its members; at most [`MCAST_GROUPS_MAX`]
//! groups), and forwards what arrives there to the group on interface `M`
//! (`Dest::Group`), whose control plane makes a send-only join on the first packet and
//! sends the packets it held meanwhile. The TTL is decremented as for unicast (TTL <= 1
//! dropped and counted, `mcast_ttl_expired`); a group is never sent back out the
//! interface it came in on; groups no route forwards are counted (`mcast_no_route`).
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

pub mod cli;
mod error;
mod family;
mod fwd;
mod fwd6;
mod lpm;
mod mroute;
mod mroute6;
mod node;
mod node6;
mod route;
mod route6;
pub mod traffic;

pub use error::Error;
pub use family::Family;
pub use fwd::{
    checksum_adjust, decrement_ttl, ipv4_checksum, Forwarder, FwdCounters, FwdStats, Verdict,
};
pub use lpm::{lookup_linear, RouteTable, ROUTES_MAX};
pub use mroute::{IpMRoute, MRoute, MrouteTable, MCAST_GROUPS_MAX, MROUTES_MAX};
pub use mroute6::{MRoute6, MrouteTable6};
pub use node::{build_forwarder_stack, start_forwarder, start_on, FwdConfig, FwdNode, FwdReport};
pub use route::{
    mask, parse_ipv4, parse_route_file, parse_routes, read_route_file, read_routes_file, IpNextHop,
    IpRoute, NextHop, Route, RouteFile,
};
pub use route6::{is_ipv6_route, lookup6_linear, mask6, parse_ipv6, NextHop6, Route6, RouteTable6};
