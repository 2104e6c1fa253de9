//! Whole-set evaluation split across threads, each with its own inference arena.

use manabi_layers::{Mlp, MlpConfig, MlpPlan, Training, argmax};
use manabi_matmul::Gemm;
use manabi_tensor::{Real, Result};

/// Rows per forward pass when evaluating: large products run faster than 100-row ones, and
/// 2000 rows of activations still fit in the L2 cache of each core.
pub const EVAL_ROWS: usize = 2000;

/// Most activation elements one evaluation arena may hold: fewer rows per pass for very wide
/// networks, so that a hostile weights file (a `[1, 10⁹]` layer is 4 GB of file but would be
/// 2000× that in activations) cannot make evaluation allocate far more than the weights.
pub const MAX_ACTIVATIONS: usize = 16 << 20;

/// Evaluates a network over whole data sets with `threads` scoped threads.
///
/// Each thread owns an inference-only arena (parameters and activations for [`EVAL_ROWS`]);
/// the parameters are copied in before each evaluation (40k values for 784-50-10, a few µs),
/// and each thread takes a contiguous share of the rows. Nothing is allocated per evaluation
/// beyond the threads themselves.
pub struct Evaluator<T> {
    plan: MlpPlan,
    arenas: Vec<Vec<T>>,
    rows: usize,
}

impl<T: Real> Evaluator<T> {
    /// Plans one inference arena per thread for a network of `sizes` and `activation`.
    ///
    /// # Errors
    /// Those of [`MlpPlan::new`].
    pub fn new(
        sizes: &[usize],
        activation: manabi_layers::Activation,
        threads: usize,
    ) -> Result<Self> {
        let widest: usize = sizes.iter().sum::<usize>().max(1);
        let rows = (MAX_ACTIVATIONS / widest).clamp(1, EVAL_ROWS);
        let plan = MlpPlan::new(&MlpConfig {
            sizes,
            activation,
            batch: rows,
            eval_batch: rows,
            training: Training::Inference,
        })?;
        let arenas = (0..threads.max(1))
            .map(|_| vec![T::ZERO; plan.total()])
            .collect();
        Ok(Self { plan, arenas, rows })
    }

    /// Threads used.
    pub fn threads(&self) -> usize {
        self.arenas.len()
    }

    /// `classes × classes` counts over a set: row = true label, column = prediction.
    /// `params` are the network's, `[W1 b1 W2 b2 …]`; `x` is `[n, d_in]`, `labels` `[n]`.
    ///
    /// # Panics
    /// If `params`, `x` or `labels` do not fit the plan (a caller bug), or a thread panics.
    pub fn confusion<G: Gemm<T> + Sync>(
        &mut self,
        mm: &G,
        params: &[T],
        x: &[T],
        labels: &[usize],
    ) -> Vec<usize> {
        let plan = self.plan;
        let (d_in, classes) = (plan.d_in(), plan.classes());
        let rows = self.rows;
        let share = labels.len().div_ceil(self.arenas.len()).max(1);
        let parts: Vec<Vec<usize>> = std::thread::scope(|scope| {
            let handles: Vec<_> = self
                .arenas
                .iter_mut()
                .zip(x.chunks(share * d_in).zip(labels.chunks(share)))
                .map(|(arena, (xs, ls))| {
                    scope.spawn(move || {
                        let mut counts = vec![0usize; classes * classes];
                        let mut net = match Mlp::new(plan, arena) {
                            Ok(net) => net,
                            Err(e) => panic!("evaluator arena: {e}"),
                        };
                        net.params_mut().copy_from_slice(params);
                        for (xc, lc) in xs.chunks(rows * d_in).zip(ls.chunks(rows)) {
                            let logits = net.predict(mm, xc);
                            for (row, &label) in logits.chunks_exact(classes).zip(lc) {
                                counts[label * classes + argmax(row)] += 1;
                            }
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

    /// Correct predictions over a set (the trace of [`Evaluator::confusion`]).
    pub fn correct<G: Gemm<T> + Sync>(
        &mut self,
        mm: &G,
        params: &[T],
        x: &[T],
        labels: &[usize],
    ) -> usize {
        let classes = self.plan.classes();
        let counts = self.confusion(mm, params, x, labels);
        (0..classes).map(|k| counts[k * classes + k]).sum()
    }

    /// Fraction correct over a set (0 for an empty set).
    pub fn accuracy<G: Gemm<T> + Sync>(
        &mut self,
        mm: &G,
        params: &[T],
        x: &[T],
        labels: &[usize],
    ) -> f64 {
        if labels.is_empty() {
            0.0
        } else {
            self.correct(mm, params, x, labels) as f64 / labels.len() as f64
        }
    }
}
