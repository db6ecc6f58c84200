//! Static multicast routes (`--mroute`, `mroute` lines of route files) and their table.
//!
//! An InfiniBand fabric delivers a multicast group only to the ports that joined it, so
//! a forwarder cannot "listen to every group" the way an Ethernet router in promiscuous
//! multicast mode does: each group it forwards is one full-member subscription on the
//! ingress interface. A multicast route therefore names a bounded set of groups (a
//! prefix of at most [`MCAST_GROUPS_MAX`] addresses over all routes), the interface they
//! come in on and the one they leave by. On the egress interface the forwarder sends to
//! the group (`Dest::Group`), and that interface's control plane makes a send-only join
//! on the first packet (DESIGN rule 4): the forwarder is a sender there, not a member.

use std::fmt;
use std::str::FromStr;

use crate::family::{parse_len, Family};
use crate::route::mask;
use crate::Error;

/// Multicast routes one forwarder holds at most.
pub const MROUTES_MAX: usize = 64;
/// Groups a forwarder subscribes to (and forwards) at most, over all multicast routes.
/// Each is a full-member join on its ingress interface and a send-only join on its
/// egress interface, both well within a controller's group table (1024).
pub const MCAST_GROUPS_MAX: usize = 256;

/// One static multicast route of address family `A` ([`MRoute`] for IPv4,
/// [`MRoute6`](crate::MRoute6) for IPv6): groups in `group/prefix_len` that arrive on
/// interface `from` are sent on interface `to` (never back out `from`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpMRoute<A> {
    /// The first group of the prefix (host bits cleared).
    pub group: A,
    /// Prefix length; the route covers `2^(32 - prefix_len)` IPv4 groups or
    /// `2^(128 - prefix_len)` IPv6 groups.
    pub prefix_len: u8,
    /// The ingress interface: the forwarder subscribes to the groups there.
    pub from: usize,
    /// The egress interface: the forwarder sends to the groups there.
    pub to: usize,
}

/// One static IPv4 multicast route.
pub type MRoute = IpMRoute<[u8; 4]>;

impl<A: Family> IpMRoute<A> {
    /// A multicast route; host bits of `group` are cleared, `prefix_len` above the
    /// family's longest (32, 128) is clamped (the parser refuses it).
    pub fn new(group: A, prefix_len: u8, from: usize, to: usize) -> IpMRoute<A> {
        let prefix_len = prefix_len.min(A::LEN_MAX);
        IpMRoute {
            group: group.network(prefix_len),
            prefix_len,
            from,
            to,
        }
    }

    /// Groups the route covers (saturating at `u64::MAX`).
    pub fn groups(&self) -> u64 {
        let host_bits = u32::from(A::LEN_MAX - self.prefix_len.min(A::LEN_MAX));
        if host_bits >= 64 {
            u64::MAX
        } else {
            1u64 << host_bits
        }
    }

    /// Whether group `g` is in the route's prefix.
    #[inline]
    pub fn contains(&self, g: A) -> bool {
        g.to_bits() & A::mask(self.prefix_len) == self.group.to_bits()
    }

    /// Why the route cannot be used by itself (before interfaces are known), if so.
    fn check(&self) -> Result<(), &'static str> {
        A::check_group(self.group, self.prefix_len)?;
        if self.from == self.to {
            return Err("from= and to= are the same interface (no forwarding back out the ingress interface)");
        }
        if self.groups() > MCAST_GROUPS_MAX as u64 {
            return Err(A::TOO_MANY_GROUPS);
        }
        Ok(())
    }
}

impl<A: Family> fmt::Display for IpMRoute<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{},from={},to={}",
            self.group.into(),
            self.prefix_len,
            self.from,
            self.to
        )
    }
}

impl<A: Family> FromStr for IpMRoute<A> {
    type Err = Error;

