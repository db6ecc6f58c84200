//! Set-up errors. Everything after set-up is a counter ([`CtrlStats`](crate::CtrlStats)).

use ibpoll_wire::PKey;

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
