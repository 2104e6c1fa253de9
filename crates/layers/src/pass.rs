//! How the network hands a layer its buffers: one module per kind of layer ([`dense`], [`pointwise`]), which the layer list names for each layer.
//!
//! A [`ForwardStep`] or [`BackwardStep`] says where a layer's values are in the arena (and
//! whether the input is the caller's rows instead); each module borrows them in the form its
//! trait takes. A dense layer's input and output are always apart (the plan puts only
//! pointwise layers in place); a pointwise layer gets one buffer, its input copied into its
//! output first when the two are apart.

use crate::kernel::{Backward, Forward, Grad, ParamGrad, Shapes, Sizes, add_decay};
use crate::{Mode, Shape};
use manabi_matmul::Gemm;
use manabi_tensor::{Error, Real, Result, Rng, Span, disjoint_mut};

/// A zero-length span at 0: a slot a pass does not use.
pub(crate) const NONE: Span = Span { start: 0, len: 0 };

/// `N` disjoint spans of `buf` in any order, all writable. Zero-length spans give empty
/// slices wherever they point.
///
/// # Panics
/// If two spans with elements overlap (a bug in the plan).
pub(crate) fn spans_mut<T, const N: usize>(buf: &mut [T], spans: [Span; N]) -> [&mut [T]; N] {
    let spans = spans.map(|s| if s.len == 0 { NONE } else { s });
    let mut order: [usize; N] = core::array::from_fn(|i| i);
    order.sort_unstable_by_key(|&i| (spans[i].start, spans[i].len));
    let parts = disjoint_mut(buf, order.map(|i| spans[i]));
    let mut out: [Option<&mut [T]>; N] = [const { None }; N];
    for (k, part) in parts.into_iter().enumerate() {
        out[order[k]] = Some(part);
    }
    out.map(|o| o.unwrap_or_default())
}

/// Where a layer's input rows are during a pass.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Rows<'x, T> {
    /// The caller's dense rows (a first layer's input, outside the arena).
    Caller(&'x [T]),
    /// A span of the arena.
    Arena(Span),
}

impl<T> Rows<'_, T> {
    /// The arena span to borrow (none for the caller's rows).
    fn span(&self) -> Span {
        match self {
            Rows::Caller(_) => NONE,
            Rows::Arena(s) => *s,
        }
    }
}

/// The input rows: the caller's, or the borrowed arena span `arena`.
fn pick<'a, T>(rows: Rows<'a, T>, arena: &'a [T]) -> &'a [T] {
    match rows {
        Rows::Caller(x) => x,
        Rows::Arena(_) => arena,
    }
}

/// Where one layer's forward pass reads and writes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ForwardStep<'x, T> {
    pub(crate) mode: Mode,
    pub(crate) x: Rows<'x, T>,
    pub(crate) y: Span,
    pub(crate) p: Span,
    pub(crate) stats: Span,
    /// Empty in evaluation.
    pub(crate) cache: Span,
    pub(crate) scratch: Span,
    pub(crate) shapes: Shapes,
}

/// What a backward pass does with a layer's parameter gradient, in arena terms.
#[derive(Clone, Copy, Debug)]
pub(crate) enum GradStep<T> {
    /// Write it into this span, then add `decay·W`.
    Write(Span, T),
    /// Fused SGD with this learning rate and decay.
    Sgd(T, T),
}

/// Where one layer's backward pass reads and writes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BackwardStep<'x, T> {
    pub(crate) x: Rows<'x, T>,
    pub(crate) y: Span,
    pub(crate) dy: Span,
    /// `None` for a first layer.
    pub(crate) dx: Option<Span>,
    pub(crate) p: Span,
    pub(crate) grad: GradStep<T>,
    pub(crate) cache: Span,
    pub(crate) scratch: Span,
    pub(crate) shapes: Shapes,
}

/// [`Dense`](crate::Dense) layers: input and output apart, parameters, statistics.
pub(crate) mod dense {
    use super::*;
    use crate::kernel::Dense;
    use crate::plan::TensorInfo;
    use crate::{Init, Shape};

    /// Never in place.
    pub(crate) const IN_PLACE: bool = false;

    /// Any sizes will do.
    pub(crate) const fn check(_: &Sizes, _: Shape) -> Result<()> {
        Ok(())
    }

    /// Borrows the step's buffers and runs `k`'s forward.
    pub(crate) fn forward<K: Dense, T: Real>(
        k: &K,
        mm: &impl Gemm<T>,
        buf: &mut [T],
        rng: &mut Rng,
        s: ForwardStep<'_, T>,
    ) {
        let [p, stats, xa, y, cache, scratch] =
            spans_mut(buf, [s.p, s.stats, s.x.span(), s.y, s.cache, s.scratch]);
        let f = Forward {
            mode: s.mode,
            x: pick(s.x, xa),
            y,
            p,
            stats,
            cache,
            scratch,
            rng,
            shapes: s.shapes,
        };
        k.forward(mm, f);
    }

