//! Dropout, the book's `Dropout`: a seeded mask in training, the output scaled by the keep ratio in evaluation.

use crate::kernel::{Grad, Pointwise, Sizes};
use crate::layer::Builtin;
use crate::{Mode, Shape};
use core::fmt;
use manabi_tensor::{Error, Real, Result, Rng};

/// Dropout (Srivastava et al. 2014, <https://jmlr.org/papers/v15/srivastava14a.html>), as the
/// book's `Dropout` — **not** the inverted dropout of PyTorch and Keras:
///
/// - training: each value is kept where a uniform draw `u ∈ [0, 1)` exceeds `ratio`
///   (`mask = u > ratio`), `y = x·mask`; nothing is scaled;
/// - evaluation: `y = x·(1 − ratio)`, the expected value of the training output.
///
/// Backward: `dx = dy·mask`. The draws come from the network's own seeded generator, one
/// per value, in row order, so a run's masks are the same on every machine.
///
/// # Shapes
/// `x`, `y`, `dy`, `dx`: `[rows, d]`; the cache holds the mask (0 or 1), `[batch, d]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dropout {
    /// Values per sample.
    pub d: usize,
    /// The fraction of values dropped in training, in `[0, 1)`.
    pub ratio: f64,
}

impl Dropout {
    /// The layer for inputs of shape `input`.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] unless `0 ≤ ratio < 1`.
    pub const fn new(input: Shape, ratio: f64) -> Result<Self> {
        // Written so that NaN fails too.
        if !(ratio >= 0.0 && ratio < 1.0) {
            return Err(Error::InvalidValue {
                what: "dropout ratio must be in [0, 1)",
            });
        }
        Ok(Self {
            d: input.len(),
            ratio,
        })
    }

    /// The mask for `batch` rows.
    ///
    /// # Errors
    /// [`Error::Overflow`].
    pub const fn cache_len(&self, batch: usize) -> Result<usize> {
        match batch.checked_mul(self.d) {
            Some(n) => Ok(n),
            None => Err(Error::Overflow { what: "plan" }),
        }
    }

    /// `v ← v·mask` with a fresh mask from `rng` (training, the mask kept in `mask`), or
    /// `v ← v·(1 − ratio)` (evaluation; `mask` unused and may be empty).
    pub fn forward_in_place<T: Real>(
        &self,
        mode: Mode,
        rng: &mut Rng,
        v: &mut [T],
        mask: &mut [T],
    ) {
        match mode {
            Mode::Train => {
                for (v, m) in v.iter_mut().zip(mask.iter_mut()) {
                    let keep = rng.uniform_f64() > self.ratio;
                    *m = if keep { T::ONE } else { T::ZERO };
                    *v *= *m;
                }
            }
            Mode::Eval => {
                let keep = T::from_f64(1.0 - self.ratio);
                v.iter_mut().for_each(|v| *v *= keep);
            }
        }
    }

    /// Writes `dx = dy·mask`.
    pub fn backward<T: Real>(&self, mask: &[T], dy: &[T], dx: &mut [T]) {
        for ((dx, &dy), &m) in dx.iter_mut().zip(dy).zip(mask) {
            *dx = dy * m;
        }
    }

    /// `d ← d·mask` in place.
    pub fn backward_in_place<T: Real>(&self, mask: &[T], d: &mut [T]) {
        for (d, &m) in d.iter_mut().zip(mask) {
            *d *= m;
        }
    }
}

impl Dropout {
    /// The input's shape, the mask kept (one value per input value); a training forward draws.
    pub const fn sizes(&self, input: Shape) -> Sizes {
        Sizes {
            cache_per_sample: self.d,
            draws: true,
            ..Sizes::output(input)
        }
    }
}

impl Pointwise for Dropout {
    fn forward<T: Real>(&self, mode: Mode, rng: &mut Rng, v: &mut [T], mask: &mut [T]) {
        self.forward_in_place(mode, rng, v, mask);
    }

