//! The book's `Trainer` (`common/trainer.py`): the one training loop, with batches, evaluation, checkpoints and schedules passed in.
//!
//! A [`Trainer`] owns the [`Network`], its [`Update`] (fused SGD or an optimizer with its step
//! count), where the run stands ([`Progress`]) and when things happen ([`Schedule`]). Each
//! [`Trainer::step`] is the book's `train_step`: draw a minibatch, take the gradient, update,
//! check for divergence, and at the schedule's moments call the caller's [`Observer`];
//! [`Trainer::run`] is the book's `train`, steps until the schedule's last iteration.
//!
//! What differs between a terminal, a test and a microcontroller is passed in, not written
//! into the loop (as burn's no_std example and Keras' callbacks do):
//!
//! - [`BatchSource`]: where minibatches come from — rows copied into the arena, a caller's
//!   dense or sparse rows, another thread's pipeline, a file streamed over semihosting;
//! - [`Stepper`]: how one batch becomes one update — [`OneNetwork`], or the CLI's
//!   data-parallel twin that splits it with a second thread;
//! - [`Observer`]: the learning-rate schedule, progress, evaluation and checkpoints.
//!
//! The divergence checks live here, once: a non-finite loss after any step, a non-finite
//! weight (every `check_weights_every` steps), and a non-finite optimizer state before a
//! checkpoint, each stopping the run with [`Stop::Diverged`] before anything is written.
//!
//! A run's state — weights, running statistics, optimizer state, the Dropout generator, the
//! iteration and the loss window, plus the batch source's own tensors — saves into a caller's
//! byte buffer as a safetensors file ([`Moment::save`]) and restores from one
//! ([`Trainer::restore`]): the CLI's `checkpoint.safetensors` is this file with the CLI's
//! metrics and configuration added, and a device's snapshot is the same without them.

use crate::plan::{Region, TensorName};
use crate::{Input, Layer, Network, Plan, Target, Update};
use core::fmt;
use manabi_matmul::Gemm;
use manabi_optim::Optimizer;
use manabi_tensor::safetensors::{self, Data, Entry, Name, SafeTensors, StError};
use manabi_tensor::{Real, Rng};

/// One minibatch: where its rows are, and their labels.
#[derive(Clone, Copy, Debug)]
pub struct Batch<'b, T> {
    /// The rows: the network's own input rows (filled by the source), or the source's.
    pub input: Input<'b, T>,
    /// One class index per row.
    pub labels: &'b [usize],
}

/// Where a run's minibatches come from.
///
/// `E` is the caller's error type (the CLI's, a firmware's): a source that reads a file or
/// another thread can fail, and the run then stops with [`Stop::Failed`].
pub trait BatchSource<T: Real, E> {
    /// The batch for the step after `done` steps. It may copy rows into the network's input
    /// (`net.input_mut(rows)`) and return [`Input::Arena`], or lend rows of its own.
    ///
    /// # Errors
    /// Whatever the source meets (a read error, a stopped worker).
    fn next(&mut self, done: u64, net: &mut Network<'_, T>) -> Result<Batch<'_, T>, E>;

    /// The source's own state for a snapshot (a generator, a position in the data), handed to
    /// `out` as tensors; none by default.
    fn save<'s>(&'s self, out: &mut dyn FnMut(Entry<'s>)) {
        let _ = out;
    }
}

/// How one batch becomes one update of the network.
pub trait Stepper<T: Real, G, O, E> {
    /// Trains `net` on `batch` with `update`; returns the batch's mean loss.
    ///
    /// # Errors
    /// Whatever the stepper meets (a stopped thread).
    fn step(
        &mut self,
        net: &mut Network<'_, T>,
        mm: &G,
        batch: Batch<'_, T>,
        update: &mut Update<'_, T, O>,
    ) -> Result<T, E>;
}

/// The plain step: [`Network::train_step`] on the whole batch.
#[derive(Clone, Copy, Debug, Default)]
pub struct OneNetwork;

impl<T: Real, G: Gemm<T>, O: Optimizer<T>, E> Stepper<T, G, O, E> for OneNetwork {
    fn step(
        &mut self,
        net: &mut Network<'_, T>,
        mm: &G,
        batch: Batch<'_, T>,
        update: &mut Update<'_, T, O>,
    ) -> Result<T, E> {
        Ok(net.train_step(mm, batch.input, Target::Labels(batch.labels), update))
    }
}

/// Moments of a run at which it stops to let the caller look: every one has a default that
/// does nothing, so an observer implements only what it needs.
pub trait Observer<T: Real, S, E> {
    /// The fused-SGD learning rate for the step after `done` steps (a schedule), or `None`
    /// to keep the rate. Optimizers hold their own rate and ignore it.
    fn learning_rate(&mut self, done: u64) -> Option<T> {
        let _ = done;
        None
    }

