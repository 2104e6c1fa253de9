//! manabi-tensor: the `no_std` ground floor — numbers, views, randomness and the memory plan.
//!
//! Everything here runs unchanged on a server and on a Cortex-M microcontroller:
//!
//! - [`Real`]: a sealed trait for `f32` and `f64` whose maths comes from `libm`.
//! - [`Mat`] / [`MatMut`]: row-major views over slices with a free transpose.
//! - [`Rng`]: a seeded xoshiro256++ generator (no global state).
//! - [`Csr`]: a sparse matrix's nonzeros by row (an MNIST image is 81 % zeros); `CsrBuf`
//!   (with `alloc`) builds one without allocating per use, [`csr_from_bytes`] into caller
//!   arrays without a heap.
//! - [`Planner`], [`Span`], [`Arena`]: plan memory once, run with one caller-owned buffer.
//! - [`Error`]: the crate's one error type.
//!
//! # Features
//! - `alloc`: helpers that own a heap buffer ([`Arena::alloc_vec`], `CsrBuf`).
//! - `std` (default): implies `alloc`.
//!
//! MSRV: Rust 1.85 (edition 2024).
#![no_std]
#![forbid(unsafe_code)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod error;
mod mat;
mod plan;
mod real;
mod rng;
mod sparse;

pub use error::Error;
pub use mat::{Mat, MatMut};
pub use plan::{Arena, Planner, Span, disjoint_mut, read_write, write_read};
pub use real::Real;
pub use rng::Rng;
#[cfg(feature = "alloc")]
pub use sparse::CsrBuf;
pub use sparse::{Csr, csr_from_bytes};

/// The crate's result type.
pub type Result<T, E = Error> = core::result::Result<T, E>;
