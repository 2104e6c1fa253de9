//! Batching: seeded determinism, the book's sampling with replacement, and checkpoint/restore.

use manabi_data::{Batcher, BatcherState, Dataset, Sampling, gather, gather_rows};
use manabi_tensor::{CsrBuf, Rng};

/// `n` samples of 3 features; sample `i` is `[i, i + 0.25, i + 0.5]`, label `i % 10`.
fn ramp(n: usize) -> Dataset {
    let images = (0..n)
        .flat_map(|i| [i as f32, i as f32 + 0.25, i as f32 + 0.5])
        .collect();
    Dataset::new(images, vec![3], (0..n).map(|i| i % 10).collect()).unwrap()
}

/// The sample index of each row (recovered from its first feature), checking rows and
/// labels stay paired.
fn indices(x: &[f32], labels: &[usize], rows: usize) -> Vec<usize> {
    (0..rows)
        .map(|r| {
            let i = x[3 * r] as usize;
            assert_eq!(
                &x[3 * r..3 * r + 3],
                &[i as f32, i as f32 + 0.25, i as f32 + 0.5]
            );
            assert_eq!(labels[r], i % 10);
            i
        })
        .collect()
}

/// Runs `steps` batches and returns the sample indices drawn.
fn draw(b: &mut Batcher, rng: &mut Rng, data: &Dataset, steps: usize) -> Vec<Vec<usize>> {
    let mut x = vec![f32::NAN; b.batch() * 3];
    let mut y = vec![usize::MAX; b.batch()];
    (0..steps)
        .map(|_| {
            let rows = b.next_batch(rng, data, &mut x, &mut y);
            indices(&x, &y, rows)
        })
        .collect()
}

#[test]
fn same_seed_same_batches_for_both_samplings() {
    let data = ramp(50);
    for sampling in [Sampling::Random, Sampling::EpochShuffle] {
        let run = |seed| {
            let mut b = Batcher::new(sampling, 8, data.len()).unwrap();
            draw(&mut b, &mut Rng::new(seed), &data, 20)
        };
        let a = run(7);
        assert_eq!(a, run(7), "{sampling:?}");
        assert_ne!(a, run(8), "{sampling:?}");
    }
}

#[test]
fn random_sampling_draws_uniformly_with_replacement() {
    // 12 draws from 10 samples must repeat one (pigeonhole), which only sampling with
    // replacement allows; every batch is full.
    let data = ramp(10);
    let mut b = Batcher::new(Sampling::Random, 12, 10).unwrap();
    let mut rng = Rng::new(1);
    let mut counts = [0usize; 10];
    for batch in draw(&mut b, &mut rng, &data, 5000) {
        assert_eq!(batch.len(), 12);
        for i in batch {
            counts[i] += 1;
        }
    }
    // 60000 draws, 6000 expected per sample; 5 standard deviations is about ±370.
    assert!(counts.iter().all(|&c| c.abs_diff(6000) < 400), "{counts:?}");
    assert_eq!(b.epochs(), 0);
}

#[test]
fn epoch_shuffle_permutes_each_epoch_differently() {
    let data = ramp(10);
    let mut b = Batcher::new(Sampling::EpochShuffle, 4, 10).unwrap();
    let batches = draw(&mut b, &mut Rng::new(3), &data, 6);
    let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
    // 10 = 4 + 4 + 2: the short batch is kept.
    assert_eq!(sizes, [4, 4, 2, 4, 4, 2]);
    let first: Vec<usize> = batches[..3].concat();
    let second: Vec<usize> = batches[3..].concat();
    for epoch in [&first, &second] {
        let mut sorted = epoch.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
    }
    assert_ne!(first, second);
    assert_eq!(b.epochs(), 2);
}

#[test]
fn restoring_state_and_generator_replays_the_run() {
    let data = ramp(37);
    for sampling in [Sampling::Random, Sampling::EpochShuffle] {
        let mut b = Batcher::new(sampling, 5, data.len()).unwrap();
        let mut rng = Rng::new(11);
        // Stop mid-epoch (3 of 8 batches), save, and continue across an epoch boundary.
        draw(&mut b, &mut rng, &data, 3);
        let words = b.state().to_words();
        let rng_state = rng.state();
        let expected = draw(&mut b, &mut rng, &data, 12);

        let state = BatcherState::from_words(&words).unwrap();
        let mut b2 = Batcher::from_state(state).unwrap();
        let mut rng2 = Rng::from_state(rng_state).unwrap();
        assert_eq!(
            draw(&mut b2, &mut rng2, &data, 12),
            expected,
            "{sampling:?}"
        );
        assert_eq!(b2, b);
    }
}

#[test]
fn gather_fills_a_prefix_and_leaves_the_rest() {
    let data = ramp(6);
    let mut x = vec![-1.0; 4 * 3];
    let mut y = vec![99; 4];
    gather(&data, &[5, 0, 5], &mut x, &mut y);
    assert_eq!(indices(&x, &y, 3), [5, 0, 5]);
    assert_eq!(&x[9..], &[-1.0; 3]);
    assert_eq!(y[3], 99);
}

