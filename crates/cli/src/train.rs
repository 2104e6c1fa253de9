//! `manabi train`: the book's training loop with progress, per-epoch lines, metrics, chart, weights,
//! checkpoints and `--resume`.
//!
//! Faults are handled so that nothing already written is lost:
//! - the output directory is probed before the data is loaded (writable) and again before the
//!   first iteration with a file as large as everything the run will write (free space);
//! - every iteration checks the loss and every weight: a NaN or infinity stops the run with the
//!   iteration and the first bad tensor named, before anything is written, so the last
//!   checkpoint stays as it was;
//! - checkpoints and outputs are written atomically (temporary file, fsync, rename).

use crate::backend::{BackendArg, default_backend};
use crate::chart::{self, EpochPoint};
use crate::error::Context;
use crate::evaluate::Evaluator;
use crate::feed::Feeder;
use crate::model::{self, Elem};
use crate::parallel::Twin;
use crate::{ActivationArg, CliError, InputArg, ModelArg, SamplingArg, TrainArgs, with_backend};
use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use manabi_cli::checkpoint::{self, Checkpoint, MetricRow, Progress, RunConfig, Snapshot};
use manabi_cli::stack::{Stack, data_shape};
use manabi_data::{Batcher, Sampling, TrainTest, Verify, gather_rows};
use manabi_layers::{
    Input, Network, NoOptimizer, Plan, Shape, SparseBatch, Spec, Target, Training, Update,
};
use manabi_matmul::Gemm;
use manabi_optim::AnyOptimizer;
use manabi_tensor::{Csr, CsrBuf, Real, Rng};
use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::sync::mpsc;
use std::time::Instant;

/// Loads the data the flags point at (all of it; `--train-limit` cuts the training set after).
pub fn load_data(data: &crate::DataArgs) -> Result<TrainTest, CliError> {
    let dir = manabi_data::find_data_dir(data.data_dir.as_deref())?;
    let verify = if data.no_verify {
        Verify::Skip
    } else {
        Verify::Mnist
    };
    let t0 = Instant::now();
    let sets = manabi_data::load(&dir, verify)?;
    println!(
        "data: {} ({} training, {} test samples of {} features, {} classes; loaded in {:.2} s)",
        dir.display(),
        sets.train.len(),
        sets.test.len(),
        sets.train.features(),
        sets.classes,
        t0.elapsed().as_secs_f64()
    );
    Ok(sets)
}

/// Files this command writes into `--out`, whose temporary twins a killed run may leave behind.
const OUTPUTS: [&str; 5] = [
    "model.safetensors",
    "metrics.csv",
    checkpoint::CHECKPOINT_FILE,
    // The write probe's name starts with a dot already, so its twin starts with two.
    ".manabi-write-test",
    "manabi-space-probe",
];

/// Checks that `out` can be written before any time is spent, and removes the temporary
/// files a killed run left behind.
fn prepare_out(out: &Path) -> Result<(), CliError> {
    fs::create_dir_all(out).context(|| format!("creating output directory {}", out.display()))?;
    remove_stale_temporaries(out);
    let probe = out.join(".manabi-write-test");
    model::write_atomic(&probe, &[0u8; 4096]).map_err(|e| {
        CliError::Output(format!(
            "output directory {} is not writable: {e}",
            out.display()
        ))
    })?;
    fs::remove_file(&probe).context(|| format!("cleaning up {}", probe.display()))
}

/// Removes `.<output>.tmp-<pid>` files (and `.accuracy.tmp-<pid>.png`) whose writer is no
/// longer running. Where there is no `/proc` to ask, nothing is removed.
fn remove_stale_temporaries(out: &Path) {
    let Ok(entries) = fs::read_dir(out) else {
        return;
    };
    if !Path::new("/proc/self").exists() {
        return;
    }
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let pid = OUTPUTS
            .iter()
            .find_map(|o| name.strip_prefix(&format!(".{o}.tmp-")))
            .or_else(|| {
                name.strip_prefix(".accuracy.tmp-")
                    .and_then(|r| r.strip_suffix(".png"))
            });
        if let Some(pid) = pid.and_then(|p| p.parse::<u32>().ok())
            && pid != std::process::id()
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Bytes allowed for the chart: a PNG holds at most about its raw pixels (1000×420 RGB)
/// plus framing; the charts written are typically 240 KiB.
const CHART_BYTES: u64 = 1000 * 420 * 3 + (64 << 10);

/// Writes and removes a file as large as everything the run will write, so that a full disk
/// (or a file-size limit) is reported before training rather than after.
///
/// A probe beats asking for the free space: it needs no platform call, and it also meets
/// quotas and `ulimit -f`.
fn check_space(out: &Path, bytes: u64) -> Result<(), CliError> {
    let probe = out.join(format!(".manabi-space-probe.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = File::create(&probe)?;
        let block = vec![0u8; 1 << 16];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(block.len() as u64) as usize;
            f.write_all(&block[..n])?;
            left -= n as u64;
        }
        f.sync_all()
    })();
    let _ = fs::remove_file(&probe);
    result.map_err(|e| {
        CliError::Output(format!(
            "output directory {} has no room for the {:.1} MiB this run writes (weights, checkpoint, chart): {e}",
            out.display(),
            bytes as f64 / (1u64 << 20) as f64
        ))
    })
}

