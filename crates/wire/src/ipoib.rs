//! IP over InfiniBand in datagram mode (RFC 4391): the 4-byte encapsulation header, the
//! 20-byte link-layer address, and the mapping of IP multicast groups to MGIDs.
//!
//! Every IPoIB datagram's payload starts with `be16 ethertype, u16 reserved = 0`
//! (RFC 4391 section 6). The hardware address (RFC 4391 section 9.1.1, kernel
//! `INFINIBAND_ALEN`) is `flags(8) QPN(24) GID(128)`; flags 0x80 says the port also
//! accepts connected mode (RFC 4755). Multicast addresses use QPN 0xFFFFFF and an MGID
//! `ff 1S SS SS PP PP ...` where S is the scope nibble, `40 1b` / `60 1b` the IPv4 / IPv6
//! signature and PPPP the P_Key with its full-membership bit set (the kernel driver sets
//! 0x8000 before building its broadcast address, so P_Keys 0x7fff and 0xffff give the
//! same groups).

use core::fmt;

use crate::{be16, put_be16, Error, Gid, PKey, Qpn, Result};

mod field {
    use crate::Field;

    pub const ETHERTYPE: Field = 0..2;
    pub const RESERVED: Field = 2..4;
}

/// Bytes of the IPoIB encapsulation header.
pub const HEADER_LEN: usize = field::RESERVED.end;

/// The EtherType in an IPoIB header, naming the protocol of the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EtherType(pub u16);

impl EtherType {
    /// IPv4.
    pub const IPV4: EtherType = EtherType(0x0800);
    /// ARP (RFC 4391 section 4 framing, see [`crate::arp`]).
    pub const ARP: EtherType = EtherType(0x0806);
    /// IPv6.
    pub const IPV6: EtherType = EtherType(0x86DD);
}

/// A read/write view of the IPoIB header at the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it; accessors may panic until
    /// [`check_len`](Self::check_len) succeeds.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer after [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// `Err(Truncated)` if the buffer is shorter than 4 bytes, `Err(Malformed)` if the
    /// reserved field is not 0 (RFC 4391 section 6: "MUST be zero"; no other use exists).
    /// After `Ok`, no accessor panics.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.reserved() != 0 {
            return Err(Error::Malformed);
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The EtherType of the payload.
    pub fn ethertype(&self) -> EtherType {
        EtherType(be16(self.buffer.as_ref(), field::ETHERTYPE.start))
    }

    /// The reserved field (0).
    pub fn reserved(&self) -> u16 {
        be16(self.buffer.as_ref(), field::RESERVED.start)
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The IP or ARP packet after the header.
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the EtherType.
    pub fn set_ethertype(&mut self, ethertype: EtherType) {
        put_be16(self.buffer.as_mut(), field::ETHERTYPE.start, ethertype.0);
    }

    /// Sets the reserved field.
    pub fn set_reserved(&mut self, v: u16) {
        put_be16(self.buffer.as_mut(), field::RESERVED.start, v);
    }

    /// The payload, mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// A parsed IPoIB header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// The EtherType of the payload.
    pub ethertype: EtherType,
}

impl Repr {
    /// Parses a checked header.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&T>) -> Result<Repr> {
        packet.check_len()?;
        Ok(Repr {
            ethertype: packet.ethertype(),
        })
    }

    /// Bytes `emit` writes.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header (reserved 0).
    ///
    /// # Panics
    /// If the buffer is shorter than [`HEADER_LEN`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_ethertype(self.ethertype);
        packet.set_reserved(0);
    }
}

/// A 20-byte IPoIB link-layer address: flags, QPN, GID (RFC 4391 section 9.1.1).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HwAddr([u8; HwAddr::LEN]);

impl HwAddr {
    /// Bytes of an IPoIB hardware address (kernel `INFINIBAND_ALEN`).
    pub const LEN: usize = 20;
    /// Flags bit: the port accepts IPoIB connected mode (RFC 4755 section 4.1).
    pub const FLAG_CONNECTED_MODE: u8 = 0x80;

