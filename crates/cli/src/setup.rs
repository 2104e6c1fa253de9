//! Setting a `manabi train` run up: the data loaded, the run's plan, update and evaluation sets, and its state initialised from the seed or restored from a checkpoint.

use crate::backend::BackendArg;
use crate::model::Elem;
use crate::watch::SetRows;
use crate::{CliError, DataArgs};
use clap::ValueEnum;
use manabi_cli::checkpoint::{Checkpoint, Progress, RunConfig};
use manabi_cli::stack::Stack;
use manabi_data::{Batcher, TrainTest, Verify};
use manabi_layers::{Network, Plan, Spec, Training, Update};
use manabi_optim::AnyOptimizer;
use manabi_tensor::{CsrBuf, Real, Rng};
use std::time::Instant;

/// Loads the data the flags point at (all of it; `--train-limit` cuts the training set after).
/// The class count is `--classes`, else `known` (a model's or checkpoint's outputs), else
/// inferred from the labels.
pub fn load_data(data: &DataArgs, known: Option<usize>) -> Result<TrainTest, CliError> {
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

/// Networks to split each batch between: two (data parallelism, see `parallel`) for a
/// convolutional stack on dense input with a second thread and at least two rows a batch;
/// one for the rest. An MLP's step is too short to gain from the hand-over, and BatchNorm's
/// batch statistics would be per half.
pub fn replicas(stack: &Stack, threads: usize, sparse: bool, batch: usize) -> usize {
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
pub fn limit_train(sets: &mut TrainTest, limit: Option<usize>) -> Result<(), CliError> {
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
pub fn backend_name(b: BackendArg) -> String {
    b.to_possible_value()
        .map_or_else(String::new, |v| v.get_name().to_string())
}

/// Starts a run's state: the network initialised from the seed, or everything restored from
/// a checkpoint. Returns the batch generator, the batcher and the progress.
pub fn start<T: Real>(
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
pub fn plan_run(config: &RunConfig, fused: bool, sparse: bool) -> Result<Plan, CliError> {
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

/// What a run is made of once its configuration is read: the plan, the optimizer, the sets the
/// per-epoch evaluations read and, for sparse runs, both sets as compressed rows.
pub struct Prepared<T> {
    pub plan: Plan,
    pub opt: AnyOptimizer<T>,
    /// Plain SGD, the book's, runs fused into the backward pass: each layer's update is the
    /// weight-gradient product itself (`W ← (1 − lr·λ)·W − lr·xᵀ·dy`, one product with
    /// α = −lr), so no gradient buffer is written and read back. Other optimizers, and
    /// data-parallel steps (which average gradients), need the gradients whole.
    pub fused_lr: Option<T>,
    /// The book's weight decay is the network's (weights only, in the loss), not the
    /// optimizer's (every parameter): the optimizer gets none.
    pub decay: T,
    pub iter_per_epoch: u64,
    /// `--eval-samples`: the first samples of both sets, when fewer than the whole sets (the
    /// book's convnet trainer); the final test accuracy reads the whole set.
    pub subset: Option<TrainTest>,
    pub sparse_sets: Option<(CsrBuf<T>, CsrBuf<T>)>,
}

impl<T: Elem> Prepared<T> {
    pub fn new(config: &RunConfig, sets: &TrainTest, sparse: bool) -> Result<Self, CliError> {
        let (train, test) = (&sets.train, &sets.test);
        let subset = match config.eval_samples {
            Some(n) if n < train.len() || n < test.len() => {
                let mut first = sets.clone();
                first.train.truncate(n)?;
                first.test.truncate(n)?;
                Some(first)
            }
            _ => None,
        };
        let opt = AnyOptimizer::<T>::from_name(&config.optimizer, T::from_f64(config.lr))?;
        opt.validate()?;
        let fused_lr = match &opt {
            AnyOptimizer::Sgd(sgd) if config.replicas == 1 => Some(sgd.lr),
            _ => None,
        };
        // Sparse input: both sets become compressed rows once (MNIST: 10.5 million
        // nonzeros); batches copy rows from there and evaluations read them in place.
        let sparse_sets = if sparse {
            Some((train.to_sparse::<T>()?, test.to_sparse::<T>()?))
        } else {
            None
        };
        Ok(Self {
            plan: plan_run(config, fused_lr.is_some(), sparse)?,
            opt,
            fused_lr,
            decay: T::from_f64(config.weight_decay),
            iter_per_epoch: (train.len() / config.batch).max(1) as u64,
            subset,
            sparse_sets,
        })
    }

    /// The update, checked against the plan once; optimizer steps count on from `first`.
    pub fn update(&self, first: u64) -> Result<Update<'_, T, AnyOptimizer<T>>, CliError> {
        Ok(match self.fused_lr {
            Some(lr) => Update::fused_sgd(&self.plan, lr)?
                .with_weight_decay(self.decay)?
                .for_optimizer(),
            None => Update::optimizer(&self.plan, &self.opt, first + 1)?
                .with_weight_decay(self.decay)?,
        })
    }

    pub fn rows(&self) -> SetRows<'_, T> {
        self.sparse_sets.as_ref().map(|(a, b)| (a.view(), b.view()))
    }
}
