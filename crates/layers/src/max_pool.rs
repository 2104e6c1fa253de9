//! Max pooling, the book's `Pooling`: the largest value of each window forward, the gradient to that value only backward.

use crate::kernel::{Backward, Dense, Forward, Shapes, Sizes};
use crate::layer::{Builtin, pool_args, write_pool};
use crate::{Init, Mode, Shape, TensorInfo};
use core::fmt;
use manabi_matmul::Gemm;
use manabi_tensor::{Error, Real, Result, Rng, Span};

/// Max pooling over windows of `kh × kw` moved by `stride` over each channel (the book's
/// `Pooling` with `pad = 0`; PyTorch's `nn.MaxPool2d`).
///
/// Training forward keeps, for each output, which value of its window was the largest (the
/// first one on ties, as NumPy's `argmax`); backward sends each output's gradient to that
/// input alone and zero to the rest (adding where windows overlap).
///
/// # Shapes
/// `x: [batch, c, h, w]`, `y: [batch, c, oh, ow]` with `oh = (h − kh)/stride + 1` (likewise
/// `ow`); the cache holds each output's position in its window, `[batch, c, oh, ow]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxPool2d {
    /// Channels.
    pub c: usize,
    /// Input rows.
    pub h: usize,
    /// Input columns.
    pub w: usize,
    /// Window rows.
    pub kh: usize,
    /// Window columns.
    pub kw: usize,
    /// Step between windows.
    pub stride: usize,
    /// Output rows.
    pub oh: usize,
    /// Output columns.
    pub ow: usize,
}

/// The output rows and columns of `kh × kw` windows moved by `stride` over `input`, the
/// last windows that do not fit dropped (PyTorch's floor mode): `(h − kh)/stride + 1`, likewise
/// for the columns. Shared by the pooling layers.
///
/// # Errors
/// [`Error::Zero`] for a zero window or stride; [`Error::InvalidValue`] for a window larger
/// than the input.
pub(crate) const fn pooled(input: Shape, kh: usize, kw: usize, stride: usize) -> Result<(usize, usize)> {
    if kh == 0 || kw == 0 {
        return Err(Error::Zero {
            what: "pooling window",
        });
    }
    if stride == 0 {
        return Err(Error::Zero {
            what: "pooling stride",
        });
    }
    if kh > input.h || kw > input.w {
        return Err(Error::InvalidValue {
            what: "the pooling window is larger than its input",
        });
    }
    Ok(((input.h - kh) / stride + 1, (input.w - kw) / stride + 1))
}

impl MaxPool2d {
    /// The layer on inputs of shape `input`.
    ///
    /// # Errors
    /// [`Error::Zero`] for a zero window or stride; [`Error::InvalidValue`] for a window
    /// larger than the input.
    pub const fn new(input: Shape, kh: usize, kw: usize, stride: usize) -> Result<Self> {
        let (oh, ow) = match pooled(input, kh, kw, stride) {
            Ok(out) => out,
            Err(e) => return Err(e),
        };
        Ok(Self {
            c: input.c,
            h: input.h,
            w: input.w,
            kh,
            kw,
            stride,
            oh,
            ow,
        })
    }

    /// The output shape, `c × oh × ow`.
    pub const fn out_shape(&self) -> Shape {
        Shape::image(self.c, self.oh, self.ow)
    }

    /// The window positions kept for `batch` samples.
    ///
    /// # Errors
    /// [`Error::Overflow`].
    pub const fn cache_len(&self, batch: usize) -> Result<usize> {
        match batch.checked_mul(self.c * self.oh * self.ow) {
            Some(n) => Ok(n),
            None => Err(Error::Overflow { what: "plan" }),
        }
    }

