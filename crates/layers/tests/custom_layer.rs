//! Layers defined outside manabi-layers, as a user would: a pointwise `Tanh` and a dense `Scale` with a learned tensor join a stack, name their tensors, pass the gradient check, train to a pinned loss; a backward wrong by a factor fails the check.

use manabi_layers::{
    Backward, Count, Custom, Dense, Forward, Grad, GradCheck, Init, Input, Mode, Network,
    NoOptimizer, ParamGrad, Plan, PlanConfig, Pointwise, Region, Shape, Shapes, SizeRule, Spec,
    Target, TensorInfo, Training, Update, gradcheck,
};
use manabi_matmul::{Gemm, Naive};
use manabi_tensor::{Error, Real, Rng, Span};

/// `y = tanh(x)`; backward `dx = dy·(1 − y²)` reads the output, so it keeps no cache.
struct Tanh;

impl Pointwise for Tanh {
    fn forward<T: Real>(&self, _: Mode, _: &mut Rng, v: &mut [T], _: &mut [T]) {
        v.iter_mut().for_each(|v| *v = v.tanh());
    }

    fn backward<T: Real>(&self, y: &[T], _: &[T], g: Grad<'_, T>) {
        g.map(y, |y, dy| dy * (T::ONE - y * y));
    }
}

/// [`Tanh`] with a backward 2 % too large: a bug the gradient check must catch.
struct WrongTanh;

impl Pointwise for WrongTanh {
    fn forward<T: Real>(&self, mode: Mode, rng: &mut Rng, v: &mut [T], cache: &mut [T]) {
        Tanh.forward(mode, rng, v, cache);
    }

    fn backward<T: Real>(&self, y: &[T], _: &[T], g: Grad<'_, T>) {
        let factor = T::from_f64(1.02);
        g.map(y, |y, dy| factor * dy * (T::ONE - y * y));
    }
}

/// `y = x ⊙ s`, one learned scale per feature (tensor `scale`, starting at 1): backward
/// `dx = dy ⊙ s`, `ds = Σ_rows dy ⊙ x`.
struct Scale;

impl Dense for Scale {
    fn forward<T: Real>(&self, _: &impl Gemm<T>, f: Forward<'_, T>) {
        let d = f.shapes.input.len();
        for (y, x) in f.y.chunks_exact_mut(d).zip(f.x.chunks_exact(d)) {
            for ((y, &x), &s) in y.iter_mut().zip(x).zip(f.p) {
                *y = x * s;
            }
        }
    }

    fn backward<T: Real>(&self, _: &impl Gemm<T>, b: Backward<'_, T>) {
        let d = b.shapes.input.len();
        if let Some(dx) = b.dx {
            for (dx, dy) in dx.chunks_exact_mut(d).zip(b.dy.chunks_exact(d)) {
                for ((dx, &dy), &s) in dx.iter_mut().zip(dy).zip(&*b.p) {
                    *dx = dy * s;
                }
            }
        }
        let grad = |j: usize| {
            let rows = b.x.chunks_exact(d).zip(b.dy.chunks_exact(d));
            rows.fold(T::ZERO, |acc, (x, dy)| acc + dy[j] * x[j])
        };
        match b.grad {
            ParamGrad::Write(ds) => ds.iter_mut().enumerate().for_each(|(j, g)| *g = grad(j)),
            // Its scales are not decayed.
            ParamGrad::Sgd { lr, .. } => {
                for j in 0..d {
                    let g = grad(j);
                    b.p[j] -= lr * g;
                }
            }
        }
    }

    fn init<T: Real>(&self, _: Shapes, _: Init, _: &mut Rng, p: &mut [T], _: &mut [T]) {
        p.fill(T::ONE);
    }

    fn tensor(&self, shapes: Shapes, k: usize) -> Option<TensorInfo> {
        (k == 0).then(|| TensorInfo::new("scale", Region::Params, 0, &[shapes.input.len()]))
    }

    fn decayed(&self, _: Shapes) -> Span {
        Span::default()
    }
}

const TANH: Custom = Custom::pointwise(
    "tanh",
    &Tanh,
    &SizeRule {
        reads_output: true,
        ..SizeRule::SAME
    },
);

