//! Fully connected layer `y = x·W + b` and its backward pass.

use crate::kernel::{Backward, Dense, Forward, ParamGrad, Shapes, Sizes, add_decay, half_sum_of_squares};
use crate::layer::{Builtin, positive};
use crate::{Init, Region, Shape, TensorInfo};
use core::fmt;
use manabi_matmul::{Csr, Gemm, Mat, MatMut, csr_gemm, csr_gemm_tn};
use manabi_tensor::{Error, Real, Result, Rng, Span};

/// Fully connected layer, `y = x·W + b`.
///
/// # Shapes
/// `x: [batch, d_in]`, `w: [d_in, d_out]`, `b: [d_out]`, `y: [batch, d_out]`; parameters and
/// their gradients are one slice laid out `[w | b]` (`param_len()` elements). An input of
/// any shape is read as a flat row of `d_in = c·h·w` values (the book's `Affine` reshapes
/// images the same way).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Affine {
    /// Input features.
    pub d_in: usize,
    /// Output features.
    pub d_out: usize,
}

/// Builds a dense view whose length the plan has already fixed.
///
/// # Panics
/// If the length is wrong: a bug in the caller's plan, not a user error.
fn view<T: Real>(data: &[T], rows: usize, cols: usize) -> Mat<'_, T> {
    match Mat::new(data, rows, cols) {
        Ok(m) => m,
        Err(e) => panic!("affine: {e}"),
    }
}

fn view_mut<T: Real>(data: &mut [T], rows: usize, cols: usize) -> MatMut<'_, T> {
    match MatMut::new(data, rows, cols) {
        Ok(m) => m,
        Err(e) => panic!("affine: {e}"),
    }
}

impl Affine {
    /// The layer on inputs of shape `input`, with `d_out` outputs.
    ///
    /// # Errors
    /// [`Error::Zero`] for no outputs, [`Error::Overflow`] if the weights do not fit in `usize`.
    pub const fn new(input: Shape, d_out: usize) -> Result<Self> {
        if d_out == 0 {
            return Err(Error::Zero {
                what: "layer width",
            });
        }
        let d_in = input.len();
        match d_in.checked_mul(d_out) {
            Some(w) if w.checked_add(d_out).is_some() => Ok(Self { d_in, d_out }),
            _ => Err(Error::Overflow { what: "plan" }),
        }
    }

    /// Draws `W` by `init` and zeroes `b`.
    pub fn init<T: Real>(&self, init: Init, rng: &mut Rng, p: &mut [T]) {
        let (w, b) = p.split_at_mut(self.d_in * self.d_out);
        rng.fill_normal(w, init.std(self.d_in));
        b.fill(T::ZERO);
    }

    /// `dW += decay·W` (the book's weight decay: weights only, not biases).
    pub fn add_decay<T: Real>(&self, decay: T, p: &[T], dp: &mut [T]) {
        let weights = Span {
            start: 0,
            len: self.d_in * self.d_out,
        };
        add_decay(decay, weights, p, dp);
    }

    /// `½·Σ W²`, the weight-decay penalty before its `λ`.
    pub fn weight_penalty<T: Real>(&self, p: &[T]) -> T {
        half_sum_of_squares(&p[..self.d_in * self.d_out])
    }

    /// Parameters: `d_in·d_out` weights then `d_out` biases.
    pub const fn param_len(&self) -> usize {
        self.d_in * self.d_out + self.d_out
    }

    /// Output elements for a batch.
    pub const fn out_len(&self, batch: usize) -> usize {
        batch * self.d_out
    }

    /// `y = x·W + b`: the bias pre-fills `y`, then one product adds `x·W` with β = 1.
    ///
    /// Writes (never adds to) `y`. The batch is `x.len() / d_in`.
    ///
    /// # Panics
    /// If the slice lengths disagree with the shapes.
    pub fn forward<T: Real>(&self, mm: &impl Gemm<T>, p: &[T], x: &[T], y: &mut [T]) {
        let (w, b) = p.split_at(self.d_in * self.d_out);
        let batch = x.len() / self.d_in;
        debug_assert_eq!(x.len(), batch * self.d_in);
        for row in y.chunks_exact_mut(self.d_out) {
            row.copy_from_slice(b);
        }
        mm.gemm(
            T::ONE,
            view(x, batch, self.d_in),
            view(w, self.d_in, self.d_out),
            T::ONE,
            view_mut(y, batch, self.d_out),
        );
    }

