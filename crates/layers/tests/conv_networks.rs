//! Convolutional networks end to end: whole-network gradient checks in f64, fused SGD against backprop, the text form, PyTorch's tensor layout, the book's SimpleConvNet plan.

mod common;

use common::images;
use manabi_layers::{
    Init, Input, Network, NoOptimizer, Plan, PlanConfig, Shape, Spec, Target, Training, Update,
    gradcheck,
};
use manabi_matmul::{DefaultGemm, Gemm, Naive};
use manabi_tensor::Rng;

/// A small net with every image layer: padded and strided convolutions, overlapping
/// pooling, dropout on images, then the reshape into an affine layer.
const SMALL_CNN: [Spec; 9] = [
    Spec::Conv2d {
        filters: 3,
        kh: 3,
        kw: 3,
        stride: 1,
        pad: 1,
    },
    Spec::Relu,
    Spec::MaxPool2d {
        kh: 2,
        kw: 2,
        stride: 2,
    },
    Spec::Conv2d {
        filters: 4,
        kh: 2,
        kw: 2,
        stride: 1,
        pad: 0,
    },
    Spec::Relu,
    Spec::MaxPool2d {
        kh: 2,
        kw: 2,
        stride: 1,
    },
    Spec::Dropout(0.25),
    Spec::Affine(5),
    Spec::Affine(3),
];

fn plan(layers: &[Spec], batch: usize, training: Training) -> Plan {
    Plan::new(&PlanConfig {
        input: Shape::image(2, 8, 8),
        layers,
        batch,
        eval_batch: batch,
        training,
    })
    .unwrap()
}

#[test]
fn a_small_cnn_matches_the_numerical_gradient_with_and_without_decay() {
    let plan = plan(&SMALL_CNN, 3, Training::Backprop { optimizer_slots: 0 });
    // 2×8×8 → 3×8×8 → 3×4×4 → 4×3×3 → 4×2×2 → 16 → 5 → 3.
    assert_eq!(plan.shape(3), Shape::image(3, 4, 4));
    assert_eq!(plan.shape(6), Shape::image(4, 2, 2));
    assert_eq!(plan.shape(9), Shape::flat(3));
    // The scratch holds the first convolution's col, (2·3·3)·64, without a dcol (a first
    // layer computes no dx); the second's col and dcol, 2·(3·2·2)·9, fit in it.
    assert_eq!(plan.scratch_len(), 18 * 64);
    let mut rng = Rng::new(29);
    let x: Vec<f64> = images(&mut rng, 3 * 128)
        .into_iter()
        .map(|v| v * 2.0 - 0.7)
        .collect();
    for decay in [0.0, 0.1] {
        let mut arena = vec![0.0f64; plan.total()];
        let mut net = Network::new(&plan, &mut arena).unwrap();
        net.init(Init::He, &mut Rng::new(4));
        let mut numeric = vec![0.0; plan.param_len()];
        let report = gradcheck(
            &mut net,
            &Naive,
            Input::Dense(&x),
            Target::Labels(&[2, 0, 1]),
            decay,
            &mut numeric,
        )
        .unwrap();
        let names: Vec<_> = report
            .tensors()
            .iter()
            .map(|d| d.name.to_string())
            .collect();
        assert_eq!(names, ["W1", "b1", "W2", "b2", "W3", "b3", "W4", "b4"]);
        for d in report.tensors() {
            assert!(
                d.max_abs < 1e-7 && d.mean_abs < 1e-9,
                "decay {decay}, {}: {d:?}",
                d.name
            );
        }
    }
}

