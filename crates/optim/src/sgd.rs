//! Plain stochastic gradient descent, the book's `SGD`.

use crate::{BAD_LR, BAD_WEIGHT_DECAY, Error, Optimizer, Real};
use crate::{check_non_negative, debug_check_lens, decayed};

/// Stochastic gradient descent: `p ← p − lr·g`.
///
/// With weight decay λ the gradient is `g = ∇f + λ·p` (L2, added before the rule). No
/// state, no ε, no bias correction; `t` is ignored. The method goes back to Robbins &
/// Monro, "A Stochastic Approximation Method" (1951),
/// <https://doi.org/10.1214/aoms/1177729586>.
///
/// The book's default learning rate is 0.01.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sgd<T> {
    /// Learning rate `lr`.
    pub lr: T,
    /// L2 weight-decay coefficient λ (0 for none).
    pub weight_decay: T,
}

impl<T: Real> Sgd<T> {
    /// SGD with learning rate `lr` and no weight decay.
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

impl<T: Real> Optimizer<T> for Sgd<T> {
    fn slots(&self) -> usize {
        0
    }

    fn step(&self, _t: u64, params: &mut [T], grads: &[T], state: &mut [T]) {
        debug_check_lens(0, params, grads, state);
        for (p, &g) in params.iter_mut().zip(grads) {
            let g = decayed(g, *p, self.weight_decay);
            *p -= self.lr * g;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_step_by_hand() {
        // p − 0.5·g: 1 − 0.25 = 0.75 and −2 − 2 = −4 (all exact in binary).
        let mut p = [1.0, -2.0];
        Sgd::new(0.5).step(1, &mut p, &[0.5, 4.0], &mut []);
        assert_eq!(p, [0.75, -4.0]);
    }

    #[test]
    fn weight_decay_adds_lambda_p_to_the_gradient() {
        // λ = 0.5: g becomes [0.5 + 0.5·1, 4 + 0.5·(−2)] = [1, 3]; p − 0.5·g = [0.5, −3.5].
        let mut p = [1.0, -2.0];
        Sgd::new(0.5)
            .with_weight_decay(0.5)
            .step(1, &mut p, &[0.5, 4.0], &mut []);
        assert_eq!(p, [0.5, -3.5]);
        // With a zero gradient, decay alone shrinks p by the factor (1 − lr·λ) = 0.75.
        let mut p = [2.0f32, -4.0];
        Sgd::new(0.5)
            .with_weight_decay(0.5)
            .step(1, &mut p, &[0.0, 0.0], &mut []);
        assert_eq!(p, [1.5, -3.0]);
    }

    #[test]
    fn zero_gradient_and_zero_decay_leave_params_unchanged() {
        let start = [1.5, -0.0, 3.25e-300, -7.0, f64::MAX];
        let mut p = start;
        let sgd = Sgd::new(0.1);
        for t in 1..=10 {
            sgd.step(t, &mut p, &[0.0; 5], &mut []);
        }
        assert_eq!(p.map(f64::to_bits), start.map(f64::to_bits));
    }

    #[test]
    fn validate_rejects_negative_and_nan() {
        assert_eq!(Sgd::new(0.1).validate(), Ok(()));
        assert_eq!(
            Sgd::new(-0.1).validate(),
            Err(Error::InvalidValue { what: BAD_LR })
        );
        assert_eq!(
            Sgd::new(f32::NAN).validate(),
            Err(Error::InvalidValue { what: BAD_LR })
        );
        assert_eq!(
            Sgd::new(0.1).with_weight_decay(-1e-3).validate(),
            Err(Error::InvalidValue {
                what: BAD_WEIGHT_DECAY
            })
        );
    }
}
