//! Nesterov's accelerated gradient in the book's reformulated form, the book's `Nesterov`.

use crate::momentum::{BAD_MOMENTUM, DEFAULT_MOMENTUM};
use crate::{BAD_LR, BAD_WEIGHT_DECAY, Error, Optimizer, Real};
use crate::{check_non_negative, check_unit, debug_check_lens, decayed, flush};

/// Nesterov's accelerated gradient (NAG), exactly as the book's `common/optimizer.py`
/// writes it:
///
/// ```text
/// v ← μ·v − lr·g
/// p ← p + μ²·v − (1 + μ)·lr·g        (v is the velocity just updated)
/// ```
///
/// `v` (one state slot, starting at 0) is the velocity; with weight decay λ the gradient is
/// `g = ∇f + λ·p`. No ε, no bias correction; `t` is ignored.
///
/// # Which form this is
/// NAG evaluates the gradient at the look-ahead point `θ + μ·v` (Sutskever et al. 2013,
/// eq. 3–4). Bengio et al. 2012 (the paper the book's docstring cites) change variables to
/// `p = θ + μ·v` so the gradient is taken at the stored parameters, which gives
/// `p ← p + μ²·v_old − (1 + μ)·lr·g` with the velocity from *before* the update. The
/// book's code updates `v` first and multiplies the *new* velocity by μ², i.e.
/// `p ← p + μ³·v_old − (1 + μ + μ²)·lr·g`. This type follows the book, not the paper,
/// so that results match the book's; it is still a momentum method that converges on
/// convex problems (see the crate's tests), just with a larger effective step.
///
/// Papers: Y. Nesterov, "A method for solving the convex programming problem with
/// convergence rate O(1/k²)", Doklady AN SSSR 269(3), 1983,
/// <https://www.mathnet.ru/eng/dan46009>; I. Sutskever, J. Martens, G. Dahl, G. Hinton,
/// "On the importance of initialization and momentum in deep learning", ICML 2013,
/// <https://proceedings.mlr.press/v28/sutskever13.html>; Y. Bengio,
/// N. Boulanger-Lewandowski, R. Pascanu, "Advances in optimizing recurrent networks",
/// 2012, <https://arxiv.org/abs/1212.0901>.
///
/// The book's defaults: lr 0.01, μ = [`DEFAULT_MOMENTUM`] = 0.9.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Nesterov<T> {
    /// Learning rate `lr`.
    pub lr: T,
    /// Momentum μ, in `[0, 1)`.
    pub momentum: T,
    /// L2 weight-decay coefficient λ (0 for none).
    pub weight_decay: T,
}

impl<T: Real> Nesterov<T> {
    /// NAG with learning rate `lr`, μ = 0.9 and no weight decay.
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

impl<T: Real> Optimizer<T> for Nesterov<T> {
    fn slots(&self) -> usize {
        1
    }

    fn step(&self, _t: u64, params: &mut [T], grads: &[T], state: &mut [T]) {
        debug_check_lens(1, params, grads, state);
        // Same grouping as the book: (μ·μ)·v and ((1 + μ)·lr)·g.
        let mu2 = self.momentum * self.momentum;
        let lr_g = (T::ONE + self.momentum) * self.lr;
        for ((p, &g), v) in params.iter_mut().zip(grads).zip(state.iter_mut()) {
            let g = decayed(g, *p, self.weight_decay);
            *v = flush(self.momentum * *v - self.lr * g);
            *p += mu2 * *v;
            *p -= lr_g * g;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_steps_by_hand_use_the_new_velocity() {
        // lr = μ = 0.5, so μ² = 0.25 and (1 + μ)·lr = 0.75; p = 1, v = 0.
        // Step 1, g = 1: v = −0.5;  p = 1 + 0.25·(−0.5) − 0.75·1 = 0.125.
        // Step 2, g = 2: v = 0.5·(−0.5) − 0.5·2 = −1.25;
        //                p = 0.125 + 0.25·(−1.25) − 0.75·2 = −1.6875.
        // (Bengio et al.'s form, with the old velocity, would give p = 0.25 and then −1.375.)
        let opt = Nesterov {
            lr: 0.5,
            momentum: 0.5,
            weight_decay: 0.0,
        };
        let (mut p, mut v) = ([1.0], [0.0]);
        opt.step(1, &mut p, &[1.0], &mut v);
        assert_eq!((p, v), ([0.125], [-0.5]));
        opt.step(2, &mut p, &[2.0], &mut v);
        assert_eq!((p, v), ([-1.6875], [-1.25]));
    }

    #[test]
    fn zero_momentum_is_sgd() {
        // μ = 0: v = −lr·g and p ← p − lr·g, plain SGD.
        let opt = Nesterov {
            lr: 0.25f32,
            momentum: 0.0,
            weight_decay: 0.0,
        };
        let (mut p, mut v) = ([1.0, 2.0], [0.0, 0.0]);
        opt.step(1, &mut p, &[2.0, -4.0], &mut v);
        assert_eq!((p, v), ([0.5, 3.0], [-0.5, 1.0]));
    }

    #[test]
    fn new_uses_the_books_defaults() {
        let n = Nesterov::new(0.01f64);
        assert_eq!((n.lr, n.momentum, n.weight_decay), (0.01, 0.9, 0.0));
        assert_eq!(n.validate(), Ok(()));
        assert_eq!(
            Nesterov {
                momentum: -0.5,
                ..n
            }
            .validate(),
            Err(Error::InvalidValue { what: BAD_MOMENTUM })
        );
    }
}
