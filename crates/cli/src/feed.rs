//! The second core's worker: minibatches gathered a few iterations ahead of the training
//! step, and whole-set evaluations in between.
//!
//! The training thread keeps the random generator and the [`Batcher`], so the batches, their
//! order and the checkpointed position are exactly those of gathering in place: it draws each
//! batch's indices ([`Batcher::next_indices`]) and sends them with a reused buffer; the
//! gathering thread copies the samples (random rows of the training set, converted from bytes;
//! or, for sparse input, rows copied from the set's compressed rows and transposed for the
//! weight gradient) while the step before runs, and sends the
//! buffer back in order; the step then reads the batch where it is (`Input::Dense` or
//! `Input::Sparse`), without a copy.
//!
//! The same thread evaluates parameter snapshots over the training and test sets, one chunk of
//! rows at a time, and gathers every waiting batch between chunks: one thread on the second
//! core, so a batch never waits for the operating system to preempt an evaluation.

use crate::CliError;
use crate::evaluate::Evaluator;
use manabi_cli::checkpoint::MetricRow;
use manabi_data::{Batcher, TrainTest, gather, gather_rows};
use manabi_layers::SparseBatch;
use manabi_matmul::Gemm;
use manabi_tensor::{Csr, CsrBuf, Real, Rng};
use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::sync::mpsc::{self, TryRecvError};
use std::thread::Scope;

/// Batch buffers in the pipeline: the one being trained on and up to DEPTH − 1 requested
/// ahead, enough for the steps that run while the worker evaluates one chunk (1000 rows,
/// about 2 ms).
pub const DEPTH: usize = 8;

/// Evaluation snapshots the request channel holds before the worker takes them (it moves them
/// to its own queue between chunks, so this only bounds a burst).
const EVAL_SLOTS: usize = 4;

/// What the worker is asked to do.
enum Job<T> {
    /// Copy a batch's samples.
    Gather(Batch<T>),
    /// Evaluate a snapshot of the weights (parameters, then running statistics) for a
    /// metrics row.
    Evaluate(MetricRow, Vec<T>),
}

/// An evaluation in progress: which set, the next row, and the correct counts so far.
struct Running {
    row: MetricRow,
    set: usize,
    first: usize,
    correct: [usize; 2],
}

impl Running {
    /// The metrics row with the training and test accuracies counted over `evals`.
    fn finished_row(&self, evals: &TrainTest) -> MetricRow {
        let accuracy = |c: usize, len: usize| c as f64 / len.max(1) as f64;
        MetricRow {
            train_acc: accuracy(self.correct[0], evals.train.len()),
            test_acc: accuracy(self.correct[1], evals.test.len()),
            ..self.row
        }
    }
}

/// One batch's indices and the buffers its samples and labels are copied into: dense rows,
/// or compressed rows and their transpose.
pub struct Batch<T> {
    indices: Vec<usize>,
    x: Vec<T>,
    sparse: Option<(CsrBuf<T>, CsrBuf<T>)>,
    labels: Vec<usize>,
    rows: usize,
}

impl<T: Real> Batch<T> {
    /// Buffers for a batch of up to `batch` samples of `features` values, holding no rows
    /// yet: dense rows, or, if `sparse`, compressed rows and their transpose.
    ///
    /// # Errors
    /// If the sparse buffers cannot be sized (a batch too large for `u32` offsets).
    fn new(batch: usize, features: usize, sparse: bool) -> Result<Self, CliError> {
        let sparse = if sparse {
            Some((CsrBuf::new(batch, features)?, CsrBuf::new(features, batch)?))
        } else {
            None
        };
        Ok(Batch {
            indices: vec![0; batch],
            x: if sparse.is_some() {
                Vec::new()
            } else {
                vec![T::ZERO; batch * features]
            },
            sparse,
            labels: vec![0; batch],
            rows: 0,
        })
    }

    /// The samples, `rows × features` values; empty when the batch is sparse.
    pub fn x(&self) -> &[T] {
        &self.x[..self.x.len().min(self.rows * self.features())]
    }

    /// Values per sample.
    fn features(&self) -> usize {
        self.x.len() / self.indices.len().max(1)
    }

    /// The samples as compressed rows with their transpose, when the batch is sparse.
    ///
    /// # Errors
    /// Never for a batch the worker filled (the shapes always agree).
    pub fn sparse(&self) -> Result<Option<SparseBatch<'_, T>>, CliError> {
        match &self.sparse {
            Some((x, xt)) => Ok(Some(SparseBatch::new(x.view(), xt.view())?)),
            None => Ok(None),
        }
    }

    /// The labels, one per row.
    pub fn labels(&self) -> &[usize] {
        &self.labels[..self.rows]
    }
}

