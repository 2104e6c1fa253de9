//! Helpers shared by the integration tests: scratch directories, the real-data directory, IDX builders.
#![allow(dead_code)] // each test binary uses a different subset

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use flate2::Compression;
use flate2::write::GzEncoder;

/// A scratch directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("manabi-data-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The real MNIST directory from `$MANABI_DATA`. Tests that need it fail (never skip)
/// when it is unset.
pub fn mnist_dir() -> PathBuf {
    match std::env::var_os("MANABI_DATA") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => panic!(
            "MANABI_DATA is not set: point it at a directory holding the four MNIST \
             *-ubyte(.gz) files (e.g. MANABI_DATA=/path/to/mnist cargo test -p manabi-data)"
        ),
    }
}

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
