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

use crate::family::Family;
use crate::route::{IpNextHop, IpRoute};
use crate::Error;

/// One IPv6 route (see [`IpRoute`]): the gateway is resolved by neighbour discovery on
/// the outgoing interface.
pub type Route6 = IpRoute<[u8; 16]>;

/// Where an IPv6 lookup sends a packet.
pub type NextHop6 = IpNextHop<[u8; 16]>;

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
    <[u8; 16]>::parse(s)
}

/// Whether `a` is link-local unicast (`fe80::/10`): on-link on every interface, never
/// forwarded (RFC 4291 section 2.5.6).
pub const fn is_link_local(a: &[u8; 16]) -> bool {
    a[0] == 0xfe && a[1] & 0xc0 == 0x80
}

/// Whether a route as written (`--route`, a route-file line) is an IPv6 one: its prefix
/// has a colon.
pub fn is_ipv6_route(s: &str) -> bool {
    s.split(',').next().is_some_and(|net| net.contains(':'))
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
    crate::route::lookup_linear_in(routes, dst)
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
