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
use manabi_firmware::mnist::{self, INPUT, LAYERS, PIXELS, SparseRows, StreamBatches};
use manabi_firmware::{
    At, Clock, Error, Fixed, Percent, digest, fail, finish, metric, plan, print_plan, println,
    start,
};
use manabi_layers::{
    Init, Network, Observer, OneNetwork, Period, Plan, Schedule, Trainer, Training, Update,
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
static PLAN: Plan = plan(INPUT, &LAYERS, BATCH, Training::FusedSgd);

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
    finish(run())
}

/// `mnist-train`'s observer: the learning rate falling with the images seen, the instructions
/// of each step (reading the batch, building its sparse rows, the step itself), and a line of
/// mean loss every [`REPORT_EVERY`] images.
struct Watch<'c> {
    clock: &'c Clock,
    /// Images trained on, and all the run will.
    seen: usize,
    total: usize,
    /// When the step under way started, and the instructions of all steps so far.
    step_start: u64,
    step_instructions: u64,
}

impl<S> Observer<f32, S, Error> for Watch<'_> {
    fn learning_rate(&mut self, _done: u64) -> Option<f32> {
        self.step_start = self.clock.instructions();
        Some(LR * (1.0 - LR_DECAY * self.seen as f32 / self.total as f32))
    }

    fn stepped(&mut self, _: &mut At<'_, '_, S>, _: f32, rows: usize) -> Result<(), Error> {
        self.step_instructions += self.clock.instructions() - self.step_start;
        self.seen += rows;
        Ok(())
    }

    fn evaluate(&mut self, _: &mut At<'_, '_, S>, mean_loss: f64) -> Result<(), Error> {
        println!(
            "{:>6} images  mean loss {}",
            self.seen,
            Fixed(mean_loss as f32, 4)
        );
        Ok(())
    }
}

/// The run's buffers: the arena, one batch of pixels and labels, and room for its sparse rows.
fn buffers() -> (
    Network<'static, f32>,
    &'static mut [u8],
    SparseRows<'static>,
) {
    let (Some(arena), Some(pixels), Some(offsets), Some(indices), Some(values)) = (
        ARENA.try_take(),
        PIXEL_BYTES.try_take(),
        SPARSE_OFFSETS.try_take(),
        SPARSE_INDICES.try_take(),
        SPARSE_VALUES.try_take(),
    ) else {
        fail(format_args!("buffers taken twice"))
    };
    let sparse = SparseRows {
        offsets,
        indices,
        values,
        table: mnist::pixel_values(),
    };
    match Network::new(&PLAN, arena) {
        Ok(net) => (net, pixels, sparse),
        Err(e) => fail(format_args!("{e}")),
    }
}

fn run() -> Result<(), Error> {
    let (clock, args) = start();
    let dir = args.value("data").unwrap_or("");
    let limit: usize = args.parse("train", usize::MAX)?;
    let (mut net, pixels, sparse) = buffers();
    net.init(Init::Book, &mut Rng::new(SEED));
    print_plan("MNIST 784-50-10", &PLAN);
    let mut labels = [0usize; BATCH];
    let mut batches = StreamBatches::open(dir, limit, (pixels, &mut labels), Some(sparse))?;
    let total = batches.per_epoch()?;
    println!(
        "training on {} images streamed from the host, SGD lr {} -> {}",
        total,
        Fixed(LR, 2),
        Fixed(LR * (1.0 - LR_DECAY), 2)
    );
    // Every weight is checked at each report (a check after every step would cost a tenth
    // of one); the loss after every step.
    let report = (REPORT_EVERY / BATCH) as u64;
    let schedule = Schedule {
        evaluate: Some(Period::ends(report)),
        check_weights_every: report,
        ..Schedule::new(total.div_ceil(BATCH) as u64)
    };
    let mut trainer = Trainer::new(net, Update::fused_sgd(&PLAN, LR)?, schedule);
    let mut watch = Watch {
        clock: &clock,
        seen: 0,
        total,
        step_start: 0,
        step_instructions: 0,
    };
    let start = clock.instructions();
    trainer.run(&Naive, &mut batches, &mut OneNetwork, &mut watch)?;
    let train_instructions = clock.instructions() - start;
    let p = *trainer.progress();
    if p.loss_count > 0 {
        // The images after the last report.
        let mean = p.loss_sum / p.loss_count as f64;
        println!("{:>6} images  mean loss {}", total, Fixed(mean as f32, 4));
    }
    let steps = batches.steps;
    let (pixels, labels, mut sparse) = batches.into_buffers();
    let mut net = trainer.into_net();
    let start = clock.instructions();
    let confusion = mnist::evaluate(&mut net, &Naive, dir, pixels, labels, sparse.as_mut())?;
    let eval_instructions = clock.instructions() - start;
    let per = |n: u64, k: usize| n / (k.max(1) as u64);
    let timing = (
        per(watch.step_instructions, total),
        per(train_instructions, total),
    );
    report_results(&net, &confusion, (total, steps), timing, eval_instructions);
    Ok(())
}

/// Prints the confusion matrix, the accuracy and the `metric` lines.
fn report_results(
    net: &Network<'_, f32>,
    confusion: &mnist::Confusion,
    (total, (all_steps, sparse_steps)): (usize, (usize, usize)),
    (per_step, per_train): (u64, u64),
    eval_instructions: u64,
) {
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
    metric!("arena_bytes", PLAN.bytes::<f32>());
    metric!("train_images", total);
    metric!("train_steps", all_steps);
    metric!("sparse_steps", sparse_steps);
    metric!("instructions_per_train_step_sample", per_step);
    metric!("instructions_per_train_sample", per_train);
    metric!(
        "instructions_per_test_sample",
        eval_instructions / u64::from(tested.max(1))
    );
    metric!("weights_fnv1a", digest(net.params()));
    metric!("test_correct", correct);
    metric!("test_total", tested);
    metric!("stack_peak_bytes", stack.peak);
    metric!("stack_size_bytes", stack.size);
}
