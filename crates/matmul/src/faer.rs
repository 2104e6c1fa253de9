//! The `gemm` crate (faer's kernels) as a backend: pure Rust, strides passed through, one thread.
#![allow(unsafe_code)]

use crate::{Gemm, Mat, MatMut, Real, dims, trivial};

/// The pure-Rust [`gemm`] crate, the kernels behind faer (feature `gemm`, host only).
///
/// Views are handed over as strides, so a transposed operand costs nothing. Every call runs on
/// the calling thread (`Parallelism::None`, and the crate is built without rayon): callers that
/// want threads split the work themselves. With `std` the crate picks its kernel at run time
/// (AVX2+FMA, else a portable one; its AVX-512 kernels need the crate's `x86-v4` feature, which
/// is left off). It may allocate a packing buffer per call and keeps one L2-sized scratch
/// buffer per calling thread.
#[derive(Clone, Copy, Debug, Default)]
pub struct FaerGemm;

/// `C = α·op(A)·op(B) + β·C` through `gemm::gemm`, for `T` = `f32` or `f64`.
fn faer<T: Real + 'static>(alpha: T, a: Mat<'_, T>, b: Mat<'_, T>, beta: T, mut c: MatMut<'_, T>) {
    let (m, k, n) = dims(&a, &b, &c);
    if trivial(alpha, (m, k, n), beta, &mut c) {
        return;
    }
    let (rsa, csa) = a.strides();
    let (rsb, csb) = b.strides();
    let rsc = c.row_stride();
    // The crate computes dst = α'·dst + β'·lhs·rhs and reads dst only if `read_dst`: so its α'
    // is our β, its β' our α, and with β = 0 C is never read (NaN in it cannot leak).
    let read_c = beta != T::ZERO;
    // SAFETY: `Mat`/`MatMut` constructors checked that every element addressed by (rows, cols,
    // strides) lies inside its slice; `dims` checked that the shapes agree and `trivial` that
    // m, k, n > 0, so the crate reads and writes only in-bounds elements. `c` is a unique
    // borrow, so it aliases neither `a` nor `b`. Strides are at most the slice lengths, which
    // fit in `isize`. `T` is `f32` or `f64` (`Real` is sealed), both of which the crate takes;
    // conjugation flags are ignored for real types.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.data_mut().as_mut_ptr(),
            1,
            rsc as isize,
            read_c,
            a.data().as_ptr(),
            csa as isize,
            rsa as isize,
            b.data().as_ptr(),
            csb as isize,
            rsb as isize,
            beta,
            alpha,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

macro_rules! impl_faer {
    ($t:ty) => {
        impl Gemm<$t> for FaerGemm {
            fn gemm(&self, alpha: $t, a: Mat<'_, $t>, b: Mat<'_, $t>, beta: $t, c: MatMut<'_, $t>) {
                faer(alpha, a, b, beta, c);
            }

            fn name(&self) -> &'static str {
                "gemm"
            }
        }
    };
}

impl_faer!(f32);
impl_faer!(f64);
