//! `Mbuf`: an owned handle to one pool buffer (data path).
//!
//! Each pool element is one header line followed by its buffer, so the header and the
//! first bytes of headroom are neighbours in memory (DPDK's `rte_mbuf` layout):
//!
//! ```text
//! hdr           buf_addr() = hdr + 64
//! | MbufHdr (64) | headroom() | data() ............... | tailroom() ........ |
//!                0            data_offset()          data_offset() + len()   buf_len
//! ```
//!
//! Invariant, checked where it is written (`set_data`, `prepend`, `append`, ...) and
//! asserted where it is read in debug builds: `data_offset() + len() <= buf_len`. So no
//! accessor here can index out of the buffer.

use std::fmt;
use std::ptr::NonNull;

use crate::pool::PoolInner;

/// A GRH precedes the data (`MbufMeta::flags`).
pub const MBUF_F_GRH: u16 = 1;
/// The packet arrived on a multicast group (`MbufMeta::flags`).
pub const MBUF_F_MCAST: u16 = 2;

/// Per-packet metadata carried with a buffer; zeroed on alloc and on `reset`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct MbufMeta {
    /// Source QPN of a received datagram.
    pub src_qpn: u32,
    /// Source LID of a received datagram.
    pub slid: u16,
    /// `MBUF_F_*` bits.
    pub flags: u16,
    /// Receive-side hash.
    pub rss_hash: u32,
    /// Queue the packet arrived on or leaves by.
    pub queue: u16,
    /// Port the packet arrived on or leaves by.
    pub port: u16,
    /// Free for the application, e.g. a timestamp.
    pub user: u64,
}

const _: () = assert!(std::mem::size_of::<MbufMeta>() == 24);

/// `MbufHdr::state` of a buffer that is home (backend or a cache). Debug builds only.
#[cfg(debug_assertions)]
pub(crate) const STATE_FREE: u32 = 0x4652_4545; // "FREE"
/// `MbufHdr::state` of a buffer owned by an `Mbuf`. Debug builds only.
#[cfg(debug_assertions)]
pub(crate) const STATE_IN_USE: u32 = 0x4255_5359; // "BUSY"

/// Bytes between a header and its buffer: the header is the line in front of the
/// headroom.
pub(crate) const HDR_LEN: usize = 64;

/// Per-buffer header, one cache line, directly in front of its buffer (`buf_addr` is
/// the header's address + 64). Written by the pool only while the buffer is home, and by
/// its `Mbuf` only while out.
#[repr(C, align(64))]
pub(crate) struct MbufHdr {
    /// The pool this buffer returns to.
    pub(crate) pool: *const PoolInner,
    /// Start of the data window. Next to `data_len`, so a reset is one 8-byte store.
    pub(crate) data_off: u32,
    /// Length of the data window.
    pub(crate) data_len: u32,
    /// Index of this buffer in its pool.
    pub(crate) index: u32,
    /// headroom + data_room.
    pub(crate) buf_len: u32,
    /// Configured headroom, the `data_off` after `reset`.
    pub(crate) headroom: u32,
    /// The pool's id (`Mempool::id`), for a PMD's per-pool memory key.
    pub(crate) pool_id: u16,
    /// `STATE_FREE` or `STATE_IN_USE`: written and checked only in debug builds, where
    /// it catches double frees; release builds neither store nor load it.
    #[cfg(debug_assertions)]
    pub(crate) state: u32,
    pub(crate) meta: MbufMeta,
}

/// The data window of a fresh buffer, `data_off = headroom` and `data_len = 0`, as the one
/// 8-byte word an alloc stores (DPDK's `rearm_data`).
pub(crate) fn rearm_word(headroom: u32) -> u64 {
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&headroom.to_ne_bytes());
    u64::from_ne_bytes(b)
}

/// Offset of the rearm word (`data_off`, then `data_len`) in the header.
pub(crate) const REARM_OFFSET: usize = std::mem::offset_of!(MbufHdr, data_off);
const _: () = assert!(REARM_OFFSET % 8 == 0);
const _: () = assert!(std::mem::offset_of!(MbufHdr, data_len) == REARM_OFFSET + 4);
const _: () = assert!(std::mem::size_of::<MbufHdr>() == 64);
const _: () = assert!(std::mem::align_of::<MbufHdr>() == 64);