/// Where evaluations are handed to the worker.
pub struct Evaluations<T> {
    requests: mpsc::SyncSender<Job<T>>,
}

impl<T: Real> Evaluations<T> {
    /// Hands a snapshot of the parameters and running statistics to the worker, to evaluate
    /// for `row` on the whole training and test sets; the row comes back on the `finished`
    /// channel.
    ///
    /// # Errors
    /// If the worker stopped.
    pub fn evaluate(&self, row: MetricRow, params: &[T], stats: &[T]) -> Result<(), CliError> {
        let weights = params.iter().chain(stats).copied().collect();
        self.requests
            .send(Job::Evaluate(row, weights))
            .map_err(|_| CliError::Worker("the evaluation thread stopped"))
    }
}

/// The training thread's end of the pipeline.
pub struct Feeder<T> {
    requests: mpsc::SyncSender<Job<T>>,
    ready: mpsc::Receiver<Batch<T>>,
    free: Vec<Batch<T>>,
    in_flight: usize,
    /// The iteration the next request is for.
    next: u64,
}

impl<T: Real + Send> Feeder<T> {
    /// Starts the worker in `scope` for batches of `batch` samples of `sets.train`, with
    /// `first` the iteration the first request will be for; evaluations use `evaluator` and
    /// `mm` over `evals` (the sets themselves, or their first samples for `--eval-samples`)
    /// and send their rows to `finished`. Given `rows` (both sets as compressed rows),
    /// batches are copied from there with their transpose, and evaluations read them.
    ///
    /// # Errors
    /// If the sparse buffers cannot be sized (a batch too large for `u32` offsets).
    #[allow(clippy::too_many_arguments)]
    pub fn spawn<'scope, 'env, G: Gemm<T> + Sync>(
        scope: &'scope Scope<'scope, 'env>,
        sets: &'env TrainTest,
        evals: &'env TrainTest,
        rows: Option<(Csr<'env, T>, Csr<'env, T>)>,
        batch: usize,
        first: u64,
        evaluator: Evaluator<T>,
        mm: &'env G,
        finished: mpsc::Sender<MetricRow>,
    ) -> Result<Self, CliError> {
        let features = sets.train.features();
        let free = (0..DEPTH)
            .map(|_| Batch::new(batch, features, rows.is_some()))
            .collect::<Result<Vec<_>, CliError>>()?;
        // Bounded channels hold their slots from the start (an unbounded one allocates a
        // block every few dozen messages); at most DEPTH batches exist, so sends never wait.
        let (requests, queue) = mpsc::sync_channel::<Job<T>>(DEPTH + EVAL_SLOTS);
        let (filled, ready) = mpsc::sync_channel::<Batch<T>>(DEPTH);
        let worker = Worker {
            queue,
            sets,
            rows,
            filled,
            evaluator,
            evals,
            mm,
            finished,
            waiting: VecDeque::new(),
            running: None,
        };
        scope.spawn(move || worker.run());
        Ok(Self {
            requests,
            ready,
            free,
            in_flight: 0,
            next: first,
        })
    }

    /// The worker's evaluation end, for the training loop's observer (the loop's batch
    /// source holds the feeder itself).
    pub fn evaluations(&self) -> Evaluations<T> {
        Evaluations {
            requests: self.requests.clone(),
        }
    }

    /// Requests the batches of iterations before `until` that fit in the pipeline, drawing
    /// their indices from `batcher` and `rng` in iteration order.
    pub fn request(
        &mut self,
        batcher: &mut Batcher,
        rng: &mut Rng,
        until: u64,
    ) -> Result<(), CliError> {
        while self.next < until {
            let Some(mut b) = self.free.pop() else {
                break;
            };
            b.rows = batcher.next_indices(rng, &mut b.indices);
            self.requests
                .send(Job::Gather(b))
                .map_err(|_| CliError::Worker("the batch thread stopped"))?;
            self.in_flight += 1;
            self.next += 1;
        }
        Ok(())
    }

    /// Waits for the oldest requested batch and hands it over; train on it in place, then
    /// return it with [`Feeder::give_back`] so its buffers are reused.
    ///
    /// # Errors
    /// If nothing was requested, or the gathering thread stopped.
    pub fn take(&mut self) -> Result<Batch<T>, CliError> {
        if self.in_flight == 0 {
            return Err(CliError::Worker("no batch was requested"));
        }
        let b = self
            .ready
            .recv()
            .map_err(|_| CliError::Worker("the batch thread stopped"))?;
        self.in_flight -= 1;
        Ok(b)
    }

