//! One test per kind of malformed data set: the exact one-line message `load` gives for it, raw and gzipped alike.
//!
//! Each test writes a small synthetic data set under the four MNIST names in a scratch
//! directory, spoils one file, and loads the directory through `manabi_data::load` (or
//! `load_with_classes`), so the messages asserted are the ones a user sees. Unless a kind
//! only exists in one form (a damaged gzip stream), the same spoiled bytes are written once
//! as raw files and once gzipped, under the `.gz` names, and give the same message with
//! the file's own path.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{TempDir, gzip, idx_bytes};
use manabi_data::{DataError, MNIST_FILES, TrainTest, Verify, load, load_with_classes};
use manabi_testkit::{TrackingAllocator, measure};
use sha2::{Digest, Sha256};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator;

/// Index of each file in [`Files`], in the order of [`MNIST_FILES`].
const TRAIN_IMAGES: usize = 0;
const TRAIN_LABELS: usize = 1;
const TEST_IMAGES: usize = 2;
const TEST_LABELS: usize = 3;

/// The contents of the four files (`None`: the file is not written).
type Files = [Option<Vec<u8>>; 4];

/// How the files are stored.
#[derive(Clone, Copy, Debug)]
enum Form {
    /// As they are, under the names without `.gz`.
    Raw,
    /// Gzip-compressed, under the `.gz` names.
    Gzip,
}

const FORMS: [Form; 2] = [Form::Raw, Form::Gzip];

/// A valid set: three training samples of 2×2 (labels 0 1 2), two test samples (0 1).
fn good() -> Files {
    [
        Some(idx_bytes(&[3, 2, 2], &[7; 12])),
        Some(idx_bytes(&[3], &[0, 1, 2])),
        Some(idx_bytes(&[2, 2, 2], &[9; 8])),
        Some(idx_bytes(&[2], &[0, 1])),
    ]
}

/// A valid set of 2×2 samples with these labels.
fn labelled(train: &[u8], test: &[u8]) -> Files {
    let images = |n: usize| Some(idx_bytes(&[n as u32, 2, 2], &vec![5; n * 4]));
    [
        images(train.len()),
        Some(idx_bytes(&[train.len() as u32], train)),
        images(test.len()),
        Some(idx_bytes(&[test.len() as u32], test)),
    ]
}

/// Labels 0..9 in turn: `n / 10` samples per class.
fn digits(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 10) as u8).collect()
}

/// Writes `files` into a fresh directory in `form`; returns it with the four paths.
fn write(files: &Files, form: Form) -> (TempDir, [PathBuf; 4]) {
    let dir = TempDir::new("malformed");
    let paths = std::array::from_fn(|i| {
        let name = MNIST_FILES[i].name;
        match form {
            Form::Raw => dir.join(name),
            Form::Gzip => dir.join(&format!("{name}.gz")),
        }
    });
    for (bytes, path) in files.iter().zip(&paths) {
        if let Some(bytes) = bytes {
            let stored = match form {
                Form::Raw => bytes.clone(),
                Form::Gzip => gzip(bytes),
            };
            fs::write(path, stored).unwrap();
        }
    }
    (dir, paths)
}

/// The message of a load that must fail, checked to be one line.
fn message(result: Result<TrainTest, DataError>) -> String {
    let msg = match result {
        Ok(sets) => panic!("loaded {} classes instead of failing", sets.classes),
        Err(e) => e.to_string(),
    };
    assert!(!msg.contains('\n'), "not one line: {msg}");
    msg
}

/// For each form: writes `files`, loads them with `classes`, and compares the message with
/// `expected(paths)`.
fn assert_message(
    files: &Files,
    classes: Option<usize>,
    expected: impl Fn(&[PathBuf; 4]) -> String,
) {
    for form in FORMS {
        let (dir, paths) = write(files, form);
        let msg = message(load_with_classes(dir.path(), Verify::Skip, classes));
        assert_eq!(msg, expected(&paths), "{form:?}");
    }
}

/// `path: rest`, as every message about one file reads.
fn at(path: &Path, rest: &str) -> String {
    format!("{}: {rest}", path.display())
}

