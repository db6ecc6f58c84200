//! `MbufArray`: a burst of owned mbufs without `Option` slots (DPDK's
//! `struct rte_mbuf *pkts[N]` with its count), the container every burst call fills or
//! drains.
//!
//! # Contract
//!
//! * Fixed capacity, chosen at creation and allocated once: nothing here allocates
//!   afterwards, and nothing grows.
//! * Slots `[..len]` hold owned `Mbuf`s, in order; slots `[len..capacity]` are
//!   uninitialised. Every method keeps this, including when a closure it calls panics
//!   (the array then holds every buffer it held, possibly reordered).
//! * Whatever leaves the array is either handed to the caller (`pop`, `swap_remove`,
//!   `take`, `drain_front`), moved into another array (`move_to`, `extend_from`,
//!   `partition_into`), or freed in bulk (`truncate`, `clear`, `retain_mut`, drop):
//!   one lcore-cache operation per run of buffers from the same pool, never one free per
//!   buffer.
//! * Bad indices panic where a `Vec` would (`swap_remove`, `take`, `Index`), and are
//!   `None`/`Err`/no-ops where the name says so (`get`, `move_to`, `prefetch`).

use std::fmt;
use std::mem::MaybeUninit;
use std::ops::{Index, IndexMut};
use std::ptr;

use crate::alloc::free_bulk;
use crate::{current_lcore, Mbuf};

/// How far ahead `filter_map_from` prefetches (DPDK l3fwd's `PREFETCH_OFFSET`).
const PREFETCH_AHEAD: usize = 3;

/// A fixed-capacity array of owned `Mbuf`s; see the module docs.
pub struct MbufArray {
    m: Box<[MaybeUninit<Mbuf>]>,
    len: usize,
}

impl MbufArray {
    /// An empty array that holds up to `cap` buffers. The only allocation it makes.
    pub fn with_capacity(cap: usize) -> MbufArray {
        MbufArray {
            m: Box::new_uninit_slice(cap),
            len: 0,
        }
    }