/// `manabi train`; returns the rows it wrote to `metrics.csv` (for `manabi experiment`).
pub fn run(args: &TrainArgs) -> Result<Vec<MetricRow>, CliError> {
    if let Some(dir) = &args.resume {
        return resume(args, dir);
    }
    prepare_out(&args.out)?;
    // A typo in --net is reported before the data is loaded (the widths come with it).
    if let Some(text) = &args.net {
        Stack::parse(Shape::flat(1), text)?;
    }
    let mut sets = load_data(&args.data)?;
    let train_limit = args.train_limit.map(|n| n as usize);
    limit_train(&mut sets, train_limit)?;
    let batch = args.batch as usize;
    let iter_per_epoch = (sets.train.len() / batch).max(1) as u64;
    let features = sets.train.features();
    let model = args.model.unwrap_or(ModelArg::Mlp);
    let (optimizer, lr, init, epochs, eval_samples) = model.protocol();
    let net_text = match (&args.net, args.model) {
        (Some(text), _) => Some(text.clone()),
        (None, Some(m)) if m != ModelArg::Mlp => Some(m.net(sets.classes)),
        (None, _) => None,
    };
    let stack = match &net_text {
        Some(text) => {
            let stack = Stack::parse(data_shape(&sets.train), text)?;
            if stack.outputs() != sets.classes {
                return Err(CliError::Usage(format!(
                    "--net ends with {} outputs, but the data has {} classes (end it with affine:{})",
                    stack.outputs(),
                    sets.classes,
                    sets.classes
                )));
            }
            stack
        }
        None => {
            let hidden: Vec<usize> = args.hidden.iter().map(|&h| h as usize).collect();
            let activation = match args.activation {
                ActivationArg::Relu => Spec::Relu,
                ActivationArg::Sigmoid => Spec::Sigmoid,
            };
            Stack::mlp(features, &hidden, sets.classes, activation)
        }
    };
    let backend = args
        .backend
        .unwrap_or_else(|| default_backend(stack.reads_images()));
    let starts_affine = matches!(stack.layers.first(), Some(Spec::Affine(_)));
    let (sparse, zeros) = match args.input {
        // Only an affine first layer reads sparse rows; `auto` does not ask the others.
        None | Some(InputArg::Auto) if !starts_affine => (false, None),
        flag => InputArg::sparse(flag, &sets.train),
    };
    if sparse && !starts_affine {
        return Err(CliError::Usage(format!(
            "--input sparse needs a network that starts with an affine layer, not {}",
            stack
                .layers
                .first()
                .map_or(String::new(), |s| s.to_string())
        )));
    }
    let config = RunConfig {
        stack: stack.clone(),
        batch,
        lr: args.lr.unwrap_or(lr),
        weight_decay: args.weight_decay,
        iters: args
            .iters
            .or(args
                .epochs
                .or(epochs)
                .map(|e| e.saturating_mul(iter_per_epoch)))
            .unwrap_or(10_000),
        optimizer: args.optimizer.unwrap_or(optimizer).name().to_string(),
        init: args.init.unwrap_or(init),
        sampling: match args.sampling {
            SamplingArg::Random => Sampling::Random,
            SamplingArg::Shuffle => Sampling::EpochShuffle,
        },
        seed: args.seed,
        f64: args.f64,
        backend: backend_name(backend),
        sparse,
        train_len: sets.train.len(),
        train_limit,
        checkpoint_every: args.checkpoint_every,
        eval_samples: args.eval_samples.or(eval_samples).map(|n| n as usize),
        replicas: replicas(&stack, crate::threads(args.threads), sparse, batch),
    };
    dispatch(
        &config,
        backend,
        &args.out,
        &sets,
        args.threads,
        zeros,
        None,
    )
}

