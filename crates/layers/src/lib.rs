//! manabi-layers: the layers of *Deep Learning from Scratch* as a `no_std` library, stacked into networks.
//!
//! Each layer is a `forward`/`backward` pair written side by side in its own file, generic
//! over [`Real`](manabi_tensor::Real) and taking a [`Gemm`](manabi_matmul::Gemm) backend,
//! with its own gradient check against central differences:
//!
//! - [`Affine`]: `y = x·W + b`; backward `dx = dy·Wᵀ`, `dW = xᵀ·dy`, `db = Σ dy`.
//! - [`Relu`]: `max(0, x)`; backward masks.
//! - [`Sigmoid`]: backward `dy·y·(1 − y)`.
//! - [`BatchNorm`]: the book's `BatchNormalization`, per activation, with running statistics.
//! - [`Dropout`]: the book's `Dropout` (not inverted: evaluation scales by `1 − ratio`).
//! - [`Conv2d`]: the book's `Convolution`, im2col and one product per sample; backward
//!   `dW = Σ dy·colᵀ`, `dx = col2im(Wᵀ·dy)`; weights in PyTorch's `[f, c, kh, kw]` layout.
//! - [`MaxPool2d`]: the book's `Pooling`; backward sends the gradient to each window's max.
//! - [`AvgPool2d`]: PyTorch's `nn.AvgPool2d`; backward spreads the gradient over each window.
//! - [`SoftmaxWithLoss`]: fused softmax and cross-entropy; backward `(y − t)/batch`.
//!
//! The built-in layers are one list, at the end of this file: each is its own file and one
//! line there, and the list generates [`Spec`], [`Layer`] and every dispatch. A layer of one's
//! own implements [`Dense`] or [`Pointwise`] outside this crate and joins a stack as
//! [`Spec::Custom`] ([`Custom`]).
//!
//! A [`Network`] is a list of layers ([`Spec`]s, resolved into [`Layer`]s) over one arena
//! planned by [`Plan`]: parameters, gradients, optimizer state, running statistics,
//! activations and caches, sized exactly and reported; `Plan::new` is `const`, so firmware
//! sizes a `static` arena at compile time. [`Network::forward`] takes a [`Mode`] (train or
//! eval); [`Network::train_step`] is the one training entry point, taking an [`Input`] (the
//! arena's rows, a caller's dense rows, or sparse rows), the target, and an [`Update`]
//! (gradients only, fused SGD, or an optimizer with its step count) that was checked against
//! the plan when it was made. Backward passes write their outputs, never add to them.
//! [`gradcheck`] compares backprop with central differences per parameter tensor, for any
//! network and any input kind.
//!
//! Inputs that are mostly zero (MNIST's pixels: 81 %) can come as compressed sparse rows
//! ([`SparseBatch`], [`Input::Sparse`]) when the first layer is Affine: its forward product
//! and weight gradient then read only the nonzeros, in the `Naive` backend's order of sums,
//! so that with `Naive` a sparse step is the dense step bit for bit.
//!
//! ```
//! use manabi_layers::{Init, Input, Network, Plan, PlanConfig, Shape, Spec, Target, Training, Update};
//! use manabi_matmul::Naive;
//! use manabi_tensor::Rng;
//!
//! // Plan: 4 inputs, affine 8, batch norm, ReLU, dropout 0.2, affine 3; batch 2, plain SGD.
//! const LAYERS: [Spec; 5] =
//!     [Spec::Affine(8), Spec::BatchNorm, Spec::Relu, Spec::Dropout(0.2), Spec::Affine(3)];
//! let plan = Plan::new(&PlanConfig {
//!     input: Shape::flat(4),
//!     layers: &LAYERS,
//!     batch: 2,
//!     eval_batch: 2,
//!     training: Training::FusedSgd,
//! })?;
//! // Arena: one buffer of exactly plan.total() elements, here from the heap (`alloc`); on a
//! // microcontroller a `static` array of that length.
//! let mut arena = plan.alloc_arena::<f32>();
//! assert_eq!(arena.len(), plan.total());
//! let mut net = Network::new(&plan, &mut arena)?;
//! net.init(Init::He, &mut Rng::new(1));
//! // Setup checks the update against the plan; the step itself cannot fail.
//! let mut sgd = Update::fused_sgd(&plan, 0.1)?;
//! net.input_mut(2).copy_from_slice(&[0.5, -1.0, 0.25, 2.0, 1.0, 0.0, -0.5, 0.75]);
//! let loss = net.train_step(&Naive, Input::Arena(2), Target::Labels(&[2, 0]), &mut sgd);
//! assert!(loss.is_finite());
//! // A plan without a gradient buffer cannot take an optimizer: an error at setup.
//! let adam = manabi_optim::Adam::new(0.001);
//! assert!(Update::optimizer(&plan, &adam, 1).is_err());
//! # Ok::<(), manabi_tensor::Error>(())
//! ```
//!
//! # Features
//! - `alloc`: [`Plan::alloc_arena`], a zeroed heap arena of exactly the plan's size (the one
//!   allocation a host makes; steps still allocate nothing); passes `alloc` on to the tensor,
//!   matmul and optim crates.
//! - `std` (default): implies `alloc`; enables matmul's runtime CPU detection.
//!
//! MSRV: Rust 1.85.
#![no_std]
#![forbid(unsafe_code)]