    /// `GROUP[/LEN],from=N,to=M` (no `/LEN`: one group, /32 or /128), e.g.
    /// `239.1.0.0/24,from=0,to=1` or `ff05::1:0/120,from=0,to=1`.
    fn from_str(s: &str) -> Result<IpMRoute<A>, Error> {
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
            Some((a, l)) => (a, parse_len::<A>(l).ok_or(bad(A::BAD_LEN))?),
            None => (net, A::LEN_MAX),
        };
        let group = A::parse(addr).ok_or(bad(A::NOT_GROUP))?;
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
        // Host bits are cleared, as for unicast routes.
        let r = IpMRoute::new(group, len, from, to);
        r.check().map_err(bad)?;
        Ok(r)
    }
}

/// What a multicast route table of either family refuses before it expands the routes:
/// more than [`MROUTES_MAX`] routes, a route refused by itself (outside the family's
/// multicast range or scope, from = to, too many groups), one naming a missing
/// interface, and two routes with the same prefix and ingress interface (a received
/// buffer leaves by one interface: zero copy).
pub(crate) fn check_mroutes<A: Family>(routes: &[IpMRoute<A>], ifaces: usize) -> Result<(), Error> {
    if routes.len() > MROUTES_MAX {
        return Err(Error::BadConfig {
            field: "mroutes",
            fix: format!(
                "{} {}; at most {MROUTES_MAX}",
                routes.len(),
                A::MROUTES_NOUN
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
    Ok(())
}

/// One entry of the lookup table.
#[derive(Debug, Clone, Copy)]
struct Entry {
    net: u32,
    mask: u32,
    from: u8,
    to: u8,
}

/// The multicast routes of a forwarder, checked and ready for lookups: longest prefix
/// first, per ingress interface. Immutable once built; share it with an `Arc`.
#[derive(Debug, Clone, Default)]
pub struct MrouteTable {
    entries: Vec<Entry>,
    routes: Vec<MRoute>,
    subscriptions: Vec<(usize, [u8; 4])>,
}

impl MrouteTable {
    /// Builds the table for a forwarder with `ifaces` interfaces. Refused: more than
    /// [`MROUTES_MAX`] routes, a route naming a missing interface, from = to, prefixes
    /// outside 224.0.0.0/4 or inside 224.0.0.0/24, two routes with the same prefix and
    /// ingress interface (a received buffer leaves by one interface: zero copy), and
    /// more than [`MCAST_GROUPS_MAX`] groups in all. Of nested prefixes with the same
    /// ingress interface the longest wins.
    pub fn new(routes: &[MRoute], ifaces: usize) -> Result<MrouteTable, Error> {
        check_mroutes(routes, ifaces)?;
        // The groups to subscribe to: every (ingress, group) once.
        let mut subscriptions: Vec<(usize, [u8; 4])> = Vec::new();
        let total: u64 = routes.iter().map(MRoute::groups).sum();
        for r in routes {
            let base = u32::from_be_bytes(r.group);
            for k in 0..r.groups() as u32 {
                let s = (r.from, (base + k).to_be_bytes());
                if !subscriptions.contains(&s) {
                    subscriptions.push(s);
                }
            }
            if subscriptions.len() > MCAST_GROUPS_MAX {
                return Err(too_many_groups(total));
            }
        }
        let mut sorted = routes.to_vec();
        // Stable: longest prefix first.
        sorted.sort_by_key(|r| std::cmp::Reverse(r.prefix_len));
        let entries = sorted
            .iter()
            .map(|r| Entry {
                net: u32::from_be_bytes(r.group),
                mask: mask(r.prefix_len),
                from: r.from as u8,
                to: r.to as u8,
            })
            .collect();
        Ok(MrouteTable {
            entries,
            routes: routes.to_vec(),
            subscriptions,
        })
    }

    /// The egress interface of group `group` (host order) arriving on `from`.
    #[inline]
    pub fn lookup_u32(&self, from: usize, group: u32) -> Option<usize> {
        self.entries
            .iter()
            .find(|e| usize::from(e.from) == from && group & e.mask == e.net)
            .map(|e| usize::from(e.to))
    }

    /// [`lookup_u32`](Self::lookup_u32) for a dotted-quad group.
    pub fn lookup(&self, from: usize, group: [u8; 4]) -> Option<usize> {
        self.lookup_u32(from, u32::from_be_bytes(group))
    }

    /// The routes, as given.
    pub fn routes(&self) -> &[MRoute] {
        &self.routes
    }

    /// Every (ingress interface, group) the forwarder subscribes to, each once.
    pub fn subscriptions(&self) -> &[(usize, [u8; 4])] {
        &self.subscriptions
    }

    /// Multicast routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// No multicast routes.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

fn too_many_groups(total: u64) -> Error {
    Error::BadConfig {
        field: "mroutes",
        fix: format!(
            "the multicast routes cover {total} groups; a forwarder subscribes to at most {MCAST_GROUPS_MAX} (one full-member join each)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_flag_syntax() {
        let r: MRoute = "239.1.0.0/24,from=0,to=1".parse().unwrap();
        assert_eq!(r, MRoute::new([239, 1, 0, 0], 24, 0, 1));
        assert_eq!(r.to_string(), "239.1.0.0/24,from=0,to=1");
        assert_eq!(r.groups(), 256);
        let r: MRoute = "239.1.2.3, to=0, from=1".parse().unwrap();
        assert_eq!(r, MRoute::new([239, 1, 2, 3], 32, 1, 0));
        let r: MRoute = "239.1.0.77/29,from=0,to=1".parse().unwrap();
        assert_eq!(r.group, [239, 1, 0, 72]);
        for (bad, says) in [
            ("", "empty"),
            ("239.1.0.0/33,from=0,to=1", "0..=32"),
            ("239.1.0/24,from=0,to=1", "not an IPv4"),
            ("10.1.0.0/24,from=0,to=1", "224.0.0.0/4"),
            ("224.0.0.0/4,from=0,to=1", "link-local"),
            ("224.0.0.251,from=0,to=1", "link-local"),
            ("239.1.0.0/16,from=0,to=1", "at most 256"),
            ("239.1.0.0/24,from=1,to=1", "same interface"),
            ("239.1.0.0/24,to=1", "missing from="),
            ("239.1.0.0/24,from=0", "missing to="),
            ("239.1.0.0/24,from=x,to=1", "interface number"),
            ("239.1.0.0/24,from=0,to=1,from=0", "twice"),
            ("239.1.0.0/24,from=0,to=1,ttl=3", "unknown option"),
            ("239.1.0.0/24,from", "key=value"),
        ] {
            let e = bad.parse::<MRoute>().unwrap_err().to_string();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }

    #[test]
    fn the_table_checks_interfaces_overlaps_and_the_group_bound() {
        let r = |s: &str| s.parse::<MRoute>().unwrap();
        let t = MrouteTable::new(
            &[
                r("239.1.0.0/25,from=0,to=1"),
                r("239.1.0.8/29,from=0,to=2"),
                r("239.1.0.0/25,from=1,to=0"),
            ],
            3,
        )
        .unwrap();
        assert_eq!(t.lookup(0, [239, 1, 0, 1]), Some(1));
        assert_eq!(t.lookup(0, [239, 1, 0, 9]), Some(2), "longest prefix");
        assert_eq!(t.lookup(1, [239, 1, 0, 9]), Some(0));
        assert_eq!(t.lookup(2, [239, 1, 0, 9]), None);
        assert_eq!(t.lookup(0, [239, 2, 0, 1]), None);
        // 128 on interface 0 (the /29 is inside the /25), 128 on interface 1.
        assert_eq!(t.subscriptions().len(), 256);
        let e = MrouteTable::new(&[r("239.1.0.0/24,from=0,to=5")], 2).unwrap_err();
        assert!(e.to_string().contains("interface 5"), "{e}");
        let e = MrouteTable::new(
            &[r("239.1.0.0/24,from=0,to=1"), r("239.1.0.0/24,from=0,to=2")],
            3,
        )
        .unwrap_err();
        assert!(e.to_string().contains("same prefix"), "{e}");
        let many: Vec<MRoute> = (0..2)
            .map(|i| MRoute::new([239, 1, i, 0], 24, 0, 1))
            .collect();
        let e = MrouteTable::new(&many, 2).unwrap_err();
        assert!(e.to_string().contains("at most 256"), "{e}");
        assert!(MrouteTable::new(&[], 2).unwrap().is_empty());
    }
}
