//! Set-up errors of the forwarder. Everything after start-up is a counter ([`FwdStats`](crate::FwdStats)).

use std::path::PathBuf;

/// Characters of a refused input quoted in a message; the rest is summarised.
const QUOTE_MAX: usize = 120;

/// `s`, or its first [`QUOTE_MAX`] characters and how long it was.
pub(crate) fn clip(s: &str) -> String {
    match s.char_indices().nth(QUOTE_MAX) {
        None => s.to_owned(),
        Some((at, _)) => format!("{}... ({} bytes in all)", &s[..at], s.len()),
    }
}

/// Why a route, a route file or a forwarder configuration was refused, or why the
/// forwarder could not start. Each variant names the input and the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A route could not be parsed.
    #[error("bad route {route:?}: {why}; expected PREFIX/LEN[,via=IPV4],if=N, e.g. 10.2.0.0/16,via=10.2.0.1,if=1")]
    BadRoute {
        /// The route as given.
        route: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// An IPv6 route could not be parsed.
    #[error("bad route {route:?}: {why}; expected PREFIX/LEN[,via=IPV6],if=N, e.g. fd00:3::/64,via=fd00:2::9,if=1")]
    BadRoute6 {
        /// The route as given.
        route: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A multicast route could not be parsed, or cannot be used.
    #[error("bad multicast route {mroute:?}: {why}; expected GROUP[/LEN],from=N,to=M, e.g. 239.1.0.0/24,from=0,to=1 or ff05::1:0/120,from=0,to=1")]
    BadMroute {
        /// The multicast route as given.
        mroute: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A route names an interface the forwarder does not have.
    #[error(
        "route {route} names interface {iface}, but the forwarder has {ifaces} (if=0 to if={})",
        ifaces.saturating_sub(1)
    )]
    NoSuchIface {
        /// The route.
        route: String,
        /// The interface it names.
        iface: usize,
        /// Interfaces configured.
        ifaces: usize,
    },
    /// A route file could not be read.
    #[error("cannot read route file {}", path.display())]
    RouteFile {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A line of a route file is not a route.
    #[error("{}:{line}: {source}", path.display())]
    RouteFileLine {
        /// The file.
        path: PathBuf,
        /// The line number (1-based).
        line: usize,
        /// What is wrong with it.
        #[source]
        source: Box<Error>,
    },
    /// Two routes with the same prefix (a lookup could only follow one).
    #[error(
        "route {route}: another route has the same prefix ({other}); give one route per prefix"
    )]
    DuplicateRoute {
        /// The later route.
        route: String,
        /// The earlier one.
        other: String,
    },
    /// A route's gateway is not on the subnet of the interface it leaves by.
    #[error("route {route}: the gateway {via} is not on interface {iface}'s subnet ({subnet}); give a gateway there, or the right if=")]
    GatewayOffLink {
        /// The route.
        route: String,
        /// Its gateway.
        via: std::net::IpAddr,
        /// Its outgoing interface.
        iface: usize,
        /// That interface's subnet.
        subnet: String,
    },
    /// The route table is full.
    #[error("too many routes ({routes}); at most {max}")]
    TooManyRoutes {
        /// Routes given (connected routes included).
        routes: usize,
        /// The bound.
        max: usize,
    },
    /// A forwarder configuration value is out of range.
    #[error("bad configuration: {field}: {fix}")]
    BadConfig {
        /// The field or flag.
        field: &'static str,
        /// What would be accepted.
        fix: String,
    },
    /// The stack refused to start or stop.
    #[error(transparent)]
    Stack(#[from] ibpoll::Error),
}
