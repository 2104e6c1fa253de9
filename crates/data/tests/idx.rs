//! IDX reader on synthetic bytes: every malformation is an `Err` naming the problem, raw and gzip alike.

mod common;

use std::fs;

use common::{TempDir, gzip, idx_bytes};
use manabi_data::{DataError, Idx, IdxError, parse_idx, read_idx};
use proptest::prelude::*;

#[test]
fn valid_files_of_each_rank_parse() {
    let idx = parse_idx(&idx_bytes(&[3], &[7, 8, 9])).unwrap();
    assert_eq!(
        idx,
        Idx {
            dims: vec![3],
            data: vec![7, 8, 9]
        }
    );
    let payload: Vec<u8> = (0..24).collect();
    let idx = parse_idx(&idx_bytes(&[2, 3, 4], &payload)).unwrap();
    assert_eq!(idx.dims, vec![2, 3, 4]);
    assert_eq!(idx.data, payload);
    let idx = parse_idx(&idx_bytes(&[1, 2, 1, 2], &[1, 2, 3, 4])).unwrap();
    assert_eq!(idx.dims, vec![1, 2, 1, 2]);
}

#[test]
fn bad_magic_is_refused() {
    let mut b = idx_bytes(&[2], &[1, 2]);
    b[0] = 0x50;
    assert_eq!(parse_idx(&b), Err(IdxError::BadMagic { found: [0x50, 0] }));
    b[0] = 0;
    b[1] = 1;
    assert_eq!(parse_idx(&b), Err(IdxError::BadMagic { found: [0, 1] }));
}

#[test]
fn element_types_other_than_u8_are_refused_by_name() {
    for (code, name) in [
        (0x09, "signed byte"),
        (0x0B, "i16"),
        (0x0C, "i32"),
        (0x0D, "f32"),
        (0x0E, "f64"),
    ] {
        let mut b = idx_bytes(&[2], &[1, 2]);
        b[2] = code;
        let e = parse_idx(&b).unwrap_err();
        assert_eq!(e, IdxError::UnsupportedType { code });
        assert!(e.to_string().contains(name), "{e}");
    }
    let mut b = idx_bytes(&[2], &[1, 2]);
    b[2] = 0x42;
    assert!(
        parse_idx(&b)
            .unwrap_err()
            .to_string()
            .contains("unknown IDX element type: expected 0x08 (unsigned byte), found 0x42")
    );
}

#[test]
fn rank_zero_and_rank_five_are_refused() {
    assert_eq!(parse_idx(&[0, 0, 8, 0]), Err(IdxError::BadRank { rank: 0 }));
    let b = idx_bytes(&[1, 1, 1, 1, 1], &[9]);
    assert_eq!(parse_idx(&b), Err(IdxError::BadRank { rank: 5 }));
}

#[test]
fn every_truncated_header_is_refused() {
    let full = idx_bytes(&[2, 2, 2], &[0; 8]);
    // The header is 4 + 3·4 = 16 bytes; each shorter prefix must fail as a header error.
    for len in 0..16 {
        let e = parse_idx(&full[..len]).unwrap_err();
        let need = if len < 4 { 4 } else { 16 };
        assert_eq!(
            e,
            IdxError::HeaderTruncated { need, got: len },
            "prefix {len}"
        );
    }
}

#[test]
fn truncated_payload_and_trailing_garbage_are_refused() {
    let full = idx_bytes(&[2, 3], &[1; 6]);
    let e = parse_idx(&full[..full.len() - 1]).unwrap_err();
    assert_eq!(
        e,
        IdxError::Truncated {
            dims: vec![2, 3],
            expected: 6,
            got: 5
        }
    );
    assert_eq!(
        e.to_string(),
        "IDX data cut short: header says 2×3 = 6 bytes of data, but the file holds 5"
    );
    let mut long = full.clone();
    long.extend_from_slice(b"xyz");
    let e = parse_idx(&long).unwrap_err();
    assert_eq!(
        e,
        IdxError::TrailingData {
            dims: vec![2, 3],
            expected: 6,
            extra: Some(3)
        }
    );
}

#[test]
fn zero_dimensions_and_overflow_are_refused() {
    let e = parse_idx(&idx_bytes(&[4, 0, 2], &[])).unwrap_err();
    assert_eq!(
        e,
        IdxError::ZeroDim {
            axis: 1,
            dims: vec![4, 0, 2]
        }
    );
    // (2³²−1)³ > 2⁶⁴: the product overflows usize on every target.
    let e = parse_idx(&idx_bytes(&[u32::MAX; 3], &[])).unwrap_err();
    assert!(matches!(e, IdxError::TooLarge { .. }), "{e:?}");
}

#[test]
fn files_are_told_apart_by_content_not_name() {
    let dir = TempDir::new("idx-names");
    let payload: Vec<u8> = (0..=255).cycle().take(5 * 7 * 3).collect();
    let raw = idx_bytes(&[5, 7, 3], &payload);
    // Gzip bytes under a raw-looking name, raw bytes under a .gz name.
    let gz_as_raw = dir.path().join("images-idx3-ubyte");
    let raw_as_gz = dir.path().join("images-idx3-ubyte.gz");
    fs::write(&gz_as_raw, gzip(&raw)).unwrap();
    fs::write(&raw_as_gz, &raw).unwrap();
    let expected = Idx {
        dims: vec![5, 7, 3],
        data: payload,
    };
    assert_eq!(read_idx(&gz_as_raw).unwrap(), expected);
    assert_eq!(read_idx(&raw_as_gz).unwrap(), expected);
}

