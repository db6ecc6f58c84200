//! Attaching to ibsim, its control calls, and detaching.

use std::io::ErrorKind;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ibpoll_dev::MadAddr;
use ibpoll_wire::{QKey, Qpn};

use crate::port::{pkey_table, IbsimPort};
use crate::proto::{ClientInfo, Ctl, CtlType, CTL_DATA_LEN, CTL_LEN, MAX_CLIENTS, NODEID_LEN};
use crate::Error;

/// How long a control call waits for ibsim's answer by default.
pub const DEFAULT_CTL_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest wait for ibsim's answer to DISCONNECT when a channel is dropped.
const DISCONNECT_TIMEOUT: Duration = Duration::from_millis(200);
/// Process IDs fit in 22 bits (Linux `PID_MAX_LIMIT`); higher bits number channels.
const PID_BITS: u32 = 22;
/// Channels opened by this process so far.
static CHANNELS_OPENED: AtomicU32 = AtomicU32::new(0);

/// What a channel has counted. Failures on the MAD path are counted here, never
/// returned (see the crate docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IbsimCounters {
    /// MADs handed to ibsim.
    pub tx: u64,
    /// Sends refused because ibsim's socket queue was full.
    pub tx_full: u64,
    /// MADs received and returned by `recv`.
    pub rx: u64,
    /// Our own MADs returned by ibsim as undeliverable (non-zero status).
    pub rx_undeliverable: u64,
    /// Datagrams that were not one `sim_request`.
    pub rx_malformed: u64,
    /// Receive errors other than "nothing there".
    pub rx_errors: u64,
}

/// A port's QP1 on a node of an ibsim fabric (see the crate docs).
#[derive(Debug)]
pub struct IbsimMadChannel {
    /// Bound to `sim:ctl<conn_id>`, connected to `sim:ctl`; blocking, with a timeout.
    ctl: UnixDatagram,
    /// Bound to `sim:in<conn_id>`, connected to `sim:out<client_id>`; non-blocking.
    pub(crate) data: UnixDatagram,
    /// The id ibsim knows our sockets by (`pid | (k << 22)`, k >= 1).
    conn_id: u32,
    /// ibsim's client slot.
    client_id: u32,
    ctl_timeout: Duration,
    /// The node and port as last queried.
    port: IbsimPort,
    pub(crate) counters: IbsimCounters,
}

/// The abstract socket address ibsim and umad2sim use for `name`: the name and its
/// terminating NUL (they pass `strlen + 1` as the name's length), so "sim:ctl" is the
/// 8-byte abstract name `sim:ctl\0`.
fn abstract_addr(name: &str) -> SocketAddr {
    let mut bytes = Vec::with_capacity(name.len() + 1);
    bytes.extend_from_slice(name.as_bytes());
    bytes.push(0);
    // Cannot fail: names are short ("sim:in<u32>"), and only names over 107 bytes are
    // refused.
    SocketAddr::from_abstract_name(&bytes).expect("short abstract socket name")
}

fn socket_error(op: &'static str, name: &str, source: std::io::Error) -> Error {
    Error::Socket {
        op,
        name: name.to_owned(),
        source,
    }
}

impl IbsimMadChannel {
    /// Attaches to ibsim as a client of node `node_name` (a name of its topology file,
    /// what `SIM_HOST` says for umad2sim; empty for ibsim's default node), with the
    /// default control timeout.
    pub fn connect(node_name: &str) -> Result<IbsimMadChannel, Error> {
        Self::connect_with_timeout(node_name, DEFAULT_CTL_TIMEOUT)
    }

