//! Routes: what they are and how they are written (`--route`, route files).

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use crate::family::{parse_len, Family};
use crate::Error;

/// One route of address family `A` ([`Route`] for IPv4, [`Route6`](crate::Route6) for
/// IPv6): packets to `prefix/prefix_len` leave by interface `iface`, to the gateway
/// `via` or, for a connected route (`via` = `None`), to their destination itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpRoute<A> {
    /// The network (host bits are cleared by [`IpRoute::new`] and the parser).
    pub prefix: A,
    /// Prefix length, 0..=32 (IPv4) or 0..=128 (IPv6).
    pub prefix_len: u8,
    /// The gateway, on the outgoing interface's subnet (resolved there by ARP or
    /// neighbour discovery); `None`: directly connected.
    pub via: Option<A>,
    /// The outgoing interface (index in [`FwdConfig::ifaces`](crate::FwdConfig::ifaces)).
    pub iface: usize,
}

/// One IPv4 route.
pub type Route = IpRoute<[u8; 4]>;

/// Where a lookup sends a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNextHop<A> {
    /// The outgoing interface.
    pub iface: usize,
    /// The gateway; `None`: the destination itself is the next hop.
    pub via: Option<A>,
}

/// Where an IPv4 lookup sends a packet.
pub type NextHop = IpNextHop<[u8; 4]>;

impl<A: Family> IpNextHop<A> {
    /// The address to resolve (ARP, neighbour discovery) on the outgoing interface for
    /// `dst`.
    #[inline]
    pub fn next_hop(&self, dst: A) -> A {
        self.via.unwrap_or(dst)
    }
}

/// The netmask of a prefix length (0..=32).
#[inline]
pub fn mask(prefix_len: u8) -> u32 {
    if prefix_len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix_len.min(32)))
    }
}

impl<A: Family> IpRoute<A> {
    /// A route; the prefix's host bits are cleared. `prefix_len` above the family's
    /// longest (32, 128) is clamped to it (the parser refuses it).
    pub fn new(prefix: A, prefix_len: u8, via: Option<A>, iface: usize) -> IpRoute<A> {
        let prefix_len = prefix_len.min(A::LEN_MAX);
        IpRoute {
            prefix: prefix.network(prefix_len),
            prefix_len,
            via,
            iface,
        }
    }

    /// The connected route of an interface with address `addr/prefix_len`.
    pub fn connected(iface: usize, addr: A, prefix_len: u8) -> IpRoute<A> {
        IpRoute::new(addr, prefix_len, None, iface)
    }

    /// Whether `dst` is in this route's prefix.
    #[inline]
    pub fn contains(&self, dst: A) -> bool {
        dst.to_bits() & A::mask(self.prefix_len) == self.prefix.to_bits()
    }

    /// Where this route sends packets.
    pub fn next_hop(&self) -> IpNextHop<A> {
        IpNextHop {
            iface: self.iface,
            via: self.via,
        }
    }
}

impl<A: Family> fmt::Display for IpRoute<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.prefix.into(), self.prefix_len)?;
        if let Some(v) = self.via {
            write!(f, ",via={}", v.into())?;
        }
        write!(f, ",if={}", self.iface)
    }
}

/// Parses a dotted-quad IPv4 address.
pub fn parse_ipv4(s: &str) -> Option<[u8; 4]> {
    <[u8; 4]>::parse(s)
}

impl<A: Family> FromStr for IpRoute<A> {
    type Err = Error;

