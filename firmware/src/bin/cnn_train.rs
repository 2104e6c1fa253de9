//! A convolutional network trained on the device: conv 8@5×5 → ReLU → max-pool 2×2 → affine 10, f32, within 256 KiB of RAM.
//!
//! Weights are drawn on the device (`Init::He`, seed 1). Each epoch streams the host's raw
//! training files through semihosting in file order, two images at a time, and trains with
//! SGD fused into the backward pass; the learning rate falls linearly from 0.05 to 0.005 over
//! all epochs. After each epoch the test images are streamed and scored.
//!
//! Command line (QEMU `-append "..."`): `data=DIR` (the raw IDX files), `epochs=N` (default 3),
//! `train=N` (training images per epoch, default all 60,000), `test=N` (test images scored
//! after each epoch, default all 10,000). The weights' digest after training
//! (`metric weights_fnv1a`) is what the host twin, `cargo run -p manabi-layers --example
//! device_cnn`, computes with the same arithmetic; the run is seeded, so `cargo xtask embedded`
//! also requires the exact `test_correct` it pins (916 of 1,000 after 2,000 images, 9,815 of
//! 10,000 after three epochs).
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use manabi_firmware::cnn::{self, BATCH, INPUT, LAYERS, SEED};
use manabi_firmware::mnist::{
    self, CLASSES, Confusion, PIXELS, Stream, StreamBatches, TEST_IMAGES, TEST_LABELS,
};
use manabi_firmware::{
    At, Clock, Error, Fixed, Percent, fail, finish, metric, plan, print_plan, println, start,
};
use manabi_layers::{
    Init, Input, Mode, Network, Observer, OneNetwork, Period, Plan, Schedule, Trainer, Training,
    Update, argmax,
};
use manabi_matmul::Naive;
use manabi_tensor::Rng;
use static_cell::ConstStaticCell;

/// The memory plan: weights, one batch of activations and their gradients, one `col`.
static PLAN: Plan = plan(INPUT, &LAYERS, BATCH, Training::FusedSgd);

/// The network's one arena, sized by the plan at compile time.
static ARENA: ConstStaticCell<[f32; PLAN.total()]> = ConstStaticCell::new([0.0; PLAN.total()]);
/// One batch of images as bytes, as read from the host.
static PIXEL_BYTES: ConstStaticCell<[u8; BATCH * PIXELS]> =
    ConstStaticCell::new([0; BATCH * PIXELS]);
/// The same for the test images scored after each epoch, while the training batches keep theirs.
static TEST_PIXEL_BYTES: ConstStaticCell<[u8; BATCH * PIXELS]> =
    ConstStaticCell::new([0; BATCH * PIXELS]);

#[entry]
fn main() -> ! {
    finish(run())
}

/// Scores the first `limit` test images.
fn evaluate(
    net: &mut Network<'_, f32>,
    dir: &str,
    limit: usize,
    pixels: &mut [u8],
) -> Result<Confusion, Error> {
    let mut test = Stream::open(dir, TEST_IMAGES, TEST_LABELS, limit)?;
    let mut labels = [0usize; BATCH];
    let mut confusion = Confusion::default();
    while test.left() > 0 {
        let n = test.next(pixels, &mut labels)?;
        mnist::to_input(&pixels[..n * PIXELS], net.input_mut(n));
        let logits = net.forward(&Naive, Input::Arena(n), Mode::Eval);
        for (row, &label) in logits.chunks_exact(CLASSES).zip(&labels[..n]) {
            confusion.add(label, argmax(row));
        }
    }
    Ok(confusion)
}

/// `cnn-train`'s observer: the shared learning-rate schedule, and the test images scored at
/// the end of each epoch.
struct Watch<'c> {
    schedule: cnn::LrSchedule,
    clock: &'c Clock,
    dir: &'c str,
    test_limit: usize,
    /// The test images' bytes (the training batches have their own buffer).
    pixels: &'c mut [u8],
    /// Training steps in one epoch.
    steps_per_epoch: u64,
    /// The last epoch's scores, the test images scored in all, and the instructions spent.
    last: Confusion,
    tested: u64,
    eval_instructions: u64,
}

