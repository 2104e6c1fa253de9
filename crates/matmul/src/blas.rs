//! The OpenBLAS backend: `cblas_sgemm`/`cblas_dgemm` with transpose flags, never a copy.
#![allow(unsafe_code)]

// Links the system libopenblas (feature "system"); without this reference the link
// directives of openblas-src would be dropped.
use openblas_src as _;

use crate::{Gemm, Mat, MatMut, dims, trivial};
use cblas::{Layout, Transpose};

/// OpenBLAS through `cblas` (feature `blas`, host only).
///
/// Row-major layout; a transposed view becomes `CblasTrans` with the stored leading
/// dimension, so nothing is copied. OpenBLAS may allocate and start threads internally;
/// `OPENBLAS_NUM_THREADS` sets how many.
///
/// # Panics
/// If a dimension or leading dimension exceeds `i32::MAX` (CBLAS takes `int`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Blas;

unsafe extern "C" {
    /// OpenBLAS's own call (pthread builds): how many threads later calls may use.
    fn openblas_set_num_threads(num_threads: core::ffi::c_int);
    /// OpenBLAS's own call: the thread count now in force.
    fn openblas_get_num_threads() -> core::ffi::c_int;
}

impl Blas {
    /// Sets how many threads OpenBLAS uses for every later product, in this whole process
    /// (`OPENBLAS_NUM_THREADS` sets the starting value). The network's small products run
    /// fastest on one thread; more pay off only for large ones.
    pub fn set_threads(threads: usize) {
        let n = core::ffi::c_int::try_from(threads.max(1)).unwrap_or(core::ffi::c_int::MAX);
        // SAFETY: a plain setter of OpenBLAS's global thread count; any positive value is valid.
        unsafe { openblas_set_num_threads(n) }
    }

    /// The thread count OpenBLAS uses now.
    pub fn threads() -> usize {
        // SAFETY: a plain getter of OpenBLAS's global thread count.
        let n = unsafe { openblas_get_num_threads() };
        usize::try_from(n).unwrap_or(1)
    }
}

fn int(v: usize, what: &str) -> i32 {
    match i32::try_from(v) {
        Ok(v) => v,
        Err(_) => panic!("{what} = {v} does not fit CBLAS's 32-bit int"),
    }
}

fn op<T: Copy>(m: &Mat<'_, T>) -> Transpose {
    if m.is_transposed() {
        Transpose::Ordinary
    } else {
        Transpose::None
    }
}

macro_rules! impl_blas {
    ($t:ty, $f:path) => {
        impl Gemm<$t> for Blas {
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
                let (lda, ldb, ldc) = (a.row_stride(), b.row_stride(), c.row_stride());
                let (ta, tb) = (op(&a), op(&b));
                // SAFETY: the views' constructors checked that each slice covers its stored
                // rows × cols at its leading dimension; `dims` checked that the shapes agree and
                // m, n, k > 0, so each leading dimension is at least its stored column count
                // (≥ 1), as CBLAS requires. `c` is a unique borrow.
                unsafe {
                    $f(
                        Layout::RowMajor,
                        ta,
                        tb,
                        int(m, "m"),
                        int(n, "n"),
                        int(k, "k"),
                        alpha,
                        a.data(),
                        int(lda, "lda"),
                        b.data(),
                        int(ldb, "ldb"),
                        beta,
                        c.data_mut(),
                        int(ldc, "ldc"),
                    );
                }
            }

            fn name(&self) -> &'static str {
                "openblas"
            }
        }
    };
}

impl_blas!(f32, cblas::sgemm);
impl_blas!(f64, cblas::dgemm);
