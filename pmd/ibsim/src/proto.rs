//! ibsim's client protocol as bytes (ibsim `include/ibsim.h`, `umad2sim/sim_client.c`,
//! `umad2sim/umad2sim.c`).
//!
//! Two kinds of datagrams, both C structs sent raw:
//!
//! ```text
//! struct sim_ctl {            80 bytes, every field in host byte order
//!      0  u32 magic           0xdeadbeef
//!      4  u32 clientid        ibsim's slot number (0..10), from CONNECT's answer
//!      8  u32 type            SIM_CTL_*; ibsim answers SIM_CTL_ERROR (0) on failure
//!     12  u32 len
//!     16  u8  data[64]
//! }
//! struct sim_request {        288 bytes
//!      0  u32 dlid            the numeric value of htons(LID): on the wire bytes 0..2
//!      4  u32 slid              are the big-endian LID on a little-endian host
//!                             slid 0 = "fill in the sender's LID" (ibsim does)
//!      8  u32 dqp             big-endian QPN (umad's addr.qpn is __be32)
//!     12  u32 sqp             big-endian QPN
//!     16  u32 status          big-endian; 110 (ETIMEDOUT) = ibsim could not deliver
//!     20  4 bytes padding
//!     24  u64 length          big-endian MAD length
//!     32  u8  mad[256]
//! }
//! ```
//!
//! `dlid` and `slid` are encoded exactly as umad2sim's `req.dlid = umad->addr.lid` does
//! (a `__be16` stored into a `uint32_t`), so the bytes are right on either byte order.

use ibpoll_dev::{Mad, MAD_LEN};
use ibpoll_wire::Lid;

/// `SIM_MAGIC`.
pub(crate) const MAGIC: u32 = 0xdead_beef;
/// `SIM_CTL_MAX_DATA`.
pub(crate) const CTL_DATA_LEN: usize = 64;
/// `sizeof(struct sim_ctl)`.
pub(crate) const CTL_LEN: usize = 16 + CTL_DATA_LEN;
/// `sizeof(struct sim_request)`.
pub(crate) const REQ_LEN: usize = 32 + MAD_LEN;
/// `IBSIM_MAX_CLIENTS`.
pub(crate) const MAX_CLIENTS: u32 = 10;
/// The length of `sim_client_info.nodeid`, NUL included.
pub(crate) const NODEID_LEN: usize = 32;
/// `sim_request.status` when ibsim could not route or deliver a MAD (`htonl(110)`).
pub(crate) const STATUS_UNDELIVERABLE: u32 = 110;

const _: () = assert!(CTL_LEN == 80);
const _: () = assert!(REQ_LEN == 288);
const _: () = assert!(12 + NODEID_LEN <= CTL_DATA_LEN);

/// `enum SIM_CTL_TYPES`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum CtlType {
    /// The failure answer.
    Error = 0,
    /// `SIM_CTL_CONNECT`: data is a `sim_client_info`.
    Connect = 1,
    /// `SIM_CTL_DISCONNECT`.
    Disconnect = 2,
    /// `SIM_CTL_GET_NODEINFO`: 64 bytes of NodeInfo (SMP attribute layout).
    GetNodeInfo = 7,
    /// `SIM_CTL_GET_PORTINFO`: data[0] = port number (0 = the client's port); the answer
    /// is 64 bytes of PortInfo (SMP attribute layout).
    GetPortInfo = 8,
    /// `SIM_CTL_GET_PKEYS` (ibsim 0.7+): 32 big-endian P_Keys.
    GetPkeys = 10,
}

impl CtlType {
    /// Its name in ibsim.h, for messages.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            CtlType::Error => "SIM_CTL_ERROR",
            CtlType::Connect => "SIM_CTL_CONNECT",
            CtlType::Disconnect => "SIM_CTL_DISCONNECT",
            CtlType::GetNodeInfo => "SIM_CTL_GET_NODEINFO",
            CtlType::GetPortInfo => "SIM_CTL_GET_PORTINFO",
            CtlType::GetPkeys => "SIM_CTL_GET_PKEYS",
        }
    }
}

fn ne32(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// One `struct sim_ctl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ctl {
    pub(crate) client_id: u32,
    pub(crate) ctl_type: u32,
    pub(crate) len: u32,
    pub(crate) data: [u8; CTL_DATA_LEN],
}

