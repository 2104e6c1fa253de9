//! A multi-layer perceptron planned into one arena: the book's `TwoLayerNet`, any depth.

use crate::{Affine, Relu, Sigmoid, SoftmaxWithLoss, Target};
use manabi_matmul::{Csr, Gemm};
use manabi_optim::Optimizer;
use manabi_tensor::{Error, Real, Result, Rng, Span, disjoint_mut};

/// The most affine layers a plan holds (so a plan is `Copy` and needs no heap).
pub const MAX_LAYERS: usize = 8;

const W_NAMES: [&str; MAX_LAYERS] = ["W1", "W2", "W3", "W4", "W5", "W6", "W7", "W8"];
const B_NAMES: [&str; MAX_LAYERS] = ["b1", "b2", "b3", "b4", "b5", "b6", "b7", "b8"];

/// The activation between affine layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// [`Relu`]: the book's chapter-5 network.
    Relu,
    /// [`Sigmoid`].
    Sigmoid,
}

/// How weights are drawn; biases always start at zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Init {
    /// The book's `weight_init_std = 0.01`: `W ~ N(0, 1)·0.01`.
    Book,
    /// Xavier (Glorot & Bengio 2010) as the book uses it: `W ~ N(0, 1/d_in)`.
    Xavier,
    /// He (He et al. 2015), for ReLU: `W ~ N(0, 2/d_in)`.
    He,
}

/// What the arena must hold beyond the forward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Training {
    /// Forward only: parameters and activations (a deployed model).
    Inference,
    /// Backward fused with plain SGD: no gradient buffer, updates applied inside the backward
    /// pass ([`Mlp::train_step_fused_sgd`]); for devices where weights barely fit once.
    FusedSgd,
    /// Full gradients plus `optimizer_slots` state values per parameter (SGD 0; Momentum,
    /// Nesterov, AdaGrad, RMSprop 1; Adam 2).
    Backprop {
        /// State slots per parameter of the optimizer to be used.
        optimizer_slots: usize,
    },
}

/// What to build: layer sizes, activation, batch sizes and the training mode.
#[derive(Clone, Copy, Debug)]
pub struct MlpConfig<'a> {
    /// Widths from input to output, e.g. `[784, 50, 10]`: at least two, at most `MAX_LAYERS + 1`.
    pub sizes: &'a [usize],
    /// Activation after every affine layer but the last.
    pub activation: Activation,
    /// Largest training batch.
    pub batch: usize,
    /// Largest forward-only batch (evaluation); at least `batch` is used.
    pub eval_batch: usize,
    /// What the arena must hold for training.
    pub training: Training,
}

/// The memory plan of an [`Mlp`]: every span of its one arena, fixed before it runs.
///
/// Layout, in order: parameters `[W1 b1 W2 b2 …]`, their gradients (same layout), optimizer
/// state (`slots` blocks of the parameter length), the input batch, each hidden layer's
/// output (the activation is applied in place), the logits, the probabilities, then the
/// gradients of the hidden outputs and of the logits. Forward-only rows are sized for
/// `max(batch, eval_batch)`, gradient rows for `batch`. A smaller batch uses a prefix of each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MlpPlan {
    sizes: [usize; MAX_LAYERS + 1],
    layers: usize,
    activation: Activation,
    training: Training,
    batch: usize,
    rows: usize,
    layer_params: [Span; MAX_LAYERS],
    params: Span,
    grads: Span,
    state: Span,
    input: Span,
    hidden: [Span; MAX_LAYERS],
    logits: Span,
    probs: Span,
    d_hidden: [Span; MAX_LAYERS],
    d_logits: Span,
    total: usize,
}

/// `a·b` or an overflow error, in a `const fn`.
const fn mul(a: usize, b: usize) -> Result<usize> {
    match a.checked_mul(b) {
        Some(v) => Ok(v),
        None => Err(Error::Overflow { what: "MLP plan" }),
    }
}

/// Reserves `len` slots at `*next` (const-friendly planner).
const fn take(next: &mut usize, len: usize) -> Result<Span> {
    let span = Span { start: *next, len };
    match next.checked_add(len) {
        Some(end) => {
            *next = end;
            Ok(span)
        }
        None => Err(Error::Overflow { what: "MLP plan" }),
    }
}

macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return Err(e),
        }
    };
}

impl MlpPlan {
    /// Plans a network; `const`, so firmware can size a `static` arena at compile time.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for fewer than two or more than `MAX_LAYERS + 1` sizes,
    /// [`Error::Zero`] for a zero width or batch, [`Error::Overflow`] if the plan does not fit
    /// in `usize`.
    pub const fn new(config: &MlpConfig<'_>) -> Result<Self> {
        let n = config.sizes.len();
        if n < 2 {
            return Err(Error::ShapeMismatch {
                expected: 2,
                got: n,
            });
        }
        if n > MAX_LAYERS + 1 {
            return Err(Error::ShapeMismatch {
                expected: MAX_LAYERS + 1,
                got: n,
            });
        }
        if config.batch == 0 {
            return Err(Error::Zero { what: "batch size" });
        }
        let mut sizes = [0; MAX_LAYERS + 1];
        let mut i = 0;
        while i < n {
            if config.sizes[i] == 0 {
                return Err(Error::Zero {
                    what: "layer width",
                });
            }
            sizes[i] = config.sizes[i];
            i += 1;
        }
        let layers = n - 1;
        let batch = config.batch;
        let rows = if config.eval_batch > batch {
            config.eval_batch
        } else {
            batch
        };
        let empty = Span { start: 0, len: 0 };
        let mut next = 0usize;

        let mut layer_params = [empty; MAX_LAYERS];
        let mut l = 0;
        while l < layers {
            let w = tri!(mul(sizes[l], sizes[l + 1]));
            let len = match w.checked_add(sizes[l + 1]) {
                Some(v) => v,
                None => return Err(Error::Overflow { what: "MLP plan" }),
            };
            layer_params[l] = tri!(take(&mut next, len));
            l += 1;
        }
        let params = Span {
            start: 0,
            len: next,
        };
        let (grads_len, slots) = match config.training {
            Training::Inference | Training::FusedSgd => (0, 0),
            Training::Backprop { optimizer_slots } => (params.len, optimizer_slots),
        };
        let grads = tri!(take(&mut next, grads_len));
        let state = tri!(take(&mut next, tri!(mul(slots, params.len))));
        let input = tri!(take(&mut next, tri!(mul(rows, sizes[0]))));
        let mut hidden = [empty; MAX_LAYERS];
        l = 0;
        while l + 1 < layers {
            hidden[l] = tri!(take(&mut next, tri!(mul(rows, sizes[l + 1]))));
            l += 1;
        }
        let classes = sizes[layers];
        let logits = tri!(take(&mut next, tri!(mul(rows, classes))));
        let probs = tri!(take(&mut next, tri!(mul(batch, classes))));
        let trains = !matches!(config.training, Training::Inference);
        let mut d_hidden = [empty; MAX_LAYERS];
        let mut d_logits = Span {
            start: next,
            len: 0,
        };
        if trains {
            l = 0;
            while l + 1 < layers {
                d_hidden[l] = tri!(take(&mut next, tri!(mul(batch, sizes[l + 1]))));
                l += 1;
            }
            d_logits = tri!(take(&mut next, tri!(mul(batch, classes))));
        }
        Ok(Self {
            sizes,
            layers,
            activation: config.activation,
            training: config.training,
            batch,
            rows,
            layer_params,
            params,
            grads,
            state,
            input,
            hidden,
            logits,
            probs,
            d_hidden,
            d_logits,
            total: next,
        })
    }

    /// Elements the arena must hold.
    pub const fn total(&self) -> usize {
        self.total
    }

    /// Bytes the arena takes for element type `T`.
    pub const fn bytes<T: Real>(&self) -> usize {
        self.total * T::BYTES
    }

    /// Layer widths, input first.
    pub fn sizes(&self) -> &[usize] {
        &self.sizes[..=self.layers]
    }

    /// Affine layers.
    pub const fn layers(&self) -> usize {
        self.layers
    }

    /// Input width.
    pub const fn d_in(&self) -> usize {
        self.sizes[0]
    }

    /// Output width (classes).
    pub const fn classes(&self) -> usize {
        self.sizes[self.layers]
    }

