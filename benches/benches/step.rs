//! One whole training step of the book's 784-50-10 network (f32, batch 100): forward, backward
//! and the SGD update, per GEMM backend and thread count.
//!
//! Two groups: `step` (backprop into a gradient buffer, then a separate SGD update; what every
//! optimizer needs) and `step-fused` (the update inside backward, `W ← W − lr·xᵀ·dy` as one
//! product; what `manabi train` runs for plain SGD). Ids are
//! `step/<backend>/784-50-10 f32 b100 t<threads> flop15980000`. Naive, matrixmultiply
//! and gemm always run on one thread; OpenBLAS runs on the threads it read from
//! `OPENBLAS_NUM_THREADS` when it loaded, so `cargo xtask bench` runs this binary once with 1
//! and once with 2. Before timing, each backend's step is checked against `Naive`'s.
//!
//! A third group, `step-sparse`, is the fused step on a batch held as compressed rows, as
//! `manabi train` runs MNIST: 19 % of the pixels nonzero (MNIST's share) at random places.
//! Its `flop` count is the arithmetic actually done (the first layer's two products over the
//! nonzeros only), so its GFLOP/s are not comparable with the dense rows' — its time is.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use manabi_benches::{
    BATCH, SIZES, SameBatch, labels, step, step_flops, trainer as new_trainer, uniform,
};
use manabi_layers::{
    Init, Input, Mode, Network, Plan, PlanConfig, Shape, SparseBatch, Spec, Target, Training,
    Update,
};
use manabi_matmul::{Gemm, Naive};
use manabi_optim::Sgd;
use manabi_tensor::{CsrBuf, Rng};
use std::hint::black_box;
use std::time::Duration;

/// The book's learning rate.
const LR: f32 = 0.1;

/// The arena of a freshly initialized network with one batch of random pixels as its input.
fn fresh_arena() -> (Plan, Vec<f32>) {
    fresh_arena_for(Training::Backprop { optimizer_slots: 0 })
}

/// [`fresh_arena`] planned for `training`.
fn fresh_arena_for(training: Training) -> (Plan, Vec<f32>) {
    let layers = [Spec::Affine(SIZES[1]), Spec::Relu, Spec::Affine(SIZES[2])];
    let plan = Plan::new(&PlanConfig {
        input: Shape::flat(SIZES[0]),
        layers: &layers,
        batch: BATCH,
        eval_batch: BATCH,
        training,
    })
    .expect("the book's network plans");
    let mut arena = vec![0.0f32; plan.total()];
    let mut net = Network::new(&plan, &mut arena).expect("the arena has plan.total() elements");
    net.init(Init::Book, &mut Rng::new(1));
    net.input_mut(BATCH)
        .copy_from_slice(&uniform(BATCH * SIZES[0], 0.0, 1.0, 2));
    (plan, arena)
}

/// The loss and the parameters after `steps` steps with backend `g` from [`fresh_arena`].
fn run<G: Gemm<f32>>(g: &G, labels: &[usize], steps: u64) -> (f32, Vec<f32>) {
    let (plan, mut arena) = fresh_arena();
    let net = Network::new(&plan, &mut arena).expect("the arena has plan.total() elements");
    let sgd = Sgd::new(LR);
    let update = Update::optimizer(&plan, &sgd, 1).expect("SGD needs no state");
    let mut trainer = new_trainer(net, update);
    let mut batch = SameBatch {
        input: Input::Arena(BATCH),
        labels,
    };
    let mut loss = f32::NAN;
    for _ in 0..steps {
        loss = step(&mut trainer, g, &mut batch);
    }
    (loss, trainer.net().params().to_vec())
}

fn bench_step<G: Gemm<f32>>(c: &mut Criterion, g: &G, threads: usize, want: &(f32, Vec<f32>)) {
    let labels = labels(BATCH, SIZES[2], 3);
    // A fast wrong answer is not a result: three steps must end where Naive's do.
    let (loss, params) = run(g, &labels, 3);
    let worst = params
        .iter()
        .zip(&want.1)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        (loss - want.0).abs() <= 1e-4 * want.0.abs() && worst <= 1e-5,
        "{}: after 3 steps loss {loss} vs naive {}, max |param diff| {worst}",
        g.name(),
        want.0
    );

    let (plan, mut arena) = fresh_arena();
    let net = Network::new(&plan, &mut arena).expect("the arena has plan.total() elements");
    let sgd = Sgd::new(LR);
    let update = Update::optimizer(&plan, &sgd, 1).expect("SGD needs no state");
    let mut trainer = new_trainer(net, update);
    let mut batch = SameBatch {
        input: Input::Arena(BATCH),
        labels: &labels,
    };
    let id = format!(
        "{}-{}-{} f32 b{BATCH} t{threads} flop{}",
        SIZES[0],
        SIZES[1],
        SIZES[2],
        step_flops()
    );
    let mut group = c.benchmark_group("step");
    group.bench_function(BenchmarkId::new(g.name(), &id), |b| {
        b.iter(|| step(&mut trainer, g, black_box(&mut batch)));
    });
    group.finish();
    // Thousands of steps on one batch: the loss must still be a number.
    let t = trainer.progress().iteration;
    let last = trainer.net_mut().loss(
        g,
        Input::Arena(BATCH),
        Target::Labels(&labels),
        Mode::Train,
        0.0,
    );
    assert!(
        last.is_finite(),
        "{}: loss {last} after {t} steps",
        g.name()
    );

    let (plan, mut arena) = fresh_arena_for(Training::FusedSgd);
    let net = Network::new(&plan, &mut arena).expect("the arena has plan.total() elements");
    let fused = Update::fused_sgd(&plan, LR).expect("a fused-SGD plan");
    let mut trainer = new_trainer(net, fused);
    let mut group = c.benchmark_group("step-fused");
    group.bench_function(BenchmarkId::new(g.name(), id), |b| {
        b.iter(|| step(&mut trainer, g, black_box(&mut batch)));
    });
    group.finish();
    let last = trainer.net_mut().loss(
        g,
        Input::Arena(BATCH),
        Target::Labels(&labels),
        Mode::Train,
        0.0,
    );
    assert!(last.is_finite(), "{} fused: loss {last}", g.name());
}

