//! Data sets from IDX image/label pairs, MNIST's four files with their SHA-256 digests, and where to find them.

use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use manabi_tensor::{CsrBuf, Real};

use crate::DataError;
use crate::idx::{Idx, Role, read_idx_digest};

/// One of the four MNIST files: its name (without `.gz`) and the SHA-256 of its
/// decompressed bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MnistFile {
    /// File name without the `.gz` suffix, e.g. `train-images-idx3-ubyte`.
    pub name: &'static str,
    /// SHA-256 of the decompressed file, lowercase hex.
    pub sha256: &'static str,
}

/// Training images, 60000×28×28.
pub const TRAIN_IMAGES: MnistFile = MnistFile {
    name: "train-images-idx3-ubyte",
    sha256: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
};
/// Training labels, 60000.
pub const TRAIN_LABELS: MnistFile = MnistFile {
    name: "train-labels-idx1-ubyte",
    sha256: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
};
/// Test images, 10000×28×28.
pub const TEST_IMAGES: MnistFile = MnistFile {
    name: "t10k-images-idx3-ubyte",
    sha256: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
};
/// Test labels, 10000.
pub const TEST_LABELS: MnistFile = MnistFile {
    name: "t10k-labels-idx1-ubyte",
    sha256: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
};
/// All four files, in the order train images, train labels, test images, test labels.
pub const MNIST_FILES: [MnistFile; 4] = [TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS];

/// The environment variable naming the data directory.
pub const DATA_ENV: &str = "MANABI_DATA";
/// The data directory used when neither a flag nor [`DATA_ENV`] names one (relative to the
/// working directory).
pub const DEFAULT_DATA_DIR: &str = "data/mnist";

/// Whether [`load`] checks the MNIST digests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verify {
    /// Compare each file's decompressed SHA-256 with the published MNIST digest.
    Mnist,
    /// Check nothing beyond the IDX format, to load any other IDX data set.
    Skip,
}

/// A labelled data set held in memory: one contiguous buffer of samples and one label per
/// sample.
///
/// Samples read from IDX files stay **bytes** (47 MB for MNIST's training set instead of
/// 188 MB as `f32`): each byte `b` stands for the value `b / 255` (an `f32` division, as the
/// book's `x.astype(np.float32) / 255.0`), computed when samples are copied out, which is
/// exact and cheaper than reading four times as many bytes from memory. Data sets built from
/// values ([`Dataset::new`]) keep them as given.
///
/// The fields are private so that the lengths always agree; the constructors check them.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    samples: Samples,
    labels: Vec<usize>,
    len: usize,
    features: usize,
    image_dims: Vec<usize>,
}

/// How a [`Dataset`] stores its samples.
#[derive(Clone, Debug, PartialEq)]
enum Samples {
    /// Byte `b` is the value `b / 255`.
    Bytes(Vec<u8>),
    /// The values themselves.
    Values(Vec<f32>),
}

/// The value a pixel byte stands for: `b / 255`, rounded once, so 0 → 0.0 and 255 → 1.0.
#[inline]
fn byte_value(b: u8) -> f32 {
    f32::from(b) / 255.0
}

/// Nonzero bytes in `b`, counted in blocks of 255 into a byte-wide sum (no block can overflow
/// it), which the compiler vectorises: several times faster than a plain `filter().count()`.
fn count_nonzero(b: &[u8]) -> usize {
    b.chunks(255)
        .map(|block| usize::from(block.iter().fold(0u8, |n, &x| n + u8::from(x != 0))))
        .sum()
}

/// `byte_value` for every byte, as `T`: a table built once, so that each nonzero pixel costs a
/// load instead of a division.
fn byte_values<T: Real>() -> [T; 256] {
    core::array::from_fn(|b| T::from_f32(byte_value(b as u8)))
}

