//! Adam: momentum plus RMSprop-style scaling with bias correction, the book's `Adam`.

use crate::{BAD_LR, BAD_WEIGHT_DECAY, Error, Optimizer, Real};
use crate::{check_non_negative, check_unit, debug_check_lens, decayed, flush};

/// ε added to the *uncorrected* `√v` in [`Adam`] (the book's `1e-7`).
pub const ADAM_EPS: f64 = 1e-7;

/// The book's default β₁ (decay of the first-moment average `m`) for [`Adam`].
pub const DEFAULT_BETA1: f64 = 0.9;

/// The book's default β₂ (decay of the second-moment average `v`) for [`Adam`].
pub const DEFAULT_BETA2: f64 = 0.999;

/// Error message for a β₁ outside `[0, 1)`.
const BAD_BETA1: &str = "Adam beta1 (must lie in [0, 1))";
/// Error message for a β₂ outside `[0, 1)`.
const BAD_BETA2: &str = "Adam beta2 (must lie in [0, 1))";

/// Adam, as the book's `common/optimizer.py` writes it:
///
/// ```text
/// lr_t ← lr·√(1 − β₂ᵗ) / (1 − β₁ᵗ)
/// m    ← m + (1 − β₁)·(g − m)        (= β₁·m + (1 − β₁)·g)
/// v    ← v + (1 − β₂)·(g² − v)       (= β₂·v + (1 − β₂)·g²)
/// p    ← p − lr_t·m / (√v + ε)        ε = ADAM_EPS = 1e-7
/// ```
///
/// Two state slots per parameter, laid out `[m | v]` (all of `m`, then all of `v`), both
/// starting at 0. `t` is the 1-based step count.
///
/// **Bias correction applies**, folded into the step size `lr_t` (the "more efficient
/// order" at the end of section 2 of the paper) rather than applied to `m` and `v`, which
/// are stored uncorrected. **ε is added to the uncorrected `√v`**; written with the
/// paper's corrected moments `m̂ = m/(1−β₁ᵗ)`, `v̂ = v/(1−β₂ᵗ)` the step is
/// `lr·m̂ / (√v̂ + ε/√(1−β₂ᵗ))`, so early on ε acts about `1/√(1−β₂) ≈ 32` times larger
/// than in the paper's Algorithm 1 (and PyTorch, which adds ε to `√v̂`). This matters
/// only when `|g|` is near ε. With weight decay λ the gradient is `g = ∇f + λ·p` (L2 in
/// the gradient, i.e. Adam with L2, not AdamW).
///
/// `t` above `i32::MAX` counts as `i32::MAX` (for the usual β ≤ 0.9999, `βᵗ` has
/// underflowed to 0 long before).
///
/// Paper: D. P. Kingma, J. Ba, "Adam: A Method for Stochastic Optimization", 2014 (ICLR
/// 2015), <https://arxiv.org/abs/1412.6980>.
///
/// The book's defaults: lr 0.001, β₁ = [`DEFAULT_BETA1`] = 0.9,
/// β₂ = [`DEFAULT_BETA2`] = 0.999.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Adam<T> {
    /// Learning rate `lr` (the paper's α).
    pub lr: T,
    /// Decay β₁ of the gradient average `m`, in `[0, 1)`.
    pub beta1: T,
    /// Decay β₂ of the squared-gradient average `v`, in `[0, 1)`.
    pub beta2: T,
    /// L2 weight-decay coefficient λ (0 for none).
    pub weight_decay: T,
}