    /// [`connect`](Self::connect) with `ctl_timeout` for each control call.
    pub fn connect_with_timeout(
        node_name: &str,
        ctl_timeout: Duration,
    ) -> Result<IbsimMadChannel, Error> {
        if node_name.len() >= NODEID_LEN {
            return Err(Error::NodeName {
                node: node_name.to_owned(),
                reason: "ibsim takes at most 31 bytes",
            });
        }
        if node_name.as_bytes().contains(&0) {
            return Err(Error::NodeName {
                node: node_name.to_owned(),
                reason: "it contains a NUL byte",
            });
        }
        let k = CHANNELS_OPENED.fetch_add(1, Ordering::Relaxed);
        // Never the bare PID: umad2sim binds `sim:ctl<pid>` in a process it is preloaded
        // into, and such a process may hold channels too. Stays below 2^31: ibsim
        // formats the id with %d.
        let k = 1 + k % ((1 << (31 - PID_BITS)) - 1);
        let conn_id = std::process::id() | (k << PID_BITS);

        let ctl_name = format!("sim:ctl{conn_id}");
        // ibsim answers control messages to the sender's address: it must have a name.
        let ctl = UnixDatagram::bind_addr(&abstract_addr(&ctl_name))
            .map_err(|e| socket_error("bind", &ctl_name, e))?;
        if let Err(e) = ctl.connect_addr(&abstract_addr("sim:ctl")) {
            return Err(match e.kind() {
                ErrorKind::ConnectionRefused | ErrorKind::NotFound => {
                    Error::NotRunning { source: e }
                }
                _ => socket_error("connect", "sim:ctl", e),
            });
        }
        ctl.set_read_timeout(Some(ctl_timeout))
            .map_err(|e| socket_error("set_read_timeout", &ctl_name, e))?;

        // Bound before CONNECT: ibsim connects its sim:out<n> socket to this name while
        // handling CONNECT and panics if nothing is there.
        let in_name = format!("sim:in{conn_id}");
        let data = UnixDatagram::bind_addr(&abstract_addr(&in_name))
            .map_err(|e| socket_error("bind", &in_name, e))?;

        let mut nodeid = [0u8; NODEID_LEN];
        nodeid[..node_name.len()].copy_from_slice(node_name.as_bytes());
        let info = ClientInfo {
            id: conn_id,
            qp: 0,
            issm: 0,
            nodeid,
        };
        let answer = match ctl_call(
            &ctl,
            0,
            CtlType::Connect,
            ClientInfo::LEN,
            info.to_data(),
            ctl_timeout,
        ) {
            Err(Error::CtlRefused { .. }) => {
                return Err(Error::ConnectRefused {
                    node: node_name.to_owned(),
                    max: MAX_CLIENTS,
                })
            }
            other => other?,
        };
        let info = ClientInfo::from_data(&answer);
        if info.id >= MAX_CLIENTS {
            return Err(Error::CtlReply {
                op: CtlType::Connect.name(),
                reason: "client slot out of range",
            });
        }
        let mut ch = IbsimMadChannel {
            ctl,
            data,
            conn_id,
            client_id: info.id,
            ctl_timeout,
            port: IbsimPort::from_attributes(info.node_name(), &[0; 64], &[0; 64], Vec::new()),
            counters: IbsimCounters::default(),
        };
        // From here on, dropping `ch` sends DISCONNECT.
        let out_name = format!("sim:out{}", ch.client_id);
        ch.data
            .connect_addr(&abstract_addr(&out_name))
            .map_err(|e| socket_error("connect", &out_name, e))?;
        ch.data
            .set_nonblocking(true)
            .map_err(|e| socket_error("set_nonblocking", &in_name, e))?;
        ch.port_info()?;
        tracing::debug!(
            node = %ch.port.node_name,
            client = ch.client_id,
            conn_id,
            port_guid = format_args!("{:#x}", ch.port.port_guid),
            lid = ch.port.lid.0,
            "attached to ibsim"
        );
        Ok(ch)
    }

    /// Queries ibsim for the node and port now (LID, SM LID, GID prefix and state
    /// change when the subnet manager sweeps) and remembers the answer.
    pub fn port_info(&mut self) -> Result<IbsimPort, Error> {
        let node = self.call(CtlType::GetNodeInfo, 0, [0; CTL_DATA_LEN])?;
        // data[0] = 0: the client's own port.
        let port = self.call(CtlType::GetPortInfo, 1, [0; CTL_DATA_LEN])?;
        // An ibsim without SIM_CTL_GET_PKEYS echoes the request: zeros, an empty table.
        let pkeys = self.call(CtlType::GetPkeys, CTL_DATA_LEN, [0; CTL_DATA_LEN])?;
        self.port = IbsimPort::from_attributes(
            self.port.node_name.clone(),
            &node,
            &port,
            pkey_table(&pkeys),
        );
        Ok(self.port.clone())
    }

