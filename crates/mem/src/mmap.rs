//! The pool's one anonymous mapping (control path).
//!
//! Hugepages first: `mmap(MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | MAP_HUGE_2MB |
//! MAP_POPULATE)` of the size rounded up to 2 MiB. `MAP_HUGETLB` reserves the pages at
//! `mmap` time, so a shortage is an `ENOMEM` here and never a `SIGBUS` later. When that
//! fails and the policy allows it, a normal mapping is made 2 MiB aligned (over-map,
//! trim), advised `MADV_HUGEPAGE` so transparent hugepages can back it, and then
//! populated (`MADV_POPULATE_WRITE`, or a write per page on kernels older than 5.14):
//! like `MAP_POPULATE`, but after the advice so the fault path can use huge pages.

use std::io;
use std::ptr::NonNull;
use std::sync::Once;

use crate::{Error, HugepagePolicy};

/// Size of the hugepages asked for.
pub const HUGEPAGE_SIZE: usize = 2 << 20;

/// `MADV_POPULATE_WRITE` (Linux 5.14); spelled out for older libc headers.
const MADV_POPULATE_WRITE: libc::c_int = 23;

static FALLBACK_WARNED: Once = Once::new();

/// An anonymous read-write mapping, unmapped on drop.
#[derive(Debug)]
pub(crate) struct Mapping {
    addr: NonNull<u8>,
    len: usize,
    hugepages: bool,
}

// SAFETY: `Mapping` is an owned region of process memory with no thread affinity; the
// pool that owns it synchronises every access to the bytes inside it.
unsafe impl Send for Mapping {}
// SAFETY: `&Mapping` only exposes the address and length, never the bytes.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps at least `len` bytes (rounded up to 2 MiB), zero-filled and populated.
    pub(crate) fn new(pool: &str, len: usize, policy: HugepagePolicy) -> Result<Mapping, Error> {
        let len = len.div_ceil(HUGEPAGE_SIZE) * HUGEPAGE_SIZE;
        if policy != HugepagePolicy::Never {
            match map_hugetlb(len) {
                Ok(addr) => {
                    return Ok(Mapping {
                        addr,
                        len,
                        hugepages: true,
                    })
                }
                Err(source) if policy == HugepagePolicy::Require => {
                    return Err(Error::HugepagesUnavailable {
                        pool: pool.to_owned(),
                        len,
                        pages: len / HUGEPAGE_SIZE,
                        source,
                    })
                }
                Err(source) => FALLBACK_WARNED.call_once(|| {
                    tracing::warn!(
                        pool,
                        len,
                        error = %source,
                        "no 2 MiB hugepages could be mapped; falling back to normal pages with \
                         MADV_HUGEPAGE (reserve hugepages: echo N > /proc/sys/vm/nr_hugepages); \
                         logged once per process"
                    );
                }),
            }
        }
        let addr = map_normal(len).map_err(|source| Error::Mmap {
            pool: pool.to_owned(),
            len,
            kind: "normal pages",
            source,
        })?;
        Ok(Mapping {
            addr,
            len,
            hugepages: false,
        })
    }

    pub(crate) fn addr(&self) -> *mut u8 {
        self.addr.as_ptr()
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn hugepages(&self) -> bool {
        self.hugepages
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `addr..addr + len` is exactly the region this `Mapping` mapped and still
        // owns; the pool drops its `Mapping` only after proving no buffer in it is in use.
        let rc = unsafe { libc::munmap(self.addr.as_ptr().cast(), self.len) };
        if rc != 0 {
            tracing::error!(
                len = self.len,
                error = %io::Error::last_os_error(),
                "munmap of a mempool region failed; leaking it"
            );
        }
    }
}

fn map_hugetlb(len: usize) -> io::Result<NonNull<u8>> {
    let flags = libc::MAP_PRIVATE
        | libc::MAP_ANONYMOUS
        | libc::MAP_HUGETLB
        | libc::MAP_HUGE_2MB
        | libc::MAP_POPULATE;
    // SAFETY: an anonymous mapping at an address of the kernel's choosing touches no
    // existing memory; the result is checked for MAP_FAILED.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(p.cast()).ok_or_else(|| io::Error::from(io::ErrorKind::AddrNotAvailable))
}

fn map_normal(len: usize) -> io::Result<NonNull<u8>> {
    // Over-map by one hugepage so a 2 MiB aligned window of `len` bytes fits, then give
    // the ragged ends back: transparent hugepages need 2 MiB aligned extents.
    let over = len + HUGEPAGE_SIZE;
    // SAFETY: as in `map_hugetlb`: a fresh anonymous mapping, checked for MAP_FAILED.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            over,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let base = p as usize;
    let start = base.div_ceil(HUGEPAGE_SIZE) * HUGEPAGE_SIZE;
    let head = start - base;
    let tail = over - head - len;
    // SAFETY: `base..start` and `start + len..base + over` lie inside the mapping just
    // made and nothing refers to them; munmap of a page-aligned part is allowed.
    unsafe {
        if head > 0 {
            libc::munmap(p, head);
        }
        if tail > 0 {
            libc::munmap((start + len) as *mut libc::c_void, tail);
        }
    }
    let addr = start as *mut libc::c_void;
    // SAFETY: `addr..addr + len` is our mapping. Advice failing (THP disabled) is harmless.
    let rc = unsafe { libc::madvise(addr, len, libc::MADV_HUGEPAGE) };
    if rc != 0 {
        tracing::debug!(error = %io::Error::last_os_error(), "madvise(MADV_HUGEPAGE) failed");
    }
    // SAFETY: `addr..addr + len` is our mapping; populating it only faults pages in.
    let rc = unsafe { libc::madvise(addr, len, MADV_POPULATE_WRITE) };
    if rc != 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINVAL) {
            // Out of memory (or a fault): give the mapping back and report it.
            // SAFETY: `addr..addr + len` is our mapping and nothing refers to it yet.
            unsafe { libc::munmap(addr, len) };
            return Err(err);
        }
        // EINVAL: a kernel before 5.14 without MADV_POPULATE_WRITE; fault every page in
        // by hand.
        let page = page_size();
        let mut off = 0;
        while off < len {
            // SAFETY: `off < len`, so the byte is inside our fresh read-write mapping,
            // which no one else can see yet; writing the zero it already holds is benign.
            unsafe { std::ptr::write_volatile((start + off) as *mut u8, 0) };
            off += page;
        }
    }
    NonNull::new(addr.cast()).ok_or_else(|| io::Error::from(io::ErrorKind::AddrNotAvailable))
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let sz = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(sz).ok().filter(|&s| s > 0).unwrap_or(4096)
}