/// `steps` training steps from the same start, fused SGD or gradients then `p −= lr·g`.
fn train(fused: bool, steps: usize) -> Vec<f64> {
    let training = if fused {
        Training::FusedSgd
    } else {
        Training::Backprop { optimizer_slots: 0 }
    };
    let plan = plan(&SMALL_CNN, 4, training);
    let mut arena = vec![0.0f64; plan.total()];
    let mut net = Network::new(&plan, &mut arena).unwrap();
    let mut rng = Rng::new(5);
    net.init(Init::He, &mut rng);
    let x = images(&mut rng, 4 * 128);
    let labels = [0usize, 1, 2, 1];
    let lr = 0.05;
    let mut sgd = Update::fused_sgd(&plan, lr)
        .and_then(|u| u.with_weight_decay(0.01))
        .unwrap();
    for _ in 0..steps {
        if fused {
            net.train_step(&Naive, Input::Dense(&x), Target::Labels(&labels), &mut sgd);
        } else {
            let mut grads = Update::<f64, NoOptimizer>::gradients(&plan)
                .and_then(|u| u.with_weight_decay(0.01))
                .unwrap();
            net.train_step(
                &Naive,
                Input::Dense(&x),
                Target::Labels(&labels),
                &mut grads,
            );
            let g = net.grads().to_vec();
            for (p, g) in net.params_mut().iter_mut().zip(g) {
                *p -= lr * g;
            }
        }
    }
    net.params().to_vec()
}

#[test]
fn fused_sgd_on_a_cnn_matches_backprop_then_update() {
    let (fused, split, start) = (train(true, 20), train(false, 20), train(true, 0));
    let diff = |a: &[f64], b: &[f64]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max)
    };
    assert!(diff(&fused, &split) < 1e-12, "{}", diff(&fused, &split));
    assert!(diff(&fused, &start) > 1e-3);
}

#[test]
fn the_text_form_round_trips() {
    for (text, spec) in [
        (
            "conv:30@5x5",
            Spec::Conv2d {
                filters: 30,
                kh: 5,
                kw: 5,
                stride: 1,
                pad: 0,
            },
        ),
        (
            "conv:16@3x3:p1",
            Spec::Conv2d {
                filters: 16,
                kh: 3,
                kw: 3,
                stride: 1,
                pad: 1,
            },
        ),
        (
            "conv:8@3x2:s2:p1",
            Spec::Conv2d {
                filters: 8,
                kh: 3,
                kw: 2,
                stride: 2,
                pad: 1,
            },
        ),
        (
            "maxpool:2x2",
            Spec::MaxPool2d {
                kh: 2,
                kw: 2,
                stride: 2,
            },
        ),
        (
            "maxpool:3x3:s1",
            Spec::MaxPool2d {
                kh: 3,
                kw: 3,
                stride: 1,
            },
        ),
    ] {
        assert_eq!(Spec::parse(text).unwrap(), spec, "{text}");
        assert_eq!(spec.to_string(), text);
    }
    // A square window may be written once.
    assert_eq!(Spec::parse("conv:4@3").unwrap().to_string(), "conv:4@3x3");
}

#[test]
fn bad_text_and_sizes_that_do_not_fit_are_named_errors() {
    for bad in [
        "conv",
        "conv:30",
        "conv:0@5x5",
        "conv:3@0x5",
        "conv:3@5x5:s0",
        "conv:3@5x5:q1",
        "maxpool",
        "maxpool:0x2",
        "maxpool:2x2:p1",
    ] {
        let e = Spec::parse(bad).unwrap_err().to_string();
        assert!(e.contains("conv") || e.contains("maxpool"), "{bad}: {e}");
    }
    // Shapes that do not fit are plan errors, not panics.
    for layers in [
        [Spec::Conv2d {
            filters: 2,
            kh: 9,
            kw: 9,
            stride: 1,
            pad: 0,
        }],
        [Spec::MaxPool2d {
            kh: 9,
            kw: 2,
            stride: 2,
        }],
    ] {
        assert!(
            Plan::new(&PlanConfig {
                input: Shape::image(2, 8, 8),
                layers: &layers,
                batch: 1,
                eval_batch: 1,
                training: Training::Inference,
            })
            .is_err()
        );
    }
}

