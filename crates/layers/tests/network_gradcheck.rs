//! Whole-network gradient checks in f64: the book's 784-50-10 on a batch of 3, deeper ones, stacks with BatchNorm and Dropout on every input kind.

mod common;

use common::{images, mlp, plan};
use manabi_layers::{
    Init, Input, Mode, Network, NoOptimizer, Plan, PlanConfig, Shape, SparseBatch, Spec, Target,
    Training, Update, gradcheck,
};
use manabi_matmul::{DefaultGemm, Naive};
use manabi_optim::{Adam, Sgd};
use manabi_tensor::{CsrBuf, Error, Rng};

const BACKPROP: Training = Training::Backprop { optimizer_slots: 0 };

#[test]
fn book_network_backprop_matches_numerical_gradient() {
    let plan = mlp(&[784, 50, 10], Spec::Relu, 3, BACKPROP);
    assert_eq!(plan.param_len(), 784 * 50 + 50 + 50 * 10 + 10);
    let mut arena = vec![0.0f64; plan.total()];
    let mut net = Network::new(&plan, &mut arena).unwrap();
    let mut rng = Rng::new(2024);
    net.init(Init::Book, &mut rng);
    let x = images(&mut rng, 3 * 784);
    net.input_mut(3).copy_from_slice(&x);
    let labels = [7usize, 2, 1];
    let mut numeric = vec![0.0; plan.param_len()];
    let report = gradcheck(
        &mut net,
        &DefaultGemm::default(),
        Input::Arena(3),
        Target::Labels(&labels),
        0.0,
        &mut numeric,
    )
    .unwrap();
    let names: Vec<_> = report
        .tensors()
        .iter()
        .map(|d| d.name.to_string())
        .collect();
    assert_eq!(names, ["W1", "b1", "W2", "b2"]);
    for d in report.tensors() {
        println!(
            "{}: mean |diff| {:.3e}, max |diff| {:.3e}, max rel {:.3e}",
            d.name, d.mean_abs, d.max_abs, d.max_rel
        );
        // The book's gradient_check.py reports means of about 1e-10 to 1e-7; ours must be tighter.
        assert!(d.mean_abs < 1e-10, "{}: mean |diff| {}", d.name, d.mean_abs);
        assert!(
            d.max_abs < 1e-9 && d.max_rel < 1e-3,
            "{}: max |diff| {}, max relative diff {}",
            d.name,
            d.max_abs,
            d.max_rel
        );
    }
    // The loss of a fresh book-initialised net is about ln 10.
    assert!(
        (report.loss - 10f64.ln()).abs() < 0.05,
        "loss {}",
        report.loss
    );
}

#[test]
fn deeper_sigmoid_and_relu_networks_check_out() {
    for (activation, init) in [(Spec::Sigmoid, Init::Xavier), (Spec::Relu, Init::He)] {
        let plan = mlp(&[12, 9, 7, 5], activation, 4, BACKPROP);
        let mut arena = vec![0.0f64; plan.total()];
        let mut net = Network::new(&plan, &mut arena).unwrap();
        let mut rng = Rng::new(5);
        net.init(init, &mut rng);
        let x: Vec<f64> = (0..4 * 12).map(|_| rng.range(-1.0, 1.0)).collect();
        // One-hot (soft) targets this time, and the caller's dense rows.
        let t: Vec<f64> = (0..4 * 5)
            .map(|i| if i % 5 == (i / 5) % 5 { 0.8 } else { 0.05 })
            .collect();
        let mut numeric = vec![0.0; plan.param_len()];
        let report = gradcheck(
            &mut net,
            &Naive,
            Input::Dense(&x),
            Target::OneHot(&t),
            0.0,
            &mut numeric,
        )
        .unwrap();
        assert_eq!(report.tensors().len(), 6);
        for d in report.tensors() {
            assert!(
                d.max_rel < 1e-5 && d.mean_abs < 1e-9,
                "{activation:?} {}: {d:?}",
                d.name
            );
        }
    }
}

