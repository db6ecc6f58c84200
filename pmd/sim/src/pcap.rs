//! The pcap tap: every UD send the switch forwards, written as the native InfiniBand
//! frame it would be on a link (LRH, GRH when routed globally, BTH, DETH, payload, pad,
//! ICRC, VCRC).
//!
//! tshark 4.x cannot open pcap link type 247 (`LINKTYPE_INFINIBAND`), so each frame is
//! wrapped in an ERF record of type 21 (`ERF_TYPE_INFINIBAND`) in a link type 197
//! (`LINKTYPE_ERF`) file, the container Wireshark reads InfiniBand from.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use ibpoll_dev::AhAttr;
use ibpoll_wire::{bth, crc, deth, grh, lrh, Gid, Lid, PKey, QKey, Qpn};

use crate::fabric::Control;

/// BTH and DETH together.
pub(crate) const BTH_DETH_LEN: usize = bth::HEADER_LEN + deth::HEADER_LEN;
/// pcap link type of ERF records.
const LINKTYPE_ERF: u32 = 197;
/// ERF record type of a native InfiniBand frame.
const ERF_TYPE_INFINIBAND: u8 = 21;
/// ERF header length (type 21 has no extension header).
const ERF_HEADER_LEN: usize = 16;

/// Why the capture file could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PcapError {
    /// Creating or writing the file failed.
    #[error("cannot write pcap file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Where a capture stands.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PcapStatus {
    /// The file (as named to [`SimFabric::start_pcap_file`](crate::SimFabric::start_pcap_file)).
    pub path: PathBuf,
    /// Frames written.
    pub frames: u64,
    /// Bytes written (or buffered), the file header included.
    pub bytes: u64,
    /// The bound the capture was started with.
    pub max_bytes: u64,
    /// The bound was reached: later frames were not written (the capture is whole up
    /// to there; the traffic went on).
    pub limit_reached: bool,
    /// The first write error (the OS reason); later frames were not written.
    pub error: Option<String>,
}

/// pcap's global header.
const FILE_HEADER_LEN: u64 = 24;
/// pcap's record header.
const RECORD_HEADER_LEN: usize = 16;

/// An open capture.
#[derive(Debug)]
pub(crate) struct PcapWriter {
    out: BufWriter<File>,
    path: PathBuf,
    frame: Vec<u8>,
    psn: u32,
    /// The first write error; later frames are skipped and `finish` reports it.
    failed: Option<std::io::Error>,
    frames: u64,
    bytes: u64,
    max_bytes: u64,
    limit_reached: bool,
}

impl PcapWriter {
    pub(crate) fn create(path: &Path) -> Result<PcapWriter, PcapError> {
        let file = File::create(path).map_err(|source| PcapError::Io {
            path: path.to_owned(),
            source,
        })?;
        PcapWriter::new(file, path, u64::MAX)
    }

