use ibpoll_wire::{Gid, Lid, PKey, Qpn};

/// Why a set-up operation on a device failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The device has no such port.
    #[error("device {device} has no port {port} (it has {count}); ports are numbered from 1")]
    NoSuchPort {
        /// The device name.
        device: String,
        /// The port asked for.
        port: u8,
        /// How many ports the device has.
        count: u8,
    },
    /// A queue-pair configuration value is out of range.
    #[error("invalid UD QP configuration: {field} = {value}: {fix}")]
    QpConfig {
        /// The offending field.
        field: &'static str,
        /// Its value.
        value: u64,
        /// What would be accepted.
        fix: &'static str,
    },
    /// The P_Key index is not in the port's P_Key table (or the entry is invalid).
    #[error("P_Key index {index} is not a valid entry of port {port}'s P_Key table")]
    PkeyIndex {
        /// The port number.
        port: u8,
        /// The index asked for.
        index: u16,
    },
    /// The port has no P_Key matching the one asked for.
    #[error("port {port} is not a member of partition {pkey}")]
    NoPkey {
        /// The port number.
        port: u8,
        /// The P_Key.
        pkey: PKey,
    },
    /// No such queue pair on this port.
    #[error("no UD QP {qpn} on port {port}")]
    NoSuchQp {
        /// The port number.
        port: u8,
        /// The QP number.
        qpn: Qpn,
    },
    /// An address-handle attribute is unusable.
    #[error("invalid address handle attributes: {reason} (DLID {dlid:?})")]
    AhAttr {
        /// The destination LID asked for.
        dlid: Lid,
        /// What is wrong.
        reason: &'static str,
    },
    /// The address handle is unknown or already destroyed.
    #[error("address handle {0:#x} is unknown or already destroyed")]
    NoSuchAh(u32),
    /// A multicast attach/detach failed.
    #[error("multicast {op} of QP {qpn} to {mgid} (MLID {mlid:?}) failed: {reason}")]
    Mcast {
        /// "attach" or "detach".
        op: &'static str,
        /// The QP.
        qpn: Qpn,
        /// The group.
        mgid: Gid,
        /// The group's MLID.
        mlid: Lid,
        /// What is wrong.
        reason: &'static str,
    },
    /// A fixed-size resource table is full.
    #[error("no more {what}: the limit is {limit}")]
    Exhausted {
        /// The resource.
        what: &'static str,
        /// Its bound.
        limit: usize,
    },
    /// The port is not in a state that allows the operation.
    #[error("port {port} is {state:?}; {op} needs it Active")]
    PortNotActive {
        /// The port number.
        port: u8,
        /// Its state.
        state: crate::PortState,
        /// The operation refused.
        op: &'static str,
    },
    /// A MAD could not be sent.
    #[error("MAD send to LID {dlid:?} QP {dqpn} failed: {reason}")]
    MadSend {
        /// The destination LID.
        dlid: Lid,
        /// The destination QP.
        dqpn: Qpn,
        /// What is wrong.
        reason: &'static str,
    },
    /// The port has no subnet administrator to reach: its link layer is Ethernet (RoCE),
    /// where a multicast join is an attach and paths are computed from GIDs.
    #[error(
        "port {port} of {device} is RoCE (Ethernet link layer): it has no subnet \
         administrator and no MAD channel to one; joins there are attaches and paths \
         come from GIDs"
    )]
    NoSubnetAdmin {
        /// The device name.
        device: String,
        /// The port number.
        port: u8,
    },
    /// A driver's own set-up call failed (a verbs call, the kernel, registering memory
    /// with the HCA): the driver's typed error, which names the cause and the fix, is
    /// the source.
    #[error("{op} failed")]
    Driver {
        /// The operation (`create_ud_qp`, `create_ah`, ...).
        op: &'static str,
        /// The driver's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// An operating-system call failed.
    #[error("{op} failed")]
    Io {
        /// The operation.
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}
