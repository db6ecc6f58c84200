//! MCMemberRecord, the SA attribute of multicast joins and leaves
//! (AttributeID 0x0038; IBA 15.2.5.17 table 214, OpenSM `ib_member_rec_t`,
//! Linux `drivers/infiniband/core/sa_query.c` `mcmember_rec_table`).
//!
//! ```text
//!  0..16  MGID
//! 16..32  PortGID
//! 32..36  Q_Key
//! 36..38  MLID
//! 38      MTUSelector (2) | MTU (6)
//! 39      TClass
//! 40..42  P_Key
//! 42      RateSelector (2) | Rate (6)
//! 43      PacketLifeTimeSelector (2) | PacketLifeTime (6)
//! 44..48  SL (4) | FlowLabel (20) | HopLimit (8)
//! 48      Scope (4) | JoinState (4)
//! 49..52  ProxyJoin (1, bit 7 of byte 49) | reserved (23)
//! ```
//!
//! The record is 52 bytes; OpenSM's `ib_member_rec_t` pads it to 56, which is why its
//! AttributeOffset is 7 ([`RECORD_SIZE`]). Contract: once [`Packet::check_len`] has
//! succeeded no accessor panics.

use core::fmt;
use core::ops::{BitAnd, BitOr, BitOrAssign, Not};

use crate::sa::{ComponentMask, Selector};
use crate::{be16, be32, put_be16, put_be32, Error, Gid, Lid, PKey, QKey, Rate, Result};

/// Length of the record on the wire.
pub const RECORD_LEN: usize = 52;
/// Size of one record in an SA response (OpenSM `sizeof(ib_member_rec_t)`, 4 pad bytes).
pub const RECORD_SIZE: usize = 56;

mod field {
    use crate::Field;

    pub const MGID: Field = 0..16;
    pub const PORT_GID: Field = 16..32;
    pub const QKEY: Field = 32..36;
    pub const MLID: Field = 36..38;
    pub const MTU: usize = 38;
    pub const TCLASS: usize = 39;
    pub const PKEY: Field = 40..42;
    pub const RATE: usize = 42;
    pub const PACKET_LIFE_TIME: usize = 43;
    pub const SL_FLOW_HOP: Field = 44..48;
    pub const SCOPE_STATE: usize = 48;
    pub const PROXY_JOIN_RESERVED: Field = 49..52;
}

/// ComponentMask bits of MCMemberRecord (OpenSM `IB_MCR_COMPMASK_*`, IBA table 214).
pub mod mask {
    use crate::sa::ComponentMask;

    /// MGID.
    pub const MGID: ComponentMask = ComponentMask(1 << 0);
    /// PortGID.
    pub const PORT_GID: ComponentMask = ComponentMask(1 << 1);
    /// Q_Key.
    pub const QKEY: ComponentMask = ComponentMask(1 << 2);
    /// MLID.
    pub const MLID: ComponentMask = ComponentMask(1 << 3);
    /// MTUSelector.
    pub const MTU_SELECTOR: ComponentMask = ComponentMask(1 << 4);
    /// MTU.
    pub const MTU: ComponentMask = ComponentMask(1 << 5);
    /// TClass.
    pub const TCLASS: ComponentMask = ComponentMask(1 << 6);
    /// P_Key.
    pub const PKEY: ComponentMask = ComponentMask(1 << 7);
    /// RateSelector.
    pub const RATE_SELECTOR: ComponentMask = ComponentMask(1 << 8);
    /// Rate.
    pub const RATE: ComponentMask = ComponentMask(1 << 9);
    /// PacketLifeTimeSelector.
    pub const PACKET_LIFE_TIME_SELECTOR: ComponentMask = ComponentMask(1 << 10);
    /// PacketLifeTime.
    pub const PACKET_LIFE_TIME: ComponentMask = ComponentMask(1 << 11);
    /// SL.
    pub const SL: ComponentMask = ComponentMask(1 << 12);
    /// FlowLabel.
    pub const FLOW_LABEL: ComponentMask = ComponentMask(1 << 13);
    /// HopLimit.
    pub const HOP_LIMIT: ComponentMask = ComponentMask(1 << 14);
    /// Scope.
    pub const SCOPE: ComponentMask = ComponentMask(1 << 15);
    /// JoinState.
    pub const JOIN_STATE: ComponentMask = ComponentMask(1 << 16);
    /// ProxyJoin.
    pub const PROXY_JOIN: ComponentMask = ComponentMask(1 << 17);
}

