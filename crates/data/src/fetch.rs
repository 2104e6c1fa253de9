//! Downloading the four MNIST files from public mirrors, verified and written atomically.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::DataError;
use crate::idx::Role;
use crate::mnist::{MNIST_FILES, MnistFile, locate, read_checked};

/// Public MNIST mirrors, tried in order. Each is a URL prefix to which the file name
/// (`train-images-idx3-ubyte.gz`, …) is appended.
pub const MIRRORS: &[&str] = &[
    // PyTorch's copy (torchvision's first mirror).
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    // Google's copy used by the old TensorFlow tutorials.
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    // The original site; it has at times required a login or been unreachable.
    "http://yann.lecun.com/exdb/mnist/",
];

/// Largest download accepted per file (the biggest MNIST file is about 9.9 MB), so that a
/// misbehaving server can't fill the disk.
pub const MAX_DOWNLOAD: u64 = 64 << 20;

/// Bytes copied per read while downloading, and so the granularity of progress events.
const CHUNK: usize = 64 << 10;

/// What [`fetch`] is doing, reported through its callback (e.g. to drive a progress bar).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FetchEvent<'a> {
    /// The file is already present and verifies; it is not downloaded.
    Present {
        /// The file found (raw or `.gz`).
        path: &'a Path,
    },
    /// A download starts.
    Start {
        /// The file name, e.g. `train-images-idx3-ubyte.gz`.
        file: &'a str,
        /// The full URL.
        url: &'a str,
        /// The size the server announced, if any.
        total: Option<u64>,
    },
    /// More bytes arrived.
    Progress {
        /// The file name.
        file: &'a str,
        /// Bytes received so far.
        done: u64,
        /// The size the server announced, if any.
        total: Option<u64>,
    },
    /// This mirror failed for this file; the next one is tried.
    MirrorFailed {
        /// The file name.
        file: &'a str,
        /// The full URL.
        url: &'a str,
        /// Why, in one line.
        reason: &'a str,
    },
    /// The file was downloaded, verified and stored.
    Done {
        /// The file name.
        file: &'a str,
        /// Where it was stored.
        path: &'a Path,
    },
}

