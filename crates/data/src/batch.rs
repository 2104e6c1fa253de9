//! Minibatches gathered into caller-owned buffers, with a checkpointable sampling position.
//!
//! Nothing here allocates per batch: the caller owns `x` and `labels` (sized once for the
//! largest batch) and the random generator, so one seeded [`Rng`] drives a whole run and
//! its state can be saved with the [`BatcherState`].

use manabi_tensor::{Csr, CsrBuf, Real, Rng};

use crate::{DataError, Dataset};

/// How [`Batcher::next_batch`] chooses samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sampling {
    /// As in the book (`np.random.choice(train_size, batch_size)`, whose default is
    /// `replace=True`): every batch draws `batch` indices uniformly **with replacement**,
    /// independently of earlier batches. Every batch is full.
    Random,
    /// A fresh random permutation per epoch, cut into consecutive batches. The last batch
    /// of an epoch is **kept** even when smaller (`len % batch` rows), so every sample is
    /// seen exactly once per epoch; the caller uses a prefix of its buffers for it.
    EpochShuffle,
}

impl Sampling {
    /// Both ways, in the order [`Sampling::name`] lists them.
    pub const ALL: [Self; 2] = [Self::Random, Self::EpochShuffle];

    /// The name a flag or file gives it: `random` or `shuffle`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Random => "random",
            Self::EpochShuffle => "shuffle",
        }
    }

    /// The sampling [`Sampling::name`] gives `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// Draws minibatches from a data set of a fixed length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batcher {
    sampling: Sampling,
    batch: usize,
    len: usize,
    /// The current epoch's order ([`Sampling::EpochShuffle`] only; empty otherwise).
    perm: Vec<usize>,
    /// Next position in `perm`; `len` means "shuffle before the next batch".
    cursor: usize,
    /// Completed passes over the data ([`Sampling::EpochShuffle`] only).
    epochs: u64,
}

/// A [`Batcher`]'s full position, for checkpoints (see [`BatcherState::to_words`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatcherState {
    /// The sampling scheme.
    pub sampling: Sampling,
    /// Rows per batch.
    pub batch: usize,
    /// Length of the data set sampled from.
    pub len: usize,
    /// Next position in `perm` (`len` = a new permutation is drawn before the next batch).
    pub cursor: usize,
    /// Completed epochs.
    pub epochs: u64,
    /// The current permutation of `0..len` (empty for [`Sampling::Random`]).
    pub perm: Vec<usize>,
}

/// Samples the gather asks the CPU to fetch before it copies them: random rows of a large
/// set miss every cache, and a copy that starts its fetch two rows early takes about half the
/// time; fetching further ahead gains nothing more.
const PREFETCH_AHEAD: usize = 2;

/// Version tag at the start of [`BatcherState::to_words`].
const STATE_VERSION: u64 = 1;

impl BatcherState {
    /// The state as a flat `u64` array (e.g. to store as a tensor in a checkpoint):
    /// `[version, sampling (0 Random, 1 EpochShuffle), batch, len, cursor, epochs, perm…]`.
    pub fn to_words(&self) -> Vec<u64> {
        let sampling = match self.sampling {
            Sampling::Random => 0,
            Sampling::EpochShuffle => 1,
        };
        let mut w = Vec::with_capacity(6 + self.perm.len());
        w.extend([
            STATE_VERSION,
            sampling,
            self.batch as u64,
            self.len as u64,
            self.cursor as u64,
            self.epochs,
        ]);
        w.extend(self.perm.iter().map(|&i| i as u64));
        w
    }

