//! The memory plan of a [`Network`](crate::Network): a list of layers laid out in one arena, fixed before it runs.

use crate::pass::{cache_len, scratch_len};
use crate::{Affine, Layer, Relu, Shapes, Spec};
use manabi_tensor::{Error, Planner, Real, Result, Span};

/// The most layers a plan holds, so that a plan is `Copy`, `const` and needs no heap (the
/// book's DeepConvNet has 20).
pub const MAX_LAYERS: usize = 24;

/// The shape of one sample: `c` channels of `h × w` values; a flat row of `n` features is
/// `n × 1 × 1`. A sample is stored as `c·h·w` consecutive values, channel by channel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Shape {
    /// Channels (the features of a flat row).
    pub c: usize,
    /// Rows of each channel (1 for a flat row).
    pub h: usize,
    /// Columns of each channel (1 for a flat row).
    pub w: usize,
}

impl Shape {
    /// A flat row of `len` features.
    pub const fn flat(len: usize) -> Self {
        Self { c: len, h: 1, w: 1 }
    }

    /// `c` channels of `h × w`.
    pub const fn image(c: usize, h: usize, w: usize) -> Self {
        Self { c, h, w }
    }

    /// Values per sample, `c·h·w`, or `None` if that overflows.
    pub const fn checked_len(&self) -> Option<usize> {
        match self.c.checked_mul(self.h) {
            Some(ch) => ch.checked_mul(self.w),
            None => None,
        }
    }

    /// Values per sample, `c·h·w` (a plan has checked that it fits in `usize`).
    pub const fn len(&self) -> usize {
        self.c * self.h * self.w
    }

    /// Whether a sample holds no values.
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl core::fmt::Display for Shape {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.h == 1 && self.w == 1 {
            write!(f, "{}", self.c)
        } else {
            write!(f, "{}x{}x{}", self.c, self.h, self.w)
        }
    }
}

/// What the arena must hold beyond the forward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Training {
    /// Forward only, in evaluation mode: parameters, statistics and activations (a deployed
    /// model).
    Inference,
    /// Backward fused with plain SGD: no gradient buffer, each layer updates its parameters
    /// inside the backward pass ([`Update::fused_sgd`](crate::Update::fused_sgd)); for
    /// devices where the weights barely fit once.
    FusedSgd,
    /// Full gradients plus `optimizer_slots` state values per parameter (SGD 0; Momentum,
    /// Nesterov, AdaGrad, RMSprop 1; Adam 2).
    Backprop {
        /// State slots per parameter of the optimizer to be used.
        optimizer_slots: usize,
    },
}

/// What to build: the sample shape, the layers, the batch sizes and the training mode.
#[derive(Clone, Copy, Debug)]
pub struct PlanConfig<'a> {
    /// The shape of one input sample (`Shape::flat(784)` for MNIST rows).
    pub input: Shape,
    /// The layers from input to output, at least one, at most [`MAX_LAYERS`]; the last
    /// layer's output is the logits that [`SoftmaxWithLoss`](crate::SoftmaxWithLoss) reads.
    pub layers: &'a [Spec],
    /// Largest training batch.
    pub batch: usize,
    /// Largest forward-only batch (evaluation); at least `batch` is used.
    pub eval_batch: usize,
    /// What the arena must hold for training.
    pub training: Training,
}

/// Which part of the arena a named tensor lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Region {
    /// Learned parameters (with gradients and optimizer state laid out alike).
    Params,
    /// Running statistics (BatchNorm's running mean and variance): saved with the model,
    /// updated by training-mode forward passes, never by an optimizer.
    Stats,
}

/// A tensor's name: the book's prefix and the layer's number among layers of its kind
/// (`W1`, `b1` for the first Affine layer, `gamma1`, `beta1` for the first BatchNorm).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TensorName {
    /// `W`, `b`, `gamma`, `beta`, `running_mean` or `running_var`.
    pub prefix: &'static str,
    /// From 1.
    pub number: usize,
}

impl core::fmt::Display for TensorName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}{}", self.prefix, self.number)
    }
}

