//! What verbs says about a port and a device, in the driver contract's words.

use ibpoll_dev::{LinkLayer, PortAttr, PortState, UdCaps};
use ibpoll_wire::{Gid, IbMtu, Lid, PKey, Rate};

use crate::ffi::{self, DeviceAttr, PortInfo};

/// Lanes of an `active_width` code (`ibv_port_attr`; IBA PortInfo:LinkWidthActive).
fn lanes(width: u8) -> u32 {
    match width {
        1 => 1,
        2 => 4,
        4 => 8,
        8 => 12,
        16 => 2,
        _ => 1,
    }
}

/// Mb/s per lane of an `active_speed` code (IBA PortInfo:LinkSpeedActive and its
/// extensions, as ibv_devinfo names them), data rate after encoding as IBA's rate
/// table counts it (FDR10 and QDR both count as 10 Gb/s).
fn lane_mbps(speed: u8) -> u32 {
    match speed {
        1 => 2_500,
        2 => 5_000,
        4 | 8 => 10_000,
        16 => 14_000,
        32 => 25_000,
        64 => 50_000,
        128 => 100_000,
        _ => 2_500,
    }
}

/// The IBA static-rate code of a link of `width` x `speed`: the fastest code that does
/// not exceed it (2.5 Gb/s at least).
pub(crate) fn rate(width: u8, speed: u8) -> Rate {
    let mbps = lanes(width) * lane_mbps(speed);
    (2u8..=22)
        .map(Rate)
        .filter(|r| r.mbps().is_some_and(|m| m <= mbps))
        .max_by_key(|r| r.mbps())
        .unwrap_or(Rate::GBPS_2_5)
}

fn port_state(s: ffi::PortState) -> PortState {
    match s {
        ffi::PortState::Active | ffi::PortState::ActiveDefer => PortState::Active,
        ffi::PortState::Armed => PortState::Armed,
        ffi::PortState::Init => PortState::Init,
        ffi::PortState::Down | ffi::PortState::Unknown(_) => PortState::Down,
    }
}

/// The link layer; an unspecified one is InfiniBand (old providers, verbs.h's rule).
pub(crate) fn link_layer(l: ffi::LinkLayer) -> LinkLayer {
    match l {
        ffi::LinkLayer::Ethernet => LinkLayer::Ethernet,
        ffi::LinkLayer::InfiniBand | ffi::LinkLayer::Unspecified(_) => LinkLayer::InfiniBand,
    }
}

fn mtu(code: u32) -> IbMtu {
    u8::try_from(code)
        .ok()
        .and_then(IbMtu::from_code)
        .unwrap_or(IbMtu::Mtu2048)
}

/// The contract's port attributes from `ibv_query_port` and the port's tables. The GID
/// table ends at its last used entry (an unused one reads as zero), so every index of a
/// used GID is kept.
pub(crate) fn port_attr(num: u8, p: &PortInfo, gids: &[[u8; 16]], pkeys: &[u16]) -> PortAttr {
    let used = gids
        .iter()
        .rposition(|g| *g != [0; 16])
        .map_or(1, |i| i + 1);
    let gids: Vec<Gid> = gids.iter().take(used).map(|g| Gid(*g)).collect();
    let mut a = PortAttr::new(num);
    a.link_layer = link_layer(p.link_layer);
    a.state = port_state(p.state);
    a.lid = Lid(p.lid);
    a.lmc = p.lmc;
    a.sm_lid = Lid(p.sm_lid);
    a.sm_sl = p.sm_sl;
    a.gid = gids.first().copied().unwrap_or_default();
    a.gids = if gids.is_empty() {
        vec![Gid::default()]
    } else {
        gids
    };
    a.pkeys = pkeys.iter().map(|&k| PKey(k)).collect();
    a.max_mtu = mtu(p.max_mtu);
    a.active_mtu = mtu(p.active_mtu);
    a.rate = rate(p.active_width, p.active_speed);
    a
}

/// What a UD QP of this device can do, from `ibv_query_device_ex` and the inline size a
/// probe QP was given.
pub(crate) fn ud_caps(d: &DeviceAttr, max_inline: u32) -> UdCaps {
    // A queue's CQ holds its whole ring, so the ring is bounded by both.
    let max_wr = d.max_qp_wr.min(d.max_cqe);
    let mut c = UdCaps::verbs(max_wr, d.max_qp);
    c.max_inline = u16::try_from(max_inline).unwrap_or(u16::MAX);
    c.block_self_mcast_lb = d.can_block_self_mcast_lb();
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_follow_the_iba_table() {
        // 4x EDR, 4x FDR, 4x QDR, 1x SDR, 4x HDR, 2x HDR, 4x FDR10, 12x QDR.
        assert_eq!(rate(2, 32), Rate::GBPS_100);
        assert_eq!(rate(2, 16), Rate::GBPS_56);
        assert_eq!(rate(2, 4), Rate::GBPS_40);
        assert_eq!(rate(1, 1), Rate::GBPS_2_5);
        assert_eq!(rate(2, 64), Rate::GBPS_200);
        assert_eq!(rate(16, 64).mbps(), Some(100_000));
        assert_eq!(rate(2, 8), Rate::GBPS_40);
        assert_eq!(rate(8, 4).mbps(), Some(120_000));
        assert_eq!(rate(0, 0), Rate::GBPS_2_5, "unknown codes: the slowest");
    }

    #[test]
    fn the_gid_table_keeps_every_used_index() {
        let p = PortInfo {
            state: ffi::PortState::Active,
            max_mtu: 5,
            active_mtu: 5,
            gid_tbl_len: 1024,
            pkey_tbl_len: 1,
            lid: 0,
            sm_lid: 0,
            sm_sl: 0,
            lmc: 0,
            link_layer: ffi::LinkLayer::Ethernet,
            port_cap_flags: 0,
            active_width: 1,
            active_speed: 1,
        };
        let mut gids = vec![[0u8; 16]; 1024];
        gids[0][0] = 0xfe;
        gids[2] = crate::roce::ipv4_mapped([127, 0, 0, 1]);
        let a = port_attr(1, &p, &gids, &[0xffff]);
        assert_eq!(a.gids.len(), 3, "up to the last used entry");
        assert_eq!(a.gids[2].0, crate::roce::ipv4_mapped([127, 0, 0, 1]));
        assert_eq!(a.gid, a.gids[0]);
        assert_eq!(a.link_layer, LinkLayer::Ethernet);
        assert_eq!(a.state, PortState::Active);
        assert_eq!(a.pkeys, [PKey::DEFAULT]);
        assert_eq!(a.active_mtu, IbMtu::Mtu4096);
    }
}
