//! Host-trained weights on the device: `manabi train`'s model in flash, evaluated on MNIST.
//!
//! The weights arrive at build time: `$MANABI_MODEL_BIN` names a file of the flat parameters
//! `[W1 b1 W2 b2]` as little-endian f32 (`cargo xtask embedded` converts `model.safetensors`
//! into it), which `build.rs` copies and `include_bytes!` puts in flash. They are copied into
//! the arena, the 10,000 test images are streamed from the host, and the confusion matrix is
//! printed in the layout of `manabi eval`, which the host compares exactly with
//! `manabi eval --backend naive` (the same loops in the same order, so the same predictions).
//!
//! Command line (QEMU `-append "..."`): `data=DIR`, the raw IDX files (default QEMU's working
//! directory).
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use manabi_firmware::mnist::{self, INPUT, LAYERS, PIXELS};
use manabi_firmware::{BOARD, Error, Percent, fail, finish, metric, plan, println, start};
use manabi_layers::{Network, Plan, Training};
use manabi_matmul::Naive;
use static_cell::ConstStaticCell;

/// Images per forward pass.
const ROWS: usize = 10;

/// Forward only: the weights and one pass of activations.
static PLAN: Plan = plan(INPUT, &LAYERS, ROWS, Training::Inference);

/// The weights, `[W1 b1 W2 b2]` as little-endian f32; empty when built without a model.
const MODEL: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/model.bin"));
const _: () = assert!(
    MODEL.is_empty() || MODEL.len() == PLAN.param_len() * 4,
    "MANABI_MODEL_BIN must hold the 39,760 f32 parameters of a 784-50-10 net"
);

static ARENA: ConstStaticCell<[f32; PLAN.total()]> = ConstStaticCell::new([0.0; PLAN.total()]);
static PIXEL_BYTES: ConstStaticCell<[u8; ROWS * PIXELS]> = ConstStaticCell::new([0; ROWS * PIXELS]);

#[entry]
fn main() -> ! {
    finish(run())
}

fn run() -> Result<(), Error> {
    let (clock, args) = start();
    let dir = args.value("data").unwrap_or("");
    let (Some(arena), Some(pixels)) = (ARENA.try_take(), PIXEL_BYTES.try_take()) else {
        fail(format_args!("buffers taken twice"))
    };
    if MODEL.is_empty() {
        fail(format_args!(
            "built without weights: set MANABI_MODEL_BIN when building (cargo xtask embedded does)"
        ));
    }
    let mut net = Network::new(&PLAN, arena)?;
    for (p, b) in net.params_mut().iter_mut().zip(MODEL.chunks_exact(4)) {
        *p = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
    println!(
        "host-trained 784-50-10 on {}: {} bytes of weights in flash, arena {} bytes",
        BOARD,
        MODEL.len(),
        PLAN.bytes::<f32>()
    );
    let mut labels = [0usize; ROWS];
    let start = clock.instructions();
    let confusion = mnist::evaluate(&mut net, &Naive, dir, pixels, &mut labels, None)?;
    let instructions = clock.instructions() - start;
    let (correct, tested) = (confusion.correct(), confusion.total());
    confusion.print();
    println!(
        "test accuracy {} ({} of {})",
        Percent(correct, tested),
        correct,
        tested
    );
    let stack = manabi_firmware::stack_usage();
    metric!("arena_bytes", PLAN.bytes::<f32>());
    metric!(
        "instructions_per_test_sample",
        instructions / u64::from(tested.max(1))
    );
    metric!("predictions_fnv1a", confusion.digest);
    metric!("test_correct", correct);
    metric!("test_total", tested);
    metric!("stack_peak_bytes", stack.peak);
    metric!("stack_size_bytes", stack.size);
    Ok(())
}
