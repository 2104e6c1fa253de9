//! Golden test: three steps of every optimizer on a fixed quadratic, against exact values.
//!
//! The reference numbers come from `golden_reference.py` next to this file, which runs the
//! update rules of the book's `common/optimizer.py`, written out again in Python, in exact
//! 50-digit decimal arithmetic (not from this crate). The script also reruns them in
//! binary64 and reports a largest drift of 3.9e-15 relative; the tolerance here is 1e-12.

use manabi_optim::{AnyOptimizer, Optimizer};

/// Curvatures of f(p) = ½·Σ aᵢ·pᵢ², so ∂f/∂pᵢ = aᵢ·pᵢ.
const A: [f64; 3] = [1.0, 3.0, 0.25];
/// Starting point.
const P0: [f64; 3] = [1.0, -0.5, 2.0];
/// Updates per case.
const STEPS: u64 = 3;
/// Relative tolerance.
const RTOL: f64 = 1e-12;

/// (name, weight decay, final params followed by the final state blocks).
#[rustfmt::skip]
const CASES: &[(&str, f64, &[f64])] = &[
    ("sgd", 0.0, &[0.729, -0.1715, 1.85371875]),
    ("momentum", 0.0, &[0.486, 0.139, 1.72546875, -0.234, 0.249, -0.13078125]),
    ("nesterov", 0.0, &[0.215522289, 0.1360422985, 1.51965239653125,
        -0.1924641, 0.11918535, -0.124994503125]),
    ("adagrad", 0.0, &[0.7804561987608938, -0.2908991874451771, 1.7758215508664703,
        2.5040615286923362, 4.715341621384785, 0.685188696694315]),
    ("rmsprop", 0.0, &[0.7799824392791683, -0.29043331734506966, 1.7753498009237394,
        0.024757527504610077, 0.04655005444289393, 0.006779159562078064]),
    ("adam", 0.0, &[0.7015870148647828, -0.20487174946159295, 1.7006248596283047,
        0.2420413060819604, -0.31985639360590995, 0.12825420359651526,
        0.002447852180968098, 0.004500490524286474, 0.0006774374811093378]),
    ("sgd", 0.1, &[0.704969, -0.1642545, 1.79726425]),
    ("momentum", 0.1, &[0.439649, 0.1538055, 1.61897425, -0.253451, 0.2523555, -0.18047575]),
    ("nesterov", 0.1, &[0.161058865859, 0.1357871386005, 1.34486588568175,
        -0.2039601971, 0.11679064155, -0.169289156575]),
    ("adagrad", 0.1, &[0.7804561971779129, -0.2908991871011473, 1.7758215406213604,
        3.029914445068816, 5.034936994349156, 1.3429698390660272]),
    ("rmsprop", 0.1, &[0.7799824233906122, -0.29043331389064897, 1.7753496981181394,
        0.029956607817207968, 0.0497051133301874, 0.013287152098202639]),
    ("adam", 0.1, &[0.7015869472761181, -0.2048717333299949, 1.700624440102023,
        0.26624542835869536, -0.33051826780179777, 0.17955586845268806,
        0.002961900979827921, 0.004805523649728753, 0.001327777241710977]),
];

#[test]
fn three_steps_on_a_quadratic_match_exact_reference() {
    assert_eq!(CASES.len(), 12);
    for &(name, weight_decay, want) in CASES {
        // RMSprop runs at 0.01: at 0.1 its first step (≈ 10·lr·sign g) would put p₀
        // within 1e-10 of 0, where a relative comparison means nothing.
        let lr = if name == "rmsprop" { 0.01 } else { 0.1 };
        let opt = AnyOptimizer::from_name(name, lr)
            .expect("known name")
            .with_weight_decay(weight_decay);
        let mut p = P0;
        let mut state = vec![0.0; opt.state_len(P0.len())];
        assert_eq!(want.len(), P0.len() + state.len(), "{name}");
        for t in 1..=STEPS {
            let g: [f64; 3] = std::array::from_fn(|i| A[i] * p[i]);
            opt.step(t, &mut p, &g, &mut state);
        }
        let got = p.iter().chain(&state);
        for (i, (got, want)) in got.zip(want).enumerate() {
            assert!(
                (got - want).abs() <= RTOL * want.abs(),
                "{name} (weight decay {weight_decay}) value {i}: got {got:e}, want {want:e}"
            );
        }
    }
}