    /// Largest training batch.
    pub const fn batch(&self) -> usize {
        self.batch
    }

    /// Largest forward-only batch.
    pub const fn eval_rows(&self) -> usize {
        self.rows
    }

    /// The activation between layers.
    pub const fn activation(&self) -> Activation {
        self.activation
    }

    /// The training mode planned for.
    pub const fn training(&self) -> Training {
        self.training
    }

    /// All parameters, `[W1 b1 W2 b2 …]`.
    pub const fn param_len(&self) -> usize {
        self.params.len
    }

    /// Element counts by role: `(parameters, gradients, optimizer state, activations)`.
    pub const fn breakdown(&self) -> (usize, usize, usize, usize) {
        let fixed = self.params.len + self.grads.len + self.state.len;
        (
            self.params.len,
            self.grads.len,
            self.state.len,
            self.total - fixed,
        )
    }

    fn affine(&self, l: usize) -> Affine {
        Affine {
            d_in: self.sizes[l],
            d_out: self.sizes[l + 1],
        }
    }

    /// The parameter tensors in order: name (`W1`, `b1`, …), span within the parameters,
    /// and shape (`[d_in, d_out]` for weights, `[d_out]` for biases).
    pub fn tensors(&self) -> impl Iterator<Item = TensorInfo> + '_ {
        (0..self.layers).flat_map(move |l| {
            let p = self.layer_params[l];
            let (d_in, d_out) = (self.sizes[l], self.sizes[l + 1]);
            let w = TensorInfo {
                name: W_NAMES[l],
                span: Span {
                    start: p.start,
                    len: d_in * d_out,
                },
                shape: [d_in, d_out],
            };
            let b = TensorInfo {
                name: B_NAMES[l],
                span: Span {
                    start: p.start + d_in * d_out,
                    len: d_out,
                },
                shape: [d_out, 0],
            };
            [w, b]
        })
    }

    fn grad_span(&self, l: usize) -> Span {
        let p = self.layer_params[l];
        Span {
            start: self.grads.start + p.start,
            len: p.len,
        }
    }

    /// The span layer `l` reads, `rows` rows of it.
    fn layer_input(&self, l: usize, rows: usize) -> Span {
        if l == 0 {
            self.input.prefix(rows * self.sizes[0])
        } else {
            self.hidden[l - 1].prefix(rows * self.sizes[l])
        }
    }

    /// The span layer `l` writes, `rows` rows of it.
    fn layer_output(&self, l: usize, rows: usize) -> Span {
        if l + 1 == self.layers {
            self.logits.prefix(rows * self.sizes[l + 1])
        } else {
            self.hidden[l].prefix(rows * self.sizes[l + 1])
        }
    }

    /// The gradient of layer `l`'s output, `rows` rows.
    fn layer_d_output(&self, l: usize, rows: usize) -> Span {
        if l + 1 == self.layers {
            self.d_logits.prefix(rows * self.sizes[l + 1])
        } else {
            self.d_hidden[l].prefix(rows * self.sizes[l + 1])
        }
    }
}

/// One parameter tensor's place and shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// `W1`, `b1`, `W2`, …
    pub name: &'static str,
    /// Where it lies within the parameter slice.
    pub span: Span,
    /// `[d_in, d_out]` for a weight; `[d_out, 0]` for a bias (use [`TensorInfo::dims`]).
    pub shape: [usize; 2],
}

impl TensorInfo {
    /// The shape without padding: two dimensions for weights, one for biases.
    pub fn dims(&self) -> &[usize] {
        if self.shape[1] == 0 {
            &self.shape[..1]
        } else {
            &self.shape
        }
    }
}

/// A minibatch as compressed sparse rows, and optionally their transpose for the first layer's
/// weight gradient: for inputs that are mostly zero, like MNIST's pixels (81 %), the first
/// layer then reads only the nonzeros ([`Mlp::train_step_sparse`]). Without the transpose the
/// gradient scatters the rows instead (slower, no memory for it: for a microcontroller); the
/// result is the same to the bit.
#[derive(Clone, Copy, Debug)]
pub struct SparseBatch<'a, T> {
    x: Csr<'a, T>,
    xt: Option<Csr<'a, T>>,
}

