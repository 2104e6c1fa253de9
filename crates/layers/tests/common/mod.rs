//! Plans and inputs the network tests share.
#![allow(dead_code)] // each test binary uses a different subset

use manabi_layers::{Plan, PlanConfig, Shape, Spec, Training};
use manabi_tensor::Rng;

/// The layer list of an MLP on `sizes` (input width first) with one activation.
pub fn mlp_layers(sizes: &[usize], activation: Spec) -> Vec<Spec> {
    Spec::mlp(&sizes[1..], activation).collect()
}

/// A plan for `layers` on flat inputs of `d_in`, one batch size for training and evaluation.
pub fn plan(d_in: usize, layers: &[Spec], batch: usize, training: Training) -> Plan {
    Plan::new(&PlanConfig {
        input: Shape::flat(d_in),
        layers,
        batch,
        eval_batch: batch,
        training,
    })
    .unwrap()
}

/// An MLP plan on `sizes` (input width first).
pub fn mlp(sizes: &[usize], activation: Spec, batch: usize, training: Training) -> Plan {
    plan(sizes[0], &mlp_layers(sizes, activation), batch, training)
}

/// Image-like inputs: about a third of the pixels zero, the rest in (0, 1].
pub fn images(rng: &mut Rng, len: usize) -> Vec<f64> {
    (0..len)
        .map(|_| {
            if rng.uniform::<f64>() < 0.35 {
                0.0
            } else {
                rng.uniform::<f64>() + 1e-3
            }
        })
        .collect()
}
