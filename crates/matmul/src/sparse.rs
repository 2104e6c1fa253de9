//! Sparse × dense products `C = α·A·B + β·C`, `A` in compressed sparse rows: the first layer on mostly-zero inputs.
#![allow(unsafe_code)]

use crate::{Mat, MatMut, Real, scale};
use manabi_tensor::Csr;

/// `C = α·A·B + β·C` for a sparse `A` (`m × k`, [`Csr`]), a dense `B` (`k × n`, not a
/// transposed view) and `C` (`m × n`).
///
/// Each row of `C` is built as [`Naive`](crate::Naive) builds it (`C[i,·] += (α·A[i,p])·B[p,·]`
/// for `p` in increasing order) with the zero terms left out, so the result is bit for bit
/// `Naive`'s on the dense `A`, whatever the instruction set, as long as `B` is finite (a zero
/// times an infinite or NaN `B[p, j]` is NaN in the dense product and absent here) and up to
/// the sign of a zero sum. Four nonzeros are taken per pass over the row, so `C` is loaded
/// and stored once per four.
///
/// With `std` on x86-64 the same loop is compiled for AVX-512F and for AVX2 and picked at run
/// time; otherwise it is the portable build.
///
/// # Contract
/// As [`Gemm::gemm`](crate::Gemm::gemm): `β = 0` makes `C` write-only; `k = 0` or `α = 0`
/// gives `C = β·C`.
///
/// # Panics
/// If the shapes disagree or `B` is a transposed view (caller bugs).
pub fn csr_gemm<T: Real>(alpha: T, a: Csr<'_, T>, b: Mat<'_, T>, beta: T, mut c: MatMut<'_, T>) {
    let (m, k, n) = (a.rows(), a.cols(), b.cols());
    check_shapes("csr_gemm", (m, k, n), &b, &c);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 || alpha == T::ZERO {
        scale(beta, &mut c);
        return;
    }
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    {
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, the only feature the function is compiled for.
            unsafe { rows_avx512(alpha, a, b, beta, &mut c) };
            return;
        }
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, the only feature the function is compiled for.
            unsafe { rows_avx2(alpha, a, b, beta, &mut c) };
            return;
        }
    }
    rows(alpha, a, b, beta, &mut c);
}

/// `C = α·Aᵀ·B + β·C` for a sparse `A` (`m × k`, [`Csr`]), a dense `B` (`m × n`, not a
/// transposed view) and `C` (`k × n`): a weight gradient `xᵀ·dy` straight from the batch's
/// rows, without building their transpose.
///
/// Row `i` of `A` scatters `(α·A[i,p])·B[i,·]` into row `p` of `C`, rows in increasing
/// order, so every element of `C` receives its terms in increasing `i`: [`Naive`](crate::Naive)'s
/// order for `Aᵀ·B`, and its result bit for bit (with the caveats of [`csr_gemm`]). Rows of
/// `C` that no nonzero reaches are only scaled by `β`. It reads and writes a row of `C` per
/// nonzero, where [`csr_gemm`] on the transpose keeps a row of `C` for four: the form for
/// when memory for the transpose is short (a microcontroller), not the fastest one.
///
/// # Contract
/// As [`csr_gemm`].
///
/// # Panics
/// If the shapes disagree or `B` is a transposed view (caller bugs).
pub fn csr_gemm_tn<T: Real>(alpha: T, a: Csr<'_, T>, b: Mat<'_, T>, beta: T, mut c: MatMut<'_, T>) {
    let (m, k, n) = (a.rows(), a.cols(), b.cols());
    check_shapes("csr_gemm_tn", (k, m, n), &b, &c);
    if k == 0 || n == 0 {
        return;
    }
    scale(beta, &mut c);
    if m == 0 || alpha == T::ZERO {
        return;
    }
    let (b_data, ldb) = (b.data(), b.row_stride());
    for i in 0..m {
        let b_row = &b_data[i * ldb..][..n];
        let (cols, vals) = a.row(i);
        for (&p, &v) in cols.iter().zip(vals) {
            let v = alpha * v;
            for (c_pj, &b_ij) in c.row_mut(p as usize).iter_mut().zip(b_row) {
                *c_pj += v * b_ij;
            }
        }
    }
}

/// Checks that `op(A)` (`rows × inner`) times `B` (`inner × n`, not a transposed view) fits
/// `C` (`rows × n`).
///
/// # Panics
/// If not, naming the product and the shapes.
fn check_shapes<T: Copy>(
    what: &str,
    (rows, inner, n): (usize, usize, usize),
    b: &Mat<'_, T>,
    c: &MatMut<'_, T>,
) {
    assert!(
        b.rows() == inner && c.rows() == rows && c.cols() == n && !b.is_transposed(),
        "{what} shapes disagree: ({rows}×{inner} sparse)·({}×{n}{}) into {}×{}",
        b.rows(),
        if b.is_transposed() {
            ", transposed"
        } else {
            ""
        },
        c.rows(),
        c.cols()
    );
}

#[cfg(all(feature = "std", target_arch = "x86_64"))]
#[target_feature(enable = "avx512f")]
unsafe fn rows_avx512<T: Real>(
    alpha: T,
    a: Csr<'_, T>,
    b: Mat<'_, T>,
    beta: T,
    c: &mut MatMut<'_, T>,
) {
    rows(alpha, a, b, beta, c);
}

#[cfg(all(feature = "std", target_arch = "x86_64"))]
#[target_feature(enable = "avx2")]
unsafe fn rows_avx2<T: Real>(
    alpha: T,
    a: Csr<'_, T>,
    b: Mat<'_, T>,
    beta: T,
    c: &mut MatMut<'_, T>,
) {
    rows(alpha, a, b, beta, c);
}