#[test]
fn the_book_simple_conv_net_plans_with_pytorch_shaped_weights() {
    let layers = [
        Spec::Conv2d {
            filters: 30,
            kh: 5,
            kw: 5,
            stride: 1,
            pad: 0,
        },
        Spec::Relu,
        Spec::MaxPool2d {
            kh: 2,
            kw: 2,
            stride: 2,
        },
        Spec::Affine(100),
        Spec::Relu,
        Spec::Affine(10),
    ];
    let plan = Plan::new(&PlanConfig {
        input: Shape::image(1, 28, 28),
        layers: &layers,
        batch: 100,
        eval_batch: 1000,
        training: Training::Backprop { optimizer_slots: 2 },
    })
    .unwrap();
    let shapes: Vec<(String, Vec<usize>)> = plan
        .tensors()
        .map(|t| (t.name.to_string(), t.dims().to_vec()))
        .collect();
    let expect = |n: &str, d: &[usize]| (n.to_string(), d.to_vec());
    assert_eq!(
        shapes,
        [
            expect("W1", &[30, 1, 5, 5]),
            expect("b1", &[30]),
            expect("W2", &[4320, 100]),
            expect("b2", &[100]),
            expect("W3", &[100, 10]),
            expect("b3", &[10])
        ]
    );
    assert_eq!(plan.param_len(), 750 + 30 + 432_000 + 100 + 1000 + 10);
    // Memorising 100 random labels: from about ln 10, Adam at 0.001 brings the loss down
    // 0.065 in 22 steps. Naive adds in a fixed order with plain f32 operations and libm, so
    // its losses are the same bits on every CPU and are pinned exactly.
    assert_eq!(
        memorise_random_labels(&plan, &Naive),
        NAIVE_SIMPLE_CONV_NET_LOSSES
    );
    // The fast backend adds in another order and with FMA, so it agrees only to rounding.
    let gemm = DefaultGemm::default();
    let backend = Gemm::<f32>::name(&gemm);
    let fast = memorise_random_labels(&plan, &gemm);
    for (step, (f, n)) in fast.iter().zip(NAIVE_SIMPLE_CONV_NET_LOSSES).enumerate() {
        assert!(
            (f - n).abs() <= FAST_LOSS_TOLERANCE,
            "step {step}: {backend} loss {f} against naive's {n}"
        );
    }
}

/// The losses of [`memorise_random_labels`] with `Naive`, as a run of the test above prints
/// them when its `assert_eq!` fails (`{:?}`, which round-trips f32 exactly); recorded on an
/// x86_64 Xeon, and the same bits on any CPU. They change only when the numerics change on
/// purpose (initialisation, the data drawn, a layer's or Adam's arithmetic, the order of a
/// sum); then take the new values from that message and say why in the commit.
const NAIVE_SIMPLE_CONV_NET_LOSSES: [f32; 22] = [
    2.3025491, 2.2995288, 2.2940824, 2.2853706, 2.2737205, 2.2619698, 2.2552884, 2.2561688,
    2.256293, 2.251804, 2.2471914, 2.2457955, 2.2464511, 2.2475524, 2.2480009, 2.2474654,
    2.2460885, 2.2441752, 2.2421541, 2.2404397, 2.23914, 2.2380319,
];

/// How far a fast backend's loss may be from naive's at any of the 22 steps. Its products
/// sum up to 4 320 terms in another order, some with FMA, so each differs from naive's by
/// a few ulps; Adam's steps pass the differences on but do not amplify them much. Measured:
/// at most 2.4e-7 (one ulp of 2.3) for both matrixmultiply and the gemm crate on an AVX-512
/// Xeon. 1e-5 leaves 40× that for other instruction sets and block sizes, and is still ten
/// times below the smallest change of the loss from one step to the next (1.2e-4, steps 7
/// to 8). Measured the other way: a matrixmultiply that ignores `beta` fails at step 1 (off
/// by 3e-4), one that scales every product by 1 + 1e-3 at step 2 (off by 2.5e-5).
const FAST_LOSS_TOLERANCE: f32 = 1e-5;

