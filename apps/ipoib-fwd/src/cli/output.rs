//! Where the programs' results go, written so that a failure is reported and never
//! destroys an earlier result:
//!
//! - [`Stdout`]: every line checked; the first failure (a closed pipe, a full disk) is
//!   kept, nothing more is written, and the program ends its run and exits 1 saying why;
//! - [`ResultFile`]: a result (`--json FILE`) written to a temporary file beside the
//!   target and renamed over it at the end, so a run that fails or is killed leaves an
//!   earlier result as it was; checked (not touched) before the run;
//! - [`CaptureFile`]: a capture (`--pcap FILE`) in a temporary file beside the target,
//!   renamed over it at the end, while the target holds an advisory lock (`flock`) that
//!   refuses a second process capturing to the same file.
//!
//! A target that exists and is not a regular file (`/dev/null`, a FIFO) is written in
//! place: it cannot be renamed over, and there is nothing there to destroy.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Writes one line to standard error; a failure there has nowhere to be reported and is
/// ignored (unlike `eprintln!`, which panics).
pub fn note(line: &str) {
    let mut e = io::stderr().lock();
    let _ = writeln!(e, "{line}");
    let _ = e.flush();
}

/// Standard output, checked line by line.
#[derive(Debug, Default)]
pub struct Stdout {
    failed: Option<io::Error>,
}

impl Stdout {
    /// Standard output, nothing written yet.
    pub fn new() -> Stdout {
        Stdout::default()
    }

    /// Writes `text` and a newline, and flushes. Returns false if this or an earlier
    /// write failed (then nothing is written).
    pub fn line(&mut self, text: &str) -> bool {
        if self.failed.is_some() {
            return false;
        }
        let mut o = io::stdout().lock();
        let r = writeln!(o, "{text}").and_then(|()| o.flush());
        if let Err(e) = r {
            self.failed = Some(e);
            return false;
        }
        true
    }

    /// The first failure, if any.
    pub fn error(&self) -> Option<&io::Error> {
        self.failed.as_ref()
    }
}

/// Why an output file was refused or could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutputError {
    /// The file (or the directory it goes in) cannot be written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The path names a directory.
    #[error("{} is a directory: give a file name", path.display())]
    IsDir {
        /// The path.
        path: PathBuf,
    },
    /// Another process holds the capture's lock.
    #[error("{} is being written by another running process (it holds the file's lock): give another file", path.display())]
    Busy {
        /// The file.
        path: PathBuf,
    },
}

fn io_err(path: &Path) -> impl Fn(io::Error) -> OutputError + '_ {
    move |source| OutputError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Whether `path` exists and is something else than a regular file or a directory
/// (written in place).
fn special(path: &Path) -> Result<bool, OutputError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Err(OutputError::IsDir {
            path: path.to_owned(),
        }),
        Ok(m) => Ok(!m.is_file()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// The temporary file beside `path`: `.NAME.PID.tmp` in the same directory (so that
/// the rename stays on one file system).
fn temp_beside(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".to_owned());
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

fn create_new(path: &Path) -> Result<File, OutputError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io_err(path))
}

/// A result file, checked before the run and written at its end.
#[derive(Debug, Clone)]
pub struct ResultFile {
    path: PathBuf,
    in_place: bool,
}

impl ResultFile {
    /// Checks that the result can be written, without touching `path`: it is not a
    /// directory, and a temporary file can be created beside it (and is removed again).
    pub fn check(path: &Path) -> Result<ResultFile, OutputError> {
        let in_place = special(path)?;
        if in_place {
            OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(io_err(path))?;
        } else {
            let tmp = temp_beside(path);
            drop(create_new(&tmp)?);
            let _ = std::fs::remove_file(&tmp);
        }
        Ok(ResultFile {
            path: path.to_owned(),
            in_place,
        })
    }

    /// The target.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `bytes` to a temporary file, syncs it and renames it over the target (in
    /// place for a non-regular target). On failure the target is as it was.
    pub fn write(&self, bytes: &[u8]) -> Result<(), OutputError> {
        let err = io_err(&self.path);
        if self.in_place {
            let mut f = OpenOptions::new()
                .write(true)
                .open(&self.path)
                .map_err(&err)?;
            return f.write_all(bytes).and_then(|()| f.flush()).map_err(err);
        }
        let tmp = temp_beside(&self.path);
        let r = create_new(&tmp).and_then(|mut f| {
            f.write_all(bytes)
                .and_then(|()| f.sync_all())
                .and_then(|()| std::fs::rename(&tmp, &self.path))
                .map_err(&err)
        });
        if r.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        r
    }
}

