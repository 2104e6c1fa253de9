//! Pinned results of seeded runs, per backend: the weights' and metrics' digests and the final line, so that a wrong answer from any backend fails.
//!
//! Every "byte-identical" test elsewhere compares the code with itself; these compare it with
//! results recorded once. **They change only when the numerics change on purpose** (a new
//! kernel, a changed order of sums, a fix that moves bits). Then regenerate them, say why in
//! the commit, and paste the printed rows into [`PINS`]:
//!
//! ```sh
//! MANABI_PINS=print cargo test --release -p manabi-cli --test pins -- --nocapture --test-threads 1
//! MANABI_PINS=print cargo test --release -p manabi-cli --features blas --test pins -- --nocapture --test-threads 1
//! ```
//!
//! Which results hold where:
//! - `naive` adds in a fixed order with plain `f32`/`f64` operations and libm: the same bits on
//!   every CPU (and on the Cortex-M4F), so its pins are exact everywhere ([`Class::Any`]).
//! - `matrixmultiply` picks its kernel by instruction set (AVX-512, FMA+AVX2, AVX, SSE2) and
//!   blocks with constants, so its pins hold on every CPU of the same instruction set.
//! - `gemm` sizes its blocks from the caches it detects and OpenBLAS picks a kernel per CPU
//!   model, so theirs hold on the CPU model they were recorded on.
//!
//! On a CPU without a pin for a backend the arithmetic legitimately differs (summation order,
//! FMA): there the run's final test accuracy must be within [`UNPINNED_ACCURACY`] of the
//! naive run's pinned accuracy, and the test prints the row to add.

mod common;

use common::{run as manabi, s, scratch, text};
use sha2::{Digest, Sha256};
use std::fs;
use std::path::Path;

/// How far an unpinned backend's final test accuracy may be from naive's: after the book's
/// 10,000 iterations two rounding paths end about 0.001 apart; after 40 SimpleConvNet steps
/// on the whole test set they have ended equal on every backend measured.
const UNPINNED_ACCURACY: f64 = 0.005;

/// Where a backend's pins hold (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// Every CPU.
    Any,
    /// Every CPU with the same widest instruction set matrixmultiply uses.
    Isa,
    /// This CPU model.
    Model,
}

fn class_of(backend: &str) -> Class {
    match backend {
        "naive" => Class::Any,
        "matrixmultiply" => Class::Isa,
        _ => Class::Model,
    }
}

/// The instruction set matrixmultiply's `f32` and `f64` kernels dispatch on.
fn isa() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        let level = if std::is_x86_feature_detected!("avx512f") {
            "avx512f"
        } else if std::is_x86_feature_detected!("fma") && std::is_x86_feature_detected!("avx2") {
            "fma+avx2"
        } else if std::is_x86_feature_detected!("avx") {
            "avx"
        } else {
            "sse2"
        };
        format!("x86_64 {level}")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        std::env::consts::ARCH.to_string()
    }
}

/// `vendor family/model/stepping`, from /proc/cpuinfo (`GenuineIntel 6/207/2`).
fn cpu_model() -> String {
    let info = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .find(|l| l.split(':').next().is_some_and(|k| k.trim() == name))
            .and_then(|l| l.split_once(':'))
            .map_or("?", |(_, v)| v.trim())
            .to_string()
    };
    format!(
        "{} {}/{}/{}",
        field("vendor_id"),
        field("cpu family"),
        field("model"),
        field("stepping")
    )
}

fn class_key(class: Class) -> String {
    match class {
        Class::Any => "any".to_string(),
        Class::Isa => isa(),
        Class::Model => format!("{}, {}", cpu_model(), isa()),
    }
}

/// One recorded result.
struct Pin {
    /// The run ([`RUNS`]).
    run: &'static str,
    backend: &'static str,
    /// [`class_key`] of the machine it was recorded on.
    class: &'static str,
    /// sha256 of `model.safetensors`.
    weights: &'static str,
    /// sha256 of `metrics.csv` without its time column.
    metrics: &'static str,
    /// `final test acc … after … iterations`.
    last: &'static str,
}

