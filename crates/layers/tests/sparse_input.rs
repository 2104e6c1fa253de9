//! Training and predicting on sparse rows: bit for bit the dense passes with the Naive backend, close to them with the others.

use manabi_layers::{Activation, Init, Mlp, MlpConfig, MlpPlan, SparseBatch, Target, Training};
use manabi_matmul::{Gemm, MatrixMultiply, Naive};
use manabi_optim::{Adam, Sgd};
use manabi_tensor::{CsrBuf, Real, Rng};

/// How a test trains.
#[derive(Clone, Copy, Debug)]
enum Mode {
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
    activation: Activation,
    mode: Mode,
    sparse: bool,
    scatter: bool,
) -> (Vec<T>, Vec<T>) {
    let (batch, d_in, steps) = (9, sizes[0], 6);
    let opt_slots = match mode {
        Mode::Adam => 2,
        _ => 0,
    };
    let plan = MlpPlan::new(&MlpConfig {
        sizes,
        activation,
        batch,
        eval_batch: batch,
        training: match mode {
            Mode::FusedSgd => Training::FusedSgd,
            _ => Training::Backprop {
                optimizer_slots: opt_slots,
            },
        },
    })
    .unwrap();
    let mut arena = vec![T::ZERO; plan.total()];
    let mut net = Mlp::new(plan, &mut arena).unwrap();
    let mut rng = Rng::new(11);
    net.init(Init::He, &mut rng);
    let lr = T::from_f64(0.2);
    let (sgd, adam) = (Sgd::new(lr), Adam::new(T::from_f64(0.01)));
    let classes = *sizes.last().unwrap();
    let (mut rows, mut cols) = (
        CsrBuf::new(batch, d_in).unwrap(),
        CsrBuf::new(d_in, batch).unwrap(),
    );
    let mut losses = Vec::new();
    for t in 1..=steps {
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
        losses.push(match (mode, sparse) {
            (Mode::FusedSgd, false) => net.train_step_fused_sgd_on(mm, lr, &x, batch, target),
            (Mode::FusedSgd, true) => net.train_step_fused_sgd_sparse(mm, lr, sb, target),
            (Mode::Sgd, false) => net.train_step_on(mm, &sgd, t, &x, batch, target),
            (Mode::Sgd, true) => net.train_step_sparse(mm, &sgd, t, sb, target),
            (Mode::Adam, false) => net.train_step_on(mm, &adam, t, &x, batch, target),
            (Mode::Adam, true) => net.train_step_sparse(mm, &adam, t, sb, target),
        });
    }
    (net.params().to_vec(), losses)
}

fn cases() -> Vec<(&'static [usize], Activation, Mode)> {
    let mut v = Vec::new();
    for sizes in [&[20usize, 8, 4][..], &[31, 12, 7, 5]] {
        for activation in [Activation::Relu, Activation::Sigmoid] {
            for mode in [Mode::FusedSgd, Mode::Sgd, Mode::Adam] {
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
    let sizes = [40, 16, 6];
    let plan = MlpPlan::new(&MlpConfig {
        sizes: &sizes,
        activation: Activation::Relu,
        batch: 13,
        eval_batch: 13,
        training: Training::Inference,
    })
    .unwrap();
    let mut arena = vec![0.0f32; plan.total()];
    let mut net = Mlp::new(plan, &mut arena).unwrap();
    let mut rng = Rng::new(4);
    net.init(Init::Xavier, &mut rng);
    let x = sparse_rows::<f32>(&mut rng, 13, 40);
    let mut rows = CsrBuf::new(13, 40).unwrap();
    for r in x.chunks(40) {
        rows.push_dense_row(r);
    }
    let dense = net.predict(&Naive, &x).to_vec();
    let sparse = net.predict_sparse(&Naive, rows.view()).to_vec();
    assert_eq!(dense, sparse);
    // Fewer rows than planned use a prefix, as the dense path does.
    let mut five = CsrBuf::new(5, 40).unwrap();
    for r in x.chunks(40).take(5) {
        five.push_dense_row(r);
    }
    assert_eq!(net.predict_sparse(&Naive, five.view()), &dense[..5 * 6]);
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
