//! `DataError`: everything that can go wrong reading, checking, batching or fetching data.

use std::fmt;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::idx::{Dims, IdxError};

/// The crate's error type. Each variant about a file names it (or them), and its `Display`
/// is one line meant for the end user, saying what was expected and what was found.
#[derive(Debug)]
#[non_exhaustive]
pub enum DataError {
    /// A file or directory could not be read or written.
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the operating system reported.
        source: io::Error,
    },
    /// A gzip file's compressed stream is damaged (bad data or checksum) or cut short.
    Gzip {
        /// The file.
        path: PathBuf,
        /// What the gzip decoder reported; kind `UnexpectedEof` when the stream is cut short.
        source: io::Error,
    },
    /// A file is not a valid IDX file.
    Idx {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: IdxError,
    },
    /// A file's decompressed SHA-256 is not the published MNIST one.
    Checksum {
        /// The file.
        path: PathBuf,
        /// The expected digest, lowercase hex.
        expected: String,
        /// The digest of the decompressed file, lowercase hex.
        got: String,
    },
    /// An IDX file's header has the wrong rank for its role (images need rank 2 or more,
    /// labels rank 1); checked before the payload is read.
    BadShape {
        /// The file.
        path: PathBuf,
        /// Its dimensions.
        dims: Vec<usize>,
        /// What was expected, e.g. `"a label file needs exactly 1 dimension, count"`.
        expected: &'static str,
    },
    /// The image and label files hold different numbers of samples.
    CountMismatch {
        /// The image file.
        images: PathBuf,
        /// Number of images in it.
        image_count: usize,
        /// The label file.
        labels: PathBuf,
        /// Number of labels in it.
        label_count: usize,
    },
    /// The training and test images have different shapes.
    DimsMismatch {
        /// The training image file.
        train: PathBuf,
        /// Its per-sample dimensions.
        train_dims: Vec<usize>,
        /// The test image file.
        test: PathBuf,
        /// Its per-sample dimensions.
        test_dims: Vec<usize>,
    },
    /// Inferring the class count: a class below the largest label has no sample in either
    /// set, while the sets are large enough for that to be suspicious (see
    /// [`load_with_classes`](crate::load_with_classes)).
    LabelGap {
        /// The label file holding the offending label.
        path: PathBuf,
        /// The label's index in that file (0 = first).
        index: usize,
        /// The offending label: the smallest one above the empty classes.
        label: usize,
        /// The classes without a sample, all below `label`.
        empty: Range<usize>,
        /// The class count that accepts these labels: the largest label plus one.
        classes: usize,
    },
    /// Inferring the class count: the largest label occurs exactly once, while the sets are
    /// large enough for that to be suspicious (see
    /// [`load_with_classes`](crate::load_with_classes)).
    LoneLabel {
        /// The label file holding it.
        path: PathBuf,
        /// Its index in that file (0 = first).
        index: usize,
        /// The label (the largest of both sets).
        label: usize,
        /// Training and test labels together.
        samples: usize,
    },
    /// A label is not below the class count given.
    LabelOutOfRange {
        /// The label file holding it.
        path: PathBuf,
        /// Its index in that file (0 = first).
        index: usize,
        /// The label.
        label: usize,
        /// The class count given.
        classes: usize,
    },
    /// A class count of 0 was given.
    ZeroClasses,
    /// No data directory holds the MNIST files.
    NotFound {
        /// Every directory (or file) that was looked at, in order.
        looked: Vec<PathBuf>,
    },
    /// A file could not be downloaded from any mirror.
    Fetch {
        /// The file name, e.g. `train-images-idx3-ubyte.gz`.
        file: String,
        /// One `"url: reason"` entry per mirror tried.
        attempts: Vec<String>,
    },
    /// A value passed to this crate is unusable (batch size 0, inconsistent lengths,
    /// a damaged batcher state…).
    Invalid {
        /// What is wrong.
        what: String,
    },
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Self::Gzip { path, source } => write_gzip(f, path, source),
            Self::Idx { path, source } => write!(f, "{}: {source}", path.display()),
            Self::Checksum {
                path,
                expected,
                got,
            } => write_checksum(f, path, expected, got),
            Self::BadShape {
                path,
                dims,
                expected,
            } => write_bad_shape(f, path, dims, expected),
            Self::CountMismatch {
                images,
                image_count,
                labels,
                label_count,
            } => write_count_mismatch(f, images, *image_count, labels, *label_count),
            Self::DimsMismatch {
                train,
                train_dims,
                test,
                test_dims,
            } => write_dims_mismatch(f, train, train_dims, test, test_dims),
            Self::LabelGap {
                path,
                index,
                label,
                empty,
                classes,
            } => write_label_gap(f, path, *index, *label, empty, *classes),
            Self::LoneLabel {
                path,
                index,
                label,
                samples,
            } => write_lone_label(f, path, *index, *label, *samples),
            Self::LabelOutOfRange {
                path,
                index,
                label,
                classes,
            } => write_label_out_of_range(f, path, *index, *label, *classes),
            Self::ZeroClasses => f.write_str(
                "a class count of 0 cannot hold any label: labels are class indices 0 to N−1, so N must be at least 1",
            ),
            Self::NotFound { looked } => write_not_found(f, looked),
            Self::Fetch { file, attempts } => write_fetch(f, file, attempts),
            Self::Invalid { what } => f.write_str(what),
        }
    }
}

