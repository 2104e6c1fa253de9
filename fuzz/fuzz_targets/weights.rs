//! Fuzz target: the weights loader `manabi_cli::model::parse` on arbitrary bytes, with a round trip for accepted files.
#![no_main]

use libfuzzer_sys::fuzz_target;
use manabi_cli::model;
use manabi_layers::Training;
use safetensors::Dtype;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = model::parse(data, "fuzz") else {
        return;
    };
    // What the stack says it holds is what was loaded, all finite.
    let (params, stats) = m.stack.sizes().expect("a loaded stack plans");
    assert_eq!(m.params.len(), params);
    assert_eq!(m.stats.len(), stats);
    assert!(m.params.iter().chain(&m.stats).all(|v| v.is_finite()));
    // Writing the network back and reading it again gives the same network.
    let Ok(plan) = m.stack.plan(1, 1, Training::Inference) else {
        return;
    };
    let bytes = if m.dtype == Dtype::F64 {
        model::to_safetensors(&m.stack, &plan, &m.params, &m.stats, &[])
    } else {
        let narrow = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
        model::to_safetensors(&m.stack, &plan, &narrow(&m.params), &narrow(&m.stats), &[])
    };
    let again = model::parse(&bytes.expect("a loaded network serialises"), "again")
        .expect("a written network loads");
    assert_eq!(again.stack, m.stack);
    assert_eq!(again.params, m.params);
    assert_eq!(again.stats, m.stats);
});
