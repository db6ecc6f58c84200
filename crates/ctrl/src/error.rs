//! Set-up errors. Everything after set-up is a counter ([`CtrlStats`](crate::CtrlStats)).

use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use ibpoll_wire::{Gid, PKey};

/// Why a controller could not be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A [`CtrlConfig`](crate::CtrlConfig) field is out of range.
    #[error("ibpoll-ctrl: bad config: {field} = {value}: {fix}")]
    BadConfig {
        /// The offending field.
        field: &'static str,
        /// Its value.
        value: u64,
        /// What would be accepted.
        fix: &'static str,
    },
    /// The port has no entry for the partition the interface is configured for.
    #[error("port {port} is not a member of partition {pkey}: add it to the port's P_Key table or configure another P_Key")]
    NoPkey {
        /// The port number.
        port: u8,
        /// The configured P_Key.
        pkey: PKey,
    },
    /// The port's MAD channel (QP1) could not be opened.
    #[error("opening the MAD channel of port {port} failed")]
    MadChannel {
        /// The port number.
        port: u8,
        /// The driver's error.
        #[source]
        source: ibpoll_dev::Error,
    },
    /// The lane QPs given do not start with the interface's QP.
    #[error("{lane_qpns} lane QPs given for {data_cores} data cores: the first must be the interface's QP")]
    Lanes {
        /// `CtrlConfig::data_cores`.
        data_cores: usize,
        /// Lane QPs given.
        lane_qpns: usize,
    },
    /// Another controller drives the port's SA memberships (see `owner`): one ibpoll
    /// process per InfiniBand port, one controller per partition in it.
    #[error("InfiniBand port {port_guid:#018x} is already in use by ibpoll process {}: {what} (lock {}); SA memberships belong to a port, so only one ibpoll process may drive it: stop that process or use another port", pid.map_or_else(|| "(PID unknown)".to_owned(), |p| p.to_string()), path.display())]
    PortOwned {
        /// The port.
        port_guid: u64,
        /// The owner's PID, as written in the lock file.
        pid: Option<u32>,
        /// The lock file.
        path: PathBuf,
        /// What holds it.
        what: &'static str,
    },
    /// The port's owner lock file could not be created or locked.
    #[error("the port owner lock {} could not be taken: set IBPOLL_RUN_DIR to a writable directory shared by every ibpoll process of this machine", path.display())]
    OwnerLock {
        /// The lock file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A RoCE interface needs an IPv4 address: its GID is the address's IPv4-mapped
    /// GID.
    #[error("port {port} is RoCE (Ethernet): the interface needs an IPv4 address (CtrlConfig::ipv4), whose IPv4-mapped GID is its GID")]
    RoceNeedsIpv4 {
        /// The port number.
        port: u8,
    },
    /// The RoCE port's GID table has no entry for the interface address.
    #[error("RoCE port {port} has no GID-table entry ::ffff:{} for the interface address: add the address to the port's netdev (ip addr add {}/24 dev <netdev>) or configure the address it has", Ipv4Addr::from(*ip), Ipv4Addr::from(*ip))]
    RoceNoGid {
        /// The port number.
        port: u8,
        /// The interface address.
        ip: [u8; 4],
    },
    /// The snapshot domain could not be created.
    #[error("creating the snapshot domain for {data_cores} data cores failed")]
    Snapshot {
        /// Data cores asked for.
        data_cores: usize,
        /// The rcu error.
        #[source]
        source: ibpoll_rcu::Error,
    },
}

/// The first difference [`Controller::check_snapshot`](crate::Controller::check_snapshot)
/// found between the controller's state and what it derives from it: the group table's
/// indexes and the published snapshot. Any of these is a bug in the controller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotMismatch {
    /// A group's index entry is not the one its state gives: a write to it was not
    /// noted, or not reindexed.
    #[error("group {mgid}: its index entry is not the one its state gives")]
    GroupIndex {
        /// The group.
        mgid: Gid,
    },
    /// The group indexes differ from indexes derived afresh from the entries.
    #[error("group indexes differ from their entries")]
    GroupIndexes,
    /// The published snapshot is not the last one built.
    #[error("published generation {published} but {built} was built")]
    Generation {
        /// The published snapshot's generation.
        published: u64,
        /// The last generation built.
        built: u64,
    },
    /// A scalar field differs.
    #[error("snapshot field {field}: published {published}, fresh {fresh}")]
    Scalar {
        /// The field: `link_up`, `mtu`, `pkey` or `scope`.
        field: &'static str,
        /// Its published value.
        published: u64,
        /// Its value in a snapshot built afresh.
        fresh: u64,
    },
    /// The broadcast entries are not the same one.
    #[error("broadcast entry differs")]
    Broadcast,
    /// The published snapshot's next-hop array does not match its groups and neighbours.
    #[error("the next-hop array differs from the snapshot's entries")]
    NextHops,
    /// A group's entry is in one snapshot and not (the same one) in the other.
    #[error("group {mgid}: the {side} snapshot has an entry the other lacks")]
    Group {
        /// The group.
        mgid: Gid,
        /// The snapshot holding the entry.
        side: SnapshotSide,
    },
    /// A neighbour's entry is in one snapshot and not (the same one) in the other.
    #[error("neighbour {ip}: the {side} snapshot has an entry the other lacks")]
    Neighbour {
        /// The neighbour's address.
        ip: std::net::IpAddr,
        /// The snapshot holding the entry.
        side: SnapshotSide,
    },
}

/// One of the two snapshots [`SnapshotMismatch`] compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotSide {
    /// The snapshot the data cores read.
    Published,
    /// One built afresh from the current state.
    Fresh,
}

impl fmt::Display for SnapshotSide {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SnapshotSide::Published => "published",
            SnapshotSide::Fresh => "fresh",
        })
    }
}