    /// The node and port as last queried (no control call).
    pub fn port(&self) -> &IbsimPort {
        &self.port
    }

    /// Polls [`port_info`](Self::port_info) until the subnet manager has made the port
    /// Active with a LID and an SM LID.
    pub fn wait_active(&mut self, timeout: Duration) -> Result<IbsimPort, Error> {
        let start = Instant::now();
        loop {
            let p = self.port_info()?;
            if p.is_active() {
                return Ok(p);
            }
            if start.elapsed() >= timeout {
                return Err(Error::PortNotActive {
                    node: p.node_name,
                    timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Where the subnet administrator is: the SM's LID (as last queried), QP1.
    pub fn sa_addr(&self) -> MadAddr {
        MadAddr {
            lid: self.port.sm_lid,
            qpn: Qpn::GSI,
            qkey: QKey::GSI,
            sl: self.port.sm_sl,
            pkey_index: 0,
        }
    }

    /// ibsim's client slot (0..10) for this channel.
    pub fn client_id(&self) -> u32 {
        self.client_id
    }

    /// The id in this channel's socket names (`sim:in<id>`).
    pub fn conn_id(&self) -> u32 {
        self.conn_id
    }

    /// What the channel has counted.
    pub fn counters(&self) -> IbsimCounters {
        self.counters
    }

    fn call(
        &mut self,
        ty: CtlType,
        len: usize,
        data: [u8; CTL_DATA_LEN],
    ) -> Result<[u8; CTL_DATA_LEN], Error> {
        ctl_call(&self.ctl, self.client_id, ty, len, data, self.ctl_timeout)
    }
}

/// One control round trip: sends the message, waits for ibsim's answer.
fn ctl_call(
    ctl: &UnixDatagram,
    client_id: u32,
    ty: CtlType,
    len: usize,
    data: [u8; CTL_DATA_LEN],
    timeout: Duration,
) -> Result<[u8; CTL_DATA_LEN], Error> {
    let msg = Ctl::new(client_id, ty, len, data).emit();
    match ctl.send(&msg) {
        Ok(n) if n == CTL_LEN => {}
        Ok(_) => {
            return Err(Error::CtlReply {
                op: ty.name(),
                reason: "short write of the control message",
            })
        }
        Err(e) if matches!(e.kind(), ErrorKind::ConnectionRefused | ErrorKind::NotFound) => {
            return Err(Error::NotRunning { source: e })
        }
        Err(e) => return Err(socket_error("send", "sim:ctl", e)),
    }
    let mut buf = [0u8; CTL_LEN + 1];
    let n = match ctl.recv(&mut buf) {
        Ok(n) => n,
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            return Err(Error::Timeout {
                op: ty.name(),
                timeout,
            })
        }
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
            return Err(Error::NotRunning { source: e })
        }
        Err(e) => return Err(socket_error("recv", "sim:ctl", e)),
    };
    let answer = Ctl::parse(&buf[..n]).map_err(|reason| Error::CtlReply {
        op: ty.name(),
        reason,
    })?;
    if answer.ctl_type == CtlType::Error as u32 {
        return Err(Error::CtlRefused { op: ty.name() });
    }
    Ok(answer.data)
}

impl Drop for IbsimMadChannel {
    fn drop(&mut self) {
        let timeout = self.ctl_timeout.min(DISCONNECT_TIMEOUT);
        if self.ctl.set_read_timeout(Some(timeout)).is_err() {
            return;
        }
        match ctl_call(
            &self.ctl,
            self.client_id,
            CtlType::Disconnect,
            0,
            [0; CTL_DATA_LEN],
            timeout,
        ) {
            Ok(_) => tracing::debug!(client = self.client_id, "detached from ibsim"),
            Err(e) => {
                tracing::debug!(client = self.client_id, error = %e, "ibsim DISCONNECT failed")
            }
        }
    }
}
