//! The telemetry thread: accepts connections on the process's socket and answers their
//! requests one line at a time, within the bounds the module docs state.

use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{
    query, socket_path, sweep, CONNECTION_MAX, IDLE_TIMEOUT, REQUESTS_PER_CONNECTION,
    REQUEST_LEN_MAX, WRITE_TIMEOUT,
};

/// How often the thread looks for a connection (or its stop flag) when none waits.
const ACCEPT_POLL: Duration = Duration::from_millis(20);
/// How long one read of a connection waits before the bounds are checked again.
const READ_SLICE: Duration = Duration::from_millis(50);

/// The running server.
#[derive(Debug)]
pub(super) struct Server {
    path: PathBuf,
    /// Set (Release) to end the thread; loaded (Acquire) by it between connections and
    /// reads.
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Server {
    /// Binds `<dir>/<pid>.sock` (replacing what a dead process left there) and starts
    /// the thread.
    pub(super) fn start(dir: &Path) -> Result<Server, String> {
        let path = socket_path(dir, std::process::id());
        sweep(dir, &path);
        let listener = UnixListener::bind(&path)
            .map_err(|e| format!("cannot bind {}: {e}", path.display()))?;
        let fail = |what: &str, e: io::Error| {
            let _ = std::fs::remove_file(&path);
            format!("{what} {}: {e}", path.display())
        };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| fail("cannot restrict", e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| fail("cannot set up", e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("ibpoll-telemetry".to_owned())
            .spawn(move || run(&listener, &flag))
            .map_err(|e| fail("cannot start the thread serving", e))?;
        tracing::info!(path = %path.display(), "ibpoll: telemetry served");
        Ok(Server { path, stop, thread })
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the socket and tells the thread to end (see [`join`](Self::join)).
    pub(super) fn unlink(self) -> Server {
        let _ = std::fs::remove_file(&self.path);
        // Release: pairs with the Acquire loads in `run` and `serve`.
        self.stop.store(true, Ordering::Release);
        self
    }

    /// Waits for the thread: at most one read slice, or the end of the query it is
    /// answering (each control core is given `CONTROL_TIMEOUT`).
    pub(super) fn join(self) {
        let _ = self.thread.join();
    }
}

fn run(listener: &UnixListener, stop: &AtomicBool) {
    while !stop.load(Ordering::Acquire) {
        match listener.accept() {
            Ok((s, _)) => {
                if let Err(e) = serve(s, stop) {
                    tracing::debug!(error = %e, "ibpoll: telemetry connection ended");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(ACCEPT_POLL),
            Err(e) => {
                tracing::debug!(error = %e, "ibpoll: telemetry accept failed");
                std::thread::sleep(ACCEPT_POLL);
            }
        }
    }
}

fn write_line(s: &mut UnixStream, text: &str) -> io::Result<()> {
    let mut line = String::with_capacity(text.len() + 1);
    line.push_str(text);
    line.push('\n');
    s.write_all(line.as_bytes())
}

/// Answers one connection: the greeting, then one answer per request line.
fn serve(mut s: UnixStream, stop: &AtomicBool) -> io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_write_timeout(Some(WRITE_TIMEOUT))?;
    s.set_read_timeout(Some(READ_SLICE))?;
    let start = Instant::now();
    write_line(&mut s, &query::greeting())?;
    let mut buf = [0u8; REQUEST_LEN_MAX];
    let (mut have, mut served, mut last) = (0, 0, Instant::now());
    let mut eof = false;
    loop {
        let nl = buf[..have].iter().position(|&b| b == b'\n');
        if nl.is_some() || (eof && have > 0) {
            // A last request without its newline counts too.
            let end = nl.unwrap_or(have);
            write_line(&mut s, &query::answer(&buf[..end]))?;
            let next = (end + 1).min(have);
            buf.copy_within(next..have, 0);
            have -= next;
            served += 1;
            last = Instant::now();
            if served == REQUESTS_PER_CONNECTION {
                return Ok(());
            }
            continue;
        }
        if eof {
            return Ok(());
        }
        if have == buf.len() {
            let e = query::error_answer(
                "",
                &format!("a request is one line of at most {REQUEST_LEN_MAX} bytes"),
            );
            return write_line(&mut s, &e);
        }
        if stop.load(Ordering::Acquire)
            || start.elapsed() > CONNECTION_MAX
            || last.elapsed() > IDLE_TIMEOUT
        {
            return Ok(());
        }
        match s.read(&mut buf[have..]) {
            Ok(0) => eof = true,
            Ok(n) => have += n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
    }
}
