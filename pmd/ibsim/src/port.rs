//! What ibsim tells a client about its node and port: the NodeInfo and PortInfo SMP
//! attributes (IBA 14.2.5.3 and 14.2.5.6) as ibsim keeps them, which the subnet manager
//! writes (LID, SM LID, GID prefix, state) during its sweeps.

use ibpoll_dev::{PortAttr, PortState};
use ibpoll_wire::{Gid, IbMtu, Lid, PKey, Rate};

/// NodeInfo.NodeType of a channel adapter.
pub const NODE_TYPE_CA: u8 = 1;
/// NodeInfo.NodeType of a switch.
pub const NODE_TYPE_SWITCH: u8 = 2;

/// NodeInfo byte offsets (IBA 14.2.5.3).
mod node_info {
    pub const NODE_TYPE: usize = 2;
    pub const NUM_PORTS: usize = 3;
    pub const NODE_GUID: core::ops::Range<usize> = 12..20;
}

/// PortInfo byte offsets (IBA 14.2.5.6, libibmad `IB_PORT_*_F`).
mod port_info {
    pub const GID_PREFIX: core::ops::Range<usize> = 8..16;
    pub const LID: core::ops::Range<usize> = 16..18;
    pub const SM_LID: core::ops::Range<usize> = 18..20;
    pub const LOCAL_PORT_NUM: usize = 28;
    pub const LINK_WIDTH_ACTIVE: usize = 31;
    /// LinkSpeedSupported (7..4) | PortState (3..0).
    pub const PORT_STATE: usize = 32;
    /// M_KeyProtectBits (7..6) | reserved | LMC (2..0).
    pub const LMC: usize = 34;
    /// LinkSpeedActive (7..4) | LinkSpeedEnabled (3..0).
    pub const LINK_SPEED_ACTIVE: usize = 35;
    /// NeighborMTU (7..4) | MasterSMSL (3..0).
    pub const SM_SL: usize = 36;
    /// InitTypeReply (7..4) | MTUCap (3..0).
    pub const MTU_CAP: usize = 41;
}

fn be16(b: &[u8], r: core::ops::Range<usize>) -> u16 {
    u16::from_be_bytes([b[r.start], b[r.start + 1]])
}

fn be64(b: &[u8], r: core::ops::Range<usize>) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[r]);
    u64::from_be_bytes(x)
}

/// A client's node and port as ibsim holds them. LID, SM LID, GID prefix and state
/// are the subnet manager's: they read 0 / Down until its first sweep has reached the
/// port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IbsimPort {
    /// The node ibsim attached the client to (SIM_HOST).
    pub node_name: String,
    /// NodeInfo.NodeType ([`NODE_TYPE_CA`], [`NODE_TYPE_SWITCH`], ...).
    pub node_type: u8,
    /// NodeInfo.NodeGUID.
    pub node_guid: u64,
    /// The port number.
    pub port_num: u8,
    /// The port GUID: node GUID + port number on a CA (ibsim's rule, which umad2sim
    /// repeats), the node GUID on a switch.
    pub port_guid: u64,
    /// PortInfo.GidPrefix.
    pub gid_prefix: u64,
    /// PortInfo.LID.
    pub lid: Lid,
    /// PortInfo.LMC.
    pub lmc: u8,
    /// PortInfo.MasterSMLID: where the subnet administrator is.
    pub sm_lid: Lid,
    /// PortInfo.MasterSMSL.
    pub sm_sl: u8,
    /// PortInfo.PortState.
    pub state: PortState,
    /// PortInfo.MTUCap (an IBA MTU code).
    pub mtu_cap: u8,
    /// PortInfo.LinkWidthActive (bit mask: 1 = 1x, 2 = 4x, 4 = 8x, 8 = 12x).
    pub link_width_active: u8,
    /// PortInfo.LinkSpeedActive (1 = SDR, 2 = DDR, 4 = QDR).
    pub link_speed_active: u8,
    /// The P_Key table as ibsim reports it (SIM_CTL_GET_PKEYS, first 32 entries,
    /// trailing invalid entries trimmed; invalid entries inside are `PKey(0)`), so that
    /// positions are P_Key indices. Empty when ibsim does not report it.
    pub pkeys: Vec<PKey>,
}

impl IbsimPort {
    /// Builds the view from ibsim's NodeInfo and PortInfo attributes.
    pub(crate) fn from_attributes(
        node_name: String,
        node: &[u8; 64],
        port: &[u8; 64],
        pkeys: Vec<PKey>,
    ) -> IbsimPort {
        let node_type = node[node_info::NODE_TYPE];
        let node_guid = be64(node, node_info::NODE_GUID);
        let port_num = port[port_info::LOCAL_PORT_NUM];
        let port_guid = if node_type == NODE_TYPE_SWITCH {
            node_guid
        } else {
            node_guid.wrapping_add(u64::from(port_num))
        };
        debug_assert!(node[node_info::NUM_PORTS] == 0 || port_num <= node[node_info::NUM_PORTS]);
        IbsimPort {
            node_name,
            node_type,
            node_guid,
            port_num,
            port_guid,
            gid_prefix: be64(port, port_info::GID_PREFIX),
            lid: Lid(be16(port, port_info::LID)),
            lmc: port[port_info::LMC] & 0x07,
            sm_lid: Lid(be16(port, port_info::SM_LID)),
            sm_sl: port[port_info::SM_SL] & 0x0F,
            state: port_state(port[port_info::PORT_STATE] & 0x0F),
            mtu_cap: port[port_info::MTU_CAP] & 0x0F,
            link_width_active: port[port_info::LINK_WIDTH_ACTIVE],
            link_speed_active: port[port_info::LINK_SPEED_ACTIVE] >> 4,
            pkeys,
        }
    }