    fn backward<T: Real>(&self, _: &[T], mask: &[T], g: Grad<'_, T>) {
        match g {
            Grad::InPlace(d) => self.backward_in_place(mask, d),
            Grad::Apart(dy, dx) => Dropout::backward(self, mask, dy, dx),
        }
    }
}

impl Builtin for Dropout {
    const KEYWORD: &'static str = "dropout";
    const SYNTAX: &'static str = "dropout:R";
    const READS_IMAGES: bool = false;
    type Args = (f64,);

    fn parse(arg: Option<&str>) -> Result<(f64,)> {
        let Some(arg) = arg else {
            return Err(Error::InvalidValue {
                what: "dropout needs its ratio, as in dropout:0.5",
            });
        };
        match arg.parse::<f64>() {
            Ok(r) if (0.0..1.0).contains(&r) => Ok((r,)),
            _ => Err(Error::InvalidValue {
                what: "dropout needs a ratio in [0, 1), as in dropout:0.5",
            }),
        }
    }

    fn write(&(ratio,): &(f64,), f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `Display` of an f64 is the shortest text that parses back to the same value.
        write!(f, "dropout:{ratio}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use manabi_testkit::{assert_close, numeric_grad, probe};

    #[test]
    fn masks_in_training_and_scales_in_evaluation() {
        let l = Dropout::new(Shape::flat(1000), 0.3).unwrap();
        let mut v = [2.0f32; 1000];
        let mut mask = [f32::NAN; 1000];
        l.forward_in_place(Mode::Train, &mut Rng::new(5), &mut v, &mut mask);
        let kept = mask.iter().filter(|&&m| m == 1.0).count();
        assert_eq!(mask.iter().filter(|&&m| m == 0.0).count(), 1000 - kept);
        // 700 expected; four standard deviations (14.5 each) either way.
        assert!((642..=758).contains(&kept), "{kept} kept");
        assert!(v.iter().zip(&mask).all(|(&v, &m)| v == 2.0 * m));
        // The same seed gives the same mask.
        let mut again = [f32::NAN; 1000];
        l.forward_in_place(Mode::Train, &mut Rng::new(5), &mut [1.0; 1000], &mut again);
        assert_eq!(mask, again);
        let mut e = [2.0f32; 4];
        l.forward_in_place(Mode::Eval, &mut Rng::new(5), &mut e, &mut []);
        assert_eq!(e, [2.0 * 0.7; 4]);
        assert!(Dropout::new(Shape::flat(3), 1.0).is_err());
        assert!(Dropout::new(Shape::flat(3), f64::NAN).is_err());
        assert!(Dropout::new(Shape::flat(3), -0.1).is_err());
    }

    #[test]
    fn dropout_grads_match_finite_differences() {
        let l = Dropout::new(Shape::flat(4), 0.5).unwrap();
        let x = [0.7, -0.3, 1.2, -1.5, 0.1, -0.2, 2.0, 0.45];
        let r = probe(8, 3);
        // The same seed for every evaluation: the mask is part of the function.
        let forward = |x: &[f64], y: &mut [f64]| {
            y.copy_from_slice(x);
            let mut mask = [0.0; 8];
            l.forward_in_place(Mode::Train, &mut Rng::new(11), y, &mut mask);
        };
        let mut y = x;
        let mut mask = [0.0; 8];
        l.forward_in_place(Mode::Train, &mut Rng::new(11), &mut y, &mut mask);
        assert!(mask.contains(&0.0) && mask.contains(&1.0), "{mask:?}");
        let mut dx = [f64::NAN; 8];
        l.backward(&mask, &r, &mut dx);
        assert_close(&dx, &numeric_grad(forward, &x, &r), 1e-9, 1e-7);
        let mut d = [0.0; 8];
        d.copy_from_slice(&r);
        l.backward_in_place(&mask, &mut d);
        assert_eq!(d, dx);
    }
}
