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
use std::fmt;
use std::str::FromStr;

use crate::mroute::MCAST_GROUPS_MAX;
use crate::route6::{mask6, parse_ipv6};
use crate::Error;

/// One static IPv6 multicast route: groups in `group/prefix_len` that arrive on
/// interface `from` are sent on interface `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MRoute6 {
    /// The first group of the prefix (host bits cleared).
    pub group: [u8; 16],
    /// Prefix length; the route covers `2^(128 - prefix_len)` groups.
    pub prefix_len: u8,
    /// The ingress interface: the forwarder subscribes to the groups there.
    pub from: usize,
    /// The egress interface: the forwarder sends to the groups there.
    pub to: usize,
}

impl MRoute6 {
    /// A route; host bits of `group` are cleared, `prefix_len` above 128 is clamped.
    pub fn new(group: [u8; 16], prefix_len: u8, from: usize, to: usize) -> MRoute6 {
        let prefix_len = prefix_len.min(128);
        MRoute6 {
            group: (u128::from_be_bytes(group) & mask6(prefix_len)).to_be_bytes(),
            prefix_len,
            from,
            to,
        }
    }

    /// Groups the route covers (saturating at `u64::MAX`).
    pub fn groups(&self) -> u64 {
        let host_bits = 128 - u32::from(self.prefix_len);
        if host_bits >= 64 {
            u64::MAX
        } else {
            1u64 << host_bits
        }
    }

    /// Whether group `g` is in the route's prefix.
    pub fn contains(&self, g: [u8; 16]) -> bool {
        u128::from_be_bytes(g) & mask6(self.prefix_len) == u128::from_be_bytes(self.group)
    }

    /// Why the route cannot be used by itself, if so.
    fn check(&self) -> Result<(), &'static str> {
        if self.prefix_len < 8 || self.group[0] != 0xff {
            return Err("the prefix must lie within ff00::/8 (IPv6 multicast)");
        }
        if self.prefix_len < 16 || self.group[1] & 0x0f <= 2 {
            return Err(
                "interface-local and link-local groups (scope 1 and 2, e.g. ff02::/16) are never forwarded",
            );
        }
        if self.from == self.to {
            return Err("from= and to= are the same interface (no forwarding back out the ingress interface)");
        }
        if self.groups() > MCAST_GROUPS_MAX as u64 {
            return Err("the prefix covers more groups than a forwarder subscribes to (at most 256: /120 or longer)");
        }
        Ok(())
    }
}

impl fmt::Display for MRoute6 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = std::net::Ipv6Addr::from(self.group);
        write!(
            f,
            "{g}/{},from={},to={}",
            self.prefix_len, self.from, self.to
        )
    }
}

impl FromStr for MRoute6 {
    type Err = Error;

    /// `GROUP[/LEN],from=N,to=M` (no `/LEN`: one group, /128), e.g.
    /// `ff05::1:0/120,from=0,to=1`.
    fn from_str(s: &str) -> Result<MRoute6, Error> {
        let bad = |why| Error::BadMroute {
            mroute: crate::error::clip(s),
            why,
        };
        let mut parts = s.trim().split(',').map(str::trim);
        let net = parts
            .next()
            .filter(|p| !p.is_empty())
            .ok_or(bad("empty multicast route"))?;
        let (addr, len) = match net.split_once('/') {
            Some((a, l)) => (
                a,
                l.parse::<u8>()
                    .ok()
                    .filter(|l| *l <= 128)
                    .ok_or(bad("the prefix length must be 0..=128"))?,
            ),
            None => (net, 128),
        };
        let group = parse_ipv6(addr).ok_or(bad("the group is not an IPv6 address"))?;
        let (mut from, mut to) = (None, None);
        for p in parts {
            let (k, v) = p
                .split_once('=')
                .ok_or(bad("options are key=value (from=, to=)"))?;
            let slot = match k.trim() {
                "from" => &mut from,
                "to" => &mut to,
                _ => return Err(bad("unknown option (only from= and to=)")),
            };
            if slot.is_some() {
                return Err(bad("an option is given twice"));
            }
            *slot = Some(
                v.trim()
                    .parse::<usize>()
                    .map_err(|_| bad("from= and to= take an interface number"))?,
            );
        }
        let from = from.ok_or(bad("missing from=N (the ingress interface)"))?;
        let to = to.ok_or(bad("missing to=N (the egress interface)"))?;
        let r = MRoute6::new(group, len, from, to);
        r.check().map_err(bad)?;
        Ok(r)
    }
}

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
        if routes.len() > crate::MROUTES_MAX {
            return Err(Error::BadConfig {
                field: "mroutes",
                fix: format!(
                    "{} IPv6 multicast routes; at most {}",
                    routes.len(),
                    crate::MROUTES_MAX
                ),
            });
        }
        for (i, r) in routes.iter().enumerate() {
            r.check().map_err(|why| Error::BadMroute {
                mroute: r.to_string(),
                why,
            })?;
            for iface in [r.from, r.to] {
                if iface >= ifaces {
                    return Err(Error::NoSuchIface {
                        route: r.to_string(),
                        iface,
                        ifaces,
                    });
                }
            }
            if routes[..i]
                .iter()
                .any(|o| o.from == r.from && o.group == r.group && o.prefix_len == r.prefix_len)
            {
                return Err(Error::BadMroute {
                    mroute: r.to_string(),
                    why: "another multicast route has the same prefix and from= (a packet leaves by one interface)",
                });
            }
        }
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