    /// `PREFIX/LEN[,via=ADDR],if=N`, e.g. `10.2.0.0/16,via=10.2.0.1,if=1` or
    /// `fd00:3::/64,via=fd00:2::9,if=1` (`default` for IPv4's `0.0.0.0/0`; IPv6 writes
    /// `::/0`). Host bits in the prefix are cleared; an IPv6 gateway must be unicast.
    fn from_str(s: &str) -> Result<IpRoute<A>, Error> {
        let bad = |why| A::bad_route(crate::error::clip(s), why);
        let mut parts = s.trim().split(',').map(str::trim);
        let net = parts
            .next()
            .filter(|p| !p.is_empty())
            .ok_or(bad("empty route"))?;
        let (prefix, prefix_len) = match A::DEFAULT {
            Some(any) if net == "default" => (any, 0),
            _ => {
                let (addr, len) = net
                    .split_once('/')
                    .ok_or(bad("the prefix needs a length (PREFIX/LEN)"))?;
                let addr = A::parse(addr).ok_or(bad(A::NOT_PREFIX))?;
                (addr, parse_len::<A>(len).ok_or(bad(A::BAD_LEN))?)
            }
        };
        let (mut via, mut iface) = (None, None);
        for p in parts {
            let (k, v) = p
                .split_once('=')
                .ok_or(bad("options are key=value (via=, if=)"))?;
            match k.trim() {
                "via" if via.is_some() => return Err(bad("via= given twice")),
                "via" => via = Some(A::parse(v.trim()).ok_or(bad(A::NOT_VIA))?),
                "if" if iface.is_some() => return Err(bad("if= given twice")),
                "if" => {
                    iface = Some(
                        v.trim()
                            .parse::<usize>()
                            .map_err(|_| bad("if= is not an interface number"))?,
                    )
                }
                _ => return Err(bad("unknown option (only via= and if=)")),
            }
        }
        if let Some(v) = via {
            A::check_gateway(v).map_err(bad)?;
        }
        let iface = iface.ok_or(bad("missing if=N (the outgoing interface)"))?;
        Ok(IpRoute::new(prefix, prefix_len, via, iface))
    }
}

/// The reference: a linear scan for the longest matching prefix (the later route wins
/// a tie). For tests and for checking a table.
pub(crate) fn lookup_linear_in<A: Family>(routes: &[IpRoute<A>], dst: A) -> Option<IpNextHop<A>> {
    let mut best: Option<&IpRoute<A>> = None;
    for r in routes {
        let n = IpRoute::new(r.prefix, r.prefix_len, r.via, r.iface);
        if n.contains(dst) && best.is_none_or(|b| n.prefix_len >= b.prefix_len.min(A::LEN_MAX)) {
            best = Some(r);
        }
    }
    best.map(IpRoute::next_hop)
}

/// Calls `add` with each line of a route file's text, comments (`#`) cut and blank lines
/// skipped; an error names the file (`path`) and the line.
fn for_each_line(
    text: &str,
    path: &Path,
    mut add: impl FnMut(&str) -> Result<(), Error>,
) -> Result<(), Error> {
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        add(line).map_err(|e| Error::RouteFileLine {
            path: path.to_owned(),
            line: i + 1,
            source: Box::new(e),
        })?;
    }
    Ok(())
}

/// Parses a route file's text: one route per line (`--route` syntax); blank lines and
/// `#` comments are skipped. `path` names the file in errors.
pub fn parse_routes(text: &str, path: &Path) -> Result<Vec<Route>, Error> {
    let mut routes = Vec::new();
    for_each_line(text, path, |line| {
        routes.push(line.parse::<Route>()?);
        Ok(())
    })?;
    Ok(routes)
}

/// What a route file holds: IPv4 and IPv6 routes, IPv4 and IPv6 multicast routes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteFile {
    /// IPv4 routes.
    pub routes: Vec<Route>,
    /// IPv6 routes.
    pub routes6: Vec<crate::Route6>,
    /// IPv4 multicast routes.
    pub mroutes: Vec<crate::MRoute>,
    /// IPv6 multicast routes.
    pub mroutes6: Vec<crate::MRoute6>,
}

impl RouteFile {
    /// Adds one line (`--route` syntax, or `mroute ` and the `--mroute` syntax); an IPv6
    /// prefix or group makes an IPv6 route.
    pub fn add_line(&mut self, line: &str) -> Result<(), Error> {
        match line.strip_prefix("mroute ") {
            Some(m) if crate::is_ipv6_route(m) => self.mroutes6.push(m.parse()?),
            Some(m) => self.mroutes.push(m.parse()?),
            None if crate::is_ipv6_route(line) => self.routes6.push(line.parse()?),
            None => self.routes.push(line.parse()?),
        }
        Ok(())
    }

    /// Adds what another file holds.
    pub fn extend(&mut self, other: RouteFile) {
        self.routes.extend(other.routes);
        self.routes6.extend(other.routes6);
        self.mroutes.extend(other.mroutes);
        self.mroutes6.extend(other.mroutes6);
    }
}

/// Parses a route file's text: one route per line, unicast in `--route` syntax,
/// multicast as `mroute GROUP[/LEN],from=N,to=M` (`--mroute` syntax), IPv4 or IPv6 (an
/// IPv6 prefix or group makes an IPv6 route); blank lines and `#` comments are skipped.
/// `path` names the file in errors.
pub fn parse_route_file(text: &str, path: &Path) -> Result<RouteFile, Error> {
    let mut file = RouteFile::default();
    for_each_line(text, path, |line| file.add_line(line))?;
    Ok(file)
}

