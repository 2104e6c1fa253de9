//! Shared pieces of manabi's benchmarks: the shapes that matter and the arithmetic they cost.
//!
//! Benchmark ids carry their own arithmetic so that `cargo xtask bench` can turn criterion's
//! times into GFLOP/s without depending on this crate: a product's id holds `m<rows> k<inner>
//! n<cols>` tokens (see [`Shape::id`]), and the table divides `2·m·k·n` by the median time.
//! A benchmark whose work is not one product can carry `flop<count>` instead, and one that runs
//! on several threads carries `t<threads>` (the table compares it with that many cores' peak).
//!
//! The benches: `gemm` (products per backend), `layers` (each layer's forward and backward at
//! batch 100), `step` (one whole training step), `eval` (70,000 images on 1 and 2 threads),
//! `gradient` (the numerical gradient against backprop) and `peak` (this machine's limit, see
//! [`peak`]).
//!
//! # Features
//! - `matrixmultiply` (default): also time the `MatrixMultiply` backend.
//! - `blas`: also time the OpenBLAS backend (needs the system's `libopenblas-dev`).
//! - `gemm`: also time the `FaerGemm` backend (the pure-Rust `gemm` crate).

use core::convert::Infallible;
use core::fmt;
use manabi_layers::{
    Batch, BatchSource, Input, Network, OneNetwork, Quiet, Schedule, Trainer, Update,
};
use manabi_matmul::Gemm;
use manabi_optim::Optimizer;
use manabi_tensor::{Real, Rng};

pub mod peak;

/// The book's chapter-5 network: 784 inputs, 50 hidden units, 10 classes.
pub const SIZES: [usize; 3] = [784, 50, 10];

/// The book's training batch.
pub const BATCH: usize = 100;

/// All of MNIST (60,000 training and 10,000 test images): what the CLI evaluates each epoch.
pub const EVAL_IMAGES: usize = 70_000;

/// Rows per forward pass when evaluating, as in `manabi-cli`'s evaluator.
pub const EVAL_ROWS: usize = 1000;

/// GEMM flops of a forward pass over `rows` rows: `Σ 2·rows·d_in·d_out` (bias additions and
/// activations are not counted).
pub fn forward_flops(sizes: &[usize], rows: usize) -> u64 {
    sizes
        .windows(2)
        .map(|w| 2 * (rows * w[0] * w[1]) as u64)
        .sum()
}

/// GEMM flops of forward plus backward over `rows` rows: each layer's forward product and its
/// weight gradient `xᵀ·dy`, and the input gradient `dy·Wᵀ` of every layer but the first (which
/// the network's backward pass never computes).
pub fn backprop_flops(sizes: &[usize], rows: usize) -> u64 {
    let products: u64 = sizes
        .windows(2)
        .skip(1)
        .map(|w| 2 * (rows * w[0] * w[1]) as u64)
        .sum();
    2 * forward_flops(sizes, rows) + products
}

/// Flops of one training step of the book's network at batch 100 (the SGD update's 2 flops per
/// parameter are left out): `2·100·784·50 + 2·100·50·10` forward, `2·50·100·10` (dW₂),
/// `2·100·10·50` (dx₂) and `2·784·100·50` (dW₁).
pub fn step_flops() -> u64 {
    backprop_flops(&SIZES, BATCH)
}

/// Parameters of a network: `Σ (d_in·d_out + d_out)`.
pub fn param_count(sizes: &[usize]) -> usize {
    sizes.windows(2).map(|w| w[0] * w[1] + w[1]).sum()
}

/// GEMM flops of a numerical gradient by central differences: two forward passes per
/// parameter.
pub fn numerical_gradient_flops(sizes: &[usize], rows: usize) -> u64 {
    2 * param_count(sizes) as u64 * forward_flops(sizes, rows)
}

/// Threads OpenBLAS will use: `OPENBLAS_NUM_THREADS`, else `OMP_NUM_THREADS`, else every core
/// (OpenBLAS reads these once, when the library loads, so this is fixed for the process).
pub fn blas_threads() -> usize {
    ["OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"]
        .iter()
        .find_map(|var| {
            std::env::var(var)
                .ok()?
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|&n| n > 0)
        })
        .unwrap_or_else(cores)
}

/// Logical CPUs available to this process.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `len` values uniform in `[lo, hi)` from a seeded generator.
pub fn uniform(len: usize, lo: f32, hi: f32, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..len).map(|_| rng.range(lo, hi)).collect()
}

/// `n` class labels below `classes` from a seeded generator.
pub fn labels(n: usize, classes: usize, seed: u64) -> Vec<usize> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| rng.below(classes)).collect()
}

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