/// The 4-bit JoinState: which kinds of membership a port holds (IBA 15.2.5.17).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct JoinState(u8);

impl JoinState {
    /// No membership.
    pub const NONE: JoinState = JoinState(0);
    /// FullMember: may create the group, sends and receives.
    pub const FULL_MEMBER: JoinState = JoinState(0x1);
    /// NonMember: receives, does not keep the group alive.
    pub const NON_MEMBER: JoinState = JoinState(0x2);
    /// SendOnlyNonMember: sends only.
    pub const SEND_ONLY_NON_MEMBER: JoinState = JoinState(0x4);
    /// SendOnlyFullMember: sends only, counts as a full member (IBA 1.3).
    pub const SEND_ONLY_FULL_MEMBER: JoinState = JoinState(0x8);
    /// All four bits.
    pub const ALL: JoinState = JoinState(0xF);

    /// The state from the low 4 bits of `v`, the rest ignored.
    pub const fn from_bits_truncate(v: u8) -> JoinState {
        JoinState(v & 0x0F)
    }

    /// The 4 bits.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// True if no bit is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// True if every bit of `other` is set here.
    pub const fn contains(self, other: JoinState) -> bool {
        self.0 & other.0 == other.0
    }

    /// True if any bit of `other` is set here.
    pub const fn intersects(self, other: JoinState) -> bool {
        self.0 & other.0 != 0
    }

    /// The bits set here and not in `other`.
    pub const fn difference(self, other: JoinState) -> JoinState {
        JoinState(self.0 & !other.0)
    }

    /// True for FullMember or NonMember: the port receives the group's traffic
    /// (send-only members do not).
    pub const fn receives(self) -> bool {
        self.0 & (Self::FULL_MEMBER.0 | Self::NON_MEMBER.0) != 0
    }
}

impl BitOr for JoinState {
    type Output = JoinState;
    fn bitor(self, rhs: JoinState) -> JoinState {
        JoinState(self.0 | rhs.0)
    }
}

impl BitOrAssign for JoinState {
    fn bitor_assign(&mut self, rhs: JoinState) {
        self.0 |= rhs.0;
    }
}

impl BitAnd for JoinState {
    type Output = JoinState;
    fn bitand(self, rhs: JoinState) -> JoinState {
        JoinState(self.0 & rhs.0)
    }
}

impl Not for JoinState {
    type Output = JoinState;
    fn not(self) -> JoinState {
        JoinState(!self.0 & 0x0F)
    }
}

impl fmt::Debug for JoinState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [&str; 4] = [
            "FullMember",
            "NonMember",
            "SendOnlyNonMember",
            "SendOnlyFullMember",
        ];
        write!(f, "JoinState(")?;
        let mut first = true;
        for (i, name) in NAMES.iter().enumerate() {
            if self.0 & (1 << i) != 0 {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        if first {
            f.write_str("0")?;
        }
        f.write_str(")")
    }
}

