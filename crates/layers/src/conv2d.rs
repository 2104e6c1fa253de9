//! Convolution, the book's `Convolution`: im2col and one product per sample forward; the product's transposes and col2im backward.

use crate::kernel::{Backward, Dense, Forward, ParamGrad, Shapes, Sizes, add_decay, half_sum_of_squares};
use crate::layer::{Builtin, positive, window};
use crate::{Init, Region, Shape, TensorInfo};
use core::fmt;
use manabi_matmul::{Gemm, Mat, MatMut};
use manabi_tensor::{Error, Real, Result, Rng, Span};

/// 2-D convolution over `c` channels of `h × w`, with `filters` kernels of `c × kh × kw`,
/// `stride` and zero padding `pad` on every side (the book's `Convolution`, PyTorch's
/// `nn.Conv2d`).
///
/// Forward, per sample: im2col unrolls the padded input into `col`, `patch × pixels`
/// (`patch = c·kh·kw` rows, one per kernel tap, and `pixels = oh·ow` columns, one per
/// output position), then one product `y = W·col + b` gives the sample's output channel by
/// channel. Backward, per sample: `dW += dy·colᵀ` (`col` rebuilt from the saved input, so
/// nothing is cached), `dcol = Wᵀ·dy`, and col2im adds `dcol` back onto `dx`; `db = Σ dy`.
///
/// # Shapes
/// `x: [batch, c, h, w]`, `y: [batch, filters, oh, ow]` with
/// `oh = (h + 2·pad − kh)/stride + 1` (likewise `ow`); parameters `[W | b]` with `W: [filters, c, kh, kw]` (PyTorch's
/// `Conv2d.weight` layout) and `b: [filters]`; scratch `patch·pixels` values for evaluation,
/// twice that for training (`col` and `dcol`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2d {
    /// Input channels.
    pub c: usize,
    /// Input rows.
    pub h: usize,
    /// Input columns.
    pub w: usize,
    /// Output channels (kernels).
    pub filters: usize,
    /// Kernel rows.
    pub kh: usize,
    /// Kernel columns.
    pub kw: usize,
    /// Step between windows, in both directions.
    pub stride: usize,
    /// Zeros added on every side.
    pub pad: usize,
    /// Output rows.
    pub oh: usize,
    /// Output columns.
    pub ow: usize,
}

/// `(n + 2·pad − k)/stride + 1`, or `None` if the kernel does not fit or a size overflows.
const fn out_len(n: usize, k: usize, stride: usize, pad: usize) -> Option<usize> {
    let padded = match pad.checked_mul(2) {
        Some(p2) => match n.checked_add(p2) {
            Some(v) => v,
            None => return None,
        },
        None => return None,
    };
    if padded < k {
        return None;
    }
    Some((padded - k) / stride + 1)
}

/// `a·b·c` or an overflow error.
const fn mul3(a: usize, b: usize, c: usize) -> Result<usize> {
    match a.checked_mul(b) {
        Some(ab) => match ab.checked_mul(c) {
            Some(v) => Ok(v),
            None => Err(Error::Overflow { what: "plan" }),
        },
        None => Err(Error::Overflow { what: "plan" }),
    }
}

fn view<T: Real>(data: &[T], rows: usize, cols: usize) -> Mat<'_, T> {
    match Mat::new(data, rows, cols) {
        Ok(m) => m,
        Err(e) => panic!("conv2d: {e}"),
    }
}

fn view_mut<T: Real>(data: &mut [T], rows: usize, cols: usize) -> MatMut<'_, T> {
    match MatMut::new(data, rows, cols) {
        Ok(m) => m,
        Err(e) => panic!("conv2d: {e}"),
    }
}

