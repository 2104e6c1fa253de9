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
//! - [`safetensors`]: the safetensors file format, written into and read from caller-owned
//!   bytes (no heap).
//! - [`Error`]: the crate's one error type.
//!
//! # Example
//! Plan → arena → use: a 2×3 weight matrix and a 3-element input reserved once, one buffer
//! of exactly that size, and views into it.
//! ```
//! use manabi_tensor::{Arena, Error, Mat, Planner, Rng};
//!
//! let mut plan = Planner::new();
//! let w = plan.take(2 * 3);
//! let x = plan.take(3);
//! assert_eq!(plan.total(), 9);
//! // One buffer for everything (a `static` array on a microcontroller).
//! let mut buf = [0.0f32; 9];
//! let mut arena = Arena::new(&mut buf, plan.total())?;
//! let [w_slots, x_slots] = arena.disjoint_mut([w, x]);
//! w_slots.copy_from_slice(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
//! x_slots.copy_from_slice(&[1.0, 0.0, -1.0]);
//! let w_view = Mat::new(arena.get(w), 2, 3)?;
//! assert_eq!(w_view.get(1, 2), 6.0);
//! assert_eq!(w_view.t().get(2, 1), 6.0); // the transpose is a view, nothing copied
//! // A buffer short of the plan is refused when the arena is made, not at first use.
//! let mut short = [0.0f32; 8];
//! assert_eq!(
//!     Arena::new(&mut short, plan.total()).unwrap_err(),
//!     Error::ArenaTooSmall { need: 9, have: 8 }
//! );
//! // Randomness comes from a seeded generator the caller owns.
//! let u: f32 = Rng::new(7).uniform();
//! assert!((0.0..1.0).contains(&u));
//! # Ok::<(), Error>(())
//! ```
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
pub mod safetensors;
mod sparse;

pub use error::Error;
pub use mat::{Mat, MatMut};
pub use plan::{Arena, Planner, Span, disjoint_mut, read_write, write_read};
pub use real::{PerPrecision, Real};
pub use rng::Rng;
#[cfg(feature = "alloc")]
pub use sparse::CsrBuf;
pub use sparse::{Csr, csr_from_bytes};

/// The crate's result type.
pub type Result<T, E = Error> = core::result::Result<T, E>;
