//! `udp_echo`: request and response over ibpoll's UDP sockets between two stacks, each
//! driven by a thread of the example's own (the lanes model: `StackBuilder::build`,
//! `Control::poll`, `Lane::poll`). The server echoes each datagram in the buffer it
//! arrived in (zero copy: the headers go back into its headroom); the client keeps one
//! request in flight and prints the round-trip times in microseconds.
//!
//! ```text
//! cargo run --release -p ibpoll --example udp_echo -- --count 10000 --size 64
//! cargo run --release -p ibpoll --example udp_echo -- --device verbs:mlx5_0
//! ```
//!
//! It runs on the embedded simulated fabric by default (and says so on its first line);
//! `--device verbs:NAME[:PORT]` asks for an HCA. With a verbs device the two stacks can
//! be two processes: `--role server` runs the server alone (it says `server ready` once
//! its link is up, and stops after echoing `--count` requests), `--role client` the
//! client alone (on RoCE both addresses must be on the port's netdev):
//!
//! ```text
//! udp_echo --device verbs:rxe0 --role server --count 1000 &
//! udp_echo --device verbs:rxe0 --role client --count 1000
//! ```
//!
//! Every stack's stop is checked: no buffer still out of its pool, no packet dropped,
//! no send completed in error. Ctrl-C (SIGINT) or SIGTERM stops the stacks cleanly (the
//! flush leaves every group at the SA), prints the summary and exits 130 / 143; a
//! second signal exits at once. Exit codes: 0 ok, 1 a check failed (requests lost or
//! not echoed, buffers out or packets dropped at a stop, memberships left at the SA),
//! 2 bad usage or no device.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use common::{DeviceSpec, Devices, Signals};
use hdrhistogram::Histogram;
use ibpoll::{IbMtu, Lane, Stack, StackBuilder};

const SERVER: [u8; 4] = [10, 0, 0, 1];
const CLIENT: [u8; 4] = [10, 0, 0, 2];
const PORT: u16 = 7;

/// Request/response over ibpoll UDP sockets between two stacks; round-trip times in µs.
#[derive(Parser, Debug)]
#[command(
    version,
    after_help = "Exit status: 0 ok; 1 a check failed (lost requests, memberships left at \
                  the SA); 2 bad usage or no device; 130 / 143 stopped by SIGINT / SIGTERM \
                  after a clean stop and the summary."
)]
struct Args {
    /// Where the stacks run: `sim` (the embedded simulated fabric) or
    /// `verbs:NAME[:PORT]` (an HCA through libibverbs).
    #[arg(long, default_value = "sim")]
    device: DeviceSpec,
    /// Requests to send.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    count: u64,
    /// UDP payload bytes per request (8..=2000).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(8..=2000))]
    size: u16,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// Which stacks this process runs: both (the default), or one of them, the other
    /// being another process on the same verbs port.
    #[arg(long, value_enum, default_value_t = Role::Both)]
    role: Role,
    /// A request without an answer after this many milliseconds is counted lost, and
    /// the next goes (1..=60000).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    reply_timeout_ms: u64,
}

/// The stacks one process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Role {
    /// Server and client, on two threads.
    Both,
    /// The server alone: it echoes `--count` requests, then stops.
    Server,
    /// The client alone.
    Client,
}

/// The client: one request in flight (its sequence number first), its round trip timed.
struct Client {
    sock: ibpoll::UdpSocket,
    to: SocketAddrV4,
    count: u64,
    payload: Vec<u8>,
    buf: Vec<u8>,
    in_flight: Option<(u64, Instant)>,
    reply_timeout: Duration,
    sent: u64,
    replies: u64,
    lost: u64,
    rtt_ns: Histogram<u64>,
}

impl Client {
    fn new(lane: &mut Lane, args: &Args) -> Client {
        Client {
            sock: lane.udp_bind(0, 0).expect("a client socket"),
            to: SocketAddrV4::new(Ipv4Addr::from(SERVER), PORT),
            count: args.count,
            payload: vec![0u8; usize::from(args.size)],
            buf: vec![0u8; 4096],
            in_flight: None,
            reply_timeout: Duration::from_millis(args.reply_timeout_ms),
            sent: 0,
            replies: 0,
            lost: 0,
            rtt_ns: Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("bounds"),
        }
    }

    fn done(&self) -> bool {
        self.sent == self.count && self.in_flight.is_none()
    }

