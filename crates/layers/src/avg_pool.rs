//! Average pooling, PyTorch's `nn.AvgPool2d`: the mean of each window forward, each output's gradient spread evenly over its window backward.

use crate::kernel::{Backward, Dense, Forward, Shapes, Sizes};
use crate::layer::{Builtin, pool_args, write_pool};
use crate::max_pool::pooled;
use crate::{Init, Shape, TensorInfo};
use core::fmt;
use manabi_matmul::Gemm;
use manabi_tensor::{Error, Real, Result, Rng, Span};

/// Average pooling over windows of `kh × kw` moved by `stride` over each channel, as
/// PyTorch's `nn.AvgPool2d(kernel_size=(kh, kw), stride)` with its defaults otherwise: no
/// padding, the windows that do not fit dropped (floor mode), every window divided by its
/// `kh·kw` values.
///
/// Forward: `y = Σ_window x / (kh·kw)`. Backward: every input of an output's window gets
/// `dy / (kh·kw)` (added where windows overlap, 0 for inputs in no window). It is linear, so
/// backward is forward's transpose and keeps nothing from the forward pass.
///
/// # Shapes
/// `x: [batch, c, h, w]`, `y: [batch, c, oh, ow]` with `oh = (h − kh)/stride + 1` (likewise
/// `ow`); no parameters, cache or scratch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AvgPool2d {
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

impl AvgPool2d {
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

    /// `c × oh × ow`, nothing else.
    pub const fn sizes(&self, _input: Shape) -> Sizes {
        Sizes::output(self.out_shape())
    }

    /// `y` = the mean of each window. Writes (never adds to) `y`.
    pub fn forward<T: Real>(&self, x: &[T], y: &mut [T]) {
        let (plane_in, plane_out) = (self.h * self.w, self.oh * self.ow);
        let n = T::from_usize(self.kh * self.kw);
        for (xin, yout) in x.chunks_exact(plane_in).zip(y.chunks_exact_mut(plane_out)) {
            for (o, out) in yout.iter_mut().enumerate() {
                let first = (o / self.ow) * self.stride * self.w + (o % self.ow) * self.stride;
                let mut sum = T::ZERO;
                for i in 0..self.kh {
                    let row = first + i * self.w;
                    for &v in &xin[row..row + self.kw] {
                        sum += v;
                    }
                }
                *out = sum / n;
            }
        }
    }

    /// `dx` = the sum of `dy / (kh·kw)` over the windows each input lies in. Writes (never
    /// adds to) `dx`.
    pub fn backward<T: Real>(&self, dy: &[T], dx: &mut [T]) {
        let (plane_in, plane_out) = (self.h * self.w, self.oh * self.ow);
        let n = T::from_usize(self.kh * self.kw);
        dx.fill(T::ZERO);
        for (dxin, dyout) in dx.chunks_exact_mut(plane_in).zip(dy.chunks_exact(plane_out)) {
            for (o, &g) in dyout.iter().enumerate() {
                let first = (o / self.ow) * self.stride * self.w + (o % self.ow) * self.stride;
                let share = g / n;
                for i in 0..self.kh {
                    let row = first + i * self.w;
                    for d in &mut dxin[row..row + self.kw] {
                        *d += share;
                    }
                }
            }
        }
    }
}

impl Dense for AvgPool2d {
    fn forward<T: Real>(&self, _: &impl Gemm<T>, f: Forward<'_, T>) {
        AvgPool2d::forward(self, f.x, f.y);
    }

