//! `DataError`: everything that can go wrong reading, checking, batching or fetching data.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::idx::{Dims, IdxError};

/// The crate's error type. Each variant names the file (or files) involved, and its
/// `Display` is one line meant for the end user.
#[derive(Debug)]
#[non_exhaustive]
pub enum DataError {
    /// A file or directory could not be read or written (or a gzip stream is damaged).
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the operating system (or the gzip decoder) reported.
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
    /// An IDX file has the wrong rank for its role (images need rank ≥ 2, labels rank 1).
    BadShape {
        /// The file.
        path: PathBuf,
        /// Its dimensions.
        dims: Vec<usize>,
        /// What was expected, e.g. `"labels must have rank 1 (n)"`.
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
            Self::Idx { path, source } => write!(f, "{}: {source}", path.display()),
            Self::Checksum {
                path,
                expected,
                got,
            } => write!(
                f,
                "{}: SHA-256 of the decompressed data is {got}, expected {expected} \
                 (the file is damaged or is not the original MNIST file; skip verification to load other data)",
                path.display()
            ),
            Self::BadShape {
                path,
                dims,
                expected,
            } => write!(
                f,
                "{}: dimensions {} but {expected}",
                path.display(),
                Dims(dims)
            ),
            Self::CountMismatch {
                images,
                image_count,
                labels,
                label_count,
            } => write!(
                f,
                "{} holds {image_count} images but {} holds {label_count} labels",
                images.display(),
                labels.display()
            ),
            Self::DimsMismatch {
                train,
                train_dims,
                test,
                test_dims,
            } => write!(
                f,
                "training images in {} are {} but test images in {} are {}",
                train.display(),
                Dims(train_dims),
                test.display(),
                Dims(test_dims)
            ),
            Self::NotFound { looked } => {
                f.write_str("MNIST files not found (looked in ")?;
                for (i, p) in looked.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{}", p.display())?;
                }
                f.write_str("); run `manabi data fetch` to download them")
            }
            Self::Fetch { file, attempts } => {
                write!(f, "could not download {file}")?;
                if attempts.is_empty() {
                    f.write_str(": no mirror given")
                } else {
                    write!(f, " from any mirror: {}", attempts.join("; "))
                }
            }
            Self::Invalid { what } => f.write_str(what),
        }
    }
}

// The cause is part of the `Display` line (the one-line message is what users see), so
// `source()` stays `None` and reporters that walk the chain don't print it twice; the
// variants' fields give programmatic access to it.
impl core::error::Error for DataError {}
