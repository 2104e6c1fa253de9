//! `csr_gemm` against `Naive` on the dense matrix: bit for bit, with float values, every shape 0..=8 and odd ones.

use manabi_matmul::{Csr, Gemm, Mat, MatMut, Naive, Real, csr_gemm, csr_gemm_tn};
use manabi_tensor::{CsrBuf, Rng};

/// A dense `rows × cols` matrix with about `density` of its entries nonzero, drawn in ±2
/// (not integers: the claim is the same rounding as Naive, not merely exact sums).
fn sparse_dense<T: Real>(rows: usize, cols: usize, density: f64, rng: &mut Rng) -> Vec<T> {
    (0..rows * cols)
        .map(|_| {
            if rng.uniform_f64() < density {
                T::from_f64(rng.range(-2.0f64, 2.0))
            } else {
                T::ZERO
            }
        })
        .collect()
}

fn csr<T: Real>(x: &[T], rows: usize, cols: usize) -> CsrBuf<T> {
    let mut buf = CsrBuf::new(rows, cols).unwrap();
    for i in 0..rows {
        buf.push_dense_row(&x[i * cols..(i + 1) * cols]);
    }
    buf
}

const SCALARS: [(f64, f64); 6] = [
    (1.0, 0.0),
    (1.0, 1.0),
    (0.37, 0.0),
    (-2.0, 3.0),
    (0.0, -0.5),
    (-0.1, 1.0),
];

/// `csr_gemm_tn` (Aᵀ·B by scattering A's rows) against Naive on the transposed dense view,
/// by bits, for every α, β.
fn compare_tn<T: Real>(m: usize, k: usize, n: usize, density: f64, seed: u64) {
    let mut rng = Rng::new(seed);
    let a = sparse_dense::<T>(m, k, density, &mut rng);
    let b: Vec<T> = (0..m * n)
        .map(|_| T::from_f64(rng.range(-1.0f64, 1.0)))
        .collect();
    let a_csr = csr(&a, m, k);
    let (at, bm) = (Mat::new(&a, m, k).unwrap().t(), Mat::new(&b, m, n).unwrap());
    for (alpha, beta) in SCALARS {
        let (alpha, beta) = (T::from_f64(alpha), T::from_f64(beta));
        let c0: Vec<T> = if beta == T::ZERO {
            vec![T::NAN; k * n]
        } else {
            (0..k * n)
                .map(|_| T::from_f64(rng.range(-1.0f64, 1.0)))
                .collect()
        };
        let (mut want, mut got) = (c0.clone(), c0);
        Naive.gemm(alpha, at, bm, beta, MatMut::new(&mut want, k, n).unwrap());
        csr_gemm_tn(
            alpha,
            a_csr.view(),
            bm,
            beta,
            MatMut::new(&mut got, k, n).unwrap(),
        );
        let bits = |v: &[T]| v.iter().map(|x| x.to_f64().to_bits()).collect::<Vec<_>>();
        assert!(
            bits(&want) == bits(&got),
            "{} m={m} k={k} n={n} density={density} α={alpha} β={beta}",
            T::NAME
        );
    }
}

#[test]
fn the_scattered_transpose_product_matches_naive_bit_for_bit() {
    for m in 0..=6 {
        for k in 0..=6 {
            for n in 0..=6 {
                for density in [0.0, 0.4, 1.0] {
                    let seed = (m * 49 + k * 7 + n) as u64;
                    compare_tn::<f32>(m, k, n, density, seed);
                    compare_tn::<f64>(m, k, n, density, seed);
                }
            }
        }
    }
    // The first layer's weight gradient at the firmware's batch and MNIST's density.
    compare_tn::<f32>(10, 784, 50, 0.19, 3);
    compare_tn::<f64>(100, 784, 50, 0.19, 4);
}