    /// Takes the reply (or gives up on it), sends the next request; whether it did any
    /// work.
    fn step(&mut self, lane: &mut Lane) -> bool {
        let mut did = false;
        if let Some((seq, t0)) = self.in_flight {
            while let Some((n, from)) = lane.udp_recv_slice(self.sock, &mut self.buf) {
                did = true;
                let got = u64::from_be_bytes(self.buf[..8].try_into().expect("8 bytes"));
                if from == self.to && n == self.payload.len() && got == seq {
                    let _ = self.rtt_ns.record(t0.elapsed().as_nanos() as u64);
                    self.replies += 1;
                    self.in_flight = None;
                }
            }
            if self.in_flight.is_some() && t0.elapsed() > self.reply_timeout {
                self.lost += 1;
                self.in_flight = None;
            }
        }
        if self.in_flight.is_none() && self.sent < self.count && lane.link_up(0) {
            self.payload[..8].copy_from_slice(&self.sent.to_be_bytes());
            // A send the stack drops is counted; its reply times out.
            let _ = lane.udp_send_slice(self.sock, &self.payload, self.to);
            lane.flush();
            self.in_flight = Some((self.sent, Instant::now()));
            self.sent += 1;
            did = true;
        }
        did
    }
}

fn builder(devs: &Devices, name: &str, ip: [u8; 4], stop: &Arc<AtomicBool>) -> StackBuilder {
    devs.host(Stack::builder(), name)
        .ipv4(ip)
        .data_cores(1)
        .mtu(IbMtu::Mtu2048)
        .pool_size(4096)
        .rx_ring_size(512)
        .tx_ring_size(512)
        .stop_timeout(Duration::from_secs(10))
        .stop_flag(stop.clone())
}

/// The server's work: every datagram goes back to its sender in its own buffer; how
/// many were echoed.
fn echo(lane: &mut Lane, sock: ibpoll::UdpSocket) -> u64 {
    let mut n = 0;
    while let Some((m, from)) = lane.udp_recv_from(sock) {
        // Dropped sends are counted in the lane's and the socket's counters.
        let _ = lane.udp_send_to(sock, m, from);
        n += 1;
    }
    if n > 0 {
        lane.flush();
    }
    n
}

type Parts = (Stack, ibpoll::Control, Vec<Lane>);

/// What a run found: the client (if this process ran it), the requests the server
/// echoed (if it ran it), and each stack's stop report.
struct Outcome {
    client: Option<Client>,
    echoed: Option<u64>,
    stops: Vec<(&'static str, ibpoll::StopReport)>,
    gids: Vec<ibpoll::Gid>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    println!(
        "udp_echo: {}: server {}:{PORT}, client {}, {} requests of {} bytes{}",
        args.device.describe(),
        Ipv4Addr::from(SERVER),
        Ipv4Addr::from(CLIENT),
        args.count,
        args.size,
        match args.role {
            Role::Both => "",
            Role::Server => "; this process: the server",
            Role::Client => "; this process: the client",
        }
    );
    if args.role != Role::Both && args.device == DeviceSpec::Sim {
        eprintln!(
            "udp_echo: error: --role server|client needs a device another process can \
             reach: give --device verbs:NAME[:PORT] (the simulated fabric is in-process)"
        );
        return ExitCode::from(common::EXIT_USAGE);
    }
    let devs = match common::open(&args.device) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("udp_echo: error: {e}");
            return ExitCode::from(common::EXIT_USAGE);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let signals = match Signals::install(&stop) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("udp_echo: error: cannot watch SIGINT and SIGTERM: {e}");
            return ExitCode::from(common::EXIT_FAILED);
        }
    };
    let built = |name, ip| builder(&devs, name, ip, &stop).build().map(|b| b.split());
    let server = match args.role {
        Role::Both | Role::Server => Some(built("server", SERVER)),
        Role::Client => None,
    };
    let client = match args.role {
        Role::Both | Role::Client => Some(built("client", CLIENT)),
        Role::Server => None,
    };
    let (server, client) = match (server.transpose(), client.transpose()) {
        (Ok(s), Ok(c)) => (s, c),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("udp_echo: error: {e}");
            return ExitCode::from(common::EXIT_USAGE);
        }
    };
    match run(&args, server, client, &stop) {
        Ok(out) => summary(&args, &out, &devs, signals.received()),
        Err(e) => {
            eprintln!("udp_echo: error: {e}");
            ExitCode::from(common::EXIT_FAILED)
        }
    }
}

