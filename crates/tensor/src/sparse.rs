//! Compressed sparse rows: a checked view of a matrix's nonzeros, and an owned builder for it.
//!
//! An MNIST image is about 81 % zero pixels. A first layer that skips them does a fifth of
//! the arithmetic of the dense product, with the same result up to the order of the sums.
//! [`Csr`] holds row `i`'s nonzeros as `indices[offsets[i] − offsets[0]..offsets[i + 1] −
//! offsets[0]]` (their columns, increasing) and the same range of `values`; the offsets need
//! not start at 0, so a block of rows of a larger matrix is a view too ([`Csr::row_range`]).
//! Indices are `u32`: half the memory traffic of `usize` on a 64-bit host, and no width is
//! wider than 2³² here.

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
    /// A view over caller-held arrays: `offsets` has `rows + 1` entries, never decreases and
    /// spans `indices.len() == values.len()` entries (`offsets[rows] − offsets[0]`); every
    /// index is below `cols` and the indices of a row increase.
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
        if offsets.windows(2).any(|w| w[1] < w[0]) {
            return Err(Error::InvalidValue {
                what: "CSR offsets must never decrease",
            });
        }
        let base = offsets[0];
        if (offsets[rows] - base) as usize != indices.len() {
            return Err(Error::InvalidValue {
                what: "CSR offsets must span the number of nonzeros",
            });
        }
        for w in offsets.windows(2) {
            let row = &indices[(w[0] - base) as usize..(w[1] - base) as usize];
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
        let base = self.offsets[0];
        let (lo, hi) = (
            (self.offsets[i] - base) as usize,
            (self.offsets[i + 1] - base) as usize,
        );
        (&self.indices[lo..hi], &self.values[lo..hi])
    }

    /// Rows `first .. first + n` as a view of their own, without copying.
    ///
    /// # Panics
    /// If `first + n > rows()`.
    pub fn row_range(&self, first: usize, n: usize) -> Csr<'a, T> {
        let offsets = &self.offsets[first..=first + n];
        let base = self.offsets[0];
        let (lo, hi) = ((offsets[0] - base) as usize, (offsets[n] - base) as usize);
        Csr {
            rows: n,
            cols: self.cols,
            offsets,
            indices: &self.indices[lo..hi],
            values: &self.values[lo..hi],
        }
    }

    /// The row offsets (`rows + 1` entries; row `i` is `offsets[i] − offsets[0]` entries into
    /// [`Csr::indices`]).
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

/// Writes the nonzero bytes of `bytes` as entries `(first + j, table[b])` from position `n`
/// of `indices` and `values` on, and returns the position after the last one.
#[inline]
fn write_nonzero_bytes<T: Copy>(
    bytes: &[u8],
    first: u32,
    table: &[T; 256],
    indices: &mut [u32],
    values: &mut [T],
    mut n: usize,
) -> usize {
    for (j, &b) in (first..).zip(bytes) {
        if b != 0 {
            indices[n] = j;
            values[n] = table[usize::from(b)];
            n += 1;
        }
    }
    n
}

/// Compressed rows of `bytes` (`rows × cols` values, each nonzero byte `b` becoming
/// `table[b]`) written into caller-held arrays, without a heap: for a microcontroller, whose
/// batch buffers are `static`s. Returns `None`, writing nothing useful, when `offsets` is not
/// `rows + 1` long or the nonzeros do not fit `indices` and `values` (the caller then takes
/// its dense path).
///
/// # Panics
/// If `bytes.len()` is not a multiple of `cols`.
pub fn csr_from_bytes<'a, T: Real>(
    bytes: &[u8],
    cols: usize,
    table: &[T; 256],
    offsets: &'a mut [u32],
    indices: &'a mut [u32],
    values: &'a mut [T],
) -> Option<Csr<'a, T>> {
    assert!(
        cols > 0 && bytes.len() % cols == 0,
        "csr_from_bytes: {} bytes are not rows of {cols}",
        bytes.len()
    );
    let rows = bytes.len() / cols;
    let nnz = bytes.iter().filter(|&&b| b != 0).count();
    let room = indices.len().min(values.len());
    if offsets.len() != rows + 1 || nnz > room || u32::try_from(cols.max(nnz)).is_err() {
        return None;
    }
    let mut n = 0;
    offsets[0] = 0;
    for (row, end) in bytes.chunks_exact(cols).zip(&mut offsets[1..]) {
        n = write_nonzero_bytes(row, 0, table, indices, values, n);
        *end = n as u32;
    }
    Some(Csr {
        rows,
        cols,
        offsets,
        indices: &indices[..nnz],
        values: &values[..nnz],
    })
}