    /// `y` = the max of each window; in training also `cache` = its position in the window
    /// (`i·kw + j`, stored as a value of `T`, exact for any window below 2²⁴ values).
    /// Writes (never adds to) `y`.
    pub fn forward<T: Real>(&self, mode: Mode, x: &[T], y: &mut [T], cache: &mut [T]) {
        let (plane_in, plane_out) = (self.h * self.w, self.oh * self.ow);
        let train = mode == Mode::Train;
        for (k, (xin, yout)) in x
            .chunks_exact(plane_in)
            .zip(y.chunks_exact_mut(plane_out))
            .enumerate()
        {
            let at_out = if train {
                &mut cache[k * plane_out..(k + 1) * plane_out]
            } else {
                &mut []
            };
            for oy in 0..self.oh {
                let top = oy * self.stride * self.w;
                let row = &mut yout[oy * self.ow..(oy + 1) * self.ow];
                if self.kh == 2 && self.kw == 2 && self.stride == 2 {
                    // The book's 2×2 windows, stride 2: two input rows, pairs of columns.
                    let (r0, r1) = (
                        &xin[top..top + self.w],
                        &xin[top + self.w..top + 2 * self.w],
                    );
                    // Selects, not branches, so the loop runs without mispredictions; the
                    // same first-of-ties order as the general loop below.
                    for (ox, out) in row.iter_mut().enumerate() {
                        let (a, b, c, d) = (r0[2 * ox], r0[2 * ox + 1], r1[2 * ox], r1[2 * ox + 1]);
                        let mut best = a;
                        let mut at = T::ZERO;
                        let b_wins = b > best;
                        best = if b_wins { b } else { best };
                        at = if b_wins { T::ONE } else { at };
                        let c_wins = c > best;
                        best = if c_wins { c } else { best };
                        at = if c_wins { T::TWO } else { at };
                        let d_wins = d > best;
                        best = if d_wins { d } else { best };
                        at = if d_wins { T::from_usize(3) } else { at };
                        *out = best;
                        if train {
                            at_out[oy * self.ow + ox] = at;
                        }
                    }
                    continue;
                }
                for (ox, out) in row.iter_mut().enumerate() {
                    let first = top + ox * self.stride;
                    let (mut best, mut at) = (xin[first], 0);
                    for i in 0..self.kh {
                        let r = &xin[first + i * self.w..first + i * self.w + self.kw];
                        for (j, &v) in r.iter().enumerate() {
                            if v > best {
                                (best, at) = (v, i * self.kw + j);
                            }
                        }
                    }
                    *out = best;
                    if train {
                        at_out[oy * self.ow + ox] = T::from_usize(at);
                    }
                }
            }
        }
    }

    /// `dx` = each output's gradient at its window's max, 0 elsewhere. Writes (never adds
    /// to) `dx`.
    pub fn backward<T: Real>(&self, cache: &[T], dy: &[T], dx: &mut [T]) {
        let (plane_in, plane_out) = (self.h * self.w, self.oh * self.ow);
        if self.kh == 2 && self.kw == 2 && self.stride == 2 && self.h % 2 == 0 && self.w % 2 == 0 {
            // The book's windows tile the input exactly: every input is written once, as its
            // output's gradient or 0, with no fill and no division.
            let two = T::TWO;
            let three = T::from_usize(3);
            for ((dxin, dyout), at) in dx
                .chunks_exact_mut(plane_in)
                .zip(dy.chunks_exact(plane_out))
                .zip(cache.chunks_exact(plane_out))
            {
                for (oy, pair) in dxin.chunks_exact_mut(2 * self.w).enumerate() {
                    let (r0, r1) = pair.split_at_mut(self.w);
                    let o = oy * self.ow..(oy + 1) * self.ow;
                    for (ox, (&g, &k)) in dyout[o.clone()].iter().zip(&at[o]).enumerate() {
                        let pick = |want: T| if k == want { g } else { T::ZERO };
                        r0[2 * ox] = pick(T::ZERO);
                        r0[2 * ox + 1] = pick(T::ONE);
                        r1[2 * ox] = pick(two);
                        r1[2 * ox + 1] = pick(three);
                    }
                }
            }
            return;
        }
        self.backward_windows(cache, dy, dx);
    }

