//! Gradient check: backprop against central differences, reported per parameter tensor.

use crate::MAX_TENSORS;
use crate::plan::{MAX_LAYERS, Region, TensorName};
use crate::{Input, Network, Plan, Target, Update};
use manabi_matmul::Gemm;
use manabi_tensor::{Error, Real, Result};

/// Below this magnitude a gradient is compared absolutely, not relatively: relative error is
/// meaningless between two numbers that are both nearly zero.
pub const REL_FLOOR: f64 = 1e-8;

/// When an element of backprop's gradient `a` agrees with the numerical one `b`:
/// `|a − b| ≤ atol + rtol·max(|a|, |b|)` (NumPy's `allclose`, made symmetric).
///
/// The gate is on every element, not on a tensor's mean: one element of W1's 39,200 wrong by
/// 4e-3 moves W1's mean difference by only 1e-7, but fails here.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    /// The absolute floor.
    pub atol: f64,
    /// The relative part, scaled by the larger magnitude of the two.
    pub rtol: f64,
}

impl Tolerance {
    /// `atol` 1e-7, `rtol` 1e-5, for an `f64` network.
    ///
    /// The floor is the difference the book's own check lives with: its `cross_entropy_error`
    /// takes `log(y + 1e-7)`, which moves its numerical gradient off backprop's exact
    /// `(y − t)/batch` by about `1e-7 / y_label` per logit, and its `gradient_check.py` prints
    /// differences of about 1e-7 for `b2`. manabi's loss has no `ε` in the log, so a correct
    /// backward stays far inside the floor: central differences with [`default_step`] leave
    /// about 1e-10 on the book's network. The relative part gives large gradients (a bias
    /// summed over the batch, BatchNorm's `γ`) room for the same relative rounding as small ones.
    pub const BOOK: Tolerance = Tolerance {
        atol: 1e-7,
        rtol: 1e-5,
    };

    /// How far `|a − b|` lies beyond the tolerance: positive fails; NaN on either side is
    /// infinitely far.
    pub fn excess(&self, a: f64, b: f64) -> f64 {
        let excess = (a - b).abs() - (self.atol + self.rtol * a.abs().max(b.abs()));
        if excess.is_nan() {
            f64::INFINITY
        } else {
            excess
        }
    }
}

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
    /// The element furthest out of the check's [`Tolerance`] (or, when all are within it, the
    /// nearest to its edge), as a flat index into the tensor.
    pub worst: usize,
    /// Backprop's value at `worst`.
    pub worst_backprop: f64,
    /// The numerical gradient's value at `worst`.
    pub worst_numerical: f64,
    /// [`Tolerance::excess`] at `worst`: positive when the tensor fails.
    pub worst_excess: f64,
    /// The tensor's shape, padded with zeros after `rank` dimensions.
    pub shape: [usize; 4],
    /// Number of dimensions.
    pub rank: usize,
}

impl TensorDiff {
    /// `worst` as a multi-index over the tensor's dimensions (`rank` entries count).
    pub fn worst_index(&self) -> [usize; 4] {
        let mut index = [0; 4];
        let mut rest = self.worst;
        for k in (0..self.rank).rev() {
            let dim = self.shape[k].max(1);
            index[k] = rest % dim;
            rest /= dim;
        }
        index
    }
}

/// The element of a failed gradient check furthest out of tolerance, for the error message.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Mismatch {
    /// The tensor it belongs to.
    pub name: TensorName,
    /// Its flat index in the tensor.
    pub flat: usize,
    /// Its index over the tensor's dimensions (`rank` entries count).
    pub index: [usize; 4],
    /// The tensor's rank.
    pub rank: usize,
    /// Backprop's value.
    pub backprop: f64,
    /// The numerical gradient's value.
    pub numerical: f64,
    /// The tolerance it broke.
    pub tolerance: Tolerance,
}

