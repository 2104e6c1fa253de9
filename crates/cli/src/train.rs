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
use crate::feed::{Batch, Feeder};
use crate::model::{self, Elem};
use crate::{ActivationArg, CliError, InputArg, ModelArg, SamplingArg, TrainArgs, with_backend};
use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use manabi_cli::checkpoint::{self, Checkpoint, MetricRow, Progress, RunConfig, Snapshot};
use manabi_cli::parallel::Twin;
use manabi_cli::stack::{Stack, data_shape};
use manabi_data::{Batcher, Dataset, Sampling, TrainTest, Verify, gather_rows};
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
/// The class count is `--classes`, else `known` (a model's or checkpoint's outputs), else
/// inferred from the labels.
pub fn load_data(data: &crate::DataArgs, known: Option<usize>) -> Result<TrainTest, CliError> {
    let dir = manabi_data::find_data_dir(data.data_dir.as_deref())?;
    let verify = if data.no_verify {
        Verify::Skip
    } else {
        Verify::Mnist
    };
    let t0 = Instant::now();
    let classes = data.classes.map(|n| n as usize).or(known);
    let sets = manabi_data::load_with_classes(&dir, verify, classes)?;
    say!(
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

/// Removes `.<output>.tmp-<pid>-…` files (and `.accuracy.tmp-<pid>.png`) whose writer is no
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
        // `write_atomic` names them `.<output>.tmp-<pid>-<random>`.
        let pid = pid.map(|p| p.split_once('-').map_or(p, |(pid, _)| pid));
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
    let mut sets = load_data(&args.data, None)?;
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
        say!(
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
    let mut sets = load_data(&args.data, Some(config.stack.outputs()))?;
    limit_train(&mut sets, config.train_limit)?;
    config.check_data(sets.train.features(), sets.classes, sets.train.len())?;
    say!(
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
/// code (one array of 16 lanes took about three times as long).
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

/// Where a run's minibatches come from.
enum Batches<'e, T> {
    /// A worker on the second core gathers them a few iterations ahead (the batches are the
    /// same: this thread still draws every index in order) and evaluates parameter
    /// snapshots in between.
    Fed(Feeder<T>),
    /// This thread gathers sparse rows in place.
    SparseHere(Box<SparseGather<'e, T>>),
    /// This thread copies dense rows into the network's input.
    DenseHere,
}

/// Buffers for gathering sparse rows in place, sized once.
struct SparseGather<'e, T> {
    /// The batch's sample indices.
    indices: Vec<usize>,
    /// The batch's rows.
    x: CsrBuf<T>,
    /// Their transpose, for the weight gradient.
    xt: CsrBuf<T>,
    /// The whole training set's rows.
    all: Csr<'e, T>,
}

/// Both sets as compressed rows, for sparse runs.
type SetRows<'e, T> = Option<(Csr<'e, T>, Csr<'e, T>)>;

/// One drawn minibatch; for the batches drawn here, the labels are in the loop's buffer.
enum Drawn<'b, T> {
    /// A batch the worker gathered, to be given back after the step.
    Fed(Batch<T>),
    /// This many compressed rows.
    Sparse(SparseBatch<'b, T>, usize),
    /// This many rows already in the network's input.
    Arena(usize),
}

impl<T: Real + Send> Batches<'_, T> {
    /// Draws the next minibatch (the book's `np.random.choice` and `x_train[batch_mask]`).
    /// `until` bounds how far ahead the worker may draw: nothing past the next checkpoint, so
    /// that a checkpoint holds the generator and batcher as of its own iteration.
    fn draw(
        &mut self,
        batcher: &mut Batcher,
        rng: &mut Rng,
        until: u64,
        (train, net, labels): (&Dataset, &mut Network<'_, T>, &mut [usize]),
    ) -> Result<Drawn<'_, T>, CliError> {
        Ok(match self {
            Batches::Fed(feed) => {
                // Refills the buffer the last step gave back: DEPTH − 1 batches are in the
                // worker's hands while this one trains.
                feed.request(batcher, rng, until)?;
                Drawn::Fed(feed.take()?)
            }
            Batches::SparseHere(g) => {
                let rows = batcher.next_indices(rng, &mut g.indices);
                gather_rows(g.all, train.labels(), &g.indices[..rows], &mut g.x, labels);
                g.xt.transpose_from(g.x.view());
                Drawn::Sparse(SparseBatch::new(g.x.view(), g.xt.view())?, rows)
            }
            Batches::DenseHere => {
                let batch = labels.len();
                Drawn::Arena(batcher.next_batch(rng, train, net.input_mut(batch), labels))
            }
        })
    }

    /// Returns a worker's batch for reuse.
    fn give_back(&mut self, b: Batch<T>) {
        if let Batches::Fed(feed) = self {
            feed.give_back(b);
        }
    }
}

/// One training step on a drawn batch (the book's `gradient` and parameter update); a
/// data-parallel run splits it with the twin. Returns the batch's mean loss.
fn step<T: Real + Send, G: Gemm<T>>(
    net: &mut Network<'_, T>,
    mm: &G,
    (update, twin): (&mut Step<'_, T>, Option<&mut Twin<'_, T>>),
    drawn: &Drawn<'_, T>,
    labels: &[usize],
) -> Result<T, CliError> {
    Ok(match drawn {
        Drawn::Fed(b) => match (twin, update, b.sparse()?) {
            (Some(twin), Step::Optimizer(u), None) => twin.step(net, mm, b.x(), b.labels(), u)?,
            (_, update, sparse) => {
                let input = match sparse {
                    Some(sb) => Input::Sparse(sb),
                    None => Input::Dense(b.x()),
                };
                update.step(net, mm, input, Target::Labels(b.labels()))
            }
        },
        Drawn::Sparse(sb, rows) => {
            let target = Target::Labels(&labels[..*rows]);
            update.step(net, mm, Input::Sparse(*sb), target)
        }
        Drawn::Arena(rows) => {
            let target = Target::Labels(&labels[..*rows]);
            update.step(net, mm, Input::Arena(*rows), target)
        }
    })
}

/// What made the run diverge after a step, if anything: a non-finite loss, weight or (when
/// a checkpoint is about to be written) optimizer state.
///
/// The loss alone is not enough: an infinite or NaN weight behind a ReLU that stays off can
/// leave it finite. Checking every weight is one vectorised pass, about 1 % of an MLP step.
fn divergence<T: Real>(net: &Network<'_, T>, loss: T, checkpoint_due: bool) -> Option<String> {
    if !loss.is_finite() {
        return Some(format!("the loss is {loss}"));
    }
    if let Some((tensor, at, v)) = first_non_finite(net.plan(), net.params()) {
        return Some(format!(
            "weight {tensor}[{at}] is {v} (the loss was {loss})"
        ));
    }
    if checkpoint_due && net.state().iter().any(|v| !v.is_finite()) {
        return Some("the optimizer state is not finite".into());
    }
    None
}

/// Where a run's evaluations run, and the rows they have given back so far.
struct Evaluations<'e, T> {
    /// This thread's evaluator, when there is no worker.
    inline: Option<Evaluator<T>>,
    /// The sets each evaluation reads (the whole sets, or their first `--eval-samples`).
    sets: &'e TrainTest,
    /// Both sets as compressed rows, for sparse runs.
    rows: SetRows<'e, T>,
    /// The worker's finished rows, in order.
    done: mpsc::Receiver<MetricRow>,
    /// Evaluations handed to the worker and not yet received.
    pending: usize,
    /// For the epoch column of the printed lines.
    iter_per_epoch: u64,
}

impl<T: Real + Send> Evaluations<'_, T> {
    /// Evaluates the network's accuracies for `row` (the book's per-epoch `accuracy`): on the
    /// worker if there is one, else here and reported at once.
    fn evaluate<G: Gemm<T> + Sync>(
        &mut self,
        batches: &Batches<'_, T>,
        (net, mm): (&Network<'_, T>, &G),
        row: MetricRow,
        (bar, metrics): (&ProgressBar, &mut Vec<MetricRow>),
    ) -> Result<(), CliError> {
        if let Batches::Fed(feed) = batches {
            feed.evaluate(row, net.params(), net.stats())?;
            self.pending += 1;
        } else if let Some(ev) = &mut self.inline {
            let row = evaluate_row(ev, mm, &weights(net), row, self.sets, self.rows);
            self.report(bar, metrics, row);
        }
        Ok(())
    }

    /// Prints an evaluated row like the book and keeps it.
    fn report(&self, bar: &ProgressBar, metrics: &mut Vec<MetricRow>, row: MetricRow) {
        bar.suspend(|| {
            say!(
                "epoch {:>3}  iter {:>6}  train acc {:.4}  test acc {:.4}  loss {:.4}  ({:.1} s)",
                (row.iteration - 1) / self.iter_per_epoch,
                row.iteration,
                row.train_acc,
                row.test_acc,
                row.loss,
                row.elapsed
            )
        });
        metrics.push(row);
    }

    /// Reports the worker's evaluations that have finished, without waiting.
    fn report_finished(&mut self, bar: &ProgressBar, metrics: &mut Vec<MetricRow>) {
        while self.pending > 0 {
            let Ok(row) = self.done.try_recv() else { break };
            self.pending -= 1;
            self.report(bar, metrics, row);
        }
    }

    /// Waits for every evaluation handed out so far and reports it.
    fn drain(&mut self, bar: &ProgressBar, metrics: &mut Vec<MetricRow>) -> Result<(), CliError> {
        while self.pending > 0 {
            let row = self
                .done
                .recv()
                .map_err(|_| CliError::Worker("the evaluation thread stopped"))?;
            self.pending -= 1;
            self.report(bar, metrics, row);
        }
        Ok(())
    }
}

/// Slack for a safetensors file's header and metadata, beyond its tensors.
const HEADER_BYTES: u64 = 4096;
/// A checkpoint's fixed state, in `u64` words at most: the two generators (4 each), the
/// batch position, the iteration, the loss window and the elapsed time.
const STATE_WORDS: u64 = 10;
/// Bytes of one evaluation in a checkpoint's `metrics` tensor (six `f64`).
const METRIC_BYTES: u64 = 8 * checkpoint::METRIC_COLUMNS as u64;
/// Bytes of one `metrics.csv` line, at most.
const CSV_LINE_BYTES: u64 = 80;

/// What a run writes at most into `--out`: the weights, two checkpoints while one replaces
/// the other (weights, optimizer state, batcher permutation, metrics), the chart and the CSV.
/// `params` and `state` are element counts of `T::BYTES` each.
fn output_bytes<T: Elem>(
    config: &RunConfig,
    params: usize,
    state: usize,
    iter_per_epoch: u64,
) -> u64 {
    // The book's evaluation points, plus the first and the last.
    let evals = config.iters / iter_per_epoch + 2;
    let weights = (params * T::BYTES) as u64 + HEADER_BYTES;
    let permutation = match config.sampling {
        Sampling::EpochShuffle => config.train_len as u64,
        Sampling::Random => 0,
    };
    let checkpoint = if config.checkpoint_every.is_some() {
        weights + (state * T::BYTES) as u64 + 8 * (permutation + STATE_WORDS) + METRIC_BYTES * evals
    } else {
        0
    };
    weights + 2 * checkpoint + CHART_BYTES + CSV_LINE_BYTES * evals
}

/// Starts a run's state: the network initialised from the seed, or everything restored from
/// a checkpoint. Returns the batch generator, the batcher and the progress.
fn start<T: Real>(
    config: &RunConfig,
    net: &mut Network<'_, T>,
    train_len: usize,
    ckpt: Option<Checkpoint>,
) -> Result<(Rng, Batcher, Progress), CliError> {
    Ok(match ckpt {
        None => {
            let mut rng = Rng::new(config.seed);
            net.init(config.init, &mut rng);
            let batcher = Batcher::new(config.sampling, config.batch, train_len)?;
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
    })
}

/// The plan of a run: the whole batch in one arena, or each replica's share of it.
fn plan_run(config: &RunConfig, fused: bool, sparse: bool) -> Result<Plan, CliError> {
    let split = config.replicas > 1;
    let stack = &config.stack;
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
    if split {
        let rows = config.batch.div_ceil(config.replicas);
        let training = Training::Backprop {
            optimizer_slots: config.slots()?,
        };
        stack.plan(rows, rows, training)
    } else {
        config.plan(fused)
    }
}

/// Prints the network and the protocol.
fn print_network<T: Real>(config: &RunConfig, opt: &AnyOptimizer<T>, iter_per_epoch: u64) {
    let decay = if config.weight_decay > 0.0 {
        format!(", weight decay {}", config.weight_decay)
    } else {
        String::new()
    };
    say!(
        "network: {}, {} lr {}{decay}, batch {}, {} iterations ({:.2} epochs of {iter_per_epoch}), seed {}",
        config.stack.describe(),
        opt.name(),
        config.lr,
        config.batch,
        config.iters,
        config.iters as f64 / iter_per_epoch as f64,
        config.seed
    );
}

/// Prints how the run computes: backend, input, evaluation (`evaluators` threads, in the
/// `background` or inline) and the arena's breakdown. `replicas` is the data-parallel split,
/// if any.
fn print_backend<T: Elem>(
    plan: &Plan,
    backend: &str,
    (rows, zeros): (SetRows<'_, T>, Option<f64>),
    (evaluators, background): (usize, bool),
    replicas: Option<usize>,
) {
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
        "on {evaluators} thread{}{}",
        if evaluators == 1 { "" } else { "s" },
        if background { " in the background" } else { "" }
    );
    let arenas = match replicas {
        Some(n) => format!("{n} data-parallel arenas of {} rows", plan.batch()),
        None => "arena".to_string(),
    };
    let (p, g, s, a) = plan.breakdown();
    say!(
        "backend: {backend} ({}), input as {input}, evaluation {evaluation}; {arenas}: {} elements, {:.1} KiB (parameters {p}, gradients {g}, optimizer state {s}, activations {a})",
        T::NAME,
        plan.total(),
        plan.bytes::<T>() as f64 / 1024.0
    );
}

/// Whether the last iteration was an evaluation point of the whole sets, so that its
/// test accuracy is already measured.
fn last_was_evaluated(iters: u64, iter_per_epoch: u64, whole_evals: bool) -> bool {
    whole_evals && iters.saturating_sub(1).is_multiple_of(iter_per_epoch)
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
    let plan = plan_run(config, fused_lr.is_some(), sparse)?;
    print_network(config, &opt, iter_per_epoch);
    let (p, _, s, _) = plan.breakdown();
    // With more than one thread, whole-set evaluations run on a worker thread on snapshots of
    // the parameters while training goes on: the book's numbers, off the critical path.
    // (A data-parallel run resumed with `--threads 1` keeps its replicas and this worker,
    // which hands them whole batches, so that it ends as it would have.)
    let background = threads > 1 || split;
    // Either way one thread evaluates: the worker on the second core, a chunk at a time
    // between batches, or this thread inline.
    let evaluator = Evaluator::<T>::new(stack, 1)?;
    // Sparse input: both sets become compressed rows once (MNIST: 10.5 million nonzeros);
    // batches copy rows from there and evaluations read them in place.
    let sparse_sets = if sparse {
        Some((train.to_sparse::<T>()?, test.to_sparse::<T>()?))
    } else {
        None
    };
    let rows = sparse_sets.as_ref().map(|(a, b)| (a.view(), b.view()));
    print_backend(
        &plan,
        mm.name(),
        (rows, zeros),
        (evaluator.threads(), background),
        split.then_some(config.replicas),
    );
    check_space(out, output_bytes::<T>(config, p, s, iter_per_epoch))?;

    let mut arena = plan.alloc_arena::<T>();
    let mut net = Network::new(&plan, &mut arena)?;
    let mut twin_arena = vec![T::ZERO; if split { plan.total() } else { 0 }];
    let twin_net = if split {
        Some(Network::new(&plan, &mut twin_arena)?)
    } else {
        None
    };
    let (mut rng, mut batcher, mut progress) = start(config, &mut net, train.len(), ckpt)?;
    let first = progress.iteration;
    // The update, checked against the plan once; optimizer steps count on from the checkpoint.
    let mut update = match fused_lr {
        Some(lr) => Step::Fused(Update::fused_sgd(&plan, lr)?.with_weight_decay(decay)?),
        None => {
            Step::Optimizer(Update::optimizer(&plan, &opt, first + 1)?.with_weight_decay(decay)?)
        }
    };
    let mut labels = vec![0usize; batch];
    let ckpt_path = checkpoint::path_in(out);
    let mut last_checkpoint: Option<u64> = None;

    let bar = ProgressBar::with_draw_target(Some(iters), ProgressDrawTarget::stderr_with_hz(8));
    if let Ok(style) =
        ProgressStyle::with_template("{bar:32} {pos}/{len} it  {per_sec}  ETA {eta}  loss {msg}")
    {
        bar.set_style(style);
    }
    bar.set_position(first);
    let diverged = |iteration: u64, what: String, last: Option<u64>| {
        bar.finish_and_clear();
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
    let started = Instant::now();
    let elapsed_before = progress.elapsed;
    let elapsed = || elapsed_before + started.elapsed().as_secs_f64();
    let final_test = std::thread::scope(|scope| -> Result<f64, CliError> {
        let (finished, done) = mpsc::channel::<MetricRow>();
        let (mut batches, inline) = match (background, rows) {
            (true, _) => {
                let feed = Feeder::<T>::spawn(
                    scope, sets, eval_sets, rows, batch, first, evaluator, mm, finished,
                )?;
                (Batches::Fed(feed), None)
            }
            (false, Some((all, _))) => {
                let here = Batches::SparseHere(Box::new(SparseGather {
                    indices: vec![0usize; batch],
                    x: CsrBuf::<T>::new(batch, train.features())?,
                    xt: CsrBuf::<T>::new(train.features(), batch)?,
                    all,
                }));
                (here, Some(evaluator))
            }
            (false, None) => (Batches::DenseHere, Some(evaluator)),
        };
        let mut evals = Evaluations {
            inline,
            sets: eval_sets,
            rows,
            done,
            pending: 0,
            iter_per_epoch,
        };
        let mut twin = match twin_net {
            Some(n) => Some(Twin::spawn(scope, n, mm, decay)?),
            None => None,
        };
        for i in first..iters {
            let checkpoint_due = config
                .checkpoint_every
                .is_some_and(|every| (i + 1) % every == 0 && i + 1 < iters);
            // Draw.
            let until = config
                .checkpoint_every
                .filter(|&every| every > 0)
                .map_or(iters, |every| iters.min((i / every + 1) * every));
            let drawn = batches.draw(
                &mut batcher,
                &mut rng,
                until,
                (train, &mut net, &mut labels),
            )?;
            // Step.
            let loss = step(&mut net, mm, (&mut update, twin.as_mut()), &drawn, &labels)?;
            if let Drawn::Fed(b) = drawn {
                batches.give_back(b);
            }
            if let Some(what) = divergence(&net, loss, false) {
                return Err(diverged(i + 1, what, last_checkpoint));
            }
            progress.loss_sum += loss.to_f64();
            progress.loss_count += 1;
            progress.iteration = i + 1;
            bar.inc(1);
            if i % 50 == 0 {
                bar.set_message(format!("{:.4}", loss.to_f64()));
            }
            // Report what earlier evaluations found, in order, as the worker finishes them.
            evals.report_finished(&bar, &mut progress.metrics);
            // Evaluate: the book does after iterations 0, 600, 1200, …, 17 times in 10,000.
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
                evals.evaluate(&batches, (&net, mm), row, (&bar, &mut progress.metrics))?;
            }
            if checkpoint_due {
                if let Some(what) = divergence(&net, loss, true) {
                    return Err(diverged(i + 1, what, last_checkpoint));
                }
                // A checkpoint holds every evaluation up to its iteration.
                evals.drain(&bar, &mut progress.metrics)?;
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
                let kill_point = KillPoint::from_env(i + 1);
                let midway = (kill_point == Some(KillPoint::InCheckpoint)).then_some(pause as _);
                model::write_atomic_or_pause(&ckpt_path, &bytes, midway)?;
                last_checkpoint = Some(i + 1);
                if kill_point == Some(KillPoint::AfterCheckpoint) {
                    pause(&ckpt_path);
                }
            }
        }
        // The weights saved are those after the last iteration: report their test accuracy.
        // Unless the last iteration was an evaluation point anyway, this thread measures it
        // (the test set only) while the evaluation thread finishes its last whole-set job.
        let own_final = match &evals.inline {
            None if !last_was_evaluated(iters, iter_per_epoch, whole_evals) => {
                Some(Evaluator::<T>::new(stack, 1)?.accuracy(
                    mm,
                    &weights(&net),
                    test,
                    rows.map(|r| r.1),
                ))
            }
            _ => None,
        };
        evals.drain(&bar, &mut progress.metrics)?;
        Ok(match (progress.metrics.last(), own_final) {
            (Some(m), _) if whole_evals && m.iteration == iters => m.test_acc,
            (_, Some(acc)) => acc,
            _ => match &mut evals.inline {
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
    say!(
        "final test acc {final_test:.4} after {iters} iterations; training took {train_time:.2} s"
    );
    write_outputs(
        config,
        out,
        (&net, mm.name(), sparse),
        &opt,
        final_test,
        &progress.metrics,
    )?;
    Ok(progress.metrics)
}

/// Where a kill test wants the run to stop for good, so that it can SIGKILL the process at a
/// known point rather than after a guessed delay: `MANABI_KILL_POINT=after-checkpoint:N`
/// (once the checkpoint of iteration N is written) or `in-checkpoint:N` (half-way through
/// writing it). Each prints a `paused …` line and then waits. Not a user option.
#[derive(Clone, Copy, Debug, PartialEq)]
enum KillPoint {
    AfterCheckpoint,
    InCheckpoint,
}

/// Where a kill test's run waits to be killed: prints `paused at PATH` and never returns.
fn pause(path: &Path) -> ! {
    say!("paused at {}", path.display());
    let _ = std::io::stdout().flush();
    loop {
        std::thread::park();
    }
}

impl KillPoint {
    /// The kill point `MANABI_KILL_POINT` sets at the checkpoint of `iteration`, if any.
    fn from_env(iteration: u64) -> Option<Self> {
        let text = std::env::var("MANABI_KILL_POINT").ok()?;
        let (point, at) = text.split_once(':')?;
        if at.parse::<u64>().ok()? != iteration {
            return None;
        }
        match point {
            "after-checkpoint" => Some(Self::AfterCheckpoint),
            "in-checkpoint" => Some(Self::InCheckpoint),
            _ => None,
        }
    }
}

/// Writes the run's results into `out`: the weights, `metrics.csv` and the chart.
fn write_outputs<T: Elem>(
    config: &RunConfig,
    out: &Path,
    (net, backend, sparse): (&Network<'_, T>, &str, bool),
    opt: &AnyOptimizer<T>,
    final_test: f64,
    metrics: &[MetricRow],
) -> Result<(), CliError> {
    let extra = [
        ("backend", backend.to_string()),
        ("input", if sparse { "sparse" } else { "dense" }.to_string()),
        ("seed", config.seed.to_string()),
        ("iterations", config.iters.to_string()),
        ("test_accuracy", final_test.to_string()),
    ];
    let bytes =
        model::to_safetensors(&config.stack, net.plan(), net.params(), net.stats(), &extra)?;
    let model_path = out.join("model.safetensors");
    model::write_atomic(&model_path, &bytes)?;
    let csv: String = std::iter::once(checkpoint::CSV_HEADER.to_string())
        .chain(metrics.iter().map(MetricRow::csv_line))
        .collect();
    model::write_atomic(&out.join("metrics.csv"), csv.as_bytes())?;
    let chart_path = out.join("accuracy.png");
    let tmp = out.join(format!(".accuracy.tmp-{}.png", std::process::id()));
    let title = format!(
        "manabi {}, {} lr {}, batch {}: final test accuracy {final_test:.4}",
        config.stack.short(),
        opt.name(),
        config.lr,
        config.batch
    );
    let points: Vec<EpochPoint> = metrics
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
    say!(
        "wrote {}, {}, {}",
        model_path.display(),
        out.join("metrics.csv").display(),
        chart_path.display()
    );
    Ok(())
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