impl<'a, T: Copy> SparseBatch<'a, T> {
    /// The batch `x` (`rows × d_in`) and its transpose `xt` (`d_in × rows`, built by
    /// `CsrBuf::transpose_from`; a different matrix gives a wrong gradient, never undefined
    /// behaviour).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if `xt` does not have `x`'s transposed shape and nonzero count.
    pub fn new(x: Csr<'a, T>, xt: Csr<'a, T>) -> Result<Self> {
        for (expected, got) in [
            (x.rows(), xt.cols()),
            (x.cols(), xt.rows()),
            (x.nnz(), xt.nnz()),
        ] {
            if expected != got {
                return Err(Error::ShapeMismatch { expected, got });
            }
        }
        Ok(Self { x, xt: Some(xt) })
    }

    /// The batch `x` alone: the weight gradient scatters its rows.
    pub fn rows_only(x: Csr<'a, T>) -> Self {
        Self { x, xt: None }
    }

    /// The rows.
    pub fn x(&self) -> Csr<'a, T> {
        self.x
    }

    /// Their transpose, if the batch carries it.
    pub fn xt(&self) -> Option<Csr<'a, T>> {
        self.xt
    }
}

/// Where the first layer's input comes from.
#[derive(Clone, Copy)]
enum Input<'x, T> {
    /// The arena's input rows.
    Arena,
    /// Caller-held dense rows.
    Dense(&'x [T]),
    /// Caller-held sparse rows, with their transpose if built.
    Sparse(Csr<'x, T>, Option<Csr<'x, T>>),
}

impl<'x, T: Copy> Input<'x, T> {
    /// The input cut to the first `rows` rows of width `d_in`, once per pass.
    ///
    /// # Panics
    /// If dense rows are fewer, or a sparse batch has another shape.
    fn rows(self, rows: usize, d_in: usize) -> Self {
        match self {
            Input::Dense(x) => Input::Dense(&x[..rows * d_in]),
            Input::Sparse(x, _) => {
                assert!(
                    x.rows() == rows && x.cols() == d_in,
                    "sparse batch of {}×{} for {rows} rows of width {d_in}",
                    x.rows(),
                    x.cols()
                );
                self
            }
            Input::Arena => self,
        }
    }
}

/// A multi-layer perceptron living in one caller-owned buffer.
///
/// The book's `TwoLayerNet` maps onto it: [`Mlp::predict`], [`Mlp::loss`],
/// [`Mlp::accuracy`], [`Mlp::gradient`] (backprop) and [`Mlp::numerical_gradient`]. After
/// [`Mlp::new`], nothing allocates: every pass reads and writes spans of the arena.
#[derive(Debug)]
pub struct Mlp<'a, T> {
    plan: MlpPlan,
    buf: &'a mut [T],
}

impl<'a, T: Real> Mlp<'a, T> {
    /// Opens a network on `buf`, which must hold at least `plan.total()` elements.
    ///
    /// # Errors
    /// [`Error::ArenaTooSmall`] with `need` and `have`.
    pub fn new(plan: MlpPlan, buf: &'a mut [T]) -> Result<Self> {
        let have = buf.len();
        if have < plan.total {
            return Err(Error::ArenaTooSmall {
                need: plan.total,
                have,
            });
        }
        Ok(Self {
            plan,
            buf: &mut buf[..plan.total],
        })
    }

    /// The plan.
    pub fn plan(&self) -> &MlpPlan {
        &self.plan
    }

    /// Draws the weights from `rng` and zeroes the biases, the gradients and the optimizer state.
    pub fn init(&mut self, init: Init, rng: &mut Rng) {
        for l in 0..self.plan.layers {
            let d_in = self.plan.sizes[l];
            let std = match init {
                Init::Book => T::from_f64(0.01),
                Init::Xavier => T::ONE / T::from_usize(d_in).sqrt(),
                Init::He => (T::TWO / T::from_usize(d_in)).sqrt(),
            };
            let p = self.plan.layer_params[l];
            let (w, b) = self.buf[p.start..p.end()].split_at_mut(d_in * self.plan.sizes[l + 1]);
            rng.fill_normal(w, std);
            b.fill(T::ZERO);
        }
        let fixed_end = self.plan.state.end();
        self.buf[self.plan.grads.start..fixed_end].fill(T::ZERO);
    }

