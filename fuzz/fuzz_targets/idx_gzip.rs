//! Fuzz target: `manabi_data::read_idx` (the file reader: gzip by magic, else raw) on arbitrary bytes.
//!
//! The data crate has no in-memory entry point for gzip, so each input is written to one
//! temporary file per process and read back. The result is compared with an independent
//! decoding: flate2's multi-member decoder (capped at 16 MiB) followed by `parse_idx`.
#![no_main]

use flate2::read::MultiGzDecoder;
use libfuzzer_sys::fuzz_target;
use std::io::Read;
use std::path::PathBuf;
use std::sync::OnceLock;

fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        dir.join(format!("manabi-fuzz-idx-{}", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    let path = scratch();
    if std::fs::write(path, data).is_err() {
        return;
    }
    let got = manabi_data::read_idx(path).ok();
    if let Some(idx) = &got {
        assert_eq!(idx.data.len(), idx.dims.iter().product::<usize>());
    }
    let expected = if data.starts_with(&[0x1f, 0x8b]) {
        let mut plain = Vec::new();
        let limit = 16 << 20;
        match MultiGzDecoder::new(data)
            .take(limit + 1)
            .read_to_end(&mut plain)
        {
            Ok(n) if (n as u64) <= limit => manabi_data::parse_idx(&plain).ok(),
            // Larger than the cap or damaged: no oracle; the reader must just not panic.
            _ => return,
        }
    } else {
        manabi_data::parse_idx(data).ok()
    };
    assert_eq!(got, expected);
});
