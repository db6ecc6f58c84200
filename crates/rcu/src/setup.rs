//! Creating a domain and registering readers: the control path.

use std::fmt;

use crate::domain::{Domain, READERS_MAX, RETIRED_MAX_DEFAULT};
use crate::error::Error;
use crate::publisher::Publisher;
use crate::reader::Reader;
use crate::sync::Arc;

/// The bounds of a domain, fixed at creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Reader slots: at most this many [`Reader`]s exist at once. `1..=READERS_MAX`.
    /// The publisher scans this many slots per reclaim, so size it to the data cores.
    pub readers_max: usize,
    /// Retired snapshots the publisher keeps while readers may still hold them; when this
    /// many are pending, [`Publisher::publish`] hands its snapshot back. At least 1.
    pub retired_max: usize,
}

impl Config {
    /// `readers_max` slots and [`RETIRED_MAX_DEFAULT`] retired snapshots.
    pub fn new(readers_max: usize) -> Self {
        Config {
            readers_max,
            retired_max: RETIRED_MAX_DEFAULT,
        }
    }

    fn check(&self) -> Result<(), Error> {
        if !(1..=READERS_MAX).contains(&self.readers_max) {
            return Err(Error::BadConfig {
                field: "readers_max",
                value: self.readers_max,
                fix: "must be 1..=64 (READERS_MAX): one slot per data core",
            });
        }
        if self.retired_max == 0 {
            return Err(Error::BadConfig {
                field: "retired_max",
                value: self.retired_max,
                fix: "must be at least 1",
            });
        }
        Ok(())
    }
}

/// Creates a domain whose readers see `initial` until the first publish, with
/// [`Config::new(readers_max)`](Config::new). See [`with_config`].
pub fn new<T: Send + Sync + 'static>(
    initial: T,
    readers_max: usize,
) -> Result<(Publisher<T>, Registry<T>), Error> {
    with_config(initial, Config::new(readers_max))
}

/// Creates a domain: its one [`Publisher`], and a [`Registry`] that hands out readers.
/// Allocates everything the domain needs except the snapshots themselves.
pub fn with_config<T: Send + Sync + 'static>(
    initial: T,
    config: Config,
) -> Result<(Publisher<T>, Registry<T>), Error> {
    config.check()?;
    let domain = Arc::new(Domain::new(initial, config.readers_max));
    let registry = Registry::new(domain.clone());
    Ok((Publisher::new(domain, config.retired_max), registry))
}

/// Hands out [`Reader`]s of one domain. Cheap to clone; any thread may register.
pub struct Registry<T> {
    domain: Arc<Domain<T>>,
}

impl<T> Registry<T> {
    pub(crate) fn new(domain: Arc<Domain<T>>) -> Self {
        Registry { domain }
    }

    /// Registers a reader in a free slot, online: it sees the current snapshot and holds
    /// back reclamation from now on, until it quiesces, goes offline or is dropped.
    /// Fails with [`Error::ReadersExhausted`] when `readers_max` readers exist.
    pub fn register(&self) -> Result<Reader<T>, Error> {
        let index = self.domain.claim_slot()?;
        Ok(Reader::new(self.domain.clone(), index))
    }

    /// The domain's reader slots.
    pub fn readers_max(&self) -> usize {
        self.domain.readers_max()
    }

    /// Readers that exist now (online or offline).
    pub fn registered(&self) -> usize {
        self.domain.registered()
    }
}

impl<T> Clone for Registry<T> {
    fn clone(&self) -> Self {
        Registry {
            domain: self.domain.clone(),
        }
    }
}

impl<T> fmt::Debug for Registry<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("readers_max", &self.readers_max())
            .field("registered", &self.registered())
            .finish()
    }
}