#[test]
fn next_indices_walks_the_same_path_as_next_batch() {
    // 23 samples in batches of 5: EpochShuffle ends each epoch with a batch of 3, so the
    // comparison crosses epoch boundaries (a fresh shuffle each time).
    let data = ramp(23);
    for sampling in [Sampling::Random, Sampling::EpochShuffle] {
        let mut by_batch = Batcher::new(sampling, 5, data.len()).unwrap();
        let copied = draw(&mut by_batch, &mut Rng::new(3), &data, 17);
        let mut by_index = Batcher::new(sampling, 5, data.len()).unwrap();
        let mut rng = Rng::new(3);
        let mut idx = [usize::MAX; 5];
        let (mut x, mut y) = ([f32::NAN; 15], [usize::MAX; 5]);
        for (step, want) in copied.iter().enumerate() {
            let rows = by_index.next_indices(&mut rng, &mut idx);
            assert_eq!(&idx[..rows], &want[..], "{sampling:?} step {step}");
            // Gathering the indices gives the rows next_batch copied.
            gather(&data, &idx[..rows], &mut x, &mut y);
            assert_eq!(indices(&x, &y, rows), *want);
        }
        assert_eq!(by_index, by_batch, "{sampling:?}: same position afterwards");
    }
}

#[test]
fn sparse_gathers_hold_the_dense_values() {
    // 29 features: three whole eight-byte words and a remainder of five; about 60 % zeros.
    let (n, f) = (50, 29);
    let mut rng = Rng::new(8);
    let bytes: Vec<u8> = (0..n * f)
        .map(|_| {
            if rng.below(5) < 3 {
                0
            } else {
                rng.below(256) as u8
            }
        })
        .collect();
    let labels: Vec<usize> = (0..n).map(|i| i % 7).collect();
    let from_bytes = Dataset::from_bytes(bytes, vec![f], labels.clone()).unwrap();
    let from_values = Dataset::new(from_bytes.to_values(), vec![f], labels).unwrap();
    let indices = [3, 49, 0, 3, 17, 28, 8];
    for data in [&from_bytes, &from_values] {
        let (mut x, mut l) = (vec![f64::NAN; 7 * f], vec![usize::MAX; 7]);
        gather(data, &indices, &mut x, &mut l);
        // The whole set in compressed form holds the dense values, row for row.
        let all = data.to_sparse::<f64>().unwrap();
        assert_eq!(all.view().rows(), n);
        assert!(all.view().nnz() < n * f * 6 / 10);
        let mut whole = vec![f64::NAN; n * f];
        all.view().to_dense(&mut whole);
        assert_eq!(
            whole,
            data.to_values()
                .iter()
                .map(|&v| f64::from(v))
                .collect::<Vec<_>>()
        );
        // Gathered rows are the gathered samples.
        let mut rows = CsrBuf::new(7, f).unwrap();
        let mut ls = vec![usize::MAX; 7];
        gather_rows(all.view(), data.labels(), &indices, &mut rows, &mut ls);
        assert_eq!(ls, l);
        let mut back = vec![f64::NAN; 7 * f];
        rows.view().to_dense(&mut back);
        assert_eq!(back, x);
        // A refill replaces the rows.
        gather_rows(all.view(), data.labels(), &indices[..2], &mut rows, &mut ls);
        assert_eq!(rows.view().rows(), 2);
    }
    let zeros = from_bytes.zero_fraction();
    assert!((0.5..0.7).contains(&zeros), "{zeros}");
    assert_eq!(zeros, from_values.zero_fraction());
}

#[test]
fn truncate_keeps_the_first_samples() {
    let values: Vec<f32> = (0..12).map(|v| v as f32).collect();
    let mut d = manabi_data::Dataset::new(values, vec![2], vec![0, 1, 2, 3, 4, 5]).unwrap();
    d.truncate(4).unwrap();
    assert_eq!((d.len(), d.labels()), (4, &[0usize, 1, 2, 3][..]));
    let mut row = [0.0f32; 8];
    assert_eq!(d.copy_rows(0, &mut row), 4);
    assert_eq!(row, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
    // A limit past the end keeps everything; zero is refused.
    d.truncate(100).unwrap();
    assert_eq!(d.len(), 4);
    assert!(d.truncate(0).is_err());
    let mut bytes =
        manabi_data::Dataset::from_bytes(vec![0, 255, 51, 0], vec![1], vec![1, 2, 3, 4]).unwrap();
    bytes.truncate(2).unwrap();
    assert_eq!(bytes.bytes(), Some(&[0u8, 255][..]));
}

#[test]
fn sampling_names_read_back() {
    assert_eq!(Sampling::ALL.map(Sampling::name), ["random", "shuffle"]);
    for s in Sampling::ALL {
        assert_eq!(Sampling::from_name(s.name()), Some(s));
    }
    assert_eq!(Sampling::from_name("epoch-shuffle"), None);
}
