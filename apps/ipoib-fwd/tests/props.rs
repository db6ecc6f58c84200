//! Property tests: the LPM table against a linear scan, and RFC 1624's incremental
//! checksum update against a full recomputation.

use ipoib_fwd::{checksum_adjust, decrement_ttl, ipv4_checksum, lookup_linear, Route, RouteTable};
use proptest::prelude::*;

/// Routes clustered in a few /8s so that prefixes nest and overlap (all three levels
/// of the table are exercised), with every length 0..=32.
fn route() -> impl Strategy<Value = Route> {
    (
        prop_oneof![Just(10u8), Just(172), Just(192), any::<u8>()],
        prop_oneof![Just(0u8), Just(1), any::<u8>()],
        prop_oneof![Just(0u8), Just(3), any::<u8>()],
        any::<u8>(),
        0u8..=32,
        0usize..8,
        proptest::option::of(any::<[u8; 4]>()),
    )
        .prop_map(|(a, b, c, d, len, iface, via)| Route::new([a, b, c, d], len, via, iface))
}

/// Addresses near the routes' prefixes, and anywhere.
fn addr(routes: &[Route]) -> impl Strategy<Value = [u8; 4]> {
    let near: Vec<[u8; 4]> = routes.iter().map(|r| r.prefix).collect();
    let near = if near.is_empty() {
        vec![[10, 0, 0, 0]]
    } else {
        near
    };
    prop_oneof![
        (proptest::sample::select(near), any::<u32>(), 0u32..=32).prop_map(|(p, noise, bits)| {
            let m = if bits == 0 {
                0
            } else {
                u32::MAX >> (32 - bits)
            };
            (u32::from_be_bytes(p) ^ (noise & m)).to_be_bytes()
        }),
        any::<[u8; 4]>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn lpm_matches_a_linear_scan(
        (routes, addrs) in proptest::collection::vec(route(), 0..64)
            .prop_flat_map(|rs| {
                let a = proptest::collection::vec(addr(&rs), 64);
                (Just(rs), a)
            })
    ) {
        let t = RouteTable::new(&routes).unwrap();
        for a in addrs {
            prop_assert_eq!(t.lookup(a), lookup_linear(&routes, a), "dst {:?}", a);
        }
        // Every route's own first and last address.
        for r in &routes {
            let p = u32::from_be_bytes(r.prefix);
            let last = p | !ipoib_fwd::mask(r.prefix_len);
            for a in [p, last] {
                let a = a.to_be_bytes();
                prop_assert_eq!(t.lookup(a), lookup_linear(&routes, a));
            }
        }
    }

    #[test]
    fn rfc1624_update_equals_full_recomputation(
        mut h in any::<[u8; 20]>(),
        ttl in 1u8..=255,
        old in any::<u16>(),
        new in any::<u16>(),
    ) {
        h[0] = 0x45;
        h[8] = ttl;
        let sum = ipv4_checksum(&h);
        h[10..12].copy_from_slice(&sum.to_be_bytes());
        decrement_ttl(&mut h);
        prop_assert_eq!(h[8], ttl - 1);
        prop_assert_eq!(u16::from_be_bytes([h[10], h[11]]), ipv4_checksum(&h));
        // Any one word, anywhere in the header (the checksum word excluded).
        let mut g = h;
        g[0] = (old >> 8) as u8 | 0x40;
        g[1] = old as u8;
        let hc = ipv4_checksum(&g);
        g[10..12].copy_from_slice(&hc.to_be_bytes());
        let m = u16::from_be_bytes([g[0], g[1]]);
        let m2 = (new & 0x0fff) | 0x4000;
        g[0..2].copy_from_slice(&m2.to_be_bytes());
        prop_assert_eq!(checksum_adjust(hc, m, m2), ipv4_checksum(&g));
    }
}
