//! A network: a list of layers over one caller-owned arena, with one forward, one training step and the numerical gradient.

use crate::kernel::half_sum_of_squares;
use crate::pass::{BackwardStep, ForwardStep, GradStep, NONE, Rows, spans_mut};
use crate::plan::{Plan, Training};
use crate::{Affine, Mode, SoftmaxWithLoss, Target};
use manabi_matmul::{Csr, Gemm};
use manabi_optim::Optimizer;
use manabi_tensor::{Error, Real, Result, Rng};

/// How weights are drawn; biases start at zero, BatchNorm's `γ` at one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// The book's `weight_init_std = 0.01`: `W ~ N(0, 1)·0.01`.
    Book,
    /// Xavier (Glorot & Bengio 2010) as the book uses it: `W ~ N(0, 1/d_in)`.
    Xavier,
    /// He (He et al. 2015), for ReLU: `W ~ N(0, 2/d_in)`.
    He,
    /// `W ~ N(0, 1)·s`, for the book's experiments across weight scales.
    Normal(f64),
}

impl Init {
    /// The standard deviation of a weight with `fan_in` inputs.
    pub fn std<T: Real>(&self, fan_in: usize) -> T {
        match *self {
            Init::Book => T::from_f64(0.01),
            Init::Xavier => T::ONE / T::from_usize(fan_in).sqrt(),
            Init::He => (T::TWO / T::from_usize(fan_in)).sqrt(),
            Init::Normal(s) => T::from_f64(s),
        }
    }
}

/// A minibatch as compressed sparse rows, and optionally their transpose for the first layer's
/// weight gradient: for inputs that are mostly zero, like MNIST's pixels (81 %), the first
/// layer (which must be [`Affine`](crate::Affine)) then reads only the nonzeros. Without the
/// transpose the gradient scatters the rows instead (slower, no memory for it: for a
/// microcontroller); the result is the same to the bit.
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

/// Where a pass reads its input rows from.
#[derive(Clone, Copy, Debug)]
pub enum Input<'x, T> {
    /// The first `rows` rows of the arena's input span ([`Network::input_mut`]).
    Arena(usize),
    /// Caller-held dense rows, `rows × d_in` values (a slice of a test set, a batch gathered
    /// by another thread); never written.
    Dense(&'x [T]),
    /// Caller-held compressed rows (the first layer must be Affine).
    Sparse(SparseBatch<'x, T>),
}

impl<T: Copy> Input<'_, T> {
    /// Rows it holds, for an input width of `d_in`.
    pub fn rows(&self, d_in: usize) -> usize {
        match self {
            Input::Arena(rows) => *rows,
            Input::Dense(x) => x.len() / d_in.max(1),
            Input::Sparse(b) => b.x.rows(),
        }
    }
}

/// The optimizer type of an [`Update`] that has none (gradients only, or fused SGD); it has
/// no values, so it is never called.
#[derive(Clone, Copy, Debug)]
pub enum NoOptimizer {}

impl<T: Real> Optimizer<T> for NoOptimizer {
    fn slots(&self) -> usize {
        match *self {}
    }

    fn step(&self, _: u64, _: &mut [T], _: &[T], _: &mut [T]) {
        match *self {}
    }
}

#[derive(Clone, Copy, Debug)]
enum Rule<'o, T, O> {
    Gradients,
    FusedSgd(T),
    Optimizer(&'o O),
}

/// What a training step does after its backward pass, checked against a plan when it is
/// made, so a step never meets an update its arena has no room for:
///
/// - [`Update::gradients`]: write the gradients ([`Network::grads`]) and stop (for
///   [`gradcheck`](crate::gradcheck), or updates of one's own);
/// - [`Update::fused_sgd`]: plain SGD applied inside the backward pass, no gradient buffer;
/// - [`Update::optimizer`]: gradients, then one optimizer step, counting steps from `t`.
///
/// [`Update::with_weight_decay`] adds the book's L2 penalty `½·λ·Σ W²` over every Affine
/// weight (not biases, not BatchNorm's `γ`, `β`) to the loss and `λ·W` to the gradient.
#[derive(Clone, Copy, Debug)]
pub struct Update<'o, T, O> {
    rule: Rule<'o, T, O>,
    t: u64,
    weight_decay: T,
}

