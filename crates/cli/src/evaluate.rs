//! Whole-set evaluation split across threads, each with its own inference arena.

use crate::CliError;
use crate::stack::Stack;
use manabi_data::Dataset;
use manabi_layers::{Input, Mode, Network, Plan, SparseBatch, Training, argmax};
use manabi_matmul::Gemm;
use manabi_tensor::{Csr, Real};

/// Rows per forward pass when evaluating: large products run faster than 100-row ones, and
/// 1000 rows converted from bytes (3 MiB as `f32`) are still in cache when the product reads
/// them (both 500 and 2000 rows evaluated the training set more slowly on one thread).
pub const EVAL_ROWS: usize = 1000;

/// Most activation elements one evaluation arena may hold: fewer rows per pass for very wide
/// networks, so that a hostile weights file (a `[1, 10⁹]` layer is 4 GB of file but would be
/// 2000× that in activations) cannot make evaluation allocate far more than the weights.
pub const MAX_ACTIVATIONS: usize = 16 << 20;

/// Runs the forward pass over up to `rows` samples of `data` from `first` on: converted into
/// the network's input, or read from `sparse`, the whole set as compressed rows
/// (`Dataset::to_sparse`). Returns (samples done, their logits).
fn predict_rows<'n, T: Real, G: Gemm<T>>(
    net: &'n mut Network<'_, T>,
    mm: &G,
    data: &Dataset,
    sparse: Option<Csr<'_, T>>,
    first: usize,
    rows: usize,
) -> (usize, &'n [T]) {
    match sparse {
        Some(all) => {
            let n = rows.min(data.len().saturating_sub(first));
            let rows = SparseBatch::rows_only(all.row_range(first, n));
            (n, net.forward(mm, Input::Sparse(rows), Mode::Eval))
        }
        None => {
            let n = data.copy_rows(first, net.input_mut(rows));
            (n, net.forward(mm, Input::Arena(n), Mode::Eval))
        }
    }
}

/// Evaluates a network over whole data sets with `threads` scoped threads.
///
/// Each thread owns an inference-only arena (parameters, running statistics and activations
/// for [`EVAL_ROWS`]); the weights are copied in before each evaluation (40k values for
/// 784-50-10, a few µs),
/// and each thread takes a contiguous share of the rows. Nothing is allocated per evaluation
/// beyond the threads themselves.
pub struct Evaluator<T> {
    plan: Plan,
    arenas: Vec<Vec<T>>,
    rows: usize,
}

impl<T: Real> Evaluator<T> {
    /// Plans one inference arena per thread for `stack`.
    ///
    /// # Errors
    /// A stack the planner refuses.
    pub fn new(stack: &Stack, threads: usize) -> Result<Self, CliError> {
        let one = stack.plan(1, 1, Training::Inference)?;
        let per_row = (one.total() - one.param_len() - one.stats_len()).max(1);
        let rows = (MAX_ACTIVATIONS / per_row).clamp(1, EVAL_ROWS);
        let plan = stack.plan(rows, rows, Training::Inference)?;
        let arenas = (0..threads.max(1))
            .map(|_| plan.alloc_arena::<T>())
            .collect();
        Ok(Self { plan, arenas, rows })
    }

    /// Threads used.
    pub fn threads(&self) -> usize {
        self.arenas.len()
    }