/// Networks to split each batch between: two (data parallelism, see `parallel`) for a
/// convolutional stack on dense input with a second thread and at least two rows a batch;
/// one for the rest. An MLP's step is too short to gain from the hand-over, and BatchNorm's
/// batch statistics would be per half.
fn replicas(stack: &Stack, threads: usize, sparse: bool, batch: usize) -> usize {
    let batch_norm = stack.layers.iter().any(|s| matches!(s, Spec::BatchNorm));
    if threads > 1 && stack.reads_images() && !batch_norm && !sparse && batch > 1 {
        2
    } else {
        1
    }
}

/// Keeps the first `limit` training samples (`--train-limit`), as the book's experiments
/// take `x_train[:1000]`.
///
/// # Errors
/// A limit of zero.
fn limit_train(sets: &mut TrainTest, limit: Option<usize>) -> Result<(), CliError> {
    if let Some(n) = limit {
        sets.train.truncate(n)?;
        println!(
            "training on the first {} training samples",
            sets.train.len()
        );
    }
    Ok(())
}

/// The name a backend flag value has, which is also its `Gemm::name`.
fn backend_name(b: BackendArg) -> String {
    b.to_possible_value()
        .map_or_else(String::new, |v| v.get_name().to_string())
}

/// `manabi train --resume DIR`: the configuration comes from the checkpoint, outputs go to DIR.
fn resume(args: &TrainArgs, dir: &Path) -> Result<Vec<MetricRow>, CliError> {
    prepare_out(dir)?;
    let ckpt = checkpoint::load(dir)?;
    let mut config = ckpt.config.clone();
    let backend = BackendArg::from_str(&config.backend, false).map_err(|_| {
        CliError::Usage(format!(
            "the checkpoint was trained with the {:?} backend, which this manabi was built without (see the blas, gemm and matrixmultiply features)",
            config.backend
        ))
    })?;
    if args.checkpoint_every.is_some() {
        config.checkpoint_every = args.checkpoint_every;
    }
    let mut sets = load_data(&args.data)?;
    limit_train(&mut sets, config.train_limit)?;
    config.check_data(sets.train.features(), sets.classes, sets.train.len())?;
    println!(
        "resuming {} at iteration {} of {}",
        checkpoint::path_in(dir).display(),
        ckpt.progress.iteration,
        config.iters
    );
    dispatch(&config, backend, dir, &sets, args.threads, None, Some(ckpt))
}

fn dispatch(
    config: &RunConfig,
    backend: BackendArg,
    out: &Path,
    sets: &TrainTest,
    threads: Option<u32>,
    zeros: Option<f64>,
    ckpt: Option<Checkpoint>,
) -> Result<Vec<MetricRow>, CliError> {
    let threads = crate::threads(threads);
    let input = (config.sparse, zeros);
    if config.f64 {
        with_backend!(backend, g => train::<f64, _>(config, out, sets, &g, threads, input, ckpt))
    } else {
        with_backend!(backend, g => train::<f32, _>(config, out, sets, &g, threads, input, ckpt))
    }
}

/// The first non-finite parameter as (tensor name, index in it, value), if any.
///
/// The common case (all finite) is one pass of independent lane sums, which vectorises: `x·0`
/// is 0 for a finite `x` and NaN for an infinity or a NaN, and a NaN survives any sum. Two
/// arrays of 8 lanes, filled from the halves of each 16-value chunk, compile to clean vector
/// code (about 4 µs for 784-50-10; one array of 16 lanes took 13 µs, measured).
fn first_non_finite<T: Real>(plan: &Plan, params: &[T]) -> Option<(String, usize, T)> {
    let (mut lo, mut hi) = ([T::ZERO; 8], [T::ZERO; 8]);
    let chunks = params.chunks_exact(16);
    let tail = chunks.remainder();
    for c in chunks {
        let (a, b) = c.split_at(8);
        for k in 0..8 {
            lo[k] += a[k] * T::ZERO;
            hi[k] += b[k] * T::ZERO;
        }
    }
    if lo.iter().chain(&hi).all(|l| l.is_finite()) && tail.iter().all(|x| x.is_finite()) {
        return None;
    }
    let i = params.iter().position(|x| !x.is_finite())?;
    plan.param_at(i)
        .map(|(t, at)| (t.name.to_string(), at, params[i]))
}