/// Owned buffers that build a [`Csr`] row by row, sized once so that refilling them never
/// allocates (for a minibatch gathered every step).
///
/// The index and value arrays are allocated (and zeroed) at their full size up front, and
/// the rows fill a prefix of them: a row can then be written without a capacity check per
/// element, and with no branch per element ([`CsrBuf::push_bytes_row`]).
#[cfg(feature = "alloc")]
#[derive(Debug)]
pub struct CsrBuf<T> {
    cols: usize,
    max_rows: usize,
    offsets: Vec<u32>,
    indices: Vec<u32>,
    values: Vec<T>,
    nnz: usize,
}

#[cfg(feature = "alloc")]
impl<T: Real> CsrBuf<T> {
    /// Room for up to `max_rows` rows of `cols` columns, even fully dense, so that nothing
    /// ever reallocates: for a minibatch or a chunk refilled again and again.
    ///
    /// # Errors
    /// [`Error::Overflow`] if `max_rows·cols` does not fit the `u32` offsets.
    pub fn new(max_rows: usize, cols: usize) -> Result<Self> {
        let cap = max_rows.checked_mul(cols).ok_or(Error::Overflow {
            what: "sparse buffer (u32 offsets)",
        })?;
        Self::build(max_rows, cols, cap)
    }

    /// Room for `max_rows` rows of `cols` columns holding `nnz` nonzeros in all: for a whole
    /// data set whose nonzeros were counted first (MNIST's 70,000 images hold 10.5 million,
    /// against 55 million pixels). One row's width of slack is added, which the branch-free
    /// [`CsrBuf::push_bytes_row`] writes into.
    ///
    /// # Errors
    /// [`Error::Overflow`] if the entries do not fit the `u32` offsets.
    pub fn with_capacity(max_rows: usize, cols: usize, nnz: usize) -> Result<Self> {
        let cap = nnz.checked_add(cols).ok_or(Error::Overflow {
            what: "sparse buffer (u32 offsets)",
        })?;
        Self::build(max_rows, cols, cap)
    }

    fn build(max_rows: usize, cols: usize, cap: usize) -> Result<Self> {
        let overflow = Error::Overflow {
            what: "sparse buffer (u32 offsets)",
        };
        if [cap, cols, max_rows]
            .iter()
            .any(|&n| u32::try_from(n).is_err())
        {
            return Err(overflow);
        }
        let mut offsets = Vec::with_capacity(max_rows.checked_add(1).ok_or(overflow)?);
        offsets.push(0);
        Ok(Self {
            cols,
            max_rows,
            offsets,
            indices: alloc::vec![0; cap],
            values: alloc::vec![T::ZERO; cap],
            nnz: 0,
        })
    }

    /// Checks that one more row of up to `cols` entries fits (the writes of the row builders
    /// are not bounds-checked one by one against the number of rows).
    fn room_for_a_row(&self) {
        assert!(
            self.rows() < self.max_rows && self.nnz + self.cols <= self.indices.len(),
            "CsrBuf: no room for another row ({} of {} rows, {} of {} entries)",
            self.rows(),
            self.max_rows,
            self.nnz,
            self.indices.len()
        );
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
        self.nnz = 0;
    }

    /// The start of the row being built.
    fn row_start(&self) -> usize {
        self.offsets[self.offsets.len() - 1] as usize
    }

    /// Adds a nonzero to the current row. Columns must increase within a row.
    ///
    /// # Panics
    /// If `col >= cols` or does not follow the row's previous column, the buffer already holds
    /// `max_rows` rows, or its entries are used up (caller bugs; `CsrBuf::new` sizes for
    /// fully dense rows).
    #[inline]
    pub fn push(&mut self, col: usize, value: T) {
        assert!(
            col < self.cols
                && self.rows() < self.max_rows
                && (self.nnz == self.row_start() || (self.indices[self.nnz - 1] as usize) < col),
            "CsrBuf::push: column {col} out of order or range, or too many rows"
        );
        self.indices[self.nnz] = col as u32;
        self.values[self.nnz] = value;
        self.nnz += 1;
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
        self.offsets.push(self.nnz as u32);
    }

    /// Appends a dense row, keeping its nonzeros.
    ///
    /// # Panics
    /// If `row.len() != cols`, or as [`CsrBuf::end_row`].
    pub fn push_dense_row(&mut self, row: &[T]) {
        assert_eq!(row.len(), self.cols, "push_dense_row: row length");
        self.room_for_a_row();
        let mut n = self.nnz;
        for (c, &v) in row.iter().enumerate() {
            if v != T::ZERO {
                self.indices[n] = c as u32;
                self.values[n] = v;
                n += 1;
            }
        }
        self.nnz = n;
        self.end_row();
    }

