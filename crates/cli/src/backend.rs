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
            #[cfg(feature = "blas")]
            BackendArg::Openblas => {
                let $g = manabi_matmul::Blas;
                $body
            }
        }
    }};
}

/// The fastest backend built: OpenBLAS > matrixmultiply > naive.
pub fn default_backend() -> BackendArg {
    #[cfg(feature = "blas")]
    return BackendArg::Openblas;
    #[cfg(all(feature = "matrixmultiply", not(feature = "blas")))]
    return BackendArg::Matrixmultiply;
    #[cfg(not(any(feature = "matrixmultiply", feature = "blas")))]
    return BackendArg::Naive;
}
