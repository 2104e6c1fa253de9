//! Every fast backend against `Naive`: f32 and f64, all transpose pairs, shapes 0..=8 and odd ones.

use manabi_matmul::{Gemm, Mat, MatMut, Naive, Real};

/// Small integers, so every f32 sum below is exact and results must be equal.
fn ints<T: Real>(len: usize, seed: u64) -> Vec<T> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            T::from_f64((x % 9) as f64 - 4.0)
        })
        .collect()
}

/// α and β: 0, 1 and values that are neither (powers of two and 3 keep the sums exact).
const SCALARS: [(f64, f64); 6] = [
    (1.0, 0.0),
    (1.0, 1.0),
    (0.5, 0.0),
    (-2.0, 3.0),
    (0.0, -0.5),
    (2.0, -0.5),
];

fn compare<T: Real, G: Gemm<T>>(fast: &G, m: usize, k: usize, n: usize, seed: u64) -> usize {
    let mut checked = 0;
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        let a = ints::<T>(m * k, seed);
        let b = ints::<T>(k * n, seed + 1);
        // Stored shapes: a transposed operand is stored the other way round.
        let am = if ta {
            Mat::new(&a, k, m).unwrap().t()
        } else {
            Mat::new(&a, m, k).unwrap()
        };
        let bm = if tb {
            Mat::new(&b, n, k).unwrap().t()
        } else {
            Mat::new(&b, k, n).unwrap()
        };
        for (alpha, beta) in SCALARS {
            let (alpha, beta) = (T::from_f64(alpha), T::from_f64(beta));
            let c0 = if beta == T::ZERO {
                vec![T::NAN; m * n]
            } else {
                ints::<T>(m * n, seed + 2)
            };
            let (mut want, mut got) = (c0.clone(), c0);
            Naive.gemm(alpha, am, bm, beta, MatMut::new(&mut want, m, n).unwrap());
            fast.gemm(alpha, am, bm, beta, MatMut::new(&mut got, m, n).unwrap());
            assert!(
                want == got,
                "{} disagrees with naive for {} m={m} k={k} n={n} ta={ta} tb={tb} α={alpha} β={beta}",
                fast.name(),
                T::NAME
            );
            assert!(
                got.iter().all(|v| v.is_finite()),
                "NaN leaked from C with β = {beta}"
            );
            checked += 1;
        }
    }
    checked
}

fn all_shapes<G: Gemm<f32> + Gemm<f64>>(fast: &G) {
    let mut checked = 0;
    for m in 0..=8 {
        for k in 0..=8 {
            for n in 0..=8 {
                let seed = (m * 81 + k * 9 + n) as u64;
                checked += compare::<f32, _>(fast, m, k, n, seed);
                checked += compare::<f64, _>(fast, m, k, n, seed);
            }
        }
    }
    for (m, k, n) in [
        (97, 131, 61),
        (1, 300, 1),
        (33, 1, 65),
        (100, 784, 50),
        (17, 5, 129),
    ] {
        checked += compare::<f32, _>(fast, m, k, n, 11);
        checked += compare::<f64, _>(fast, m, k, n, 12);
    }
    assert_eq!(checked, 2 * (9 * 9 * 9 + 5) * 4 * SCALARS.len());
}

#[test]
fn naive_is_consistent_with_itself_across_layouts() {
    // The layouts take different loops in Naive; the exact integer results must agree.
    for (m, k, n) in [(3, 4, 5), (8, 1, 7), (97, 131, 61)] {
        let a = ints::<f64>(m * k, 5);
        let b = ints::<f64>(k * n, 6);
        let mut a_t = vec![0.0; m * k];
        let mut b_t = vec![0.0; k * n];
        for i in 0..m {
            for p in 0..k {
                a_t[p * m + i] = a[i * k + p];
            }
        }
        for p in 0..k {
            for j in 0..n {
                b_t[j * k + p] = b[p * n + j];
            }
        }
        let mut want = vec![f64::NAN; m * n];
        Naive.gemm(
            1.0,
            Mat::new(&a, m, k).unwrap(),
            Mat::new(&b, k, n).unwrap(),
            0.0,
            MatMut::new(&mut want, m, n).unwrap(),
        );
        for (am, bm) in [
            (
                Mat::new(&a_t, k, m).unwrap().t(),
                Mat::new(&b, k, n).unwrap(),
            ),
            (
                Mat::new(&a, m, k).unwrap(),
                Mat::new(&b_t, n, k).unwrap().t(),
            ),
            (
                Mat::new(&a_t, k, m).unwrap().t(),
                Mat::new(&b_t, n, k).unwrap().t(),
            ),
        ] {
            let mut got = vec![f64::NAN; m * n];
            Naive.gemm(1.0, am, bm, 0.0, MatMut::new(&mut got, m, n).unwrap());
            assert_eq!(got, want);
        }
    }
}

