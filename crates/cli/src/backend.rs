//! Choosing the GEMM backend at run time among those compiled in.

use clap::ValueEnum;

/// GEMM backends this binary was built with.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendArg {
    /// The reference loops (slow; allocation-free).
    Naive,
    /// Pure-Rust matrixmultiply.
    #[cfg(feature = "matrixmultiply")]
    Matrixmultiply,
    /// The pure-Rust `gemm` crate (faer's kernels).
    #[cfg(feature = "gemm")]
    Gemm,
    /// OpenBLAS.
    #[cfg(feature = "blas")]
    Openblas,
}

/// Runs `$body` with `$g` bound to the chosen backend value (a different type per arm).
#[macro_export]
macro_rules! with_backend {
    ($choice:expr, $g:ident => $body:expr) => {{
        use $crate::backend::BackendArg;
        match $choice.unwrap_or($crate::backend::default_backend()) {
            BackendArg::Naive => {
                let $g = manabi_matmul::Naive;
                $body
            }
            #[cfg(feature = "matrixmultiply")]
            BackendArg::Matrixmultiply => {
                let $g = manabi_matmul::MatrixMultiply;
                $body
            }
            #[cfg(feature = "gemm")]
            BackendArg::Gemm => {
                let $g = manabi_matmul::FaerGemm;
                $body
            }
            #[cfg(feature = "blas")]
            BackendArg::Openblas => {
                let $g = manabi_matmul::Blas;
                $body
            }
        }
    }};
}

/// The fastest backend built: OpenBLAS > gemm > matrixmultiply > naive.
pub fn default_backend() -> BackendArg {
    #[cfg(feature = "blas")]
    return BackendArg::Openblas;
    #[cfg(all(feature = "gemm", not(feature = "blas")))]
    return BackendArg::Gemm;
    #[cfg(all(
        feature = "matrixmultiply",
        not(any(feature = "blas", feature = "gemm"))
    ))]
    return BackendArg::Matrixmultiply;
    #[cfg(not(any(feature = "matrixmultiply", feature = "blas", feature = "gemm")))]
    return BackendArg::Naive;
}