/// Issues a prefetch for every 64-byte cache line `data` touches (x86-64; elsewhere nothing).
#[inline]
fn prefetch<E>(data: &[E]) {
    #[cfg(target_arch = "x86_64")]
    {
        let line = (64 / size_of::<E>().max(1)).max(1);
        for chunk in data.chunks(line) {
            safe_arch::prefetch_t0(&chunk[0]);
        }
        // A row that does not start on a line boundary reaches into one more line.
        if let Some(last) = data.last() {
            safe_arch::prefetch_t0(last);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = data;
}

/// Copies `src` into `dst` as `T` (lengths equal).
fn convert_values<T: Real>(src: &[f32], dst: &mut [T]) {
    for (d, &v) in dst.iter_mut().zip(src) {
        *d = T::from_f32(v);
    }
}

/// Copies the values bytes `src` stand for into `dst` as `T` (lengths equal).
fn convert_bytes<T: Real>(src: &[u8], dst: &mut [T]) {
    for (d, &b) in dst.iter_mut().zip(src) {
        *d = T::from_f32(byte_value(b));
    }
}

impl Dataset {
    /// A data set from `len = labels.len()` samples of shape `image_dims`, stored row-major
    /// in `values` (`len × features` values, `features` = product of `image_dims`).
    ///
    /// # Errors
    /// [`DataError::Invalid`] if `image_dims` is empty or holds a zero, if
    /// `values.len() != labels.len() × features`, or if there are no samples.
    pub fn new(
        values: Vec<f32>,
        image_dims: Vec<usize>,
        labels: Vec<usize>,
    ) -> Result<Self, DataError> {
        Self::build(Samples::Values(values), image_dims, labels)
    }

    /// A data set of byte samples (pixels), each byte `b` standing for the value `b / 255`;
    /// otherwise as [`Dataset::new`].
    ///
    /// # Errors
    /// As [`Dataset::new`].
    pub fn from_bytes(
        bytes: Vec<u8>,
        image_dims: Vec<usize>,
        labels: Vec<usize>,
    ) -> Result<Self, DataError> {
        Self::build(Samples::Bytes(bytes), image_dims, labels)
    }

    fn build(
        samples: Samples,
        image_dims: Vec<usize>,
        labels: Vec<usize>,
    ) -> Result<Self, DataError> {
        let invalid = |what: String| Err(DataError::Invalid { what });
        if image_dims.is_empty() || image_dims.contains(&0) {
            return invalid(format!(
                "sample dimensions {image_dims:?} must be nonempty and nonzero"
            ));
        }
        let Some(features) = image_dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) else {
            return invalid(format!("sample dimensions {image_dims:?} overflow"));
        };
        let len = labels.len();
        if len == 0 {
            return invalid("a data set needs at least one sample".into());
        }
        let stored = match &samples {
            Samples::Bytes(b) => b.len(),
            Samples::Values(v) => v.len(),
        };
        if len.checked_mul(features) != Some(stored) {
            return invalid(format!(
                "{stored} values do not make {len} samples of {features} features"
            ));
        }
        Ok(Self {
            samples,
            labels,
            len,
            features,
            image_dims,
        })
    }

    /// Builds a data set from an image IDX (rank ≥ 2: `n × h × w` or `n × features`) and a
    /// label IDX (rank 1: `n`); the paths are for error messages.
    fn from_idx(
        images: Idx,
        images_path: &Path,
        labels: Idx,
        labels_path: &Path,
    ) -> Result<Self, DataError> {
        // The reader checked both ranks already; the same rules, kept here so that this
        // function is correct on its own.
        for (idx, path, role) in [
            (&images, images_path, Role::Images),
            (&labels, labels_path, Role::Labels),
        ] {
            if let Err(expected) = role.check(&idx.dims) {
                return Err(DataError::BadShape {
                    path: path.to_path_buf(),
                    dims: idx.dims.clone(),
                    expected,
                });
            }
        }
        if images.dims[0] != labels.dims[0] {
            return Err(DataError::CountMismatch {
                images: images_path.to_path_buf(),
                image_count: images.dims[0],
                labels: labels_path.to_path_buf(),
                label_count: labels.dims[0],
            });
        }
        let image_dims = images.dims[1..].to_vec();
        let labels = labels.data.iter().map(|&l| usize::from(l)).collect();
        Self::from_bytes(images.data, image_dims, labels)
    }

    /// Keeps only the first `n` samples (all of them if there are fewer): the book's
    /// `x_train[:n]`, for experiments on small training sets.
    ///
    /// # Errors
    /// [`DataError::Invalid`] for `n == 0`: a data set has at least one sample.
    pub fn truncate(&mut self, n: usize) -> Result<(), DataError> {
        if n == 0 {
            return Err(DataError::Invalid {
                what: "a data set needs at least one sample (a limit of 0)".into(),
            });
        }
        let n = n.min(self.len);
        match &mut self.samples {
            Samples::Bytes(b) => b.truncate(n * self.features),
            Samples::Values(v) => v.truncate(n * self.features),
        }
        self.labels.truncate(n);
        self.len = n;
        Ok(())
    }

    /// Copies the values of samples `first ..` into `out` as `T`, as many whole samples as
    /// `out` holds (`out.len() / features`, fewer at the end of the set), and returns how
    /// many were copied. Elements of `out` past them are left as they were.
    ///
    /// # Panics
    /// If `first > len()`.
    pub fn copy_rows<T: Real>(&self, first: usize, out: &mut [T]) -> usize {
        assert!(first <= self.len, "sample {first} of {}", self.len);
        let rows = (out.len() / self.features).min(self.len - first);
        self.convert(first * self.features, &mut out[..rows * self.features]);
        rows
    }

    /// Writes the values stored from element `from` on into `out`, as `T`.
    fn convert<T: Real>(&self, from: usize, out: &mut [T]) {
        let to = from + out.len();
        match &self.samples {
            Samples::Bytes(b) => convert_bytes(&b[from..to], out),
            Samples::Values(v) => convert_values(&v[from..to], out),
        }
    }

    /// Copies sample `i`'s values into `out` (`features` elements) as `T`.
    ///
    /// # Panics
    /// If `i >= len()` or `out.len() != features()`.
    pub fn copy_sample<T: Real>(&self, i: usize, out: &mut [T]) {
        assert_eq!(
            out.len(),
            self.features,
            "one sample has {} values",
            self.features
        );
        // Bounds: `convert` slices the storage, so `i >= len()` panics there.
        self.convert(i * self.features, out);
    }

    /// The whole set as compressed rows, sized exactly (the nonzeros are counted first): for a
    /// first layer that reads sparse rows, so that each batch and each evaluation copies or
    /// reads rows instead of scanning every pixel again. MNIST's 70,000 images hold 10.5
    /// million nonzeros, 84 MB as `f32` with their indices (the bytes are 55 MB).
    ///
    /// # Errors
    /// If the set holds more nonzeros than `u32` offsets can address (2³² ≈ 4 billion).
    pub fn to_sparse<T: Real>(&self) -> manabi_tensor::Result<CsrBuf<T>> {
        let nnz = match &self.samples {
            Samples::Bytes(b) => count_nonzero(b),
            Samples::Values(v) => v.iter().filter(|&&x| x != 0.0).count(),
        };
        let mut out = CsrBuf::with_capacity(self.len, self.features, nnz)?;
        match &self.samples {
            Samples::Bytes(b) => {
                let table = byte_values();
                for row in b.chunks_exact(self.features) {
                    out.push_bytes_row(row, &table);
                }
            }
            Samples::Values(v) => {
                for row in v.chunks_exact(self.features) {
                    for (j, &x) in row.iter().enumerate() {
                        if x != 0.0 {
                            out.push(j, T::from_f32(x));
                        }
                    }
                    out.end_row();
                }
            }
        }
        Ok(out)
    }

    /// The fraction of the stored values that are zero (0.81 for MNIST's training images):
    /// what decides whether the first layer should read the data as sparse rows.
    pub fn zero_fraction(&self) -> f64 {
        let (zeros, all) = match &self.samples {
            Samples::Bytes(b) => (b.len() - count_nonzero(b), b.len()),
            Samples::Values(v) => (v.iter().filter(|&&x| x == 0.0).count(), v.len()),
        };
        zeros as f64 / all.max(1) as f64
    }

    /// Asks the CPU to start loading sample `i` into its caches, so that a copy a little
    /// later does not wait for memory (a hint: nothing on targets without one).
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn prefetch_sample(&self, i: usize) {
        let (from, to) = (i * self.features, (i + 1) * self.features);
        match &self.samples {
            Samples::Bytes(b) => prefetch(&b[from..to]),
            Samples::Values(v) => prefetch(&v[from..to]),
        }
    }

    /// Every sample's values, row-major, in a new buffer (`len × features` values).
    pub fn to_values(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.len * self.features];
        self.copy_rows(0, &mut out);
        out
    }

    /// The bytes of a data set read from IDX files (value = byte / 255), or `None` for one
    /// built from values.
    pub fn bytes(&self) -> Option<&[u8]> {
        match &self.samples {
            Samples::Bytes(b) => Some(b),
            Samples::Values(_) => None,
        }
    }

    /// One label (class index) per sample.
    pub fn labels(&self) -> &[usize] {
        &self.labels
    }

    /// Number of samples (never 0).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always `false`: a data set holds at least one sample. (Present for API symmetry.)
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Values per sample: the product of [`Dataset::image_dims`] (784 for MNIST).
    pub fn features(&self) -> usize {
        self.features
    }

    /// The shape of one sample, e.g. `[28, 28]`.
    pub fn image_dims(&self) -> &[usize] {
        &self.image_dims
    }

    /// The largest label.
    pub fn max_label(&self) -> usize {
        self.labels.iter().copied().max().unwrap_or(0)
    }
}

