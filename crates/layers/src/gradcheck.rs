//! Gradient check: backprop against central differences, reported per parameter tensor.

use crate::plan::{MAX_LAYERS, Region, TensorName};
use crate::{Input, Network, Target, Update};
use manabi_matmul::Gemm;
use manabi_tensor::{Error, Real, Result};

/// Below this magnitude a gradient is compared absolutely, not relatively: relative error is
/// meaningless between two numbers that are both nearly zero.
pub const REL_FLOOR: f64 = 1e-8;

/// How backprop and the numerical gradient differ on one parameter tensor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TensorDiff {
    /// Tensor name (`W1`, `b1`, `gamma1`, …).
    pub name: TensorName,
    /// Elements compared.
    pub len: usize,
    /// Mean of `|backprop − numerical|`: the figure the book's `gradient_check.py` prints.
    pub mean_abs: f64,
    /// Largest `|backprop − numerical|`.
    pub max_abs: f64,
    /// Largest `|backprop − numerical| / max(|backprop|, |numerical|, REL_FLOOR)`.
    pub max_rel: f64,
}

/// The result of [`gradcheck`]: one [`TensorDiff`] per parameter tensor, plus the loss.
#[derive(Clone, Copy, Debug)]
pub struct GradCheck {
    diffs: [TensorDiff; 2 * MAX_LAYERS],
    count: usize,
    /// The loss on the batch checked.
    pub loss: f64,
}

impl GradCheck {
    /// Per-tensor differences, in parameter order.
    pub fn tensors(&self) -> &[TensorDiff] {
        &self.diffs[..self.count]
    }

    /// The worst relative difference over all tensors.
    pub fn max_rel(&self) -> f64 {
        self.tensors().iter().fold(0.0, |m, d| m.max(d.max_rel))
    }
}

/// The finite-difference step [`gradcheck`] uses: `∛ε` of the type (about 6e-6 for `f64`,
/// 5e-3 for `f32`), which balances the `h²` truncation error of central differences against
/// the `ε/h` rounding error.
pub fn default_step<T: Real>() -> T {
    T::EPSILON.powf(T::ONE / T::from_f64(3.0))
}

/// Runs backprop (one step with [`Update::gradients`]) and the numerical gradient
/// ([`Network::numerical_gradient`]) on the same batch, with the same Dropout masks, and
/// compares them per parameter tensor. `input` may be any kind the plan accepts (the
/// arena's rows, filled already; dense rows; sparse rows); `weight_decay` adds the book's
/// penalty to both. Use an `f64` network: in `f32` the numerical gradient itself is only
/// good to about 1e-3.
///
/// `numeric` is scratch for the numerical gradient, `param_len` elements; afterwards it holds
/// that gradient and the network's gradient buffer holds backprop's.
///
/// # Errors
/// [`Error::LengthMismatch`] if `numeric` has the wrong length; [`Error::InvalidValue`] if the
/// network was not planned with gradients, or the input does not fit the plan.
pub fn gradcheck<T: Real>(
    net: &mut Network<'_, T>,
    mm: &impl Gemm<T>,
    input: Input<'_, T>,
    target: Target<'_, T>,
    weight_decay: T,
    numeric: &mut [T],
) -> Result<GradCheck> {
    let plan = net.plan();
    if numeric.len() != plan.param_len() {
        return Err(Error::LengthMismatch {
            expected: plan.param_len(),
            got: numeric.len(),
        });
    }
    let mut update = Update::gradients(plan)?.with_weight_decay(weight_decay)?;
    let d_in = plan.d_in();
    let rows = input.rows(d_in);
    if rows == 0 || rows > plan.batch() || target.rows(plan.classes()) != rows {
        return Err(Error::InvalidValue {
            what: "gradcheck rows must be between 1 and the planned batch, one target each",
        });
    }
    match input {
        Input::Dense(x) if x.len() != rows * d_in => {
            return Err(Error::LengthMismatch {
                expected: rows * d_in,
                got: x.len(),
            });
        }
        Input::Sparse(b) if !plan.accepts_sparse() || b.x().cols() != d_in => {
            return Err(Error::InvalidValue {
                what: "sparse rows need a first Affine layer of their width",
            });
        }
        _ => {}
    }
    let masks = net.rng().clone();
    net.numerical_gradient(
        mm,
        input,
        target,
        weight_decay,
        default_step::<T>(),
        numeric,
    );
    net.set_rng(masks);
    let loss = net.train_step(mm, input, target, &mut update).to_f64();
    let backprop = net.grads();
    let mut diffs = [TensorDiff {
        name: TensorName {
            prefix: "",
            number: 0,
        },
        len: 0,
        mean_abs: 0.0,
        max_abs: 0.0,
        max_rel: 0.0,
    }; 2 * MAX_LAYERS];
    let mut count = 0;
    for info in plan.tensors().filter(|t| t.region == Region::Params) {
        let range = info.span.start..info.span.end();
        let mut d = TensorDiff {
            name: info.name,
            len: info.span.len,
            ..diffs[count]
        };
        let mut sum = 0.0;
        for (&a, &b) in backprop[range.clone()].iter().zip(&numeric[range]) {
            let (a, b) = (a.to_f64(), b.to_f64());
            let diff = (a - b).abs();
            sum += diff;
            d.max_abs = d.max_abs.max(diff);
            d.max_rel = d.max_rel.max(diff / a.abs().max(b.abs()).max(REL_FLOOR));
        }
        d.mean_abs = if d.len == 0 { 0.0 } else { sum / d.len as f64 };
        diffs[count] = d;
        count += 1;
    }
    Ok(GradCheck { diffs, count, loss })
}