#[test]
fn a_missing_file_names_both_names_looked_for_and_the_fetch_hint() {
    let mut files = good();
    files[TEST_LABELS] = None;
    for form in FORMS {
        let (dir, _) = write(&files, form);
        let looked = dir.join("t10k-labels-idx1-ubyte");
        let msg = message(load(dir.path(), Verify::Mnist));
        assert_eq!(
            msg,
            format!(
                "MNIST files not found (looked in {}.gz, {}); run `manabi data fetch` to download them",
                looked.display(),
                looked.display()
            ),
            "{form:?}"
        );
    }
}

#[test]
fn a_header_cut_short_says_how_long_it_needed_to_be() {
    let mut files = good();
    files[TRAIN_IMAGES] = Some(Vec::new());
    assert_message(&files, None, |p| {
        at(
            &p[TRAIN_IMAGES],
            "not an IDX file: it is empty, expected at least a 4-byte header",
        )
    });
    files[TRAIN_IMAGES] = Some(vec![0, 0]);
    assert_message(&files, None, |p| {
        at(
            &p[TRAIN_IMAGES],
            "not an IDX file: it ends after 2 bytes, expected at least a 4-byte header",
        )
    });
    // Rank 3, and the file ends inside the second dimension.
    files[TRAIN_IMAGES] = Some(vec![0, 0, 8, 3, 0, 0, 0, 3, 0, 0]);
    assert_message(&files, None, |p| {
        at(
            &p[TRAIN_IMAGES],
            "IDX header cut short: rank 3 needs 16 header bytes (4, then 4 per dimension) \
             but the file ends after 10",
        )
    });
}

#[test]
fn a_bad_magic_is_shown_next_to_the_expected_one() {
    let mut files = good();
    let mut bytes = idx_bytes(&[3, 2, 2], &[7; 12]);
    bytes[0] = 0x50;
    files[TRAIN_IMAGES] = Some(bytes);
    assert_message(&files, None, |p| {
        at(
            &p[TRAIN_IMAGES],
            "not an IDX file: expected the magic bytes 00 00, found 50 00",
        )
    });
}

#[test]
fn an_unsupported_element_type_is_named() {
    let mut files = good();
    let mut bytes = idx_bytes(&[3, 2, 2], &[0; 48]);
    bytes[2] = 0x0D;
    files[TRAIN_IMAGES] = Some(bytes);
    assert_message(&files, None, |p| {
        at(
            &p[TRAIN_IMAGES],
            "unsupported IDX element type: expected 0x08 (unsigned byte), found 0x0D (f32)",
        )
    });
    let mut bytes = idx_bytes(&[3], &[0, 1, 2]);
    bytes[2] = 0x42;
    files[TRAIN_IMAGES] = good()[TRAIN_IMAGES].clone();
    files[TRAIN_LABELS] = Some(bytes);
    assert_message(&files, None, |p| {
        at(
            &p[TRAIN_LABELS],
            "unknown IDX element type: expected 0x08 (unsigned byte), found 0x42",
        )
    });
}

#[test]
fn a_rank_of_zero_or_above_four_is_refused() {
    let mut files = good();
    files[TEST_IMAGES] = Some(vec![0, 0, 8, 0]);
    assert_message(&files, None, |p| {
        at(
            &p[TEST_IMAGES],
            "unsupported IDX rank: expected 1 to 4 dimensions, found 0",
        )
    });
    files[TEST_IMAGES] = Some(idx_bytes(&[2, 1, 1, 2, 2], &[0; 8]));
    assert_message(&files, None, |p| {
        at(
            &p[TEST_IMAGES],
            "unsupported IDX rank: expected 1 to 4 dimensions, found 5",
        )
    });
}

#[test]
fn a_zero_dimension_is_refused() {
    let mut files = good();
    files[TRAIN_IMAGES] = Some(idx_bytes(&[3, 0, 2], &[]));
    assert_message(&files, None, |p| {
        at(
            &p[TRAIN_IMAGES],
            "IDX dimensions must all be at least 1, but the header has 3×0×2",
        )
    });
}