/// The losses of 22 Adam steps (at 0.001) of `plan` with `gemm`, on 100 random images with
/// random labels: the book's initialisation and the data drawn from one seeded generator.
fn memorise_random_labels(plan: &Plan, gemm: &impl Gemm<f32>) -> Vec<f32> {
    let mut arena = vec![0.0f32; plan.total()];
    let mut net = Network::new(plan, &mut arena).unwrap();
    let mut rng = Rng::new(1);
    net.init(Init::Book, &mut rng);
    let x: Vec<f32> = (0..100 * 784).map(|_| rng.uniform()).collect();
    let labels: Vec<usize> = (0..100).map(|_| rng.below(10)).collect();
    let adam = manabi_optim::Adam::new(0.001);
    let mut update = Update::optimizer(plan, &adam, 1).unwrap();
    (0..22)
        .map(|_| net.train_step(gemm, Input::Dense(&x), Target::Labels(&labels), &mut update))
        .collect()
}

/// The library half of data parallelism: [`Network::grads_mut`] takes gradients combined by
/// hand and [`Network::optimizer_step`] steps on them, which for two halves averaged by rows
/// is the whole batch's step up to rounding. (The CLI's own two-thread step is tested against
/// the whole-batch step in `manabi-cli`'s `parallel.rs`.)
#[test]
fn optimizer_step_on_gradients_averaged_by_hand_is_the_whole_batch_step() {
    let layers = &SMALL_CNN[..6]
        .iter()
        .chain(&SMALL_CNN[7..])
        .copied()
        .collect::<Vec<_>>();
    let (rows, d) = (7, 2 * 8 * 8);
    let adam = manabi_optim::Adam::new(1e-3);
    let training = Training::Backprop { optimizer_slots: 2 };
    let plan = plan(layers, rows, training);
    let mut rng = Rng::new(17);
    let x = images(&mut rng, rows * d);
    let labels = [0usize, 2, 1, 1, 0, 2, 2];
    let mut arenas = [0, 1, 2].map(|_| vec![0.0f64; plan.total()]);
    let [whole, a, b] = &mut arenas;
    let mut whole = Network::new(&plan, whole).unwrap();
    whole.init(Init::He, &mut Rng::new(5));
    let mut a = Network::new(&plan, a).unwrap();
    let mut b = Network::new(&plan, b).unwrap();
    let decay = 0.01;
    let mut step = Update::optimizer(&plan, &adam, 1)
        .unwrap()
        .with_weight_decay(decay)
        .unwrap();
    let mut split_step = step;
    let mut grads = Update::gradients(&plan)
        .unwrap()
        .with_weight_decay(decay)
        .unwrap();
    a.params_mut().copy_from_slice(whole.params());
    for _ in 0..3 {
        let loss = whole.train_step(&Naive, Input::Dense(&x), Target::Labels(&labels), &mut step);
        b.params_mut().copy_from_slice(a.params());
        let ra = 4;
        let la = a.train_step(
            &Naive,
            Input::Dense(&x[..ra * d]),
            Target::Labels(&labels[..ra]),
            &mut grads,
        );
        let lb = b.train_step(
            &Naive,
            Input::Dense(&x[ra * d..]),
            Target::Labels(&labels[ra..]),
            &mut grads,
        );
        let (wa, wb) = (ra as f64 / rows as f64, (rows - ra) as f64 / rows as f64);
        let gb = b.grads().to_vec();
        for (g, h) in a.grads_mut().iter_mut().zip(&gb) {
            *g = wa * *g + wb * h;
        }
        a.optimizer_step(&mut split_step).unwrap();
        assert!((wa * la + wb * lb - loss).abs() < 1e-12 * loss.abs());
        for (p, q) in a.params().iter().zip(whole.params()) {
            assert!((p - q).abs() < 1e-12, "{p} against {q}");
        }
        assert_ne!(a.params(), b.params(), "the step moved the parameters");
    }
    assert_eq!(split_step.t(), 4);
    // Only an optimizer update can step.
    assert!(a.optimizer_step(&mut grads).is_err());
}