impl Conv2d {
    /// The layer on inputs of shape `input` (`c × h × w`).
    ///
    /// # Errors
    /// [`Error::Zero`] for no filters, a zero kernel size or a zero stride;
    /// [`Error::InvalidValue`] if the kernel is larger than the padded input;
    /// [`Error::Overflow`] if a size does not fit in `usize`.
    pub const fn new(
        input: Shape,
        filters: usize,
        kh: usize,
        kw: usize,
        stride: usize,
        pad: usize,
    ) -> Result<Self> {
        if filters == 0 {
            return Err(Error::Zero {
                what: "convolution filters",
            });
        }
        if kh == 0 || kw == 0 {
            return Err(Error::Zero {
                what: "convolution kernel size",
            });
        }
        if stride == 0 {
            return Err(Error::Zero {
                what: "convolution stride",
            });
        }
        let (oh, ow) = match (
            out_len(input.h, kh, stride, pad),
            out_len(input.w, kw, stride, pad),
        ) {
            (Some(oh), Some(ow)) => (oh, ow),
            _ => {
                return Err(Error::InvalidValue {
                    what: "the convolution kernel is larger than its padded input",
                });
            }
        };
        let layer = Self {
            c: input.c,
            h: input.h,
            w: input.w,
            filters,
            kh,
            kw,
            stride,
            pad,
            oh,
            ow,
        };
        // Every size the passes multiply must fit.
        let patch = match mul3(input.c, kh, kw) {
            Ok(v) => v,
            Err(e) => return Err(e),
        };
        match (
            mul3(filters, patch, 1),
            mul3(patch, oh, ow),
            mul3(filters, oh, ow),
        ) {
            (Ok(wl), Ok(col), Ok(_)) if wl.checked_add(filters).is_some() => {
                match col.checked_mul(2) {
                    Some(_) => Ok(layer),
                    None => Err(Error::Overflow { what: "plan" }),
                }
            }
            _ => Err(Error::Overflow { what: "plan" }),
        }
    }

    /// The output shape, `filters × oh × ow`.
    pub const fn out_shape(&self) -> Shape {
        Shape::image(self.filters, self.oh, self.ow)
    }

    /// Values of one kernel, `c·kh·kw` (its fan-in).
    pub const fn patch(&self) -> usize {
        self.c * self.kh * self.kw
    }

    /// Output positions per channel, `oh·ow`.
    pub const fn pixels(&self) -> usize {
        self.oh * self.ow
    }

    /// Parameters: `filters·c·kh·kw` weights then `filters` biases.
    pub const fn param_len(&self) -> usize {
        self.filters * self.patch() + self.filters
    }

    /// Scratch for one sample's `col` (evaluation, or training as a network's first layer,
    /// which computes no `dx`), or `col` and `dcol` (training with `dx`).
    pub const fn scratch_len(&self, trains: bool) -> usize {
        let col = self.patch() * self.pixels();
        if trains { 2 * col } else { col }
    }

    /// Draws `W` by `init` with fan-in `c·kh·kw` (the book's `pre_node_nums`) and zeroes `b`.
    pub fn init<T: Real>(&self, init: Init, rng: &mut Rng, p: &mut [T]) {
        let (w, b) = p.split_at_mut(self.filters * self.patch());
        rng.fill_normal(w, init.std(self.patch()));
        b.fill(T::ZERO);
    }

    /// `½·Σ W²`, the weight-decay penalty before its `λ` (weights, not biases).
    pub fn weight_penalty<T: Real>(&self, p: &[T]) -> T {
        half_sum_of_squares(&p[..self.filters * self.patch()])
    }

    /// `dW += decay·W`.
    pub fn add_decay<T: Real>(&self, decay: T, p: &[T], dp: &mut [T]) {
        let weights = Span {
            start: 0,
            len: self.filters * self.patch(),
        };
        add_decay(decay, weights, p, dp);
    }

    /// The valid output columns `[lo, hi)` for kernel column `kj`: those whose input column
    /// `ox·stride + kj − pad` lies inside `0..w`.
    fn valid_columns(&self, kj: usize) -> (usize, usize) {
        let s = self.stride;
        // ox·s + kj ≥ pad  ⟺  ox ≥ ⌈(pad − kj)/s⌉.
        let lo = self.pad.saturating_sub(kj).div_ceil(s).min(self.ow);
        // ox·s + kj − pad ≤ w − 1  ⟺  ox ≤ ⌊(w − 1 + pad − kj)/s⌋.
        let hi = match (self.w + self.pad).checked_sub(kj + 1) {
            Some(top) => (top / s + 1).min(self.ow),
            None => 0,
        };
        (lo, hi.max(lo))
    }