#[test]
fn a_huge_header_is_refused_before_allocating() {
    let mut files = good();
    // (2³²−1)³ > 2⁶⁴: the product overflows usize on every target.
    files[TRAIN_IMAGES] = Some(idx_bytes(&[u32::MAX; 3], &[]));
    assert_message(&files, None, |p| {
        at(
            &p[TRAIN_IMAGES],
            "IDX header has 4294967295×4294967295×4294967295, \
             more bytes of data than this machine can address",
        )
    });
    // 2³¹ images of 28×28 announced in a 1 KiB file. The training images are read on the
    // calling thread, where the allocator counts.
    let mut liar = idx_bytes(&[1 << 31, 28, 28], &[]);
    liar.resize(1024, 0);
    files[TRAIN_IMAGES] = Some(liar);
    for form in FORMS {
        let (dir, paths) = write(&files, form);
        let (result, seen) = measure(|| load(dir.path(), Verify::Skip));
        assert_eq!(
            message(result),
            at(
                &paths[TRAIN_IMAGES],
                "IDX data cut short: header says 2147483648×28×28 = 1683627180032 bytes of data, \
                 but the file holds 1008"
            ),
            "{form:?}"
        );
        assert!(seen.largest < 1 << 20, "{form:?}: {} bytes", seen.largest);
    }
}

#[test]
fn a_payload_cut_short_gives_both_lengths() {
    let mut files = good();
    files[TRAIN_IMAGES] = Some(idx_bytes(&[3, 2, 2], &[7; 11]));
    assert_message(&files, None, |p| {
        at(
            &p[TRAIN_IMAGES],
            "IDX data cut short: header says 3×2×2 = 12 bytes of data, but the file holds 11",
        )
    });
}

#[test]
fn trailing_data_is_counted() {
    let mut files = good();
    files[TRAIN_IMAGES] = Some(idx_bytes(&[3, 2, 2], &[7; 15]));
    assert_message(&files, None, |p| {
        at(
            &p[TRAIN_IMAGES],
            "IDX data too long: header says 3×2×2 = 12 bytes of data, but 3 more bytes follow them",
        )
    });
    // Past a mebibyte a gzip stream is no longer decompressed to count; a raw file's length
    // still gives the exact figure.
    let mut payload = vec![7; 12];
    payload.resize(12 + (2 << 20), 0);
    files[TRAIN_IMAGES] = Some(idx_bytes(&[3, 2, 2], &payload));
    for (form, extra) in [(Form::Raw, "2097152"), (Form::Gzip, "more than 1048576")] {
        let (dir, paths) = write(&files, form);
        assert_eq!(
            message(load(dir.path(), Verify::Skip)),
            at(
                &paths[TRAIN_IMAGES],
                &format!(
                    "IDX data too long: header says 3×2×2 = 12 bytes of data, but {extra} more \
                     bytes follow them"
                )
            ),
            "{form:?}"
        );
    }
}

#[test]
fn an_image_file_of_rank_one_is_judged_by_its_header() {
    let mut files = good();
    // 1497 "images" of no dimension, with more bytes than that after the header: the rank is
    // what is wrong, and it is reported before the length of the payload is judged.
    files[TRAIN_IMAGES] = Some(idx_bytes(&[1497], &[1; 1500]));
    files[TRAIN_LABELS] = Some(idx_bytes(&[1497], &[0; 1497]));
    assert_message(&files, None, |p| {
        at(
            &p[TRAIN_IMAGES],
            "an image file needs 3 dimensions, count × rows × columns \
             (or 2, count × features; or 4, with channels last), but its header has 1: 1497",
        )
    });
    // What the message promises: ranks 2 and 4 load too.
    for (train, test) in [
        (idx_bytes(&[3, 4], &[1; 12]), idx_bytes(&[2, 4], &[1; 8])),
        (
            idx_bytes(&[3, 1, 2, 2], &[1; 12]),
            idx_bytes(&[2, 1, 2, 2], &[1; 8]),
        ),
    ] {
        let mut files = good();
        files[TRAIN_IMAGES] = Some(train);
        files[TEST_IMAGES] = Some(test);
        for form in FORMS {
            let (dir, _) = write(&files, form);
            let sets = load(dir.path(), Verify::Skip).unwrap();
            assert_eq!((sets.train.features(), sets.classes), (4, 3), "{form:?}");
        }
    }
}