impl<T: Real> Adam<T> {
    /// Adam with learning rate `lr`, β₁ = 0.9, β₂ = 0.999 and no weight decay.
    pub fn new(lr: T) -> Self {
        Self {
            lr,
            beta1: T::from_f64(DEFAULT_BETA1),
            beta2: T::from_f64(DEFAULT_BETA2),
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
    /// `beta1` or `beta2` lies outside `[0, 1)`.
    pub fn validate(&self) -> Result<(), Error> {
        check_non_negative(self.lr, BAD_LR)?;
        check_unit(self.beta1, BAD_BETA1)?;
        check_unit(self.beta2, BAD_BETA2)?;
        check_non_negative(self.weight_decay, BAD_WEIGHT_DECAY)
    }

    /// The bias-corrected step size `lr·√(1 − β₂ᵗ) / (1 − β₁ᵗ)` of step `t` (1-based).
    pub fn lr_t(&self, t: u64) -> T {
        debug_assert!(t >= 1, "Adam's step count t is 1-based");
        // t = 0 would divide by 1 − β₁⁰ = 0; in release builds treat it as the first step.
        let t = i32::try_from(t.max(1)).unwrap_or(i32::MAX);
        self.lr * (T::ONE - self.beta2.powi(t)).sqrt() / (T::ONE - self.beta1.powi(t))
    }
}

impl<T: Real> Optimizer<T> for Adam<T> {
    fn slots(&self) -> usize {
        2
    }

    fn step(&self, t: u64, params: &mut [T], grads: &[T], state: &mut [T]) {
        debug_check_lens(2, params, grads, state);
        let eps = T::from_f64(ADAM_EPS);
        let lr_t = self.lr_t(t);
        let mix1 = T::ONE - self.beta1;
        let mix2 = T::ONE - self.beta2;
        let (m, v) = state.split_at_mut(params.len().min(state.len()));
        for (((p, &g), m), v) in params.iter_mut().zip(grads).zip(m).zip(v) {
            let g = decayed(g, *p, self.weight_decay);
            *m = flush(*m + mix1 * (g - *m));
            *v = flush(*v + mix2 * (g * g - *v));
            *p -= lr_t * *m / (v.sqrt() + eps);
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
        // lr = 1, β₁ = β₂ = 0.5, p = 0, g = 1 twice.
        // t = 1: lr_t = √0.5/0.5 = √2; m = 0.5; v = 0.5;
        //        p = −√2·0.5/(√0.5 + ε) = −1/(1 + √2·ε) = −1 + 1.41421356e-7 (error ~2e-14).
        // t = 2: lr_t = √0.75/0.75 = 2/√3; m = 0.75; v = 0.75;
        //        step = (2/√3)·0.75/(√3/2 + ε) = 1/(1 + 2ε/√3) = 1 − 1.15470054e-7.
        // So p = −2 + 2.56891410e-7: with a constant gradient the corrected step is lr.
        let opt = Adam {
            lr: 1.0,
            beta1: 0.5,
            beta2: 0.5,
            weight_decay: 0.0,
        };
        let (mut p, mut s) = ([0.0], [0.0, 0.0]);
        opt.step(1, &mut p, &[1.0], &mut s);
        assert_eq!(s, [0.5, 0.5]);
        assert!(close(p[0], -1.0 + 1.414_213_56e-7, 1e-13), "{}", p[0]);
        opt.step(2, &mut p, &[1.0], &mut s);
        assert_eq!(s, [0.75, 0.75]);
        assert!(close(p[0], -2.0 + 2.568_914_10e-7, 1e-13), "{}", p[0]);
    }

    #[test]
    fn state_is_m_block_then_v_block() {
        // Two parameters, β defaults: after one step m = 0.1·g and v = 0.001·g².
        let opt = Adam::new(0.001f64);
        let mut p = [1.0, 1.0];
        let mut s = [0.0; 4];
        opt.step(1, &mut p, &[2.0, -3.0], &mut s);
        let want = [0.2, -0.3, 0.004, 0.009];
        for (got, want) in s.iter().zip(want) {
            assert!(close(*got, want, 1e-15 * want.abs()), "{s:?}");
        }
    }

    #[test]
    fn epsilon_sits_on_the_uncorrected_root() {
        // Defaults, t = 1, g = 1e-7·√1000: v = 0.001·g² so √v = 1e-7 = ε, and
        // lr_t·m = (√0.001/0.1)·0.1·g = 1e-7; the step is lr·1e-7/(1e-7 + 1e-7) = lr/2.
        let opt = Adam::new(1.0f64);
        let (mut p, mut s) = ([0.0], [0.0; 2]);
        opt.step(1, &mut p, &[1e-7 * 1000f64.sqrt()], &mut s);
        assert!(close(p[0], -0.5, 1e-14), "{}", p[0]);
    }

    #[test]
    fn first_step_is_lr_times_sign_thanks_to_bias_correction() {
        // t = 1: lr_t·m/(√v + ε) = lr·g/(|g| + ε/√(1 − β₂)), i.e. ±lr whatever |g| is.
        let opt = Adam::new(0.1f64);
        for g in [2.0, -300.0, 0.05] {
            let (mut p, mut s) = ([0.0], [0.0; 2]);
            opt.step(1, &mut p, &[g], &mut s);
            let want = -0.1 * g / (g.abs() + 1e-7 / 0.001f64.sqrt());
            assert!(close(p[0], want, 1e-15), "g {g}: {} vs {want}", p[0]);
        }
    }

    #[test]
    fn huge_step_counts_stay_finite() {
        // For t → ∞, lr_t → lr; counts past i32::MAX saturate.
        let opt = Adam::new(0.5f32);
        assert_eq!(opt.lr_t(u64::MAX), 0.5);
        assert_eq!(opt.lr_t(1 << 40), 0.5);
        let (mut p, mut s) = ([1.0f32], [0.0f32; 2]);
        opt.step(u64::MAX, &mut p, &[1.0], &mut s);
        assert!(p[0].is_finite() && p[0] < 1.0);
    }

    #[test]
    fn new_uses_the_books_defaults() {
        let a = Adam::new(0.001f64);
        assert_eq!(
            (a.lr, a.beta1, a.beta2, a.weight_decay),
            (0.001, 0.9, 0.999, 0.0)
        );
        assert_eq!(a.validate(), Ok(()));
        assert_eq!(
            Adam { beta1: 1.0, ..a }.validate(),
            Err(Error::InvalidValue { what: BAD_BETA1 })
        );
        assert_eq!(
            Adam {
                beta2: f64::NAN,
                ..a
            }
            .validate(),
            Err(Error::InvalidValue { what: BAD_BETA2 })
        );
    }
}
