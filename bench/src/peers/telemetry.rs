//! A client of DPDK's telemetry socket (DPDK 20.05 and later, `dpdk_telemetry.v2` in the
//! process's runtime directory): a `SOCK_SEQPACKET` Unix socket; on connecting, the
//! process sends one JSON greeting (`{"version": "DPDK 22.11.11", "pid": ...,
//! "max_output_len": 16384}`); then each message sent is a command
//! (`/ethdev/stats,0`) and each answer one JSON object keyed by the command without its
//! parameter (`{"/ethdev/stats": {"ipackets": ..., ...}}`).
//!
//! std has no `SOCK_SEQPACKET`: the socket is made with libc and handed to std's
//! `UnixStream` / `UnixListener` (`From<OwnedFd>`), whose `read` returns one message.
//! [`listen`] is the server side, for tests that stand in for a DPDK process.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The socket's file name in the runtime directory.
pub const SOCKET_NAME: &str = "dpdk_telemetry.v2";

/// Room for one answer: DPDK 22.11 caps them at `max_output_len` (16 KiB).
const MESSAGE_MAX: usize = 64 * 1024;

/// What went wrong talking to a DPDK process.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// The socket could not be made, reached or bound.
    #[error("{}: {source}", path.display())]
    Socket {
        /// The socket's path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A path longer than a Unix socket address holds (108 bytes) or with a NUL.
    #[error("{}: not usable as a Unix socket address (too long, or a NUL byte)", .0.display())]
    BadPath(PathBuf),
    /// Reading or writing a message failed (a timeout included).
    #[error("telemetry I/O: {0}")]
    Io(#[from] io::Error),
    /// The process closed the connection.
    #[error("the DPDK process closed its telemetry connection")]
    Closed,
    /// An answer that is not the JSON object expected.
    #[error("telemetry answered {cmd:?} with {text:?}, not the JSON object expected")]
    Answer {
        /// The command sent.
        cmd: String,
        /// The answer (cut at 200 characters).
        text: String,
    },
}

/// The runtime directories DPDK uses for `--file-prefix prefix`, in the order it picks
/// them: `/var/run/dpdk/<prefix>` as root, else `$XDG_RUNTIME_DIR/dpdk/<prefix>` or
/// `/tmp/dpdk/<prefix>`.
pub fn runtime_dirs(prefix: &str) -> Vec<PathBuf> {
    let mut v = vec![Path::new("/var/run/dpdk").join(prefix)];
    if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR") {
        v.push(Path::new(&x).join("dpdk").join(prefix));
    }
    v.push(Path::new("/tmp/dpdk").join(prefix));
    v
}

/// A new `SOCK_SEQPACKET` Unix socket.
fn seqpacket(path: &Path) -> Result<OwnedFd, TelemetryError> {
    // SAFETY: socket(2) takes no pointers; its result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(TelemetryError::Socket {
            path: path.to_path_buf(),
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: `fd` is a descriptor socket(2) just opened; nothing else owns or closes it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `path` as a Unix socket address and its length.
fn sockaddr(path: &Path) -> Result<(libc::sockaddr_un, libc::socklen_t), TelemetryError> {
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain old data (an integer and a byte array), for which
    // all-zero bytes are a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.is_empty() || bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(TelemetryError::BadPath(path.to_path_buf()));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, &s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = s as libc::c_char;
    }
    let len = std::mem::offset_of!(libc::sockaddr_un, sun_path) + bytes.len() + 1;
    Ok((addr, len as libc::socklen_t))
}

fn check(rc: libc::c_int, path: &Path) -> Result<(), TelemetryError> {
    if rc == 0 {
        Ok(())
    } else {
        Err(TelemetryError::Socket {
            path: path.to_path_buf(),
            source: io::Error::last_os_error(),
        })
    }
}

/// A connection to the `SOCK_SEQPACKET` socket at `path`.
pub fn connect_seqpacket(path: &Path) -> Result<UnixStream, TelemetryError> {
    let fd = seqpacket(path)?;
    let (addr, len) = sockaddr(path)?;
    // SAFETY: `addr` is an initialised sockaddr_un that outlives the call and `len` is
    // within it; `fd` is an open socket.
    let rc = unsafe { libc::connect(fd.as_raw_fd(), (&raw const addr).cast(), len) };
    check(rc, path)?;
    Ok(UnixStream::from(fd))
}