    /// After every step: `loss` on `rows` rows (the progress already counts the step).
    ///
    /// # Errors
    /// The caller's, which stops the run.
    fn stepped(&mut self, at: &mut Moment<'_, '_, T, S>, loss: T, rows: usize) -> Result<(), E> {
        let _ = (at, loss, rows);
        Ok(())
    }

    /// At each evaluation point of the schedule, with the mean loss of the steps since the
    /// previous one (the loss window is then emptied). The network is lent writable, so that
    /// an evaluation can run its forward passes in it (a device has no room for a copy);
    /// evaluation-mode passes change only its activations.
    ///
    /// # Errors
    /// The caller's, which stops the run.
    fn evaluate(&mut self, at: &mut Moment<'_, '_, T, S>, mean_loss: f64) -> Result<(), E> {
        let _ = (at, mean_loss);
        Ok(())
    }

    /// When a checkpoint is due (the optimizer state was checked finite first):
    /// [`Moment::save`] writes the run's state.
    ///
    /// # Errors
    /// The caller's, which stops the run.
    fn checkpoint(&mut self, at: &mut Moment<'_, '_, T, S>) -> Result<(), E> {
        let _ = at;
        Ok(())
    }
}

/// An observer that does nothing (benchmarks, tests).
#[derive(Clone, Copy, Debug, Default)]
pub struct Quiet;

impl<T: Real, S, E> Observer<T, S, E> for Quiet {}

/// Every `every` iterations, counting from `offset`: iterations `offset`, `offset + every`, …
/// (iterations are counted from 1, so an offset of 1 is the book's "after the first step of
/// each epoch" and an offset of 0 the end of each epoch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Period {
    /// The distance between two moments (at least 1).
    pub every: u64,
    /// The first moment's iteration (0: `every` itself).
    pub offset: u64,
}

impl Period {
    /// The book's evaluation points: after iterations 1, `every + 1`, `2·every + 1`, …
    /// (`if i % iter_per_epoch == 0` after step `i`, counted from 0).
    pub const fn book(every: u64) -> Self {
        Self { every, offset: 1 }
    }

    /// The end of every `every` iterations: after iterations `every`, `2·every`, …
    pub const fn ends(every: u64) -> Self {
        Self { every, offset: 0 }
    }

    /// Whether iteration `it` (from 1) is one of the moments.
    pub const fn contains(&self, it: u64) -> bool {
        let every = if self.every == 0 { 1 } else { self.every };
        it >= self.offset && it > 0 && (it - self.offset) % every == 0
    }
}

/// When a run evaluates, checkpoints, checks its weights and ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// Iterations in all: [`Trainer::run`] ends after this many.
    pub iters: u64,
    /// Evaluation points ([`Observer::evaluate`]), if any.
    pub evaluate: Option<Period>,
    /// A checkpoint ([`Observer::checkpoint`]) after every this many iterations, except after
    /// the last.
    pub checkpoint_every: Option<u64>,
    /// Every weight is checked finite after every this many steps (1 on a host, where one
    /// vectorised pass is about 1 % of an MLP step; a microcontroller may check at its
    /// evaluation points only). The loss is checked after every step whatever this is.
    pub check_weights_every: u64,
}

impl Schedule {
    /// `iters` iterations, the weights checked after every step, no evaluations or
    /// checkpoints.
    pub const fn new(iters: u64) -> Self {
        Self {
            iters,
            evaluate: None,
            checkpoint_every: None,
            check_weights_every: 1,
        }
    }

