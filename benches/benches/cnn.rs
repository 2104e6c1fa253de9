//! The book's SimpleConvNet (f32, batch 100): Conv2d and MaxPool2d forward and backward at its shapes, one Adam training step, and evaluation of 10,000 images, per GEMM backend.
//!
//! Groups and ids:
//! - `conv/<backend>/30@5x5 on 1x28x28 <pass> b100 flop<F>`: forward (`W·col` per sample)
//!   and backward (`dW = Σ dy·colᵀ`; a first layer computes no `dx`), and the backward of a
//!   conv with `dx` (`conv-dx`, a second layer 30→30 @3x3 on 30×12×12);
//! - `pool/-/2x2 on 30x24x24 <pass> b100`: max-pool forward (training, with the argmax) and
//!   backward, no product;
//! - `cnn-step/<backend>/simple-cnn adam b100 t1 flop<F>`: forward, backward and Adam;
//! - `cnn-eval/<backend>/simple-cnn 10000 images t1 flop<F>`: forward in evaluation mode,
//!   1,000 rows at a time.
//!
//! `F` counts the products' flops (2 per multiply-add). Before timing, each backend's
//! passes and step are checked against `Naive`'s.

use criterion::{BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main};
use manabi_benches::{SameBatch, labels, step, trainer, uniform};
use manabi_layers::{
    Conv2d, Init, Input, MaxPool2d, Mode, Network, Plan, PlanConfig, Shape, Spec, Training, Update,
};
use manabi_matmul::{Gemm, Naive};
use manabi_optim::Adam;
use manabi_tensor::Rng;
use std::hint::black_box;
use std::time::Duration;

const BATCH: usize = 100;
const EVAL_IMAGES: usize = 10_000;
const EVAL_ROWS: usize = 1000;
const INPUT: Shape = Shape::image(1, 28, 28);

/// conv 30@5x5 → ReLU → max-pool 2x2 → affine 100 → ReLU → affine 10.
const SIMPLE_CNN: [Spec; 6] = [
    Spec::Conv2d {
        filters: 30,
        kh: 5,
        kw: 5,
        stride: 1,
        pad: 0,
    },
    Spec::Relu,
    Spec::MaxPool2d {
        kh: 2,
        kw: 2,
        stride: 2,
    },
    Spec::Affine(100),
    Spec::Relu,
    Spec::Affine(10),
];

fn conv1() -> Conv2d {
    Conv2d::new(INPUT, 30, 5, 5, 1, 0).expect("SimpleConvNet's convolution")
}

/// A second convolution (30 → 30 @3x3, pad 1, on 30×12×12), whose backward computes `dx`.
fn conv2() -> Conv2d {
    Conv2d::new(Shape::image(30, 12, 12), 30, 3, 3, 1, 1).expect("a 3x3 convolution")
}

/// Flops of one sample's forward product of `l`: `2·filters·patch·pixels`.
fn conv_flops(l: &Conv2d) -> u64 {
    2 * (l.filters * l.patch() * l.pixels()) as u64
}

/// SimpleConvNet's product flops per image: (forward, training step).
fn simple_cnn_flops() -> (u64, u64) {
    let conv = conv_flops(&conv1());
    let (a1, a2) = (2 * 4320 * 100u64, 2 * 100 * 10u64);
    let forward = conv + a1 + a2;
    // Backward: conv dW only (a first layer), both affine layers dW and dx.
    (forward, forward + conv + 2 * a1 + 2 * a2)
}

fn plan(training: Training, rows: usize) -> Plan {
    Plan::new(&PlanConfig {
        input: INPUT,
        layers: &SIMPLE_CNN,
        batch: rows,
        eval_batch: rows,
        training,
    })
    .expect("SimpleConvNet plans")
}

