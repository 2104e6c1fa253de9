//! The reference backend: plain loops in an order the compiler vectorises, no allocation.

use crate::{Gemm, Mat, MatMut, Real, dims, scale, trivial};

/// The reference backend: always built, allocation-free, `unsafe`-free, `no_std` without
/// `alloc`. Every other backend is tested against it, and it is the backend of embedded
/// and allocation-free builds.
///
/// Loop order: for each row `i` of `C`, when `op(B)` is row-major the row is built as a sum
/// of rows of `B` scaled by `A[i, p]` (i-k-j, eight columns at a time in registers, which the
/// compiler turns into SIMD); when `op(B)` is a transpose, each `C[i, j]` is a dot product of
/// two contiguous rows (i-j-k).
#[derive(Clone, Copy, Debug, Default)]
pub struct Naive;

/// Columns of `C` summed together in registers (row-major `op(B)`).
const BLOCK: usize = 8;

impl<T: Real> Gemm<T> for Naive {
    fn gemm(&self, alpha: T, a: Mat<'_, T>, b: Mat<'_, T>, beta: T, mut c: MatMut<'_, T>) {
        let (m, k, n) = dims(&a, &b, &c);
        if trivial(alpha, (m, k, n), beta, &mut c) {
            return;
        }
        scale(beta, &mut c);
        // `x·1` is `x` exactly: with α = 1 (every layer's forward product) the products leave
        // the multiplication out, the same bits in fewer operations. A caller that inlines the
        // call folds it anyway; one that does not (a soft-float core pays ~50 instructions
        // for each) gets it here.
        if alpha == T::ONE {
            products::<T, false>(alpha, a, b, &mut c, (m, k, n));
        } else {
            products::<T, true>(alpha, a, b, &mut c, (m, k, n));
        }
    }

    fn name(&self) -> &'static str {
        "naive"
    }
}

/// `C += α·op(A)·op(B)` in the reference order, `C` already scaled by β; with `SCALE` false
/// α is 1 and is not multiplied in.
fn products<T: Real, const SCALE: bool>(
    alpha: T,
    a: Mat<'_, T>,
    b: Mat<'_, T>,
    c: &mut MatMut<'_, T>,
    (m, k, n): (usize, usize, usize),
) {
    let times_alpha = |v: T| if SCALE { alpha * v } else { v };
    let (a_rs, a_cs) = a.strides();
    let (a_data, b_data, b_ld) = (a.data(), b.data(), b.row_stride());
    for i in 0..m {
        let c_row = c.row_mut(i);
        if !b.is_transposed() {
            // Eight columns of the row at a time, summed in registers over p: the
            // additions are those of `C[i, j] += (α·A[i, p])·B[p, j]` for p in order,
            // so the bits are those of the plain i-k-j loop, without loading and storing
            // C at every p (which costs a Cortex-M4F most in a convolution's long products).
            let mut j = 0;
            while j + BLOCK <= n {
                let mut acc: [T; BLOCK] = core::array::from_fn(|t| c_row[j + t]);
                for p in 0..k {
                    let a_ip = times_alpha(a_data[i * a_rs + p * a_cs]);
                    let b_part = &b_data[p * b_ld + j..p * b_ld + j + BLOCK];
                    for (acc_t, &b_pj) in acc.iter_mut().zip(b_part) {
                        *acc_t += a_ip * b_pj;
                    }
                }
                c_row[j..j + BLOCK].copy_from_slice(&acc);
                j += BLOCK;
            }
            for (jj, c_ij) in c_row.iter_mut().enumerate().skip(j) {
                let mut acc = *c_ij;
                for p in 0..k {
                    acc += times_alpha(a_data[i * a_rs + p * a_cs]) * b_data[p * b_ld + jj];
                }
                *c_ij = acc;
            }
        } else if let Some(a_row) = a.row(i) {
            for (j, c_ij) in c_row.iter_mut().enumerate() {
                // op(B)[p, j] is stored at row j, column p.
                let b_col = &b_data[j * b_ld..j * b_ld + k];
                let dot: T = a_row.iter().zip(b_col).map(|(&x, &y)| x * y).sum();
                *c_ij += times_alpha(dot);
            }
        } else {
            for (j, c_ij) in c_row.iter_mut().enumerate() {
                let b_col = &b_data[j * b_ld..j * b_ld + k];
                let dot: T = b_col
                    .iter()
                    .enumerate()
                    .map(|(p, &y)| a_data[i * a_rs + p * a_cs] * y)
                    .sum();
                *c_ij += times_alpha(dot);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook definition, one element at a time, in f64.
    fn definition(alpha: f64, a: Mat<'_, f64>, b: Mat<'_, f64>, beta: f64, c0: &[f64]) -> [f64; 6] {
        let mut out = [0.0; 6];
        for i in 0..2 {
            for j in 0..3 {
                let s: f64 = (0..a.cols()).map(|p| a.get(i, p) * b.get(p, j)).sum();
                out[i * 3 + j] = alpha * s + beta * c0[i * 3 + j];
            }
        }
        out
    }

    #[test]
    fn naive_matches_the_definition_in_every_layout() {
        // A: 2×4, B: 4×3, stored both ways.
        let a = [1.0, -2.0, 3.0, 0.5, 4.0, 1.0, -1.0, 2.0];
        let a_t = [1.0, 4.0, -2.0, 1.0, 3.0, -1.0, 0.5, 2.0];
        let b = [1.0, 0.0, 2.0, -1.0, 3.0, 1.0, 2.0, 2.0, -2.0, 0.0, 1.0, 4.0];
        let b_t = [1.0, -1.0, 2.0, 0.0, 0.0, 3.0, 2.0, 1.0, 2.0, 1.0, -2.0, 4.0];
        let c0 = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let am = Mat::new(&a, 2, 4).unwrap();
        let bm = Mat::new(&b, 4, 3).unwrap();
        let want = definition(0.5, am, bm, -2.0, &c0);
        // Worked by hand for C[0,0]: 0.5·(1 + 2 + 6 + 0) − 2·1 = 2.5.
        assert_eq!(want[0], 2.5);
        let layouts = [
            (am, bm),
            (Mat::new(&a_t, 4, 2).unwrap().t(), bm),
            (am, Mat::new(&b_t, 3, 4).unwrap().t()),
            (
                Mat::new(&a_t, 4, 2).unwrap().t(),
                Mat::new(&b_t, 3, 4).unwrap().t(),
            ),
        ];
        for (x, y) in layouts {
            let mut c = c0;
            Naive.gemm(0.5, x, y, -2.0, MatMut::new(&mut c, 2, 3).unwrap());
            assert_eq!(c, want);
        }
    }
}
