//! Capture files of native InfiniBand frames: the writer [`PcapTap`](crate::PcapTap)
//! uses, and a reader for tests.
//!
//! A frame is what a UD send is on the link: LRH, GRH when globally routed, BTH, DETH,
//! payload, pad, ICRC, VCRC ([`UdFrame::encode`]). tshark 4.x cannot open pcap link type
//! 247 (`LINKTYPE_INFINIBAND`), so each frame goes in an ERF record of type 21
//! (`ERF_TYPE_INFINIBAND`) in a link type 197 (`LINKTYPE_ERF`) pcap file, the container
//! Wireshark reads InfiniBand from. The same format as `ibpoll-pmd-sim`'s built-in tap.
//!
//! The writer is bounded (records that would take the file past `max_bytes` are not
//! written; the file stays whole up to there) and never panics: the first write error is
//! kept, later frames are skipped, and both show in [`CaptureStatus`] and in the result of
//! [`CaptureWriter::finish`].

use std::io::Write;
use std::path::PathBuf;

use ibpoll_wire::{bth, crc, deth, grh, lrh, Gid, Lid, PKey, QKey, Qpn};

/// pcap link type of ERF records.
pub const LINKTYPE_ERF: u32 = 197;
/// ERF record type of a native InfiniBand frame.
pub const ERF_TYPE_INFINIBAND: u8 = 21;
/// pcap's global header.
const FILE_HEADER_LEN: usize = 24;
/// pcap's record header.
const RECORD_HEADER_LEN: usize = 16;
/// ERF header length (type 21 has no extension header).
const ERF_HEADER_LEN: usize = 16;
/// The pcap magic of microsecond timestamps, written little-endian.
const PCAP_MAGIC: u32 = 0xa1b2_c3d4;
/// The snap length written in the file header.
const SNAPLEN: u32 = 65535;

/// Why a capture could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaptureError {
    /// Creating or writing the file failed.
    #[error("cannot write capture {}: {source}", path.display())]
    Io {
        /// The file (or the name the caller gave the writer).
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Why bytes are not a capture this crate can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CaptureFormatError {
    /// The file is shorter than its headers say.
    #[error("capture truncated at byte {at}")]
    Truncated {
        /// Where it ends too early.
        at: usize,
    },
    /// Not a little-endian microsecond pcap file of ERF records.
    #[error("not an ERF pcap file: {what}")]
    NotErfPcap {
        /// What is wrong.
        what: &'static str,
    },
    /// A record is not one ERF InfiniBand record.
    #[error("record at byte {at}: {what}")]
    BadRecord {
        /// The record's offset in the file.
        at: usize,
        /// What is wrong.
        what: &'static str,
    },
}

/// Where a capture stands.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CaptureStatus {
    /// The file, as named to the writer.
    pub path: PathBuf,
    /// Frames written.
    pub frames: u64,
    /// Bytes written (or buffered), the file header included.
    pub bytes: u64,
    /// The bound the capture was started with.
    pub max_bytes: u64,
    /// Frames not written because the bound was reached (the traffic went on).
    pub frames_over_limit: u64,
    /// Frames not written because no LRH can describe them (longer than 8188 bytes).
    pub frames_too_long: u64,
    /// The first write error (the OS reason); later frames were not written.
    pub error: Option<String>,
}

/// A bounded capture file being written.
pub struct CaptureWriter {
    out: Box<dyn Write + Send>,
    status: CaptureStatus,
    /// The first write error, kept for `finish`.
    failed: Option<std::io::Error>,
    /// Reused for each frame.
    frame: Vec<u8>,
}

