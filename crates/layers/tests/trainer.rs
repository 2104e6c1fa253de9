//! The training loop: the same steps as `train_step` by hand, its moments on schedule, divergence stopped and named, and a snapshot that resumes to the same bits.

mod common;

use common::plan;
use manabi_layers::{
    Batch, BatchSource, Divergence, Init, Input, Moment, Network, Observer, OneNetwork, Period,
    Schedule, Spec, Stop, Target, Trainer, Training, Update,
};
use manabi_matmul::Naive;
use manabi_optim::Adam;
use manabi_tensor::Rng;
use manabi_tensor::safetensors::{Data, Entry, Name, SafeTensors};
use std::convert::Infallible;

/// 6 inputs, affine 5, ReLU, Dropout 0.25, affine 3.
const LAYERS: [Spec; 4] = [
    Spec::Affine(5),
    Spec::Relu,
    Spec::Dropout(0.25),
    Spec::Affine(3),
];
const D_IN: usize = 6;
const BATCH: usize = 4;

/// Twelve fixed samples served four at a time in turn, copied into the network's input; the
/// position is the source's state in a snapshot.
struct Cycle {
    x: Vec<f64>,
    labels: Vec<usize>,
    at: [u64; 1],
}

impl Cycle {
    fn new() -> Self {
        let mut rng = Rng::new(3);
        Self {
            x: (0..12 * D_IN).map(|_| rng.range(-1.0, 1.0)).collect(),
            labels: (0..12).map(|i| i % 3).collect(),
            at: [0],
        }
    }
}

impl BatchSource<f64, Infallible> for Cycle {
    fn next(&mut self, _: u64, net: &mut Network<'_, f64>) -> Result<Batch<'_, f64>, Infallible> {
        let first = (self.at[0] as usize % 3) * BATCH;
        self.at[0] += 1;
        net.input_mut(BATCH)
            .copy_from_slice(&self.x[first * D_IN..(first + BATCH) * D_IN]);
        Ok(Batch {
            input: Input::Arena(BATCH),
            labels: &self.labels[first..first + BATCH],
        })
    }

    fn save<'s>(&'s self, out: &mut dyn FnMut(Entry<'s>)) {
        out(Entry::vector(Name::Text("cycle"), Data::U64(&self.at)));
    }
}

/// Records the moments it sees; writes a snapshot at each checkpoint.
#[derive(Default)]
struct Log {
    steps: Vec<(u64, usize)>,
    evaluations: Vec<(u64, f64)>,
    checkpoints: Vec<u64>,
    snapshot: Vec<u8>,
    /// A fused-SGD rate to ask for, if any.
    lr: Option<f64>,
}

impl Observer<f64, Cycle, Infallible> for Log {
    fn learning_rate(&mut self, _: u64) -> Option<f64> {
        self.lr
    }

    fn stepped(
        &mut self,
        at: &mut Moment<'_, '_, f64, Cycle>,
        _: f64,
        rows: usize,
    ) -> Result<(), Infallible> {
        self.steps.push((at.progress.iteration, rows));
        Ok(())
    }

    fn evaluate(
        &mut self,
        at: &mut Moment<'_, '_, f64, Cycle>,
        mean: f64,
    ) -> Result<(), Infallible> {
        self.evaluations.push((at.progress.iteration, mean));
        Ok(())
    }