/// One named tensor's place and shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// `W1`, `b1`, `gamma1`, `running_mean1`, …
    pub name: TensorName,
    /// Parameters or running statistics.
    pub region: Region,
    /// Where it lies within its region ([`Network::params`](crate::Network::params) or
    /// [`Network::stats`](crate::Network::stats)).
    pub span: Span,
    /// The shape, padded with zeros after `rank` dimensions (use [`TensorInfo::dims`]).
    pub shape: [usize; 4],
    /// Number of dimensions.
    pub rank: usize,
}

impl TensorInfo {
    /// The shape: `[d_in, d_out]` for an Affine weight, `[d]` for biases and BatchNorm's
    /// vectors.
    pub fn dims(&self) -> &[usize] {
        &self.shape[..self.rank]
    }
}

/// The memory plan of a [`Network`](crate::Network): every span of its one arena.
///
/// Layout, in order: the parameters of every layer (`[W1 b1 W2 b2 …]` for an MLP), their
/// gradients (same layout), optimizer state (`slots` blocks of the parameter length), the
/// running statistics, the input rows, then each layer's output and its cache, the
/// probabilities, the gradients of the layer outputs, and one scratch span that every
/// layer's passes share (a convolution's im2col buffer). ReLU, Sigmoid and Dropout work in
/// place (their output and its gradient share their input's spans) unless they come first
/// or follow a layer whose backward pass reads its own output. Forward-only rows are sized
/// for `max(batch, eval_batch)`, everything backward needs for `batch`; a smaller batch uses
/// a prefix of each span.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Plan {
    pub(crate) layers: [Layer; MAX_LAYERS],
    pub(crate) count: usize,
    /// `shapes[l]` is layer `l`'s input; `shapes[count]` the logits.
    pub(crate) shapes: [Shape; MAX_LAYERS + 1],
    pub(crate) in_place: [bool; MAX_LAYERS],
    /// Within the parameter region (which starts at 0).
    pub(crate) layer_params: [Span; MAX_LAYERS],
    /// Within the statistics region.
    pub(crate) layer_stats: [Span; MAX_LAYERS],
    pub(crate) caches: [Span; MAX_LAYERS],
    /// `act[l]` is layer `l`'s input (`act[0]` the input rows), `act[count]` the logits.
    pub(crate) act: [Span; MAX_LAYERS + 1],
    /// `d_act[l]` is the gradient of `act[l]` (`d_act[0]` is never computed).
    pub(crate) d_act: [Span; MAX_LAYERS + 1],
    pub(crate) training: Training,
    pub(crate) batch: usize,
    pub(crate) rows: usize,
    pub(crate) params: Span,
    pub(crate) grads: Span,
    pub(crate) state: Span,
    pub(crate) stats: Span,
    pub(crate) probs: Span,
    /// Working memory shared by every layer's passes (a convolution's `col`, `dcol`).
    pub(crate) scratch: Span,
    /// The first layer, if it is Affine: it can read sparse rows.
    pub(crate) first_affine: Option<Affine>,
    /// Whether a layer draws from the network's generator.
    pub(crate) draws: bool,
    pub(crate) total: usize,
}

/// `a·b` or an overflow error, in a `const fn`.
pub(crate) const fn mul(a: usize, b: usize) -> Result<usize> {
    match a.checked_mul(b) {
        Some(v) => Ok(v),
        None => Err(Error::Overflow { what: "plan" }),
    }
}

/// `?` for `const fn`s.
macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return Err(e),
        }
    };
}
pub(crate) use tri;

/// A zero-length span at 0.
const EMPTY: Span = Span { start: 0, len: 0 };

/// Refuses a configuration no plan can be made of.
const fn check_config(config: &PlanConfig<'_>) -> Result<()> {
    let n = config.layers.len();
    if n == 0 || n > MAX_LAYERS {
        return Err(Error::ShapeMismatch {
            expected: if n == 0 { 1 } else { MAX_LAYERS },
            got: n,
        });
    }
    if config.batch == 0 {
        return Err(Error::Zero { what: "batch size" });
    }
    match config.input.checked_len() {
        Some(0) => Err(Error::Zero { what: "input size" }),
        Some(_) => Ok(()),
        None => Err(Error::Overflow { what: "plan" }),
    }
}