    /// All parameters, `[W1 b1 W2 b2 …]` (see [`MlpPlan::tensors`]).
    pub fn params(&self) -> &[T] {
        &self.buf[..self.plan.params.len]
    }

    /// All parameters, writable (to load weights).
    pub fn params_mut(&mut self) -> &mut [T] {
        &mut self.buf[..self.plan.params.len]
    }

    /// The gradients from the last [`Mlp::gradient`], laid out like the parameters (empty
    /// unless planned with [`Training::Backprop`]).
    pub fn grads(&self) -> &[T] {
        &self.buf[self.plan.grads.start..self.plan.grads.end()]
    }

    /// The optimizer state (for checkpoints).
    pub fn state(&self) -> &[T] {
        &self.buf[self.plan.state.start..self.plan.state.end()]
    }

    /// The optimizer state, writable (to restore a checkpoint).
    pub fn state_mut(&mut self) -> &mut [T] {
        &mut self.buf[self.plan.state.start..self.plan.state.end()]
    }

    /// The input rows to fill before [`Mlp::forward`] / [`Mlp::gradient`]: `rows × d_in`.
    ///
    /// # Panics
    /// If `rows` exceeds the planned forward rows.
    pub fn input_mut(&mut self, rows: usize) -> &mut [T] {
        let s = self.plan.input.prefix(rows * self.plan.sizes[0]);
        &mut self.buf[s.start..s.end()]
    }

    /// Forward pass over the first `rows` input rows; returns the logits `[rows, classes]`.
    ///
    /// # Panics
    /// If `rows` exceeds the planned forward rows.
    pub fn forward(&mut self, mm: &impl Gemm<T>, rows: usize) -> &[T] {
        assert!(
            rows <= self.plan.rows,
            "{rows} rows exceed the planned {}",
            self.plan.rows
        );
        self.forward_from(mm, Input::Arena, rows)
    }

    /// Forward pass over caller-held rows `x` (`rows × d_in`, e.g. a slice of a test set)
    /// instead of the arena's input; returns the logits. The book's `predict`.
    ///
    /// # Panics
    /// If `x` holds more rows than planned or is not a whole number of rows.
    pub fn predict(&mut self, mm: &impl Gemm<T>, x: &[T]) -> &[T] {
        let d_in = self.plan.sizes[0];
        let rows = x.len() / d_in;
        assert!(
            rows * d_in == x.len() && rows <= self.plan.rows,
            "predict: {} inputs for width {d_in}",
            x.len()
        );
        self.forward_from(mm, Input::Dense(x), rows)
    }

    /// [`Mlp::predict`] over sparse rows (`rows × d_in`): the first layer reads only the
    /// nonzeros. Returns the logits.
    ///
    /// # Panics
    /// If `x` holds more rows than planned or its width is not the input width.
    pub fn predict_sparse(&mut self, mm: &impl Gemm<T>, x: Csr<'_, T>) -> &[T] {
        assert!(
            x.cols() == self.plan.sizes[0] && x.rows() <= self.plan.rows,
            "predict_sparse: {}×{} rows for width {} and {} planned rows",
            x.rows(),
            x.cols(),
            self.plan.sizes[0],
            self.plan.rows
        );
        self.forward_from(mm, Input::Sparse(x, None), x.rows())
    }

    /// The forward pass; the first layer reads `input`.
    fn forward_from(&mut self, mm: &impl Gemm<T>, input: Input<'_, T>, rows: usize) -> &[T] {
        let plan = self.plan;
        for l in 0..plan.layers {
            let (p, y) = (plan.layer_params[l], plan.layer_output(l, rows));
            let affine = plan.affine(l);
            let y = match (l, input) {
                (0, Input::Dense(x)) => {
                    let [p, y] = disjoint_mut(self.buf, [p, y]);
                    affine.forward(mm, p, x, y);
                    y
                }
                (0, Input::Sparse(x, _)) => {
                    let [p, y] = disjoint_mut(self.buf, [p, y]);
                    affine.forward_sparse(p, x, y);
                    y
                }
                _ => {
                    let [p, x, y] = disjoint_mut(self.buf, [p, plan.layer_input(l, rows), y]);
                    affine.forward(mm, p, x, y);
                    y
                }
            };
            if l + 1 < plan.layers {
                match plan.activation {
                    Activation::Relu => Relu.forward_in_place(y),
                    Activation::Sigmoid => Sigmoid.forward_in_place(y),
                }
            }
        }
        let out = plan.layer_output(plan.layers - 1, rows);
        &self.buf[out.start..out.end()]
    }