/// Columns handled as one block: 16 `f32` fill an AVX-512 register (two AVX2 ones).
const LANES: usize = 16;

/// `s[at..at + LANES]` as an array, so that the block loop has a length the compiler knows.
#[inline(always)]
fn block<T>(s: &[T], at: usize) -> &[T; LANES] {
    match s[at..at + LANES].try_into() {
        Ok(a) => a,
        Err(_) => unreachable!("a slice of LANES elements"),
    }
}

/// A whole block of `C`'s row as an array.
#[inline(always)]
fn block_mut<T>(s: &mut [T]) -> &mut [T; LANES] {
    match s.try_into() {
        Ok(a) => a,
        Err(_) => unreachable!("chunks_exact_mut gives LANES elements"),
    }
}

/// The loop itself; inlined into each instruction-set variant, which the compiler vectorises
/// along the rows of `B` and `C`.
#[inline(always)]
fn rows<T: Real>(alpha: T, a: Csr<'_, T>, b: Mat<'_, T>, beta: T, c: &mut MatMut<'_, T>) {
    let n = b.cols();
    let (b_data, ldb) = (b.data(), b.row_stride());
    let b_row = |p: u32| &b_data[p as usize * ldb..][..n];
    for i in 0..a.rows() {
        let c_row = &mut c.row_mut(i)[..n];
        if beta == T::ZERO {
            c_row.fill(T::ZERO);
        } else if beta != T::ONE {
            c_row.iter_mut().for_each(|v| *v *= beta);
        }
        let (cols, vals) = a.row(i);
        let mut quads = cols.chunks_exact(4).zip(vals.chunks_exact(4));
        for (p, v) in quads.by_ref() {
            let (v0, v1, v2, v3) = (alpha * v[0], alpha * v[1], alpha * v[2], alpha * v[3]);
            let (b0, b1, b2, b3) = (b_row(p[0]), b_row(p[1]), b_row(p[2]), b_row(p[3]));
            // Whole blocks of LANES columns (one vector register each for f32 under
            // AVX-512), then the remaining columns one by one: the compiler's own remainder
            // handling for a loop of unknown length used narrower vectors, at a cost.
            let whole = n / LANES * LANES;
            let (c_blocks, c_rest) = c_row.split_at_mut(whole);
            for (q, c) in c_blocks.chunks_exact_mut(LANES).enumerate() {
                let at = q * LANES;
                let c = block_mut(c);
                let (x0, x1, x2, x3) = (block(b0, at), block(b1, at), block(b2, at), block(b3, at));
                // A local copy: the compiler cannot always see that C's row and B's rows do
                // not overlap, and would otherwise keep every lane scalar.
                let mut acc = *c;
                for l in 0..LANES {
                    // Naive's order: one term at a time, left to right.
                    acc[l] = (((acc[l] + v0 * x0[l]) + v1 * x1[l]) + v2 * x2[l]) + v3 * x3[l];
                }
                *c = acc;
            }
            for (j, c) in (whole..n).zip(c_rest) {
                *c = (((*c + v0 * b0[j]) + v1 * b1[j]) + v2 * b2[j]) + v3 * b3[j];
            }
        }
        let done = cols.len() / 4 * 4;
        for (&p, &v) in cols[done..].iter().zip(&vals[done..]) {
            let v = alpha * v;
            for (c_ij, &b_pj) in c_row.iter_mut().zip(b_row(p)) {
                *c_ij += v * b_pj;
            }
        }
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use crate::{Gemm, Naive};
    use manabi_tensor::{CsrBuf, Rng};
    use std::vec;
    use std::vec::Vec;

    /// Each compiled variant of the loop (portable, and AVX2 / AVX-512 where the CPU has
    /// them) against Naive, bit for bit, with β = 0.5 and a row count that is odd.
    #[test]
    fn every_instruction_set_variant_matches_naive() {
        let (m, k, n) = (13, 57, 50);
        let mut rng = Rng::new(21);
        let a: Vec<f32> = (0..m * k)
            .map(|_| {
                if rng.below(4) == 0 {
                    rng.range(-1.0, 1.0)
                } else {
                    0.0
                }
            })
            .collect();
        let b: Vec<f32> = (0..k * n).map(|_| rng.range(-1.0, 1.0)).collect();
        let c0: Vec<f32> = (0..m * n).map(|_| rng.range(-1.0, 1.0)).collect();
        let mut csr = CsrBuf::new(m, k).unwrap();
        for r in a.chunks(k) {
            csr.push_dense_row(r);
        }
        let bm = Mat::new(&b, k, n).unwrap();
        let mut want = c0.clone();
        Naive.gemm(
            0.7,
            Mat::new(&a, m, k).unwrap(),
            bm,
            0.5,
            MatMut::new(&mut want, m, n).unwrap(),
        );
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        type Variant = unsafe fn(f32, Csr<'_, f32>, Mat<'_, f32>, f32, &mut MatMut<'_, f32>);
        let mut variants: Vec<(&str, Variant)> = vec![("portable", rows::<f32>)];
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") {
                variants.push(("avx2", rows_avx2::<f32>));
            }
            if std::is_x86_feature_detected!("avx512f") {
                variants.push(("avx512", rows_avx512::<f32>));
            }
        }
        for (name, variant) in variants {
            let mut got = c0.clone();
            let mut c = MatMut::new(&mut got, m, n).unwrap();
            // SAFETY: only the variants whose instruction set the CPU has were listed.
            unsafe { variant(0.7, csr.view(), bm, 0.5, &mut c) };
            assert_eq!(bits(&got), bits(&want), "{name}");
        }
    }
}