impl core::fmt::Display for Mismatch {
    /// `W1[12, 3]: backprop …, numerical …: |diff| … exceeds 1.0e-7 + 1.0e-5·…`.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}[", self.name)?;
        for (k, i) in self.index[..self.rank].iter().enumerate() {
            if k > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{i}")?;
        }
        let Tolerance { atol, rtol } = self.tolerance;
        let (a, b) = (self.backprop, self.numerical);
        write!(
            f,
            "]: backprop {a:.6e}, numerical {b:.6e}: |diff| {:.3e} exceeds {atol:.1e} + {rtol:.1e}·{:.3e}",
            (a - b).abs(),
            a.abs().max(b.abs())
        )
    }
}

/// The result of [`gradcheck`]: one [`TensorDiff`] per parameter tensor, plus the loss.
#[derive(Clone, Copy, Debug)]
pub struct GradCheck {
    diffs: [TensorDiff; MAX_TENSORS * MAX_LAYERS],
    count: usize,
    /// The loss on the batch checked.
    pub loss: f64,
    /// The tolerance each tensor's `worst` element was chosen under.
    pub tolerance: Tolerance,
    /// Elements whose numerical gradient [`gradcheck`] took again with smaller steps, because
    /// the first disagreed with backprop by more than [`Tolerance::BOOK`] (0 from
    /// [`GradCheck::compare`] alone).
    pub retaken: usize,
}

impl GradCheck {
    /// Compares `backprop` with `numerical` (both `plan.param_len()` long, in parameter order)
    /// tensor by tensor under `tolerance`. [`gradcheck`] calls it with [`Tolerance::BOOK`];
    /// afterwards the network's gradients and the `numeric` buffer hold the two gradients, so
    /// a caller can compare them again under another tolerance.
    ///
    /// # Panics
    /// If either slice is shorter than the plan's parameters.
    pub fn compare<T: Real>(
        plan: &Plan,
        backprop: &[T],
        numerical: &[T],
        loss: f64,
        tolerance: Tolerance,
    ) -> GradCheck {
        let blank = TensorDiff {
            name: TensorName {
                prefix: "",
                number: 0,
            },
            len: 0,
            mean_abs: 0.0,
            max_abs: 0.0,
            max_rel: 0.0,
            worst: 0,
            worst_backprop: 0.0,
            worst_numerical: 0.0,
            worst_excess: f64::NEG_INFINITY,
            shape: [0; 4],
            rank: 0,
        };
        let mut diffs = [blank; MAX_TENSORS * MAX_LAYERS];
        let mut count = 0;
        for info in plan.tensors().filter(|t| t.region == Region::Params) {
            let range = info.span.start..info.span.end();
            let mut d = TensorDiff {
                name: info.name,
                len: info.span.len,
                shape: info.shape,
                rank: info.rank,
                ..blank
            };
            let mut sum = 0.0;
            let pairs = backprop[range.clone()].iter().zip(&numerical[range]);
            for (i, (&a, &b)) in pairs.enumerate() {
                let (a, b) = (a.to_f64(), b.to_f64());
                let diff = (a - b).abs();
                sum += diff;
                d.max_abs = d.max_abs.max(diff);
                d.max_rel = d.max_rel.max(diff / a.abs().max(b.abs()).max(REL_FLOOR));
                let excess = tolerance.excess(a, b);
                if excess > d.worst_excess {
                    (d.worst, d.worst_backprop, d.worst_numerical, d.worst_excess) =
                        (i, a, b, excess);
                }
            }
            d.mean_abs = if d.len == 0 { 0.0 } else { sum / d.len as f64 };
            diffs[count] = d;
            count += 1;
        }
        GradCheck {
            diffs,
            count,
            loss,
            tolerance,
            retaken: 0,
        }
    }

    /// Per-tensor differences, in parameter order.
    pub fn tensors(&self) -> &[TensorDiff] {
        &self.diffs[..self.count]
    }

    /// The worst relative difference over all tensors.
    pub fn max_rel(&self) -> f64 {
        self.tensors().iter().fold(0.0, |m, d| m.max(d.max_rel))
    }

    /// The largest absolute difference over all tensors.
    pub fn max_abs(&self) -> f64 {
        self.tensors().iter().fold(0.0, |m, d| m.max(d.max_abs))
    }

