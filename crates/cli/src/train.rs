//! `manabi train`: the book's protocol from the command line, on the library's training loop, with progress, per-epoch lines, metrics, chart, weights, checkpoints and `--resume`.
//!
//! The loop is [`manabi_layers::Trainer`]; this file is the wiring: the flags become a
//! [`RunConfig`], the data is loaded, the batches come from [`Draws`] (gathered here or by the
//! worker on the second core, see `feed`), a step is [`Steps`] (one network, or the
//! data-parallel twin), and [`Watch`] is the observer that prints, evaluates and
//! checkpoints. Faults are handled so that nothing already written is lost:
//! - the output directory is probed before the data is loaded (writable) and again before the
//!   first iteration with a file as large as everything the run will write (free space);
//! - the loop checks the loss and every weight after each iteration: a NaN or infinity stops
//!   the run with the iteration and the first bad tensor named, before anything is written,
//!   so the last checkpoint stays as it was;
//! - checkpoints and outputs are written atomically (temporary file, fsync, rename).

use crate::backend::BackendArg;
use crate::draw::{Draws, Gathering, SparseGather, Steps};
use crate::evaluate::Evaluator;
use crate::feed::Feeder;
use crate::model::Elem;
use crate::outdir::{check_space, output_bytes, prepare_out};
use crate::report::{print_backend, print_network, write_outputs};
use crate::setup::{Prepared, limit_train, load_data, start};
use crate::watch::{Clock, Evaluations, Watch, weights};
use crate::{CliError, TrainArgs, with_backend};
use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use manabi_cli::checkpoint::{self, Checkpoint, MetricRow, Progress, RunConfig};
use manabi_cli::parallel::Twin;
use manabi_cli::stack::Stack;
use manabi_data::{Batcher, TrainTest};
use manabi_layers::{Network, Period, Schedule, Shape, Stop, Trainer};
use manabi_matmul::Gemm;
use manabi_optim::AnyOptimizer;
use manabi_tensor::Rng;
use std::path::Path;
use std::sync::mpsc;

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
    let (config, backend, zeros) = crate::config::from_args(args, &sets, train_limit)?;
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

/// Whether the last iteration was an evaluation point of the whole sets, so that its
/// test accuracy is already measured.
fn last_was_evaluated(iters: u64, iter_per_epoch: u64, whole_evals: bool) -> bool {
    whole_evals && iters.saturating_sub(1).is_multiple_of(iter_per_epoch)
}

/// The book's schedule: an evaluation after the first step of each epoch, checkpoints as
/// asked, every weight checked after every step.
fn schedule(config: &RunConfig, iter_per_epoch: u64) -> Schedule {
    Schedule {
        evaluate: Some(Period::book(iter_per_epoch)),
        checkpoint_every: config.checkpoint_every,
        ..Schedule::new(config.iters)
    }
}

