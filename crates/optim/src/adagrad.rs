//! AdaGrad: per-parameter rates shrinking with the summed squared gradients, the book's `AdaGrad`.

use crate::{BAD_LR, BAD_WEIGHT_DECAY, Error, Optimizer, Real};
use crate::{check_non_negative, debug_check_lens, decayed, flush};

/// ε added to `√h` in [`AdaGrad`] (the book's `1e-7`), so a parameter whose gradients have
/// all been zero gets a zero step instead of `0 / 0`.
pub const ADAGRAD_EPS: f64 = 1e-7;

/// AdaGrad:
///
/// ```text
/// h ← h + g²
/// p ← p − lr·g / (√h + ε)          ε = ADAGRAD_EPS = 1e-7
/// ```
///
/// `h` (one state slot, starting at 0) is the running sum of squared gradients, so each
/// parameter's step shrinks as it accumulates gradient. ε sits *outside* the square root,
/// added to `√h` (as in the book; the paper's diagonal form has `δ + √h`, the same). No
/// bias correction; `t` is ignored. With weight decay λ the gradient is `g = ∇f + λ·p`,
/// and the decayed `g` is what gets squared into `h`.
///
/// Paper: J. Duchi, E. Hazan, Y. Singer, "Adaptive Subgradient Methods for Online Learning
/// and Stochastic Optimization", JMLR 12, 2011, <https://jmlr.org/papers/v12/duchi11a.html>.
///
/// The book's default learning rate is 0.01.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdaGrad<T> {
    /// Learning rate `lr`.
    pub lr: T,
    /// L2 weight-decay coefficient λ (0 for none).
    pub weight_decay: T,
}

impl<T: Real> AdaGrad<T> {
    /// AdaGrad with learning rate `lr` and no weight decay.
    pub fn new(lr: T) -> Self {
        Self {
            lr,
            weight_decay: T::ZERO,
        }
    }

    /// The same optimizer with weight decay λ = `weight_decay`.
    pub fn with_weight_decay(self, weight_decay: T) -> Self {
        Self {
            weight_decay,
            ..self
        }
    }

    /// Checks the hyper-parameters.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] if `lr` or `weight_decay` is negative or not finite.
    pub fn validate(&self) -> Result<(), Error> {
        check_non_negative(self.lr, BAD_LR)?;
        check_non_negative(self.weight_decay, BAD_WEIGHT_DECAY)
    }
}

impl<T: Real> Optimizer<T> for AdaGrad<T> {
    fn slots(&self) -> usize {
        1
    }

    fn step(&self, _t: u64, params: &mut [T], grads: &[T], state: &mut [T]) {
        debug_check_lens(1, params, grads, state);
        let eps = T::from_f64(ADAGRAD_EPS);
        for ((p, &g), h) in params.iter_mut().zip(grads).zip(state.iter_mut()) {
            let g = decayed(g, *p, self.weight_decay);
            *h = flush(*h + g * g);
            *p -= self.lr * g / (h.sqrt() + eps);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn two_steps_by_hand() {
        // lr = 0.5, p = 2, h = 0; gradients 3 then 4 make h = 9 then 25 (exact roots).
        // Step 1: p = 2 − 0.5·3/(3 + 1e-7) = 2 − 0.5/(1 + 1e-7/3) = 1.5 + 1.6666667e-8
        //         (first-order expansion; the next term is 5.6e-16).
        // Step 2: p = p − 0.5·4/(5 + 1e-7) = p − 0.4·(1 − 2e-8) = 1.1 + 2.4666667e-8.
        let opt = AdaGrad::new(0.5);
        let (mut p, mut h) = ([2.0], [0.0]);
        opt.step(1, &mut p, &[3.0], &mut h);
        assert_eq!(h, [9.0]);
        assert!(close(p[0], 1.5 + 1.666_666_7e-8, 1e-14), "{}", p[0]);
        opt.step(2, &mut p, &[4.0], &mut h);
        assert_eq!(h, [25.0]);
        assert!(close(p[0], 1.1 + 2.466_666_7e-8, 1e-14), "{}", p[0]);
    }

    #[test]
    fn epsilon_sits_outside_the_square_root() {
        // g = 1e-7 = ε: h = 1e-14, √h = 1e-7, so the step is lr·1e-7/(1e-7 + 1e-7) = lr/2.
        // (ε inside the root would give lr·1e-7/√(1e-14 + 1e-7) ≈ 3.2e-4·lr.)
        let opt = AdaGrad::new(1.0);
        let (mut p, mut h) = ([0.0], [0.0]);
        opt.step(1, &mut p, &[1e-7], &mut h);
        assert!(close(p[0], -0.5, 1e-15), "{}", p[0]);
    }

    #[test]
    fn steps_shrink_as_squares_accumulate() {
        // A constant gradient c gives steps lr·c/(√(k)·c + ε) ≈ lr/√k at the k-th step.
        let opt = AdaGrad::new(1.0f64);
        let (mut p, mut h) = ([0.0], [0.0]);
        let mut before = 0.0;
        for k in 1..=16u32 {
            opt.step(u64::from(k), &mut p, &[2.0], &mut h);
            let step = before - p[0];
            assert!(
                close(step, 1.0 / f64::from(k).sqrt(), 1e-7),
                "k {k}: {step}"
            );
            before = p[0];
        }
    }

    #[test]
    fn validate_rejects_negative_rate() {
        assert_eq!(AdaGrad::new(0.01).validate(), Ok(()));
        assert_eq!(
            AdaGrad::new(-0.1).validate(),
            Err(Error::InvalidValue { what: BAD_LR })
        );
    }
}