    fn deactivate(activation: Activation, y: &[T], d: &mut [T]) {
        match activation {
            Activation::Relu => Relu.backward_in_place(y, d),
            Activation::Sigmoid => Sigmoid.backward_in_place(y, d),
        }
    }

    /// Forward pass and mean cross-entropy over the first `rows` input rows.
    ///
    /// # Panics
    /// If `rows` exceeds the planned batch or the target has a different number of rows.
    pub fn loss(&mut self, mm: &impl Gemm<T>, rows: usize, target: Target<'_, T>) -> T {
        self.loss_from(mm, Input::Arena, rows, target)
    }

    /// [`Mlp::loss`] over `input`, already cut to `rows` rows ([`Input::rows`]).
    fn loss_from(
        &mut self,
        mm: &impl Gemm<T>,
        input: Input<'_, T>,
        rows: usize,
        target: Target<'_, T>,
    ) -> T {
        assert!(
            rows <= self.plan.batch,
            "{rows} rows exceed the planned batch {}",
            self.plan.batch
        );
        self.forward_from(mm, input, rows);
        let c = self.plan.classes();
        let [logits, probs] = disjoint_mut(
            self.buf,
            [
                self.plan.logits.prefix(rows * c),
                self.plan.probs.prefix(rows * c),
            ],
        );
        SoftmaxWithLoss { classes: c }.forward(logits, target, probs)
    }

    /// Backprop: forward, loss, then every layer's backward; writes [`Mlp::grads`] and
    /// returns the loss. The first layer's input gradient is never computed.
    ///
    /// # Panics
    /// If the plan has no gradient buffer ([`Training::Backprop`]), or as [`Mlp::loss`].
    pub fn gradient(&mut self, mm: &impl Gemm<T>, rows: usize, target: Target<'_, T>) -> T {
        self.gradient_from(mm, Input::Arena, rows, target)
    }

    /// [`Mlp::gradient`] over the first `rows` rows of `input`.
    fn gradient_from(
        &mut self,
        mm: &impl Gemm<T>,
        input: Input<'_, T>,
        rows: usize,
        target: Target<'_, T>,
    ) -> T {
        assert!(
            matches!(self.plan.training, Training::Backprop { .. }),
            "gradient() needs a Backprop plan"
        );
        let input = input.rows(rows, self.plan.sizes[0]);
        let loss = self.loss_from(mm, input, rows, target);
        self.backward_logits(rows, target);
        let plan = self.plan;
        for l in (0..plan.layers).rev() {
            let (p, g, x, dy) = (
                plan.layer_params[l],
                plan.grad_span(l),
                plan.layer_input(l, rows),
                plan.layer_d_output(l, rows),
            );
            if l == 0 {
                let [p, g, x, dy] = disjoint_mut(self.buf, [p, g, x, dy]);
                let affine = plan.affine(0);
                match input {
                    Input::Arena => affine.backward(mm, p, x, dy, None, g),
                    Input::Dense(e) => affine.backward(mm, p, e, dy, None, g),
                    Input::Sparse(x, xt) => affine.backward_sparse(x, xt, dy, g),
                }
            } else {
                let dx = plan.layer_d_output(l - 1, rows);
                let [p, g, x, dx, dy] = disjoint_mut(self.buf, [p, g, x, dx, dy]);
                plan.affine(l).backward(mm, p, x, dy, Some(&mut *dx), g);
                Self::deactivate(plan.activation, x, dx);
            }
        }
        loss
    }

    fn backward_logits(&mut self, rows: usize, target: Target<'_, T>) {
        let c = self.plan.classes();
        let [probs, d_logits] = disjoint_mut(
            self.buf,
            [
                self.plan.probs.prefix(rows * c),
                self.plan.d_logits.prefix(rows * c),
            ],
        );
        SoftmaxWithLoss { classes: c }.backward(probs, target, d_logits);
    }

