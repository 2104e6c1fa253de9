//! GEMM throughput per backend at the book network's shapes (f32); GFLOP/s = 2·m·n·k / time.
//!
//! Ids are `gemm/<backend>/<label> m.. k.. n..[ At][ Bt]` so that `cargo xtask bench` can read
//! the arithmetic back from criterion's files. Before timing, each backend's product is checked
//! against `Naive`: a fast wrong answer is not a result.

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use manabi_benches::{SHAPES, Shape, fill};
use manabi_matmul::{Gemm, Mat, MatMut, Naive};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// A call slower than this is sampled flat (the same iteration count per sample): linear
/// sampling would need hundreds of calls before the first estimate.
const FLAT_ABOVE: Duration = Duration::from_millis(2);

/// Operands of one shape, stored as the shape says (transposed where `ta` / `tb`).
struct Operands {
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
}

impl Operands {
    fn new(s: &Shape) -> Self {
        let (a, b, c) = s.lens();
        Operands {
            a: fill(a, 1),
            b: fill(b, 2),
            c: vec![0.0; c],
        }
    }
}

/// `C = op(A)·op(B)` with the views the shape describes.
fn run<G: Gemm<f32>>(g: &G, s: &Shape, a: &[f32], b: &[f32], c: &mut [f32]) {
    let am = if s.ta {
        Mat::new(a, s.k, s.m).expect("A fits its shape").t()
    } else {
        Mat::new(a, s.m, s.k).expect("A fits its shape")
    };
    let bm = if s.tb {
        Mat::new(b, s.n, s.k).expect("B fits its shape").t()
    } else {
        Mat::new(b, s.k, s.n).expect("B fits its shape")
    };
    let cm = MatMut::new(c, s.m, s.n).expect("C fits its shape");
    g.gemm(1.0, am, bm, 0.0, cm);
}

/// Runs `g` once, checks it against `want` (Naive's result) and returns how long the call took.
fn check<G: Gemm<f32>>(g: &G, s: &Shape, ops: &mut Operands, want: &[f32]) -> Duration {
    ops.c.fill(f32::NAN);
    let start = Instant::now();
    run(g, s, &ops.a, &ops.b, &mut ops.c);
    let took = start.elapsed();
    // Every |a·b| term is at most 0.36, so k·0.36 bounds the sum; f32 rounding of a dot
    // product stays far below 1e-4 of that bound, while a wrong product misses by whole terms.
    let tol = 1e-4 * 0.36 * s.k as f32;
    let worst = ops
        .c
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(
            0.0f32,
            |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) },
        );
    assert!(
        worst <= tol,
        "{} disagrees with naive at {}: max |diff| {worst} > {tol}",
        g.name(),
        s.id()
    );
    took
}

fn bench_backend<G: Gemm<f32>>(c: &mut Criterion, g: &G, wants: &[Vec<f32>]) {
    let mut group = c.benchmark_group("gemm");
    for (s, want) in SHAPES.iter().zip(wants) {
        let mut ops = Operands::new(s);
        let once = check(g, s, &mut ops, want);
        group.sampling_mode(if once > FLAT_ABOVE {
            SamplingMode::Flat
        } else {
            SamplingMode::Linear
        });
        group.throughput(Throughput::Elements(s.flops() as u64));
        let Operands { a, b, c: mut out } = ops;
        group.bench_function(BenchmarkId::new(g.name(), s.id()), |bench| {
            bench.iter(|| run(g, s, black_box(&a), black_box(&b), &mut out));
        });
    }
    group.finish();
}

fn gemm(c: &mut Criterion) {
    let wants: Vec<Vec<f32>> = SHAPES
        .iter()
        .map(|s| {
            let mut ops = Operands::new(s);
            run(&Naive, s, &ops.a, &ops.b, &mut ops.c);
            ops.c
        })
        .collect();
    bench_backend(c, &Naive, &wants);
    #[cfg(feature = "matrixmultiply")]
    bench_backend(c, &manabi_matmul::MatrixMultiply, &wants);
    #[cfg(feature = "gemm")]
    bench_backend(c, &manabi_matmul::FaerGemm, &wants);
    #[cfg(feature = "blas")]
    bench_backend(c, &manabi_matmul::Blas, &wants);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = gemm
}
criterion_main!(benches);