/// The largest route file read, bytes (65,536 routes of the longest form are 3 MiB).
pub const ROUTE_FILE_MAX_BYTES: u64 = 16 << 20;

/// Reads a route file: a regular file only (a FIFO, a device such as `/dev/zero` or a
/// terminal could block or never end; they are refused before they are opened), at
/// most [`ROUTE_FILE_MAX_BYTES`], UTF-8.
fn read_text(path: &Path) -> Result<String, Error> {
    use std::io::Read;
    let io = |source| Error::RouteFile {
        path: path.to_owned(),
        source,
    };
    let refuse = |why: String| io(std::io::Error::new(std::io::ErrorKind::InvalidInput, why));
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(refuse(
            "not a regular file (a directory, FIFO or device); give a file of routes".into(),
        ));
    }
    if meta.len() > ROUTE_FILE_MAX_BYTES {
        return Err(refuse(format!(
            "{} bytes is more than a route file may hold ({ROUTE_FILE_MAX_BYTES})",
            meta.len()
        )));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(ROUTE_FILE_MAX_BYTES + 1).read_to_end(&mut bytes))
        .map_err(io)?;
    if bytes.len() as u64 > ROUTE_FILE_MAX_BYTES {
        return Err(refuse(format!(
            "it grew past what a route file may hold ({ROUTE_FILE_MAX_BYTES} bytes)"
        )));
    }
    String::from_utf8(bytes).map_err(|_| refuse("it is not UTF-8 text".into()))
}

/// Reads and parses a route file with multicast routes (see [`parse_route_file`] and,
/// for what is read, [`ROUTE_FILE_MAX_BYTES`]: a regular file of at most 16 MiB).
pub fn read_route_file(path: &Path) -> Result<RouteFile, Error> {
    parse_route_file(&read_text(path)?, path)
}

/// Reads and parses a route file (see [`parse_routes`] and [`read_route_file`]).
pub fn read_routes_file(path: &Path) -> Result<Vec<Route>, Error> {
    parse_routes(&read_text(path)?, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_flag_syntax() {
        let r: Route = "10.2.0.0/16,via=10.2.0.1,if=1".parse().unwrap();
        assert_eq!(r, Route::new([10, 2, 0, 0], 16, Some([10, 2, 0, 1]), 1));
        assert_eq!(r.to_string(), "10.2.0.0/16,via=10.2.0.1,if=1");
        let r: Route = "10.2.3.4/16, if=0".parse().unwrap();
        assert_eq!(r.prefix, [10, 2, 0, 0]);
        let r: Route = "default,via=10.1.0.9,if=0".parse().unwrap();
        assert_eq!(r.prefix_len, 0);
        for bad in [
            "",
            "10.2.0.0",
            "10.2.0.0/33",
            "10.2.0/16,if=0",
            "10.2.0.0/16",
            "10.2.0.0/16,if=x",
            "10.2.0.0/16,via=1.2.3,if=0",
            "10.2.0.0/16,mtu=5,if=0",
        ] {
            assert!(bad.parse::<Route>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn route_files_name_the_line() {
        let p = Path::new("r.conf");
        let ok = parse_routes("# c\n\n10.0.0.0/8,if=1 # x\n", p).unwrap();
        assert_eq!(ok.len(), 1);
        let e = parse_routes("10.0.0.0/8,if=1\nnonsense\n", p).unwrap_err();
        assert!(e.to_string().contains("r.conf:2"), "{e}");
        let f = parse_route_file(
            "10.0.0.0/8,if=1\nmroute 239.1.0.0/24,from=0,to=1 # g\nfd00:3::/64,if=1\n\
             mroute ff05::1:0/120,from=0,to=1\n",
            p,
        )
        .unwrap();
        assert_eq!(
            (
                f.routes.len(),
                f.mroutes.len(),
                f.routes6.len(),
                f.mroutes6.len()
            ),
            (1, 1, 1, 1)
        );
        assert_eq!(f.routes6[0].to_string(), "fd00:3::/64,if=1");
        let e = parse_route_file("fd00:3::/64,via=10.0.0.1,if=1\n", p).unwrap_err();
        assert!(
            e.to_string().contains("r.conf:1") && e.to_string().contains("IPv6"),
            "{e}"
        );
        let e = parse_route_file("mroute 239.1.0.0/24,from=0\n", p).unwrap_err();
        assert!(
            e.to_string().contains("r.conf:1") && e.to_string().contains("to="),
            "{e}"
        );
    }
}