/// The book's `MultiLayerNetExtend` with batch norm and dropout: affine, batchnorm, relu,
/// dropout per hidden layer, then affine.
const EXTENDED: [Spec; 9] = [
    Spec::Affine(9),
    Spec::BatchNorm,
    Spec::Relu,
    Spec::Dropout(0.25),
    Spec::Affine(7),
    Spec::BatchNorm,
    Spec::Relu,
    Spec::Dropout(0.25),
    Spec::Affine(5),
];

#[test]
fn batch_norm_and_dropout_stacks_check_out_on_every_input_kind_with_weight_decay() {
    let plan = plan(12, &EXTENDED, 6, BACKPROP);
    let mut rng = Rng::new(17);
    // Inputs with zeros, so the sparse rows differ from the dense ones in shape.
    let x: Vec<f64> = images(&mut rng, 6 * 12)
        .into_iter()
        .map(|v| v * 2.0 - 0.5)
        .collect();
    let labels = [4usize, 0, 2, 2, 1, 3];
    let mut rows = CsrBuf::new(6, 12).unwrap();
    for r in x.chunks(12) {
        rows.push_dense_row(r);
    }
    let mut cols = CsrBuf::new(12, 6).unwrap();
    cols.transpose_from(rows.view());
    let sparse = SparseBatch::new(rows.view(), cols.view()).unwrap();
    let mut grads = Vec::new();
    for (kind, input) in [
        ("arena", Input::Arena(6)),
        ("dense", Input::Dense(&x)),
        ("sparse", Input::Sparse(sparse)),
        (
            "sparse rows only",
            Input::Sparse(SparseBatch::rows_only(rows.view())),
        ),
    ] {
        for decay in [0.0, 0.1] {
            let mut arena = vec![0.0f64; plan.total()];
            let mut net = Network::new(&plan, &mut arena).unwrap();
            net.init(Init::He, &mut Rng::new(3));
            net.input_mut(6).copy_from_slice(&x);
            let mut numeric = vec![0.0; plan.param_len()];
            let report = gradcheck(
                &mut net,
                &Naive,
                input,
                Target::Labels(&labels),
                decay,
                &mut numeric,
            )
            .unwrap();
            let names: Vec<_> = report
                .tensors()
                .iter()
                .map(|d| d.name.to_string())
                .collect();
            assert_eq!(
                names,
                [
                    "W1", "b1", "gamma1", "beta1", "W2", "b2", "gamma2", "beta2", "W3", "b3"
                ]
            );
            for d in report.tensors() {
                assert!(
                    d.max_abs < 1e-7 && d.mean_abs < 1e-9,
                    "{kind}, decay {decay}, {}: {d:?}",
                    d.name
                );
            }
            grads.push((kind, decay, net.grads().to_vec()));
        }
    }
    // Every input kind gives the same gradient (dense and sparse sum in the same order).
    for (kind, decay, g) in &grads {
        let (_, _, same) = grads.iter().find(|(_, d, _)| d == decay).unwrap();
        assert_eq!(g, same, "{kind}, decay {decay}");
    }
}

#[test]
fn evaluation_mode_uses_running_statistics_and_scales_dropout() {
    let layers = [Spec::Affine(3), Spec::BatchNorm, Spec::Dropout(0.5)];
    let plan = plan(2, &layers, 4, Training::FusedSgd);
    let mut arena = vec![0.0f64; plan.total()];
    let mut net = Network::new(&plan, &mut arena).unwrap();
    net.init(Init::He, &mut Rng::new(1));
    assert_eq!(net.stats(), &[0.0; 6]);
    let x = [0.5, -1.0, 2.0, 0.25, -0.75, 1.5, 1.0, 1.0];
    // A training pass moves the running statistics a tenth of the way to the batch's.
    net.forward(&Naive, Input::Dense(&x), Mode::Train);
    let stats = net.stats().to_vec();
    assert!(stats[..3].iter().all(|m| *m != 0.0));
    assert!(stats[3..].iter().all(|v| *v > 0.0));
    // Evaluation changes no statistic and is deterministic: γ·(x − m)/√(v + ε) + β, halved.
    let first = net.forward(&Naive, Input::Dense(&x), Mode::Eval).to_vec();
    assert_eq!(
        net.forward(&Naive, Input::Dense(&x), Mode::Eval),
        first.as_slice()
    );
    assert_eq!(net.stats(), stats.as_slice());
    let p = net.params().to_vec();
    let (w, b) = (&p[..6], &p[6..9]);
    for j in 0..3 {
        let z = x[0] * w[j] + x[1] * w[3 + j] + b[j];
        let want = (z - stats[j]) / (stats[3 + j] + manabi_layers::BN_EPS).sqrt() * 0.5;
        assert!(
            (first[j] - want).abs() < 1e-12,
            "{j}: {} vs {want}",
            first[j]
        );
    }
}

