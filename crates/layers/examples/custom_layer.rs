//! A layer defined outside manabi-layers: `Tanh` joins a stack as `Spec::Custom`, trains on synthetic points and passes the gradient check.
//!
//! `cargo run --release -p manabi-layers --example custom_layer`. Nothing in manabi-layers
//! knows `Tanh`: it implements [`Pointwise`] here, and [`Custom::pointwise`] gives the plan its
//! sizes as data (the input's shape, no parameters, backward reads the output).

use manabi_layers::{
    Batch, BatchSource, Custom, Grad, Init, Input, Mode, Moment, Network, Observer, OneNetwork,
    Period, Plan, PlanConfig, Pointwise, Schedule, Shape, SizeRule, Spec, Stop, Target, Trainer,
    Training, Update, gradcheck,
};
use manabi_matmul::Naive;
use manabi_optim::Sgd;
use manabi_tensor::{Error, Real, Rng};
use std::convert::Infallible;

/// `y = tanh(x)`; backward `dx = dy·(1 − y²)`, from the output alone.
struct Tanh;

impl Pointwise for Tanh {
    fn forward<T: Real>(&self, _: Mode, _: &mut Rng, v: &mut [T], _: &mut [T]) {
        v.iter_mut().for_each(|v| *v = v.tanh());
    }

    fn backward<T: Real>(&self, y: &[T], _: &[T], g: Grad<'_, T>) {
        g.map(y, |y, dy| dy * (T::ONE - y * y));
    }
}

/// The layer as a stack names it: `tanh`.
const TANH: Spec = Spec::Custom(Custom::pointwise(
    "tanh",
    &Tanh,
    &SizeRule {
        reads_output: true,
        ..SizeRule::SAME
    },
));

/// 2 features → affine 16 → tanh → affine 16 → tanh → affine 3.
const LAYERS: [Spec; 5] = [
    Spec::Affine(16),
    TANH,
    Spec::Affine(16),
    TANH,
    Spec::Affine(3),
];

/// Points, a third per class.
const POINTS: usize = 300;
/// Points per step.
const BATCH: usize = 30;

/// Three spiral arms of `POINTS / 3` points each, with a little noise: `(x, labels)`.
fn spirals(rng: &mut Rng) -> (Vec<f32>, Vec<usize>) {
    let labels: Vec<usize> = (0..POINTS).map(|i| i % 3).collect();
    let x = labels
        .iter()
        .enumerate()
        .flat_map(|(i, &c)| {
            let r = (i / 3) as f32 / (POINTS / 3) as f32;
            let angle = 4.0 * r + c as f32 * 2.094 + 0.2 * rng.normal::<f32>();
            [r * angle.cos(), r * angle.sin()]
        })
        .collect();
    (x, labels)
}

/// The stack's plan for batches of `batch`, evaluating all points at once.
fn plan_for(batch: usize, training: Training) -> Result<Plan, Error> {
    Plan::new(&PlanConfig {
        input: Shape::flat(2),
        layers: &LAYERS,
        batch,
        eval_batch: POINTS,
        training,
    })
}

fn main() -> Result<(), Error> {
    let mut rng = Rng::new(1);
    let (x, labels) = spirals(&mut rng);
    train(&x, &labels, &mut rng)?;
    check(&x, &labels)
}

/// Batches of points drawn at random from the set.
struct Points<'d> {
    x: &'d [f32],
    labels: &'d [usize],
    rng: Rng,
    xb: [f32; 2 * BATCH],
    tb: [usize; BATCH],
}

impl BatchSource<f32, Infallible> for Points<'_> {
    fn next(&mut self, _: u64, _: &mut Network<'_, f32>) -> Result<Batch<'_, f32>, Infallible> {
        for (k, t) in self.tb.iter_mut().enumerate() {
            let i = self.rng.below(POINTS);
            self.xb[2 * k..2 * k + 2].copy_from_slice(&self.x[2 * i..2 * i + 2]);
            *t = self.labels[i];
        }
        Ok(Batch {
            input: Input::Dense(&self.xb),
            labels: &self.tb,
        })
    }
}

/// Prints the mean loss every 500 steps.
struct Report;

impl<S> Observer<f32, S, Infallible> for Report {
    fn evaluate(&mut self, at: &mut Moment<'_, '_, f32, S>, mean: f64) -> Result<(), Infallible> {
        let step = at.progress.iteration;
        println!("steps {:4}-{step:4}  mean loss {mean:.4}", step - 499);
        Ok(())
    }
}

/// 3,000 steps of SGD in f32 through the library's training loop, printing the loss.
fn train(x: &[f32], labels: &[usize], rng: &mut Rng) -> Result<(), Error> {
    let plan = plan_for(BATCH, Training::Backprop { optimizer_slots: 0 })?;
    let mut arena = plan.alloc_arena::<f32>();
    let mut net = Network::new(&plan, &mut arena)?;
    net.init(Init::Xavier, rng);
    let text: Vec<String> = LAYERS.iter().map(Spec::to_string).collect();
    println!(
        "network 2 -> {} ({} parameters)",
        text.join(","),
        plan.param_len()
    );
    let sgd = Sgd::new(0.5);
    let update = Update::optimizer(&plan, &sgd, 1)?;
    let schedule = Schedule {
        evaluate: Some(Period::ends(500)),
        ..Schedule::new(3000)
    };
    let mut trainer = Trainer::new(net, update, schedule);
    let mut points = Points {
        x,
        labels,
        rng: rng.clone(),
        xb: [0.0; 2 * BATCH],
        tb: [0; BATCH],
    };
    if let Err(Stop::Diverged { iteration, why }) =
        trainer.run(&Naive, &mut points, &mut OneNetwork, &mut Report)
    {
        println!("diverged at iteration {iteration}: {why}");
    }
    let accuracy = trainer.net_mut().accuracy(&Naive, x, labels);
    println!("training accuracy {accuracy:.3}");
    Ok(())
}

/// The gradient check, in f64 on five points: backprop through Tanh's f64 body against
/// central differences.
fn check(x: &[f32], labels: &[usize]) -> Result<(), Error> {
    let plan = plan_for(5, Training::Backprop { optimizer_slots: 0 })?;
    let mut arena = plan.alloc_arena::<f64>();
    let mut net = Network::new(&plan, &mut arena)?;
    net.init(Init::Xavier, &mut Rng::new(2));
    let x: Vec<f64> = x[..10].iter().map(|&v| f64::from(v)).collect();
    let mut numeric = vec![0.0; plan.param_len()];
    let target = Target::Labels(&labels[..5]);
    let report = gradcheck(
        &mut net,
        &Naive,
        Input::Dense(&x),
        target,
        0.0,
        &mut numeric,
    )?;
    for d in report.tensors() {
        println!(
            "{}: mean |diff| {:.3e}  max |diff| {:.3e}",
            d.name, d.mean_abs, d.max_abs
        );
    }
    match report.verdict() {
        Ok(()) => println!("gradient check passed"),
        Err(mismatch) => println!("gradient check failed: {mismatch}"),
    }
    Ok(())
}
