//! Loading data sets: the real MNIST files from `$MANABI_DATA`, a damaged copy, and synthetic IDX pairs.

mod common;

use std::fs;
use std::io::Read;
use std::path::Path;

use common::{TempDir, gzip, idx_bytes, mnist_dir};
use flate2::read::GzDecoder;
use manabi_data::{DataError, MNIST_FILES, Verify, load, load_dataset, locate};

/// Class counts of the MNIST training and test labels, as published and as counted
/// independently with a few lines of Python (`gzip.open(...).read()[8:]` through
/// `collections.Counter`) on the same files.
const TRAIN_COUNTS: [usize; 10] = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949];
const TEST_COUNTS: [usize; 10] = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009];

fn histogram(labels: &[usize]) -> Vec<usize> {
    let mut h = vec![0; 10];
    for &l in labels {
        h[l] += 1;
    }
    h
}

#[test]
fn real_mnist_loads_and_verifies() {
    let dir = mnist_dir();
    let data = load(&dir, Verify::Mnist).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(data.classes, 10);
    for (set, n, counts) in [
        (&data.train, 60_000, TRAIN_COUNTS),
        (&data.test, 10_000, TEST_COUNTS),
    ] {
        assert_eq!(set.len(), n);
        assert_eq!(set.image_dims(), &[28, 28]);
        assert_eq!(set.features(), 784);
        let values = set.to_values();
        assert_eq!(values.len(), n * 784);
        assert_eq!(set.bytes().map(<[u8]>::len), Some(n * 784));
        assert_eq!(set.labels().len(), n);
        assert_eq!(histogram(set.labels()), counts);
        assert_eq!(counts.iter().sum::<usize>(), n);
        assert!(values.iter().all(|&p| (0.0..=1.0).contains(&p)));
        // Both extremes occur: blank background and fully inked pixels.
        assert!(values.contains(&0.0) && values.contains(&1.0));
    }
    // Well-known facts: the first training digit is a 5, the first test digit a 7, and the
    // mean training pixel is 0.1307 (the usual normalisation constant; Python gave 0.130660).
    assert_eq!(data.train.labels()[0], 5);
    assert_eq!(data.test.labels()[0], 7);
    let mean = data
        .train
        .to_values()
        .iter()
        .map(|&p| f64::from(p))
        .sum::<f64>()
        / (60_000.0 * 784.0);
    assert!((mean - 0.130_66).abs() < 1e-5, "mean pixel {mean}");
    // 19 % of the training pixels are ink (python: (x != 0).mean() gave 0.1912): what makes
    // sparse rows pay for the first layer.
    let zeros = data.train.zero_fraction();
    assert!((zeros - 0.8088).abs() < 1e-3, "zero fraction {zeros}");
    // The compressed rows of the test set hold exactly the dense values, block by block.
    let all = data.test.to_sparse::<f32>().unwrap();
    assert_eq!(all.view().rows(), 10_000);
    let mut dense = vec![0.0f32; 3000 * 784];
    let mut back = vec![f32::NAN; 3000 * 784];
    let mut first = 0;
    while first < data.test.len() {
        let n = data.test.copy_rows(first, &mut dense);
        all.view()
            .row_range(first, n)
            .to_dense(&mut back[..n * 784]);
        assert!(
            back[..n * 784] == dense[..n * 784],
            "rows {first}..{}",
            first + n
        );
        first += n;
    }
    assert_eq!(first, 10_000);
}

