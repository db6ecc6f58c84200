use ibpoll_wire::{Gid, IbMtu, Lid, PKey, Qpn, Rate};

/// The logical state of a port (IBA 14.2.5.6 PortInfo.PortState).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PortState {
    /// Link down.
    Down,
    /// Link up, not yet configured by the subnet manager.
    Init,
    /// Configured, data not yet allowed.
    Armed,
    /// Configured and passing data.
    Active,
}

/// The link layer under a port: what its multicast joins and paths are made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum LinkLayer {
    /// InfiniBand: a subnet manager assigns LIDs; joins and paths go through the SA.
    #[default]
    InfiniBand,
    /// Ethernet (RoCE): no SA; a join is an attach, paths are computed from GIDs and
    /// every packet carries a GRH.
    Ethernet,
}

/// What a port reports about itself (ibv_query_port + ibv_query_gid/pkey). Build it with
/// [`PortAttr::new`] and set fields.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PortAttr {
    /// The port number (1-based).
    pub port_num: u8,
    /// The link layer.
    pub link_layer: LinkLayer,
    /// The logical state.
    pub state: PortState,
    /// The port's base LID.
    pub lid: Lid,
    /// The LID mask control (number of path bits).
    pub lmc: u8,
    /// The subnet manager's LID (where the subnet administrator answers).
    pub sm_lid: Lid,
    /// The service level to reach the subnet manager.
    pub sm_sl: u8,
    /// GID index 0: subnet prefix and port GUID.
    pub gid: Gid,
    /// The whole GID table (index 0 is `gid`); on RoCE it holds the IP-derived GIDs.
    pub gids: Vec<Gid>,
    /// The P_Key table; invalid entries are `PKey(0)`.
    pub pkeys: Vec<PKey>,
    /// The largest MTU the port supports.
    pub max_mtu: IbMtu,
    /// The MTU the link runs at.
    pub active_mtu: IbMtu,
    /// The link rate.
    pub rate: Rate,
}

impl PortAttr {
    /// A port that is Down, InfiniBand, LID 0, no GIDs beyond a zero index 0, an empty
    /// P_Key table, 2048-byte MTU, 10 Gb/s: a driver fills in what it knows.
    pub fn new(port_num: u8) -> PortAttr {
        PortAttr {
            port_num,
            link_layer: LinkLayer::InfiniBand,
            state: PortState::Down,
            lid: Lid(0),
            lmc: 0,
            sm_lid: Lid(0),
            sm_sl: 0,
            gid: Gid::default(),
            gids: vec![Gid::default()],
            pkeys: Vec::new(),
            max_mtu: IbMtu::Mtu2048,
            active_mtu: IbMtu::Mtu2048,
            rate: Rate::GBPS_10,
        }
    }

    /// The index of `pkey` in the P_Key table (membership bit ignored when looking for a
    /// full-member entry that also covers limited membership).
    pub fn pkey_index(&self, pkey: PKey) -> Option<u16> {
        if pkey.base() == 0 {
            // The invalid P_Key names no partition, even if unused table slots hold it.
            return None;
        }
        let exact = self.pkeys.iter().position(|p| *p == pkey);
        let any = || {
            self.pkeys
                .iter()
                .position(|p| p.base() != 0 && p.base() == pkey.base())
        };
        exact.or_else(any).map(|i| i as u16)
    }
}

/// An asynchronous port event (the `IB_EVENT_*` a ULP handles, from the device's
/// asynchronous event queue).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PortEvent {
    /// The port became Active.
    Active,
    /// The port left Active (link down or error).
    Error,
    /// The subnet manager assigned a new LID.
    LidChange,
    /// The P_Key table changed.
    PkeyChange,
    /// The subnet manager asks every client to re-register (it lost its state, e.g. it
    /// restarted): multicast memberships must be joined again.
    ClientReregister,
    /// A different subnet manager took over.
    SmChange,
    /// The GID table changed (on RoCE: an IP address of the netdev came or went).
    GidChange,
    /// The device failed (`IBV_EVENT_DEVICE_FATAL`): every resource on it is dead; the
    /// interface goes down and stays down until it is opened again.
    DeviceFatal,
    /// A QP went to the Error state (`IBV_EVENT_QP_FATAL`, or a completion with an error
    /// status): it carries nothing until it is recreated.
    QpFatal {
        /// The QP.
        qpn: Qpn,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkey_index_prefers_exact_then_same_partition() {
        let mut a = PortAttr::new(1);
        a.pkeys = vec![PKey(0x7fff), PKey(0xffff), PKey(0), PKey(0x8001)];
        assert_eq!(a.pkey_index(PKey(0xffff)), Some(1));
        assert_eq!(a.pkey_index(PKey(0x0001)), Some(3));
        assert_eq!(a.pkey_index(PKey(0x8002)), None);
        assert_eq!(a.pkey_index(PKey(0)), None);
    }
}
