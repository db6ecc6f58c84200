//! The kernel baseline pktgen is compared with: UDP over loopback, shaped like pktgen.
//!
//! * `--mode mmsg`: a sender thread pinned to `--sender-core` sends `--size`-byte
//!   datagrams with `sendmmsg` in batches of `--batch`; a receiver thread pinned to
//!   `--receiver-core` takes them with `recvmmsg` in batches of `--batch`.
//! * `--mode plain`: the same with one `sendto` / `recvfrom` per datagram.
//! * `--mode pingpong`: one datagram in flight; the client (sender core) sends, the echo
//!   server (receiver core) sends it back, and the client records the round trip in an
//!   HDR histogram. The first `--warmup` seconds (at most a quarter of the run) are not
//!   recorded.
//!
//! Only 127.0.0.1 is used. Every loop ends by itself: the sender after `--duration`, the
//! receiver once the sender is done and its socket is drained (or one second later at
//! the latest), every blocking receive after a timeout.
//!
//! Prints a human summary; with `--json FILE` (or `-` for stdout, as the last line) one
//! JSON object: mode, size, batch, duration_s, tx_packets, rx_packets, rx_pps, drops and,
//! for ping-pong, latency_ns {p50, p99, p999, max}. With `--cdf FILE` (ping-pong only) the
//! round trip's distribution as `percentile,latency_ns` lines (see `cdf_percentiles`).

use std::io::{self, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use serde_json::json;

/// The largest UDP payload over IPv4.
const UDP_PAYLOAD_MAX: usize = 65_507;
/// How long a blocking receive waits before it looks at the stop flag again.
const RECV_TIMEOUT: Duration = Duration::from_millis(20);
/// How long the receiver may keep draining after the sender stopped.
const DRAIN_MAX: Duration = Duration::from_secs(1);
/// How long the ping-pong client waits for one echo before it counts the packet lost.
const ECHO_TIMEOUT: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// sendmmsg / recvmmsg in batches.
    Mmsg,
    /// One sendto / recvfrom per datagram.
    Plain,
    /// One datagram in flight, round-trip latency.
    Pingpong,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Mmsg => "mmsg",
            Mode::Plain => "plain",
            Mode::Pingpong => "pingpong",
        }
    }
}

/// UDP over loopback, shaped like pktgen: the kernel baseline.
#[derive(Debug, Parser)]
#[command(name = "kernel-udp")]
struct Args {
    /// What to measure.
    #[arg(long, value_enum, default_value_t = Mode::Mmsg)]
    mode: Mode,
    /// Seconds to send for.
    #[arg(long, default_value_t = 3.0)]
    duration: f64,
    /// UDP payload bytes per datagram.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Datagrams per sendmmsg / recvmmsg call (mmsg mode only).
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Seconds of ping-pong not recorded at the start (at most a quarter of the run).
    #[arg(long, default_value_t = 0.5)]
    warmup: f64,
    /// The core of the sender (ping-pong: the client); pktgen's default tx core.
    #[arg(long, default_value_t = 0)]
    sender_core: usize,
    /// The core of the receiver (ping-pong: the echo server); pktgen's default rx core.
    #[arg(long, default_value_t = 1)]
    receiver_core: usize,
    /// Write one JSON object to FILE, or to stdout as the last line with `-`.
    #[arg(long, value_name = "FILE|-")]
    json: Option<String>,
    /// Ping-pong only: write the round trip's CDF to FILE as `percentile,latency_ns`
    /// lines, percentile 0 to 100 (denser in the tail), after a header line.
    #[arg(long, value_name = "FILE")]
    cdf: Option<String>,
}

/// What a run measured.
#[derive(Debug, Default)]
struct Outcome {
    tx_packets: u64,
    rx_packets: u64,
    /// Failed sends (ENOBUFS, EAGAIN, ...): not counted in tx_packets.
    tx_errors: u64,
    /// The sender's (ping-pong: the recorded part's) wall-clock time.
    elapsed: Duration,
    /// Pinning outcome per role, for the summary.
    pinned: [bool; 2],
    latency: Option<Histogram<u64>>,
}