/// Drives the stacks this process runs until the client is done (or, server alone,
/// until `--count` requests were echoed), the time is up or a signal came; stops them.
fn run(
    args: &Args,
    server: Option<Parts>,
    client: Option<Parts>,
    stop: &Arc<AtomicBool>,
) -> Result<Outcome, ibpoll::Error> {
    let deadline = Instant::now() + Duration::from_secs_f64(args.duration.max(0.1));
    let alone = client.is_none();
    let mut gids = Vec::new();
    let mut handles = Vec::new();
    let (echoed, client) = std::thread::scope(|s| {
        let echoed = server.map(|(handle, mut control, mut lanes)| {
            gids.push(handle.hwaddr().gid());
            handles.push(("server", handle));
            s.spawn(move || {
                let mut lane = lanes.pop().expect("one lane");
                let sock = lane.udp_bind(0, PORT).expect("the echo port");
                let mut echoed = 0;
                let mut ready = false;
                common::drive(&mut control, &mut lane, |lane| {
                    if alone && !ready && lane.link_up(0) {
                        ready = true;
                        println!(
                            "udp_echo: server ready on {}:{PORT}",
                            Ipv4Addr::from(SERVER)
                        );
                    }
                    let n = echo(lane, sock);
                    echoed += n;
                    // Alone, the server ends the run: it echoed what was asked (once
                    // the last echo left: its send completed), or gave up.
                    if alone
                        && (echoed >= args.count && common::sent_all(lane)
                            || Instant::now() > deadline)
                    {
                        stop.store(true, Ordering::SeqCst);
                    }
                    n > 0
                });
                lane.finish();
                common::wind_down(&mut control, Duration::from_secs(10));
                echoed
            })
        });
        let client = client.map(|(handle, mut control, mut lanes)| {
            gids.push(handle.hwaddr().gid());
            handles.push(("client", handle));
            let mut lane = lanes.pop().expect("one lane");
            let mut c = Client::new(&mut lane, args);
            common::drive(&mut control, &mut lane, |lane| {
                let did = c.step(lane);
                if c.done() || Instant::now() > deadline {
                    // Every stack of the process stops; their flushes leave every group.
                    stop.store(true, Ordering::SeqCst);
                }
                did
            });
            lane.finish();
            common::wind_down(&mut control, Duration::from_secs(10));
            c
        });
        (echoed.map(|t| t.join().expect("the server thread")), client)
    });
    let mut stops = Vec::new();
    for (who, h) in handles {
        stops.push((who, h.stop()?));
    }
    Ok(Outcome {
        client,
        echoed,
        stops,
        gids,
    })
}

/// Prints the summary; the exit code.
fn summary(args: &Args, out: &Outcome, devs: &Devices, signal: Option<i32>) -> ExitCode {
    let mut failed = false;
    if let Some(c) = &out.client {
        let h = &c.rtt_ns;
        println!(
            "udp_echo summary: sent {}, replies {}, lost {}",
            c.sent, c.replies, c.lost
        );
        if !h.is_empty() {
            println!(
                "  round trip (µs): min {} p50 {} p99 {} p99.9 {} max {} mean {}",
                common::us(h.min()),
                common::us(h.value_at_quantile(0.5)),
                common::us(h.value_at_quantile(0.99)),
                common::us(h.value_at_quantile(0.999)),
                common::us(h.max()),
                common::us(h.mean() as u64),
            );
        }
        if signal.is_none() && (c.replies != args.count || c.lost != 0) {
            eprintln!(
                "udp_echo: error: {} of {} requests answered",
                c.replies, args.count
            );
            failed = true;
        }
    }
    if let Some(n) = out.echoed {
        println!("  server: echoed {n}");
        if out.client.is_none() && signal.is_none() && n != args.count {
            eprintln!(
                "udp_echo: error: the server echoed {n} of {} requests",
                args.count
            );
            failed = true;
        }
    }
    for (who, r) in &out.stops {
        failed |= common::stop_check(who, r, signal);
    }
    let (line, left) = devs.memberships_line(&out.gids);
    println!("  {line}");
    failed |= left;
    if let Some(sig) = signal {
        println!("udp_echo: stopped by signal {sig}; every stack left every group");
    }
    common::exit_code(failed, signal)
}