    /// Buffers held.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no buffer.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The most buffers it can hold.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.m.len()
    }

    /// Free slots: `capacity() - len()`.
    #[inline]
    pub fn room(&self) -> usize {
        self.m.len() - self.len
    }

    /// Whether every slot is taken.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.len == self.m.len()
    }

    #[inline]
    fn base(&self) -> *const Mbuf {
        self.m.as_ptr().cast()
    }

    #[inline]
    fn base_mut(&mut self) -> *mut Mbuf {
        self.m.as_mut_ptr().cast()
    }

    /// Appends `m`; gives it back when the array is full.
    #[inline]
    pub fn push(&mut self, m: Mbuf) -> Result<(), Mbuf> {
        if self.is_full() {
            return Err(m);
        }
        self.m[self.len].write(m);
        self.len += 1;
        Ok(())
    }

    /// Removes and returns the last buffer.
    #[inline]
    pub fn pop(&mut self) -> Option<Mbuf> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        // SAFETY: slot `len` (the old last) is initialised, and no longer counted, so it
        // is read exactly once.
        Some(unsafe { self.m[self.len].assume_init_read() })
    }

    /// The held buffers, in order.
    #[inline]
    pub fn as_slice(&self) -> &[Mbuf] {
        // SAFETY: slots `[..len]` are initialised `Mbuf`s (module contract);
        // `MaybeUninit<Mbuf>` has `Mbuf`'s layout.
        unsafe { std::slice::from_raw_parts(self.base(), self.len) }
    }

    /// The held buffers, in order, writable.
    #[inline]
    pub fn as_mut_slice(&mut self) -> &mut [Mbuf] {
        let len = self.len;
        // SAFETY: as in `as_slice`; `&mut self` makes the borrow exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.base_mut(), len) }
    }

    /// Buffer `i`, if `i < len()`.
    #[inline]
    pub fn get(&self, i: usize) -> Option<&Mbuf> {
        self.as_slice().get(i)
    }

    /// Buffer `i`, writable, if `i < len()`.
    #[inline]
    pub fn get_mut(&mut self, i: usize) -> Option<&mut Mbuf> {
        self.as_mut_slice().get_mut(i)
    }

    /// Removes buffer `i` and returns it; the last buffer takes its place (O(1), order
    /// not kept).
    ///
    /// # Panics
    /// If `i >= len()`, like `Vec::swap_remove`.
    #[inline]
    pub fn swap_remove(&mut self, i: usize) -> Mbuf {
        let len = self.len;
        assert!(
            i < len,
            "MbufArray::swap_remove: index {i} out of range for length {len}"
        );
        let base = self.base_mut();
        // SAFETY: `i < len` and `len - 1 < len`: both slots are initialised. Slot `i` is
        // read out, the last slot is moved into it, and the count drops by one, so every
        // buffer is owned exactly once.
        unsafe {
            let m = base.add(i).read();
            ptr::copy(base.add(len - 1), base.add(i), 1);
            self.len = len - 1;
            m
        }
    }

    /// Removes buffer `i` and returns it, shifting the ones behind it forward (order
    /// kept, O(len - i)): for rare use; hot paths use `swap_remove` or `drain_front`.
    ///
    /// # Panics
    /// If `i >= len()`, like `Vec::remove`.
    pub fn take(&mut self, i: usize) -> Mbuf {
        let len = self.len;
        assert!(
            i < len,
            "MbufArray::take: index {i} out of range for length {len}"
        );
        let base = self.base_mut();
        // SAFETY: `i < len`: slot `i` is read out once, `[i + 1..len]` moves down by one
        // (overlapping copy), and the count drops by one.
        unsafe {
            let m = base.add(i).read();
            ptr::copy(base.add(i + 1), base.add(i), len - i - 1);
            self.len = len - 1;
            m
        }
    }

    /// An iterator over the first `n` buffers (`min(n, len())`), front to back, each
    /// removed from the array as it is yielded. When the iterator is dropped, whatever it
    /// did not yield stays, and everything left moves to the front in one `memmove` of
    /// pointers: what a PMD's `tx_burst` uses to consume `n` from the front. Nothing is
    /// freed. If the iterator is leaked (`mem::forget`), so are the buffers still in the
    /// array, and the array is left empty: never a double free.
    pub fn drain_front(&mut self, n: usize) -> DrainFront<'_> {
        let len = self.len;
        // Until the iterator's drop puts the rest back, the array owns nothing.
        self.len = 0;
        DrainFront {
            arr: self,
            next: 0,
            end: n.min(len),
            len,
        }
    }

    /// Keeps the first `len` buffers and frees the rest in bulk; a no-op when `len >=
    /// self.len()`.
    pub fn truncate(&mut self, len: usize) {
        self.free_tail_with(len, |tail| {
            // SAFETY: `current_lcore` is this thread's; `tail` is ours to give up.
            unsafe { free_bulk(tail, current_lcore(), None) }
        });
    }

    /// Keeps the first `len` buffers and hands the rest to `free`, which takes them over:
    /// they are no longer counted here, so `free` must consume every one (free it),
    /// never let it be dropped or used again. A no-op when `len >= self.len()`.
    #[inline]
    pub(crate) fn free_tail_with(&mut self, len: usize, free: impl FnOnce(&[Mbuf])) {
        if len >= self.len {
            return;
        }
        let tail = self.len - len;
        // Forget the tail first: even a panic in the free cannot free it twice.
        self.len = len;
        // SAFETY: slots `[len..len + tail]` are initialised and no longer counted.
        let ms = unsafe { std::slice::from_raw_parts(self.base().add(len), tail) };
        free(ms);
    }

    /// Frees every buffer in bulk.
    #[inline]
    pub fn clear(&mut self) {
        self.truncate(0);
    }

    /// Keeps the buffers for which `f` returns true, in their order, and frees the others
    /// in bulk at the end (they gather at the tail as `f` runs, so a panic in `f` leaves
    /// every buffer in the array). To move the others elsewhere instead of freeing them,
    /// use `partition_into`.
    pub fn retain_mut(&mut self, mut f: impl FnMut(&mut Mbuf) -> bool) {
        let mut kept = 0;
        for i in 0..self.len {
            let s = self.as_mut_slice();
            if f(&mut s[i]) {
                s.swap(kept, i);
                kept += 1;
            }
        }
        self.truncate(kept);
    }

    /// Passes the buffers from index `from` on, in order, through `f`, which keeps one by
    /// returning it (changed or not) and takes it by returning `None`; what is kept
    /// stays in order. Buffers before `from` are untouched. A classifier that hands
    /// some packets elsewhere (a control ring) and keeps the rest, one pass, no copy;
    /// the data of the buffer a few places ahead is prefetched.
    pub fn filter_map_from(&mut self, from: usize, mut f: impl FnMut(Mbuf) -> Option<Mbuf>) {
        let len = self.len.min(self.m.len());
        let start = from.min(len);
        let mut w = start;
        // Shrink first: a panic in `f` leaks the buffers after the one it held rather
        // than letting them be freed twice.
        self.len = w;
        for r in start..len {
            // The buffer a few places ahead (l3fwd's PREFETCH_OFFSET), the last one near
            // the end: no branch.
            let p = (r + PREFETCH_AHEAD).min(len - 1);
            // SAFETY: `r <= p < len <= self.m.len()`: a slot not yet moved out, still
            // initialised; only its header is read.
            unsafe { self.m.get_unchecked(p).assume_init_ref() }.prefetch();
            self.filter_map_one(r, &mut w, &mut f);
        }
    }

    /// One step of [`filter_map_from`](Self::filter_map_from): slot `r` (`< len`, still
    /// initialised) through `f`, kept at slot `*w` (`<= r`, already moved out).
    #[inline(always)]
    fn filter_map_one(
        &mut self,
        r: usize,
        w: &mut usize,
        f: &mut impl FnMut(Mbuf) -> Option<Mbuf>,
    ) {
        debug_assert!(*w <= r && r < self.m.len());
        // SAFETY: `r` is below the array's length before the pass (the caller's loop
        // bound, at most `self.m.len()`): initialised, and moved out exactly once, here.
        let m = unsafe { self.m.get_unchecked(r).assume_init_read() };
        if let Some(m) = f(m) {
            // SAFETY: `*w <= r < self.m.len()`; slot `*w` was moved out already (or is
            // `r` itself), so writing it is sound.
            unsafe { self.m.get_unchecked_mut(*w) }.write(m);
            *w += 1;
            self.len = *w;
        }
    }

    /// Moves the buffers for which `f` returns false to the back of `out`, in order,
    /// while `out` has room, and keeps the rest in this array, in order (those that did
    /// not fit in `out` included). Returns how many moved. A classifier's split of a
    /// burst into the packets it handles and the exceptions (swap-free, no copy of a
    /// packet, one pointer move each).
    pub fn partition_into(
        &mut self,
        out: &mut MbufArray,
        mut f: impl FnMut(&mut Mbuf) -> bool,
    ) -> usize {
        let len = self.len;
        // The guard owns the array's contents while slots are moved: on drop (normal or
        // unwinding) it closes the gap between what was kept and what was not visited.
        let mut g = Compact {
            arr: self,
            read: 0,
            write: 0,
            len,
        };
        g.arr.len = 0;
        let mut moved = 0;
        while g.read < len {
            let base = g.arr.base_mut();
            // SAFETY: `read < len`: slot `read` is initialised and not yet moved; the
            // reference ends before the slot is moved below.
            let keep = unsafe { f(&mut *base.add(g.read)) } || out.is_full();
            // SAFETY: slot `read` is initialised; it is moved exactly once, either down
            // to `write <= read` or out into `out` (which has room), then `read` advances
            // past it.
            unsafe {
                if keep {
                    if g.write != g.read {
                        ptr::copy_nonoverlapping(base.add(g.read), base.add(g.write), 1);
                    }
                    g.write += 1;
                } else {
                    let pushed = out.push(base.add(g.read).read());
                    debug_assert!(pushed.is_ok());
                    moved += 1;
                }
            }
            g.read += 1;
        }
        moved
    }

    /// Removes buffer `i` (as `swap_remove`) and appends it to `other`, if `i < len()`
    /// and `other` has room; otherwise changes nothing and returns `Err(())`.
    #[allow(clippy::result_unit_err)] // The driver contract v2 names this signature.
    pub fn move_to(&mut self, i: usize, other: &mut MbufArray) -> Result<(), ()> {
        if i >= self.len || other.is_full() {
            return Err(());
        }
        let m = self.swap_remove(i);
        let pushed = other.push(m);
        debug_assert!(pushed.is_ok());
        Ok(())
    }

    /// Moves as many buffers as fit from the front of `other` to the back of this array,
    /// keeping their order; what is left in `other` moves to its front. Returns how many
    /// moved.
    pub fn extend_from(&mut self, other: &mut MbufArray) -> usize {
        let n = self.room().min(other.len);
        if n == 0 {
            return 0;
        }
        let (len, olen) = (self.len, other.len);
        let dst = self.base_mut();
        let src = other.base_mut();
        // SAFETY: `other[..n]` are initialised and move to the `n <= room` free slots
        // after `len` (two distinct arrays: `&mut` both); `other[n..olen]` then moves
        // down to its front (overlapping copy). Both counts change with the moves, so
        // every buffer is owned exactly once.
        unsafe {
            ptr::copy_nonoverlapping(src, dst.add(len), n);
            ptr::copy(src.add(n), src, olen - n);
        }
        self.len = len + n;
        other.len = olen - n;
        n
    }

    /// Prefetches the header line and the first data line of buffer `i`, if it exists
    /// (l3fwd's prefetch a few packets ahead); a no-op otherwise, and on architectures
    /// other than x86_64.
    #[inline]
    pub fn prefetch(&self, i: usize) {
        if let Some(m) = self.get(i) {
            m.prefetch();
        }
    }

    /// Sets the number of held buffers, for a PMD that writes buffers straight into
    /// `spare_ptr()`.
    ///
    /// # Safety
    /// `len <= capacity()`. When growing, slots `[old len..len]` must hold owned `Mbuf`s
    /// written through `spare_ptr()` (or `as_mut_slice()` beyond the old length), which
    /// the array now owns. When shrinking, the caller takes over the buffers of
    /// `[len..old len]` (read them out before, or they are leaked: not freed, but never
    /// freed twice either).
    #[inline]
    pub unsafe fn set_len(&mut self, len: usize) {
        debug_assert!(len <= self.capacity());
        self.len = len;
    }

    /// A pointer to slot `len()`, the first free one: `room()` `Mbuf`s may be written
    /// from it on, then counted with `set_len`. Writing does not drop what the slots held
    /// (they hold nothing).
    #[inline]
    pub fn spare_ptr(&mut self) -> *mut Mbuf {
        let len = self.len;
        // `len <= capacity`, so this is at most one past the end: in bounds.
        self.base_mut().wrapping_add(len)
    }
}