/// A read/write view of an MCMemberRecord.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking its length.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer, checking that it holds a whole record.
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// `Err(Truncated)` if the buffer is shorter than [`RECORD_LEN`].
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < RECORD_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn gid(&self, f: crate::Field) -> Gid {
        let mut g = [0u8; 16];
        g.copy_from_slice(&self.buffer.as_ref()[f]);
        Gid(g)
    }

    /// MGID.
    pub fn mgid(&self) -> Gid {
        self.gid(field::MGID)
    }

    /// PortGID.
    pub fn port_gid(&self) -> Gid {
        self.gid(field::PORT_GID)
    }

    /// Q_Key.
    pub fn qkey(&self) -> QKey {
        QKey(be32(self.buffer.as_ref(), field::QKEY.start))
    }

    /// MLID.
    pub fn mlid(&self) -> Lid {
        Lid(be16(self.buffer.as_ref(), field::MLID.start))
    }

    /// MTUSelector.
    pub fn mtu_selector(&self) -> Selector {
        Selector::from_byte(self.buffer.as_ref()[field::MTU])
    }

    /// MTU as its 6-bit code (1 = 256 .. 5 = 4096; see `IbMtu::from_code`).
    pub fn mtu(&self) -> u8 {
        self.buffer.as_ref()[field::MTU] & 0x3F
    }

    /// TClass.
    pub fn tclass(&self) -> u8 {
        self.buffer.as_ref()[field::TCLASS]
    }

    /// P_Key.
    pub fn pkey(&self) -> PKey {
        PKey(be16(self.buffer.as_ref(), field::PKEY.start))
    }

    /// RateSelector.
    pub fn rate_selector(&self) -> Selector {
        Selector::from_byte(self.buffer.as_ref()[field::RATE])
    }

    /// Rate (6-bit code).
    pub fn rate(&self) -> Rate {
        Rate(self.buffer.as_ref()[field::RATE] & 0x3F)
    }

    /// PacketLifeTimeSelector.
    pub fn packet_life_time_selector(&self) -> Selector {
        Selector::from_byte(self.buffer.as_ref()[field::PACKET_LIFE_TIME])
    }

    /// PacketLifeTime (6 bits).
    pub fn packet_life_time(&self) -> u8 {
        self.buffer.as_ref()[field::PACKET_LIFE_TIME] & 0x3F
    }

    fn sl_flow_hop(&self) -> u32 {
        be32(self.buffer.as_ref(), field::SL_FLOW_HOP.start)
    }

    /// SL (4 bits).
    pub fn sl(&self) -> u8 {
        (self.sl_flow_hop() >> 28) as u8
    }

    /// FlowLabel (20 bits).
    pub fn flow_label(&self) -> u32 {
        (self.sl_flow_hop() >> 8) & 0x000F_FFFF
    }

    /// HopLimit.
    pub fn hop_limit(&self) -> u8 {
        self.sl_flow_hop() as u8
    }

    /// Scope (4 bits; 2 = link-local).
    pub fn scope(&self) -> u8 {
        self.buffer.as_ref()[field::SCOPE_STATE] >> 4
    }

    /// JoinState.
    pub fn join_state(&self) -> JoinState {
        JoinState::from_bits_truncate(self.buffer.as_ref()[field::SCOPE_STATE])
    }

    /// ProxyJoin (the top bit of byte 49).
    pub fn proxy_join(&self) -> bool {
        self.buffer.as_ref()[field::PROXY_JOIN_RESERVED.start] & 0x80 != 0
    }

    /// The 23 reserved bits after ProxyJoin.
    pub fn reserved(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::PROXY_JOIN_RESERVED];
        u32::from_be_bytes([0, b[0] & 0x7F, b[1], b[2]])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets MGID.
    pub fn set_mgid(&mut self, v: &Gid) {
        self.buffer.as_mut()[field::MGID].copy_from_slice(v.as_bytes());
    }

    /// Sets PortGID.
    pub fn set_port_gid(&mut self, v: &Gid) {
        self.buffer.as_mut()[field::PORT_GID].copy_from_slice(v.as_bytes());
    }

    /// Sets Q_Key.
    pub fn set_qkey(&mut self, v: QKey) {
        put_be32(self.buffer.as_mut(), field::QKEY.start, v.0);
    }

    /// Sets MLID.
    pub fn set_mlid(&mut self, v: Lid) {
        put_be16(self.buffer.as_mut(), field::MLID.start, v.0);
    }

    /// Sets MTUSelector and MTU (6-bit code).
    pub fn set_mtu(&mut self, selector: Selector, code: u8) {
        self.buffer.as_mut()[field::MTU] = selector.pack(code);
    }

    /// Sets TClass.
    pub fn set_tclass(&mut self, v: u8) {
        self.buffer.as_mut()[field::TCLASS] = v;
    }

    /// Sets P_Key.
    pub fn set_pkey(&mut self, v: PKey) {
        put_be16(self.buffer.as_mut(), field::PKEY.start, v.0);
    }

    /// Sets RateSelector and Rate.
    pub fn set_rate(&mut self, selector: Selector, rate: Rate) {
        self.buffer.as_mut()[field::RATE] = selector.pack(rate.0);
    }

    /// Sets PacketLifeTimeSelector and PacketLifeTime.
    pub fn set_packet_life_time(&mut self, selector: Selector, v: u8) {
        self.buffer.as_mut()[field::PACKET_LIFE_TIME] = selector.pack(v);
    }

    /// Sets SL (low 4 bits), FlowLabel (low 20 bits) and HopLimit.
    pub fn set_sl_flow_hop(&mut self, sl: u8, flow_label: u32, hop_limit: u8) {
        let v =
            (u32::from(sl & 0x0F) << 28) | ((flow_label & 0x000F_FFFF) << 8) | u32::from(hop_limit);
        put_be32(self.buffer.as_mut(), field::SL_FLOW_HOP.start, v);
    }

    /// Sets Scope (low 4 bits) and JoinState.
    pub fn set_scope_join_state(&mut self, scope: u8, join_state: JoinState) {
        self.buffer.as_mut()[field::SCOPE_STATE] = (scope << 4) | join_state.bits();
    }

    /// Sets ProxyJoin and clears the reserved bits.
    pub fn set_proxy_join(&mut self, v: bool) {
        let b = &mut self.buffer.as_mut()[field::PROXY_JOIN_RESERVED];
        b.fill(0);
        b[0] = if v { 0x80 } else { 0 };
    }
}

