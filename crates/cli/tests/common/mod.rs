//! Helpers shared by the reliability tests: small weights and checkpoint files, raw safetensors, the binary.
#![allow(dead_code)] // each test binary uses a different subset

use manabi_cli::checkpoint::{MetricRow, Progress, RunConfig, Snapshot};
use manabi_cli::model;
use manabi_cli::stack::Stack;
use manabi_data::{Batcher, Sampling};
use manabi_layers::{Init, Plan, Spec, Training};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The widths of the small network the byte-level tests use.
pub const SIZES: [usize; 3] = [4, 3, 2];

/// Parameters of [`SIZES`]: 4·3 + 3 + 3·2 + 2.
pub const PARAMS: usize = 23;

/// The stack of [`SIZES`]: affine, ReLU, affine.
pub fn stack() -> Stack {
    Stack::mlp(SIZES[0], &SIZES[1..2], SIZES[2], Spec::Relu)
}

pub fn plan(slots: usize) -> Plan {
    stack()
        .plan(
            2,
            2,
            Training::Backprop {
                optimizer_slots: slots,
            },
        )
        .expect("a valid plan")
}

/// Distinct, exactly representable parameter values.
pub fn params() -> Vec<f32> {
    (0..PARAMS).map(|i| i as f32 * 0.25 - 2.0).collect()
}

/// A valid `model.safetensors` for [`SIZES`].
pub fn model_bytes() -> Vec<u8> {
    model::to_safetensors(&stack(), &plan(0), &params(), &[], &[("seed", "1".into())])
        .expect("serialises")
}

/// The configuration of a small Adam run with shuffled batches over 10 samples.
pub fn config() -> RunConfig {
    RunConfig {
        stack: stack(),
        batch: 2,
        lr: 0.001,
        weight_decay: 0.0,
        iters: 50,
        optimizer: "adam".into(),
        init: Init::He,
        sampling: Sampling::EpochShuffle,
        seed: 9,
        f64: false,
        backend: "naive".into(),
        sparse: false,
        train_len: 10,
        train_limit: None,
        checkpoint_every: Some(5),
        eval_samples: None,
        replicas: 1,
    }
}

/// A valid checkpoint of [`config`] at iteration 20, with two metric rows.
pub fn checkpoint_bytes() -> Vec<u8> {
    let config = config();
    let plan = plan(2);
    let params = params();
    let state: Vec<f32> = (0..2 * PARAMS).map(|i| i as f32 * 0.5).collect();
    let mut batcher = Batcher::new(Sampling::EpochShuffle, 2, 10).expect("batcher");
    let mut rng = manabi_tensor::Rng::new(4);
    let data = manabi_data::Dataset::new(
        vec![0.0; 10 * 4],
        vec![2, 2],
        (0..10).map(|i| i % 2).collect(),
    )
    .expect("dataset");
    let (mut x, mut labels) = (vec![0.0f32; 2 * 4], vec![0usize; 2]);
    for _ in 0..3 {
        batcher.next_batch(&mut rng, &data, &mut x, &mut labels);
    }
    let row = |it: u64| MetricRow {
        iteration: it,
        epoch: it as f64 / 5.0,
        train_acc: 0.5,
        test_acc: 0.25,
        loss: 0.7,
        elapsed: 0.01 * it as f64,
    };
    let progress = Progress {
        iteration: 20,
        loss_sum: 3.5,
        loss_count: 4,
        elapsed: 0.2,
        metrics: vec![row(1), row(6)],
    };
    Snapshot {
        config: &config,
        plan: &plan,
        params: &params,
        stats: &[],
        opt_state: &state,
        rng: rng.state(),
        dropout_rng: manabi_tensor::Rng::new(5).state(),
        batcher: &batcher.state(),
        progress: &progress,
    }
    .to_bytes()
    .expect("serialises")
}

/// Safetensors bytes from a header written by hand and a data section.
pub fn raw_safetensors(header: &str, data: &[u8]) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(data);
    b
}

pub use manabi_testkit::mnist_dir as data_dir;

/// The `manabi` binary with `$MANABI_DATA` set.
pub fn manabi() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_manabi"));
    c.env("MANABI_DATA", data_dir());
    c
}

/// Runs `manabi args…` to completion.
pub fn run(args: &[&str]) -> Output {
    manabi()
        .args(args)
        .output()
        .expect("the manabi binary runs")
}

/// stdout and stderr together.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A fresh, empty scratch directory path (not created), unique per test process and call.
pub fn scratch(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "manabi-reliability-{tag}-{}-{n}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// `p` as UTF-8 (scratch paths always are).
pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// The accuracy on the `final test acc …` line of a training run's output.
pub fn final_accuracy(out: &str) -> f64 {
    let line = out
        .lines()
        .find(|l| l.starts_with("final test acc"))
        .unwrap_or_else(|| panic!("no final line in:\n{out}"));
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

/// How far a fast backend's final test accuracy may lie from the naive backend's on the same
/// seeded run: their products round differently (summation order, FMA, blocks sized from the
/// CPU's caches), which can move a few of the 10,000 test images. The naive figure is the same
/// on every CPU; the runs checked with this ended equal to four digits on gemm, matrixmultiply
/// and naive (Intel Xeon family 6 model 207, 2026-12-08). pins.rs pins the fast backends'
/// bytes where they were recorded.
pub const FAST_BACKEND_ACCURACY: f64 = 0.003;

/// Asserts that `got`, a fast backend's final accuracy, is within [`FAST_BACKEND_ACCURACY`] of
/// `naive`, the naive backend's recorded accuracy for the same run.
pub fn assert_near_naive(what: &str, got: f64, naive: f64) {
    assert!(
        (got - naive).abs() <= FAST_BACKEND_ACCURACY,
        "{what}: final test accuracy {got}, the naive backend's {naive}"
    );
}
