//! Training and predicting on sparse rows: bit for bit the dense passes with the Naive backend, close to them with the others.

mod common;

use manabi_layers::{Init, Input, Mode, Network, SparseBatch, Spec, Target, Training, Update};
use manabi_matmul::{Gemm, MatrixMultiply, Naive};
use manabi_optim::{Adam, Optimizer, Sgd};
use manabi_tensor::{CsrBuf, Real, Rng};

/// How a test trains.
#[derive(Clone, Copy, Debug)]
enum How {
    FusedSgd,
    Sgd,
    Adam,
}

/// A batch of `batch × d_in` inputs that are about 70 % zeros, like images with a background.
fn sparse_rows<T: Real>(rng: &mut Rng, batch: usize, d_in: usize) -> Vec<T> {
    (0..batch * d_in)
        .map(|_| {
            if rng.below(10) < 7 {
                T::ZERO
            } else {
                rng.uniform::<T>()
            }
        })
        .collect()
}

/// Parameters and losses after `steps` steps on seeded batches, through the dense input or
/// through its compressed rows.
fn train<T: Real>(
    mm: &impl Gemm<T>,
    sizes: &[usize],
    activation: Spec,
    how: How,
    sparse: bool,
    scatter: bool,
) -> (Vec<T>, Vec<T>) {
    let lr = T::from_f64(0.2);
    let (sgd, adam) = (Sgd::new(lr), Adam::new(T::from_f64(0.01)));
    match how {
        How::FusedSgd => {
            let plan = common::mlp(sizes, activation, 9, Training::FusedSgd);
            let update = Update::fused_sgd(&plan, lr).unwrap();
            run(mm, &plan, update, sparse, scatter)
        }
        How::Sgd => {
            let plan = common::mlp(
                sizes,
                activation,
                9,
                Training::Backprop { optimizer_slots: 0 },
            );
            let update = Update::optimizer(&plan, &sgd, 1).unwrap();
            run(mm, &plan, update, sparse, scatter)
        }
        How::Adam => {
            let slots = adam.slots();
            let plan = common::mlp(
                sizes,
                activation,
                9,
                Training::Backprop {
                    optimizer_slots: slots,
                },
            );
            let update = Update::optimizer(&plan, &adam, 1).unwrap();
            run(mm, &plan, update, sparse, scatter)
        }
    }
}

fn run<T: Real, O: Optimizer<T>>(
    mm: &impl Gemm<T>,
    plan: &manabi_layers::Plan,
    mut update: Update<'_, T, O>,
    sparse: bool,
    scatter: bool,
) -> (Vec<T>, Vec<T>) {
    let (batch, d_in, steps) = (plan.batch(), plan.d_in(), 6);
    let mut arena = vec![T::ZERO; plan.total()];
    let mut net = Network::new(plan, &mut arena).unwrap();
    let mut rng = Rng::new(11);
    net.init(Init::He, &mut rng);
    let classes = plan.classes();
    let (mut rows, mut cols) = (
        CsrBuf::new(batch, d_in).unwrap(),
        CsrBuf::new(d_in, batch).unwrap(),
    );
    let mut losses = Vec::new();
    for _ in 1..=steps {
        let x = sparse_rows::<T>(&mut rng, batch, d_in);
        let labels: Vec<usize> = (0..batch).map(|_| rng.below(classes)).collect();
        let target = Target::Labels(&labels);
        rows.clear();
        for r in x.chunks(d_in) {
            rows.push_dense_row(r);
        }
        cols.transpose_from(rows.view());
        let sb = if scatter {
            SparseBatch::rows_only(rows.view())
        } else {
            SparseBatch::new(rows.view(), cols.view()).unwrap()
        };
        let input = if sparse {
            Input::Sparse(sb)
        } else {
            Input::Dense(&x)
        };
        losses.push(net.train_step(mm, input, target, &mut update));
    }
    (net.params().to_vec(), losses)
}

