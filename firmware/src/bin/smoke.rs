//! Smoke test, seconds long: XOR and three Gaussian blobs trained on the device.
//!
//! Both nets use the library as a host would: a [`Plan`] sizes a `static` arena at compile
//! time, [`Network::train_step`] runs backprop with the `Naive` backend, and the optimizers come
//! from manabi-optim (Momentum for XOR, Adam for the blobs). The same code runs on the
//! Cortex-M4F (`mps2-an386`) and the Cortex-M0 (`microbit`, 16 KiB of RAM, soft float).
//!
//! It passes when XOR's loss falls below 0.05 with all four points right, and the blobs
//! classifier gets at least 95 % of fresh test points right. It also prints what it reached as
//! `metric` lines: XOR's loss and points right, the blobs' fresh points right, and each net's
//! weights digest (FNV-1a of the parameters' bits, [`manabi_firmware::digest`]). The runs are
//! seeded and the arithmetic is IEEE f32 on both cores, so `cargo xtask embedded` requires the
//! exact values it pins, the same on both boards. Command-line words (through
//! QEMU's `-append`): `calibrate` first checks that [`Clock`] counts a known loop exactly
//! (true only under `-icount shift=0`), `xor_steps=N` overrides the XOR step count (too few
//! must fail), `panic` and `fault` exercise the panic and HardFault handlers (both must exit
//! non-zero).
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use manabi_firmware::{
    At, BOARD, Clock, Error, Fixed, Percent, TimedStep, digest, exit, fail, metric, plan, println,
    start,
};
use manabi_layers::{
    Batch, BatchSource, Init, Input, Network, Observer, Period, Plan, Schedule, Shape, Spec,
    Trainer, Training, Update,
};
use manabi_matmul::Naive;
use manabi_optim::{Adam, Momentum};
use manabi_tensor::Rng;
use static_cell::ConstStaticCell;

/// XOR: 2 inputs, 8 hidden ReLU units, 2 classes; all four points form one batch; Momentum
/// keeps one state slot per parameter.
static XOR_PLAN: Plan = plan(
    Shape::flat(2),
    &[Spec::Affine(8), Spec::Relu, Spec::Affine(2)],
    4,
    Training::Backprop { optimizer_slots: 1 },
);

/// Blobs: 2 inputs, 16 hidden units, 3 classes, minibatches of 15; Adam keeps two slots.
static BLOBS_PLAN: Plan = plan(
    Shape::flat(2),
    &[Spec::Affine(16), Spec::Relu, Spec::Affine(BLOB_CLASSES)],
    BLOB_BATCH,
    Training::Backprop { optimizer_slots: 2 },
);

static XOR_ARENA: ConstStaticCell<[f32; XOR_PLAN.total()]> =
    ConstStaticCell::new([0.0; XOR_PLAN.total()]);
static BLOBS_ARENA: ConstStaticCell<[f32; BLOBS_PLAN.total()]> =
    ConstStaticCell::new([0.0; BLOBS_PLAN.total()]);

const XOR_X: [f32; 8] = [0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0];
const XOR_Y: [usize; 4] = [0, 1, 1, 0];
const XOR_STEPS: u32 = 400;
/// Seed of XOR's initial weights: seed 1 ends in a local minimum with one point wrong (as
/// small ReLU nets on XOR sometimes do); seeds 2 to 8 all learned it when this was written.
const XOR_SEED: u64 = 2;
const XOR_MAX_LOSS: f32 = 0.05;

const BLOB_CLASSES: usize = 3;
const BLOB_BATCH: usize = 15;
/// Points per set (training and test each), a third per class.
const BLOB_POINTS: usize = 90;
const BLOB_EPOCHS: u32 = 40;
/// Class centres on a circle of radius 2, 120° apart; points scatter with this deviation.
const BLOB_CENTRES: [[f32; 2]; BLOB_CLASSES] = [[0.0, 2.0], [-1.732, -1.0], [1.732, -1.0]];
const BLOB_STD: f32 = 0.5;
/// Least test accuracy, in percent.
const BLOB_MIN_ACCURACY: u32 = 95;

