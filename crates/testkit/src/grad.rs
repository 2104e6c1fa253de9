//! The gradient check: central differences of a probe loss, random probes, mixed-tolerance asserts.

/// Step of the central differences: small enough for the truncation error (`h²`), large
/// enough that `f64` rounding (`ε/h`) stays near 1e-10.
const H: f64 = 1e-6;

/// Central differences of the probe loss `L(x) = Σ r·f(x)`. Because `dL/dy = r`, the result
/// must equal what `backward` returns for `dy = r`.
///
/// `f(x, y)` writes the forward output `y` (`r.len()` values) for input `x`.
pub fn numeric_grad(f: impl Fn(&[f64], &mut [f64]), x: &[f64], r: &[f64]) -> Vec<f64> {
    let mut y = vec![0.0; r.len()];
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

/// `|a − b| ≤ atol + rtol·|b|` element-wise, naming the first element that is not.
///
/// # Panics
/// If the lengths differ or an element is out of tolerance (NaN always is).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn central_differences_of_a_known_function() {
        // y = (x0², x0·x1): dL/dx = (2·x0·r0 + x1·r1, x0·r1).
        let f = |x: &[f64], y: &mut [f64]| {
            y[0] = x[0] * x[0];
            y[1] = x[0] * x[1];
        };
        let (x, r) = ([1.5, -2.0], [0.5, 3.0]);
        let g = numeric_grad(f, &x, &r);
        assert_close(&g, &[2.0 * 1.5 * 0.5 - 2.0 * 3.0, 1.5 * 3.0], 1e-8, 1e-8);
    }

    #[test]
    fn probes_are_seeded_and_spread() {
        let p = probe(64, 7);
        assert_eq!(p, probe(64, 7));
        assert_ne!(p, probe(64, 8));
        assert!(p.iter().all(|v| v.abs() <= 1.5));
        assert!(p.iter().any(|&v| v > 0.5) && p.iter().any(|&v| v < -0.5));
    }

    #[test]
    fn out_of_tolerance_is_caught() {
        let caught =
            std::panic::catch_unwind(|| assert_close(&[1.0, 2.1], &[1.0, 2.0], 1e-3, 1e-3));
        assert!(caught.is_err());
        let nan = std::panic::catch_unwind(|| assert_close(&[f64::NAN], &[0.0], 1.0, 1.0));
        assert!(nan.is_err());
        assert_close(&[1.0, 2.0005], &[1.0, 2.0], 1e-3, 0.0);
    }
}
