//! Layers defined outside this crate: [`Custom`] holds a [`Dense`] or [`Pointwise`] kernel as a `&'static` trait object and its sizes as data ([`SizeRule`]), so a `const` plan can hold it.
//!
//! The kernel's methods are generic over the element type, which a trait object cannot be;
//! a private object-safe trait has one method per precision, implemented for every kernel,
//! and [`Real::per_precision`] picks the one for the pass's `T`. No `unsafe`, no check that
//! could fail.

use crate::kernel::{Backward, Dense, Forward, Grad, Pointwise, Shapes, Sizes};
use crate::pass::{self, BackwardStep, ForwardStep};
use crate::plan::{TensorInfo, mul, tri};
use crate::{Init, Mode, Shape};
use core::marker::PhantomData;
use manabi_matmul::{Gemm, Mat, MatMut};
use manabi_tensor::{Error, PerPrecision, Real, Result, Rng, Span};

/// A count that grows with a layer's sizes: `fixed + per_in·d_in + per_out·d_out +
/// per_in_out·d_in·d_out`, where `d_in` and `d_out` are the values of one input and one
/// output sample.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Count {
    /// Values whatever the sizes.
    pub fixed: usize,
    /// Values per input value.
    pub per_in: usize,
    /// Values per output value.
    pub per_out: usize,
    /// Values per pair of an input and an output value (a fully connected weight).
    pub per_in_out: usize,
}

impl Count {
    /// None.
    pub const ZERO: Count = Count {
        fixed: 0,
        per_in: 0,
        per_out: 0,
        per_in_out: 0,
    };

    /// The count for these sizes.
    ///
    /// # Errors
    /// [`Error::Overflow`] if it does not fit in `usize`.
    pub const fn eval(&self, d_in: usize, d_out: usize) -> Result<usize> {
        let terms = [
            self.fixed,
            tri!(mul(self.per_in, d_in)),
            tri!(mul(self.per_out, d_out)),
            tri!(mul(self.per_in_out, tri!(mul(d_in, d_out)))),
        ];
        let mut sum: usize = 0;
        let mut i = 0;
        while i < terms.len() {
            sum = match sum.checked_add(terms[i]) {
                Some(s) => s,
                None => return Err(Error::Overflow { what: "plan" }),
            };
            i += 1;
        }
        Ok(sum)
    }

    /// [`Count::eval`] for sizes it accepted (a planned layer's), saturating otherwise.
    const fn at(&self, d_in: usize, d_out: usize) -> usize {
        self.fixed
            .saturating_add(self.per_in.saturating_mul(d_in))
            .saturating_add(self.per_out.saturating_mul(d_out))
            .saturating_add(self.per_in_out.saturating_mul(d_in.saturating_mul(d_out)))
    }
}

/// A custom layer's output shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OutShape {
    /// The input's.
    Same,
    /// This one, whatever the input.
    Fixed(Shape),
}

/// What a custom layer needs, as data the plan evaluates in `const`: its output shape and its
/// counts as [`Count`]s of the input and output lengths.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SizeRule {
    /// The output shape.
    pub output: OutShape,
    /// Learned parameters.
    pub params: Count,
    /// Running statistics.
    pub stats: Count,
    /// Values kept from a training forward for backward, per sample.
    pub cache: Count,
    /// Working memory for each pass.
    pub scratch: Count,
    /// Whether backward reads the layer's output ([`Sizes::reads_output`]).
    pub reads_output: bool,
    /// Whether a training forward draws from the network's generator ([`Sizes::draws`]).
    pub draws: bool,
}

impl SizeRule {
    /// The input's shape and nothing else: start here and change what differs
    /// (`SizeRule { reads_output: true, ..SizeRule::SAME }`).
    pub const SAME: SizeRule = SizeRule {
        output: OutShape::Same,
        params: Count::ZERO,
        stats: Count::ZERO,
        cache: Count::ZERO,
        scratch: Count::ZERO,
        reads_output: false,
        draws: false,
    };

    /// The output shape on an input of shape `input`.
    pub const fn output(&self, input: Shape) -> Shape {
        match self.output {
            OutShape::Same => input,
            OutShape::Fixed(s) => s,
        }
    }