impl Drop for MbufArray {
    fn drop(&mut self) {
        self.clear();
    }
}

impl Index<usize> for MbufArray {
    type Output = Mbuf;

    /// # Panics
    /// If `i >= len()`.
    #[inline]
    fn index(&self, i: usize) -> &Mbuf {
        &self.as_slice()[i]
    }
}

impl IndexMut<usize> for MbufArray {
    /// # Panics
    /// If `i >= len()`.
    #[inline]
    fn index_mut(&mut self, i: usize) -> &mut Mbuf {
        &mut self.as_mut_slice()[i]
    }
}

impl fmt::Debug for MbufArray {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MbufArray")
            .field("len", &self.len)
            .field("capacity", &self.capacity())
            .field("mbufs", &self.as_slice())
            .finish()
    }
}

/// Closes the gap `[write..read]` left by `partition_into`, also when unwinding: the
/// unvisited `[read..len]` moves down to `write`.
struct Compact<'a> {
    arr: &'a mut MbufArray,
    read: usize,
    write: usize,
    len: usize,
}

impl Drop for Compact<'_> {
    fn drop(&mut self) {
        let rest = self.len - self.read;
        let base = self.arr.base_mut();
        // SAFETY: `[..write]` holds the kept buffers and `[read..len]` the unvisited ones,
        // all initialised; the latter moves down next to the former (overlapping copy),
        // and the count covers exactly those.
        unsafe { ptr::copy(base.add(self.read), base.add(self.write), rest) };
        self.arr.len = self.write + rest;
    }
}

