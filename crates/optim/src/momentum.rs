//! Momentum SGD (the heavy-ball method), the book's `Momentum`.

use crate::{BAD_LR, BAD_WEIGHT_DECAY, Error, Optimizer, Real};
use crate::{check_non_negative, check_unit, debug_check_lens, decayed, flush};

/// The book's default momentum μ for [`Momentum`] and [`Nesterov`](crate::Nesterov).
pub const DEFAULT_MOMENTUM: f64 = 0.9;

/// Error message for a momentum outside `[0, 1)`.
pub(crate) const BAD_MOMENTUM: &str = "momentum (must lie in [0, 1))";

/// Momentum SGD (Polyak's heavy ball):
///
/// ```text
/// v ← μ·v − lr·g
/// p ← p + v
/// ```
///
/// `v` (one state slot, starting at 0) is the velocity; with weight decay λ the gradient is
/// `g = ∇f + λ·p`. No ε, no bias correction; `t` is ignored. This is the book's form,
/// where the learning rate sits inside the velocity (PyTorch instead keeps `v ← μ·v + g`
/// and steps by `lr·v`; the two agree while `lr` is constant).
///
/// Paper: B. T. Polyak, "Some methods of speeding up the convergence of iteration methods",
/// USSR Computational Mathematics and Mathematical Physics 4(5), 1964,
/// <https://doi.org/10.1016/0041-5553(64)90137-5>.
///
/// The book's defaults: lr 0.01, μ = [`DEFAULT_MOMENTUM`] = 0.9.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Momentum<T> {
    /// Learning rate `lr`.
    pub lr: T,
    /// Momentum μ, in `[0, 1)`.
    pub momentum: T,
    /// L2 weight-decay coefficient λ (0 for none).
    pub weight_decay: T,
}

impl<T: Real> Momentum<T> {
    /// Momentum SGD with learning rate `lr`, μ = 0.9 and no weight decay.
    pub fn new(lr: T) -> Self {
        Self {
            lr,
            momentum: T::from_f64(DEFAULT_MOMENTUM),
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
    /// [`Error::InvalidValue`] if `lr` or `weight_decay` is negative or not finite, or
    /// `momentum` lies outside `[0, 1)`.
    pub fn validate(&self) -> Result<(), Error> {
        check_non_negative(self.lr, BAD_LR)?;
        check_unit(self.momentum, BAD_MOMENTUM)?;
        check_non_negative(self.weight_decay, BAD_WEIGHT_DECAY)
    }
}

impl<T: Real> Optimizer<T> for Momentum<T> {
    fn slots(&self) -> usize {
        1
    }

    fn step(&self, _t: u64, params: &mut [T], grads: &[T], state: &mut [T]) {
        debug_check_lens(1, params, grads, state);
        for ((p, &g), v) in params.iter_mut().zip(grads).zip(state.iter_mut()) {
            let g = decayed(g, *p, self.weight_decay);
            *v = flush(self.momentum * *v - self.lr * g);
            *p += *v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_steps_by_hand() {
        // lr = μ = 0.5, p = 1, v = 0 (binary-exact numbers).
        // Step 1, g = 1: v = 0.5·0 − 0.5·1 = −0.5;          p = 1 − 0.5 = 0.5.
        // Step 2, g = 2: v = 0.5·(−0.5) − 0.5·2 = −1.25;    p = 0.5 − 1.25 = −0.75.
        let opt = Momentum {
            lr: 0.5,
            momentum: 0.5,
            weight_decay: 0.0,
        };
        let (mut p, mut v) = ([1.0], [0.0]);
        opt.step(1, &mut p, &[1.0], &mut v);
        assert_eq!((p, v), ([0.5], [-0.5]));
        opt.step(2, &mut p, &[2.0], &mut v);
        assert_eq!((p, v), ([-0.75], [-1.25]));
    }

    #[test]
    fn velocity_carries_on_without_gradient() {
        // With g = 0 the velocity decays geometrically and keeps moving p:
        // v = −1 → −0.5 → −0.25, p = 0 → −0.5 → −0.75.
        let opt = Momentum {
            lr: 1.0,
            momentum: 0.5,
            weight_decay: 0.0,
        };
        let (mut p, mut v) = ([0.0f32], [-1.0f32]);
        opt.step(1, &mut p, &[0.0], &mut v);
        opt.step(2, &mut p, &[0.0], &mut v);
        assert_eq!((p, v), ([-0.75], [-0.25]));
    }

    #[test]
    fn new_uses_the_books_defaults() {
        let m = Momentum::new(0.01f64);
        assert_eq!((m.lr, m.momentum, m.weight_decay), (0.01, 0.9, 0.0));
        assert_eq!(m.validate(), Ok(()));
        assert_eq!(
            Momentum { momentum: 1.0, ..m }.validate(),
            Err(Error::InvalidValue { what: BAD_MOMENTUM })
        );
    }
}
