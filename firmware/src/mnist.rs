//! MNIST on the device: the book's network, samples streamed from the host, the confusion matrix.
//!
//! The device never holds the data set: a batch of images is read as bytes into a small
//! buffer, converted into the network's input rows (`pixel / 255`, as `manabi-data` does on
//! the host) and dropped. Files are the raw IDX files (`gzip -dc` of the published `.gz`).

use crate::idx::IdxReader;
use crate::{Error, println};
use manabi_layers::{Batch, BatchSource, Input, Mode, Network, Shape, SparseBatch, Spec, argmax};
use manabi_matmul::Gemm;

/// The book's network after its 784 inputs ([`INPUT`]): 50 hidden ReLU units, 10 classes.
pub const LAYERS: [Spec; 3] = [Spec::Affine(50), Spec::Relu, Spec::Affine(CLASSES)];
/// One image as the network's input: a flat row of [`PIXELS`] values.
pub const INPUT: Shape = Shape::flat(PIXELS);
/// Pixels per image (28×28).
pub const PIXELS: usize = 784;
/// Digits.
pub const CLASSES: usize = 10;

/// The training images, raw IDX.
pub const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
/// The training labels, raw IDX.
pub const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
/// The test images, raw IDX.
pub const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
/// The test labels, raw IDX.
pub const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

/// Images and their labels read in step, in file order.
#[derive(Debug)]
pub struct Stream {
    images: IdxReader,
    labels: IdxReader,
    labels_name: &'static str,
    left: usize,
}

impl Stream {
    /// Opens an image file and its label file in `dir`; at most `limit` samples are read.
    pub fn open(
        dir: &str,
        images: &'static str,
        labels: &'static str,
        limit: usize,
    ) -> Result<Self, Error> {
        let image_file = IdxReader::open(dir, images, 3)?;
        let label_file = IdxReader::open(dir, labels, 1)?;
        if image_file.record_len() != PIXELS {
            return Err(Error::Idx {
                name: images,
                what: "images are not 28x28",
            });
        }
        if label_file.count() != image_file.count() {
            return Err(Error::Idx {
                name: labels,
                what: "label count differs from the image count",
            });
        }
        Ok(Self {
            left: image_file.count().min(limit),
            images: image_file,
            labels: label_file,
            labels_name: labels,
        })
    }

    /// Samples not yet read.
    pub fn left(&self) -> usize {
        self.left
    }

    /// Reads the next samples, as many as `labels` holds (fewer at the end): their pixels into
    /// the front of `pixels`, their labels into `labels`. Returns how many were read.
    pub fn next(&mut self, pixels: &mut [u8], labels: &mut [usize]) -> Result<usize, Error> {
        let n = labels.len().min(self.left).min(pixels.len() / PIXELS);
        self.images.read(&mut pixels[..n * PIXELS])?;
        let mut raw = [0u8; 64];
        let mut done = 0;
        while done < n {
            let k = (n - done).min(raw.len());
            self.labels.read(&mut raw[..k])?;
            for (l, &b) in labels[done..done + k].iter_mut().zip(&raw[..k]) {
                if usize::from(b) >= CLASSES {
                    return Err(Error::Idx {
                        name: self.labels_name,
                        what: "label out of range",
                    });
                }
                *l = usize::from(b);
            }
            done += k;
        }
        self.left -= n;
        Ok(n)
    }
}

/// Pixels as the network's input: `byte / 255`, the host's conversion, so both see the same
/// values.
pub fn to_input(pixels: &[u8], input: &mut [f32]) {
    for (x, &b) in input.iter_mut().zip(pixels) {
        *x = f32::from(b) / 255.0;
    }
}

/// The value of each pixel byte, as [`to_input`] computes it (`b / 255` in `f32`).
pub fn pixel_values() -> [f32; 256] {
    core::array::from_fn(|b| f32::from(b as u8) / 255.0)
}

/// Room for one batch as compressed sparse rows (`manabi_tensor::csr_from_bytes`): the
/// first layer then reads only the nonzero pixels, bit for bit the dense result with the
/// Naive backend. `offsets` holds `batch + 1` entries; `indices` and `values` as many
/// nonzeros as the batch may have (a batch with more takes the dense path).
pub struct SparseRows<'a> {
    /// Row starts.
    pub offsets: &'a mut [u32],
    /// Column of each nonzero.
    pub indices: &'a mut [u32],
    /// Value of each nonzero.
    pub values: &'a mut [f32],
    /// [`pixel_values`].
    pub table: [f32; 256],
}

impl SparseRows<'_> {
    /// The first `n` images of `pixels` as compressed rows, or `None` if their nonzeros do
    /// not fit (or `n` is not the batch the offsets were made for).
    pub fn rows(&mut self, pixels: &[u8], n: usize) -> Option<manabi_tensor::Csr<'_, f32>> {
        let offsets = self.offsets.get_mut(..n + 1)?;
        manabi_tensor::csr_from_bytes(
            &pixels[..n * PIXELS],
            PIXELS,
            &self.table,
            offsets,
            self.indices,
            self.values,
        )
    }
}

/// The training set streamed from the host as the training loop's batches: in file order, as
/// many images at a time as `labels` holds, read as compressed rows when `sparse` is given and
/// their nonzeros fit (else converted into the network's input rows), starting over at the
/// end of the file (the next epoch).
pub struct StreamBatches<'b> {
    dir: &'b str,
    limit: usize,
    stream: Stream,
    pixels: &'b mut [u8],
    labels: &'b mut [usize],
    sparse: Option<SparseRows<'b>>,
    /// Batches handed out, and those of them read as sparse rows.
    pub steps: (usize, usize),
}

