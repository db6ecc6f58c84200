//! IPv6 routes (`--route`, route files: an IPv6 prefix makes an IPv6 route) and their
//! longest-prefix-match table.
//!
//! The table keeps one hash map per prefix length that has routes, longest first: a
//! lookup masks the destination once per such length and stops at the first hit. Route
//! tables have a handful of distinct lengths (/128 hosts, /64 subnets, /48 sites, a
//! default), so that is a handful of hash lookups, with no allocation. Of two routes
//! with the same prefix the later wins (the configuration refuses such pairs, as for
//! IPv4, except that a configured route replaces a connected one).

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use crate::Error;

/// One IPv6 route: packets to `prefix/prefix_len` leave by interface `iface`, to the
/// gateway `via` or, for a connected route (`via` = `None`), to their destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Route6 {
    /// The network (host bits are cleared by [`Route6::new`] and the parser).
    pub prefix: [u8; 16],
    /// Prefix length, 0..=128.
    pub prefix_len: u8,
    /// The gateway, resolved by neighbour discovery on the outgoing interface; `None`:
    /// directly connected.
    pub via: Option<[u8; 16]>,
    /// The outgoing interface (index in [`FwdConfig::ifaces`](crate::FwdConfig::ifaces)).
    pub iface: usize,
}

/// Where an IPv6 lookup sends a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NextHop6 {
    /// The outgoing interface.
    pub iface: usize,
    /// The gateway; `None`: the destination itself is the next hop.
    pub via: Option<[u8; 16]>,
}

impl NextHop6 {
    /// The IPv6 address to resolve on the outgoing interface for `dst`.
    #[inline]
    pub fn next_hop(&self, dst: [u8; 16]) -> [u8; 16] {
        self.via.unwrap_or(dst)
    }
}

/// The netmask of an IPv6 prefix length (0..=128).
#[inline]
pub const fn mask6(prefix_len: u8) -> u128 {
    if prefix_len == 0 {
        0
    } else if prefix_len >= 128 {
        u128::MAX
    } else {
        u128::MAX << (128 - prefix_len as u32)
    }
}

/// Parses an IPv6 address (any textual form of RFC 4291 section 2.2).
pub fn parse_ipv6(s: &str) -> Option<[u8; 16]> {
    s.parse::<std::net::Ipv6Addr>().ok().map(|a| a.octets())
}

/// Whether `a` is link-local unicast (`fe80::/10`): on-link on every interface, never
/// forwarded (RFC 4291 section 2.5.6).
pub const fn is_link_local(a: &[u8; 16]) -> bool {
    a[0] == 0xfe && a[1] & 0xc0 == 0x80
}

impl Route6 {
    /// A route; the prefix's host bits are cleared, `prefix_len` above 128 is clamped
    /// (the parser refuses it).
    pub fn new(prefix: [u8; 16], prefix_len: u8, via: Option<[u8; 16]>, iface: usize) -> Route6 {
        let prefix_len = prefix_len.min(128);
        Route6 {
            prefix: (u128::from_be_bytes(prefix) & mask6(prefix_len)).to_be_bytes(),
            prefix_len,
            via,
            iface,
        }
    }

    /// The connected route of an interface with address `addr/prefix_len`.
    pub fn connected(iface: usize, addr: [u8; 16], prefix_len: u8) -> Route6 {
        Route6::new(addr, prefix_len, None, iface)
    }

    /// Whether `dst` is in this route's prefix.
    #[inline]
    pub fn contains(&self, dst: [u8; 16]) -> bool {
        u128::from_be_bytes(dst) & mask6(self.prefix_len) == u128::from_be_bytes(self.prefix)
    }

    /// Where this route sends packets.
    pub fn next_hop(&self) -> NextHop6 {
        NextHop6 {
            iface: self.iface,
            via: self.via,
        }
    }
}

impl fmt::Display for Route6 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = std::net::Ipv6Addr::from(self.prefix);
        write!(f, "{p}/{}", self.prefix_len)?;
        if let Some(v) = self.via {
            write!(f, ",via={}", std::net::Ipv6Addr::from(v))?;
        }
        write!(f, ",if={}", self.iface)
    }
}

