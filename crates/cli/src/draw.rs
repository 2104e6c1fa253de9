//! Where `manabi train`'s minibatches come from: the [`BatchSource`] of a run (rows gathered in place, dense or sparse, or by the worker on the second core) and its [`Stepper`] (one network, or the data-parallel twin).

use crate::CliError;
use crate::feed::{self, Feeder};
use manabi_cli::parallel::Twin;
use manabi_data::{Batcher, Dataset, gather_rows};
use manabi_layers::{Batch, BatchSource, Input, Network, OneNetwork, SparseBatch, Stepper, Update};
use manabi_matmul::Gemm;
use manabi_optim::AnyOptimizer;
use manabi_tensor::{Csr, CsrBuf, Real, Rng};

/// Buffers for gathering sparse rows in place, sized once.
pub struct SparseGather<'e, T> {
    /// The batch's sample indices.
    indices: Vec<usize>,
    /// The batch's rows.
    x: CsrBuf<T>,
    /// Their transpose, for the weight gradient.
    xt: CsrBuf<T>,
    /// The whole training set's rows.
    all: Csr<'e, T>,
}

impl<'e, T: Real> SparseGather<'e, T> {
    /// Room for batches of `batch` rows of `all` (`features` wide).
    ///
    /// # Errors
    /// A batch too large for the sparse buffers' `u32` offsets.
    pub fn new(all: Csr<'e, T>, batch: usize, features: usize) -> Result<Self, CliError> {
        Ok(Self {
            indices: vec![0usize; batch],
            x: CsrBuf::<T>::new(batch, features)?,
            xt: CsrBuf::<T>::new(features, batch)?,
            all,
        })
    }
}

/// How a run gathers its minibatches.
pub enum Gathering<'e, T> {
    /// A worker on the second core gathers them a few iterations ahead (the batches are the
    /// same: this thread still draws every index in order) and evaluates parameter
    /// snapshots in between. `held` is the batch being trained on, given back at the next
    /// draw.
    Fed(Box<(Feeder<T>, Option<feed::Batch<T>>)>),
    /// This thread gathers sparse rows in place.
    SparseHere(Box<SparseGather<'e, T>>),
    /// This thread copies dense rows into the network's input.
    DenseHere,
}

/// The run's batches: the generator and batcher (the book's `np.random.choice` over the
/// training set), how they are gathered, and the labels of the batches gathered here.
pub struct Draws<'e, T> {
    /// The generator the indices are drawn from (also the weights' at the start).
    pub rng: Rng,
    /// The position in the training set.
    pub batcher: Batcher,
    train: &'e Dataset,
    labels: Vec<usize>,
    gathering: Gathering<'e, T>,
    /// Checkpoints every this many iterations, if any, and the run's length: a worker may draw
    /// ahead, but never past the next checkpoint, so that a checkpoint holds the generator
    /// and batcher as of its own iteration.
    checkpoints: (Option<u64>, u64),
}

impl<'e, T: Real> Draws<'e, T> {
    /// Batches of `batch` rows of `train`, drawn with `rng` and `batcher` and gathered as
    /// `gathering` says, for a run of `iters` iterations checkpointing every
    /// `checkpoint_every`.
    pub fn new(
        (rng, batcher): (Rng, Batcher),
        train: &'e Dataset,
        batch: usize,
        gathering: Gathering<'e, T>,
        (checkpoint_every, iters): (Option<u64>, u64),
    ) -> Self {
        Self {
            rng,
            batcher,
            train,
            labels: vec![0; batch],
            gathering,
            checkpoints: (checkpoint_every, iters),
        }
    }

    /// The first iteration a draw after `done` steps must not reach ahead to.
    fn until(&self, done: u64) -> u64 {
        let (every, iters) = self.checkpoints;
        every
            .filter(|&e| e > 0)
            .map_or(iters, |every| iters.min((done / every + 1) * every))
    }
}

impl<T: Real + Send> BatchSource<T, CliError> for Draws<'_, T> {
    fn next(&mut self, done: u64, net: &mut Network<'_, T>) -> Result<Batch<'_, T>, CliError> {
        let until = self.until(done);
        let Self {
            rng,
            batcher,
            train,
            labels,
            gathering,
            ..
        } = self;
        match gathering {
            Gathering::Fed(fed) => {
                let (feed, held) = &mut **fed;
                if let Some(b) = held.take() {
                    feed.give_back(b);
                }
                // Refills the buffer just given back: DEPTH − 1 batches are in the worker's
                // hands while this one trains.
                feed.request(batcher, rng, until)?;
                let b = held.insert(feed.take()?);
                let input = match b.sparse()? {
                    Some(sb) => Input::Sparse(sb),
                    None => Input::Dense(b.x()),
                };
                Ok(Batch {
                    input,
                    labels: b.labels(),
                })
            }
            Gathering::SparseHere(g) => {
                let rows = batcher.next_indices(rng, &mut g.indices);
                let labels = &mut labels[..rows];
                gather_rows(g.all, train.labels(), &g.indices[..rows], &mut g.x, labels);
                g.xt.transpose_from(g.x.view());
                let input = Input::Sparse(SparseBatch::new(g.x.view(), g.xt.view())?);
                Ok(Batch { input, labels })
            }
            Gathering::DenseHere => {
                let batch = labels.len();
                let rows = batcher.next_batch(rng, train, net.input_mut(batch), labels);
                Ok(Batch {
                    input: Input::Arena(rows),
                    labels: &labels[..rows],
                })
            }
        }
    }
}

/// How a run's batch becomes an update: the whole batch on one network, or split with the
/// data-parallel twin.
pub enum Steps<'t, T> {
    /// [`OneNetwork`].
    One,
    /// Half the rows here, half on the twin's thread (see `manabi_cli::parallel`).
    Twin(Twin<'t, T>),
}

impl<T: Real + Send, G: Gemm<T>> Stepper<T, G, AnyOptimizer<T>, CliError> for Steps<'_, T> {
    fn step(
        &mut self,
        net: &mut Network<'_, T>,
        mm: &G,
        batch: Batch<'_, T>,
        update: &mut Update<'_, T, AnyOptimizer<T>>,
    ) -> Result<T, CliError> {
        match (self, batch.input) {
            (Steps::One, _) => {
                Stepper::<T, G, _, CliError>::step(&mut OneNetwork, net, mm, batch, update)
            }
            (Steps::Twin(twin), Input::Dense(x)) => twin.step(net, mm, x, batch.labels, update),
            (Steps::Twin(_), _) => Err(CliError::Usage(
                "a data-parallel run reads dense rows, not sparse ones or the network's own".into(),
            )),
        }
    }
}
