//! The `matrixmultiply` backend: pure Rust, packed micro-kernels, strides passed straight through.
#![allow(unsafe_code)]

use crate::{Gemm, Mat, MatMut, dims, trivial};

/// The pure-Rust [`matrixmultiply`] backend (feature `matrixmultiply`, on by default).
///
/// Views are handed over as (row stride, column stride) pairs, so a transposed operand costs
/// nothing. matrixmultiply allocates a packing buffer on every call; with `std` it picks its
/// kernel at run time (AVX-512, AVX2+FMA, AVX, SSE2), without `std` at compile time.
#[derive(Clone, Copy, Debug, Default)]
pub struct MatrixMultiply;

macro_rules! impl_mm {
    ($t:ty, $f:path) => {
        impl Gemm<$t> for MatrixMultiply {
            fn gemm(
                &self,
                alpha: $t,
                a: Mat<'_, $t>,
                b: Mat<'_, $t>,
                beta: $t,
                mut c: MatMut<'_, $t>,
            ) {
                let (m, k, n) = dims(&a, &b, &c);
                if trivial(alpha, (m, k, n), beta, &mut c) {
                    return;
                }
                let (rsa, csa) = a.strides();
                let (rsb, csb) = b.strides();
                let rsc = c.row_stride();
                // SAFETY: `Mat`/`MatMut` constructors checked that every element addressed by
                // (rows, cols, strides) lies inside its slice; `dims` checked that the shapes
                // agree, so matrixmultiply reads and writes only in-bounds elements. `c` is a
                // unique borrow, so it aliases neither `a` nor `b`. Strides are at most the
                // slice lengths, which fit in `isize`.
                unsafe {
                    $f(
                        m,
                        k,
                        n,
                        alpha,
                        a.data().as_ptr(),
                        rsa as isize,
                        csa as isize,
                        b.data().as_ptr(),
                        rsb as isize,
                        csb as isize,
                        beta,
                        c.data_mut().as_mut_ptr(),
                        rsc as isize,
                        1,
                    );
                }
            }

            fn name(&self) -> &'static str {
                "matrixmultiply"
            }
        }
    };
}

impl_mm!(f32, matrixmultiply::sgemm);
impl_mm!(f64, matrixmultiply::dgemm);