#[test]
fn strided_output_leaves_padding_alone() {
    let a = ints::<f32>(6, 1);
    let b = ints::<f32>(9, 2);
    let mut c = vec![99.0f32; 2 * 5];
    let out = MatMut::with_stride(&mut c, 2, 3, 5).unwrap();
    manabi_matmul::DefaultGemm::default().gemm(
        1.0,
        Mat::new(&a, 2, 3).unwrap(),
        Mat::new(&b, 3, 3).unwrap(),
        0.0,
        out,
    );
    assert_eq!(&c[3..5], &[99.0, 99.0]);
    assert_eq!(&c[8..10], &[99.0, 99.0]);
}

/// Operands and output with padded rows (row stride > columns), in every transpose pair: the
/// backend must agree with `Naive` on the logical elements and leave the padding alone.
fn padded<G: Gemm<f64>>(fast: &G) {
    const PAD: f64 = 99.0;
    let (m, k, n) = (13, 7, 5);
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        // Stored shapes: a transposed operand is stored the other way round, 2 or 3 wider.
        let (ar, ac) = if ta { (k, m) } else { (m, k) };
        let (br, bc) = if tb { (n, k) } else { (k, n) };
        let (lda, ldb, ldc) = (ac + 3, bc + 2, n + 4);
        let a = ints::<f64>(ar * lda, 21);
        let b = ints::<f64>(br * ldb, 22);
        let am = Mat::with_stride(&a, ar, ac, lda).unwrap();
        let bm = Mat::with_stride(&b, br, bc, ldb).unwrap();
        let am = if ta { am.t() } else { am };
        let bm = if tb { bm.t() } else { bm };
        for (alpha, beta) in [(1.0, 0.0), (-2.0, 0.5)] {
            let c0: Vec<f64> = (0..m * ldc)
                .map(|i| match (i % ldc >= n, beta == 0.0) {
                    (true, _) => PAD,
                    (false, true) => f64::NAN,
                    (false, false) => (i % 7) as f64 - 3.0,
                })
                .collect();
            let (mut want, mut got) = (c0.clone(), c0);
            let c = MatMut::with_stride(&mut want, m, n, ldc).unwrap();
            Naive.gemm(alpha, am, bm, beta, c);
            let c = MatMut::with_stride(&mut got, m, n, ldc).unwrap();
            fast.gemm(alpha, am, bm, beta, c);
            assert!(
                want == got,
                "{} disagrees with naive on padded views ta={ta} tb={tb} α={alpha} β={beta}",
                fast.name()
            );
            assert!(
                got.iter().all(|v| v.is_finite()),
                "{}: NaN leaked from C with β = {beta}",
                fast.name()
            );
            for i in 0..m {
                assert!(got[i * ldc + n..(i + 1) * ldc].iter().all(|&v| v == PAD));
            }
        }
    }
}

#[test]
fn padded_views_equal_naive_in_every_backend() {
    padded(&Naive);
    #[cfg(feature = "matrixmultiply")]
    padded(&manabi_matmul::MatrixMultiply);
    #[cfg(feature = "gemm")]
    padded(&manabi_matmul::FaerGemm);
    #[cfg(feature = "blas")]
    padded(&manabi_matmul::Blas);
}

#[cfg(feature = "matrixmultiply")]
#[test]
fn matrixmultiply_equals_naive() {
    all_shapes(&manabi_matmul::MatrixMultiply);
}

#[cfg(feature = "gemm")]
#[test]
fn gemm_crate_equals_naive() {
    all_shapes(&manabi_matmul::FaerGemm);
}

#[cfg(feature = "blas")]
#[test]
fn openblas_equals_naive() {
    all_shapes(&manabi_matmul::Blas);
}

#[test]
fn default_backend_equals_naive() {
    all_shapes(&manabi_matmul::DefaultGemm::default());
}

#[cfg(feature = "blas")]
#[test]
fn openblas_thread_count_can_be_set_and_results_do_not_change() {
    use manabi_matmul::Blas;
    let (m, k, n) = (97, 131, 61);
    let a = ints::<f32>(m * k, 3);
    let b = ints::<f32>(k * n, 4);
    let mut one = vec![f32::NAN; m * n];
    let mut two = vec![f32::NAN; m * n];
    Blas::set_threads(1);
    assert_eq!(Blas::threads(), 1);
    Blas.gemm(
        1.0,
        Mat::new(&a, m, k).unwrap(),
        Mat::new(&b, k, n).unwrap(),
        0.0,
        MatMut::new(&mut one, m, n).unwrap(),
    );
    Blas::set_threads(2);
    assert_eq!(Blas::threads(), 2);
    Blas.gemm(
        1.0,
        Mat::new(&a, m, k).unwrap(),
        Mat::new(&b, k, n).unwrap(),
        0.0,
        MatMut::new(&mut two, m, n).unwrap(),
    );
    assert_eq!(one, two);
}

#[test]
fn the_default_backend_follows_the_features() {
    let want = if cfg!(feature = "blas") {
        "openblas"
    } else if cfg!(feature = "gemm") {
        "gemm"
    } else if cfg!(feature = "matrixmultiply") {
        "matrixmultiply"
    } else {
        "naive"
    };
    assert_eq!(
        Gemm::<f32>::name(&manabi_matmul::DefaultGemm::default()),
        want
    );
    assert_eq!(
        Gemm::<f64>::name(&manabi_matmul::DefaultGemm::default()),
        want
    );
}
