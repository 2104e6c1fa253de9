//! Softmax fused with cross-entropy: a stable forward and the `(y − t)/batch` backward.

use manabi_tensor::Real;

/// What the network should have said: class indices, or one-hot (or soft) target rows.
#[derive(Clone, Copy, Debug)]
pub enum Target<'a, T> {
    /// One class index per row, each `< classes`.
    Labels(&'a [usize]),
    /// `[batch, classes]` target distributions (one-hot rows in the book).
    OneHot(&'a [T]),
}

impl<T> Target<'_, T> {
    /// Rows described.
    pub fn rows(&self, classes: usize) -> usize {
        match self {
            Target::Labels(l) => l.len(),
            Target::OneHot(t) => t.len() / classes.max(1),
        }
    }
}

/// Softmax over each row followed by the mean cross-entropy, fused.
///
/// Forward: `y = softmax(x)` row-wise and `L = −(1/batch)·Σ_rows Σ_k t_k·log y_k`.
/// Backward: `dx = (y − t)/batch`, the simple form that fusing the two buys.
///
/// The row maximum is subtracted before `exp` so that no logit, however large, overflows, and
/// the loss uses `log y_k = (x_k − max) − ln Σ e^{x_j − max}` directly instead of `ln(y_k + ε)`:
/// it is exact and finite even for logits of ±1000, where `y_k` underflows to 0.
///
/// # Shapes
/// `x`, `y`, `dx`: `[batch, classes]`; labels `[batch]` or one-hot `[batch, classes]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftmaxWithLoss {
    /// Number of classes (row length).
    pub classes: usize,
}

impl SoftmaxWithLoss {
    /// Writes the probabilities `y` and returns the mean cross-entropy.
    ///
    /// # Panics
    /// If a label is `≥ classes` or lengths disagree (slice bounds).
    pub fn forward<T: Real>(&self, x: &[T], t: Target<'_, T>, y: &mut [T]) -> T {
        let c = self.classes;
        let batch = x.len() / c;
        debug_assert_eq!(t.rows(c), batch);
        let mut total = T::ZERO;
        for (i, (x_row, y_row)) in x.chunks_exact(c).zip(y.chunks_exact_mut(c)).enumerate() {
            let max = x_row.iter().fold(T::NEG_INFINITY, |m, &v| m.max(v));
            let mut sum = T::ZERO;
            for (y, &x) in y_row.iter_mut().zip(x_row) {
                *y = (x - max).exp();
                sum += *y;
            }
            let inv = T::ONE / sum;
            y_row.iter_mut().for_each(|y| *y *= inv);
            let log_sum = sum.ln();
            total += match t {
                Target::Labels(labels) => log_sum - (x_row[labels[i]] - max),
                Target::OneHot(targets) => {
                    let t_row = &targets[i * c..(i + 1) * c];
                    x_row
                        .iter()
                        .zip(t_row)
                        .map(|(&x, &t)| t * (log_sum - (x - max)))
                        .sum()
                }
            };
        }
        if batch == 0 {
            T::ZERO
        } else {
            total / T::from_usize(batch)
        }
    }