    /// Passes when every element of every tensor is within [`GradCheck::tolerance`].
    ///
    /// # Errors
    /// The element furthest out of it, over all tensors.
    pub fn verdict(&self) -> core::result::Result<(), Mismatch> {
        let worst = self.tensors().iter().filter(|d| d.worst_excess > 0.0).fold(
            None::<&TensorDiff>,
            |w, d| match w {
                Some(w) if w.worst_excess >= d.worst_excess => Some(w),
                _ => Some(d),
            },
        );
        match worst {
            Some(d) => Err(Mismatch {
                name: d.name,
                flat: d.worst,
                index: d.worst_index(),
                rank: d.rank,
                backprop: d.worst_backprop,
                numerical: d.worst_numerical,
                tolerance: self.tolerance,
            }),
            None => Ok(()),
        }
    }
}

/// The finite-difference step [`gradcheck`] uses: `∛ε` of the type (about 6e-6 for `f64`,
/// 5e-3 for `f32`), which balances the `h²` truncation error of central differences against
/// the `ε/h` rounding error.
pub fn default_step<T: Real>() -> T {
    T::EPSILON.powf(T::ONE / T::from_f64(3.0))
}

/// How many times smaller the steps are with which [`gradcheck`] takes an element's
/// numerical gradient again, in turn, where the first disagrees with backprop.
pub const RETAKE_STEPS: [f64; 3] = [10.0, 100.0, 1000.0];

/// Runs backprop (one step with [`Update::gradients`]) and the numerical gradient
/// ([`Network::numerical_gradient`]) on the same batch, with the same Dropout masks, and
/// compares them per parameter tensor. `input` may be any kind the plan accepts (the
/// arena's rows, filled already; dense rows; sparse rows); `weight_decay` adds the book's
/// penalty to both. Use an `f64` network: in `f32` the numerical gradient itself is only
/// good to about 1e-3.
///
/// Where an element's central difference disagrees with backprop by more than
/// [`Tolerance::BOOK`], it is taken again with steps [`RETAKE_STEPS`] times smaller, and the
/// one nearest backprop stands, so the element passes if any step agrees
/// ([`GradCheck::retaken`] counts these elements). A correct backward disagrees with central differences only where
/// the step reaches over a kink or a tie (a ReLU input or a pooling window's runner-up within
/// the step of the point: with 0.01-scale weights on MNIST's faint stroke edges, about one
/// unit in a thousand) or where the loss curves sharply within it; a smaller step leaves those
/// out, and its rounding (about 5e-10 at a tenth of the step on SimpleConvNet, ten times more
/// at each tenth after) stays under the tolerance's floor. A wrong backward disagrees at every
/// step. A point exactly on a kink (a zero bias on zero inputs) stays wrong at any step: move
/// it off first (`manabi gradcheck` draws the biases).
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
    check_input(plan, &input, &target)?;
    let masks = net.rng().clone();
    net.numerical_gradient(
        mm,
        input,
        target,
        weight_decay,
        default_step::<T>(),
        numeric,
    );
    net.set_rng(masks.clone());
    let loss = net.train_step(mm, input, target, &mut update).to_f64();
    let after = net.rng().clone();
    net.set_rng(masks);
    let retaken = retake(net, mm, (input, target, weight_decay), numeric);
    net.set_rng(after);
    let mut report = GradCheck::compare(plan, net.grads(), numeric, loss, Tolerance::BOOK);
    report.retaken = retaken;
    Ok(report)
}

/// Refuses an input or target that does not fit the plan's batch.
fn check_input<T: Real>(plan: &Plan, input: &Input<'_, T>, target: &Target<'_, T>) -> Result<()> {
    let d_in = plan.d_in();
    let rows = input.rows(d_in);
    if rows == 0 || rows > plan.batch() || target.rows(plan.classes()) != rows {
        return Err(Error::InvalidValue {
            what: "gradcheck rows must be between 1 and the planned batch, one target each",
        });
    }
    match input {
        Input::Dense(x) if x.len() != rows * d_in => Err(Error::LengthMismatch {
            expected: rows * d_in,
            got: x.len(),
        }),
        Input::Sparse(b) if !plan.accepts_sparse() || b.x().cols() != d_in => {
            Err(Error::InvalidValue {
                what: "sparse rows need a first Affine layer of their width",
            })
        }
        _ => Ok(()),
    }
}