    /// A capture to `file` (opened by the caller; `path` names it in messages), of at
    /// most `max_bytes` (whole records only).
    pub(crate) fn new(file: File, path: &Path, max_bytes: u64) -> Result<PcapWriter, PcapError> {
        let io = |source| PcapError::Io {
            path: path.to_owned(),
            source,
        };
        let mut out = BufWriter::with_capacity(1 << 20, file);
        // pcap global header, microsecond timestamps, host byte order (magic tells).
        let mut h = Vec::with_capacity(24);
        h.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        h.extend_from_slice(&2u16.to_le_bytes());
        h.extend_from_slice(&4u16.to_le_bytes());
        h.extend_from_slice(&0i32.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        h.extend_from_slice(&65535u32.to_le_bytes());
        h.extend_from_slice(&LINKTYPE_ERF.to_le_bytes());
        out.write_all(&h).map_err(io)?;
        Ok(PcapWriter {
            out,
            path: path.to_owned(),
            frame: Vec::with_capacity(4200),
            psn: 0,
            failed: None,
            frames: 0,
            bytes: FILE_HEADER_LEN,
            max_bytes,
            limit_reached: false,
        })
    }

    pub(crate) fn status(&self) -> PcapStatus {
        PcapStatus {
            path: self.path.clone(),
            frames: self.frames,
            bytes: self.bytes,
            max_bytes: self.max_bytes,
            limit_reached: self.limit_reached,
            error: self.failed.as_ref().map(|e| e.to_string()),
        }
    }

    /// Flushes and closes; a write error (now or earlier) is the error.
    pub(crate) fn finish(mut self) -> Result<PcapStatus, PcapError> {
        if self.failed.is_none() {
            if let Err(e) = self.out.flush() {
                self.failed = Some(e);
            }
        }
        let status = self.status();
        match self.failed.take() {
            Some(source) => Err(PcapError::Io {
                path: self.path,
                source,
            }),
            None => Ok(status),
        }
    }

    fn write_record(&mut self, ts_ns: u64) -> std::io::Result<()> {
        let len = ERF_HEADER_LEN + self.frame.len();
        let record = (RECORD_HEADER_LEN + len) as u64;
        if self.bytes + record > self.max_bytes {
            if !self.limit_reached {
                tracing::warn!(
                    path = %self.path.display(),
                    max_bytes = self.max_bytes,
                    "pcap: the capture reached its size bound; later frames are not written"
                );
            }
            self.limit_reached = true;
            return Ok(());
        }
        let secs = ts_ns / 1_000_000_000;
        let sub_ns = ts_ns % 1_000_000_000;
        let mut rec = [0u8; 16 + ERF_HEADER_LEN];
        rec[0..4].copy_from_slice(&(secs as u32).to_le_bytes());
        rec[4..8].copy_from_slice(&((sub_ns / 1000) as u32).to_le_bytes());
        rec[8..12].copy_from_slice(&(len as u32).to_le_bytes());
        rec[12..16].copy_from_slice(&(len as u32).to_le_bytes());
        // ERF: 64-bit little-endian timestamp, seconds in the high 32 bits and the
        // binary fraction of a second in the low 32.
        let frac = (sub_ns << 32) / 1_000_000_000;
        let erf_ts = (secs << 32) | frac;
        rec[16..24].copy_from_slice(&erf_ts.to_le_bytes());
        rec[24] = ERF_TYPE_INFINIBAND;
        rec[25] = 0x04; // flags: varying record length, interface 0
        rec[26..28].copy_from_slice(&(len as u16).to_be_bytes()); // rlen
        rec[28..30].copy_from_slice(&0u16.to_be_bytes()); // loss counter
        rec[30..32].copy_from_slice(&(self.frame.len() as u16).to_be_bytes()); // wlen
        self.out.write_all(&rec)?;
        self.out.write_all(&self.frame)?;
        self.bytes += record;
        self.frames += 1;
        Ok(())
    }
}

/// Writes one UD send to the capture, if one runs.
#[allow(clippy::too_many_arguments)]
pub(crate) fn capture(
    ctl: &mut Control,
    slid: Lid,
    src_qpn: Qpn,
    pkey: PKey,
    sgid: &Gid,
    ah: &AhAttr,
    dst_qpn: Qpn,
    qkey: QKey,
    payload: &[u8],
) {
    let ts = ctl.clock_now.0;
    let Some(w) = ctl.pcap.as_mut() else {
        return;
    };
    if w.failed.is_some() || w.limit_reached {
        return;
    }
    let pad = usize::from(bth::pad_count_for(payload.len()));
    let grh_len = if ah.grh.is_some() { grh::HEADER_LEN } else { 0 };
    let after_lrh = grh_len + BTH_DETH_LEN + payload.len() + pad;
    let frame_len = lrh::HEADER_LEN + after_lrh;
    let f = &mut w.frame;
    f.clear();
    f.resize(frame_len + crc::ICRC_LEN + crc::VCRC_LEN, 0);
    lrh::Repr {
        vl: 0,
        sl: ah.sl,
        lnh: if ah.grh.is_some() {
            lrh::Lnh::IbaGlobal
        } else {
            lrh::Lnh::IbaLocal
        },
        dlid: ah.dlid,
        slid,
        payload_len: after_lrh,
    }
    .emit(&mut lrh::Packet::new_unchecked(&mut f[..lrh::HEADER_LEN]));
    let mut at = lrh::HEADER_LEN;
    if let Some(g) = ah.grh {
        grh::Repr {
            traffic_class: g.traffic_class,
            flow_label: g.flow_label,
            // PayLen: everything after the GRH up to and including the ICRC.
            payload_len: (after_lrh - grh::HEADER_LEN + crc::ICRC_LEN) as u16,
            next_header: grh::NXT_HDR_IBA,
            hop_limit: g.hop_limit,
            sgid: *sgid,
            dgid: g.dgid,
        }
        .emit(&mut grh::Packet::new_unchecked(
            &mut f[at..at + grh::HEADER_LEN],
        ));
        at += grh::HEADER_LEN;
    }
    bth::Repr::ud_send_only(pkey, dst_qpn, w.psn, payload.len()).emit(
        &mut bth::Packet::new_unchecked(&mut f[at..at + bth::HEADER_LEN]),
    );
    w.psn = (w.psn + 1) & bth::PSN_MAX;
    at += bth::HEADER_LEN;
    deth::Repr { qkey, src_qpn }.emit(&mut deth::Packet::new_unchecked(
        &mut f[at..at + deth::HEADER_LEN],
    ));
    at += deth::HEADER_LEN;
    f[at..at + payload.len()].copy_from_slice(payload);
    if crc::append_crcs(f, frame_len).is_err() {
        // Unreachable: the buffer was sized for both CRCs above.
        return;
    }
    let before = w.frames;
    if let Err(e) = w.write_record(ts) {
        tracing::error!(path = %w.path.display(), error = %e, "pcap: writing the capture failed");
        w.failed = Some(e);
        return;
    }
    ctl.stats.pcap_frames += w.frames - before;
}