impl Plan {
    /// Plans a network; `const`, so firmware can size a `static` arena at compile time.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for no layers or more than [`MAX_LAYERS`];
    /// [`Error::Zero`] for a zero batch, input or layer width; [`Error::InvalidValue`] for a
    /// layer that does not fit its input (a Dropout ratio outside `[0, 1)`, say);
    /// [`Error::Overflow`] if the plan does not fit in `usize`.
    pub const fn new(config: &PlanConfig<'_>) -> Result<Self> {
        tri!(check_config(config));
        let batch = config.batch;
        let mut plan = Self {
            layers: [Layer::Relu(Relu); MAX_LAYERS],
            count: config.layers.len(),
            shapes: [Shape::flat(0); MAX_LAYERS + 1],
            in_place: [false; MAX_LAYERS],
            layer_params: [EMPTY; MAX_LAYERS],
            layer_stats: [EMPTY; MAX_LAYERS],
            caches: [EMPTY; MAX_LAYERS],
            act: [EMPTY; MAX_LAYERS + 1],
            d_act: [EMPTY; MAX_LAYERS + 1],
            training: config.training,
            batch,
            rows: if config.eval_batch > batch {
                config.eval_batch
            } else {
                batch
            },
            params: EMPTY,
            grads: EMPTY,
            state: EMPTY,
            stats: EMPTY,
            probs: EMPTY,
            scratch: EMPTY,
            first_affine: None,
            draws: false,
            total: 0,
        };
        tri!(plan.build_layers(config.input, config.layers));
        let mut next = Planner::new();
        tri!(plan.lay_out_params(&mut next));
        tri!(plan.lay_out_stats(&mut next));
        tri!(plan.lay_out_activations(&mut next));
        tri!(plan.lay_out_scratch(&mut next));
        plan.total = next.total();
        Ok(plan)
    }

    /// What layer `l` needs.
    const fn sizes_of(&self, l: usize) -> crate::Sizes {
        self.layers[l].sizes(self.shapes[l])
    }

    /// Builds each layer on the shape before it and decides which work in place.
    const fn build_layers(&mut self, input: Shape, specs: &[Spec]) -> Result<()> {
        self.shapes[0] = input;
        let mut l = 0;
        while l < specs.len() {
            let (layer, out) = tri!(specs[l].build(self.shapes[l]));
            // A layer may overwrite its input only if the layer before does not read its own
            // output in backward, and never the caller's input rows.
            self.in_place[l] =
                layer.works_in_place() && l > 0 && !self.sizes_of(l - 1).reads_output;
            self.layers[l] = layer;
            self.shapes[l + 1] = out;
            self.draws = self.draws || self.sizes_of(l).draws;
            l += 1;
        }
        if let Layer::Affine(a) = self.layers[0] {
            self.first_affine = Some(a);
        }
        Ok(())
    }

    /// The parameters of every layer, their gradients and the optimizer state.
    const fn lay_out_params(&mut self, next: &mut Planner) -> Result<()> {
        let mut l = 0;
        while l < self.count {
            self.layer_params[l] = tri!(next.try_take(self.sizes_of(l).params));
            l += 1;
        }
        self.params = Span {
            start: 0,
            len: next.total(),
        };
        let (grads_len, slots) = match self.training {
            Training::Inference | Training::FusedSgd => (0, 0),
            Training::Backprop { optimizer_slots } => (self.params.len, optimizer_slots),
        };
        self.grads = tri!(next.try_take(grads_len));
        self.state = tri!(next.try_take(tri!(mul(slots, self.params.len))));
        Ok(())
    }

    /// The running statistics of every layer.
    const fn lay_out_stats(&mut self, next: &mut Planner) -> Result<()> {
        let start = next.total();
        let mut l = 0;
        while l < self.count {
            let s = tri!(next.try_take(self.sizes_of(l).stats));
            self.layer_stats[l] = Span {
                start: s.start - start,
                len: s.len,
            };
            l += 1;
        }
        self.stats = Span {
            start,
            len: next.total() - start,
        };
        Ok(())
    }

