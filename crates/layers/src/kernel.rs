//! The two traits every layer implements, built in or defined outside this crate: [`Dense`] (input and output apart) and [`Pointwise`] (one buffer, value by value).
//!
//! A layer's file holds its passes as one of these traits, its sizes as a `const fn` (the
//! plan is `const`, trait methods are not), and, for built-in layers, its text form. The
//! network calls the passes through the layer list (`layer_list!` in `lib.rs`); which trait a
//! layer implements decides how its buffers are handed over, so a layer can never be given a
//! buffer layout it has no code for.

use crate::plan::{Region, Shape, TensorInfo, TensorName};
use crate::{Init, Mode};
use manabi_matmul::Gemm;
use manabi_tensor::{Real, Rng, Span};

/// The most named tensors (parameters and statistics together) one layer may have: a
/// [`GradCheck`](crate::GradCheck) holds a report for each.
pub const MAX_TENSORS: usize = 4;

/// One sample's shape going into a layer and coming out of it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Shapes {
    /// The input's.
    pub input: Shape,
    /// The output's.
    pub output: Shape,
}

/// What a layer needs in the arena, for one sample shape: the plan lays these out.
///
/// Built-in layers return it from an inherent `const fn sizes(&self, input: Shape)`, which the
/// layer list calls, so that `Plan::new` stays `const`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizes {
    /// One sample's output shape.
    pub output: Shape,
    /// Learned parameters (and as many gradients and optimizer state values).
    pub params: usize,
    /// Running statistics: saved with the model, never touched by an optimizer.
    pub stats: usize,
    /// Values a training forward keeps for backward, per sample of the batch.
    pub cache_per_sample: usize,
    /// Values a training forward keeps for backward, once per batch.
    pub cache_fixed: usize,
    /// Working memory for any of its passes, shared with every other layer.
    pub scratch: usize,
    /// More working memory for a training backward that computes its input's gradient.
    pub scratch_dx: usize,
    /// Whether backward reads the layer's own output, so that the next layer must not
    /// overwrite it.
    pub reads_output: bool,
    /// Whether a training forward draws from the network's generator (Dropout's masks).
    pub draws: bool,
}

impl Sizes {
    /// A layer with output shape `output` that needs nothing else.
    pub const fn output(output: Shape) -> Self {
        Self {
            output,
            params: 0,
            stats: 0,
            cache_per_sample: 0,
            cache_fixed: 0,
            scratch: 0,
            scratch_dx: 0,
            reads_output: false,
            draws: false,
        }
    }
}

/// What a [`Dense`] layer's backward pass does with its parameter gradient.
#[derive(Debug)]
pub enum ParamGrad<'g, T> {
    /// Write the gradient here, laid out like the parameters (never add to it); the network
    /// then adds `λ·W` over [`Dense::decayed`] for weight decay.
    Write(&'g mut [T]),
    /// Plain SGD inside the pass, for a plan with no gradient buffer: compute the input's
    /// gradient with the old parameters, then `p ← p − lr·(g + decay·W)`, where `decay`
    /// reaches only the [`Dense::decayed`] span.
    Sgd {
        /// The learning rate.
        lr: T,
        /// The weight decay `λ`.
        decay: T,
    },
}

/// What a [`Dense`] layer's forward pass reads and writes.
#[derive(Debug)]
pub struct Forward<'a, T> {
    /// Training or evaluation.
    pub mode: Mode,
    /// The input rows, `rows × shapes.input.len()` values.
    pub x: &'a [T],
    /// The output rows to write (never add to), `rows × shapes.output.len()` values.
    pub y: &'a mut [T],
    /// The layer's parameters.
    pub p: &'a [T],
    /// Its running statistics (a training pass may update them).
    pub stats: &'a mut [T],
    /// What a training pass keeps for backward; empty in evaluation.
    pub cache: &'a mut [T],
    /// Working memory; its contents do not outlive the pass.
    pub scratch: &'a mut [T],
    /// The network's generator (a training pass's random draws).
    pub rng: &'a mut Rng,
    /// One sample's shapes.
    pub shapes: Shapes,
}

/// What a [`Dense`] layer's backward pass reads and writes, after a training forward.
#[derive(Debug)]
pub struct Backward<'a, T> {
    /// The forward pass's input.
    pub x: &'a [T],
    /// The forward pass's output.
    pub y: &'a [T],
    /// The gradient of the loss with respect to `y`.
    pub dy: &'a [T],
    /// Where to write (never add to) the gradient with respect to `x`; `None` for a network's
    /// first layer, whose input gradient nothing reads.
    pub dx: Option<&'a mut [T]>,
    /// The parameters: read, and updated in place under [`ParamGrad::Sgd`].
    pub p: &'a mut [T],
    /// What to do with the parameter gradient.
    pub grad: ParamGrad<'a, T>,
    /// What the forward pass kept.
    pub cache: &'a mut [T],
    /// Working memory; its contents do not outlive the pass.
    pub scratch: &'a mut [T],
    /// One sample's shapes.
    pub shapes: Shapes,
}

