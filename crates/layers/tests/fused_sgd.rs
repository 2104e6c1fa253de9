//! The fused SGD step (update inside backward, no gradient buffer) walks the same path as
//! backprop followed by a separate SGD update.

use manabi_layers::{Activation, Init, Mlp, MlpConfig, MlpPlan, Target, Training};
use manabi_matmul::{Gemm, Naive};
use manabi_optim::Sgd;
use manabi_tensor::{Real, Rng};

/// Parameters after `steps` steps on fixed random batches, fused or not.
fn train<T: Real>(
    mm: &impl Gemm<T>,
    sizes: &[usize],
    activation: Activation,
    fused: bool,
    steps: u64,
) -> (Vec<T>, Vec<T>) {
    let batch = 7;
    let plan = MlpPlan::new(&MlpConfig {
        sizes,
        activation,
        batch,
        eval_batch: batch,
        training: if fused {
            Training::FusedSgd
        } else {
            Training::Backprop { optimizer_slots: 0 }
        },
    })
    .unwrap();
    let mut arena = vec![T::ZERO; plan.total()];
    let mut net = Mlp::new(plan, &mut arena).unwrap();
    let mut rng = Rng::new(5);
    net.init(Init::He, &mut rng);
    let lr = T::from_f64(0.3);
    let sgd = Sgd::new(lr);
    let classes = *sizes.last().unwrap();
    let mut losses = Vec::new();
    for t in 1..=steps {
        for v in net.input_mut(batch) {
            *v = rng.normal::<T>();
        }
        let labels: Vec<usize> = (0..batch).map(|_| rng.below(classes)).collect();
        let target = Target::Labels(&labels);
        losses.push(if fused {
            net.train_step_fused_sgd(mm, lr, batch, target)
        } else {
            net.train_step(mm, &sgd, t, batch, target)
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
    // Three layers so that a hidden layer's input gradient is taken with the weights before
    // their update (the fused pass must compute dx first), both activations, f64 and f32.
    for activation in [Activation::Relu, Activation::Sigmoid] {
        let sizes = [6, 9, 5, 4];
        let (fused, fused_loss) = train::<f64>(&Naive, &sizes, activation, true, 25);
        let (split, split_loss) = train::<f64>(&Naive, &sizes, activation, false, 25);
        // Only the rounding of `lr·g` against the product's own α differs.
        assert!(largest_difference(&fused, &split) < 1e-12, "{activation:?}");
        assert!(largest_difference(&fused_loss, &split_loss) < 1e-12);
        // The steps did move the weights (a no-op update would also agree).
        let (start, _) = train::<f64>(&Naive, &sizes, activation, true, 0);
        assert!(largest_difference(&fused, &start) > 1e-2);

        let (fused, _) = train::<f32>(&Naive, &sizes, activation, true, 25);
        let (split, _) = train::<f32>(&Naive, &sizes, activation, false, 25);
        assert!(
            largest_difference(&fused, &split) < 1e-4,
            "{activation:?} f32"
        );
    }
}

#[test]
fn steps_on_an_outside_buffer_equal_steps_on_the_arena_input() {
    // The same batches, once copied into the arena's input rows and once left in a buffer of
    // their own (longer than the batch, as a reused buffer is): bit-identical parameters.
    let sizes = [6, 9, 5, 4];
    let (batch, rows) = (7, 5);
    for fused in [false, true] {
        let plan = MlpPlan::new(&MlpConfig {
            sizes: &sizes,
            activation: Activation::Relu,
            batch,
            eval_batch: batch,
            training: if fused {
                Training::FusedSgd
            } else {
                Training::Backprop { optimizer_slots: 0 }
            },
        })
        .unwrap();
        let (mut inside, mut outside) = (vec![0.0f64; plan.total()], vec![0.0f64; plan.total()]);
        let mut a = Mlp::new(plan, &mut inside).unwrap();
        let mut b = Mlp::new(plan, &mut outside).unwrap();
        a.init(Init::He, &mut Rng::new(2));
        b.init(Init::He, &mut Rng::new(2));
        let sgd = Sgd::new(0.2);
        let mut rng = Rng::new(9);
        let mut x = vec![f64::NAN; batch * sizes[0]];
        for t in 1..=10 {
            for v in &mut x[..rows * sizes[0]] {
                *v = rng.normal::<f64>();
            }
            let labels: Vec<usize> = (0..rows).map(|_| rng.below(4)).collect();
            a.input_mut(rows).copy_from_slice(&x[..rows * sizes[0]]);
            let (la, lb) = if fused {
                (
                    a.train_step_fused_sgd(&Naive, 0.2, rows, Target::Labels(&labels)),
                    b.train_step_fused_sgd_on(&Naive, 0.2, &x, rows, Target::Labels(&labels)),
                )
            } else {
                (
                    a.train_step(&Naive, &sgd, t, rows, Target::Labels(&labels)),
                    b.train_step_on(&Naive, &sgd, t, &x, rows, Target::Labels(&labels)),
                )
            };
            assert_eq!(la, lb, "fused {fused}, step {t}");
        }
        assert_eq!(a.params(), b.params(), "fused {fused}");
        // The outside buffer's spare rows (NaN) were never read.
        assert!(a.params().iter().all(|v| v.is_finite()));
    }
}