impl std::fmt::Debug for CaptureWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureWriter")
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl CaptureWriter {
    /// A capture of at most `max_bytes` (whole records only) to `out`, which `path`
    /// names in statuses and errors. Writes the pcap file header.
    pub fn new(
        out: Box<dyn Write + Send>,
        path: impl Into<PathBuf>,
        max_bytes: u64,
    ) -> Result<CaptureWriter, CaptureError> {
        let mut w = CaptureWriter {
            out,
            status: CaptureStatus {
                path: path.into(),
                frames: 0,
                bytes: FILE_HEADER_LEN as u64,
                max_bytes,
                frames_over_limit: 0,
                frames_too_long: 0,
                error: None,
            },
            failed: None,
            frame: Vec::with_capacity(4200),
        };
        let mut h = [0u8; FILE_HEADER_LEN];
        h[0..4].copy_from_slice(&PCAP_MAGIC.to_le_bytes());
        h[4..6].copy_from_slice(&2u16.to_le_bytes());
        h[6..8].copy_from_slice(&4u16.to_le_bytes());
        // thiszone 0, sigfigs 0.
        h[16..20].copy_from_slice(&SNAPLEN.to_le_bytes());
        h[20..24].copy_from_slice(&LINKTYPE_ERF.to_le_bytes());
        if let Err(source) = w.out.write_all(&h) {
            return Err(CaptureError::Io {
                path: w.status.path,
                source,
            });
        }
        Ok(w)
    }

    /// Where the capture stands.
    pub fn status(&self) -> CaptureStatus {
        self.status.clone()
    }

    /// Writes one frame, stamped `ts_ns` nanoseconds since the epoch of the caller's
    /// clock. Nothing happens after a write error; frames past the bound are counted.
    pub fn write(&mut self, frame: &UdFrame<'_>, ts_ns: u64) {
        if self.failed.is_some() {
            return;
        }
        if frame.encode(&mut self.frame).is_none() {
            self.status.frames_too_long += 1;
            return;
        }
        let len = ERF_HEADER_LEN + self.frame.len();
        let record = (RECORD_HEADER_LEN + len) as u64;
        if self.status.bytes + record > self.status.max_bytes {
            if self.status.frames_over_limit == 0 {
                tracing::warn!(
                    path = %self.status.path.display(),
                    max_bytes = self.status.max_bytes,
                    "capture: the file reached its size bound; later frames are not written"
                );
            }
            self.status.frames_over_limit += 1;
            return;
        }
        let head = record_header(len, self.frame.len(), ts_ns);
        let result = self
            .out
            .write_all(&head)
            .and_then(|()| self.out.write_all(&self.frame));
        match result {
            Ok(()) => {
                self.status.bytes += record;
                self.status.frames += 1;
            }
            Err(e) => self.fail(e),
        }
    }

    fn fail(&mut self, e: std::io::Error) {
        tracing::error!(path = %self.status.path.display(), error = %e, "capture: write failed");
        self.status.error = Some(e.to_string());
        self.failed = Some(e);
    }

    /// Flushes and closes; a write error (now or earlier) is the error.
    pub fn finish(mut self) -> Result<CaptureStatus, CaptureError> {
        if self.failed.is_none() {
            if let Err(e) = self.out.flush() {
                self.fail(e);
            }
        }
        match self.failed.take() {
            Some(source) => Err(CaptureError::Io {
                path: self.status.path,
                source,
            }),
            None => Ok(self.status),
        }
    }
}

/// The pcap record header and the ERF header of a record of `len` bytes (ERF header
/// included) carrying a frame of `wlen` bytes.
fn record_header(len: usize, wlen: usize, ts_ns: u64) -> [u8; RECORD_HEADER_LEN + ERF_HEADER_LEN] {
    let secs = ts_ns / 1_000_000_000;
    let sub_ns = ts_ns % 1_000_000_000;
    let mut rec = [0u8; RECORD_HEADER_LEN + ERF_HEADER_LEN];
    rec[0..4].copy_from_slice(&(secs as u32).to_le_bytes());
    rec[4..8].copy_from_slice(&((sub_ns / 1000) as u32).to_le_bytes());
    rec[8..12].copy_from_slice(&(len as u32).to_le_bytes());
    rec[12..16].copy_from_slice(&(len as u32).to_le_bytes());
    // ERF: a 64-bit little-endian timestamp, seconds in the high 32 bits and the binary
    // fraction of a second in the low 32.
    let frac = (sub_ns << 32) / 1_000_000_000;
    rec[16..24].copy_from_slice(&((secs << 32) | frac).to_le_bytes());
    rec[24] = ERF_TYPE_INFINIBAND;
    rec[25] = 0x04; // flags: varying record length, interface 0
    rec[26..28].copy_from_slice(&(len as u16).to_be_bytes()); // rlen
    rec[28..30].copy_from_slice(&0u16.to_be_bytes()); // loss counter
    rec[30..32].copy_from_slice(&(wlen as u16).to_be_bytes()); // wlen
    rec
}

/// The global-routing fields of a frame's GRH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameGrh {
    /// Traffic class.
    pub traffic_class: u8,
    /// Flow label (20 bits).
    pub flow_label: u32,
    /// Hop limit.
    pub hop_limit: u8,
    /// Source GID.
    pub sgid: Gid,
    /// Destination GID (an MGID for multicast).
    pub dgid: Gid,
}

/// One UD send as it is on the link.
#[derive(Debug, Clone, Copy)]
pub struct UdFrame<'a> {
    /// Service level.
    pub sl: u8,
    /// Destination LID (an MLID for multicast).
    pub dlid: Lid,
    /// Source LID.
    pub slid: Lid,
    /// The GRH, for a globally routed frame.
    pub grh: Option<FrameGrh>,
    /// The sending QP's P_Key.
    pub pkey: PKey,
    /// The destination QP ([`Qpn::MULTICAST`] for a group).
    pub dest_qpn: Qpn,
    /// Packet sequence number.
    pub psn: u32,
    /// The Q_Key the send carries.
    pub qkey: QKey,
    /// The sending QP.
    pub src_qpn: Qpn,
    /// Everything after the DETH (for IPoIB: from the 4-byte IPoIB header on).
    pub payload: &'a [u8],
}

