//! manabi-layers: chapter 5 of *Deep Learning from Scratch* as a `no_std` library.
//!
//! Each layer is a `forward`/`backward` pair written side by side, generic over
//! [`Real`](manabi_tensor::Real) and taking a [`Gemm`](manabi_matmul::Gemm) backend:
//!
//! - [`Affine`]: `y = x·W + b`; backward `dx = dy·Wᵀ`, `dW = xᵀ·dy`, `db = Σ dy`.
//! - [`Relu`]: `max(0, x)`; backward masks.
//! - [`Sigmoid`]: backward `dy·y·(1 − y)`.
//! - [`SoftmaxWithLoss`]: fused softmax and cross-entropy; backward `(y − t)/batch`.
//!
//! [`Mlp`] stacks them from a size list into one arena planned by [`MlpPlan`]: parameters,
//! gradients, optimizer state and activations, sized exactly and reported. Backward passes
//! write their outputs, never add to them. [`gradcheck`] compares backprop with central
//! differences per parameter tensor, for any network a user builds.
//!
//! Inputs that are mostly zero (MNIST's pixels: 81 %) can come as compressed sparse rows
//! ([`SparseBatch`], [`Mlp::train_step_sparse`], [`Mlp::predict_sparse`]): the first layer's
//! forward product and weight gradient then read only the nonzeros, in the `Naive` backend's
//! order of sums, so that with `Naive` a sparse step is the dense step bit for bit.
//!
//! ```
//! use manabi_layers::{Activation, Init, Mlp, MlpConfig, MlpPlan, Target, Training};
//! use manabi_matmul::Naive;
//! use manabi_optim::Sgd;
//! use manabi_tensor::Rng;
//!
//! // Plan: a 4-8-3 network, batch 2, plain SGD (no optimizer state).
//! let plan = MlpPlan::new(&MlpConfig {
//!     sizes: &[4, 8, 3],
//!     activation: Activation::Relu,
//!     batch: 2,
//!     eval_batch: 2,
//!     training: Training::Backprop { optimizer_slots: 0 },
//! })?;
//! // Arena: one buffer of exactly plan.total() elements (a `static` on a microcontroller).
//! let mut arena = vec![0.0f32; plan.total()];
//! let mut net = Mlp::new(plan, &mut arena)?;
//! net.init(Init::He, &mut Rng::new(1));
//! // Step: fill the input rows, then forward, backward and update.
//! net.input_mut(2).copy_from_slice(&[0.5, -1.0, 0.25, 2.0, 1.0, 0.0, -0.5, 0.75]);
//! let loss = net.train_step(&Naive, &Sgd::new(0.1), 1, 2, Target::Labels(&[2, 0]));
//! assert!(loss.is_finite());
//! # Ok::<(), manabi_tensor::Error>(())
//! ```
//!
//! # Features
//! - `alloc`: passes `alloc` on to the tensor, matmul and optim crates.
//! - `std` (default): implies `alloc`; enables matmul's runtime CPU detection.
//!
//! MSRV: Rust 1.85.
#![no_std]
#![forbid(unsafe_code)]

mod affine;
mod gradcheck;
mod mlp;
mod relu;
mod sigmoid;
mod softmax_loss;

pub use affine::Affine;
pub use gradcheck::{GradCheck, REL_FLOOR, TensorDiff, default_step, gradcheck};
pub use mlp::{
    Activation, Init, MAX_LAYERS, Mlp, MlpConfig, MlpPlan, SparseBatch, TensorInfo, Training,
    argmax,
};
pub use relu::Relu;
pub use sigmoid::Sigmoid;
pub use softmax_loss::{SoftmaxWithLoss, Target};