/// An owned packet buffer. Not `Clone`; dropping it returns the buffer to its pool
/// (the dropping thread's lcore cache, or the pool's backend on an unregistered thread),
/// without touching any reference count.
pub struct Mbuf {
    hdr: NonNull<MbufHdr>,
}

const _: () = assert!(std::mem::size_of::<Mbuf>() == 8);
const _: () = assert!(std::mem::size_of::<Option<Mbuf>>() == 8);

// SAFETY: an `Mbuf` is the sole owner of its header and buffer; the pool it points to is
// `Sync` and outlives it (see the crate docs: the pool is never unmapped while a buffer is
// out). Moving ownership to another thread is therefore fine.
unsafe impl Send for Mbuf {}
// SAFETY: `&Mbuf` only reads the header and buffer; mutation needs `&mut Mbuf`.
unsafe impl Sync for Mbuf {}

impl Mbuf {
    /// Wraps a header the pool just took out of its free list.
    ///
    /// # Safety
    /// `hdr` must point to an initialised header of a live pool whose buffer is owned by
    /// no one else (just removed from the backend or a cache), and must not be wrapped twice.
    #[inline]
    pub(crate) unsafe fn from_hdr(hdr: NonNull<MbufHdr>) -> Mbuf {
        Mbuf { hdr }
    }

    #[inline]
    fn hdr(&self) -> &MbufHdr {
        // SAFETY: the header is valid for as long as this `Mbuf` exists and only this
        // `Mbuf` accesses it while the buffer is out.
        let h = unsafe { self.hdr.as_ref() };
        debug_assert!(h.data_off as usize + h.data_len as usize <= h.buf_len as usize);
        h
    }

    #[inline]
    fn hdr_mut(&mut self) -> &mut MbufHdr {
        // SAFETY: as in `hdr`, and `&mut self` makes this the only reference.
        unsafe { self.hdr.as_mut() }
    }

    /// The raw header pointer, for the pool's bulk paths.
    #[inline]
    pub(crate) fn hdr_ptr(&self) -> *mut MbufHdr {
        self.hdr.as_ptr()
    }

    /// First byte of the buffer: the byte after the header. Derived from the header
    /// pointer itself (which carries the provenance of the whole mapping), not from a
    /// reference to the header.
    #[inline]
    fn buf_ptr(&self) -> *mut u8 {
        // SAFETY: the pool lays each buffer out right behind its header, inside the same
        // mapping (see `pool.rs`, `Layout`), so `hdr + 64` is in bounds.
        unsafe { self.hdr.as_ptr().cast::<u8>().add(HDR_LEN) }
    }

    /// The data window.
    #[inline]
    pub fn data(&self) -> &[u8] {
        let h = self.hdr();
        // SAFETY: `data_off + data_len <= buf_len` (module invariant), so the range is
        // inside this buffer, which this `Mbuf` owns; the mapping is zero-filled at start,
        // so every byte is initialised.
        unsafe {
            std::slice::from_raw_parts(self.buf_ptr().add(h.data_off as usize), h.data_len as usize)
        }
    }