const SCALE: Custom = Custom::dense(
    "scale",
    &Scale,
    &SizeRule {
        params: Count {
            per_in: 1,
            ..Count::ZERO
        },
        ..SizeRule::SAME
    },
);

/// 4 features → affine 6 → tanh → scale → affine 3.
const LAYERS: [Spec; 4] = [
    Spec::Affine(6),
    Spec::Custom(TANH),
    Spec::Custom(SCALE),
    Spec::Affine(3),
];

fn plan(layers: &[Spec], batch: usize, training: Training) -> Plan {
    Plan::new(&PlanConfig {
        input: Shape::flat(4),
        layers,
        batch,
        eval_batch: batch,
        training,
    })
    .unwrap()
}

/// `n` points of three classes around three centres, `(features, labels)`.
fn points(n: usize, seed: u64) -> (Vec<f64>, Vec<usize>) {
    let centres = [
        [1.0, 0.0, -1.0, 0.5],
        [-1.0, 1.0, 0.0, -0.5],
        [0.0, -1.0, 1.0, 0.0],
    ];
    let mut rng = Rng::new(seed);
    let labels: Vec<usize> = (0..n).map(|i| i % 3).collect();
    let x = labels
        .iter()
        .flat_map(|&c| centres[c].map(|v| v + 0.6 * rng.normal::<f64>()))
        .collect();
    (x, labels)
}

/// The gradient check of `layers` on 5 points, He weights drawn with `seed`.
fn check(layers: &[Spec], seed: u64) -> GradCheck {
    let plan = plan(layers, 5, Training::Backprop { optimizer_slots: 0 });
    let mut arena = plan.alloc_arena::<f64>();
    let mut net = Network::new(&plan, &mut arena).unwrap();
    net.init(Init::He, &mut Rng::new(seed));
    let (x, labels) = points(5, seed + 1);
    let mut numeric = vec![0.0; plan.param_len()];
    gradcheck(
        &mut net,
        &Naive,
        Input::Dense(&x),
        Target::Labels(&labels),
        0.0,
        &mut numeric,
    )
    .unwrap()
}

#[test]
fn custom_layers_plan_name_their_tensors_and_read_as_text() {
    let plan = plan(&LAYERS, 5, Training::Inference);
    let names: Vec<String> = plan.tensors().map(|t| t.name.to_string()).collect();
    assert_eq!(names, ["W1", "b1", "scale1", "W2", "b2"]);
    let scale = plan.tensors().nth(2).unwrap();
    assert_eq!((scale.span.start, scale.dims()), (4 * 6 + 6, &[6][..]));
    assert_eq!(plan.param_len(), 30 + 6 + 21);
    // Tanh works in place after an affine layer; it reads its output, so the scale does not.
    assert_eq!([plan.in_place(1), plan.in_place(2)], [true, false]);
    let text: Vec<String> = LAYERS.iter().map(Spec::to_string).collect();
    assert_eq!(text.join(","), "affine:6,tanh,scale,affine:3");
    let customs = [TANH, SCALE];
    for (text, spec) in ["affine:6", "tanh", "scale", "affine:3"].iter().zip(LAYERS) {
        assert_eq!(Spec::parse_with(text, &customs).unwrap(), spec);
    }
    assert!(Spec::parse("tanh").is_err());
    assert_eq!(
        plan.layers().iter().map(|l| l.spec()).collect::<Vec<_>>(),
        LAYERS
    );
}

/// Rules a pointwise kernel cannot have: parameters, another shape.
static NOT_POINTWISE: [SizeRule; 2] = [
    SizeRule {
        params: Count {
            fixed: 1,
            ..Count::ZERO
        },
        ..SizeRule::SAME
    },
    SizeRule {
        output: manabi_layers::OutShape::Fixed(Shape::flat(2)),
        ..SizeRule::SAME
    },
];

#[test]
fn a_pointwise_kernel_that_would_learn_or_reshape_is_refused_at_plan_time() {
    for rule in &NOT_POINTWISE {
        let layers = [
            Spec::Affine(6),
            Spec::Custom(Custom::pointwise("bad", &Tanh, rule)),
        ];
        let e = Plan::new(&PlanConfig {
            input: Shape::flat(4),
            layers: &layers,
            batch: 2,
            eval_batch: 2,
            training: Training::Inference,
        })
        .unwrap_err();
        assert!(matches!(e, Error::InvalidValue { .. }), "{e}");
    }
}

