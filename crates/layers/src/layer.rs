//! The layer list: what a user asks for ([`Spec`]), what the plan resolves it to ([`Layer`]), and the one dispatch point per pass.
//!
//! Adding a layer is one file with its shape rule, sizes, init, `forward` and `backward` (and
//! a gradient check), plus one arm in each `match` below; the plan and the network do not
//! change.

use crate::plan::{Region, Shape, TensorInfo, TensorName, tri};
use crate::{Affine, BatchNorm, Conv2d, Dropout, Init, MaxPool2d, Relu, Sigmoid};
use manabi_matmul::{Csr, Gemm};
use manabi_tensor::{Error, Real, Result, Rng, Span};

/// One layer as a user writes it: its kind and the sizes only it knows (an Affine layer's
/// output width, a Dropout ratio); the input size comes from the layer before.
///
/// Text form (`Display` and [`Spec::parse`]): `affine:100`, `relu`, `sigmoid`, `batchnorm`,
/// `dropout:0.5`, `conv:30@5x5` (30 filters of 5×5; `:s2` sets the stride, `:p1` the
/// padding: `conv:16@3x3:p1`), `maxpool:2x2` (stride the window's size unless `:sN`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Spec {
    /// [`Affine`] with this many outputs.
    Affine(usize),
    /// [`Relu`].
    Relu,
    /// [`Sigmoid`].
    Sigmoid,
    /// [`BatchNorm`] over every activation of its input.
    BatchNorm,
    /// [`Dropout`] with this ratio of units dropped in training.
    Dropout(f64),
    /// [`Conv2d`] on an image input.
    Conv2d {
        /// Output channels.
        filters: usize,
        /// Kernel rows.
        kh: usize,
        /// Kernel columns.
        kw: usize,
        /// Step between windows.
        stride: usize,
        /// Zeros on every side.
        pad: usize,
    },
    /// [`MaxPool2d`] on an image input.
    MaxPool2d {
        /// Window rows.
        kh: usize,
        /// Window columns.
        kw: usize,
        /// Step between windows.
        stride: usize,
    },
}

impl Spec {
    /// The layer this spec makes on an input of shape `input`, and its output shape.
    ///
    /// # Errors
    /// As each layer's `new`.
    pub const fn build(self, input: Shape) -> Result<(Layer, Shape)> {
        let layer = match self {
            Spec::Affine(d_out) => Layer::Affine(tri!(Affine::new(input, d_out))),
            Spec::Relu => Layer::Relu(Relu),
            Spec::Sigmoid => Layer::Sigmoid(Sigmoid),
            Spec::BatchNorm => Layer::BatchNorm(tri!(BatchNorm::new(input))),
            Spec::Dropout(ratio) => Layer::Dropout(tri!(Dropout::new(input, ratio))),
            Spec::Conv2d {
                filters,
                kh,
                kw,
                stride,
                pad,
            } => Layer::Conv2d(tri!(Conv2d::new(input, filters, kh, kw, stride, pad))),
            Spec::MaxPool2d { kh, kw, stride } => {
                Layer::MaxPool2d(tri!(MaxPool2d::new(input, kh, kw, stride)))
            }
        };
        Ok((layer, layer.out_shape(input)))
    }

