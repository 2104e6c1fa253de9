//! The one error enum of manabi-tensor, usable with and without `std`.

use core::fmt;

/// Everything that can go wrong while setting up views, plans and arenas.
///
/// Steps never fail; setup does, with an error that carries the numbers involved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A slice's length does not match the shape asked for.
    LengthMismatch {
        /// Elements the shape needs.
        expected: usize,
        /// Elements the slice holds.
        got: usize,
    },
    /// A row stride smaller than the row length.
    BadStride {
        /// The row stride given.
        stride: usize,
        /// The number of columns.
        cols: usize,
    },
    /// A buffer too small for the plan it is meant to hold.
    ArenaTooSmall {
        /// Elements the plan needs.
        need: usize,
        /// Elements the buffer holds.
        have: usize,
    },
    /// Two shapes that must agree do not.
    ShapeMismatch {
        /// What was expected.
        expected: usize,
        /// What was found.
        got: usize,
    },
    /// A size that must be positive is zero (a batch of 0, a layer of width 0).
    Zero {
        /// What was zero.
        what: &'static str,
    },
    /// A size computation overflowed `usize` (or a backend's index type).
    Overflow {
        /// What overflowed.
        what: &'static str,
    },
    /// A value outside its valid range (a negative learning rate, say).
    InvalidValue {
        /// What was invalid.
        what: &'static str,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::LengthMismatch { expected, got } => {
                write!(
                    f,
                    "slice length mismatch: the shape needs {expected} elements, the slice has {got}"
                )
            }
            Error::BadStride { stride, cols } => {
                write!(
                    f,
                    "row stride {stride} is smaller than the {cols} columns of a row"
                )
            }
            Error::ArenaTooSmall { need, have } => {
                write!(
                    f,
                    "arena too small: the plan needs {need} elements, the buffer has {have}"
                )
            }
            Error::ShapeMismatch { expected, got } => {
                write!(f, "shape mismatch: expected {expected}, got {got}")
            }
            Error::Zero { what } => write!(f, "{what} must not be zero"),
            Error::Overflow { what } => write!(f, "{what} overflows"),
            Error::InvalidValue { what } => write!(f, "invalid value: {what}"),
        }
    }
}

impl core::error::Error for Error {}