    /// An address from its parts.
    pub const fn new(flags: u8, qpn: Qpn, gid: Gid) -> HwAddr {
        let q = qpn.get().to_be_bytes();
        let g = gid.0;
        HwAddr([
            flags, q[1], q[2], q[3], g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7], g[8], g[9],
            g[10], g[11], g[12], g[13], g[14], g[15],
        ])
    }

    /// An address from its wire bytes.
    pub const fn from_bytes(bytes: [u8; HwAddr::LEN]) -> HwAddr {
        HwAddr(bytes)
    }

    /// An address from a slice; `None` unless it is exactly 20 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Option<HwAddr> {
        Some(HwAddr(bytes.try_into().ok()?))
    }

    /// The wire bytes.
    pub const fn to_bytes(&self) -> [u8; HwAddr::LEN] {
        self.0
    }

    /// The wire bytes, borrowed.
    pub const fn as_bytes(&self) -> &[u8; HwAddr::LEN] {
        &self.0
    }

    /// The flags byte.
    pub const fn flags(&self) -> u8 {
        self.0[0]
    }

    /// Whether the connected-mode flag is set.
    pub const fn is_connected_mode_capable(&self) -> bool {
        self.flags() & Self::FLAG_CONNECTED_MODE != 0
    }

    /// The QPN.
    pub const fn qpn(&self) -> Qpn {
        Qpn::from_bits(u32::from_be_bytes([0, self.0[1], self.0[2], self.0[3]]))
    }

    /// The GID (an MGID for a multicast address).
    pub const fn gid(&self) -> Gid {
        let b = &self.0;
        Gid([
            b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15], b[16],
            b[17], b[18], b[19],
        ])
    }

    /// Whether this is a multicast address (its GID is an MGID), as the kernel driver tests
    /// it (`hwaddr[4] == 0xff`).
    pub const fn is_multicast(&self) -> bool {
        self.0[4] == 0xFF
    }
}

impl fmt::Display for HwAddr {
    /// Colon-separated hex bytes, as `ip link` prints `link/infiniband` addresses.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for HwAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HwAddr({self})")
    }
}

/// The 4-bit scope of a multicast GID (IBA 4.1.1, the IPv6 scopes of RFC 4291).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct McastScope(u8);

impl McastScope {
    /// Link-local (2): the IPoIB default.
    pub const LINK_LOCAL: McastScope = McastScope(0x2);
    /// Site-local (5).
    pub const SITE_LOCAL: McastScope = McastScope(0x5);
    /// Organization-local (8).
    pub const ORGANIZATION_LOCAL: McastScope = McastScope(0x8);
    /// Global (0xE).
    pub const GLOBAL: McastScope = McastScope(0xE);

    /// A scope from its nibble; `None` above 0xF.
    pub const fn new(nibble: u8) -> Option<McastScope> {
        if nibble > 0xF {
            None
        } else {
            Some(McastScope(nibble))
        }
    }

    /// The nibble.
    pub const fn get(self) -> u8 {
        self.0
    }
}

impl Default for McastScope {
    fn default() -> Self {
        McastScope::LINK_LOCAL
    }
}

/// MGID byte 1 high nibble: flags 0x1 (transient), as RFC 4391 and the kernel build them.
const MGID_FLAGS_TRANSIENT: u8 = 0x10;
const SIGNATURE_IPV4: [u8; 2] = [0x40, 0x1B];
const SIGNATURE_IPV6: [u8; 2] = [0x60, 0x1B];

/// The first 6 bytes of an IPoIB MGID: `ff 1S <signature> PP PP`.
const fn mgid_prefix(signature: [u8; 2], pkey: PKey, scope: McastScope) -> [u8; 6] {
    let p = pkey.full().0.to_be_bytes();
    [
        0xFF,
        MGID_FLAGS_TRANSIENT | scope.0,
        signature[0],
        signature[1],
        p[0],
        p[1],
    ]
}

