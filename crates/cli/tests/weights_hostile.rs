//! The weights and checkpoint loaders on hostile bytes: every defect is an `Err` naming it, never a panic.

mod common;

use common::{PARAMS, SIZES, checkpoint_bytes, config, model_bytes, params, raw_safetensors};
use manabi_cli::{CliError, checkpoint, model};
use proptest::prelude::*;

fn model_err(bytes: &[u8]) -> String {
    match model::parse(bytes, "w.safetensors") {
        Ok(m) => panic!("accepted: {}", m.stack.text()),
        Err(e) => {
            assert!(matches!(e, CliError::BadFile(_)), "{e:?}");
            e.to_string()
        }
    }
}

fn checkpoint_err(bytes: &[u8]) -> String {
    match checkpoint::parse(bytes, "c.safetensors") {
        Ok(c) => panic!("accepted at iteration {}", c.progress.iteration),
        Err(e) => {
            assert!(matches!(e, CliError::BadFile(_)), "{e:?}");
            e.to_string()
        }
    }
}

/// A header entry for a tensor.
fn entry(name: &str, dtype: &str, shape: &[usize], start: usize, end: usize) -> String {
    format!(
        "\"{name}\":{{\"dtype\":\"{dtype}\",\"shape\":{shape:?},\"data_offsets\":[{start},{end}]}}"
    )
}

#[test]
fn valid_weights_round_trip_exactly() {
    let m = model::parse(&model_bytes(), "w").unwrap();
    assert_eq!(m.stack.as_mlp().unwrap().0, SIZES);
    assert!(m.stats.is_empty());
    let expected: Vec<f64> = params().iter().map(|&v| f64::from(v)).collect();
    assert_eq!(m.params, expected);
}

#[test]
fn valid_checkpoints_round_trip_exactly() {
    let c = checkpoint::parse(&checkpoint_bytes(), "c").unwrap();
    assert_eq!(c.config, config());
    assert_eq!(c.progress.iteration, 20);
    assert_eq!(c.progress.loss_count, 4);
    assert_eq!(c.progress.metrics.len(), 2);
    assert_eq!(c.progress.metrics[1].iteration, 6);
    assert_eq!(c.params.len(), PARAMS);
    assert_eq!(c.opt_state.len(), 2 * PARAMS);
    assert_eq!(c.opt_state[3], 1.5);
    assert_eq!(c.batcher.perm.len(), 10);
}

#[test]
fn a_header_claiming_huge_tensors_in_a_small_file_is_refused() {
    // W1 claims 2³¹ × 2³¹ f32 values (16 EiB); the file is a few hundred bytes.
    let header = format!(
        "{{{},{}}}",
        entry("W1", "F32", &[1 << 31, 1 << 31], 0, 1 << 62),
        entry("b1", "F32", &[1 << 31], 1 << 62, (1 << 62) + (1 << 33))
    );
    let e = model_err(&raw_safetensors(&header, &[0; 64]));
    assert!(e.contains("more than the whole file"), "{e}");
    assert!(e.starts_with("w.safetensors: "), "{e}");
}

#[test]
fn offsets_summing_past_u64_are_refused_before_safetensors_adds_them() {
    // Nine U8 tensors whose offsets end at 2⁶⁴ − 1: each one is valid on its own, and
    // safetensors 0.8.0 then computes `end + 8 + header length` with a plain `+`, which
    // panics with overflow checks on (found by hand while writing the fuzz targets).
    let size: usize = (1 << 61) - 1;
    let mut parts = Vec::new();
    let mut start = 0usize;
    for i in 0..9 {
        let len = if i < 8 { size } else { 7 };
        parts.push(entry(&format!("t{i}"), "U8", &[len], start, start + len));
        start += len;
    }
    assert_eq!(start, usize::MAX);
    let bytes = raw_safetensors(&format!("{{{}}}", parts.join(",")), &[]);
    assert!(model_err(&bytes).contains("more than the whole file"));
    assert!(checkpoint_err(&bytes).contains("more than the whole file"));
}

