//! The book's MNIST network trained on the device: 784-50-10, f32, within 256 KiB of RAM.
//!
//! Weights are drawn on the device (`Init::Book`, seed 1). Training streams the host's raw IDX
//! files through semihosting in file order, ten images at a time, and trains with SGD fused
//! into the backward pass (`Training::FusedSgd`: the 155 KiB of weights leave no room for a
//! gradient buffer). The learning rate falls linearly from 0.2 to 0.02 over the run. Then the
//! 10,000 test images are streamed the same way and the confusion matrix is printed.
//!
//! Each batch is read as compressed sparse rows when its nonzero pixels fit the 32 KiB kept
//! for them (MNIST's most in one batch of ten, in file order, is 2,199 of the 4,000 room): the
//! first layer then works on about a fifth of the pixels, and its results are those of the
//! dense Naive product bit for bit, so the accuracy is unchanged. The weight gradient scatters
//! the rows (no room for their transpose).
//!
//! Command line (QEMU `-append "..."`): `data=DIR` (the raw IDX files; default QEMU's working
//! directory), `train=N` (training images, default all 60,000).
//!
//! The run is seeded and its arithmetic is the Naive backend's in f32, so its results are
//! fixed: it prints them as `metric` lines (the test set's `test_correct` and the trained
//! weights' `weights_fnv1a`, [`manabi_firmware::digest`]) and `cargo xtask embedded` requires
//! the exact values it pins for 10,000 and 60,000 images (9,191 and 9,648 of 10,000 right).
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use manabi_firmware::mnist::SparseRows;
use manabi_firmware::mnist::{self, INPUT, LAYERS, PIXELS, Stream, TRAIN_IMAGES, TRAIN_LABELS};
use manabi_firmware::{
    Args, BOARD, Clock, Error, Fixed, Percent, digest, exit, fail, metric, println,
};
use manabi_layers::{
    Init, Input, Network, Plan, PlanConfig, SparseBatch, Target, Training, Update,
};
use manabi_matmul::Naive;
use manabi_tensor::Rng;
use static_cell::ConstStaticCell;

/// Images per SGD step (and per evaluation pass).
const BATCH: usize = 10;
/// Learning rate at the start; it falls linearly to `LR * (1 - LR_DECAY)` at the end.
const LR: f32 = 0.2;
const LR_DECAY: f32 = 0.9;
/// Seed of the weight initialisation.
const SEED: u64 = 1;
/// Progress lines every this many images.
const REPORT_EVERY: usize = 10_000;

/// The memory plan: weights, one batch of activations and their gradients, no gradient buffer.
static PLAN: Plan = match Plan::new(&PlanConfig {
    input: INPUT,
    layers: &LAYERS,
    batch: BATCH,
    eval_batch: BATCH,
    training: Training::FusedSgd,
}) {
    Ok(p) => p,
    Err(_) => panic!("the MNIST plan is invalid"),
};

/// The network's one arena, sized by the plan at compile time.
static ARENA: ConstStaticCell<[f32; PLAN.total()]> = ConstStaticCell::new([0.0; PLAN.total()]);
/// One batch of images as bytes, as read from the host.
static PIXEL_BYTES: ConstStaticCell<[u8; BATCH * PIXELS]> =
    ConstStaticCell::new([0; BATCH * PIXELS]);
/// Nonzero pixels a batch may have to be read as sparse rows: 400 an image (MNIST's most in
/// one image is 351).
const NNZ_ROOM: usize = 400 * BATCH;
/// One batch as compressed rows: row starts, column and value of each nonzero.
static SPARSE_OFFSETS: ConstStaticCell<[u32; BATCH + 1]> = ConstStaticCell::new([0; BATCH + 1]);
static SPARSE_INDICES: ConstStaticCell<[u32; NNZ_ROOM]> = ConstStaticCell::new([0; NNZ_ROOM]);
static SPARSE_VALUES: ConstStaticCell<[f32; NNZ_ROOM]> = ConstStaticCell::new([0.0; NNZ_ROOM]);

#[entry]
fn main() -> ! {
    match run() {
        Ok(()) => exit(true),
        Err(e) => fail(format_args!("{e}")),
    }
}

