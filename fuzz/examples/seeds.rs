//! Writes the seed corpora in `fuzz/seeds/<target>/`: small valid files of each format.
//!
//! `cargo +nightly run --manifest-path fuzz/Cargo.toml --example seeds` (the seeds are
//! committed; run this after a format change).

use flate2::Compression;
use flate2::write::GzEncoder;
use manabi_cli::checkpoint::{MetricRow, Progress, RunConfig, Snapshot};
use manabi_cli::model;
use manabi_cli::stack::Stack;
use manabi_data::{Batcher, Dataset, Sampling};
use manabi_layers::{Init, Plan, Spec, Training};
use manabi_tensor::Rng;
use std::io::Write;
use std::path::Path;

fn idx(dims: &[u32]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    let n: u32 = dims.iter().product();
    b.extend((0..n).map(|i| (i * 37 % 256) as u8));
    b
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(bytes).expect("in memory");
    e.finish().expect("in memory")
}

fn plan(stack: &Stack, slots: usize) -> Plan {
    stack
        .plan(
            2,
            2,
            Training::Backprop {
                optimizer_slots: slots,
            },
        )
        .expect("valid sizes")
}

fn checkpoint(optimizer: &str, slots: usize, sampling: Sampling, f64: bool) -> Vec<u8> {
    let config = RunConfig {
        stack: Stack::mlp(4, &[3], 2, Spec::Relu),
        batch: 2,
        lr: 0.01,
        weight_decay: 0.0,
        iters: 40,
        optimizer: optimizer.into(),
        init: Init::Book,
        sampling,
        seed: 5,
        f64,
        backend: "naive".into(),
        sparse: false,
        train_len: 6,
        train_limit: None,
        checkpoint_every: Some(10),
    };
    let plan = plan(&config.stack, slots);
    let n = plan.param_len();
    let mut rng = Rng::new(5);
    let mut batcher = Batcher::new(sampling, 2, 6).expect("batcher");
    let data = Dataset::new(vec![0.5; 6 * 4], vec![2, 2], vec![0, 1, 0, 1, 0, 1]).expect("data");
    let (mut x, mut l) = (vec![0.0f32; 8], vec![0usize; 2]);
    batcher.next_batch(&mut rng, &data, &mut x, &mut l);
    let progress = Progress {
        iteration: 10,
        loss_sum: 1.25,
        loss_count: 3,
        elapsed: 0.5,
        metrics: vec![MetricRow {
            iteration: 1,
            epoch: 0.33,
            train_acc: 0.5,
            test_acc: 0.5,
            loss: 0.69,
            elapsed: 0.1,
        }],
    };
    let params: Vec<f64> = (0..n).map(|i| i as f64 * 0.125 - 1.0).collect();
    let state: Vec<f64> = (0..slots * n).map(|i| i as f64 * 0.01).collect();
    let bytes = if f64 {
        Snapshot {
            config: &config,
            plan: &plan,
            params: &params,
            stats: &[],
            opt_state: &state,
            rng: rng.state(),
            dropout_rng: Rng::new(6).state(),
            batcher: &batcher.state(),
            progress: &progress,
        }
        .to_bytes()
    } else {
        let p: Vec<f32> = params.iter().map(|&v| v as f32).collect();
        let s: Vec<f32> = state.iter().map(|&v| v as f32).collect();
        Snapshot {
            config: &config,
            plan: &plan,
            params: &p,
            stats: &[],
            opt_state: &s,
            rng: rng.state(),
            dropout_rng: Rng::new(6).state(),
            batcher: &batcher.state(),
            progress: &progress,
        }
        .to_bytes()
    };
    bytes.expect("serialises")
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("seeds")
        .join(target);
    std::fs::create_dir_all(&dir).expect("seed directory");
    std::fs::write(dir.join(name), bytes).expect("seed file");
}

fn main() {
    let files = [
        ("labels", idx(&[10])),
        ("images", idx(&[3, 4, 4])),
        ("rank4", idx(&[1, 2, 3, 2])),
    ];
    for (name, bytes) in &files {
        write("idx_raw", name, bytes);
        write("idx_gzip", &format!("{name}.gz"), &gzip(bytes));
    }
    let (a, b) = files[1].1.split_at(9);
    let mut two = gzip(a);
    two.extend_from_slice(&gzip(b));
    write("idx_gzip", "two-members.gz", &two);
    write("idx_gzip", "raw", &files[0].1);

    let p32: Vec<f32> = (0..23).map(|i| i as f32 * 0.25 - 2.0).collect();
    let p64: Vec<f64> = p32.iter().map(|&v| f64::from(v)).collect();
    let relu = Stack::mlp(4, &[3], 2, Spec::Relu);
    let sigmoid = Stack::mlp(3, &[], 2, Spec::Sigmoid);
    let meta = [("seed", "1".to_string())];
    let file = |stack: &Stack, params: &[f32], stats: &[f32]| {
        model::to_safetensors(stack, &plan(stack, 0), params, stats, &meta).expect("ok")
    };
    write("weights", "f32", &file(&relu, &p32, &[]));
    write(
        "weights",
        "f64",
        &model::to_safetensors(&relu, &plan(&relu, 0), &p64, &[], &meta).expect("ok"),
    );
    write("weights", "sigmoid", &file(&sigmoid, &p32[..8], &[]));
    // A stack with BatchNorm (γ, β and running statistics) and Dropout: format manabi-net.
    let bn = Stack::parse(4, "affine:3,batchnorm,relu,dropout:0.5,affine:2").expect("valid");
    let (n_params, n_stats) = bn.sizes().expect("plannable");
    let stats: Vec<f32> = (0..n_stats).map(|i| i as f32 * 0.5).collect();
    write(
        "weights",
        "batchnorm-dropout",
        &file(
            &bn,
            &(0..n_params).map(|i| i as f32 * 0.125).collect::<Vec<_>>(),
            &stats,
        ),
    );

    write(
        "checkpoint",
        "sgd-random",
        &checkpoint("sgd", 0, Sampling::Random, false),
    );
    write(
        "checkpoint",
        "adam-shuffle",
        &checkpoint("adam", 2, Sampling::EpochShuffle, false),
    );
    write(
        "checkpoint",
        "momentum-f64",
        &checkpoint("momentum", 1, Sampling::Random, true),
    );
}