impl UdFrame<'_> {
    /// The longest frame an LRH describes: PktLen is 11 bits of 4-byte words, LRH to
    /// ICRC.
    const LEN_MAX: usize = lrh::PKT_LEN_MAX as usize * 4;

    /// Writes the frame, CRCs included, into `f` (replacing its contents); `None` if
    /// it is longer than an LRH can describe.
    pub fn encode(&self, f: &mut Vec<u8>) -> Option<()> {
        let pad = usize::from(bth::pad_count_for(self.payload.len()));
        let grh_len = if self.grh.is_some() {
            grh::HEADER_LEN
        } else {
            0
        };
        let bth_deth = bth::HEADER_LEN + deth::HEADER_LEN;
        let after_lrh = grh_len + bth_deth + self.payload.len() + pad;
        let frame_len = lrh::HEADER_LEN + after_lrh;
        if frame_len + crc::ICRC_LEN > Self::LEN_MAX {
            return None;
        }
        f.clear();
        f.resize(frame_len + crc::ICRC_LEN + crc::VCRC_LEN, 0);
        let lnh = match self.grh {
            Some(_) => lrh::Lnh::IbaGlobal,
            None => lrh::Lnh::IbaLocal,
        };
        lrh::Repr {
            vl: 0,
            sl: self.sl,
            lnh,
            dlid: self.dlid,
            slid: self.slid,
            payload_len: after_lrh,
        }
        .emit(&mut lrh::Packet::new_unchecked(&mut f[..lrh::HEADER_LEN]));
        let mut at = lrh::HEADER_LEN;
        if let Some(g) = self.grh {
            grh::Repr {
                traffic_class: g.traffic_class,
                flow_label: g.flow_label,
                // PayLen: everything after the GRH up to and including the ICRC.
                payload_len: (after_lrh - grh::HEADER_LEN + crc::ICRC_LEN) as u16,
                next_header: grh::NXT_HDR_IBA,
                hop_limit: g.hop_limit,
                sgid: g.sgid,
                dgid: g.dgid,
            }
            .emit(&mut grh::Packet::new_unchecked(
                &mut f[at..at + grh::HEADER_LEN],
            ));
            at += grh::HEADER_LEN;
        }
        bth::Repr::ud_send_only(self.pkey, self.dest_qpn, self.psn, self.payload.len()).emit(
            &mut bth::Packet::new_unchecked(&mut f[at..at + bth::HEADER_LEN]),
        );
        at += bth::HEADER_LEN;
        deth::Repr {
            qkey: self.qkey,
            src_qpn: self.src_qpn,
        }
        .emit(&mut deth::Packet::new_unchecked(
            &mut f[at..at + deth::HEADER_LEN],
        ));
        at += deth::HEADER_LEN;
        f[at..at + self.payload.len()].copy_from_slice(self.payload);
        // Cannot fail: `f` was sized for both CRCs.
        crc::append_crcs(f, frame_len).ok()?;
        Some(())
    }
}

/// One record of a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The pcap timestamp, in microseconds.
    pub ts_us: u64,
    /// The InfiniBand frame, LRH to VCRC.
    pub frame: Vec<u8>,
}