    /// Backward: `dx = dy·Wᵀ` (if asked for), `dW = xᵀ·dy`, `db = Σ_rows dy`.
    ///
    /// Writes (never adds to) `dx` and `dp = [dW | db]`. Pass `dx = None` for the first layer:
    /// nothing consumes the input's gradient, and it would be the largest product of the pass.
    ///
    /// # Panics
    /// If the slice lengths disagree with the shapes.
    pub fn backward<T: Real>(
        &self,
        mm: &impl Gemm<T>,
        p: &[T],
        x: &[T],
        dy: &[T],
        dx: Option<&mut [T]>,
        dp: &mut [T],
    ) {
        let batch = x.len() / self.d_in;
        let (dw, db) = dp.split_at_mut(self.d_in * self.d_out);
        let dy_m = view(dy, batch, self.d_out);
        if let Some(dx) = dx {
            let w = view(&p[..self.d_in * self.d_out], self.d_in, self.d_out);
            mm.gemm(T::ONE, dy_m, w.t(), T::ZERO, view_mut(dx, batch, self.d_in));
        }
        mm.gemm(
            T::ONE,
            view(x, batch, self.d_in).t(),
            dy_m,
            T::ZERO,
            view_mut(dw, self.d_in, self.d_out),
        );
        bias_grad(dy, db);
    }

    /// Backward fused with a plain SGD step, for memory-tight training: `dx = dy·Wᵀ` with the
    /// old weights, then `W ← (1 − lr·decay)·W − lr·xᵀ·dy` (one product with α = −lr,
    /// β = 1 − lr·decay, so no gradient buffer exists) and `b ← b − lr·Σ dy`.
    ///
    /// This is the Tiny Training Engine's trick: with 784×50 weights in 256 KiB of RAM, a
    /// second weight-sized gradient buffer does not fit.
    ///
    /// # Panics
    /// If the slice lengths disagree with the shapes.
    #[allow(clippy::too_many_arguments)]
    pub fn backward_sgd<T: Real>(
        &self,
        mm: &impl Gemm<T>,
        lr: T,
        decay: T,
        p: &mut [T],
        x: &[T],
        dy: &[T],
        dx: Option<&mut [T]>,
    ) {
        let batch = x.len() / self.d_in;
        let (w, b) = p.split_at_mut(self.d_in * self.d_out);
        let dy_m = view(dy, batch, self.d_out);
        if let Some(dx) = dx {
            mm.gemm(
                T::ONE,
                dy_m,
                view(w, self.d_in, self.d_out).t(),
                T::ZERO,
                view_mut(dx, batch, self.d_in),
            );
        }
        mm.gemm(
            -lr,
            view(x, batch, self.d_in).t(),
            dy_m,
            T::ONE - lr * decay,
            view_mut(w, self.d_in, self.d_out),
        );
        sgd_bias(lr, dy, b);
    }

    /// [`Affine::forward`] for a sparse input (`x: [batch, d_in]` as compressed rows): the
    /// bias pre-fills `y`, then [`csr_gemm`] adds `x·W` over `x`'s nonzeros only. The result
    /// is bit for bit the dense forward with the `Naive` backend.
    ///
    /// # Panics
    /// If the shapes disagree.
    pub fn forward_sparse<T: Real>(&self, p: &[T], x: Csr<'_, T>, y: &mut [T]) {
        let (w, b) = p.split_at(self.d_in * self.d_out);
        let batch = x.rows();
        for row in y.chunks_exact_mut(self.d_out) {
            row.copy_from_slice(b);
        }
        csr_gemm(
            T::ONE,
            x,
            view(w, self.d_in, self.d_out),
            T::ONE,
            view_mut(y, batch, self.d_out),
        );
    }

