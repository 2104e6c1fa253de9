//! GEMM throughput per backend at the book network's shapes (f32); GFLOP/s = 2·m·n·k / time.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use manabi_benches::{SHAPES, Shape};
use manabi_matmul::{Gemm, Mat, MatMut, Naive};
use std::hint::black_box;

fn operands(s: &Shape) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let fill = |len: usize, salt: usize| {
        (0..len)
            .map(|i| ((i * 7 + salt) % 13) as f32 * 0.1 - 0.6)
            .collect()
    };
    (fill(s.m * s.k, 1), fill(s.k * s.n, 2), vec![0.0; s.m * s.n])
}

fn run<G: Gemm<f32>>(g: &G, s: &Shape, a: &[f32], b: &[f32], c: &mut [f32]) {
    let am = if s.ta {
        Mat::new(a, s.k, s.m).unwrap().t()
    } else {
        Mat::new(a, s.m, s.k).unwrap()
    };
    let bm = if s.tb {
        Mat::new(b, s.n, s.k).unwrap().t()
    } else {
        Mat::new(b, s.k, s.n).unwrap()
    };
    g.gemm(1.0, am, bm, 0.0, MatMut::new(c, s.m, s.n).unwrap());
}

fn bench_backend<G: Gemm<f32>>(c: &mut Criterion, g: &G) {
    let mut group = c.benchmark_group("gemm");
    for s in &SHAPES {
        // The naive backend at the square and eval shapes takes seconds per call: skip those.
        if g.name() == "naive" && s.m * s.n * s.k > 10_000_000 {
            continue;
        }
        let (a, b, mut out) = operands(s);
        group.throughput(Throughput::Elements(s.flops() as u64));
        group.bench_function(BenchmarkId::new(g.name(), s.label), |bench| {
            bench.iter(|| run(g, s, black_box(&a), black_box(&b), &mut out));
        });
    }
    group.finish();
}

fn gemm(c: &mut Criterion) {
    bench_backend(c, &Naive);
    #[cfg(feature = "matrixmultiply")]
    bench_backend(c, &manabi_matmul::MatrixMultiply);
    #[cfg(feature = "blas")]
    bench_backend(c, &manabi_matmul::Blas);
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(std::time::Duration::from_millis(500)).measurement_time(std::time::Duration::from_secs(2));
    targets = gemm
}
criterion_main!(benches);
