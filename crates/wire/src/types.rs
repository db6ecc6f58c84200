//! InfiniBand identifiers as newtypes, so a LID is never passed where a QPN belongs.

use core::fmt;

/// A 16-bit local identifier assigned by the subnet manager.
///
/// `0` is reserved, `0x0001..=0xBFFF` are unicast, `0xC000..=0xFFFE` multicast and
/// `0xFFFF` the permissive LID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lid(pub u16);

impl Lid {
    /// The first multicast LID; OpenSM hands out MLIDs upwards from here.
    pub const MULTICAST_BASE: Lid = Lid(0xC000);
    /// The last multicast LID (0xFFFF is the permissive LID).
    pub const MULTICAST_LAST: Lid = Lid(0xFFFE);
    /// The permissive LID.
    pub const PERMISSIVE: Lid = Lid(0xFFFF);

    /// True for `0xC000..=0xFFFE`.
    pub const fn is_multicast(self) -> bool {
        self.0 >= Self::MULTICAST_BASE.0 && self.0 <= Self::MULTICAST_LAST.0
    }

    /// True for `0x0001..=0xBFFF`.
    pub const fn is_unicast(self) -> bool {
        self.0 >= 1 && self.0 < Self::MULTICAST_BASE.0
    }
}

/// A 24-bit queue pair number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Qpn(u32);

impl Qpn {
    /// QP0, the subnet management QP.
    pub const SMI: Qpn = Qpn(0);
    /// QP1, the general services interface (where the SA listens).
    pub const GSI: Qpn = Qpn(1);
    /// The multicast QPN: a UD send to a multicast LID uses it as destination QP.
    pub const MULTICAST: Qpn = Qpn(0x00FF_FFFF);
    /// The largest representable QPN.
    pub const MAX: u32 = 0x00FF_FFFF;

    /// A QPN from the low 24 bits of `v`; `None` if any higher bit is set.
    pub const fn new(v: u32) -> Option<Qpn> {
        if v > Self::MAX {
            None
        } else {
            Some(Qpn(v))
        }
    }

    /// A QPN from the low 24 bits of `v`, ignoring the rest (as a header field is read).
    pub const fn from_bits(v: u32) -> Qpn {
        Qpn(v & Self::MAX)
    }

    /// The 24-bit value.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Qpn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:06x}", self.0)
    }
}

/// A 16-bit partition key. Bit 15 is the membership bit (1 = full member).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PKey(pub u16);

impl PKey {
    /// The default partition, full membership.
    pub const DEFAULT: PKey = PKey(0xFFFF);
    /// The invalid P_Key (no partition).
    pub const INVALID: PKey = PKey(0x0000);
    /// The full-membership bit.
    pub const FULL_MEMBER: u16 = 0x8000;

    /// The partition number without the membership bit.
    pub const fn base(self) -> u16 {
        self.0 & 0x7FFF
    }

    /// True if the full-membership bit is set.
    pub const fn is_full_member(self) -> bool {
        self.0 & Self::FULL_MEMBER != 0
    }

    /// The same partition with the full-membership bit set.
    pub const fn full(self) -> PKey {
        PKey(self.0 | Self::FULL_MEMBER)
    }

    /// Whether two P_Keys let their ports talk (IBA 10.9.3): same partition number, and
    /// not both limited members. The invalid P_Key matches nothing.
    pub const fn matches(self, other: PKey) -> bool {
        self.base() != 0
            && self.base() == other.base()
            && (self.is_full_member() || other.is_full_member())
    }
}

impl fmt::Display for PKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:04x}", self.0)
    }
}

/// A 32-bit queue key carried in the DETH of every UD packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct QKey(pub u32);

