//! manabi-matmul: `C = α·op(A)·op(B) + β·C` behind one trait, with backends chosen by feature.
//!
//! Backends are types implementing [`Gemm`] for `f32` and `f64`:
//!
//! | type | feature | notes |
//! |---|---|---|
//! | [`Naive`] | always | the reference: no allocation, no `unsafe`, `no_std` without `alloc` |
//! | `MatrixMultiply` | `matrixmultiply` (default) | pure Rust; strides passed through, so a transpose is free; allocates a packing buffer per call |
//! | `FaerGemm` | `gemm` | pure Rust, the [`gemm`](https://docs.rs/gemm/0.19.0) crate (faer's kernels); strides passed through; one thread per call; host only |
//! | `Blas` | `blas` | OpenBLAS via `cblas`, linked to the system library (Debian's `libopenblas-dev`); may allocate internally |
//!
//! [`DefaultGemm`] is the preferred one built: blas > gemm > matrixmultiply > naive (a build
//! that asks for a backend by feature gets it). Which is fastest depends on the CPU and the
//! shapes: `cargo xtask bench` times each backend at the network's products.
//!
//! # Example
//! `C = 2·A·B + C` with the reference backend, then `Aᵀ·A` through a free transpose, and the
//! same product from whichever backend this build prefers: on small integers every backend
//! is exact, so the results are equal, not just close.
//! ```
//! use manabi_matmul::{DefaultGemm, Gemm, Mat, MatMut, Naive};
//!
//! let a = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]; // 2×3
//! let b = [1.0f32, 0.0, 0.0, 1.0, 1.0, -1.0]; // 3×2
//! let (a, b) = (Mat::new(&a, 2, 3)?, Mat::new(&b, 3, 2)?);
//! let mut c = [1.0f32, 0.0, 0.0, 1.0];
//! Naive.gemm(2.0, a, b, 1.0, MatMut::new(&mut c, 2, 2)?);
//! assert_eq!(c, [9.0, -2.0, 20.0, -1.0]); // A·B = [[4, −1], [10, −1]]
//!
//! // With β = 0, C is only written: its old contents (NaN here) never leak in.
//! let (mut ata, mut fast) = ([f32::NAN; 9], [f32::NAN; 9]);
//! Naive.gemm(1.0, a.t(), a, 0.0, MatMut::new(&mut ata, 3, 3)?);
//! assert_eq!(ata, [17.0, 22.0, 27.0, 22.0, 29.0, 36.0, 27.0, 36.0, 45.0]);
//! DefaultGemm::default().gemm(1.0, a.t(), a, 0.0, MatMut::new(&mut fast, 3, 3)?);
//! assert_eq!(fast, ata);
//! # Ok::<(), manabi_tensor::Error>(())
//! ```
//!
//! # Features
//! - `std` (default): implies `alloc`; runtime CPU detection (AVX-512, AVX2) in matrixmultiply.
//! - `alloc`: heap use (matrixmultiply's packing buffers need it).
//! - `matrixmultiply` (default): the `MatrixMultiply` backend.
//! - `threading`: lets matrixmultiply split big products over threads (`MATMUL_NUM_THREADS`).
//! - `blas`: the `Blas` backend (host only; needs `std`).
//! - `gemm`: the `FaerGemm` backend (host only; needs `std`, for run-time CPU detection; its
//!   AVX-512 kernels are built too and used where the CPU has them).
//!
//! Features only add: any combination builds, and none removes a backend.
//!
//! MSRV: Rust 1.85 (edition 2024); 1.89 with `gemm` (its AVX-512 kernels use intrinsics
//! stable since then).
#![no_std]
#![deny(unsafe_code)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

#[cfg(feature = "blas")]
mod blas;
#[cfg(feature = "gemm")]
mod faer;
#[cfg(feature = "matrixmultiply")]
mod mm;
mod naive;
mod sparse;

