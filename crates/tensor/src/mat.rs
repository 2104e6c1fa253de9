//! Row-major matrix views over slices, checked once at creation, with a free transpose.

use crate::{Error, Result};

/// Elements a row-major `rows × cols` matrix with row stride `ld` spans.
fn span_len(rows: usize, cols: usize, ld: usize) -> Result<usize> {
    if ld < cols {
        return Err(Error::BadStride { stride: ld, cols });
    }
    if rows == 0 || cols == 0 {
        return Ok(0);
    }
    (rows - 1)
        .checked_mul(ld)
        .and_then(|n| n.checked_add(cols))
        .ok_or(Error::Overflow {
            what: "matrix size",
        })
}

/// A read-only matrix view: row-major storage, optionally seen transposed.
///
/// The storage is `stored_rows × stored_cols` with row stride `row_stride`; [`Mat::t`] flips
/// how it is seen without touching the data, so `rows()`/`cols()` are the logical shape.
#[derive(Clone, Copy, Debug)]
pub struct Mat<'a, T> {
    data: &'a [T],
    stored_rows: usize,
    stored_cols: usize,
    ld: usize,
    trans: bool,
}

impl<'a, T: Copy> Mat<'a, T> {
    /// A dense `rows × cols` view; `data.len()` must be exactly `rows·cols`.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] if the length is wrong, [`Error::Overflow`] if `rows·cols`
    /// overflows.
    pub fn new(data: &'a [T], rows: usize, cols: usize) -> Result<Self> {
        let expected = rows.checked_mul(cols).ok_or(Error::Overflow {
            what: "matrix size",
        })?;
        if data.len() != expected {
            return Err(Error::LengthMismatch {
                expected,
                got: data.len(),
            });
        }
        Ok(Self {
            data,
            stored_rows: rows,
            stored_cols: cols,
            ld: cols,
            trans: false,
        })
    }

    /// A `rows × cols` view whose rows start `row_stride` elements apart.
    ///
    /// # Errors
    /// [`Error::BadStride`] if `row_stride < cols`, [`Error::LengthMismatch`] if `data` is
    /// shorter than the last row's end.
    pub fn with_stride(data: &'a [T], rows: usize, cols: usize, row_stride: usize) -> Result<Self> {
        let expected = span_len(rows, cols, row_stride)?;
        if data.len() < expected {
            return Err(Error::LengthMismatch {
                expected,
                got: data.len(),
            });
        }
        Ok(Self {
            data,
            stored_rows: rows,
            stored_cols: cols,
            ld: row_stride,
            trans: false,
        })
    }

    /// The same storage seen transposed. Free: no element moves.
    #[must_use]
    pub fn t(self) -> Self {
        Self {
            trans: !self.trans,
            ..self
        }
    }

    /// Logical rows.
    pub fn rows(&self) -> usize {
        if self.trans {
            self.stored_cols
        } else {
            self.stored_rows
        }
    }

    /// Logical columns.
    pub fn cols(&self) -> usize {
        if self.trans {
            self.stored_rows
        } else {
            self.stored_cols
        }
    }

    /// Distance between the starts of two stored rows (the BLAS "leading dimension").
    pub fn row_stride(&self) -> usize {
        self.ld
    }

    /// Whether the view is the transpose of its row-major storage.
    pub fn is_transposed(&self) -> bool {
        self.trans
    }

    /// Logical `(row stride, column stride)` in elements.
    pub fn strides(&self) -> (usize, usize) {
        if self.trans {
            (1, self.ld)
        } else {
            (self.ld, 1)
        }
    }

    /// The underlying storage.
    pub fn data(&self) -> &'a [T] {
        self.data
    }

    /// Element at logical `(i, j)`.
    ///
    /// # Panics
    /// If `(i, j)` lies outside the logical shape.
    #[inline]
    pub fn get(&self, i: usize, j: usize) -> T {
        assert!(
            i < self.rows() && j < self.cols(),
            "index ({i}, {j}) out of bounds"
        );
        let (rs, cs) = self.strides();
        self.data[i * rs + j * cs]
    }

    /// Logical row `i` as a contiguous slice, if the view is not transposed.
    pub fn row(&self, i: usize) -> Option<&'a [T]> {
        if self.trans || i >= self.stored_rows {
            return None;
        }
        let start = i * self.ld;
        Some(&self.data[start..start + self.stored_cols])
    }
}

/// A writable row-major matrix view (the output of a product).
#[derive(Debug)]
pub struct MatMut<'a, T> {
    data: &'a mut [T],
    rows: usize,
    cols: usize,
    ld: usize,
}