    /// The book's `MultiLayerNet` as a layer list: for output widths `[h₁, …, hₖ, classes]`,
    /// `affine:h₁, activation, …, affine:hₖ, activation, affine:classes`.
    pub fn mlp(widths: &[usize], activation: Spec) -> impl Iterator<Item = Spec> + '_ {
        let last = widths.len().saturating_sub(1);
        widths.iter().enumerate().flat_map(move |(i, &w)| {
            let act = (i < last).then_some(activation);
            core::iter::once(Spec::Affine(w)).chain(act)
        })
    }

    /// Reads the text form: `affine:N`, `relu`, `sigmoid`, `batchnorm`, `dropout:R`,
    /// `conv:F@KHxKW[:sS][:pP]`, `maxpool:KHxKW[:sS]`.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] naming what was expected.
    pub fn parse(text: &str) -> Result<Self> {
        let (kind, arg) = match text.split_once(':') {
            Some((k, a)) => (k, Some(a)),
            None => (text, None),
        };
        let spec = match (kind, arg) {
            ("conv", Some(a)) => parse_conv(a).ok_or(Error::InvalidValue {
                what: "conv needs filters@size and optional :sN (stride), :pN (padding), as in conv:30@5x5 or conv:16@3x3:p1",
            })?,
            ("maxpool", Some(a)) => parse_pool(a).ok_or(Error::InvalidValue {
                what: "maxpool needs a window and an optional :sN (stride), as in maxpool:2x2",
            })?,
            ("conv" | "maxpool", None) => {
                return Err(Error::InvalidValue {
                    what: "conv and maxpool need their sizes, as in conv:30@5x5 and maxpool:2x2",
                });
            }
            ("affine", Some(a)) => match a.parse::<usize>() {
                Ok(n) if n > 0 => Spec::Affine(n),
                _ => {
                    return Err(Error::InvalidValue {
                        what: "affine needs a positive output width, as in affine:100",
                    });
                }
            },
            ("affine", None) => {
                return Err(Error::InvalidValue {
                    what: "affine needs its output width, as in affine:100",
                });
            }
            ("dropout", Some(a)) => match a.parse::<f64>() {
                Ok(r) if (0.0..1.0).contains(&r) => Spec::Dropout(r),
                _ => {
                    return Err(Error::InvalidValue {
                        what: "dropout needs a ratio in [0, 1), as in dropout:0.5",
                    });
                }
            },
            ("dropout", None) => {
                return Err(Error::InvalidValue {
                    what: "dropout needs its ratio, as in dropout:0.5",
                });
            }
            ("relu", None) => Spec::Relu,
            ("sigmoid", None) => Spec::Sigmoid,
            ("batchnorm", None) => Spec::BatchNorm,
            ("relu" | "sigmoid" | "batchnorm", Some(_)) => {
                return Err(Error::InvalidValue {
                    what: "relu, sigmoid and batchnorm take no argument",
                });
            }
            _ => {
                return Err(Error::InvalidValue {
                    what: "unknown layer: expected affine:N, relu, sigmoid, batchnorm, dropout:R, conv:F@KxK or maxpool:KxK",
                });
            }
        };
        Ok(spec)
    }
}

impl core::fmt::Display for Spec {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Spec::Affine(n) => write!(f, "affine:{n}"),
            Spec::Relu => f.write_str("relu"),
            Spec::Sigmoid => f.write_str("sigmoid"),
            Spec::BatchNorm => f.write_str("batchnorm"),
            // `Display` of an f64 is the shortest text that parses back to the same value.
            Spec::Dropout(r) => write!(f, "dropout:{r}"),
            Spec::Conv2d {
                filters,
                kh,
                kw,
                stride,
                pad,
            } => {
                write!(f, "conv:{filters}@{kh}x{kw}")?;
                if *stride != 1 {
                    write!(f, ":s{stride}")?;
                }
                if *pad != 0 {
                    write!(f, ":p{pad}")?;
                }
                Ok(())
            }
            Spec::MaxPool2d { kh, kw, stride } => {
                write!(f, "maxpool:{kh}x{kw}")?;
                if *stride != *kh || *kh != *kw {
                    write!(f, ":s{stride}")?;
                }
                Ok(())
            }
        }
    }
}

/// A positive whole number.
fn positive(text: &str) -> Option<usize> {
    text.parse::<usize>().ok().filter(|&n| n > 0)
}

/// `KHxKW` (or a single `K` for a square window).
fn window(text: &str) -> Option<(usize, usize)> {
    match text.split_once('x') {
        Some((h, w)) => Some((positive(h)?, positive(w)?)),
        None => positive(text).map(|k| (k, k)),
    }
}

/// `F@KHxKW[:sS][:pP]`.
fn parse_conv(arg: &str) -> Option<Spec> {
    let mut parts = arg.split(':');
    let (filters, size) = parts.next()?.split_once('@')?;
    let (kh, kw) = window(size)?;
    let (mut stride, mut pad) = (1, 0);
    for part in parts {
        match part.split_at_checked(1)? {
            ("s", n) => stride = positive(n)?,
            ("p", n) => pad = n.parse().ok()?,
            _ => return None,
        }
    }
    Some(Spec::Conv2d {
        filters: positive(filters)?,
        kh,
        kw,
        stride,
        pad,
    })
}