#[test]
fn gzip_files_are_as_strict_as_raw_ones() {
    let dir = TempDir::new("idx-gzip");
    let path = dir.path().join("x.gz");
    let full = idx_bytes(&[2, 3], &[1; 6]);

    fs::write(&path, gzip(&full[..full.len() - 2])).unwrap();
    let e = read_idx(&path).unwrap_err();
    assert!(
        matches!(
            &e,
            DataError::Idx {
                source: IdxError::Truncated {
                    expected: 6,
                    got: 4,
                    ..
                },
                ..
            }
        ),
        "{e:?}"
    );
    // The message names the file.
    assert!(
        e.to_string().starts_with(&path.display().to_string()),
        "{e}"
    );

    let mut long = full.clone();
    long.push(0);
    fs::write(&path, gzip(&long)).unwrap();
    let e = read_idx(&path).unwrap_err();
    assert!(
        matches!(
            &e,
            DataError::Idx {
                source: IdxError::TrailingData { extra: Some(1), .. },
                ..
            }
        ),
        "{e:?}"
    );

    fs::write(&path, gzip(&[0, 0, 8, 2, 0, 0])).unwrap();
    let e = read_idx(&path).unwrap_err();
    assert!(
        matches!(
            &e,
            DataError::Idx {
                source: IdxError::HeaderTruncated { need: 12, got: 6 },
                ..
            }
        ),
        "{e:?}"
    );

    // Garbage after a complete gzip stream is an error too.
    let mut gz = gzip(&full);
    gz.extend_from_slice(b"garbage");
    fs::write(&path, &gz).unwrap();
    assert!(read_idx(&path).is_err());

    // Two gzip members form one stream (as `zcat` sees it).
    let (a, b) = full.split_at(7);
    let mut two = gzip(a);
    two.extend_from_slice(&gzip(b));
    fs::write(&path, &two).unwrap();
    assert_eq!(read_idx(&path).unwrap().data, vec![1; 6]);

    // A flipped byte in the compressed data: damaged stream or CRC mismatch, never Ok.
    let mut gz = gzip(&idx_bytes(&[100], &(0..100).collect::<Vec<u8>>()));
    let mid = gz.len() / 2;
    gz[mid] ^= 0x55;
    fs::write(&path, &gz).unwrap();
    assert!(read_idx(&path).is_err());
}

#[test]
fn missing_file_error_names_it() {
    let dir = TempDir::new("idx-missing");
    let path = dir.path().join("nope-idx1-ubyte");
    let e = read_idx(&path).unwrap_err();
    assert!(
        matches!(&e, DataError::Io { path: p, .. } if p == &path),
        "{e:?}"
    );
    assert!(e.to_string().contains("nope-idx1-ubyte"), "{e}");
}

/// A small valid IDX file: rank 1..=3, dimensions 1..=4.
fn valid_idx() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(1u32..=4, 1..=3).prop_flat_map(|dims| {
        let n = dims.iter().product::<u32>() as usize;
        prop::collection::vec(any::<u8>(), n).prop_map(move |p| idx_bytes(&dims, &p))
    })
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(idx) = parse_idx(&bytes) {
            prop_assert_eq!(idx.data.len(), idx.dims.iter().product::<usize>());
        }
    }

    #[test]
    fn mutated_valid_files_never_panic_and_stay_consistent(
        file in valid_idx(),
        pos in any::<prop::sample::Index>(),
        value in any::<u8>(),
        cut in 0usize..4,
        extra in prop::collection::vec(any::<u8>(), 0..3),
    ) {
        let mut b = file;
        let i = pos.index(b.len());
        b[i] = value;
        b.truncate(b.len().saturating_sub(cut));
        b.extend_from_slice(&extra);
        if let Ok(idx) = parse_idx(&b) {
            prop_assert_eq!(idx.data.len(), idx.dims.iter().product::<usize>());
            prop_assert_eq!(b.len(), 4 + 4 * idx.dims.len() + idx.data.len());
        }
    }
}

proptest! {
    // Each case writes two files, so fewer cases.
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn file_reader_agrees_with_the_slice_parser(
        file in valid_idx(),
        pos in any::<prop::sample::Index>(),
        value in any::<u8>(),
        cut in 0usize..3,
    ) {
        let dir = TempDir::new("idx-prop");
        let mut b = file;
        let i = pos.index(b.len());
        b[i] = value;
        b.truncate(b.len().saturating_sub(cut));
        let expected = parse_idx(&b).ok();
        let raw = dir.path().join("raw");
        let gz = dir.path().join("gz");
        fs::write(&raw, &b).unwrap();
        fs::write(&gz, gzip(&b)).unwrap();
        prop_assert_eq!(read_idx(&raw).ok(), expected.clone());
        prop_assert_eq!(read_idx(&gz).ok(), expected);
    }
}