    /// The input rows, each layer's output and cache, the probabilities and, when training,
    /// the gradients of the layer outputs.
    const fn lay_out_activations(&mut self, next: &mut Planner) -> Result<()> {
        let (rows, batch, n) = (self.rows, self.batch, self.count);
        let trains = self.trains();
        self.act[0] = tri!(next.try_take(tri!(mul(rows, self.shapes[0].len()))));
        let mut l = 0;
        while l < n {
            self.act[l + 1] = if self.in_place[l] {
                self.act[l]
            } else {
                tri!(next.try_take(tri!(mul(rows, self.shapes[l + 1].len()))))
            };
            self.caches[l] = if trains {
                tri!(next.try_take(tri!(cache_len(&self.sizes_of(l), batch))))
            } else {
                next.empty()
            };
            l += 1;
        }
        self.probs = tri!(next.try_take(tri!(mul(batch, self.shapes[n].len()))));
        if trains {
            l = 1;
            while l <= n {
                self.d_act[l] = if self.in_place[l - 1] {
                    self.d_act[l - 1]
                } else {
                    tri!(next.try_take(tri!(mul(batch, self.shapes[l].len()))))
                };
                l += 1;
            }
        }
        Ok(())
    }

    /// One scratch span, as large as the largest layer's.
    const fn lay_out_scratch(&mut self, next: &mut Planner) -> Result<()> {
        let trains = self.trains();
        let mut len = 0;
        let mut l = 0;
        while l < self.count {
            // The first layer's backward computes no input gradient (nothing reads it).
            let need = scratch_len(&self.sizes_of(l), trains && l > 0);
            if need > len {
                len = need;
            }
            l += 1;
        }
        self.scratch = tri!(next.try_take(len));
        Ok(())
    }

    /// Elements the arena must hold.
    pub const fn total(&self) -> usize {
        self.total
    }

    /// Bytes the arena takes for element type `T`.
    pub const fn bytes<T: Real>(&self) -> usize {
        self.total * T::BYTES
    }

    /// The layers, input first.
    pub fn layers(&self) -> &[Layer] {
        &self.layers[..self.count]
    }

    /// The shape of one input sample.
    pub const fn input(&self) -> Shape {
        self.shapes[0]
    }

    /// The shape of layer `l`'s input (`l = layers().len()` gives the logits' shape).
    ///
    /// # Panics
    /// If `l > layers().len()`.
    pub fn shape(&self, l: usize) -> Shape {
        assert!(l <= self.count, "layer {l} of {}", self.count);
        self.shapes[l]
    }

    /// Whether layer `l` works in place (its output overwrites its input).
    ///
    /// # Panics
    /// If `l >= layers().len()`.
    pub fn in_place(&self, l: usize) -> bool {
        assert!(l < self.count, "layer {l} of {}", self.count);
        self.in_place[l]
    }

    /// Values per input sample.
    pub const fn d_in(&self) -> usize {
        self.shapes[0].len()
    }

    /// Values per output row (the classes).
    pub const fn classes(&self) -> usize {
        self.shapes[self.count].len()
    }

    /// Largest training batch.
    pub const fn batch(&self) -> usize {
        self.batch
    }

    /// Largest forward-only batch.
    pub const fn eval_rows(&self) -> usize {
        self.rows
    }

    /// The training mode planned for.
    pub const fn training(&self) -> Training {
        self.training
    }

    /// Whether the plan can train (it is not [`Training::Inference`]).
    pub const fn trains(&self) -> bool {
        !matches!(self.training, Training::Inference)
    }

    /// All learned parameters.
    pub const fn param_len(&self) -> usize {
        self.params.len
    }

    /// All running statistics.
    pub const fn stats_len(&self) -> usize {
        self.stats.len
    }

    /// Elements of the shared scratch span (the largest convolution's `col`, and `dcol` when
    /// training a convolution after the first layer).
    pub const fn scratch_len(&self) -> usize {
        self.scratch.len
    }

