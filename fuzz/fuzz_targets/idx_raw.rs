//! Fuzz target: `manabi_data::parse_idx` on arbitrary bytes (the in-memory IDX parser).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(idx) = manabi_data::parse_idx(data) {
        // Accepted files are exactly header + payload, and the payload fills the dimensions.
        assert_eq!(idx.data.len(), idx.dims.iter().product::<usize>());
        assert_eq!(data.len(), 4 + 4 * idx.dims.len() + idx.data.len());
        assert_eq!(&data[data.len() - idx.data.len()..], &idx.data[..]);
    }
});
