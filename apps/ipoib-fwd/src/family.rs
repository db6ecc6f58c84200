//! What differs between IPv4 and IPv6 routes: the address family.
//!
//! Routes ([`IpRoute`](crate::IpRoute)), next hops and multicast routes
//! ([`IpMRoute`](crate::IpMRoute)) are written once, generic over a [`Family`]: the
//! address as bytes (`[u8; 4]`, `[u8; 16]`), its integer form for masking, how it is
//! parsed, the words of the parser's messages and the family's own rules (IPv4's
//! `default` route, IPv6's unicast gateways, each family's multicast scopes). Generic
//! code is monomorphised: a lookup or a `contains` on one family is the same machine
//! code as if written for it alone, with no dynamic dispatch.

use std::fmt::Debug;
use std::hash::Hash;
use std::net::IpAddr;
use std::ops::BitAnd;

use crate::route::mask;
use crate::route6::mask6;
use crate::Error;

/// An IP address family, implemented by its address type (`[u8; 4]`, `[u8; 16]`).
pub trait Family: Copy + Eq + Hash + Debug + Into<IpAddr> + Send + Sync + 'static {
    /// The address as a host-order integer, for masking.
    type Bits: Copy + Eq + BitAnd<Output = Self::Bits>;
    /// The longest prefix (32, 128).
    const LEN_MAX: u8;
    /// The route written `default`, if the family has that word.
    const DEFAULT: Option<Self>;
    /// Parser message: the prefix is not an address of this family.
    const NOT_PREFIX: &'static str;
    /// Parser message: the prefix length is out of range.
    const BAD_LEN: &'static str;
    /// Parser message: the gateway is not an address of this family.
    const NOT_VIA: &'static str;
    /// Parser message: the multicast group is not an address of this family.
    const NOT_GROUP: &'static str;
    /// Multicast check message: the prefix covers too many groups.
    const TOO_MANY_GROUPS: &'static str;
    /// What the multicast routes of this family are called in a configuration error.
    const MROUTES_NOUN: &'static str;

    /// The host-order integer.
    fn to_bits(self) -> Self::Bits;
    /// The address of a host-order integer.
    fn from_bits(bits: Self::Bits) -> Self;
    /// The netmask of a prefix length (a length above [`Self::LEN_MAX`] is the full mask).
    fn mask(prefix_len: u8) -> Self::Bits;
    /// Parses the address's text form.
    fn parse(s: &str) -> Option<Self>;
    /// The error of a unicast route that could not be parsed.
    fn bad_route(route: String, why: &'static str) -> Error;
    /// Why `via` cannot be a route's gateway, if so.
    fn check_gateway(via: Self) -> Result<(), &'static str>;
    /// Why the multicast prefix `group/prefix_len` (host bits cleared) may not be
    /// routed, if so: outside the family's multicast range, or of a scope that never
    /// leaves its link.
    fn check_group(group: Self, prefix_len: u8) -> Result<(), &'static str>;

    /// The address with the host bits past `prefix_len` cleared.
    #[inline]
    fn network(self, prefix_len: u8) -> Self {
        Self::from_bits(self.to_bits() & Self::mask(prefix_len))
    }
}

impl Family for [u8; 4] {
    type Bits = u32;
    const LEN_MAX: u8 = 32;
    const DEFAULT: Option<[u8; 4]> = Some([0; 4]);
    const NOT_PREFIX: &'static str = "the prefix is not an IPv4 address";
    const BAD_LEN: &'static str = "the prefix length must be 0..=32";
    const NOT_VIA: &'static str = "via= is not an IPv4 address";
    const NOT_GROUP: &'static str = "the group is not an IPv4 address";
    const TOO_MANY_GROUPS: &'static str =
        "the prefix covers more groups than a forwarder subscribes to (at most 256: /24 or longer)";
    const MROUTES_NOUN: &'static str = "multicast routes";

    #[inline]
    fn to_bits(self) -> u32 {
        u32::from_be_bytes(self)
    }
    #[inline]
    fn from_bits(bits: u32) -> [u8; 4] {
        bits.to_be_bytes()
    }
    #[inline]
    fn mask(prefix_len: u8) -> u32 {
        mask(prefix_len)
    }
    fn parse(s: &str) -> Option<[u8; 4]> {
        s.parse::<std::net::Ipv4Addr>().ok().map(|a| a.octets())
    }
    fn bad_route(route: String, why: &'static str) -> Error {
        Error::BadRoute { route, why }
    }
    fn check_gateway(_via: [u8; 4]) -> Result<(), &'static str> {
        Ok(())
    }
    fn check_group(group: [u8; 4], prefix_len: u8) -> Result<(), &'static str> {
        let g = u32::from_be_bytes(group);
        if prefix_len < 4 || g >> 28 != 0xe {
            return Err("the prefix must lie within 224.0.0.0/4 (IPv4 multicast)");
        }
        // 224.0.0.0/24 is link-local (RFC 5771): never forwarded.
        let m = mask(prefix_len.min(24));
        if g & m == 0xe000_0000 & m {
            return Err("224.0.0.0/24 is link-local (RFC 5771) and never forwarded");
        }
        Ok(())
    }
}

impl Family for [u8; 16] {
    type Bits = u128;
    const LEN_MAX: u8 = 128;
    const DEFAULT: Option<[u8; 16]> = None;
    const NOT_PREFIX: &'static str = "the prefix is not an IPv6 address";
    const BAD_LEN: &'static str = "the prefix length must be 0..=128";
    const NOT_VIA: &'static str = "via= is not an IPv6 address";
    const NOT_GROUP: &'static str = "the group is not an IPv6 address";
    const TOO_MANY_GROUPS: &'static str = "the prefix covers more groups than a forwarder subscribes to (at most 256: /120 or longer)";
    const MROUTES_NOUN: &'static str = "IPv6 multicast routes";

    #[inline]
    fn to_bits(self) -> u128 {
        u128::from_be_bytes(self)
    }
    #[inline]
    fn from_bits(bits: u128) -> [u8; 16] {
        bits.to_be_bytes()
    }
    #[inline]
    fn mask(prefix_len: u8) -> u128 {
        mask6(prefix_len)
    }
    fn parse(s: &str) -> Option<[u8; 16]> {
        s.parse::<std::net::Ipv6Addr>().ok().map(|a| a.octets())
    }
    fn bad_route(route: String, why: &'static str) -> Error {
        Error::BadRoute6 { route, why }
    }
    fn check_gateway(via: [u8; 16]) -> Result<(), &'static str> {
        if via[0] == 0xff || via == [0; 16] {
            return Err("via= must be a unicast address");
        }
        Ok(())
    }
    fn check_group(group: [u8; 16], prefix_len: u8) -> Result<(), &'static str> {
        if prefix_len < 8 || group[0] != 0xff {
            return Err("the prefix must lie within ff00::/8 (IPv6 multicast)");
        }
        // Interface-local and link-local scopes (RFC 4291 section 2.7).
        if prefix_len < 16 || group[1] & 0x0f <= 2 {
            return Err(
                "interface-local and link-local groups (scope 1 and 2, e.g. ff02::/16) are never forwarded",
            );
        }
        Ok(())
    }
}

/// Parses a prefix length of family `A` (0..=`A::LEN_MAX`).
pub(crate) fn parse_len<A: Family>(s: &str) -> Option<u8> {
    s.parse::<u8>().ok().filter(|l| *l <= A::LEN_MAX)
}