impl<T: Real> Update<'static, T, NoOptimizer> {
    /// Backprop only: each step writes the gradients and changes no parameter.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] unless the plan has a gradient buffer ([`Training::Backprop`]).
    pub fn gradients(plan: &Plan) -> Result<Self> {
        if !matches!(plan.training(), Training::Backprop { .. }) {
            return Err(Error::InvalidValue {
                what: "gradients need a plan with Training::Backprop",
            });
        }
        Ok(Self {
            rule: Rule::Gradients,
            t: 1,
            weight_decay: T::ZERO,
        })
    }

    /// Plain SGD with learning rate `lr`, fused into the backward pass: each layer computes
    /// its input gradient with its old parameters, then updates them.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] for an [`Training::Inference`] plan, or an `lr` that is not
    /// positive and finite.
    pub fn fused_sgd(plan: &Plan, lr: T) -> Result<Self> {
        if !plan.trains() {
            return Err(Error::InvalidValue {
                what: "an Inference plan cannot train",
            });
        }
        check_lr(lr)?;
        Ok(Self {
            rule: Rule::FusedSgd(lr),
            t: 1,
            weight_decay: T::ZERO,
        })
    }
}

impl<T: Real> Update<'static, T, NoOptimizer> {
    /// The same gradients-only or fused-SGD update, typed for an optimizer it never calls, so
    /// that one loop type ([`Trainer`](crate::Trainer)) runs both it and optimizer updates.
    pub fn for_optimizer<O>(self) -> Update<'static, T, O> {
        let rule = match self.rule {
            Rule::Gradients => Rule::Gradients,
            Rule::FusedSgd(lr) => Rule::FusedSgd(lr),
            Rule::Optimizer(never) => match *never {},
        };
        Update {
            rule,
            t: self.t,
            weight_decay: self.weight_decay,
        }
    }
}

fn check_lr<T: Real>(lr: T) -> Result<()> {
    if lr.is_finite() && lr > T::ZERO {
        Ok(())
    } else {
        Err(Error::InvalidValue {
            what: "the learning rate must be positive and finite",
        })
    }
}

impl<'o, T: Real, O: Optimizer<T>> Update<'o, T, O> {
    /// Backprop, then `opt`'s step; `t` is the count of the next update, from 1 (a resumed run
    /// passes the iterations done plus one), and each step adds one.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] unless the plan has a gradient buffer and exactly the state
    /// slots `opt` needs, or if `t` is 0.
    pub fn optimizer(plan: &Plan, opt: &'o O, t: u64) -> Result<Self> {
        match plan.training() {
            Training::Backprop { optimizer_slots } if optimizer_slots == opt.slots() => {}
            Training::Backprop { .. } => {
                return Err(Error::InvalidValue {
                    what: "the plan's optimizer state slots differ from the optimizer's",
                });
            }
            _ => {
                return Err(Error::InvalidValue {
                    what: "an optimizer needs a plan with Training::Backprop",
                });
            }
        }
        if t == 0 {
            return Err(Error::InvalidValue {
                what: "optimizer steps count from 1",
            });
        }
        Ok(Self {
            rule: Rule::Optimizer(opt),
            t,
            weight_decay: T::ZERO,
        })
    }

    /// The book's weight decay `λ` (`weight_decay_lambda`): the loss gains `½·λ·Σ W²` over
    /// the Affine weights and their gradient `λ·W`. Fused SGD applies it as
    /// `W ← (1 − lr·λ)·W − lr·xᵀ·dy`.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] for a negative or non-finite `λ`.
    pub fn with_weight_decay(self, lambda: T) -> Result<Self> {
        if !(lambda.is_finite() && lambda >= T::ZERO) {
            return Err(Error::InvalidValue {
                what: "weight decay must be zero or positive and finite",
            });
        }
        Ok(Self {
            weight_decay: lambda,
            ..self
        })
    }

