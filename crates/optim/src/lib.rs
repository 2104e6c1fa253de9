//! manabi-optim: the optimizers of chapter 6 of "Deep Learning from Scratch", on flat slices.
//!
//! Every optimizer updates one flat slice of parameters in place from a slice of gradients
//! of the same length. The structs hold only hyper-parameters (they are `Copy`); all
//! training state lives in a caller-owned `state` slice (planned in the arena like
//! everything else) plus the step counter `t` the caller keeps. A step never allocates.
//!
//! | type | book class | state slots per parameter | update (with `g` the gradient) |
//! |---|---|---|---|
//! | [`Sgd`] | `SGD` | 0 | `p -= lr·g` |
//! | [`Momentum`] | `Momentum` | 1 (`v`) | `v = μ·v − lr·g; p += v` |
//! | [`Nesterov`] | `Nesterov` | 1 (`v`) | `v = μ·v − lr·g; p += μ²·v − (1+μ)·lr·g` (the new `v`) |
//! | [`AdaGrad`] | `AdaGrad` | 1 (`h`) | `h += g²; p −= lr·g / (√h + ε)` |
//! | [`RmsProp`] | `RMSprop` | 1 (`h`) | `h = ρ·h + (1−ρ)·g²; p −= lr·g / (√h + ε)` |
//! | [`Adam`] | `Adam` | 2 (`m`, `v`) | bias-corrected step size, `p −= lr_t·m / (√v + ε)` |
//!
//! Each rule is the one in the book's `common/optimizer.py`, in the same order of
//! operations; the type's docs spell it out with its paper. Weight decay, when non-zero,
//! is L2 regularisation added to the gradient before the rule (`g ← g + λ·p`, PyTorch's
//! default, not AdamW's decoupled decay), applied to every element passed — so pass only
//! the slices (weights, say) that should decay, or keep `λ = 0`.
//!
//! [`AnyOptimizer`] picks one at run time, by name (`"sgd"`, `"momentum"`, `"nesterov"`,
//! `"adagrad"`, `"rmsprop"`, `"adam"`).
//!
//! # Example
//! Plan → arena → step: three parameters minimising `½‖p‖²` (gradient `p`) with Adam,
//! whose state is two blocks `[m | v]` of three slots each.
//! ```
//! use manabi_optim::{Adam, Optimizer};
//! use manabi_tensor::{Arena, Planner};
//!
//! let adam = Adam::<f64>::new(0.05);
//! let mut plan = Planner::new();
//! let params = plan.take(3);
//! let grads = plan.take(3);
//! let state = plan.take(adam.state_len(3)); // must start zeroed
//! let mut buf = vec![0.0; plan.total()];
//! let mut arena = Arena::new(&mut buf, plan.total())?;
//! arena.get_mut(params).copy_from_slice(&[1.0, -2.0, 0.5]);
//! for t in 1..=500 {
//!     let [p, g, s] = arena.disjoint_mut([params, grads, state]);
//!     g.copy_from_slice(p); // the gradient of ½‖p‖² is p
//!     adam.step(t, p, g, s);
//! }
//! assert!(arena.get(params).iter().all(|p| p.abs() < 0.05));
//! # Ok::<(), manabi_optim::Error>(())
//! ```
//!
//! # Features
//! - `std` (default): implies `alloc`; passes `std` on to `manabi-tensor`.
//! - `alloc`: passes `alloc` on to `manabi-tensor`. This crate itself never allocates, so
//!   it builds and behaves the same without either feature (`no_std`, no heap).
//!
//! MSRV: Rust 1.85 (edition 2024).
#![no_std]
#![forbid(unsafe_code)]

mod adagrad;
mod adam;
mod momentum;
mod nesterov;
mod rmsprop;
mod sgd;

pub use adagrad::{ADAGRAD_EPS, AdaGrad};
pub use adam::{ADAM_EPS, Adam, DEFAULT_BETA1, DEFAULT_BETA2};
pub use manabi_tensor::{Error, Real};
pub use momentum::{DEFAULT_MOMENTUM, Momentum};
pub use nesterov::Nesterov;
pub use rmsprop::{DEFAULT_DECAY_RATE, RMSPROP_EPS, RmsProp};
pub use sgd::Sgd;