/// Whether a route as written (`--route`, a route-file line) is an IPv6 one: its prefix
/// has a colon.
pub fn is_ipv6_route(s: &str) -> bool {
    s.split(',').next().is_some_and(|net| net.contains(':'))
}

impl FromStr for Route6 {
    type Err = Error;

    /// `PREFIX/LEN[,via=IPV6],if=N`, e.g. `fd00:3::/64,via=fd00:2::9,if=1` (`::/0` is
    /// the default route). Host bits in the prefix are cleared.
    fn from_str(s: &str) -> Result<Route6, Error> {
        let bad = |why| Error::BadRoute6 {
            route: crate::error::clip(s),
            why,
        };
        let mut parts = s.trim().split(',').map(str::trim);
        let net = parts
            .next()
            .filter(|p| !p.is_empty())
            .ok_or(bad("empty route"))?;
        let (addr, len) = net
            .split_once('/')
            .ok_or(bad("the prefix needs a length (PREFIX/LEN)"))?;
        let prefix = parse_ipv6(addr).ok_or(bad("the prefix is not an IPv6 address"))?;
        let prefix_len: u8 = len
            .parse()
            .ok()
            .filter(|l| *l <= 128)
            .ok_or(bad("the prefix length must be 0..=128"))?;
        let (mut via, mut iface) = (None, None);
        for p in parts {
            let (k, v) = p
                .split_once('=')
                .ok_or(bad("options are key=value (via=, if=)"))?;
            match k.trim() {
                "via" if via.is_some() => return Err(bad("via= given twice")),
                "via" => {
                    via = Some(parse_ipv6(v.trim()).ok_or(bad("via= is not an IPv6 address"))?)
                }
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
        if via.is_some_and(|v| v[0] == 0xff || v == [0; 16]) {
            return Err(bad("via= must be a unicast address"));
        }
        let iface = iface.ok_or(bad("missing if=N (the outgoing interface)"))?;
        Ok(Route6::new(prefix, prefix_len, via, iface))
    }
}

/// An IPv6 longest-prefix-match table (see the module docs). Immutable once built; share
/// it between lcores with an `Arc`.
#[derive(Clone, Default)]
pub struct RouteTable6 {
    /// (prefix length, its mask, network -> next hop index), longest first.
    levels: Vec<(u8, u128, HashMap<u128, u32>)>,
    hops: Vec<NextHop6>,
    routes: Vec<Route6>,
}

impl fmt::Debug for RouteTable6 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteTable6")
            .field("routes", &self.routes.len())
            .field("lengths", &self.levels.len())
            .finish()
    }
}

impl RouteTable6 {
    /// Builds the table. Of two routes with the same prefix and length the later wins.
    pub fn new(routes: &[Route6]) -> Result<RouteTable6, Error> {
        if routes.len() > crate::ROUTES_MAX {
            return Err(Error::TooManyRoutes {
                routes: routes.len(),
                max: crate::ROUTES_MAX,
            });
        }
        let mut t = RouteTable6 {
            routes: routes.to_vec(),
            ..RouteTable6::default()
        };
        for r in routes {
            let r = Route6::new(r.prefix, r.prefix_len, r.via, r.iface);
            let at = match t.levels.iter().position(|(l, ..)| *l == r.prefix_len) {
                Some(i) => i,
                None => {
                    t.levels
                        .push((r.prefix_len, mask6(r.prefix_len), HashMap::new()));
                    t.levels.len() - 1
                }
            };
            t.hops.push(r.next_hop());
            let hop = (t.hops.len() - 1) as u32;
            t.levels[at].2.insert(u128::from_be_bytes(r.prefix), hop);
        }
        t.levels.sort_by_key(|(l, ..)| std::cmp::Reverse(*l));
        Ok(t)
    }

    /// The longest-prefix match for `dst`: one hash lookup per prefix length in use,
    /// longest first; no allocation.
    #[inline]
    pub fn lookup(&self, dst: [u8; 16]) -> Option<NextHop6> {
        let d = u128::from_be_bytes(dst);
        self.levels
            .iter()
            .find_map(|(_, m, nets)| nets.get(&(d & m)))
            .map(|&i| self.hops[i as usize])
    }

    /// The routes, as given.
    pub fn routes(&self) -> &[Route6] {
        &self.routes
    }

