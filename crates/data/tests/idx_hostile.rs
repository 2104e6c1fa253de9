//! The IDX file reader on arbitrary and damaged gzip streams: never a panic, never an allocation the input does not justify.
//!
//! `tests/idx.rs` mutates the *uncompressed* bytes and gzips them afterwards, so every gzip
//! stream there is intact. Here the compressed bytes themselves are arbitrary or damaged,
//! which is what a truncated download or a hostile mirror delivers, and a counting allocator
//! bounds what the reader allocates for them.

mod common;

use std::fs;

use common::{TempDir, gzip, idx_bytes};
use manabi_data::{Idx, parse_idx, read_idx};
use manabi_testkit::{TrackingAllocator, measure};
use proptest::prelude::*;

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator;

/// Reads `bytes` as an IDX file; returns the result and the largest allocation made.
fn read(dir: &TempDir, bytes: &[u8]) -> (Option<Idx>, usize) {
    let path = dir.path().join("f");
    fs::write(&path, bytes).unwrap();
    let (idx, seen) = measure(|| read_idx(&path).ok());
    (idx, seen.largest)
}

/// Fixed buffers the reader may allocate whatever the input: the 64 KiB read buffer (the
/// largest allocation measured for small inputs), the inflater's state (a 32 KiB window plus
/// tables) and the path and error strings.
const FIXED: usize = 128 << 10;

/// The most a `len`-byte file can justify: deflate expands at most ~1032:1, and the payload
/// buffer may grow by doubling past what was read.
fn justified(len: usize) -> usize {
    FIXED + 2 * 1032 * len
}

/// A small valid IDX file: rank 1..=3, dimensions 1..=6.
fn valid_idx() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(1u32..=6, 1..=3).prop_flat_map(|dims| {
        let n = dims.iter().product::<u32>() as usize;
        prop::collection::vec(any::<u8>(), n).prop_map(move |p| idx_bytes(&dims, &p))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn arbitrary_bytes_behind_the_gzip_magic_never_panic(
        tail in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let dir = TempDir::new("hostile-gz");
        let mut bytes = vec![0x1f, 0x8b];
        bytes.extend_from_slice(&tail);
        let (idx, largest) = read(&dir, &bytes);
        if let Some(idx) = idx {
            prop_assert_eq!(idx.data.len(), idx.dims.iter().product::<usize>());
        }
        prop_assert!(largest <= justified(bytes.len()), "{} bytes for {}", largest, bytes.len());
    }

    #[test]
    fn damaged_gzip_streams_are_refused_or_read_exactly(
        file in valid_idx(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in 0usize..8,
    ) {
        let dir = TempDir::new("hostile-gz-edit");
        let mut gz = gzip(&file);
        for (pos, value) in &edits {
            let i = pos.index(gz.len());
            gz[i] = *value;
        }
        gz.truncate(gz.len().saturating_sub(cut));
        let (idx, largest) = read(&dir, &gz);
        // Edits to the gzip header's timestamp or OS byte change nothing; a damaged deflate
        // stream that still decodes must also match the trailer's CRC-32 and length (a 2⁻³²
        // chance for different data): whatever reads back is the original file.
        if let Some(idx) = idx {
            prop_assert_eq!(idx, parse_idx(&file).unwrap());
        }
        prop_assert!(largest <= justified(gz.len()), "{} bytes for {}", largest, gz.len());
    }

    #[test]
    fn arbitrary_raw_files_allocate_at_most_their_size(
        bytes in prop::collection::vec(any::<u8>(), 0..300),
        header in prop::collection::vec(any::<u32>(), 0..4),
    ) {
        // Half the cases get a plausible prefix so that the dimensions are read.
        let dir = TempDir::new("hostile-raw");
        let mut b = vec![0, 0, 8, header.len() as u8];
        for d in &header {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b.extend_from_slice(&bytes);
        for input in [&bytes, &b] {
            let (idx, largest) = read(&dir, input);
            prop_assert_eq!(idx, parse_idx(input).ok());
            prop_assert!(largest <= FIXED + input.len(), "{} bytes for {}", largest, input.len());
        }
    }
}
