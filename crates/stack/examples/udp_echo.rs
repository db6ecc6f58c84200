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
//! `--device verbs:NAME[:PORT]` asks for an HCA. Ctrl-C (SIGINT) or SIGTERM stops both
//! stacks cleanly (the flush leaves every group at the SA), prints the summary and
//! exits 130 / 143; a second signal exits at once. Exit codes: 0 ok, 1 a check failed
//! (requests lost, memberships left at the SA), 2 bad usage or no device.

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
/// A request without an answer after this long is counted lost, and the next goes.
const REPLY_TIMEOUT: Duration = Duration::from_millis(200);

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
}

/// The client: one request in flight (its sequence number first), its round trip timed.
struct Client {
    sock: ibpoll::UdpSocket,
    to: SocketAddrV4,
    count: u64,
    payload: Vec<u8>,
    buf: Vec<u8>,
    in_flight: Option<(u64, Instant)>,
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
            if self.in_flight.is_some() && t0.elapsed() > REPLY_TIMEOUT {
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

/// The server's work: every datagram goes back to its sender in its own buffer.
fn echo(lane: &mut Lane, sock: ibpoll::UdpSocket) -> bool {
    let mut did = false;
    while let Some((m, from)) = lane.udp_recv_from(sock) {
        // Dropped sends are counted in the lane's and the socket's counters.
        let _ = lane.udp_send_to(sock, m, from);
        did = true;
    }
    if did {
        lane.flush();
    }
    did
}

fn main() -> ExitCode {
    let args = Args::parse();
    println!(
        "udp_echo: {}: server {}:{PORT}, client {}, {} requests of {} bytes",
        args.device.describe(),
        Ipv4Addr::from(SERVER),
        Ipv4Addr::from(CLIENT),
        args.count,
        args.size
    );
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
    let built = |name, ip| builder(&devs, name, ip, &stop).build();
    let (server, client_stack) = match (built("server", SERVER), built("client", CLIENT)) {
        (Ok(s), Ok(c)) => (s.split(), c.split()),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("udp_echo: error: {e}");
            return ExitCode::from(common::EXIT_USAGE);
        }
    };
    let gids = [server.0.hwaddr().gid(), client_stack.0.hwaddr().gid()];
    let deadline = Instant::now() + Duration::from_secs_f64(args.duration.max(0.1));
    let out = std::thread::scope(|s| {
        let (_handle, mut control, mut lanes) = server;
        s.spawn(move || {
            let mut lane = lanes.pop().expect("one lane");
            let sock = lane.udp_bind(0, PORT).expect("the echo port");
            common::drive(&mut control, &mut lane, |lane| echo(lane, sock));
            lane.finish();
            common::wind_down(&mut control, Duration::from_secs(10));
        });
        let (_handle, mut control, mut lanes) = client_stack;
        let mut lane = lanes.pop().expect("one lane");
        let mut c = Client::new(&mut lane, &args);
        common::drive(&mut control, &mut lane, |lane| {
            let did = c.step(lane);
            if c.done() || Instant::now() > deadline {
                // Both stacks stop; their flushes leave every group at the SA.
                stop.store(true, Ordering::SeqCst);
            }
            did
        });
        lane.finish();
        common::wind_down(&mut control, Duration::from_secs(10));
        c
    });
    summary(&args, &out, &devs, &gids, signals.received())
}

/// Prints the summary; the exit code.
fn summary(
    args: &Args,
    out: &Client,
    devs: &Devices,
    gids: &[ibpoll::Gid],
    signal: Option<i32>,
) -> ExitCode {
    let h = &out.rtt_ns;
    println!(
        "udp_echo summary: sent {}, replies {}, lost {}",
        out.sent, out.replies, out.lost
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
    let left: usize = gids.iter().map(|g| devs.memberships(g)).sum();
    println!("  SA memberships after stop: {left}");
    if let Some(sig) = signal {
        println!("udp_echo: stopped by signal {sig}; both stacks left every group");
    }
    let complete = signal.is_some() || (out.replies == args.count && out.lost == 0);
    if !complete {
        eprintln!(
            "udp_echo: error: {} of {} requests answered",
            out.replies, args.count
        );
    }
    common::exit_code(!complete || left != 0, signal)
}