    /// The sizes on an input of shape `input`.
    ///
    /// # Errors
    /// [`Error::Zero`] for an empty output; [`Error::Overflow`] if a count does not fit.
    pub const fn sizes(&self, input: Shape) -> Result<Sizes> {
        let (d_in, d_out) = match (input.checked_len(), self.output(input).checked_len()) {
            (Some(0), _) | (_, Some(0)) => {
                return Err(Error::Zero {
                    what: "layer width",
                });
            }
            (Some(a), Some(b)) => (a, b),
            _ => return Err(Error::Overflow { what: "plan" }),
        };
        let counts = [self.params, self.stats, self.cache, self.scratch];
        let mut i = 0;
        while i < counts.len() {
            tri!(counts[i].eval(d_in, d_out));
            i += 1;
        }
        Ok(self.planned(input))
    }

    /// [`SizeRule::sizes`] on an input it accepted.
    const fn planned(&self, input: Shape) -> Sizes {
        let output = self.output(input);
        let (d_in, d_out) = (input.len(), output.len());
        Sizes {
            params: self.params.at(d_in, d_out),
            stats: self.stats.at(d_in, d_out),
            cache_per_sample: self.cache.at(d_in, d_out),
            scratch: self.scratch.at(d_in, d_out),
            reads_output: self.reads_output,
            draws: self.draws,
            ..Sizes::output(output)
        }
    }
}

/// A [`Gemm`] trait object as a backend type, for the generic kernels.
struct DynGemm<'a, T>(&'a dyn Gemm<T>);

impl<T: Real> Gemm<T> for DynGemm<'_, T> {
    fn gemm(&self, alpha: T, a: Mat<'_, T>, b: Mat<'_, T>, beta: T, c: MatMut<'_, T>) {
        self.0.gemm(alpha, a, b, beta, c);
    }

    fn name(&self) -> &'static str {
        self.0.name()
    }
}

/// One call of a dense kernel's generic methods, for one precision.
enum DenseCall<'a, T: Real> {
    Forward(&'a dyn Gemm<T>, Forward<'a, T>),
    Backward(&'a dyn Gemm<T>, Backward<'a, T>),
    Init(Shapes, Init, &'a mut Rng, &'a mut [T], &'a mut [T]),
}

