//! Evaluation of 70,000 images (all of MNIST's size) by the 784-50-10 network: forward pass and
//! arg-max, on 1 and 2 threads, per fast backend (f32).
//!
//! This mirrors `manabi-cli`'s `Evaluator` (not exported from its library): the images are
//! bytes, as MNIST's are held; each thread owns an inference-only arena planned for
//! [`EVAL_ROWS`] rows, copies the parameters in, and over a contiguous share of the rows
//! converts one chunk at a time into the arena's input and runs the forward pass and arg-max. Ids are
//! `eval/<backend>/70000 images t<threads> flop5558000000` (the GEMM flops of the forward
//! passes). The data is random: the labels are what the network itself predicts, so every
//! configuration must count (nearly) all 70,000 rows correct, which catches a thread that
//! skips or repeats a share. Naive is left out: it would take seconds per call (its speed at
//! this shape is in the `gemm` table).
//!
//! `eval-sparse` is the same on one thread (the worker of `manabi train` evaluates on one)
//! with 81 % of the pixels zero, as MNIST's, read as compressed rows of the whole set
//! (`Dataset::to_sparse`, built once, as `manabi train` does). Its `flop` count is the
//! arithmetic done (the first layer over the nonzeros only).

// Built without a fast backend, the bench has nothing to run.
#![cfg_attr(
    not(any(feature = "matrixmultiply", feature = "gemm", feature = "blas")),
    allow(dead_code, unused_imports, unused_mut)
)]

use criterion::{BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main};
use manabi_benches::{EVAL_IMAGES, EVAL_ROWS, SIZES, forward_flops, uniform};
use manabi_data::Dataset;
use manabi_layers::{
    Init, Input, Mode, Network, Plan, PlanConfig, Shape, SparseBatch, Spec, Training, argmax,
};
use manabi_matmul::Gemm;
use manabi_tensor::{Csr, Rng};
use std::time::Duration;

/// The inference plan each thread's arena follows.
fn plan() -> Plan {
    Plan::new(&PlanConfig {
        input: Shape::flat(SIZES[0]),
        layers: &[Spec::Affine(SIZES[1]), Spec::Relu, Spec::Affine(SIZES[2])],
        batch: EVAL_ROWS,
        eval_batch: EVAL_ROWS,
        training: Training::Inference,
    })
    .expect("the book's network plans")
}

/// What `net` predicts for every sample of `data` (dense forward passes of `EVAL_ROWS` rows).
fn predicted<G: Gemm<f32>>(net: &mut Network<'_, f32>, g: &G, data: &Dataset) -> Vec<usize> {
    let mut labels = Vec::with_capacity(data.len());
    let mut first = 0;
    while first < data.len() {
        let n = data.copy_rows(first, net.input_mut(EVAL_ROWS));
        labels.extend(
            net.forward(g, Input::Arena(n), Mode::Eval)
                .chunks_exact(SIZES[2])
                .map(argmax),
        );
        first += n;
    }
    labels
}

/// Rows of `logits` whose arg-max is their label.
fn count_right(logits: &[f32], labels: &[usize]) -> usize {
    logits
        .chunks_exact(SIZES[2])
        .zip(labels)
        .filter(|(row, l)| argmax(row) == **l)
        .count()
}