/// A `SOCK_SEQPACKET` socket listening at `path` (the file must not exist).
pub fn listen(path: &Path) -> Result<UnixListener, TelemetryError> {
    let fd = seqpacket(path)?;
    let (addr, len) = sockaddr(path)?;
    // SAFETY: as in `connect_seqpacket`: a valid address of `len` bytes, an open socket.
    let rc = unsafe { libc::bind(fd.as_raw_fd(), (&raw const addr).cast(), len) };
    check(rc, path)?;
    // SAFETY: listen(2) takes no pointers; `fd` is an open, bound socket.
    let rc = unsafe { libc::listen(fd.as_raw_fd(), 4) };
    check(rc, path)?;
    Ok(UnixListener::from(fd))
}

/// One port's counters (`/ethdev/stats,<port>`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    pub ipackets: u64,
    pub opackets: u64,
    pub imissed: u64,
    pub ierrors: u64,
    pub oerrors: u64,
    pub rx_nombuf: u64,
}

/// A connection to a DPDK process's telemetry.
#[derive(Debug)]
pub struct Telemetry {
    conn: UnixStream,
    /// The process's greeting (`version`, `pid`, `max_output_len`).
    pub greeting: Value,
    buf: Vec<u8>,
}

impl Telemetry {
    /// Connects and reads the greeting; every later read waits at most `timeout`.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Telemetry, TelemetryError> {
        let conn = connect_seqpacket(path)?;
        conn.set_read_timeout(Some(timeout))?;
        let mut t = Telemetry {
            conn,
            greeting: Value::Null,
            buf: vec![0; MESSAGE_MAX],
        };
        t.greeting = t.message("(greeting)")?;
        Ok(t)
    }

    fn message(&mut self, cmd: &str) -> Result<Value, TelemetryError> {
        let n = self.conn.read(&mut self.buf)?;
        if n == 0 {
            return Err(TelemetryError::Closed);
        }
        let text = &self.buf[..n];
        serde_json::from_slice::<Value>(text)
            .ok()
            .filter(Value::is_object)
            .ok_or_else(|| TelemetryError::Answer {
                cmd: cmd.to_string(),
                text: String::from_utf8_lossy(text).chars().take(200).collect(),
            })
    }

    /// Sends `cmd` and returns the answer's value under the command's name.
    pub fn query(&mut self, cmd: &str) -> Result<Value, TelemetryError> {
        self.conn.write_all(cmd.as_bytes())?;
        let v = self.message(cmd)?;
        let name = cmd.split(',').next().unwrap_or(cmd);
        match v.get(name) {
            Some(x) if !x.is_null() => Ok(x.clone()),
            _ => Err(TelemetryError::Answer {
                cmd: cmd.to_string(),
                text: v.to_string().chars().take(200).collect(),
            }),
        }
    }

    /// The ethdev port ids (`/ethdev/list`).
    pub fn ports(&mut self) -> Result<Vec<u64>, TelemetryError> {
        let v = self.query("/ethdev/list")?;
        v.as_array()
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .ok_or_else(|| TelemetryError::Answer {
                cmd: String::from("/ethdev/list"),
                text: v.to_string(),
            })
    }

    /// One port's counters.
    pub fn port_stats(&mut self, port: u64) -> Result<PortStats, TelemetryError> {
        let cmd = format!("/ethdev/stats,{port}");
        let v = self.query(&cmd)?;
        let f = |k: &str| {
            v[k].as_u64().ok_or_else(|| TelemetryError::Answer {
                cmd: cmd.clone(),
                text: format!(
                    "no whole number `{k}` in {}",
                    v.to_string().chars().take(160).collect::<String>()
                ),
            })
        };
        Ok(PortStats {
            ipackets: f("ipackets")?,
            opackets: f("opackets")?,
            imissed: f("imissed")?,
            ierrors: f("ierrors")?,
            oerrors: f("oerrors")?,
            rx_nombuf: f("rx_nombuf")?,
        })
    }

    fn sample(&mut self, ports: &[u64]) -> Result<(Instant, Vec<PortStats>), TelemetryError> {
        let s = ports
            .iter()
            .map(|&p| self.port_stats(p))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((Instant::now(), s))
    }
}

/// Two samples of every port, `elapsed` apart.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    pub elapsed: Duration,
    /// (port, first sample, second sample).
    pub ports: Vec<(u64, PortStats, PortStats)>,
}

