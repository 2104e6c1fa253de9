//! Compressed sparse rows: a checked view of a matrix's nonzeros, and an owned builder for it.
//!
//! An MNIST image is about 81 % zero pixels. A first layer that skips them does a fifth of
//! the arithmetic of the dense product, with the same result up to the order of the sums.
//! [`Csr`] holds row `i`'s nonzeros as `indices[offsets[i]..offsets[i + 1]]` (their columns,
//! increasing) and the same range of `values`. Indices are `u32`: half the memory traffic of
//! `usize` on a 64-bit host, and no width is wider than 2³² here.

use crate::{Error, Real, Result};
#[cfg(feature = "alloc")]
use alloc::vec::Vec;

/// A read-only `rows × cols` sparse matrix in compressed-sparse-row form.
///
/// Built checked by [`Csr::new`], or by a [`CsrBuf`] (whose views are valid by
/// construction), so the products that read it can index without checks of their own beyond
/// Rust's bounds checks.
#[derive(Clone, Copy, Debug)]
pub struct Csr<'a, T> {
    rows: usize,
    cols: usize,
    offsets: &'a [u32],
    indices: &'a [u32],
    values: &'a [T],
}

impl<'a, T: Copy> Csr<'a, T> {
    /// A view over caller-held arrays: `offsets` has `rows + 1` entries, starts at 0, never
    /// decreases and ends at `indices.len() == values.len()`; every index is below `cols` and
    /// the indices of a row increase.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for wrong lengths, [`Error::InvalidValue`] naming the broken
    /// rule otherwise.
    pub fn new(
        rows: usize,
        cols: usize,
        offsets: &'a [u32],
        indices: &'a [u32],
        values: &'a [T],
    ) -> Result<Self> {
        if offsets.len()
            != rows
                .checked_add(1)
                .ok_or(Error::Overflow { what: "CSR rows" })?
        {
            return Err(Error::ShapeMismatch {
                expected: rows + 1,
                got: offsets.len(),
            });
        }
        if indices.len() != values.len() {
            return Err(Error::ShapeMismatch {
                expected: indices.len(),
                got: values.len(),
            });
        }
        if offsets[0] != 0 || offsets[rows] as usize != indices.len() {
            return Err(Error::InvalidValue {
                what: "CSR offsets must start at 0 and end at the number of nonzeros",
            });
        }
        if offsets.windows(2).any(|w| w[1] < w[0]) {
            return Err(Error::InvalidValue {
                what: "CSR offsets must never decrease",
            });
        }
        for w in offsets.windows(2) {
            let row = &indices[w[0] as usize..w[1] as usize];
            if row.windows(2).any(|p| p[1] <= p[0]) {
                return Err(Error::InvalidValue {
                    what: "CSR column indices must increase within a row",
                });
            }
            if row.last().is_some_and(|&c| c as usize >= cols) {
                return Err(Error::InvalidValue {
                    what: "CSR column index out of range",
                });
            }
        }
        Ok(Self {
            rows,
            cols,
            offsets,
            indices,
            values,
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

    /// Stored nonzeros.
    pub fn nnz(&self) -> usize {
        self.indices.len()
    }

    /// Row `i`'s nonzeros: their columns (increasing) and values.
    ///
    /// # Panics
    /// If `i >= rows`.
    pub fn row(&self, i: usize) -> (&'a [u32], &'a [T]) {
        let (lo, hi) = (self.offsets[i] as usize, self.offsets[i + 1] as usize);
        (&self.indices[lo..hi], &self.values[lo..hi])
    }

    /// The row offsets (`rows + 1` entries).
    pub fn offsets(&self) -> &'a [u32] {
        self.offsets
    }

    /// The column of each nonzero, row after row.
    pub fn indices(&self) -> &'a [u32] {
        self.indices
    }

    /// The value of each nonzero, row after row.
    pub fn values(&self) -> &'a [T] {
        self.values
    }
}

impl<T: Real> Csr<'_, T> {
    /// Writes the dense `rows × cols` matrix into `out` (row-major, every element written):
    /// the slow twin that tests compare the sparse products with.
    ///
    /// # Panics
    /// If `out.len() != rows·cols`.
    pub fn to_dense(&self, out: &mut [T]) {
        assert_eq!(out.len(), self.rows * self.cols, "to_dense: output length");
        out.fill(T::ZERO);
        for i in 0..self.rows {
            let (cols, vals) = self.row(i);
            let dense = &mut out[i * self.cols..(i + 1) * self.cols];
            for (&c, &v) in cols.iter().zip(vals) {
                dense[c as usize] = v;
            }
        }
    }
}

