//! Evaluation of 70,000 images (all of MNIST's size) by the 784-50-10 network: forward pass and
//! arg-max, on 1 and 2 threads, per fast backend (f32).
//!
//! This mirrors `manabi-cli`'s `Evaluator` (not exported from its library): each thread owns
//! an inference-only arena planned for 2000 rows, copies the parameters in, and runs
//! `Mlp::correct` over a contiguous share of the rows. Ids are
//! `eval/<backend>/70000 images t<threads> flop5558000000` (the GEMM flops of the forward
//! passes). The data is random: the labels are what the network itself predicts, so every
//! configuration must count (nearly) all 70,000 rows correct, which catches a thread that
//! skips or repeats a share. Naive is left out: it would take seconds per call (its speed at
//! this shape is in the `gemm` table).

// Built without a fast backend, the bench has nothing to run.
#![cfg_attr(
    not(any(feature = "matrixmultiply", feature = "gemm", feature = "blas")),
    allow(dead_code, unused_imports, unused_mut)
)]

use criterion::{BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main};
use manabi_benches::{EVAL_IMAGES, EVAL_ROWS, SIZES, forward_flops, uniform};
use manabi_layers::{Activation, Init, Mlp, MlpConfig, MlpPlan, Training, argmax};
use manabi_matmul::Gemm;
use manabi_tensor::Rng;
use std::time::Duration;

/// The inference plan each thread's arena follows.
fn plan() -> MlpPlan {
    MlpPlan::new(&MlpConfig {
        sizes: &SIZES,
        activation: Activation::Relu,
        batch: EVAL_ROWS,
        eval_batch: EVAL_ROWS,
        training: Training::Inference,
    })
    .expect("the book's network plans")
}

/// Correct predictions over `x`/`labels`, split into one contiguous share per arena.
fn correct<G: Gemm<f32> + Sync>(
    g: &G,
    plan: MlpPlan,
    params: &[f32],
    arenas: &mut [Vec<f32>],
    x: &[f32],
    labels: &[usize],
) -> usize {
    let d_in = plan.d_in();
    let share = labels.len().div_ceil(arenas.len()).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = arenas
            .iter_mut()
            .zip(x.chunks(share * d_in).zip(labels.chunks(share)))
            .map(|(arena, (xs, ls))| {
                scope.spawn(move || {
                    let mut net = Mlp::new(plan, arena).expect("arena sized by the plan");
                    net.params_mut().copy_from_slice(params);
                    net.correct(g, xs, ls)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .sum()
    })
}

/// Random pixels, He-initialized weights, and the labels those weights predict.
struct Data {
    x: Vec<f32>,
    params: Vec<f32>,
    labels: Vec<usize>,
}

impl Data {
    fn new<G: Gemm<f32>>(g: &G) -> Self {
        let plan = plan();
        let mut arena = vec![0.0f32; plan.total()];
        let mut net = Mlp::new(plan, &mut arena).expect("arena sized by the plan");
        net.init(Init::He, &mut Rng::new(11));
        let x = uniform(EVAL_IMAGES * SIZES[0], 0.0, 1.0, 12);
        let mut labels = Vec::with_capacity(EVAL_IMAGES);
        for xs in x.chunks(EVAL_ROWS * SIZES[0]) {
            let logits = net.predict(g, xs);
            labels.extend(logits.chunks_exact(SIZES[2]).map(argmax));
        }
        Data {
            x,
            params: net.params().to_vec(),
            labels,
        }
    }
}

fn bench_eval<G: Gemm<f32> + Sync>(c: &mut Criterion, g: &G, data: &Data) {
    let plan = plan();
    let flops = forward_flops(&SIZES, EVAL_IMAGES);
    let mut group = c.benchmark_group("eval");
    // 5.6 GFLOP per call: tens to hundreds of ms, so the same count per sample.
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    for threads in [1usize, 2] {
        let mut arenas = vec![vec![0.0f32; plan.total()]; threads];
        let got = correct(g, plan, &data.params, &mut arenas, &data.x, &data.labels);
        // Rows whose top two logits differ by rounding may flip between backends.
        assert!(
            got >= EVAL_IMAGES - EVAL_IMAGES / 1000,
            "{} on {threads} threads: {got} of {EVAL_IMAGES} agree with the labels",
            g.name()
        );
        let id = format!("{EVAL_IMAGES} images t{threads} flop{flops}");
        group.bench_function(BenchmarkId::new(g.name(), id), |b| {
            b.iter(|| correct(g, plan, &data.params, &mut arenas, &data.x, &data.labels));
        });
    }
    group.finish();
}

fn eval(c: &mut Criterion) {
    // The labels come from the first fast backend built; every other one must agree with them.
    let mut data: Option<Data> = None;
    #[cfg(feature = "matrixmultiply")]
    labelled_eval(c, &manabi_matmul::MatrixMultiply, &mut data);
    #[cfg(feature = "gemm")]
    labelled_eval(c, &manabi_matmul::FaerGemm, &mut data);
    #[cfg(feature = "blas")]
    labelled_eval(c, &manabi_matmul::Blas, &mut data);
    // Without a fast backend there is nothing worth timing here.
    let _ = (c, data);
}

/// [`bench_eval`] with `data`, made by `g` first if no backend has made it yet.
fn labelled_eval<G: Gemm<f32> + Sync>(c: &mut Criterion, g: &G, data: &mut Option<Data>) {
    let data = data.get_or_insert_with(|| Data::new(g));
    bench_eval(c, g, data);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = eval
}
criterion_main!(benches);