/// A layer whose output has a buffer of its own: everything that is not [`Pointwise`]
/// (Affine, Conv2d, BatchNorm, the pooling layers).
///
/// Every method is required: a layer without parameters says so (`init` does nothing,
/// `tensor` is `None`, `decayed` is empty), so nothing is left out by accident.
pub trait Dense {
    /// Writes `f.y` from `f.x`.
    fn forward<T: Real>(&self, mm: &impl Gemm<T>, f: Forward<'_, T>);

    /// Writes `b.dx` (if asked for) and the parameter gradient from `b.dy`.
    fn backward<T: Real>(&self, mm: &impl Gemm<T>, b: Backward<'_, T>);

    /// Sets the parameters and statistics to their starting values.
    fn init<T: Real>(
        &self,
        shapes: Shapes,
        init: Init,
        rng: &mut Rng,
        p: &mut [T],
        stats: &mut [T],
    );

    /// Named tensor `k` (from 0, contiguous, fewer than [`MAX_TENSORS`]), with its span within
    /// the layer's parameters or statistics; the plan numbers it ([`TensorInfo::new`] leaves
    /// the number at 0). Layers whose first tensors share a prefix are numbered together (the
    /// book's `W1` is a convolution's, `W2` an affine layer's).
    fn tensor(&self, shapes: Shapes, k: usize) -> Option<TensorInfo>;

    /// The parameters weight decay reaches (the book's: weights, not biases), as a span of
    /// the layer's parameters; empty for none. The penalty `½·λ·Σ W²` and, with
    /// [`ParamGrad::Write`], the gradient's `λ·W` follow from it.
    fn decayed(&self, shapes: Shapes) -> Span;
}

/// The gradient a [`Pointwise`] layer's backward pass turns from its output's into its
/// input's.
#[derive(Debug)]
pub enum Grad<'a, T> {
    /// One buffer: the output's gradient on entry, the input's on return (the layer works in
    /// place).
    InPlace(&'a mut [T]),
    /// The output's gradient to read, and the input's to write.
    Apart(&'a [T], &'a mut [T]),
}

impl<T: Real> Grad<'_, T> {
    /// `dx[i] = f(with[i], dy[i])`, in place or apart.
    pub fn map(self, with: &[T], f: impl Fn(T, T) -> T) {
        match self {
            Grad::InPlace(d) => {
                for (d, &w) in d.iter_mut().zip(with) {
                    *d = f(w, *d);
                }
            }
            Grad::Apart(dy, dx) => {
                for ((dx, &dy), &w) in dx.iter_mut().zip(dy).zip(with) {
                    *dx = f(w, dy);
                }
            }
        }
    }
}

/// A layer that maps each value on its own and keeps the shape, with no parameters or
/// statistics (ReLU, Sigmoid, Dropout): it works on one buffer, which holds its input on
/// entry (copied there first when the plan gives it an output of its own, which changes no
/// value) and its output on return.
pub trait Pointwise {
    /// `v ← f(v)`; `cache` is planned for training passes and empty in evaluation.
    fn forward<T: Real>(&self, mode: Mode, rng: &mut Rng, v: &mut [T], cache: &mut [T]);

    /// The input's gradient from the output's, given the output `y` and the cache.
    fn backward<T: Real>(&self, y: &[T], cache: &[T], g: Grad<'_, T>);
}

impl TensorInfo {
    /// Tensor `prefix` of a layer, at `start` within its `region` and of shape `dims` (at most
    /// four), numbered 0 until the plan numbers it.
    ///
    /// # Panics
    /// If `dims` has more than four dimensions.
    pub fn new(prefix: &'static str, region: Region, start: usize, dims: &[usize]) -> Self {
        let mut shape = [0; 4];
        shape[..dims.len()].copy_from_slice(dims);
        TensorInfo {
            name: TensorName { prefix, number: 0 },
            region,
            span: Span {
                start,
                len: dims.iter().product(),
            },
            shape,
            rank: dims.len(),
        }
    }
}

/// `½·Σ W²` over `w`, the weight-decay penalty before its `λ`.
pub(crate) fn half_sum_of_squares<T: Real>(w: &[T]) -> T {
    w.iter().fold(T::ZERO, |acc, &w| acc + w * w) / T::TWO
}

/// `g += decay·w` over `span` of `p` and `g` (nothing for a zero decay).
pub(crate) fn add_decay<T: Real>(decay: T, span: Span, p: &[T], g: &mut [T]) {
    if decay == T::ZERO || span.len == 0 {
        return;
    }
    let range = span.start..span.end();
    for (g, &w) in g[range.clone()].iter_mut().zip(&p[range]) {
        *g += decay * w;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grad_maps_alike_in_place_and_apart() {
        let y = [1.0, -2.0, 3.0];
        let dy = [0.5, 0.25, -1.0];
        let mut d = dy;
        Grad::InPlace(&mut d).map(&y, |y, g| y * g);
        let mut dx = [f64::NAN; 3];
        Grad::Apart(&dy, &mut dx).map(&y, |y, g| y * g);
        assert_eq!(d, [0.5, -0.5, -3.0]);
        assert_eq!(dx, d);
    }

    #[test]
    fn decay_and_penalty_cover_only_their_span() {
        let p = [1.0, 2.0, 3.0, 4.0];
        let mut g = [0.0; 4];
        add_decay(0.5, Span { start: 1, len: 2 }, &p, &mut g);
        assert_eq!(g, [0.0, 1.0, 1.5, 0.0]);
        assert_eq!(half_sum_of_squares(&p[1..3]), 6.5);
        let info = TensorInfo::new("W", Region::Params, 3, &[2, 5]);
        assert_eq!(
            (info.span, info.dims()),
            (Span { start: 3, len: 10 }, &[2, 5][..])
        );
    }
}