/// The gradient of a 3-4-2 ReLU network on `x` (`[2, 3]`) and `labels` whose logits lie so
/// far apart that the softmax is exactly one-hot, worked out here from scratch: the logits'
/// gradient is `(onehot(argmax) − onehot(label))/2`, then the chain rule through the two
/// affine layers and the ReLU. Also returns the logits and the loss. Every value is an
/// integer or half of one below 2²⁴, so f64 and any order of summation give the same numbers.
fn one_hot_softmax_gradient(p: &[f64], x: &[f64], labels: [usize; 2]) -> (Vec<f64>, Vec<f64>, f64) {
    let (d_in, hidden, classes) = (3, 4, 2);
    let (w1, rest) = p.split_at(d_in * hidden);
    let (b1, rest) = rest.split_at(hidden);
    let (w2, b2) = rest.split_at(hidden * classes);
    let mut grads = vec![0.0; p.len()];
    let (dw1, rest) = grads.split_at_mut(d_in * hidden);
    let (db1, rest) = rest.split_at_mut(hidden);
    let (dw2, db2) = rest.split_at_mut(hidden * classes);
    let (mut logits, mut loss) = (Vec::new(), 0.0);
    for (row, &label) in labels.iter().enumerate() {
        let x = &x[row * d_in..(row + 1) * d_in];
        let z: Vec<f64> = (0..hidden)
            .map(|i| b1[i] + (0..d_in).map(|j| x[j] * w1[j * hidden + i]).sum::<f64>())
            .collect();
        assert!(z.iter().all(|&v| v != 0.0), "a ReLU input sits on the kink");
        let h: Vec<f64> = z.iter().map(|&v| v.max(0.0)).collect();
        let out: Vec<f64> = (0..classes)
            .map(|k| b2[k] + (0..hidden).map(|i| h[i] * w2[i * classes + k]).sum::<f64>())
            .collect();
        let top = if out[0] > out[1] { 0 } else { 1 };
        // e^{−gap} underflows to exactly 0 in f32 once the gap passes 104.
        assert!(
            (out[0] - out[1]).abs() > 110.0,
            "logits {out:?} are too close"
        );
        loss += (out[top] - out[label]) / 2.0;
        let d_out: Vec<f64> = (0..classes)
            .map(|k| (f64::from(k == top) - f64::from(k == label)) / 2.0)
            .collect();
        for k in 0..classes {
            db2[k] += d_out[k];
            for i in 0..hidden {
                dw2[i * classes + k] += h[i] * d_out[k];
            }
        }
        for i in 0..hidden {
            let dh: f64 = (0..classes).map(|k| d_out[k] * w2[i * classes + k]).sum();
            let dz = if z[i] > 0.0 { dh } else { 0.0 };
            db1[i] += dz;
            for j in 0..d_in {
                dw1[j * hidden + i] += x[j] * dz;
            }
        }
        logits.extend(out);
    }
    (grads, logits, loss)
}