/// [`DataError::Gzip`]: a stream cut short says the file is incomplete, any other failure
/// that it is damaged.
fn write_gzip(f: &mut fmt::Formatter<'_>, path: &Path, source: &io::Error) -> fmt::Result {
    if source.kind() == io::ErrorKind::UnexpectedEof {
        write!(
            f,
            "{}: the gzip stream ends early, before its end-of-stream trailer (decoder: {source}); \
             the file is incomplete, fetch or copy it again",
            path.display()
        )
    } else {
        write!(
            f,
            "{}: the gzip stream is damaged (decoder: {source}); fetch or copy the file again",
            path.display()
        )
    }
}

/// [`DataError::Checksum`]: the digest found and the one expected.
fn write_checksum(
    f: &mut fmt::Formatter<'_>,
    path: &Path,
    expected: &str,
    got: &str,
) -> fmt::Result {
    write!(
        f,
        "{}: SHA-256 of the decompressed data is {got}, expected {expected} \
         (the file is damaged or is not the original MNIST file; skip verification to load other data)",
        path.display()
    )
}

/// [`DataError::BadShape`]: what the file's role needs and the dimensions its header has.
fn write_bad_shape(
    f: &mut fmt::Formatter<'_>,
    path: &Path,
    dims: &[usize],
    expected: &str,
) -> fmt::Result {
    write!(
        f,
        "{}: {expected}, but its header has {}: {}",
        path.display(),
        dims.len(),
        Dims(dims)
    )
}

/// [`DataError::CountMismatch`]: each file with its number of samples.
fn write_count_mismatch(
    f: &mut fmt::Formatter<'_>,
    images: &Path,
    image_count: usize,
    labels: &Path,
    label_count: usize,
) -> fmt::Result {
    write!(
        f,
        "{} holds {image_count} images but {} holds {label_count} labels",
        images.display(),
        labels.display()
    )
}

/// [`DataError::DimsMismatch`]: each image file with its per-sample dimensions.
fn write_dims_mismatch(
    f: &mut fmt::Formatter<'_>,
    train: &Path,
    train_dims: &[usize],
    test: &Path,
    test_dims: &[usize],
) -> fmt::Result {
    write!(
        f,
        "training images in {} are {} but test images in {} are {} (both sets need one sample shape)",
        train.display(),
        Dims(train_dims),
        test.display(),
        Dims(test_dims)
    )
}

/// [`DataError::LabelGap`]: the label, the classes it skips and the `--classes` that accepts
/// them.
fn write_label_gap(
    f: &mut fmt::Formatter<'_>,
    path: &Path,
    index: usize,
    label: usize,
    empty: &Range<usize>,
    classes: usize,
) -> fmt::Result {
    write!(
        f,
        "{}: label {label} at index {index} skips ",
        path.display()
    )?;
    if empty.len() == 1 {
        write!(f, "class {}", empty.start)?;
    } else {
        write!(f, "classes {} to {}", empty.start, empty.end - 1)?;
    }
    write!(
        f,
        ", which no training or test label uses (a stray label?); \
         if the gap is intended, `--classes {classes}` accepts it"
    )
}

/// [`DataError::LoneLabel`]: the label, how many labels there are and the `--classes` that
/// accepts it.
fn write_lone_label(
    f: &mut fmt::Formatter<'_>,
    path: &Path,
    index: usize,
    label: usize,
    samples: usize,
) -> fmt::Result {
    write!(
        f,
        "{}: label {label} at index {index} is the only sample of class {label} among \
         {samples} training and test labels (a stray label?); if the class is intended, \
         `--classes {}` accepts it",
        path.display(),
        label + 1
    )
}

/// [`DataError::LabelOutOfRange`]: the label and the range the class count allows.
fn write_label_out_of_range(
    f: &mut fmt::Formatter<'_>,
    path: &Path,
    index: usize,
    label: usize,
    classes: usize,
) -> fmt::Result {
    write!(
        f,
        "{}: label {label} at index {index} is out of range for {classes} classes \
         (expected 0 to {})",
        path.display(),
        classes.saturating_sub(1)
    )
}

/// [`DataError::NotFound`]: every place looked in, comma-separated, and how to get the files.
fn write_not_found(f: &mut fmt::Formatter<'_>, looked: &[PathBuf]) -> fmt::Result {
    f.write_str("MNIST files not found (looked in ")?;
    for (i, p) in looked.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{}", p.display())?;
    }
    f.write_str("); run `manabi data fetch` to download them")
}

/// [`DataError::Fetch`]: the file and each mirror's failure, or that no mirror was given.
fn write_fetch(f: &mut fmt::Formatter<'_>, file: &str, attempts: &[String]) -> fmt::Result {
    write!(f, "could not download {file}")?;
    if attempts.is_empty() {
        f.write_str(": no mirror given")
    } else {
        write!(f, " from any mirror: {}", attempts.join("; "))
    }
}

// The cause is part of the `Display` line (the one-line message is what users see), so
// `source()` stays `None` and reporters that walk the chain don't print it twice; the
// variants' fields give programmatic access to it.
impl core::error::Error for DataError {}