/// Correct predictions over `data`, split into one contiguous share per arena.
fn correct<G: Gemm<f32> + Sync>(
    g: &G,
    plan: &Plan,
    params: &[f32],
    arenas: &mut [Vec<f32>],
    data: &Dataset,
) -> usize {
    let labels = data.labels();
    let share = labels.len().div_ceil(arenas.len()).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = arenas
            .iter_mut()
            .zip((0..labels.len()).step_by(share))
            .map(|(arena, lo)| {
                scope.spawn(move || {
                    let hi = (lo + share).min(labels.len());
                    let mut net = Network::new(plan, arena).expect("arena sized by the plan");
                    net.params_mut().copy_from_slice(params);
                    let mut right = 0;
                    let mut first = lo;
                    while first < hi {
                        let n = data.copy_rows(first, net.input_mut(EVAL_ROWS.min(hi - first)));
                        right += count_right(
                            net.forward(g, Input::Arena(n), Mode::Eval),
                            &labels[first..first + n],
                        );
                        first += n;
                    }
                    right
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .sum()
    })
}

/// Random byte pixels with the labels He-initialized weights predict for them, and those
/// weights.
struct Data {
    set: Dataset,
    params: Vec<f32>,
}

impl Data {
    fn new<G: Gemm<f32>>(g: &G) -> Self {
        let plan = plan();
        let mut arena = vec![0.0f32; plan.total()];
        let mut net = Network::new(&plan, &mut arena).expect("arena sized by the plan");
        net.init(Init::He, &mut Rng::new(11));
        let bytes: Vec<u8> = uniform(EVAL_IMAGES * SIZES[0], 0.0, 256.0, 12)
            .iter()
            .map(|&v| v as u8)
            .collect();
        // Labels are filled in below; any valid ones make the set.
        let unlabelled = Dataset::from_bytes(bytes.clone(), vec![SIZES[0]], vec![0; EVAL_IMAGES])
            .expect("lengths agree");
        let labels = predicted(&mut net, g, &unlabelled);
        Data {
            set: Dataset::from_bytes(bytes, vec![SIZES[0]], labels).expect("lengths agree"),
            params: net.params().to_vec(),
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
        let got = correct(g, &plan, &data.params, &mut arenas, &data.set);
        // Rows whose top two logits differ by rounding may flip between backends.
        assert!(
            got >= EVAL_IMAGES - EVAL_IMAGES / 1000,
            "{} on {threads} threads: {got} of {EVAL_IMAGES} agree with the labels",
            g.name()
        );
        let id = format!("{EVAL_IMAGES} images t{threads} flop{flops}");
        group.bench_function(BenchmarkId::new(g.name(), id), |b| {
            b.iter(|| correct(g, &plan, &data.params, &mut arenas, &data.set));
        });
    }
    group.finish();
}

/// Correct predictions over `data` read from `rows` (its compressed rows), one thread.
fn correct_sparse<G: Gemm<f32>>(
    g: &G,
    plan: &Plan,
    params: &[f32],
    arena: &mut [f32],
    rows: Csr<'_, f32>,
    labels: &[usize],
) -> usize {
    let mut net = Network::new(plan, arena).expect("arena sized by the plan");
    net.params_mut().copy_from_slice(params);
    let mut right = 0;
    let mut first = 0;
    while first < labels.len() {
        let n = EVAL_ROWS.min(labels.len() - first);
        let logits = net.forward(
            g,
            Input::Sparse(SparseBatch::rows_only(rows.row_range(first, n))),
            Mode::Eval,
        );
        right += count_right(logits, &labels[first..first + n]);
        first += n;
    }
    right
}

fn bench_eval_sparse<G: Gemm<f32>>(c: &mut Criterion, g: &G) {
    let plan = plan();
    let mut arena = vec![0.0f32; plan.total()];
    let mut net = Network::new(&plan, &mut arena).expect("arena sized by the plan");
    net.init(Init::He, &mut Rng::new(11));
    let params = net.params().to_vec();
    let mut rng = Rng::new(13);
    let bytes: Vec<u8> = (0..EVAL_IMAGES * SIZES[0])
        .map(|_| {
            if rng.uniform_f64() < 0.19 {
                1 + rng.below(255) as u8
            } else {
                0
            }
        })
        .collect();
    let unlabelled =
        Dataset::from_bytes(bytes, vec![SIZES[0]], vec![0; EVAL_IMAGES]).expect("lengths agree");
    let all = unlabelled.to_sparse::<f32>().expect("fits u32 offsets");
    // The labels are what the dense forward pass predicts: the sparse one must agree.
    let labels = predicted(&mut net, g, &unlabelled);
    let got = correct_sparse(g, &plan, &params, &mut arena, all.view(), &labels);
    assert!(
        got >= EVAL_IMAGES - EVAL_IMAGES / 1000,
        "{} sparse: {got} of {EVAL_IMAGES} agree with the dense labels",
        g.name()
    );
    let flops =
        2 * all.view().nnz() as u64 * SIZES[1] as u64 + forward_flops(&SIZES[1..], EVAL_IMAGES);
    let mut group = c.benchmark_group("eval-sparse");
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    let id = format!("{EVAL_IMAGES} images t1 flop{flops}");
    group.bench_function(BenchmarkId::new(g.name(), id), |b| {
        b.iter(|| correct_sparse(g, &plan, &params, &mut arena, all.view(), &labels));
    });
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
    bench_eval_sparse(c, g);
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
