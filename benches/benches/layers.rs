//! Each layer's forward and backward pass at the book network's shapes, batch 100 (f32).
//!
//! Ids are `layers/<backend>/<layer> <shape> <pass> b100[ flop<F>]`: the affine layers run
//! once per GEMM backend and carry their GEMM flops; ReLU and softmax-with-loss use no
//! product (function `-`) and get a time only. Each backend's affine results are checked
//! against `Naive` before they are timed.

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use manabi_benches::{BATCH, SIZES, labels, uniform};
use manabi_layers::{Affine, Relu, SoftmaxWithLoss, Target};
use manabi_matmul::{Gemm, Naive};
use std::hint::black_box;
use std::time::Duration;

const FIRST: Affine = Affine {
    d_in: SIZES[0],
    d_out: SIZES[1],
};
const SECOND: Affine = Affine {
    d_in: SIZES[1],
    d_out: SIZES[2],
};

/// Inputs of both affine layers and the gradients arriving at their outputs.
struct Inputs {
    /// `[100, 784]` pixels in `[0, 1)`.
    x1: Vec<f32>,
    /// `[W1 | b1]`.
    p1: Vec<f32>,
    /// `[100, 50]` gradient of the first layer's output.
    dy1: Vec<f32>,
    /// `[100, 50]` hidden activations (ReLU'd, so about half are zero).
    x2: Vec<f32>,
    /// `[W2 | b2]`.
    p2: Vec<f32>,
    /// `[100, 10]` gradient of the logits.
    dy2: Vec<f32>,
}

impl Inputs {
    fn new() -> Self {
        let (d0, d1, d2) = (SIZES[0], SIZES[1], SIZES[2]);
        let x2 = uniform(BATCH * d1, -1.0, 1.0, 4)
            .into_iter()
            .map(|v| v.max(0.0))
            .collect();
        Inputs {
            x1: uniform(BATCH * d0, 0.0, 1.0, 1),
            p1: uniform(FIRST.param_len(), -0.1, 0.1, 2),
            dy1: uniform(BATCH * d1, -0.01, 0.01, 3),
            x2,
            p2: uniform(SECOND.param_len(), -0.3, 0.3, 5),
            dy2: uniform(BATCH * d2, -0.01, 0.01, 6),
        }
    }
}

/// What one backend computes from [`Inputs`]: both forwards and both backwards.
struct Outputs {
    y1: Vec<f32>,
    dp1: Vec<f32>,
    y2: Vec<f32>,
    dx2: Vec<f32>,
    dp2: Vec<f32>,
}

impl Outputs {
    fn new() -> Self {
        Outputs {
            y1: vec![0.0; BATCH * SIZES[1]],
            dp1: vec![0.0; FIRST.param_len()],
            y2: vec![0.0; BATCH * SIZES[2]],
            dx2: vec![0.0; BATCH * SIZES[1]],
            dp2: vec![0.0; SECOND.param_len()],
        }
    }

    fn compute<G: Gemm<f32>>(g: &G, i: &Inputs) -> Self {
        let mut o = Outputs::new();
        FIRST.forward(g, &i.p1, &i.x1, &mut o.y1);
        FIRST.backward(g, &i.p1, &i.x1, &i.dy1, None, &mut o.dp1);
        SECOND.forward(g, &i.p2, &i.x2, &mut o.y2);
        SECOND.backward(g, &i.p2, &i.x2, &i.dy2, Some(&mut o.dx2), &mut o.dp2);
        o
    }

    /// Panics unless every output is within f32 rounding of `want` (relative to its largest
    /// value): a fast wrong answer is not a result.
    fn check(&self, want: &Outputs, backend: &str) {
        let pairs = [
            ("y1", &self.y1, &want.y1),
            ("dp1", &self.dp1, &want.dp1),
            ("y2", &self.y2, &want.y2),
            ("dx2", &self.dx2, &want.dx2),
            ("dp2", &self.dp2, &want.dp2),
        ];
        for (name, got, want) in pairs {
            let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let worst = got
                .iter()
                .zip(want)
                .map(|(g, w)| (g - w).abs())
                .fold(
                    0.0f32,
                    |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) },
                );
            // Sums of at most 784 products: f32 rounding stays below 1e-4 of the scale.
            assert!(
                worst <= 1e-3 * scale,
                "{backend} disagrees with naive on {name}: max |diff| {worst}, scale {scale}"
            );
        }
    }
}

