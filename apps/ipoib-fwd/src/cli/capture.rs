//! `--pcap FILE` on the embedded fabric: a locked, bounded capture written beside the
//! target and renamed over it when it ends well; a write error is reported with its
//! OS reason and ends the run (the traffic stops; the summary is still written).

use std::path::Path;

use ibpoll_pmd_sim::{PcapStatus, SimFabric};
use serde_json::{json, Value};

use super::output::CaptureFile;
use super::{describe, OutputError};

/// A capture running on a fabric.
#[derive(Debug)]
pub struct Capture {
    file: CaptureFile,
}

/// How a capture ended.
#[derive(Debug, Clone)]
pub struct CaptureEnd {
    /// The file (as given).
    pub path: String,
    /// Where it stood at the end (frames, bytes, bound reached).
    pub status: Option<PcapStatus>,
    /// Why it failed (the OS reason), if it did; the partial capture was removed and
    /// an earlier file at the path left as it was.
    pub error: Option<String>,
}

impl Capture {
    /// Opens `path` (see [`CaptureFile::open`]: refused if another process captures to
    /// it) and starts capturing every frame the fabric forwards, at most `max_bytes`.
    pub fn start(fabric: &SimFabric, path: &Path, max_bytes: u64) -> Result<Capture, String> {
        let (file, out) = CaptureFile::open(path).map_err(|e: OutputError| e.to_string())?;
        fabric
            .start_pcap_file(out, path, max_bytes)
            .map_err(|e| describe(&e))?;
        Ok(Capture { file })
    }

    /// The write error of the running capture, if one happened (the OS reason).
    pub fn failed(fabric: &SimFabric) -> Option<String> {
        fabric.pcap_status().and_then(|s| s.error)
    }

    /// Stops the capture: renames it over the target, or on a write error removes it.
    pub fn finish(self, fabric: &SimFabric) -> CaptureEnd {
        let path = self.file.path().display().to_string();
        let last = fabric.pcap_status();
        match fabric.stop_pcap() {
            Ok(status) => match self.file.commit() {
                Ok(()) => CaptureEnd {
                    path,
                    status,
                    error: None,
                },
                Err(e) => CaptureEnd {
                    path,
                    status,
                    error: Some(e.to_string()),
                },
            },
            Err(e) => {
                self.file.discard();
                CaptureEnd {
                    path,
                    status: last,
                    error: Some(describe(&e)),
                }
            }
        }
    }
}

impl CaptureEnd {
    /// One line for the summary.
    pub fn line(&self) -> String {
        match (&self.error, &self.status) {
            (Some(e), _) => format!("capture FAILED ({e}); the partial capture was removed"),
            (None, Some(s)) if s.limit_reached => format!(
                "capture {}: {} frames, {} bytes: STOPPED at its bound (--pcap-max-bytes {}); the traffic went on",
                self.path, s.frames, s.bytes, s.max_bytes
            ),
            (None, Some(s)) => format!("capture {}: {} frames, {} bytes", self.path, s.frames, s.bytes),
            (None, None) => format!("capture {}: nothing captured", self.path),
        }
    }

    /// The JSON object of the summary's `pcap` key.
    pub fn json(&self) -> Value {
        let s = self.status.as_ref();
        json!({
            "path": self.path,
            "frames": s.map(|s| s.frames),
            "bytes": s.map(|s| s.bytes),
            "max_bytes": s.map(|s| s.max_bytes),
            "limit_reached": s.is_some_and(|s| s.limit_reached),
            "error": self.error,
        })
    }
}