impl QKey {
    /// The Q_Key of IPoIB's broadcast group as OpenSM creates it.
    pub const IPOIB_DEFAULT: QKey = QKey(0x0000_0B1B);
    /// The well-known Q_Key of QP1 (GSI).
    pub const GSI: QKey = QKey(0x8001_0000);
    /// Q_Keys with the high bit set are controlled: only privileged QPs may send them.
    pub const fn is_controlled(self) -> bool {
        self.0 & 0x8000_0000 != 0
    }
}

/// A 128-bit global identifier: 64-bit subnet prefix then 64-bit port GUID (or an MGID).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Gid(pub [u8; 16]);

impl Gid {
    /// The default subnet prefix fe80::/64.
    pub const DEFAULT_SUBNET_PREFIX: u64 = 0xFE80_0000_0000_0000;

    /// A GID from a subnet prefix and an interface identifier (port GUID).
    pub const fn new(subnet_prefix: u64, guid: u64) -> Gid {
        let p = subnet_prefix.to_be_bytes();
        let g = guid.to_be_bytes();
        Gid([
            p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], g[0], g[1], g[2], g[3], g[4], g[5],
            g[6], g[7],
        ])
    }

    /// The first 64 bits.
    pub const fn subnet_prefix(&self) -> u64 {
        let b = &self.0;
        u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
    }

    /// The last 64 bits (the port GUID of a unicast GID).
    pub const fn guid(&self) -> u64 {
        let b = &self.0;
        u64::from_be_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]])
    }

    /// True for a multicast GID (first byte 0xFF).
    pub const fn is_multicast(&self) -> bool {
        self.0[0] == 0xFF
    }

    /// The scope nibble of a multicast GID (2 = link-local, 5 = site-local, 0xE = global).
    pub const fn mcast_scope(&self) -> u8 {
        self.0[1] & 0x0F
    }

    /// The bytes.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// A GID from 16 bytes of a slice; `None` if the slice is not 16 long.
    pub fn from_slice(b: &[u8]) -> Option<Gid> {
        let a: [u8; 16] = b.try_into().ok()?;
        Some(Gid(a))
    }
}

impl fmt::Display for Gid {
    /// Written like an IPv6 address without zero compression (`ff12:401b:ffff:0:0:0:ffff:ffff`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for i in 0..8 {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(
                f,
                "{:x}",
                u16::from_be_bytes([self.0[2 * i], self.0[2 * i + 1]])
            )?;
        }
        Ok(())
    }
}

impl fmt::Debug for Gid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Gid({self})")
    }
}

/// An InfiniBand path MTU as the 4-bit code of PortInfo, PathRecord and MCMemberRecord.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum IbMtu {
    /// 256 bytes.
    Mtu256 = 1,
    /// 512 bytes.
    Mtu512 = 2,
    /// 1024 bytes.
    Mtu1024 = 3,
    /// 2048 bytes.
    Mtu2048 = 4,
    /// 4096 bytes.
    Mtu4096 = 5,
}

impl IbMtu {
    /// The MTU for a 4-bit code; `None` for codes outside 1..=5.
    pub const fn from_code(code: u8) -> Option<IbMtu> {
        Some(match code {
            1 => IbMtu::Mtu256,
            2 => IbMtu::Mtu512,
            3 => IbMtu::Mtu1024,
            4 => IbMtu::Mtu2048,
            5 => IbMtu::Mtu4096,
            _ => return None,
        })
    }

    /// The 4-bit code.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The MTU in bytes (the largest payload of one packet, headers excluded).
    pub const fn bytes(self) -> usize {
        128 << (self as u8)
    }

    /// The IPoIB interface MTU over this IB MTU: the IB MTU less the 4-byte IPoIB header.
    pub const fn ipoib_mtu(self) -> usize {
        self.bytes() - crate::ipoib::HEADER_LEN
    }
}

/// A static rate as the 6-bit code of PathRecord and MCMemberRecord (IBA table 225).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rate(pub u8);