/// A [`Dense`] kernel as a trait object: its generic methods once per precision.
trait DynDense: Sync {
    fn run_f32(&self, call: DenseCall<'_, f32>);
    fn run_f64(&self, call: DenseCall<'_, f64>);
    fn tensor(&self, shapes: Shapes, k: usize) -> Option<TensorInfo>;
    fn decayed(&self, shapes: Shapes) -> Span;
}

/// Runs `call` on `k`.
fn run_dense<K: Dense, T: Real>(k: &K, call: DenseCall<'_, T>) {
    match call {
        DenseCall::Forward(mm, f) => k.forward(&DynGemm(mm), f),
        DenseCall::Backward(mm, b) => k.backward(&DynGemm(mm), b),
        DenseCall::Init(shapes, init, rng, p, stats) => k.init(shapes, init, rng, p, stats),
    }
}

impl<K: Dense + Sync> DynDense for K {
    fn run_f32(&self, call: DenseCall<'_, f32>) {
        run_dense(self, call);
    }

    fn run_f64(&self, call: DenseCall<'_, f64>) {
        run_dense(self, call);
    }

    fn tensor(&self, shapes: Shapes, k: usize) -> Option<TensorInfo> {
        Dense::tensor(self, shapes, k)
    }

    fn decayed(&self, shapes: Shapes) -> Span {
        Dense::decayed(self, shapes)
    }
}

/// One call of a pointwise kernel's generic methods, for one precision.
enum PointwiseCall<'a, T: Real> {
    Forward(Mode, &'a mut Rng, &'a mut [T], &'a mut [T]),
    Backward(&'a [T], &'a [T], Grad<'a, T>),
}

/// A [`Pointwise`] kernel as a trait object.
trait DynPointwise: Sync {
    fn run_f32(&self, call: PointwiseCall<'_, f32>);
    fn run_f64(&self, call: PointwiseCall<'_, f64>);
}

/// Runs `call` on `k`.
fn run_pointwise<K: Pointwise, T: Real>(k: &K, call: PointwiseCall<'_, T>) {
    match call {
        PointwiseCall::Forward(mode, rng, v, cache) => k.forward(mode, rng, v, cache),
        PointwiseCall::Backward(y, cache, g) => k.backward(y, cache, g),
    }
}

impl<K: Pointwise + Sync> DynPointwise for K {
    fn run_f32(&self, call: PointwiseCall<'_, f32>) {
        run_pointwise(self, call);
    }

    fn run_f64(&self, call: PointwiseCall<'_, f64>) {
        run_pointwise(self, call);
    }
}

/// Picks a dense kernel's body for the pass's precision.
struct DenseBody<'a>(PhantomData<&'a ()>);

impl<'a> PerPrecision for DenseBody<'a> {
    type Of<T: Real> = (&'a dyn DynDense, DenseCall<'a, T>);
    type Out = ();

    fn f32((k, call): Self::Of<f32>) {
        k.run_f32(call);
    }

    fn f64((k, call): Self::Of<f64>) {
        k.run_f64(call);
    }
}

/// Picks a pointwise kernel's body for the pass's precision.
struct PointwiseBody<'a>(PhantomData<&'a ()>);

impl<'a> PerPrecision for PointwiseBody<'a> {
    type Of<T: Real> = (&'a dyn DynPointwise, PointwiseCall<'a, T>);
    type Out = ();

    fn f32((k, call): Self::Of<f32>) {
        k.run_f32(call);
    }

    fn f64((k, call): Self::Of<f64>) {
        k.run_f64(call);
    }
}

/// The kernel behind a [`DynDense`], as a [`Dense`] layer again.
struct AsDense(&'static dyn DynDense);

impl Dense for AsDense {
    fn forward<T: Real>(&self, mm: &impl Gemm<T>, f: Forward<'_, T>) {
        T::per_precision::<DenseBody<'_>>((self.0, DenseCall::Forward(mm, f)));
    }

    fn backward<T: Real>(&self, mm: &impl Gemm<T>, b: Backward<'_, T>) {
        T::per_precision::<DenseBody<'_>>((self.0, DenseCall::Backward(mm, b)));
    }

    fn init<T: Real>(&self, s: Shapes, init: Init, rng: &mut Rng, p: &mut [T], st: &mut [T]) {
        T::per_precision::<DenseBody<'_>>((self.0, DenseCall::Init(s, init, rng, p, st)));
    }

    fn tensor(&self, shapes: Shapes, k: usize) -> Option<TensorInfo> {
        self.0.tensor(shapes, k)
    }

    fn decayed(&self, shapes: Shapes) -> Span {
        self.0.decayed(shapes)
    }
}

/// The kernel behind a [`DynPointwise`], as a [`Pointwise`] layer again.
struct AsPointwise(&'static dyn DynPointwise);

impl Pointwise for AsPointwise {
    fn forward<T: Real>(&self, mode: Mode, rng: &mut Rng, v: &mut [T], cache: &mut [T]) {
        let call = PointwiseCall::Forward(mode, rng, v, cache);
        T::per_precision::<PointwiseBody<'_>>((self.0, call));
    }

    fn backward<T: Real>(&self, y: &[T], cache: &[T], g: Grad<'_, T>) {
        let call = PointwiseCall::Backward(y, cache, g);
        T::per_precision::<PointwiseBody<'_>>((self.0, call));
    }
}

/// Which trait a custom kernel implements.
#[derive(Clone, Copy)]
enum Kernel {
    Dense(&'static dyn DynDense),
    Pointwise(&'static dyn DynPointwise),
}

/// A layer defined outside this crate, for [`Spec::Custom`](crate::Spec::Custom): a name, a
/// kernel and its [`SizeRule`].
///
/// ```
/// use manabi_layers::{Custom, Grad, Mode, Pointwise, SizeRule, Spec};
/// use manabi_tensor::{Real, Rng};
///
/// /// `y = tanh(x)`; backward `dx = dy·(1 − y²)` reads the output.
/// struct Tanh;
///
/// impl Pointwise for Tanh {
///     fn forward<T: Real>(&self, _: Mode, _: &mut Rng, v: &mut [T], _: &mut [T]) {
///         v.iter_mut().for_each(|v| *v = v.tanh());
///     }
///     fn backward<T: Real>(&self, y: &[T], _: &[T], g: Grad<'_, T>) {
///         g.map(y, |y, dy| dy * (T::ONE - y * y));
///     }
/// }
///
/// const TANH: Spec = Spec::Custom(Custom::pointwise(
///     "tanh",
///     &Tanh,
///     &SizeRule { reads_output: true, ..SizeRule::SAME },
/// ));
/// const LAYERS: [Spec; 3] = [Spec::Affine(8), TANH, Spec::Affine(3)];
/// assert_eq!(TANH.to_string(), "tanh");
/// ```
///
/// Two customs are equal when their names, kinds and rules are: the name identifies the
/// kernel (it is also the layer's text form, [`Spec::parse_with`](crate::Spec::parse_with)).
#[derive(Clone, Copy)]
pub struct Custom {
    name: &'static str,
    kernel: Kernel,
    rule: &'static SizeRule,
}

impl Custom {
    /// A dense layer (input and output apart, parameters allowed).
    pub const fn dense<K: Dense + Sync>(
        name: &'static str,
        kernel: &'static K,
        rule: &'static SizeRule,
    ) -> Self {
        Self {
            name,
            kernel: Kernel::Dense(kernel),
            rule,
        }
    }

    /// A pointwise layer (one buffer; planning fails unless `rule` keeps the shape and has no
    /// parameters or statistics).
    pub const fn pointwise<K: Pointwise + Sync>(
        name: &'static str,
        kernel: &'static K,
        rule: &'static SizeRule,
    ) -> Self {
        Self {
            name,
            kernel: Kernel::Pointwise(kernel),
            rule,
        }
    }

    /// Its name, also its text form.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// Its size rule.
    pub const fn rule(&self) -> &'static SizeRule {
        self.rule
    }

    /// Whether its kernel is [`Pointwise`].
    pub const fn is_pointwise(&self) -> bool {
        matches!(self.kernel, Kernel::Pointwise(_))
    }
}

impl core::fmt::Debug for Custom {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Custom")
            .field("name", &self.name)
            .field("pointwise", &self.is_pointwise())
            .field("rule", &self.rule)
            .finish()
    }
}

impl PartialEq for Custom {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.is_pointwise() == other.is_pointwise()
            && *self.rule == *other.rule
    }
}

/// A [`Custom`] layer planned on an input shape.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CustomLayer {
    /// The layer as given.
    pub custom: Custom,
    /// One input sample's shape.
    pub input: Shape,
}

impl CustomLayer {
    /// `custom` on inputs of shape `input`.
    ///
    /// # Errors
    /// As [`SizeRule::sizes`]; [`Error::InvalidValue`] for a pointwise kernel whose rule
    /// changes the shape or has parameters or statistics.
    pub const fn new(custom: Custom, input: Shape) -> Result<Self> {
        let sizes = tri!(custom.rule.sizes(input));
        if custom.is_pointwise() {
            tri!(pass::pointwise::check(&sizes, input));
        }
        Ok(Self { custom, input })
    }

    /// Its sizes.
    pub const fn sizes(&self) -> Sizes {
        self.custom.rule.planned(self.input)
    }

    /// One sample's shapes.
    pub const fn shapes(&self) -> Shapes {
        Shapes {
            input: self.input,
            output: self.custom.rule.output(self.input),
        }
    }

    /// Whether the plan may put it in place (a pointwise kernel).
    pub const fn works_in_place(&self) -> bool {
        self.custom.is_pointwise()
    }

    pub(crate) fn forward<T: Real>(
        &self,
        mm: &impl Gemm<T>,
        buf: &mut [T],
        rng: &mut Rng,
        step: ForwardStep<'_, T>,
    ) {
        match self.custom.kernel {
            Kernel::Dense(k) => pass::dense::forward(&AsDense(k), mm, buf, rng, step),
            Kernel::Pointwise(k) => pass::pointwise::forward(&AsPointwise(k), mm, buf, rng, step),
        }
    }

    pub(crate) fn backward<T: Real>(
        &self,
        mm: &impl Gemm<T>,
        buf: &mut [T],
        step: BackwardStep<'_, T>,
    ) {
        match self.custom.kernel {
            Kernel::Dense(k) => pass::dense::backward(&AsDense(k), mm, buf, step),
            Kernel::Pointwise(k) => pass::pointwise::backward(&AsPointwise(k), mm, buf, step),
        }
    }

    pub(crate) fn init<T: Real>(&self, init: Init, rng: &mut Rng, p: &mut [T], st: &mut [T]) {
        if let Kernel::Dense(k) = self.custom.kernel {
            AsDense(k).init(self.shapes(), init, rng, p, st);
        }
    }

    pub(crate) fn tensor(&self, k: usize) -> Option<TensorInfo> {
        match self.custom.kernel {
            Kernel::Dense(d) => d.tensor(self.shapes(), k),
            Kernel::Pointwise(_) => None,
        }
    }

    pub(crate) fn decayed(&self) -> Span {
        match self.custom.kernel {
            Kernel::Dense(d) => d.decayed(self.shapes()),
            Kernel::Pointwise(_) => pass::NONE,
        }
    }
}
