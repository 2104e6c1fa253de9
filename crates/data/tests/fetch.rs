//! `fetch` against a local HTTP server on 127.0.0.1 serving the real files from `$MANABI_DATA`: fallback past bad mirrors, atomic writes, skipping valid files.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use common::{TempDir, mnist_dir};
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use manabi_data::{
    DataError, FetchEvent, MNIST_FILES, Verify, fetch, fetch_with_agent, load, locate,
};

/// What the test server can serve for one file.
struct Copies {
    /// File name with `.gz`.
    name: String,
    /// The real `.gz` bytes.
    good: Vec<u8>,
    /// The real file decompressed.
    raw: Vec<u8>,
    /// A valid gzip of a valid IDX file whose last byte differs from MNIST's.
    altered: Vec<u8>,
}

fn copies() -> &'static [Copies] {
    static COPIES: OnceLock<Vec<Copies>> = OnceLock::new();
    COPIES.get_or_init(|| {
        let src = mnist_dir();
        MNIST_FILES
            .iter()
            .map(|f| {
                let path = locate(&src, f.name).expect("MNIST file in $MANABI_DATA");
                let stored = fs::read(&path).unwrap();
                let raw = if stored.starts_with(&[0x1f, 0x8b]) {
                    let mut raw = Vec::new();
                    GzDecoder::new(&stored[..]).read_to_end(&mut raw).unwrap();
                    raw
                } else {
                    stored
                };
                let good = gzip_fast(&raw);
                let mut changed = raw.clone();
                *changed.last_mut().unwrap() ^= 1;
                Copies {
                    name: format!("{}.gz", f.name),
                    altered: gzip_fast(&changed),
                    good,
                    raw,
                }
            })
            .collect()
    })
}

