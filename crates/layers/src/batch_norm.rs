//! Batch normalisation, the book's `BatchNormalization`: batch statistics in training, running ones in evaluation.

use crate::kernel::{Backward, Dense, Forward, ParamGrad, Shapes, Sizes};
use crate::layer::{Builtin, no_argument};
use crate::{Init, Mode, Region, Shape, TensorInfo};
use core::fmt;
use manabi_matmul::Gemm;
use manabi_tensor::{Error, Real, Result, Rng, Span};

/// The `ε` under the square root, `10e-7` in the book's code (that is, 1e-6).
pub const BN_EPS: f64 = 1e-6;

/// Weight of the old running statistics in each update (the book's `momentum=0.9`).
pub const BN_MOMENTUM: f64 = 0.9;

/// Batch normalisation (Ioffe & Szegedy 2015, <https://arxiv.org/abs/1502.03167>), as the
/// book's `BatchNormalization`.
///
/// Per activation `j` (every one of the `d = c·h·w` values of a sample; on images this is
/// the book's per-activation normalisation, not PyTorch's per-channel `BatchNorm2d`):
///
/// - training: `μ = mean_rows(x)`, `σ² = mean_rows((x − μ)²)` (the biased variance),
///   `x̂ = (x − μ)/√(σ² + ε)`, `y = γ·x̂ + β`; then the running statistics move towards the
///   batch's, `m ← 0.9·m + 0.1·μ`, `v ← 0.9·v + 0.1·σ²`;
/// - evaluation: `y = γ·(x − m)/√(v + ε) + β`.
///
/// `γ` starts at 1, `β` at 0, and, as in the book, the running mean *and variance* at 0.
/// Backward (training mode): `dβ = Σ dy`, `dγ = Σ dy·x̂`,
/// `dx = γ/(rows·√(σ² + ε))·(rows·dy − dβ − x̂·dγ)`, which is the book's chain of `dxn`,
/// `dstd`, `dvar` and `dmu` collected into one line.
///
/// # Shapes
/// `x`, `y`, `dy`, `dx`: `[rows, d]`. Parameters `[γ | β]` (`2d`), statistics
/// `[running mean | running variance]` (`2d`), cache `[x̂ (batch·d) | 1/√(σ² + ε) (d) |
/// scratch (2d)]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchNorm {
    /// Activations normalised, each on its own.
    pub d: usize,
}

impl BatchNorm {
    /// The layer for inputs of shape `input`.
    ///
    /// # Errors
    /// [`Error::Overflow`] if its sizes do not fit in `usize`.
    pub const fn new(input: Shape) -> Result<Self> {
        let d = input.len();
        match d.checked_mul(3) {
            Some(_) => Ok(Self { d }),
            None => Err(Error::Overflow { what: "plan" }),
        }
    }

    /// `γ` and `β`.
    pub const fn param_len(&self) -> usize {
        2 * self.d
    }

    /// The running mean and variance.
    pub const fn stats_len(&self) -> usize {
        2 * self.d
    }

    /// `x̂` for `batch` rows, `1/√(σ² + ε)` and two vectors of scratch.
    ///
    /// # Errors
    /// [`Error::Overflow`].
    pub const fn cache_len(&self, batch: usize) -> Result<usize> {
        match batch.checked_mul(self.d) {
            Some(n) => match n.checked_add(3 * self.d) {
                Some(len) => Ok(len),
                None => Err(Error::Overflow { what: "plan" }),
            },
            None => Err(Error::Overflow { what: "plan" }),
        }
    }

    /// `γ = 1`, `β = 0`, running mean and variance 0 (the book's starting values).
    pub fn init<T: Real>(&self, p: &mut [T], stats: &mut [T]) {
        let (gamma, beta) = p.split_at_mut(self.d);
        gamma.fill(T::ONE);
        beta.fill(T::ZERO);
        stats.fill(T::ZERO);
    }