/// Decompresses a real MNIST file.
fn gunzip(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    GzDecoder::new(fs::File::open(path).unwrap())
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[test]
fn one_changed_byte_fails_the_checksum_but_loads_without_verification() {
    let src = mnist_dir();
    let dir = TempDir::new("mnist-checksum");
    for f in &MNIST_FILES {
        let from = locate(&src, f.name).expect("MNIST file in $MANABI_DATA");
        let name = from.file_name().unwrap();
        fs::copy(&from, dir.path().join(name)).unwrap();
    }
    // Replace the .gz test labels with a raw copy whose first label (a 7) becomes a 3: still
    // a valid IDX file, but not MNIST.
    let labels_gz = locate(dir.path(), "t10k-labels-idx1-ubyte").unwrap();
    let mut raw = gunzip(&labels_gz);
    assert_eq!(raw[8], 7);
    raw[8] = 3;
    fs::remove_file(&labels_gz).unwrap();
    let raw_path = dir.path().join("t10k-labels-idx1-ubyte");
    fs::write(&raw_path, &raw).unwrap();

    let e = load(dir.path(), Verify::Mnist).unwrap_err();
    match &e {
        DataError::Checksum {
            path,
            expected,
            got,
        } => {
            assert_eq!(path, &raw_path);
            assert_eq!(
                expected,
                "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"
            );
            assert_ne!(got, expected);
        }
        other => panic!("expected a checksum error, got {other:?}"),
    }
    assert!(e.to_string().contains("t10k-labels-idx1-ubyte"), "{e}");

    let data = load(dir.path(), Verify::Skip).unwrap();
    assert_eq!(data.test.labels()[0], 3);
    assert_eq!(data.test.len(), 10_000);
}

/// Writes a synthetic data set under the four MNIST names.
fn write_set(dir: &Path, train: (&[u32], &[u8], &[u8]), test: (&[u32], &[u8], &[u8])) {
    for ((dims, pixels, labels), prefix) in [(train, "train"), (test, "t10k")] {
        fs::write(
            dir.join(format!("{prefix}-images-idx3-ubyte.gz")),
            gzip(&idx_bytes(dims, pixels)),
        )
        .unwrap();
        fs::write(
            dir.join(format!("{prefix}-labels-idx1-ubyte")),
            idx_bytes(&[labels.len() as u32], labels),
        )
        .unwrap();
    }
}

#[test]
fn any_idx_data_set_loads_without_verification() {
    let dir = TempDir::new("mnist-synthetic");
    // Three training samples of 2×2, two test samples; labels up to 4 → 5 classes.
    let train_px = [0, 255, 51, 102, 1, 2, 3, 4, 5, 6, 7, 8];
    write_set(
        dir.path(),
        (&[3, 2, 2], &train_px, &[0, 4, 1]),
        (&[2, 2, 2], &[9; 8], &[2, 2]),
    );
    let data = load(dir.path(), Verify::Skip).unwrap();
    assert_eq!(data.classes, 5);
    assert_eq!(data.train.len(), 3);
    assert_eq!(data.train.image_dims(), &[2, 2]);
    // 51/255 and 102/255 are 0.2 and 0.4 rounded to f32, as the book's f32 division gives.
    let mut first = [0.0f32; 4];
    data.train.copy_sample(0, &mut first);
    assert_eq!(first, [0.0, 1.0, 0.2, 0.4]);
    let mut as_f64 = [0.0f64; 4];
    data.train.copy_sample(2, &mut as_f64);
    assert_eq!(
        as_f64,
        [5.0, 6.0, 7.0, 8.0].map(|b: f32| f64::from(b / 255.0))
    );
    assert_eq!(data.train.labels(), &[0, 4, 1]);
    assert_eq!(data.test.labels(), &[2, 2]);

    // The same files are not MNIST.
    let e = load(dir.path(), Verify::Mnist).unwrap_err();
    assert!(matches!(e, DataError::Checksum { .. }), "{e:?}");
}

#[test]
fn mismatched_counts_ranks_and_shapes_are_clear_errors() {
    let dir = TempDir::new("mnist-bad");
    let d = dir.path();
    let images = d.join("img");
    let labels = d.join("lab");

    fs::write(&images, idx_bytes(&[3, 2], &[0; 6])).unwrap();
    fs::write(&labels, idx_bytes(&[2], &[0, 1])).unwrap();
    let e = load_dataset(&images, &labels).unwrap_err();
    assert!(
        matches!(
            &e,
            DataError::CountMismatch {
                image_count: 3,
                label_count: 2,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        format!(
            "{} holds 3 images but {} holds 2 labels",
            images.display(),
            labels.display()
        )
    );

    // n × features images are fine.
    fs::write(&labels, idx_bytes(&[3], &[0, 1, 1])).unwrap();
    let set = load_dataset(&images, &labels).unwrap();
    assert_eq!(
        (set.len(), set.features(), set.image_dims()),
        (3, 2, &[2][..])
    );

    fs::write(&images, idx_bytes(&[3], &[0; 3])).unwrap();
    let e = load_dataset(&images, &labels).unwrap_err();
    assert!(
        matches!(&e, DataError::BadShape { path, .. } if path == &images),
        "{e:?}"
    );

    fs::write(&images, idx_bytes(&[3, 2], &[0; 6])).unwrap();
    fs::write(&labels, idx_bytes(&[3, 1], &[0; 3])).unwrap();
    let e = load_dataset(&images, &labels).unwrap_err();
    assert!(
        matches!(&e, DataError::BadShape { path, .. } if path == &labels),
        "{e:?}"
    );

    // Training and test samples of different shapes.
    write_set(d, (&[1, 2, 2], &[0; 4], &[0]), (&[1, 3, 3], &[0; 9], &[1]));
    let e = load(d, Verify::Skip).unwrap_err();
    assert!(
        matches!(&e, DataError::DimsMismatch { train_dims, test_dims, .. }
            if train_dims == &[2, 2] && test_dims == &[3, 3]),
        "{e:?}"
    );
}

#[test]
fn a_missing_file_is_reported_with_the_fetch_hint() {
    let dir = TempDir::new("mnist-missing");
    let e = load(dir.path(), Verify::Mnist).unwrap_err();
    assert!(matches!(e, DataError::NotFound { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("train-images-idx3-ubyte"), "{msg}");
    assert!(msg.contains("manabi data fetch"), "{msg}");
}