fn gzip_fast(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// A local server: `/missing/*` → 404, `/altered/*` → wrong content, `/good/*` → the real
/// `.gz`, `/raw/*` → the real file decompressed. Counts the requests it answers.
struct TestServer {
    server: Arc<tiny_http::Server>,
    base: String,
    requests: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    fn start() -> Self {
        let copies = copies();
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let addr = server.server_addr().to_ip().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (server, requests) = (Arc::clone(&server), Arc::clone(&requests));
            std::thread::spawn(move || {
                for req in server.incoming_requests() {
                    requests.fetch_add(1, Ordering::SeqCst);
                    let url = req.url().to_string();
                    let (kind, name) = url
                        .trim_start_matches('/')
                        .split_once('/')
                        .unwrap_or(("", ""));
                    let body = copies
                        .iter()
                        .find(|c| c.name == name)
                        .and_then(|c| match kind {
                            "good" => Some(c.good.clone()),
                            "raw" => Some(c.raw.clone()),
                            "altered" => Some(c.altered.clone()),
                            _ => None,
                        });
                    let _ = match body {
                        Some(b) => req.respond(tiny_http::Response::from_data(b)),
                        None => req.respond(tiny_http::Response::empty(404)),
                    };
                }
            })
        };
        Self {
            server,
            base: format!("http://{addr}"),
            requests,
            thread: Some(thread),
        }
    }

    fn mirror(&self, kind: &str) -> String {
        format!("{}/{kind}/", self.base)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An agent that never goes through a proxy, whatever the environment says.
fn local_agent() -> ureq::Agent {
    ureq::Agent::new_with_config(ureq::Agent::config_builder().proxy(None).build())
}

/// Events as owned strings, for assertions.
#[derive(Debug, PartialEq)]
enum Ev {
    Present(PathBuf),
    Start(String, String, Option<u64>),
    Progress(String, u64, Option<u64>),
    Failed(String, String, String),
    Done(String, PathBuf),
}

fn run(dir: &Path, mirrors: &[&str]) -> (Result<(), DataError>, Vec<Ev>) {
    let mut events = Vec::new();
    let result = fetch_with_agent(dir, mirrors, &local_agent(), &mut |e| {
        events.push(match e {
            FetchEvent::Present { path } => Ev::Present(path.to_path_buf()),
            FetchEvent::Start { file, url, total } => Ev::Start(file.into(), url.into(), total),
            FetchEvent::Progress { file, done, total } => Ev::Progress(file.into(), done, total),
            FetchEvent::MirrorFailed { file, url, reason } => {
                Ev::Failed(file.into(), url.into(), reason.into())
            }
            FetchEvent::Done { file, path } => Ev::Done(file.into(), path.to_path_buf()),
            other => panic!("unexpected event {other:?}"),
        })
    });
    (result, events)
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn fetch_falls_back_past_a_404_and_an_altered_mirror_then_skips_valid_files() {
    let server = TestServer::start();
    let dir = TempDir::new("fetch-ok");
    let target = dir.path().join("nested/mnist"); // created by fetch
    // The first mirror has no trailing slash: fetch adds it.
    let missing = server.mirror("missing");
    let missing = missing.trim_end_matches('/');
    let (altered, good) = (server.mirror("altered"), server.mirror("good"));
    let (result, events) = run(&target, &[missing, &altered, &good]);
    result.unwrap_or_else(|e| panic!("{e}"));

    for c in copies() {
        let failed: Vec<&Ev> = events
            .iter()
            .filter(|e| matches!(e, Ev::Failed(f, ..) if f == &c.name))
            .collect();
        assert_eq!(failed.len(), 2, "{failed:?}");
        assert!(
            matches!(failed[0], Ev::Failed(_, url, reason)
            if url == &format!("{missing}/{}", c.name) && reason.contains("404")),
            "{failed:?}"
        );
        assert!(
            matches!(failed[1], Ev::Failed(_, _, reason) if reason.contains("MNIST digest")),
            "{failed:?}"
        );
        let size = c.good.len() as u64;
        // tiny_http sends small bodies with a Content-Length and large ones chunked.
        let url = format!("{good}{}", c.name);
        assert!(
            events.iter().any(|e| matches!(e, Ev::Start(f, u, total)
            if f == &c.name && u == &url && (total.is_none() || *total == Some(size)))),
            "{events:?}"
        );
        let last = events.iter().rev().find_map(|e| match e {
            Ev::Progress(f, done, _) if f == &c.name => Some(*done),
            _ => None,
        });
        assert_eq!(last, Some(size));
        assert!(events.contains(&Ev::Done(c.name.clone(), target.join(&c.name))));
        assert_eq!(fs::read(target.join(&c.name)).unwrap(), c.good);
    }
    // Exactly the four files: no temporary file left behind (not even from the failed mirror).
    let mut expected: Vec<String> = copies().iter().map(|c| c.name.clone()).collect();
    expected.sort();
    assert_eq!(listing(&target), expected);
    let data = load(&target, Verify::Mnist).unwrap();
    assert_eq!((data.train.len(), data.test.len()), (60_000, 10_000));

    // A second run finds everything valid and downloads nothing (the public `fetch` is
    // used: it must not touch the network here).
    let before = server.requests();
    let mut presents = Vec::new();
    fetch(&target, &[&good], &mut |e| match e {
        FetchEvent::Present { path } => presents.push(path.to_path_buf()),
        other => panic!("unexpected event {other:?}"),
    })
    .unwrap();
    assert_eq!(presents.len(), 4);
    assert_eq!(server.requests(), before);
}

#[test]
fn a_failed_fetch_leaves_no_partial_file_and_keeps_existing_ones() {
    let server = TestServer::start();
    let dir = TempDir::new("fetch-fail");
    // A good training-label file is already there; a damaged test-label file too.
    let labels = &copies()[1];
    fs::write(dir.path().join(&labels.name), &labels.good).unwrap();
    let damaged = b"not an idx file".to_vec();
    fs::write(dir.path().join(&copies()[3].name), &damaged).unwrap();
    let before = listing(dir.path());

    let (missing, altered) = (server.mirror("missing"), server.mirror("altered"));
    let (result, events) = run(dir.path(), &[&missing, &altered]);
    // The first file (training images) fails on both mirrors and stops the run.
    match result {
        Err(DataError::Fetch { file, attempts }) => {
            assert_eq!(file, "train-images-idx3-ubyte.gz");
            assert_eq!(attempts.len(), 2);
            assert!(
                attempts[0].starts_with(&format!("{missing}train-images-idx3-ubyte.gz: ")),
                "{attempts:?}"
            );
            assert!(attempts[1].contains("MNIST digest"), "{attempts:?}");
        }
        other => panic!("expected a fetch error, got {other:?}"),
    }
    assert!(
        events.iter().all(|e| !matches!(e, Ev::Done(..))),
        "{events:?}"
    );
    assert_eq!(listing(dir.path()), before);
    assert_eq!(
        fs::read(dir.path().join(&labels.name)).unwrap(),
        labels.good
    );
    assert_eq!(
        fs::read(dir.path().join(&copies()[3].name)).unwrap(),
        damaged
    );
}

#[test]
fn a_damaged_file_is_replaced_and_decompressed_downloads_are_stored_raw() {
    let server = TestServer::start();
    let dir = TempDir::new("fetch-raw");
    // Damaged .gz test labels; the mirror serves decompressed bytes (as a server that
    // sets Content-Encoding: gzip would make them arrive).
    let labels = &copies()[3];
    fs::write(dir.path().join(&labels.name), b"\x1f\x8bjunk").unwrap();
    // The other three are present and valid.
    for c in [&copies()[0], &copies()[1], &copies()[2]] {
        fs::write(dir.path().join(&c.name), &c.good).unwrap();
    }
    let raw = server.mirror("raw");
    let (result, events) = run(dir.path(), &[&raw]);
    result.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Ev::Present(_)))
            .count(),
        3
    );
    let raw_path = dir.path().join("t10k-labels-idx1-ubyte");
    assert!(
        events.contains(&Ev::Done(labels.name.clone(), raw_path.clone())),
        "{events:?}"
    );
    // The damaged .gz is gone (it would shadow the good raw file), the raw file verifies.
    assert!(!dir.path().join(&labels.name).exists());
    assert_eq!(fs::read(&raw_path).unwrap(), labels.raw);
    load(dir.path(), Verify::Mnist).unwrap();
}