impl<'b> StreamBatches<'b> {
    /// The first `limit` training images of `dir`, read into `pixels` and `labels`.
    ///
    /// # Errors
    /// The files cannot be opened, or are not MNIST's.
    pub fn open(
        dir: &'b str,
        limit: usize,
        (pixels, labels): (&'b mut [u8], &'b mut [usize]),
        sparse: Option<SparseRows<'b>>,
    ) -> Result<Self, Error> {
        Ok(Self {
            dir,
            limit,
            stream: Stream::open(dir, TRAIN_IMAGES, TRAIN_LABELS, limit)?,
            pixels,
            labels,
            sparse,
            steps: (0, 0),
        })
    }

    /// Images in one pass over the file.
    pub fn per_epoch(&self) -> Result<usize, Error> {
        Ok(Stream::open(self.dir, TRAIN_IMAGES, TRAIN_LABELS, self.limit)?.left())
    }

    /// The buffers back, for the test set.
    pub fn into_buffers(self) -> (&'b mut [u8], &'b mut [usize], Option<SparseRows<'b>>) {
        (self.pixels, self.labels, self.sparse)
    }
}

impl BatchSource<f32, Error> for StreamBatches<'_> {
    fn next(&mut self, _done: u64, net: &mut Network<'_, f32>) -> Result<Batch<'_, f32>, Error> {
        if self.stream.left() == 0 {
            self.stream = Stream::open(self.dir, TRAIN_IMAGES, TRAIN_LABELS, self.limit)?;
        }
        let n = self.stream.next(self.pixels, self.labels)?;
        self.steps.0 += 1;
        let input = match self.sparse.as_mut().and_then(|s| s.rows(self.pixels, n)) {
            Some(x) => {
                self.steps.1 += 1;
                Input::Sparse(SparseBatch::rows_only(x))
            }
            None => {
                to_input(&self.pixels[..n * PIXELS], net.input_mut(n));
                Input::Arena(n)
            }
        };
        Ok(Batch {
            input,
            labels: &self.labels[..n],
        })
    }
}

/// FNV-1a (64-bit) offset basis and prime.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Counts of (true label, predicted label), and a digest of the predictions in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Confusion {
    /// `counts[label][predicted]`.
    pub counts: [[u32; CLASSES]; CLASSES],
    /// FNV-1a over the predicted labels, one byte each, in test-set order: equal digests mean
    /// equal predictions image by image, which the matrix alone does not show.
    pub digest: u64,
}

impl Default for Confusion {
    fn default() -> Self {
        Self {
            counts: [[0; CLASSES]; CLASSES],
            digest: FNV_OFFSET,
        }
    }
}

impl Confusion {
    /// Records one prediction.
    pub fn add(&mut self, label: usize, predicted: usize) {
        self.counts[label][predicted] += 1;
        self.digest = (self.digest ^ predicted as u64).wrapping_mul(FNV_PRIME);
    }

    /// Correct predictions (the diagonal).
    pub fn correct(&self) -> u32 {
        (0..CLASSES).map(|k| self.counts[k][k]).sum()
    }

    /// All predictions.
    pub fn total(&self) -> u32 {
        self.counts.iter().flatten().sum()
    }

    /// Prints the matrix in the layout of `manabi eval`, so the host can compare the two.
    pub fn print(&self) {
        println!("confusion matrix (rows: true label, columns: predicted):");
        println!(
            "      {:>6}{:>6}{:>6}{:>6}{:>6}{:>6}{:>6}{:>6}{:>6}{:>6}",
            0, 1, 2, 3, 4, 5, 6, 7, 8, 9
        );
        for (k, r) in self.counts.iter().enumerate() {
            println!(
                "{:>6}{:>6}{:>6}{:>6}{:>6}{:>6}{:>6}{:>6}{:>6}{:>6}{:>6}",
                k, r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9]
            );
        }
    }
}

/// Predicts every test image in `dir` (as many at a time as `labels` holds and the network's
/// forward rows allow) and counts the outcomes; with `sparse`, each batch whose nonzeros fit
/// is read as compressed rows (the same predictions, fewer instructions).
pub fn evaluate(
    net: &mut Network<'_, f32>,
    mm: &impl Gemm<f32>,
    dir: &str,
    pixels: &mut [u8],
    labels: &mut [usize],
    mut sparse: Option<&mut SparseRows<'_>>,
) -> Result<Confusion, Error> {
    let rows = labels.len().min(net.plan().eval_rows());
    let mut test = Stream::open(dir, TEST_IMAGES, TEST_LABELS, usize::MAX)?;
    let mut confusion = Confusion::default();
    while test.left() > 0 {
        let n = test.next(pixels, &mut labels[..rows])?;
        let logits = match sparse.as_deref_mut().and_then(|s| s.rows(pixels, n)) {
            Some(x) => net.forward(mm, Input::Sparse(SparseBatch::rows_only(x)), Mode::Eval),
            None => {
                to_input(&pixels[..n * PIXELS], net.input_mut(n));
                net.forward(mm, Input::Arena(n), Mode::Eval)
            }
        };
        for (row, &label) in logits.chunks_exact(CLASSES).zip(&labels[..n]) {
            confusion.add(label, argmax(row));
        }
    }
    Ok(confusion)
}

/// Prints one figure for the host to collect: `metric <name> <value>`.
#[macro_export]
macro_rules! metric {
    ($name:literal, $value:expr) => {
        $crate::println!("metric {} {}", $name, $value)
    };
}