/// `KHxKW[:sS]`; the stride is the window's height unless given.
fn parse_pool(arg: &str) -> Option<Spec> {
    let (size, stride) = match arg.split_once(':') {
        Some((size, s)) => (size, Some(s.strip_prefix('s').and_then(positive)?)),
        None => (arg, None),
    };
    let (kh, kw) = window(size)?;
    Some(Spec::MaxPool2d {
        kh,
        kw,
        stride: stride.unwrap_or(kh),
    })
}

/// A layer with its sizes resolved by the plan.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Layer {
    /// Fully connected.
    Affine(Affine),
    /// Rectified linear unit.
    Relu(Relu),
    /// Logistic sigmoid.
    Sigmoid(Sigmoid),
    /// Batch normalisation.
    BatchNorm(BatchNorm),
    /// Dropout (not inverted, as in the book).
    Dropout(Dropout),
    /// 2-D convolution.
    Conv2d(Conv2d),
    /// Max pooling.
    MaxPool2d(MaxPool2d),
}

/// Whether a forward pass learns from its batch or evaluates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Training: BatchNorm normalises with the batch's statistics (and updates its running
    /// ones), Dropout draws a mask.
    Train,
    /// Evaluation: BatchNorm uses its running statistics, Dropout scales by `1 − ratio`.
    Eval,
}

/// Where a layer's input is during a pass.
#[derive(Clone, Copy)]
pub(crate) enum Src<'x, T> {
    /// Dense rows.
    Dense(&'x [T]),
    /// Compressed rows and, if built, their transpose (first Affine layer only).
    Sparse(Csr<'x, T>, Option<Csr<'x, T>>),
    /// In the output buffer: the layer works in place.
    InPlace,
}

/// What a backward pass does with a layer's parameter gradient.
pub(crate) enum ParamGrad<'g, T> {
    /// Write it (never add to it), plus `decay·W` for Affine weights.
    Write(&'g mut [T], T),
    /// Apply `p ← p − lr·(g + decay·W)` inside the pass (decay on Affine weights only).
    Sgd(T, T),
}

/// Panics on a pass the plan never builds (a bug in the plan, not a user error).
#[cold]
fn unplanned(what: &str) -> ! {
    panic!("layer pass not planned: {what}")
}

impl Layer {
    /// The output shape for an input of shape `input`.
    pub const fn out_shape(&self, input: Shape) -> Shape {
        match self {
            Layer::Affine(a) => Shape::flat(a.d_out),
            Layer::Conv2d(c) => c.out_shape(),
            Layer::MaxPool2d(m) => m.out_shape(),
            Layer::Relu(_) | Layer::Sigmoid(_) | Layer::BatchNorm(_) | Layer::Dropout(_) => input,
        }
    }

    /// Learned parameters.
    pub const fn param_len(&self) -> usize {
        match self {
            Layer::Affine(a) => a.param_len(),
            Layer::BatchNorm(b) => b.param_len(),
            Layer::Conv2d(c) => c.param_len(),
            Layer::Relu(_) | Layer::Sigmoid(_) | Layer::Dropout(_) | Layer::MaxPool2d(_) => 0,
        }
    }

    /// Running statistics (saved with the model, not learned by gradient).
    pub const fn stats_len(&self) -> usize {
        match self {
            Layer::BatchNorm(b) => b.stats_len(),
            _ => 0,
        }
    }

    /// Values kept from forward for backward, for a batch of `batch` rows.
    ///
    /// # Errors
    /// [`Error::Overflow`].
    pub const fn cache_len(&self, batch: usize) -> Result<usize> {
        match self {
            Layer::BatchNorm(b) => b.cache_len(batch),
            Layer::Dropout(d) => d.cache_len(batch),
            Layer::MaxPool2d(m) => m.cache_len(batch),
            Layer::Affine(_) | Layer::Relu(_) | Layer::Sigmoid(_) | Layer::Conv2d(_) => Ok(0),
        }
    }

    /// Working memory for one pass (shared by all layers: one pass runs at a time): a
    /// convolution's `col` (and `dcol` when training).
    pub const fn scratch_len(&self, trains: bool) -> usize {
        match self {
            Layer::Conv2d(c) => c.scratch_len(trains),
            _ => 0,
        }
    }

    /// Whether the layer can overwrite its input with its output (element-wise layers).
    pub const fn works_in_place(&self) -> bool {
        matches!(self, Layer::Relu(_) | Layer::Sigmoid(_) | Layer::Dropout(_))
    }

