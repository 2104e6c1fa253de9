//! Lying safetensors headers can't make the loaders allocate what they claim: a counting allocator measures.

mod common;

use common::{checkpoint_bytes, model_bytes, raw_safetensors};
use manabi_cli::{checkpoint, model};
use manabi_testkit::{TrackingAllocator, measure};
use proptest::prelude::*;

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator;

/// `f`'s result and the largest allocation it made on this thread.
fn peak<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let (out, seen) = measure(f);
    (out, seen.largest)
}

/// What parsing `len` input bytes may allocate at once: the f64 copy of F32 data (2× its
/// bytes), the header's JSON as strings and maps (an entry takes at least ~45 header bytes
/// and well under 90 bytes of map slot and strings: 2×, doubled by power-of-two growth), and
/// small fixed buffers. Measured peaks were 0.3× to 1.5× the file size.
fn justified(len: usize) -> usize {
    4 * len + 4096
}

#[test]
fn a_header_claiming_sixteen_exabytes_in_one_kilobyte_allocates_little() {
    let header = format!(
        "{{\"W1\":{{\"dtype\":\"F32\",\"shape\":[{},{}],\"data_offsets\":[0,{}]}}}}",
        1u64 << 31,
        1u64 << 31,
        1u64 << 62
    );
    let mut bytes = raw_safetensors(&header, &[]);
    bytes.resize(1024, 0);
    let (result, largest) = peak(|| model::parse(&bytes, "liar.safetensors"));
    let e = result.unwrap_err().to_string();
    assert!(e.contains("more than the whole file"), "{e}");
    assert!(largest < 4096, "largest allocation {largest} bytes");
    let (result, largest) = peak(|| checkpoint::parse(&bytes, "liar.safetensors"));
    assert!(result.is_err());
    assert!(largest < 4096, "largest allocation {largest} bytes");
}

#[test]
fn a_header_length_of_a_terabyte_allocates_nothing_large() {
    let mut bytes = model_bytes();
    bytes[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let (result, largest) = peak(|| model::parse(&bytes, "liar.safetensors"));
    assert!(result.is_err());
    assert!(largest < 4096, "largest allocation {largest} bytes");
}

#[test]
fn valid_files_allocate_in_proportion_to_their_size() {
    for bytes in [model_bytes(), checkpoint_bytes()] {
        let (m, largest) = peak(|| {
            (
                model::parse(&bytes, "w").is_ok(),
                checkpoint::parse(&bytes, "c").is_ok(),
            )
        });
        assert!(m.0 || m.1);
        assert!(
            largest <= justified(bytes.len()),
            "{largest} bytes for a {}-byte file",
            bytes.len()
        );
    }
}

proptest! {
    #[test]
    fn mutated_files_never_allocate_more_than_their_size_justifies(
        which in any::<bool>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut b = if which { model_bytes() } else { checkpoint_bytes() };
        for (pos, value) in &edits {
            let i = pos.index(b.len());
            b[i] = *value;
        }
        let (_, largest) = peak(|| (model::parse(&b, "w").is_ok(), checkpoint::parse(&b, "c").is_ok()));
        prop_assert!(largest <= justified(b.len()), "{} bytes for a {}-byte file", largest, b.len());
    }

    #[test]
    fn lying_shapes_never_allocate_more_than_the_file_justifies(
        dims in prop::collection::vec(0u64..=u64::MAX, 1..4),
        end in 0u64..=u64::MAX,
        data_len in 0usize..256,
    ) {
        let header = format!(
            "{{\"W1\":{{\"dtype\":\"F32\",\"shape\":{dims:?},\"data_offsets\":[0,{end}]}}}}"
        );
        let b = raw_safetensors(&header, &vec![0u8; data_len]);
        let (r, largest) = peak(|| model::parse(&b, "w"));
        prop_assert!(r.is_err());
        prop_assert!(largest <= justified(b.len()), "{} bytes for a {}-byte file", largest, b.len());
    }
}
