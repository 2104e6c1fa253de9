//! Helpers shared by the integration tests: scratch directories, the real-data directory, IDX builders.
#![allow(dead_code)] // each test binary uses a different subset

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;

#[allow(unused_imports)] // each test binary uses a different subset
pub use manabi_testkit::{TempDir, mnist_dir};

/// IDX bytes with element type 0x08.
pub fn idx_bytes(dims: &[u32], payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(payload);
    v
}

/// Gzip-compresses `bytes` in one member.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(bytes).expect("compress");
    enc.finish().expect("compress")
}
