//! `next_batch` allocates nothing: counted by a global allocator around many batches.

use manabi_data::{Batcher, Dataset, Sampling};
use manabi_tensor::Rng;
use manabi_testkit::{TrackingAllocator, measure};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator;

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
        // 25 batches: two and a half epochs, so reshuffles happen inside the window.
        let (rows, seen) = measure(|| {
            (0..25)
                .map(|_| b.next_batch(&mut rng, &data, &mut x, &mut labels))
                .sum::<usize>()
        });
        assert_eq!(seen.count, 0, "{sampling:?} allocated");
        assert_eq!(rows, 2500);
        assert_eq!(labels, vec![3; 100]);
    }
}