/// Training and test sets with the number of classes.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainTest {
    /// The training set.
    pub train: Dataset,
    /// The test set.
    pub test: Dataset,
    /// Number of classes: the count given to [`load_with_classes`], else the largest label
    /// in either set plus one (10 for MNIST).
    pub classes: usize,
}

/// Where `name` lives in `dir`: `name.gz` if it exists (that is what `fetch` writes),
/// else `name`, else `None`. Raw and gzip contents are both accepted whatever the name.
pub fn locate(dir: &Path, name: &str) -> Option<PathBuf> {
    let gz = dir.join(format!("{name}.gz"));
    if gz.is_file() {
        return Some(gz);
    }
    let raw = dir.join(name);
    raw.is_file().then_some(raw)
}

/// Whether `dir` holds all four MNIST files (raw or `.gz`).
fn holds_mnist(dir: &Path) -> bool {
    MNIST_FILES.iter().all(|f| locate(dir, f.name).is_some())
}

/// Chooses the data directory: the `--data-dir` flag if given (then only that directory is
/// considered), else the first of `$MANABI_DATA` and `./data/mnist` that holds the four
/// MNIST files.
///
/// # Errors
/// [`DataError::NotFound`] listing every directory looked at; its message says to run
/// `manabi data fetch`.
pub fn find_data_dir(flag: Option<&Path>) -> Result<PathBuf, DataError> {
    find_data_dir_from(flag, env::var_os(DATA_ENV), Path::new(DEFAULT_DATA_DIR))
}

