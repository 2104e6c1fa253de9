//! The no_std safetensors writer against the `safetensors` crate, byte for byte, and the reader on good, cut and hostile files.

use manabi_tensor::safetensors::{Data, Dtype, Entry, Name, SafeTensors, StError, file_len, write};
use proptest::prelude::*;
use std::collections::HashMap;

/// The values of [`entries`]: three f32 tensors, a u64 and an f64 one.
type Sample = (Vec<f32>, Vec<f32>, Vec<f32>, Vec<u64>, Vec<f64>);

/// A checkpoint-like set: weights in f32 (named `W1`, `b1`, `W10` to test name order), state
/// in u64 and f64, a scalar and an empty tensor.
fn sample() -> Sample {
    let w1: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 3.0).collect();
    let b1 = vec![0.25f32, -0.75, 1e-30];
    let w10 = vec![f32::MAX, f32::MIN_POSITIVE];
    let rng = vec![1u64, u64::MAX, 3, 0x0123_4567_89ab_cdef];
    let loss = vec![2.5f64, 7.0];
    (w1, b1, w10, rng, loss)
}

fn entries<'a>((w1, b1, w10, rng, loss): &'a Sample) -> Vec<Entry<'a>> {
    vec![
        Entry::new(Name::Numbered("W", 1), &[4, 3], Data::F32(w1)),
        Entry::vector(Name::Numbered("b", 1), Data::F32(b1)),
        Entry::new(Name::Numbered("W", 10), &[1, 2], Data::F32(w10)),
        Entry::vector(Name::Text("rng"), Data::U64(rng)),
        Entry::vector(Name::Text("loss_window"), Data::F64(loss)),
        Entry::new(Name::Text("iteration"), &[1], Data::U64(&rng[..1])),
        Entry::new(Name::Text("empty"), &[0, 3], Data::F64(&[])),
    ]
}