#[test]
fn a_label_file_of_rank_two_is_judged_by_its_header() {
    let mut files = good();
    // Trailing bytes too: the rank is reported first.
    files[TEST_LABELS] = Some(idx_bytes(&[2, 1], &[0, 1, 2, 3]));
    assert_message(&files, None, |p| {
        at(
            &p[TEST_LABELS],
            "a label file needs exactly 1 dimension, count, but its header has 2: 2×1",
        )
    });
}

#[test]
fn different_image_and_label_counts_name_both_files() {
    let mut files = good();
    files[TRAIN_LABELS] = Some(idx_bytes(&[2], &[0, 1]));
    assert_message(&files, None, |p| {
        format!(
            "{} holds 3 images but {} holds 2 labels",
            p[TRAIN_IMAGES].display(),
            p[TRAIN_LABELS].display()
        )
    });
}

#[test]
fn training_and_test_samples_of_different_shapes_name_both_files() {
    let mut files = good();
    files[TEST_IMAGES] = Some(idx_bytes(&[2, 3, 3], &[9; 18]));
    assert_message(&files, None, |p| {
        format!(
            "training images in {} are 2×2 but test images in {} are 3×3 \
             (both sets need one sample shape)",
            p[TRAIN_IMAGES].display(),
            p[TEST_IMAGES].display()
        )
    });
}

#[test]
fn a_wrong_sha256_gives_both_digests() {
    let files = good();
    // The training labels are read first on the calling thread, so theirs is the error.
    let labels = files[TRAIN_LABELS].clone().unwrap();
    let got: String = Sha256::digest(&labels)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    for form in FORMS {
        let (dir, paths) = write(&files, form);
        let msg = message(load(dir.path(), Verify::Mnist));
        // The digest is of the decompressed bytes: the same for both forms.
        assert_eq!(
            msg,
            at(
                &paths[TRAIN_LABELS],
                &format!(
                    "SHA-256 of the decompressed data is {got}, expected \
                     65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5 \
                     (the file is damaged or is not the original MNIST file; skip verification \
                     to load other data)"
                )
            ),
            "{form:?}"
        );
        // The same files load without verification.
        assert_eq!(load(dir.path(), Verify::Skip).unwrap().classes, 3);
    }
}

#[test]
fn a_damaged_or_cut_short_gzip_stream_says_so() {
    let images = idx_bytes(&[3, 2, 2], &[7; 12]);
    let gz = gzip(&images);
    let (dir, paths) = write(&good(), Form::Gzip);
    let path = &paths[TRAIN_IMAGES];
    // A flipped bit in the CRC-32 of the trailer (its last 8 bytes: CRC, then length).
    let mut bad_crc = gz.clone();
    let crc = bad_crc.len() - 8;
    bad_crc[crc] ^= 1;
    fs::write(path, &bad_crc).unwrap();
    assert_eq!(
        message(load(dir.path(), Verify::Skip)),
        at(
            path,
            "the gzip stream is damaged (decoder: corrupt gzip stream does not have a matching \
             checksum); fetch or copy the file again"
        )
    );
    // Cut inside the compressed data, and inside the trailer.
    fs::write(path, &gz[..gz.len() - 12]).unwrap();
    assert_eq!(
        message(load(dir.path(), Verify::Skip)),
        at(
            path,
            "the gzip stream ends early, before its end-of-stream trailer (decoder: incomplete \
             deflate stream); the file is incomplete, fetch or copy it again"
        )
    );
    fs::write(path, &gz[..gz.len() - 4]).unwrap();
    assert_eq!(
        message(load(dir.path(), Verify::Skip)),
        at(
            path,
            "the gzip stream ends early, before its end-of-stream trailer (decoder: unexpected \
             end of file); the file is incomplete, fetch or copy it again"
        )
    );
}

