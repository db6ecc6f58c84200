//! PathRecord, the SA attribute that resolves a destination GID to an address vector
//! (AttributeID 0x0035; IBA 15.2.5.16 table 213, OpenSM `ib_path_rec_t`, Linux
//! `drivers/infiniband/core/sa_query.c` `path_rec_table`).
//!
//! ```text
//!  0..8   ServiceID
//!  8..24  DGID
//! 24..40  SGID
//! 40..42  DLID
//! 42..44  SLID
//! 44..48  RawTraffic (1) | reserved (3) | FlowLabel (20) | HopLimit (8)
//! 48      TClass
//! 49      Reversible (1) | NumbPath (7)
//! 50..52  P_Key
//! 52..54  QoSClass (12) | SL (4)
//! 54      MTUSelector (2) | MTU (6)
//! 55      RateSelector (2) | Rate (6)
//! 56      PacketLifeTimeSelector (2) | PacketLifeTime (6)
//! 57      Preference
//! 58..64  reserved
//! ```
//!
//! Contract: once [`Packet::check_len`] has succeeded no accessor panics.

use crate::sa::Selector;
use crate::{be16, be32, be64, put_be16, put_be32, put_be64, Error, Gid, Lid, PKey, Rate, Result};

/// Length of the record.
pub const RECORD_LEN: usize = 64;

mod field {
    use crate::Field;

    pub const SERVICE_ID: Field = 0..8;
    pub const DGID: Field = 8..24;
    pub const SGID: Field = 24..40;
    pub const DLID: Field = 40..42;
    pub const SLID: Field = 42..44;
    pub const RAW_FLOW_HOP: Field = 44..48;
    pub const TCLASS: usize = 48;
    pub const REVERSIBLE_NUMB_PATH: usize = 49;
    pub const PKEY: Field = 50..52;
    pub const QOS_CLASS_SL: Field = 52..54;
    pub const MTU: usize = 54;
    pub const RATE: usize = 55;
    pub const PACKET_LIFE_TIME: usize = 56;
    pub const PREFERENCE: usize = 57;
    pub const RESERVED: Field = 58..64;
}

/// ComponentMask bits of PathRecord (OpenSM `IB_PR_COMPMASK_*`; ServiceID takes two
/// bits, its 8 MSBs and 56 LSBs, IBA 1.2.1 table 213).
pub mod mask {
    use crate::sa::ComponentMask;

    /// ServiceID, upper 8 bits.
    pub const SERVICE_ID_MSB: ComponentMask = ComponentMask(1 << 0);
    /// ServiceID, lower 56 bits.
    pub const SERVICE_ID_LSB: ComponentMask = ComponentMask(1 << 1);
    /// Both ServiceID bits.
    pub const SERVICE_ID: ComponentMask = ComponentMask(0b11);
    /// DGID.
    pub const DGID: ComponentMask = ComponentMask(1 << 2);
    /// SGID.
    pub const SGID: ComponentMask = ComponentMask(1 << 3);
    /// DLID.
    pub const DLID: ComponentMask = ComponentMask(1 << 4);
    /// SLID.
    pub const SLID: ComponentMask = ComponentMask(1 << 5);
    /// RawTraffic.
    pub const RAW_TRAFFIC: ComponentMask = ComponentMask(1 << 6);
    /// Reserved.
    pub const RESERVED0: ComponentMask = ComponentMask(1 << 7);
    /// FlowLabel.
    pub const FLOW_LABEL: ComponentMask = ComponentMask(1 << 8);
    /// HopLimit.
    pub const HOP_LIMIT: ComponentMask = ComponentMask(1 << 9);
    /// TClass.
    pub const TCLASS: ComponentMask = ComponentMask(1 << 10);
    /// Reversible.
    pub const REVERSIBLE: ComponentMask = ComponentMask(1 << 11);
    /// NumbPath.
    pub const NUMB_PATH: ComponentMask = ComponentMask(1 << 12);
    /// P_Key.
    pub const PKEY: ComponentMask = ComponentMask(1 << 13);
    /// QoSClass.
    pub const QOS_CLASS: ComponentMask = ComponentMask(1 << 14);
    /// SL.
    pub const SL: ComponentMask = ComponentMask(1 << 15);
    /// MTUSelector.
    pub const MTU_SELECTOR: ComponentMask = ComponentMask(1 << 16);
    /// MTU.
    pub const MTU: ComponentMask = ComponentMask(1 << 17);
    /// RateSelector.
    pub const RATE_SELECTOR: ComponentMask = ComponentMask(1 << 18);
    /// Rate.
    pub const RATE: ComponentMask = ComponentMask(1 << 19);
    /// PacketLifeTimeSelector.
    pub const PACKET_LIFE_TIME_SELECTOR: ComponentMask = ComponentMask(1 << 20);
    /// PacketLifeTime.
    pub const PACKET_LIFE_TIME: ComponentMask = ComponentMask(1 << 21);
    /// Preference.
    pub const PREFERENCE: ComponentMask = ComponentMask(1 << 22);
}

