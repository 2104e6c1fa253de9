//! The sealed `Real` trait: `f32` and `f64` with their maths taken from `libm`, and the dispatch of generic code to a body per precision.

use crate::safetensors::{Data, StError, View};
use core::fmt::{Debug, Display};
use core::iter::Sum;
use core::ops::{Add, AddAssign, Div, DivAssign, Mul, MulAssign, Neg, Sub, SubAssign};

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// A floating-point element type: `f32` (training) or `f64` (gradient checks).
///
/// The trait is sealed: backends and layers may rely on it meaning IEEE-754 binary32 or
/// binary64. Transcendental functions come from `libm`, so results are the same with and
/// without `std`.
pub trait Real:
    sealed::Sealed
    + Copy
    + Default
    + Debug
    + Display
    + PartialOrd
    + PartialEq
    + Send
    + Sync
    + 'static
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + Sum
{
    /// 0.
    const ZERO: Self;
    /// 1.
    const ONE: Self;
    /// 2.
    const TWO: Self;
    /// 0.5.
    const HALF: Self;
    /// Machine epsilon.
    const EPSILON: Self;
    /// The largest finite value.
    const MAX: Self;
    /// The most negative finite value.
    const MIN: Self;
    /// Positive infinity.
    const INFINITY: Self;
    /// Negative infinity.
    const NEG_INFINITY: Self;
    /// Not a number.
    const NAN: Self;
    /// The smallest positive normal value (`f32::MIN_POSITIVE`, about 1.2e-38): below it,
    /// values are subnormal.
    const MIN_POSITIVE: Self;
    /// Size in bytes.
    const BYTES: usize;
    /// A short name: `"f32"` or `"f64"`.
    const NAME: &'static str;

    /// Converts from `f64`, rounding to nearest.
    fn from_f64(v: f64) -> Self;
    /// Converts from `f32`: exact for both types (`f32` keeps the value, `f64` widens it).
    fn from_f32(v: f32) -> Self;
    /// Widens (or keeps) to `f64`.
    fn to_f64(self) -> f64;
    /// Converts a count, rounding to nearest.
    fn from_usize(v: usize) -> Self;
    /// e^self.
    fn exp(self) -> Self;
    /// Natural logarithm.
    fn ln(self) -> Self;
    /// Square root.
    fn sqrt(self) -> Self;
    /// Absolute value.
    fn abs(self) -> Self;
    /// self^e.
    fn powf(self, e: Self) -> Self;
    /// self^n for an integer n.
    fn powi(self, n: i32) -> Self;
    /// Hyperbolic tangent.
    fn tanh(self) -> Self;
    /// Cosine.
    fn cos(self) -> Self;
    /// The larger of two values; NaN if either is NaN is not promised.
    fn max(self, other: Self) -> Self;
    /// The smaller of two values.
    fn min(self, other: Self) -> Self;
    /// True unless NaN or infinite.
    fn is_finite(self) -> bool;
    /// `self * a + b` (fused where the target has FMA in libm's sense).
    fn mul_add(self, a: Self, b: Self) -> Self;
    /// Values of this type as a safetensors tensor's data.
    fn tensor_data(values: &[Self]) -> Data<'_>;
    /// Reads a safetensors tensor of this type's dtype into `out`.
    ///
    /// # Errors
    /// [`StError::BadTensor`] for another dtype or length.
    fn read_tensor(view: &View<'_>, out: &mut [Self]) -> Result<(), StError>;

    /// Runs the body of `P` for this type: [`PerPrecision::f32`] on `f32`,
    /// [`PerPrecision::f64`] on `f64`, each on `args` as its own type.
    fn per_precision<P: PerPrecision>(args: P::Of<Self>) -> P::Out;
}

/// A computation written once per precision, which [`Real::per_precision`] picks for a
/// generic `T`.
///
/// Generic code cannot hand a `&mut [T]` to a function that takes `&mut [f32]` (a trait object
/// made for one precision, say) without `unsafe` or a check that could fail. Here the type
/// system does it: `Of<T>` (the arguments, as many buffers as needed) becomes `Of<f32>` in the
/// `f32` implementation of `Real` and `Of<f64>` in the `f64` one, and since `Real` is sealed
/// those are the only two bodies.
pub trait PerPrecision {
    /// The arguments for element type `T`.
    type Of<T: Real>;
    /// The result, the same for both precisions.
    type Out;
    /// The body for `f32`.
    fn f32(args: Self::Of<f32>) -> Self::Out;
    /// The body for `f64`.
    fn f64(args: Self::Of<f64>) -> Self::Out;
}

macro_rules! impl_real {
    ($t:ty, $name:literal, $body:ident, $data:ident, $read:ident, $exp:path, $ln:path,
     $sqrt:path, $fabs:path, $pow:path, $tanh:path, $cos:path, $fma:path) => {
        impl Real for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const TWO: Self = 2.0;
            const HALF: Self = 0.5;
            const EPSILON: Self = <$t>::EPSILON;
            const MAX: Self = <$t>::MAX;
            const MIN: Self = <$t>::MIN;
            const INFINITY: Self = <$t>::INFINITY;
            const NEG_INFINITY: Self = <$t>::NEG_INFINITY;
            const NAN: Self = <$t>::NAN;
            const MIN_POSITIVE: Self = <$t>::MIN_POSITIVE;
            const BYTES: usize = core::mem::size_of::<$t>();
            const NAME: &'static str = $name;

            #[inline]
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            #[inline]
            fn from_f32(v: f32) -> Self {
                v as $t
            }
            #[inline]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline]
            fn from_usize(v: usize) -> Self {
                v as $t
            }
            #[inline]
            fn exp(self) -> Self {
                $exp(self)
            }
            #[inline]
            fn ln(self) -> Self {
                $ln(self)
            }
            #[inline]
            fn sqrt(self) -> Self {
                $sqrt(self)
            }
            #[inline]
            fn abs(self) -> Self {
                $fabs(self)
            }
            #[inline]
            fn powf(self, e: Self) -> Self {
                $pow(self, e)
            }
            #[inline]
            fn powi(self, n: i32) -> Self {
                let mut base = if n < 0 { 1.0 / self } else { self };
                let mut n = n.unsigned_abs();
                let mut acc: $t = 1.0;
                while n > 0 {
                    if n & 1 == 1 {
                        acc *= base;
                    }
                    base *= base;
                    n >>= 1;
                }
                acc
            }
            #[inline]
            fn tanh(self) -> Self {
                $tanh(self)
            }
            #[inline]
            fn cos(self) -> Self {
                $cos(self)
            }
            #[inline]
            fn max(self, other: Self) -> Self {
                if self >= other { self } else { other }
            }
            #[inline]
            fn min(self, other: Self) -> Self {
                if self <= other { self } else { other }
            }
            #[inline]
            fn is_finite(self) -> bool {
                <$t>::is_finite(self)
            }
            #[inline]
            fn mul_add(self, a: Self, b: Self) -> Self {
                $fma(self, a, b)
            }
            fn tensor_data(values: &[Self]) -> Data<'_> {
                Data::$data(values)
            }
            fn read_tensor(view: &View<'_>, out: &mut [Self]) -> Result<(), StError> {
                view.$read(out)
            }
            #[inline]
            fn per_precision<P: PerPrecision>(args: P::Of<Self>) -> P::Out {
                P::$body(args)
            }
        }
    };
}

