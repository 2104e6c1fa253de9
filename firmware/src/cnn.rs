//! The convolutional network `cnn-train` trains on the device, and the schedule the host's twin (`crates/layers/examples/device_cnn.rs`) repeats bit for bit.
//!
//! conv 8@5×5 → ReLU → max-pool 2×2 → affine 10: the smallest of the book's shape that still
//! learns MNIST's strokes (eight 5×5 filters, 208 parameters, then 11,530 in the affine
//! layer). Its arena fits the 256 KiB with a batch of two: SGD is fused into the backward pass
//! (no gradient buffer), and the first convolution keeps no `dcol`.
//!
//! The host twin compiles this very file as a module (`#[path]`), so the two cannot drift:
//! it may use only `manabi_layers` and `core`.

use manabi_layers::{Moment, Observer, Shape, Spec};

/// The layers after the 1×28×28 input.
pub const LAYERS: [Spec; 4] = [
    Spec::Conv2d {
        filters: 8,
        kh: 5,
        kw: 5,
        stride: 1,
        pad: 0,
    },
    Spec::Relu,
    Spec::MaxPool2d {
        kh: 2,
        kw: 2,
        stride: 2,
    },
    Spec::Affine(10),
];
/// One image as the network reads it.
pub const INPUT: Shape = Shape::image(1, 28, 28);
/// Images per SGD step.
pub const BATCH: usize = 2;
/// Seed of the weight initialisation (He).
pub const SEED: u64 = 1;
/// Learning rate at the start; it falls linearly to `LR · (1 − LR_DECAY)` at the end of the
/// last epoch.
pub const LR: f32 = 0.05;
/// See [`LR`].
pub const LR_DECAY: f32 = 0.9;

/// The learning rate after `seen` of `total` training images (in f32, as both sides compute it).
pub fn lr(seen: usize, total: usize) -> f32 {
    LR * (1.0 - LR_DECAY * seen as f32 / total as f32)
}

/// The learning-rate schedule as the training loop's observer: [`lr`] of the images seen, out
/// of `total` (both sides run the same loop, so they ask at the same steps).
#[derive(Clone, Copy, Debug)]
pub struct LrSchedule {
    /// Images trained on so far.
    pub seen: usize,
    /// Images the whole run trains on.
    pub total: usize,
}

impl<S, E> Observer<f32, S, E> for LrSchedule {
    fn learning_rate(&mut self, _done: u64) -> Option<f32> {
        Some(lr(self.seen, self.total))
    }

    fn stepped(&mut self, _: &mut Moment<'_, '_, f32, S>, _: f32, rows: usize) -> Result<(), E> {
        self.seen += rows;
        Ok(())
    }
}

/// FNV-1a (64-bit) over the parameters' bytes (little-endian `f32`): equal digests mean equal
/// weights bit for bit.
pub fn digest(params: &[f32]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in params {
        for b in p.to_bits().to_le_bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}