#[cfg(feature = "blas")]
pub use blas::Blas;
#[cfg(feature = "gemm")]
pub use faer::FaerGemm;
pub use manabi_tensor::Csr;
pub use manabi_tensor::{Mat, MatMut, Real};
#[cfg(feature = "matrixmultiply")]
pub use mm::MatrixMultiply;
pub use naive::Naive;
pub use sparse::{csr_gemm, csr_gemm_tn};

/// The preferred backend this build has: `Blas` if `blas`, else `FaerGemm` if `gemm`, else
/// `MatrixMultiply` if `matrixmultiply`, else [`Naive`].
#[cfg(feature = "blas")]
pub type DefaultGemm = Blas;
/// The preferred backend this build has: `Blas` if `blas`, else `FaerGemm` if `gemm`, else
/// `MatrixMultiply` if `matrixmultiply`, else [`Naive`].
#[cfg(all(feature = "gemm", not(feature = "blas")))]
pub type DefaultGemm = FaerGemm;
/// The preferred backend this build has: `Blas` if `blas`, else `FaerGemm` if `gemm`, else
/// `MatrixMultiply` if `matrixmultiply`, else [`Naive`].
#[cfg(all(
    feature = "matrixmultiply",
    not(any(feature = "gemm", feature = "blas"))
))]
pub type DefaultGemm = MatrixMultiply;
/// The preferred backend this build has: `Blas` if `blas`, else `FaerGemm` if `gemm`, else
/// `MatrixMultiply` if `matrixmultiply`, else [`Naive`].
#[cfg(not(any(feature = "matrixmultiply", feature = "gemm", feature = "blas")))]
pub type DefaultGemm = Naive;

/// General matrix product: `C = α·op(A)·op(B) + β·C`.
///
/// `op(X)` is `X` or its transpose, as the [`Mat`] view says ([`Mat::t`]).
///
/// # Contract
/// - Shapes: `op(A): m × k`, `op(B): k × n`, `C: m × n`.
/// - `β = 0` makes `C` write-only: it is never read, so NaN or garbage in it cannot leak.
/// - `k = 0` gives `C = β·C`; `m = 0` or `n = 0` does nothing.
///
/// # Panics
/// If the shapes do not agree (a programming error: layers check shapes when planned).
pub trait Gemm<T: Real> {
    /// `C = α·op(A)·op(B) + β·C`.
    fn gemm(&self, alpha: T, a: Mat<'_, T>, b: Mat<'_, T>, beta: T, c: MatMut<'_, T>);

    /// A short name for reports (`"naive"`, `"matrixmultiply"`, `"gemm"`, `"openblas"`).
    fn name(&self) -> &'static str;
}

/// Checks `op(A)·op(B)` against `C` and returns `(m, k, n)`.
///
/// # Panics
/// If the shapes do not agree.
fn dims<T: Copy>(a: &Mat<'_, T>, b: &Mat<'_, T>, c: &MatMut<'_, T>) -> (usize, usize, usize) {
    let (m, k, n) = (a.rows(), a.cols(), b.cols());
    assert!(
        b.rows() == k && c.rows() == m && c.cols() == n,
        "gemm shapes disagree: ({m}×{k})·({}×{n}) into {}×{}",
        b.rows(),
        c.rows(),
        c.cols()
    );
    (m, k, n)
}

/// Finishes the products with nothing to multiply and says whether it did: `m = 0` or
/// `n = 0` (nothing to do), `k = 0` or `α = 0` (`C = β·C`).
fn trivial<T: Real>(
    alpha: T,
    (m, k, n): (usize, usize, usize),
    beta: T,
    c: &mut MatMut<'_, T>,
) -> bool {
    if m == 0 || n == 0 {
        return true;
    }
    if k == 0 || alpha == T::ZERO {
        scale(beta, c);
        return true;
    }
    false
}

/// `C = β·C`, reading `C` only if `β ≠ 0`: the whole product when `k = 0` or `α = 0`.
fn scale<T: Real>(beta: T, c: &mut MatMut<'_, T>) {
    for i in 0..c.rows() {
        let row = c.row_mut(i);
        if beta == T::ZERO {
            row.fill(T::ZERO);
        } else if beta != T::ONE {
            row.iter_mut().for_each(|v| *v *= beta);
        }
    }
}
