//! Logistic sigmoid `y = 1/(1 + e^{−x})`; backward `dx = dy·y·(1 − y)`.

use crate::kernel::{Grad, Pointwise, Sizes};
use crate::layer::{Builtin, no_argument};
use crate::{Mode, Shape};
use core::fmt;
use manabi_tensor::{Real, Result, Rng};

/// `y = 1 / (1 + e^{−x})`, element-wise; backward uses the saved output: `dx = dy·y·(1 − y)`.
///
/// # Shapes
/// `x`, `y`, `dy`, `dx`: any length, all equal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sigmoid;

/// The sigmoid of one value, without overflow for large `|x|`.
#[inline]
fn sigmoid<T: Real>(x: T) -> T {
    // e^{−x} overflows for very negative x; use e^{x}/(1 + e^{x}) there instead.
    if x >= T::ZERO {
        T::ONE / (T::ONE + (-x).exp())
    } else {
        let e = x.exp();
        e / (T::ONE + e)
    }
}

impl Sigmoid {
    /// Writes `y = σ(x)`.
    pub fn forward<T: Real>(&self, x: &[T], y: &mut [T]) {
        debug_assert_eq!(x.len(), y.len());
        for (y, &x) in y.iter_mut().zip(x) {
            *y = sigmoid(x);
        }
    }

    /// `v = σ(v)` in place.
    pub fn forward_in_place<T: Real>(&self, v: &mut [T]) {
        for v in v {
            *v = sigmoid(*v);
        }
    }

    /// Writes `dx = dy·y·(1 − y)`.
    pub fn backward<T: Real>(&self, y: &[T], dy: &[T], dx: &mut [T]) {
        debug_assert!(y.len() == dy.len() && dy.len() == dx.len());
        for ((dx, &dy), &y) in dx.iter_mut().zip(dy).zip(y) {
            *dx = dy * y * (T::ONE - y);
        }
    }

    /// `d = d·y·(1 − y)` in place.
    pub fn backward_in_place<T: Real>(&self, y: &[T], d: &mut [T]) {
        debug_assert_eq!(y.len(), d.len());
        for (d, &y) in d.iter_mut().zip(y) {
            *d *= y * (T::ONE - y);
        }
    }
}

impl Sigmoid {
    /// The layer on inputs of any shape.
    ///
    /// # Errors
    /// None: every shape will do.
    pub const fn new(_input: Shape) -> Result<Self> {
        Ok(Sigmoid)
    }

    /// The input's shape, nothing kept; backward reads the output.
    pub const fn sizes(&self, input: Shape) -> Sizes {
        Sizes {
            reads_output: true,
            ..Sizes::output(input)
        }
    }
}

impl Pointwise for Sigmoid {
    fn forward<T: Real>(&self, _: Mode, _: &mut Rng, v: &mut [T], _: &mut [T]) {
        self.forward_in_place(v);
    }

    fn backward<T: Real>(&self, y: &[T], _: &[T], g: Grad<'_, T>) {
        // Apart and in place round differently (`dy·y·(1 − y)` against `d·(y·(1 − y))`), so
        // each keeps its own loop.
        match g {
            Grad::InPlace(d) => self.backward_in_place(y, d),
            Grad::Apart(dy, dx) => Sigmoid::backward(self, y, dy, dx),
        }
    }
}

impl Builtin for Sigmoid {
    const KEYWORD: &'static str = "sigmoid";
    const SYNTAX: &'static str = "sigmoid";
    const READS_IMAGES: bool = false;
    type Args = ();

    fn parse(arg: Option<&str>) -> Result<()> {
        no_argument(arg, "sigmoid takes no argument")
    }

    fn write(_: &(), f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::KEYWORD)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use manabi_testkit::{assert_close, numeric_grad, probe};

    #[test]
    fn forward_by_hand_and_no_overflow() {
        let mut y = [0.0; 3];
        Sigmoid.forward(&[0.0, -1000.0, 1000.0], &mut y);
        assert_eq!(y, [0.5, 0.0, 1.0]);
        let mut v = [2.0f64.ln()];
        Sigmoid.forward_in_place(&mut v);
        assert!((v[0] - 2.0 / 3.0).abs() < 1e-15);
    }

    #[test]
    fn sigmoid_grads_match_finite_differences() {
        let x = [0.7, -0.3, 1.2, -1.5, 0.0, -4.0, 3.0];
        let r = probe(7, 2);
        let mut y = [0.0; 7];
        Sigmoid.forward(&x, &mut y);
        let mut dx = [f64::NAN; 7];
        Sigmoid.backward(&y, &r, &mut dx);
        assert_close(
            &dx,
            &numeric_grad(|x, y| Sigmoid.forward(x, y), &x, &r),
            1e-9,
            1e-7,
        );
        let mut d = r.clone();
        Sigmoid.backward_in_place(&y, &mut d);
        assert_close(&d, &dx, 1e-15, 1e-15);
    }
}