fn main() -> ExitCode {
    ibpoll_bench::init_logging();
    let args = Args::parse();
    if let Err(e) = check(&args) {
        eprintln!("kernel-udp: {e}");
        return ExitCode::from(2);
    }
    let out = match args.mode {
        Mode::Mmsg | Mode::Plain => throughput(&args),
        Mode::Pingpong => pingpong(&args),
    };
    match out.and_then(|o| report(&args, &o)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kernel-udp: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check(args: &Args) -> Result<(), String> {
    if !(args.duration.is_finite() && args.duration > 0.0 && args.duration <= 3600.0) {
        return Err(format!(
            "--duration {} must be a number of seconds in (0, 3600]",
            args.duration
        ));
    }
    if !(args.warmup.is_finite() && args.warmup >= 0.0) {
        return Err(format!("--warmup {} must be >= 0 seconds", args.warmup));
    }
    let min = if args.mode == Mode::Pingpong { 8 } else { 1 };
    if !(min..=UDP_PAYLOAD_MAX).contains(&args.size) {
        return Err(format!(
            "--size {} must be {min}..={UDP_PAYLOAD_MAX} bytes (ping-pong carries an 8-byte sequence number)",
            args.size
        ));
    }
    if !(1..=1024).contains(&args.batch) {
        return Err(format!("--batch {} must be 1..=1024", args.batch));
    }
    if args.cdf.is_some() && args.mode != Mode::Pingpong {
        return Err(String::from(
            "--cdf needs --mode pingpong (only ping-pong records latencies)",
        ));
    }
    Ok(())
}

/// Pins the calling thread; false (and a warning) when the core does not exist or the
/// kernel refuses.
fn pin(core: usize, role: &str) -> bool {
    let ok = core_affinity::get_core_ids().is_some_and(|ids| ids.iter().any(|c| c.id == core))
        && core_affinity::set_for_current(core_affinity::CoreId { id: core });
    if !ok {
        eprintln!("kernel-udp: warning: could not pin the {role} to core {core}; running unpinned");
    }
    ok
}

fn loopback_socket() -> io::Result<UdpSocket> {
    UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
}

/// Whether a send error only means "not this time" (full buffers, the receiver not
/// there yet or gone already).
fn transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOBUFS | libc::EAGAIN | libc::ECONNREFUSED | libc::EINTR)
    )
}

/// Whether a receive error is its timeout.
fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

// ----- throughput: mmsg and plain ------------------------------------------------------

fn throughput(args: &Args) -> io::Result<Outcome> {
    let rx_sock = loopback_socket()?;
    rx_sock.set_read_timeout(Some(RECV_TIMEOUT))?;
    let dst = rx_sock.local_addr()?;
    let tx_sock = loopback_socket()?;
    if args.mode == Mode::Mmsg {
        tx_sock.connect(dst)?;
    }
    let sender_done = Arc::new(AtomicBool::new(false));
    let duration = Duration::from_secs_f64(args.duration);
    let (mode, size, batch, rx_core, tx_core) = (
        args.mode,
        args.size,
        args.batch,
        args.receiver_core,
        args.sender_core,
    );

    let done = sender_done.clone();
    let receiver = thread::Builder::new().name("kernel-udp-rx".into()).spawn(
        move || -> io::Result<(u64, bool)> {
            let pinned = pin(rx_core, "receiver");
            let n = match mode {
                Mode::Mmsg => recv_mmsg(&rx_sock, size, batch, &done)?,
                _ => recv_plain(&rx_sock, size, &done)?,
            };
            Ok((n, pinned))
        },
    )?;

    let sender = thread::Builder::new().name("kernel-udp-tx".into()).spawn(
        move || -> io::Result<(u64, u64, Duration, bool)> {
            let pinned = pin(tx_core, "sender");
            let start = Instant::now();
            let (tx, errors) = match mode {
                Mode::Mmsg => send_mmsg(&tx_sock, size, batch, start, duration)?,
                _ => send_plain(&tx_sock, dst, size, start, duration)?,
            };
            Ok((tx, errors, start.elapsed(), pinned))
        },
    )?;

    let sent = sender.join();
    // Release: pairs with the Acquire loads in the receive loops; whatever the sender
    // did, the receiver must stop.
    sender_done.store(true, Ordering::Release);
    let received = receiver.join();
    let (tx_packets, tx_errors, elapsed, tx_pinned) = sent.map_err(|_| panicked("sender"))??;
    let (rx_packets, rx_pinned) = received.map_err(|_| panicked("receiver"))??;
    Ok(Outcome {
        tx_packets,
        rx_packets,
        tx_errors,
        elapsed,
        pinned: [tx_pinned, rx_pinned],
        latency: None,
    })
}