/// A parsed MCMemberRecord. Values are taken as the wire carries them; `emit` masks
/// each to its field width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// MGID.
    pub mgid: Gid,
    /// PortGID.
    pub port_gid: Gid,
    /// Q_Key.
    pub qkey: QKey,
    /// MLID.
    pub mlid: Lid,
    /// MTUSelector.
    pub mtu_selector: Selector,
    /// MTU, 6-bit code.
    pub mtu: u8,
    /// TClass.
    pub tclass: u8,
    /// P_Key.
    pub pkey: PKey,
    /// RateSelector.
    pub rate_selector: Selector,
    /// Rate, 6-bit code.
    pub rate: Rate,
    /// PacketLifeTimeSelector.
    pub packet_life_time_selector: Selector,
    /// PacketLifeTime, 6 bits.
    pub packet_life_time: u8,
    /// SL, 4 bits.
    pub sl: u8,
    /// FlowLabel, 20 bits.
    pub flow_label: u32,
    /// HopLimit.
    pub hop_limit: u8,
    /// Scope, 4 bits.
    pub scope: u8,
    /// JoinState.
    pub join_state: JoinState,
    /// ProxyJoin.
    pub proxy_join: bool,
}

impl Default for Repr {
    /// All zero, as a request starts before its components are filled in.
    fn default() -> Repr {
        Repr {
            mgid: Gid::default(),
            port_gid: Gid::default(),
            qkey: QKey(0),
            mlid: Lid(0),
            mtu_selector: Selector::GreaterThan,
            mtu: 0,
            tclass: 0,
            pkey: PKey(0),
            rate_selector: Selector::GreaterThan,
            rate: Rate(0),
            packet_life_time_selector: Selector::GreaterThan,
            packet_life_time: 0,
            sl: 0,
            flow_label: 0,
            hop_limit: 0,
            scope: 0,
            join_state: JoinState::NONE,
            proxy_join: false,
        }
    }
}

impl Repr {
    /// Parses a record. Reserved bits are ignored (the SA ignores them too).
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr> {
        packet.check_len()?;
        Ok(Repr {
            mgid: packet.mgid(),
            port_gid: packet.port_gid(),
            qkey: packet.qkey(),
            mlid: packet.mlid(),
            mtu_selector: packet.mtu_selector(),
            mtu: packet.mtu(),
            tclass: packet.tclass(),
            pkey: packet.pkey(),
            rate_selector: packet.rate_selector(),
            rate: packet.rate(),
            packet_life_time_selector: packet.packet_life_time_selector(),
            packet_life_time: packet.packet_life_time(),
            sl: packet.sl(),
            flow_label: packet.flow_label(),
            hop_limit: packet.hop_limit(),
            scope: packet.scope(),
            join_state: packet.join_state(),
            proxy_join: packet.proxy_join(),
        })
    }