fn progress_bar(iters: u64, first: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(iters), ProgressDrawTarget::stderr_with_hz(8));
    if let Ok(style) =
        ProgressStyle::with_template("{bar:32} {pos}/{len} it  {per_sec}  ETA {eta}  loss {msg}")
    {
        bar.set_style(style);
    }
    bar.set_position(first);
    bar
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
    let prep = Prepared::<T>::new(config, sets, sparse)?;
    let plan = &prep.plan;
    let split = config.replicas > 1;
    // With more than one thread, whole-set evaluations run on a worker thread on snapshots of
    // the parameters while training goes on: the book's numbers, off the critical path.
    // (A data-parallel run resumed with `--threads 1` keeps its replicas and this worker,
    // which hands them whole batches, so that it ends as it would have.)
    let background = threads > 1 || split;
    let evaluator = Evaluator::<T>::new(&config.stack, 1)?;
    print_network(config, &prep.opt, prep.iter_per_epoch);
    let evaluators = (evaluator.threads(), background);
    let replicas = split.then_some(config.replicas);
    print_backend(plan, mm.name(), (prep.rows(), zeros), evaluators, replicas);
    let (p, _, s, _) = plan.breakdown();
    check_space(out, output_bytes::<T>(config, p, s, prep.iter_per_epoch))?;

    let mut arena = plan.alloc_arena::<T>();
    let mut net = Network::new(plan, &mut arena)?;
    let mut twin_arena = vec![T::ZERO; if split { plan.total() } else { 0 }];
    let twin = match split {
        true => Some(Network::new(plan, &mut twin_arena)?),
        false => None,
    };
    let (rng, batcher, progress) = start(config, &mut net, sets.train.len(), ckpt)?;
    let mut trainer = trainer(&prep, config, net, &progress)?;
    let bar = progress_bar(config.iters, progress.iteration);
    let clock = Clock::start(progress.elapsed);
    let looped = std::thread::scope(|scope| {
        let parts = Parts {
            prep: &prep,
            sets,
            mm,
            background,
            evaluator,
        };
        let state = (rng, batcher, progress);
        run_loop(
            scope,
            &mut trainer,
            parts,
            state,
            (twin, &bar, clock),
            (config, out),
        )
    });
    bar.finish_and_clear();
    let (final_test, metrics) = looped?;
    say!(
        "final test acc {final_test:.4} after {} iterations; training took {:.2} s",
        config.iters,
        clock.elapsed()
    );
    let outputs = (trainer.net(), mm.name(), sparse);
    write_outputs(config, out, outputs, &prep.opt, final_test, &metrics)?;
    Ok(metrics)
}

/// The run's trainer, continuing from `progress` (iteration 0 for a fresh run).
fn trainer<'n, 'p, T: Elem>(
    prep: &'p Prepared<T>,
    config: &RunConfig,
    net: Network<'n, T>,
    progress: &Progress,
) -> Result<Trainer<'n, 'p, T, AnyOptimizer<T>>, CliError> {
    let first = progress.iteration;
    let schedule = schedule(config, prep.iter_per_epoch);
    let mut trainer = Trainer::new(net, prep.update(first)?, schedule);
    trainer.resume_at(manabi_layers::Progress {
        iteration: first,
        loss_sum: progress.loss_sum,
        loss_count: progress.loss_count,
    });
    Ok(trainer)
}

/// What the loop is built from, besides the trainer.
struct Parts<'p, T, G> {
    prep: &'p Prepared<T>,
    sets: &'p TrainTest,
    mm: &'p G,
    /// Whether a worker gathers the batches and evaluates (with the evaluator), or this
    /// thread does.
    background: bool,
    evaluator: Evaluator<T>,
}

/// How the run's batches are gathered (by a worker, which then also evaluates, or here), and
/// where its evaluations run.
fn gathering<'scope, 'env, T: Elem, G: Gemm<T> + Sync>(
    scope: &'scope std::thread::Scope<'scope, 'env>,
    parts: Parts<'env, T, G>,
    (config, first): (&RunConfig, u64),
) -> Result<(Gathering<'env, T>, Evaluations<'env, T>), CliError> {
    let Parts {
        prep,
        sets,
        mm,
        background,
        evaluator,
    } = parts;
    let eval_sets = prep.subset.as_ref().unwrap_or(sets);
    let rows = prep.rows();
    let (finished, done) = mpsc::channel::<MetricRow>();
    let (gathering, inline, worker) = match (background, rows) {
        (true, _) => {
            let (batch, to) = (config.batch, finished);
            let feed = Feeder::<T>::spawn(
                scope, sets, eval_sets, rows, batch, first, evaluator, mm, to,
            )?;
            let worker = feed.evaluations();
            (Gathering::Fed(Box::new((feed, None))), None, Some(worker))
        }
        (false, Some((all, _))) => {
            let g = SparseGather::new(all, config.batch, sets.train.features())?;
            (Gathering::SparseHere(Box::new(g)), Some(evaluator), None)
        }
        (false, None) => (Gathering::DenseHere, Some(evaluator), None),
    };
    let evals = Evaluations {
        inline,
        worker,
        sets: eval_sets,
        rows,
        done,
        pending: 0,
        iter_per_epoch: prep.iter_per_epoch,
    };
    Ok((gathering, evals))
}

