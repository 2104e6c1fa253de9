//! What `manabi train` does at the training loop's moments: the progress bar, the book's per-epoch evaluation lines, and checkpoints written atomically (with the kill points the tests use).

use crate::CliError;
use crate::draw::Draws;
use crate::evaluate::Evaluator;
use crate::feed::Evaluations as WorkerEvaluations;
use crate::model;
use indicatif::ProgressBar;
use manabi_cli::checkpoint::{MetricRow, Progress, RunConfig, Snapshot};
use manabi_data::TrainTest;
use manabi_layers::{Moment, Network, Observer};
use manabi_matmul::Gemm;
use manabi_tensor::{Csr, Real};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

/// Both sets as compressed rows, for sparse runs.
pub type SetRows<'e, T> = Option<(Csr<'e, T>, Csr<'e, T>)>;

/// The parameters followed by the running statistics: what an evaluation reads.
pub fn weights<T: Real>(net: &Network<'_, T>) -> Vec<T> {
    net.params().iter().chain(net.stats()).copied().collect()
}

/// One evaluation point: the row's accuracies over the whole training and test sets.
fn evaluate_row<T: Real, G: Gemm<T> + Sync>(
    ev: &mut Evaluator<T>,
    mm: &G,
    params: &[T],
    row: MetricRow,
    sets: &TrainTest,
    rows: SetRows<'_, T>,
) -> MetricRow {
    MetricRow {
        train_acc: ev.accuracy(mm, params, &sets.train, rows.map(|r| r.0)),
        test_acc: ev.accuracy(mm, params, &sets.test, rows.map(|r| r.1)),
        ..row
    }
}

/// Where a run's evaluations run, and the rows they have given back so far.
pub struct Evaluations<'e, T> {
    /// This thread's evaluator, when there is no worker.
    pub inline: Option<Evaluator<T>>,
    /// The worker's end, when there is one.
    pub worker: Option<WorkerEvaluations<T>>,
    /// The sets each evaluation reads (the whole sets, or their first `--eval-samples`).
    pub sets: &'e TrainTest,
    /// Both sets as compressed rows, for sparse runs.
    pub rows: SetRows<'e, T>,
    /// The worker's finished rows, in order.
    pub done: mpsc::Receiver<MetricRow>,
    /// Evaluations handed to the worker and not yet received.
    pub pending: usize,
    /// For the epoch column of the printed lines.
    pub iter_per_epoch: u64,
}

impl<T: Real + Send> Evaluations<'_, T> {
    /// Evaluates the network's accuracies for `row` (the book's per-epoch `accuracy`): on the
    /// worker if there is one, else here and reported at once.
    fn evaluate<G: Gemm<T> + Sync>(
        &mut self,
        (net, mm): (&Network<'_, T>, &G),
        row: MetricRow,
        (bar, metrics): (&ProgressBar, &mut Vec<MetricRow>),
    ) -> Result<(), CliError> {
        if let Some(worker) = &self.worker {
            worker.evaluate(row, net.params(), net.stats())?;
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
    pub fn drain(
        &mut self,
        bar: &ProgressBar,
        metrics: &mut Vec<MetricRow>,
    ) -> Result<(), CliError> {
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

/// The run's clock: seconds trained before a resume, plus this process's.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    started: Instant,
    before: f64,
}

impl Clock {
    /// A clock that starts at `before` seconds.
    pub fn start(before: f64) -> Self {
        Self {
            started: Instant::now(),
            before,
        }
    }

    /// Training seconds so far.
    pub fn elapsed(&self) -> f64 {
        self.before + self.started.elapsed().as_secs_f64()
    }
}

/// `manabi train`'s observer: the bar, the evaluations, the metrics and the checkpoints.
pub struct Watch<'w, 'e, T, G> {
    /// The progress bar (drawn on a terminal only).
    pub bar: &'w ProgressBar,
    /// Where evaluations run.
    pub evals: Evaluations<'e, T>,
    /// The backend evaluations run on here.
    pub mm: &'w G,
    /// Every evaluation so far, and the clock and the configuration a checkpoint keeps.
    pub progress: Progress,
    /// The run's clock.
    pub clock: Clock,
    /// The configuration checkpoints record.
    pub config: &'w RunConfig,
    /// Where checkpoints go.
    pub checkpoint_path: PathBuf,
    /// The last checkpoint's iteration, for the divergence message.
    pub last_checkpoint: Option<u64>,
}

impl<T: Real + Send, G: Gemm<T> + Sync> Observer<T, Draws<'_, T>, CliError>
    for Watch<'_, '_, T, G>
{
    fn stepped(
        &mut self,
        at: &mut Moment<'_, '_, T, Draws<'_, T>>,
        loss: T,
        _rows: usize,
    ) -> Result<(), CliError> {
        self.bar.inc(1);
        if (at.progress.iteration - 1).is_multiple_of(50) {
            self.bar.set_message(format!("{:.4}", loss.to_f64()));
        }
        // Report what earlier evaluations found, in order, as the worker finishes them.
        self.evals
            .report_finished(self.bar, &mut self.progress.metrics);
        Ok(())
    }

    fn evaluate(
        &mut self,
        at: &mut Moment<'_, '_, T, Draws<'_, T>>,
        mean_loss: f64,
    ) -> Result<(), CliError> {
        let it = at.progress.iteration;
        let row = MetricRow {
            iteration: it,
            epoch: it as f64 / self.evals.iter_per_epoch as f64,
            train_acc: 0.0,
            test_acc: 0.0,
            loss: mean_loss,
            elapsed: self.clock.elapsed(),
        };
        let metrics = &mut self.progress.metrics;
        self.evals
            .evaluate((at.net, self.mm), row, (self.bar, metrics))
    }

    fn checkpoint(&mut self, at: &mut Moment<'_, '_, T, Draws<'_, T>>) -> Result<(), CliError> {
        // A checkpoint holds every evaluation up to its iteration.
        self.evals.drain(self.bar, &mut self.progress.metrics)?;
        let it = at.progress.iteration;
        self.progress.iteration = it;
        (self.progress.loss_sum, self.progress.loss_count) =
            (at.progress.loss_sum, at.progress.loss_count);
        self.progress.elapsed = self.clock.elapsed();
        let net = &*at.net;
        let bytes = Snapshot {
            config: self.config,
            plan: net.plan(),
            params: net.params(),
            stats: net.stats(),
            opt_state: net.state(),
            rng: at.source.rng.state(),
            dropout_rng: net.rng().state(),
            batcher: &at.source.batcher.state(),
            progress: &self.progress,
        }
        .to_bytes()?;
        let kill_point = KillPoint::from_env(it);
        let midway = (kill_point == Some(KillPoint::InCheckpoint)).then_some(pause as _);
        model::write_atomic_or_pause(&self.checkpoint_path, &bytes, midway)?;
        self.last_checkpoint = Some(it);
        if kill_point == Some(KillPoint::AfterCheckpoint) {
            pause(&self.checkpoint_path);
        }
        Ok(())
    }
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
