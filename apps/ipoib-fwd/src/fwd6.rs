//! The IPv6 half of the forwarder's per-packet decision (RFC 8200; the forwarding rules
//! of RFC 4291 section 2.5.6 and RFC 8200 section 3): check the header, drop what must
//! not be forwarded (counted by reason, in the same counters as IPv4), look the
//! destination up (unicast: the IPv6 LPM table; multicast: the IPv6 multicast routes by
//! ingress interface and group), decrement the hop limit (IPv6 has no header checksum:
//! nothing else changes), and say where the very buffer goes.

use crate::fwd::{Forwarder, FwdStats, Verdict};
use crate::route6::is_link_local;

impl Forwarder {
    /// [`route_counted`](Forwarder::route_counted) for an IPv6 packet (`ip[0] >> 4 ==
    /// 6`, the packet already counted in `rx`), counting into the tally `c`.
    #[inline]
    pub(crate) fn route6(&self, from: usize, ip: &mut [u8], c: &mut FwdStats) -> Verdict {
        if ip.len() < 40 || 40 + usize::from(u16::from_be_bytes([ip[4], ip[5]])) > ip.len() {
            c.malformed += 1;
            return Verdict::Drop;
        }
        let mut src = [0u8; 16];
        src.copy_from_slice(&ip[8..24]);
        let mut dst = [0u8; 16];
        dst.copy_from_slice(&ip[24..40]);
        // Never forwarded: from a link-local, multicast or unspecified source; to a
        // link-local, unspecified or loopback destination.
        let unspecified_or_loopback = u128::from_be_bytes(dst) <= 1;
        if is_link_local(&src)
            || src[0] == 0xff
            || src == [0; 16]
            || is_link_local(&dst)
            || unspecified_or_loopback
        {
            c.not_unicast += 1;
            return Verdict::Drop;
        }
        if dst[0] == 0xff {
            return self.route_group6(from, dst, ip, c);
        }
        if self.local6[..self.n_local6].contains(&dst) {
            c.to_local += 1;
            return Verdict::Drop;
        }
        if ip[7] <= 1 {
            c.ttl_expired += 1;
            return Verdict::Drop;
        }
        let Some(hop) = self.table6.lookup(dst) else {
            c.no_route += 1;
            return Verdict::Drop;
        };
        ip[7] -= 1;
        Verdict::Forward6 {
            iface: hop.iface,
            next_hop: hop.next_hop(dst),
        }
    }