/// One evaluation point: the row's accuracies over the whole training and test sets.
fn evaluate_row<T: Real, G: Gemm<T> + Sync>(
    ev: &mut Evaluator<T>,
    mm: &G,
    params: &[T],
    row: MetricRow,
    sets: &TrainTest,
    rows: Option<(Csr<'_, T>, Csr<'_, T>)>,
) -> MetricRow {
    MetricRow {
        train_acc: ev.accuracy(mm, params, &sets.train, rows.map(|r| r.0)),
        test_acc: ev.accuracy(mm, params, &sets.test, rows.map(|r| r.1)),
        ..row
    }
}

/// Prints an evaluated row like the book and keeps it.
fn record(bar: &ProgressBar, metrics: &mut Vec<MetricRow>, row: MetricRow, iter_per_epoch: u64) {
    bar.suspend(|| {
        println!(
            "epoch {:>3}  iter {:>6}  train acc {:.4}  test acc {:.4}  loss {:.4}  ({:.1} s)",
            (row.iteration - 1) / iter_per_epoch,
            row.iteration,
            row.train_acc,
            row.test_acc,
            row.loss,
            row.elapsed
        )
    });
    metrics.push(row);
}

/// Waits for every evaluation handed out so far.
fn drain(
    done: &mpsc::Receiver<MetricRow>,
    pending: &mut usize,
    bar: &ProgressBar,
    metrics: &mut Vec<MetricRow>,
    iter_per_epoch: u64,
) -> Result<(), CliError> {
    while *pending > 0 {
        let row = done
            .recv()
            .map_err(|_| CliError::Worker("the evaluation thread stopped"))?;
        *pending -= 1;
        record(bar, metrics, row, iter_per_epoch);
    }
    Ok(())
}

/// The run's update: plain SGD fused into backward, or another optimizer after it.
enum Step<'o, T> {
    Fused(Update<'static, T, NoOptimizer>),
    Optimizer(Update<'o, T, AnyOptimizer<T>>),
}

impl<T: Real> Step<'_, T> {
    /// One training step on `input`.
    fn step(
        &mut self,
        net: &mut Network<'_, T>,
        mm: &impl Gemm<T>,
        input: Input<'_, T>,
        target: Target<'_, T>,
    ) -> T {
        match self {
            Step::Fused(u) => net.train_step(mm, input, target, u),
            Step::Optimizer(u) => net.train_step(mm, input, target, u),
        }
    }
}

/// The parameters followed by the running statistics: what an evaluation reads.
fn weights<T: Real>(net: &Network<'_, T>) -> Vec<T> {
    net.params().iter().chain(net.stats()).copied().collect()
}

