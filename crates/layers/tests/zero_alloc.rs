//! A training step with the Naive backend makes no heap allocation, dense or sparse (counting global allocator).

use manabi_layers::{Activation, Init, Mlp, MlpConfig, MlpPlan, SparseBatch, Target, Training};
use manabi_matmul::Naive;
use manabi_optim::{Adam, Optimizer, Sgd};
use manabi_tensor::{CsrBuf, Rng};
use manabi_testkit::{TrackingAllocator, measure};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator;

fn steps_allocate<O: Optimizer<f32>>(opt: O, fused: bool) -> usize {
    let training = if fused {
        Training::FusedSgd
    } else {
        Training::Backprop {
            optimizer_slots: opt.slots(),
        }
    };
    let plan = MlpPlan::new(&MlpConfig {
        sizes: &[784, 50, 10],
        activation: Activation::Relu,
        batch: 100,
        eval_batch: 100,
        training,
    })
    .unwrap();
    let mut arena = vec![0.0f32; plan.total()];
    let mut net = Mlp::new(plan, &mut arena).unwrap();
    let mut rng = Rng::new(9);
    net.init(Init::Book, &mut rng);
    let x: Vec<f32> = (0..100 * 784).map(|_| rng.uniform()).collect();
    let labels: Vec<usize> = (0..100).map(|_| rng.below(10)).collect();
    let ((), seen) = measure(|| {
        for t in 1..=3 {
            net.input_mut(100).copy_from_slice(&x);
            let loss = if fused {
                net.train_step_fused_sgd(&Naive, 0.1, 100, Target::Labels(&labels))
            } else {
                net.train_step(&Naive, &opt, t, 100, Target::Labels(&labels))
            };
            assert!(loss.is_finite());
            let correct = net.correct(&Naive, &x, &labels);
            assert!(correct <= 100);
        }
    });
    // The same steps on the batch as compressed rows, refilled in buffers sized once.
    let mut rows = CsrBuf::new(100, 784).unwrap();
    let mut cols = CsrBuf::new(784, 100).unwrap();
    let ((), sparse) = measure(|| {
        for t in 4..=6 {
            rows.clear();
            for r in x.chunks(784) {
                rows.push_dense_row(r);
            }
            cols.transpose_from(rows.view());
            let batch = SparseBatch::new(rows.view(), cols.view()).unwrap();
            let loss = if fused {
                net.train_step_fused_sgd_sparse(&Naive, 0.1, batch, Target::Labels(&labels))
            } else {
                net.train_step_sparse(&Naive, &opt, t, batch, Target::Labels(&labels))
            };
            assert!(loss.is_finite());
            assert!(net.predict_sparse(&Naive, rows.view()).len() == 1000);
        }
    });
    seen.count + sparse.count
}

#[test]
fn training_steps_allocate_nothing() {
    assert_eq!(
        steps_allocate(Sgd::new(0.1), false),
        0,
        "SGD step allocated"
    );
    assert_eq!(
        steps_allocate(Adam::new(0.001), false),
        0,
        "Adam step allocated"
    );
    assert_eq!(
        steps_allocate(Sgd::new(0.1), true),
        0,
        "fused SGD step allocated"
    );
}