    /// Whether its backward pass reads its own output (so the next layer must not overwrite it).
    pub const fn reads_output(&self) -> bool {
        matches!(self, Layer::Relu(_) | Layer::Sigmoid(_))
    }

    /// Its named tensors.
    pub const fn tensor_count(&self) -> usize {
        match self {
            Layer::Affine(_) | Layer::Conv2d(_) => 2,
            Layer::BatchNorm(_) => 4,
            _ => 0,
        }
    }

    /// Layers numbered together in tensor names: Affine and Conv2d share `W`/`b` (the book's
    /// SimpleConvNet has `W1` for its convolution, `W2`, `W3` for its affine layers).
    pub(crate) const fn tensor_family(&self) -> u8 {
        match self {
            Layer::Affine(_) | Layer::Conv2d(_) => 0,
            Layer::BatchNorm(_) => 1,
            _ => 2,
        }
    }

    /// Tensor `k` of this layer, the `number`-th of its kind, with its span relative to the
    /// layer's own parameters or statistics.
    pub(crate) fn tensor(&self, k: usize, number: usize) -> Option<TensorInfo> {
        let (prefix, region, start, dims): (_, _, _, &[usize]) = match (self, k) {
            (Layer::Affine(a), 0) => ("W", Region::Params, 0, &[a.d_in, a.d_out]),
            (Layer::Affine(a), 1) => ("b", Region::Params, a.d_in * a.d_out, &[a.d_out]),
            (Layer::Conv2d(c), 0) => ("W", Region::Params, 0, &[c.filters, c.c, c.kh, c.kw]),
            (Layer::Conv2d(c), 1) => ("b", Region::Params, c.filters * c.patch(), &[c.filters]),
            (Layer::BatchNorm(b), 0) => ("gamma", Region::Params, 0, &[b.d]),
            (Layer::BatchNorm(b), 1) => ("beta", Region::Params, b.d, &[b.d]),
            (Layer::BatchNorm(b), 2) => ("running_mean", Region::Stats, 0, &[b.d]),
            (Layer::BatchNorm(b), 3) => ("running_var", Region::Stats, b.d, &[b.d]),
            _ => return None,
        };
        let mut shape = [0; 4];
        shape[..dims.len()].copy_from_slice(dims);
        Some(TensorInfo {
            name: TensorName { prefix, number },
            region,
            span: Span {
                start,
                len: dims.iter().product(),
            },
            shape,
            rank: dims.len(),
        })
    }

    /// Sets the parameters and statistics to their starting values.
    pub(crate) fn init<T: Real>(&self, init: Init, rng: &mut Rng, p: &mut [T], stats: &mut [T]) {
        match self {
            Layer::Affine(a) => a.init(init, rng, p),
            Layer::BatchNorm(b) => b.init(p, stats),
            Layer::Conv2d(c) => c.init(init, rng, p),
            Layer::Relu(_) | Layer::Sigmoid(_) | Layer::Dropout(_) | Layer::MaxPool2d(_) => {}
        }
    }

    /// Forward over `x` (or, in place, over `y`) into `y`; `cache` is planned for training
    /// passes and empty otherwise; `scratch` holds at least [`Layer::scratch_len`].
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn forward<T: Real>(
        &self,
        mm: &impl Gemm<T>,
        mode: Mode,
        rng: &mut Rng,
        p: &[T],
        stats: &mut [T],
        x: Src<'_, T>,
        y: &mut [T],
        cache: &mut [T],
        scratch: &mut [T],
    ) {
        match (self, x) {
            (Layer::Affine(a), Src::Dense(x)) => a.forward(mm, p, x, y),
            (Layer::Affine(a), Src::Sparse(x, _)) => a.forward_sparse(p, x, y),
            (Layer::Relu(r), Src::Dense(x)) => r.forward(x, y),
            (Layer::Relu(r), Src::InPlace) => r.forward_in_place(y),
            (Layer::Sigmoid(s), Src::Dense(x)) => s.forward(x, y),
            (Layer::Sigmoid(s), Src::InPlace) => s.forward_in_place(y),
            (Layer::BatchNorm(b), Src::Dense(x)) => b.forward(mode, p, stats, x, y, cache),
            (Layer::Dropout(d), Src::Dense(x)) => {
                y.copy_from_slice(x);
                d.forward_in_place(mode, rng, y, cache);
            }
            (Layer::Dropout(d), Src::InPlace) => d.forward_in_place(mode, rng, y, cache),
            (Layer::Conv2d(c), Src::Dense(x)) => c.forward(mm, p, x, y, scratch),
            (Layer::MaxPool2d(m), Src::Dense(x)) => m.forward(mode, x, y, cache),
            _ => unplanned("forward"),
        }
    }