/// GEMM flops of one of an affine layer's products at batch 100 (`x·W`, `xᵀ·dy` and `dy·Wᵀ`
/// all cost `2·batch·d_in·d_out`).
fn product_flops(l: Affine) -> u64 {
    2 * (BATCH * l.d_in * l.d_out) as u64
}

fn bench_affine<G: Gemm<f32>>(c: &mut Criterion, g: &G, inputs: &Inputs, want: &Outputs) {
    Outputs::compute(g, inputs).check(want, g.name());
    let mut o = Outputs::new();
    let i = inputs;
    let mut group = c.benchmark_group("layers");
    let id =
        |what: &str, flops: u64| BenchmarkId::new(g.name(), format!("{what} b{BATCH} flop{flops}"));
    group.bench_function(id("affine 784-50 forward", product_flops(FIRST)), |b| {
        b.iter(|| FIRST.forward(g, black_box(&i.p1), black_box(&i.x1), &mut o.y1));
    });
    group.bench_function(
        id("affine 784-50 backward no-dx", product_flops(FIRST)),
        |b| {
            b.iter(|| {
                FIRST.backward(
                    g,
                    black_box(&i.p1),
                    black_box(&i.x1),
                    black_box(&i.dy1),
                    None,
                    &mut o.dp1,
                );
            });
        },
    );
    group.bench_function(id("affine 50-10 forward", product_flops(SECOND)), |b| {
        b.iter(|| SECOND.forward(g, black_box(&i.p2), black_box(&i.x2), &mut o.y2));
    });
    group.bench_function(
        id("affine 50-10 backward", 2 * product_flops(SECOND)),
        |b| {
            b.iter(|| {
                SECOND.backward(
                    g,
                    black_box(&i.p2),
                    black_box(&i.x2),
                    black_box(&i.dy2),
                    Some(&mut o.dx2),
                    &mut o.dp2,
                );
            });
        },
    );
    group.finish();
}

/// ReLU and softmax-with-loss: no product, so one row each (function `-`).
fn bench_elementwise(c: &mut Criterion) {
    let (hidden, classes) = (SIZES[1], SIZES[2]);
    let mut group = c.benchmark_group("layers");
    // Pre-activations of the hidden layer: about half negative.
    let z = uniform(BATCH * hidden, -1.0, 1.0, 7);
    let mut y = z.clone();
    Relu.forward_in_place(&mut y);
    let d = uniform(BATCH * hidden, -0.01, 0.01, 8);
    let id = |what: &str| BenchmarkId::new("-", format!("{what} b{BATCH}"));
    // In place: each call gets a fresh copy (made untimed, just before it, so it is as hot in
    // the cache as a GEMM's fresh output is in a real step), so every call sees negatives.
    group.bench_function(id("relu 50 forward_in_place"), |b| {
        b.iter_batched_ref(
            || z.clone(),
            |v| Relu.forward_in_place(v),
            BatchSize::PerIteration,
        );
    });
    group.bench_function(id("relu 50 backward_in_place"), |b| {
        b.iter_batched_ref(
            || d.clone(),
            |g| Relu.backward_in_place(black_box(&y), g),
            BatchSize::PerIteration,
        );
    });
    let softmax = SoftmaxWithLoss { classes };
    let logits = uniform(BATCH * classes, -3.0, 3.0, 9);
    let labels = labels(BATCH, classes, 10);
    let mut probs = vec![0.0f32; BATCH * classes];
    softmax.forward(&logits, Target::Labels(&labels), &mut probs);
    let mut dx = vec![0.0f32; BATCH * classes];
    group.bench_function(id("softmax-loss 10 forward"), |b| {
        b.iter(|| {
            softmax.forward(
                black_box(&logits),
                Target::Labels(black_box(&labels)),
                &mut probs,
            )
        });
    });
    group.bench_function(id("softmax-loss 10 backward"), |b| {
        b.iter(|| {
            softmax.backward(
                black_box(&probs),
                Target::Labels(black_box(&labels)),
                &mut dx,
            )
        });
    });
    group.finish();
}

fn layers(c: &mut Criterion) {
    let inputs = Inputs::new();
    let want = Outputs::compute(&Naive, &inputs);
    bench_affine(c, &Naive, &inputs, &want);
    #[cfg(feature = "matrixmultiply")]
    bench_affine(c, &manabi_matmul::MatrixMultiply, &inputs, &want);
    #[cfg(feature = "blas")]
    bench_affine(c, &manabi_matmul::Blas, &inputs, &want);
    bench_elementwise(c);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = layers
}
criterion_main!(benches);
