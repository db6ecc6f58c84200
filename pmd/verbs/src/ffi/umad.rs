//! libibumad: the port's MAD interface (`/dev/infiniband/umadN`), one agent per class.

use std::ffi::CString;
use std::sync::Arc;

use super::c_string;
use crate::sys::umad::{ib_user_mad, umad_port, UmadLib};
use crate::Error;

/// The soname loaded by [`UmadLibrary::load`].
pub const LIBIBUMAD: &str = "libibumad.so.3";

/// The bytes of one MAD.
pub(crate) const MAD_BYTES: usize = 256;

/// libibumad, `dlopen()`ed and initialised (`umad_init`).
pub struct UmadLibrary {
    pub(crate) umad: UmadLib,
}

impl std::fmt::Debug for UmadLibrary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UmadLibrary(libibumad)")
    }
}

impl UmadLibrary {
    /// Loads [`LIBIBUMAD`].
    pub fn load() -> Result<Arc<UmadLibrary>, Error> {
        UmadLibrary::load_from(LIBIBUMAD)
    }

    /// Loads libibumad from `name` (a soname or a path) and calls `umad_init`.
    pub fn load_from(name: &str) -> Result<Arc<UmadLibrary>, Error> {
        // SAFETY: loading libibumad runs no code of ours; symbols match umad.h's
        // prototypes (bindgen, same ABI).
        let umad = unsafe { UmadLib::new(name) }.map_err(|source| Error::LibraryMissing {
            lib: name.to_owned(),
            packages: "libibumad3 rdma-core",
            source,
        })?;
        // SAFETY: umad_init has no preconditions (it only checks the ABI version).
        let rc = unsafe { umad.umad_init() };
        if rc < 0 {
            return Err(Error::Umad {
                op: "umad_init",
                hint: ": is the ib_umad kernel module loaded (`modprobe ib_umad`)?",
                source: std::io::Error::from_raw_os_error(-rc),
            });
        }
        Ok(Arc::new(UmadLibrary { umad }))
    }
}

/// What `umad_get_port` says about a port.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UmadPortInfo {
    /// The HCA's name.
    pub ca_name: String,
    /// The port number.
    pub port_num: u8,
    /// The port's LID.
    pub lid: u16,
    /// LMC.
    pub lmc: u8,
    /// The subnet manager's LID (where the SA is).
    pub sm_lid: u16,
    /// The subnet manager's SL.
    pub sm_sl: u8,
    /// Logical state (4 = Active).
    pub state: u32,
    /// GID prefix, host order.
    pub gid_prefix: u64,
    /// Port GUID, host order.
    pub port_guid: u64,
    /// P_Key table, host order.
    pub pkeys: Vec<u16>,
    /// "InfiniBand" or "Ethernet".
    pub link_layer: String,
}

