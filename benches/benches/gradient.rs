//! The seed's own comparison: one numerical gradient (central differences, two loss
//! evaluations per parameter: 79,520 for 784-50-10) against one backprop gradient on the same
//! batch, in f64 at batch 3 as in the book's gradient check.
//!
//! Ids are `gradient/<backend>/backprop …` and `gradient/<backend>/numerical …` with the GEMM
//! flops of each; `cargo xtask bench` prints the ratio of the two times. After timing, the
//! last numerical gradient is checked against backprop (the book's check), so both rows time
//! work that agrees.

use criterion::{BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main};
use manabi_benches::{SIZES, backprop_flops, labels, numerical_gradient_flops, param_count};
use manabi_layers::{
    Init, Input, Network, Plan, PlanConfig, Shape, Spec, Target, Training, Update,
};
use manabi_matmul::Gemm;
use manabi_tensor::Rng;
use std::hint::black_box;
use std::time::Duration;

/// The book's gradient check uses the first three training images.
const ROWS: usize = 3;
/// The book's central-difference step.
const H: f64 = 1e-4;

fn bench_gradient<G: Gemm<f64>>(c: &mut Criterion, g: &G) {
    let layers = [Spec::Affine(SIZES[1]), Spec::Relu, Spec::Affine(SIZES[2])];
    let plan = Plan::new(&PlanConfig {
        input: Shape::flat(SIZES[0]),
        layers: &layers,
        batch: ROWS,
        eval_batch: ROWS,
        training: Training::Backprop { optimizer_slots: 0 },
    })
    .expect("the book's network plans");
    let mut arena = vec![0.0f64; plan.total()];
    let mut net = Network::new(&plan, &mut arena).expect("arena sized by the plan");
    let mut backprop = Update::gradients(&plan).expect("the plan has a gradient buffer");
    net.init(Init::Book, &mut Rng::new(21));
    let mut rng = Rng::new(22);
    net.input_mut(ROWS)
        .iter_mut()
        .for_each(|v| *v = rng.uniform::<f64>());
    let labels = labels(ROWS, SIZES[2], 23);
    let target = Target::Labels(&labels);
    let net_id = format!("{}-{}-{} f64 b{ROWS}", SIZES[0], SIZES[1], SIZES[2]);

    let mut group = c.benchmark_group("gradient");
    let id = format!("backprop {net_id} flop{}", backprop_flops(&SIZES, ROWS));
    group.bench_function(BenchmarkId::new(g.name(), id), |b| {
        b.iter(|| net.train_step(g, Input::Arena(ROWS), black_box(target), &mut backprop));
    });
    // Seconds a call: the fewest samples criterion takes, one call each.
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(1));
    let mut numerical = vec![0.0f64; param_count(&SIZES)];
    let id = format!(
        "numerical {net_id} flop{}",
        numerical_gradient_flops(&SIZES, ROWS)
    );
    let mut timed = false;
    group.bench_function(BenchmarkId::new(g.name(), id), |b| {
        timed = true;
        b.iter(|| {
            net.numerical_gradient(
                g,
                Input::Arena(ROWS),
                black_box(target),
                0.0,
                H,
                &mut numerical,
            )
        });
    });
    group.finish();
    if !timed {
        // A filter left it out: there is nothing to check.
        return;
    }

    // The book's check, on what was timed: mean |backprop − numerical| per tensor is ~1e-10
    // there; a wrong gradient misses by the size of the gradient itself (~1e-3).
    net.train_step(g, Input::Arena(ROWS), target, &mut backprop);
    let worst = net
        .grads()
        .iter()
        .zip(&numerical)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f64, f64::max);
    assert!(
        worst < 1e-6,
        "{}: numerical and backprop gradients differ by up to {worst}",
        g.name()
    );
}

fn gradient(c: &mut Criterion) {
    // One backend for both, the fastest at these tiny products: matrixmultiply's loss at batch
    // 3 took half of Naive's time and less than OpenBLAS's (probed here, f64).
    #[cfg(feature = "matrixmultiply")]
    bench_gradient(c, &manabi_matmul::MatrixMultiply);
    #[cfg(not(feature = "matrixmultiply"))]
    bench_gradient(c, &manabi_matmul::Naive);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = gradient
}
criterion_main!(benches);