/// The MGID of the IPoIB broadcast group of a partition:
/// `ff12:401b:PPPP:0000:0000:0000:ffff:ffff` (RFC 4391 section 4), full-membership bit set.
pub const fn broadcast_mgid(pkey: PKey) -> Gid {
    let h = mgid_prefix(SIGNATURE_IPV4, pkey, McastScope::LINK_LOCAL);
    Gid([
        h[0], h[1], h[2], h[3], h[4], h[5], 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
    ])
}

/// The broadcast hardware address of a partition: flags 0, QPN 0xFFFFFF, the broadcast MGID
/// (what the kernel driver puts in `dev->broadcast`).
pub const fn broadcast_hwaddr(pkey: PKey) -> HwAddr {
    HwAddr::new(0, Qpn::MULTICAST, broadcast_mgid(pkey))
}

/// The hardware address of a multicast group: flags 0, QPN 0xFFFFFF, the MGID.
pub const fn mcast_hwaddr(mgid: Gid) -> HwAddr {
    HwAddr::new(0, Qpn::MULTICAST, mgid)
}

/// The MGID of an IPv4 multicast group: `ff 1S 40 1b PP PP 00 00 00 00 00 00` then the low
/// 28 bits of the group (kernel `include/net/ip.h` `ip_ib_mc_map`; RFC 4391 section 4).
pub const fn ipv4_mcast_mgid(group: [u8; 4], pkey: PKey, scope: McastScope) -> Gid {
    let h = mgid_prefix(SIGNATURE_IPV4, pkey, scope);
    Gid([
        h[0],
        h[1],
        h[2],
        h[3],
        h[4],
        h[5],
        0,
        0,
        0,
        0,
        0,
        0,
        group[0] & 0x0F,
        group[1],
        group[2],
        group[3],
    ])
}

/// The MGID of an IPv6 multicast group: `ff 1S 60 1b PP PP` then bytes 6..16 of the group
/// (kernel `include/net/ipv6.h` `ipv6_ib_mc_map`; RFC 4391 section 4).
pub const fn ipv6_mcast_mgid(group: [u8; 16], pkey: PKey, scope: McastScope) -> Gid {
    let h = mgid_prefix(SIGNATURE_IPV6, pkey, scope);
    let g = group;
    Gid([
        h[0], h[1], h[2], h[3], h[4], h[5], g[6], g[7], g[8], g[9], g[10], g[11], g[12], g[13],
        g[14], g[15],
    ])
}

const fn has_signature(mgid: &Gid, signature: [u8; 2]) -> bool {
    let b = &mgid.0;
    b[0] == 0xFF
        && b[1] & 0xF0 == MGID_FLAGS_TRANSIENT
        && b[2] == signature[0]
        && b[3] == signature[1]
}

/// Whether `mgid` is an IPoIB IPv4 MGID (a mapped IPv4 group or the broadcast group).
pub const fn is_ipv4_mgid(mgid: &Gid) -> bool {
    has_signature(mgid, SIGNATURE_IPV4)
}

/// Whether `mgid` is an IPoIB IPv6 MGID.
pub const fn is_ipv6_mgid(mgid: &Gid) -> bool {
    has_signature(mgid, SIGNATURE_IPV6)
}

/// Whether `mgid` is an IPoIB broadcast MGID (any scope, any P_Key).
pub const fn is_broadcast_mgid(mgid: &Gid) -> bool {
    let b = &mgid.0;
    is_ipv4_mgid(mgid)
        && b[6] == 0
        && b[7] == 0
        && b[8] == 0
        && b[9] == 0
        && b[10] == 0
        && b[11] == 0
        && b[12] == 0xFF
        && b[13] == 0xFF
        && b[14] == 0xFF
        && b[15] == 0xFF
}