fn cases() -> Vec<(&'static [usize], Spec, How)> {
    let mut v = Vec::new();
    for sizes in [&[20usize, 8, 4][..], &[31, 12, 7, 5]] {
        for activation in [Spec::Relu, Spec::Sigmoid] {
            for mode in [How::FusedSgd, How::Sgd, How::Adam] {
                v.push((sizes, activation, mode));
            }
        }
    }
    v
}

#[test]
fn with_naive_sparse_training_is_the_dense_training_bit_for_bit() {
    for (sizes, activation, mode) in cases() {
        let dense = train::<f64>(&Naive, sizes, activation, mode, false, false);
        let sparse = train::<f64>(&Naive, sizes, activation, mode, true, false);
        assert_eq!(dense, sparse, "f64 {sizes:?} {activation:?} {mode:?}");
        let dense = train::<f32>(&Naive, sizes, activation, mode, false, false);
        let sparse = train::<f32>(&Naive, sizes, activation, mode, true, false);
        assert_eq!(dense, sparse, "f32 {sizes:?} {activation:?} {mode:?}");
        // Without the transpose, the rows scattered into the weight gradient: the same bits.
        let scattered = train::<f32>(&Naive, sizes, activation, mode, true, true);
        assert_eq!(
            dense, scattered,
            "f32 scattered {sizes:?} {activation:?} {mode:?}"
        );
    }
}

#[test]
fn with_a_fast_backend_sparse_training_stays_within_rounding_of_dense() {
    for (sizes, activation, mode) in cases() {
        let (dense, dense_loss) =
            train::<f64>(&MatrixMultiply, sizes, activation, mode, false, false);
        let (sparse, sparse_loss) =
            train::<f64>(&MatrixMultiply, sizes, activation, mode, true, false);
        for (a, b) in dense
            .iter()
            .zip(&sparse)
            .chain(dense_loss.iter().zip(&sparse_loss))
        {
            assert!(
                (a - b).abs() <= 1e-12 * (1.0 + a.abs()),
                "{sizes:?} {activation:?} {mode:?}: {a} vs {b}"
            );
        }
    }
}

#[test]
fn sparse_prediction_is_the_dense_prediction() {
    let plan = common::mlp(&[40, 16, 6], Spec::Relu, 13, Training::Inference);
    let mut arena = vec![0.0f32; plan.total()];
    let mut net = Network::new(&plan, &mut arena).unwrap();
    let mut rng = Rng::new(4);
    net.init(Init::Xavier, &mut rng);
    let x = sparse_rows::<f32>(&mut rng, 13, 40);
    let mut rows = CsrBuf::new(13, 40).unwrap();
    for r in x.chunks(40) {
        rows.push_dense_row(r);
    }
    let dense = net.forward(&Naive, Input::Dense(&x), Mode::Eval).to_vec();
    let sparse = net
        .forward(
            &Naive,
            Input::Sparse(SparseBatch::rows_only(rows.view())),
            Mode::Eval,
        )
        .to_vec();
    assert_eq!(dense, sparse);
    // Fewer rows than planned use a prefix, as the dense path does.
    let mut five = CsrBuf::new(5, 40).unwrap();
    for r in x.chunks(40).take(5) {
        five.push_dense_row(r);
    }
    let five = Input::Sparse(SparseBatch::rows_only(five.view()));
    assert_eq!(net.forward(&Naive, five, Mode::Eval), &dense[..5 * 6]);
}

#[test]
fn a_transpose_of_the_wrong_shape_is_refused() {
    let mut rows = CsrBuf::<f32>::new(3, 4).unwrap();
    for r in [[0.0, 1.0, 0.0, 2.0], [0.0; 4], [3.0, 0.0, 0.0, 0.0]] {
        rows.push_dense_row(&r);
    }
    let mut cols = CsrBuf::new(4, 3).unwrap();
    cols.transpose_from(rows.view());
    assert!(SparseBatch::new(rows.view(), cols.view()).is_ok());
    assert!(SparseBatch::new(rows.view(), rows.view()).is_err());
    let mut fewer = CsrBuf::new(4, 3).unwrap();
    for _ in 0..4 {
        fewer.end_row();
    }
    assert!(SparseBatch::new(rows.view(), fewer.view()).is_err());
}