/// [`find_data_dir`] with the environment and default passed in, so tests need not touch
/// the process environment.
fn find_data_dir_from(
    flag: Option<&Path>,
    env_dir: Option<OsString>,
    default: &Path,
) -> Result<PathBuf, DataError> {
    let candidates: Vec<PathBuf> = match flag {
        Some(dir) => vec![dir.to_path_buf()],
        None => env_dir
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .into_iter()
            .chain([default.to_path_buf()])
            .collect(),
    };
    match candidates.iter().find(|d| holds_mnist(d)) {
        Some(dir) => Ok(dir.clone()),
        None => Err(DataError::NotFound { looked: candidates }),
    }
}

/// Lowercase hex of a digest.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// Reads an IDX file for `role` and, if `expected` is given, checks its decompressed SHA-256.
pub(crate) fn read_checked(
    path: &Path,
    role: Role,
    expected: Option<&str>,
) -> Result<Idx, DataError> {
    let (idx, digest) = read_idx_digest(path, role, expected.is_some())?;
    if let (Some(expected), Some(digest)) = (expected, digest) {
        let got = hex(&digest);
        if got != expected {
            return Err(DataError::Checksum {
                path: path.to_path_buf(),
                expected: expected.to_string(),
                got,
            });
        }
    }
    Ok(idx)
}