    /// Reads [`BatcherState::to_words`] back. The result is validated by
    /// [`Batcher::from_state`], not here.
    ///
    /// # Errors
    /// [`DataError::Invalid`] for an unknown version or sampling code, a short array, or a
    /// number that does not fit in `usize`.
    pub fn from_words(words: &[u64]) -> Result<Self, DataError> {
        let bad = |what: &str| DataError::Invalid {
            what: format!("batcher state: {what}"),
        };
        let [version, sampling, batch, len, cursor, epochs, perm @ ..] = words else {
            return Err(bad("fewer than 6 words"));
        };
        if *version != STATE_VERSION {
            return Err(bad(&format!("unknown version {version}")));
        }
        let sampling = match sampling {
            0 => Sampling::Random,
            1 => Sampling::EpochShuffle,
            other => return Err(bad(&format!("unknown sampling code {other}"))),
        };
        let size = |v: u64| usize::try_from(v).map_err(|_| bad("value too large for usize"));
        Ok(Self {
            sampling,
            batch: size(*batch)?,
            len: size(*len)?,
            cursor: size(*cursor)?,
            epochs: *epochs,
            perm: perm.iter().map(|&v| size(v)).collect::<Result<_, _>>()?,
        })
    }
}

impl Batcher {
    /// A batcher drawing `batch` rows per call from a data set of `len` samples. The first
    /// [`Sampling::EpochShuffle`] batch draws the first permutation.
    ///
    /// # Errors
    /// [`DataError::Invalid`] if `batch` or `len` is zero.
    pub fn new(sampling: Sampling, batch: usize, len: usize) -> Result<Self, DataError> {
        if batch == 0 || len == 0 {
            return Err(DataError::Invalid {
                what: format!("batch size ({batch}) and data set length ({len}) must be nonzero"),
            });
        }
        let perm = match sampling {
            Sampling::Random => Vec::new(),
            Sampling::EpochShuffle => (0..len).collect(),
        };
        Ok(Self {
            sampling,
            batch,
            len,
            perm,
            cursor: len,
            epochs: 0,
        })
    }

    /// Rows per full batch.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// The data set length this batcher was made for.
    pub fn data_len(&self) -> usize {
        self.len
    }

    /// The sampling scheme.
    pub fn sampling(&self) -> Sampling {
        self.sampling
    }

    /// Completed passes over the data ([`Sampling::EpochShuffle`]; always 0 for
    /// [`Sampling::Random`], where the caller counts `len / batch` steps as an epoch, as
    /// the book does).
    pub fn epochs(&self) -> u64 {
        self.epochs
    }

    /// Fills the first rows of `x` (`rows × features`) and `labels` with the next batch and
    /// returns `rows`: `batch` for [`Sampling::Random`], at most `batch` for
    /// [`Sampling::EpochShuffle`] (smaller at the end of an epoch). Samples are converted to
    /// `T` as they are copied (see [`Dataset`]). Allocates nothing.
    ///
    /// # Panics
    /// If `data.len()` differs from the length the batcher was made for (checked in debug
    /// builds; in release an out-of-range index panics in the copy), or if `x` is shorter
    /// than `batch × features` or `labels` shorter than `batch`.
    pub fn next_batch<T: Real>(
        &mut self,
        rng: &mut Rng,
        data: &Dataset,
        x: &mut [T],
        labels: &mut [usize],
    ) -> usize {
        debug_assert_eq!(data.len(), self.len, "batcher made for another data set");
        match self.sampling {
            Sampling::Random => {
                let f = data.features();
                let (x, labels) = (&mut x[..self.batch * f], &mut labels[..self.batch]);
                // A second generator in the same state runs PREFETCH_AHEAD draws ahead, so
                // the rows about to be copied are already on their way from memory.
                let mut ahead = rng.clone();
                for _ in 0..PREFETCH_AHEAD.min(self.batch) {
                    data.prefetch_sample(ahead.below(self.len));
                }
                for (r, (row, label)) in x.chunks_exact_mut(f).zip(labels.iter_mut()).enumerate() {
                    if r + PREFETCH_AHEAD < self.batch {
                        data.prefetch_sample(ahead.below(self.len));
                    }
                    let i = rng.below(self.len);
                    data.copy_sample(i, row);
                    *label = data.labels()[i];
                }
                self.batch
            }
            Sampling::EpochShuffle => {
                let next = self.advance_shuffled(rng);
                gather(data, &self.perm[next.clone()], x, labels);
                next.len()
            }
        }
    }