/// Takes `file`'s advisory lock (`flock`, exclusive, without waiting); false if another
/// open file holds it.
fn try_lock(file: &File) -> io::Result<bool> {
    // SAFETY: `flock` on a file descriptor this `File` owns (open for the call's
    // duration); it touches no memory of ours.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// A capture being written: the locked target and the temporary file the frames go to.
#[derive(Debug)]
pub struct CaptureFile {
    path: PathBuf,
    /// Holds the target's lock while the capture runs (`None`: written in place).
    _lock: Option<File>,
    /// The temporary file, renamed over the target by [`commit`](Self::commit).
    temp: Option<PathBuf>,
    /// Whether the target was created here (an empty file, removed again on failure).
    created: bool,
}

impl CaptureFile {
    /// Locks `path` (creating it empty if it does not exist) and creates the temporary
    /// file the capture is written to; the file to write is returned beside it. A
    /// target another process holds the lock of is refused ([`OutputError::Busy`]).
    pub fn open(path: &Path) -> Result<(CaptureFile, File), OutputError> {
        let err = io_err(path);
        if special(path)? {
            let f = OpenOptions::new().write(true).open(path).map_err(&err)?;
            let c = CaptureFile {
                path: path.to_owned(),
                _lock: None,
                temp: None,
                created: false,
            };
            return Ok((c, f));
        }
        let existed = path.exists();
        let lock = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(&err)?;
        let created = !existed;
        let cleanup = |created: bool| {
            if created {
                let _ = std::fs::remove_file(path);
            }
        };
        match try_lock(&lock) {
            Ok(true) => {}
            Ok(false) => {
                return Err(OutputError::Busy {
                    path: path.to_owned(),
                })
            }
            Err(e) => {
                cleanup(created);
                return Err(err(e));
            }
        }
        let temp = temp_beside(path);
        let file = match create_new(&temp) {
            Ok(f) => f,
            Err(e) => {
                cleanup(created);
                return Err(e);
            }
        };
        let c = CaptureFile {
            path: path.to_owned(),
            _lock: Some(lock),
            temp: Some(temp),
            created,
        };
        Ok((c, file))
    }

    /// The target.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The capture is complete: the temporary file replaces the target.
    pub fn commit(mut self) -> Result<(), OutputError> {
        match self.temp.take() {
            Some(t) => std::fs::rename(&t, &self.path).map_err(io_err(&self.path)),
            None => Ok(()),
        }
    }

    /// The capture failed: the temporary file is removed (an earlier capture at the
    /// target stays; a target created empty by [`open`](Self::open) is removed).
    pub fn discard(mut self) {
        if let Some(t) = self.temp.take() {
            let _ = std::fs::remove_file(t);
            if self.created {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

impl Drop for CaptureFile {
    fn drop(&mut self) {
        // Neither committed nor discarded (an early error): leave no temporary behind.
        if let Some(t) = self.temp.take() {
            let _ = std::fs::remove_file(t);
            if self.created {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// The file `path` names, for comparing two outputs: its directory resolved (links,
/// `..`) and its name. Paths that cannot be resolved compare as given.
fn identity(path: &Path) -> PathBuf {
    if let Ok(p) = std::fs::canonicalize(path) {
        return p;
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    match (std::fs::canonicalize(dir), path.file_name()) {
        (Ok(d), Some(n)) => d.join(n),
        _ => path.to_owned(),
    }
}

/// Whether two output paths name the same regular file (or would: neither need exist).
/// Non-regular files (`/dev/null`) may be shared.
pub fn same_file(a: &Path, b: &Path) -> bool {
    if matches!(special(a), Ok(true) | Err(_)) {
        return false;
    }
    identity(a) == identity(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ipoib-fwd-out-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_result_replaces_the_old_one_only_when_written() {
        let d = dir("result");
        let p = d.join("r.json");
        std::fs::write(&p, "old\n").unwrap();
        let r = ResultFile::check(&p).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "old\n", "untouched");
        r.write(b"new\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new\n");
        assert_eq!(
            std::fs::read_dir(&d).unwrap().count(),
            1,
            "no temporary left"
        );
        assert!(matches!(
            ResultFile::check(&d),
            Err(OutputError::IsDir { .. })
        ));
        assert!(ResultFile::check(&d.join("no/such/dir/x")).is_err());
        assert!(ResultFile::check(Path::new("/dev/null")).is_ok());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_capture_is_locked_and_renamed() {
        let d = dir("capture");
        let p = d.join("c.pcap");
        std::fs::write(&p, "earlier").unwrap();
        let (c, mut f) = CaptureFile::open(&p).unwrap();
        assert!(matches!(
            CaptureFile::open(&p),
            Err(OutputError::Busy { .. })
        ));
        f.write_all(b"frames").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "earlier");
        c.commit().unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "frames");
        // A failed capture leaves the earlier one.
        let (c, mut f) = CaptureFile::open(&p).unwrap();
        f.write_all(b"partial").unwrap();
        c.discard();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "frames");
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
        // A failed capture to a new file leaves nothing.
        let q = d.join("new.pcap");
        let (c, _f) = CaptureFile::open(&q).unwrap();
        c.discard();
        assert!(!q.exists());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn two_spellings_of_one_file_are_the_same() {
        let d = dir("same");
        let a = d.join("x");
        let b = d.join(".").join("x");
        assert!(same_file(&a, &b));
        assert!(!same_file(&a, &d.join("y")));
        assert!(!same_file(Path::new("/dev/null"), Path::new("/dev/null")));
        let _ = std::fs::remove_dir_all(&d);
    }
}