    /// Borrows the step's buffers, runs `k`'s backward and, when the gradient is written,
    /// adds the weight decay to it.
    pub(crate) fn backward<K: Dense, T: Real>(
        k: &K,
        mm: &impl Gemm<T>,
        buf: &mut [T],
        s: BackwardStep<'_, T>,
    ) {
        let g_span = match s.grad {
            GradStep::Write(g, _) => g,
            GradStep::Sgd(..) => NONE,
        };
        let dx_span = s.dx.unwrap_or(NONE);
        let [p, g, xa, y, cache, dy, dx, scratch] = spans_mut(
            buf,
            [
                s.p,
                g_span,
                s.x.span(),
                s.y,
                s.cache,
                s.dy,
                dx_span,
                s.scratch,
            ],
        );
        let (grad, decay) = match s.grad {
            GradStep::Write(_, decay) => (ParamGrad::Write(&mut *g), decay),
            GradStep::Sgd(lr, decay) => (ParamGrad::Sgd { lr, decay }, T::ZERO),
        };
        let b = Backward {
            x: pick(s.x, xa),
            y,
            dy,
            dx: s.dx.map(|_| dx),
            p: &mut *p,
            grad,
            cache,
            scratch,
            shapes: s.shapes,
        };
        k.backward(mm, b);
        add_decay(decay, k.decayed(s.shapes), p, g);
    }

    /// `k`'s starting values.
    pub(crate) fn init<K: Dense, T: Real>(
        k: &K,
        shapes: Shapes,
        init: Init,
        rng: &mut Rng,
        p: &mut [T],
        stats: &mut [T],
    ) {
        k.init(shapes, init, rng, p, stats);
    }

    /// `k`'s tensor `i`.
    pub(crate) fn tensor<K: Dense>(k: &K, shapes: Shapes, i: usize) -> Option<TensorInfo> {
        k.tensor(shapes, i)
    }

    /// `k`'s decayed weights.
    pub(crate) fn decayed<K: Dense>(k: &K, shapes: Shapes) -> Span {
        k.decayed(shapes)
    }
}

/// [`Pointwise`](crate::Pointwise) layers: one buffer, no parameters or statistics.
pub(crate) mod pointwise {
    use super::*;
    use crate::kernel::Pointwise;
    use crate::plan::TensorInfo;
    use crate::{Init, Shape};

    /// In place unless the plan says otherwise.
    pub(crate) const IN_PLACE: bool = true;

    /// The shape kept, no parameters, no statistics.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] otherwise.
    pub(crate) const fn check(sizes: &Sizes, input: Shape) -> Result<()> {
        if sizes.params == 0 && sizes.stats == 0 && same_shape(sizes.output, input) {
            Ok(())
        } else {
            Err(Error::InvalidValue {
                what: "a pointwise layer keeps its input's shape and has no parameters or statistics",
            })
        }
    }

    /// Copies the input into the output unless they are one buffer, then runs `k`'s forward
    /// on it.
    pub(crate) fn forward<K: Pointwise, T: Real>(
        k: &K,
        _: &impl Gemm<T>,
        buf: &mut [T],
        rng: &mut Rng,
        s: ForwardStep<'_, T>,
    ) {
        let x = match s.x {
            Rows::Arena(x) if x == s.y => NONE,
            other => other.span(),
        };
        let [xa, v, cache] = spans_mut(buf, [x, s.y, s.cache]);
        match s.x {
            Rows::Arena(x) if x == s.y => {}
            rows => v.copy_from_slice(pick(rows, xa)),
        }
        k.forward(s.mode, rng, v, cache);
    }

    /// `k`'s backward, on one gradient buffer or two; nothing for a first layer (no input
    /// gradient is read, and there are no parameters).
    pub(crate) fn backward<K: Pointwise, T: Real>(
        k: &K,
        _: &impl Gemm<T>,
        buf: &mut [T],
        s: BackwardStep<'_, T>,
    ) {
        let Some(dx) = s.dx else { return };
        if dx == s.dy {
            let [y, cache, d] = spans_mut(buf, [s.y, s.cache, dx]);
            k.backward(y, cache, Grad::InPlace(d));
        } else {
            let [y, cache, dy, dx] = spans_mut(buf, [s.y, s.cache, s.dy, dx]);
            k.backward(y, cache, Grad::Apart(dy, dx));
        }
    }

    /// Nothing to set.
    pub(crate) fn init<K: Pointwise, T: Real>(
        _: &K,
        _: Shapes,
        _: Init,
        _: &mut Rng,
        _: &mut [T],
        _: &mut [T],
    ) {
    }

    /// No tensors.
    pub(crate) fn tensor<K: Pointwise>(_: &K, _: Shapes, _: usize) -> Option<TensorInfo> {
        None
    }

    /// No weights.
    pub(crate) fn decayed<K: Pointwise>(_: &K, _: Shapes) -> Span {
        NONE
    }
}

/// Values a layer keeps for `batch` samples.
///
/// # Errors
/// [`Error::Overflow`].
pub(crate) const fn cache_len(sizes: &Sizes, batch: usize) -> Result<usize> {
    match batch.checked_mul(sizes.cache_per_sample) {
        Some(n) => match n.checked_add(sizes.cache_fixed) {
            Some(len) => Ok(len),
            None => Err(Error::Overflow { what: "plan" }),
        },
        None => Err(Error::Overflow { what: "plan" }),
    }
}

/// Working memory of a layer's passes; `dx` for a training pass that computes the input's
/// gradient.
pub(crate) const fn scratch_len(sizes: &Sizes, dx: bool) -> usize {
    if dx {
        sizes.scratch + sizes.scratch_dx
    } else {
        sizes.scratch
    }
}

/// Whether two shapes are equal, in a `const fn`.
pub(crate) const fn same_shape(a: Shape, b: Shape) -> bool {
    a.c == b.c && a.h == b.h && a.w == b.w
}