    /// Routes in the table.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// No routes.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

/// The reference: a linear scan for the longest matching prefix (the later route wins
/// a tie). For tests and for checking a table.
pub fn lookup6_linear(routes: &[Route6], dst: [u8; 16]) -> Option<NextHop6> {
    let mut best: Option<&Route6> = None;
    for r in routes {
        let n = Route6::new(r.prefix, r.prefix_len, r.via, r.iface);
        if n.contains(dst) && best.is_none_or(|b| n.prefix_len >= b.prefix_len.min(128)) {
            best = Some(r);
        }
    }
    best.map(Route6::next_hop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn a(s: &str) -> [u8; 16] {
        parse_ipv6(s).unwrap()
    }

    #[test]
    fn parses_the_flag_syntax() {
        let r: Route6 = "fd00:3::/64,via=fd00:2::9,if=1".parse().unwrap();
        assert_eq!(r, Route6::new(a("fd00:3::"), 64, Some(a("fd00:2::9")), 1));
        assert_eq!(r.to_string(), "fd00:3::/64,via=fd00:2::9,if=1");
        let r: Route6 = "fd00:3::77/120, if=0".parse().unwrap();
        assert_eq!(r.prefix, a("fd00:3::"));
        let r: Route6 = "::/0,via=fe80::1,if=0".parse().unwrap();
        assert_eq!(r.prefix_len, 0);
        assert!(is_ipv6_route("::/0,if=0") && !is_ipv6_route("10.0.0.0/8,via=10.0.0.1,if=0"));
        for (bad, says) in [
            ("fd00::", "length"),
            ("fd00::/129,if=0", "0..=128"),
            ("fd00::x/64,if=0", "not an IPv6"),
            ("fd00::/64", "missing if="),
            ("fd00::/64,via=10.0.0.1,if=0", "via= is not an IPv6"),
            ("fd00::/64,via=ff02::1,if=0", "unicast"),
            ("fd00::/64,if=0,if=1", "twice"),
            ("fd00::/64,mtu=9000,if=0", "unknown option"),
        ] {
            let e = bad.parse::<Route6>().unwrap_err().to_string();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }

    #[test]
    fn longest_prefix_wins() {
        let r = |s: &str| s.parse::<Route6>().unwrap();
        let routes = [
            r("::/0,via=fd00:1::fe,if=0"),
            r("fd00::/16,if=1"),
            r("fd00:2::/64,if=2"),
            r("fd00:2::/120,if=3"),
            r("fd00:2::7/128,if=4"),
        ];
        let t = RouteTable6::new(&routes).unwrap();
        let at = |s| t.lookup(a(s)).map(|h| h.iface);
        assert_eq!(at("2001:db8::1"), Some(0));
        assert_eq!(at("fd00:9::1"), Some(1));
        assert_eq!(at("fd00:2::1:1"), Some(2));
        assert_eq!(at("fd00:2::1"), Some(3));
        assert_eq!(at("fd00:2::7"), Some(4));
        assert_eq!(
            t.lookup(a("2001:db8::1"))
                .unwrap()
                .next_hop(a("2001:db8::1")),
            a("fd00:1::fe")
        );
        assert_eq!(RouteTable6::new(&[]).unwrap().lookup(a("fd00::1")), None);
        assert!(is_link_local(&a("fe80::1")) && !is_link_local(&a("fd00::1")));
    }

    proptest! {
        #[test]
        fn the_table_agrees_with_a_linear_scan(
            routes in proptest::collection::vec(
                (any::<[u8; 16]>(), prop_oneof![Just(0u8), Just(16), Just(48), Just(64), Just(120), Just(128), 0u8..=128], 0usize..4),
                0..24,
            ),
            probes in proptest::collection::vec(any::<[u8; 16]>(), 1..16),
        ) {
            let routes: Vec<Route6> = routes
                .into_iter()
                .map(|(p, l, i)| Route6::new(p, l, None, i))
                .collect();
            let t = RouteTable6::new(&routes).unwrap();
            // Probes inside the routes' prefixes as well as random ones.
            let inside = routes.iter().map(|r| r.prefix);
            for d in probes.into_iter().chain(inside) {
                prop_assert_eq!(t.lookup(d), lookup6_linear(&routes, d));
            }
        }
    }
}