/// Loads one data set from an image IDX file (rank ≥ 2) and a label IDX file (rank 1),
/// each raw or gzip. No digest is checked.
///
/// # Errors
/// [`DataError::Io`] / [`DataError::Gzip`] / [`DataError::Idx`] for unreadable or malformed
/// files, [`DataError::BadShape`] for wrong ranks (judged from the header, before the
/// payload), [`DataError::CountMismatch`] when the counts differ.
pub fn load_dataset(images: &Path, labels: &Path) -> Result<Dataset, DataError> {
    load_pair(images, None, labels, None)
}

fn load_pair(
    images: &Path,
    images_sha: Option<&str>,
    labels: &Path,
    labels_sha: Option<&str>,
) -> Result<Dataset, DataError> {
    // Labels first: they are small, so a mismatch is reported before the big file is read.
    let label_idx = read_checked(labels, Role::Labels, labels_sha)?;
    let image_idx = read_checked(images, Role::Images, images_sha)?;
    Dataset::from_idx(image_idx, images, label_idx, labels)
}

/// Loads the four MNIST-named files from `dir` (each raw or `.gz`, see [`locate`]) and
/// infers the class count from the labels: `load_with_classes(dir, verify, None)`.
///
/// # Errors
/// As [`load_with_classes`] with `None`.
pub fn load(dir: &Path, verify: Verify) -> Result<TrainTest, DataError> {
    load_with_classes(dir, verify, None)
}

/// The most common class (training and test labels together) must hold at least this many
/// samples before an empty or lone class counts as a stray label when the class count is
/// inferred: below it, a data set is too small to tell a stray label from chance.
pub const STRAY_MIN_SAMPLES: usize = 10;

/// Loads the four MNIST-named files from `dir` (each raw or `.gz`, see [`locate`]) with
/// `classes` classes, or with the class count inferred from the labels when `None`.
///
/// With [`Verify::Mnist`] each file's decompressed SHA-256 must match the published
/// digest; with [`Verify::Skip`] any IDX data set stored under these names loads, as long
/// as training and test samples have the same shape.
///
/// # Classes
/// With `Some(n)` every label must be below `n` (`n` may exceed the largest label: some
/// classes then have no sample). With `None` the count is the largest label plus one, and
/// the labels of both sets together are refused when they look like they hold a stray
/// label, that is when the most common class holds at least [`STRAY_MIN_SAMPLES`] samples
/// (so small synthetic sets always load) and
/// - **a gap**: some class below the largest label has no sample in either set (a stray
///   `200` among digits leaves 10 to 199 empty), reported at the first occurrence of the
///   smallest label above the gap; or
/// - **a lone outlier**: the largest label, if not 0, occurs exactly once in both sets (a
///   single `10` among digits).
///
/// Either error names the label file, the label's index in it and its value, and says that
/// an explicit count accepts the labels (`--classes N` on the command line).
///
/// # Errors
/// [`DataError::ZeroClasses`] for `Some(0)` (before any file is read);
/// [`DataError::NotFound`] if a file is missing (listing the names looked for),
/// [`DataError::Checksum`] on a digest mismatch, [`DataError::DimsMismatch`] when training
/// and test samples differ in shape, the errors of [`load_dataset`], then
/// [`DataError::LabelOutOfRange`] for a label `≥ n`, or [`DataError::LabelGap`] /
/// [`DataError::LoneLabel`] when the inferred count is refused.
pub fn load_with_classes(
    dir: &Path,
    verify: Verify,
    classes: Option<usize>,
) -> Result<TrainTest, DataError> {
    if classes == Some(0) {
        return Err(DataError::ZeroClasses);
    }
    let mut paths = Vec::with_capacity(4);
    for f in &MNIST_FILES {
        match locate(dir, f.name) {
            Some(p) => paths.push(p),
            None => {
                return Err(DataError::NotFound {
                    looked: vec![dir.join(format!("{}.gz", f.name)), dir.join(f.name)],
                });
            }
        }
    }
    let sha = |f: &MnistFile| (verify == Verify::Mnist).then_some(f.sha256);
    // The test set decompresses and hashes on a second thread while the training set does
    // on this one: loading is most of a short run's start-up.
    let (train, test) = std::thread::scope(|scope| {
        let test =
            scope.spawn(|| load_pair(&paths[2], sha(&TEST_IMAGES), &paths[3], sha(&TEST_LABELS)));
        let train = load_pair(&paths[0], sha(&TRAIN_IMAGES), &paths[1], sha(&TRAIN_LABELS));
        (
            train,
            test.join().unwrap_or_else(|e| std::panic::resume_unwind(e)),
        )
    });
    let (train, test) = (train?, test?);
    if train.image_dims != test.image_dims {
        return Err(DataError::DimsMismatch {
            train: paths[0].clone(),
            train_dims: train.image_dims,
            test: paths[2].clone(),
            test_dims: test.image_dims,
        });
    }
    let labels = Labels {
        train: (&paths[1], train.labels()),
        test: (&paths[3], test.labels()),
    };
    let classes = match classes {
        Some(n) => labels.check_below(n)?,
        None => labels.infer()?,
    };
    Ok(TrainTest {
        train,
        test,
        classes,
    })
}

