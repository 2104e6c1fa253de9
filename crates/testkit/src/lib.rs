//! manabi-testkit: helpers every crate's tests share (a dev-dependency only, never shipped).
//!
//! - [`numeric_grad`], [`probe`] and [`assert_close`]: the gradient check of the house style,
//!   central differences of a probe loss `Σ r·f(x)` compared with a mixed tolerance.
//! - [`TrackingAllocator`] and [`measure`]: how many allocations a closure makes on its thread,
//!   and the largest one, for the zero-allocation and hostile-header tests. A test binary
//!   installs it with `#[global_allocator]`.
//! - [`TempDir`]: a scratch directory, unique per process and call, removed on drop; and
//!   [`mnist_dir`], the real data from `$MANABI_DATA`.
//!
//! The allocator is the one `unsafe` outside the matmul backends: one audited copy here
//! instead of one per test file.
//!
//! # Features
//! None.

mod alloc;
mod grad;
mod scratch;

pub use alloc::{Allocations, TrackingAllocator, measure};
pub use grad::{assert_close, numeric_grad, probe};
pub use scratch::{TempDir, mnist_dir};