    /// The port GID: GID prefix and port GUID (what a caller puts in PortGID/SGID).
    pub fn gid(&self) -> Gid {
        Gid::new(self.gid_prefix, self.port_guid)
    }

    /// True once the subnet manager has brought the port up and told it where it is.
    pub fn is_active(&self) -> bool {
        self.state == PortState::Active && self.lid.0 != 0 && self.sm_lid.0 != 0
    }

    /// The port's attributes as the driver contract reports them. ibsim has no data
    /// path, so the active MTU is the MTU capability; unknown MTU and rate read as
    /// 2048 bytes and 10 Gb/s (ibsim's defaults).
    pub fn port_attr(&self) -> PortAttr {
        let mtu = self.mtu().unwrap_or(IbMtu::Mtu2048);
        let mut a = PortAttr::new(self.port_num);
        a.state = self.state;
        a.lid = self.lid;
        a.lmc = self.lmc;
        a.sm_lid = self.sm_lid;
        a.sm_sl = self.sm_sl;
        a.gid = self.gid();
        a.gids = vec![a.gid];
        a.pkeys = self.pkeys.clone();
        a.max_mtu = mtu;
        a.active_mtu = mtu;
        a.rate = self.rate().unwrap_or(Rate::GBPS_10);
        a
    }

    /// The MTU capability, if MTUCap is a valid code.
    pub fn mtu(&self) -> Option<IbMtu> {
        IbMtu::from_code(self.mtu_cap)
    }

    /// The active link rate (width times speed), for SDR, DDR and QDR links.
    pub fn rate(&self) -> Option<Rate> {
        let lanes: u32 = match self.link_width_active {
            1 => 1,
            2 => 4,
            4 => 8,
            8 => 12,
            _ => return None,
        };
        // Lane speed in units of 2.5 Gb/s.
        let speed: u32 = match self.link_speed_active {
            1 => 1,
            2 => 2,
            4 => 4,
            _ => return None,
        };
        // IBA 9.7.5.1 / OpenSM ib_types.h rate codes, in units of 2.5 Gb/s.
        Some(match lanes * speed {
            1 => Rate::GBPS_2_5,
            2 => Rate::GBPS_5,
            4 => Rate::GBPS_10,
            8 => Rate::GBPS_20,
            12 => Rate::GBPS_30,
            16 => Rate::GBPS_40,
            24 => Rate(8),  // 60 Gb/s
            32 => Rate(9),  // 80 Gb/s
            48 => Rate(10), // 120 Gb/s
            _ => return None,
        })
    }
}

fn port_state(v: u8) -> PortState {
    match v {
        2 => PortState::Init,
        3 => PortState::Armed,
        4 => PortState::Active,
        _ => PortState::Down,
    }
}

/// A P_Key table sent as big-endian values, trailing invalid entries trimmed.
pub(crate) fn pkey_table(data: &[u8]) -> Vec<PKey> {
    let mut t: Vec<PKey> = data
        .chunks_exact(2)
        .map(|c| PKey(u16::from_be_bytes([c[0], c[1]])))
        .collect();
    while t.last().is_some_and(|p| p.base() == 0) {
        t.pop();
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_attributes() {
        let mut node = [0u8; 64];
        node[2] = NODE_TYPE_CA;
        node[3] = 1;
        node[12..20].copy_from_slice(&0x0002_c903_0000_1000u64.to_be_bytes());
        let mut port = [0u8; 64];
        port[8..16].copy_from_slice(&0xfe80_0000_0000_0000u64.to_be_bytes());
        port[16..18].copy_from_slice(&[0, 3]);
        port[18..20].copy_from_slice(&[0, 1]);
        port[28] = 1;
        port[31] = 2; // 4x
        port[32] = 0x14; // SDR supported, Active
        port[35] = 0x11; // SDR
        port[41] = 0x14; // MTUCap 2048
        let p = IbsimPort::from_attributes("hostA".into(), &node, &port, vec![PKey(0xFFFF)]);
        assert_eq!(p.port_guid, 0x0002_c903_0000_1001);
        assert_eq!(
            p.gid(),
            Gid::new(0xfe80_0000_0000_0000, 0x0002_c903_0000_1001)
        );
        assert_eq!((p.lid, p.sm_lid), (Lid(3), Lid(1)));
        assert_eq!(p.state, PortState::Active);
        assert!(p.is_active());
        assert_eq!(p.mtu(), Some(IbMtu::Mtu2048));
        assert_eq!(p.rate(), Some(Rate::GBPS_10));
        node[2] = NODE_TYPE_SWITCH;
        let s = IbsimPort::from_attributes("sw".into(), &node, &port, Vec::new());
        assert_eq!(s.port_guid, s.node_guid);
    }

    #[test]
    fn pkeys() {
        let mut d = [0u8; 64];
        d[0..2].copy_from_slice(&[0xff, 0xff]);
        d[2..4].copy_from_slice(&[0x80, 0x00]); // base 0: invalid
        d[4..6].copy_from_slice(&[0x00, 0x01]);
        assert_eq!(
            pkey_table(&d),
            vec![PKey(0xFFFF), PKey(0x8000), PKey(0x0001)]
        );
        assert!(pkey_table(&[0u8; 64]).is_empty());
    }
}