    /// Whether a checkpoint is due after iteration `it` (from 1).
    pub const fn checkpoint_due(&self, it: u64) -> bool {
        match self.checkpoint_every {
            Some(every) if every > 0 => it % every == 0 && it < self.iters,
            _ => false,
        }
    }
}

/// Where a run stands, apart from the network and the batch source.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Progress {
    /// Iterations completed.
    pub iteration: u64,
    /// Sum of the losses since the last evaluation point.
    pub loss_sum: f64,
    /// Number of losses in `loss_sum`.
    pub loss_count: u64,
}

/// What made a run diverge.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Divergence<T> {
    /// The loss is not finite.
    Loss(T),
    /// A weight is not finite (the loss was still finite).
    Weight {
        /// Its tensor.
        tensor: TensorName,
        /// Its index in the tensor.
        index: usize,
        /// Its value.
        value: T,
        /// The step's loss.
        loss: T,
    },
    /// The optimizer state is not finite (checked before a checkpoint).
    OptimizerState,
}

impl<T: fmt::Display> fmt::Display for Divergence<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Divergence::Loss(loss) => write!(f, "the loss is {loss}"),
            Divergence::Weight {
                tensor,
                index,
                value,
                loss,
            } => write!(
                f,
                "weight {tensor}[{index}] is {value} (the loss was {loss})"
            ),
            Divergence::OptimizerState => f.write_str("the optimizer state is not finite"),
        }
    }
}

/// Why a run stopped before its last iteration.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Stop<T, E> {
    /// Training diverged after this iteration (counted from 1); nothing was written for it.
    Diverged {
        /// The iteration.
        iteration: u64,
        /// What diverged.
        why: Divergence<T>,
    },
    /// The batch source, the stepper or the observer failed.
    Failed(E),
}

impl<T, E> From<E> for Stop<T, E> {
    fn from(e: E) -> Self {
        Stop::Failed(e)
    }
}

/// The run as an observer sees it at one of its moments.
#[derive(Debug)]
pub struct Moment<'m, 'n, T, S> {
    /// The network (after the step).
    pub net: &'m mut Network<'n, T>,
    /// Where the run stands (after the step).
    pub progress: &'m Progress,
    /// The batch source.
    pub source: &'m S,
}

/// The tensors of a snapshot, at most: two per layer for parameters, two for statistics,
/// the trainer's four, and room for the source's and the caller's.
pub const SNAPSHOT_TENSORS: usize = 4 * crate::MAX_LAYERS + 4 + EXTRA_TENSORS;

/// A run's state, borrowed: what a snapshot holds besides the batch source's and the
/// caller's own tensors.
#[derive(Clone, Copy, Debug)]
pub struct State<'a, T> {
    /// The network's plan (the tensors' names and shapes).
    pub plan: &'a Plan,
    /// [`Network::params`].
    pub params: &'a [T],
    /// [`Network::stats`].
    pub stats: &'a [T],
    /// [`Network::state`]: `slots × params` optimizer values.
    pub opt_state: &'a [T],
    /// The Dropout generator's state (written for plans with Dropout).
    pub dropout_rng: [u64; 4],
    /// Where the run stands.
    pub progress: Progress,
}