    /// Length of the emitted record.
    pub const fn buffer_len(&self) -> usize {
        RECORD_LEN
    }

    /// Writes the record (reserved bits zero) into a checked packet.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_mgid(&self.mgid);
        packet.set_port_gid(&self.port_gid);
        packet.set_qkey(self.qkey);
        packet.set_mlid(self.mlid);
        packet.set_mtu(self.mtu_selector, self.mtu);
        packet.set_tclass(self.tclass);
        packet.set_pkey(self.pkey);
        packet.set_rate(self.rate_selector, self.rate);
        packet.set_packet_life_time(self.packet_life_time_selector, self.packet_life_time);
        packet.set_sl_flow_hop(self.sl, self.flow_label, self.hop_limit);
        packet.set_scope_join_state(self.scope & 0x0F, self.join_state);
        packet.set_proxy_join(self.proxy_join);
    }

    /// The record as bytes.
    pub fn to_bytes(&self) -> [u8; RECORD_LEN] {
        let mut b = [0u8; RECORD_LEN];
        self.emit(&mut Packet::new_unchecked(&mut b[..]));
        b
    }

    /// True if the mask names every component a join or leave needs
    /// (MGID, PortGID, JoinState; OpenSM `JOIN_MC_COMP_MASK`).
    pub const fn join_mask_ok(m: ComponentMask) -> bool {
        m.contains(JOIN_MASK)
    }
}

/// The components a join (Set) or leave (Delete) must name (OpenSM `JOIN_MC_COMP_MASK`).
pub const JOIN_MASK: ComponentMask =
    ComponentMask(mask::MGID.0 | mask::PORT_GID.0 | mask::JOIN_STATE.0);

/// The components a join that creates a group must name (OpenSM
/// `REQUIRED_MC_CREATE_COMP_MASK`: the join mask plus Q_Key, TClass, P_Key, FlowLabel, SL).
pub const CREATE_MASK: ComponentMask = ComponentMask(
    JOIN_MASK.0 | mask::QKEY.0 | mask::TCLASS.0 | mask::PKEY.0 | mask::FLOW_LABEL.0 | mask::SL.0,
);

#[cfg(test)]
mod tests {
    use super::*;

    /// OpenSM's default IPoIB broadcast group record, byte by byte, as
    /// `osm_prtn_add_mcgroup` (opensm/osm_prtn.c) fills it and `mcmr_rcv_create_new_mgrp`
    /// (opensm/osm_sa_mcmember_record.c) stores it: MGID ff12:401b:ffff::ffff:ffff,
    /// PortGID 0 (memset), Q_Key 0x0B1B, MLID 0xC000 (first free), mtu = 4 | 2 << 6,
    /// tclass 0, pkey 0xFFFF (0x7FFF | 0x8000), rate = 3 | 2 << 6, pkt_life =
    /// subnet_timeout (default 18) | 2 << 6, sl_flow_hop = ib_member_set_sl_flow_hop(0,
    /// 0, 0) for link-local scope, scope_state = ib_member_set_scope_state(2, FullMember).
    const OPENSM_BROADCAST: [u8; RECORD_LEN] = [
        0xff, 0x12, 0x40, 0x1b, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff,
        0xff, // MGID
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // PortGID
        0x00, 0x00, 0x0b, 0x1b, // Q_Key
        0xc0, 0x00, // MLID
        0x84, 0x00, // MTU, TClass
        0xff, 0xff, // P_Key
        0x83, 0x92, // Rate, PacketLifeTime
        0x00, 0x00, 0x00, 0x00, // SL | FlowLabel | HopLimit
        0x21, 0x00, 0x00, 0x00, // Scope | JoinState, ProxyJoin | reserved
    ];