/// Owned buffers that build a [`Csr`] row by row, sized once so that refilling them never
/// allocates (for a minibatch gathered every step).
#[cfg(feature = "alloc")]
#[derive(Clone, Debug)]
pub struct CsrBuf<T> {
    cols: usize,
    max_rows: usize,
    offsets: Vec<u32>,
    indices: Vec<u32>,
    values: Vec<T>,
}

#[cfg(feature = "alloc")]
impl<T: Real> CsrBuf<T> {
    /// Room for up to `max_rows` rows of `cols` columns, even fully dense, so that no
    /// [`CsrBuf::push`] ever reallocates.
    ///
    /// # Errors
    /// [`Error::Overflow`] if `max_rows·cols` does not fit the `u32` offsets.
    pub fn new(max_rows: usize, cols: usize) -> Result<Self> {
        let cap = max_rows
            .checked_mul(cols)
            .filter(|&n| u32::try_from(n).is_ok() && u32::try_from(cols).is_ok())
            .ok_or(Error::Overflow {
                what: "sparse buffer (u32 offsets)",
            })?;
        let mut offsets = Vec::with_capacity(max_rows + 1);
        offsets.push(0);
        Ok(Self {
            cols,
            max_rows,
            offsets,
            indices: Vec::with_capacity(cap),
            values: Vec::with_capacity(cap),
        })
    }

    /// Columns of every row.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The most rows it holds.
    pub fn max_rows(&self) -> usize {
        self.max_rows
    }

    /// Rows finished so far.
    pub fn rows(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Forgets every row (keeps the memory).
    pub fn clear(&mut self) {
        self.offsets.truncate(1);
        self.indices.clear();
        self.values.clear();
    }

    /// Adds a nonzero to the current row. Columns must increase within a row.
    ///
    /// # Panics
    /// If `col >= cols` or does not follow the row's previous column, or the buffer already
    /// holds `max_rows` rows (caller bugs).
    #[inline]
    pub fn push(&mut self, col: usize, value: T) {
        let start = *self.offsets.last().unwrap_or(&0) as usize;
        assert!(
            col < self.cols
                && self.rows() < self.max_rows
                && (self.indices.len() == start
                    || self.indices[self.indices.len() - 1] < col as u32),
            "CsrBuf::push: column {col} out of order or range, or too many rows"
        );
        self.indices.push(col as u32);
        self.values.push(value);
    }

    /// Ends the current row (an empty row is fine).
    ///
    /// # Panics
    /// If the buffer already holds `max_rows` rows.
    #[inline]
    pub fn end_row(&mut self) {
        assert!(
            self.rows() < self.max_rows,
            "CsrBuf: more than max_rows rows"
        );
        self.offsets.push(self.indices.len() as u32);
    }

    /// Appends a dense row, keeping its nonzeros.
    ///
    /// # Panics
    /// If `row.len() != cols`, or as [`CsrBuf::end_row`].
    pub fn push_dense_row(&mut self, row: &[T]) {
        assert_eq!(row.len(), self.cols, "push_dense_row: row length");
        for (c, &v) in row.iter().enumerate() {
            if v != T::ZERO {
                self.indices.push(c as u32);
                self.values.push(v);
            }
        }
        self.end_row();
    }

    /// The rows built so far.
    pub fn view(&self) -> Csr<'_, T> {
        Csr {
            rows: self.rows(),
            cols: self.cols,
            offsets: &self.offsets,
            indices: &self.indices,
            values: &self.values,
        }
    }

    /// Replaces the contents with the transpose of `a` (`a.cols()` rows of `a.rows()`
    /// columns), by a counting sort: each row of the result lists, in increasing order, the
    /// rows of `a` that have a nonzero in that column. `O(nnz + rows + cols)`, no allocation.
    ///
    /// # Panics
    /// If this buffer was made for other dimensions than `a`'s transpose.
    pub fn transpose_from(&mut self, a: Csr<'_, T>) {
        assert!(
            self.cols == a.rows() && self.max_rows >= a.cols(),
            "transpose_from: a {}×{} matrix does not fit a buffer of {} rows × {} columns",
            a.rows(),
            a.cols(),
            self.max_rows,
            self.cols
        );
        let nnz = a.nnz();
        // Counts per column of `a`, shifted by one, then their prefix sums: offsets[c] is
        // where column c's entries start.
        self.offsets.clear();
        self.offsets.resize(a.cols() + 1, 0);
        for &c in a.indices() {
            self.offsets[c as usize + 1] += 1;
        }
        for c in 0..a.cols() {
            self.offsets[c + 1] += self.offsets[c];
        }
        self.indices.clear();
        self.indices.resize(nnz, 0);
        self.values.clear();
        self.values.resize(nnz, T::ZERO);
        // Place each entry at its column's cursor, kept in offsets[c]; rows of `a` are visited
        // in order, so each result row comes out sorted. Afterwards offsets[c] holds column
        // c's end, which is column c + 1's start: shift them back by one.
        for i in 0..a.rows() {
            let (cols, vals) = a.row(i);
            for (&c, &v) in cols.iter().zip(vals) {
                let at = self.offsets[c as usize] as usize;
                self.indices[at] = i as u32;
                self.values[at] = v;
                self.offsets[c as usize] += 1;
            }
        }
        for c in (1..=a.cols()).rev() {
            self.offsets[c] = self.offsets[c - 1];
        }
        self.offsets[0] = 0;
    }
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    use super::*;
    use alloc::vec;

