//! The memory plan: a planner hands out spans, the caller owns one buffer, an arena splits it.

use crate::{Error, Result};

/// A run of element slots inside one arena.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Span {
    /// First slot.
    pub start: usize,
    /// Number of slots.
    pub len: usize,
}

impl Span {
    /// One past the last slot.
    pub const fn end(self) -> usize {
        self.start + self.len
    }

    /// The first `len` slots of this span (a smaller batch uses a prefix).
    ///
    /// # Panics
    /// In debug builds, if `len > self.len`.
    pub const fn prefix(self, len: usize) -> Span {
        debug_assert!(len <= self.len);
        Span {
            start: self.start,
            len,
        }
    }
}

/// Hands out consecutive spans; `total()` is the one allocation to make.
///
/// Every method is `const`, so a firmware can size a `static` buffer at compile time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Planner {
    next: usize,
}

impl Planner {
    /// An empty plan.
    pub const fn new() -> Self {
        Self { next: 0 }
    }

    /// Reserves `len` slots after everything reserved so far.
    pub const fn take(&mut self, len: usize) -> Span {
        let span = Span {
            start: self.next,
            len,
        };
        self.next += len;
        span
    }

    /// Like [`Planner::take`], but refuses to overflow `usize`; `const`, so a plan that
    /// cannot exist fails at compile time in a `const` item and with an error elsewhere.
    ///
    /// # Errors
    /// [`Error::Overflow`] if the plan would exceed `usize::MAX` slots.
    pub const fn try_take(&mut self, len: usize) -> Result<Span> {
        let Some(end) = self.next.checked_add(len) else {
            return Err(Error::Overflow {
                what: "memory plan",
            });
        };
        let span = Span {
            start: self.next,
            len,
        };
        self.next = end;
        Ok(span)
    }

    /// The span [`Planner::take`] would hand out next, with length zero (for a slot a plan
    /// does not need).
    pub const fn empty(&self) -> Span {
        Span {
            start: self.next,
            len: 0,
        }
    }

    /// Slots reserved so far: the size of the buffer the caller must provide.
    pub const fn total(&self) -> usize {
        self.next
    }
}

/// One caller-owned buffer, checked against a plan's total, split into spans on demand.
///
/// The buffer is a `Vec` on a host or a `static` on a microcontroller; the arena never
/// allocates.
#[derive(Debug)]
pub struct Arena<'a, T> {
    buf: &'a mut [T],
}

impl<'a, T> Arena<'a, T> {
    /// Opens an arena for a plan needing `need` slots on `buf`.
    ///
    /// Only the first `need` slots are used; a larger buffer is fine.
    ///
    /// # Errors
    /// [`Error::ArenaTooSmall`] if `buf.len() < need`.
    pub fn new(buf: &'a mut [T], need: usize) -> Result<Self> {
        let have = buf.len();
        if have < need {
            return Err(Error::ArenaTooSmall { need, have });
        }
        Ok(Self {
            buf: &mut buf[..need],
        })
    }

    /// Slots in the arena (the plan's total).
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether the plan is empty.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The whole buffer.
    pub fn as_slice(&self) -> &[T] {
        self.buf
    }

    /// The whole buffer, writable.
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        self.buf
    }

    /// The slots of one span.
    pub fn get(&self, span: Span) -> &[T] {
        &self.buf[span.start..span.end()]
    }

    /// The slots of one span, writable.
    pub fn get_mut(&mut self, span: Span) -> &mut [T] {
        &mut self.buf[span.start..span.end()]
    }

    /// Several disjoint spans at once, all writable; see [`disjoint_mut`].
    pub fn disjoint_mut<const N: usize>(&mut self, spans: [Span; N]) -> [&mut [T]; N] {
        disjoint_mut(self.buf, spans)
    }
}

#[cfg(feature = "alloc")]
impl<T: Default + Clone> Arena<'_, T> {
    /// A zeroed heap buffer of exactly `need` slots, for hosts.
    pub fn alloc_vec(need: usize) -> alloc::vec::Vec<T> {
        alloc::vec![T::default(); need]
    }
}