    /// Splits the cache into `x̂` (the first `rows` rows), `1/√(σ² + ε)` and the scratch.
    fn split<'c, T>(
        &self,
        cache: &'c mut [T],
        rows: usize,
    ) -> (&'c mut [T], &'c mut [T], &'c mut [T]) {
        let (x_hat, tail) = cache.split_at_mut(cache.len() - 3 * self.d);
        let (inv_std, scratch) = tail.split_at_mut(self.d);
        (&mut x_hat[..rows * self.d], inv_std, scratch)
    }

    /// Writes `y`; in training also `x̂` and `1/√(σ² + ε)` into `cache` and the updated
    /// running statistics into `stats`. Evaluation reads only `stats` (and `cache` may be
    /// empty).
    ///
    /// # Panics
    /// If the lengths disagree with the shapes (slice bounds).
    pub fn forward<T: Real>(
        &self,
        mode: Mode,
        p: &[T],
        stats: &mut [T],
        x: &[T],
        y: &mut [T],
        cache: &mut [T],
    ) {
        let d = self.d;
        let rows = x.len() / d;
        let (gamma, beta) = p.split_at(d);
        let (mean, var) = stats.split_at_mut(d);
        let eps = T::from_f64(BN_EPS);
        match mode {
            Mode::Eval => {
                // One square root per activation, then a strided pass down its column.
                for j in 0..d {
                    let scale = gamma[j] / (var[j] + eps).sqrt();
                    let (m, b) = (mean[j], beta[j]);
                    for r in 0..rows {
                        y[r * d + j] = scale * (x[r * d + j] - m) + b;
                    }
                }
            }
            Mode::Train => {
                let (x_hat, inv_std, scratch) = self.split(cache, rows);
                let (mu, sigma2) = scratch.split_at_mut(d);
                let n = T::from_usize(rows.max(1));
                mu.fill(T::ZERO);
                for row in x.chunks_exact(d) {
                    for (m, &v) in mu.iter_mut().zip(row) {
                        *m += v;
                    }
                }
                mu.iter_mut().for_each(|m| *m /= n);
                sigma2.fill(T::ZERO);
                for (xc_row, row) in x_hat.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
                    for (((xc, &v), &m), s) in
                        xc_row.iter_mut().zip(row).zip(&*mu).zip(&mut *sigma2)
                    {
                        *xc = v - m;
                        *s += *xc * *xc;
                    }
                }
                for (i, &s) in inv_std.iter_mut().zip(&*sigma2) {
                    *i = T::ONE / (s / n + eps).sqrt();
                }
                for (xc_row, y_row) in x_hat.chunks_exact_mut(d).zip(y.chunks_exact_mut(d)) {
                    for j in 0..d {
                        xc_row[j] *= inv_std[j];
                        y_row[j] = gamma[j] * xc_row[j] + beta[j];
                    }
                }
                let keep = T::from_f64(BN_MOMENTUM);
                let take = T::ONE - keep;
                for j in 0..d {
                    mean[j] = keep * mean[j] + take * mu[j];
                    var[j] = keep * var[j] + take * (sigma2[j] / n);
                }
            }
        }
    }

    /// `dγ = Σ dy·x̂` and `dβ = Σ dy` into `dgb = [dγ | dβ]`, then `dx` if asked for.
    fn grads<T: Real>(
        &self,
        gamma: &[T],
        x_hat: &[T],
        inv_std: &[T],
        dy: &[T],
        dx: Option<&mut [T]>,
        dgb: &mut [T],
    ) {
        let d = self.d;
        let (dgamma, dbeta) = dgb.split_at_mut(d);
        dgamma.fill(T::ZERO);
        dbeta.fill(T::ZERO);
        for (xh_row, dy_row) in x_hat.chunks_exact(d).zip(dy.chunks_exact(d)) {
            for j in 0..d {
                dgamma[j] += dy_row[j] * xh_row[j];
                dbeta[j] += dy_row[j];
            }
        }
        let Some(dx) = dx else { return };
        let rows = dy.len() / d;
        let n = T::from_usize(rows.max(1));
        for ((dx_row, dy_row), xh_row) in dx
            .chunks_exact_mut(d)
            .zip(dy.chunks_exact(d))
            .zip(x_hat.chunks_exact(d))
        {
            for j in 0..d {
                let scale = gamma[j] * inv_std[j] / n;
                dx_row[j] = scale * (n * dy_row[j] - dbeta[j] - xh_row[j] * dgamma[j]);
            }
        }
    }

    /// Backward of a training-mode forward: writes (never adds to) `dp = [dγ | dβ]` and, if
    /// given, `dx`. `cache` is what that forward left.
    ///
    /// # Panics
    /// If the lengths disagree with the shapes (slice bounds).
    pub fn backward<T: Real>(
        &self,
        p: &[T],
        cache: &mut [T],
        dy: &[T],
        dx: Option<&mut [T]>,
        dp: &mut [T],
    ) {
        let rows = dy.len() / self.d;
        let (x_hat, inv_std, _) = self.split(cache, rows);
        self.grads(&p[..self.d], x_hat, inv_std, dy, dx, dp);
    }

    /// [`BatchNorm::backward`] fused with plain SGD: `dx` with the old `γ`, then
    /// `γ ← γ − lr·dγ`, `β ← β − lr·dβ` (the gradients live in the cache's scratch).
    ///
    /// # Panics
    /// If the lengths disagree with the shapes (slice bounds).
    pub fn backward_sgd<T: Real>(
        &self,
        lr: T,
        p: &mut [T],
        cache: &mut [T],
        dy: &[T],
        dx: Option<&mut [T]>,
    ) {
        let rows = dy.len() / self.d;
        let (x_hat, inv_std, scratch) = self.split(cache, rows);
        let (gamma, beta) = p.split_at_mut(self.d);
        self.grads(gamma, x_hat, inv_std, dy, dx, scratch);
        let (dgamma, dbeta) = scratch.split_at(self.d);
        for (g, &d) in gamma.iter_mut().zip(dgamma) {
            *g -= lr * d;
        }
        for (b, &d) in beta.iter_mut().zip(dbeta) {
            *b -= lr * d;
        }
    }
}

