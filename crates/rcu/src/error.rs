//! The crate's error types. Set-up failures are one `#[non_exhaustive]` enum, [`Error`];
//! a publish that finds the retire list full hands its snapshot back in a [`Full`].

use std::fmt;

use crate::domain::READERS_MAX;

/// Everything that can fail while creating a domain or registering a reader.
#[non_exhaustive]
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A [`Config`](crate::Config) field is out of range.
    #[error("rcu domain: bad config: {field} = {value}: {fix}")]
    BadConfig {
        /// The offending field of `Config`.
        field: &'static str,
        /// The value that was passed.
        value: usize,
        /// What the field must be.
        fix: &'static str,
    },

    /// [`Registry::register`](crate::Registry::register) found every reader slot taken.
    #[error(
        "all {readers_max} reader slots of this snapshot domain are taken: drop a Reader \
         first, or create the domain with a larger Config::readers_max (at most {max})",
        max = READERS_MAX
    )]
    ReadersExhausted {
        /// The domain's `Config::readers_max`.
        readers_max: usize,
    },
}

/// [`Publisher::publish`](crate::Publisher::publish) found `retired_max` snapshots still
/// waiting for some reader to pass a quiescent point, so it published nothing. The
/// snapshot comes back; publish it again once [`Publisher::reclaim`](crate::Publisher::reclaim)
/// has made room (the readers that hold it back are the ones that neither quiesce nor go
/// offline).
pub struct Full<T> {
    pub(crate) snapshot: T,
    pub(crate) retired_max: usize,
}

impl<T> Full<T> {
    /// The snapshot that was not published.
    pub fn into_snapshot(self) -> T {
        self.snapshot
    }

    /// The domain's `Config::retired_max`: how many snapshots were waiting.
    pub fn retired_max(&self) -> usize {
        self.retired_max
    }
}

impl<T> fmt::Debug for Full<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Full")
            .field("retired_max", &self.retired_max)
            .finish_non_exhaustive()
    }
}

impl<T> fmt::Display for Full<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "snapshot not published: {} retired snapshots still wait for a reader to pass a \
             quiescent point; call Publisher::reclaim and publish again, and make sure every \
             data core calls Reader::quiescent each loop or goes offline while it idles",
            self.retired_max
        )
    }
}

impl<T> std::error::Error for Full<T> {}