/// Recorded by the `MANABI_PINS=print` commands of the module docs: `any` and `x86_64 avx512f`
/// rows on 2026-12-08 (the naive book-protocol weights are those of the release before the
/// layer stack, commit b700684, unchanged since); the Intel Xeon rows (family 6 model 207) the
/// same day.
const PINS: &[Pin] = &[
    Pin {
        run: "mlp",
        backend: "naive",
        class: "any",
        weights: "5e0352af4ba928767e2f09084ac9a3b79351975fda3e7491c15c6eaa08e22ca0",
        metrics: "19f87a47ad1294d21c6510eafaa6690f65ad4ab9ffebad79495eff2f327d1cfc",
        last: "final test acc 0.9705 after 10000 iterations",
    },
    Pin {
        run: "mlp",
        backend: "matrixmultiply",
        class: "x86_64 avx512f",
        weights: "5daab062f411f781f7f4c38a3c1b3cdd6629a9adee56811c15881ab40ea618ec",
        metrics: "36db73e9ab9cd08cbf05059c9bbf75c5daf201c9131d0059ea01af5352a28407",
        last: "final test acc 0.9704 after 10000 iterations",
    },
    Pin {
        run: "mlp-adam",
        backend: "naive",
        class: "any",
        weights: "c505680bb4049c8c82daf55be17f8f82d4c823905f4b4cbd8d711d2a326104d9",
        metrics: "9a30208a8d3f1dc56caed1e8af7e6fc7dd84c3939d29e799dafea52d3cf8de52",
        last: "final test acc 0.9336 after 1200 iterations",
    },
    Pin {
        run: "mlp-adam",
        backend: "matrixmultiply",
        class: "x86_64 avx512f",
        weights: "a44cbbb5025907eccf9fd1d155358bac1225c82ccd8da74c68c292fbf92d435a",
        metrics: "51de2c51f6ed6cd1e3ed48e50ffc285a0bb5bd663bd6993f0caa2243c48f46e7",
        last: "final test acc 0.9336 after 1200 iterations",
    },
    Pin {
        run: "mlp-f64",
        backend: "naive",
        class: "any",
        weights: "f70992273d9d7841059c9135c7bc933bd79cb4573c736ffb07b769923203d8b4",
        metrics: "9f013ab52fc7bd7e46647741c1b69b0182f62674f0dc94597c434d4782ba73b2",
        last: "final test acc 0.9269 after 1200 iterations",
    },
    Pin {
        run: "mlp-f64",
        backend: "matrixmultiply",
        class: "x86_64 avx512f",
        weights: "be414414b2c209aebe517c390b0bb3ff0f1177a823d5de369914bd937316db77",
        metrics: "9f013ab52fc7bd7e46647741c1b69b0182f62674f0dc94597c434d4782ba73b2",
        last: "final test acc 0.9269 after 1200 iterations",
    },
    Pin {
        run: "simple-cnn",
        backend: "naive",
        class: "any",
        weights: "01966d7b37ec0dd11d0db976620453c08caddc5404a9b0bf836f35edd4231644",
        metrics: "beb2023df32626bc877d84861c739f5d408464cae4eedda6a4591df57fba7ae1",
        last: "final test acc 0.7748 after 40 iterations",
    },
    Pin {
        run: "simple-cnn",
        backend: "matrixmultiply",
        class: "x86_64 avx512f",
        weights: "36cd253d07aed6cc26d8a20c4e62a7538fc9e5a04a3288c686c9ecebf8146549",
        metrics: "beb2023df32626bc877d84861c739f5d408464cae4eedda6a4591df57fba7ae1",
        last: "final test acc 0.7748 after 40 iterations",
    },
    Pin {
        run: "simple-cnn",
        backend: "gemm",
        class: "GenuineIntel 6/207/2, x86_64 avx512f",
        weights: "a051f4762c64f08c8f9123ab7e63112b4ae08fdb2a7a8cd800143f73b5d6c23e",
        metrics: "beb2023df32626bc877d84861c739f5d408464cae4eedda6a4591df57fba7ae1",
        last: "final test acc 0.7748 after 40 iterations",
    },
    Pin {
        run: "simple-cnn",
        backend: "openblas",
        class: "GenuineIntel 6/207/2, x86_64 avx512f",
        weights: "7a182a001632cbd49d8b93a2dd8b70277264b7740539fab8837877a176a2dc9f",
        metrics: "beb2023df32626bc877d84861c739f5d408464cae4eedda6a4591df57fba7ae1",
        last: "final test acc 0.7748 after 40 iterations",
    },
];