    fn checkpoint(&mut self, at: &mut Moment<'_, '_, f64, Cycle>) -> Result<(), Infallible> {
        self.checkpoints.push(at.progress.iteration);
        let need = at.state().save_len(
            &[Entry::vector(Name::Text("cycle"), Data::U64(&[0]))],
            &[("k", "v")],
        );
        self.snapshot = vec![0; need.unwrap()];
        let n = at.save(&[], &[("k", "v")], &mut self.snapshot).unwrap();
        self.snapshot.truncate(n);
        Ok(())
    }
}

fn schedule(iters: u64) -> Schedule {
    Schedule {
        evaluate: Some(Period::book(3)),
        checkpoint_every: Some(4),
        ..Schedule::new(iters)
    }
}

#[test]
fn the_loop_takes_the_steps_train_step_takes_by_hand() {
    let plan = plan(
        D_IN,
        &LAYERS,
        BATCH,
        Training::Backprop { optimizer_slots: 2 },
    );
    let adam = Adam::new(0.01);
    let (mut a, mut b) = (vec![0.0; plan.total()], vec![0.0; plan.total()]);
    let mut by_hand = Network::new(&plan, &mut a).unwrap();
    by_hand.init(Init::He, &mut Rng::new(9));
    let mut update = Update::optimizer(&plan, &adam, 1).unwrap();
    let mut data = Cycle::new();
    for i in 0..10 {
        let first = (i % 3) * BATCH;
        by_hand
            .input_mut(BATCH)
            .copy_from_slice(&data.x[first * D_IN..(first + BATCH) * D_IN]);
        let labels = &data.labels[first..first + BATCH];
        by_hand.train_step(
            &Naive,
            Input::Arena(BATCH),
            Target::Labels(labels),
            &mut update,
        );
    }
    let mut net = Network::new(&plan, &mut b).unwrap();
    net.init(Init::He, &mut Rng::new(9));
    let update = Update::optimizer(&plan, &adam, 1).unwrap();
    let mut trainer = Trainer::new(net, update, schedule(10));
    let mut log = Log::default();
    trainer
        .run(&Naive, &mut data, &mut OneNetwork, &mut log)
        .unwrap();
    assert_eq!(trainer.net().params(), by_hand.params());
    assert_eq!(trainer.net().state(), by_hand.state());
    // Every step, the book's evaluation points 1, 4, 7, 10, checkpoints 4 and 8 (not 12: the
    // run ends at 10).
    assert_eq!(log.steps, (1..=10).map(|i| (i, BATCH)).collect::<Vec<_>>());
    let at: Vec<u64> = log.evaluations.iter().map(|e| e.0).collect();
    assert_eq!(at, [1, 4, 7, 10]);
    assert_eq!(log.checkpoints, [4, 8]);
    assert_eq!(trainer.progress().iteration, 10);
    // Each evaluation's mean is of the steps since the one before (three each after the first).
    assert_eq!(trainer.progress().loss_count, 0);
}

#[test]
fn a_snapshot_resumes_to_the_same_bits() {
    let plan = plan(
        D_IN,
        &LAYERS,
        BATCH,
        Training::Backprop { optimizer_slots: 2 },
    );
    let adam = Adam::new(0.01);
    let (mut a, mut b) = (vec![0.0; plan.total()], vec![0.0; plan.total()]);
    let mut net = Network::new(&plan, &mut a).unwrap();
    net.init(Init::He, &mut Rng::new(9));
    let update = Update::optimizer(&plan, &adam, 1).unwrap();
    let mut whole = Trainer::new(net, update, schedule(10));
    let mut log = Log::default();
    whole
        .run(&Naive, &mut Cycle::new(), &mut OneNetwork, &mut log)
        .unwrap();
    assert_eq!(log.checkpoints, [4, 8]);
    // The snapshot of iteration 8: the weights, Adam's moments, the Dropout generator, the
    // progress and the source's position, in one safetensors file.
    let file = SafeTensors::parse(&log.snapshot).unwrap();
    let names: Vec<String> = file.tensors().map(|(n, _)| n.to_string()).collect();
    assert_eq!(
        names,
        // U64 first, then F64 (an f64 network's weights too), each by name.
        [
            "cycle",
            "dropout_rng",
            "iteration",
            "W1",
            "W2",
            "b1",
            "b2",
            "loss_window",
            "opt_state"
        ]
    );
    assert_eq!(file.metadata("k").unwrap().as_plain(), Some("v"));
    let mut net = Network::new(&plan, &mut b).unwrap();
    net.init(Init::Xavier, &mut Rng::new(1));
    let update = Update::optimizer(&plan, &adam, 1).unwrap();
    let mut resumed = Trainer::new(net, update, schedule(10));
    resumed.restore(&file).unwrap();
    assert_eq!(resumed.progress().iteration, 8);
    let mut at = [0u64];
    file.get(&Name::Text("cycle"))
        .unwrap()
        .read_u64(&mut at)
        .unwrap();
    let mut data = Cycle { at, ..Cycle::new() };
    resumed
        .run(&Naive, &mut data, &mut OneNetwork, &mut Log::default())
        .unwrap();
    assert_eq!(resumed.net().params(), whole.net().params());
    assert_eq!(resumed.net().state(), whole.net().state());
    assert_eq!(resumed.net().rng(), whole.net().rng());
    assert_eq!(resumed.progress(), whole.progress());
}

#[test]
fn a_snapshot_of_another_network_is_refused_naming_the_tensor() {
    let plan_a = plan(
        D_IN,
        &LAYERS,
        BATCH,
        Training::Backprop { optimizer_slots: 2 },
    );
    let wider = [
        Spec::Affine(7),
        Spec::Relu,
        Spec::Dropout(0.25),
        Spec::Affine(3),
    ];
    let plan_b = plan(
        D_IN,
        &wider,
        BATCH,
        Training::Backprop { optimizer_slots: 2 },
    );
    let adam = Adam::new(0.01);
    let mut a = vec![0.0; plan_a.total()];
    let net = Network::new(&plan_a, &mut a).unwrap();
    let mut trainer = Trainer::new(
        net,
        Update::optimizer(&plan_a, &adam, 1).unwrap(),
        schedule(5),
    );
    let mut log = Log::default();
    trainer
        .run(&Naive, &mut Cycle::new(), &mut OneNetwork, &mut log)
        .unwrap();
    let file = SafeTensors::parse(&log.snapshot).unwrap();
    let mut b = vec![0.0; plan_b.total()];
    let net = Network::new(&plan_b, &mut b).unwrap();
    let mut other = Trainer::new(
        net,
        Update::optimizer(&plan_b, &adam, 1).unwrap(),
        schedule(5),
    );
    let e = other.restore(&file).unwrap_err();
    assert_eq!(
        e.to_string(),
        "the snapshot's tensor W1 has another dtype or shape than the network's"
    );
}

#[test]
fn divergence_stops_the_run_and_names_what_diverged() {
    let plan = plan(D_IN, &LAYERS, BATCH, Training::FusedSgd);
    let mut a = vec![0.0; plan.total()];
    let mut net = Network::new(&plan, &mut a).unwrap();
    net.init(Init::Normal(30.0), &mut Rng::new(2));
    let sgd = Update::fused_sgd(&plan, 1.0).unwrap();
    let mut trainer = Trainer::new(net, sgd, Schedule::new(1000));
    // Weights of N(0, 30²) at lr 1e30: the second step's loss is no longer a number.
    let mut log = Log {
        lr: Some(1e30),
        ..Log::default()
    };
    let stop = trainer
        .run(&Naive, &mut Cycle::new(), &mut OneNetwork, &mut log)
        .unwrap_err();
    // With an infallible source and observer, a stop is a divergence.
    let Stop::Diverged { iteration, why } = stop;
    // Nothing was handed to the observer for the iteration that diverged.
    assert_eq!(log.steps.len() as u64, iteration - 1);
    assert_eq!(trainer.progress().iteration, iteration - 1);
    match why {
        Divergence::Loss(l) => assert!(!l.is_finite()),
        Divergence::Weight { tensor, value, .. } => {
            assert!(!value.is_finite());
            assert!(["W1", "b1", "W2", "b2"].contains(&tensor.to_string().as_str()));
        }
        other => panic!("{other:?}"),
    }
    // An infinite bias behind a ReLU leaves the loss finite (the unit is off); the weight
    // check finds and names it.
    let mut b = vec![0.0; plan.total()];
    let mut net = Network::new(&plan, &mut b).unwrap();
    net.init(Init::He, &mut Rng::new(2));
    net.params_mut()[D_IN * 5 + 2] = f64::NEG_INFINITY; // b1[2]
    let sgd = Update::fused_sgd(&plan, 0.1).unwrap();
    let mut trainer = Trainer::new(net, sgd, Schedule::new(5));
    let stop = trainer
        .run(
            &Naive,
            &mut Cycle::new(),
            &mut OneNetwork,
            &mut Log::default(),
        )
        .unwrap_err();
    // With an infallible source and observer, a stop is a divergence.
    let Stop::Diverged { iteration, why } = stop;
    assert_eq!(iteration, 1);
    let text = why.to_string();
    assert!(
        text.starts_with("weight b1[2] is -inf (the loss was "),
        "{text}"
    );
}
