//! Inspection of a running process (DPDK telemetry's model): a local Unix socket that
//! answers JSON queries about every stack of the process that asked for it
//! ([`StackBuilder::telemetry`](crate::StackBuilder::telemetry)). `ibpoll-ctl` is its
//! command-line client.
//!
//! # Where
//!
//! One socket per process, `<dir>/<pid>.sock`, where `<dir>` is ([`socket_dir`]):
//! `$IBPOLL_RUNTIME_DIR` if set, else `$XDG_RUNTIME_DIR/ibpoll`, else `/run/ibpoll` for
//! root and `/tmp/ibpoll-<uid>` for anyone else. The directory is created with mode
//! 0700 if it does not exist and must belong to the user (else no socket is served, and
//! a warning says why); the socket is created with mode 0600 when the first stack that asks for it
//! starts and removed when the last one stops. A socket left by a process that died
//! (nothing listens on it) is removed when the next one starts.
//!
//! # Protocol
//!
//! A client connects (`SOCK_STREAM`) and reads one line, the greeting:
//!
//! ```text
//! {"ibpoll":"0.1.0","pid":4242,"request_len_max":256,"commands":["/help","/ifaces","/groups","/neigh","/stats"]}
//! ```
//!
//! then writes requests, one per line (a command from [`COMMANDS`], at most
//! [`REQUEST_LEN_MAX`] bytes with its newline), and reads one line of JSON per request:
//! `{"command":"/groups","pid":4242,"stacks":[...]}`, or `{"command":..,"error":".."}`.
//! Every answer lists the process's stacks (`stack`: the builder's name, `id`: unique in
//! the process), each with its interfaces:
//!
//! - `/ifaces`: P_Key, QPN, hardware address, GID, IPv4 address, link state, MTU, the
//!   lanes' and the control core's QPNs, the port's LID and state;
//! - `/groups`: per group its MGID, IPv4 group (if it maps one), kind, state, JoinState,
//!   MLID, the QP and lane it is attached to, packets queued, failures;
//! - `/neigh`: per neighbour its IPv4 address, state, hardware address, path (DLID,
//!   SL), packets queued;
//! - `/stats`: every data lcore's counters and its drops by reason, every controller's
//!   counters and drops by reason.
//!
//! # What it costs the stack
//!
//! The socket is served by one thread of its own (`ibpoll-telemetry`), never by a data
//! lcore. Counters are read live (relaxed loads, as [`Stack::stats`](crate::Stack::stats)).
//! Groups, neighbours and the controllers' counters are copied by the control core
//! between two polls, through the command ring every control message uses (with the
//! default [`ControlCore::OnDataLcore0`](crate::ControlCore::OnDataLcore0) that is data
//! lcore 0, for about a microsecond per group or neighbour, once per query); no lock is
//! taken on the data path. A control core that does not answer within
//! [`CONTROL_TIMEOUT`] makes that interface's entry an error, not a stall.
//!
//! The server serves one connection at a time and bounds each: [`REQUESTS_PER_CONNECTION`]
//! requests, [`IDLE_TIMEOUT`] between them, [`CONNECTION_MAX`] in all, [`WRITE_TIMEOUT`]
//! for a client to take an answer, and a request longer than [`REQUEST_LEN_MAX`] ends
//! the connection after an error answer. A slow client delays other clients, never the
//! stack.

mod query;
mod server;

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ibpoll_dev::Port;

use crate::lcore::Shared;
use crate::setup::{DeviceChoice, StackBuilder};
use crate::stack::IfaceInfo;
use crate::stats::LcoreCounterSet;
use query::Source;

/// The environment variable that names the socket directory (first choice).
pub const RUNTIME_DIR_ENV: &str = "IBPOLL_RUNTIME_DIR";
/// The longest request line, its newline included.
pub const REQUEST_LEN_MAX: usize = 256;
/// Requests one connection may make.
pub const REQUESTS_PER_CONNECTION: usize = 32;
/// How long the server waits for the next request of a connection.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one connection may last.
pub const CONNECTION_MAX: Duration = Duration::from_secs(10);
/// How long a client may take to read an answer.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a query waits for one control core.
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(1);
/// The commands.
pub const COMMANDS: [&str; 5] = ["/help", "/ifaces", "/groups", "/neigh", "/stats"];

/// The effective user id.
fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The directory of the process sockets (see the module docs).
pub fn socket_dir() -> PathBuf {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(d) = env(RUNTIME_DIR_ENV) {
        return PathBuf::from(d);
    }
    if let Some(d) = env("XDG_RUNTIME_DIR") {
        return Path::new(&d).join("ibpoll");
    }
    match euid() {
        0 => PathBuf::from("/run/ibpoll"),
        uid => PathBuf::from(format!("/tmp/ibpoll-{uid}")),
    }
}

/// The socket of process `pid` in `dir`.
pub fn socket_path(dir: &Path, pid: u32) -> PathBuf {
    dir.join(format!("{pid}.sock"))
}