/// A read/write view of a PathRecord.
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

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    fn gid(&self, f: crate::Field) -> Gid {
        let mut g = [0u8; 16];
        g.copy_from_slice(&self.b()[f]);
        Gid(g)
    }

    /// ServiceID.
    pub fn service_id(&self) -> u64 {
        be64(self.b(), field::SERVICE_ID.start)
    }

    /// DGID.
    pub fn dgid(&self) -> Gid {
        self.gid(field::DGID)
    }

    /// SGID.
    pub fn sgid(&self) -> Gid {
        self.gid(field::SGID)
    }

    /// DLID.
    pub fn dlid(&self) -> Lid {
        Lid(be16(self.b(), field::DLID.start))
    }

    /// SLID.
    pub fn slid(&self) -> Lid {
        Lid(be16(self.b(), field::SLID.start))
    }

    fn raw_flow_hop(&self) -> u32 {
        be32(self.b(), field::RAW_FLOW_HOP.start)
    }

    /// RawTraffic.
    pub fn raw_traffic(&self) -> bool {
        self.raw_flow_hop() & 0x8000_0000 != 0
    }

    /// FlowLabel (20 bits).
    pub fn flow_label(&self) -> u32 {
        (self.raw_flow_hop() >> 8) & 0x000F_FFFF
    }

    /// HopLimit.
    pub fn hop_limit(&self) -> u8 {
        self.raw_flow_hop() as u8
    }

    /// TClass.
    pub fn tclass(&self) -> u8 {
        self.b()[field::TCLASS]
    }

    /// Reversible.
    pub fn reversible(&self) -> bool {
        self.b()[field::REVERSIBLE_NUMB_PATH] & 0x80 != 0
    }

    /// NumbPath (7 bits).
    pub fn numb_path(&self) -> u8 {
        self.b()[field::REVERSIBLE_NUMB_PATH] & 0x7F
    }

    /// P_Key.
    pub fn pkey(&self) -> PKey {
        PKey(be16(self.b(), field::PKEY.start))
    }

    /// QoSClass (12 bits).
    pub fn qos_class(&self) -> u16 {
        be16(self.b(), field::QOS_CLASS_SL.start) >> 4
    }

    /// SL (4 bits).
    pub fn sl(&self) -> u8 {
        (be16(self.b(), field::QOS_CLASS_SL.start) & 0x0F) as u8
    }

    /// MTUSelector.
    pub fn mtu_selector(&self) -> Selector {
        Selector::from_byte(self.b()[field::MTU])
    }

    /// MTU (6-bit code).
    pub fn mtu(&self) -> u8 {
        self.b()[field::MTU] & 0x3F
    }

    /// RateSelector.
    pub fn rate_selector(&self) -> Selector {
        Selector::from_byte(self.b()[field::RATE])
    }

    /// Rate (6-bit code).
    pub fn rate(&self) -> Rate {
        Rate(self.b()[field::RATE] & 0x3F)
    }

    /// PacketLifeTimeSelector.
    pub fn packet_life_time_selector(&self) -> Selector {
        Selector::from_byte(self.b()[field::PACKET_LIFE_TIME])
    }

    /// PacketLifeTime (6 bits).
    pub fn packet_life_time(&self) -> u8 {
        self.b()[field::PACKET_LIFE_TIME] & 0x3F
    }

    /// Preference.
    pub fn preference(&self) -> u8 {
        self.b()[field::PREFERENCE]
    }

    /// The three reserved bits after RawTraffic.
    pub fn reserved0(&self) -> u8 {
        ((self.raw_flow_hop() >> 28) & 0x7) as u8
    }

    /// The six reserved bytes at the end.
    pub fn reserved(&self) -> &[u8] {
        &self.b()[field::RESERVED]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn bm(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    /// Sets ServiceID.
    pub fn set_service_id(&mut self, v: u64) {
        put_be64(self.bm(), field::SERVICE_ID.start, v);
    }

    /// Sets DGID.
    pub fn set_dgid(&mut self, v: &Gid) {
        self.bm()[field::DGID].copy_from_slice(v.as_bytes());
    }

    /// Sets SGID.
    pub fn set_sgid(&mut self, v: &Gid) {
        self.bm()[field::SGID].copy_from_slice(v.as_bytes());
    }

    /// Sets DLID.
    pub fn set_dlid(&mut self, v: Lid) {
        put_be16(self.bm(), field::DLID.start, v.0);
    }

    /// Sets SLID.
    pub fn set_slid(&mut self, v: Lid) {
        put_be16(self.bm(), field::SLID.start, v.0);
    }

    /// Sets RawTraffic, FlowLabel (low 20 bits) and HopLimit; the reserved bits are zeroed.
    pub fn set_raw_flow_hop(&mut self, raw_traffic: bool, flow_label: u32, hop_limit: u8) {
        let v = (u32::from(raw_traffic) << 31)
            | ((flow_label & 0x000F_FFFF) << 8)
            | u32::from(hop_limit);
        put_be32(self.bm(), field::RAW_FLOW_HOP.start, v);
    }

    /// Sets TClass.
    pub fn set_tclass(&mut self, v: u8) {
        self.bm()[field::TCLASS] = v;
    }

    /// Sets Reversible and NumbPath (low 7 bits).
    pub fn set_reversible_numb_path(&mut self, reversible: bool, numb_path: u8) {
        self.bm()[field::REVERSIBLE_NUMB_PATH] = (u8::from(reversible) << 7) | (numb_path & 0x7F);
    }

    /// Sets P_Key.
    pub fn set_pkey(&mut self, v: PKey) {
        put_be16(self.bm(), field::PKEY.start, v.0);
    }

    /// Sets QoSClass (low 12 bits) and SL (low 4 bits).
    pub fn set_qos_class_sl(&mut self, qos_class: u16, sl: u8) {
        put_be16(
            self.bm(),
            field::QOS_CLASS_SL.start,
            ((qos_class & 0x0FFF) << 4) | u16::from(sl & 0x0F),
        );
    }

    /// Sets MTUSelector and MTU.
    pub fn set_mtu(&mut self, selector: Selector, code: u8) {
        self.bm()[field::MTU] = selector.pack(code);
    }

    /// Sets RateSelector and Rate.
    pub fn set_rate(&mut self, selector: Selector, rate: Rate) {
        self.bm()[field::RATE] = selector.pack(rate.0);
    }

    /// Sets PacketLifeTimeSelector and PacketLifeTime.
    pub fn set_packet_life_time(&mut self, selector: Selector, v: u8) {
        self.bm()[field::PACKET_LIFE_TIME] = selector.pack(v);
    }

    /// Sets Preference and zeroes the trailing reserved bytes.
    pub fn set_preference(&mut self, v: u8) {
        let b = self.bm();
        b[field::PREFERENCE] = v;
        b[field::RESERVED].fill(0);
    }
}

/// A parsed PathRecord.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// ServiceID.
    pub service_id: u64,
    /// DGID.
    pub dgid: Gid,
    /// SGID.
    pub sgid: Gid,
    /// DLID.
    pub dlid: Lid,
    /// SLID.
    pub slid: Lid,
    /// RawTraffic.
    pub raw_traffic: bool,
    /// FlowLabel, 20 bits.
    pub flow_label: u32,
    /// HopLimit.
    pub hop_limit: u8,
    /// TClass.
    pub tclass: u8,
    /// Reversible.
    pub reversible: bool,
    /// NumbPath, 7 bits.
    pub numb_path: u8,
    /// P_Key.
    pub pkey: PKey,
    /// QoSClass, 12 bits.
    pub qos_class: u16,
    /// SL, 4 bits.
    pub sl: u8,
    /// MTUSelector.
    pub mtu_selector: Selector,
    /// MTU, 6-bit code.
    pub mtu: u8,
    /// RateSelector.
    pub rate_selector: Selector,
    /// Rate, 6-bit code.
    pub rate: Rate,
    /// PacketLifeTimeSelector.
    pub packet_life_time_selector: Selector,
    /// PacketLifeTime, 6 bits.
    pub packet_life_time: u8,
    /// Preference.
    pub preference: u8,
}