fn panicked(role: &str) -> io::Error {
    io::Error::other(format!("the {role} thread panicked"))
}

/// Message headers for `batch` datagrams, each with one iovec over its own buffer.
struct MsgBatch {
    bufs: Vec<Vec<u8>>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

impl MsgBatch {
    fn new(batch: usize, size: usize) -> MsgBatch {
        let mut bufs: Vec<Vec<u8>> = (0..batch).map(|i| vec![i as u8; size]).collect();
        let mut iovs: Vec<libc::iovec> = bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        let hdrs = iovs
            .iter_mut()
            .map(|iov| {
                // SAFETY: mmsghdr is a plain C struct for which all-zero bytes are a valid
                // value (null name and control pointers, zero lengths).
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_iov = iov;
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();
        // The iovecs point into `bufs` and the headers into `iovs`: moving the Vecs
        // into the struct moves their heap buffers' owners, not the buffers.
        MsgBatch { bufs, iovs, hdrs }
    }

    fn len(&self) -> usize {
        debug_assert_eq!(self.iovs.len(), self.bufs.len());
        self.hdrs.len()
    }
}

fn send_mmsg(
    sock: &UdpSocket,
    size: usize,
    batch: usize,
    start: Instant,
    duration: Duration,
) -> io::Result<(u64, u64)> {
    let mut msgs = MsgBatch::new(batch, size);
    let n = msgs.len() as libc::c_uint;
    let (mut tx, mut errors) = (0u64, 0u64);
    while start.elapsed() < duration {
        // SAFETY: the socket is open for the whole call; `hdrs` holds `n` initialised
        // headers whose iovecs point to live buffers of `size` bytes (MsgBatch::new),
        // and the socket is connected, so no address is needed.
        let r = unsafe { libc::sendmmsg(sock.as_raw_fd(), msgs.hdrs.as_mut_ptr(), n, 0) };
        if r >= 0 {
            tx += r as u64;
        } else {
            let e = io::Error::last_os_error();
            if !transient(&e) {
                return Err(e);
            }
            errors += 1;
        }
    }
    Ok((tx, errors))
}

fn recv_mmsg(sock: &UdpSocket, size: usize, batch: usize, done: &AtomicBool) -> io::Result<u64> {
    let mut msgs = MsgBatch::new(batch, size);
    let n = msgs.len() as libc::c_uint;
    let mut rx = 0u64;
    let mut drain_start: Option<Instant> = None;
    loop {
        // SAFETY: as in `send_mmsg`; recvmmsg writes at most `size` bytes into each
        // buffer and the lengths into the headers we own. MSG_WAITFORONE returns once
        // one datagram is there; the socket's receive timeout bounds the wait.
        let r = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                msgs.hdrs.as_mut_ptr(),
                n,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if r > 0 {
            rx += r as u64;
        } else if r < 0 {
            let e = io::Error::last_os_error();
            if !timed_out(&e) {
                return Err(e);
            }
            // Acquire: pairs with the Release store after the sender has finished.
            if done.load(Ordering::Acquire) {
                return Ok(rx); // drained: nothing came within RECV_TIMEOUT
            }
        }
        if done.load(Ordering::Acquire)
            && drain_start.get_or_insert_with(Instant::now).elapsed() > DRAIN_MAX
        {
            return Ok(rx);
        }
    }
}

fn send_plain(
    sock: &UdpSocket,
    dst: SocketAddr,
    size: usize,
    start: Instant,
    duration: Duration,
) -> io::Result<(u64, u64)> {
    let buf = vec![0x5a; size];
    let (mut tx, mut errors) = (0u64, 0u64);
    while start.elapsed() < duration {
        match sock.send_to(&buf, dst) {
            Ok(_) => tx += 1,
            Err(e) if transient(&e) => errors += 1,
            Err(e) => return Err(e),
        }
    }
    Ok((tx, errors))
}

fn recv_plain(sock: &UdpSocket, size: usize, done: &AtomicBool) -> io::Result<u64> {
    let mut buf = vec![0u8; size];
    let mut rx = 0u64;
    let mut drain_start: Option<Instant> = None;
    loop {
        match sock.recv_from(&mut buf) {
            Ok(_) => rx += 1,
            Err(e) if timed_out(&e) => {
                // Acquire: pairs with the Release store after the sender has finished.
                if done.load(Ordering::Acquire) {
                    return Ok(rx);
                }
            }
            Err(e) => return Err(e),
        }
        if done.load(Ordering::Acquire)
            && drain_start.get_or_insert_with(Instant::now).elapsed() > DRAIN_MAX
        {
            return Ok(rx);
        }
    }
}

// ----- ping-pong -----------------------------------------------------------------------

fn pingpong(args: &Args) -> io::Result<Outcome> {
    let server_sock = loopback_socket()?;
    server_sock.set_read_timeout(Some(RECV_TIMEOUT))?;
    let server_addr = server_sock.local_addr()?;
    let client = loopback_socket()?;
    client.connect(server_addr)?;
    client.set_read_timeout(Some(ECHO_TIMEOUT))?;

    let stop = Arc::new(AtomicBool::new(false));
    let (size, rx_core) = (args.size, args.receiver_core);
    let server_stop = stop.clone();
    let server = thread::Builder::new()
        .name("kernel-udp-echo".into())
        .spawn(move || -> io::Result<bool> {
            let pinned = pin(rx_core, "echo server");
            let mut buf = vec![0u8; size];
            // Acquire: pairs with the Release store once the client is done.
            while !server_stop.load(Ordering::Acquire) {
                match server_sock.recv_from(&mut buf) {
                    Ok((n, from)) => match server_sock.send_to(&buf[..n], from) {
                        Ok(_) => {}
                        Err(e) if transient(&e) => {}
                        Err(e) => return Err(e),
                    },
                    Err(e) if timed_out(&e) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(pinned)
        })?;

    let client_result = pingpong_client(args, &client);
    // Release: pairs with the server's Acquire load; the server stops within
    // RECV_TIMEOUT whatever the client did.
    stop.store(true, Ordering::Release);
    let server_pinned = server.join().map_err(|_| panicked("echo server"))??;
    let mut out = client_result?;
    out.pinned[1] = server_pinned;
    Ok(out)
}

fn pingpong_client(args: &Args, sock: &UdpSocket) -> io::Result<Outcome> {
    let pinned = pin(args.sender_core, "client");
    let duration = Duration::from_secs_f64(args.duration);
    let warmup = Duration::from_secs_f64(args.warmup).min(duration / 4);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)
        .map_err(|e| io::Error::other(format!("histogram: {e}")))?;
    let mut out = Outcome::default();
    let mut buf = vec![0u8; args.size];
    let mut reply = vec![0u8; args.size];
    let start = Instant::now();
    let mut recorded_since: Option<Instant> = None;
    let mut seq = 0u64;
    while start.elapsed() < duration {
        seq += 1;
        buf[..8].copy_from_slice(&seq.to_be_bytes());
        let t0 = Instant::now();
        match sock.send(&buf) {
            Ok(_) => out.tx_packets += 1,
            Err(e) if transient(&e) => {
                out.tx_errors += 1;
                continue;
            }
            Err(e) => return Err(e),
        }
        // Wait for this echo; a late echo of an earlier, timed-out datagram is skipped.
        // Bounded: every receive either returns a datagram or times out, and a run of
        // stale echoes is at most the number of earlier timeouts.
        let rtt = loop {
            match sock.recv(&mut reply) {
                Ok(n) if n >= 8 && reply[..8] == buf[..8] => break Some(t0.elapsed()),
                Ok(_) => continue,
                Err(e) if timed_out(&e) => break None,
                Err(e) => return Err(e),
            }
        };
        let Some(rtt) = rtt else { continue };
        out.rx_packets += 1;
        if start.elapsed() >= warmup {
            let since = *recorded_since.get_or_insert(t0);
            let ns = u64::try_from(rtt.as_nanos()).unwrap_or(u64::MAX);
            hist.saturating_record(ns.max(1));
            out.elapsed = since.elapsed();
        }
    }
    out.pinned[0] = pinned;
    out.latency = Some(hist);
    if out.elapsed.is_zero() {
        out.elapsed = start.elapsed();
    }
    Ok(out)
}

// ----- CDF ----------------------------------------------------------------------------

/// The percentiles `--cdf` writes: every whole percent, then ever finer steps towards
/// the tail (99.1 .. 99.9, 99.91 .. 99.99, 99.991 .. 99.999), then 100 (the maximum).
fn cdf_percentiles() -> Vec<f64> {
    let mut p: Vec<f64> = (0..=99).map(f64::from).collect();
    p.extend((1..=9).map(|i| 99.0 + f64::from(i) * 0.1));
    p.extend((1..=9).map(|i| 99.9 + f64::from(i) * 0.01));
    p.extend((1..=9).map(|i| 99.99 + f64::from(i) * 0.001));
    p.push(100.0);
    p
}

/// `percentile,latency_ns` lines; an empty histogram gives the header only.
fn cdf_text(h: &Histogram<u64>) -> String {
    let mut s = String::from("percentile,latency_ns\n");
    if h.is_empty() {
        return s;
    }
    for p in cdf_percentiles() {
        let v = if p >= 100.0 {
            h.max()
        } else {
            h.value_at_quantile(p / 100.0)
        };
        s.push_str(&format!("{p:.3},{v}\n"));
    }
    s
}

// ----- report --------------------------------------------------------------------------

fn report(args: &Args, o: &Outcome) -> io::Result<()> {
    let secs = o.elapsed.as_secs_f64();
    let (rx_pps, recorded) = match &o.latency {
        // Ping-pong: round trips per second over the recorded part.
        Some(h) => (h.len() as f64 / secs.max(f64::MIN_POSITIVE), h.len()),
        None => (o.rx_packets as f64 / secs.max(f64::MIN_POSITIVE), 0),
    };
    let batch = if args.mode == Mode::Mmsg {
        args.batch
    } else {
        1
    };
    let drops = o.tx_packets.saturating_sub(o.rx_packets);
    let load = ibpoll_bench::loadavg_text();

    println!(
        "kernel-udp {} size {} batch {} over 127.0.0.1: {:.3} s, sender core {}{}, receiver core {}{}",
        args.mode.name(),
        args.size,
        batch,
        secs,
        args.sender_core,
        if o.pinned[0] { "" } else { " (unpinned)" },
        args.receiver_core,
        if o.pinned[1] { "" } else { " (unpinned)" },
    );
    println!(
        "  tx {} packets ({} failed sends), rx {} packets, drops {} ({:.2} %)",
        o.tx_packets,
        o.tx_errors,
        o.rx_packets,
        drops,
        100.0 * drops as f64 / (o.tx_packets.max(1) as f64)
    );
    println!("  rx {:.0} pps ({:.3} Mpps)", rx_pps, rx_pps / 1e6);
    let latency = o.latency.as_ref().filter(|h| !h.is_empty()).map(|h| {
        let q = |p: f64| h.value_at_quantile(p);
        println!(
            "  round trip ({} recorded, warm-up excluded): p50 {} ns, p99 {} ns, p99.9 {} ns, max {} ns",
            recorded,
            q(0.50),
            q(0.99),
            q(0.999),
            h.max()
        );
        json!({"p50": q(0.50), "p99": q(0.99), "p999": q(0.999), "max": h.max()})
    });
    println!("  load average {load}");

    if let (Some(path), Some(h)) = (&args.cdf, &o.latency) {
        std::fs::write(path, cdf_text(h))?;
    }

    let Some(dest) = &args.json else {
        return Ok(());
    };
    let mut obj = json!({
        "mode": args.mode.name(),
        "size": args.size,
        "batch": batch,
        "duration_s": secs,
        "tx_packets": o.tx_packets,
        "rx_packets": o.rx_packets,
        "rx_pps": rx_pps,
        "drops": drops,
        "tx_errors": o.tx_errors,
        "sender_core": args.sender_core,
        "receiver_core": args.receiver_core,
        "pinned": o.pinned[0] && o.pinned[1],
        "loadavg": ibpoll_bench::loadavg_json(),
    });
    if let Some(l) = latency {
        obj["latency_ns"] = l;
    }
    let line = obj.to_string();
    if dest == "-" {
        let mut out = io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()
    } else {
        std::fs::write(dest, format!("{line}\n"))
    }
}