/// The process id a socket's file name names (`<pid>.sock`), if it is one.
pub fn socket_pid(path: &Path) -> Option<u32> {
    let name = path.file_name()?.to_str()?;
    let pid = name.strip_suffix(".sock")?;
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Whether nothing listens on the socket at `path` any more (its process died): only a
/// refused connection counts, so a live server is never taken for a stale one.
pub fn is_stale(path: &Path) -> bool {
    matches!(UnixStream::connect(path), Err(e) if e.kind() == io::ErrorKind::ConnectionRefused)
}

/// Creates `dir` (mode 0700) if needed and checks that it is a directory of this user
/// (the socket itself is mode 0600: nobody else may connect).
fn prepare_dir(dir: &Path) -> Result<(), String> {
    if let Err(e) = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        return Err(format!("cannot create {}: {e}", dir.display()));
    }
    let md = std::fs::symlink_metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !md.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    if md.uid() != euid() {
        return Err(format!(
            "{} belongs to user {}, not to this process's user {}",
            dir.display(),
            md.uid(),
            euid()
        ));
    }
    Ok(())
}

/// Removes the sockets in `dir` whose process is gone, and this process's own (a pid
/// is unique among the living: a file with ours was left by a dead process).
fn sweep(dir: &Path, own: &Path) {
    let _ = std::fs::remove_file(own);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if socket_pid(&p).is_some() && is_stale(&p) {
            tracing::debug!(path = %p.display(), "ibpoll: removing a stale telemetry socket");
            let _ = std::fs::remove_file(&p);
        }
    }
}

/// The process's stacks that serve telemetry, and the server while there is one.
struct Registry {
    next_id: u64,
    sources: Vec<Arc<Source>>,
    server: Option<server::Server>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    next_id: 0,
    sources: Vec::new(),
    server: None,
});

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    // Nothing holding the lock can leave the registry inconsistent.
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The stacks served now (a copy: the server never holds the lock while it answers).
fn sources() -> Vec<Arc<Source>> {
    registry().sources.clone()
}

/// A stack's place in the process's telemetry; dropping it (when the stack goes)
/// withdraws the stack, and the last one stops the server and removes the socket.
#[derive(Debug)]
pub(crate) struct Registration {
    id: u64,
    socket: Option<PathBuf>,
}

impl Registration {
    /// Where the process serves telemetry, if it does.
    pub(crate) fn socket(&self) -> Option<&Path> {
        self.socket.as_deref()
    }
}

/// What a stack shows, before it has its id.
pub(crate) struct Parts {
    name: String,
    device: String,
    port: Arc<dyn Port>,
    shared: Arc<Shared>,
    counters: Vec<LcoreCounterSet>,
    ifaces: Vec<IfaceInfo>,
}

impl Parts {
    pub(crate) fn new(
        b: &StackBuilder,
        port: &Arc<dyn Port>,
        shared: &Arc<Shared>,
        counters: &[LcoreCounterSet],
        ifaces: &[IfaceInfo],
    ) -> Parts {
        let device = match &b.device {
            #[cfg(feature = "sim")]
            Some(DeviceChoice::Fabric { node, .. }) => format!("sim:{node}"),
            Some(DeviceChoice::Device { device, .. }) => device.name().to_owned(),
            // Not reached: a stack without a device is refused before it is built.
            None => "none".to_owned(),
        };
        Parts {
            name: b.name.clone(),
            device,
            port: port.clone(),
            shared: shared.clone(),
            counters: counters.to_vec(),
            ifaces: ifaces.to_vec(),
        }
    }

    /// Adds the stack to the process's telemetry (see [`register`]).
    pub(crate) fn register(self) -> Registration {
        register(|id| Source {
            id,
            name: self.name,
            device: self.device,
            port: self.port,
            shared: self.shared,
            counters: self.counters,
            ifaces: self.ifaces,
        })
    }
}

/// Adds a stack to the process's telemetry, starting the server if it is the first.
/// A server that cannot start is a warning, not an error: the stack runs without it.
fn register(make: impl FnOnce(u64) -> Source) -> Registration {
    let mut r = registry();
    let id = r.next_id;
    r.next_id += 1;
    r.sources.push(Arc::new(make(id)));
    if r.server.is_none() {
        let dir = socket_dir();
        match prepare_dir(&dir).and_then(|()| server::Server::start(&dir)) {
            Ok(s) => r.server = Some(s),
            Err(why) => tracing::warn!(
                "ibpoll: telemetry is not served ({why}); set {RUNTIME_DIR_ENV} to a directory of your own"
            ),
        }
    }
    Registration {
        id,
        socket: r.server.as_ref().map(|s| s.path().to_owned()),
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let server = {
            let mut r = registry();
            r.sources.retain(|s| s.id != self.id);
            if !r.sources.is_empty() {
                return;
            }
            // Removed under the lock: a stack that starts next binds a fresh socket at
            // the same path, which the old server must not remove.
            r.server.take().map(server::Server::unlink)
        };
        if let Some(s) = server {
            s.join();
        }
    }
}