impl Rate {
    /// 2.5 Gb/s (1x SDR).
    pub const GBPS_2_5: Rate = Rate(2);
    /// 10 Gb/s (4x SDR); OpenSM's default for the broadcast group.
    pub const GBPS_10: Rate = Rate(3);
    /// 30 Gb/s.
    pub const GBPS_30: Rate = Rate(4);
    /// 5 Gb/s.
    pub const GBPS_5: Rate = Rate(5);
    /// 20 Gb/s.
    pub const GBPS_20: Rate = Rate(6);
    /// 40 Gb/s.
    pub const GBPS_40: Rate = Rate(7);
    /// 56 Gb/s (FDR 4x). Linux `enum ib_rate`: `IB_RATE_56_GBPS = 12` (11 is 14 Gb/s).
    pub const GBPS_56: Rate = Rate(12);
    /// 100 Gb/s (EDR 4x).
    pub const GBPS_100: Rate = Rate(16);
    /// 200 Gb/s (HDR 4x). Linux `enum ib_rate`: `IB_RATE_200_GBPS = 17` (20 is 50 Gb/s).
    pub const GBPS_200: Rate = Rate(17);

    /// The rate in Mb/s for the codes IBA defines (Linux `ib_rate_to_mbps`), `None` for
    /// the others.
    pub const fn mbps(self) -> Option<u32> {
        Some(match self.0 {
            2 => 2_500,
            3 => 10_000,
            4 => 30_000,
            5 => 5_000,
            6 => 20_000,
            7 => 40_000,
            8 => 60_000,
            9 => 80_000,
            10 => 120_000,
            11 => 14_000,
            12 => 56_000,
            13 => 112_000,
            14 => 168_000,
            15 => 25_000,
            16 => 100_000,
            17 => 200_000,
            18 => 300_000,
            19 => 28_000,
            20 => 50_000,
            21 => 400_000,
            22 => 600_000,
            _ => return None,
        })
    }

    /// Orders two rates by speed (codes are not in speed order: 5 Gb/s is code 5, 10 Gb/s
    /// code 3), like OpenSM's `ib_path_compare_rates`; unknown codes count as slowest.
    pub fn cmp_speed(self, other: Rate) -> core::cmp::Ordering {
        let a = self.mbps().unwrap_or(0);
        let b = other.mbps().unwrap_or(0);
        a.cmp(&b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mtu_codes_match_iba() {
        // IBA 14.2.5.6 PortInfo NeighborMTU encoding: 1=256 .. 5=4096.
        assert_eq!(IbMtu::from_code(4).unwrap().bytes(), 2048);
        assert_eq!(IbMtu::from_code(5).unwrap().bytes(), 4096);
        assert_eq!(IbMtu::Mtu2048.ipoib_mtu(), 2044);
        assert_eq!(IbMtu::Mtu4096.ipoib_mtu(), 4092);
        assert_eq!(IbMtu::from_code(0), None);
        assert_eq!(IbMtu::from_code(6), None);
    }

    #[test]
    fn pkey_matching_follows_membership_rules() {
        assert!(PKey(0xFFFF).matches(PKey(0x7FFF)));
        assert!(!PKey(0x7FFF).matches(PKey(0x7FFF)));
        assert!(!PKey(0x8001).matches(PKey(0x8002)));
        assert!(!PKey(0x8000).matches(PKey(0x8000)));
    }

    #[test]
    fn gid_display_and_parts() {
        let g = Gid::new(Gid::DEFAULT_SUBNET_PREFIX, 0x0002_c903_0000_1234);
        assert_eq!(g.subnet_prefix(), 0xfe80_0000_0000_0000);
        assert_eq!(g.guid(), 0x0002_c903_0000_1234);
        extern crate std;
        assert_eq!(std::format!("{g}"), "fe80:0:0:0:2:c903:0:1234");
        assert!(Qpn::new(0x0100_0000).is_none());
        assert_eq!(Qpn::from_bits(0xFFFF_FFFF), Qpn::MULTICAST);
    }
}