/// MNIST's share of nonzero pixels (0.1912 over the training set).
const DENSITY: f64 = 0.19;

/// A batch of `BATCH` rows with [`DENSITY`] of the pixels nonzero at random places, dense and
/// as compressed rows with their transpose.
fn sparse_batch() -> (Vec<f32>, CsrBuf<f32>, CsrBuf<f32>) {
    let mut rng = Rng::new(4);
    let x: Vec<f32> = (0..BATCH * SIZES[0])
        .map(|_| {
            if rng.uniform_f64() < DENSITY {
                rng.range(0.01, 1.0)
            } else {
                0.0
            }
        })
        .collect();
    let mut rows = CsrBuf::new(BATCH, SIZES[0]).expect("a batch fits u32 offsets");
    for r in x.chunks(SIZES[0]) {
        rows.push_dense_row(r);
    }
    let mut cols = CsrBuf::new(SIZES[0], BATCH).expect("a batch fits u32 offsets");
    cols.transpose_from(rows.view());
    (x, rows, cols)
}

/// The fused step on [`sparse_batch`], checked first: with `Naive` it must be the dense
/// step bit for bit, with the others within rounding of it.
fn bench_sparse_step<G: Gemm<f32>>(c: &mut Criterion, g: &G) {
    let labels = labels(BATCH, SIZES[2], 3);
    let (x, rows, cols) = sparse_batch();
    let batch = SparseBatch::new(rows.view(), cols.view()).expect("a transpose of the batch");
    let three = |sparse: bool, g: &G| {
        let (plan, mut arena) = fresh_arena_for(Training::FusedSgd);
        let net = Network::new(&plan, &mut arena).expect("the arena has plan.total() elements");
        let fused = Update::fused_sgd(&plan, LR).expect("a fused-SGD plan");
        let mut trainer = new_trainer(net, fused);
        let input = if sparse {
            Input::Sparse(batch)
        } else {
            Input::Dense(&x)
        };
        let mut same = SameBatch {
            input,
            labels: &labels,
        };
        for _ in 0..3 {
            step(&mut trainer, g, &mut same);
        }
        trainer.net().params().to_vec()
    };
    let (dense, sparse) = (three(false, g), three(true, g));
    if g.name() == "naive" {
        assert!(
            dense == sparse,
            "naive: the sparse step is not the dense one bit for bit"
        );
    }
    let worst = dense
        .iter()
        .zip(&sparse)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        worst <= 1e-5,
        "{}: sparse and dense steps differ by {worst}",
        g.name()
    );

    let nnz = rows.view().nnz() as u64;
    let (d_hidden, classes) = (SIZES[1] as u64, SIZES[2] as u64);
    // x·W₁ and xᵀ·dy over the nonzeros; the second layer's forward, dW₂ and dx₂ dense.
    let flops = 2 * 2 * nnz * d_hidden + 3 * 2 * BATCH as u64 * d_hidden * classes;
    let (plan, mut arena) = fresh_arena_for(Training::FusedSgd);
    let net = Network::new(&plan, &mut arena).expect("the arena has plan.total() elements");
    let fused = Update::fused_sgd(&plan, LR).expect("a fused-SGD plan");
    let mut trainer = new_trainer(net, fused);
    let mut same = SameBatch {
        input: Input::Sparse(batch),
        labels: &labels,
    };
    let id = format!(
        "{}-{}-{} f32 b{BATCH} t1 flop{flops}",
        SIZES[0], SIZES[1], SIZES[2]
    );
    let mut group = c.benchmark_group("step-sparse");
    group.bench_function(BenchmarkId::new(g.name(), id), |b| {
        b.iter(|| step(&mut trainer, g, black_box(&mut same)));
    });
    group.finish();
    let last = trainer.net_mut().loss(
        g,
        Input::Arena(BATCH),
        Target::Labels(&labels),
        Mode::Train,
        0.0,
    );
    assert!(last.is_finite(), "{} sparse: loss {last}", g.name());
}

fn steps(c: &mut Criterion) {
    let labels = labels(BATCH, SIZES[2], 3);
    let want = run(&Naive, &labels, 3);
    bench_step(c, &Naive, 1, &want);
    bench_sparse_step(c, &Naive);
    #[cfg(feature = "matrixmultiply")]
    {
        bench_step(c, &manabi_matmul::MatrixMultiply, 1, &want);
        bench_sparse_step(c, &manabi_matmul::MatrixMultiply);
    }
    #[cfg(feature = "gemm")]
    {
        bench_step(c, &manabi_matmul::FaerGemm, 1, &want);
        bench_sparse_step(c, &manabi_matmul::FaerGemm);
    }
    #[cfg(feature = "blas")]
    {
        let threads = manabi_benches::blas_threads();
        bench_step(c, &manabi_matmul::Blas, threads, &want);
        // The sparse step's products other than the first layer's are small: one thread only.
        if threads == 1 {
            bench_sparse_step(c, &manabi_matmul::Blas);
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = steps
}
criterion_main!(benches);