#[test]
fn a_header_length_past_the_end_is_refused() {
    let mut b = model_bytes();
    b[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let e = model_err(&b);
    assert!(e.contains("header length 1099511627776"), "{e}");
    let e = model_err(&[1, 2, 3]);
    assert!(e.contains("not a safetensors file"), "{e}");
}

#[test]
fn the_first_bad_tensor_is_named() {
    let f32s = |n: usize| vec![0u8; 4 * n];
    // b1 has the wrong dtype.
    let header = format!(
        "{{{},{},{},{}}}",
        entry("W1", "F32", &[4, 3], 0, 48),
        entry("b1", "I32", &[3], 48, 60),
        entry("W2", "F32", &[3, 2], 60, 84),
        entry("b2", "F32", &[2], 84, 92)
    );
    let e = model_err(&raw_safetensors(&header, &f32s(23)));
    assert!(e.contains("tensor b1 has dtype I32"), "{e}");
    // W2 does not continue the chain: 4 rows where b1 has 3 outputs.
    let header = format!(
        "{{{},{},{},{}}}",
        entry("W1", "F32", &[4, 3], 0, 48),
        entry("b1", "F32", &[3], 48, 60),
        entry("W2", "F32", &[4, 2], 60, 92),
        entry("b2", "F32", &[2], 92, 100)
    );
    let e = model_err(&raw_safetensors(&header, &f32s(25)));
    assert!(e.contains("tensor W2 has shape [4, 2]"), "{e}");
    // b2 is missing; an extra tensor is there instead.
    let header = format!(
        "{{{},{},{},{}}}",
        entry("W1", "F32", &[4, 3], 0, 48),
        entry("b1", "F32", &[3], 48, 60),
        entry("W2", "F32", &[3, 2], 60, 84),
        entry("bias", "F32", &[2], 84, 92)
    );
    let e = model_err(&raw_safetensors(&header, &f32s(23)));
    assert!(e.contains("tensor b2 is missing"), "{e}");
    // A NaN weight.
    let mut data = f32s(23);
    data[4 * 5..4 * 6].copy_from_slice(&f32::NAN.to_le_bytes());
    let header = format!(
        "{{{},{},{},{}}}",
        entry("W1", "F32", &[4, 3], 0, 48),
        entry("b1", "F32", &[3], 48, 60),
        entry("W2", "F32", &[3, 2], 60, 84),
        entry("b2", "F32", &[2], 84, 92)
    );
    let e = model_err(&raw_safetensors(&header, &data));
    assert!(e.contains("tensor W1 holds NaN at index 5"), "{e}");
}

#[test]
fn weights_that_do_not_fit_the_data_name_the_tensor() {
    let m = model::parse(&model_bytes(), "w").unwrap();
    let e = m.check_data("w", 784, 2).unwrap_err().to_string();
    assert!(
        e.contains("tensor W1 has shape [4, 3]") && e.contains("784 input features"),
        "{e}"
    );
    let e = m.check_data("w", 4, 10).unwrap_err().to_string();
    assert!(
        e.contains("tensor W2 has shape [3, 2]") && e.contains("10 classes"),
        "{e}"
    );
    assert!(m.check_data("w", 4, 2).is_ok());
}

#[test]
fn checkpoints_are_checked_against_their_configuration() {
    let good = checkpoint_bytes();
    // A weights file is not a checkpoint.
    let e = checkpoint_err(&model_bytes());
    assert!(
        e.contains("\"manabi-mlp\" file, not a manabi checkpoint"),
        "{e}"
    );
    // A checkpoint is not a weights file either.
    let e = model_err(&good);
    assert!(e.contains("\"manabi-checkpoint\" file"), "{e}");
    // The configuration says 4-3-2; claim a different hidden width in the metadata.
    let edited = replace(&good, "sizes=4,3,2", "sizes=4,5,2");
    let e = checkpoint_err(&edited);
    assert!(
        e.contains("tensor W1 has shape [4, 3], but the network 4-5-2 needs [4, 5]"),
        "{e}"
    );
    // A different optimizer needs a different state size.
    let e = checkpoint_err(&replace(&good, "optimizer=adam", "optimizer=sgdx"));
    assert!(e.contains("optimizer=\"sgdx\" is invalid"), "{e}");
    // SGD keeps no state, so Adam's two slots no longer fit.
    let e = checkpoint_err(&replace(&good, "optimizer=adam;", "optimizer=sgd;;"));
    assert!(
        e.contains("tensor opt_state has shape [2, 23], expected [0, 23]"),
        "{e}"
    );
    // A training-set length the batcher state does not have.
    let e = checkpoint_err(&replace(&good, "train_len=10", "train_len=12"));
    assert!(
        e.contains("tensor batcher draws 2 rows from 10 samples"),
        "{e}"
    );
    // An unknown layout version.
    let e = checkpoint_err(&replace(&good, "version=1", "version=7"));
    assert!(e.contains("version \"7\" is not supported"), "{e}");
    // Every truncation is an error.
    for cut in [0, 7, 8, 100, good.len() / 2, good.len() - 1] {
        checkpoint_err(&good[..cut]);
    }
}

#[test]
fn a_checkpoint_whose_state_is_inconsistent_is_refused() {
    let c = checkpoint::parse(&checkpoint_bytes(), "c").unwrap();
    let plan = common::plan(2);
    let params: Vec<f32> = c.params.iter().map(|&v| v as f32).collect();
    let state: Vec<f32> = c.opt_state.iter().map(|&v| v as f32).collect();
    let write = |progress: &checkpoint::Progress, rng: [u64; 4], state: &[f32]| {
        checkpoint::Snapshot {
            config: &c.config,
            plan: &plan,
            params: &params,
            stats: &[],
            opt_state: state,
            rng,
            dropout_rng: c.dropout_rng.unwrap_or([1, 2, 3, 4]),
            batcher: &c.batcher,
            progress,
        }
        .to_bytes()
        .unwrap()
    };
    // The generator state may not be all zero (xoshiro would only ever return 0).
    let e = checkpoint_err(&write(&c.progress, [0; 4], &state));
    assert!(e.contains("tensor rng"), "{e}");
    // More iterations than the run has.
    let mut p = c.progress.clone();
    p.iteration = 51;
    assert!(checkpoint_err(&write(&p, c.rng, &state)).contains("tensor iteration is 51"));
    // A metrics row after the checkpoint's iteration.
    let mut p = c.progress.clone();
    p.metrics[1].iteration = 21;
    assert!(checkpoint_err(&write(&p, c.rng, &state)).contains("tensor metrics row 1"));
    // A non-finite optimizer state.
    let mut bad = state.clone();
    bad[7] = f32::INFINITY;
    assert!(
        checkpoint_err(&write(&c.progress, c.rng, &bad)).contains("tensor opt_state holds inf")
    );
}

/// `bytes` with the first `from` replaced by `to` (same length, so the header length holds).
fn replace(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let at = bytes
        .windows(from.len())
        .position(|w| w == from.as_bytes())
        .unwrap_or_else(|| panic!("{from:?} not in the file"));
    let mut b = bytes.to_vec();
    b[at..at + to.len()].copy_from_slice(to.as_bytes());
    b
}

/// Applies a few edits (overwrite, truncate, append) to `file`.
fn mutate(
    mut b: Vec<u8>,
    edits: &[(prop::sample::Index, u8)],
    cut: usize,
    extra: &[u8],
) -> Vec<u8> {
    for (pos, value) in edits {
        let i = pos.index(b.len());
        b[i] = *value;
    }
    b.truncate(b.len().saturating_sub(cut));
    b.extend_from_slice(extra);
    b
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(m) = model::parse(&bytes, "w") {
            prop_assert_eq!((m.params.len(), m.stats.len()), common_lens(&m.stack));
        }
        let _ = checkpoint::parse(&bytes, "c");
    }

    #[test]
    fn arbitrary_headers_are_refused_or_round_trip(
        (header, data) in prop_oneof![
            ("[{}\\[\\]\":,0-9a-zA-Z_ ]{0,200}", prop::collection::vec(any::<u8>(), 0..64)),
            one_layer_header(),
        ],
    ) {
        let bytes = raw_safetensors(&header, &data);
        refused_or_round_trips(&bytes)?;
        // A checkpoint needs its configuration as `key=value` metadata; neither kind of
        // header can hold an `=`, so every one must be refused as a bad file.
        match checkpoint::parse(&bytes, "c") {
            Ok(c) => prop_assert!(false, "accepted at iteration {}", c.progress.iteration),
            Err(e) => prop_assert!(matches!(e, CliError::BadFile(_)), "{:?}", e),
        }
    }

    #[test]
    fn mutated_weights_never_panic_and_stay_consistent(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in 0usize..3,
        extra in prop::collection::vec(any::<u8>(), 0..3),
    ) {
        let b = mutate(model_bytes(), &edits, cut, &extra);
        if let Ok(m) = model::parse(&b, "w") {
            prop_assert_eq!((m.params.len(), m.stats.len()), common_lens(&m.stack));
            prop_assert!(m.params.iter().all(|v| v.is_finite()));
        }
    }

    #[test]
    fn mutated_checkpoints_never_panic_and_stay_consistent(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in 0usize..3,
        extra in prop::collection::vec(any::<u8>(), 0..3),
    ) {
        let b = mutate(checkpoint_bytes(), &edits, cut, &extra);
        if let Ok(c) = checkpoint::parse(&b, "c") {
            prop_assert_eq!((c.params.len(), c.stats.len()), common_lens(&c.config.stack));
            prop_assert_eq!(c.opt_state.len() % c.params.len(), 0);
            prop_assert!(c.progress.iteration >= 1 && c.progress.iteration <= c.config.iters);
            prop_assert!(c.rng != [0; 4]);
        }
    }
}