    /// The data window, writable.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        let h = self.hdr();
        let (p, len) = (self.buf_ptr(), h.data_len as usize);
        let off = h.data_off as usize;
        // SAFETY: as in `data`; `&mut self` makes the borrow exclusive.
        unsafe { std::slice::from_raw_parts_mut(p.add(off), len) }
    }

    /// Bytes in the data window.
    #[inline]
    pub fn len(&self) -> usize {
        self.hdr().data_len as usize
    }

    /// Whether the data window is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.hdr().data_len == 0
    }

    /// Bytes in front of the data window.
    #[inline]
    pub fn headroom(&self) -> usize {
        self.hdr().data_off as usize
    }

    /// Bytes behind the data window.
    #[inline]
    pub fn tailroom(&self) -> usize {
        let h = self.hdr();
        (h.buf_len - h.data_off - h.data_len) as usize
    }

    /// Grows the data window by `n` bytes at the front (DPDK `rte_pktmbuf_prepend`) and
    /// returns the new bytes; `None`, unchanged, if the headroom is smaller than `n`.
    #[inline]
    pub fn prepend(&mut self, n: usize) -> Option<&mut [u8]> {
        let h = self.hdr_mut();
        let n32 = u32::try_from(n).ok().filter(|&n| n <= h.data_off)?;
        h.data_off -= n32;
        h.data_len += n32;
        let off = h.data_off as usize;
        Some(&mut self.buf_mut()[off..off + n])
    }

    /// Strips `n` bytes from the front of the data window (DPDK `rte_pktmbuf_adj`);
    /// `false`, unchanged, if the window is shorter than `n`.
    #[inline]
    pub fn adj(&mut self, n: usize) -> bool {
        let h = self.hdr_mut();
        match u32::try_from(n) {
            Ok(n) if n <= h.data_len => {
                h.data_off += n;
                h.data_len -= n;
                true
            }
            _ => false,
        }
    }

    /// Grows the data window by `n` bytes at the end (DPDK `rte_pktmbuf_append`) and
    /// returns the new tail; `None`, unchanged, if the tailroom is smaller than `n`.
    #[inline]
    pub fn append(&mut self, n: usize) -> Option<&mut [u8]> {
        if n > self.tailroom() {
            return None;
        }
        let h = self.hdr_mut();
        let end = (h.data_off + h.data_len) as usize;
        // `n <= tailroom <= u32::MAX`, so the cast is exact.
        h.data_len += n as u32;
        Some(&mut self.buf_mut()[end..end + n])
    }

    /// Removes `n` bytes from the end of the data window (DPDK `rte_pktmbuf_trim`);
    /// `false`, unchanged, if the window is shorter than `n`.
    #[inline]
    pub fn trim(&mut self, n: usize) -> bool {
        let h = self.hdr_mut();
        match u32::try_from(n) {
            Ok(n) if n <= h.data_len => {
                h.data_len -= n;
                true
            }
            _ => false,
        }
    }

    /// Empties the data window at the configured headroom and zeroes the metadata: the
    /// state a fresh allocation has.
    #[inline]
    pub fn reset(&mut self) {
        let h = self.hdr_mut();
        h.data_off = h.headroom;
        h.data_len = 0;
        h.meta = MbufMeta::default();
    }

    /// Places the data window at `offset..offset + len` of the buffer, e.g. after a
    /// receive DMA'd a packet to offset 0; `false`, unchanged, if it does not fit.
    #[inline]
    pub fn set_data(&mut self, offset: usize, len: usize) -> bool {
        let h = self.hdr_mut();
        match offset.checked_add(len) {
            Some(end) if end <= h.buf_len as usize => {
                // Both are <= buf_len <= u32::MAX.
                h.data_off = offset as u32;
                h.data_len = len as u32;
                true
            }
            _ => false,
        }
    }

    /// The whole buffer, headroom and tailroom included.
    #[inline]
    pub fn buf(&self) -> &[u8] {
        let h = self.hdr();
        // SAFETY: `buf_addr..buf_addr + buf_len` is this buffer, owned by this `Mbuf` and
        // initialised (zero-filled mapping).
        unsafe { std::slice::from_raw_parts(self.buf_ptr(), h.buf_len as usize) }
    }

    /// The whole buffer, writable (the target of a receive DMA).
    #[inline]
    pub fn buf_mut(&mut self) -> &mut [u8] {
        let h = self.hdr();
        let (p, len) = (self.buf_ptr(), h.buf_len as usize);
        // SAFETY: as in `buf`; `&mut self` makes the borrow exclusive.
        unsafe { std::slice::from_raw_parts_mut(p, len) }
    }

    /// Address of the buffer's first byte (inside `Mempool::region`), 64 bytes after the
    /// buffer's header.
    #[inline]
    pub fn buf_addr(&self) -> usize {
        self.buf_ptr() as usize
    }

    /// The id of the pool this buffer belongs to (`Mempool::id`), read from the header:
    /// what a PMD indexes its per-pool memory keys with (`lkey[pool_id]`).
    #[inline]
    pub fn pool_id(&self) -> u16 {
        self.hdr().pool_id
    }

    /// The pool this buffer returns to.
    #[inline]
    pub(crate) fn pool(&self) -> &PoolInner {
        // SAFETY: the pool outlives every outstanding buffer (it is leaked rather than
        // freed while one is out), and this `Mbuf` is one.
        unsafe { &*self.hdr().pool }
    }

    /// Asks the CPU to bring the header line and the first data line into the cache
    /// (l3fwd's prefetch a few packets ahead); a no-op on other architectures.
    #[inline]
    pub fn prefetch(&self) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            let data = self.buf_ptr().wrapping_add(self.hdr().data_off as usize);
            // SAFETY: a prefetch is a hint that never faults or changes memory; SSE is
            // part of the x86_64 baseline.
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(self.hdr.as_ptr().cast::<i8>());
                _mm_prefetch::<_MM_HINT_T0>(data.cast::<i8>());
            }
        }
    }

    /// Size of the whole buffer: headroom + data room.
    #[inline]
    pub fn buf_len(&self) -> usize {
        self.hdr().buf_len as usize
    }

    /// Offset of the data window from `buf_addr`.
    #[inline]
    pub fn data_offset(&self) -> usize {
        self.hdr().data_off as usize
    }

    /// Index of this buffer in its pool, `0..capacity`.
    #[inline]
    pub fn index(&self) -> u32 {
        self.hdr().index
    }

    /// The packet metadata.
    #[inline]
    pub fn meta(&self) -> &MbufMeta {
        &self.hdr().meta
    }

    /// The packet metadata, writable.
    #[inline]
    pub fn meta_mut(&mut self) -> &mut MbufMeta {
        &mut self.hdr_mut().meta
    }

    /// The word [`into_raw`](Self::into_raw) will return for this buffer, without giving
    /// the handle up: a PMD names the buffer in a work request first and gives up the
    /// handle only once the request is posted.
    #[inline]
    pub fn as_raw(&self) -> usize {
        self.hdr.as_ptr() as usize
    }

    /// Gives up the handle as an opaque word (e.g. a work request id) without returning the
    /// buffer; `from_raw` turns it back into the `Mbuf`.
    #[inline]
    pub fn into_raw(self) -> usize {
        let raw = self.hdr.as_ptr() as usize;
        std::mem::forget(self);
        raw
    }

    /// Rebuilds an `Mbuf` from `into_raw`'s word.
    ///
    /// # Safety
    /// `raw` must come from `Mbuf::into_raw` and be passed here at most once.
    #[inline]
    pub unsafe fn from_raw(raw: usize) -> Mbuf {
        debug_assert!(raw != 0 && raw % 64 == 0, "not an Mbuf::into_raw word");
        // SAFETY: the caller passes a word from `into_raw`, a non-null header pointer whose
        // ownership `into_raw` gave up.
        let hdr = unsafe { NonNull::new_unchecked(raw as *mut MbufHdr) };
        Mbuf { hdr }
    }
}

impl Drop for Mbuf {
    #[inline]
    fn drop(&mut self) {
        let hdr = self.hdr.as_ptr();
        // SAFETY: the header is valid and ours until `put` publishes the buffer as free.
        // The pool outlives every outstanding buffer (it is leaked rather than unmapped
        // while one is out), so `pool` is valid for the whole call.
        unsafe {
            let pool = &*(*hdr).pool;
            let index = (*hdr).index;
            #[cfg(debug_assertions)]
            pool.debug_mark_free(hdr, index);
            // Last use of `hdr`: after `put` another thread may own the buffer.
            pool.put(index);
        }
    }
}

impl fmt::Debug for Mbuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = self.hdr();
        f.debug_struct("Mbuf")
            .field("index", &h.index)
            .field("pool_id", &h.pool_id)
            .field("buf_addr", &format_args!("{:#x}", self.buf_addr()))
            .field("data_off", &h.data_off)
            .field("data_len", &h.data_len)
            .field("buf_len", &h.buf_len)
            .field("meta", &h.meta)
            .finish()
    }
}