    /// Draws the next batch's sample indices into `indices` (at least `batch` long) and
    /// returns how many there are, advancing `rng` and the position exactly as
    /// [`Batcher::next_batch`] does: `gather(data, &indices[..rows], …)` then copies the same
    /// batch. For a caller that copies the samples elsewhere (another thread) or later.
    ///
    /// # Panics
    /// If `indices` is shorter than `batch`.
    pub fn next_indices(&mut self, rng: &mut Rng, indices: &mut [usize]) -> usize {
        match self.sampling {
            Sampling::Random => {
                for i in &mut indices[..self.batch] {
                    *i = rng.below(self.len);
                }
                self.batch
            }
            Sampling::EpochShuffle => {
                let next = self.advance_shuffled(rng);
                indices[..next.len()].copy_from_slice(&self.perm[next.clone()]);
                next.len()
            }
        }
    }

    /// [`Sampling::EpochShuffle`]: moves past the next batch, shuffling first when an epoch
    /// begins, and returns where that batch lies in `perm`.
    fn advance_shuffled(&mut self, rng: &mut Rng) -> core::ops::Range<usize> {
        if self.cursor >= self.len {
            for (k, p) in self.perm.iter_mut().enumerate() {
                *p = k;
            }
            rng.shuffle(&mut self.perm);
            self.cursor = 0;
        }
        let next = self.cursor..self.len.min(self.cursor + self.batch);
        self.cursor = next.end;
        if self.cursor == self.len {
            self.epochs += 1;
        }
        next
    }

    /// The current position, for checkpoints (copies the permutation).
    pub fn state(&self) -> BatcherState {
        BatcherState {
            sampling: self.sampling,
            batch: self.batch,
            len: self.len,
            cursor: self.cursor,
            epochs: self.epochs,
            perm: self.perm.clone(),
        }
    }

    /// Restores a batcher saved with [`Batcher::state`]; with the generator restored too,
    /// the following batches are exactly those the saved run would have drawn.
    ///
    /// # Errors
    /// [`DataError::Invalid`] if `batch` or `len` is zero, `cursor > len`, or `perm` is not
    /// a permutation of `0..len` (empty for [`Sampling::Random`]).
    pub fn from_state(state: BatcherState) -> Result<Self, DataError> {
        let bad = |what: String| {
            Err(DataError::Invalid {
                what: format!("batcher state: {what}"),
            })
        };
        let BatcherState {
            sampling,
            batch,
            len,
            cursor,
            epochs,
            perm,
        } = state;
        if batch == 0 || len == 0 {
            return bad(format!(
                "batch ({batch}) and length ({len}) must be nonzero"
            ));
        }
        if cursor > len {
            return bad(format!("cursor {cursor} is past the length {len}"));
        }
        match sampling {
            Sampling::Random if !perm.is_empty() => {
                return bad("random sampling keeps no permutation".into());
            }
            Sampling::EpochShuffle => {
                if perm.len() != len {
                    return bad(format!(
                        "permutation has {} entries for {len} samples",
                        perm.len()
                    ));
                }
                let mut seen = vec![false; len];
                for &i in &perm {
                    if i >= len || seen[i] {
                        return bad(format!("permutation repeats or exceeds index {i}"));
                    }
                    seen[i] = true;
                }
            }
            Sampling::Random => {}
        }
        Ok(Self {
            sampling,
            batch,
            len,
            perm,
            cursor,
            epochs,
        })
    }
}

