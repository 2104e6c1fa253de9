//! Fuzz target: the weights loader `manabi_cli::model::parse` on arbitrary bytes, with a round trip for accepted files.
#![no_main]

use libfuzzer_sys::fuzz_target;
use manabi_cli::model;
use manabi_layers::{MlpConfig, MlpPlan, Training};
use safetensors::Dtype;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = model::parse(data, "fuzz") else {
        return;
    };
    let expected: usize = m.sizes.windows(2).map(|w| w[0] * w[1] + w[1]).sum();
    assert_eq!(m.params.len(), expected);
    assert!(m.params.iter().all(|v| v.is_finite()));
    // Writing the network back and reading it again gives the same network.
    let Ok(plan) = MlpPlan::new(&MlpConfig {
        sizes: &m.sizes,
        activation: m.activation,
        batch: 1,
        eval_batch: 1,
        training: Training::Inference,
    }) else {
        return;
    };
    let bytes = if m.dtype == Dtype::F64 {
        model::to_safetensors(&plan, &m.params, &[])
    } else {
        let p: Vec<f32> = m.params.iter().map(|&v| v as f32).collect();
        model::to_safetensors(&plan, &p, &[])
    };
    let again = model::parse(&bytes.expect("a loaded network serialises"), "again")
        .expect("a written network loads");
    assert_eq!(again.sizes, m.sizes);
    assert_eq!(again.activation, m.activation);
    assert_eq!(again.params, m.params);
});
