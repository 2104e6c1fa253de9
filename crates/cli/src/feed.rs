//! Minibatches gathered on a second thread a few iterations ahead of the training step.
//!
//! The training thread keeps the random generator and the [`Batcher`], so the batches, their
//! order and the checkpointed position are exactly those of gathering in place: it draws each
//! batch's indices ([`Batcher::next_indices`]) and sends them with a reused buffer; the
//! gathering thread copies the samples (random rows of the training set, converted from bytes,
//! about 60 µs a batch) while the step before runs, and sends the buffer back in order; the
//! step then reads the batch where it is (`Mlp::train_step_on`), without a copy.

use crate::CliError;
use manabi_data::{Batcher, Dataset, gather};
use manabi_tensor::{Real, Rng};
use std::sync::mpsc;
use std::thread::Scope;

/// Batches requested ahead of the one being trained on.
pub const DEPTH: usize = 4;

/// One batch's indices and the buffers its samples and labels are copied into.
pub struct Batch<T> {
    indices: Vec<usize>,
    x: Vec<T>,
    labels: Vec<usize>,
    rows: usize,
}

impl<T> Batch<T> {
    /// The samples, `rows × features` values (and unused space after them).
    pub fn x(&self) -> &[T] {
        &self.x
    }

    /// The labels, one per row.
    pub fn labels(&self) -> &[usize] {
        &self.labels[..self.rows]
    }

    /// Rows in this batch.
    pub fn rows(&self) -> usize {
        self.rows
    }
}

/// The training thread's end of the pipeline.
pub struct Feeder<T> {
    requests: mpsc::SyncSender<Batch<T>>,
    ready: mpsc::Receiver<Batch<T>>,
    free: Vec<Batch<T>>,
    in_flight: usize,
    /// The iteration the next request is for.
    next: u64,
}

impl<T: Real + Send> Feeder<T> {
    /// Starts the gathering thread in `scope` for batches of `batch` samples of `data`;
    /// `first` is the iteration the first request will be for.
    pub fn spawn<'scope, 'env>(
        scope: &'scope Scope<'scope, 'env>,
        data: &'env Dataset,
        batch: usize,
        first: u64,
    ) -> Self {
        // Bounded channels hold their DEPTH slots from the start (an unbounded one allocates a
        // block every few dozen messages); at most DEPTH batches exist, so sends never wait.
        let (requests, queue) = mpsc::sync_channel::<Batch<T>>(DEPTH);
        let (filled, ready) = mpsc::sync_channel::<Batch<T>>(DEPTH);
        scope.spawn(move || {
            for mut b in queue {
                gather(data, &b.indices[..b.rows], &mut b.x, &mut b.labels);
                if filled.send(b).is_err() {
                    break;
                }
            }
        });
        let free = (0..DEPTH)
            .map(|_| Batch {
                indices: vec![0; batch],
                x: vec![T::ZERO; batch * data.features()],
                labels: vec![0; batch],
                rows: 0,
            })
            .collect();
        Self {
            requests,
            ready,
            free,
            in_flight: 0,
            next: first,
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
                .send(b)
                .map_err(|_| CliError("the batch thread stopped".into()))?;
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
            return Err(CliError("no batch was requested".into()));
        }
        let b = self
            .ready
            .recv()
            .map_err(|_| CliError("the batch thread stopped".into()))?;
        self.in_flight -= 1;
        Ok(b)
    }

    /// Returns a batch's buffers for the next request.
    pub fn give_back(&mut self, b: Batch<T>) {
        self.free.push(b);
    }
}
