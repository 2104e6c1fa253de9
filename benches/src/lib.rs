//! Shared pieces of manabi's benchmarks: the shapes that matter and the arithmetic they cost.

/// One product `C[m×n] = op(A)[m×k]·op(B)[k×n]` worth timing.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// A label for tables: what the product is in the network.
    pub label: &'static str,
    /// Rows of C.
    pub m: usize,
    /// The inner dimension.
    pub k: usize,
    /// Columns of C.
    pub n: usize,
    /// Whether A is stored transposed.
    pub ta: bool,
    /// Whether B is stored transposed.
    pub tb: bool,
}

impl Shape {
    /// Floating-point operations of the product: `2·m·n·k`.
    pub fn flops(&self) -> f64 {
        2.0 * self.m as f64 * self.n as f64 * self.k as f64
    }
}

/// The products of the book's 784-50-10 network at batch 100, plus evaluation and a square one.
pub const SHAPES: [Shape; 5] = [
    Shape {
        label: "forward 100x784*784x50",
        m: 100,
        k: 784,
        n: 50,
        ta: false,
        tb: false,
    },
    Shape {
        label: "dW1 (784x100)T*100x50",
        m: 784,
        k: 100,
        n: 50,
        ta: true,
        tb: false,
    },
    Shape {
        label: "dZ 100x10*(50x10)T",
        m: 100,
        k: 10,
        n: 50,
        ta: false,
        tb: true,
    },
    Shape {
        label: "eval 10000x784*784x50",
        m: 10000,
        k: 784,
        n: 50,
        ta: false,
        tb: false,
    },
    Shape {
        label: "square 512^3",
        m: 512,
        k: 512,
        n: 512,
        ta: false,
        tb: false,
    },
];