/// An update rule applied in place to a flat slice of parameters.
///
/// The implementor holds only hyper-parameters; the per-parameter state is the caller's
/// `state` slice and the step count is the caller's `t`, so one optimizer value can update
/// any number of parameter slices, each with its own state.
pub trait Optimizer<T: Real> {
    /// State slots per parameter: SGD 0; Momentum, Nesterov, AdaGrad, RMSprop 1; Adam 2.
    fn slots(&self) -> usize;

    /// One update of `params` in place from `grads`.
    ///
    /// - `state.len() == slots() * params.len()`, laid out as `slots()` consecutive blocks
    ///   of `params.len()` elements (Adam: `[m | v]`). It must start zeroed and be handed
    ///   back unchanged between steps.
    /// - `t` is the 1-based count of updates made so far including this one (Adam's bias
    ///   correction uses it; the others ignore it).
    ///
    /// Never allocates and never fails.
    ///
    /// # Panics
    /// In debug builds, if `grads.len() != params.len()`,
    /// `state.len() != slots() * params.len()`, or `t == 0` (Adam). Release builds do not
    /// check; mismatched lengths then leave some elements unchanged (never out of bounds,
    /// never undefined behaviour). Adam treats `t == 0` as `t == 1` in release builds.
    fn step(&self, t: u64, params: &mut [T], grads: &[T], state: &mut [T]);

    /// State slots needed for `param_len` parameters: `slots() * param_len`, the span to
    /// plan for this optimizer.
    fn state_len(&self, param_len: usize) -> usize {
        self.slots() * param_len
    }
}

/// One of the six optimizers, chosen at run time (from a command-line name, say).
///
/// Implements [`Optimizer`] by dispatching to the variant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AnyOptimizer<T> {
    /// [`Sgd`], name `"sgd"`.
    Sgd(Sgd<T>),
    /// [`Momentum`], name `"momentum"`.
    Momentum(Momentum<T>),
    /// [`Nesterov`], name `"nesterov"`.
    Nesterov(Nesterov<T>),
    /// [`AdaGrad`], name `"adagrad"`.
    AdaGrad(AdaGrad<T>),
    /// [`RmsProp`], name `"rmsprop"`.
    RmsProp(RmsProp<T>),
    /// [`Adam`], name `"adam"`.
    Adam(Adam<T>),
}

/// Applies the same expression to whichever optimizer the enum holds.
macro_rules! dispatch {
    ($any:expr, $o:ident => $e:expr) => {
        match $any {
            AnyOptimizer::Sgd($o) => $e,
            AnyOptimizer::Momentum($o) => $e,
            AnyOptimizer::Nesterov($o) => $e,
            AnyOptimizer::AdaGrad($o) => $e,
            AnyOptimizer::RmsProp($o) => $e,
            AnyOptimizer::Adam($o) => $e,
        }
    };
}