impl Ctl {
    /// A request of `ctl_type` carrying the first `len` bytes of `data`.
    pub(crate) fn new(
        client_id: u32,
        ctl_type: CtlType,
        len: usize,
        data: [u8; CTL_DATA_LEN],
    ) -> Ctl {
        debug_assert!(len <= CTL_DATA_LEN);
        Ctl {
            client_id,
            ctl_type: ctl_type as u32,
            len: len as u32,
            data,
        }
    }

    pub(crate) fn emit(&self) -> [u8; CTL_LEN] {
        let mut b = [0u8; CTL_LEN];
        b[0..4].copy_from_slice(&MAGIC.to_ne_bytes());
        b[4..8].copy_from_slice(&self.client_id.to_ne_bytes());
        b[8..12].copy_from_slice(&self.ctl_type.to_ne_bytes());
        b[12..16].copy_from_slice(&self.len.to_ne_bytes());
        b[16..].copy_from_slice(&self.data);
        b
    }

    /// Parses an answer: `Err` names what is wrong.
    pub(crate) fn parse(b: &[u8]) -> Result<Ctl, &'static str> {
        if b.len() != CTL_LEN {
            return Err("not 80 bytes long");
        }
        if ne32(b, 0) != MAGIC {
            return Err("bad magic (not 0xdeadbeef)");
        }
        let mut data = [0u8; CTL_DATA_LEN];
        data.copy_from_slice(&b[16..]);
        Ok(Ctl {
            client_id: ne32(b, 4),
            ctl_type: ne32(b, 8),
            len: ne32(b, 12),
            data,
        })
    }
}

/// `struct sim_client_info`, the data of CONNECT (request and answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClientInfo {
    /// In the request: the connection id ibsim connects `sim:in<id>` for (umad2sim sends
    /// its PID). In the answer: the client id (slot).
    pub(crate) id: u32,
    /// The QPN the client serves; 0 or 1 = QP0/QP1 clients (routed by TID).
    pub(crate) qp: u32,
    /// Non-zero: the client is an SM (gets unsolicited QP0/QP1 requests).
    pub(crate) issm: u32,
    /// NUL-terminated node name (SIM_HOST); ibsim writes back the node it chose.
    pub(crate) nodeid: [u8; NODEID_LEN],
}

impl ClientInfo {
    pub(crate) const LEN: usize = 12 + NODEID_LEN;

    pub(crate) fn to_data(self) -> [u8; CTL_DATA_LEN] {
        let mut d = [0u8; CTL_DATA_LEN];
        d[0..4].copy_from_slice(&self.id.to_ne_bytes());
        d[4..8].copy_from_slice(&self.qp.to_ne_bytes());
        d[8..12].copy_from_slice(&self.issm.to_ne_bytes());
        d[12..12 + NODEID_LEN].copy_from_slice(&self.nodeid);
        d
    }

    pub(crate) fn from_data(d: &[u8; CTL_DATA_LEN]) -> ClientInfo {
        let mut nodeid = [0u8; NODEID_LEN];
        nodeid.copy_from_slice(&d[12..12 + NODEID_LEN]);
        ClientInfo {
            id: ne32(d, 0),
            qp: ne32(d, 4),
            issm: ne32(d, 8),
            nodeid,
        }
    }

    /// The node name up to its NUL.
    pub(crate) fn node_name(&self) -> String {
        let end = self
            .nodeid
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(NODEID_LEN);
        String::from_utf8_lossy(&self.nodeid[..end]).into_owned()
    }
}

/// Encodes a LID the way umad2sim stores `addr.lid` (`__be16`) into a `uint32_t`.
fn lid_field(lid: Lid) -> [u8; 4] {
    u32::from(u16::from_ne_bytes(lid.0.to_be_bytes())).to_ne_bytes()
}

/// Decodes a LID field (ibsim reads it with `ntohs(r->dlid)`, truncating to 16 bits).
fn lid_from_field(b: &[u8], at: usize) -> Lid {
    let v = ne32(b, at) as u16;
    Lid(u16::from_be_bytes(v.to_ne_bytes()))
}

/// One `struct sim_request`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct SimRequest {
    pub(crate) dlid: Lid,
    /// 0 asks ibsim to fill in the sender's LID.
    pub(crate) slid: Lid,
    pub(crate) dqp: u32,
    pub(crate) sqp: u32,
    pub(crate) status: u32,
    pub(crate) length: u64,
    pub(crate) mad: Mad,
}