    /// `classes × classes` counts over a data set: row = true label, column = prediction.
    /// `weights` are the network's parameters followed by its running statistics
    /// ([`Evaluator::weights_len`] values).
    ///
    /// Each thread takes a contiguous share of the samples and converts them chunk by chunk
    /// into its arena's input rows (a byte data set is a quarter of the memory traffic of
    /// `f32` values, and the chunk stays in cache for the product that reads it), or, given
    /// `sparse` (the whole set as compressed rows, `Dataset::to_sparse`), reads them from there.
    ///
    /// # Panics
    /// If `params` or the data's width do not fit the plan (a caller bug), or a thread panics.
    pub fn confusion<G: Gemm<T> + Sync>(
        &mut self,
        mm: &G,
        weights: &[T],
        data: &Dataset,
        sparse: Option<Csr<'_, T>>,
    ) -> Vec<usize> {
        let plan = &self.plan;
        let classes = plan.classes();
        assert_eq!(
            data.features(),
            plan.d_in(),
            "data and network widths differ"
        );
        let rows = self.rows;
        let labels = data.labels();
        let share = labels.len().div_ceil(self.arenas.len()).max(1);
        let parts: Vec<Vec<usize>> = std::thread::scope(|scope| {
            let handles: Vec<_> = self
                .arenas
                .iter_mut()
                .zip((0..labels.len()).step_by(share))
                .map(|(arena, lo)| {
                    scope.spawn(move || {
                        let hi = (lo + share).min(labels.len());
                        let mut counts = vec![0usize; classes * classes];
                        let mut net = open(plan, arena, weights);
                        let mut first = lo;
                        while first < hi {
                            let (n, logits) = predict_rows(
                                &mut net,
                                mm,
                                data,
                                sparse,
                                first,
                                rows.min(hi - first),
                            );
                            for (row, &label) in
                                logits.chunks_exact(classes).zip(&labels[first..first + n])
                            {
                                counts[label * classes + argmax(row)] += 1;
                            }
                            first += n;
                        }
                        counts
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        });
        let mut total = vec![0usize; classes * classes];
        for part in parts {
            total.iter_mut().zip(part).for_each(|(t, v)| *t += v);
        }
        total
    }

    /// Parameters plus running statistics: the length of the `weights` the evaluations take.
    pub fn weights_len(&self) -> usize {
        self.plan.param_len() + self.plan.stats_len()
    }

    /// Copies `weights` (parameters, then running statistics) into the first thread's arena,
    /// for [`Evaluator::correct_rows`].
    ///
    /// # Panics
    /// If `weights` does not fit the plan (a caller bug).
    pub fn load(&mut self, weights: &[T]) {
        open(&self.plan, &mut self.arenas[0], weights);
    }

    /// Evaluates one chunk on the calling thread with the parameters [`Evaluator::load`] put
    /// in place: samples `first ..` of `data` (or of `sparse`, its compressed rows), at most
    /// [`EVAL_ROWS`] of them. Returns (rows done, correct among them); the same rows as
    /// [`Evaluator::confusion`] on one thread.
    ///
    /// # Panics
    /// If the data's width does not fit the plan (a caller bug).
    pub fn correct_rows<G: Gemm<T>>(
        &mut self,
        mm: &G,
        data: &Dataset,
        sparse: Option<Csr<'_, T>>,
        first: usize,
    ) -> (usize, usize) {
        let plan = &self.plan;
        let classes = plan.classes();
        assert_eq!(
            data.features(),
            plan.d_in(),
            "data and network widths differ"
        );
        let mut net = match Network::new(plan, &mut self.arenas[0]) {
            Ok(net) => net,
            Err(e) => panic!("evaluator arena: {e}"),
        };
        let want = self.rows.min(data.len().saturating_sub(first));
        let (n, logits) = predict_rows(&mut net, mm, data, sparse, first, want);
        let right = logits
            .chunks_exact(classes)
            .zip(&data.labels()[first..first + n])
            .filter(|(row, l)| argmax(row) == **l)
            .count();
        (n, right)
    }

    /// Correct predictions over a set (the trace of [`Evaluator::confusion`]).
    pub fn correct<G: Gemm<T> + Sync>(
        &mut self,
        mm: &G,
        weights: &[T],
        data: &Dataset,
        sparse: Option<Csr<'_, T>>,
    ) -> usize {
        let classes = self.plan.classes();
        let counts = self.confusion(mm, weights, data, sparse);
        (0..classes).map(|k| counts[k * classes + k]).sum()
    }

    /// Fraction correct over a set (0 for an empty set).
    pub fn accuracy<G: Gemm<T> + Sync>(
        &mut self,
        mm: &G,
        weights: &[T],
        data: &Dataset,
        sparse: Option<Csr<'_, T>>,
    ) -> f64 {
        if data.is_empty() {
            0.0
        } else {
            self.correct(mm, weights, data, sparse) as f64 / data.len() as f64
        }
    }
}

/// Opens a network on an evaluation arena and copies `weights` (parameters, then running
/// statistics, which an inference plan lays out back to back) into it.
///
/// # Panics
/// If the arena or `weights` do not fit the plan (a caller bug).
fn open<'a, T: Real>(plan: &'a Plan, arena: &'a mut [T], weights: &[T]) -> Network<'a, T> {
    let mut net = match Network::new(plan, arena) {
        Ok(net) => net,
        Err(e) => panic!("evaluator arena: {e}"),
    };
    let (params, stats) = weights.split_at(plan.param_len());
    net.params_mut().copy_from_slice(params);
    net.stats_mut().copy_from_slice(stats);
    net
}