#[test]
fn huge_logits_give_the_exact_loss_and_gradients() {
    let plan = mlp(&[3, 4, 2], Spec::Relu, 2, BACKPROP);
    let mut arena = vec![0.0f32; plan.total()];
    let mut net = Network::new(&plan, &mut arena).unwrap();
    net.init(Init::He, &mut Rng::new(1));
    // Weights that drive the logits to −8 040 and below (e^x overflows f32 past 88), with
    // class 1 ahead by 12 800 and 9 600: row 0 is labelled wrong, row 1 right.
    net.params_mut()
        .iter_mut()
        .for_each(|p| *p = if *p > 0.0 { 40.0 } else { -40.0 });
    let x = [-5.0, -5.0, -5.0, -5.0, 3.0, 4.0];
    let labels = [0, 1];
    net.input_mut(2).copy_from_slice(&x);
    let mut grads = Update::gradients(&plan).unwrap();
    let loss = net.train_step(&Naive, Input::Arena(2), Target::Labels(&labels), &mut grads);
    let p: Vec<f64> = net.params().iter().map(|&v| f64::from(v)).collect();
    let x64 = x.map(f64::from);
    let (want_grads, want_logits, want_loss) = one_hot_softmax_gradient(&p, &x64, labels);
    let logits = net.forward(&Naive, Input::Arena(2), Mode::Eval).to_vec();
    let logits: Vec<f64> = logits.iter().map(|&v| f64::from(v)).collect();
    assert_eq!(logits, want_logits);
    let logits_max = logits.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(logits_max > 500.0, "logits only reached {logits_max}");
    // The softmax is exactly one-hot, so the loss is the label's distance below the top
    // logit (ln 1 = 0) and every gradient is exact: equality, not a tolerance. The loss,
    // 12 800/2, and the db2 below follow by hand from the logits above, which come from the
    // signs seed 1's He draws give the weights; they change only when the numerics change
    // on purpose (the generator or the initialisation).
    assert_eq!(want_loss, 6400.0);
    assert_eq!(f64::from(loss), want_loss);
    let got: Vec<f64> = net.grads().iter().map(|&g| f64::from(g)).collect();
    assert_eq!(got, want_grads);
    // db2 is the logits' gradient (y − t)/2 summed over the rows: [1 − 1, 0 − 0]/2 for row 1
    // and [0 − 1, 1 − 0]/2 for row 0.
    assert_eq!(got[got.len() - 2..], [-0.5, 0.5]);
}

#[test]
fn updates_that_do_not_fit_the_plan_fail_at_setup() {
    let fused = mlp(&[4, 3, 2], Spec::Relu, 2, Training::FusedSgd);
    let inference = mlp(&[4, 3, 2], Spec::Relu, 2, Training::Inference);
    let with_one_slot = mlp(
        &[4, 3, 2],
        Spec::Relu,
        2,
        Training::Backprop { optimizer_slots: 1 },
    );
    let adam = Adam::new(0.001f32);
    let sgd = Sgd::new(0.1f32);
    fn invalid<X>(r: Result<X, Error>) -> bool {
        matches!(r, Err(Error::InvalidValue { .. }))
    }
    assert!(invalid(Update::<f32, NoOptimizer>::gradients(&fused)));
    assert!(invalid(Update::optimizer(&fused, &sgd, 1)));
    assert!(invalid(Update::fused_sgd(&inference, 0.1f32)));
    assert!(invalid(Update::optimizer(&with_one_slot, &adam, 1)));
    assert!(invalid(Update::optimizer(&with_one_slot, &sgd, 1)));
    assert!(invalid(Update::fused_sgd(&fused, -0.1f32)));
    assert!(invalid(Update::fused_sgd(&fused, f32::NAN)));
    assert!(invalid(
        Update::fused_sgd(&fused, 0.1f32)
            .unwrap()
            .with_weight_decay(-1.0)
    ));
    let adam_plan = mlp(
        &[4, 3, 2],
        Spec::Relu,
        2,
        Training::Backprop { optimizer_slots: 2 },
    );
    assert!(invalid(Update::optimizer(&adam_plan, &adam, 0)));
    assert_eq!(Update::optimizer(&adam_plan, &adam, 7).unwrap().t(), 7);
    // Every update fits a Backprop plan with the optimizer's slots; fused SGD fits any
    // training plan.
    assert!(Update::<f32, NoOptimizer>::gradients(&adam_plan).is_ok());
    assert!(Update::fused_sgd(&adam_plan, 0.1f32).is_ok());
    assert!(Update::fused_sgd(&fused, 0.1f32).is_ok());
}