#[entry]
fn main() -> ! {
    let (clock, args) = start();
    if args.has("panic") {
        panic!("deliberate panic (checking the panic handler)");
    }
    if args.has("fault") {
        println!("executing an undefined instruction (checking the HardFault handler)");
        cortex_m::asm::udf();
    }
    if args.has("calibrate") && !calibrate(&clock) {
        fail(format_args!(
            "SysTick does not count instructions: is QEMU run with -icount shift=0?"
        ));
    }
    let xor_steps = match args.parse("xor_steps", XOR_STEPS) {
        Ok(n) => n,
        Err(e) => fail(format_args!("{e}")),
    };
    println!("smoke test on {}", BOARD);
    let xor_ok = xor(&clock, xor_steps);
    let blobs_ok = blobs(&clock);
    let stack = manabi_firmware::stack_usage();
    metric!(
        "arena_bytes",
        XOR_PLAN.bytes::<f32>() + BLOBS_PLAN.bytes::<f32>()
    );
    metric!("stack_peak_bytes", stack.peak);
    metric!("stack_size_bytes", stack.size);
    if xor_ok && blobs_ok {
        println!("smoke: PASS");
        exit(true)
    }
    fail(format_args!("smoke: a net did not learn"))
}

/// Times a loop of known length (two instructions per turn) with [`Clock`]; true if the count
/// is exact to within the few instructions around the loop.
fn calibrate(clock: &Clock) -> bool {
    const TURNS: u32 = 1_000_000;
    let start = clock.instructions();
    // SAFETY: a register-only countdown loop; it touches no memory and leaves the stack alone.
    unsafe {
        core::arch::asm!(
            "1:",
            "subs {n}, #1",
            "bne 1b",
            n = inout(reg) TURNS => _,
            options(nomem, nostack),
        );
    }
    let counted = clock.instructions() - start;
    let expected = 2 * u64::from(TURNS);
    println!(
        "calibration: a loop of {} instructions counted as {}",
        expected, counted
    );
    metric!("calibration_instructions", counted);
    counted.abs_diff(expected) <= 100
}

/// XOR's four points, every step's whole batch.
struct XorBatches;