impl<T: Real> AnyOptimizer<T> {
    /// Every name [`AnyOptimizer::from_name`] accepts, in the book's order.
    pub const NAMES: [&'static str; 6] =
        ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"];

    /// The optimizer called `name` (ASCII case ignored), with learning rate `lr` and the
    /// book's defaults for everything else (see each type's `new`); weight decay 0.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] if `name` is not one of [`AnyOptimizer::NAMES`], or if `lr`
    /// is negative or not finite.
    pub fn from_name(name: &str, lr: T) -> Result<Self, Error> {
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        let opt = if is("sgd") {
            Self::Sgd(Sgd::new(lr))
        } else if is("momentum") {
            Self::Momentum(Momentum::new(lr))
        } else if is("nesterov") {
            Self::Nesterov(Nesterov::new(lr))
        } else if is("adagrad") {
            Self::AdaGrad(AdaGrad::new(lr))
        } else if is("rmsprop") {
            Self::RmsProp(RmsProp::new(lr))
        } else if is("adam") {
            Self::Adam(Adam::new(lr))
        } else {
            return Err(Error::InvalidValue {
                what: "optimizer name (expected sgd, momentum, nesterov, adagrad, rmsprop or adam)",
            });
        };
        opt.validate()?;
        Ok(opt)
    }

    /// The lower-case name [`AnyOptimizer::from_name`] accepts for this variant.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Sgd(_) => "sgd",
            Self::Momentum(_) => "momentum",
            Self::Nesterov(_) => "nesterov",
            Self::AdaGrad(_) => "adagrad",
            Self::RmsProp(_) => "rmsprop",
            Self::Adam(_) => "adam",
        }
    }

    /// Checks the hyper-parameters of the variant (see each type's `validate`).
    ///
    /// # Errors
    /// [`Error::InvalidValue`] naming the first bad hyper-parameter: a negative or
    /// non-finite learning rate or weight decay, or a momentum, decay rate or beta outside
    /// `[0, 1)`.
    pub fn validate(&self) -> Result<(), Error> {
        dispatch!(self, o => o.validate())
    }

    /// The learning rate.
    pub fn lr(&self) -> T {
        dispatch!(self, o => o.lr)
    }

    /// The same optimizer with learning rate `lr` (for a schedule, say).
    pub fn with_lr(mut self, lr: T) -> Self {
        dispatch!(&mut self, o => o.lr = lr);
        self
    }

    /// The L2 weight-decay coefficient λ.
    pub fn weight_decay(&self) -> T {
        dispatch!(self, o => o.weight_decay)
    }

    /// The same optimizer with weight decay `weight_decay` (λ in `g + λ·p`).
    pub fn with_weight_decay(mut self, weight_decay: T) -> Self {
        dispatch!(&mut self, o => o.weight_decay = weight_decay);
        self
    }
}

impl<T: Real> Optimizer<T> for AnyOptimizer<T> {
    fn slots(&self) -> usize {
        dispatch!(self, o => o.slots())
    }

    fn step(&self, t: u64, params: &mut [T], grads: &[T], state: &mut [T]) {
        dispatch!(self, o => o.step(t, params, grads, state))
    }
}

macro_rules! impl_from {
    ($($ty:ident),*) => {$(
        impl<T> From<$ty<T>> for AnyOptimizer<T> {
            fn from(o: $ty<T>) -> Self {
                Self::$ty(o)
            }
        }
    )*};
}
impl_from!(Sgd, Momentum, Nesterov, AdaGrad, RmsProp, Adam);

/// `x`, or zero if it is subnormal (nonzero and below [`Real::MIN_POSITIVE`]).
///
/// Every optimizer stores its state through this. A state that decays while its gradient is
/// zero (Adam's `m ← 0.9·m` for a unit that stopped learning) reaches the subnormal range and,
/// rounding to nearest, stays there for good (`0.9·2⁻¹⁴⁹` rounds back to `2⁻¹⁴⁹`): a
/// SimpleConvNet trained with Adam holds about 91,000 such values after 800 steps. Intel cores
/// then take a microcode assist on each operation that reads one, and the steps run twice as
/// long. The flush changes no parameter: a subnormal state moves its parameter by at most
/// `lr·2⁻¹²⁶/ε` (about 1e-35 for Adam), far below half an ulp of any weight above 1e-28. It
/// is a select, which vectorises, and it runs the same on every CPU and on the device, so runs
/// stay reproducible everywhere (unlike the x86 flush-to-zero bits, which would leave the
/// Cortex-M and a host without them on other bits).
#[inline]
pub(crate) fn flush<T: Real>(x: T) -> T {
    if x.abs() < T::MIN_POSITIVE {
        T::ZERO
    } else {
        x
    }
}

/// The gradient with L2 weight decay folded in: `g + λ·p`.
#[inline(always)]
fn decayed<T: Real>(g: T, p: T, weight_decay: T) -> T {
    g + weight_decay * p
}

/// Checks the slice lengths of a step (debug builds only).
#[inline(always)]
fn debug_check_lens<T>(slots: usize, params: &[T], grads: &[T], state: &[T]) {
    debug_assert_eq!(
        grads.len(),
        params.len(),
        "grads and params differ in length"
    );
    debug_assert_eq!(
        state.len(),
        slots * params.len(),
        "state must hold slots() * params.len() elements"
    );
}

/// `Ok` if `x` is finite and `>= 0`, else `InvalidValue { what }`.
fn check_non_negative<T: Real>(x: T, what: &'static str) -> Result<(), Error> {
    if x.is_finite() && x >= T::ZERO {
        Ok(())
    } else {
        Err(Error::InvalidValue { what })
    }
}

