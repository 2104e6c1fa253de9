//! No subnormal float anywhere in the arena after training on MNIST with a decaying optimizer state: a check that holds on any CPU, where a timing would show only on Intel's.

mod common;

use manabi_cli::stack::{Stack, data_shape};
use manabi_data::{Batcher, Dataset, Sampling, Verify};
use manabi_layers::{
    Batch, BatchSource, Init, Input, Network, OneNetwork, Quiet, Schedule, Trainer, Training,
    Update,
};
use manabi_matmul::DefaultGemm;
use manabi_optim::{Adam, Momentum, Optimizer};
use manabi_tensor::Rng;
use std::convert::Infallible;

/// SimpleConvNet's shape, smaller: its subnormals appear as the book's network's do, in a
/// tenth of the time. Without the optimizers' flush (`manabi_optim`'s `flush`), Adam's first
/// moment held 9,248 subnormal values of 58,368 after 800 steps and Momentum's velocity 567
/// after 1,000 (the full SimpleConvNet: 91,157 of Adam's 433,890 after 1,600 steps): the
/// moments of units whose gradient has stopped decay into the subnormal range and stay there.
const NET: &str = "conv:8@5x5,relu,maxpool:2x2,affine:50,relu,affine:10";
const BATCH: usize = 100;
const STEPS: u64 = 1000;

/// Random minibatches of the training set copied into the arena.
struct Draws<'d> {
    rng: Rng,
    batcher: Batcher,
    train: &'d Dataset,
    labels: Vec<usize>,
}

impl BatchSource<f32, Infallible> for Draws<'_> {
    fn next(&mut self, _: u64, net: &mut Network<'_, f32>) -> Result<Batch<'_, f32>, Infallible> {
        let rows = self.batcher.next_batch(
            &mut self.rng,
            self.train,
            net.input_mut(BATCH),
            &mut self.labels,
        );
        Ok(Batch {
            input: Input::Arena(rows),
            labels: &self.labels[..rows],
        })
    }
}

/// The subnormal values in each part of the arena after [`STEPS`] steps with `opt`:
/// parameters, gradients, optimizer state, and the rest (statistics, activations, caches).
fn subnormals_after<O: Optimizer<f32>>(opt: &O, train: &Dataset) -> [usize; 4] {
    let stack = Stack::parse(data_shape(train), NET).unwrap();
    let training = Training::Backprop {
        optimizer_slots: opt.slots(),
    };
    let plan = stack.plan(BATCH, BATCH, training).unwrap();
    let mut arena = plan.alloc_arena::<f32>();
    let mut net = Network::new(&plan, &mut arena).unwrap();
    let mut rng = Rng::new(1);
    net.init(Init::Book, &mut rng);
    let update = Update::optimizer(&plan, opt, 1).unwrap();
    let mut trainer = Trainer::new(net, update, Schedule::new(STEPS));
    let mut draws = Draws {
        rng,
        batcher: Batcher::new(Sampling::Random, BATCH, train.len()).unwrap(),
        train,
        labels: vec![0; BATCH],
    };
    let mm = DefaultGemm::default();
    trainer
        .run(&mm, &mut draws, &mut OneNetwork, &mut Quiet)
        .unwrap_or_else(|_| panic!("the run diverged"));
    let (p, g, s, _) = plan.breakdown();
    let arena = trainer.net().arena();
    let count = |v: &[f32]| v.iter().filter(|x| x.is_subnormal()).count();
    [
        count(&arena[..p]),
        count(&arena[p..p + g]),
        count(&arena[p + g..p + g + s]),
        count(&arena[p + g + s..]),
    ]
}

#[test]
fn adam_and_momentum_leave_no_subnormal_value_in_the_arena() {
    let sets = manabi_data::load(&common::data_dir(), Verify::Mnist).unwrap();
    assert_eq!(subnormals_after(&Adam::new(0.001), &sets.train), [0; 4]);
    assert_eq!(subnormals_after(&Momentum::new(0.01), &sets.train), [0; 4]);
}