    /// Writes `dx = (y − t)/batch` from the probabilities the forward pass wrote.
    ///
    /// # Panics
    /// If a label is `≥ classes` or lengths disagree (slice bounds).
    pub fn backward<T: Real>(&self, y: &[T], t: Target<'_, T>, dx: &mut [T]) {
        let c = self.classes;
        let batch = y.len() / c;
        if batch == 0 {
            return;
        }
        let inv_batch = T::ONE / T::from_usize(batch);
        for (i, (y_row, dx_row)) in y.chunks_exact(c).zip(dx.chunks_exact_mut(c)).enumerate() {
            for (d, &p) in dx_row.iter_mut().zip(y_row) {
                *d = p * inv_batch;
            }
            match t {
                Target::Labels(labels) => dx_row[labels[i]] -= inv_batch,
                Target::OneHot(targets) => {
                    for (d, &t) in dx_row.iter_mut().zip(&targets[i * c..(i + 1) * c]) {
                        *d -= t * inv_batch;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use manabi_testkit::{assert_close, numeric_grad};

    #[test]
    fn forward_by_hand() {
        let l = SoftmaxWithLoss { classes: 2 };
        // Row [0, ln 3]: softmax [1/4, 3/4]; label 1 → loss −ln(3/4).
        let x = [0.0, 3.0f64.ln()];
        let mut y = [0.0; 2];
        let loss = l.forward(&x, Target::Labels(&[1]), &mut y);
        assert_close(&y, &[0.25, 0.75], 1e-15, 1e-15);
        assert!((loss - (4.0f64 / 3.0).ln()).abs() < 1e-15);
        let one_hot = l.forward(&x, Target::OneHot(&[0.0, 1.0]), &mut y);
        assert!((one_hot - loss).abs() < 1e-15);
    }

    #[test]
    fn softmax_loss_grads_match_finite_differences() {
        let l = SoftmaxWithLoss { classes: 4 };
        let x = [
            0.3, -1.2, 2.0, 0.5, 1.0, 1.5, -0.5, 0.0, -2.0, 0.1, 0.2, 3.0,
        ];
        let labels = [2usize, 0, 3];
        let mut y = [0.0; 12];
        l.forward(&x, Target::Labels(&labels), &mut y);
        let mut dx = [f64::NAN; 12];
        l.backward(&y, Target::Labels(&labels), &mut dx);
        // The loss is a scalar: the probe is r = [1], so the numerical gradient is dL/dx.
        let numeric = numeric_grad(
            |x, loss| {
                let mut probs = [0.0; 12];
                loss[0] = l.forward(x, Target::Labels(&labels), &mut probs);
            },
            &x,
            &[1.0],
        );
        assert_close(&dx, &numeric, 1e-9, 0.0);
        // One-hot targets give the same gradient as the equivalent labels.
        let mut one_hot = [0.0; 12];
        for (row, &k) in labels.iter().enumerate() {
            one_hot[row * 4 + k] = 1.0;
        }
        let mut dx_hot = [0.0; 12];
        l.backward(&y, Target::OneHot(&one_hot), &mut dx_hot);
        assert_close(&dx_hot, &dx, 1e-16, 1e-15);
    }

    #[test]
    fn huge_logits_give_the_exact_gradient() {
        let l = SoftmaxWithLoss { classes: 3 };
        let x = [1000.0f32, -1000.0, 0.0, -1000.0, 1000.0, 999.0];
        let labels = [1usize, 2];
        let mut y = [0.0; 6];
        let loss = l.forward(&x, Target::Labels(&labels), &mut y);
        // Row 0: the label's logit sits 2000 below the max, so its loss is 2000; row 1: ln(1 + e^{−1}) + 1.
        let want = (2000.0 + (1.0 + (-1.0f64).exp()).ln() + 1.0) / 2.0;
        assert!(
            loss.is_finite() && (f64::from(loss) - want).abs() < 1e-3,
            "{loss} vs {want}"
        );
        let mut dx = [f32::NAN; 6];
        l.backward(&y, Target::Labels(&labels), &mut dx);
        // dx = (y − t)/2. Logits 1000 or more below their row's maximum have e^{x − max} = 0
        // exactly in f32 (anything under e^{−104} rounds to zero), so row 0's softmax is
        // exactly [1, 0, 0] and row 1's first probability exactly 0: those four values, worked
        // out by hand, are exact whatever the rounding, and change only when the numerics
        // change on purpose (another loss or backward).
        assert_eq!(dx[..4], [0.5, -0.5, 0.0, 0.0]);
        // Row 1's other two probabilities are [1, e^{−1}]/(1 + e^{−1}) = [q, 1 − q], and its
        // label is 2, so dx = [q, (1 − q) − 1]/2 = [q, −q]/2. In f32 they come from one exp,
        // one sum, one reciprocal and two products, each within half an ulp (3e-8 near
        // 0.37), so 1e-7 is a few ulps.
        let q = 1.0 / (1.0 + (-1.0f64).exp());
        let want = [q / 2.0, -q / 2.0];
        for (got, want) in dx[4..].iter().zip(want) {
            assert!((f64::from(*got) - want).abs() < 1e-7, "{got} vs {want}");
        }
    }
}