    /// Returns a batch's buffers for the next request.
    pub fn give_back(&mut self, b: Batch<T>) {
        self.free.push(b);
    }
}

/// The worker thread: its ends of the channels, the sets it reads, and the evaluations
/// waiting or under way.
struct Worker<'env, T, G> {
    /// Gather and evaluation requests from the training thread.
    queue: mpsc::Receiver<Job<T>>,
    /// The sets batches are gathered from.
    sets: &'env TrainTest,
    /// Both sets as compressed rows, for sparse input.
    rows: Option<(Csr<'env, T>, Csr<'env, T>)>,
    /// Where gathered batches go back, in the order they were requested.
    filled: mpsc::SyncSender<Batch<T>>,
    /// The inference network that evaluates snapshots.
    evaluator: Evaluator<T>,
    /// The sets evaluations read.
    evals: &'env TrainTest,
    /// The backend evaluations multiply with.
    mm: &'env G,
    /// Where finished metrics rows go.
    finished: mpsc::Sender<MetricRow>,
    /// Snapshots not started yet, oldest first.
    waiting: VecDeque<(MetricRow, Vec<T>)>,
    /// The evaluation under way.
    running: Option<Running>,
}

impl<T: Real, G: Gemm<T>> Worker<'_, T, G> {
    /// Serves requests until the training thread hangs up or stops taking results: every
    /// waiting message first (a batch is gathered as soon as it is asked for), one chunk of
    /// an evaluation when no message waits, and a blocking wait only when there is nothing
    /// else to do.
    fn run(mut self) {
        loop {
            let flow = match self.next_job() {
                Err(mpsc::RecvError) => break,
                Ok(Some(Job::Gather(b))) => self.gather_batch(b),
                Ok(Some(Job::Evaluate(row, weights))) => {
                    self.waiting.push_back((row, weights));
                    ControlFlow::Continue(())
                }
                Ok(None) => self.evaluate_chunk(),
            };
            if flow.is_break() {
                break;
            }
        }
    }

    /// The next request: waited for when no evaluation is running or waiting, else taken only
    /// if one is already there (`None` if not). `Err` once the training thread has hung up.
    fn next_job(&self) -> Result<Option<Job<T>>, mpsc::RecvError> {
        if self.running.is_none() && self.waiting.is_empty() {
            self.queue.recv().map(Some)
        } else {
            match self.queue.try_recv() {
                Ok(job) => Ok(Some(job)),
                Err(TryRecvError::Empty) => Ok(None),
                Err(TryRecvError::Disconnected) => Err(mpsc::RecvError),
            }
        }
    }

    /// Copies the samples and labels of `b`'s indices into its buffers and sends it back;
    /// `Break` if the training thread no longer takes batches.
    fn gather_batch(&self, mut b: Batch<T>) -> ControlFlow<()> {
        let indices = &b.indices[..b.rows];
        match (&mut b.sparse, self.rows) {
            (Some((x, xt)), Some((all, _))) => {
                let labels = self.sets.train.labels();
                gather_rows(all, labels, indices, x, &mut b.labels);
                xt.transpose_from(x.view());
            }
            _ => gather(&self.sets.train, indices, &mut b.x, &mut b.labels),
        }
        if self.filled.send(b).is_err() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }

    /// Starts the oldest waiting evaluation if none is under way, then evaluates the next
    /// chunk of rows of the one under way, sending its metrics row once both sets are done;
    /// `Break` if the row cannot be sent.
    fn evaluate_chunk(&mut self) -> ControlFlow<()> {
        if self.running.is_none()
            && let Some((row, weights)) = self.waiting.pop_front()
        {
            self.evaluator.load(&weights);
            self.running = Some(Running {
                row,
                set: 0,
                first: 0,
                correct: [0; 2],
            });
        }
        let Some(r) = self.running.as_mut() else {
            return ControlFlow::Continue(());
        };
        let data = if r.set == 0 {
            &self.evals.train
        } else {
            &self.evals.test
        };
        let sparse = self
            .rows
            .map(|(train, test)| if r.set == 0 { train } else { test });
        let (n, right) = self.evaluator.correct_rows(self.mm, data, sparse, r.first);
        r.correct[r.set] += right;
        r.first += n;
        if r.first >= data.len() || n == 0 {
            r.set += 1;
            r.first = 0;
        }
        if r.set == 2 {
            let row = r.finished_row(self.evals);
            self.running = None;
            if self.finished.send(row).is_err() {
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    }
}
