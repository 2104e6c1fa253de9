//! A training step with the Naive backend makes no heap allocation, dense or sparse, with BatchNorm and Dropout too (counting global allocator).

mod common;

use manabi_layers::{
    Init, Input, Mode, Network, Plan, SparseBatch, Spec, Target, Training, Update,
};
use manabi_matmul::Naive;
use manabi_optim::{Adam, Optimizer, Sgd};
use manabi_tensor::{CsrBuf, Rng};
use manabi_testkit::{TrackingAllocator, measure};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator;

/// The book's 784-50-10, and the same with batch norm and dropout after the hidden layer.
fn stacks() -> [Vec<Spec>; 2] {
    [
        common::mlp_layers(&[784, 50, 10], Spec::Relu),
        vec![
            Spec::Affine(50),
            Spec::BatchNorm,
            Spec::Relu,
            Spec::Dropout(0.2),
            Spec::Affine(10),
        ],
    ]
}

/// Allocations of three steps on the arena's rows, three on sparse rows and the evaluations
/// between them; `opt` is `None` for fused SGD.
fn steps_allocate<O: Optimizer<f32>>(layers: &[Spec], opt: Option<O>) -> usize {
    let training = match &opt {
        None => Training::FusedSgd,
        Some(o) => Training::Backprop {
            optimizer_slots: o.slots(),
        },
    };
    let plan: Plan = common::plan(784, layers, 100, training);
    let mut arena = vec![0.0f32; plan.total()];
    let mut net = Network::new(&plan, &mut arena).unwrap();
    let mut rng = Rng::new(9);
    net.init(Init::Book, &mut rng);
    let x: Vec<f32> = (0..100 * 784).map(|_| rng.uniform()).collect();
    let labels: Vec<usize> = (0..100).map(|_| rng.below(10)).collect();
    let mut fused = Update::fused_sgd(&plan, 0.1).unwrap();
    let mut with_opt = opt
        .as_ref()
        .map(|o| Update::optimizer(&plan, o, 1).unwrap());
    let target = Target::Labels(&labels);
    let mut step = |net: &mut Network<'_, f32>, input: Input<'_, f32>| match &mut with_opt {
        Some(u) => net.train_step(&Naive, input, target, u),
        None => net.train_step(&Naive, input, target, &mut fused),
    };
    let ((), dense) = measure(|| {
        for _ in 0..3 {
            net.input_mut(100).copy_from_slice(&x);
            assert!(step(&mut net, Input::Arena(100)).is_finite());
            // `correct` counts the rows whose largest logit (the first, on a tie) is the
            // label, in evaluation mode: the same count as the logits give.
            let correct = net.correct(&Naive, &x, &labels);
            let logits = net.forward(&Naive, Input::Dense(&x), Mode::Eval);
            assert_eq!(logits.len(), 1000);
            let right = logits
                .chunks_exact(10)
                .zip(&labels)
                .filter(|&(row, &label)| {
                    let top = row
                        .iter()
                        .enumerate()
                        .fold(0, |b, (i, v)| if *v > row[b] { i } else { b });
                    top == label
                })
                .count();
            assert_eq!(correct, right);
        }
    });
    // The same steps on the batch as compressed rows, refilled in buffers sized once.
    let mut rows = CsrBuf::new(100, 784).unwrap();
    let mut cols = CsrBuf::new(784, 100).unwrap();
    let ((), sparse) = measure(|| {
        for _ in 0..3 {
            rows.clear();
            for r in x.chunks(784) {
                rows.push_dense_row(r);
            }
            cols.transpose_from(rows.view());
            let batch = SparseBatch::new(rows.view(), cols.view()).unwrap();
            assert!(step(&mut net, Input::Sparse(batch)).is_finite());
            let rows_only = Input::Sparse(SparseBatch::rows_only(rows.view()));
            assert_eq!(net.forward(&Naive, rows_only, Mode::Eval).len(), 1000);
        }
    });
    dense.count + sparse.count
}

#[test]
fn training_steps_allocate_nothing() {
    for layers in stacks() {
        assert_eq!(
            steps_allocate(&layers, Some(Sgd::new(0.1))),
            0,
            "SGD step allocated ({layers:?})"
        );
        assert_eq!(
            steps_allocate(&layers, Some(Adam::new(0.001))),
            0,
            "Adam step allocated ({layers:?})"
        );
        assert_eq!(
            steps_allocate::<Sgd<f32>>(&layers, None),
            0,
            "fused SGD step allocated ({layers:?})"
        );
    }
}