/// The iterator of `MbufArray::drain_front`.
pub struct DrainFront<'a> {
    arr: &'a mut MbufArray,
    /// Next slot to yield.
    next: usize,
    /// Yield up to here.
    end: usize,
    /// The array's length when draining began.
    len: usize,
}

impl Iterator for DrainFront<'_> {
    type Item = Mbuf;

    #[inline]
    fn next(&mut self) -> Option<Mbuf> {
        if self.next == self.end {
            return None;
        }
        // SAFETY: `next < end <= len`: slot `next` is initialised and not yet yielded;
        // it is read exactly once, as `next` moves past it.
        let m = unsafe { self.arr.base().add(self.next).read() };
        self.next += 1;
        Some(m)
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.end - self.next;
        (n, Some(n))
    }
}

impl ExactSizeIterator for DrainFront<'_> {}

impl Drop for DrainFront<'_> {
    fn drop(&mut self) {
        let rest = self.len - self.next;
        let base = self.arr.base_mut();
        // SAFETY: `[next..len]` are the initialised buffers not yielded; they move to the
        // front (overlapping copy) and the count covers exactly them.
        unsafe { ptr::copy(base.add(self.next), base, rest) };
        self.arr.len = rest;
    }
}

impl fmt::Debug for DrainFront<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DrainFront")
            .field("remaining", &(self.end - self.next))
            .field("left_in_array", &(self.len - self.end))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{HugepagePolicy, Mempool, MempoolConfig};

    fn pool(n: u32) -> Mempool {
        Mempool::new(MempoolConfig {
            data_room: 64,
            cache_size: 0,
            hugepages: HugepagePolicy::Never,
            ..MempoolConfig::new("array-unit", n)
        })
        .unwrap()
    }

    fn filled(p: &Mempool, n: usize, cap: usize) -> MbufArray {
        let mut a = MbufArray::with_capacity(cap);
        assert_eq!(p.alloc_bulk_into(&mut a, n), n);
        a
    }

    fn indices(a: &MbufArray) -> Vec<u32> {
        a.as_slice().iter().map(Mbuf::index).collect()
    }

    #[test]
    fn zero_capacity_is_always_full() {
        let p = pool(2);
        let mut a = MbufArray::with_capacity(0);
        assert!(a.is_full() && a.is_empty());
        assert_eq!(p.alloc_bulk_into(&mut a, 5), 0);
        assert_eq!(
            p.stats().alloc_fail,
            0,
            "a full array is not a pool failure"
        );
        let m = p.alloc().unwrap();
        assert!(a.push(m).is_err());
        assert_eq!(p.in_use(), 0);
    }

    #[test]
    fn spare_ptr_and_set_len() {
        let p = pool(4);
        let mut a = MbufArray::with_capacity(4);
        let dst = a.spare_ptr();
        // SAFETY: the array has room for 2; both slots are written, then counted.
        unsafe {
            dst.write(p.alloc().unwrap());
            dst.add(1).write(p.alloc().unwrap());
            a.set_len(2);
        }
        assert_eq!(indices(&a), [0, 1]);
        assert_eq!(a.spare_ptr(), dst.wrapping_add(2));
        drop(a);
        assert_eq!(p.in_use(), 0);
    }

    #[test]
    fn partition_keeps_what_does_not_fit() {
        let p = pool(8);
        let mut a = filled(&p, 6, 8);
        let mut exc = MbufArray::with_capacity(2);
        // Odd indices are exceptions; only 2 fit in `exc`.
        let moved = a.partition_into(&mut exc, |m| m.index() % 2 == 0);
        assert_eq!(moved, 2);
        assert_eq!(indices(&exc), [1, 3]);
        assert_eq!(indices(&a), [0, 2, 4, 5]);
    }

    #[test]
    fn panic_in_closure_loses_nothing() {
        let p = pool(8);
        let mut a = filled(&p, 6, 8);
        let mut out = MbufArray::with_capacity(8);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            a.partition_into(&mut out, |m| {
                assert!(m.index() != 3, "boom");
                m.index() % 2 == 0
            })
        }));
        assert!(r.is_err());
        assert_eq!(indices(&out), [1]);
        assert_eq!(indices(&a), [0, 2, 3, 4, 5]);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            a.retain_mut(|m| {
                assert!(m.index() != 4, "boom");
                m.index() != 2
            })
        }));
        assert!(r.is_err());
        assert_eq!(a.len(), 5);
        drop((a, out));
        assert_eq!(p.in_use(), 0);
    }

    #[cfg(debug_assertions)]
    #[test]
    #[should_panic(expected = "wrong state (double free")]
    fn debug_catches_double_free_in_bulk() {
        let p = pool(4);
        let raw = p.alloc().unwrap().into_raw();
        let mut a = MbufArray::with_capacity(2);
        // SAFETY: deliberately breaks `from_raw`'s contract to show the debug check in
        // the bulk path: the second copy panics before touching the free list.
        unsafe {
            a.push(Mbuf::from_raw(raw)).unwrap();
            a.push(Mbuf::from_raw(raw)).unwrap();
        }
        a.clear();
    }

    #[test]
    fn forgotten_drain_leaks_never_double_frees() {
        let p = pool(4);
        let mut a = filled(&p, 4, 4);
        let mut d = a.drain_front(2);
        let first = d.next().unwrap();
        std::mem::forget(d);
        assert!(a.is_empty());
        assert_eq!(first.index(), 0);
        drop((first, a));
        // Buffers 1..4 are leaked (still out), not freed twice.
        assert_eq!(p.in_use(), 3);
    }
}
