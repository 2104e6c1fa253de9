//! `next_batch` allocates nothing: counted by a global allocator around many batches.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use manabi_data::{Batcher, Dataset, Sampling};
use manabi_tensor::Rng;

thread_local! {
    /// Allocations made by this thread (so the test harness's own threads don't count).
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count() {
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

struct Counting;

// SAFETY: every call forwards to `System` unchanged; we only count.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

#[test]
fn next_batch_allocates_nothing() {
    let n = 1000;
    let features = 784;
    let data = Dataset::new(vec![0.5; n * features], vec![28, 28], vec![3; n]).unwrap();
    let mut rng = Rng::new(5);
    let mut x = vec![0.0f32; 100 * features];
    let mut labels = vec![0usize; 100];
    for sampling in [Sampling::Random, Sampling::EpochShuffle] {
        let mut b = Batcher::new(sampling, 100, n).unwrap();
        let before = ALLOCATIONS.with(Cell::get);
        let mut rows = 0;
        // 25 batches: two and a half epochs, so reshuffles happen inside the window.
        for _ in 0..25 {
            rows += b.next_batch(&mut rng, &data, &mut x, &mut labels);
        }
        let after = ALLOCATIONS.with(Cell::get);
        assert_eq!(after - before, 0, "{sampling:?} allocated");
        assert_eq!(rows, 2500);
        assert_eq!(labels, vec![3; 100]);
    }
}