/// The products of the book's 784-50-10 network at batch 100, plus evaluation, SimpleConvNet's
/// products and a square one.
pub const SHAPES: [Shape; 13] = [
    // First layer forward: x[100×784]·W1[784×50].
    Shape {
        label: "forward",
        m: 100,
        k: 784,
        n: 50,
        ta: false,
        tb: false,
    },
    // Second layer forward: h[100×50]·W2[50×10].
    Shape {
        label: "forward2",
        m: 100,
        k: 50,
        n: 10,
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
    // Evaluation, first layer, one chunk of 2000 rows (the CLI evaluator's and the eval bench's).
    Shape {
        label: "chunk",
        m: 2000,
        k: 784,
        n: 50,
        ta: false,
        tb: false,
    },
    // The same product transposed: Cᵀ[50×2000] = W1ᵀ·xᵀ with W1 stored 784×50, x 2000×784.
    Shape {
        label: "chunkT",
        m: 50,
        k: 784,
        n: 2000,
        ta: true,
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
    // SimpleConvNet, per sample: the convolution's W[30×25]·col[25×576] forward.
    Shape {
        label: "conv",
        m: 30,
        k: 25,
        n: 576,
        ta: false,
        tb: false,
    },
    // Its weight gradient per sample: dW[30×25] += dy[30×576]·colᵀ with col stored 25×576.
    Shape {
        label: "convdW",
        m: 30,
        k: 576,
        n: 25,
        ta: false,
        tb: true,
    },
    // SimpleConvNet's affine 4320 → 100 forward at batch 100.
    Shape {
        label: "fc",
        m: 100,
        k: 4320,
        n: 100,
        ta: false,
        tb: false,
    },
    // Its weight gradient, xᵀ·dy with x stored 100×4320.
    Shape {
        label: "fcdW",
        m: 4320,
        k: 100,
        n: 100,
        ta: true,
        tb: false,
    },
    // Its input gradient, dy·Wᵀ with W stored 4320×100.
    Shape {
        label: "fcdx",
        m: 100,
        k: 100,
        n: 4320,
        ta: false,
        tb: true,
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
                "forward2 m100 k50 n10",
                "dW1 m784 k100 n50 At",
                "dZ m100 k10 n50 Bt",
                "chunk m2000 k784 n50",
                "chunkT m50 k784 n2000 At Bt",
                "eval m10000 k784 n50",
                "conv m30 k25 n576",
                "convdW m30 k576 n25 Bt",
                "fc m100 k4320 n100",
                "fcdW m4320 k100 n100 At",
                "fcdx m100 k100 n4320 Bt",
                "square m512 k512 n512",
            ]
        );
    }

    #[test]
    fn flops_are_two_m_n_k() {
        // 2·100·784·50 = 7_840_000, by hand.
        assert_eq!(SHAPES[0].flops(), 7_840_000.0);
        // 2·512³ = 268_435_456.
        assert_eq!(SHAPES[12].flops(), 268_435_456.0);
        // SimpleConvNet's convolution per sample: 2·30·25·576 = 864_000.
        assert_eq!(SHAPES[7].flops(), 864_000.0);
        // Both chunk formulations do the same 2·2000·784·50 = 156_800_000 flops.
        assert_eq!(SHAPES[4].flops(), 156_800_000.0);
        assert_eq!(SHAPES[5].flops(), 156_800_000.0);
    }

    #[test]
    fn network_flops_match_the_hand_counts() {
        // Forward: 2·100·784·50 + 2·100·50·10 = 7_840_000 + 100_000.
        assert_eq!(forward_flops(&SIZES, BATCH), 7_940_000);
        // The step: 7_840_000 + 100_000 (forward) + 100_000 (dW2) + 100_000 (dx2)
        // + 7_840_000 (dW1) = 15_980_000.
        assert_eq!(step_flops(), 15_980_000);
        // Evaluation of 70,000 images: 70_000·2·(784·50 + 50·10) = 70_000·79_400.
        assert_eq!(forward_flops(&SIZES, EVAL_IMAGES), 5_558_000_000);
        // 784·50 + 50 + 50·10 + 10 = 39_760 parameters, as in the book.
        assert_eq!(param_count(&SIZES), 39_760);
        // Batch 3: a forward is 2·3·39_700 = 238_200 flops, two per parameter.
        assert_eq!(numerical_gradient_flops(&SIZES, 3), 2 * 39_760 * 238_200);
    }

    #[test]
    fn random_data_is_seeded_and_in_range() {
        let a = uniform(1000, -0.5, 0.5, 7);
        assert_eq!(a, uniform(1000, -0.5, 0.5, 7));
        assert_ne!(a, uniform(1000, -0.5, 0.5, 8));
        assert!(a.iter().all(|x| (-0.5..0.5).contains(x)));
        let l = labels(1000, 10, 7);
        assert!(l.iter().all(|&k| k < 10));
        assert!((0..10).all(|k| l.contains(&k)));
    }

    #[test]
    fn fill_stays_in_range() {
        let v = fill(100, 3);
        assert_eq!(v.len(), 100);
        assert!(v.iter().all(|x| (-0.61..=0.61).contains(x)));
        assert!(v.iter().any(|&x| x != v[0]));
    }
}

/// The same batch for every step: the batch source of the step benches, which time the
/// library's training loop ([`Trainer::step`]) rather than a bare `train_step`, as every
/// caller of the library trains.
#[derive(Clone, Copy, Debug)]
pub struct SameBatch<'a, T> {
    /// The rows.
    pub input: Input<'a, T>,
    /// Their labels.
    pub labels: &'a [usize],
}

impl<T: Real> BatchSource<T, Infallible> for SameBatch<'_, T> {
    fn next(&mut self, _: u64, _: &mut Network<'_, T>) -> Result<Batch<'_, T>, Infallible> {
        Ok(Batch {
            input: self.input,
            labels: self.labels,
        })
    }
}

/// A trainer of `net` with `update` that never stops on its own (its schedule has no end),
/// checking every weight after every step as `manabi train` does.
pub fn trainer<'n, 'o, T: Real, O: Optimizer<T>>(
    net: Network<'n, T>,
    update: Update<'o, T, O>,
) -> Trainer<'n, 'o, T, O> {
    Trainer::new(net, update, Schedule::new(u64::MAX))
}

/// One step of `trainer` on `batch` with backend `g`; NaN if training diverged.
pub fn step<T: Real, G: Gemm<T>, O: Optimizer<T>>(
    trainer: &mut Trainer<'_, '_, T, O>,
    g: &G,
    batch: &mut SameBatch<'_, T>,
) -> T {
    trainer
        .step(g, batch, &mut OneNetwork, &mut Quiet)
        .unwrap_or(T::NAN)
}