/// Downloads any of the four MNIST files that `dir` lacks (or holds damaged) into `dir`,
/// creating it if needed, with an agent that honours the usual proxy variables and gives
/// up on a mirror after 30 s without a connection or 60 s without a response.
///
/// For each file: if `dir` already holds it (see [`locate`]) and its decompressed SHA-256
/// matches, nothing is downloaded. Otherwise `mirrors` are tried in order (a mirror is a
/// URL prefix, [`MIRRORS`] by default) until one serves a file whose decompressed SHA-256
/// matches. The download goes to a temporary file in `dir`, which is flushed to disk and
/// then renamed over the final name, so a failure leaves no partial file and a good
/// existing file is never replaced. The final name is `<name>.gz` when the bytes are gzip
/// and `<name>` when a server sent them decompressed.
///
/// # Errors
/// [`DataError::Fetch`] when no mirror serves a valid copy (listing each mirror's failure),
/// [`DataError::Io`] when `dir` can't be created or written.
pub fn fetch(
    dir: &Path,
    mirrors: &[&str],
    progress: &mut dyn FnMut(FetchEvent<'_>),
) -> Result<(), DataError> {
    let config = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .build();
    fetch_with_agent(
        dir,
        mirrors,
        &ureq::Agent::new_with_config(config),
        progress,
    )
}

/// [`fetch`] with a caller-configured HTTP agent (timeouts, proxy, TLS).
///
/// # Errors
/// As [`fetch`].
pub fn fetch_with_agent(
    dir: &Path,
    mirrors: &[&str],
    agent: &ureq::Agent,
    progress: &mut dyn FnMut(FetchEvent<'_>),
) -> Result<(), DataError> {
    fs::create_dir_all(dir).map_err(|source| DataError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    for f in &MNIST_FILES {
        if let Some(path) = locate(dir, f.name)
            && read_checked(&path, Role::Any, Some(f.sha256)).is_ok()
        {
            progress(FetchEvent::Present { path: &path });
            continue;
        }
        fetch_one(dir, f, mirrors, agent, progress)?;
    }
    Ok(())
}

/// Tries each mirror for one file until one yields a verified copy.
fn fetch_one(
    dir: &Path,
    f: &MnistFile,
    mirrors: &[&str],
    agent: &ureq::Agent,
    progress: &mut dyn FnMut(FetchEvent<'_>),
) -> Result<(), DataError> {
    let file = format!("{}.gz", f.name);
    let mut attempts = Vec::new();
    for mirror in mirrors {
        let url = if mirror.ends_with('/') {
            format!("{mirror}{file}")
        } else {
            format!("{mirror}/{file}")
        };
        match download(agent, &url, dir, f, &file, progress) {
            Ok(path) => {
                progress(FetchEvent::Done {
                    file: &file,
                    path: &path,
                });
                return Ok(());
            }
            // The directory itself is unusable: another mirror won't help.
            Err(Failure::Local(e)) => return Err(e),
            Err(Failure::Mirror(reason)) => {
                progress(FetchEvent::MirrorFailed {
                    file: &file,
                    url: &url,
                    reason: &reason,
                });
                attempts.push(format!("{url}: {reason}"));
            }
        }
    }
    Err(DataError::Fetch { file, attempts })
}

/// Why one download attempt failed.
enum Failure {
    /// The mirror (network, HTTP status, bad content): try the next one.
    Mirror(String),
    /// Our own directory: stop.
    Local(DataError),
}

/// A temporary file that is deleted on drop unless it has been renamed into place.
struct PartFile {
    path: PathBuf,
    committed: bool,
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: the file may not exist any more.
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Distinguishes temporary files made by concurrent downloads in one process.
static PART_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Creates a fresh, exclusive temporary file in `dir`.
fn create_part(dir: &Path, file: &str) -> Result<(PartFile, File), DataError> {
    loop {
        let n = PART_COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!(".{file}.{}.{n}.part", std::process::id()));
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(handle) => {
                return Ok((
                    PartFile {
                        path,
                        committed: false,
                    },
                    handle,
                ));
            }
            // Left over from a crashed process with our pid: take the next number.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(DataError::Io { path, source }),
        }
    }
}

/// Downloads `url` into a temporary file, verifies it and renames it into place.
fn download(
    agent: &ureq::Agent,
    url: &str,
    dir: &Path,
    f: &MnistFile,
    file: &str,
    progress: &mut dyn FnMut(FetchEvent<'_>),
) -> Result<PathBuf, Failure> {
    let (mut body, total) = request(agent, url, file, progress)?;
    let (mut part, mut out) = create_part(dir, file).map_err(Failure::Local)?;
    let (done, head) = copy_body(&mut body, &mut out, &part.path, file, total, progress)?;
    out.sync_all().map_err(local(&part.path))?;
    drop(out);
    verify(&part.path, f)?;
    let gzip = done >= 2 && head == [0x1f, 0x8b];
    move_into_place(&mut part, dir, f, gzip)
}

/// Maps an I/O error on `path`, in our own directory, to [`Failure::Local`].
fn local(path: &Path) -> impl FnOnce(io::Error) -> Failure {
    let path = path.to_path_buf();
    move |source| Failure::Local(DataError::Io { path, source })
}

/// Requests `url` and reports [`FetchEvent::Start`]: the response body, read at most
/// [`MAX_DOWNLOAD`] bytes, and the size the server announced (refused if above the limit).
fn request(
    agent: &ureq::Agent,
    url: &str,
    file: &str,
    progress: &mut dyn FnMut(FetchEvent<'_>),
) -> Result<(ureq::BodyReader<'static>, Option<u64>), Failure> {
    let response = agent
        .get(url)
        .call()
        .map_err(|e| Failure::Mirror(e.to_string()))?;
    let total = response.body().content_length();
    if total.is_some_and(|t| t > MAX_DOWNLOAD) {
        return Err(Failure::Mirror(format!(
            "server announces {} bytes, more than the {MAX_DOWNLOAD}-byte limit",
            total.unwrap_or(0)
        )));
    }
    progress(FetchEvent::Start { file, url, total });
    let body = response
        .into_body()
        .into_with_config()
        .limit(MAX_DOWNLOAD)
        .reader();
    Ok((body, total))
}

/// Copies `body` into `out`, the temporary file at `part_path`, reporting
/// [`FetchEvent::Progress`] after each chunk: the bytes copied and the first two of them
/// (which tell gzip from raw).
fn copy_body(
    body: &mut impl Read,
    out: &mut File,
    part_path: &Path,
    file: &str,
    total: Option<u64>,
    progress: &mut dyn FnMut(FetchEvent<'_>),
) -> Result<(u64, [u8; 2]), Failure> {
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    let mut head = [0u8; 2];
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Failure::Mirror(format!("download failed: {e}"))),
        };
        // Keep the first two bytes: they tell gzip from raw for the final name.
        let have = usize::try_from(done).unwrap_or(2).min(2);
        let take = (2 - have).min(n);
        head[have..have + take].copy_from_slice(&buf[..take]);
        out.write_all(&buf[..n]).map_err(local(part_path))?;
        done += n as u64;
        progress(FetchEvent::Progress { file, done, total });
    }
    Ok((done, head))
}

/// Checks the download at `path` as [`read_checked`] does against `f`'s digest; if it fails,
/// the mirror's failure says why in one line.
fn verify(path: &Path, f: &MnistFile) -> Result<(), Failure> {
    let Err(e) = read_checked(path, Role::Any, Some(f.sha256)) else {
        return Ok(());
    };
    let reason = match e {
        DataError::Checksum { got, .. } => format!(
            "content does not match the MNIST digest (SHA-256 {got}, expected {})",
            f.sha256
        ),
        DataError::Idx { source, .. } => format!("not a valid IDX file: {source}"),
        DataError::Io { source, .. } => format!("unreadable download: {source}"),
        DataError::Gzip { source, .. } => {
            format!("damaged or incomplete gzip download: {source}")
        }
        other => other.to_string(),
    };
    Err(Failure::Mirror(reason))
}

/// Renames the verified download `part` to its final name in `dir` (`<name>.gz` when the
/// bytes are `gzip`, else `<name>`) and makes the rename durable; returns the final path.
fn move_into_place(
    part: &mut PartFile,
    dir: &Path,
    f: &MnistFile,
    gzip: bool,
) -> Result<PathBuf, Failure> {
    let gz_path = dir.join(format!("{}.gz", f.name));
    let final_path = if gzip {
        gz_path.clone()
    } else {
        dir.join(f.name)
    };
    fs::rename(&part.path, &final_path).map_err(local(&final_path))?;
    part.committed = true;
    if !gzip && gz_path.is_file() {
        // We only download when the file `locate` picks (the .gz if present) failed to
        // verify, so this .gz is damaged; left in place it would shadow the good raw file.
        fs::remove_file(&gz_path).map_err(local(&gz_path))?;
    }
    sync_dir(dir).map_err(local(dir))?;
    Ok(final_path)
}

/// Makes the rename durable (on Unix a directory can be fsync'ed; elsewhere this is a no-op).
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}