    /// Whether the first layer can read compressed sparse rows (it is Affine).
    pub const fn accepts_sparse(&self) -> bool {
        self.first_affine.is_some()
    }

    /// One sample's shapes going into layer `l` and out of it.
    pub(crate) const fn shapes_of(&self, l: usize) -> Shapes {
        Shapes {
            input: self.shapes[l],
            output: self.shapes[l + 1],
        }
    }

    /// Element counts by role: `(parameters and statistics, gradients, optimizer state,
    /// activations and caches)`.
    pub const fn breakdown(&self) -> (usize, usize, usize, usize) {
        let fixed = self.params.len + self.grads.len + self.state.len + self.stats.len;
        (
            self.params.len + self.stats.len,
            self.grads.len,
            self.state.len,
            self.total - fixed,
        )
    }

    /// The named tensors in layer order: parameters and running statistics, each with its
    /// region, span and shape.
    pub fn tensors(&self) -> impl Iterator<Item = TensorInfo> + '_ {
        (0..self.count).flat_map(move |l| {
            let (layer, shapes) = (self.layers[l], self.shapes_of(l));
            let number = (0..=l)
                .filter(|&o| self.tensor_family(o) == self.tensor_family(l))
                .count();
            (0..crate::MAX_TENSORS)
                .map_while(move |k| layer.tensor(shapes, k))
                .map(move |mut info| {
                    info.name.number = number;
                    info.span.start += match info.region {
                        Region::Params => self.layer_params[l].start,
                        Region::Stats => self.layer_stats[l].start,
                    };
                    info
                })
        })
    }

    /// The prefix of layer `l`'s first tensor: layers whose first prefixes agree are numbered
    /// together (Affine and Conv2d share `W`/`b`, as in the book's SimpleConvNet: `W1` is its
    /// convolution, `W2` and `W3` its affine layers).
    fn tensor_family(&self, l: usize) -> Option<&'static str> {
        self.layers[l]
            .tensor(self.shapes_of(l), 0)
            .map(|t| t.name.prefix)
    }

    /// The parameter tensor holding parameter `i`, and `i`'s index within it.
    pub fn param_at(&self, i: usize) -> Option<(TensorInfo, usize)> {
        self.tensors()
            .find(|t| t.region == Region::Params && (t.span.start..t.span.end()).contains(&i))
            .map(|t| (t, i - t.span.start))
    }

    /// Layer `l`'s gradient span in the arena.
    pub(crate) const fn grad_span(&self, l: usize) -> Span {
        let p = self.layer_params[l];
        Span {
            start: self.grads.start + p.start,
            len: if self.grads.len == 0 { 0 } else { p.len },
        }
    }

    /// Layer `l`'s statistics span in the arena.
    pub(crate) const fn stats_span(&self, l: usize) -> Span {
        let s = self.layer_stats[l];
        Span {
            start: self.stats.start + s.start,
            len: s.len,
        }
    }
}

#[cfg(feature = "alloc")]
impl Plan {
    /// A zeroed heap arena of exactly [`Plan::total`] elements, ready for
    /// [`Network::new`](crate::Network::new): the one allocation a host makes for a network.
    /// Without `alloc`, a `static` array of `total()` elements plays this part.
    pub fn alloc_arena<T: Real>(&self) -> alloc::vec::Vec<T> {
        alloc::vec![T::ZERO; self.total]
    }
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    use super::*;
    use crate::Network;

    #[test]
    fn an_allocated_arena_holds_exactly_the_plan() {
        // 3 inputs, affine 2: parameters 3·2 + 2.
        let plan = Plan::new(&PlanConfig {
            input: Shape::flat(3),
            layers: &[Spec::Affine(2)],
            batch: 4,
            eval_batch: 4,
            training: Training::Inference,
        })
        .unwrap();
        let mut arena = plan.alloc_arena::<f64>();
        assert_eq!(arena.len(), plan.total());
        assert!(arena.iter().all(|&v| v == 0.0));
        let net = Network::new(&plan, &mut arena).unwrap();
        assert_eq!(net.params().len(), 8);
    }
}