/// Splits one buffer into a readable `earlier` span and a writable `later` one (forward).
///
/// # Panics
/// If the spans overlap or are out of order, or lie outside `buf`.
pub fn read_write<T>(buf: &mut [T], earlier: Span, later: Span) -> (&[T], &mut [T]) {
    assert!(
        earlier.end() <= later.start,
        "spans overlap or are out of order"
    );
    let (head, tail) = buf.split_at_mut(later.start);
    (&head[earlier.start..earlier.end()], &mut tail[..later.len])
}

/// Splits one buffer into a writable `earlier` span and a readable `later` one (backward).
///
/// # Panics
/// If the spans overlap or are out of order, or lie outside `buf`.
pub fn write_read<T>(buf: &mut [T], earlier: Span, later: Span) -> (&mut [T], &[T]) {
    assert!(
        earlier.end() <= later.start,
        "spans overlap or are out of order"
    );
    let (head, tail) = buf.split_at_mut(later.start);
    (&mut head[earlier.start..earlier.end()], &tail[..later.len])
}

/// `N` disjoint spans of `buf`, all writable. The spans must be in increasing order.
///
/// # Panics
/// If the spans overlap, are out of order, or lie outside `buf`.
pub fn disjoint_mut<T, const N: usize>(buf: &mut [T], spans: [Span; N]) -> [&mut [T]; N] {
    let mut out: [Option<&mut [T]>; N] = [const { None }; N];
    let mut rest = buf;
    let mut offset = 0;
    for (slot, span) in out.iter_mut().zip(spans) {
        assert!(span.start >= offset, "spans overlap or are out of order");
        let (_, tail) = core::mem::take(&mut rest).split_at_mut(span.start - offset);
        let (mid, tail) = tail.split_at_mut(span.len);
        *slot = Some(mid);
        rest = tail;
        offset = span.end();
    }
    out.map(|s| s.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planner_hands_out_consecutive_spans() {
        let mut p = Planner::new();
        let a = p.take(3);
        let b = p.take(5);
        assert_eq!(
            (a, b),
            (Span { start: 0, len: 3 }, Span { start: 3, len: 5 })
        );
        assert_eq!(p.total(), 8);
        assert_eq!(b.prefix(2), Span { start: 3, len: 2 });
        let mut q = Planner::new();
        q.take(usize::MAX);
        assert_eq!(
            q.try_take(1).unwrap_err(),
            Error::Overflow {
                what: "memory plan"
            }
        );
    }

    #[test]
    fn too_small_arena_reports_need_and_have() {
        let mut buf = [0.0f32; 4];
        assert_eq!(
            Arena::new(&mut buf, 5).unwrap_err(),
            Error::ArenaTooSmall { need: 5, have: 4 }
        );
        let arena = Arena::new(&mut buf, 3).unwrap();
        assert_eq!(arena.len(), 3);
    }

    #[test]
    fn splits_give_disjoint_borrows() {
        let mut buf = [0, 1, 2, 3, 4, 5, 6, 7];
        let a = Span { start: 0, len: 2 };
        let b = Span { start: 4, len: 3 };
        let (x, y) = read_write(&mut buf, a, b);
        y.copy_from_slice(&[x[0] + 10, x[1] + 10, 12]);
        assert_eq!(buf, [0, 1, 2, 3, 10, 11, 12, 7]);
        let (dx, dy) = write_read(&mut buf, a, b);
        dx.copy_from_slice(&dy[1..]);
        assert_eq!(&buf[..2], &[11, 12]);
        let mut arena = Arena::new(&mut buf, 8).unwrap();
        let [p, q, r] = arena.disjoint_mut([
            Span { start: 1, len: 1 },
            Span { start: 2, len: 2 },
            Span { start: 7, len: 1 },
        ]);
        p[0] = 100;
        q[1] = 200;
        r[0] = 300;
        assert_eq!(arena.as_slice(), &[11, 100, 2, 200, 10, 11, 12, 300]);
    }
}