    /// Backward for a sparse input, always a first layer (nothing consumes its input
    /// gradient): `dW = xᵀ·dy` and `db = Σ_rows dy`; writes `dp = [dW | db]`. Given `xt`, the
    /// input's transpose (`d_in × batch`, built by `CsrBuf::transpose_from`), `dW` is
    /// [`csr_gemm`] on it; without it the rows of `x` are scattered ([`csr_gemm_tn`], slower,
    /// but no memory for the transpose). Both give the same bits.
    ///
    /// # Panics
    /// If the shapes disagree.
    pub fn backward_sparse<T: Real>(
        &self,
        x: Csr<'_, T>,
        xt: Option<Csr<'_, T>>,
        dy: &[T],
        dp: &mut [T],
    ) {
        let (dw, db) = dp.split_at_mut(self.d_in * self.d_out);
        self.weight_product(T::ONE, x, xt, dy, T::ZERO, dw);
        bias_grad(dy, db);
    }

    /// `W = α·xᵀ·dy + β·W` through `xt` if given, else by scattering `x`'s rows.
    fn weight_product<T: Real>(
        &self,
        alpha: T,
        x: Csr<'_, T>,
        xt: Option<Csr<'_, T>>,
        dy: &[T],
        beta: T,
        w: &mut [T],
    ) {
        let batch = x.rows();
        let dy = view(dy, batch, self.d_out);
        let w = view_mut(w, self.d_in, self.d_out);
        match xt {
            Some(xt) => csr_gemm(alpha, xt, dy, beta, w),
            None => csr_gemm_tn(alpha, x, dy, beta, w),
        }
    }

    /// [`Affine::backward_sparse`] fused with a plain SGD step, as [`Affine::backward_sgd`]:
    /// `W ← (1 − lr·decay)·W − lr·xᵀ·dy` (α = −lr, β = 1 − lr·decay; without decay, rows of
    /// `W` whose input is zero in the whole batch are not touched) and `b ← b − lr·Σ dy`.
    ///
    /// # Panics
    /// If the shapes disagree.
    pub fn backward_sgd_sparse<T: Real>(
        &self,
        lr: T,
        decay: T,
        p: &mut [T],
        x: Csr<'_, T>,
        xt: Option<Csr<'_, T>>,
        dy: &[T],
    ) {
        let (w, b) = p.split_at_mut(self.d_in * self.d_out);
        self.weight_product(-lr, x, xt, dy, T::ONE - lr * decay, w);
        sgd_bias(lr, dy, b);
    }
}

impl Affine {
    /// `d_out` outputs, `[W | b]` learned; nothing kept but the input, no scratch.
    pub const fn sizes(&self, _input: Shape) -> Sizes {
        Sizes {
            params: self.param_len(),
            ..Sizes::output(Shape::flat(self.d_out))
        }
    }
}

impl Dense for Affine {
    fn forward<T: Real>(&self, mm: &impl Gemm<T>, f: Forward<'_, T>) {
        Affine::forward(self, mm, f.p, f.x, f.y);
    }

    fn backward<T: Real>(&self, mm: &impl Gemm<T>, b: Backward<'_, T>) {
        match b.grad {
            ParamGrad::Write(dp) => Affine::backward(self, mm, b.p, b.x, b.dy, b.dx, dp),
            ParamGrad::Sgd { lr, decay } => {
                self.backward_sgd(mm, lr, decay, b.p, b.x, b.dy, b.dx);
            }
        }
    }

    fn init<T: Real>(&self, _: Shapes, init: Init, rng: &mut Rng, p: &mut [T], _: &mut [T]) {
        Affine::init(self, init, rng, p);
    }

    fn tensor(&self, _: Shapes, k: usize) -> Option<TensorInfo> {
        let (d_in, d_out) = (self.d_in, self.d_out);
        match k {
            0 => Some(TensorInfo::new("W", Region::Params, 0, &[d_in, d_out])),
            1 => Some(TensorInfo::new("b", Region::Params, d_in * d_out, &[d_out])),
            _ => None,
        }
    }

    fn decayed(&self, _: Shapes) -> Span {
        Span {
            start: 0,
            len: self.d_in * self.d_out,
        }
    }
}