/// IEEE square roots are correctly rounded, so every implementation gives the same bits; with
/// `std` the compiler's own (`sqrtps`, which vectorizes: Adam's step over 443 k parameters runs
/// several times faster), without it libm's.
#[inline]
fn sqrt_f32(v: f32) -> f32 {
    #[cfg(feature = "std")]
    return v.sqrt();
    #[cfg(not(feature = "std"))]
    return libm::sqrtf(v);
}

/// As [`sqrt_f32`].
#[inline]
fn sqrt_f64(v: f64) -> f64 {
    #[cfg(feature = "std")]
    return v.sqrt();
    #[cfg(not(feature = "std"))]
    return libm::sqrt(v);
}

impl_real!(
    f32,
    "f32",
    f32,
    F32,
    read_f32,
    libm::expf,
    libm::logf,
    sqrt_f32,
    libm::fabsf,
    libm::powf,
    libm::tanhf,
    libm::cosf,
    libm::fmaf
);
impl_real!(
    f64,
    "f64",
    f64,
    F64,
    read_f64,
    libm::exp,
    libm::log,
    sqrt_f64,
    libm::fabs,
    libm::pow,
    libm::tanh,
    libm::cos,
    libm::fma
);

#[cfg(test)]
mod tests {
    use super::{PerPrecision, Real};

    fn roundtrip<T: Real>() {
        assert_eq!(T::ONE + T::ONE, T::TWO);
        assert_eq!(T::TWO * T::HALF, T::ONE);
        assert!((T::from_f64(1.0).exp().ln() - T::ONE).abs() <= T::EPSILON * T::TWO);
        assert_eq!(T::from_f64(9.0).sqrt(), T::from_f64(3.0));
        assert_eq!(T::from_f64(-2.5).abs(), T::from_f64(2.5));
        assert_eq!(T::from_f64(3.0).powi(3), T::from_f64(27.0));
        assert_eq!(T::from_f64(2.0).powi(-2), T::from_f64(0.25));
        assert_eq!(
            T::from_f64(2.0).powf(T::from_f64(10.0)),
            T::from_f64(1024.0)
        );
        assert!(!T::NAN.is_finite() && !T::INFINITY.is_finite() && T::MAX.is_finite());
        assert_eq!(T::ONE.max(T::TWO), T::TWO);
        assert_eq!(T::ONE.min(T::TWO), T::ONE);
        assert_eq!(T::from_usize(7).to_f64(), 7.0);
        // An f32 converts exactly: a value with all 24 significand bits set comes back whole.
        let odd = 16_777_215.0f32 / 8_388_608.0;
        assert_eq!(T::from_f32(odd).to_f64(), f64::from(odd));
        assert_eq!(T::TWO.mul_add(T::from_f64(3.0), T::ONE), T::from_f64(7.0));
    }

    /// Writes a marker of each precision into a buffer of that precision.
    struct Mark;

    impl PerPrecision for Mark {
        type Of<T: Real> = (&'static str, T);
        type Out = &'static str;
        fn f32((tag, v): (&'static str, f32)) -> &'static str {
            assert_eq!(v, 1.5f32);
            tag
        }
        fn f64((_, v): (&'static str, f64)) -> &'static str {
            assert_eq!(v, 2.5f64);
            "the f64 body"
        }
    }

    fn mark<T: Real>(v: f64) -> &'static str {
        T::per_precision::<Mark>(("the f32 body", T::from_f64(v)))
    }

    #[test]
    fn each_precision_runs_its_own_body() {
        assert_eq!(mark::<f32>(1.5), "the f32 body");
        assert_eq!(mark::<f64>(2.5), "the f64 body");
    }

    #[test]
    fn f32_and_f64_behave_like_numbers() {
        roundtrip::<f32>();
        roundtrip::<f64>();
        assert_eq!(<f32 as Real>::BYTES, 4);
        assert_eq!(<f64 as Real>::NAME, "f64");
    }
}
