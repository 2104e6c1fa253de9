//! The host's twin of the firmware's `cnn-train`: the same network, plan, seed, batches and learning rates on the Naive backend, so its weights' digest must equal the device's.
//!
//! `cargo run --release -p manabi-layers --example device_cnn -- DIR EPOCHS TRAIN [TEST]` reads
//! MNIST from DIR (raw or `.gz`), trains EPOCHS epochs of the first TRAIN images in file order,
//! and prints `weights_fnv1a D` and `test_correct C of N` over the first TEST test images, the
//! lines `cargo xtask embedded` compares with the device's `metric` lines.
//!
//! The network and its schedule are `firmware/src/cnn.rs` itself, compiled here as a module
//! (the firmware is a separate workspace for a thumb target, so it cannot be a dependency).

use manabi_data::Verify;
use manabi_layers::{
    Batch, BatchSource, Init, Input, Mode, Network, OneNetwork, Plan, PlanConfig, Schedule, Stop,
    Trainer, Training, Update, argmax,
};
use manabi_matmul::Naive;
use manabi_tensor::Rng;
use std::path::Path;
use std::process::ExitCode;

/// The network, batch, seed, learning-rate schedule and digest: the firmware's own file.
#[path = "../../../firmware/src/cnn.rs"]
mod cnn;

use cnn::{BATCH, LAYERS, LrSchedule, SEED, digest};

const PIXELS: usize = 784;

fn to_input(pixels: &[u8], input: &mut [f32]) {
    for (x, &b) in input.iter_mut().zip(pixels) {
        *x = f32::from(b) / 255.0;
    }
}

/// The first `per_epoch` training images in file order, `BATCH` at a time, epoch after
/// epoch: the device's stream, from memory.
struct FileOrder<'d> {
    bytes: &'d [u8],
    labels: &'d [usize],
    per_epoch: usize,
    /// The next image of the epoch.
    at: usize,
}

impl BatchSource<f32, String> for FileOrder<'_> {
    fn next(&mut self, _: u64, net: &mut Network<'_, f32>) -> Result<Batch<'_, f32>, String> {
        if self.at == self.per_epoch {
            self.at = 0;
        }
        let (first, n) = (self.at, BATCH.min(self.per_epoch - self.at));
        self.at += n;
        to_input(
            &self.bytes[first * PIXELS..(first + n) * PIXELS],
            net.input_mut(n),
        );
        Ok(Batch {
            input: Input::Arena(n),
            labels: &self.labels[first..first + n],
        })
    }
}

/// Correct predictions over the first `scored` images of `bytes`, `BATCH` at a time.
fn score(net: &mut Network<'_, f32>, bytes: &[u8], labels: &[usize], scored: usize) -> usize {
    let mut correct = 0;
    for first in (0..scored).step_by(BATCH) {
        let n = BATCH.min(scored - first);
        to_input(
            &bytes[first * PIXELS..(first + n) * PIXELS],
            net.input_mut(n),
        );
        let logits = net.forward(&Naive, Input::Arena(n), Mode::Eval);
        for (row, &label) in logits.chunks_exact(10).zip(&labels[first..first + n]) {
            correct += usize::from(argmax(row) == label);
        }
    }
    correct
}

fn run(args: &[String]) -> Result<(), String> {
    let usage = "usage: device_cnn DIR EPOCHS TRAIN [TEST]";
    let number = |i: usize, default: Option<usize>| -> Result<usize, String> {
        match args.get(i) {
            Some(v) => v
                .parse()
                .map_err(|_| format!("not a count: {v:?}; {usage}")),
            None => default.ok_or_else(|| usage.to_string()),
        }
    };
    let dir = args.first().ok_or(usage)?;
    let (epochs, train_limit, test_limit) =
        (number(1, None)?, number(2, None)?, number(3, Some(10_000))?);
    let sets = manabi_data::load(Path::new(dir), Verify::Mnist).map_err(|e| e.to_string())?;
    let (train, test) = (&sets.train, &sets.test);
    let train_bytes = train.bytes().ok_or("the training set holds no bytes")?;
    let test_bytes = test.bytes().ok_or("the test set holds no bytes")?;
    let plan = Plan::new(&PlanConfig {
        input: cnn::INPUT,
        layers: &LAYERS,
        batch: BATCH,
        eval_batch: BATCH,
        training: Training::FusedSgd,
    })
    .map_err(|e| e.to_string())?;
    let mut arena = vec![0.0f32; plan.total()];
    let mut net = Network::new(&plan, &mut arena).map_err(|e| e.to_string())?;
    net.init(Init::He, &mut Rng::new(SEED));
    let sgd = Update::fused_sgd(&plan, cnn::LR).map_err(|e| e.to_string())?;
    let per_epoch = train.len().min(train_limit);
    let steps = (per_epoch.div_ceil(BATCH) * epochs) as u64;
    // The device's loop: the same schedule of learning rates, the same steps.
    let mut trainer = Trainer::new(net, sgd, Schedule::new(steps));
    let mut batches = FileOrder {
        bytes: train_bytes,
        labels: train.labels(),
        per_epoch,
        at: 0,
    };
    let mut schedule = LrSchedule {
        seen: 0,
        total: per_epoch * epochs,
    };
    trainer
        .run(&Naive, &mut batches, &mut OneNetwork, &mut schedule)
        .map_err(|e| match e {
            Stop::Failed(e) => e,
            Stop::Diverged { iteration, why } => {
                format!("diverged at iteration {iteration}: {why}")
            }
        })?;
    let net = trainer.net_mut();
    println!("weights_fnv1a {}", digest(net.params()));
    let scored = test.len().min(test_limit);
    let correct = score(net, test_bytes, test.labels(), scored);
    println!("test_correct {correct} of {scored}");
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("device_cnn: {e}");
            ExitCode::FAILURE
        }
    }
}