fn run() -> Result<(), Error> {
    let Some(core) = cortex_m::Peripherals::take() else {
        fail(format_args!("core peripherals taken twice"))
    };
    let clock = Clock::start(core.SYST);
    let args = Args::get();
    let dir = args.value("data").unwrap_or("");
    let limit: usize = args.parse("train", usize::MAX)?;
    let (Some(arena), Some(pixels), Some(offsets), Some(indices), Some(values)) = (
        ARENA.try_take(),
        PIXEL_BYTES.try_take(),
        SPARSE_OFFSETS.try_take(),
        SPARSE_INDICES.try_take(),
        SPARSE_VALUES.try_take(),
    ) else {
        fail(format_args!("buffers taken twice"))
    };
    let mut sparse = SparseRows {
        offsets,
        indices,
        values,
        table: mnist::pixel_values(),
    };
    let mut net = Network::new(&PLAN, arena)?;
    net.init(Init::Book, &mut Rng::new(SEED));
    // Checked against the plan once; each step only changes the learning rate.
    let mut sgd = Update::fused_sgd(&PLAN, LR)?;
    let (params, _, _, activations) = PLAN.breakdown();
    println!(
        "MNIST 784-50-10 on {}: arena {} bytes ({} parameters, {} activation values), batch {}",
        BOARD,
        PLAN.bytes::<f32>(),
        params,
        activations,
        BATCH
    );

    let mut train = Stream::open(dir, TRAIN_IMAGES, TRAIN_LABELS, limit)?;
    let total = train.left();
    println!(
        "training on {} images streamed from the host, SGD lr {} -> {}",
        total,
        Fixed(LR, 2),
        Fixed(LR * (1.0 - LR_DECAY), 2)
    );
    let mut labels = [0usize; BATCH];
    let (mut seen, mut loss_sum, mut steps) = (0usize, 0.0f32, 0u32);
    let (mut all_steps, mut sparse_steps) = (0usize, 0usize);
    let (mut step_instructions, start) = (0u64, clock.instructions());
    while train.left() > 0 {
        let n = train.next(pixels, &mut labels)?;
        sgd.set_lr(LR * (1.0 - LR_DECAY * seen as f32 / total as f32))?;
        let target = Target::Labels(&labels[..n]);
        // The step's instructions include building the sparse rows (or converting the bytes).
        let before = clock.instructions();
        let input = match sparse.rows(pixels, n) {
            Some(x) => {
                sparse_steps += 1;
                Input::Sparse(SparseBatch::rows_only(x))
            }
            None => {
                mnist::to_input(&pixels[..n * PIXELS], net.input_mut(n));
                Input::Arena(n)
            }
        };
        loss_sum += net.train_step(&Naive, input, target, &mut sgd);
        step_instructions += clock.instructions() - before;
        steps += 1;
        all_steps += 1;
        let was = seen;
        seen += n;
        if seen / REPORT_EVERY != was / REPORT_EVERY || seen == total {
            println!(
                "{:>6} images  mean loss {}",
                seen,
                Fixed(loss_sum / steps as f32, 4)
            );
            (loss_sum, steps) = (0.0, 0);
        }
    }
    let train_instructions = clock.instructions() - start;

    let start = clock.instructions();
    let confusion = mnist::evaluate(
        &mut net,
        &Naive,
        dir,
        pixels,
        &mut labels,
        Some(&mut sparse),
    )?;
    let eval_instructions = clock.instructions() - start;
    let (correct, tested) = (confusion.correct(), confusion.total());
    confusion.print();
    println!(
        "test accuracy {} ({} of {}) after {} training images",
        Percent(correct, tested),
        correct,
        tested,
        total
    );
    let stack = manabi_firmware::stack_usage();
    let per = |n: u64, k: usize| n / (k.max(1) as u64);
    metric!("arena_bytes", PLAN.bytes::<f32>());
    metric!("train_images", total);
    metric!("train_steps", all_steps);
    metric!("sparse_steps", sparse_steps);
    metric!(
        "instructions_per_train_step_sample",
        per(step_instructions, total)
    );
    metric!(
        "instructions_per_train_sample",
        per(train_instructions, total)
    );
    metric!(
        "instructions_per_test_sample",
        per(eval_instructions, tested as usize)
    );
    metric!("weights_fnv1a", digest(net.params()));
    metric!("test_correct", correct);
    metric!("test_total", tested);
    metric!("stack_peak_bytes", stack.peak);
    metric!("stack_size_bytes", stack.size);
    Ok(())
}
