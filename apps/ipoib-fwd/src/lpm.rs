//! Longest-prefix match for IPv4, DIR-16-8-8 (DPDK's DIR-24-8 with a 16-bit first
//! level: 256 KiB instead of 64 MiB per table, one more read for prefixes longer than
//! /24).
//!
//! The first level has one entry per /16; an entry is a next hop or points at a group
//! of 256 entries for the next 8 bits, whose entries again are next hops or point at a
//! group for the last 8 bits. Lookups read at most three entries and never allocate.
//!
//! The table is built at once from its routes, immutable afterwards (share it between
//! lcores with an `Arc`): routes are inserted in ascending prefix length (stable, so of
//! two routes with the same prefix the later one wins) by writing each route's next hop
//! over the whole range it covers ("controlled prefix expansion"). Since a longer
//! prefix always comes later, it overwrites exactly the addresses for which it is the
//! longest match; and a group is only created by a prefix longer than its level, so a
//! range being written never holds a group pointer.

use crate::route::{NextHop, Route};
use crate::Error;

/// Routes one table holds at most (connected routes included).
pub const ROUTES_MAX: usize = 1 << 16;

/// An entry: 0 = no route; `EXT | g` = group `g`; otherwise next hop index + 1.
const EXT: u32 = 1 << 31;
const GROUP: usize = 256;

/// An IPv4 longest-prefix-match table (see the module docs).
#[derive(Clone)]
pub struct RouteTable {
    /// One entry per /16.
    tbl16: Box<[u32]>,
    /// Groups of 256 entries.
    tbl8: Vec<u32>,
    /// Next hops, by index (one per route, in insertion order).
    hops: Vec<NextHop>,
    /// The routes, as given.
    routes: Vec<Route>,
}

impl std::fmt::Debug for RouteTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteTable")
            .field("routes", &self.routes.len())
            .field("groups", &(self.tbl8.len() / GROUP))
            .finish()
    }
}

impl RouteTable {
    /// Builds the table. Of two routes with the same prefix and length the later wins.
    pub fn new(routes: &[Route]) -> Result<RouteTable, Error> {
        if routes.len() > ROUTES_MAX {
            return Err(Error::TooManyRoutes {
                routes: routes.len(),
                max: ROUTES_MAX,
            });
        }
        let mut t = RouteTable {
            tbl16: vec![0u32; 1 << 16].into_boxed_slice(),
            tbl8: Vec::new(),
            hops: Vec::with_capacity(routes.len()),
            routes: routes.to_vec(),
        };
        let mut order: Vec<usize> = (0..routes.len()).collect();
        order.sort_by_key(|&i| routes[i].prefix_len); // stable
        for i in order {
            let r = Route::new(
                routes[i].prefix,
                routes[i].prefix_len,
                routes[i].via,
                routes[i].iface,
            );
            t.hops.push(r.next_hop());
            let val = t.hops.len() as u32; // index + 1
            t.insert(u32::from_be_bytes(r.prefix), r.prefix_len, val);
        }
        Ok(t)
    }

    /// The group an entry points at, creating it (filled with the entry's next hop) if
    /// the entry is a next hop.
    fn group_of(&mut self, entry: u32) -> (usize, u32) {
        if entry & EXT != 0 {
            return ((entry & !EXT) as usize, entry);
        }
        let g = self.tbl8.len() / GROUP;
        self.tbl8.resize(self.tbl8.len() + GROUP, entry);
        (g, EXT | g as u32)
    }

    fn insert(&mut self, prefix: u32, len: u8, val: u32) {
        let hi = (prefix >> 16) as usize;
        if len <= 16 {
            let n = 1usize << (16 - len);
            self.tbl16[hi..hi + n].fill(val);
            return;
        }
        let (g, e) = self.group_of(self.tbl16[hi]);
        self.tbl16[hi] = e;
        let mid = ((prefix >> 8) & 0xff) as usize;
        if len <= 24 {
            let n = 1usize << (24 - len);
            let at = g * GROUP + mid;
            self.tbl8[at..at + n].fill(val);
            return;
        }
        let (g2, e2) = self.group_of(self.tbl8[g * GROUP + mid]);
        self.tbl8[g * GROUP + mid] = e2;
        let lo = (prefix & 0xff) as usize;
        let n = 1usize << (32 - len);
        let at = g2 * GROUP + lo;
        self.tbl8[at..at + n].fill(val);
    }

    /// The longest-prefix match for `dst`: at most three reads, no allocation.
    #[inline]
    pub fn lookup(&self, dst: [u8; 4]) -> Option<NextHop> {
        self.lookup_u32(u32::from_be_bytes(dst))
    }

    /// [`lookup`](Self::lookup) with the address as a host-order integer.
    #[inline(always)]
    pub fn lookup_u32(&self, dst: u32) -> Option<NextHop> {
        let mut e = self.tbl16[(dst >> 16) as usize];
        if e & EXT != 0 {
            e = self.tbl8[(e & !EXT) as usize * GROUP + ((dst >> 8) & 0xff) as usize];
            if e & EXT != 0 {
                e = self.tbl8[(e & !EXT) as usize * GROUP + (dst & 0xff) as usize];
            }
        }
        match e {
            0 => None,
            i => self.hops.get(i as usize - 1).copied(),
        }
    }

    /// The routes, as given.
    pub fn routes(&self) -> &[Route] {
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

    /// Bytes the lookup structure occupies.
    pub fn memory_bytes(&self) -> usize {
        (self.tbl16.len() + self.tbl8.len()) * 4 + self.hops.len() * std::mem::size_of::<NextHop>()
    }
}

/// The reference: a linear scan for the longest matching prefix (the later route wins
/// a tie). For tests and for checking a table.
pub fn lookup_linear(routes: &[Route], dst: [u8; 4]) -> Option<NextHop> {
    crate::route::lookup_linear_in(routes, dst)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(p: [u8; 4], l: u8, i: usize) -> Route {
        Route::new(p, l, None, i)
    }

    #[test]
    fn longest_prefix_wins_at_every_level() {
        let routes = [
            r([0, 0, 0, 0], 0, 0),
            r([10, 0, 0, 0], 8, 1),
            r([10, 2, 0, 0], 16, 2),
            r([10, 2, 3, 0], 24, 3),
            r([10, 2, 3, 128], 25, 4),
            r([10, 2, 3, 129], 32, 5),
            r([10, 2, 4, 0], 23, 6),
        ];
        let t = RouteTable::new(&routes).unwrap();
        let at = |a| t.lookup(a).map(|h| h.iface);
        assert_eq!(at([1, 1, 1, 1]), Some(0));
        assert_eq!(at([10, 9, 0, 1]), Some(1));
        assert_eq!(at([10, 2, 9, 1]), Some(2));
        assert_eq!(at([10, 2, 3, 1]), Some(3));
        assert_eq!(at([10, 2, 3, 130]), Some(4));
        assert_eq!(at([10, 2, 3, 129]), Some(5));
        assert_eq!(at([10, 2, 5, 7]), Some(6));
        assert_eq!(at([10, 2, 6, 7]), Some(2));
        let empty = RouteTable::new(&[]).unwrap();
        assert_eq!(empty.lookup([10, 2, 3, 4]), None);
    }
}
