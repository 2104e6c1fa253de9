//! The fused SGD step (update inside backward, no gradient buffer) walks the same path as backprop followed by a separate SGD update, for every layer kind and with weight decay.

mod common;

use manabi_layers::{Init, Input, Network, Spec, Target, Training, Update};
use manabi_matmul::{Gemm, Naive};
use manabi_optim::Sgd;
use manabi_tensor::{Real, Rng};

/// Parameters and losses after `steps` steps on fixed random batches, fused or not.
fn train<T: Real>(
    mm: &impl Gemm<T>,
    layers: &[Spec],
    fused: bool,
    decay: f64,
    steps: u64,
) -> (Vec<T>, Vec<T>) {
    let batch = 7;
    let training = if fused {
        Training::FusedSgd
    } else {
        Training::Backprop { optimizer_slots: 0 }
    };
    let plan = common::plan(6, layers, batch, training);
    let mut arena = vec![T::ZERO; plan.total()];
    let mut net = Network::new(&plan, &mut arena).unwrap();
    let mut rng = Rng::new(5);
    net.init(Init::He, &mut rng);
    let lr = T::from_f64(0.3);
    let sgd = Sgd::new(lr);
    let decay = T::from_f64(decay);
    let mut update_fused = Update::fused_sgd(&plan, lr)
        .unwrap()
        .with_weight_decay(decay)
        .unwrap();
    let mut update_split = (!fused).then(|| {
        Update::optimizer(&plan, &sgd, 1)
            .unwrap()
            .with_weight_decay(decay)
            .unwrap()
    });
    let classes = plan.classes();
    let mut losses = Vec::new();
    for _ in 1..=steps {
        for v in net.input_mut(batch) {
            *v = rng.normal::<T>();
        }
        let labels: Vec<usize> = (0..batch).map(|_| rng.below(classes)).collect();
        let target = Target::Labels(&labels);
        let input = Input::Arena(batch);
        losses.push(match &mut update_split {
            Some(u) => net.train_step(mm, input, target, u),
            None => net.train_step(mm, input, target, &mut update_fused),
        });
    }
    (net.params().to_vec(), losses)
}

fn largest_difference<T: Real>(a: &[T], b: &[T]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x.to_f64() - y.to_f64()).abs())
        .fold(0.0, f64::max)
}

#[test]
fn fused_sgd_matches_backprop_then_update() {
    // Three affine layers so that a hidden layer's input gradient is taken with the weights
    // before their update (the fused pass must compute dx first); both activations, and a
    // stack with batch norm and dropout; f64 and f32; with and without weight decay.
    let stacks = [
        common::mlp_layers(&[6, 9, 5, 4], Spec::Relu),
        common::mlp_layers(&[6, 9, 5, 4], Spec::Sigmoid),
        vec![
            Spec::Affine(9),
            Spec::BatchNorm,
            Spec::Relu,
            Spec::Dropout(0.3),
            Spec::Affine(5),
            Spec::Sigmoid,
            Spec::BatchNorm,
            Spec::Affine(4),
        ],
    ];
    for layers in &stacks {
        for decay in [0.0, 0.05] {
            let (fused, fused_loss) = train::<f64>(&Naive, layers, true, decay, 25);
            let (split, split_loss) = train::<f64>(&Naive, layers, false, decay, 25);
            // Only the rounding of `lr·g` against the product's own α differs.
            assert!(
                largest_difference(&fused, &split) < 1e-12,
                "{layers:?} decay {decay}"
            );
            assert!(largest_difference(&fused_loss, &split_loss) < 1e-12);
            // The steps did move the weights (a no-op update would also agree).
            let (start, _) = train::<f64>(&Naive, layers, true, decay, 0);
            assert!(largest_difference(&fused, &start) > 1e-2);

            let (fused, _) = train::<f32>(&Naive, layers, true, decay, 25);
            let (split, _) = train::<f32>(&Naive, layers, false, decay, 25);
            assert!(
                largest_difference(&fused, &split) < 1e-4,
                "{layers:?} f32 decay {decay}"
            );
        }
    }
}

#[test]
fn steps_on_an_outside_buffer_equal_steps_on_the_arena_input() {
    // The same batches, once copied into the arena's input rows and once left in a buffer of
    // their own: bit-identical parameters.
    let layers = common::mlp_layers(&[6, 9, 5, 4], Spec::Relu);
    let (batch, rows) = (7, 5);
    for fused in [false, true] {
        let training = if fused {
            Training::FusedSgd
        } else {
            Training::Backprop { optimizer_slots: 0 }
        };
        let plan = common::plan(6, &layers, batch, training);
        let (mut inside, mut outside) = (vec![0.0f64; plan.total()], vec![0.0f64; plan.total()]);
        let mut a = Network::new(&plan, &mut inside).unwrap();
        let mut b = Network::new(&plan, &mut outside).unwrap();
        a.init(Init::He, &mut Rng::new(2));
        b.init(Init::He, &mut Rng::new(2));
        let sgd = Sgd::new(0.2);
        let (mut ua, mut ub) = if fused {
            (None, None)
        } else {
            (
                Some(Update::optimizer(&plan, &sgd, 1).unwrap()),
                Some(Update::optimizer(&plan, &sgd, 1).unwrap()),
            )
        };
        let mut fa = Update::fused_sgd(&plan, 0.2).unwrap();
        let mut fb = fa;
        let mut rng = Rng::new(9);
        let mut x = vec![f64::NAN; batch * 6];
        for t in 1..=10 {
            for v in &mut x[..rows * 6] {
                *v = rng.normal::<f64>();
            }
            let labels: Vec<usize> = (0..rows).map(|_| rng.below(4)).collect();
            a.input_mut(rows).copy_from_slice(&x[..rows * 6]);
            let target = Target::Labels(&labels);
            let outside_rows = Input::Dense(&x[..rows * 6]);
            let (la, lb) = match (&mut ua, &mut ub) {
                (Some(ua), Some(ub)) => (
                    a.train_step(&Naive, Input::Arena(rows), target, ua),
                    b.train_step(&Naive, outside_rows, target, ub),
                ),
                _ => (
                    a.train_step(&Naive, Input::Arena(rows), target, &mut fa),
                    b.train_step(&Naive, outside_rows, target, &mut fb),
                ),
            };
            assert_eq!(la, lb, "fused {fused}, step {t}");
        }
        assert_eq!(a.params(), b.params(), "fused {fused}");
        assert!(a.params().iter().all(|v| v.is_finite()));
    }
}