    /// Changes the fused SGD learning rate (a schedule); other updates ignore it (their
    /// optimizer holds theirs).
    ///
    /// # Errors
    /// [`Error::InvalidValue`] for an `lr` that is not positive and finite.
    pub fn set_lr(&mut self, lr: T) -> Result<()> {
        check_lr(lr)?;
        if let Rule::FusedSgd(old) = &mut self.rule {
            *old = lr;
        }
        Ok(())
    }

    /// The step count the next optimizer update uses.
    pub fn t(&self) -> u64 {
        self.t
    }

    /// Sets the step count of the next optimizer update (a resumed run's iteration plus one).
    pub fn set_t(&mut self, t: u64) {
        self.t = t.max(1);
    }

    /// The weight decay `λ`.
    pub fn weight_decay(&self) -> T {
        self.weight_decay
    }
}

/// Seed of the generator a network's Dropout layers draw from until [`Network::init`] or
/// [`Network::set_rng`] replaces it.
const DROPOUT_SEED: u64 = 0x00D2_0F0E;

/// A network living in one caller-owned buffer.
///
/// The book's `MultiLayerNetExtend` maps onto it: [`Network::forward`] (`predict`, with its
/// `train_flg` as [`Mode`]), [`Network::loss`], [`Network::accuracy`], [`Network::train_step`]
/// (`gradient` and the optimizer's `update`) and [`Network::numerical_gradient`]. After
/// [`Network::new`], nothing allocates: every pass reads and writes spans of the arena.
#[derive(Debug)]
pub struct Network<'a, T> {
    plan: &'a Plan,
    buf: &'a mut [T],
    rng: Rng,
}

impl<'a, T: Real> Network<'a, T> {
    /// Opens a network on `buf`, which must hold at least `plan.total()` elements.
    ///
    /// # Errors
    /// [`Error::ArenaTooSmall`] with `need` and `have`.
    pub fn new(plan: &'a Plan, buf: &'a mut [T]) -> Result<Self> {
        let have = buf.len();
        if have < plan.total() {
            return Err(Error::ArenaTooSmall {
                need: plan.total(),
                have,
            });
        }
        Ok(Self {
            plan,
            buf: &mut buf[..plan.total()],
            rng: Rng::new(DROPOUT_SEED),
        })
    }

