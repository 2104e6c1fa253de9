//! manabi-cli's library half: the weights and checkpoint file formats, loadable from bytes.
//!
//! The `manabi` binary (`src/main.rs`) is argument parsing and wiring; what it reads from disk
//! lives here so that the fuzz targets (`fuzz/`) and the integration tests can feed the
//! loaders arbitrary bytes:
//!
//! - [`model`]: `model.safetensors` (`W1`, `b1`, `gamma1`, `running_mean1`, …): [`model::to_safetensors`],
//!   [`model::parse`] / [`model::load`] (every tensor's name, dtype and shape checked, the
//!   first mismatch named), [`model::write_atomic`] (temporary file, fsync, rename).
//! - [`checkpoint`]: `checkpoint.safetensors`: weights, optimizer state, generator and batcher
//!   positions, metrics so far and the run's configuration ([`checkpoint::RunConfig`]), so that
//!   `manabi train --resume DIR` ends byte-identical to an uninterrupted run.
//! - [`stack`]: the layer stack as `--net` text and as file metadata (an MLP keeps the fields
//!   it always had).
//! - [`evaluate`]: whole-set evaluation on several threads.
//! - [`parallel`]: the data-parallel training step (each batch split with a twin network on a
//!   second thread), here so that its test checks the very code `manabi train` runs.
//! - [`digit`]: a picture of a digit (PNG, PGM) prepared as MNIST's were, for `manabi predict`.
//! - [`error`]: [`CliError`], one readable line.
//!
//! Loaders never panic and never allocate more than the input's size justifies: a header
//! declaring sizes larger than the file is refused before anything is sized from it.
//!
//! # Features
//! - `matrixmultiply` (default): the pure-Rust GEMM backend; the binary's default for MLPs.
//! - `gemm` (default): the pure-Rust `gemm` crate (faer's kernels); the binary's default for
//!   convolutional networks.
//! - `blas`: OpenBLAS (system `libopenblas`); becomes the binary's default backend for both.
//! - `threading`: lets matrixmultiply use several threads for large products.
//!
//! MSRV: Rust 1.89 (see `Cargo.toml`).
#![forbid(unsafe_code)]

pub mod checkpoint;
pub mod digit;
pub mod error;
pub mod evaluate;
pub mod model;
pub mod parallel;
pub mod stack;

pub use error::CliError;

/// README.md's Rust blocks, compiled and run by `cargo test --doc` so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