    fn dense(rows: usize, cols: usize, seed: u64) -> Vec<f64> {
        let mut rng = crate::Rng::new(seed);
        (0..rows * cols)
            .map(|_| {
                if rng.below(3) == 0 {
                    rng.below(9) as f64 - 4.0
                } else {
                    0.0
                }
            })
            .collect()
    }

    #[test]
    fn dense_rows_round_trip_and_transpose() {
        for (rows, cols) in [(0, 3), (3, 0), (1, 1), (4, 7), (9, 5), (13, 31)] {
            let x = dense(rows, cols, (rows * 100 + cols) as u64);
            let mut buf = CsrBuf::new(rows, cols).unwrap();
            for r in x.chunks(cols.max(1)).take(rows) {
                buf.push_dense_row(&r[..cols]);
            }
            if cols == 0 {
                for _ in 0..rows {
                    buf.end_row();
                }
            }
            let v = buf.view();
            assert_eq!((v.rows(), v.cols()), (rows, cols));
            assert_eq!(v.nnz(), x.iter().filter(|&&e| e != 0.0).count());
            let mut back = vec![f64::NAN; rows * cols];
            v.to_dense(&mut back);
            assert_eq!(back, x);
            // Checked again by the public constructor.
            let again = Csr::new(rows, cols, v.offsets(), v.indices(), v.values()).unwrap();
            assert_eq!(again.nnz(), v.nnz());

            let mut t = CsrBuf::new(cols, rows).unwrap();
            t.transpose_from(v);
            let tv = t.view();
            assert_eq!((tv.rows(), tv.cols()), (cols, rows));
            Csr::new(cols, rows, tv.offsets(), tv.indices(), tv.values()).unwrap();
            let mut td = vec![f64::NAN; rows * cols];
            tv.to_dense(&mut td);
            for i in 0..rows {
                for j in 0..cols {
                    assert_eq!(td[j * rows + i], x[i * cols + j]);
                }
            }
        }
    }

    #[test]
    fn refilling_reuses_the_memory() {
        let mut buf = CsrBuf::new(4, 6).unwrap();
        let x = [1.0f32; 24];
        for _ in 0..3 {
            buf.clear();
            let caps = (buf.indices.capacity(), buf.values.capacity());
            for r in x.chunks(6) {
                buf.push_dense_row(r);
            }
            assert_eq!(buf.view().nnz(), 24);
            assert_eq!(caps, (buf.indices.capacity(), buf.values.capacity()));
        }
    }

    #[test]
    fn broken_arrays_are_refused_by_name() {
        let ok = Csr::new(2, 3, &[0, 1, 2], &[2, 0], &[1.0f32, 2.0]);
        assert!(ok.is_ok());
        let err = |r: Result<Csr<'_, f32>>| r.unwrap_err();
        assert!(matches!(
            err(Csr::new(2, 3, &[0, 1], &[2], &[1.0])),
            Error::ShapeMismatch { .. }
        ));
        assert!(matches!(
            err(Csr::new(1, 3, &[0, 1], &[2], &[1.0, 2.0])),
            Error::ShapeMismatch { .. }
        ));
        assert!(matches!(
            err(Csr::new(2, 3, &[0, 2, 1], &[0, 1], &[1.0, 2.0])),
            Error::InvalidValue { .. }
        ));
        assert!(matches!(
            err(Csr::new(1, 3, &[0, 1], &[3], &[1.0])),
            Error::InvalidValue { what } if what.contains("out of range")
        ));
        assert!(matches!(
            err(Csr::new(1, 3, &[0, 2], &[1, 1], &[1.0, 2.0])),
            Error::InvalidValue { what } if what.contains("increase")
        ));
        assert!(matches!(
            err(Csr::new(1, 3, &[1, 1], &[], &[])),
            Error::InvalidValue { .. }
        ));
        assert!(CsrBuf::<f32>::new(1 << 20, 1 << 13).is_err());
    }
}