    fn backward<T: Real>(&self, _: &impl Gemm<T>, b: Backward<'_, T>) {
        if let Some(dx) = b.dx {
            AvgPool2d::backward(self, b.dy, dx);
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

impl Builtin for AvgPool2d {
    const KEYWORD: &'static str = "avgpool";
    const SYNTAX: &'static str = "avgpool:KxK";
    const READS_IMAGES: bool = true;
    type Args = (usize, usize, usize);

    fn parse(arg: Option<&str>) -> Result<Self::Args> {
        let Some(arg) = arg else {
            return Err(Error::InvalidValue {
                what: "avgpool needs its window, as in avgpool:2x2",
            });
        };
        pool_args(arg).ok_or(Error::InvalidValue {
            what: "avgpool needs a window and an optional :sN (stride), as in avgpool:2x2",
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
    use crate::Spec;
    use manabi_testkit::{assert_close, numeric_grad, probe};
    use std::string::ToString;
    use std::{format, vec};

    #[test]
    fn forward_and_backward_by_hand() {
        // One 4×4 channel, 2×2 windows, stride 2 (the default).
        let l = AvgPool2d::new(Shape::image(1, 4, 4), 2, 2, 2).unwrap();
        assert_eq!(l.out_shape(), Shape::image(1, 2, 2));
        #[rustfmt::skip]
        let x = [
            1.0, 2.0, 0.0, -1.0,
            4.0, 3.0, 5.0, 5.0,
            -2.0, -3.0, 7.0, 0.0,
            -4.0, -1.0, 0.0, 8.0,
        ];
        let mut y = [f64::NAN; 4];
        l.forward(&x, &mut y);
        assert_eq!(y, [2.5, 2.25, -2.5, 3.75]);
        let mut dx = [f64::NAN; 16];
        l.backward(&[10.0, 20.0, 30.0, 40.0], &mut dx);
        #[rustfmt::skip]
        let expected = [
            2.5, 2.5, 5.0, 5.0,
            2.5, 2.5, 5.0, 5.0,
            7.5, 7.5, 10.0, 10.0,
            7.5, 7.5, 10.0, 10.0,
        ];
        assert_eq!(dx, expected);
    }

    #[test]
    fn overlapping_windows_add_and_a_partial_window_is_dropped() {
        // 3×3 of 1…9, 2×2 windows at stride 1: four overlapping windows.
        let l = AvgPool2d::new(Shape::image(1, 3, 3), 2, 2, 1).unwrap();
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0];
        let mut y = [f64::NAN; 4];
        l.forward(&x, &mut y);
        assert_eq!(y, [3.0, 4.0, 6.0, 7.0]);
        let mut dx = [f64::NAN; 9];
        l.backward(&[1.0; 4], &mut dx);
        assert_eq!(dx, [0.25, 0.5, 0.25, 0.5, 1.0, 0.5, 0.25, 0.5, 0.25]);
        // Floor mode: 5×5 in 2×2 windows is 2×2, and the last row and column get nothing.
        let l = AvgPool2d::new(Shape::image(1, 5, 5), 2, 2, 2).unwrap();
        assert_eq!((l.oh, l.ow), (2, 2));
        let mut dx = [f64::NAN; 25];
        l.backward(&[4.0; 4], &mut dx);
        assert!(dx[20..].iter().chain(dx.iter().skip(4).step_by(5)).all(|&d| d == 0.0));
        assert_eq!(dx.iter().sum::<f64>(), 16.0);
    }

    #[test]
    fn bad_windows_are_refused_and_the_text_form_reads_back() {
        assert!(AvgPool2d::new(Shape::image(1, 2, 2), 3, 3, 1).is_err());
        assert!(AvgPool2d::new(Shape::image(1, 4, 4), 0, 2, 2).is_err());
        assert!(AvgPool2d::new(Shape::image(1, 4, 4), 2, 2, 0).is_err());
        for (text, (kh, kw, stride)) in [
            ("avgpool:2x2", (2, 2, 2)),
            ("avgpool:3x3:s1", (3, 3, 1)),
            ("avgpool:2x3:s2", (2, 3, 2)),
        ] {
            let spec = Spec::AvgPool2d { kh, kw, stride };
            assert_eq!(Spec::parse(text).unwrap(), spec, "{text}");
            assert_eq!(spec.to_string(), text);
        }
        assert_eq!(Spec::parse("avgpool:3").unwrap().to_string(), "avgpool:3x3");
        for bad in ["avgpool", "avgpool:0x2", "avgpool:2x2:p1", "avgpool:2x2:s0"] {
            let e = Spec::parse(bad).unwrap_err().to_string();
            assert!(e.contains("avgpool needs"), "{bad}: {e}");
        }
    }

    #[test]
    fn avg_pool_grads_match_finite_differences() {
        // Disjoint, overlapping and strided windows, a side that does not divide, two channels
        // and two samples.
        for (kh, kw, stride, h) in [(2, 2, 2, 6), (2, 2, 2, 5), (3, 2, 1, 5), (2, 3, 2, 5)] {
            let l = AvgPool2d::new(Shape::image(2, h, 6), kh, kw, stride).unwrap();
            let x = probe(2 * 2 * h * 6, 21);
            let r = probe(2 * 2 * l.oh * l.ow, 22);
            let mut dx = vec![f64::NAN; x.len()];
            l.backward(&r, &mut dx);
            let numeric = numeric_grad(|x, y| l.forward(x, y), &x, &r);
            assert_close(&dx, &numeric, 1e-9, 1e-7);
        }
    }

    #[test]
    fn backward_is_forwards_transpose_and_keeps_the_gradients_sum() {
        // Seeded random shapes, windows and strides: ⟨dy, f(x)⟩ = ⟨f'(dy), x⟩ and Σ dx = Σ dy.
        let mut rng = Rng::new(77);
        for case in 0..200 {
            let pick = |rng: &mut Rng, lo: usize, hi: usize| lo + rng.next_u64() as usize % (hi - lo);
            let (c, h, w) = (pick(&mut rng, 1, 4), pick(&mut rng, 1, 9), pick(&mut rng, 1, 9));
            let (kh, kw) = (pick(&mut rng, 1, h + 1), pick(&mut rng, 1, w + 1));
            let stride = pick(&mut rng, 1, 4);
            let l = AvgPool2d::new(Shape::image(c, h, w), kh, kw, stride).unwrap();
            let x = probe(2 * c * h * w, 100 + case);
            let dy = probe(2 * c * l.oh * l.ow, 500 + case);
            let (mut y, mut dx) = (vec![0.0; dy.len()], vec![0.0; x.len()]);
            l.forward(&x, &mut y);
            l.backward(&dy, &mut dx);
            let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(a, b)| a * b).sum::<f64>();
            let shape = format!("{c}x{h}x{w}, window {kh}x{kw}, stride {stride}");
            assert!((dot(&dy, &y) - dot(&dx, &x)).abs() < 1e-12, "{shape}");
            let (sum_dx, sum_dy) = (dx.iter().sum::<f64>(), dy.iter().sum::<f64>());
            assert!((sum_dx - sum_dy).abs() < 1e-12, "{shape}: {sum_dx} vs {sum_dy}");
        }
    }

}
