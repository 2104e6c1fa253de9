//! The layer list's machinery: `layer_list!` (invoked once, in `lib.rs`) makes [`Spec`], [`Layer`] and every dispatch from each built-in layer's file; [`Builtin`] is what a file gives besides its passes.
//!
//! Adding a built-in layer is one file, `foo.rs`, with
//!
//! - a struct with `const fn new(input: Shape, args…) -> Result<Self>` (the shape rule and its
//!   errors), `const fn sizes(&self, input: Shape) -> Sizes`, and public fields named as the
//!   spec's arguments;
//! - its passes as an impl of [`Dense`](crate::Dense) or [`Pointwise`](crate::Pointwise);
//! - its text form as an impl of [`Builtin`];
//!
//! plus one line in the list in `lib.rs`: `foo::Foo { arg: type, … } => dense,` (or
//! `Foo(arg: type)`, or `Foo` alone; `pointwise` for a pointwise layer). Anything missing or
//! misnamed is a compile error; nothing can fail at run time for want of a match arm.

use crate::{Layer, Spec};
use core::fmt;
use manabi_tensor::{Error, Result};

/// A built-in layer's text form (`affine:100`, `maxpool:2x2`), which [`Spec::parse`] reads
/// and `Spec`'s `Display` writes, and what a stack needs to know about its input.
pub(crate) trait Builtin {
    /// The name before the `:` (`affine`).
    const KEYWORD: &'static str;
    /// How the text form is written, for the list of known layers (`affine:N`).
    const SYNTAX: &'static str;
    /// Whether the layer reads its input as images (`c × h × w`), so that a stack keeps the
    /// data's image shape.
    const READS_IMAGES: bool;
    /// The spec's arguments, in the order of its fields (`()` for none).
    type Args;
    /// Reads the text after the `:` (`None` without one).
    ///
    /// # Errors
    /// [`Error::InvalidValue`] naming what was expected.
    fn parse(arg: Option<&str>) -> Result<Self::Args>;
    /// Writes the text form, which [`Builtin::parse`] reads back to the same arguments.
    fn write(args: &Self::Args, f: &mut fmt::Formatter<'_>) -> fmt::Result;
}

/// A positive whole number.
pub(crate) fn positive(text: &str) -> Option<usize> {
    text.parse::<usize>().ok().filter(|&n| n > 0)
}

/// `KHxKW` (or a single `K` for a square window).
pub(crate) fn window(text: &str) -> Option<(usize, usize)> {
    match text.split_once('x') {
        Some((h, w)) => Some((positive(h)?, positive(w)?)),
        None => positive(text).map(|k| (k, k)),
    }
}

/// `KHxKW[:sS]` of a pooling layer, the stride the window's height unless given.
pub(crate) fn pool_args(arg: &str) -> Option<(usize, usize, usize)> {
    let (size, stride) = match arg.split_once(':') {
        Some((size, s)) => (size, Some(s.strip_prefix('s').and_then(positive)?)),
        None => (arg, None),
    };
    let (kh, kw) = window(size)?;
    Some((kh, kw, stride.unwrap_or(kh)))
}

/// Writes a pooling layer's `KEYWORD:KHxKW`, and `:sS` unless the stride is the default.
pub(crate) fn write_pool(
    keyword: &str,
    &(kh, kw, stride): &(usize, usize, usize),
    f: &mut fmt::Formatter<'_>,
) -> fmt::Result {
    write!(f, "{keyword}:{kh}x{kw}")?;
    if stride != kh || kh != kw {
        write!(f, ":s{stride}")?;
    }
    Ok(())
}

/// `()` for a layer without arguments.
///
/// # Errors
/// [`Error::InvalidValue`] with `what` if there is one.
pub(crate) fn no_argument(arg: Option<&str>, what: &'static str) -> Result<()> {
    match arg {
        None => Ok(()),
        Some(_) => Err(Error::InvalidValue { what }),
    }
}

/// `prefix` and the parts joined by `, ` (the last by ` or `) into a buffer of `N` bytes,
/// and the length used: the message for an unknown layer, made from each layer's syntax.
pub(crate) const fn join<const N: usize>(prefix: &str, parts: &[&str]) -> ([u8; N], usize) {
    let mut buf = [0u8; N];
    let mut n = 0;
    let mut i = 0;
    while i <= parts.len() {
        let part = if i == 0 {
            prefix.as_bytes()
        } else {
            parts[i - 1].as_bytes()
        };
        let sep: &[u8] = match i {
            0 | 1 => b"",
            _ if i == parts.len() => b" or ",
            _ => b", ",
        };
        let mut j = 0;
        while j < sep.len() + part.len() {
            buf[n] = if j < sep.len() {
                sep[j]
            } else {
                part[j - sep.len()]
            };
            n += 1;
            j += 1;
        }
        i += 1;
    }
    (buf, n)
}

/// The first `len` bytes of `bytes` as text.
pub(crate) const fn text(bytes: &[u8], len: usize) -> &str {
    match core::str::from_utf8(bytes.split_at(len).0) {
        Ok(s) => s,
        Err(_) => panic!("a layer syntax is not UTF-8"),
    }
}

/// Generates [`Spec`] and [`Layer`] from the list of built-in layers, with every dispatch:
/// text form, shape rule, sizes, passes, tensors. See this module's documentation.
macro_rules! layer_list {
    ($(
        $(#[$doc:meta])*
        $module:ident :: $name:ident
            $( ( $($tf:ident : $tt:ty),* ) )?
            $( { $($sf:ident : $st:ty),* } )?
            => $flow:ident
    ),* $(,)?) => {
        $( mod $module; pub use $module::$name; )*

        /// One layer as a user writes it: its kind and the sizes only it knows (an Affine
        /// layer's output width, a Dropout ratio); the input size comes from the layer before.
        ///
        /// Text form (`Display` and [`Spec::parse`]): `affine:100`, `relu`, `sigmoid`,
        /// `batchnorm`, `dropout:0.5`, `conv:30@5x5` (30 filters of 5×5; `:s2` sets the
        /// stride, `:p1` the padding: `conv:16@3x3:p1`), `maxpool:2x2` and `avgpool:2x2`
        /// (stride the window's height unless `:sN`); a custom layer's is its name.
        #[derive(Clone, Copy, Debug, PartialEq)]
        pub enum Spec {
            $(
                $(#[$doc])*
                $name $( ( $($tt),* ) )? $( { $(
                    #[doc = concat!("See [`", stringify!($name), "::", stringify!($sf), "`].")]
                    $sf: $st
                ),* } )?,
            )*
            /// A layer defined outside this crate.
            Custom($crate::Custom),
        }

        /// A layer with its sizes resolved by the plan.
        #[derive(Clone, Copy, Debug, PartialEq)]
        pub enum Layer {
            $(
                #[doc = concat!("A planned [`", stringify!($name), "`].")]
                $name($name),
            )*
            /// A planned custom layer.
            Custom($crate::CustomLayer),
        }

        impl Spec {
            /// The layer this spec makes on an input of shape `input`, and its output shape.
            ///
            /// # Errors
            /// As each layer's `new`; [`Error::InvalidValue`](manabi_tensor::Error) for a
            /// pointwise layer that would change the shape or learn.
            pub const fn build(self, input: $crate::Shape) -> manabi_tensor::Result<(Layer, $crate::Shape)> {
                use $crate::plan::tri;
                let layer = match self {
                    $(
                        Spec::$name $( ( $($tf),* ) )? $( { $($sf),* } )? => {
                            let layer = tri!($name::new(input $( $(, $tf)* )? $( $(, $sf)* )?));
                            tri!($crate::pass::$flow::check(&layer.sizes(input), input));
                            Layer::$name(layer)
                        }
                    )*
                    Spec::Custom(c) => Layer::Custom(tri!($crate::CustomLayer::new(c, input))),
                };
                Ok((layer, layer.sizes(input).output))
            }

            /// Whether the layer reads its input as images (`c × h × w`): a stack with one
            /// keeps the data's image shape.
            pub const fn reads_images(&self) -> bool {
                match self {
                    $( Spec::$name { .. } => <$name as $crate::layer::Builtin>::READS_IMAGES, )*
                    Spec::Custom(_) => false,
                }
            }

            /// The built-in layer named `kind`, from the text after its `:` (if any).
            fn parse_builtin(kind: &str, arg: Option<&str>) -> Option<manabi_tensor::Result<Self>> {
                use $crate::layer::Builtin;
                $(
                    if kind == <$name as Builtin>::KEYWORD {
                        return Some(<$name as Builtin>::parse(arg).map(
                            |( $( $($tf,)* )? $( $($sf,)* )? )| {
                                Spec::$name $( ( $($tf),* ) )? $( { $($sf),* } )?
                            },
                        ));
                    }
                )*
                None
            }

            /// The message for a layer name that is none of the built-in ones.
            const UNKNOWN: &str = {
                const PARTS: &[&str] = &[$( <$name as $crate::layer::Builtin>::SYNTAX ),*];
                const JOINED: ([u8; 512], usize) =
                    $crate::layer::join("unknown layer: expected ", PARTS);
                $crate::layer::text(&JOINED.0, JOINED.1)
            };
        }

        impl core::fmt::Display for Spec {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                use $crate::layer::Builtin;
                match *self {
                    $(
                        Spec::$name $( ( $($tf),* ) )? $( { $($sf),* } )? => {
                            <$name as Builtin>::write(&( $( $($tf,)* )? $( $($sf,)* )? ), f)
                        }
                    )*
                    Spec::Custom(c) => f.write_str(c.name()),
                }
            }
        }

        impl Layer {
            /// What the layer needs on an input of shape `input`.
            pub const fn sizes(&self, input: $crate::Shape) -> $crate::Sizes {
                match self {
                    $( Layer::$name(k) => k.sizes(input), )*
                    Layer::Custom(c) => c.sizes(),
                }
            }

            /// Whether the plan may let the layer overwrite its input (a pointwise layer).
            pub const fn works_in_place(&self) -> bool {
                match self {
                    $( Layer::$name(_) => $crate::pass::$flow::IN_PLACE, )*
                    Layer::Custom(c) => c.works_in_place(),
                }
            }

            /// The spec that plans into this layer.
            pub fn spec(&self) -> Spec {
                match *self {
                    $(
                        Layer::$name(k) => {
                            let _ = k;
                            Spec::$name $( ( $(k.$tf),* ) )? $( { $($sf: k.$sf),* } )?
                        }
                    )*
                    Layer::Custom(c) => Spec::Custom(c.custom),
                }
            }

            /// Sets the parameters and statistics to their starting values.
            pub(crate) fn init<T: manabi_tensor::Real>(
                &self,
                shapes: $crate::Shapes,
                init: $crate::Init,
                rng: &mut manabi_tensor::Rng,
                p: &mut [T],
                stats: &mut [T],
            ) {
                match self {
                    $( Layer::$name(k) => $crate::pass::$flow::init(k, shapes, init, rng, p, stats), )*
                    Layer::Custom(c) => c.init(init, rng, p, stats),
                }
            }

            /// Named tensor `i`, relative to the layer's parameters or statistics, numbered 0.
            pub(crate) fn tensor(&self, shapes: $crate::Shapes, i: usize) -> Option<$crate::TensorInfo> {
                match self {
                    $( Layer::$name(k) => $crate::pass::$flow::tensor(k, shapes, i), )*
                    Layer::Custom(c) => c.tensor(i),
                }
            }

            /// The parameters weight decay reaches.
            pub(crate) fn decayed(&self, shapes: $crate::Shapes) -> manabi_tensor::Span {
                match self {
                    $( Layer::$name(k) => $crate::pass::$flow::decayed(k, shapes), )*
                    Layer::Custom(c) => c.decayed(),
                }
            }

            /// Forward over the step's spans.
            pub(crate) fn forward<T: manabi_tensor::Real>(
                &self,
                mm: &impl manabi_matmul::Gemm<T>,
                buf: &mut [T],
                rng: &mut manabi_tensor::Rng,
                step: $crate::pass::ForwardStep<'_, T>,
            ) {
                match self {
                    $( Layer::$name(k) => $crate::pass::$flow::forward(k, mm, buf, rng, step), )*
                    Layer::Custom(c) => c.forward(mm, buf, rng, step),
                }
            }

            /// Backward over the step's spans.
            pub(crate) fn backward<T: manabi_tensor::Real>(
                &self,
                mm: &impl manabi_matmul::Gemm<T>,
                buf: &mut [T],
                step: $crate::pass::BackwardStep<'_, T>,
            ) {
                match self {
                    $( Layer::$name(k) => $crate::pass::$flow::backward(k, mm, buf, step), )*
                    Layer::Custom(c) => c.backward(mm, buf, step),
                }
            }
        }
    };
}
pub(crate) use layer_list;

impl Spec {
    /// The book's `MultiLayerNet` as a layer list: for output widths `[h₁, …, hₖ, classes]`,
    /// `affine:h₁, activation, …, affine:hₖ, activation, affine:classes`.
    pub fn mlp(widths: &[usize], activation: Spec) -> impl Iterator<Item = Spec> + '_ {
        let last = widths.len().saturating_sub(1);
        widths.iter().enumerate().flat_map(move |(i, &w)| {
            let act = (i < last).then_some(activation);
            core::iter::once(Spec::Affine(w)).chain(act)
        })
    }

    /// Reads the text form of a built-in layer: `affine:N`, `relu`, `sigmoid`, `batchnorm`,
    /// `dropout:R`, `conv:F@KHxKW[:sS][:pP]`, `maxpool:KHxKW[:sS]`, `avgpool:KHxKW[:sS]`.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] naming what was expected.
    pub fn parse(text: &str) -> Result<Self> {
        Self::parse_with(text, &[])
    }

    /// [`Spec::parse`], where a name in `custom` also reads as that layer.
    ///
    /// # Errors
    /// As [`Spec::parse`].
    pub fn parse_with(text: &str, custom: &[crate::Custom]) -> Result<Self> {
        if let Some(c) = custom.iter().find(|c| c.name() == text) {
            return Ok(Spec::Custom(*c));
        }
        let (kind, arg) = match text.split_once(':') {
            Some((k, a)) => (k, Some(a)),
            None => (text, None),
        };
        match Self::parse_builtin(kind, arg) {
            Some(spec) => spec,
            None => Err(Error::InvalidValue {
                what: Self::UNKNOWN,
            }),
        }
    }
}

/// Whether a forward pass learns from its batch or evaluates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Training: BatchNorm normalises with the batch's statistics (and updates its running
    /// ones), Dropout draws a mask.
    Train,
    /// Evaluation: BatchNorm uses its running statistics, Dropout scales by `1 − ratio`.
    Eval,
}

impl Layer {
    /// The output shape for an input of shape `input`.
    pub const fn out_shape(&self, input: crate::Shape) -> crate::Shape {
        self.sizes(input).output
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::ToString;

    #[test]
    fn syntaxes_join_into_one_message() {
        let (buf, len) = join::<64>("expected ", &["a:N", "b", "c:K"]);
        assert_eq!(text(&buf, len), "expected a:N, b or c:K");
        let (buf, len) = join::<16>("one ", &["x"]);
        assert_eq!(text(&buf, len), "one x");
    }

    #[test]
    fn the_unknown_message_lists_every_built_in_layer() {
        let e = Spec::parse("convolution").unwrap_err().to_string();
        assert!(
            e.contains(
                "unknown layer: expected affine:N, relu, sigmoid, batchnorm, dropout:R, \
                 conv:F@KxK, maxpool:KxK or avgpool:KxK"
            ),
            "{e}"
        );
    }
}