/// A well-formed safetensors header of `W1 [d_in, d_out]` and `b1 [b_len]` laid out back to
/// back, each dimension 0 to 3, in F32, F64 or I32, with as many random data bytes as it
/// claims. `b_len` is `d_out` three times in four, so about a quarter of them are a valid
/// one-layer network (float dtype, no zero dimension, finite values); the rest fail one
/// check or another.
fn one_layer_header() -> impl Strategy<Value = (String, Vec<u8>)> {
    (
        prop::sample::select(vec![("F32", 4), ("F64", 8), ("I32", 4)]),
        0usize..4,
        0usize..4,
        prop::bool::weighted(0.75),
    )
        .prop_flat_map(|((dtype, size), d_in, d_out, bias_fits)| {
            let b_len = if bias_fits { d_out } else { (d_out + 1) % 4 };
            let w_end = size * d_in * d_out;
            let end = w_end + size * b_len;
            let header = format!(
                "{{{},{}}}",
                entry("W1", dtype, &[d_in, d_out], 0, w_end),
                entry("b1", dtype, &[b_len], w_end, end)
            );
            prop::collection::vec(any::<u8>(), end).prop_map(move |data| (header.clone(), data))
        })
}

/// `model::parse` on `bytes` either refuses them with a [`CliError::BadFile`], or accepts a
/// model that is consistent and survives the trip back: written with `model::to_safetensors`
/// in its own dtype and parsed again, it is the same stack, dtype, parameters and statistics.
fn refused_or_round_trips(bytes: &[u8]) -> Result<(), TestCaseError> {
    let m = match model::parse(bytes, "w") {
        Ok(m) => m,
        Err(e) => {
            prop_assert!(matches!(e, CliError::BadFile(_)), "{:?}", e);
            return Ok(());
        }
    };
    prop_assert_eq!((m.params.len(), m.stats.len()), common_lens(&m.stack));
    let plan = m
        .stack
        .plan(1, 1, manabi_layers::Training::Inference)
        .map_err(|e| TestCaseError::fail(format!("an accepted stack does not plan: {e}")))?;
    // The values were widened from the stored dtype, so narrowing them back is exact.
    let written = match m.dtype {
        safetensors::Dtype::F32 => {
            let narrow = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<_>>();
            model::to_safetensors(&m.stack, &plan, &narrow(&m.params), &narrow(&m.stats), &[])
        }
        safetensors::Dtype::F64 => model::to_safetensors(&m.stack, &plan, &m.params, &m.stats, &[]),
        other => return Err(TestCaseError::fail(format!("accepted dtype {other:?}"))),
    };
    let written = written.map_err(|e| TestCaseError::fail(format!("rewriting: {e}")))?;
    let again = model::parse(&written, "w again")
        .map_err(|e| TestCaseError::fail(format!("the rewritten file is refused: {e}")))?;
    prop_assert_eq!(&again.stack, &m.stack);
    prop_assert_eq!(again.dtype, m.dtype);
    prop_assert_eq!(&again.params, &m.params);
    prop_assert_eq!(&again.stats, &m.stats);
    Ok(())
}

/// Parameters and running statistics of a stack, written out independently of the library:
/// an affine layer from `d` to `n` holds `d·n + n`, a BatchNorm over `d` holds `2d` of each.
fn common_lens(stack: &manabi_cli::stack::Stack) -> (usize, usize) {
    let (mut width, mut params, mut stats) = (stack.input_len(), 0, 0);
    for spec in &stack.layers {
        match *spec {
            manabi_layers::Spec::Affine(n) => {
                params += width * n + n;
                width = n;
            }
            manabi_layers::Spec::BatchNorm => {
                params += 2 * width;
                stats += 2 * width;
            }
            _ => {}
        }
    }
    (params, stats)
}