    fn broadcast() -> Repr {
        Repr {
            mgid: Gid([
                0xff, 0x12, 0x40, 0x1b, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff,
            ]),
            qkey: QKey::IPOIB_DEFAULT,
            mlid: Lid(0xC000),
            mtu_selector: Selector::Exactly,
            mtu: 4,
            pkey: PKey::DEFAULT,
            rate_selector: Selector::Exactly,
            rate: Rate::GBPS_10,
            packet_life_time_selector: Selector::Exactly,
            packet_life_time: 18,
            scope: 2,
            join_state: JoinState::FULL_MEMBER,
            ..Repr::default()
        }
    }

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&OPENSM_BROADCAST[..]).unwrap();
        assert_eq!(p.mgid().mcast_scope(), 2);
        assert_eq!(p.qkey(), QKey(0x0B1B));
        assert_eq!(p.mlid(), Lid(0xC000));
        assert_eq!((p.mtu_selector(), p.mtu()), (Selector::Exactly, 4));
        assert_eq!(crate::IbMtu::from_code(p.mtu()).unwrap().bytes(), 2048);
        assert_eq!(
            (p.rate_selector(), p.rate()),
            (Selector::Exactly, Rate::GBPS_10)
        );
        assert_eq!(p.pkey(), PKey(0xFFFF));
        assert_eq!(p.packet_life_time(), 18);
        assert_eq!((p.sl(), p.flow_label(), p.hop_limit()), (0, 0, 0));
        assert_eq!(p.scope(), 2);
        assert_eq!(p.join_state(), JoinState::FULL_MEMBER);
        assert!(!p.proxy_join());
        assert_eq!(p.reserved(), 0);
    }

    #[test]
    fn construct() {
        assert_eq!(broadcast().to_bytes(), OPENSM_BROADCAST);
    }

    #[test]
    fn parse() {
        let p = Packet::new_unchecked(&OPENSM_BROADCAST[..]);
        assert_eq!(Repr::parse(&p), Ok(broadcast()));
        assert_eq!(
            Packet::new_checked(&OPENSM_BROADCAST[..51]).unwrap_err(),
            Error::Truncated
        );
    }

    /// Reads `size` bits starting `bit` bits into big-endian 32-bit word `word`, the way
    /// Linux `ib_unpack()` (drivers/infiniband/core/packer.c) reads an `ib_field`.
    fn kernel_field(buf: &[u8], word: usize, bit: usize, size: usize) -> u128 {
        let mut v: u128 = 0;
        for i in 0..size {
            let pos = word * 32 + bit + i;
            let b = (buf[pos / 8] >> (7 - pos % 8)) & 1;
            v = (v << 1) | u128::from(b);
        }
        v
    }

    /// Every field lands where Linux `mcmember_rec_table` (drivers/infiniband/core/
    /// sa_query.c) says: (offset_words, offset_bits, size_bits).
    #[test]
    fn layout_matches_linux_mcmember_rec_table() {
        let r = Repr {
            mgid: Gid([0x11; 16]),
            port_gid: Gid([0x22; 16]),
            qkey: QKey(0x3344_5566),
            mlid: Lid(0xC123),
            mtu_selector: Selector::LessThan,
            mtu: 0x25,
            tclass: 0x7A,
            pkey: PKey(0x8123),
            rate_selector: Selector::Best,
            rate: Rate(0x2B),
            packet_life_time_selector: Selector::Exactly,
            packet_life_time: 0x1D,
            sl: 0xB,
            flow_label: 0xA_BCDE,
            hop_limit: 0x9F,
            scope: 0x5,
            join_state: JoinState::from_bits_truncate(0xA),
            proxy_join: true,
        };
        let b = r.to_bytes();
        let table: [(usize, usize, usize, u128); 18] = [
            (0, 0, 128, u128::from_be_bytes([0x11; 16])), // mgid
            (4, 0, 128, u128::from_be_bytes([0x22; 16])), // port_gid
            (8, 0, 32, 0x3344_5566),                      // qkey
            (9, 0, 16, 0xC123),                           // mlid
            (9, 16, 2, 1),                                // mtu_selector
            (9, 18, 6, 0x25),                             // mtu
            (9, 24, 8, 0x7A),                             // traffic_class
            (10, 0, 16, 0x8123),                          // pkey
            (10, 16, 2, 3),                               // rate_selector
            (10, 18, 6, 0x2B),                            // rate
            (10, 24, 2, 2),                               // packet_life_time_selector
            (10, 26, 6, 0x1D),                            // packet_life_time
            (11, 0, 4, 0xB),                              // sl
            (11, 4, 20, 0xA_BCDE),                        // flow_label
            (11, 24, 8, 0x9F),                            // hop_limit
            (12, 0, 4, 0x5),                              // scope
            (12, 4, 4, 0xA),                              // join_state
            (12, 8, 1, 1),                                // proxy_join
        ];
        for (word, bit, size, want) in table {
            assert_eq!(
                kernel_field(&b, word, bit, size),
                want,
                "word {word} bit {bit}"
            );
        }
        // RESERVED, offset_words 12, offset_bits 9, size_bits 23.
        assert_eq!(kernel_field(&b, 12, 9, 23), 0);
        assert_eq!(Repr::parse(&Packet::new_unchecked(&b[..])), Ok(r));
    }

    #[test]
    fn masks_match_opensm() {
        // include/iba/ib_types.h IB_MCR_COMPMASK_*.
        assert_eq!(mask::JOIN_STATE.0, 0x1_0000);
        assert_eq!(mask::PROXY_JOIN.0, 0x2_0000);
        assert_eq!(JOIN_MASK.0, 0x1_0003);
        // OpenSM REQUIRED_MC_CREATE_COMP_MASK.
        assert_eq!(
            CREATE_MASK.0,
            0x1_0003 | 0x4 | 0x40 | 0x80 | 0x2000 | 0x1000
        );
        assert!(Repr::join_mask_ok(CREATE_MASK));
        assert!(!Repr::join_mask_ok(mask::MGID | mask::PORT_GID));
    }

    #[test]
    fn join_state_ops() {
        let s = JoinState::FULL_MEMBER | JoinState::SEND_ONLY_NON_MEMBER;
        assert_eq!(s.bits(), 5);
        assert!(s.receives());
        assert!(!JoinState::SEND_ONLY_FULL_MEMBER.receives());
        assert_eq!(
            s.difference(JoinState::FULL_MEMBER),
            JoinState::SEND_ONLY_NON_MEMBER
        );
        assert_eq!(!JoinState::FULL_MEMBER, JoinState::from_bits_truncate(0xE));
        extern crate std;
        assert_eq!(
            std::format!("{s:?}"),
            "JoinState(FullMember|SendOnlyNonMember)"
        );
    }

    #[cfg(not(miri))]
    mod prop {
        use super::*;
        use proptest::prelude::*;

        fn sel() -> impl Strategy<Value = Selector> {
            (0u8..4).prop_map(|s| Selector::from_byte(s << 6))
        }

        prop_compose! {
            fn repr()(mgid in any::<[u8; 16]>(), port in any::<[u8; 16]>(), qkey in any::<u32>(),
                      mlid in any::<u16>(), ms in sel(), mtu in 0u8..64, tclass in any::<u8>(),
                      pkey in any::<u16>(), rs in sel(), rate in 0u8..64, ls in sel(), life in 0u8..64,
                      sl in 0u8..16, flow in 0u32..(1 << 20), hop in any::<u8>(), scope in 0u8..16,
                      js in 0u8..16, proxy in any::<bool>()) -> Repr {
                Repr { mgid: Gid(mgid), port_gid: Gid(port), qkey: QKey(qkey), mlid: Lid(mlid),
                       mtu_selector: ms, mtu, tclass, pkey: PKey(pkey), rate_selector: rs,
                       rate: Rate(rate), packet_life_time_selector: ls, packet_life_time: life,
                       sl, flow_label: flow, hop_limit: hop, scope,
                       join_state: JoinState::from_bits_truncate(js), proxy_join: proxy }
            }
        }

        proptest! {
            #[test]
            fn emit_parse_round_trip(r in repr()) {
                let b = r.to_bytes();
                prop_assert_eq!(Repr::parse(&Packet::new_unchecked(&b[..])), Ok(r));
            }

            #[test]
            fn parse_arbitrary_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
                if let Ok(p) = Packet::new_checked(&bytes[..]) {
                    let r = Repr::parse(&p).unwrap();
                    // Re-emitting keeps every defined bit.
                    let b = r.to_bytes();
                    prop_assert_eq!(&b[..49], &bytes[..49]);
                    let _ = p.reserved();
                }
            }
        }
    }
}