    /// Applies one optimizer update from the current gradients; `t` counts updates from 1.
    ///
    /// # Panics
    /// If the plan's state slots differ from the optimizer's.
    pub fn update(&mut self, opt: &impl Optimizer<T>, t: u64) {
        assert_eq!(
            self.plan.state.len,
            opt.slots() * self.plan.params.len,
            "optimizer state slots differ from the plan's"
        );
        let [p, g, s] = disjoint_mut(
            self.buf,
            [self.plan.params, self.plan.grads, self.plan.state],
        );
        opt.step(t, p, g, s);
    }

    /// One training step: forward, backward, update. Returns the loss before the update.
    pub fn train_step(
        &mut self,
        mm: &impl Gemm<T>,
        opt: &impl Optimizer<T>,
        t: u64,
        rows: usize,
        target: Target<'_, T>,
    ) -> T {
        let loss = self.gradient(mm, rows, target);
        self.update(opt, t);
        loss
    }

    /// [`Mlp::train_step`] on the first `rows` rows of `x` (`rows × d_in` values or more)
    /// instead of the arena's input rows: for batches prepared in buffers of their own, e.g.
    /// by another thread. The arena's input rows are neither read nor written.
    ///
    /// # Panics
    /// As [`Mlp::train_step`], or if `x` holds fewer than `rows × d_in` values.
    pub fn train_step_on(
        &mut self,
        mm: &impl Gemm<T>,
        opt: &impl Optimizer<T>,
        t: u64,
        x: &[T],
        rows: usize,
        target: Target<'_, T>,
    ) -> T {
        let loss = self.gradient_from(mm, Input::Dense(x), rows, target);
        self.update(opt, t);
        loss
    }

    /// [`Mlp::train_step`] on a sparse batch: the first layer's forward (`x·W₁`) and weight
    /// gradient (`xᵀ·dy`, from the batch's transpose) read only the nonzeros, a fifth of the
    /// work for MNIST. Every other product uses `mm`. With the `Naive` backend the step is
    /// bit for bit the dense one.
    ///
    /// # Panics
    /// As [`Mlp::train_step`], or if the batch's width is not the input width.
    pub fn train_step_sparse(
        &mut self,
        mm: &impl Gemm<T>,
        opt: &impl Optimizer<T>,
        t: u64,
        batch: SparseBatch<'_, T>,
        target: Target<'_, T>,
    ) -> T {
        let rows = batch.x.rows();
        let loss = self.gradient_from(mm, Input::Sparse(batch.x, batch.xt), rows, target);
        self.update(opt, t);
        loss
    }

    /// One SGD step with the update fused into the backward pass (no gradient buffer):
    /// each layer computes its input gradient with its old weights, then updates itself.
    ///
    /// # Panics
    /// If the plan is [`Training::Inference`], or as [`Mlp::loss`].
    pub fn train_step_fused_sgd(
        &mut self,
        mm: &impl Gemm<T>,
        lr: T,
        rows: usize,
        target: Target<'_, T>,
    ) -> T {
        self.fused_sgd_from(mm, lr, Input::Arena, rows, target)
    }

    /// [`Mlp::train_step_fused_sgd`] on the first `rows` rows of `x` instead of the arena's
    /// input rows (see [`Mlp::train_step_on`]).
    ///
    /// # Panics
    /// As [`Mlp::train_step_fused_sgd`], or if `x` holds fewer than `rows × d_in` values.
    pub fn train_step_fused_sgd_on(
        &mut self,
        mm: &impl Gemm<T>,
        lr: T,
        x: &[T],
        rows: usize,
        target: Target<'_, T>,
    ) -> T {
        self.fused_sgd_from(mm, lr, Input::Dense(x), rows, target)
    }

    /// [`Mlp::train_step_fused_sgd`] on a sparse batch: the first layer's forward and its
    /// fused update read only the nonzeros (see [`Mlp::train_step_sparse`]).
    ///
    /// # Panics
    /// As [`Mlp::train_step_fused_sgd`], or if the batch's width is not the input width.
    pub fn train_step_fused_sgd_sparse(
        &mut self,
        mm: &impl Gemm<T>,
        lr: T,
        batch: SparseBatch<'_, T>,
        target: Target<'_, T>,
    ) -> T {
        let rows = batch.x.rows();
        self.fused_sgd_from(mm, lr, Input::Sparse(batch.x, batch.xt), rows, target)
    }