impl<T: Real> State<'_, T> {
    /// Bytes [`State::save`] writes with the same `extra` tensors and `meta`.
    ///
    /// # Errors
    /// More tensors than [`SNAPSHOT_TENSORS`], or slices that do not fit the plan.
    pub fn save_len(&self, extra: &[Entry<'_>], meta: &[(&str, &str)]) -> Result<usize, StError> {
        self.with_entries(extra, |entries| Ok(safetensors::file_len(entries, meta)))
    }

    /// Writes the state into the front of `out` as a safetensors file and returns its length:
    /// every parameter and running statistic by name (`W1`, `b1`, `gamma1`, `running_mean1`,
    /// …), `opt_state` (`[slots, params]`), `dropout_rng` (for plans with Dropout),
    /// `iteration` and `loss_window` (`[sum, count]`), then `extra`, with the metadata pairs
    /// `meta`.
    ///
    /// # Errors
    /// [`StError::BufferTooSmall`] if `out` is shorter than [`State::save_len`]; more tensors
    /// than [`SNAPSHOT_TENSORS`], or slices that do not fit the plan.
    pub fn save(
        &self,
        extra: &[Entry<'_>],
        meta: &[(&str, &str)],
        out: &mut [u8],
    ) -> Result<usize, StError> {
        self.with_entries(extra, |entries| safetensors::write(entries, meta, out))
    }

    fn with_entries<R>(
        &self,
        extra: &[Entry<'_>],
        f: impl FnOnce(&mut [Entry<'_>]) -> Result<R, StError>,
    ) -> Result<R, StError> {
        let plan = self.plan;
        let param_len = plan.param_len();
        if self.params.len() != param_len
            || self.stats.len() != plan.stats_len()
            || self.opt_state.len() % param_len.max(1) != 0
        {
            return Err(StError::BadTensor {
                what: "the parameters, statistics or optimizer state do not fit the plan",
            });
        }
        let words = [self.progress.iteration];
        let window = [self.progress.loss_sum, self.progress.loss_count as f64];
        let mut list = Entries::<SNAPSHOT_TENSORS>::new();
        for e in network_entries(plan, self.params, self.stats) {
            list.push(e);
        }
        let slots = self.opt_state.len() / param_len.max(1);
        let state = T::tensor_data(self.opt_state);
        list.push(Entry::new(
            Name::Text("opt_state"),
            &[slots, param_len],
            state,
        ));
        if has_dropout(plan) {
            list.push(Entry::vector(
                Name::Text("dropout_rng"),
                Data::U64(&self.dropout_rng),
            ));
        }
        list.push(Entry::vector(Name::Text("iteration"), Data::U64(&words)));
        list.push(Entry::vector(Name::Text("loss_window"), Data::F64(&window)));
        for &e in extra {
            list.push(e);
        }
        if list.n > SNAPSHOT_TENSORS {
            return Err(StError::BadTensor {
                what: "a snapshot has more tensors than SNAPSHOT_TENSORS",
            });
        }
        f(&mut list.entries[..list.n])
    }
}

impl<T: Real, S> Moment<'_, '_, T, S> {
    /// The run's state at this moment.
    pub fn state(&self) -> State<'_, T> {
        State {
            plan: self.net.plan(),
            params: self.net.params(),
            stats: self.net.stats(),
            opt_state: self.net.state(),
            dropout_rng: self.net.rng().state(),
            progress: *self.progress,
        }
    }

    /// Writes the run's state ([`State::save`]) with the batch source's tensors
    /// ([`BatchSource::save`]) and `extra` into the front of `out`; returns its length. The
    /// bytes needed are at most [`State::save_len`] of the same tensors; with no room, the
    /// error says how many.
    ///
    /// # Errors
    /// As [`State::save`].
    pub fn save<E>(
        &self,
        extra: &[Entry<'_>],
        meta: &[(&str, &str)],
        out: &mut [u8],
    ) -> Result<usize, StError>
    where
        S: BatchSource<T, E>,
    {
        let mut list = Entries::<EXTRA_TENSORS>::new();
        self.source.save(&mut |e| list.push(e));
        for &e in extra {
            list.push(e);
        }
        if list.n > EXTRA_TENSORS {
            return Err(StError::BadTensor {
                what: "a snapshot's source and caller add more than 16 tensors",
            });
        }
        self.state().save(&list.entries[..list.n], meta, out)
    }
}

/// The tensors the source and the caller may add to a snapshot.
const EXTRA_TENSORS: usize = 16;

/// A snapshot's tensors, gathered without a heap.
struct Entries<'a, const N: usize = SNAPSHOT_TENSORS> {
    entries: [Entry<'a>; N],
    /// How many were pushed (more than fit are counted, not kept).
    n: usize,
}

impl<'a, const N: usize> Entries<'a, N> {
    fn new() -> Self {
        Self {
            entries: [Entry::vector(Name::Text(""), Data::U64(&[])); N],
            n: 0,
        }
    }

    fn push(&mut self, e: Entry<'a>) {
        if let Some(slot) = self.entries.get_mut(self.n) {
            *slot = e;
        }
        self.n += 1;
    }
}

/// Whether the plan has a Dropout layer (whose generator a snapshot keeps).
fn has_dropout(plan: &Plan) -> bool {
    plan.layers().iter().any(|l| matches!(l, Layer::Dropout(_)))
}

/// The network's parameters and statistics as named tensors, in plan order.
fn network_entries<'p, T: Real>(
    plan: &'p Plan,
    params: &'p [T],
    stats: &'p [T],
) -> impl Iterator<Item = Entry<'p>> + 'p {
    plan.tensors().map(move |t| {
        let values = match t.region {
            Region::Params => params,
            Region::Stats => stats,
        };
        let name = Name::Numbered(t.name.prefix, t.name.number);
        Entry::new(
            name,
            t.dims(),
            T::tensor_data(&values[t.span.start..t.span.end()]),
        )
    })
}

/// Why a snapshot cannot be restored.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RestoreError {
    /// The bytes are not a safetensors file.
    File(StError),
    /// A tensor the network needs is missing.
    Missing(&'static str, usize),
    /// A tensor has another dtype or shape than the network's.
    Mismatch(&'static str, usize),
    /// A generator state that no generator can have (all zero).
    BadGenerator,
}

impl fmt::Display for RestoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = |f: &mut fmt::Formatter<'_>, prefix: &str, n: usize| {
            if n == 0 {
                f.write_str(prefix)
            } else {
                write!(f, "{prefix}{n}")
            }
        };
        match *self {
            RestoreError::File(e) => write!(f, "{e}"),
            RestoreError::Missing(p, n) => {
                f.write_str("the snapshot has no tensor ")?;
                name(f, p, n)
            }
            RestoreError::Mismatch(p, n) => {
                f.write_str("the snapshot's tensor ")?;
                name(f, p, n)?;
                f.write_str(" has another dtype or shape than the network's")
            }
            RestoreError::BadGenerator => f.write_str("the snapshot's generator state is all zero"),
        }
    }
}

impl core::error::Error for RestoreError {}

/// The book's `Trainer`: a network, its update, where the run stands and when things happen.
#[derive(Debug)]
pub struct Trainer<'n, 'o, T, O> {
    net: Network<'n, T>,
    update: Update<'o, T, O>,
    schedule: Schedule,
    progress: Progress,
}

impl<'n, 'o, T: Real, O: Optimizer<T>> Trainer<'n, 'o, T, O> {
    /// A run of `net` with `update` (checked against the plan when it was made), from
    /// iteration 0.
    pub fn new(net: Network<'n, T>, update: Update<'o, T, O>, schedule: Schedule) -> Self {
        Self {
            net,
            update,
            schedule,
            progress: Progress::default(),
        }
    }

    /// The network.
    pub fn net(&self) -> &Network<'n, T> {
        &self.net
    }

    /// The network, writable (to load weights, or to evaluate between runs).
    pub fn net_mut(&mut self) -> &mut Network<'n, T> {
        &mut self.net
    }

    /// The network, the run over.
    pub fn into_net(self) -> Network<'n, T> {
        self.net
    }

    /// Where the run stands.
    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// The schedule.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// Continues a run from `progress` (restored by the caller with the network's state): the
    /// optimizer's step count follows the iteration.
    pub fn resume_at(&mut self, progress: Progress) {
        self.update.set_t(progress.iteration + 1);
        self.progress = progress;
    }

    /// Restores what [`Moment::save`] wrote into the network and the progress: parameters,
    /// statistics, optimizer state, the Dropout generator, the iteration and the loss window.
    /// The batch source restores its own tensors from the same file.
    ///
    /// # Errors
    /// A [`RestoreError`] naming the first tensor missing or of another dtype or shape; the
    /// network may then be partly overwritten.
    pub fn restore(&mut self, file: &SafeTensors<'_>) -> Result<(), RestoreError> {
        let plan = self.net.plan();
        for t in plan.tensors() {
            let (prefix, number) = (t.name.prefix, t.name.number);
            let view = file
                .get(&Name::Numbered(prefix, number))
                .ok_or(RestoreError::Missing(prefix, number))?;
            let values = match t.region {
                Region::Params => &mut self.net.params_mut()[t.span.start..t.span.end()],
                Region::Stats => &mut self.net.stats_mut()[t.span.start..t.span.end()],
            };
            if view.dims() != t.dims() {
                return Err(RestoreError::Mismatch(prefix, number));
            }
            T::read_tensor(&view, values).map_err(|_| RestoreError::Mismatch(prefix, number))?;
        }
        let state = file
            .get(&Name::Text("opt_state"))
            .ok_or(RestoreError::Missing("opt_state", 0))?;
        T::read_tensor(&state, self.net.state_mut())
            .map_err(|_| RestoreError::Mismatch("opt_state", 0))?;
        if has_dropout(plan) {
            let mut words = [0u64; 4];
            read_u64(file, "dropout_rng", &mut words)?;
            self.net
                .set_rng(Rng::from_state(words).map_err(|_| RestoreError::BadGenerator)?);
        }
        let (mut iteration, mut window) = ([0u64], [0.0f64; 2]);
        read_u64(file, "iteration", &mut iteration)?;
        let view = file
            .get(&Name::Text("loss_window"))
            .ok_or(RestoreError::Missing("loss_window", 0))?;
        view.read_f64(&mut window)
            .map_err(|_| RestoreError::Mismatch("loss_window", 0))?;
        self.resume_at(Progress {
            iteration: iteration[0],
            loss_sum: window[0],
            loss_count: window[1] as u64,
        });
        Ok(())
    }

    /// One iteration, the book's `train_step`: the learning rate the observer asks for, the
    /// next batch, one update, the divergence checks, the progress, and the observer's
    /// moments (after the step, at an evaluation point, at a checkpoint). Returns the loss.
    ///
    /// # Errors
    /// [`Stop::Diverged`] (nothing was handed to the observer for this iteration) or
    /// [`Stop::Failed`] with the source's, stepper's or observer's error.
    pub fn step<G, S, P, B, E>(
        &mut self,
        mm: &G,
        source: &mut S,
        stepper: &mut P,
        observer: &mut B,
    ) -> Result<T, Stop<T, E>>
    where
        S: BatchSource<T, E>,
        P: Stepper<T, G, O, E>,
        B: Observer<T, S, E>,
    {
        let done = self.progress.iteration;
        if let Some(lr) = observer.learning_rate(done) {
            // A rate the observer computed from its own schedule; a bad one is its bug.
            let _ = self.update.set_lr(lr);
        }
        let batch = source.next(done, &mut self.net)?;
        let rows = batch.labels.len();
        let loss = stepper.step(&mut self.net, mm, batch, &mut self.update)?;
        let it = done + 1;
        let check_weights = it % self.schedule.check_weights_every.max(1) == 0;
        if let Some(why) = divergence(&self.net, loss, check_weights) {
            return Err(Stop::Diverged { iteration: it, why });
        }
        self.progress.iteration = it;
        self.progress.loss_sum += loss.to_f64();
        self.progress.loss_count += 1;
        self.moments(source, observer, loss, rows)?;
        Ok(loss)
    }

    /// The observer's moments after iteration `progress.iteration`.
    fn moments<S, B, E>(
        &mut self,
        source: &S,
        observer: &mut B,
        loss: T,
        rows: usize,
    ) -> Result<(), Stop<T, E>>
    where
        B: Observer<T, S, E>,
    {
        let it = self.progress.iteration;
        observer.stepped(
            &mut moment(&mut self.net, &self.progress, source),
            loss,
            rows,
        )?;
        if self.schedule.evaluate.is_some_and(|p| p.contains(it)) {
            let p = self.progress;
            let mean = p.loss_sum / p.loss_count.max(1) as f64;
            (self.progress.loss_sum, self.progress.loss_count) = (0.0, 0);
            observer.evaluate(&mut moment(&mut self.net, &self.progress, source), mean)?;
        }
        if self.schedule.checkpoint_due(it) {
            if self.net.state().iter().any(|v| !v.is_finite()) {
                let why = Divergence::OptimizerState;
                return Err(Stop::Diverged { iteration: it, why });
            }
            observer.checkpoint(&mut moment(&mut self.net, &self.progress, source))?;
        }
        Ok(())
    }

    /// Steps until the schedule's last iteration (the book's `train`), from where the run
    /// stands.
    ///
    /// # Errors
    /// As [`Trainer::step`].
    pub fn run<G, S, P, B, E>(
        &mut self,
        mm: &G,
        source: &mut S,
        stepper: &mut P,
        observer: &mut B,
    ) -> Result<(), Stop<T, E>>
    where
        S: BatchSource<T, E>,
        P: Stepper<T, G, O, E>,
        B: Observer<T, S, E>,
    {
        while self.progress.iteration < self.schedule.iters {
            self.step(mm, source, stepper, observer)?;
        }
        Ok(())
    }
}