    /// An IPv6 multicast packet (header checked) to group `g` that came in on `from`.
    #[inline]
    fn route_group6(&self, from: usize, g: [u8; 16], ip: &mut [u8], c: &mut FwdStats) -> Verdict {
        if from >= 64 || self.mcast6_ifaces & (1 << from) == 0 {
            c.not_unicast += 1;
            return Verdict::Drop;
        }
        // Link-local groups are never forwarded; the table refuses routes for them.
        let Some(to) = self.mroutes6.lookup(from, g) else {
            c.mcast_no_route += 1;
            return Verdict::Drop;
        };
        debug_assert_ne!(to, from);
        if ip[7] <= 1 {
            c.mcast_ttl_expired += 1;
            return Verdict::Drop;
        }
        ip[7] -= 1;
        Verdict::ForwardGroup6 {
            iface: to,
            group: g,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::fwd::FwdCounters;
    use crate::lpm::RouteTable;
    use crate::mroute6::{MRoute6, MrouteTable6};
    use crate::route6::{parse_ipv6, Route6, RouteTable6};

    fn a(s: &str) -> [u8; 16] {
        parse_ipv6(s).unwrap()
    }

    /// An IPv6/UDP packet from `src` to `dst` with hop limit `hl` and 8 bytes of UDP.
    fn packet(src: &str, dst: &str, hl: u8) -> [u8; 48] {
        let mut p = [0u8; 48];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&8u16.to_be_bytes());
        p[6] = 17;
        p[7] = hl;
        p[8..24].copy_from_slice(&a(src));
        p[24..40].copy_from_slice(&a(dst));
        p[40..48].copy_from_slice(&[0x27, 0x10, 0x23, 0x28, 0, 8, 0x12, 0x34]);
        p
    }

    fn forwarder(c: &Arc<FwdCounters>) -> Forwarder {
        let routes = [
            Route6::connected(0, a("fd00:1::1"), 64),
            Route6::connected(1, a("fd00:2::1"), 64),
            "fd00:9::/48,via=fd00:2::9,if=1".parse().unwrap(),
        ];
        let t6 = Arc::new(RouteTable6::new(&routes).unwrap());
        let m6 = MrouteTable6::new(&[MRoute6::new(a("ff05::1:0"), 120, 0, 1)], 2).unwrap();
        Forwarder::new(Arc::new(RouteTable::new(&[]).unwrap()), &[], c.clone())
            .with_ipv6(t6, &[a("fd00:1::1"), a("fd00:2::1")])
            .with_mroutes6(Arc::new(m6))
    }

    #[test]
    fn unicast_verdicts_and_the_hop_limit() {
        let c = Arc::new(FwdCounters::default());
        let f = forwarder(&c);
        // Connected: to the destination itself; the hop limit goes down by one and
        // nothing else changes (no checksum in the IPv6 header; UDP's does not cover
        // the hop limit).
        let mut p = packet("fd00:1::2", "fd00:2::2", 64);
        let before = p;
        assert_eq!(
            f.route_from(0, &mut p),
            Verdict::Forward6 {
                iface: 1,
                next_hop: a("fd00:2::2")
            }
        );
        assert_eq!(p[7], 63);
        assert_eq!(p[..7], before[..7]);
        assert_eq!(p[8..], before[8..]);
        // Through the gateway; hop limit 2 leaves with 1.
        let mut p = packet("fd00:1::2", "fd00:9:0:5::1", 2);
        assert_eq!(
            f.route_from(0, &mut p),
            Verdict::Forward6 {
                iface: 1,
                next_hop: a("fd00:2::9")
            }
        );
        assert_eq!(p[7], 1);
        // Hop limit 1 and 0: dropped.
        for hl in [0, 1] {
            let mut p = packet("fd00:1::2", "fd00:2::2", hl);
            assert_eq!(f.route_from(0, &mut p), Verdict::Drop);
            assert_eq!(p[7], hl, "untouched");
        }
        // No route, to the forwarder itself, link-local either way, loopback.
        for (src, dst) in [
            ("fd00:1::2", "2001:db8::1"),
            ("fd00:1::2", "fd00:2::1"),
            ("fe80::2", "fd00:2::2"),
            ("fd00:1::2", "fe80::1"),
            ("fd00:1::2", "::1"),
            ("::", "fd00:2::2"),
        ] {
            assert_eq!(f.route_from(0, &mut packet(src, dst, 64)), Verdict::Drop);
        }
        // Truncated, and a payload length beyond the packet.
        assert_eq!(
            f.route_from(0, &mut packet("fd00:1::2", "fd00:2::2", 64)[..39]),
            Verdict::Drop
        );
        let mut p = packet("fd00:1::2", "fd00:2::2", 64);
        p[5] = 9;
        assert_eq!(f.route_from(0, &mut p), Verdict::Drop);
        let s = c.read();
        assert_eq!(s.rx, 12);
        assert_eq!(s.ttl_expired, 2);
        assert_eq!(s.no_route, 1);
        assert_eq!(s.to_local, 1);
        assert_eq!(s.not_unicast, 4);
        assert_eq!(s.malformed, 2);
        assert_eq!(s.dropped(), 10);
    }

    #[test]
    fn multicast_verdicts() {
        let c = Arc::new(FwdCounters::default());
        let f = forwarder(&c);
        let mut p = packet("fd00:1::2", "ff05::1:7", 8);
        assert_eq!(
            f.route_from(0, &mut p),
            Verdict::ForwardGroup6 {
                iface: 1,
                group: a("ff05::1:7")
            }
        );
        assert_eq!(p[7], 7);
        assert_eq!(
            f.route_from(0, &mut packet("fd00:1::2", "ff05::1:7", 1)),
            Verdict::Drop
        );
        assert_eq!(
            f.route_from(0, &mut packet("fd00:1::2", "ff05::2:7", 8)),
            Verdict::Drop
        );
        // Interface 1 has no IPv6 multicast routes.
        assert_eq!(
            f.route_from(1, &mut packet("fd00:2::2", "ff05::1:7", 8)),
            Verdict::Drop
        );
        let s = c.read();
        assert_eq!(
            (s.mcast_ttl_expired, s.mcast_no_route, s.not_unicast),
            (1, 1, 1)
        );
    }
}