fn c_chars(b: &[std::ffi::c_char]) -> String {
    let bytes: Vec<u8> = b
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn umad_error(op: &'static str, hint: &'static str, rc: i32) -> Error {
    Error::Umad {
        op,
        hint,
        source: std::io::Error::from_raw_os_error(rc.unsigned_abs() as i32),
    }
}

/// One port's umad file with one registered agent; closed on drop.
pub(crate) struct UmadPort {
    lib: Arc<UmadLibrary>,
    ca: Option<CString>,
    port_num: u8,
    portid: i32,
    agent: i32,
    /// One `ib_user_mad` header plus a MAD, 8-byte aligned.
    buf: Vec<u64>,
    hdr_len: usize,
}

/// What a receive found (by value: one per MAD, on the control path).
#[allow(clippy::large_enum_variant)]
pub(crate) enum Received {
    /// Nothing waiting.
    Empty,
    /// A MAD, its source, and the umad status (0, or the kernel's ETIMEDOUT for a
    /// request of ours that timed out).
    Mad {
        mad: [u8; MAD_BYTES],
        status: i32,
        lid: u16,
        qpn: u32,
        qkey: u32,
        sl: u8,
        pkey_index: u16,
    },
    /// libibumad failed (negative errno).
    Failed(i32),
}

impl UmadPort {
    /// Opens port `port_num` of `ca` (the first HCA when `None`) and registers an agent
    /// for `mgmt_class` version `version` (no RMPP, no unsolicited methods).
    pub(crate) fn open(
        lib: &Arc<UmadLibrary>,
        ca: Option<&str>,
        port_num: u8,
        mgmt_class: u8,
        version: u8,
    ) -> Result<UmadPort, Error> {
        let ca = ca
            .map(|c| {
                CString::new(c).map_err(|_| {
                    umad_error(
                        "umad_open_port",
                        ": the HCA name has a NUL byte",
                        libc::EINVAL,
                    )
                })
            })
            .transpose()?;
        let ca_ptr = ca.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
        // SAFETY: `ca_ptr` is null or a valid C string.
        let portid = unsafe { lib.umad.umad_open_port(ca_ptr, i32::from(port_num)) };
        if portid < 0 {
            return Err(umad_error(
                "umad_open_port",
                ": is the ib_umad kernel module loaded and /dev/infiniband/umad* accessible (root or the rdma group)?",
                portid,
            ));
        }
        // SAFETY: a valid port id; no method mask (no unsolicited requests), no RMPP.
        let agent = unsafe {
            lib.umad.umad_register(
                portid,
                i32::from(mgmt_class),
                i32::from(version),
                0,
                std::ptr::null_mut(),
            )
        };
        if agent < 0 {
            // SAFETY: the port was opened above and is closed once.
            unsafe { lib.umad.umad_close_port(portid) };
            return Err(umad_error("umad_register", "", agent));
        }
        // SAFETY: umad_size has no preconditions.
        let hdr_len = unsafe { lib.umad.umad_size() };
        debug_assert_eq!(hdr_len, std::mem::size_of::<ib_user_mad>());
        Ok(UmadPort {
            lib: lib.clone(),
            ca,
            port_num,
            portid,
            agent,
            buf: vec![0u64; (hdr_len + MAD_BYTES).div_ceil(8)],
            hdr_len,
        })
    }

    /// The port's attributes (`umad_get_port`).
    pub(crate) fn info(&self) -> Result<UmadPortInfo, Error> {
        let mut p = umad_port::default();
        let ca_ptr = self.ca.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
        // SAFETY: `p` is a valid out struct, released below.
        let rc = unsafe {
            self.lib
                .umad
                .umad_get_port(ca_ptr, i32::from(self.port_num), &mut p)
        };
        if rc < 0 {
            return Err(umad_error("umad_get_port", "", rc));
        }
        let pkeys = if p.pkeys.is_null() {
            Vec::new()
        } else {
            // SAFETY: libibumad allocated `pkeys_size` entries (host order).
            unsafe { std::slice::from_raw_parts(p.pkeys, p.pkeys_size as usize) }.to_vec()
        };
        let info = UmadPortInfo {
            ca_name: c_chars(&p.ca_name),
            port_num: p.portnum as u8,
            lid: p.base_lid as u16,
            lmc: p.lmc as u8,
            sm_lid: p.sm_lid as u16,
            sm_sl: p.sm_sl as u8,
            state: p.state,
            gid_prefix: u64::from_be(p.gid_prefix),
            port_guid: u64::from_be(p.port_guid),
            pkeys,
            link_layer: c_chars(&p.link_layer),
        };
        // SAFETY: releases what umad_get_port allocated, once.
        unsafe { self.lib.umad.umad_release_port(&mut p) };
        Ok(info)
    }

    fn umad_ptr(&mut self) -> *mut std::ffi::c_void {
        self.buf.as_mut_ptr().cast()
    }

    /// Sends one MAD (`umad_send`); `timeout_ms` 0 means no answer is awaited. Returns
    /// a negative errno on failure.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn send(
        &mut self,
        mad: &[u8; MAD_BYTES],
        dlid: u16,
        dqpn: u32,
        sl: u8,
        qkey: u32,
        pkey_index: u16,
        timeout_ms: u32,
        retries: u32,
    ) -> Result<(), i32> {
        self.buf.fill(0);
        let hdr = self.hdr_len;
        let umad = self.umad_ptr();
        // SAFETY: the buffer holds a header and a MAD; libibumad writes the address
        // fields of the header only.
        unsafe {
            self.lib.umad.umad_set_addr(
                umad,
                i32::from(dlid),
                dqpn as i32,
                i32::from(sl),
                qkey as i32,
            );
            self.lib.umad.umad_set_pkey(umad, i32::from(pkey_index));
            std::ptr::copy_nonoverlapping(mad.as_ptr(), (umad as *mut u8).add(hdr), MAD_BYTES);
        }
        // SAFETY: a valid port and agent; the buffer is a header plus MAD_BYTES.
        let rc = unsafe {
            self.lib.umad.umad_send(
                self.portid,
                self.agent,
                umad,
                MAD_BYTES as i32,
                timeout_ms as i32,
                retries as i32,
            )
        };
        if rc < 0 {
            Err(rc)
        } else {
            Ok(())
        }
    }

    /// Receives one MAD without blocking (`umad_recv` with timeout 0).
    pub(crate) fn recv(&mut self) -> Received {
        let mut len = MAD_BYTES as i32;
        let umad = self.umad_ptr();
        // SAFETY: the buffer has room for a header plus `len` bytes.
        let rc = unsafe { self.lib.umad.umad_recv(self.portid, umad, &mut len, 0) };
        if rc == -libc::ETIMEDOUT || rc == -libc::EAGAIN || rc == -libc::EWOULDBLOCK {
            return Received::Empty;
        }
        if rc < 0 {
            return Received::Failed(rc);
        }
        // SAFETY: umad_recv filled a header at the start of the 8-byte aligned buffer.
        let h = unsafe { &*(umad as *const ib_user_mad) };
        let mut mad = [0u8; MAD_BYTES];
        let n = (len.max(0) as usize).min(MAD_BYTES);
        // SAFETY: the MAD follows the header; `n` bytes of it were written.
        unsafe {
            std::ptr::copy_nonoverlapping(
                (umad as *const u8).add(self.hdr_len),
                mad.as_mut_ptr(),
                n,
            )
        };
        Received::Mad {
            mad,
            status: h.status as i32,
            lid: u16::from_be(h.addr.lid),
            qpn: u32::from_be(h.addr.qpn),
            qkey: u32::from_be(h.addr.qkey),
            sl: h.addr.sl,
            pkey_index: h.addr.pkey_index,
        }
    }

    /// The file descriptor to poll(2) for readability.
    pub(crate) fn fd(&self) -> i32 {
        // SAFETY: a valid port id.
        unsafe { self.lib.umad.umad_get_fd(self.portid) }
    }

    /// The HCA's name as given (or empty for the default).
    pub(crate) fn ca_name(&self) -> String {
        self.ca
            .as_ref()
            // SAFETY: a CString we own.
            .map(|c| unsafe { c_string(c.as_ptr()) })
            .unwrap_or_default()
    }
}

impl Drop for UmadPort {
    fn drop(&mut self) {
        // SAFETY: the agent and port were opened by us and are released once.
        unsafe {
            self.lib.umad.umad_unregister(self.portid, self.agent);
            self.lib.umad.umad_close_port(self.portid);
        }
    }
}
