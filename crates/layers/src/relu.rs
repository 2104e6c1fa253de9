//! Rectified linear unit `y = max(0, x)`; backward masks the gradient where the unit was off.

use crate::kernel::{Grad, Pointwise, Sizes};
use crate::layer::{Builtin, no_argument};
use crate::{Mode, Shape};
use core::fmt;
use manabi_tensor::{Real, Result, Rng};

/// `y = max(0, x)`, element-wise.
///
/// Backward needs only where the unit was on, and `y > 0 ⟺ x > 0`, so it reads the saved
/// output `y`. That lets the forward pass overwrite its input ([`Relu::forward_in_place`]),
/// which halves the activation memory of a network.
///
/// # Shapes
/// `x`, `y`, `dy`, `dx`: any length, all equal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Relu;

impl Relu {
    /// Writes `y = max(0, x)`.
    pub fn forward<T: Real>(&self, x: &[T], y: &mut [T]) {
        debug_assert_eq!(x.len(), y.len());
        for (y, &x) in y.iter_mut().zip(x) {
            *y = if x > T::ZERO { x } else { T::ZERO };
        }
    }

    /// `v = max(0, v)` in place.
    pub fn forward_in_place<T: Real>(&self, v: &mut [T]) {
        for v in v {
            *v = if *v > T::ZERO { *v } else { T::ZERO };
        }
    }

    /// Writes `dx = dy · [y > 0]`.
    pub fn backward<T: Real>(&self, y: &[T], dy: &[T], dx: &mut [T]) {
        debug_assert!(y.len() == dy.len() && dy.len() == dx.len());
        for ((dx, &dy), &y) in dx.iter_mut().zip(dy).zip(y) {
            *dx = if y > T::ZERO { dy } else { T::ZERO };
        }
    }

    /// `d = d · [y > 0]` in place: turns the gradient of the output into that of the input.
    pub fn backward_in_place<T: Real>(&self, y: &[T], d: &mut [T]) {
        debug_assert_eq!(y.len(), d.len());
        for (d, &y) in d.iter_mut().zip(y) {
            *d = if y > T::ZERO { *d } else { T::ZERO };
        }
    }
}

impl Relu {
    /// The layer on inputs of any shape.
    ///
    /// # Errors
    /// None: every shape will do.
    pub const fn new(_input: Shape) -> Result<Self> {
        Ok(Relu)
    }

    /// The input's shape, nothing kept; backward reads the output.
    pub const fn sizes(&self, input: Shape) -> Sizes {
        Sizes {
            reads_output: true,
            ..Sizes::output(input)
        }
    }
}

impl Pointwise for Relu {
    fn forward<T: Real>(&self, _: Mode, _: &mut Rng, v: &mut [T], _: &mut [T]) {
        self.forward_in_place(v);
    }

    fn backward<T: Real>(&self, y: &[T], _: &[T], g: Grad<'_, T>) {
        match g {
            Grad::InPlace(d) => self.backward_in_place(y, d),
            Grad::Apart(dy, dx) => Relu::backward(self, y, dy, dx),
        }
    }
}

impl Builtin for Relu {
    const KEYWORD: &'static str = "relu";
    const SYNTAX: &'static str = "relu";
    const READS_IMAGES: bool = false;
    type Args = ();

    fn parse(arg: Option<&str>) -> Result<()> {
        no_argument(arg, "relu takes no argument")
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
    fn forward_and_mask_by_hand() {
        let mut y = [0.0; 4];
        Relu.forward(&[-1.0, 0.0, 2.0, -0.5], &mut y);
        assert_eq!(y, [0.0, 0.0, 2.0, 0.0]);
        let mut dx = [9.0; 4];
        Relu.backward(&y, &[1.0, 2.0, 3.0, 4.0], &mut dx);
        assert_eq!(dx, [0.0, 0.0, 3.0, 0.0]);
        let mut v = [-3.0, 4.0, f64::NAN];
        Relu.forward_in_place(&mut v);
        assert_eq!(&v[..2], &[0.0, 4.0]);
    }

    #[test]
    fn relu_grads_match_finite_differences() {
        // Points kept at least 0.1 away from the kink at 0.
        let x = [0.7, -0.3, 1.2, -1.5, 0.1, -0.2, 2.0, 0.45];
        let r = probe(8, 5);
        let mut y = [0.0; 8];
        Relu.forward(&x, &mut y);
        let mut dx = [f64::NAN; 8];
        Relu.backward(&y, &r, &mut dx);
        assert_close(
            &dx,
            &numeric_grad(|x, y| Relu.forward(x, y), &x, &r),
            1e-9,
            1e-7,
        );
        let mut d = r.clone();
        Relu.backward_in_place(&y, &mut d);
        assert_eq!(d, dx);
    }
}