#[test]
fn bad_plans_and_small_arenas_are_errors() {
    let cfg = |input: usize, layers: &'static [Spec], batch| PlanConfig {
        input: Shape::flat(input),
        layers,
        batch,
        eval_batch: 0,
        training: Training::Inference,
    };
    assert_eq!(
        Plan::new(&cfg(784, &[], 1)).unwrap_err(),
        Error::ShapeMismatch {
            expected: 1,
            got: 0
        }
    );
    assert_eq!(
        Plan::new(&cfg(784, &[Spec::Affine(0), Spec::Relu], 1)).unwrap_err(),
        Error::Zero {
            what: "layer width"
        }
    );
    assert_eq!(
        Plan::new(&cfg(0, &[Spec::Affine(3)], 1)).unwrap_err(),
        Error::Zero { what: "input size" }
    );
    assert_eq!(
        Plan::new(&cfg(784, &[Spec::Affine(10)], 0)).unwrap_err(),
        Error::Zero { what: "batch size" }
    );
    assert!(matches!(
        Plan::new(&cfg(usize::MAX, &[Spec::Affine(3)], 1)),
        Err(Error::Overflow { .. })
    ));
    assert!(matches!(
        Plan::new(&cfg(4, &[Spec::Affine(3), Spec::Dropout(1.5)], 1)),
        Err(Error::InvalidValue { .. })
    ));
    let too_many = [Spec::Relu; manabi_layers::MAX_LAYERS + 1];
    assert!(matches!(
        Plan::new(&PlanConfig {
            layers: &too_many,
            ..cfg(4, &[], 1)
        }),
        Err(Error::ShapeMismatch { .. })
    ));
    let plan = Plan::new(&cfg(4, &[Spec::Affine(3)], 2)).unwrap();
    // 4·3 + 3 parameters, 2·4 inputs, 2·3 logits and 2·3 probabilities.
    assert_eq!(plan.total(), 15 + 8 + 6 + 6);
    let mut small = vec![0.0f32; plan.total() - 1];
    assert_eq!(
        Network::new(&plan, &mut small).unwrap_err(),
        Error::ArenaTooSmall { need: 35, have: 34 }
    );
}

#[test]
fn the_plan_reports_its_tensors_and_shares_spans_in_place() {
    let plan = plan(12, &EXTENDED, 6, BACKPROP);
    let tensors: Vec<_> = plan
        .tensors()
        .map(|t| (t.name.to_string(), t.region, t.dims().to_vec()))
        .collect();
    use manabi_layers::Region::{Params, Stats};
    assert_eq!(
        tensors,
        [
            ("W1".to_string(), Params, vec![12, 9]),
            ("b1".into(), Params, vec![9]),
            ("gamma1".into(), Params, vec![9]),
            ("beta1".into(), Params, vec![9]),
            ("running_mean1".into(), Stats, vec![9]),
            ("running_var1".into(), Stats, vec![9]),
            ("W2".into(), Params, vec![9, 7]),
            ("b2".into(), Params, vec![7]),
            ("gamma2".into(), Params, vec![7]),
            ("beta2".into(), Params, vec![7]),
            ("running_mean2".into(), Stats, vec![7]),
            ("running_var2".into(), Stats, vec![7]),
            ("W3".into(), Params, vec![7, 5]),
            ("b3".into(), Params, vec![5]),
        ]
    );
    assert_eq!(plan.stats_len(), 2 * (9 + 7));
    // ReLU after BatchNorm works in place; Dropout after ReLU (which reads its output in
    // backward) does not.
    let in_place: Vec<bool> = (0..EXTENDED.len()).map(|l| plan.in_place(l)).collect();
    assert_eq!(
        in_place,
        [false, false, true, false, false, false, true, false, false]
    );
    // The layer list reads back as its text form.
    let text: Vec<String> = EXTENDED.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        text.join(","),
        "affine:9,batchnorm,relu,dropout:0.25,affine:7,batchnorm,relu,dropout:0.25,affine:5"
    );
    for s in EXTENDED {
        assert_eq!(Spec::parse(&s.to_string()).unwrap(), s);
    }
    for bad in [
        "affine",
        "affine:0",
        "affine:x",
        "dropout:1",
        "dropout",
        "relu:3",
        "conv",
    ] {
        assert!(Spec::parse(bad).is_err(), "{bad}");
    }
}