impl Measurement {
    fn delta(&self, f: impl Fn(&PortStats) -> u64) -> u64 {
        self.ports
            .iter()
            .map(|(_, a, b)| f(b).saturating_sub(f(a)))
            .sum()
    }

    /// Packets received by every port in the window.
    pub fn rx_packets(&self) -> u64 {
        self.delta(|s| s.ipackets)
    }

    /// Packets sent by every port in the window.
    pub fn tx_packets(&self) -> u64 {
        self.delta(|s| s.opackets)
    }

    /// The figures as JSON: `rx_pps` and `tx_pps` summed over the ports (what the
    /// forwarding lcore received and sent), the packets, drops by counter, per port.
    pub fn to_json(&self) -> Value {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let per_port: Vec<Value> = self
            .ports
            .iter()
            .map(|(p, a, b)| {
                json!({
                    "port": p,
                    "rx_pps": b.ipackets.saturating_sub(a.ipackets) as f64 / secs,
                    "tx_pps": b.opackets.saturating_sub(a.opackets) as f64 / secs,
                })
            })
            .collect();
        json!({
            "duration_s": secs,
            "rx_packets": self.rx_packets(),
            "tx_packets": self.tx_packets(),
            "rx_pps": self.rx_packets() as f64 / secs,
            "tx_pps": self.tx_packets() as f64 / secs,
            "drops": {
                "imissed": self.delta(|s| s.imissed),
                "ierrors": self.delta(|s| s.ierrors),
                "oerrors": self.delta(|s| s.oerrors),
                "rx_nombuf": self.delta(|s| s.rx_nombuf),
            },
            "ports": per_port,
        })
    }
}

/// Waits (at most `wait`) until the ports have received something, lets `warmup` pass,
/// then samples every port twice, `duration` apart.
pub fn measure(
    t: &mut Telemetry,
    wait: Duration,
    warmup: Duration,
    duration: Duration,
) -> Result<Measurement, TelemetryError> {
    let ports = t.ports()?;
    let start = Instant::now();
    loop {
        let (_, s) = t.sample(&ports)?;
        if s.iter().any(|p| p.ipackets > 0) || start.elapsed() >= wait {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(warmup);
    let (t0, a) = t.sample(&ports)?;
    std::thread::sleep(duration);
    let (t1, b) = t.sample(&ports)?;
    Ok(Measurement {
        elapsed: t1.duration_since(t0),
        ports: ports
            .into_iter()
            .zip(a.into_iter().zip(b))
            .map(|(p, (a, b))| (p, a, b))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_paths_are_checked() {
        let long = PathBuf::from(format!("/tmp/{}", "x".repeat(200)));
        assert!(matches!(sockaddr(&long), Err(TelemetryError::BadPath(_))));
        assert!(matches!(
            sockaddr(Path::new("")),
            Err(TelemetryError::BadPath(_))
        ));
        let (_, len) = sockaddr(Path::new("/tmp/a")).unwrap();
        assert_eq!(len as usize, std::mem::size_of::<libc::sa_family_t>() + 7);
    }

    #[test]
    fn no_socket_is_a_named_error() {
        let e = Telemetry::connect(
            Path::new("/nonexistent/ibpoll/dpdk_telemetry.v2"),
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ibpoll"), "{e}");
    }

    #[test]
    fn runtime_dirs_start_with_roots() {
        let d = runtime_dirs("p1");
        assert_eq!(d[0], Path::new("/var/run/dpdk/p1"));
        assert_eq!(d.last().unwrap(), Path::new("/tmp/dpdk/p1"));
    }

    #[test]
    fn a_measurement_sums_the_ports() {
        let s = |i, o| PortStats {
            ipackets: i,
            opackets: o,
            ..PortStats::default()
        };
        let m = Measurement {
            elapsed: Duration::from_secs(2),
            ports: vec![(0, s(100, 90), s(300, 290)), (1, s(0, 0), s(200, 200))],
        };
        assert_eq!((m.rx_packets(), m.tx_packets()), (400, 400));
        let v = m.to_json();
        assert_eq!(v["rx_pps"], json!(200.0));
        assert_eq!(v["ports"][0]["rx_pps"], json!(100.0));
        assert_eq!(v["drops"]["imissed"], json!(0));
    }
}