impl Builtin for Affine {
    const KEYWORD: &'static str = "affine";
    const SYNTAX: &'static str = "affine:N";
    const READS_IMAGES: bool = false;
    type Args = (usize,);

    fn parse(arg: Option<&str>) -> Result<(usize,)> {
        let Some(arg) = arg else {
            return Err(Error::InvalidValue {
                what: "affine needs its output width, as in affine:100",
            });
        };
        positive(arg).map(|n| (n,)).ok_or(Error::InvalidValue {
            what: "affine needs a positive output width, as in affine:100",
        })
    }

    fn write(&(d_out,): &(usize,), f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "affine:{d_out}")
    }
}

/// `b ← b − lr·Σ_rows dy`.
fn sgd_bias<T: Real>(lr: T, dy: &[T], b: &mut [T]) {
    for row in dy.chunks_exact(b.len()) {
        for (b_j, &g) in b.iter_mut().zip(row) {
            *b_j -= lr * g;
        }
    }
}

/// `db = Σ_rows dy` (written, not added).
fn bias_grad<T: Real>(dy: &[T], db: &mut [T]) {
    db.fill(T::ZERO);
    for row in dy.chunks_exact(db.len()) {
        for (d, &g) in db.iter_mut().zip(row) {
            *d += g;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use manabi_matmul::Naive;
    use manabi_tensor::CsrBuf;
    use manabi_testkit::{assert_close, numeric_grad, probe};

    #[test]
    fn forward_by_hand() {
        let l = Affine { d_in: 2, d_out: 2 };
        // W = [[1, 2], [3, 4]], b = [0.5, -1]; x = [[1, 1], [2, -1]].
        let p = [1.0, 2.0, 3.0, 4.0, 0.5, -1.0];
        let x = [1.0, 1.0, 2.0, -1.0];
        let mut y = [f64::NAN; 4];
        l.forward(&Naive, &p, &x, &mut y);
        assert_eq!(y, [4.5, 5.0, -0.5, -1.0]);
    }

    #[test]
    fn affine_grads_match_finite_differences() {
        let l = Affine { d_in: 3, d_out: 2 };
        let x = [0.5, -1.0, 2.0, 1.5, 0.25, -0.75];
        let p = [0.1, -0.2, 0.3, 0.4, -0.5, 0.6, 0.05, -0.05];
        let r = probe(4, 3);
        let (mut dx, mut dp) = ([f64::NAN; 6], [f64::NAN; 8]);
        l.backward(&Naive, &p, &x, &r, Some(&mut dx), &mut dp);
        assert_close(
            &dx,
            &numeric_grad(|x, y| l.forward(&Naive, &p, x, y), &x, &r),
            1e-8,
            1e-6,
        );
        assert_close(
            &dp,
            &numeric_grad(|p, y| l.forward(&Naive, p, &x, y), &p, &r),
            1e-8,
            1e-6,
        );
    }

    /// `x` (4 rows of 3, with zeros) as compressed rows and its transpose.
    fn sparse_x(x: &[f64]) -> (CsrBuf<f64>, CsrBuf<f64>) {
        let mut rows = CsrBuf::new(4, 3).unwrap();
        for r in x.chunks(3) {
            rows.push_dense_row(r);
        }
        let mut cols = CsrBuf::new(3, 4).unwrap();
        cols.transpose_from(rows.view());
        (rows, cols)
    }

    #[test]
    fn sparse_input_grads_match_finite_differences_and_the_dense_pass() {
        let l = Affine { d_in: 3, d_out: 2 };
        let x = [0.5, 0.0, 2.0, 0.0, 0.0, 0.0, 1.5, 0.25, 0.0, 0.0, -1.0, 0.0];
        let p = [0.1, -0.2, 0.3, 0.4, -0.5, 0.6, 0.05, -0.05];
        let (rows, cols) = sparse_x(&x);
        let r = probe(8, 5);
        let mut dp = [f64::NAN; 8];
        l.backward_sparse(rows.view(), Some(cols.view()), &r, &mut dp);
        let mut dp_scattered = [f64::NAN; 8];
        l.backward_sparse(rows.view(), None, &r, &mut dp_scattered);
        assert_eq!(dp, dp_scattered);
        assert_close(
            &dp,
            &numeric_grad(|p, y| l.forward_sparse(p, rows.view(), y), &p, &r),
            1e-8,
            1e-6,
        );
        // Bit for bit the dense pass with the Naive backend, forward and backward.
        let (mut y_dense, mut y_sparse) = ([0.0; 8], [f64::NAN; 8]);
        l.forward(&Naive, &p, &x, &mut y_dense);
        l.forward_sparse(&p, rows.view(), &mut y_sparse);
        assert_eq!(y_dense, y_sparse);
        let mut dp_dense = [0.0; 8];
        l.backward(&Naive, &p, &x, &r, None, &mut dp_dense);
        assert_eq!(dp_dense, dp);
        let (mut fused_dense, mut fused_sparse, mut fused_scattered) = (p, p, p);
        l.backward_sgd(&Naive, 0.25, 0.0, &mut fused_dense, &x, &r, None);
        l.backward_sgd_sparse(
            0.25,
            0.0,
            &mut fused_sparse,
            rows.view(),
            Some(cols.view()),
            &r,
        );
        l.backward_sgd_sparse(0.25, 0.0, &mut fused_scattered, rows.view(), None, &r);
        assert_eq!(fused_dense, fused_sparse);
        assert_eq!(fused_dense, fused_scattered);
    }

    #[test]
    fn fused_sgd_equals_backward_then_step() {
        let l = Affine { d_in: 3, d_out: 2 };
        let x = [0.5, -1.0, 2.0, 1.5, 0.25, -0.75];
        let p = [0.1, -0.2, 0.3, 0.4, -0.5, 0.6, 0.05, -0.05];
        let dy = probe(4, 9);
        let (mut dx, mut dp) = ([0.0; 6], [0.0; 8]);
        l.backward(&Naive, &p, &x, &dy, Some(&mut dx), &mut dp);
        let mut fused = p;
        let mut dx_fused = [0.0; 6];
        l.backward_sgd(&Naive, 0.25, 0.0, &mut fused, &x, &dy, Some(&mut dx_fused));
        assert_close(&dx_fused, &dx, 1e-15, 1e-15);
        let stepped: [f64; 8] = core::array::from_fn(|i| p[i] - 0.25 * dp[i]);
        assert_close(&fused, &stepped, 1e-15, 1e-15);
        // With weight decay: the weights (not the biases) also shrink by lr·decay·W, dense
        // and sparse alike.
        let bias_grads = [dp[6], dp[7]];
        l.add_decay(0.5, &p, &mut dp);
        assert_eq!(&dp[6..], &bias_grads);
        let decayed: [f64; 8] = core::array::from_fn(|i| p[i] - 0.25 * dp[i]);
        let mut fused = p;
        l.backward_sgd(&Naive, 0.25, 0.5, &mut fused, &x, &dy, None);
        assert_close(&fused, &decayed, 1e-15, 1e-15);
        let (rows, cols) = sparse_x(&[
            0.5, -1.0, 2.0, 1.5, 0.25, -0.75, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
        ]);
        let mut dy8 = [0.0; 8];
        dy8[..4].copy_from_slice(&dy);
        for xt in [Some(cols.view()), None] {
            let mut sparse = p;
            l.backward_sgd_sparse(0.25, 0.5, &mut sparse, rows.view(), xt, &dy8);
            assert_close(&sparse, &decayed, 1e-15, 1e-15);
        }
    }

    #[test]
    fn weight_decay_penalty_and_gradient_agree() {
        // ½·Σ W² over the weights only: its gradient is W, which add_decay adds.
        let l = Affine { d_in: 2, d_out: 2 };
        let p = [0.5, -1.0, 2.0, 0.25, 9.0, 9.0];
        assert_eq!(l.weight_penalty(&p), 0.5 * (0.25 + 1.0 + 4.0 + 0.0625));
        let r = [1.0];
        let numeric = numeric_grad(|p, y| y[0] = l.weight_penalty(p), &p, &r);
        let mut dp = [0.0; 6];
        l.add_decay(1.0, &p, &mut dp);
        assert_close(&dp, &numeric, 1e-9, 1e-7);
    }
}