impl BatchNorm {
    /// The input's shape; `[γ | β]` learned, running mean and variance kept; the cache holds
    /// `x̂` per sample and three vectors per batch.
    pub const fn sizes(&self, input: Shape) -> Sizes {
        Sizes {
            params: self.param_len(),
            stats: self.stats_len(),
            cache_per_sample: self.d,
            cache_fixed: 3 * self.d,
            ..Sizes::output(input)
        }
    }
}

impl Dense for BatchNorm {
    fn forward<T: Real>(&self, _: &impl Gemm<T>, f: Forward<'_, T>) {
        BatchNorm::forward(self, f.mode, f.p, f.stats, f.x, f.y, f.cache);
    }

    fn backward<T: Real>(&self, _: &impl Gemm<T>, b: Backward<'_, T>) {
        match b.grad {
            ParamGrad::Write(dp) => BatchNorm::backward(self, b.p, b.cache, b.dy, b.dx, dp),
            // γ and β are not decayed.
            ParamGrad::Sgd { lr, .. } => self.backward_sgd(lr, b.p, b.cache, b.dy, b.dx),
        }
    }

    fn init<T: Real>(&self, _: Shapes, _: Init, _: &mut Rng, p: &mut [T], stats: &mut [T]) {
        BatchNorm::init(self, p, stats);
    }

    fn tensor(&self, _: Shapes, k: usize) -> Option<TensorInfo> {
        let d = self.d;
        let (prefix, region, start) = match k {
            0 => ("gamma", Region::Params, 0),
            1 => ("beta", Region::Params, d),
            2 => ("running_mean", Region::Stats, 0),
            3 => ("running_var", Region::Stats, d),
            _ => return None,
        };
        Some(TensorInfo::new(prefix, region, start, &[d]))
    }

    fn decayed(&self, _: Shapes) -> Span {
        Span { start: 0, len: 0 }
    }
}

impl Builtin for BatchNorm {
    const KEYWORD: &'static str = "batchnorm";
    const SYNTAX: &'static str = "batchnorm";
    const READS_IMAGES: bool = false;
    type Args = ();

    fn parse(arg: Option<&str>) -> Result<()> {
        no_argument(arg, "batchnorm takes no argument")
    }

    fn write(_: &(), f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::KEYWORD)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use manabi_testkit::{assert_close, numeric_grad, probe};
    use std::vec;

    const D: usize = 3;
    const ROWS: usize = 4;

    fn layer() -> BatchNorm {
        BatchNorm::new(Shape::flat(D)).unwrap()
    }

    /// A training-mode forward on fresh statistics and cache.
    fn train_forward(l: &BatchNorm, p: &[f64], x: &[f64], y: &mut [f64]) {
        let mut stats = [0.0; 2 * D];
        let mut cache = vec![0.0; l.cache_len(ROWS).unwrap()];
        l.forward(Mode::Train, p, &mut stats, x, y, &mut cache);
    }

    #[test]
    fn forward_by_hand_and_running_statistics() {
        let l = layer();
        // Column 0 is [1, 3, 5, 7]: mean 4, variance 5.
        let x = [1.0, 0.0, 2.0, 3.0, 0.0, 2.0, 5.0, 1.0, 2.0, 7.0, 1.0, 2.0];
        let p = [2.0, 1.0, 1.0, 0.5, 0.0, 0.0];
        let mut stats = [0.0; 2 * D];
        let mut cache = vec![0.0; l.cache_len(ROWS).unwrap()];
        let mut y = [f64::NAN; 12];
        l.forward(Mode::Train, &p, &mut stats, &x, &mut y, &mut cache);
        let s = (5.0f64 + BN_EPS).sqrt();
        assert_close(
            &[y[0], y[3], y[6], y[9]],
            &[
                // γ·(x − 4)/s + β for x = 1, 3, 5, 7.
                -6.0 / s + 0.5,
                -2.0 / s + 0.5,
                2.0 / s + 0.5,
                6.0 / s + 0.5,
            ],
            1e-12,
            1e-12,
        );
        // A constant column normalises to 0, so its output is β.
        assert_eq!([y[2], y[5], y[8], y[11]], [0.0; 4]);
        // Running statistics: 0.9·0 + 0.1·batch statistics.
        assert_close(&[stats[0], stats[3]], &[0.4, 0.5], 1e-15, 1e-15);
        // Evaluation normalises with the running statistics instead.
        let mut y_eval = [f64::NAN; 12];
        l.forward(Mode::Eval, &p, &mut stats, &x, &mut y_eval, &mut []);
        let want = 2.0 * (1.0 - 0.4) / (0.5f64 + BN_EPS).sqrt() + 0.5;
        assert!((y_eval[0] - want).abs() < 1e-12);
    }

