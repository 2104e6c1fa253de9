//! Fuzz target: the checkpoint loader `manabi_cli::checkpoint::parse` on arbitrary bytes, with invariants for accepted files.
#![no_main]

use libfuzzer_sys::fuzz_target;
use manabi_cli::checkpoint;
use manabi_data::Batcher;
use manabi_tensor::Rng;

fuzz_target!(|data: &[u8]| {
    let Ok(c) = checkpoint::parse(data, "fuzz") else {
        return;
    };
    assert_eq!(Some(c.params.len()), c.config.param_len());
    assert_eq!(
        c.opt_state.len(),
        c.config.slots().expect("validated optimizer") * c.params.len()
    );
    assert!(c.progress.iteration >= 1 && c.progress.iteration <= c.config.iters);
    assert!(Rng::from_state(c.rng).is_ok());
    let b = Batcher::from_state(c.batcher.clone()).expect("validated batcher");
    assert_eq!(b.batch(), c.config.batch);
    assert_eq!(b.data_len(), c.config.train_len);
});
