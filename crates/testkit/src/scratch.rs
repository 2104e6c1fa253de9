//! Files for tests: scratch directories (unique per process and call, removed on drop) and the MNIST directory.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A directory under the system temp dir named `manabi-<tag>-<pid>-<n>`, created empty and
/// removed (with its contents) when dropped.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates a fresh, empty directory.
    ///
    /// # Panics
    /// If it cannot be created (a test environment problem, reported at once).
    pub fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("manabi-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        if let Err(e) = std::fs::create_dir_all(&dir) {
            panic!("cannot create scratch dir {}: {e}", dir.display());
        }
        Self(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A path inside it (not created).
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The real MNIST directory, from `$MANABI_DATA` (`.ci/run` sets it). Tests that need the
/// data fail, never skip, when it is unset: a skipped test would pass whatever the code does.
///
/// # Panics
/// If `MANABI_DATA` is unset or empty.
pub fn mnist_dir() -> PathBuf {
    match std::env::var_os("MANABI_DATA") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => panic!(
            "MANABI_DATA is not set: point it at a directory holding the four MNIST \
             *-ubyte(.gz) files (.ci/run sets it)"
        ),
    }
}