/// `Ok` if `0 <= x < 1` (so not NaN), else `InvalidValue { what }`.
fn check_unit<T: Real>(x: T, what: &'static str) -> Result<(), Error> {
    if x >= T::ZERO && x < T::ONE {
        Ok(())
    } else {
        Err(Error::InvalidValue { what })
    }
}

/// Messages of the errors `validate` returns, shared so tests can match on them.
const BAD_LR: &str = "learning rate (must be finite and >= 0)";
/// See [`BAD_LR`].
const BAD_WEIGHT_DECAY: &str = "weight decay (must be finite and >= 0)";

#[cfg(test)]
mod tests {
    use super::*;

    fn all(lr: f64) -> [AnyOptimizer<f64>; 6] {
        AnyOptimizer::<f64>::NAMES.map(|n| match AnyOptimizer::from_name(n, lr) {
            Ok(o) => o,
            Err(e) => panic!("{n}: {e}"),
        })
    }

    #[test]
    fn from_name_round_trips_every_name() {
        for (name, opt) in AnyOptimizer::<f64>::NAMES.iter().zip(all(0.25)) {
            assert_eq!(opt.name(), *name);
            assert_eq!(opt.lr(), 0.25);
            assert_eq!(opt.weight_decay(), 0.0);
            assert_eq!(AnyOptimizer::from_name(opt.name(), 0.25), Ok(opt));
        }
        assert_eq!(
            AnyOptimizer::from_name("ADAM", 0.5f32),
            Ok(AnyOptimizer::Adam(Adam::new(0.5)))
        );
        assert_eq!(
            AnyOptimizer::from_name("RmsProp", 0.5f32),
            Ok(AnyOptimizer::RmsProp(RmsProp::new(0.5)))
        );
    }