    /// [`MaxPool2d::backward`] for any windows: zero `dx`, then add each gradient at its
    /// window's max (windows may overlap). The slow twin of the 2×2 path.
    fn backward_windows<T: Real>(&self, cache: &[T], dy: &[T], dx: &mut [T]) {
        let (plane_in, plane_out) = (self.h * self.w, self.oh * self.ow);
        dx.fill(T::ZERO);
        for ((dxin, dyout), at) in dx
            .chunks_exact_mut(plane_in)
            .zip(dy.chunks_exact(plane_out))
            .zip(cache.chunks_exact(plane_out))
        {
            for oy in 0..self.oh {
                let top = oy * self.stride * self.w;
                for ox in 0..self.ow {
                    let o = oy * self.ow + ox;
                    let k = at[o].to_f64() as usize;
                    dxin[top + ox * self.stride + (k / self.kw) * self.w + k % self.kw] += dyout[o];
                }
            }
        }
    }
}

impl MaxPool2d {
    /// `c × oh × ow`; a training forward keeps each output's position in its window.
    pub const fn sizes(&self, _input: Shape) -> Sizes {
        Sizes {
            cache_per_sample: self.c * self.oh * self.ow,
            ..Sizes::output(self.out_shape())
        }
    }
}

impl Dense for MaxPool2d {
    fn forward<T: Real>(&self, _: &impl Gemm<T>, f: Forward<'_, T>) {
        MaxPool2d::forward(self, f.mode, f.x, f.y, f.cache);
    }

    fn backward<T: Real>(&self, _: &impl Gemm<T>, b: Backward<'_, T>) {
        if let Some(dx) = b.dx {
            MaxPool2d::backward(self, b.cache, b.dy, dx);
        }
    }

    fn init<T: Real>(&self, _: Shapes, _: Init, _: &mut Rng, _: &mut [T], _: &mut [T]) {}

    fn tensor(&self, _: Shapes, _: usize) -> Option<TensorInfo> {
        None
    }

    fn decayed(&self, _: Shapes) -> Span {
        Span { start: 0, len: 0 }
    }
}

impl Builtin for MaxPool2d {
    const KEYWORD: &'static str = "maxpool";
    const SYNTAX: &'static str = "maxpool:KxK";
    const READS_IMAGES: bool = true;
    type Args = (usize, usize, usize);

    fn parse(arg: Option<&str>) -> Result<Self::Args> {
        let Some(arg) = arg else {
            return Err(Error::InvalidValue {
                what: "maxpool needs its window, as in maxpool:2x2",
            });
        };
        pool_args(arg).ok_or(Error::InvalidValue {
            what: "maxpool needs a window and an optional :sN (stride), as in maxpool:2x2",
        })
    }