    /// Backward: turns `dy` (the gradient of this layer's output `y`) into `dx` (skipped when
    /// `None`, for the first layer) and the parameter gradient; for an in-place layer `dy`
    /// is `None` and `dx` holds the output's gradient on entry.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn backward<T: Real>(
        &self,
        mm: &impl Gemm<T>,
        p: &mut [T],
        x: Src<'_, T>,
        y: &[T],
        cache: &mut [T],
        dy: Option<&[T]>,
        dx: Option<&mut [T]>,
        grad: ParamGrad<'_, T>,
        scratch: &mut [T],
    ) {
        match (self, x, dy, grad) {
            (Layer::Affine(a), Src::Dense(x), Some(dy), ParamGrad::Write(dp, decay)) => {
                a.backward(mm, p, x, dy, dx, dp);
                a.add_decay(decay, p, dp);
            }
            (Layer::Affine(a), Src::Dense(x), Some(dy), ParamGrad::Sgd(lr, decay)) => {
                a.backward_sgd(mm, lr, decay, p, x, dy, dx);
            }
            (Layer::Affine(a), Src::Sparse(x, xt), Some(dy), ParamGrad::Write(dp, decay)) => {
                a.backward_sparse(x, xt, dy, dp);
                a.add_decay(decay, p, dp);
            }
            (Layer::Affine(a), Src::Sparse(x, xt), Some(dy), ParamGrad::Sgd(lr, decay)) => {
                a.backward_sgd_sparse(lr, decay, p, x, xt, dy);
            }
            (Layer::BatchNorm(b), Src::Dense(_), Some(dy), ParamGrad::Write(dp, _)) => {
                b.backward(p, cache, dy, dx, dp);
            }
            (Layer::BatchNorm(b), Src::Dense(_), Some(dy), ParamGrad::Sgd(lr, _)) => {
                b.backward_sgd(lr, p, cache, dy, dx);
            }
            (Layer::Conv2d(c), Src::Dense(x), Some(dy), ParamGrad::Write(dp, decay)) => {
                c.backward(mm, p, x, dy, dx, dp, scratch);
                c.add_decay(decay, p, dp);
            }
            (Layer::Conv2d(c), Src::Dense(x), Some(dy), ParamGrad::Sgd(lr, decay)) => {
                c.backward_sgd(mm, lr, decay, p, x, dy, dx, scratch);
            }
            (Layer::MaxPool2d(m), _, Some(dy), _) => {
                if let Some(dx) = dx {
                    m.backward(cache, dy, dx)
                }
            }
            (Layer::Relu(r), _, Some(dy), _) => {
                if let Some(dx) = dx {
                    r.backward(y, dy, dx)
                }
            }
            (Layer::Relu(r), Src::InPlace, None, _) => match dx {
                Some(d) => r.backward_in_place(y, d),
                None => unplanned("in-place backward without a gradient"),
            },
            (Layer::Sigmoid(s), _, Some(dy), _) => {
                if let Some(dx) = dx {
                    s.backward(y, dy, dx)
                }
            }
            (Layer::Sigmoid(s), Src::InPlace, None, _) => match dx {
                Some(d) => s.backward_in_place(y, d),
                None => unplanned("in-place backward without a gradient"),
            },
            (Layer::Dropout(d), _, Some(dy), _) => {
                if let Some(dx) = dx {
                    d.backward(cache, dy, dx)
                }
            }
            (Layer::Dropout(d), Src::InPlace, None, _) => match dx {
                Some(g) => d.backward_in_place(cache, g),
                None => unplanned("in-place backward without a gradient"),
            },
            _ => unplanned("backward"),
        }
    }

    /// The weight penalty `½·Σ W²` of this layer (Affine and Conv2d weights; biases and
    /// BatchNorm's `γ`, `β` are not decayed, as in the book).
    pub(crate) fn weight_penalty<T: Real>(&self, p: &[T]) -> T {
        match self {
            Layer::Affine(a) => a.weight_penalty(p),
            Layer::Conv2d(c) => c.weight_penalty(p),
            _ => T::ZERO,
        }
    }
}