/// The runs pinned: a name, the arguments after `manabi train`, the backends.
const RUNS: &[(&str, &[&str], &[&str])] = &[
    // The book's protocol: 784-50-10, SGD 0.1, batch 100, 10,000 iterations.
    ("mlp", &[], &["naive", "matrixmultiply"]),
    (
        "mlp-adam",
        &[
            "--optimizer",
            "adam",
            "--lr",
            "0.001",
            "--iters",
            "1200",
            "--sampling",
            "shuffle",
        ],
        &["naive", "matrixmultiply"],
    ),
    (
        "mlp-f64",
        &["--f64", "--iters", "1200"],
        &["naive", "matrixmultiply"],
    ),
    (
        "simple-cnn",
        &[
            "--model",
            "simple-cnn",
            "--iters",
            "40",
            "--eval-samples",
            "500",
        ],
        &["naive", "matrixmultiply", "gemm", "openblas"],
    ),
];

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `metrics.csv` without its last column (the elapsed time).
fn metrics_but_time(dir: &Path) -> String {
    fs::read_to_string(dir.join("metrics.csv"))
        .unwrap()
        .lines()
        .map(|l| l.rsplit_once(',').map_or(l, |(head, _)| head))
        .collect::<Vec<_>>()
        .join("\n")
}

/// What a run produced.
struct Outcome {
    weights: String,
    metrics: String,
    last: String,
}

fn train(run: &str, args: &[&str], backend: &str) -> Outcome {
    let dir = scratch(&format!("pin-{run}-{backend}"));
    let mut argv = vec!["train", "--backend", backend, "--out", s(&dir)];
    argv.extend_from_slice(args);
    let r = manabi(&argv);
    let out = text(&r);
    assert!(r.status.success(), "{argv:?}: {out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("final test acc"))
        .unwrap_or_else(|| panic!("no final line in:\n{out}"));
    let outcome = Outcome {
        weights: sha256_hex(&fs::read(dir.join("model.safetensors")).unwrap()),
        metrics: sha256_hex(metrics_but_time(&dir).as_bytes()),
        last: line.split(';').next().unwrap().to_string(),
    };
    let _ = fs::remove_dir_all(dir);
    outcome
}

fn accuracy(last: &str) -> f64 {
    last.split_whitespace().nth(3).unwrap().parse().unwrap()
}

/// The backends this build has.
fn built(backend: &str) -> bool {
    match backend {
        "openblas" => cfg!(feature = "blas"),
        "gemm" => cfg!(feature = "gemm"),
        "matrixmultiply" => cfg!(feature = "matrixmultiply"),
        _ => true,
    }
}

/// Runs `name` on each of its backends built and checks it against [`PINS`].
fn check(name: &str) {
    let (_, args, backends) = RUNS.iter().find(|r| r.0 == name).unwrap();
    let print = std::env::var_os("MANABI_PINS").is_some_and(|v| v == "print");
    let pin_of = |backend: &str| {
        let key = class_key(class_of(backend));
        PINS.iter()
            .find(|p| p.run == name && p.backend == backend && p.class == key)
    };
    for &backend in backends.iter().filter(|b| built(b)) {
        let got = train(name, args, backend);
        let key = class_key(class_of(backend));
        let row = format!(
            "    Pin {{\n        run: {name:?},\n        backend: {backend:?},\n        class: {key:?},\n        weights: {:?},\n        metrics: {:?},\n        last: {:?},\n    }},",
            got.weights, got.metrics, got.last
        );
        if print {
            // Recording: print every row, check nothing.
            println!("{row}");
            continue;
        }
        match pin_of(backend) {
            Some(pin) => {
                let regenerate = "if the numerics changed on purpose, regenerate the pins (crates/cli/tests/pins.rs)";
                assert_eq!(
                    got.last, pin.last,
                    "{name} on {backend} ({key}): {regenerate}"
                );
                assert_eq!(
                    got.weights, pin.weights,
                    "{name} on {backend} ({key}): weights changed; {regenerate}"
                );
                assert_eq!(
                    got.metrics, pin.metrics,
                    "{name} on {backend} ({key}): metrics changed; {regenerate}"
                );
            }
            None => {
                let naive = pin_of("naive")
                    .unwrap_or_else(|| panic!("no naive pin for {name}: record one (module docs)"));
                let (a, b) = (accuracy(&got.last), accuracy(naive.last));
                assert!(
                    (a - b).abs() <= UNPINNED_ACCURACY,
                    "{name} on {backend} ({key}): final accuracy {a}, naive's pinned {b}"
                );
                println!(
                    "no pin for {name} on {backend} ({key}); checked against naive's accuracy only. To pin it:\n{row}"
                );
            }
        }
    }
}

#[test]
fn the_book_protocol_is_pinned() {
    check("mlp");
}

#[test]
fn an_adam_run_is_pinned() {
    check("mlp-adam");
}

#[test]
fn an_f64_run_is_pinned() {
    check("mlp-f64");
}

#[test]
fn a_short_simple_cnn_run_is_pinned_for_every_backend_built() {
    check("simple-cnn");
}
