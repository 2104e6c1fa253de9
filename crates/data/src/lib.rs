//! manabi-data: IDX files (raw or gzip), MNIST with checksums, minibatches and downloads.
//!
//! - [`idx`]: [`parse_idx`] / [`read_idx`] read the IDX format strictly (magic, element type
//!   `0x08`, rank 1 ..= 4, nonzero dimensions, exact payload length) and bound every
//!   allocation by what the header announces; gzip is recognised by its magic bytes, and a
//!   damaged or cut-short stream is reported as such ([`DataError::Gzip`]).
//! - [`mnist`]: [`find_data_dir`] (flag, then `$MANABI_DATA`, then `./data/mnist`),
//!   [`load`] the four MNIST files with SHA-256 checks ([`Verify`]) or any IDX data set,
//!   [`load_dataset`] for one image/label pair. Each file's rank is judged from its header
//!   before its payload: images need 2 to 4 dimensions (count first), labels exactly 1.
//!   Samples stay one contiguous buffer of bytes (a quarter of the memory traffic of `f32`);
//!   they become values `byte / 255` in `[0, 1]` as `f32` or `f64` when copied out
//!   ([`Dataset::copy_rows`], minibatches), or become compressed sparse rows of their
//!   nonzeros ([`Dataset::to_sparse`]).
//! - Classes: [`load`] infers the count (largest label + 1) but refuses labels that look
//!   like they hold a stray one, a gap or a lone largest label once the most common class
//!   has [`STRAY_MIN_SAMPLES`] samples ([`DataError::LabelGap`], [`DataError::LoneLabel`]);
//!   [`load_with_classes`] takes the count instead (`--classes N` on the command line),
//!   checks only that every label is below it ([`DataError::LabelOutOfRange`]), and with
//!   `None` is [`load`].
//! - [`batch`]: [`Batcher`] draws minibatches ([`Sampling::Random`] as in the book, or
//!   [`Sampling::EpochShuffle`]) into caller-owned buffers with the caller's
//!   [`manabi_tensor::Rng`], and saves/restores its position for checkpoints; [`gather`]
//!   copies chosen samples, [`gather_rows`] chosen compressed rows.
//! - [`fetch`](mod@fetch): [`fetch()`] downloads the files from [`MIRRORS`], verifies them and
//!   writes them atomically.
//!
//! # Example
//! ```
//! use manabi_data::{Batcher, Dataset, Sampling};
//! use manabi_tensor::Rng;
//!
//! // Six 2×2 samples (normally: `manabi_data::load(&dir, Verify::Mnist)?.train`).
//! let data = Dataset::new(vec![0.5; 6 * 4], vec![2, 2], vec![0, 1, 2, 0, 1, 2])?;
//! let mut batcher = Batcher::new(Sampling::EpochShuffle, 4, data.len())?;
//! let mut rng = Rng::new(42);
//! // Buffers sized once for the largest batch, reused for every step.
//! let (mut x, mut labels) = (vec![0.0; 4 * data.features()], vec![0; 4]);
//! assert_eq!(batcher.next_batch(&mut rng, &data, &mut x, &mut labels), 4);
//! assert_eq!(batcher.next_batch(&mut rng, &data, &mut x, &mut labels), 2); // end of epoch
//! assert_eq!(batcher.epochs(), 1);
//! # Ok::<(), manabi_data::DataError>(())
//! ```
//!
//! All errors are [`DataError`], whose one-line `Display` names the file concerned.
//!
//! # Dependencies
//! - `manabi-tensor`: the seeded [`manabi_tensor::Rng`] that drives batch sampling.
//! - `flate2`: gzip decompression (the canonical MNIST files are `.gz`).
//! - `sha2`: SHA-256 of the decompressed files, compared with the published digests.
//! - `ureq`: the HTTP(S) client used by [`fetch()`] (blocking, small, rustls).
//! - dev: `tiny_http` serves files on 127.0.0.1 in the fetch test (tests never go online);
//!   `proptest` feeds arbitrary and mutated bytes to the IDX parser.
//!
//! # Features
//! None: this crate needs `std` (files, network).
//!
//! MSRV: Rust 1.89 (see `Cargo.toml`).
#![forbid(unsafe_code)]

pub mod batch;
mod error;
pub mod fetch;
pub mod idx;
pub mod mnist;

pub use batch::{Batcher, BatcherState, Sampling, gather, gather_rows};
pub use error::DataError;
pub use fetch::{FetchEvent, MIRRORS, fetch, fetch_with_agent};
pub use idx::{Idx, IdxError, parse_idx, read_idx};
pub use mnist::{
    Dataset, MNIST_FILES, MnistFile, STRAY_MIN_SAMPLES, TrainTest, Verify, find_data_dir, load,
    load_dataset, load_with_classes, locate,
};