impl BatchSource<f32, Error> for XorBatches {
    fn next(&mut self, _: u64, net: &mut Network<'_, f32>) -> Result<Batch<'_, f32>, Error> {
        net.input_mut(4).copy_from_slice(&XOR_X);
        Ok(Batch {
            input: Input::Arena(4),
            labels: &XOR_Y,
        })
    }
}

/// Prints XOR's loss every 100 steps and after the last.
struct XorReport {
    steps: u32,
    loss: f32,
}

impl<S> Observer<f32, S, Error> for XorReport {
    fn stepped(&mut self, at: &mut At<'_, '_, S>, loss: f32, _: usize) -> Result<(), Error> {
        let t = at.progress.iteration;
        if t % 100 == 0 || t == u64::from(self.steps) {
            println!("xor step {:>4}  loss {}", t, Fixed(loss, 5));
        }
        self.loss = loss;
        Ok(())
    }
}

/// Trains XOR with Momentum; true if it learned.
fn xor(clock: &Clock, steps: u32) -> bool {
    let Some(arena) = XOR_ARENA.try_take() else {
        fail(format_args!("XOR arena taken twice"))
    };
    let mut net = match Network::new(&XOR_PLAN, arena) {
        Ok(n) => n,
        Err(e) => fail(format_args!("XOR: {e}")),
    };
    net.init(Init::He, &mut Rng::new(XOR_SEED));
    let opt = Momentum::new(0.1);
    // Steps count from 1; the update adds one per step.
    let update = match Update::optimizer(&XOR_PLAN, &opt, 1) {
        Ok(u) => u,
        Err(e) => fail(format_args!("XOR: {e}")),
    };
    let mut trainer = Trainer::new(net, update, Schedule::new(u64::from(steps)));
    let mut timed = TimedStep::new(clock);
    let mut report = XorReport {
        steps,
        loss: f32::NAN,
    };
    if let Err(e) = trainer.run(&Naive, &mut XorBatches, &mut timed, &mut report) {
        fail(format_args!("XOR: {}", Error::from(e)))
    }
    let per_sample = timed.instructions / (u64::from(steps.max(1)) * 4);
    let net = trainer.net_mut();
    let correct = net.correct(&Naive, &XOR_X, &XOR_Y);
    let loss = report.loss;
    println!(
        "xor: loss {} (pass below {}), {}/4 right, arena {} bytes",
        Fixed(loss, 5),
        Fixed(XOR_MAX_LOSS, 2),
        correct,
        XOR_PLAN.bytes::<f32>()
    );
    metric!("xor_loss", Fixed(loss, 5));
    metric!("xor_correct", correct);
    metric!("xor_weights_fnv1a", digest(net.params()));
    metric!("xor_instructions_per_sample", per_sample);
    loss < XOR_MAX_LOSS && correct == 4
}

/// Draws `BLOB_POINTS` points, a third per class, around the class centres.
fn draw_blobs(rng: &mut Rng, x: &mut [f32; 2 * BLOB_POINTS], y: &mut [usize; BLOB_POINTS]) {
    for (i, (p, label)) in x.chunks_exact_mut(2).zip(y.iter_mut()).enumerate() {
        let class = i % BLOB_CLASSES;
        *label = class;
        p[0] = BLOB_CENTRES[class][0] + BLOB_STD * rng.normal::<f32>();
        p[1] = BLOB_CENTRES[class][1] + BLOB_STD * rng.normal::<f32>();
    }
}

/// The blobs' training points in minibatches, shuffled again at the start of every epoch.
struct BlobBatches {
    rng: Rng,
    x: [f32; 2 * BLOB_POINTS],
    y: [usize; BLOB_POINTS],
    order: [u8; BLOB_POINTS],
    labels: [usize; BLOB_BATCH],
}

/// Minibatches per epoch.
const BLOB_STEPS: u64 = (BLOB_POINTS / BLOB_BATCH) as u64;

impl BatchSource<f32, Error> for BlobBatches {
    fn next(&mut self, done: u64, net: &mut Network<'_, f32>) -> Result<Batch<'_, f32>, Error> {
        let k = (done % BLOB_STEPS) as usize;
        if k == 0 {
            self.rng.shuffle(&mut self.order);
        }
        let batch = &self.order[k * BLOB_BATCH..(k + 1) * BLOB_BATCH];
        let input = net.input_mut(BLOB_BATCH);
        for (j, &i) in batch.iter().enumerate() {
            let i = usize::from(i);
            input[2 * j..2 * j + 2].copy_from_slice(&self.x[2 * i..2 * i + 2]);
            self.labels[j] = self.y[i];
        }
        Ok(Batch {
            input: Input::Arena(BLOB_BATCH),
            labels: &self.labels,
        })
    }
}

/// Prints the blobs' mean loss every 10 epochs.
struct BlobReport;

impl<S> Observer<f32, S, Error> for BlobReport {
    fn evaluate(&mut self, at: &mut At<'_, '_, S>, mean_loss: f64) -> Result<(), Error> {
        let epoch = at.progress.iteration / BLOB_STEPS;
        if epoch % 10 == 0 {
            println!(
                "blobs epoch {:>3}  loss {}",
                epoch,
                Fixed(mean_loss as f32, 5)
            );
        }
        Ok(())
    }
}

/// Trains the blobs classifier with Adam on shuffled minibatches; true if it generalises.
fn blobs(clock: &Clock) -> bool {
    let Some(arena) = BLOBS_ARENA.try_take() else {
        fail(format_args!("blobs arena taken twice"))
    };
    let mut net = match Network::new(&BLOBS_PLAN, arena) {
        Ok(n) => n,
        Err(e) => fail(format_args!("blobs: {e}")),
    };
    let mut rng = Rng::new(7);
    net.init(Init::He, &mut rng);
    let (mut x, mut y) = ([0.0f32; 2 * BLOB_POINTS], [0usize; BLOB_POINTS]);
    draw_blobs(&mut rng, &mut x, &mut y);
    let order: [u8; BLOB_POINTS] = core::array::from_fn(|i| i as u8);
    let opt = Adam::new(0.01);
    let update = match Update::optimizer(&BLOBS_PLAN, &opt, 1) {
        Ok(u) => u,
        Err(e) => fail(format_args!("blobs: {e}")),
    };
    let labels = [0usize; BLOB_BATCH];
    let mut batches = BlobBatches {
        rng,
        x,
        y,
        order,
        labels,
    };
    let schedule = Schedule {
        evaluate: Some(Period::ends(BLOB_STEPS)),
        ..Schedule::new(u64::from(BLOB_EPOCHS) * BLOB_STEPS)
    };
    let mut trainer = Trainer::new(net, update, schedule);
    let mut timed = TimedStep::new(clock);
    if let Err(e) = trainer.run(&Naive, &mut batches, &mut timed, &mut BlobReport) {
        fail(format_args!("blobs: {}", Error::from(e)))
    }
    let per_sample = timed.instructions / (u64::from(BLOB_EPOCHS) * BLOB_POINTS as u64);
    // Fresh points from the same distributions.
    let BlobBatches {
        mut rng,
        mut x,
        mut y,
        ..
    } = batches;
    draw_blobs(&mut rng, &mut x, &mut y);
    let net = trainer.net_mut();
    let correct = net.correct(&Naive, &x, &y) as u32;
    println!(
        "blobs: {} of fresh test points right (pass at {} %), arena {} bytes",
        Percent(correct, BLOB_POINTS as u32),
        BLOB_MIN_ACCURACY,
        BLOBS_PLAN.bytes::<f32>()
    );
    metric!("blobs_test_correct", correct);
    metric!("blobs_weights_fnv1a", digest(net.params()));
    metric!("blobs_instructions_per_sample", per_sample);
    correct * 100 >= BLOB_MIN_ACCURACY * BLOB_POINTS as u32
}