/// The outputs of both convolutions' passes with backend `g` (for the check against Naive).
fn conv_passes<G: Gemm<f32>>(g: &G) -> Vec<Vec<f32>> {
    let mut out = Vec::new();
    for (l, first) in [(conv1(), true), (conv2(), false)] {
        let x = uniform(BATCH * l.c * l.h * l.w, 0.0, 1.0, 1);
        let p = uniform(l.param_len(), -0.1, 0.1, 2);
        let dy = uniform(BATCH * l.filters * l.pixels(), -0.01, 0.01, 3);
        let mut y = vec![0.0; dy.len()];
        let mut scratch = vec![0.0; l.scratch_len(true)];
        l.forward(g, &p, &x, &mut y, &mut scratch);
        let mut dp = vec![0.0; p.len()];
        let mut dx = vec![0.0; x.len()];
        let dx_arg = if first { None } else { Some(&mut dx[..]) };
        l.backward(g, &p, &x, &dy, dx_arg, &mut dp, &mut scratch);
        out.extend([y, dp, dx]);
    }
    out
}

fn assert_near(g: &str, what: &str, got: &[Vec<f32>], want: &[Vec<f32>], tol: f32) {
    for (a, b) in got.iter().zip(want) {
        let worst = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs() / (1.0 + y.abs()))
            .fold(0.0f32, f32::max);
        assert!(worst <= tol, "{g}: {what} differs from naive by {worst}");
    }
}

fn bench_conv<G: Gemm<f32>>(c: &mut Criterion, g: &G, want: &[Vec<f32>]) {
    assert_near(g.name(), "conv2d", &conv_passes(g), want, 1e-5);
    let mut group = c.benchmark_group("conv");
    for (l, name, first) in [
        (conv1(), "30@5x5 on 1x28x28", true),
        (conv2(), "30@3x3:p1 on 30x12x12", false),
    ] {
        let x = uniform(BATCH * l.c * l.h * l.w, 0.0, 1.0, 1);
        let p = uniform(l.param_len(), -0.1, 0.1, 2);
        let dy = uniform(BATCH * l.filters * l.pixels(), -0.01, 0.01, 3);
        let mut y = vec![0.0; dy.len()];
        let mut scratch = vec![0.0; l.scratch_len(true)];
        let (mut dp, mut dx) = (vec![0.0; p.len()], vec![0.0; x.len()]);
        let one = conv_flops(&l) * BATCH as u64;
        if first {
            group.bench_function(
                BenchmarkId::new(g.name(), format!("{name} forward b{BATCH} flop{one}")),
                |b| b.iter(|| l.forward(g, &p, black_box(&x), &mut y, &mut scratch)),
            );
        }
        let (pass, flops) = if first {
            ("backward dW", one)
        } else {
            ("backward dW dx", 2 * one)
        };
        group.bench_function(
            BenchmarkId::new(g.name(), format!("{name} {pass} b{BATCH} flop{flops}")),
            |b| {
                b.iter(|| {
                    let dx_arg = if first { None } else { Some(&mut dx[..]) };
                    l.backward(g, &p, black_box(&x), &dy, dx_arg, &mut dp, &mut scratch)
                })
            },
        );
    }
    group.finish();
}

fn bench_pool(c: &mut Criterion) {
    let l = MaxPool2d::new(Shape::image(30, 24, 24), 2, 2, 2).expect("SimpleConvNet's pooling");
    let x = uniform(BATCH * 30 * 24 * 24, -1.0, 1.0, 4);
    let outs = BATCH * 30 * 12 * 12;
    let (mut y, mut cache) = (vec![0.0; outs], vec![0.0; outs]);
    let dy = uniform(outs, -0.01, 0.01, 5);
    let mut dx = vec![0.0; x.len()];
    let mut group = c.benchmark_group("pool");
    group.bench_function(
        BenchmarkId::new("-", format!("2x2 on 30x24x24 forward b{BATCH}")),
        |b| b.iter(|| l.forward(Mode::Train, black_box(&x), &mut y, &mut cache)),
    );
    group.bench_function(
        BenchmarkId::new("-", format!("2x2 on 30x24x24 backward b{BATCH}")),
        |b| b.iter(|| l.backward(&cache, black_box(&dy), &mut dx)),
    );
    group.finish();
}

