//! One ibpoll control process per InfiniBand port: an advisory lock keyed by the port
//! GUID.
//!
//! The SA keeps memberships per port (PortGID), not per process: if two processes on
//! one port join a group, the SA records one membership, and the first leave ends it
//! for both (the switch stops forwarding the group to the port). The kernel multiplexes
//! its own users per port in ib_sa's multicast module; a userspace SA client must not
//! share the port with another one. So a controller that talks to the SA claims the
//! port first: an exclusive `flock(2)` on `<dir>/ibpoll-port-<GUID>.lock`, holding the
//! owner's PID as text. A second process is refused with [`Error::PortOwned`], which
//! names the owner's PID. The kernel drops the lock when the owner dies, `kill -9`
//! included, so a lock never outlives its process; the next owner then cleans up at
//! the SA what the dead one left (see the controller's startup cleanup).
//!
//! Within one process the claim is shared: every controller on the port (one per
//! partition) holds the same lock, and a second claim of the same partition is refused
//! (two controllers of one partition on one port would break each other's joins just
//! as two processes would).
//!
//! The lock only works between processes that use the same directory:
//! [`default_owner_lock_dir`] is `$IBPOLL_RUN_DIR` if set, else `/run/lock` (the
//! system's lock directory, shared by all users) when writable, else
//! `$XDG_RUNTIME_DIR`, else the temporary directory.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use ibpoll_wire::PKey;

use crate::Error;

/// The directory owner locks live in by default (see the module docs).
pub fn default_owner_lock_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("IBPOLL_RUN_DIR") {
        return PathBuf::from(d);
    }
    let run_lock = Path::new("/run/lock");
    if writable_dir(run_lock) {
        return run_lock.to_path_buf();
    }
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

#[allow(unsafe_code)] // access(2): no memory is passed but the path
fn writable_dir(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    dir.is_dir() && unsafe { libc::access(c.as_ptr(), libc::W_OK) } == 0
}

/// The lock file of port `port_guid` in `dir`.
pub fn owner_lock_path(dir: &Path, port_guid: u64) -> PathBuf {
    dir.join(format!("ibpoll-port-{port_guid:016x}.lock"))
}

/// This process's ownership of one port: the locked file and the partitions whose
/// controllers hold it.
#[derive(Debug)]
struct PortOwner {
    /// Held open (and locked) for as long as any controller of the port lives.
    _file: File,
    path: PathBuf,
    partitions: Mutex<Vec<PKey>>,
}

/// Ports this process owns, by lock path.
static OWNED: Mutex<Vec<(PathBuf, Weak<PortOwner>)>> = Mutex::new(Vec::new());

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the data consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One controller's claim on its port and partition; dropping it gives the partition
/// back, and the last claim of the port releases the lock.
#[derive(Debug)]
pub struct PortClaim {
    owner: Arc<PortOwner>,
    pkey: PKey,
}

impl PortClaim {
    /// Claims port `port_guid` in `dir` for the controller of partition `pkey`.
    pub fn claim(dir: &Path, port_guid: u64, pkey: PKey) -> Result<PortClaim, Error> {
        let path = owner_lock_path(dir, port_guid);
        let mut owned = lock(&OWNED);
        owned.retain(|(_, w)| w.strong_count() > 0);
        let existing = owned
            .iter()
            .find(|(p, _)| *p == path)
            .and_then(|(_, w)| w.upgrade());
        let owner = match existing {
            Some(o) => o,
            None => {
                let o = Arc::new(acquire(dir, &path, port_guid)?);
                owned.push((path.clone(), Arc::downgrade(&o)));
                o
            }
        };
        drop(owned);
        let mut parts = lock(&owner.partitions);
        if parts.iter().any(|p| p.base() == pkey.base()) {
            return Err(Error::PortOwned {
                port_guid,
                pid: Some(std::process::id()),
                path,
                what: "a controller of this process already drives that partition on it",
            });
        }
        parts.push(pkey);
        drop(parts);
        Ok(PortClaim { owner, pkey })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.owner.path
    }
}

impl Drop for PortClaim {
    fn drop(&mut self) {
        lock(&self.owner.partitions).retain(|p| p.base() != self.pkey.base());
    }
}

/// Opens and locks the port's lock file, and writes our PID into it.
fn acquire(dir: &Path, path: &Path, port_guid: u64) -> Result<PortOwner, Error> {
    let io = |source| Error::OwnerLock {
        path: path.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    // Another user's lock file cannot be opened for writing; locking needs only a
    // descriptor, so it is locked read-only then (and our PID is not written).
    let (mut file, writable) = match OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(path)
    {
        Ok(f) => (f, true),
        Err(e) if e.kind() == ErrorKind::PermissionDenied => (File::open(path).map_err(io)?, false),
        Err(e) => return Err(io(e)),
    };
    match try_lock_exclusive(&file) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::WouldBlock => {
            return Err(Error::PortOwned {
                port_guid,
                pid: read_pid(path),
                path: path.to_path_buf(),
                what: "another process drives it",
            })
        }
        Err(e) => return Err(io(e)),
    }
    if writable {
        let pid = format!("{}\n", std::process::id());
        file.set_len(0)
            .and_then(|()| file.write_all(pid.as_bytes()))
            .map_err(io)?;
    }
    Ok(PortOwner {
        _file: file,
        path: path.to_path_buf(),
        partitions: Mutex::new(Vec::new()),
    })
}

/// `flock(LOCK_EX | LOCK_NB)`: held until the descriptor is closed (or the process
/// ends).
#[allow(unsafe_code)] // flock(2) on a descriptor we own
fn try_lock_exclusive(file: &File) -> std::io::Result<()> {
    // SAFETY: `file` owns an open descriptor for the duration of the call; flock takes
    // no memory.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The PID the owner wrote, if it did (it writes right after locking).
fn read_pid(path: &Path) -> Option<u32> {
    let mut s = String::new();
    File::open(path).ok()?.read_to_string(&mut s).ok()?;
    s.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ibpoll-owner-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn claims_share_the_lock_in_a_process_and_refuse_a_partition_twice() {
        let dir = tmp("share");
        let a = PortClaim::claim(&dir, 0x1234, PKey::DEFAULT).unwrap();
        let pid = std::fs::read_to_string(a.path()).unwrap();
        assert_eq!(pid.trim(), std::process::id().to_string());
        let b = PortClaim::claim(&dir, 0x1234, PKey(0x8001)).unwrap();
        assert_eq!(a.path(), b.path());
        match PortClaim::claim(&dir, 0x1234, PKey(0x7fff)) {
            Err(e @ Error::PortOwned { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(&std::process::id().to_string()), "{msg}");
                assert!(msg.contains("0x0000000000001234"), "{msg}");
            }
            other => panic!("the same partition twice: {other:?}"),
        }
        drop(a);
        // The partition is free again; the lock stays while `b` holds it.
        let c = PortClaim::claim(&dir, 0x1234, PKey::DEFAULT).unwrap();
        // Another open description of the file (as another process would have) cannot
        // lock it while we hold it, and can once every claim is gone.
        let other = File::open(owner_lock_path(&dir, 0x1234)).unwrap();
        assert_eq!(
            try_lock_exclusive(&other).unwrap_err().kind(),
            ErrorKind::WouldBlock
        );
        drop((b, c));
        try_lock_exclusive(&other).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
