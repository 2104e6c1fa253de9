//! Shared pieces of manabi's benchmarks: the shapes that matter and the arithmetic they cost.
//!
//! Benchmark ids carry their own arithmetic so that `cargo xtask bench` can turn criterion's
//! times into GFLOP/s without depending on this crate: a product's id holds `m<rows> k<inner>
//! n<cols>` tokens (see [`Shape::id`]), and the table divides `2·m·k·n` by the median time.
//! A benchmark whose work is not one product can carry `flop<count>` instead.
//!
//! # Features
//! - `matrixmultiply` (default): also time the `MatrixMultiply` backend.
//! - `blas`: also time the OpenBLAS backend (needs the system's `libopenblas-dev`).

use core::fmt;

/// One product `C[m×n] = op(A)[m×k]·op(B)[k×n]` worth timing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// What the product is in the network (one word: it starts the benchmark id).
    pub label: &'static str,
    /// Rows of C.
    pub m: usize,
    /// The inner dimension.
    pub k: usize,
    /// Columns of C.
    pub n: usize,
    /// Whether A is stored transposed (`k × m` in memory).
    pub ta: bool,
    /// Whether B is stored transposed (`n × k` in memory).
    pub tb: bool,
}

impl Shape {
    /// Floating-point operations of the product: `2·m·n·k`.
    pub fn flops(&self) -> f64 {
        2.0 * self.m as f64 * self.n as f64 * self.k as f64
    }

    /// The benchmark id: the label, then `m… k… n…`, then `At` / `Bt` for stored transposes,
    /// e.g. `dW1 m784 k100 n50 At`.
    pub fn id(&self) -> Id<'_> {
        Id(self)
    }

    /// Elements of A, B and C as stored.
    pub fn lens(&self) -> (usize, usize, usize) {
        (self.m * self.k, self.k * self.n, self.m * self.n)
    }
}

/// Displays a [`Shape`]'s benchmark id (see [`Shape::id`]).
#[derive(Clone, Copy, Debug)]
pub struct Id<'a>(&'a Shape);

impl fmt::Display for Id<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        write!(f, "{} m{} k{} n{}", s.label, s.m, s.k, s.n)?;
        if s.ta {
            f.write_str(" At")?;
        }
        if s.tb {
            f.write_str(" Bt")?;
        }
        Ok(())
    }
}

/// The products of the book's 784-50-10 network at batch 100, plus evaluation and a square one.
pub const SHAPES: [Shape; 5] = [
    // First layer forward: x[100×784]·W1[784×50].
    Shape {
        label: "forward",
        m: 100,
        k: 784,
        n: 50,
        ta: false,
        tb: false,
    },
    // First layer weight gradient: dW1 = xᵀ·dy with x stored 100×784.
    Shape {
        label: "dW1",
        m: 784,
        k: 100,
        n: 50,
        ta: true,
        tb: false,
    },
    // Second layer input gradient: dZ = dy[100×10]·W2ᵀ with W2 stored 50×10.
    Shape {
        label: "dZ",
        m: 100,
        k: 10,
        n: 50,
        ta: false,
        tb: true,
    },
    // Evaluation of the whole test set in one batch.
    Shape {
        label: "eval",
        m: 10000,
        k: 784,
        n: 50,
        ta: false,
        tb: false,
    },
    Shape {
        label: "square",
        m: 512,
        k: 512,
        n: 512,
        ta: false,
        tb: false,
    },
];

/// Deterministic operands in `[-0.6, 0.6]` with a few distinct values, so results stay finite.
pub fn fill(len: usize, salt: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7 + salt) % 13) as f32 * 0.1 - 0.6)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_the_dimensions_and_transposes() {
        let ids: Vec<String> = SHAPES.iter().map(|s| s.id().to_string()).collect();
        assert_eq!(
            ids,
            [
                "forward m100 k784 n50",
                "dW1 m784 k100 n50 At",
                "dZ m100 k10 n50 Bt",
                "eval m10000 k784 n50",
                "square m512 k512 n512",
            ]
        );
    }

    #[test]
    fn flops_are_two_m_n_k() {
        // 2·100·784·50 = 7_840_000, by hand.
        assert_eq!(SHAPES[0].flops(), 7_840_000.0);
        // 2·512³ = 268_435_456.
        assert_eq!(SHAPES[4].flops(), 268_435_456.0);
    }

    #[test]
    fn fill_stays_in_range() {
        let v = fill(100, 3);
        assert_eq!(v.len(), 100);
        assert!(v.iter().all(|x| (-0.61..=0.61).contains(x)));
        assert!(v.iter().any(|&x| x != v[0]));
    }
}