/// The P_Key inside an IPoIB MGID; `None` for any other GID.
pub const fn mgid_pkey(mgid: &Gid) -> Option<PKey> {
    if is_ipv4_mgid(mgid) || is_ipv6_mgid(mgid) {
        Some(PKey(u16::from_be_bytes([mgid.0[4], mgid.0[5]])))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use proptest::prelude::*;
    use std::string::ToString;

    // An IPoIB-encapsulated IPv4 packet starts `08 00 00 00` (RFC 4391 section 6: 2-octet
    // type field from the IEEE EtherType registry, then 2 reserved octets of zero).
    const IPV4_HDR: [u8; 8] = [0x08, 0x00, 0x00, 0x00, 0x45, 0x00, 0x00, 0x54];
    const ARP_HDR: [u8; 4] = [0x08, 0x06, 0x00, 0x00];
    const IPV6_HDR: [u8; 4] = [0x86, 0xdd, 0x00, 0x00];

    #[test]
    fn header_deconstruct_construct() {
        let p = Packet::new_checked(&IPV4_HDR[..]).unwrap();
        assert_eq!(p.ethertype(), EtherType::IPV4);
        assert_eq!(p.reserved(), 0);
        assert_eq!(p.payload(), &[0x45, 0x00, 0x00, 0x54]);
        for (bytes, et) in [(ARP_HDR, EtherType::ARP), (IPV6_HDR, EtherType::IPV6)] {
            let r = Repr::parse(&Packet::new_checked(&bytes[..]).unwrap()).unwrap();
            assert_eq!(r, Repr { ethertype: et });
            let mut b = [0xFFu8; 4];
            r.emit(&mut Packet::new_unchecked(&mut b[..]));
            assert_eq!(b, bytes);
            assert_eq!(r.buffer_len(), HEADER_LEN);
        }
        let mut b = [0u8; 4];
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_ethertype(EtherType::ARP);
        p.set_reserved(0);
        assert_eq!(b, ARP_HDR);
    }

    #[test]
    fn header_rejects_bad_input() {
        assert_eq!(
            Packet::new_checked(&IPV4_HDR[..3]).err(),
            Some(Error::Truncated)
        );
        let b = [0x08, 0x00, 0x00, 0x01];
        assert_eq!(Packet::new_checked(&b[..]).err(), Some(Error::Malformed));
        assert_eq!(
            Repr::parse(&Packet::new_unchecked(&b[..])),
            Err(Error::Malformed)
        );
    }

    // `ip link show ib0` on a default-partition IPoIB interface prints
    // `brd 00:ff:ff:ff:ff:12:40:1b:ff:ff:00:00:00:00:00:00:ff:ff:ff:ff` (the kernel's
    // ipv4_bcast_addr in drivers/infiniband/ulp/ipoib/ipoib_main.c with the P_Key filled in).
    const BRD_FFFF: [u8; 20] = [
        0x00, 0xff, 0xff, 0xff, 0xff, 0x12, 0x40, 0x1b, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0xff, 0xff, 0xff, 0xff,
    ];

    #[test]
    fn broadcast_addresses() {
        let hw = broadcast_hwaddr(PKey(0xFFFF));
        assert_eq!(hw.to_bytes(), BRD_FFFF);
        assert_eq!(
            hw.to_string(),
            "00:ff:ff:ff:ff:12:40:1b:ff:ff:00:00:00:00:00:00:ff:ff:ff:ff"
        );
        assert_eq!(hw.qpn(), Qpn::MULTICAST);
        assert_eq!(hw.flags(), 0);
        assert!(hw.is_multicast());
        // ff12:401b:ffff::ffff:ffff for both membership forms of the default partition.
        let expect = Gid([
            0xff, 0x12, 0x40, 0x1b, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff,
        ]);
        assert_eq!(broadcast_mgid(PKey(0xFFFF)), expect);
        assert_eq!(broadcast_mgid(PKey(0x7FFF)), expect);
        // Partition 1: ff12:401b:8001::ffff:ffff for P_Key 0x8001 and 0x0001.
        let expect = Gid([
            0xff, 0x12, 0x40, 0x1b, 0x80, 0x01, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff,
        ]);
        assert_eq!(broadcast_mgid(PKey(0x8001)), expect);
        assert_eq!(broadcast_mgid(PKey(0x0001)), expect);
        assert_eq!(expect.to_string(), "ff12:401b:8001:0:0:0:ffff:ffff");
        assert!(is_broadcast_mgid(&expect));
        assert!(is_ipv4_mgid(&expect));
        assert_eq!(mgid_pkey(&expect), Some(PKey(0x8001)));
    }

    #[test]
    fn ipv4_group_mgids() {
        // Derived by hand from ip_ib_mc_map (include/net/ip.h): buf[4..] = ff, 10|scope,
        // 40, 1b, broadcast[8], broadcast[9], 0 x 6, addr >> 24 & 0x0f, addr >> 16,
        // addr >> 8, addr.
        // 224.0.0.1 = 0xE0000001 -> low 28 bits 0x0000001.
        assert_eq!(
            ipv4_mcast_mgid([224, 0, 0, 1], PKey(0xFFFF), McastScope::default()).0,
            [0xff, 0x12, 0x40, 0x1b, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0x00, 0x00, 0x00, 0x01]
        );
        // 239.255.255.250 = 0xEFFFFFFA -> 0x0FFFFFFA.
        let g = ipv4_mcast_mgid([239, 255, 255, 250], PKey(0xFFFF), McastScope::LINK_LOCAL);
        assert_eq!(
            g.0,
            [0xff, 0x12, 0x40, 0x1b, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0x0f, 0xff, 0xff, 0xfa]
        );
        assert!(is_ipv4_mgid(&g) && !is_ipv6_mgid(&g) && !is_broadcast_mgid(&g));
        assert_eq!(mgid_pkey(&g), Some(PKey(0xFFFF)));
        // Site-local scope and a limited-member P_Key.
        let g = ipv4_mcast_mgid([224, 0, 0, 251], PKey(0x0002), McastScope::SITE_LOCAL);
        assert_eq!(g.0[..6], [0xff, 0x15, 0x40, 0x1b, 0x80, 0x02]);
        assert_eq!(g.mcast_scope(), 5);
    }

    #[test]
    fn ipv6_group_mgids() {
        // ipv6_ib_mc_map (include/net/ipv6.h): ff, 10|scope, 60, 1b, P_Key, then
        // memcpy(buf + 10, addr + 6, 10). ff02::1 -> ff12:601b:ffff::1.
        let mut all_nodes = [0u8; 16];
        all_nodes[0] = 0xff;
        all_nodes[1] = 0x02;
        all_nodes[15] = 0x01;
        let g = ipv6_mcast_mgid(all_nodes, PKey(0xFFFF), McastScope::LINK_LOCAL);
        assert_eq!(
            g.0,
            [0xff, 0x12, 0x60, 0x1b, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01]
        );
        assert!(is_ipv6_mgid(&g) && !is_ipv4_mgid(&g));
        // Solicited-node ff02::1:ff00:1234 keeps bytes 6..16.
        let mut sn = all_nodes;
        sn[11] = 0x01;
        sn[12] = 0xff;
        sn[14] = 0x12;
        sn[15] = 0x34;
        let g = ipv6_mcast_mgid(sn, PKey(0x7FFF), McastScope::default());
        assert_eq!(g.to_string(), "ff12:601b:ffff:0:0:1:ff00:1234");
        // A port GID is no IPoIB MGID.
        let port = Gid::new(Gid::DEFAULT_SUBNET_PREFIX, 0x0002_c903_0000_0001);
        assert_eq!(mgid_pkey(&port), None);
        assert!(!is_broadcast_mgid(&port));
    }

    #[test]
    fn hwaddr_parts() {
        // A unicast address in the RFC 4391 section 9.1.1 layout, as `ip link` prints it:
        // 80:00:02:08:fe:80:00:00:00:00:00:00:00:02:c9:03:00:00:00:01 (flags 0x80 per
        // RFC 4755 section 4.1, QPN 0x000208, GID fe80::2:c903:0:1).
        let bytes = [
            0x80, 0x00, 0x02, 0x08, 0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x00, 0x02, 0xc9, 0x03, 0x00,
            0x00, 0x00, 0x01,
        ];
        let hw = HwAddr::from_bytes(bytes);
        assert_eq!(hw.flags(), HwAddr::FLAG_CONNECTED_MODE);
        assert!(hw.is_connected_mode_capable());
        assert_eq!(hw.qpn(), Qpn::new(0x208).unwrap());
        assert_eq!(
            hw.gid(),
            Gid::new(Gid::DEFAULT_SUBNET_PREFIX, 0x0002_c903_0000_0001)
        );
        assert!(!hw.is_multicast());
        assert_eq!(HwAddr::new(0x80, hw.qpn(), hw.gid()), hw);
        assert_eq!(HwAddr::from_slice(&bytes), Some(hw));
        assert_eq!(HwAddr::from_slice(&bytes[..19]), None);
        assert_eq!(*hw.as_bytes(), bytes);
        let g = ipv4_mcast_mgid([224, 0, 0, 1], PKey(0xFFFF), McastScope::LINK_LOCAL);
        assert_eq!(mcast_hwaddr(g).gid(), g);
        assert_eq!(McastScope::new(0x10), None);
        assert_eq!(McastScope::new(0xE), Some(McastScope::GLOBAL));
    }

    proptest! {
        #[test]
        fn header_round_trip(et in any::<u16>()) {
            let r = Repr { ethertype: EtherType(et) };
            let mut b = [0u8; HEADER_LEN];
            r.emit(&mut Packet::new_unchecked(&mut b[..]));
            prop_assert_eq!(Repr::parse(&Packet::new_checked(&b[..]).unwrap()), Ok(r));
        }

        #[test]
        fn header_parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..8)) {
            if let Ok(p) = Packet::new_checked(&data[..]) {
                let _ = p.payload();
                prop_assert!(Repr::parse(&p).is_ok());
            }
        }

        #[test]
        fn hwaddr_round_trip(flags in any::<u8>(), qpn in 0u32..=Qpn::MAX, gid in any::<[u8; 16]>()) {
            let hw = HwAddr::new(flags, Qpn::from_bits(qpn), Gid(gid));
            prop_assert_eq!(HwAddr::from_bytes(hw.to_bytes()), hw);
            prop_assert_eq!((hw.flags(), hw.qpn().get(), hw.gid()), (flags, qpn, Gid(gid)));
        }

        #[test]
        fn mgid_maps_keep_pkey_and_scope(
            v4 in any::<[u8; 4]>(), v6 in any::<[u8; 16]>(), pkey in any::<u16>(), s in 0u8..16,
        ) {
            let scope = McastScope::new(s).unwrap();
            let g4 = ipv4_mcast_mgid(v4, PKey(pkey), scope);
            let g6 = ipv6_mcast_mgid(v6, PKey(pkey), scope);
            for g in [g4, g6] {
                prop_assert_eq!(mgid_pkey(&g), Some(PKey(pkey | 0x8000)));
                prop_assert_eq!(g.mcast_scope(), s);
                prop_assert!(g.is_multicast());
            }
            prop_assert!(is_ipv4_mgid(&g4) && !is_broadcast_mgid(&g4));
            prop_assert!(is_ipv6_mgid(&g6));
        }
    }
}