fn train<T: Elem, G: Gemm<T> + Sync>(
    config: &RunConfig,
    out: &Path,
    sets: &TrainTest,
    mm: &G,
    threads: usize,
    (sparse, zeros): (bool, Option<f64>),
    ckpt: Option<Checkpoint>,
) -> Result<Vec<MetricRow>, CliError> {
    let (train, test) = (&sets.train, &sets.test);
    // The per-epoch evaluations read the whole sets or, with `--eval-samples N`, their first
    // N samples (the book's convnet trainer); the final test accuracy reads the whole set.
    let subset;
    let eval_sets = match config.eval_samples {
        Some(n) if n < train.len() || n < test.len() => {
            let mut first = sets.clone();
            first.train.truncate(n)?;
            first.test.truncate(n)?;
            subset = first;
            &subset
        }
        _ => sets,
    };
    let whole_evals = std::ptr::eq(eval_sets, sets);
    let stack = &config.stack;
    let batch = config.batch;
    // The book's weight decay is the network's (weights only, in the loss), not the
    // optimizer's (every parameter): the optimizer gets none.
    let opt = AnyOptimizer::<T>::from_name(&config.optimizer, T::from_f64(config.lr))?;
    opt.validate()?;
    let decay = T::from_f64(config.weight_decay);
    let iter_per_epoch = (train.len() / batch).max(1) as u64;
    let iters = config.iters;
    // Plain SGD, the book's, runs fused into the backward pass: each layer's update is the
    // weight-gradient product itself (`W ← (1 − lr·λ)·W − lr·xᵀ·dy`, one product with α = −lr),
    // so no gradient buffer is written and read back. Other optimizers need the gradients whole.
    // Data-parallel steps average gradients, so they need them whole.
    let split = config.replicas > 1;
    let fused_lr = match &opt {
        AnyOptimizer::Sgd(sgd) if !split => Some(sgd.lr),
        _ => None,
    };
    if split && stack.layers.iter().any(|s| matches!(s, Spec::BatchNorm)) {
        return Err(CliError::Usage(
            "a data-parallel run (replicas 2) cannot hold BatchNorm, whose batch statistics would be per half".into(),
        ));
    }
    if split && sparse {
        return Err(CliError::Usage(
            "a data-parallel run (replicas 2) reads dense rows, not sparse ones".into(),
        ));
    }
    // Each of the replicas' arenas holds its share of a batch.
    let plan = if split {
        let rows = batch.div_ceil(config.replicas);
        stack.plan(
            rows,
            rows,
            Training::Backprop {
                optimizer_slots: config.slots()?,
            },
        )?
    } else {
        config.plan(fused_lr.is_some())?
    };
    let name = stack.short();
    println!(
        "network: {}, {} lr {}{}, batch {batch}, {iters} iterations ({:.2} epochs of {iter_per_epoch}), seed {}",
        stack.describe(),
        opt.name(),
        config.lr,
        if config.weight_decay > 0.0 {
            format!(", weight decay {}", config.weight_decay)
        } else {
            String::new()
        },
        iters as f64 / iter_per_epoch as f64,
        config.seed
    );
    let (p, g, s, a) = plan.breakdown();
    // With more than one thread, whole-set evaluations run on a worker thread on snapshots of
    // the parameters while training goes on: the book's numbers, off the critical path.
    // (A data-parallel run resumed with `--threads 1` keeps its replicas and this worker,
    // which hands them whole batches, so that it ends as it would have.)
    let background = threads > 1 || split;
    // Either way one thread evaluates: the worker on the second core, a chunk at a time
    // between batches, or this thread inline.
    let evaluator = Evaluator::<T>::new(stack, 1)?;
    // Sparse input: both sets become compressed rows once (MNIST: 10.5 million nonzeros, about
    // 50 ms); batches copy rows from there and evaluations read them in place.
    let sparse_sets = if sparse {
        Some((train.to_sparse::<T>()?, test.to_sparse::<T>()?))
    } else {
        None
    };
    let rows = sparse_sets.as_ref().map(|(a, b)| (a.view(), b.view()));
    let input = match (rows, zeros) {
        (Some((a, b)), z) => format!(
            "sparse rows ({}{:.1} M nonzeros, {:.0} MB)",
            z.map_or(String::new(), |z| format!("{:.0} % zeros, ", 100.0 * z)),
            (a.nnz() + b.nnz()) as f64 / 1e6,
            ((a.nnz() + b.nnz()) * (4 + T::BYTES)) as f64 / 1e6
        ),
        (None, Some(z)) => format!("dense rows ({:.0} % zeros)", 100.0 * z),
        (None, None) => "dense rows".to_string(),
    };
    let evaluation = format!(
        "on {} thread{}{}",
        evaluator.threads(),
        if evaluator.threads() == 1 { "" } else { "s" },
        if background { " in the background" } else { "" }
    );
    let arenas = if split {
        format!(
            "{} data-parallel arenas of {} rows",
            config.replicas,
            plan.batch()
        )
    } else {
        "arena".to_string()
    };
    println!(
        "backend: {} ({}), input as {input}, evaluation {evaluation}; {arenas}: {} elements, {:.1} KiB (parameters {p}, gradients {g}, optimizer state {s}, activations {a})",
        mm.name(),
        T::NAME,
        plan.total(),
        plan.bytes::<T>() as f64 / 1024.0
    );
    // What the run will write at most: the weights, two checkpoints while one replaces the
    // other (weights, optimizer state, batcher permutation, metrics), the chart and the CSV.
    let evals = iters / iter_per_epoch + 2;
    let weight_bytes = (p * T::BYTES) as u64 + 4096;
    let perm = match config.sampling {
        Sampling::EpochShuffle => train.len() as u64,
        Sampling::Random => 0,
    };
    let ckpt_bytes = if config.checkpoint_every.is_some() {
        weight_bytes + (s * T::BYTES) as u64 + 8 * (perm + 10) + 48 * evals
    } else {
        0
    };
    check_space(
        out,
        weight_bytes + 2 * ckpt_bytes + CHART_BYTES + 80 * evals,
    )?;

    let mut arena = vec![T::ZERO; plan.total()];
    let mut net = Network::new(&plan, &mut arena)?;
    let mut twin_arena = vec![T::ZERO; if split { plan.total() } else { 0 }];
    let twin_net = if split {
        Some(Network::new(&plan, &mut twin_arena)?)
    } else {
        None
    };
    let (mut rng, mut batcher, mut progress) = match ckpt {
        None => {
            let mut rng = Rng::new(config.seed);
            net.init(config.init, &mut rng);
            let batcher = Batcher::new(config.sampling, batch, train.len())?;
            (rng, batcher, Progress::default())
        }
        Some(c) => {
            // `parse` checked every length against the configuration this plan was built from.
            for (d, &v) in net.params_mut().iter_mut().zip(&c.params) {
                *d = T::from_f64(v);
            }
            for (d, &v) in net.stats_mut().iter_mut().zip(&c.stats) {
                *d = T::from_f64(v);
            }
            for (d, &v) in net.state_mut().iter_mut().zip(&c.opt_state) {
                *d = T::from_f64(v);
            }
            if let Some(state) = c.dropout_rng {
                net.set_rng(Rng::from_state(state)?);
            }
            (
                Rng::from_state(c.rng)?,
                Batcher::from_state(c.batcher)?,
                c.progress,
            )
        }
    };
    let start = progress.iteration;
    // The update, checked against the plan once; optimizer steps count on from the checkpoint.
    let mut update = match fused_lr {
        Some(lr) => Step::Fused(Update::fused_sgd(&plan, lr)?.with_weight_decay(decay)?),
        None => {
            Step::Optimizer(Update::optimizer(&plan, &opt, start + 1)?.with_weight_decay(decay)?)
        }
    };
    let mut labels = vec![0usize; batch];
    // Gathering in place on sparse rows: the indices, the rows and their transpose.
    let mut in_place_sparse = match rows {
        Some((all, _)) if threads <= 1 => Some((
            vec![0usize; batch],
            CsrBuf::<T>::new(batch, train.features())?,
            CsrBuf::<T>::new(train.features(), batch)?,
            all,
        )),
        _ => None,
    };
    let ckpt_path = checkpoint::path_in(out);
    let mut last_checkpoint: Option<u64> = None;
    let diverged = |iteration: u64, what: String, last: Option<u64>| {
        let kept = match last {
            Some(c) => format!(
                "; the last checkpoint ({}, iteration {c}) is intact",
                ckpt_path.display()
            ),
            None => String::new(),
        };
        CliError::Diverged(format!(
            "training diverged at iteration {iteration}: {what}; try a smaller --lr{kept}"
        ))
    };

    let bar = ProgressBar::with_draw_target(Some(iters), ProgressDrawTarget::stderr_with_hz(8));
    if let Ok(style) =
        ProgressStyle::with_template("{bar:32} {pos}/{len} it  {per_sec}  ETA {eta}  loss {msg}")
    {
        bar.set_style(style);
    }
    bar.set_position(start);
    let started = Instant::now();
    let elapsed_before = progress.elapsed;
    let elapsed = || elapsed_before + started.elapsed().as_secs_f64();
    let final_test = std::thread::scope(|scope| -> Result<f64, CliError> {
        let (finished, done) = mpsc::channel::<MetricRow>();
        // With a second core, one worker there gathers minibatches a few iterations ahead
        // (the batches are the same: this thread still draws every index in order) and
        // evaluates parameter snapshots in between. With one thread both happen inline.
        let (mut feeder, mut inline) = if background {
            let feed = Feeder::<T>::spawn(
                scope, sets, eval_sets, rows, batch, start, evaluator, mm, finished,
            )?;
            (Some(feed), None)
        } else {
            drop(finished);
            (None, Some(evaluator))
        };
        let mut twin = match twin_net {
            Some(n) => Some(Twin::spawn(scope, n, mm, decay)?),
            None => None,
        };
        let mut pending = 0usize;
        for i in start..iters {
            let loss = match &mut feeder {
                Some(feed) => {
                    // Nothing past the next checkpoint is drawn before it is written, so a
                    // checkpoint holds the generator and batcher as of its own iteration.
                    let until = config
                        .checkpoint_every
                        .filter(|&every| every > 0)
                        .map_or(iters, |every| iters.min((i / every + 1) * every));
                    // Refills the buffer the last step gave back: DEPTH − 1 batches are in
                    // the worker's hands while this one trains.
                    feed.request(&mut batcher, &mut rng, until)?;
                    let b = feed.take()?;
                    let loss = match (&mut twin, &mut update, b.sparse()?) {
                        (Some(twin), Step::Optimizer(u), None) => {
                            twin.step(&mut net, mm, b.x(), b.labels(), u)?
                        }
                        (_, _, sparse) => {
                            let input = match sparse {
                                Some(sb) => Input::Sparse(sb),
                                None => Input::Dense(b.x()),
                            };
                            update.step(&mut net, mm, input, Target::Labels(b.labels()))
                        }
                    };
                    feed.give_back(b);
                    loss
                }
                None => match &mut in_place_sparse {
                    Some((indices, x, xt, all)) => {
                        let rows = batcher.next_indices(&mut rng, indices);
                        gather_rows(*all, train.labels(), &indices[..rows], x, &mut labels);
                        xt.transpose_from(x.view());
                        let sb = SparseBatch::new(x.view(), xt.view())?;
                        let target = Target::Labels(&labels[..rows]);
                        update.step(&mut net, mm, Input::Sparse(sb), target)
                    }
                    None => {
                        let rows =
                            batcher.next_batch(&mut rng, train, net.input_mut(batch), &mut labels);
                        let target = Target::Labels(&labels[..rows]);
                        update.step(&mut net, mm, Input::Arena(rows), target)
                    }
                },
            };
            // The loss alone is not enough: an infinite or NaN weight behind a ReLU that stays
            // off can leave it finite. Checking all weights takes about 4 µs for 784-50-10
            // (measured), around 1% of a step.
            if !loss.is_finite() {
                bar.finish_and_clear();
                return Err(diverged(
                    i + 1,
                    format!("the loss is {loss}"),
                    last_checkpoint,
                ));
            }
            if let Some((tensor, at, v)) = first_non_finite(net.plan(), net.params()) {
                bar.finish_and_clear();
                return Err(diverged(
                    i + 1,
                    format!("weight {tensor}[{at}] is {v} (the loss was {loss})"),
                    last_checkpoint,
                ));
            }
            progress.loss_sum += loss.to_f64();
            progress.loss_count += 1;
            progress.iteration = i + 1;
            bar.inc(1);
            if i % 50 == 0 {
                bar.set_message(format!("{:.4}", loss.to_f64()));
            }
            // Results of earlier evaluations, in order, as the worker finishes them.
            while pending > 0 {
                let Ok(row) = done.try_recv() else { break };
                pending -= 1;
                record(&bar, &mut progress.metrics, row, iter_per_epoch);
            }
            // The book evaluates after iterations 0, 600, 1200, …: 17 times in 10,000 iterations.
            if i % iter_per_epoch == 0 {
                let row = MetricRow {
                    iteration: i + 1,
                    epoch: (i + 1) as f64 / iter_per_epoch as f64,
                    train_acc: 0.0,
                    test_acc: 0.0,
                    loss: progress.loss_sum / progress.loss_count as f64,
                    elapsed: elapsed(),
                };
                (progress.loss_sum, progress.loss_count) = (0.0, 0);
                if let Some(feed) = &feeder {
                    feed.evaluate(row, net.params(), net.stats())?;
                    pending += 1;
                } else if let Some(ev) = &mut inline {
                    let row = evaluate_row(ev, mm, &weights(&net), row, eval_sets, rows);
                    record(&bar, &mut progress.metrics, row, iter_per_epoch);
                }
            }
            if let Some(every) = config.checkpoint_every
                && (i + 1) % every == 0
                && i + 1 < iters
            {
                if net.state().iter().any(|v| !v.is_finite()) {
                    bar.finish_and_clear();
                    return Err(diverged(
                        i + 1,
                        "the optimizer state is not finite".into(),
                        last_checkpoint,
                    ));
                }
                // A checkpoint holds every evaluation up to its iteration.
                drain(
                    &done,
                    &mut pending,
                    &bar,
                    &mut progress.metrics,
                    iter_per_epoch,
                )?;
                progress.elapsed = elapsed();
                let bytes = Snapshot {
                    config,
                    plan: net.plan(),
                    params: net.params(),
                    stats: net.stats(),
                    opt_state: net.state(),
                    rng: rng.state(),
                    dropout_rng: net.rng().state(),
                    batcher: &batcher.state(),
                    progress: &progress,
                }
                .to_bytes()?;
                model::write_atomic(&ckpt_path, &bytes)?;
                last_checkpoint = Some(i + 1);
            }
        }
        // The weights saved are those after the last iteration: report their test accuracy.
        // Unless the last iteration was an evaluation point anyway, this thread measures it
        // (the test set only) while the evaluation thread finishes its last whole-set job.
        let own_final = match &inline {
            None if !whole_evals || !iters.saturating_sub(1).is_multiple_of(iter_per_epoch) => {
                Some(Evaluator::<T>::new(stack, 1)?.accuracy(
                    mm,
                    &weights(&net),
                    test,
                    rows.map(|r| r.1),
                ))
            }
            _ => None,
        };
        drain(
            &done,
            &mut pending,
            &bar,
            &mut progress.metrics,
            iter_per_epoch,
        )?;
        Ok(match (progress.metrics.last(), own_final) {
            (Some(m), _) if whole_evals && m.iteration == iters => m.test_acc,
            (_, Some(acc)) => acc,
            _ => match &mut inline {
                Some(ev) => ev.accuracy(mm, &weights(&net), test, rows.map(|r| r.1)),
                None => Evaluator::<T>::new(stack, 1)?.accuracy(
                    mm,
                    &weights(&net),
                    test,
                    rows.map(|r| r.1),
                ),
            },
        })
    })?;
    bar.finish_and_clear();
    let train_time = elapsed();
    println!(
        "final test acc {final_test:.4} after {iters} iterations; training took {train_time:.2} s"
    );

    let extra = [
        ("backend", mm.name().to_string()),
        ("input", if sparse { "sparse" } else { "dense" }.to_string()),
        ("seed", config.seed.to_string()),
        ("iterations", iters.to_string()),
        ("test_accuracy", final_test.to_string()),
    ];
    let bytes = model::to_safetensors(stack, net.plan(), net.params(), net.stats(), &extra)?;
    let model_path = out.join("model.safetensors");
    model::write_atomic(&model_path, &bytes)?;
    let csv: String = std::iter::once(checkpoint::CSV_HEADER.to_string())
        .chain(progress.metrics.iter().map(MetricRow::csv_line))
        .collect();
    model::write_atomic(&out.join("metrics.csv"), csv.as_bytes())?;
    let chart_path = out.join("accuracy.png");
    let tmp = out.join(format!(".accuracy.tmp-{}.png", std::process::id()));
    let title = format!(
        "manabi {name}, {} lr {}, batch {batch}: final test accuracy {final_test:.4}",
        opt.name(),
        config.lr
    );
    let points: Vec<EpochPoint> = progress
        .metrics
        .iter()
        .map(|m| EpochPoint {
            epoch: m.epoch,
            train_acc: m.train_acc,
            test_acc: m.test_acc,
            loss: m.loss,
        })
        .collect();
    chart::draw(&tmp, &points, &title)
        .and_then(|()| {
            fs::rename(&tmp, &chart_path).context(|| format!("writing {}", chart_path.display()))
        })
        .inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })?;
    println!(
        "wrote {}, {}, {}",
        model_path.display(),
        out.join("metrics.csv").display(),
        chart_path.display()
    );
    Ok(progress.metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(sizes: &[usize]) -> Plan {
        Stack::mlp(
            sizes[0],
            &sizes[1..sizes.len() - 1],
            sizes[sizes.len() - 1],
            Spec::Relu,
        )
        .plan(1, 1, manabi_layers::Training::Inference)
        .unwrap()
    }

    #[test]
    fn non_finite_weights_are_found_and_named() {
        // 20·3 + 3 + 3·2 + 2 = 71 parameters: four full 16-lane chunks and a tail of 7.
        let plan = plan(&[20, 3, 2]);
        let mut p = vec![0.25f32; 71];
        assert_eq!(first_non_finite(&plan, &p), None);
        p[5] = f32::NAN;
        let (name, at, v) = first_non_finite(&plan, &p).unwrap();
        assert_eq!((name.as_str(), at), ("W1", 5));
        assert!(v.is_nan());
        p[5] = 0.25;
        // b1 is 60..63, W2 63..69, b2 69..71 (in the tail).
        p[64] = f32::NEG_INFINITY;
        assert_eq!(
            first_non_finite(&plan, &p),
            Some(("W2".to_string(), 1, f32::NEG_INFINITY))
        );
        p[64] = 0.25;
        p[70] = f32::INFINITY;
        assert_eq!(
            first_non_finite(&plan, &p),
            Some(("b2".to_string(), 1, f32::INFINITY))
        );
        // Huge but finite values are not divergence.
        p[70] = f32::MAX;
        assert_eq!(first_non_finite(&plan, &p), None);
    }
}