impl<'a, T: Copy> MatMut<'a, T> {
    /// A dense `rows × cols` view; `data.len()` must be exactly `rows·cols`.
    ///
    /// # Errors
    /// As [`Mat::new`].
    pub fn new(data: &'a mut [T], rows: usize, cols: usize) -> Result<Self> {
        let expected = rows.checked_mul(cols).ok_or(Error::Overflow {
            what: "matrix size",
        })?;
        if data.len() != expected {
            return Err(Error::LengthMismatch {
                expected,
                got: data.len(),
            });
        }
        Ok(Self {
            data,
            rows,
            cols,
            ld: cols,
        })
    }

    /// A `rows × cols` view whose rows start `row_stride` elements apart.
    ///
    /// # Errors
    /// As [`Mat::with_stride`].
    pub fn with_stride(
        data: &'a mut [T],
        rows: usize,
        cols: usize,
        row_stride: usize,
    ) -> Result<Self> {
        let expected = span_len(rows, cols, row_stride)?;
        if data.len() < expected {
            return Err(Error::LengthMismatch {
                expected,
                got: data.len(),
            });
        }
        Ok(Self {
            data,
            rows,
            cols,
            ld: row_stride,
        })
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Distance between the starts of two rows.
    pub fn row_stride(&self) -> usize {
        self.ld
    }

    /// The underlying storage.
    pub fn data(&self) -> &[T] {
        self.data
    }

    /// The underlying storage, writable.
    pub fn data_mut(&mut self) -> &mut [T] {
        self.data
    }

    /// Row `i`, writable.
    ///
    /// # Panics
    /// If `i >= rows`.
    #[inline]
    pub fn row_mut(&mut self, i: usize) -> &mut [T] {
        assert!(i < self.rows, "row {i} out of bounds");
        let start = i * self.ld;
        &mut self.data[start..start + self.cols]
    }

    /// Element at `(i, j)`.
    ///
    /// # Panics
    /// If `(i, j)` is out of bounds.
    pub fn get(&self, i: usize, j: usize) -> T {
        assert!(
            i < self.rows && j < self.cols,
            "index ({i}, {j}) out of bounds"
        );
        self.data[i * self.ld + j]
    }

    /// A shorter-lived view of the same matrix.
    pub fn rb(&mut self) -> MatMut<'_, T> {
        MatMut {
            data: self.data,
            rows: self.rows,
            cols: self.cols,
            ld: self.ld,
        }
    }

    /// Read-only view of the same matrix.
    pub fn as_mat(&self) -> Mat<'_, T> {
        Mat {
            data: self.data,
            stored_rows: self.rows,
            stored_cols: self.cols,
            ld: self.ld,
            trans: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_check_lengths_instead_of_panicking() {
        let v = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        assert_eq!(
            Mat::new(&v, 2, 4).unwrap_err(),
            Error::LengthMismatch {
                expected: 8,
                got: 6
            }
        );
        assert_eq!(
            Mat::new(&v, usize::MAX, 2).unwrap_err(),
            Error::Overflow {
                what: "matrix size"
            }
        );
        assert_eq!(
            Mat::with_stride(&v, 2, 3, 2).unwrap_err(),
            Error::BadStride { stride: 2, cols: 3 }
        );
        assert_eq!(
            Mat::with_stride(&v, 3, 2, 3).unwrap_err(),
            Error::LengthMismatch {
                expected: 8,
                got: 6
            }
        );
        let mut w = [0.0f32; 5];
        assert!(MatMut::new(&mut w, 2, 3).is_err());
    }

    #[test]
    fn transpose_is_free_and_correct() {
        let v = [1, 2, 3, 4, 5, 6];
        let m = Mat::new(&v, 2, 3).unwrap();
        let t = m.t();
        assert_eq!((t.rows(), t.cols()), (3, 2));
        assert_eq!(t.get(2, 1), 6);
        assert_eq!(t.get(0, 1), 4);
        assert_eq!(t.strides(), (1, 3));
        assert!(t.row(0).is_none());
        assert_eq!(m.row(1), Some(&v[3..]));
        assert_eq!(t.t().get(1, 0), 4);
    }

    #[test]
    fn strided_views_skip_padding() {
        let v = [1, 2, 0, 3, 4, 0, 5, 6];
        let m = Mat::with_stride(&v, 3, 2, 3).unwrap();
        assert_eq!(m.get(2, 1), 6);
        let mut w = [0; 8];
        let mut c = MatMut::with_stride(&mut w, 3, 2, 3).unwrap();
        c.row_mut(2).copy_from_slice(&[7, 8]);
        assert_eq!(c.get(2, 0), 7);
        assert_eq!(c.as_mat().get(2, 1), 8);
    }
}