    fn fused_sgd_from(
        &mut self,
        mm: &impl Gemm<T>,
        lr: T,
        input: Input<'_, T>,
        rows: usize,
        target: Target<'_, T>,
    ) -> T {
        assert!(
            !matches!(self.plan.training, Training::Inference),
            "an Inference plan cannot train"
        );
        let input = input.rows(rows, self.plan.sizes[0]);
        let loss = self.loss_from(mm, input, rows, target);
        self.backward_logits(rows, target);
        let plan = self.plan;
        for l in (0..plan.layers).rev() {
            let (p, x, dy) = (
                plan.layer_params[l],
                plan.layer_input(l, rows),
                plan.layer_d_output(l, rows),
            );
            if l == 0 {
                let [p, x, dy] = disjoint_mut(self.buf, [p, x, dy]);
                let affine = plan.affine(0);
                match input {
                    Input::Arena => affine.backward_sgd(mm, lr, p, x, dy, None),
                    Input::Dense(e) => affine.backward_sgd(mm, lr, p, e, dy, None),
                    Input::Sparse(x, xt) => affine.backward_sgd_sparse(lr, p, x, xt, dy),
                }
            } else {
                let dx = plan.layer_d_output(l - 1, rows);
                let [p, x, dx, dy] = disjoint_mut(self.buf, [p, x, dx, dy]);
                plan.affine(l)
                    .backward_sgd(mm, lr, p, x, dy, Some(&mut *dx));
                Self::deactivate(plan.activation, x, dx);
            }
        }
        loss
    }

    /// Correct predictions (arg-max of the logits) over a whole set, evaluated in chunks of
    /// the planned forward rows. `x` is `[n, d_in]`, `labels` `[n]`.
    ///
    /// # Panics
    /// If `x` and `labels` disagree in length.
    pub fn correct(&mut self, mm: &impl Gemm<T>, x: &[T], labels: &[usize]) -> usize {
        let d_in = self.plan.sizes[0];
        assert_eq!(x.len(), labels.len() * d_in, "inputs and labels disagree");
        let chunk = self.plan.rows;
        let c = self.plan.classes();
        let mut correct = 0;
        for (xs, ls) in x.chunks(chunk * d_in).zip(labels.chunks(chunk)) {
            let logits = self.predict(mm, xs);
            correct += logits
                .chunks_exact(c)
                .zip(ls)
                .filter(|(row, l)| argmax(row) == **l)
                .count();
        }
        correct
    }

    /// Fraction of correct predictions over a whole set; the book's `accuracy`.
    pub fn accuracy(&mut self, mm: &impl Gemm<T>, x: &[T], labels: &[usize]) -> f64 {
        if labels.is_empty() {
            return 0.0;
        }
        self.correct(mm, x, labels) as f64 / labels.len() as f64
    }

    /// Central differences of the loss over every parameter: two loss evaluations per
    /// parameter (79,520 for 784-50-10), written into `out` (`param_len` elements). This is
    /// what backprop replaces; it stays as the check. Parameters are restored exactly.
    ///
    /// # Panics
    /// If `out.len()` differs from the parameter count, or as [`Mlp::loss`].
    pub fn numerical_gradient(
        &mut self,
        mm: &impl Gemm<T>,
        rows: usize,
        target: Target<'_, T>,
        h: T,
        out: &mut [T],
    ) {
        assert_eq!(
            out.len(),
            self.plan.params.len,
            "numerical_gradient: output length"
        );
        for (i, o) in out.iter_mut().enumerate() {
            let saved = self.buf[i];
            self.buf[i] = saved + h;
            let up = self.loss(mm, rows, target);
            self.buf[i] = saved - h;
            let down = self.loss(mm, rows, target);
            self.buf[i] = saved;
            *o = (up - down) / (h + h);
        }
    }
}

/// Index of the largest value (the first one on ties).
pub fn argmax<T: Real>(row: &[T]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}
