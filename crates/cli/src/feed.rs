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
        mut evaluator: Evaluator<T>,
        mm: &'env G,
        finished: mpsc::Sender<MetricRow>,
    ) -> Result<Self, CliError> {
        let features = sets.train.features();
        let free = (0..DEPTH)
            .map(|_| {
                let sparse = if rows.is_some() {
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
            })
            .collect::<Result<Vec<_>, CliError>>()?;
        // Bounded channels hold their slots from the start (an unbounded one allocates a
        // block every few dozen messages); at most DEPTH batches exist, so sends never wait.
        let (requests, queue) = mpsc::sync_channel::<Job<T>>(DEPTH + EVAL_SLOTS);
        let (filled, ready) = mpsc::sync_channel::<Batch<T>>(DEPTH);
        scope.spawn(move || {
            let mut waiting: VecDeque<(MetricRow, Vec<T>)> = VecDeque::new();
            let mut running: Option<Running> = None;
            loop {
                // Every waiting message first; block only when there is nothing else to do.
                let job = if running.is_none() && waiting.is_empty() {
                    match queue.recv() {
                        Ok(job) => Some(job),
                        Err(_) => break,
                    }
                } else {
                    match queue.try_recv() {
                        Ok(job) => Some(job),
                        Err(TryRecvError::Empty) => None,
                        Err(TryRecvError::Disconnected) => break,
                    }
                };
                match job {
                    Some(Job::Gather(mut b)) => {
                        let indices = &b.indices[..b.rows];
                        match (&mut b.sparse, rows) {
                            (Some((x, xt)), Some((all, _))) => {
                                let labels = sets.train.labels();
                                gather_rows(all, labels, indices, x, &mut b.labels);
                                xt.transpose_from(x.view());
                            }
                            _ => gather(&sets.train, indices, &mut b.x, &mut b.labels),
                        }
                        if filled.send(b).is_err() {
                            break;
                        }
                        continue;
                    }
                    Some(Job::Evaluate(row, params)) => {
                        waiting.push_back((row, params));
                        continue;
                    }
                    None => {}
                }
                if running.is_none()
                    && let Some((row, params)) = waiting.pop_front()
                {
                    evaluator.load(&params);
                    running = Some(Running {
                        row,
                        set: 0,
                        first: 0,
                        correct: [0; 2],
                    });
                }
                let Some(r) = running.as_mut() else {
                    continue;
                };
                let data = if r.set == 0 {
                    &evals.train
                } else {
                    &evals.test
                };
                let sparse = rows.map(|(train, test)| if r.set == 0 { train } else { test });
                let (n, right) = evaluator.correct_rows(mm, data, sparse, r.first);
                r.correct[r.set] += right;
                r.first += n;
                if r.first >= data.len() || n == 0 {
                    r.set += 1;
                    r.first = 0;
                }
                if r.set == 2 {
                    let accuracy = |c: usize, len: usize| c as f64 / len.max(1) as f64;
                    let row = MetricRow {
                        train_acc: accuracy(r.correct[0], evals.train.len()),
                        test_acc: accuracy(r.correct[1], evals.test.len()),
                        ..r.row
                    };
                    running = None;
                    if finished.send(row).is_err() {
                        break;
                    }
                }
            }
        });
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