/// The moment an observer sees: the network lent, the progress and the source.
fn moment<'m, 'n, T, S>(
    net: &'m mut Network<'n, T>,
    progress: &'m Progress,
    source: &'m S,
) -> Moment<'m, 'n, T, S> {
    Moment {
        net,
        progress,
        source,
    }
}

fn read_u64(
    file: &SafeTensors<'_>,
    name: &'static str,
    out: &mut [u64],
) -> Result<(), RestoreError> {
    file.get(&Name::Text(name))
        .ok_or(RestoreError::Missing(name, 0))?
        .read_u64(out)
        .map_err(|_| RestoreError::Mismatch(name, 0))
}

/// What made the run diverge after a step, if anything: a non-finite loss, or (when
/// `weights`) a non-finite weight.
///
/// The loss alone is not enough: an infinite or NaN weight behind a ReLU that stays off can
/// leave it finite.
fn divergence<T: Real>(net: &Network<'_, T>, loss: T, weights: bool) -> Option<Divergence<T>> {
    if !loss.is_finite() {
        return Some(Divergence::Loss(loss));
    }
    if !weights {
        return None;
    }
    let (tensor, index, value) = first_non_finite(net.plan(), net.params())?;
    Some(Divergence::Weight {
        tensor,
        index,
        value,
        loss,
    })
}

