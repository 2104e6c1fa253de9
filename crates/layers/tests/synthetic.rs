//! Small MLPs learn non-linear synthetic tasks (XOR blobs, two spirals) with every optimizer.

use manabi_layers::{
    Init, Input, Network, Plan, PlanConfig, Shape, Spec, Target, Training, Update,
};
use manabi_matmul::Naive;
use manabi_optim::{AnyOptimizer, Optimizer};
use manabi_tensor::Rng;

/// Draws `n` labelled points: inputs `[n, 2]` and labels `[n]`.
type Generator = fn(&mut Rng, usize) -> (Vec<f32>, Vec<usize>);

/// Four Gaussian blobs at (±1, ±1); the class is the XOR of the signs, so no line separates them.
fn xor_blobs(rng: &mut Rng, n: usize) -> (Vec<f32>, Vec<usize>) {
    let mut x = Vec::with_capacity(2 * n);
    let mut y = Vec::with_capacity(n);
    for _ in 0..n {
        let (a, b) = (rng.below(2), rng.below(2));
        x.push(if a == 1 { 1.0 } else { -1.0 } + 0.3 * rng.normal::<f32>());
        x.push(if b == 1 { 1.0 } else { -1.0 } + 0.3 * rng.normal::<f32>());
        y.push(a ^ b);
    }
    (x, y)
}

/// Two interleaved spirals, 1.5 turns each, with a little noise.
fn spirals(rng: &mut Rng, n: usize) -> (Vec<f32>, Vec<usize>) {
    let mut x = Vec::with_capacity(2 * n);
    let mut y = Vec::with_capacity(n);
    for i in 0..n {
        let class = i % 2;
        let r = rng.uniform::<f64>();
        let angle = r * 3.0 * core::f64::consts::PI + class as f64 * core::f64::consts::PI;
        x.push((r * angle.cos() + 0.02 * rng.normal::<f64>()) as f32 * 2.0);
        x.push((r * angle.sin() + 0.02 * rng.normal::<f64>()) as f32 * 2.0);
        y.push(class);
    }
    (x, y)
}

/// Trains with mini-batches drawn at random (the book's protocol) and returns test accuracy.
fn train(name: &str, lr: f32, hidden: &[usize], steps: u64, data: Generator) -> f64 {
    let opt = AnyOptimizer::from_name(name, lr).unwrap();
    let mut widths = hidden.to_vec();
    widths.push(2);
    let layers: Vec<Spec> = Spec::mlp(&widths, Spec::Relu).collect();
    let batch = 32;
    let plan = Plan::new(&PlanConfig {
        input: Shape::flat(2),
        layers: &layers,
        batch,
        eval_batch: 256,
        training: Training::Backprop {
            optimizer_slots: opt.slots(),
        },
    })
    .unwrap();
    let mut arena = vec![0.0f32; plan.total()];
    let mut net = Network::new(&plan, &mut arena).unwrap();
    let mut update = Update::optimizer(&plan, &opt, 1).unwrap();
    let mut rng = Rng::new(11);
    net.init(Init::He, &mut rng);
    let (x, y) = data(&mut rng, 1000);
    let (x_test, y_test) = data(&mut rng, 1000);
    let mut labels = vec![0usize; batch];
    for t in 1..=steps {
        let input = net.input_mut(batch);
        for (row, label) in input.chunks_exact_mut(2).zip(labels.iter_mut()) {
            let i = rng.below(y.len());
            row.copy_from_slice(&x[2 * i..2 * i + 2]);
            *label = y[i];
        }
        let loss = net.train_step(
            &Naive,
            Input::Arena(batch),
            Target::Labels(&labels),
            &mut update,
        );
        assert!(loss.is_finite(), "{name}: loss {loss} at step {t}");
    }
    net.accuracy(&Naive, &x_test, &y_test)
}

#[test]
fn every_optimizer_learns_xor_blobs() {
    // Learning rates from the book's chapter-6 comparison, scaled to this small problem.
    for (name, lr) in [
        ("sgd", 0.1),
        ("momentum", 0.05),
        ("nesterov", 0.05),
        ("adagrad", 0.1),
        ("rmsprop", 0.01),
        ("adam", 0.01),
    ] {
        let acc = train(name, lr, &[8], 600, xor_blobs);
        println!("xor blobs, {name}: test accuracy {acc:.3}");
        // The Bayes rate with this noise is about 0.999; 0.97 leaves room for the optimizer.
        assert!(acc >= 0.97, "{name}: test accuracy {acc}");
    }
}

#[test]
fn every_optimizer_learns_two_spirals() {
    for (name, lr) in [
        ("sgd", 0.3),
        ("momentum", 0.05),
        ("nesterov", 0.05),
        ("adagrad", 0.1),
        ("rmsprop", 0.005),
        ("adam", 0.01),
    ] {
        let acc = train(name, lr, &[32, 32], 3000, spirals);
        println!("two spirals, {name}: test accuracy {acc:.3}");
        assert!(acc >= 0.95, "{name}: test accuracy {acc}");
    }
}