    /// Unrolls one sample `x` (`c × h × w`) into `col` (`patch × pixels`): row
    /// `(ci·kh + ki)·kw + kj`, column `oy·ow + ox` holds `x[ci, oy·s + ki − pad, ox·s + kj −
    /// pad]`, or 0 in the padding. Writes every value of `col`.
    pub fn im2col<T: Real>(&self, x: &[T], col: &mut [T]) {
        let (s, pixels) = (self.stride, self.pixels());
        let mut rows = col.chunks_exact_mut(pixels);
        for ci in 0..self.c {
            let plane = &x[ci * self.h * self.w..(ci + 1) * self.h * self.w];
            for ki in 0..self.kh {
                for kj in 0..self.kw {
                    let Some(row) = rows.next() else { return };
                    let (lo, hi) = self.valid_columns(kj);
                    for (oy, out) in row.chunks_exact_mut(self.ow).enumerate() {
                        let iy = (oy * s + ki).wrapping_sub(self.pad);
                        if iy >= self.h {
                            out.fill(T::ZERO);
                            continue;
                        }
                        let src = &plane[iy * self.w..(iy + 1) * self.w];
                        out[..lo].fill(T::ZERO);
                        out[hi..].fill(T::ZERO);
                        if lo == hi {
                            continue;
                        }
                        let first = lo * s + kj - self.pad;
                        if s == 1 {
                            out[lo..hi].copy_from_slice(&src[first..first + (hi - lo)]);
                        } else {
                            for (o, &v) in
                                out[lo..hi].iter_mut().zip(src[first..].iter().step_by(s))
                            {
                                *o = v;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Folds `dcol` (`patch × pixels`) back onto one sample's `dx` (`c × h × w`): every
    /// value adds to the input position im2col read it from. Writes (never adds to) `dx`.
    pub fn col2im<T: Real>(&self, dcol: &[T], dx: &mut [T]) {
        dx.fill(T::ZERO);
        let (s, pixels) = (self.stride, self.pixels());
        let mut rows = dcol.chunks_exact(pixels);
        for ci in 0..self.c {
            let plane = &mut dx[ci * self.h * self.w..(ci + 1) * self.h * self.w];
            for ki in 0..self.kh {
                for kj in 0..self.kw {
                    let Some(row) = rows.next() else { return };
                    let (lo, hi) = self.valid_columns(kj);
                    for (oy, d) in row.chunks_exact(self.ow).enumerate() {
                        let iy = (oy * s + ki).wrapping_sub(self.pad);
                        if iy >= self.h || lo == hi {
                            continue;
                        }
                        let dst = &mut plane[iy * self.w..(iy + 1) * self.w];
                        let first = lo * s + kj - self.pad;
                        for (k, &g) in d[lo..hi].iter().enumerate() {
                            dst[first + k * s] += g;
                        }
                    }
                }
            }
        }
    }

    /// `y = W ⋆ x + b`, sample by sample: im2col into `scratch`, the bias pre-fills each
    /// output channel, then one product adds `W·col` (β = 1). Writes (never adds to) `y`.
    ///
    /// # Panics
    /// If the slice lengths disagree with the shapes or `scratch` is shorter than one `col`.
    pub fn forward<T: Real>(
        &self,
        mm: &impl Gemm<T>,
        p: &[T],
        x: &[T],
        y: &mut [T],
        scratch: &mut [T],
    ) {
        let (w, b) = p.split_at(self.filters * self.patch());
        let (patch, pixels) = (self.patch(), self.pixels());
        let col = &mut scratch[..patch * pixels];
        let in_len = self.c * self.h * self.w;
        let w = view(w, self.filters, patch);
        for (xn, yn) in x
            .chunks_exact(in_len)
            .zip(y.chunks_exact_mut(self.filters * pixels))
        {
            self.im2col(xn, col);
            for (channel, &bias) in yn.chunks_exact_mut(pixels).zip(b) {
                channel.fill(bias);
            }
            mm.gemm(
                T::ONE,
                w,
                view(col, patch, pixels),
                T::ONE,
                view_mut(yn, self.filters, pixels),
            );
        }
    }

    /// Backward: `dW = Σ_n dy_n·col_nᵀ`, `db = Σ dy` over samples and positions, and, if
    /// asked for, `dx_n = col2im(Wᵀ·dy_n)`. Writes (never adds to) `dx` and `dp = [dW | db]`.
    /// Pass `dx = None` for a first layer.
    ///
    /// # Panics
    /// If the slice lengths disagree with the shapes or `scratch` is shorter than
    /// [`Conv2d::scratch_len`] for training.
    #[allow(clippy::too_many_arguments)]
    pub fn backward<T: Real>(
        &self,
        mm: &impl Gemm<T>,
        p: &[T],
        x: &[T],
        dy: &[T],
        mut dx: Option<&mut [T]>,
        dp: &mut [T],
        scratch: &mut [T],
    ) {
        let (patch, pixels) = (self.patch(), self.pixels());
        let (dw, db) = dp.split_at_mut(self.filters * patch);
        let (col, rest) = scratch.split_at_mut(patch * pixels);
        // A network's first layer has no `dx`, and its plan no room for `dcol`.
        let dcol: &mut [T] = match dx {
            Some(_) => &mut rest[..patch * pixels],
            None => &mut [],
        };
        let w = view(&p[..self.filters * patch], self.filters, patch);
        let in_len = self.c * self.h * self.w;
        self.bias_grad(dy, db);
        for (n, (xn, dyn_)) in x
            .chunks_exact(in_len)
            .zip(dy.chunks_exact(self.filters * pixels))
            .enumerate()
        {
            self.im2col(xn, col);
            let dy_m = view(dyn_, self.filters, pixels);
            let beta = if n == 0 { T::ZERO } else { T::ONE };
            mm.gemm(
                T::ONE,
                dy_m,
                view(col, patch, pixels).t(),
                beta,
                view_mut(dw, self.filters, patch),
            );
            if let Some(dx) = dx.as_deref_mut() {
                mm.gemm(T::ONE, w.t(), dy_m, T::ZERO, view_mut(dcol, patch, pixels));
                self.col2im(dcol, &mut dx[n * in_len..(n + 1) * in_len]);
            }
        }
        if x.is_empty() {
            dw.fill(T::ZERO);
        }
    }

    /// Backward fused with a plain SGD step: every `dx_n` with the old weights first, then
    /// `W ← (1 − lr·decay)·W − lr·Σ_n dy_n·col_nᵀ` accumulated into `W` sample by sample (no
    /// gradient buffer) and `b ← b − lr·Σ dy`.
    ///
    /// # Panics
    /// As [`Conv2d::backward`].
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
        scratch: &mut [T],
    ) {
        let (patch, pixels) = (self.patch(), self.pixels());
        let (col, rest) = scratch.split_at_mut(patch * pixels);
        let in_len = self.c * self.h * self.w;
        let (w, b) = p.split_at_mut(self.filters * patch);
        if let Some(dx) = dx {
            let dcol = &mut rest[..patch * pixels];
            for (dyn_, dxn) in dy
                .chunks_exact(self.filters * pixels)
                .zip(dx.chunks_exact_mut(in_len))
            {
                mm.gemm(
                    T::ONE,
                    view(w, self.filters, patch).t(),
                    view(dyn_, self.filters, pixels),
                    T::ZERO,
                    view_mut(dcol, patch, pixels),
                );
                self.col2im(dcol, dxn);
            }
        }
        for (k, channel) in dy.chunks_exact(pixels).enumerate() {
            b[k % self.filters] -= lr * lane_sum(channel);
        }
        for (n, (xn, dyn_)) in x
            .chunks_exact(in_len)
            .zip(dy.chunks_exact(self.filters * pixels))
            .enumerate()
        {
            self.im2col(xn, col);
            let beta = if n == 0 { T::ONE - lr * decay } else { T::ONE };
            mm.gemm(
                -lr,
                view(dyn_, self.filters, pixels),
                view(col, patch, pixels).t(),
                beta,
                view_mut(w, self.filters, patch),
            );
        }
    }

    /// `db[f] = Σ_n Σ_positions dy[n, f]` (written, not added).
    fn bias_grad<T: Real>(&self, dy: &[T], db: &mut [T]) {
        db.fill(T::ZERO);
        for (k, channel) in dy.chunks_exact(self.pixels()).enumerate() {
            db[k % self.filters] += lane_sum(channel);
        }
    }
}

impl Conv2d {
    /// `filters × oh × ow`, `[W | b]` learned, nothing kept (backward rebuilds `col` from the
    /// input); scratch for one `col`, and a `dcol` as large for a backward with `dx`.
    pub const fn sizes(&self, _input: Shape) -> Sizes {
        let col = self.patch() * self.pixels();
        Sizes {
            params: self.param_len(),
            scratch: col,
            scratch_dx: col,
            ..Sizes::output(self.out_shape())
        }
    }
}

impl Dense for Conv2d {
    fn forward<T: Real>(&self, mm: &impl Gemm<T>, f: Forward<'_, T>) {
        Conv2d::forward(self, mm, f.p, f.x, f.y, f.scratch);
    }

    fn backward<T: Real>(&self, mm: &impl Gemm<T>, b: Backward<'_, T>) {
        let (p, x, dy, dx, scratch) = (b.p, b.x, b.dy, b.dx, b.scratch);
        match b.grad {
            ParamGrad::Write(dp) => Conv2d::backward(self, mm, p, x, dy, dx, dp, scratch),
            ParamGrad::Sgd { lr, decay } => {
                self.backward_sgd(mm, lr, decay, p, x, dy, dx, scratch);
            }
        }
    }

    fn init<T: Real>(&self, _: Shapes, init: Init, rng: &mut Rng, p: &mut [T], _: &mut [T]) {
        Conv2d::init(self, init, rng, p);
    }

    fn tensor(&self, _: Shapes, k: usize) -> Option<TensorInfo> {
        let w_len = self.filters * self.patch();
        match k {
            0 => Some(TensorInfo::new(
                "W",
                Region::Params,
                0,
                &[self.filters, self.c, self.kh, self.kw],
            )),
            1 => Some(TensorInfo::new("b", Region::Params, w_len, &[self.filters])),
            _ => None,
        }
    }

    fn decayed(&self, _: Shapes) -> Span {
        Span {
            start: 0,
            len: self.filters * self.patch(),
        }
    }
}

impl Builtin for Conv2d {
    const KEYWORD: &'static str = "conv";
    const SYNTAX: &'static str = "conv:F@KxK";
    const READS_IMAGES: bool = true;
    type Args = (usize, usize, usize, usize, usize);

    fn parse(arg: Option<&str>) -> Result<Self::Args> {
        let Some(arg) = arg else {
            return Err(Error::InvalidValue {
                what: "conv needs its filters and size, as in conv:30@5x5",
            });
        };
        parse_conv(arg).ok_or(Error::InvalidValue {
            what: "conv needs filters@size and optional :sN (stride), :pN (padding), as in conv:30@5x5 or conv:16@3x3:p1",
        })
    }

    fn write(
        &(filters, kh, kw, stride, pad): &Self::Args,
        f: &mut fmt::Formatter<'_>,
    ) -> fmt::Result {
        write!(f, "conv:{filters}@{kh}x{kw}")?;
        if stride != 1 {
            write!(f, ":s{stride}")?;
        }
        if pad != 0 {
            write!(f, ":p{pad}")?;
        }
        Ok(())
    }
}

/// `F@KHxKW[:sS][:pP]` as `(filters, kh, kw, stride, pad)`.
fn parse_conv(arg: &str) -> Option<(usize, usize, usize, usize, usize)> {
    let mut parts = arg.split(':');
    let (filters, size) = parts.next()?.split_once('@')?;
    let (kh, kw) = window(size)?;
    let (mut stride, mut pad) = (1, 0);
    for part in parts {
        match part.split_at_checked(1)? {
            ("s", n) => stride = positive(n)?,
            ("p", n) => pad = n.parse().ok()?,
            _ => return None,
        }
    }
    Some((positive(filters)?, kh, kw, stride, pad))
}

/// `Σ xs` in 32 independent lanes, so that it vectorises (one running sum is a chain of
/// dependent additions, each waiting for the last), then the lanes pairwise and the tail.
fn lane_sum<T: Real>(xs: &[T]) -> T {
    let (mut lo, mut hi) = ([T::ZERO; 16], [T::ZERO; 16]);
    let chunks = xs.chunks_exact(32);
    let tail = chunks.remainder();
    for c in chunks {
        let (a, b) = c.split_at(16);
        for k in 0..16 {
            lo[k] += a[k];
            hi[k] += b[k];
        }
    }
    for k in 0..16 {
        lo[k] += hi[k];
    }
    let mut width = 8;
    while width > 0 {
        for k in 0..width {
            lo[k] += lo[k + width];
        }
        width /= 2;
    }
    tail.iter().fold(lo[0], |acc, &g| acc + g)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use manabi_matmul::Naive;
    use manabi_testkit::{assert_close, numeric_grad, probe};
    use std::vec;
    use std::vec::Vec;

    /// Lane sums are the sum up to rounding, for every length around the lane counts
    /// (exactly, on integers).
    #[test]
    fn lane_sums_are_sums() {
        for n in [0, 1, 15, 16, 31, 32, 33, 64, 100, 576] {
            let xs: Vec<f64> = (0..n).map(|i| (i % 7) as f64 - 2.0).collect();
            assert_eq!(lane_sum(&xs), xs.iter().sum::<f64>(), "{n}");
        }
    }

    /// The definition, as nested sums: the slow twin im2col is checked against.
    fn direct(l: &Conv2d, p: &[f64], x: &[f64]) -> Vec<f64> {
        let batch = x.len() / (l.c * l.h * l.w);
        let mut y = vec![0.0; batch * l.filters * l.pixels()];
        for n in 0..batch {
            for f in 0..l.filters {
                for oy in 0..l.oh {
                    for ox in 0..l.ow {
                        let mut acc = p[l.filters * l.patch() + f];
                        for ci in 0..l.c {
                            for ki in 0..l.kh {
                                for kj in 0..l.kw {
                                    let iy = (oy * l.stride + ki) as isize - l.pad as isize;
                                    let ix = (ox * l.stride + kj) as isize - l.pad as isize;
                                    if iy < 0 || ix < 0 || iy >= l.h as isize || ix >= l.w as isize
                                    {
                                        continue;
                                    }
                                    let xv =
                                        x[((n * l.c + ci) * l.h + iy as usize) * l.w + ix as usize];
                                    let wv = p[((f * l.c + ci) * l.kh + ki) * l.kw + kj];
                                    acc += wv * xv;
                                }
                            }
                        }
                        y[((n * l.filters + f) * l.oh + oy) * l.ow + ox] = acc;
                    }
                }
            }
        }
        y
    }

    fn layers() -> [Conv2d; 4] {
        let conv = |c, h, w, f, k, s, p| Conv2d::new(Shape::image(c, h, w), f, k, k, s, p).unwrap();
        [
            conv(1, 6, 6, 2, 3, 1, 0),
            conv(2, 5, 4, 3, 3, 1, 1),
            conv(2, 7, 6, 2, 3, 2, 1),
            conv(3, 4, 5, 2, 2, 2, 0),
        ]
    }

    #[test]
    fn shapes_follow_the_book_and_bad_kernels_are_refused() {
        // SimpleConvNet: 1×28×28, 30 filters of 5×5 → 30×24×24.
        let l = Conv2d::new(Shape::image(1, 28, 28), 30, 5, 5, 1, 0).unwrap();
        assert_eq!(l.out_shape(), Shape::image(30, 24, 24));
        assert_eq!(l.param_len(), 30 * 25 + 30);
        // DeepConvNet's fourth convolution pads by 2: 32×14×14 → 32×16×16.
        let l = Conv2d::new(Shape::image(32, 14, 14), 32, 3, 3, 1, 2).unwrap();
        assert_eq!(l.out_shape(), Shape::image(32, 16, 16));
        let l = Conv2d::new(Shape::image(2, 7, 6), 2, 3, 3, 2, 1).unwrap();
        assert_eq!((l.oh, l.ow), (4, 3));
        assert!(Conv2d::new(Shape::image(1, 4, 4), 2, 5, 5, 1, 0).is_err());
        assert!(Conv2d::new(Shape::image(1, 4, 4), 0, 3, 3, 1, 0).is_err());
        assert!(Conv2d::new(Shape::image(1, 4, 4), 2, 3, 3, 0, 0).is_err());
        assert!(Conv2d::new(Shape::image(1, 4, 4), 2, 0, 3, 1, 0).is_err());
    }

    #[test]
    fn im2col_forward_equals_the_direct_sums() {
        for l in layers() {
            let x = probe(2 * l.c * l.h * l.w, 3);
            let p = probe(l.param_len(), 4);
            let mut y = vec![f64::NAN; 2 * l.filters * l.pixels()];
            let mut scratch = vec![f64::NAN; l.scratch_len(false)];
            l.forward(&Naive, &p, &x, &mut y, &mut scratch);
            assert_close(&y, &direct(&l, &p, &x), 1e-13, 1e-13);
        }
    }

    #[test]
    fn conv2d_grads_match_finite_differences() {
        for l in layers() {
            let x = probe(2 * l.c * l.h * l.w, 5);
            let p = probe(l.param_len(), 6);
            let r = probe(2 * l.filters * l.pixels(), 7);
            let mut dx = vec![f64::NAN; x.len()];
            let mut dp = vec![f64::NAN; p.len()];
            let mut scratch = vec![f64::NAN; l.scratch_len(true)];
            l.backward(&Naive, &p, &x, &r, Some(&mut dx), &mut dp, &mut scratch);
            let fwd = |p: &[f64], x: &[f64], y: &mut [f64]| {
                let mut s = vec![0.0; l.scratch_len(false)];
                l.forward(&Naive, p, x, y, &mut s);
            };
            assert_close(&dx, &numeric_grad(|x, y| fwd(&p, x, y), &x, &r), 1e-8, 1e-6);
            assert_close(&dp, &numeric_grad(|p, y| fwd(p, &x, y), &p, &r), 1e-8, 1e-6);
        }
    }

    #[test]
    fn fused_sgd_equals_backward_then_step() {
        for l in layers() {
            let x = probe(3 * l.c * l.h * l.w, 8);
            let p = probe(l.param_len(), 9);
            let dy = probe(3 * l.filters * l.pixels(), 10);
            let mut scratch = vec![0.0; l.scratch_len(true)];
            let (mut dx, mut dp) = (vec![0.0; x.len()], vec![0.0; p.len()]);
            l.backward(&Naive, &p, &x, &dy, Some(&mut dx), &mut dp, &mut scratch);
            l.add_decay(0.5, &p, &mut dp);
            let stepped: Vec<f64> = p.iter().zip(&dp).map(|(w, g)| w - 0.25 * g).collect();
            let mut fused = p.clone();
            let mut dx_fused = vec![0.0; x.len()];
            l.backward_sgd(
                &Naive,
                0.25,
                0.5,
                &mut fused,
                &x,
                &dy,
                Some(&mut dx_fused),
                &mut scratch,
            );
            assert_close(&dx_fused, &dx, 1e-14, 1e-14);
            assert_close(&fused, &stepped, 1e-13, 1e-13);
        }
    }

    #[test]
    fn weight_decay_penalty_and_gradient_agree() {
        let l = layers()[1];
        let p = probe(l.param_len(), 11);
        let numeric = numeric_grad(|p, y| y[0] = l.weight_penalty(p), &p, &[1.0]);
        let mut dp = vec![0.0; p.len()];
        l.add_decay(1.0, &p, &mut dp);
        assert_close(&dp, &numeric, 1e-9, 1e-7);
    }
}
