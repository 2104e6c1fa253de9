//! `next_batch` allocates nothing: counted by a global allocator around many batches.

use manabi_data::{Batcher, Dataset, Sampling, gather_rows};
use manabi_tensor::{CsrBuf, Rng};
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

#[test]
fn sparse_gathers_and_transposes_allocate_nothing() {
    let (n, features) = (1000, 784);
    let bytes: Vec<u8> = (0..n * features).map(|i| (i % 5 * 60) as u8).collect();
    let data = Dataset::from_bytes(bytes, vec![28, 28], vec![1; n]).unwrap();
    let all = data.to_sparse::<f32>().unwrap();
    let mut rows = CsrBuf::<f32>::new(100, features).unwrap();
    let mut cols = CsrBuf::<f32>::new(features, 100).unwrap();
    let mut labels = vec![0usize; 100];
    let indices: Vec<usize> = (0..100).map(|i| i * 7).collect();
    let ((), seen) = measure(|| {
        for _ in 0..5 {
            gather_rows(all.view(), data.labels(), &indices, &mut rows, &mut labels);
            cols.transpose_from(rows.view());
        }
    });
    assert_eq!(seen.count, 0);
    assert_eq!(rows.view().nnz(), 100 * features * 4 / 5);
}