impl<S> Observer<f32, S, Error> for Watch<'_> {
    fn learning_rate(&mut self, done: u64) -> Option<f32> {
        Observer::<f32, S, Error>::learning_rate(&mut self.schedule, done)
    }

    fn stepped(&mut self, at: &mut At<'_, '_, S>, loss: f32, rows: usize) -> Result<(), Error> {
        self.schedule.stepped(at, loss, rows)
    }

    fn evaluate(&mut self, at: &mut At<'_, '_, S>, mean_loss: f64) -> Result<(), Error> {
        let start = self.clock.instructions();
        self.last = evaluate(at.net, self.dir, self.test_limit, self.pixels)?;
        self.eval_instructions += self.clock.instructions() - start;
        self.tested += u64::from(self.last.total());
        let (correct, total) = (self.last.correct(), self.last.total());
        let epoch = at.progress.iteration / self.steps_per_epoch;
        println!(
            "epoch {}: mean loss {}, test accuracy {} ({} of {})",
            epoch,
            Fixed(mean_loss as f32, 4),
            Percent(correct, total),
            correct,
            total
        );
        println!("metric test_correct_epoch{} {}", epoch, correct);
        Ok(())
    }
}
fn run() -> Result<(), Error> {
    let (clock, args) = start();
    let dir = args.value("data").unwrap_or("");
    let epochs: usize = args.parse("epochs", 3)?;
    let limit: usize = args.parse("train", usize::MAX)?;
    let test_limit: usize = args.parse("test", usize::MAX)?;
    let (Some(arena), Some(pixels), Some(test_pixels)) = (
        ARENA.try_take(),
        PIXEL_BYTES.try_take(),
        TEST_PIXEL_BYTES.try_take(),
    ) else {
        fail(format_args!("buffers taken twice"))
    };
    let mut net = Network::new(&PLAN, arena)?;
    net.init(Init::He, &mut Rng::new(SEED));
    print_plan("CNN conv 8@5x5, relu, maxpool 2x2, affine 10", &PLAN);
    let mut labels = [0usize; BATCH];
    let mut batches = StreamBatches::open(dir, limit, (pixels, &mut labels), None)?;
    let per_epoch = batches.per_epoch()?;
    let total = per_epoch * epochs;
    println!(
        "training {} epochs of {} images streamed from the host, SGD lr {} -> {}",
        epochs,
        per_epoch,
        Fixed(cnn::lr(0, total), 3),
        Fixed(cnn::lr(total, total), 3)
    );
    let steps_per_epoch = per_epoch.div_ceil(BATCH) as u64;
    let schedule = Schedule {
        evaluate: Some(Period::ends(steps_per_epoch)),
        check_weights_every: steps_per_epoch,
        ..Schedule::new(steps_per_epoch * epochs as u64)
    };
    let mut trainer = Trainer::new(net, Update::fused_sgd(&PLAN, cnn::LR)?, schedule);
    let mut watch = Watch {
        schedule: cnn::LrSchedule { seen: 0, total },
        clock: &clock,
        dir,
        test_limit,
        pixels: test_pixels,
        steps_per_epoch,
        last: Confusion::default(),
        tested: 0,
        eval_instructions: 0,
    };
    let start = clock.instructions();
    trainer.run(&Naive, &mut batches, &mut OneNetwork, &mut watch)?;
    // The evaluations ran inside the loop: their instructions are not training's.
    let train_instructions = clock.instructions() - start - watch.eval_instructions;
    report_results(
        trainer.net(),
        &watch,
        (epochs, per_epoch),
        train_instructions,
    );
    Ok(())
}

/// Prints the last epoch's confusion matrix, the accuracy and the `metric` lines.
fn report_results(
    net: &Network<'_, f32>,
    watch: &Watch<'_>,
    (epochs, per_epoch): (usize, usize),
    train_instructions: u64,
) {
    let last = &watch.last;
    let (correct, scored) = (last.correct(), last.total());
    last.print();
    println!(
        "test accuracy {} ({} of {}) after {} epochs of {} images",
        Percent(correct, scored),
        correct,
        scored,
        epochs,
        per_epoch
    );
    let total = per_epoch * epochs;
    let stack = manabi_firmware::stack_usage();
    let per = |n: u64, k: u64| n / k.max(1);
    metric!("arena_bytes", PLAN.bytes::<f32>());
    metric!("scratch_values", PLAN.scratch_len());
    metric!("epochs", epochs);
    metric!("train_images", total);
    metric!(
        "instructions_per_train_sample",
        per(train_instructions, total as u64)
    );
    metric!(
        "instructions_per_test_sample",
        per(watch.eval_instructions, watch.tested)
    );
    metric!("weights_fnv1a", cnn::digest(net.params()));
    metric!("test_correct", correct);
    metric!("test_total", scored);
    metric!("stack_peak_bytes", stack.peak);
    metric!("stack_size_bytes", stack.size);
}
