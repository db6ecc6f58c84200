//! `MbufArray`: a burst of owned mbufs without `Option` slots (placeholder; bulk free
//! comes with the pool's bulk path).

use std::fmt;
use std::mem::MaybeUninit;

use crate::Mbuf;

/// A burst of owned mbufs: a fixed-capacity array, allocated once.
pub struct MbufArray {
    m: Box<[MaybeUninit<Mbuf>]>,
    len: usize,
}

impl MbufArray {
    /// An empty array of capacity `cap`.
    pub fn with_capacity(cap: usize) -> MbufArray {
        MbufArray {
            m: (0..cap).map(|_| MaybeUninit::uninit()).collect(),
            len: 0,
        }
    }
    /// Mbufs held.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }
    /// Nothing held.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The capacity.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.m.len()
    }
    /// Free slots.
    #[inline]
    pub fn room(&self) -> usize {
        self.m.len() - self.len
    }
    /// No free slot.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.len == self.m.len()
    }
    /// Appends `m`; gives it back when full.
    #[inline]
    pub fn push(&mut self, m: Mbuf) -> Result<(), Mbuf> {
        if self.len == self.m.len() {
            return Err(m);
        }
        self.m[self.len].write(m);
        self.len += 1;
        Ok(())
    }
    /// Removes the last.
    #[inline]
    pub fn pop(&mut self) -> Option<Mbuf> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        // SAFETY: slot `len` was initialised and is now outside the array.
        Some(unsafe { self.m[self.len].assume_init_read() })
    }
    /// The mbufs.
    #[inline]
    pub fn as_slice(&self) -> &[Mbuf] {
        // SAFETY: `..len` are initialised.
        unsafe { std::slice::from_raw_parts(self.m.as_ptr().cast(), self.len) }
    }
    /// The mbufs, writable.
    #[inline]
    pub fn as_mut_slice(&mut self) -> &mut [Mbuf] {
        // SAFETY: `..len` are initialised.
        unsafe { std::slice::from_raw_parts_mut(self.m.as_mut_ptr().cast(), self.len) }
    }
    /// Element `i`.
    #[inline]
    pub fn get(&self, i: usize) -> Option<&Mbuf> {
        self.as_slice().get(i)
    }
    /// Element `i`, writable.
    #[inline]
    pub fn get_mut(&mut self, i: usize) -> Option<&mut Mbuf> {
        self.as_mut_slice().get_mut(i)
    }
    /// Removes element `i`, the last takes its place.
    #[inline]
    pub fn swap_remove(&mut self, i: usize) -> Mbuf {
        assert!(i < self.len);
        let last = self.len - 1;
        self.as_mut_slice().swap(i, last);
        self.pop().expect("not empty")
    }
    /// Removes element `i`, keeping order.
    pub fn take(&mut self, i: usize) -> Mbuf {
        assert!(i < self.len);
        self.as_mut_slice()[i..].rotate_left(1);
        self.pop().expect("not empty")
    }
    /// The first `n` in order; the rest move to the front when the iterator drops.
    pub fn drain_front(&mut self, n: usize) -> DrainFront<'_> {
        let n = n.min(self.len);
        DrainFront { a: self, n, next: 0 }
    }
    /// Frees the tail from `len` on.
    pub fn truncate(&mut self, len: usize) {
        while self.len > len {
            drop(self.pop());
        }
    }
    /// Frees everything.
    pub fn clear(&mut self) {
        self.truncate(0);
    }
    /// Moves as many as fit from the front of `other` to the end of `self`.
    pub fn extend_from(&mut self, other: &mut MbufArray) -> usize {
        let n = self.room().min(other.len());
        for m in other.drain_front(n) {
            let _ = self.push(m);
        }
        n
    }
    /// Passes the elements from index `from` on, in order, through `f`, which keeps an
    /// element by returning it (changed or not) and takes it by returning `None`; what
    /// is kept stays in order. Elements before `from` are untouched.
    pub fn filter_map_from(&mut self, from: usize, mut f: impl FnMut(Mbuf) -> Option<Mbuf>) {
        let len = self.len;
        let mut w = from.min(len);
        // Shrink first: a panic in `f` leaks the elements after the one it held rather
        // than letting them be dropped twice.
        self.len = w;
        for r in w..len {
            // SAFETY: `r < len`: initialised, and moved out exactly once, here.
            let m = unsafe { self.m[r].assume_init_read() };
            if let Some(m) = f(m) {
                self.m[w].write(m);
                w += 1;
                self.len = w;
            }
        }
    }

    /// Prefetch hint for element `i` (no-op here).
    #[inline]
    pub fn prefetch(&self, _i: usize) {}
}

/// The first `n` mbufs of an array, in order.
pub struct DrainFront<'a> {
    a: &'a mut MbufArray,
    n: usize,
    next: usize,
}

impl Iterator for DrainFront<'_> {
    type Item = Mbuf;
    fn next(&mut self) -> Option<Mbuf> {
        if self.next == self.n {
            return None;
        }
        // SAFETY: `next < n <= len`: initialised and read once.
        let m = unsafe { self.a.m[self.next].assume_init_read() };
        self.next += 1;
        Some(m)
    }
}

impl Drop for DrainFront<'_> {
    fn drop(&mut self) {
        for _ in self.by_ref() {}
        let len = self.a.len;
        // SAFETY: `..n` were read out; `n..len` move to the front.
        unsafe {
            let p = self.a.m.as_mut_ptr();
            std::ptr::copy(p.add(self.n), p, len - self.n);
        }
        self.a.len = len - self.n;
    }
}

impl Drop for MbufArray {
    fn drop(&mut self) {
        self.clear();
    }
}

impl std::ops::Index<usize> for MbufArray {
    type Output = Mbuf;
    fn index(&self, i: usize) -> &Mbuf {
        &self.as_slice()[i]
    }
}

impl std::ops::IndexMut<usize> for MbufArray {
    fn index_mut(&mut self, i: usize) -> &mut Mbuf {
        &mut self.as_mut_slice()[i]
    }
}

impl fmt::Debug for MbufArray {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MbufArray")
            .field("len", &self.len)
            .field("capacity", &self.m.len())
            .finish()
    }
}

impl crate::Mempool {
    /// Appends up to `n` fresh mbufs to `out` (as many as fit); returns how many.
    pub fn alloc_bulk_into(&self, out: &mut MbufArray, n: usize) -> usize {
        let n = n.min(out.room());
        for i in 0..n {
            match self.alloc() {
                Some(m) => {
                    let _ = out.push(m);
                }
                None => return i,
            }
        }
        n
    }
}
