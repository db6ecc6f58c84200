//! Static IPv6 multicast routes (`--mroute`, `mroute` lines of route files with an IPv6
//! group) and their table: the IPv6 counterpart of [`crate::MRoute`], with the same
//! rules (the forwarder subscribes to every group of a route on its ingress interface,
//! at most [`MCAST_GROUPS_MAX`](crate::MCAST_GROUPS_MAX) groups in all, and sends them on
//! its egress interface).
//!
//! Groups of interface-local and link-local scope (`ffx1::/16`, `ffx2::/16`: RFC 4291
//! section 2.7) never leave their link, so no route may name them. Since a route covers
//! at most 256 groups its prefix is /120 or longer, and the table holds every covered
//! group: a lookup is one exact-match hash lookup.

use std::collections::HashMap;

use crate::mroute::{check_mroutes, IpMRoute, MCAST_GROUPS_MAX};
use crate::Error;

/// One static IPv6 multicast route (see [`IpMRoute`]).
pub type MRoute6 = IpMRoute<[u8; 16]>;

/// The IPv6 multicast routes of a forwarder, checked and expanded: every covered group
/// of every ingress interface maps to its egress interface (the longest prefix wins).
#[derive(Debug, Clone, Default)]
pub struct MrouteTable6 {
    by_group: HashMap<(u8, u128), u8>,
    routes: Vec<MRoute6>,
    subscriptions: Vec<(usize, [u8; 16])>,
}

impl MrouteTable6 {
    /// Builds the table for a forwarder with `ifaces` interfaces; refused as
    /// [`MrouteTable::new`](crate::MrouteTable::new) refuses IPv4 routes.
    pub fn new(routes: &[MRoute6], ifaces: usize) -> Result<MrouteTable6, Error> {
        check_mroutes(routes, ifaces)?;
        let mut t = MrouteTable6 {
            routes: routes.to_vec(),
            ..MrouteTable6::default()
        };
        let mut sorted = routes.to_vec();
        // Shortest first: a longer prefix overwrites the groups it shares.
        sorted.sort_by_key(|r| r.prefix_len);
        for r in &sorted {
            let base = u128::from_be_bytes(r.group);
            for k in 0..u128::from(r.groups()) {
                let g = base + k;
                if t.by_group.insert((r.from as u8, g), r.to as u8).is_none() {
                    t.subscriptions.push((r.from, g.to_be_bytes()));
                }
            }
            if t.subscriptions.len() > MCAST_GROUPS_MAX {
                return Err(Error::BadConfig {
                    field: "mroutes",
                    fix: format!(
                        "the IPv6 multicast routes cover more than {MCAST_GROUPS_MAX} groups, the most a forwarder subscribes to"
                    ),
                });
            }
        }
        Ok(t)
    }

    /// The egress interface of group `group` arriving on `from`.
    #[inline]
    pub fn lookup(&self, from: usize, group: [u8; 16]) -> Option<usize> {
        let from = u8::try_from(from).ok()?;
        self.by_group
            .get(&(from, u128::from_be_bytes(group)))
            .map(|&to| usize::from(to))
    }

    /// The routes, as given.
    pub fn routes(&self) -> &[MRoute6] {
        &self.routes
    }

    /// Every (ingress interface, group) the forwarder subscribes to, each once.
    pub fn subscriptions(&self) -> &[(usize, [u8; 16])] {
        &self.subscriptions
    }

    /// IPv6 multicast routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// No IPv6 multicast routes.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route6::parse_ipv6;

    fn a(s: &str) -> [u8; 16] {
        parse_ipv6(s).unwrap()
    }

    #[test]
    fn parses_the_flag_syntax() {
        let r: MRoute6 = "ff05::1:0/120,from=0,to=1".parse().unwrap();
        assert_eq!(r, MRoute6::new(a("ff05::1:0"), 120, 0, 1));
        assert_eq!(r.to_string(), "ff05::1:0/120,from=0,to=1");
        assert_eq!(r.groups(), 256);
        let r: MRoute6 = "ff0e::1:77, to=0, from=1".parse().unwrap();
        assert_eq!((r.prefix_len, r.from, r.to), (128, 1, 0));
        for (bad, says) in [
            ("", "empty"),
            ("ff05::/129,from=0,to=1", "0..=128"),
            ("ff05::g,from=0,to=1", "not an IPv6"),
            ("fd00::/120,from=0,to=1", "ff00::/8"),
            ("ff02::1,from=0,to=1", "never forwarded"),
            ("ff01::1,from=0,to=1", "never forwarded"),
            ("ff05::/112,from=0,to=1", "at most 256"),
            ("ff05::1,from=1,to=1", "same interface"),
            ("ff05::1,to=1", "missing from="),
            ("ff05::1,from=0,to=1,to=2", "twice"),
            ("ff05::1,from=0,to=1,hops=2", "unknown option"),
        ] {
            let e = bad.parse::<MRoute6>().unwrap_err().to_string();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }

    #[test]
    fn the_table_expands_and_the_longest_prefix_wins() {
        let r = |s: &str| s.parse::<MRoute6>().unwrap();
        let t = MrouteTable6::new(
            &[
                r("ff05::1:0/121,from=0,to=1"),
                r("ff05::1:8/125,from=0,to=2"),
                r("ff05::1:0/121,from=1,to=0"),
            ],
            3,
        )
        .unwrap();
        assert_eq!(t.lookup(0, a("ff05::1:1")), Some(1));
        assert_eq!(t.lookup(0, a("ff05::1:9")), Some(2), "longest prefix");
        assert_eq!(t.lookup(1, a("ff05::1:9")), Some(0));
        assert_eq!(t.lookup(2, a("ff05::1:9")), None);
        assert_eq!(t.lookup(0, a("ff05::2:1")), None);
        assert_eq!(t.subscriptions().len(), 256);
        let e = MrouteTable6::new(&[r("ff05::1:0/120,from=0,to=5")], 2).unwrap_err();
        assert!(e.to_string().contains("interface 5"), "{e}");
        let e = MrouteTable6::new(
            &[
                r("ff05::1:0/120,from=0,to=1"),
                r("ff05::2:0/120,from=0,to=1"),
            ],
            2,
        )
        .unwrap_err();
        assert!(e.to_string().contains("more than 256"), "{e}");
    }
}