    #[test]
    fn batch_norm_grads_match_finite_differences() {
        let l = layer();
        let x = [
            0.3, -1.2, 2.0, 0.5, 1.0, 1.5, -0.5, 0.0, -2.0, 0.1, 0.2, 3.0,
        ];
        let p = [1.5, 0.7, -0.9, 0.2, -0.3, 0.1];
        let r = probe(12, 4);
        let mut stats = [0.0; 2 * D];
        let mut cache = vec![0.0; l.cache_len(ROWS).unwrap()];
        let mut y = [0.0; 12];
        l.forward(Mode::Train, &p, &mut stats, &x, &mut y, &mut cache);
        let (mut dx, mut dp) = ([f64::NAN; 12], [f64::NAN; 6]);
        l.backward(&p, &mut cache, &r, Some(&mut dx), &mut dp);
        assert_close(
            &dx,
            &numeric_grad(|x, y| train_forward(&l, &p, x, y), &x, &r),
            1e-8,
            1e-6,
        );
        assert_close(
            &dp,
            &numeric_grad(|p, y| train_forward(&l, p, &x, y), &p, &r),
            1e-8,
            1e-6,
        );
        // The fused step uses the same gradients and the old γ for dx.
        let mut fused = p;
        let mut dx_fused = [f64::NAN; 12];
        l.backward_sgd(0.5, &mut fused, &mut cache, &r, Some(&mut dx_fused));
        assert_eq!(dx_fused, dx);
        let stepped: [f64; 6] = core::array::from_fn(|i| p[i] - 0.5 * dp[i]);
        assert_eq!(fused, stepped);
    }

    #[test]
    fn a_smaller_batch_uses_a_prefix_of_the_cache() {
        let l = layer();
        let x = [0.3, -1.2, 2.0, 0.5, 1.0, 1.5];
        let p = [1.0, 1.0, 1.0, 0.0, 0.0, 0.0];
        let mut stats = [0.0; 2 * D];
        let mut cache = vec![f64::NAN; l.cache_len(ROWS).unwrap()];
        let mut y = [0.0; 6];
        l.forward(Mode::Train, &p, &mut stats, &x, &mut y, &mut cache);
        // Two rows: each column is ±1 after normalisation (to within ε/σ², 5e-5 here).
        for v in y {
            assert!((v.abs() - 1.0).abs() < 1e-4, "{v}");
        }
        let dy = probe(6, 1);
        let mut dp = [f64::NAN; 6];
        l.backward(&p, &mut cache, &dy, None, &mut dp);
        // By hand: with two rows a and b per column, μ = (a + b)/2 and σ² = ((a − b)/2)², so
        // x̂ = ±h/√(h² + ε) with h = (a − b)/2 (+ for row 0, − for row 1). Hence
        // dβ = dy₀ + dy₁ and dγ = dy₀·x̂₀ + dy₁·x̂₁ = (dy₀ − dy₁)·x̂₀. A cache read at the
        // wrong offset would bring its NaNs in.
        let x_hat_row0: [f64; D] = core::array::from_fn(|j| {
            let half_gap = (x[j] - x[D + j]) / 2.0;
            half_gap / (half_gap * half_gap + BN_EPS).sqrt()
        });
        let dgamma: [f64; D] = core::array::from_fn(|j| (dy[j] - dy[D + j]) * x_hat_row0[j]);
        let dbeta: [f64; D] = core::array::from_fn(|j| dy[j] + dy[D + j]);
        assert_close(&dp[..D], &dgamma, 1e-14, 1e-12);
        assert_close(&dp[D..], &dbeta, 1e-14, 1e-12);
        // And the same against central differences of the two-row forward.
        let numeric = numeric_grad(|p, y| train_forward(&l, p, &x, y), &p, &dy);
        assert_close(&dp, &numeric, 1e-8, 1e-6);
    }
}