    fn write(args: &Self::Args, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_pool(Self::KEYWORD, args, f)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use manabi_testkit::{assert_close, numeric_grad, probe};
    use std::vec;
    use std::vec::Vec;

    #[test]
    fn forward_and_backward_by_hand() {
        // One 4×4 channel, 2×2 windows, stride 2.
        let l = MaxPool2d::new(Shape::image(1, 4, 4), 2, 2, 2).unwrap();
        assert_eq!(l.out_shape(), Shape::image(1, 2, 2));
        #[rustfmt::skip]
        let x = [
            1.0, 2.0, 0.0, -1.0,
            4.0, 3.0, 5.0, 5.0,
            -2.0, -3.0, 7.0, 0.0,
            -4.0, -1.0, 0.0, 8.0,
        ];
        let (mut y, mut cache) = ([f64::NAN; 4], [f64::NAN; 4]);
        l.forward(Mode::Train, &x, &mut y, &mut cache);
        assert_eq!(y, [4.0, 5.0, -1.0, 8.0]);
        // The first of the two 5s wins, as NumPy's argmax.
        assert_eq!(cache, [2.0, 2.0, 3.0, 3.0]);
        let mut dx = [f64::NAN; 16];
        l.backward(&cache, &[10.0, 20.0, 30.0, 40.0], &mut dx);
        let mut expected = [0.0; 16];
        (expected[4], expected[6], expected[13], expected[15]) = (10.0, 20.0, 30.0, 40.0);
        assert_eq!(dx, expected);
        // Evaluation gives the same maxima and leaves the cache alone.
        let mut y_eval = [f64::NAN; 4];
        l.forward(Mode::Eval, &x, &mut y_eval, &mut []);
        assert_eq!(y_eval, y);
    }

    #[test]
    fn bad_windows_are_refused() {
        assert!(MaxPool2d::new(Shape::image(1, 2, 2), 3, 3, 1).is_err());
        assert!(MaxPool2d::new(Shape::image(1, 4, 4), 0, 2, 2).is_err());
        assert!(MaxPool2d::new(Shape::image(1, 4, 4), 2, 2, 0).is_err());
        // DeepConvNet: 64×8×8 → 64×4×4; an odd side drops its last row, as the book's.
        let l = MaxPool2d::new(Shape::image(64, 8, 8), 2, 2, 2).unwrap();
        assert_eq!(l.out_shape(), Shape::image(64, 4, 4));
        let l = MaxPool2d::new(Shape::image(1, 7, 7), 2, 2, 2).unwrap();
        assert_eq!((l.oh, l.ow), (3, 3));
    }

    #[test]
    fn the_2x2_paths_equal_the_definition_on_ties() {
        // Values from {0, 1, 2}: most windows hold ties, which go to the first maximum.
        let l = MaxPool2d::new(Shape::image(3, 6, 8), 2, 2, 2).unwrap();
        let x: Vec<f32> = (0..3 * 6 * 8)
            .map(|i| ((i * 7 + i / 5) % 3) as f32)
            .collect();
        let outs = 3 * l.oh * l.ow;
        let (mut y, mut cache) = (vec![f32::NAN; outs], vec![f32::NAN; outs]);
        l.forward(Mode::Train, &x, &mut y, &mut cache);
        for (o, (&v, &k)) in y.iter().zip(&cache).enumerate() {
            let (ch, oy, ox) = (o / (l.oh * l.ow), o / l.ow % l.oh, o % l.ow);
            let window: Vec<f32> = (0..4)
                .map(|t| x[(ch * 6 + 2 * oy + t / 2) * 8 + 2 * ox + t % 2])
                .collect();
            let max = window.iter().copied().fold(f32::MIN, f32::max);
            let first = window.iter().position(|&w| w == max).unwrap();
            assert_eq!((v, k), (max, first as f32), "output {o}");
        }
        let dy: Vec<f32> = (0..outs).map(|i| i as f32 + 0.5).collect();
        let (mut fast, mut slow) = (vec![f32::NAN; x.len()], vec![f32::NAN; x.len()]);
        l.backward(&cache, &dy, &mut fast);
        l.backward_windows(&cache, &dy, &mut slow);
        assert_eq!(fast, slow);
    }

    #[test]
    fn max_pool_grads_match_finite_differences() {
        // Overlapping windows (stride 1) and disjoint ones; the probe input has distinct
        // values, so no max is tied and the loss is smooth around it.
        // 5×6 takes the general 2×2 path (an odd side), 6×6 the exact tiling's.
        for (kh, kw, stride, h) in [(2, 2, 2, 5), (2, 2, 2, 6), (3, 2, 1, 5), (2, 3, 2, 5)] {
            let l = MaxPool2d::new(Shape::image(2, h, 6), kh, kw, stride).unwrap();
            let x = probe(2 * 2 * h * 6, 12);
            let outs = 2 * 2 * l.oh * l.ow;
            let r = probe(outs, 13);
            let (mut y, mut cache) = (vec![0.0; outs], vec![0.0; outs]);
            l.forward(Mode::Train, &x, &mut y, &mut cache);
            let mut dx = vec![f64::NAN; x.len()];
            l.backward(&cache, &r, &mut dx);
            let numeric = numeric_grad(|x, y| l.forward(Mode::Eval, x, y, &mut []), &x, &r);
            assert_close(&dx, &numeric, 1e-8, 1e-6);
        }
    }
}
