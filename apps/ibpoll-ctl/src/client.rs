//! Finding the ibpoll process to ask (the only one serving telemetry, or `--pid`) and
//! asking it one command over its socket.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ibpoll::telemetry::{is_stale, socket_dir, socket_path, socket_pid, RUNTIME_DIR_ENV};
use serde_json::Value;

/// How long an answer may take: every control core of every stack is given a second.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest answer line read (a process with thousands of groups is well below).
const ANSWER_MAX: u64 = 256 << 20;

/// Why no answer came.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The socket directory cannot be read.
    #[error(
        "no ibpoll process serves telemetry here: {}: {source} \
         (a process's sockets are in $IBPOLL_RUNTIME_DIR, $XDG_RUNTIME_DIR/ibpoll, /run/ibpoll for root or /tmp/ibpoll-UID; give the same {RUNTIME_DIR_ENV} as the process had)",
        dir.display()
    )]
    NoDir {
        /// The directory.
        dir: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// No live socket in the directory.
    #[error("no running ibpoll process serves telemetry in {} (is it running, built with telemetry on?)", dir.display())]
    NoneRunning {
        /// The directory.
        dir: PathBuf,
    },
    /// Several live sockets: `--pid` must choose.
    #[error("{} ibpoll processes are running ({}): give --pid PID", pids.len(), describe(pids))]
    Several {
        /// Their process ids and names.
        pids: Vec<(u32, String)>,
    },
    /// `--pid PID` has no live socket.
    #[error("process {pid} serves no telemetry in {} ({why})", dir.display())]
    NoSuchPid {
        /// The process id asked for.
        pid: u32,
        /// The directory.
        dir: PathBuf,
        /// No socket, or a stale one.
        why: &'static str,
    },
    /// Talking to the socket failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The socket.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The socket answered something that is not the telemetry protocol.
    #[error("{}: not an ibpoll telemetry socket ({why})", path.display())]
    Protocol {
        /// The socket.
        path: PathBuf,
        /// What was wrong.
        why: String,
    },
    /// The process answered with an error.
    #[error("process {pid} answered {command}: {error}")]
    Refused {
        /// The process.
        pid: u32,
        /// The command.
        command: String,
        /// Its error.
        error: String,
    },
}

fn describe(pids: &[(u32, String)]) -> String {
    pids.iter()
        .map(|(p, n)| format!("{p} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The command name of process `pid` (best effort, for messages).
fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "?".to_owned())
}

/// The socket of the process to ask: `pid`'s, or the only live one in the directory.
pub fn find(pid: Option<u32>) -> Result<PathBuf, ClientError> {
    let dir = socket_dir();
    if let Some(pid) = pid {
        let path = socket_path(&dir, pid);
        return match std::fs::symlink_metadata(&path) {
            Err(_) => Err(ClientError::NoSuchPid {
                pid,
                dir,
                why: "it has no socket there",
            }),
            Ok(_) if is_stale(&path) => Err(ClientError::NoSuchPid {
                pid,
                dir,
                why: "its socket is stale: the process is gone",
            }),
            Ok(_) => Ok(path),
        };
    }
    let entries = std::fs::read_dir(&dir).map_err(|source| ClientError::NoDir {
        dir: dir.clone(),
        source,
    })?;
    let mut live: Vec<(u32, PathBuf)> = entries
        .flatten()
        .map(|e| e.path())
        .filter_map(|p| socket_pid(&p).map(|pid| (pid, p)))
        .filter(|(_, p)| !is_stale(p))
        .collect();
    live.sort();
    match live.len() {
        0 => Err(ClientError::NoneRunning { dir }),
        1 => Ok(live.remove(0).1),
        _ => Err(ClientError::Several {
            pids: live.iter().map(|(p, _)| (*p, comm(*p))).collect(),
        }),
    }
}

/// Asks the process at `path` one command; its answer (checked: no `error`).
pub fn ask(path: &Path, command: &str) -> Result<Value, ClientError> {
    let io = |source| ClientError::Io {
        path: path.to_owned(),
        source,
    };
    let proto = |why: String| ClientError::Protocol {
        path: path.to_owned(),
        why,
    };
    let mut s = UnixStream::connect(path).map_err(io)?;
    s.set_read_timeout(Some(READ_TIMEOUT)).map_err(io)?;
    s.set_write_timeout(Some(READ_TIMEOUT)).map_err(io)?;
    let mut r = BufReader::new(s.try_clone().map_err(io)?).take(ANSWER_MAX);
    let mut line = String::new();
    r.read_line(&mut line).map_err(io)?;
    let hello: Value =
        serde_json::from_str(&line).map_err(|e| proto(format!("its greeting: {e}")))?;
    if !hello["ibpoll"].is_string() {
        return Err(proto(format!("its greeting: {}", line.trim())));
    }
    let pid = hello["pid"].as_u64().unwrap_or(0) as u32;
    s.write_all(format!("{command}\n").as_bytes()).map_err(io)?;
    line.clear();
    r.read_line(&mut line).map_err(io)?;
    if !line.ends_with('\n') {
        return Err(proto("the answer ended early".to_owned()));
    }
    let v: Value = serde_json::from_str(&line).map_err(|e| proto(format!("its answer: {e}")))?;
    if let Some(e) = v["error"].as_str() {
        return Err(ClientError::Refused {
            pid,
            command: command.to_owned(),
            error: e.to_owned(),
        });
    }
    Ok(v)
}