/// The training and test labels with their files, for the class-count rules of
/// [`load_with_classes`].
struct Labels<'a> {
    train: (&'a Path, &'a [usize]),
    test: (&'a Path, &'a [usize]),
}

impl Labels<'_> {
    /// Every label with its file and index: training labels first.
    fn all(&self) -> impl Iterator<Item = (&Path, usize, usize)> {
        [self.train, self.test]
            .into_iter()
            .flat_map(|(path, labels)| labels.iter().enumerate().map(move |(i, &l)| (path, i, l)))
    }

    /// The first occurrence of `label`: its file and index.
    fn find(&self, label: usize) -> (PathBuf, usize) {
        self.all()
            .find(|&(_, _, l)| l == label)
            .map(|(p, i, _)| (p.to_path_buf(), i))
            .unwrap_or_default()
    }

    /// `Ok(n)` if every label is below `n`.
    fn check_below(&self, n: usize) -> Result<usize, DataError> {
        match self.all().find(|&(_, _, l)| l >= n) {
            Some((path, index, label)) => Err(DataError::LabelOutOfRange {
                path: path.to_path_buf(),
                index,
                label,
                classes: n,
            }),
            None => Ok(n),
        }
    }

    /// The largest label plus one, unless the labels hold a gap or a lone outlier in a set
    /// large enough to tell (see [`load_with_classes`]).
    fn infer(&self) -> Result<usize, DataError> {
        let max = self.all().map(|(_, _, l)| l).max().unwrap_or(0);
        let mut counts = vec![0usize; max + 1];
        for (_, _, l) in self.all() {
            counts[l] += 1;
        }
        let classes = max + 1;
        if counts.iter().copied().max().unwrap_or(0) < STRAY_MIN_SAMPLES {
            return Ok(classes);
        }
        if let Some(gap) = counts.iter().position(|&c| c == 0) {
            // `max` has a sample, so some label lies above the gap.
            let label = (gap..=max).find(|&l| counts[l] > 0).unwrap_or(max);
            let (path, index) = self.find(label);
            return Err(DataError::LabelGap {
                path,
                index,
                label,
                empty: gap..label,
                classes,
            });
        }
        if max > 0 && counts[max] == 1 {
            let (path, index) = self.find(max);
            return Err(DataError::LoneLabel {
                path,
                index,
                label: max,
                samples: self.train.1.len() + self.test.1.len(),
            });
        }
        Ok(classes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn scratch(name: &str) -> PathBuf {
        let d = env::temp_dir().join(format!("manabi-data-unit-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn data_dir_order_and_not_found_message() {
        let root = scratch("find");
        let good = root.join("good");
        let empty = root.join("empty");
        fs::create_dir_all(&good).unwrap();
        fs::create_dir_all(&empty).unwrap();
        for (i, f) in MNIST_FILES.iter().enumerate() {
            // Mix raw and gz names: both count.
            let name = if i % 2 == 0 {
                format!("{}.gz", f.name)
            } else {
                f.name.to_string()
            };
            fs::write(good.join(name), b"x").unwrap();
        }
        // The environment directory is used when it holds the files…
        let got = find_data_dir_from(None, Some(good.clone().into()), &empty).unwrap();
        assert_eq!(got, good);
        // …and the default when it doesn't.
        let got = find_data_dir_from(None, Some(empty.clone().into()), &good).unwrap();
        assert_eq!(got, good);
        // A flag is authoritative: no fallback to the others.
        let err = find_data_dir_from(Some(&empty), Some(good.clone().into()), &good).unwrap_err();
        assert!(
            matches!(&err, DataError::NotFound { looked } if looked == std::slice::from_ref(&empty))
        );
        // Nothing anywhere: both places are listed with the hint.
        let err = find_data_dir_from(None, Some(empty.clone().into()), &root).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&empty.display().to_string()), "{msg}");
        assert!(msg.contains(&root.display().to_string()), "{msg}");
        assert!(msg.contains("manabi data fetch"), "{msg}");
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn dataset_new_checks_lengths() {
        assert!(Dataset::new(vec![0.0; 6], vec![3], vec![0, 1]).is_ok());
        assert!(Dataset::new(vec![0.0; 5], vec![3], vec![0, 1]).is_err());
        assert!(Dataset::new(vec![], vec![3], vec![]).is_err());
        assert!(Dataset::new(vec![0.0; 6], vec![3, 0], vec![0, 1]).is_err());
        assert!(Dataset::new(vec![0.0; 6], vec![], vec![0, 1]).is_err());
        assert!(Dataset::from_bytes(vec![0; 6], vec![3], vec![0, 1]).is_ok());
        assert!(Dataset::from_bytes(vec![0; 7], vec![3], vec![0, 1]).is_err());
    }

    #[test]
    fn byte_samples_become_the_f32_quotient_by_255() {
        // Every byte: the value is the correctly rounded f32 quotient (as numpy's float32
        // division), which an f64 division rounded to f32 reproduces; 255 is exactly 1.
        let bytes: Vec<u8> = (0..=255).collect();
        let data = Dataset::from_bytes(bytes, vec![4], (0..64).collect()).unwrap();
        let values = data.to_values();
        for (b, v) in values.iter().enumerate() {
            assert_eq!(*v, (b as f64 / 255.0) as f32, "byte {b}");
        }
        assert_eq!(values[255], 1.0);
        // Rows: a buffer of 2.5 samples takes two; the last call gets what is left.
        let mut out = [-1.0f64; 10];
        assert_eq!(data.copy_rows(62, &mut out), 2);
        assert_eq!(
            out[..8],
            values[248..]
                .iter()
                .map(|&v| f64::from(v))
                .collect::<Vec<_>>()[..]
        );
        assert_eq!(out[8..], [-1.0, -1.0]);
        assert_eq!(data.copy_rows(63, &mut out), 1);
        assert_eq!(data.copy_rows(64, &mut out), 0);
        // Value data sets copy their values unchanged.
        let vals = Dataset::new(vec![0.5, -3.0, 7.25, 1e-3], vec![2], vec![0, 1]).unwrap();
        let mut one = [0.0f32; 2];
        vals.copy_sample(1, &mut one);
        assert_eq!(one, [7.25, 1e-3]);
        assert_eq!(vals.bytes(), None);
    }

    #[test]
    fn hex_matches_a_known_digest() {
        // SHA-256("abc") from FIPS 180-2, appendix B.1.
        use sha2::{Digest, Sha256};
        let d: [u8; 32] = Sha256::digest(b"abc").into();
        assert_eq!(
            hex(&d),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