    /// Appends a row given as bytes (an image's pixels): each nonzero byte `b` at position
    /// `j` becomes the entry `(j, table[b])`. Eight-byte words that are all zero (most of an
    /// MNIST image's border) are skipped whole; within the others each byte is written without
    /// a branch and kept only if nonzero.
    ///
    /// # Panics
    /// If `row.len() != cols`, or as [`CsrBuf::end_row`].
    pub fn push_bytes_row(&mut self, row: &[u8], table: &[T; 256]) {
        assert_eq!(row.len(), self.cols, "push_bytes_row: row length");
        // Every write below lands before `nnz + cols`, within the arrays.
        self.room_for_a_row();
        let (indices, values) = (&mut self.indices[..], &mut self.values[..]);
        let mut n = self.nnz;
        let mut words = row.chunks_exact(8);
        let mut at = 0u32;
        for word in words.by_ref() {
            if word.iter().fold(0, |acc, &b| acc | b) != 0 {
                for (j, &b) in (at..).zip(word) {
                    indices[n] = j;
                    values[n] = table[usize::from(b)];
                    n += usize::from(b != 0);
                }
            }
            at += 8;
        }
        self.nnz = write_nonzero_bytes(words.remainder(), at, table, indices, values, n);
        self.end_row();
    }

    /// Appends row `i` of `src` (a copy of its entries).
    ///
    /// # Panics
    /// If `src` is not as wide as this buffer, `i >= src.rows()`, or there is no room.
    pub fn push_row_of(&mut self, src: Csr<'_, T>, i: usize) {
        assert_eq!(src.cols(), self.cols, "push_row_of: widths differ");
        self.room_for_a_row();
        let (cols, vals) = src.row(i);
        let end = self.nnz + cols.len();
        self.indices[self.nnz..end].copy_from_slice(cols);
        self.values[self.nnz..end].copy_from_slice(vals);
        self.nnz = end;
        self.end_row();
    }