/// Compares for every α, β; `ldc` ≥ `n` pads C's rows (the padding must survive).
fn compare<T: Real>(m: usize, k: usize, n: usize, density: f64, ldc: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let a = sparse_dense::<T>(m, k, density, &mut rng);
    let b: Vec<T> = (0..k * n)
        .map(|_| T::from_f64(rng.range(-1.0f64, 1.0)))
        .collect();
    let a_csr = csr(&a, m, k);
    let (am, bm) = (Mat::new(&a, m, k).unwrap(), Mat::new(&b, k, n).unwrap());
    let c_len = if m == 0 { 0 } else { (m - 1) * ldc + n };
    for (alpha, beta) in SCALARS {
        let (alpha, beta) = (T::from_f64(alpha), T::from_f64(beta));
        let c0: Vec<T> = if beta == T::ZERO {
            vec![T::NAN; c_len]
        } else {
            (0..c_len)
                .map(|_| T::from_f64(rng.range(-1.0f64, 1.0)))
                .collect()
        };
        let (mut want, mut got) = (c0.clone(), c0.clone());
        Naive.gemm(
            alpha,
            am,
            bm,
            beta,
            MatMut::with_stride(&mut want, m, n, ldc).unwrap(),
        );
        csr_gemm(
            alpha,
            a_csr.view(),
            bm,
            beta,
            MatMut::with_stride(&mut got, m, n, ldc).unwrap(),
        );
        for (idx, (w, g)) in want.iter().zip(&got).enumerate() {
            let padding = idx % ldc >= n;
            if padding {
                assert!(
                    g.to_f64().to_bits() == c0[idx].to_f64().to_bits(),
                    "padding at {idx} was written"
                );
            } else {
                assert!(
                    w.to_f64().to_bits() == g.to_f64().to_bits(),
                    "{} m={m} k={k} n={n} density={density} α={alpha} β={beta} at {idx}: naive {w}, sparse {g}",
                    T::NAME
                );
            }
        }
    }
}

#[test]
fn every_small_shape_matches_naive_bit_for_bit() {
    for m in 0..=8 {
        for k in 0..=8 {
            for n in 0..=8 {
                let seed = (m * 81 + k * 9 + n) as u64;
                for density in [0.0, 0.3, 1.0] {
                    compare::<f32>(m, k, n, density, n, seed);
                    compare::<f64>(m, k, n, density, n, seed);
                }
            }
        }
    }
}

#[test]
fn network_shapes_and_padded_rows_match_naive() {
    // The first layer (MNIST density), its weight gradient through the transpose, odd sizes
    // that leave remainders after the four-at-a-time passes and the vector width.
    for (m, k, n, density) in [
        (100, 784, 50, 0.19),
        (784, 100, 50, 0.19),
        (37, 131, 61, 0.5),
        (5, 1000, 17, 0.05),
    ] {
        compare::<f32>(m, k, n, density, n, 7);
        compare::<f64>(m, k, n, density, n + 3, 8);
    }
}

#[test]
fn the_transpose_gives_the_weight_gradient() {
    // dW = xᵀ·dy through the CSR transpose of x equals Naive's product with a transposed view.
    let (batch, d_in, d_out) = (31, 97, 13);
    let mut rng = Rng::new(3);
    let x = sparse_dense::<f32>(batch, d_in, 0.2, &mut rng);
    let dy: Vec<f32> = (0..batch * d_out)
        .map(|_| rng.range(-1.0f64, 1.0) as f32)
        .collect();
    let x_csr = csr(&x, batch, d_in);
    let mut xt = CsrBuf::new(d_in, batch).unwrap();
    xt.transpose_from(x_csr.view());
    let (mut want, mut got) = (vec![0.0f32; d_in * d_out], vec![f32::NAN; d_in * d_out]);
    let dy_m = Mat::new(&dy, batch, d_out).unwrap();
    Naive.gemm(
        1.0,
        Mat::new(&x, batch, d_in).unwrap().t(),
        dy_m,
        0.0,
        MatMut::new(&mut want, d_in, d_out).unwrap(),
    );
    csr_gemm(
        1.0,
        xt.view(),
        dy_m,
        0.0,
        MatMut::new(&mut got, d_in, d_out).unwrap(),
    );
    assert_eq!(want, got);
}

#[test]
fn a_checked_view_over_caller_arrays_works_too() {
    // [[0, 2], [0, 0], [3, 0]] · [[1, 1], [4, -1]] = [[8, -2], [0, 0], [3, 3]]
    let a = Csr::new(3, 2, &[0, 1, 1, 2], &[1, 0], &[2.0f64, 3.0]).unwrap();
    let b = [1.0, 1.0, 4.0, -1.0];
    let mut c = [f64::NAN; 6];
    csr_gemm(
        1.0,
        a,
        Mat::new(&b, 2, 2).unwrap(),
        0.0,
        MatMut::new(&mut c, 3, 2).unwrap(),
    );
    assert_eq!(c, [8.0, -2.0, 0.0, 0.0, 3.0, 3.0]);
}
