//! Whole-network gradient checks in f64: the book's 784-50-10 on a batch of 3, and deeper ones.

use manabi_layers::{Activation, Init, Mlp, MlpConfig, MlpPlan, Target, Training, gradcheck};
use manabi_matmul::DefaultGemm;
use manabi_tensor::Rng;

fn plan(sizes: &[usize], activation: Activation, batch: usize) -> MlpPlan {
    MlpPlan::new(&MlpConfig {
        sizes,
        activation,
        batch,
        eval_batch: batch,
        training: Training::Backprop { optimizer_slots: 0 },
    })
    .unwrap()
}

/// Image-like inputs: about a third of the pixels zero, the rest in (0, 1].
fn images(rng: &mut Rng, len: usize) -> Vec<f64> {
    (0..len)
        .map(|_| {
            if rng.uniform::<f64>() < 0.35 {
                0.0
            } else {
                rng.uniform::<f64>() + 1e-3
            }
        })
        .collect()
}

#[test]
fn book_network_backprop_matches_numerical_gradient() {
    let plan = plan(&[784, 50, 10], Activation::Relu, 3);
    assert_eq!(plan.param_len(), 784 * 50 + 50 + 50 * 10 + 10);
    let mut arena = vec![0.0f64; plan.total()];
    let mut net = Mlp::new(plan, &mut arena).unwrap();
    let mut rng = Rng::new(2024);
    net.init(Init::Book, &mut rng);
    let x = images(&mut rng, 3 * 784);
    net.input_mut(3).copy_from_slice(&x);
    let labels = [7usize, 2, 1];
    let mut numeric = vec![0.0; plan.param_len()];
    let report = gradcheck(
        &mut net,
        &DefaultGemm::default(),
        3,
        Target::Labels(&labels),
        &mut numeric,
    )
    .unwrap();
    let names: Vec<_> = report.tensors().iter().map(|d| d.name).collect();
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
    for (activation, init) in [
        (Activation::Sigmoid, Init::Xavier),
        (Activation::Relu, Init::He),
    ] {
        let plan = plan(&[12, 9, 7, 5], activation, 4);
        let mut arena = vec![0.0f64; plan.total()];
        let mut net = Mlp::new(plan, &mut arena).unwrap();
        let mut rng = Rng::new(5);
        net.init(init, &mut rng);
        let x: Vec<f64> = (0..4 * 12).map(|_| rng.range(-1.0, 1.0)).collect();
        net.input_mut(4).copy_from_slice(&x);
        // One-hot (soft) targets this time.
        let t: Vec<f64> = (0..4 * 5)
            .map(|i| if i % 5 == (i / 5) % 5 { 0.8 } else { 0.05 })
            .collect();
        let mut numeric = vec![0.0; plan.param_len()];
        let report = gradcheck(
            &mut net,
            &manabi_matmul::Naive,
            4,
            Target::OneHot(&t),
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

#[test]
fn huge_logits_give_finite_loss_and_gradients() {
    let plan = plan(&[3, 4, 2], Activation::Relu, 2);
    let mut arena = vec![0.0f32; plan.total()];
    let mut net = Mlp::new(plan, &mut arena).unwrap();
    net.init(Init::He, &mut Rng::new(1));
    // Weights that drive the logits to about ±1000.
    net.params_mut()
        .iter_mut()
        .for_each(|p| *p = if *p > 0.0 { 40.0 } else { -40.0 });
    net.input_mut(2)
        .copy_from_slice(&[5.0, 5.0, 5.0, -5.0, 3.0, 4.0]);
    let loss = net.gradient(&manabi_matmul::Naive, 2, Target::Labels(&[0, 1]));
    let logits_max = net
        .forward(&manabi_matmul::Naive, 2)
        .iter()
        .fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(logits_max > 500.0, "logits only reached {logits_max}");
    assert!(loss.is_finite(), "loss {loss}");
    assert!(net.grads().iter().all(|g| g.is_finite()));
}

#[test]
fn bad_plans_and_small_arenas_are_errors() {
    use manabi_tensor::Error;
    let cfg = |sizes: &'static [usize], batch| MlpConfig {
        sizes,
        activation: Activation::Relu,
        batch,
        eval_batch: 0,
        training: Training::Inference,
    };
    assert_eq!(
        MlpPlan::new(&cfg(&[784], 1)).unwrap_err(),
        Error::ShapeMismatch {
            expected: 2,
            got: 1
        }
    );
    assert_eq!(
        MlpPlan::new(&cfg(&[784, 0, 10], 1)).unwrap_err(),
        Error::Zero {
            what: "layer width"
        }
    );
    assert_eq!(
        MlpPlan::new(&cfg(&[784, 10], 0)).unwrap_err(),
        Error::Zero { what: "batch size" }
    );
    assert!(matches!(
        MlpPlan::new(&cfg(&[usize::MAX, 3], 1)),
        Err(Error::Overflow { .. })
    ));
    let plan = MlpPlan::new(&cfg(&[4, 3], 2)).unwrap();
    // 4·3 + 3 parameters, 2·4 inputs, 2·3 logits and 2·3 probabilities.
    assert_eq!(plan.total(), 15 + 8 + 6 + 6);
    let mut small = vec![0.0f32; plan.total() - 1];
    assert_eq!(
        Mlp::new(plan, &mut small).unwrap_err(),
        Error::ArenaTooSmall { need: 35, have: 34 }
    );
}
