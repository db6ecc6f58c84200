//! [`channel`]: a ring split into its two owned ends, with safe operations.

use crate::spsc::SpscRing;
use crate::sync::Arc;

/// A ring of `capacity` slots (rounded up to a power of two, at least 1), split into
/// its producer and its consumer. Either may move to another thread; each is used by
/// one thread at a time (`&mut self`), which is what makes the ring's operations safe
/// to call. The ring lives until both ends are gone; what it still holds then is
/// dropped.
///
/// ```
/// let (mut tx, mut rx) = ibpoll_ring::channel::<u32>(4);
/// assert_eq!(tx.push_from(8, { let mut v = 0; move || { v += 1; v } }), 4);
/// assert_eq!(tx.push(5), Err(5), "full");
/// let mut got = Vec::new();
/// assert_eq!(rx.pop_with(3, |v| got.push(v)), 3);
/// assert_eq!(got, [1, 2, 3]);
/// assert_eq!(rx.pop(), Some(4));
/// assert_eq!(rx.pop(), None);
/// ```
pub fn channel<T>(capacity: usize) -> (Producer<T>, Consumer<T>) {
    let ring = Arc::new(SpscRing::new(capacity));
    (Producer { ring: ring.clone() }, Consumer { ring })
}

/// The producing end of a [`channel`].
#[derive(Debug)]
pub struct Producer<T> {
    ring: Arc<SpscRing<T>>,
}

impl<T> Producer<T> {
    /// Appends `value`; gives it back when the ring is full.
    #[inline]
    pub fn push(&mut self, value: T) -> Result<(), T> {
        // SAFETY: this end is the ring's only producer (`channel` made one), and
        // `&mut self` keeps it on one thread for the call.
        unsafe { self.ring.push(value) }
    }

    /// Appends up to `max` elements made by `next` (called once per free slot) and
    /// publishes them together; returns how many.
    #[inline]
    pub fn push_from(&mut self, max: usize, next: impl FnMut() -> T) -> usize {
        // SAFETY: as in `push`.
        unsafe { self.ring.push_from(max, next) }
    }

    /// How many elements could be pushed now (at least; see [`SpscRing::free`]).
    #[inline]
    pub fn free(&mut self) -> usize {
        // SAFETY: as in `push`.
        unsafe { self.ring.free(usize::MAX) }
    }

    /// The ring's number of slots.
    pub fn capacity(&self) -> usize {
        self.ring.capacity()
    }
}

/// The consuming end of a [`channel`].
#[derive(Debug)]
pub struct Consumer<T> {
    ring: Arc<SpscRing<T>>,
}

impl<T> Consumer<T> {
    /// Hands up to `max` elements, oldest first, to `f` and returns how many. If `f`
    /// panics, the elements handed over so far are gone from the ring and the rest stay.
    #[inline]
    pub fn pop_with(&mut self, max: usize, f: impl FnMut(T)) -> usize {
        // SAFETY: this end is the ring's only consumer (`channel` made one), and
        // `&mut self` keeps it on one thread for the call.
        unsafe { self.ring.pop_with(max, f) }
    }

    /// The oldest element, if any.
    #[inline]
    pub fn pop(&mut self) -> Option<T> {
        let mut out = None;
        self.pop_with(1, |v| out = Some(v));
        out
    }

    /// Drops every element the ring holds now and returns how many.
    pub fn clear(&mut self) -> usize {
        // SAFETY: as in `pop_with`.
        unsafe { self.ring.clear() }
    }

    /// How many elements the ring holds (a recent value while the producer pushes).
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// Whether the ring holds nothing (as [`len`](Self::len)).
    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// The ring's number of slots.
    pub fn capacity(&self) -> usize {
        self.ring.capacity()
    }
}