/// The parameters after three Adam steps from the book's initialisation with backend `g`.
fn three_steps<G: Gemm<f32>>(g: &G, x: &[f32], labels: &[usize]) -> Vec<f32> {
    let plan = plan(Training::Backprop { optimizer_slots: 2 }, BATCH);
    let mut arena = vec![0.0f32; plan.total()];
    let mut net = Network::new(&plan, &mut arena).expect("the arena fits");
    net.init(Init::Book, &mut Rng::new(1));
    let adam = Adam::new(0.001);
    let update = Update::optimizer(&plan, &adam, 1).expect("an Adam plan");
    let mut trainer = trainer(net, update);
    let mut batch = SameBatch {
        input: Input::Dense(x),
        labels,
    };
    for _ in 0..3 {
        step(&mut trainer, g, &mut batch);
    }
    trainer.net().params().to_vec()
}

fn bench_step<G: Gemm<f32>>(c: &mut Criterion, g: &G, want: &[f32]) {
    let x = uniform(BATCH * 784, 0.0, 1.0, 6);
    let labels = labels(BATCH, 10, 7);
    assert_near(
        g.name(),
        "the SimpleConvNet step",
        &[three_steps(g, &x, &labels)],
        &[want.to_vec()],
        1e-4,
    );
    let plan = plan(Training::Backprop { optimizer_slots: 2 }, BATCH);
    let mut arena = vec![0.0f32; plan.total()];
    let mut net = Network::new(&plan, &mut arena).expect("the arena fits");
    net.init(Init::Book, &mut Rng::new(1));
    let adam = Adam::new(0.001);
    let update = Update::optimizer(&plan, &adam, 1).expect("an Adam plan");
    let mut trainer = trainer(net, update);
    let mut batch = SameBatch {
        input: Input::Dense(&x),
        labels: &labels,
    };
    let flops = simple_cnn_flops().1 * BATCH as u64;
    let mut group = c.benchmark_group("cnn-step");
    group.bench_function(
        BenchmarkId::new(g.name(), format!("simple-cnn adam b{BATCH} t1 flop{flops}")),
        |b| b.iter(|| step(&mut trainer, g, black_box(&mut batch))),
    );
    group.finish();
}

fn bench_eval<G: Gemm<f32>>(c: &mut Criterion, g: &G) {
    let plan = plan(Training::Inference, EVAL_ROWS);
    let mut arena = vec![0.0f32; plan.total()];
    let mut net = Network::new(&plan, &mut arena).expect("the arena fits");
    net.init(Init::Book, &mut Rng::new(1));
    let x = uniform(EVAL_IMAGES * 784, 0.0, 1.0, 8);
    let labels = labels(EVAL_IMAGES, 10, 9);
    let flops = simple_cnn_flops().0 * EVAL_IMAGES as u64;
    let mut group = c.benchmark_group("cnn-eval");
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function(
        BenchmarkId::new(
            g.name(),
            format!("simple-cnn {EVAL_IMAGES} images t1 flop{flops}"),
        ),
        |b| b.iter(|| net.correct(g, black_box(&x), &labels)),
    );
    group.finish();
}

fn cnn(c: &mut Criterion) {
    bench_pool(c);
    let conv_want = conv_passes(&Naive);
    let x = uniform(BATCH * 784, 0.0, 1.0, 6);
    let step_want = three_steps(&Naive, &x, &labels(BATCH, 10, 7));
    // Naive is the reference; its whole-set evaluation takes seconds, so only its layers and
    // step are timed.
    bench_conv(c, &Naive, &conv_want);
    bench_step(c, &Naive, &step_want);
    #[cfg(feature = "matrixmultiply")]
    {
        bench_conv(c, &manabi_matmul::MatrixMultiply, &conv_want);
        bench_step(c, &manabi_matmul::MatrixMultiply, &step_want);
        bench_eval(c, &manabi_matmul::MatrixMultiply);
    }
    #[cfg(feature = "gemm")]
    {
        bench_conv(c, &manabi_matmul::FaerGemm, &conv_want);
        bench_step(c, &manabi_matmul::FaerGemm, &step_want);
        bench_eval(c, &manabi_matmul::FaerGemm);
    }
    #[cfg(feature = "blas")]
    {
        bench_conv(c, &manabi_matmul::Blas, &conv_want);
        bench_step(c, &manabi_matmul::Blas, &step_want);
        bench_eval(c, &manabi_matmul::Blas);
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = cnn
}
criterion_main!(benches);