/// The first non-finite parameter as (tensor name, index in it, value), if any.
///
/// The common case (all finite) is one pass of independent lane sums, which vectorises: `x·0`
/// is 0 for a finite `x` and NaN for an infinity or a NaN, and a NaN survives any sum. Two
/// arrays of 8 lanes, filled from the halves of each 16-value chunk, compile to clean vector
/// code (one array of 16 lanes took about three times as long).
pub fn first_non_finite<T: Real>(plan: &Plan, params: &[T]) -> Option<(TensorName, usize, T)> {
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
    plan.param_at(i).map(|(t, at)| (t.name, at, params[i]))
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::first_non_finite;
    use crate::{Plan, PlanConfig, Shape, Spec, Training};
    use std::{string::ToString, vec};

    #[test]
    fn non_finite_weights_are_found_and_named() {
        // 20·3 + 3 + 3·2 + 2 = 71 parameters: four full 16-lane chunks and a tail of 7.
        const LAYERS: [Spec; 3] = [Spec::Affine(3), Spec::Relu, Spec::Affine(2)];
        let plan = Plan::new(&PlanConfig {
            input: Shape::flat(20),
            layers: &LAYERS,
            batch: 1,
            eval_batch: 1,
            training: Training::Inference,
        })
        .unwrap();
        let named = |p: &[f32]| first_non_finite(&plan, p).map(|(t, at, v)| (t.to_string(), at, v));
        let mut p = vec![0.25f32; 71];
        assert_eq!(named(&p), None);
        p[5] = f32::NAN;
        let (name, at, v) = named(&p).unwrap();
        assert_eq!((name.as_str(), at), ("W1", 5));
        assert!(v.is_nan());
        p[5] = 0.25;
        // b1 is 60..63, W2 63..69, b2 69..71 (in the tail).
        p[64] = f32::NEG_INFINITY;
        assert_eq!(named(&p), Some(("W2".to_string(), 1, f32::NEG_INFINITY)));
        p[64] = 0.25;
        p[70] = f32::INFINITY;
        assert_eq!(named(&p), Some(("b2".to_string(), 1, f32::INFINITY)));
        // Huge but finite values are not divergence.
        p[70] = f32::MAX;
        assert_eq!(named(&p), None);
    }
}