/// Copies samples `indices` of `data` into the first `indices.len()` rows of `x`
/// (`features` values each) and their labels into `labels`. Allocates nothing.
///
/// # Panics
/// If an index is `>= data.len()`, or `x` / `labels` are too short.
pub fn gather<T: Real>(data: &Dataset, indices: &[usize], x: &mut [T], labels: &mut [usize]) {
    let f = data.features();
    let rows = indices.len();
    let x = &mut x[..rows * f];
    let labels = &mut labels[..rows];
    for &i in indices.iter().take(PREFETCH_AHEAD) {
        data.prefetch_sample(i);
    }
    for (r, ((row, label), &i)) in x
        .chunks_exact_mut(f)
        .zip(labels.iter_mut())
        .zip(indices)
        .enumerate()
    {
        if let Some(&next) = indices.get(r + PREFETCH_AHEAD) {
            data.prefetch_sample(next);
        }
        data.copy_sample(i, row);
        *label = data.labels()[i];
    }
}

/// [`gather`] for compressed rows: rows `indices` of `rows` (a whole set, from
/// [`Dataset::to_sparse`]) are copied into `x` (cleared first), their labels (`all_labels`,
/// one per row of `rows`) into `labels`. Nothing is allocated.
///
/// # Panics
/// If an index is `>= rows.rows()`, `x` is too small or of another width, or `labels` is too
/// short.
pub fn gather_rows<T: Real>(
    rows: Csr<'_, T>,
    all_labels: &[usize],
    indices: &[usize],
    x: &mut CsrBuf<T>,
    labels: &mut [usize],
) {
    x.clear();
    for (label, &i) in labels[..indices.len()].iter_mut().zip(indices) {
        x.push_row_of(rows, i);
        *label = all_labels[i];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Five samples of two features; sample `i` is `[i, 10 + i]` with label `i`.
    fn tiny() -> Dataset {
        let images = (0..5).flat_map(|i| [i as f32, 10.0 + i as f32]).collect();
        Dataset::new(images, vec![2], (0..5).collect()).unwrap()
    }

    #[test]
    fn epoch_shuffle_sees_every_sample_once_and_keeps_the_short_batch() {
        let data = tiny();
        let mut b = Batcher::new(Sampling::EpochShuffle, 2, 5).unwrap();
        let mut rng = Rng::new(9);
        let (mut x, mut y) = ([f32::NAN; 4], [usize::MAX; 2]);
        for _epoch in 0..3 {
            let mut seen = Vec::new();
            for expected_rows in [2, 2, 1] {
                let rows = b.next_batch(&mut rng, &data, &mut x, &mut y);
                assert_eq!(rows, expected_rows);
                for r in 0..rows {
                    // Rows and labels stay paired.
                    assert_eq!(x[2 * r], y[r] as f32);
                    assert_eq!(x[2 * r + 1], 10.0 + y[r] as f32);
                }
                seen.extend_from_slice(&y[..rows]);
            }
            seen.sort_unstable();
            assert_eq!(seen, vec![0, 1, 2, 3, 4]);
        }
        assert_eq!(b.epochs(), 3);
    }

    #[test]
    fn words_round_trip_and_bad_states_are_refused() {
        let mut b = Batcher::new(Sampling::EpochShuffle, 2, 5).unwrap();
        let (mut x, mut y) = ([0.0; 4], [0; 2]);
        b.next_batch(&mut Rng::new(1), &tiny(), &mut x, &mut y);
        let s = b.state();
        let back = BatcherState::from_words(&s.to_words()).unwrap();
        assert_eq!(back, s);
        assert_eq!(Batcher::from_state(back).unwrap(), b);

        let mut dup = s.clone();
        dup.perm[0] = dup.perm[1];
        assert!(Batcher::from_state(dup).is_err());
        let mut past = s.clone();
        past.cursor = 6;
        assert!(Batcher::from_state(past).is_err());
        assert!(BatcherState::from_words(&[2, 0, 1, 1, 0, 0]).is_err());
        assert!(BatcherState::from_words(&[1, 0, 1]).is_err());
        assert!(Batcher::new(Sampling::Random, 0, 5).is_err());
        assert!(Batcher::new(Sampling::Random, 1, 0).is_err());
    }
}