#[test]
fn custom_layers_pass_the_gradient_check() {
    let report = check(&LAYERS, 3);
    assert_eq!(report.verdict(), Ok(()));
    let names: Vec<String> = report
        .tensors()
        .iter()
        .map(|d| d.name.to_string())
        .collect();
    assert_eq!(names, ["W1", "b1", "scale1", "W2", "b2"]);
    assert!(report.max_abs() < 1e-9, "{:?}", report.tensors());
}

#[test]
fn a_backward_wrong_by_two_percent_fails_the_gradient_check() {
    let wrong = Custom::pointwise(
        "wrong-tanh",
        &WrongTanh,
        &SizeRule {
            reads_output: true,
            ..SizeRule::SAME
        },
    );
    let layers = [LAYERS[0], Spec::Custom(wrong), LAYERS[2], LAYERS[3]];
    let report = check(&layers, 3);
    // Only the layers below the wrong one get wrong gradients: W1 and b1.
    let mismatch = report.verdict().unwrap_err();
    assert!(
        ["W1", "b1"].contains(&mismatch.name.to_string().as_str()),
        "{mismatch}"
    );
    for d in &report.tensors()[2..] {
        assert!(d.worst_excess < 0.0, "{}: {d:?}", d.name);
    }
    let relative = (mismatch.backprop / mismatch.numerical - 1.0).abs();
    assert!((relative - 0.02).abs() < 1e-6, "{mismatch}");
}

/// `steps` steps of SGD (lr 0.1) on batches of 8 of 64 points, in `T`, fused or not; the
/// losses and the final parameters.
fn train<T: Real>(fused: bool, steps: usize) -> (Vec<T>, Vec<T>) {
    let training = if fused {
        Training::FusedSgd
    } else {
        Training::Backprop { optimizer_slots: 0 }
    };
    let plan = plan(&LAYERS, 8, training);
    let mut arena = plan.alloc_arena::<T>();
    let mut net = Network::new(&plan, &mut arena).unwrap();
    net.init(Init::He, &mut Rng::new(7));
    let (x, labels) = points(64, 8);
    let x: Vec<T> = x.into_iter().map(T::from_f64).collect();
    let lr = T::from_f64(0.1);
    let sgd = manabi_optim::Sgd::new(lr);
    let batch = |step: usize| {
        let at = step % 8 * 8;
        (
            Input::Dense(&x[at * 4..(at + 8) * 4]),
            Target::Labels(&labels[at..at + 8]),
        )
    };
    let losses = if fused {
        let mut u = Update::fused_sgd(&plan, lr).unwrap();
        (0..steps)
            .map(|s| {
                let (input, target) = batch(s);
                net.train_step::<NoOptimizer>(&Naive, input, target, &mut u)
            })
            .collect()
    } else {
        let mut u = Update::optimizer(&plan, &sgd, 1).unwrap();
        (0..steps)
            .map(|s| {
                let (input, target) = batch(s);
                net.train_step(&Naive, input, target, &mut u)
            })
            .collect()
    };
    (losses, net.params().to_vec())
}

#[test]
fn a_seeded_run_with_custom_layers_reaches_its_pinned_loss() {
    let (losses, _) = train::<f32>(false, 200);
    // The first step's loss is about ln 3. The last is pinned: printed by this run on the
    // Naive backend in f32 (whose sums and libm's tanh give the same bits on every CPU).
    assert!((losses[0] - 3f32.ln()).abs() < 0.05, "{}", losses[0]);
    assert_eq!(losses[199], 0.009_148_266, "{:?}", losses[199]);
    // The same run in f64 goes through the kernels' f64 bodies and ends near it.
    let (losses64, _) = train::<f64>(false, 200);
    assert!((losses64[199] - f64::from(losses[199])).abs() < 1e-4);
    // Fused SGD (the scale's `ParamGrad::Sgd` arm) takes the same steps, up to rounding.
    let (fused, p_fused) = train::<f64>(true, 200);
    let (_, p_split) = train::<f64>(false, 200);
    assert!((fused[199] - losses64[199]).abs() < 1e-12);
    let worst = p_fused
        .iter()
        .zip(&p_split)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(worst < 1e-12, "{worst}");
}