impl core::fmt::Debug for SimRequest {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SimRequest")
            .field("dlid", &self.dlid)
            .field("slid", &self.slid)
            .field("dqp", &self.dqp)
            .field("sqp", &self.sqp)
            .field("status", &self.status)
            .field("length", &self.length)
            .finish_non_exhaustive()
    }
}

impl SimRequest {
    pub(crate) fn emit(&self) -> [u8; REQ_LEN] {
        let mut b = [0u8; REQ_LEN];
        b[0..4].copy_from_slice(&lid_field(self.dlid));
        b[4..8].copy_from_slice(&lid_field(self.slid));
        b[8..12].copy_from_slice(&self.dqp.to_be_bytes());
        b[12..16].copy_from_slice(&self.sqp.to_be_bytes());
        b[16..20].copy_from_slice(&self.status.to_be_bytes());
        b[24..32].copy_from_slice(&self.length.to_be_bytes());
        b[32..].copy_from_slice(&self.mad);
        b
    }

    /// `None` unless `b` is exactly one `sim_request`.
    pub(crate) fn parse(b: &[u8]) -> Option<SimRequest> {
        if b.len() != REQ_LEN {
            return None;
        }
        let mut mad = [0u8; MAD_LEN];
        mad.copy_from_slice(&b[32..]);
        let mut len = [0u8; 8];
        len.copy_from_slice(&b[24..32]);
        Some(SimRequest {
            dlid: lid_from_field(b, 0),
            slid: lid_from_field(b, 4),
            dqp: be32(b, 8),
            sqp: be32(b, 12),
            status: be32(b, 16),
            length: u64::from_be_bytes(len),
            mad,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctl_layout() {
        let mut data = [0u8; CTL_DATA_LEN];
        data[0] = 7;
        let b = Ctl::new(3, CtlType::GetPortInfo, 1, data).emit();
        assert_eq!(&b[0..4], &0xdead_beef_u32.to_ne_bytes());
        assert_eq!(&b[4..8], &3u32.to_ne_bytes());
        assert_eq!(&b[8..12], &8u32.to_ne_bytes());
        assert_eq!(&b[12..16], &1u32.to_ne_bytes());
        assert_eq!(b[16], 7);
        let c = Ctl::parse(&b).unwrap();
        assert_eq!((c.client_id, c.ctl_type, c.len, c.data[0]), (3, 8, 1, 7));
        assert!(Ctl::parse(&b[..79]).is_err());
        let mut bad = b;
        bad[0] ^= 1;
        assert!(Ctl::parse(&bad).is_err());
    }

    #[test]
    fn client_info_layout() {
        let mut nodeid = [0u8; NODEID_LEN];
        nodeid[..5].copy_from_slice(b"hostA");
        let ci = ClientInfo {
            id: 0x1234,
            qp: 0,
            issm: 1,
            nodeid,
        };
        let d = ci.to_data();
        assert_eq!(&d[0..4], &0x1234u32.to_ne_bytes());
        assert_eq!(&d[8..12], &1u32.to_ne_bytes());
        assert_eq!(&d[12..17], b"hostA");
        assert_eq!(ClientInfo::from_data(&d), ci);
        assert_eq!(ci.node_name(), "hostA");
        assert_eq!(ClientInfo::LEN, 44);
    }

    #[test]
    fn request_layout() {
        let mut mad = [0u8; MAD_LEN];
        mad[0] = 1;
        mad[255] = 0xAA;
        let r = SimRequest {
            dlid: Lid(0x0102),
            slid: Lid(0),
            dqp: 1,
            sqp: 1,
            status: 0,
            length: 256,
            mad,
        };
        let b = r.emit();
        // What umad2sim writes on x86: the big-endian LID, then two zero bytes.
        if cfg!(target_endian = "little") {
            assert_eq!(&b[0..4], &[0x01, 0x02, 0, 0]);
        }
        assert_eq!(&b[8..12], &[0, 0, 0, 1]);
        assert_eq!(&b[12..16], &[0, 0, 0, 1]);
        assert_eq!(&b[20..24], &[0; 4]);
        assert_eq!(&b[24..32], &[0, 0, 0, 0, 0, 0, 1, 0]);
        assert_eq!((b[32], b[287]), (1, 0xAA));
        assert_eq!(SimRequest::parse(&b), Some(r));
        assert_eq!(SimRequest::parse(&b[..287]), None);
    }
}