/// Takes the numerical gradient again with each of the smaller [`RETAKE_STEPS`] wherever it
/// disagrees with backprop (the network's gradients) by more than [`Tolerance::BOOK`], and
/// keeps the one nearest backprop; returns how many elements it took again. The generator
/// must hold the checked masks.
fn retake<T: Real>(
    net: &mut Network<'_, T>,
    mm: &impl Gemm<T>,
    (input, target, decay): (Input<'_, T>, Target<'_, T>, T),
    numeric: &mut [T],
) -> usize {
    let step = default_step::<T>();
    let excess = |b: T, n: T| Tolerance::BOOK.excess(b.to_f64(), n.to_f64());
    let mut count = 0;
    for (i, n) in numeric.iter_mut().enumerate() {
        let b = net.grads()[i];
        if excess(b, *n) <= 0.0 {
            continue;
        }
        count += 1;
        for shrink in RETAKE_STEPS {
            let h = step / T::from_f64(shrink);
            let again = net.numerical_partial(mm, input, target, decay, h, i);
            if excess(b, again) < excess(b, *n) {
                *n = again;
            }
        }
    }
    count
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::{Init, PlanConfig, Shape, Spec, Training};
    use manabi_matmul::Naive;
    use manabi_tensor::Rng;
    use std::{format, string::ToString, vec, vec::Vec};

    /// The book's 784-50-10 on 3 image-like rows (a third of the pixels zero), in f64.
    fn book_check() -> (Plan, Vec<f64>, Vec<f64>, GradCheck) {
        const LAYERS: [Spec; 3] = [Spec::Affine(50), Spec::Relu, Spec::Affine(10)];
        let plan = Plan::new(&PlanConfig {
            input: Shape::flat(784),
            layers: &LAYERS,
            batch: 3,
            eval_batch: 3,
            training: Training::Backprop { optimizer_slots: 0 },
        })
        .unwrap();
        let mut arena = vec![0.0f64; plan.total()];
        let mut net = Network::new(&plan, &mut arena).unwrap();
        let mut rng = Rng::new(11);
        net.init(Init::Book, &mut rng);
        let x: Vec<f64> = (0..3 * 784)
            .map(|i| if i % 3 == 0 { 0.0 } else { rng.uniform() })
            .collect();
        let mut numeric = vec![0.0; plan.param_len()];
        let labels = [3, 1, 4];
        let report = gradcheck(
            &mut net,
            &Naive,
            Input::Dense(&x),
            Target::Labels(&labels),
            0.0,
            &mut numeric,
        )
        .unwrap();
        let backprop = net.grads().to_vec();
        (plan, backprop, numeric, report)
    }

    #[test]
    fn one_wrong_element_of_w1_fails_the_check_though_every_mean_passes() {
        let (plan, mut backprop, numeric, report) = book_check();
        assert_eq!(report.verdict(), Ok(()));
        // Far inside the floor: a correct backward leaves rounding only.
        assert!(report.max_abs() < 1e-9, "{:?}", report.tensors());
        // W1[100, 7], wrong by 3.5e-3: W1's mean |diff| grows by 3.5e-3 / 39,200 = 8.9e-8,
        // under the 1e-7 the mean-only gate accepted.
        backprop[100 * 50 + 7] += 3.5e-3;
        let broken = GradCheck::compare(&plan, &backprop, &numeric, report.loss, Tolerance::BOOK);
        assert!(broken.tensors().iter().all(|d| d.mean_abs < 1e-7));
        let mismatch = broken.verdict().unwrap_err();
        assert_eq!(mismatch.name.to_string(), "W1");
        assert_eq!(mismatch.flat, 100 * 50 + 7);
        assert_eq!(mismatch.index[..2], [100, 7]);
        let text = format!("{mismatch}");
        assert!(text.starts_with("W1[100, 7]: backprop "), "{text}");
        assert!(
            text.contains("|diff| 3.500e-3 exceeds 1.0e-7 + 1.0e-5·"),
            "{text}"
        );
    }

    #[test]
    fn a_nan_and_a_wrong_bias_are_caught_and_the_worst_is_named() {
        let (plan, mut backprop, numeric, report) = book_check();
        // b2[7] (about 0.1, so 1.1e-6 is allowed) off by 5e-6; then a NaN in W2, which is
        // infinitely far out.
        backprop[plan.param_len() - 3] += 5e-6;
        let broken = GradCheck::compare(&plan, &backprop, &numeric, report.loss, Tolerance::BOOK);
        let mismatch = broken.verdict().unwrap_err();
        assert_eq!(mismatch.name.to_string(), "b2");
        assert_eq!(mismatch.index[0], 7);
        backprop[784 * 50 + 50 + 3] = f64::NAN;
        let broken = GradCheck::compare(&plan, &backprop, &numeric, report.loss, Tolerance::BOOK);
        assert_eq!(broken.verdict().unwrap_err().name.to_string(), "W2");
    }

    /// 2 → affine 2 → ReLU → affine 2 on one row whose first hidden unit's input is `z0`
    /// (its bias; the input feeding it is 0): the gradient check of that point.
    fn near_a_kink(z0: f64) -> GradCheck {
        const LAYERS: [Spec; 3] = [Spec::Affine(2), Spec::Relu, Spec::Affine(2)];
        let plan = Plan::new(&PlanConfig {
            input: Shape::flat(2),
            layers: &LAYERS,
            batch: 1,
            eval_batch: 1,
            training: Training::Backprop { optimizer_slots: 0 },
        })
        .unwrap();
        let mut arena = vec![0.0f64; plan.total()];
        let mut net = Network::new(&plan, &mut arena).unwrap();
        // W1 = I, b1 = [z0, 0.5]; W2 = [[1, -1], [0.5, 2]], b2 = [0.1, -0.1].
        let p = [1.0, 0.0, 0.0, 1.0, z0, 0.5, 1.0, -1.0, 0.5, 2.0, 0.1, -0.1];
        net.params_mut().copy_from_slice(&p);
        let mut numeric = vec![0.0; plan.param_len()];
        let x = [0.0, 0.3];
        gradcheck(
            &mut net,
            &Naive,
            Input::Dense(&x),
            Target::Labels(&[0]),
            0.0,
            &mut numeric,
        )
        .unwrap()
    }

    #[test]
    fn a_kink_within_the_step_is_taken_again_and_one_on_the_point_still_fails() {
        // 2e-6 from ReLU's kink, inside the step of about 6e-6: the first central difference
        // of b1[0] reaches over it, the one a tenth as wide does not.
        let report = near_a_kink(2e-6);
        assert_eq!(report.retaken, 1);
        assert_eq!(report.verdict(), Ok(()));
        assert!(report.max_abs() < 1e-9, "{:?}", report.tensors());
        // Far from it, nothing is taken again.
        assert_eq!(near_a_kink(0.25).retaken, 0);
        // On it, every step straddles the kink, for b1[0] and for W1[1, 0] (the input 0.3 to
        // the unit): half the slope against backprop's none.
        let report = near_a_kink(0.0);
        assert_eq!(report.retaken, 2);
        let mismatch = report.verdict().unwrap_err();
        assert_eq!((mismatch.name.to_string(), mismatch.flat), ("b1".into(), 0));
        assert_eq!(mismatch.backprop, 0.0);
        assert!(mismatch.numerical.abs() > 0.1, "{mismatch}");
    }

    #[test]
    fn the_tolerance_is_absolute_below_the_floor_and_relative_above() {
        let t = Tolerance::BOOK;
        assert!(t.excess(0.0, 0.9e-7) < 0.0);
        assert!(t.excess(0.0, 1.1e-7) > 0.0);
        // At magnitude 1 the relative part allows 1e-5.
        assert!(t.excess(1.0, 1.0 + 0.9e-5) < 0.0);
        assert!(t.excess(1.0, 1.0 + 1.2e-5) > 0.0);
        assert_eq!(t.excess(f64::NAN, 0.0), f64::INFINITY);
    }
}