#[test]
fn a_stray_label_leaving_a_gap_is_refused_without_a_class_count() {
    // 100 digits for training, 10 for test, of which the fourth is a stray 200.
    let mut test = digits(10);
    test[3] = 200;
    let files = labelled(&digits(100), &test);
    assert_message(&files, None, |p| {
        at(
            &p[TEST_LABELS],
            "label 200 at index 3 skips classes 10 to 199, which no training or test label uses \
             (a stray label?); if the gap is intended, `--classes 201` accepts it",
        )
    });
    // A gap of one class, 1-based labels (class 0 empty) and the smallest label above a
    // gap being named, not the largest.
    let mut train: Vec<u8> = digits(100);
    for l in &mut train {
        if *l == 7 {
            *l = 9;
        }
    }
    train[55] = 12;
    let files = labelled(
        &train,
        &digits(10).iter().map(|&l| l % 7).collect::<Vec<_>>(),
    );
    assert_message(&files, None, |p| {
        at(
            &p[TRAIN_LABELS],
            "label 8 at index 8 skips class 7, which no training or test label uses \
             (a stray label?); if the gap is intended, `--classes 13` accepts it",
        )
    });
    let one_based: Vec<u8> = digits(100).iter().map(|&l| l + 1).collect();
    let files = labelled(&one_based, &one_based[..10]);
    assert_message(&files, None, |p| {
        at(
            &p[TRAIN_LABELS],
            "label 1 at index 0 skips class 0, which no training or test label uses \
             (a stray label?); if the gap is intended, `--classes 11` accepts it",
        )
    });
}

#[test]
fn a_lone_largest_label_is_refused_without_a_class_count() {
    let mut train = digits(100);
    train[42] = 10;
    let files = labelled(&train, &digits(10));
    assert_message(&files, None, |p| {
        at(
            &p[TRAIN_LABELS],
            "label 10 at index 42 is the only sample of class 10 among 110 training and test \
             labels (a stray label?); if the class is intended, `--classes 11` accepts it",
        )
    });
}

#[test]
fn a_label_not_below_the_class_count_is_refused() {
    let mut test = digits(10);
    test[3] = 200;
    let files = labelled(&digits(100), &test);
    assert_message(&files, Some(10), |p| {
        at(
            &p[TEST_LABELS],
            "label 200 at index 3 is out of range for 10 classes (expected 0 to 9)",
        )
    });
    // The small valid set's training label 2 is the first one ≥ 2.
    assert_message(&good(), Some(2), |p| {
        at(
            &p[TRAIN_LABELS],
            "label 2 at index 2 is out of range for 2 classes (expected 0 to 1)",
        )
    });
}

#[test]
fn a_class_count_of_zero_is_refused_before_reading() {
    // No files at all: the count is judged first.
    let dir = TempDir::new("malformed-zero");
    assert_eq!(
        message(load_with_classes(dir.path(), Verify::Skip, Some(0))),
        "a class count of 0 cannot hold any label: labels are class indices 0 to N−1, \
         so N must be at least 1"
    );
}

#[test]
fn digits_load_with_ten_inferred_classes() {
    for form in FORMS {
        let (dir, _) = write(&labelled(&digits(100), &digits(20)), form);
        let sets = load(dir.path(), Verify::Skip).unwrap();
        assert_eq!(sets.classes, 10, "{form:?}");
        assert_eq!(
            sets.train.labels(),
            &digits(100)
                .iter()
                .map(|&l| usize::from(l))
                .collect::<Vec<_>>()[..]
        );
        // Ten per class is not needed below the threshold: a tiny set with a gap and a lone
        // largest label still loads (labels 0, 1, 2, 2, 4 → 5 classes).
        let (dir, _) = write(&labelled(&[0, 4, 1], &[2, 2]), form);
        assert_eq!(
            load(dir.path(), Verify::Skip).unwrap().classes,
            5,
            "{form:?}"
        );
    }
}

#[test]
fn an_explicit_class_count_accepts_gaps_lone_labels_and_unused_classes() {
    let mut test = digits(10);
    test[3] = 200;
    let mut lone = digits(100);
    lone[42] = 10;
    for (files, classes) in [
        (labelled(&digits(100), &test), 201),
        (labelled(&lone, &digits(10)), 11),
        (labelled(&digits(100), &digits(10)), 12),
        (labelled(&digits(100), &digits(10)), 10),
    ] {
        for form in FORMS {
            let (dir, _) = write(&files, form);
            let sets = load_with_classes(dir.path(), Verify::Skip, Some(classes)).unwrap();
            assert_eq!(sets.classes, classes, "{form:?}");
            assert_eq!((sets.train.len(), sets.test.len()), (100, 10), "{form:?}");
        }
    }
}