/// The run inside the thread scope: the batch source, the stepper and the observer built, the
/// trainer run to the end, then the final test accuracy. Returns it and the metrics.
fn run_loop<'scope, 'env, T: Elem, G: Gemm<T> + Sync>(
    scope: &'scope std::thread::Scope<'scope, 'env>,
    trainer: &mut Trainer<'_, '_, T, AnyOptimizer<T>>,
    parts: Parts<'env, T, G>,
    (rng, batcher, progress): (Rng, Batcher, Progress),
    (twin, bar, clock): (Option<Network<'env, T>>, &ProgressBar, Clock),
    (config, out): (&'env RunConfig, &Path),
) -> Result<(f64, Vec<MetricRow>), CliError> {
    let (prep, sets, mm) = (parts.prep, parts.sets, parts.mm);
    let (gathering, evals) = gathering(scope, parts, (config, progress.iteration))?;
    let mut steps = match twin {
        Some(n) => Steps::Twin(Twin::spawn(scope, n, mm, prep.decay)?),
        None => Steps::One,
    };
    let checkpoints = (config.checkpoint_every, config.iters);
    let (batch, train) = (config.batch, &sets.train);
    let mut draws = Draws::new((rng, batcher), train, batch, gathering, checkpoints);
    let mut watch = Watch {
        bar,
        evals,
        mm,
        progress,
        clock,
        config,
        checkpoint_path: checkpoint::path_in(out),
        last_checkpoint: None,
    };
    match trainer.run(mm, &mut draws, &mut steps, &mut watch) {
        Ok(()) => {}
        Err(Stop::Failed(e)) => return Err(e),
        Err(Stop::Diverged { iteration, why }) => {
            bar.finish_and_clear();
            let kept = match watch.last_checkpoint {
                Some(c) => format!(
                    "; the last checkpoint ({}, iteration {c}) is intact",
                    watch.checkpoint_path.display()
                ),
                None => String::new(),
            };
            return Err(CliError::Diverged(format!(
                "training diverged at iteration {iteration}: {why}; try a smaller --lr{kept}"
            )));
        }
    }
    let whole_evals = prep.subset.is_none();
    let final_test = final_accuracy(trainer.net(), &mut watch, (sets, mm), config, whole_evals)?;
    Ok((final_test, watch.progress.metrics))
}

/// The weights saved are those after the last iteration: their test accuracy. It is the last
/// evaluation's when that was of the whole sets at the last iteration; otherwise this thread
/// measures it (the test set only), while the worker, if any, finishes its last whole-set
/// job.
fn final_accuracy<T: Elem, G: Gemm<T> + Sync>(
    net: &Network<'_, T>,
    watch: &mut Watch<'_, '_, T, G>,
    (sets, mm): (&TrainTest, &G),
    config: &RunConfig,
    whole_evals: bool,
) -> Result<f64, CliError> {
    let (iters, ipe) = (config.iters, watch.evals.iter_per_epoch);
    let test_rows = watch.evals.rows.map(|r| r.1);
    let own = match &watch.evals.inline {
        None if !last_was_evaluated(iters, ipe, whole_evals) => {
            Some(Evaluator::<T>::new(&config.stack, 1)?.accuracy(
                mm,
                &weights(net),
                &sets.test,
                test_rows,
            ))
        }
        _ => None,
    };
    watch.evals.drain(watch.bar, &mut watch.progress.metrics)?;
    let last = watch.progress.metrics.last();
    if let Some(m) = last.filter(|m| whole_evals && m.iteration == iters) {
        return Ok(m.test_acc);
    }
    if let Some(acc) = own {
        return Ok(acc);
    }
    let mut fresh;
    let ev = match &mut watch.evals.inline {
        Some(ev) => ev,
        None => {
            fresh = Evaluator::<T>::new(&config.stack, 1)?;
            &mut fresh
        }
    };
    Ok(ev.accuracy(mm, &weights(net), &sets.test, test_rows))
}