/// The crate's bytes for the same tensors and one metadata entry.
fn reference(entries: &[Entry<'_>], meta: Option<(&str, &str)>) -> Vec<u8> {
    use safetensors::tensor::{Dtype as D, TensorView};
    let bytes: Vec<(String, D, Vec<usize>, Vec<u8>)> = entries
        .iter()
        .map(|e| {
            let (dtype, raw) = match e.data {
                Data::F32(v) => (D::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
                Data::F64(v) => (D::F64, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
                Data::U64(v) => (D::U64, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            };
            (e.name.to_string(), dtype, e.shape[..e.rank].to_vec(), raw)
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = bytes
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    let meta = meta.map(|(k, v)| HashMap::from([(k.to_string(), v.to_string())]));
    safetensors::serialize(views, meta).unwrap()
}

#[test]
fn the_writer_gives_the_crates_bytes() {
    let values = sample();
    for meta in [
        None,
        Some((
            "manabi",
            "format=manabi-checkpoint;net=conv:30@5x5,relu;lr=0.001",
        )),
        // Characters JSON must escape, and one it need not.
        Some(("k\"ey", "a\\b\nc\u{1}d\té")),
    ] {
        let mut mine = entries(&values);
        let pairs: Vec<(&str, &str)> = meta.iter().copied().collect();
        let need = file_len(&mut mine, &pairs);
        let mut out = vec![0xAAu8; need + 5];
        let n = write(&mut mine, &pairs, &mut out).unwrap();
        assert_eq!(n, need);
        assert_eq!(out[..n], reference(&entries(&values), meta)[..], "{meta:?}");
        // Nothing past the file was touched.
        assert!(out[n..].iter().all(|&b| b == 0xAA));
    }
}

#[test]
fn a_short_buffer_or_a_wrong_shape_is_an_error() {
    let values = sample();
    let mut e = entries(&values);
    let need = file_len(&mut e, &[]);
    let mut out = vec![0u8; need - 1];
    assert_eq!(
        write(&mut e, &[], &mut out),
        Err(StError::BufferTooSmall {
            need,
            have: need - 1
        })
    );
    let mut bad = [Entry::new(Name::Text("x"), &[2, 2], Data::F32(&[1.0; 3]))];
    assert_eq!(
        write(&mut bad, &[], &mut [0u8; 256]),
        Err(StError::ShapeMismatch {
            expected: 4,
            got: 3
        })
    );
}

#[test]
fn what_is_written_reads_back() {
    let values = sample();
    let mut e = entries(&values);
    let mut out = vec![0u8; file_len(&mut e, &[("manabi", "v=1")])];
    write(&mut e, &[("manabi", "v=1")], &mut out).unwrap();
    let file = SafeTensors::parse(&out).unwrap();
    let w1 = file.get(&Name::Numbered("W", 1)).unwrap();
    assert_eq!((w1.dtype, w1.dims()), (Dtype::F32, &[4, 3][..]));
    let mut got = vec![0.0f32; 12];
    w1.read_f32(&mut got).unwrap();
    assert_eq!(got, values.0);
    let mut rng = [0u64; 4];
    file.get(&Name::Text("rng"))
        .unwrap()
        .read_u64(&mut rng)
        .unwrap();
    assert_eq!(rng.to_vec(), values.3);
    // Another dtype or length is refused, not converted.
    assert!(w1.read_f64(&mut [0.0; 12]).is_err());
    assert!(w1.read_f32(&mut [0.0; 11]).is_err());
    assert!(file.get(&Name::Text("missing")).is_none());
    assert_eq!(file.metadata("manabi").unwrap().as_plain(), Some("v=1"));
    assert!(file.metadata("other").is_none());
    let names: Vec<String> = file.tensors().map(|(n, _)| n.to_string()).collect();
    // U64 first, then F64, then F32, each by name.
    assert_eq!(
        names,
        [
            "iteration",
            "rng",
            "empty",
            "loss_window",
            "W1",
            "W10",
            "b1"
        ]
    );
}

#[test]
fn the_crates_files_read_with_escapes_unescaped() {
    let values = sample();
    let bytes = reference(&entries(&values), Some(("k\"ey", "a\\b\nc")));
    let file = SafeTensors::parse(&bytes).unwrap();
    let v = file.metadata("k\"ey").unwrap();
    assert_eq!(v.as_plain(), None);
    assert_eq!(v.to_string(), "a\\b\nc");
}

/// A file from a header and data.
fn raw(header: &str, data: &[u8]) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(data);
    b
}

#[test]
fn cut_and_lying_files_are_refused_with_the_reason() {
    let ok = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    assert!(SafeTensors::parse(&raw(ok, &[0; 8])).is_ok());
    let cases: [(Vec<u8>, &str); 9] = [
        (
            vec![1, 2, 3],
            "the file is cut short: it needs 8 bytes, it holds 3",
        ),
        (
            raw(ok, &[0; 8])[..20].to_vec(),
            "the file is cut short: it needs 62 bytes, it holds 20",
        ),
        (
            raw(ok, &[0; 7]),
            "a tensor's byte range reaches past the end of the file",
        ),
        (raw(ok, &[0; 9]), "the data is longer than its tensors"),
        (
            raw(
                r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
                &[0; 8],
            ),
            "a tensor's byte range does not match its dtype and shape",
        ),
        (
            raw(
                r#"{"a":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}}"#,
                &[0; 8],
            ),
            "the header is not safetensors JSON at byte 14: a dtype other than F32, F64 or U64",
        ),
        (
            raw(
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#,
                &[0; 16],
            ),
            "tensors are not laid out one after another from the start of the data",
        ),
        (
            raw(
                r#"{"a":{"dtype":"F32","shape":[99999999999999999999],"data_offsets":[0,8]}}"#,
                &[0; 8],
            ),
            "the header is not safetensors JSON at byte 29: a number too large",
        ),
        (
            raw(r#"{"a":{"dtype":"F32"}} x"#, &[]),
            "the header is not safetensors JSON at byte 20: a tensor's entry lacks dtype, shape or data_offsets",
        ),
    ];
    for (bytes, want) in cases {
        let e = SafeTensors::parse(&bytes).unwrap_err();
        assert_eq!(e.to_string(), want, "{:?}", String::from_utf8_lossy(&bytes));
    }
    // A header length beyond the file, however large, is refused before anything is read.
    let mut huge = u64::MAX.to_le_bytes().to_vec();
    huge.extend_from_slice(b"{}");
    assert!(matches!(
        SafeTensors::parse(&huge),
        Err(StError::Truncated { .. })
    ));
}

proptest! {
    /// Arbitrary headers are refused or parse into tensors that lie inside the file.
    #[test]
    fn arbitrary_headers_are_refused_or_lie_inside_the_file(
        header in "[{}\\[\\]\":,a-zF0-9_ ]{0,80}",
        data in proptest::collection::vec(any::<u8>(), 0..32),
    ) {
        let bytes = raw(&header, &data);
        if let Ok(file) = SafeTensors::parse(&bytes) {
            let total: usize = file.tensors().map(|(_, v)| v.bytes.len()).sum();
            prop_assert_eq!(total, data.len());
        }
    }

    /// Flipping any byte of a good file never panics.
    #[test]
    fn mutated_files_never_panic(at in 0usize..200, byte in any::<u8>()) {
        let values = sample();
        let mut e = entries(&values);
        let mut out = vec![0u8; file_len(&mut e, &[("m", "x")])];
        write(&mut e, &[("m", "x")], &mut out).unwrap();
        let i = at % out.len();
        out[i] = byte;
        let _ = SafeTensors::parse(&out);
    }
}
