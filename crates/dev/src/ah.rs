use ibpoll_wire::{Gid, Lid, Rate};

/// Global routing attributes of an address handle (a GRH is sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GrhAttr {
    /// The destination GID (an MGID for multicast).
    pub dgid: Gid,
    /// The 20-bit flow label.
    pub flow_label: u32,
    /// Index of the source GID in the port's GID table.
    pub sgid_index: u8,
    /// The hop limit.
    pub hop_limit: u8,
    /// The traffic class.
    pub traffic_class: u8,
}

/// What an address handle is created from (ibv_ah_attr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AhAttr {
    /// The destination LID (an MLID for multicast).
    pub dlid: Lid,
    /// The service level.
    pub sl: u8,
    /// Source path bits (LMC).
    pub src_path_bits: u8,
    /// The static rate.
    pub static_rate: Rate,
    /// Global routing, required for multicast.
    pub grh: Option<GrhAttr>,
}

/// An address handle: an opaque, copyable name for a destination, valid until destroyed
/// on the port that created it. A descriptor carries it by value so that a send costs no
/// reference counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddressHandle(u32);

impl AddressHandle {
    /// A handle from a driver's raw value.
    pub const fn from_raw(raw: u32) -> AddressHandle {
        AddressHandle(raw)
    }

    /// The driver's raw value.
    pub const fn raw(self) -> u32 {
        self.0
    }
}
