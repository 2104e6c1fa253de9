//! A global allocator that counts each thread's allocations and remembers the largest.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    /// Allocations (and reallocations) made by this thread, and the largest size requested.
    static SEEN: Cell<Allocations> = const { Cell::new(Allocations { count: 0, largest: 0 }) };
}

/// What a thread allocated while [`measure`] ran its closure.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Allocations {
    /// Calls to `alloc`, `alloc_zeroed` and `realloc`.
    pub count: usize,
    /// The largest size any of them asked for, in bytes.
    pub largest: usize,
}

/// The system allocator, counting per thread (so the test harness's other threads do not
/// disturb a measurement). Install it in a test binary:
///
/// ```
/// use manabi_testkit::{TrackingAllocator, measure};
///
/// #[global_allocator]
/// static ALLOC: TrackingAllocator = TrackingAllocator;
///
/// let (v, seen) = measure(|| vec![0u8; 100]);
/// assert_eq!((v.len(), seen.count, seen.largest), (100, 1, 100));
/// ```
///
/// Without it installed, [`measure`] reports nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct TrackingAllocator;

fn record(size: usize) {
    // `try_with`: the thread-local may already be gone while a thread shuts down.
    let _ = SEEN.try_with(|s| {
        let old = s.get();
        s.set(Allocations {
            count: old.count + 1,
            largest: old.largest.max(size),
        });
    });
}

// SAFETY: every method hands its arguments to `System` unchanged and returns its result; the
// bookkeeping touches only a thread-local `Cell` and never allocates.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for TrackingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: the caller keeps `GlobalAlloc::alloc`'s contract, which is System's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size);
        // SAFETY: `ptr` and `layout` come from this allocator, that is from System.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as for `realloc`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Runs `f` and returns its result with what it allocated on the calling thread (nothing
/// unless [`TrackingAllocator`] is the global allocator).
pub fn measure<T>(f: impl FnOnce() -> T) -> (T, Allocations) {
    let before = SEEN.with(Cell::get);
    SEEN.with(|s| {
        s.set(Allocations {
            count: before.count,
            largest: 0,
        })
    });
    let out = f();
    let after = SEEN.with(Cell::get);
    SEEN.with(|s| {
        s.set(Allocations {
            count: after.count,
            largest: before.largest.max(after.largest),
        })
    });
    (
        out,
        Allocations {
            count: after.count - before.count,
            largest: after.largest,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[global_allocator]
    static ALLOC: TrackingAllocator = TrackingAllocator;

    #[test]
    fn counts_and_sizes_this_threads_allocations() {
        let (v, seen) = measure(|| {
            let mut v: Vec<u8> = Vec::with_capacity(1000);
            v.extend_from_slice(&[1, 2, 3]);
            std::hint::black_box(vec![0u64; 16]);
            v
        });
        assert_eq!(v, [1, 2, 3]);
        assert_eq!(
            seen,
            Allocations {
                count: 2,
                largest: 1000
            }
        );
        let ((), none) = measure(|| {
            let x = [0u8; 64];
            std::hint::black_box(x);
        });
        assert_eq!(none, Allocations::default());
    }

    #[test]
    fn other_threads_do_not_count() {
        let ((), seen) = measure(|| {
            std::thread::scope(|s| {
                s.spawn(|| std::hint::black_box(vec![0u8; 1 << 20]));
            });
        });
        assert!(seen.largest < 1 << 20, "{seen:?}");
    }

    #[test]
    fn measurements_nest() {
        let ((inner, _), outer) = measure(|| measure(|| std::hint::black_box(vec![0u8; 300])));
        assert_eq!(inner.len(), 300);
        assert!(outer.count >= 1 && outer.largest >= 300, "{outer:?}");
    }
}