#[cfg(feature = "alloc")]
extern crate alloc;

mod custom;
mod gradcheck;
mod kernel;
mod layer;
mod network;
mod pass;
mod plan;
mod softmax_loss;
mod trainer;

pub use batch_norm::{BN_EPS, BN_MOMENTUM};
pub use custom::{Count, Custom, CustomLayer, OutShape, SizeRule};
pub use gradcheck::{
    GradCheck, Mismatch, REL_FLOOR, RETAKE_STEPS, TensorDiff, Tolerance, default_step, gradcheck,
};
pub use kernel::{
    Backward, Dense, Forward, Grad, MAX_TENSORS, ParamGrad, Pointwise, Shapes, Sizes,
};
pub use layer::Mode;
pub use network::{Init, Input, Network, NoOptimizer, SparseBatch, Update, argmax};
pub use plan::{MAX_LAYERS, Plan, PlanConfig, Region, Shape, TensorInfo, TensorName, Training};
pub use softmax_loss::{SoftmaxWithLoss, Target};
pub use trainer::{
    Batch, BatchSource, Divergence, Moment, Observer, OneNetwork, Period, Progress, Quiet,
    RestoreError, SNAPSHOT_TENSORS, Schedule, State, Stepper, Stop, Trainer, first_non_finite,
};

// The built-in layers: `module::Type`, the spec's arguments (named as the type's fields), and
// whether the layer is `dense` (input and output apart) or `pointwise` (one buffer).
layer::layer_list! {
    /// [`Affine`] with this many outputs.
    affine::Affine(d_out: usize) => dense,
    /// [`Relu`].
    relu::Relu => pointwise,
    /// [`Sigmoid`].
    sigmoid::Sigmoid => pointwise,
    /// [`BatchNorm`] over every activation of its input.
    batch_norm::BatchNorm => dense,
    /// [`Dropout`] with this ratio of units dropped in training.
    dropout::Dropout(ratio: f64) => pointwise,
    /// [`Conv2d`] on an image input.
    conv2d::Conv2d { filters: usize, kh: usize, kw: usize, stride: usize, pad: usize } => dense,
    /// [`MaxPool2d`] on an image input.
    max_pool::MaxPool2d { kh: usize, kw: usize, stride: usize } => dense,
    /// [`AvgPool2d`] on an image input.
    avg_pool::AvgPool2d { kh: usize, kw: usize, stride: usize } => dense,
}
