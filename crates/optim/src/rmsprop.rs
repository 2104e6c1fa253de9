//! RMSprop: AdaGrad with an exponentially decaying average of squared gradients, the book's `RMSprop`.

use crate::{BAD_LR, BAD_WEIGHT_DECAY, Error, Optimizer, Real};
use crate::{check_non_negative, check_unit, debug_check_lens, decayed, flush};

/// ε added to `√h` in [`RmsProp`] (the book's `1e-7`).
pub const RMSPROP_EPS: f64 = 1e-7;

/// The book's default decay rate ρ for [`RmsProp`].
pub const DEFAULT_DECAY_RATE: f64 = 0.99;

/// Error message for a decay rate outside `[0, 1)`.
const BAD_DECAY_RATE: &str = "RMSprop decay rate (must lie in [0, 1))";

/// RMSprop:
///
/// ```text
/// h ← ρ·h + (1 − ρ)·g²
/// p ← p − lr·g / (√h + ε)          ε = RMSPROP_EPS = 1e-7
/// ```
///
/// `h` (one state slot, starting at 0) is a moving average of squared gradients, so old
/// gradients are forgotten at rate ρ instead of summed forever as in
/// [`AdaGrad`](crate::AdaGrad). ε sits *outside* the square root, added to `√h`. There is
/// no bias correction: `h` starts at 0, so the first steps are larger than later ones
/// (the very first is `lr·g / (√(1−ρ)·|g| + ε)`, about `10·lr` for ρ = 0.99); `t` is
/// ignored. With weight decay λ the gradient is `g = ∇f + λ·p`.
///
/// Source (unpublished; lecture slides): T. Tieleman, G. Hinton, "Lecture 6.5 — RMSprop:
/// divide the gradient by a running average of its recent magnitude", COURSERA: Neural
/// Networks for Machine Learning, 2012,
/// <https://www.cs.toronto.edu/~tijmen/csc321/slides/lecture_slides_lec6.pdf>.
///
/// The book's defaults: lr 0.01, ρ = [`DEFAULT_DECAY_RATE`] = 0.99.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RmsProp<T> {
    /// Learning rate `lr`.
    pub lr: T,
    /// Decay rate ρ of the squared-gradient average, in `[0, 1)`.
    pub decay_rate: T,
    /// L2 weight-decay coefficient λ (0 for none).
    pub weight_decay: T,
}

impl<T: Real> RmsProp<T> {
    /// RMSprop with learning rate `lr`, ρ = 0.99 and no weight decay.
    pub fn new(lr: T) -> Self {
        Self {
            lr,
            decay_rate: T::from_f64(DEFAULT_DECAY_RATE),
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
    /// `decay_rate` lies outside `[0, 1)`.
    pub fn validate(&self) -> Result<(), Error> {
        check_non_negative(self.lr, BAD_LR)?;
        check_unit(self.decay_rate, BAD_DECAY_RATE)?;
        check_non_negative(self.weight_decay, BAD_WEIGHT_DECAY)
    }
}

impl<T: Real> Optimizer<T> for RmsProp<T> {
    fn slots(&self) -> usize {
        1
    }

    fn step(&self, _t: u64, params: &mut [T], grads: &[T], state: &mut [T]) {
        debug_check_lens(1, params, grads, state);
        let eps = T::from_f64(RMSPROP_EPS);
        let keep = self.decay_rate;
        let mix = T::ONE - self.decay_rate;
        for ((p, &g), h) in params.iter_mut().zip(grads).zip(state.iter_mut()) {
            let g = decayed(g, *p, self.weight_decay);
            *h *= keep;
            *h = flush(*h + mix * g * g);
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
        // lr = 0.25, ρ = 0.75, p = 1, h = 0.
        // Step 1, g = 2: h = 0.25·4 = 1;          p = 1 − 0.5/(1 + 1e-7) = 0.5 + 5e-8 − 5e-15.
        // Step 2, g = 1: h = 0.75·1 + 0.25·1 = 1; p = p − 0.25/(1 + 1e-7)
        //                                            = 0.250000075 − 7.5e-15.
        let opt = RmsProp {
            lr: 0.25,
            decay_rate: 0.75,
            weight_decay: 0.0,
        };
        let (mut p, mut h) = ([1.0], [0.0]);
        opt.step(1, &mut p, &[2.0], &mut h);
        assert_eq!(h, [1.0]);
        assert!(close(p[0], 0.500_000_05, 1e-14), "{}", p[0]);
        opt.step(2, &mut p, &[1.0], &mut h);
        assert_eq!(h, [1.0]);
        assert!(close(p[0], 0.250_000_075, 1e-14), "{}", p[0]);
    }

    #[test]
    fn epsilon_sits_outside_the_square_root() {
        // ρ = 0.75, g = 2e-7: h = 0.25·4e-14 = 1e-14 and √h = 1e-7 = ε, so the step is
        // lr·2e-7/(1e-7 + 1e-7) = lr.
        let opt = RmsProp {
            lr: 1.0,
            decay_rate: 0.75,
            weight_decay: 0.0,
        };
        let (mut p, mut h) = ([0.0], [0.0]);
        opt.step(1, &mut p, &[2e-7], &mut h);
        assert!(close(p[0], -1.0, 1e-14), "{}", p[0]);
    }

    #[test]
    fn first_step_has_no_bias_correction() {
        // ρ = 0.99: h = 0.01·g², so the first step is lr·g/(0.1·|g| + ε), here with
        // lr = 0.01 and g = 3: 0.03/(0.3 + ε) = 0.1/(1 + ε/0.3), i.e. about 10·lr.
        let opt = RmsProp::new(0.01f64);
        let (mut p, mut h) = ([0.0], [0.0]);
        opt.step(1, &mut p, &[3.0], &mut h);
        assert!(close(p[0], -0.1 / (1.0 + 1e-7 / 0.3), 1e-15), "{}", p[0]);
    }

    #[test]
    fn new_uses_the_books_defaults() {
        let r = RmsProp::new(0.01f64);
        assert_eq!((r.lr, r.decay_rate, r.weight_decay), (0.01, 0.99, 0.0));
        assert_eq!(r.validate(), Ok(()));
        assert_eq!(
            RmsProp {
                decay_rate: 1.0,
                ..r
            }
            .validate(),
            Err(Error::InvalidValue {
                what: BAD_DECAY_RATE
            })
        );
    }
}