    /// The rows built so far.
    pub fn view(&self) -> Csr<'_, T> {
        Csr {
            rows: self.rows(),
            cols: self.cols,
            offsets: &self.offsets,
            indices: &self.indices[..self.nnz],
            values: &self.values[..self.nnz],
        }
    }

    /// Replaces the contents with the transpose of `a` (`a.cols()` rows of `a.rows()`
    /// columns: the width becomes `a.rows()`, so a buffer made for a full batch also takes a
    /// short last one), by a counting sort: each row of the result lists, in increasing order,
    /// the rows of `a` that have a nonzero in that column. `O(nnz + rows + cols)`, no
    /// allocation.
    ///
    /// # Panics
    /// If `a`'s transpose does not fit: more than `max_rows` rows, or more nonzeros than
    /// the buffer holds.
    pub fn transpose_from(&mut self, a: Csr<'_, T>) {
        assert!(
            self.max_rows >= a.cols() && self.indices.len() >= a.nnz(),
            "transpose_from: a {}×{} matrix with {} nonzeros does not fit {} rows and {} entries",
            a.rows(),
            a.cols(),
            a.nnz(),
            self.max_rows,
            self.indices.len()
        );
        self.cols = a.rows();
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
        self.nnz = a.nnz();
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

            // Every block of rows is the matching block of the dense matrix.
            for first in 0..=rows {
                for n in 0..=rows - first {
                    let block = v.row_range(first, n);
                    let mut d = vec![f64::NAN; n * cols];
                    block.to_dense(&mut d);
                    assert_eq!(d, x[first * cols..(first + n) * cols]);
                    let again = Csr::new(n, cols, block.offsets(), block.indices(), block.values());
                    assert_eq!(again.unwrap().nnz(), block.nnz());
                }
            }

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
    fn byte_rows_keep_the_nonzero_bytes_through_the_table() {
        let table: [f64; 256] = core::array::from_fn(|b| b as f64 / 2.0);
        // 21 bytes: two whole words (one all zero) and a remainder of five.
        let row: [u8; 21] = [
            0, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 255, 0, 0, 0, 1, 0, 3, 0, 0, 9,
        ];
        let mut buf = CsrBuf::new(3, 21).unwrap();
        buf.push_bytes_row(&row, &table);
        buf.push_bytes_row(&[0; 21], &table);
        buf.push_bytes_row(&[2; 21], &table);
        let v = buf.view();
        assert_eq!(v.row(0).0, &[8, 11, 15, 17, 20]);
        assert_eq!(v.row(0).1, &[3.5, 127.5, 0.5, 1.5, 4.5]);
        assert_eq!(v.row(1).0.len(), 0);
        assert_eq!(v.row(2).1, &[1.0; 21]);
        Csr::new(3, 21, v.offsets(), v.indices(), v.values()).unwrap();
    }

    #[test]
    fn bytes_into_caller_arrays_match_the_builder_or_do_not_fit() {
        let table: [f32; 256] = core::array::from_fn(|b| b as f32 / 4.0);
        let bytes: [u8; 12] = [0, 3, 0, 0, 9, 0, 0, 0, 0, 1, 1, 255];
        let (mut offsets, mut indices, mut values) = ([9u32; 4], [9u32; 6], [9.0f32; 6]);
        let v = csr_from_bytes(&bytes, 4, &table, &mut offsets, &mut indices, &mut values).unwrap();
        let mut built = CsrBuf::new(3, 4).unwrap();
        for r in bytes.chunks(4) {
            built.push_bytes_row(r, &table);
        }
        let b = built.view();
        assert_eq!(
            (v.offsets(), v.indices(), v.values()),
            (b.offsets(), b.indices(), b.values())
        );
        // Five nonzeros do not fit four entries; a wrong offsets length is refused.
        let (mut o, mut i, mut x) = ([0u32; 4], [0u32; 4], [0.0f32; 4]);
        assert!(csr_from_bytes(&bytes, 4, &table, &mut o, &mut i, &mut x).is_none());
        let (mut o, mut i, mut x) = ([0u32; 3], [0u32; 8], [0.0f32; 8]);
        assert!(csr_from_bytes(&bytes, 4, &table, &mut o, &mut i, &mut x).is_none());
    }

    #[test]
    fn an_exact_capacity_holds_its_rows_and_rows_copy_across() {
        let rows: [[u8; 10]; 3] = [[0, 0, 5, 0, 0, 0, 0, 0, 0, 1], [0; 10], [3; 10]];
        let nnz = rows.iter().flatten().filter(|&&b| b != 0).count();
        let table: [f32; 256] = core::array::from_fn(|b| b as f32);
        let mut all = CsrBuf::with_capacity(3, 10, nnz).unwrap();
        for r in &rows {
            all.push_bytes_row(r, &table);
        }
        assert_eq!(all.view().nnz(), 12);
        let mut picked = CsrBuf::new(4, 10).unwrap();
        for i in [2, 0, 0, 1] {
            picked.push_row_of(all.view(), i);
        }
        let v = picked.view();
        assert_eq!(v.row(0).1, &[3.0; 10]);
        assert_eq!((v.row(1).0, v.row(2).0), (&[2, 9][..], &[2, 9][..]));
        assert_eq!(v.row(3).0.len(), 0);
    }

    #[test]
    fn a_short_batch_transposes_into_a_full_batch_buffer_and_back() {
        let mut rows = CsrBuf::new(4, 3).unwrap();
        let mut cols = CsrBuf::new(3, 4).unwrap();
        for n in [4, 2, 4] {
            rows.clear();
            for i in 0..n {
                rows.push_dense_row(&[1.0 + i as f64, 0.0, -(i as f64)]);
            }
            cols.transpose_from(rows.view());
            let t = cols.view();
            assert_eq!((t.rows(), t.cols()), (3, n));
            Csr::new(3, n, t.offsets(), t.indices(), t.values()).unwrap();
            let mut dense = vec![f64::NAN; 3 * n];
            t.to_dense(&mut dense);
            for i in 0..n {
                assert_eq!(
                    [dense[i], dense[n + i], dense[2 * n + i]],
                    [1.0 + i as f64, 0.0, -(i as f64)]
                );
            }
        }
    }

    #[test]
    fn refilling_reuses_the_memory() {
        let mut buf = CsrBuf::new(4, 6).unwrap();
        let x = [1.0f32; 24];
        for _ in 0..3 {
            buf.clear();
            let caps = (buf.indices.as_ptr(), buf.values.as_ptr());
            for r in x.chunks(6) {
                buf.push_dense_row(r);
            }
            assert_eq!(buf.view().nnz(), 24);
            assert_eq!(caps, (buf.indices.as_ptr(), buf.values.as_ptr()));
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
            err(Csr::new(1, 3, &[1, 3], &[0], &[1.0])),
            Error::InvalidValue { .. }
        ));
        // Offsets may start past 0: a block of a larger matrix's rows.
        assert!(Csr::new(1, 3, &[1, 2], &[2], &[1.0f32]).is_ok());
        assert!(CsrBuf::<f32>::new(1 << 20, 1 << 13).is_err());
        assert!(CsrBuf::<f32>::new(usize::MAX, 0).is_err());
    }
}
