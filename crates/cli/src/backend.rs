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
        let choice: BackendArg = $choice;
        match choice {
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

/// The default backend for a network, the fastest built for its products: OpenBLAS, then
/// for a convolutional network (`images`) gemm before matrixmultiply, for an MLP
/// matrixmultiply before gemm, then naive.
///
/// The split follows whole-run timings (README, "Why the defaults are what they are"):
/// gemm is faster at the convolutions' products, the two are even on the book's MLP, whose
/// recorded default weights are matrixmultiply's.
pub fn default_backend(images: bool) -> BackendArg {
    // Read only where both pure-Rust backends are built and OpenBLAS is not.
    let _ = images;
    #[cfg(feature = "blas")]
    return BackendArg::Openblas;
    #[cfg(all(feature = "gemm", feature = "matrixmultiply", not(feature = "blas")))]
    return if images {
        BackendArg::Gemm
    } else {
        BackendArg::Matrixmultiply
    };
    #[cfg(all(
        feature = "gemm",
        not(any(feature = "blas", feature = "matrixmultiply"))
    ))]
    return BackendArg::Gemm;
    #[cfg(all(
        feature = "matrixmultiply",
        not(any(feature = "blas", feature = "gemm"))
    ))]
    return BackendArg::Matrixmultiply;
    #[cfg(not(any(feature = "matrixmultiply", feature = "blas", feature = "gemm")))]
    return BackendArg::Naive;
}