    #[test]
    fn from_name_rejects_unknown_names_and_bad_rates() {
        for bad in ["sgdd", "", "adam ", "nag", "rms_prop"] {
            match AnyOptimizer::from_name(bad, 0.1f64) {
                Err(Error::InvalidValue { what }) => assert!(what.contains("optimizer name")),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
        for lr in [-0.1, f64::NAN, f64::INFINITY] {
            assert_eq!(
                AnyOptimizer::from_name("sgd", lr),
                Err(Error::InvalidValue { what: BAD_LR })
            );
        }
    }

    #[test]
    fn validate_rejects_negative_and_nan_rates_for_every_optimizer() {
        for opt in all(0.1) {
            assert_eq!(opt.validate(), Ok(()), "{}", opt.name());
            for lr in [-0.1, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
                assert_eq!(
                    opt.with_lr(lr).validate(),
                    Err(Error::InvalidValue { what: BAD_LR }),
                    "{} lr {lr}",
                    opt.name()
                );
            }
            for wd in [-0.1, f64::NAN, f64::INFINITY] {
                assert_eq!(
                    opt.with_weight_decay(wd).validate(),
                    Err(Error::InvalidValue {
                        what: BAD_WEIGHT_DECAY
                    }),
                    "{} wd {wd}",
                    opt.name()
                );
            }
            assert_eq!(opt.with_lr(0.0).with_weight_decay(0.0).validate(), Ok(()));
            assert_eq!(opt.with_weight_decay(1e-4).weight_decay(), 1e-4);
        }
    }

    #[test]
    fn validate_keeps_momenta_and_betas_in_unit_interval() {
        let bad = [-0.1, 1.0, 1.5, f64::NAN];
        for x in bad {
            let m = Momentum {
                momentum: x,
                ..Momentum::new(0.1)
            };
            assert!(matches!(m.validate(), Err(Error::InvalidValue { .. })));
            let n = Nesterov {
                momentum: x,
                ..Nesterov::new(0.1)
            };
            assert!(matches!(n.validate(), Err(Error::InvalidValue { .. })));
            let r = RmsProp {
                decay_rate: x,
                ..RmsProp::new(0.1)
            };
            assert!(matches!(r.validate(), Err(Error::InvalidValue { .. })));
            let a1 = Adam {
                beta1: x,
                ..Adam::new(0.1)
            };
            assert!(matches!(a1.validate(), Err(Error::InvalidValue { .. })));
            let a2 = Adam {
                beta2: x,
                ..Adam::new(0.1)
            };
            assert!(matches!(a2.validate(), Err(Error::InvalidValue { .. })));
        }
        let zero = Adam {
            beta1: 0.0,
            beta2: 0.0,
            ..Adam::new(0.1)
        };
        assert_eq!(zero.validate(), Ok(()));
        assert_eq!(
            AnyOptimizer::from(Momentum {
                momentum: 0.0,
                ..Momentum::new(0.1)
            })
            .validate(),
            Ok(())
        );
    }

    #[test]
    fn slots_and_state_len_follow_the_table() {
        let slots = all(0.1).map(|o| o.slots());
        assert_eq!(slots, [0, 1, 1, 1, 1, 2]);
        let lens = all(0.1).map(|o| o.state_len(7));
        assert_eq!(lens, [0, 7, 7, 7, 7, 14]);
    }

    #[test]
    fn zero_gradient_from_fresh_state_changes_nothing() {
        // With zero state and zero gradient every rule's step is exactly zero
        // (v = 0, h = 0 so 0 / (0 + ε) = 0, m = 0).
        for opt in all(0.1) {
            let start = [1.5, -0.25, 3.0, 0.0];
            let mut p = start;
            let mut state = [0.0; 8];
            let state = &mut state[..opt.state_len(4)];
            for t in 1..=3 {
                opt.step(t, &mut p, &[0.0; 4], state);
            }
            assert_eq!(p, start, "{}", opt.name());
            assert!(state.iter().all(|&s| s == 0.0), "{}", opt.name());
        }
    }

    #[test]
    fn weight_decay_is_l2_added_to_the_gradient() {
        // Stated rule: a step with decay λ and gradient g equals a step without decay and
        // gradient g + λ·p, bit for bit, for every optimizer; and λ > 0 does change it.
        let lambda = 0.05;
        let g = [0.3, -1.2, 0.0, 2.5];
        for opt in all(0.1) {
            let start = [1.0, -2.0, 0.5, 4.0];
            let (mut p_a, mut p_b, mut p_c) = (start, start, start);
            let (mut s_a, mut s_b, mut s_c) = ([0.0; 8], [0.0; 8], [0.0; 8]);
            let n = opt.state_len(4);
            for t in 1..=4 {
                let g_plus: [f64; 4] = core::array::from_fn(|i| g[i] + lambda * p_b[i]);
                opt.with_weight_decay(lambda)
                    .step(t, &mut p_a, &g, &mut s_a[..n]);
                opt.step(t, &mut p_b, &g_plus, &mut s_b[..n]);
                opt.step(t, &mut p_c, &g, &mut s_c[..n]);
            }
            assert_eq!(p_a, p_b, "{}", opt.name());
            assert_eq!(s_a, s_b, "{}", opt.name());
            assert_ne!(p_a, p_c, "{}", opt.name());
            // Decay on a parameter with zero gradient pulls it toward zero.
            assert!(p_a[2].abs() < 0.5, "{}", opt.name());
        }
    }

    #[test]
    fn f32_follows_f64() {
        // The same rules in f32 stay within f32 rounding of the f64 run.
        for name in AnyOptimizer::<f64>::NAMES {
            let (Ok(o32), Ok(o64)) = (
                AnyOptimizer::from_name(name, 0.05f32),
                AnyOptimizer::from_name(name, 0.05f64),
            ) else {
                panic!("{name}");
            };
            let (mut p32, mut p64) = ([1.0f32, -0.5, 2.0], [1.0f64, -0.5, 2.0]);
            let (mut s32, mut s64) = ([0.0f32; 6], [0.0f64; 6]);
            let n = o32.state_len(3);
            for t in 1..=20 {
                let g32 = p32.map(|p| 2.0 * p);
                let g64 = p64.map(|p| 2.0 * p);
                o32.step(t, &mut p32, &g32, &mut s32[..n]);
                o64.step(t, &mut p64, &g64, &mut s64[..n]);
            }
            for (a, b) in p32.iter().zip(&p64) {
                assert!((f64::from(*a) - b).abs() < 1e-5, "{name}: {a} vs {b}");
            }
        }
    }
}