/// Reads a capture written by [`CaptureWriter`] (or `ibpoll-pmd-sim`'s tap): checks the
/// pcap file header (magic, version 2.4, link type 197) and each record's ERF header
/// (type 21, no loss, lengths consistent) and returns the frames in order.
pub fn read_capture(bytes: &[u8]) -> Result<Vec<Record>, CaptureFormatError> {
    let le32 = |at: usize| -> Result<u32, CaptureFormatError> {
        let b = bytes
            .get(at..at + 4)
            .ok_or(CaptureFormatError::Truncated { at })?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let not = |what| CaptureFormatError::NotErfPcap { what };
    if le32(0)? != PCAP_MAGIC {
        return Err(not("magic is not a1b2c3d4 little-endian"));
    }
    if le32(4)? != 0x0004_0002 {
        return Err(not("version is not 2.4"));
    }
    let snaplen = le32(16)? as usize;
    if le32(20)? != LINKTYPE_ERF {
        return Err(not("link type is not ERF (197)"));
    }
    let mut records = Vec::new();
    let mut at = FILE_HEADER_LEN;
    while at < bytes.len() {
        let (ts_s, ts_us) = (u64::from(le32(at)?), u64::from(le32(at + 4)?));
        let incl = le32(at + 8)? as usize;
        let orig = le32(at + 12)? as usize;
        let body = at + RECORD_HEADER_LEN;
        let rec = bytes
            .get(body..body + incl)
            .ok_or(CaptureFormatError::Truncated { at: body })?;
        let bad = |what| CaptureFormatError::BadRecord { at, what };
        if incl != orig || incl > snaplen {
            return Err(bad(
                "the record was cut (included length below the original)",
            ));
        }
        if rec.len() <= ERF_HEADER_LEN || rec[8] != ERF_TYPE_INFINIBAND {
            return Err(bad("not an ERF InfiniBand record (type 21)"));
        }
        let be16 = |i: usize| usize::from(u16::from_be_bytes([rec[i], rec[i + 1]]));
        if be16(10) != incl || be16(14) != incl - ERF_HEADER_LEN || be16(12) != 0 {
            return Err(bad("ERF rlen, wlen or loss counter inconsistent"));
        }
        records.push(Record {
            ts_us: ts_s * 1_000_000 + ts_us,
            frame: rec[ERF_HEADER_LEN..].to_vec(),
        });
        at = body + incl;
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &[u8], grh: bool) -> UdFrame<'_> {
        UdFrame {
            sl: 3,
            dlid: Lid(0xC000),
            slid: Lid(2),
            grh: grh.then_some(FrameGrh {
                traffic_class: 0x20,
                flow_label: 0x12345,
                hop_limit: 7,
                sgid: Gid::new(Gid::DEFAULT_SUBNET_PREFIX, 1),
                dgid: Gid::new(Gid::DEFAULT_SUBNET_PREFIX, 2),
            }),
            pkey: PKey::DEFAULT,
            dest_qpn: Qpn::MULTICAST,
            psn: 9,
            qkey: QKey::IPOIB_DEFAULT,
            src_qpn: Qpn::GSI,
            payload,
        }
    }

    #[test]
    fn an_encoded_frame_parses_back_with_its_crcs() {
        for (len, grh) in [(1usize, false), (7, true), (2044, true), (4092, false)] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut f = Vec::new();
            frame(&payload, grh).encode(&mut f).expect("fits an LRH");
            let body = crc::verify_crcs(&f).expect("CRCs");
            let l = lrh::Repr::parse(&lrh::Packet::new_checked(&f[..]).unwrap()).unwrap();
            assert_eq!((l.sl, l.dlid, l.slid), (3, Lid(0xC000), Lid(2)));
            let at = lrh::HEADER_LEN + if grh { grh::HEADER_LEN } else { 0 };
            let b = bth::Repr::parse(&bth::Packet::new_checked(&f[at..]).unwrap()).unwrap();
            assert_eq!(
                (b.psn, b.dest_qpn, b.pkey),
                (9, Qpn::MULTICAST, PKey::DEFAULT)
            );
            let start = at + bth::HEADER_LEN + deth::HEADER_LEN;
            assert_eq!(&f[start..body - usize::from(b.pad_count)], &payload[..]);
        }
    }

    #[test]
    fn a_frame_no_lrh_can_describe_is_refused() {
        let big = vec![0u8; 8188];
        assert!(frame(&big, false).encode(&mut Vec::new()).is_none());
    }

    #[test]
    fn the_writer_stops_at_its_bound_and_the_reader_reads_what_it_wrote() {
        let path = std::env::temp_dir().join(format!("ibpoll-devtest-cap-{}", std::process::id()));
        let file = std::fs::File::create(&path).unwrap();
        // Header (24) + one 16+16+frame record fits; the second does not.
        let payload = [0xA5u8; 8];
        let mut f = Vec::new();
        frame(&payload, false).encode(&mut f).unwrap();
        let one = (RECORD_HEADER_LEN + ERF_HEADER_LEN + f.len()) as u64;
        let mut w = CaptureWriter::new(Box::new(file), &path, 24 + one + one / 2).unwrap();
        w.write(&frame(&payload, false), 1_500_000_000);
        w.write(&frame(&payload, false), 2_000_000_000);
        let st = w.finish().unwrap();
        assert_eq!(
            (st.frames, st.frames_over_limit, st.bytes),
            (1, 1, 24 + one)
        );
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len() as u64, st.bytes);
        let recs = read_capture(&bytes).unwrap();
        assert_eq!(
            recs,
            [Record {
                ts_us: 1_500_000,
                frame: f
            }]
        );
        std::fs::remove_file(&path).ok();
        // Cut short, the reader says where.
        assert!(matches!(
            read_capture(&bytes[..bytes.len() - 1]),
            Err(CaptureFormatError::Truncated { .. })
        ));
        assert!(matches!(
            read_capture(&bytes[..10]),
            Err(CaptureFormatError::Truncated { at: 16 })
        ));
    }
}