impl Default for Repr {
    /// All zero.
    fn default() -> Repr {
        Repr {
            service_id: 0,
            dgid: Gid::default(),
            sgid: Gid::default(),
            dlid: Lid(0),
            slid: Lid(0),
            raw_traffic: false,
            flow_label: 0,
            hop_limit: 0,
            tclass: 0,
            reversible: false,
            numb_path: 0,
            pkey: PKey(0),
            qos_class: 0,
            sl: 0,
            mtu_selector: Selector::GreaterThan,
            mtu: 0,
            rate_selector: Selector::GreaterThan,
            rate: Rate(0),
            packet_life_time_selector: Selector::GreaterThan,
            packet_life_time: 0,
            preference: 0,
        }
    }
}

impl Repr {
    /// Parses a record; reserved bits are ignored.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr> {
        packet.check_len()?;
        Ok(Repr {
            service_id: packet.service_id(),
            dgid: packet.dgid(),
            sgid: packet.sgid(),
            dlid: packet.dlid(),
            slid: packet.slid(),
            raw_traffic: packet.raw_traffic(),
            flow_label: packet.flow_label(),
            hop_limit: packet.hop_limit(),
            tclass: packet.tclass(),
            reversible: packet.reversible(),
            numb_path: packet.numb_path(),
            pkey: packet.pkey(),
            qos_class: packet.qos_class(),
            sl: packet.sl(),
            mtu_selector: packet.mtu_selector(),
            mtu: packet.mtu(),
            rate_selector: packet.rate_selector(),
            rate: packet.rate(),
            packet_life_time_selector: packet.packet_life_time_selector(),
            packet_life_time: packet.packet_life_time(),
            preference: packet.preference(),
        })
    }

    /// Length of the emitted record.
    pub const fn buffer_len(&self) -> usize {
        RECORD_LEN
    }

    /// Writes the record (reserved bits zero) into a checked packet.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_service_id(self.service_id);
        packet.set_dgid(&self.dgid);
        packet.set_sgid(&self.sgid);
        packet.set_dlid(self.dlid);
        packet.set_slid(self.slid);
        packet.set_raw_flow_hop(self.raw_traffic, self.flow_label, self.hop_limit);
        packet.set_tclass(self.tclass);
        packet.set_reversible_numb_path(self.reversible, self.numb_path);
        packet.set_pkey(self.pkey);
        packet.set_qos_class_sl(self.qos_class, self.sl);
        packet.set_mtu(self.mtu_selector, self.mtu);
        packet.set_rate(self.rate_selector, self.rate);
        packet.set_packet_life_time(self.packet_life_time_selector, self.packet_life_time);
        packet.set_preference(self.preference);
    }

    /// The record as bytes.
    pub fn to_bytes(&self) -> [u8; RECORD_LEN] {
        let mut b = [0u8; RECORD_LEN];
        self.emit(&mut Packet::new_unchecked(&mut b[..]));
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PathRecord answer as OpenSM's `pr_rcv_build_pr` (opensm/osm_sa_path_record.c)
    /// lays it out for two ports on fe80::/64 with LIDs 1 and 2, sharing P_Key 0xFFFF:
    /// ServiceID 0, hop_flow_raw 0 (no router), tclass 0, num_path 0x80 (reversible,
    /// NumbPath 0), SL 0, mtu = 4 | 0x80, rate = 3 | 0x80, pkt_life = 18 | 0x80,
    /// preference 0. Field positions from OpenSM `ib_path_rec_t`.
    const OPENSM_PATH: [u8; RECORD_LEN] = [
        0, 0, 0, 0, 0, 0, 0, 0, // ServiceID
        0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, // DGID
        0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, // SGID
        0x00, 0x02, 0x00, 0x01, // DLID, SLID
        0, 0, 0, 0, // RawTraffic | FlowLabel | HopLimit
        0x00, 0x80, 0xff, 0xff, // TClass, Reversible | NumbPath, P_Key
        0x00, 0x00, 0x84, 0x83, // QoSClass | SL, MTU, Rate
        0x92, 0x00, 0, 0, 0, 0, 0, 0, // PacketLifeTime, Preference, reserved
    ];

    fn opensm_path() -> Repr {
        Repr {
            dgid: Gid::new(Gid::DEFAULT_SUBNET_PREFIX, 2),
            sgid: Gid::new(Gid::DEFAULT_SUBNET_PREFIX, 1),
            dlid: Lid(2),
            slid: Lid(1),
            reversible: true,
            pkey: PKey::DEFAULT,
            mtu_selector: Selector::Exactly,
            mtu: 4,
            rate_selector: Selector::Exactly,
            rate: Rate::GBPS_10,
            packet_life_time_selector: Selector::Exactly,
            packet_life_time: 18,
            ..Repr::default()
        }
    }

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&OPENSM_PATH[..]).unwrap();
        assert_eq!(p.dlid(), Lid(2));
        assert_eq!(p.slid(), Lid(1));
        assert!(p.reversible());
        assert_eq!(p.numb_path(), 0);
        assert_eq!(p.pkey(), PKey::DEFAULT);
        assert_eq!((p.mtu_selector(), p.mtu()), (Selector::Exactly, 4));
        assert_eq!(p.rate(), Rate::GBPS_10);
        assert_eq!(p.packet_life_time(), 18);
        assert_eq!(p.reserved(), &[0; 6]);
    }

    #[test]
    fn construct_and_parse() {
        assert_eq!(opensm_path().to_bytes(), OPENSM_PATH);
        assert_eq!(
            Repr::parse(&Packet::new_unchecked(&OPENSM_PATH[..])),
            Ok(opensm_path())
        );
        assert_eq!(
            Packet::new_checked(&OPENSM_PATH[..63]).unwrap_err(),
            Error::Truncated
        );
    }

    fn kernel_field(buf: &[u8], word: usize, bit: usize, size: usize) -> u128 {
        let mut v: u128 = 0;
        for i in 0..size {
            let pos = word * 32 + bit + i;
            v = (v << 1) | u128::from((buf[pos / 8] >> (7 - pos % 8)) & 1);
        }
        v
    }

    /// Every field lands where Linux `path_rec_table` (drivers/infiniband/core/
    /// sa_query.c) says: (offset_words, offset_bits, size_bits).
    #[test]
    fn layout_matches_linux_path_rec_table() {
        let r = Repr {
            service_id: 0x0102_0304_0506_0708,
            dgid: Gid([0x33; 16]),
            sgid: Gid([0x44; 16]),
            dlid: Lid(0x1234),
            slid: Lid(0x5678),
            raw_traffic: true,
            flow_label: 0xF_EDCB,
            hop_limit: 0x40,
            tclass: 0xA5,
            reversible: true,
            numb_path: 0x55,
            pkey: PKey(0x8001),
            qos_class: 0xABC,
            sl: 0x9,
            mtu_selector: Selector::LessThan,
            mtu: 0x05,
            rate_selector: Selector::Exactly,
            rate: Rate(0x10),
            packet_life_time_selector: Selector::Best,
            packet_life_time: 0x3F,
            preference: 0x77,
        };
        let b = r.to_bytes();
        let table: [(usize, usize, usize, u128); 22] = [
            (0, 0, 64, 0x0102_0304_0506_0708), // service_id
            (2, 0, 128, u128::from_be_bytes([0x33; 16])),
            (6, 0, 128, u128::from_be_bytes([0x44; 16])),
            (10, 0, 16, 0x1234),  // dlid
            (10, 16, 16, 0x5678), // slid
            (11, 0, 1, 1),        // raw_traffic
            (11, 1, 3, 0),        // reserved
            (11, 4, 20, 0xF_EDCB),
            (11, 24, 8, 0x40),
            (12, 0, 8, 0xA5), // traffic_class
            (12, 8, 1, 1),    // reversible
            (12, 9, 7, 0x55), // numb_path
            (12, 16, 16, 0x8001),
            (13, 0, 12, 0xABC), // qos_class
            (13, 12, 4, 0x9),   // sl
            (13, 16, 2, 1),
            (13, 18, 6, 0x05),
            (13, 24, 2, 2),
            (13, 26, 6, 0x10),
            (14, 0, 2, 3),
            (14, 2, 6, 0x3F),
            (14, 8, 8, 0x77), // preference
        ];
        for (word, bit, size, want) in table {
            assert_eq!(
                kernel_field(&b, word, bit, size),
                want,
                "word {word} bit {bit}"
            );
        }
        assert_eq!(kernel_field(&b, 14, 16, 48), 0);
        assert_eq!(Repr::parse(&Packet::new_unchecked(&b[..])), Ok(r));
    }

    #[test]
    fn masks_match_opensm() {
        // include/iba/ib_types.h IB_PR_COMPMASK_*.
        assert_eq!(mask::DGID.0, 0x4);
        assert_eq!(mask::SGID.0, 0x8);
        assert_eq!(mask::NUMB_PATH.0, 0x1000);
        assert_eq!(mask::PKEY.0, 0x2000);
        assert_eq!(mask::SL.0, 0x8000);
        assert_eq!(mask::MTU.0, 0x2_0000);
        assert_eq!(mask::PACKET_LIFE_TIME.0, 0x20_0000);
        assert_eq!(mask::PREFERENCE.0, 0x40_0000);
    }

    #[cfg(not(miri))]
    mod prop {
        use super::*;
        use proptest::prelude::*;

        fn sel() -> impl Strategy<Value = Selector> {
            (0u8..4).prop_map(|s| Selector::from_byte(s << 6))
        }

        prop_compose! {
            fn repr()(sid in any::<u64>(), d in any::<[u8; 16]>(), s in any::<[u8; 16]>(),
                      dlid in any::<u16>(), slid in any::<u16>(), raw in any::<bool>(),
                      flow in 0u32..(1 << 20), hop in any::<u8>(), tclass in any::<u8>(),
                      rev in any::<bool>(), np in 0u8..128, pkey in any::<u16>(), qos in 0u16..4096,
                      sl in 0u8..16, ms in sel(), mtu in 0u8..64, rs in sel(), rate in 0u8..64,
                      ls in sel(), life in 0u8..64, pref in any::<u8>()) -> Repr {
                Repr { service_id: sid, dgid: Gid(d), sgid: Gid(s), dlid: Lid(dlid), slid: Lid(slid),
                       raw_traffic: raw, flow_label: flow, hop_limit: hop, tclass, reversible: rev,
                       numb_path: np, pkey: PKey(pkey), qos_class: qos, sl, mtu_selector: ms, mtu,
                       rate_selector: rs, rate: Rate(rate), packet_life_time_selector: ls,
                       packet_life_time: life, preference: pref }
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
                    let _ = (Repr::parse(&p).unwrap(), p.reserved0(), p.reserved());
                }
            }
        }
    }
}