    /// The plan.
    pub fn plan(&self) -> &'a Plan {
        self.plan
    }

    /// Draws the weights from `rng` layer by layer, sets BatchNorm to `γ = 1`, `β = 0` and
    /// zero running statistics, zeroes the gradients and the optimizer state, and, if the
    /// plan has layers that draw (Dropout), seeds their generator with one more draw from
    /// `rng`.
    pub fn init(&mut self, init: Init, rng: &mut Rng) {
        let plan = self.plan;
        for (l, layer) in plan.layers().iter().enumerate() {
            let [p, st] = spans_mut(self.buf, [plan.layer_params[l], plan.stats_span(l)]);
            layer.init(plan.shapes_of(l), init, rng, p, st);
        }
        self.buf[plan.grads.start..plan.state.end()].fill(T::ZERO);
        if plan.draws {
            self.rng = Rng::new(rng.next_u64());
        }
    }

    /// All learned parameters, layer by layer (`[W1 b1 W2 b2 …]`; see [`Plan::tensors`]).
    pub fn params(&self) -> &[T] {
        &self.buf[..self.plan.params.len]
    }

    /// All parameters, writable (to load weights).
    pub fn params_mut(&mut self) -> &mut [T] {
        &mut self.buf[..self.plan.params.len]
    }

    /// The gradients from the last step with [`Update::gradients`] or [`Update::optimizer`],
    /// laid out like the parameters (empty unless planned with [`Training::Backprop`]).
    pub fn grads(&self) -> &[T] {
        let s = self.plan.grads;
        &self.buf[s.start..s.end()]
    }

    /// The gradients, writable: to combine them with another replica's before
    /// [`Network::optimizer_step`] (data-parallel training averages them).
    pub fn grads_mut(&mut self) -> &mut [T] {
        let s = self.plan.grads;
        &mut self.buf[s.start..s.end()]
    }

    /// The optimizer state (for checkpoints).
    pub fn state(&self) -> &[T] {
        let s = self.plan.state;
        &self.buf[s.start..s.end()]
    }

    /// The optimizer state, writable (to restore a checkpoint).
    pub fn state_mut(&mut self) -> &mut [T] {
        let s = self.plan.state;
        &mut self.buf[s.start..s.end()]
    }

    /// The running statistics (BatchNorm's means and variances), layer by layer.
    pub fn stats(&self) -> &[T] {
        let s = self.plan.stats;
        &self.buf[s.start..s.end()]
    }

    /// The running statistics, writable (to load a model).
    pub fn stats_mut(&mut self) -> &mut [T] {
        let s = self.plan.stats;
        &mut self.buf[s.start..s.end()]
    }

    /// The whole arena, every span of the plan (to inspect it: a count of subnormal values,
    /// say).
    pub fn arena(&self) -> &[T] {
        self.buf
    }

    /// The generator the Dropout layers draw their masks from (for checkpoints).
    pub fn rng(&self) -> &Rng {
        &self.rng
    }

    /// Replaces the Dropout generator (to restore a checkpoint, or to seed it).
    pub fn set_rng(&mut self, rng: Rng) {
        self.rng = rng;
    }

    /// The input rows to fill before a pass over [`Input::Arena`]: `rows × d_in` values.
    ///
    /// # Panics
    /// If `rows` exceeds the planned forward rows.
    pub fn input_mut(&mut self, rows: usize) -> &mut [T] {
        let s = self.plan.act[0].prefix(rows * self.plan.d_in());
        &mut self.buf[s.start..s.end()]
    }

    /// The rows `input` holds, checked against the plan for a pass in `mode`.
    ///
    /// # Panics
    /// If the input has more rows than the plan holds for `mode`, is not a whole number of
    /// rows, is sparse for a plan whose first layer is not Affine or has another width, or
    /// if `mode` is [`Mode::Train`] on an [`Training::Inference`] plan.
    fn rows_of(&self, input: &Input<'_, T>, mode: Mode) -> usize {
        let plan = self.plan;
        let d_in = plan.d_in();
        let rows = input.rows(d_in);
        let limit = match mode {
            Mode::Train => {
                assert!(plan.trains(), "a training pass on an Inference plan");
                plan.batch
            }
            Mode::Eval => plan.rows,
        };
        assert!(rows <= limit, "{rows} rows exceed the planned {limit}");
        match input {
            Input::Dense(x) => assert_eq!(x.len(), rows * d_in, "not whole rows of {d_in}"),
            Input::Sparse(b) => assert!(
                plan.accepts_sparse() && b.x.cols() == d_in,
                "sparse rows of width {} for a plan of width {d_in} (sparse: {})",
                b.x.cols(),
                plan.accepts_sparse()
            ),
            Input::Arena(_) => {}
        }
        rows
    }

    /// Where layer `l` reads its input in a pass over `rows` rows of `input`.
    fn input_rows<'x>(&self, l: usize, input: Input<'x, T>, rows: usize) -> Rows<'x, T> {
        let plan = self.plan;
        match (l, input) {
            (0, Input::Dense(x)) => Rows::Caller(x),
            // Sparse rows go to a first Affine layer, which reads them itself
            // ([`Network::sparse_forward`]); `rows_of` refuses them for any other.
            (0, Input::Sparse(_)) => Rows::Caller(&[]),
            _ => Rows::Arena(plan.act[l].prefix(rows * plan.shapes[l].len())),
        }
    }

    /// The forward pass over `rows` rows of `input`; the logits are then in `act[count]`.
    fn run_forward(&mut self, mm: &impl Gemm<T>, input: Input<'_, T>, rows: usize, mode: Mode) {
        let plan = self.plan;
        let first = self.sparse_forward(input, rows);
        for l in first..plan.count {
            let step = ForwardStep {
                mode,
                x: self.input_rows(l, input, rows),
                y: plan.act[l + 1].prefix(rows * plan.shapes[l + 1].len()),
                p: plan.layer_params[l],
                stats: plan.stats_span(l),
                cache: match mode {
                    Mode::Train => plan.caches[l],
                    Mode::Eval => NONE,
                },
                scratch: plan.scratch,
                shapes: plan.shapes_of(l),
            };
            plan.layers[l].forward(mm, self.buf, &mut self.rng, step);
        }
    }

    /// The first Affine layer's forward over sparse rows, if the input is sparse; returns the
    /// layers done (1 or 0).
    fn sparse_forward(&mut self, input: Input<'_, T>, rows: usize) -> usize {
        let plan = self.plan;
        let (Input::Sparse(b), Some(a)) = (input, plan.first_affine) else {
            return 0;
        };
        let y = plan.act[1].prefix(rows * plan.shapes[1].len());
        let [p, y] = spans_mut(self.buf, [plan.layer_params[0], y]);
        a.forward_sparse(p, b.x, y);
        1
    }

    /// Forward pass over `input` in `mode`; returns the logits, `[rows, classes]`.
    ///
    /// A training-mode pass uses and updates what training does (BatchNorm's batch and
    /// running statistics, a new Dropout mask); evaluation changes nothing in the arena but
    /// the activations.
    ///
    /// # Panics
    /// If the input does not fit the plan (more rows than planned for `mode`, a width other
    /// than the input's, sparse rows for a first layer that is not Affine), or a training
    /// pass on an [`Training::Inference`] plan.
    pub fn forward(&mut self, mm: &impl Gemm<T>, input: Input<'_, T>, mode: Mode) -> &[T] {
        let rows = self.rows_of(&input, mode);
        self.run_forward(mm, input, rows, mode);
        let out = self.plan.act[self.plan.count].prefix(rows * self.plan.classes());
        &self.buf[out.start..out.end()]
    }

    /// `½·λ·Σ W²` over every decayed weight (Affine's and Conv2d's).
    fn penalty(&self, weight_decay: T) -> T {
        if weight_decay == T::ZERO {
            return T::ZERO;
        }
        let plan = self.plan;
        let mut sum = T::ZERO;
        for (l, layer) in plan.layers().iter().enumerate() {
            let (p, w) = (plan.layer_params[l], layer.decayed(plan.shapes_of(l)));
            sum += half_sum_of_squares(&self.buf[p.start + w.start..p.start + w.end()]);
        }
        weight_decay * sum
    }

    /// The forward pass, then the mean cross-entropy plus the weight penalty.
    fn run_loss(
        &mut self,
        mm: &impl Gemm<T>,
        input: Input<'_, T>,
        rows: usize,
        target: Target<'_, T>,
        mode: Mode,
        weight_decay: T,
    ) -> T {
        let c = self.plan.classes();
        assert_eq!(target.rows(c), rows, "targets for {rows} rows");
        self.run_forward(mm, input, rows, mode);
        let plan = self.plan;
        let [logits, probs] = spans_mut(
            self.buf,
            [
                plan.act[plan.count].prefix(rows * c),
                plan.probs.prefix(rows * c),
            ],
        );
        let loss = SoftmaxWithLoss { classes: c }.forward(logits, target, probs);
        loss + self.penalty(weight_decay)
    }

    /// The book's `loss(x, t)`: forward pass in `mode`, mean cross-entropy over the rows,
    /// plus `½·λ·Σ W²` for `weight_decay = λ`.
    ///
    /// # Panics
    /// As [`Network::forward`] (with a training batch's limit in both modes), or if the
    /// target has a different number of rows.
    pub fn loss(
        &mut self,
        mm: &impl Gemm<T>,
        input: Input<'_, T>,
        target: Target<'_, T>,
        mode: Mode,
        weight_decay: T,
    ) -> T {
        let rows = self.rows_of(&input, mode);
        assert!(
            rows <= self.plan.batch,
            "{rows} rows exceed the planned batch {}",
            self.plan.batch
        );
        self.run_loss(mm, input, rows, target, mode, weight_decay)
    }

    /// Backward from the loss of the last training forward: the softmax's gradient, then
    /// [`Network::run_layers_backward`].
    fn run_backward(
        &mut self,
        mm: &impl Gemm<T>,
        input: Input<'_, T>,
        rows: usize,
        target: Target<'_, T>,
        fused: Option<T>,
        weight_decay: T,
    ) {
        let plan = self.plan;
        let c = plan.classes();
        let [probs, d_logits] = spans_mut(
            self.buf,
            [
                plan.probs.prefix(rows * c),
                plan.d_act[plan.count].prefix(rows * c),
            ],
        );
        SoftmaxWithLoss { classes: c }.backward(probs, target, d_logits);
        self.run_layers_backward(mm, input, rows, fused, weight_decay);
    }

    /// Every layer's backward in reverse, from the logits' gradient in `d_act[count]`, with
    /// each parameter gradient written (`fused == None`) or applied as fused SGD (`Some(lr)`).
    fn run_layers_backward(
        &mut self,
        mm: &impl Gemm<T>,
        input: Input<'_, T>,
        rows: usize,
        fused: Option<T>,
        weight_decay: T,
    ) {
        let plan = self.plan;
        for l in (0..plan.count).rev() {
            // Nothing consumes the gradient of the network's input.
            if l == 0 && plan.layer_params[0].len == 0 {
                break;
            }
            if let (0, Input::Sparse(b), Some(a)) = (l, input, plan.first_affine) {
                self.sparse_backward(a, b, rows, fused, weight_decay);
                break;
            }
            let (in_len, out_len) = (rows * plan.shapes[l].len(), rows * plan.shapes[l + 1].len());
            let step = BackwardStep {
                x: self.input_rows(l, input, rows),
                y: plan.act[l + 1].prefix(out_len),
                dy: plan.d_act[l + 1].prefix(out_len),
                dx: (l > 0).then(|| plan.d_act[l].prefix(in_len)),
                p: plan.layer_params[l],
                grad: match fused {
                    None => GradStep::Write(plan.grad_span(l), weight_decay),
                    Some(lr) => GradStep::Sgd(lr, weight_decay),
                },
                cache: plan.caches[l],
                scratch: plan.scratch,
                shapes: plan.shapes_of(l),
            };
            plan.layers[l].backward(mm, self.buf, step);
        }
    }

    /// The first Affine layer's backward over sparse rows: its weight gradient written (plus
    /// `decay·W`), or fused SGD with learning rate `Some(lr)`.
    fn sparse_backward(
        &mut self,
        a: Affine,
        b: SparseBatch<'_, T>,
        rows: usize,
        fused: Option<T>,
        decay: T,
    ) {
        let plan = self.plan;
        let dy = plan.d_act[1].prefix(rows * plan.shapes[1].len());
        match fused {
            None => {
                let [p, g, dy] = spans_mut(self.buf, [plan.layer_params[0], plan.grad_span(0), dy]);
                a.backward_sparse(b.x, b.xt, dy, g);
                a.add_decay(decay, p, g);
            }
            Some(lr) => {
                let [p, dy] = spans_mut(self.buf, [plan.layer_params[0], dy]);
                a.backward_sgd_sparse(lr, decay, p, b.x, b.xt, dy);
            }
        }
    }

    /// One training step: forward in training mode, the loss, backward, and the update.
    /// Returns the loss before the update (with the weight penalty, if any).
    ///
    /// `input` is the batch: the arena's input rows, a caller's dense rows, or sparse rows
    /// (the first layer then reads only the nonzeros; with the `Naive` backend the step is
    /// the dense one bit for bit). `update` was checked against the plan when it was made.
    ///
    /// # Panics
    /// If the input does not fit the plan (as [`Network::forward`], with the training batch's
    /// limit) or the target has a different number of rows: a caller's bug.
    pub fn train_step<O: Optimizer<T>>(
        &mut self,
        mm: &impl Gemm<T>,
        input: Input<'_, T>,
        target: Target<'_, T>,
        update: &mut Update<'_, T, O>,
    ) -> T {
        let rows = self.rows_of(&input, Mode::Train);
        let decay = update.weight_decay;
        let loss = self.run_loss(mm, input, rows, target, Mode::Train, decay);
        match update.rule {
            Rule::Gradients => self.run_backward(mm, input, rows, target, None, decay),
            Rule::FusedSgd(lr) => self.run_backward(mm, input, rows, target, Some(lr), decay),
            Rule::Optimizer(opt) => {
                self.run_backward(mm, input, rows, target, None, decay);
                let plan = self.plan;
                let [p, g, s] = spans_mut(self.buf, [plan.params, plan.grads, plan.state]);
                opt.step(update.t, p, g, s);
                update.t += 1;
            }
        }
        loss
    }

    /// The update's optimizer step alone, on the gradients as they stand, counting one step:
    /// the second half of [`Network::train_step`] for gradients written by steps with
    /// [`Update::gradients`] and combined by the caller (replicas of a data-parallel step,
    /// each on part of the batch, averaged by their rows).
    ///
    /// # Errors
    /// [`Error::InvalidValue`] unless `update` is an [`Update::optimizer`].
    pub fn optimizer_step<O: Optimizer<T>>(&mut self, update: &mut Update<'_, T, O>) -> Result<()> {
        let Rule::Optimizer(opt) = update.rule else {
            return Err(Error::InvalidValue {
                what: "an optimizer step needs an Update::optimizer",
            });
        };
        let plan = self.plan;
        let [p, g, s] = spans_mut(self.buf, [plan.params, plan.grads, plan.state]);
        opt.step(update.t, p, g, s);
        update.t += 1;
        Ok(())
    }

    /// Correct predictions (arg-max of the logits, evaluation mode) over a whole set, in
    /// chunks of the planned forward rows. `x` is `[n, d_in]`, `labels` `[n]`.
    ///
    /// # Panics
    /// If `x` and `labels` disagree in length.
    pub fn correct(&mut self, mm: &impl Gemm<T>, x: &[T], labels: &[usize]) -> usize {
        let d_in = self.plan.d_in();
        assert_eq!(x.len(), labels.len() * d_in, "inputs and labels disagree");
        let chunk = self.plan.rows;
        let c = self.plan.classes();
        let mut correct = 0;
        for (xs, ls) in x.chunks(chunk * d_in).zip(labels.chunks(chunk)) {
            let logits = self.forward(mm, Input::Dense(xs), Mode::Eval);
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

    /// Central differences of the training-mode loss over every parameter: two loss
    /// evaluations per parameter (79,520 for 784-50-10), written into `out` (`param_len`
    /// elements). This is what backprop replaces; it stays as the check. Parameters and the
    /// Dropout generator are restored exactly, so every evaluation draws the same masks
    /// (those the next training step will draw); BatchNorm's running statistics move as in
    /// any training pass.
    ///
    /// # Panics
    /// If `out.len()` differs from the parameter count, or as [`Network::loss`].
    pub fn numerical_gradient(
        &mut self,
        mm: &impl Gemm<T>,
        input: Input<'_, T>,
        target: Target<'_, T>,
        weight_decay: T,
        h: T,
        out: &mut [T],
    ) {
        assert_eq!(
            out.len(),
            self.plan.params.len,
            "numerical_gradient: output length"
        );
        for (i, o) in out.iter_mut().enumerate() {
            *o = self.numerical_partial(mm, input, target, weight_decay, h, i);
        }
    }

    /// The central difference `(L(p + h·eᵢ) − L(p − h·eᵢ)) / 2h` of the training-mode loss in
    /// parameter `i` alone: one element of [`Network::numerical_gradient`], restoring the
    /// parameter and the Dropout generator the same way.
    ///
    /// # Panics
    /// If `i` is not a parameter's index, or as [`Network::loss`].
    pub fn numerical_partial(
        &mut self,
        mm: &impl Gemm<T>,
        input: Input<'_, T>,
        target: Target<'_, T>,
        weight_decay: T,
        h: T,
        i: usize,
    ) -> T {
        assert!(
            i < self.plan.params.len,
            "parameter {i} of {}",
            self.plan.params.len
        );
        let rows = self.rows_of(&input, Mode::Train);
        let rng = self.rng.clone();
        let saved = self.buf[i];
        self.buf[i] = saved + h;
        let up = self.run_loss(mm, input, rows, target, Mode::Train, weight_decay);
        self.buf[i] = saved - h;
        self.rng = rng.clone();
        let down = self.run_loss(mm, input, rows, target, Mode::Train, weight_decay);
        self.buf[i] = saved;
        self.rng = rng;
        (up - down) / (h + h)
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

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::{PlanConfig, Shape, Spec};
    use manabi_matmul::Naive;
    use manabi_testkit::{assert_close, numeric_grad, probe};
    use std::vec;

    /// Every layer kind in one stack, checked end to end through the probe loss of the
    /// network's logits (not the softmax): forward in training mode against backward with
    /// the probe as the logits' gradient.
    #[test]
    fn a_stack_of_every_layer_matches_finite_differences() {
        const LAYERS: [Spec; 7] = [
            Spec::Affine(5),
            Spec::BatchNorm,
            Spec::Sigmoid,
            Spec::Dropout(0.3),
            Spec::Affine(4),
            Spec::Relu,
            Spec::Affine(3),
        ];
        let plan = Plan::new(&PlanConfig {
            input: Shape::flat(4),
            layers: &LAYERS,
            batch: 3,
            eval_batch: 3,
            training: Training::Backprop { optimizer_slots: 0 },
        })
        .unwrap();
        let mut arena = vec![0.0f64; plan.total()];
        let mut net = Network::new(&plan, &mut arena).unwrap();
        net.init(Init::Normal(0.7), &mut Rng::new(3));
        let x = probe(12, 8);
        let dropout = net.rng().clone();
        let params: std::vec::Vec<f64> = net.params().to_vec();
        let logits = |net: &mut Network<'_, f64>, p: &[f64], y: &mut [f64]| {
            net.params_mut().copy_from_slice(p);
            net.set_rng(dropout.clone());
            y.copy_from_slice(net.forward(&Naive, Input::Dense(&x), Mode::Train));
        };
        let r = probe(9, 2);
        let numeric = {
            let cell = core::cell::RefCell::new(&mut net);
            numeric_grad(|p, y| logits(&mut cell.borrow_mut(), p, y), &params, &r)
        };
        // Backprop with the probe as the gradient of the logits, through the layers only.
        let mut y = [0.0; 9];
        logits(&mut net, &params, &mut y);
        let d = plan.d_act[plan.count];
        net.buf[d.start..d.start + 9].copy_from_slice(&r);
        net.run_layers_backward(&Naive, Input::Dense(&x), 3, None, 0.0);
        assert_close(net.grads(), &numeric, 1e-7, 1e-5);
        // Sigmoid reads its output in backward, so the Dropout after it got its own span;
        // the ReLU after an Affine works in place.
        assert_eq!(
            (0..7)
                .map(|l| plan.in_place(l))
                .collect::<std::vec::Vec<_>>(),
            [false, false, true, false, false, true, false]
        );
    }
}
