//! Lying headers can't make the reader allocate what they claim: largest allocation measured by a counting allocator.

mod common;

use std::fs;
use std::io::Write;

use common::{TempDir, idx_bytes};
use flate2::Compression;
use flate2::write::GzEncoder;
use manabi_data::{DataError, IdxError, read_idx};
use manabi_testkit::{TrackingAllocator, measure};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator;

/// Runs `f` and returns its result with the largest allocation it made on this thread.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let (out, seen) = measure(f);
    (out, seen.largest)
}

const MB: usize = 1 << 20;

#[test]
fn a_raw_file_claiming_two_billion_images_is_refused_before_allocating() {
    let dir = TempDir::new("alloc-raw");
    let path = dir.path().join("liar-idx3-ubyte");
    let mut bytes = idx_bytes(&[1 << 31, 28, 28], &[]);
    bytes.resize(1024, 0);
    fs::write(&path, &bytes).unwrap();
    let (result, largest) = largest_allocation(|| read_idx(&path));
    let e = result.unwrap_err();
    assert!(
        matches!(&e, DataError::Idx { source: IdxError::Truncated { expected, got: 1008, .. }, .. }
            if *expected == (1usize << 31) * 784),
        "{e:?}"
    );
    assert!(largest < MB, "largest allocation {largest} bytes");
}

#[test]
fn a_small_gzip_file_claiming_a_huge_payload_allocates_little() {
    let dir = TempDir::new("alloc-gz");
    let path = dir.path().join("liar.gz");
    let mut enc = GzEncoder::new(Vec::new(), Compression::best());
    enc.write_all(&idx_bytes(&[1 << 31, 28, 28], &[0; 1000]))
        .unwrap();
    let gz = enc.finish().unwrap();
    fs::write(&path, &gz).unwrap();
    let (result, largest) = largest_allocation(|| read_idx(&path));
    assert!(
        matches!(
            result,
            Err(DataError::Idx {
                source: IdxError::Truncated { got: 1000, .. },
                ..
            })
        ),
        "{result:?}"
    );
    assert!(largest < MB, "largest allocation {largest} bytes");
}

#[test]
fn a_gzip_bomb_is_read_no_further_than_the_header_allows() {
    // The header announces 1000×28×28 = 784000 bytes; the stream then inflates to 64 MB.
    let dir = TempDir::new("alloc-bomb");
    let path = dir.path().join("bomb.gz");
    let mut enc = GzEncoder::new(Vec::new(), Compression::best());
    enc.write_all(&idx_bytes(&[1000, 28, 28], &[])).unwrap();
    let zeros = vec![0u8; MB];
    for _ in 0..64 {
        enc.write_all(&zeros).unwrap();
    }
    let gz = enc.finish().unwrap();
    drop(zeros);
    fs::write(&path, &gz).unwrap();
    let (result, largest) = largest_allocation(|| read_idx(&path));
    assert!(
        matches!(
            result,
            Err(DataError::Idx {
                source: IdxError::TrailingData {
                    expected: 784_000,
                    ..
                },
                ..
            })
        ),
        "{result:?}"
    );
    // The payload buffer (784000 bytes) plus the decoder's fixed buffers; never the 64 MB.
    assert!(largest < 2 * MB, "largest allocation {largest} bytes");
}
