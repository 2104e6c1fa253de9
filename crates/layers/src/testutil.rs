//! Test helpers: central differences of a probe loss, random probes, mixed-tolerance asserts.

extern crate std;
use std::vec::Vec;

/// Central differences of the probe loss `L(x) = Σ r·f(x)`. Because `dL/dy = r`, the result
/// must equal what `backward` returns for `dy = r`.
pub fn numeric_grad(f: impl Fn(&[f64], &mut [f64]), x: &[f64], r: &[f64]) -> Vec<f64> {
    const H: f64 = 1e-6;
    let mut y = std::vec![0.0; r.len()];
    let mut loss = |x: &[f64]| {
        f(x, &mut y);
        y.iter().zip(r).map(|(a, b)| a * b).sum::<f64>()
    };
    let mut xh = x.to_vec();
    (0..x.len())
        .map(|i| {
            xh[i] = x[i] + H;
            let up = loss(&xh);
            xh[i] = x[i] - H;
            let down = loss(&xh);
            xh[i] = x[i];
            (up - down) / (2.0 * H)
        })
        .collect()
}

/// A non-uniform probe `r` (values in about ±1.5), so that no gradient is a plain sum.
pub fn probe(len: usize, seed: u64) -> Vec<f64> {
    let mut rng = manabi_tensor::Rng::new(seed);
    (0..len).map(|_| rng.range(-1.5, 1.5)).collect()
}

/// `|a − b| ≤ atol + rtol·|b|` element-wise.
#[track_caller]
pub fn assert_close(a: &[f64], b: &[f64], atol: f64, rtol: f64) {
    assert_eq!(a.len(), b.len(), "lengths differ");
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= atol + rtol * y.abs(),
            "element {i}: {x} vs {y}"
        );
    }
}
