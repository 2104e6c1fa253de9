//! `cargo xtask embedded [--full]`: the firmware built and run on QEMU, then a report.
//!
//! The firmware is its own workspace in `firmware/` (never a member of this one, so host builds
//! cannot unify features into it). Each program is built with `cargo build` and run with
//! `cargo run` from `firmware/`, whose `.cargo/config.toml` runner starts QEMU with semihosting
//! and `-icount shift=0`; the run is wrapped in `timeout`. Arguments reach the firmware through
//! QEMU's `-append`. Steps:
//!
//! - lint: `cargo fmt --check` and clippy with warnings denied, as for the main workspace;
//! - `smoke` on `mps2-an386` (Cortex-M4F) and on `microbit` (Cortex-M0, 16 KiB of RAM): XOR
//!   and blobs must learn, after a check that SysTick counts a known loop exactly, and both
//!   boards must print the pinned results ([`SMOKE`]: XOR's loss and points right, the blobs'
//!   fresh points right, both nets' weight digests), the M0 the M4F's bit for bit;
//! - failure exits: a panic, a HardFault and a net that cannot learn must each end QEMU with a
//!   non-zero status and say why (a hang or a zero status is a failure of the harness);
//! - `mnist-train`: the 784-50-10 network trained on the device from the raw MNIST files,
//!   which are decompressed once (`gzip -dc`) into `<target>/embedded-data`; 10,000 training
//!   images (CI and the default, [`SHORT`]) or with `--full` the whole epoch of 60,000
//!   ([`FULL`]), each with its pinned test score and weights digest;
//! - `cnn-train`: a convolutional network (conv 8@5×5, max-pool, affine 10) trained on the
//!   device, then by its host twin (`cargo run -p manabi-layers --example device_cnn`), whose
//!   weights must have the same digest: 2,000 images scored on 1,000 (CI and the default,
//!   [`CNN_SHORT`]), or with `--full` three epochs of 60,000 scored on all 10,000 after each
//!   ([`CNN_FULL`]), each with its pinned test score and weights digest;
//! - `mnist-infer` (in CI too): `manabi train` (the book's defaults) on the host, its weights
//!   converted from safetensors to flat f32 and built into the firmware, whose confusion matrix
//!   on the 10,000 test images must equal `manabi eval --backend naive`'s exactly, and whose
//!   predictions must equal this file's reference image by image.
//!
//! Then a table: flash and static RAM of each ELF (binutils `size`), the arena, the stack's
//! high-water mark, guest instructions per sample and the test accuracy. It is also written to
//! `<target>/embedded/report.md`.
//!
//! Every training run is seeded and computes with the Naive backend in f32, in the same order
//! of operations as the host would (the device reads its batches as sparse rows, which keep
//! that order, and the step fails unless every batch did), so its results are fixed: the
//! steps require them exactly, not above a floor. The pinned values change only when the
//! numerics change on purpose; each constant's comment says how to regenerate it, and a
//! mismatch fails the step with every pinned value it printed differently, as
//! `name: expected E, got G`.

use crate::run::{self, Failure, Report};
use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::fs::{self, File};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

/// The firmware workspace, relative to the root.
const FIRMWARE: &str = "firmware";
/// The book's network, as the firmware and `manabi train` build it.
const SIZES: [usize; 3] = [784, 50, 10];
const CLASSES: usize = 10;
/// The four MNIST files, as the firmware opens them (raw IDX).
const MNIST_FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// A QEMU machine and the Rust target of its core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Board {
    /// Short name for step names and the report.
    name: &'static str,
    /// The Rust target; firmware/.cargo/config.toml maps it to the QEMU machine.
    target: &'static str,
}

const M4F: Board = Board {
    name: "mps2-an386 (M4F)",
    target: "thumbv7em-none-eabihf",
};
const M0: Board = Board {
    name: "microbit (M0)",
    target: "thumbv6m-none-eabi",
};

/// A weights digest as the firmware prints it (`metric …_fnv1a`, in decimal): FNV-1a over the
/// parameters' f32 bits; shown, and pinned here, in hex.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Digest(u64);

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#018x}", self.0)
    }
}

/// What `smoke` prints, the same on every board: the nets are seeded and the arithmetic is
/// IEEE 754 f32 whether in the M4F's FPU or the M0's soft float.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SmokeResults {
    /// `metric xor_loss`: the last step's loss, five decimals.
    xor_loss: &'static str,
    /// `metric xor_correct`: points right, of 4.
    xor_correct: u64,
    /// `metric xor_weights_fnv1a`.
    xor_weights: Digest,
    /// `metric blobs_test_correct`: fresh points right, of 90.
    blobs_correct: u64,
    /// `metric blobs_weights_fnv1a`.
    blobs_weights: Digest,
}

/// The smoke test's results on both boards. They change only when the numerics change on
/// purpose (the library's arithmetic, the nets, their seeds, optimizers or schedules). To
/// regenerate: `cargo xtask embedded`; the `embedded smoke m4f` step then fails with a line of
/// `name: expected E, got G`; copy each G here (the same values are the `metric` lines of
/// `target/xtask/embedded-smoke-m4f.log`, digests in decimal there).
const SMOKE: SmokeResults = SmokeResults {
    xor_loss: "0.00201",
    xor_correct: 4,
    xor_weights: Digest(0x60de_ae51_a433_d0d3),
    blobs_correct: 89,
    blobs_weights: Digest(0x8804_3b2b_f0ff_e2a9),
};

impl SmokeResults {
    /// The values by their `metric` names, formatted for comparison and messages.
    fn named(&self) -> Vec<(&'static str, String)> {
        vec![
            ("xor_loss", self.xor_loss.to_string()),
            ("xor_correct", self.xor_correct.to_string()),
            ("xor_weights_fnv1a", format!("{:?}", self.xor_weights)),
            ("blobs_test_correct", self.blobs_correct.to_string()),
            ("blobs_weights_fnv1a", format!("{:?}", self.blobs_weights)),
        ]
    }

    /// The same values as a run printed them; digests are read as numbers and shown in hex.
    fn printed(row: &Row) -> Result<Vec<(&'static str, String)>, Failure> {
        SMOKE
            .named()
            .into_iter()
            .map(|(name, _)| {
                let v = if name.ends_with("_fnv1a") {
                    format!("{:?}", Digest(row.number(name)?))
                } else {
                    row.metric(name)?.to_string()
                };
                Ok((name, v))
            })
            .collect()
    }
}

/// An MNIST training run on the device: how many training images, and the results it must
/// print.
#[derive(Clone, Copy, Debug, PartialEq)]
struct MnistRun {
    images: usize,
    /// `metric test_correct`: test images right, of all 10,000.
    test_correct: u64,
    /// `metric weights_fnv1a`: the trained weights.
    weights: Digest,
    /// The name of the constant holding the run, for messages.
    constant: &'static str,
    step: &'static str,
    timeout: Duration,
}

/// CI's run and the default: a sixth of an epoch. The pinned results change only when the
/// numerics change on purpose (the arithmetic, the network, its seed or schedule). To
/// regenerate: `cargo xtask embedded`; the `embedded mnist-train 10k` step fails with a line of
/// `name: expected E, got G`; copy each G here (or the `metric test_correct` and
/// `metric weights_fnv1a` lines of `target/xtask/embedded-mnist-train-10k.log`).
const SHORT: MnistRun = MnistRun {
    images: 10_000,
    test_correct: 9_191,
    weights: Digest(0x82cc_b89f_f2e0_d823),
    constant: "SHORT",
    step: "embedded mnist-train 10k",
    timeout: Duration::from_secs(900),
};
/// `--full`: one whole epoch. The pinned results change only when the numerics change on
/// purpose. To regenerate: `cargo xtask embedded --full` (this step takes about 20 s, but the
/// cnn-train after it 1.5 hours: stop it once this step has printed); the
/// `embedded mnist-train 60k` step fails with a line of `name: expected E, got G`; copy each G
/// here (or the `metric test_correct` and `metric weights_fnv1a` lines of
/// `target/xtask/embedded-mnist-train-60k.log`).
const FULL: MnistRun = MnistRun {
    images: 60_000,
    test_correct: 9_648,
    weights: Digest(0xc023_15a0_e0e5_d7c2),
    constant: "FULL",
    step: "embedded mnist-train 60k",
    timeout: Duration::from_secs(3600),
};

/// A convolutional network trained on the device (`cnn-train`): epochs, training images per
/// epoch, test images scored after each, and the results it must print after the last.
#[derive(Clone, Copy, Debug, PartialEq)]
struct CnnRun {
    epochs: usize,
    images: usize,
    tested: usize,
    /// `metric test_correct`: of the `tested` images, after the last epoch.
    test_correct: u64,
    /// `metric weights_fnv1a`: the trained weights (the host twin must print them too).
    weights: Digest,
    /// The name of the constant holding the run, for messages.
    constant: &'static str,
    step: &'static str,
    timeout: Duration,
}

/// CI's run and the default: 2,000 images, 1,000 scored. The pinned results change only when
/// the numerics change on purpose (the arithmetic, the network in `firmware/src/cnn.rs`, its
/// seed or schedule). To regenerate: `cargo xtask embedded`; the `embedded cnn-train 2k` step
/// fails with a line of `name: expected E, got G`; copy each G here. The host twin prints the
/// same, faster: `cargo run --release -p manabi-layers --example device_cnn -- $MANABI_DATA 1
/// 2000 1000` (`weights_fnv1a` in decimal, then `test_correct C of N`).
const CNN_SHORT: CnnRun = CnnRun {
    epochs: 1,
    images: 2_000,
    tested: 1_000,
    test_correct: 916,
    weights: Digest(0x144a_5cae_fee3_2d03),
    constant: "CNN_SHORT",
    step: "embedded cnn-train 2k",
    timeout: Duration::from_secs(600),
};
/// `--full`: three epochs of 60,000 images, the whole test set after each. The pinned results
/// change only when the numerics change on purpose. To regenerate without the device's 1.5
/// hours, run the host twin (about 30 s), which computes the same bits:
/// `cargo run --release -p manabi-layers --example device_cnn -- $MANABI_DATA 3 60000 10000`,
/// and copy its `weights_fnv1a` line (decimal) and the C of its `test_correct C of N` line;
/// `cargo xtask embedded --full` then checks the device against them.
const CNN_FULL: CnnRun = CnnRun {
    epochs: 3,
    images: 60_000,
    tested: 10_000,
    test_correct: 9_815,
    weights: Digest(0x10db_dde5_9d6c_4200),
    constant: "CNN_FULL",
    step: "embedded cnn-train 3x60k",
    timeout: Duration::from_secs(5400),
};

const SMOKE_TIMEOUT: Duration = Duration::from_secs(120);
const INFER_TIMEOUT: Duration = Duration::from_secs(900);

/// The failure exits checked: the words passed to `smoke` and what its output must then say.
const FAILURE_EXITS: [(&str, &str); 3] = [
    ("panic", "panicked at"),
    ("fault", "HardFault: pc"),
    ("xor_steps=1", "FAILED: smoke: a net did not learn"),
];

/// What `cargo xtask embedded` runs; CI runs the part without `--full`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// CI's share: smoke tests, failure exits, the 10,000-image MNIST run, cnn-train on 2,000
    /// images and mnist-infer, which makes it the same steps as `All` (mnist-infer costs CI
    /// about 15 s, `manabi` being built already by then).
    Ci,
    /// Everything, with the 10,000-image MNIST run (`cargo xtask embedded`).
    All,
    /// Everything, with the full epoch (`cargo xtask embedded --full`).
    Full,
}

/// The options after `embedded`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::Args)]
pub struct Options {
    /// The whole 60,000-image epoch for mnist-train and three epochs for cnn-train, each with
    /// its own pinned results (instead of 10,000 and 2,000 images)
    #[arg(long)]
    pub full: bool,
}

impl Options {
    /// The scope the options ask for.
    pub fn scope(self) -> Scope {
        if self.full { Scope::Full } else { Scope::All }
    }
}

impl Scope {
    fn mnist(self) -> MnistRun {
        match self {
            Scope::Ci | Scope::All => SHORT,
            Scope::Full => FULL,
        }
    }

    fn cnn(self) -> CnnRun {
        match self {
            Scope::Ci | Scope::All => CNN_SHORT,
            Scope::Full => CNN_FULL,
        }
    }

    /// The status-line names of the steps, in order.
    pub fn names(self) -> Vec<String> {
        vec![
            "embedded lint".to_string(),
            step_name("smoke", M4F),
            step_name("smoke", M0),
            "embedded failure exits".to_string(),
            self.mnist().step.to_string(),
            self.cnn().step.to_string(),
            "embedded mnist-infer".to_string(),
        ]
    }

    /// Runs the steps (stopping at the first failure), then prints the report.
    pub fn run(self, report: &mut Report) -> Result<(), Failure> {
        let mut rows = Vec::new();
        let result = self.steps(report, &mut rows);
        if !rows.is_empty() {
            let table = table(&rows);
            println!("\n{table}");
            let path = run::target_dir().join("embedded").join("report.md");
            if fs::create_dir_all(path.parent().unwrap_or(Path::new("."))).is_ok()
                && fs::write(&path, &table).is_ok()
            {
                println!("(also in {})\n", path.display());
            }
        }
        result
    }

    fn steps(self, report: &mut Report, rows: &mut Vec<Row>) -> Result<(), Failure> {
        report.step("embedded lint", lint)?;
        for board in [M4F, M0] {
            report.step(&step_name("smoke", board), || {
                // The M4F runs first; the M0 must print what it printed.
                let first = rows.first().filter(|r| r.program == "smoke");
                let row = smoke(board, first)?;
                let note = row.note.clone();
                rows.push(row);
                Ok(Some(note))
            })?;
        }
        report.step("embedded failure exits", || failure_exits().map(Some))?;
        let mut data = PathBuf::new();
        let run = self.mnist();
        report.step(run.step, || {
            data = raw_data()?;
            let row = mnist_train(run, &data)?;
            let note = row.note.clone();
            rows.push(row);
            Ok(Some(note))
        })?;
        let cnn = self.cnn();
        report.step(cnn.step, || {
            let row = cnn_train(cnn, &data)?;
            let note = row.note.clone();
            rows.push(row);
            Ok(Some(note))
        })?;
        report.step("embedded mnist-infer", || {
            let row = mnist_infer(&data)?;
            let note = row.note.clone();
            rows.push(row);
            Ok(Some(note))
        })?;
        Ok(())
    }
}

fn step_name(bin: &str, board: Board) -> String {
    let core = board.name.split(['(', ')']).nth(1).unwrap_or(board.name);
    format!("embedded {bin} {}", core.to_lowercase())
}

/// One line of the report.
#[derive(Clone, Debug, Default, PartialEq)]
struct Row {
    program: String,
    board: &'static str,
    /// text + data, from `size`.
    flash: Option<u64>,
    /// data + bss, from `size`.
    static_ram: Option<u64>,
    metrics: BTreeMap<String, String>,
    /// Guest instructions per sample, described.
    instructions: String,
    accuracy: String,
    /// The status-line note.
    note: String,
}

impl Row {
    fn new(program: &str, board: Board, elf: &Path, out: &str) -> Self {
        let (flash, static_ram) = match elf_size(elf) {
            Some((flash, ram)) => (Some(flash), Some(ram)),
            None => (None, None),
        };
        Row {
            program: program.to_string(),
            board: board.name,
            flash,
            static_ram,
            metrics: metrics(out),
            ..Row::default()
        }
    }

    fn metric(&self, name: &str) -> Result<&str, Failure> {
        self.metrics
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| Failure::msg(format!("{}: no `metric {name}` line", self.program)))
    }

    fn number(&self, name: &str) -> Result<u64, Failure> {
        let v = self.metric(name)?;
        v.parse()
            .map_err(|_| Failure::msg(format!("{}: metric {name} is {v:?}", self.program)))
    }
}

/// `metric <name> <value>` lines of firmware output.
fn metrics(out: &str) -> BTreeMap<String, String> {
    out.lines()
        .filter_map(|l| l.strip_prefix("metric "))
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// `12345678` as `12,345,678`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `smoke` on `board`: it must pass its own checks, print what `first` (the other board's row)
/// printed, if given, and print the pinned [`SMOKE`] results.
fn smoke(board: Board, first: Option<&Row>) -> Result<Row, Failure> {
    let elf = build("smoke", board, None)?;
    let name = step_name("smoke", board);
    let out = run_firmware("smoke", board, "calibrate", None, SMOKE_TIMEOUT, &name)?;
    if !out.status.success() || !out.text.contains("smoke: PASS") {
        return Err(out.failure());
    }
    let mut row = Row::new("smoke", board, &elf, &out.text);
    let printed = SmokeResults::printed(&row)?;
    if let Some(first) = first {
        let theirs = SmokeResults::printed(first)?;
        differences(&theirs, &printed).map_err(|d| Failure {
            reason: format!(
                "{} and {} differ (expected: the {1}'s, got: the {0}'s): {d}",
                board.name, first.board
            ),
            detail: out.text.clone(),
        })?;
    }
    differences(&SMOKE.named(), &printed).map_err(|d| pinned_mismatch("SMOKE", &d, &out.text))?;
    let calibration = row.number("calibration_instructions")?;
    let (xor, blobs) = (
        row.number("xor_instructions_per_sample")?,
        row.number("blobs_instructions_per_sample")?,
    );
    row.instructions = format!("{} (xor), {} (blobs)", thousands(xor), thousands(blobs));
    let results = format!(
        "xor loss {}, {}/4 right, blobs {}/90 fresh points",
        row.metric("xor_loss")?,
        row.metric("xor_correct")?,
        row.metric("blobs_test_correct")?
    );
    row.accuracy = match first {
        Some(first) => format!("{results}: the {}'s bit for bit, = pinned", first.board),
        None => format!("{results}, = pinned"),
    };
    row.note = format!(
        "{results}, weights {:?} and {:?}, as pinned{}; {} instructions per sample; loop of 2,000,000 counted as {}",
        SMOKE.xor_weights,
        SMOKE.blobs_weights,
        if first.is_some() {
            " and as on the M4F"
        } else {
            ""
        },
        row.instructions,
        thousands(calibration)
    );
    Ok(row)
}

/// The values a run printed differently from those expected, as `name: expected E, got G; …`;
/// both lists hold `(metric name, value)` pairs of the same names in the same order.
fn differences(expected: &[(&str, String)], got: &[(&str, String)]) -> Result<(), String> {
    debug_assert!(expected.iter().map(|e| e.0).eq(got.iter().map(|g| g.0)));
    let diffs: Vec<String> = expected
        .iter()
        .zip(got)
        .filter(|((_, e), (_, g))| e != g)
        .map(|((name, e), (_, g))| format!("{name}: expected {e}, got {g}"))
        .collect();
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(diffs.join("; "))
    }
}

/// The failure of a run whose results differ from those pinned in `constant`.
fn pinned_mismatch(constant: &str, diffs: &str, text: &str) -> Failure {
    Failure {
        reason: format!(
            "results differ from those pinned in {constant} (xtask/src/embedded.rs; they change \
             only when the numerics change on purpose, see its comment): {diffs}"
        ),
        detail: text.to_string(),
    }
}

fn failure_exits() -> Result<String, Failure> {
    let mut seen = Vec::new();
    for (word, expected) in FAILURE_EXITS {
        let step = format!("embedded failure {word}");
        let out = run_firmware("smoke", M4F, word, None, SMOKE_TIMEOUT, &step)?;
        let code = out.status.code();
        if code == Some(0) || code == Some(124) || code.is_none() || !out.text.contains(expected) {
            return Err(Failure {
                reason: format!(
                    "`{word}` should end QEMU with a failure saying {expected:?}; it exited with {}",
                    out.status
                ),
                detail: out.text,
            });
        }
        seen.push(format!("{word}: exit {}", code.unwrap_or(-1)));
    }
    Ok(seen.join(", "))
}

fn mnist_train(run: MnistRun, data: &Path) -> Result<Row, Failure> {
    let elf = build("mnist-train", M4F, None)?;
    let args = format!("data={} train={}", data.display(), run.images);
    let out = run_firmware("mnist-train", M4F, &args, None, run.timeout, run.step)?;
    if !out.status.success() {
        return Err(out.failure());
    }
    let mut row = Row::new("mnist-train", M4F, &elf, &out.text);
    let trained = row.number("train_images")?;
    let (correct, total) = (row.number("test_correct")?, row.number("test_total")?);
    if trained != run.images as u64 || total != 10_000 {
        return Err(Failure {
            reason: format!("trained on {trained} images and tested {total}"),
            detail: out.text,
        });
    }
    // Every MNIST batch fits the room kept for sparse rows (the instruction counts rest on it).
    let (steps, sparse) = (row.number("train_steps")?, row.number("sparse_steps")?);
    if sparse != steps {
        return Err(Failure {
            reason: format!("only {sparse} of {steps} training batches ran on sparse rows"),
            detail: out.text,
        });
    }
    differences(
        &[
            ("test_correct", run.test_correct.to_string()),
            ("weights_fnv1a", format!("{:?}", run.weights)),
        ],
        &[
            ("test_correct", correct.to_string()),
            (
                "weights_fnv1a",
                format!("{:?}", Digest(row.number("weights_fnv1a")?)),
            ),
        ],
    )
    .map_err(|d| pinned_mismatch(run.constant, &d, &out.text))?;
    let percent = 100.0 * correct as f64 / total as f64;
    row.program = format!("mnist-train ({}k images)", run.images / 1000);
    row.instructions = format!(
        "{} (train step), {} (test)",
        thousands(row.number("instructions_per_train_step_sample")?),
        thousands(row.number("instructions_per_test_sample")?)
    );
    row.accuracy = format!("{percent:.2} % ({correct} of {total}, = pinned)");
    row.note = format!(
        "test accuracy {percent:.2} % ({correct} of {total}, weights {:?}, as pinned) after {} images; {} instructions per training sample; all {} batches on sparse rows",
        run.weights,
        thousands(trained),
        thousands(row.number("instructions_per_train_sample")?),
        thousands(steps)
    );
    Ok(row)
}

/// `cnn-train` on the device, then its host twin (`crates/layers/examples/device_cnn.rs`, the
/// same plan, seed, batches and learning rates on the Naive backend): the weights' digests
/// and the test scores must be equal.
fn cnn_train(run: CnnRun, data: &Path) -> Result<Row, Failure> {
    let elf = build("cnn-train", M4F, None)?;
    let args = format!(
        "data={} epochs={} train={} test={}",
        data.display(),
        run.epochs,
        run.images,
        run.tested
    );
    let out = run_firmware("cnn-train", M4F, &args, None, run.timeout, run.step)?;
    if !out.status.success() {
        return Err(out.failure());
    }
    let mut row = Row::new("cnn-train", M4F, &elf, &out.text);
    let (correct, total) = (row.number("test_correct")?, row.number("test_total")?);
    let trained = row.number("train_images")?;
    if trained != (run.epochs * run.images) as u64 || total != run.tested as u64 {
        return Err(Failure {
            reason: format!("trained on {trained} images and tested {total}"),
            detail: out.text,
        });
    }
    let device_digest = row.number("weights_fnv1a")?;
    let mut twin = run::cargo();
    twin.args([
        "run",
        "--quiet",
        "--release",
        "-p",
        "manabi-layers",
        "--example",
        "device_cnn",
        "--",
    ])
    .arg(source_data_dir())
    .args([run.epochs, run.images, run.tested].map(|n| n.to_string()));
    for var in run::cargo_run_vars() {
        twin.env_remove(var);
    }
    let shown = run::show(&twin);
    let host_run = twin
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Failure::msg(format!("cannot start `{shown}`: {e}")))?;
    if !host_run.status.success() {
        return Err(Failure {
            reason: format!("`{shown}` exited with {}", host_run.status),
            detail: String::from_utf8_lossy(&host_run.stderr).into_owned(),
        });
    }
    let host = String::from_utf8_lossy(&host_run.stdout).into_owned();
    let host_digest = host
        .lines()
        .find_map(|l| l.strip_prefix("weights_fnv1a "))
        .and_then(|v| v.trim().parse::<u64>().ok());
    let host_correct = host
        .lines()
        .find_map(|l| l.strip_prefix("test_correct "))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok());
    if host_digest != Some(device_digest) || host_correct != Some(correct) {
        return Err(Failure {
            reason: format!(
                "the host twin differs: weights digest {host_digest:?} and {host_correct:?} correct \
                 on the host, {device_digest} and {correct} on the device"
            ),
            detail: format!("host:\n{host}\ndevice:\n{}", out.text),
        });
    }
    differences(
        &[
            ("test_correct", run.test_correct.to_string()),
            ("weights_fnv1a", format!("{:?}", run.weights)),
        ],
        &[
            ("test_correct", correct.to_string()),
            ("weights_fnv1a", format!("{:?}", Digest(device_digest))),
        ],
    )
    .map_err(|d| pinned_mismatch(run.constant, &d, &out.text))?;
    let epochs: Vec<String> = (1..=run.epochs)
        .filter_map(|e| row.metrics.get(&format!("test_correct_epoch{e}")))
        .filter_map(|c| c.parse::<f64>().ok())
        .map(|c| format!("{:.2} %", 100.0 * c / total as f64))
        .collect();
    row.program = format!("cnn-train ({} × {}k images)", run.epochs, run.images / 1000);
    row.instructions = format!(
        "{} (train image), {} (test)",
        thousands(row.number("instructions_per_train_sample")?),
        thousands(row.number("instructions_per_test_sample")?)
    );
    row.accuracy = format!(
        "{} after each epoch ({correct} of {total} at the end, = pinned); weights = host's",
        epochs.join(", ")
    );
    row.note = format!(
        "test accuracy {} after {} epoch(s) of {} images ({correct} of {total}, as pinned); weights bit for bit the host twin's and the pinned (FNV-1a {device_digest:#018x})",
        epochs.join(", "),
        run.epochs,
        thousands(run.images as u64)
    );
    Ok(row)
}

fn mnist_infer(data: &Path) -> Result<Row, Failure> {
    let dir = run::target_dir().join("embedded").join("host-model");
    let src = source_data_dir().display().to_string();
    manabi(
        "embedded manabi train",
        &[
            "train",
            "--data-dir",
            &src,
            "--out",
            &dir.display().to_string(),
        ],
    )?;
    let weights = dir.join("model.safetensors");
    let host = manabi(
        "embedded manabi eval",
        &[
            "eval",
            "--data-dir",
            &src,
            "--backend",
            "naive",
            "--weights",
            &weights.display().to_string(),
        ],
    )?;
    let host_matrix = confusion(&host)
        .ok_or_else(|| Failure::msg("no confusion matrix in `manabi eval`'s output"))?;
    let bytes = fs::read(&weights)
        .map_err(|e| Failure::msg(format!("cannot read {}: {e}", weights.display())))?;
    let flat = flat_params(&bytes, &SIZES)
        .map_err(|e| Failure::msg(format!("{}: {e}", weights.display())))?;
    let bin = dir.join("model.bin");
    fs::write(&bin, flat)
        .map_err(|e| Failure::msg(format!("cannot write {}: {e}", bin.display())))?;

    let elf = build("mnist-infer", M4F, Some(&bin))?;
    let args = format!("data={}", data.display());
    let out = run_firmware(
        "mnist-infer",
        M4F,
        &args,
        Some(&bin),
        INFER_TIMEOUT,
        "embedded mnist-infer",
    )?;
    if !out.status.success() {
        return Err(out.failure());
    }
    let device_matrix = confusion(&out.text)
        .ok_or_else(|| Failure::msg("no confusion matrix in the firmware's output"))?;
    if device_matrix != host_matrix {
        return Err(Failure {
            reason: "the device's confusion matrix differs from `manabi eval --backend naive`'s"
                .into(),
            detail: format!("host:\n{host}\ndevice:\n{}", out.text),
        });
    }
    let mut row = Row::new("mnist-infer", M4F, &elf, &out.text);
    // Image by image: the device's digest of its predictions against this file's reference.
    let read = |name: &str, header: usize| -> Result<Vec<u8>, Failure> {
        let path = data.join(name);
        let mut bytes = fs::read(&path)
            .map_err(|e| Failure::msg(format!("cannot read {}: {e}", path.display())))?;
        bytes.drain(..header.min(bytes.len()));
        Ok(bytes)
    };
    let (images, labels) = (read(MNIST_FILES[2], 16)?, read(MNIST_FILES[3], 8)?);
    let params: Vec<f32> = fs::read(&bin)
        .map_err(|e| Failure::msg(format!("cannot read {}: {e}", bin.display())))?
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let predicted = reference_predictions(&params, &SIZES, &images);
    let mut reference_matrix = vec![vec![0u64; CLASSES]; CLASSES];
    for (&label, &p) in labels.iter().zip(&predicted) {
        reference_matrix[usize::from(label)][p] += 1;
    }
    let reference_digest = fnv1a(predicted.iter().map(|&p| p as u8));
    let device_digest = row.number("predictions_fnv1a")?;
    if reference_matrix != host_matrix || device_digest != reference_digest {
        return Err(Failure {
            reason: format!(
                "predictions differ image by image: device digest {device_digest:#x}, \
                 reference {reference_digest:#x} (reference matrix equals the host's: {})",
                reference_matrix == host_matrix
            ),
            detail: out.text,
        });
    }
    let correct: u64 = (0..CLASSES).map(|k| device_matrix[k][k]).sum();
    let total: u64 = device_matrix.iter().flatten().sum();
    let percent = 100.0 * correct as f64 / total.max(1) as f64;
    row.instructions = format!(
        "{} (test)",
        thousands(row.number("instructions_per_test_sample")?)
    );
    row.accuracy = format!("{percent:.2} % (= host)");
    row.note = format!(
        "host-trained weights: {percent:.2} %; confusion matrix equal to manabi eval --backend \
         naive's, all {total} predictions equal to the reference's (digest {device_digest:#018x})"
    );
    Ok(row)
}

/// `cargo run --release -p manabi-cli -- <args>` in the main workspace; returns the log text.
fn manabi(name: &str, args: &[&str]) -> Result<String, Failure> {
    let mut cmd = run::cargo();
    cmd.args(["run", "--release", "--quiet", "-p", "manabi-cli", "--"])
        .args(args);
    let log = run::log_path(name);
    run::logged(&mut cmd, &log)?;
    fs::read_to_string(&log)
        .map_err(|e| Failure::msg(format!("cannot read {}: {e}", log.display())))
}

/// Cargo in the firmware workspace, its output kept apart under `<target>/firmware`. `model`
/// is the weights file `mnist-infer` embeds; `cargo run` must see the same as `cargo build`,
/// or the build script runs again and embeds nothing.
fn firmware_cargo(args: &[&str], board: Board, model: Option<&Path>) -> Command {
    let mut cmd = run::cargo();
    cmd.current_dir(run::root().join(FIRMWARE))
        .args(args)
        .args(["--release", "--target", board.target])
        .arg("--target-dir")
        .arg(firmware_target_dir())
        // Host flags (say `-C target-cpu=native`) would break a thumb build.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    match model {
        Some(model) => cmd.env("MANABI_MODEL_BIN", model),
        None => cmd.env_remove("MANABI_MODEL_BIN"),
    };
    cmd
}

fn firmware_target_dir() -> PathBuf {
    run::target_dir().join("firmware")
}

/// `cargo fmt --check` and clippy (warnings denied) over the firmware, for both targets.
fn lint() -> Result<Option<String>, Failure> {
    let mut fmt = run::cargo();
    fmt.current_dir(run::root().join(FIRMWARE))
        .args(["fmt", "--check", "--", "--color", "never"]);
    run::logged(&mut fmt, &run::log_path("embedded fmt"))?;
    // The M0 has room for the smoke test only.
    for (board, selection) in [(M4F, "--bins"), (M0, "--bin=smoke")] {
        let mut clippy = firmware_cargo(&["clippy", selection], board, None);
        clippy.args(["--", "-D", "warnings"]);
        run::logged(
            &mut clippy,
            &run::log_path(&format!("embedded clippy {}", board.target)),
        )?;
    }
    Ok(Some("fmt, clippy -D warnings (thumbv7em, thumbv6m)".into()))
}

/// Builds one firmware program and returns its ELF.
fn build(bin: &str, board: Board, model: Option<&Path>) -> Result<PathBuf, Failure> {
    let mut cmd = firmware_cargo(&["build", "--bin", bin], board, model);
    let log = run::log_path(&format!("embedded build {bin} {}", board.target));
    run::logged(&mut cmd, &log)?;
    Ok(firmware_target_dir()
        .join(board.target)
        .join("release")
        .join(bin))
}

/// What a firmware run printed and how QEMU exited.
struct Output {
    status: ExitStatus,
    text: String,
    log: PathBuf,
}

impl Output {
    fn failure(&self) -> Failure {
        let reason = if self.status.code() == Some(124) {
            format!("timed out (see {})", self.log.display())
        } else {
            format!(
                "QEMU exited with {} (see {})",
                self.status,
                self.log.display()
            )
        };
        Failure {
            reason,
            detail: self.text.trim_end().to_string(),
        }
    }
}

/// `timeout <limit> cargo run ... -- -append "<args>"`: the runner starts QEMU, `args` reach
/// the firmware as its command line. Output (interleaved) goes to the step's log.
fn run_firmware(
    bin: &str,
    board: Board,
    args: &str,
    model: Option<&Path>,
    limit: Duration,
    step: &str,
) -> Result<Output, Failure> {
    let cargo = firmware_cargo(&["run", "--bin", bin], board, model);
    let mut cmd = Command::new("timeout");
    cmd.current_dir(run::root().join(FIRMWARE))
        .arg("--kill-after=10")
        .arg(limit.as_secs().to_string())
        .arg(cargo.get_program())
        .args(cargo.get_args())
        .args(["--quiet", "--", "-append", args])
        .envs(cargo.get_envs().filter_map(|(k, v)| Some((k, v?))));
    for (k, v) in cargo.get_envs() {
        if v.is_none() {
            cmd.env_remove(k);
        }
    }
    let log = run::log_path(step);
    let line = run::show(&cmd);
    let file = |log: &Path| -> std::io::Result<(File, File)> {
        if let Some(dir) = log.parent() {
            fs::create_dir_all(dir)?;
        }
        let f = File::create(log)?;
        let g = f.try_clone()?;
        Ok((f, g))
    };
    let (out, err) =
        file(&log).map_err(|e| Failure::msg(format!("cannot write {}: {e}", log.display())))?;
    let status = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .status()
        .map_err(|e| Failure::msg(format!("cannot start `{line}`: {e}")))?;
    let text = fs::read_to_string(&log).unwrap_or_default();
    Ok(Output { status, text, log })
}

/// Flash (text + data) and static RAM (data + bss) of an ELF, from binutils `size` or
/// `llvm-size` (Berkeley format).
fn elf_size(elf: &Path) -> Option<(u64, u64)> {
    ["size", "llvm-size"].iter().find_map(|tool| {
        let out = run::stdout_of(run::program(tool).arg(elf))?;
        let line = out.lines().nth(1)?;
        let v: Vec<u64> = line
            .split_whitespace()
            .take(3)
            .map(|s| s.parse().ok())
            .collect::<Option<_>>()?;
        (v.len() == 3).then(|| (v[0] + v[1], v[1] + v[2]))
    })
}

/// Where the gzipped (or raw) MNIST files are: `$MANABI_DATA`, else xtask's default for it
/// (`../shared/data/mnist` when present), else `data/mnist` under the root (the CLI's default).
fn source_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MANABI_DATA").filter(|d| !d.is_empty()) {
        return std::env::current_dir()
            .map(|cwd| cwd.join(&dir))
            .unwrap_or_else(|_| PathBuf::from(dir));
    }
    run::defaults()
        .iter()
        .find(|(var, _)| var == "MANABI_DATA")
        .map(|(_, path)| path.clone())
        .unwrap_or_else(|| run::root().join("data").join("mnist"))
}

/// The raw IDX files the firmware streams, in `<target>/embedded-data`: decompressed once from
/// the source directory's `.gz` files (or copied, if it holds raw ones).
fn raw_data() -> Result<PathBuf, Failure> {
    let src = source_data_dir();
    let dst = run::target_dir().join("embedded-data");
    let shown = dst.display().to_string();
    if shown.contains(' ') {
        // The firmware's command line is split at spaces.
        return Err(Failure::msg(format!(
            "{shown}: the firmware cannot take a path with spaces; set CARGO_TARGET_DIR"
        )));
    }
    fs::create_dir_all(&dst).map_err(|e| Failure::msg(format!("cannot create {shown}: {e}")))?;
    for name in MNIST_FILES {
        let out = dst.join(name);
        if idx_complete(&out) {
            continue;
        }
        let tmp = dst.join(format!(".{name}.tmp-{}", std::process::id()));
        let raw = src.join(name);
        let gz = src.join(format!("{name}.gz"));
        if idx_complete(&raw) {
            fs::copy(&raw, &tmp)
                .map_err(|e| Failure::msg(format!("cannot copy {}: {e}", raw.display())))?;
        } else if gz.is_file() {
            let f = File::create(&tmp)
                .map_err(|e| Failure::msg(format!("cannot write {}: {e}", tmp.display())))?;
            let status = Command::new("gzip")
                .arg("-dc")
                .arg(&gz)
                .stdin(Stdio::null())
                .stdout(f)
                .status()
                .map_err(|e| Failure::msg(format!("cannot start gzip: {e}")))?;
            if !status.success() {
                let _ = fs::remove_file(&tmp);
                return Err(Failure::msg(format!(
                    "gzip -dc {} exited with {status}",
                    gz.display()
                )));
            }
        } else {
            return Err(Failure::msg(format!(
                "neither {} nor {} found: set MANABI_DATA to the MNIST directory \
                 (`manabi data fetch` downloads it)",
                raw.display(),
                gz.display()
            )));
        }
        if !idx_complete(&tmp) {
            let _ = fs::remove_file(&tmp);
            return Err(Failure::msg(format!(
                "{name}: not an IDX file whose length matches its header"
            )));
        }
        fs::rename(&tmp, &out)
            .map_err(|e| Failure::msg(format!("cannot rename to {}: {e}", out.display())))?;
    }
    Ok(dst)
}

/// Whether `path` is a raw IDX file exactly as long as its header says.
fn idx_complete(path: &Path) -> bool {
    let Ok(mut f) = File::open(path) else {
        return false;
    };
    let Ok(len) = f.metadata().map(|m| m.len()) else {
        return false;
    };
    let mut head = [0u8; 16];
    if f.read_exact(&mut head[..4]).is_err() || head[..3] != [0, 0, 0x08] {
        return false;
    }
    let rank = usize::from(head[3]);
    if !(1..=3).contains(&rank) || f.read_exact(&mut head[4..4 + 4 * rank]).is_err() {
        return false;
    }
    let count = (0..rank).try_fold(1u64, |n, d| {
        let b = &head[4 + 4 * d..8 + 4 * d];
        n.checked_mul(u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])))
    });
    count.and_then(|n| n.checked_add(4 + 4 * rank as u64)) == Some(len)
}

/// The flat parameters `[W1 b1 W2 b2 …]` (little-endian f32) of a safetensors file whose
/// tensors form the network `sizes`, `W<l>: [d_in, d_out]` and `b<l>: [d_out]` per layer; other
/// tensors and the metadata are ignored. The file is one `manabi train` just wrote, so the
/// safetensors crate reads it as it is (its own checks: header, offsets, sizes).
fn flat_params(bytes: &[u8], sizes: &[usize]) -> Result<Vec<u8>, String> {
    let file =
        SafeTensors::deserialize(bytes).map_err(|e| format!("not a safetensors file: {e}"))?;
    let mut out = Vec::new();
    for (l, pair) in sizes.windows(2).enumerate() {
        let (d_in, d_out) = (pair[0], pair[1]);
        for (name, shape) in [
            (format!("W{}", l + 1), vec![d_in, d_out]),
            (format!("b{}", l + 1), vec![d_out]),
        ] {
            let t = file
                .tensor(&name)
                .map_err(|e| format!("tensor {name}: {e}"))?;
            if t.dtype() != Dtype::F32 {
                return Err(format!("tensor {name} has dtype {}, not F32", t.dtype()));
            }
            if t.shape() != shape {
                return Err(format!(
                    "tensor {name} has shape {:?}, not {shape:?}",
                    t.shape()
                ));
            }
            out.extend_from_slice(t.data());
        }
    }
    Ok(out)
}

/// The class predicted for each image by a ReLU network with flat parameters `[W1 b1 W2 b2 …]`,
/// computed as manabi's `Naive` backend does: pixels `byte / 255`, each output starting at its
/// bias and adding `x_p · w_pj` for `p` in order, in f32 (Rust never fuses a multiply and an
/// add), ReLU between layers, the first largest output. The same operations in the same order
/// give the same bits on any IEEE 754 machine, the Cortex-M4F included.
fn reference_predictions(params: &[f32], sizes: &[usize], images: &[u8]) -> Vec<usize> {
    let d_in = sizes[0];
    images
        .chunks_exact(d_in)
        .map(|image| {
            let mut x: Vec<f32> = image.iter().map(|&b| f32::from(b) / 255.0).collect();
            let mut at = 0;
            for (l, pair) in sizes.windows(2).enumerate() {
                let (d_in, d_out) = (pair[0], pair[1]);
                let w = &params[at..at + d_in * d_out];
                let mut y = params[at + d_in * d_out..at + d_in * d_out + d_out].to_vec();
                at += d_in * d_out + d_out;
                for (xp, w_row) in x.iter().zip(w.chunks_exact(d_out)) {
                    for (yj, wpj) in y.iter_mut().zip(w_row) {
                        *yj += xp * wpj;
                    }
                }
                if l + 2 < sizes.len() {
                    for v in &mut y {
                        *v = if *v > 0.0 { *v } else { 0.0 };
                    }
                }
                x = y;
            }
            let mut best = 0;
            for (i, &v) in x.iter().enumerate() {
                if v > x[best] {
                    best = i;
                }
            }
            best
        })
        .collect()
}

/// FNV-1a, 64 bits, over `bytes` (the firmware digests its predictions the same way).
fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The confusion matrix printed after `confusion matrix` (a header line of class numbers, then
/// one row per true label: the label and its counts), as `manabi eval` and the firmware print it.
fn confusion(text: &str) -> Option<Vec<Vec<u64>>> {
    let mut lines = text
        .lines()
        .skip_while(|l| !l.starts_with("confusion matrix"))
        .skip(2);
    (0..CLASSES)
        .map(|k| {
            let numbers: Vec<u64> = lines
                .next()?
                .split_whitespace()
                .map(|s| s.parse().ok())
                .collect::<Option<_>>()?;
            (numbers.len() == CLASSES + 1 && numbers[0] == k as u64).then(|| numbers[1..].to_vec())
        })
        .collect()
}

/// The report as a Markdown table.
fn table(rows: &[Row]) -> String {
    let qemu = run::stdout_of(run::program("qemu-system-arm").arg("--version"))
        .and_then(|v| v.lines().next().map(str::to_string))
        .unwrap_or_else(|| "QEMU".into());
    let bytes = |v: Option<u64>| v.map(thousands).unwrap_or_else(|| "n/a".into());
    let mut t = String::new();
    let _ = writeln!(
        t,
        "## Firmware on QEMU ({qemu}; -icount shift=0: SysTick counts guest instructions)\n"
    );
    let _ = writeln!(
        t,
        "| program | board | flash B | static RAM B | arena B | stack peak B | instructions per sample | result |"
    );
    let _ = writeln!(t, "|---|---|---:|---:|---:|---:|---|---|");
    for r in rows {
        let metric = |k: &str| r.metrics.get(k).and_then(|v| v.parse().ok());
        let stack = match (metric("stack_peak_bytes"), metric("stack_size_bytes")) {
            (Some(p), Some(s)) => format!("{} of {}", thousands(p), thousands(s)),
            _ => "n/a".into(),
        };
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            r.program,
            r.board,
            bytes(r.flash),
            bytes(r.static_ram),
            bytes(metric("arena_bytes")),
            stack,
            r.instructions,
            r.accuracy
        );
    }
    let _ = writeln!(
        t,
        "\nRAM caps from memory.x: 256 KiB on mps2-an386 (flash 1 MiB), 16 KiB on microbit \
         (flash 256 KiB). Static RAM is .data + .bss; the stack is the rest of RAM, and its peak \
         is the deepest word written since reset. mnist-infer's flash holds the 159,040 bytes of weights."
    );
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A safetensors file for the MLP `sizes` (values 1.5, 2.5, … in layer order) and the flat
    /// parameters it holds, plus an extra tensor that must be ignored.
    fn safetensors(sizes: &[usize], dtype_of_b1: Dtype) -> (Vec<u8>, Vec<u8>) {
        let mut tensors = Vec::new();
        let mut expected = Vec::new();
        let mut next = 0.5f32;
        for (l, pair) in sizes.windows(2).enumerate() {
            for (name, shape) in [
                (format!("W{}", l + 1), vec![pair[0], pair[1]]),
                (format!("b{}", l + 1), vec![pair[1]]),
            ] {
                let n: usize = shape.iter().product();
                let bytes: Vec<u8> = (0..n)
                    .flat_map(|_| {
                        next += 1.0;
                        next.to_le_bytes()
                    })
                    .collect();
                expected.extend_from_slice(&bytes);
                tensors.push((name, shape, bytes));
            }
        }
        tensors.push(("extra".into(), vec![1], vec![0; 4]));
        let views = tensors.iter().map(|(name, shape, bytes)| {
            let dtype = if name == "b1" {
                dtype_of_b1
            } else {
                Dtype::F32
            };
            (
                name.clone(),
                safetensors::tensor::TensorView::new(dtype, shape.clone(), bytes).unwrap(),
            )
        });
        let metadata = [("manabi".to_string(), "sizes=2,3,2".to_string())].into();
        (
            safetensors::serialize(views, Some(metadata)).unwrap(),
            expected,
        )
    }

    #[test]
    fn safetensors_become_flat_params_in_layer_order() {
        let (file, expected) = safetensors(&[2, 3, 2], Dtype::F32);
        assert_eq!(flat_params(&file, &[2, 3, 2]).unwrap(), expected);
        assert_eq!(expected.len(), 4 * (2 * 3 + 3 + 3 * 2 + 2));
    }

    #[test]
    fn mismatched_or_truncated_safetensors_are_refused() {
        let (file, _) = safetensors(&[2, 3, 2], Dtype::F32);
        assert_eq!(
            flat_params(&file, &[2, 4, 2]).unwrap_err(),
            "tensor W1 has shape [2, 3], not [2, 4]"
        );
        assert_eq!(
            flat_params(&file, &[2, 3, 2, 1]).unwrap_err(),
            "tensor W3: tensor `W3` not found"
        );
        let (i32_bias, _) = safetensors(&[2, 3, 2], Dtype::I32);
        assert_eq!(
            flat_params(&i32_bias, &[2, 3, 2]).unwrap_err(),
            "tensor b1 has dtype I32, not F32"
        );
        let cut = flat_params(&file[..file.len() - 4], &[2, 3, 2]).unwrap_err();
        assert!(cut.starts_with("not a safetensors file: "), "{cut}");
        assert!(flat_params(&file[..5], &[2, 3, 2]).is_err());
        let mut huge = file.clone();
        huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(flat_params(&huge, &[2, 3, 2]).is_err());
    }

    #[test]
    fn confusion_matrices_are_read_after_their_title() {
        let mut text = String::from("noise\nconfusion matrix (rows: true label):\n  0 1 2\n");
        for k in 0..CLASSES {
            let row: Vec<String> = (0..CLASSES).map(|j| (k * 100 + j).to_string()).collect();
            text += &format!("{k:>6} {}\n", row.join(" "));
        }
        text += "test accuracy 0.5\n";
        let m = confusion(&text).unwrap();
        assert_eq!(m[3][7], 307);
        assert_eq!(m[9][0], 900);
        // A row missing a count is no matrix.
        let cut = text.replace(" 509\n", "\n");
        assert_eq!(confusion(&cut), None);
        assert_eq!(confusion("nothing here"), None);
    }

    #[test]
    fn metric_lines_become_a_map() {
        let m = metrics("hello\nmetric arena_bytes 195600\nmetric xor_loss 0.00201\nmetricx 1\n");
        assert_eq!(m.len(), 2);
        assert_eq!(m["arena_bytes"], "195600");
        assert_eq!(m["xor_loss"], "0.00201");
    }

    #[test]
    fn idx_files_must_match_their_header() {
        let dir = std::env::temp_dir().join(format!("xtask-idx-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good");
        // Rank 1, 3 items: magic 0 0 8 1, count 3 (big-endian), 3 bytes.
        fs::write(&good, [0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9]).unwrap();
        assert!(idx_complete(&good));
        let short = dir.join("short");
        fs::write(&short, [0, 0, 8, 1, 0, 0, 0, 3, 7, 8]).unwrap();
        assert!(!idx_complete(&short));
        let gz = dir.join("gz");
        fs::write(&gz, [0x1f, 0x8b, 8, 0, 0, 0, 0, 0]).unwrap();
        assert!(!idx_complete(&gz));
        assert!(!idx_complete(&dir.join("missing")));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn arguments_choose_the_scope_and_names_are_unique() {
        assert_eq!(Options { full: false }.scope(), Scope::All);
        assert_eq!(Options { full: true }.scope(), Scope::Full);
        for scope in [Scope::Ci, Scope::All, Scope::Full] {
            let mut names = scope.names();
            let n = names.len();
            names.sort();
            names.dedup();
            assert_eq!(names.len(), n);
        }
        // CI runs mnist-infer too, which leaves its steps those of the default.
        assert_eq!(Scope::Ci.names(), Scope::All.names());
        assert!(Scope::Ci.names().iter().any(|n| n.contains("infer")));
        assert!(Scope::Full.names().iter().any(|n| n.contains("60k")));
        assert_eq!(step_name("smoke", M0), "embedded smoke m0");
    }

    #[test]
    fn the_reference_network_computes_by_hand() {
        // 2-2-2: W1 = [[1, -1], [2, 0.5]], b1 = [0, 0.25]; W2 = [[1, 0], [0, 1]], b2 = [0, 0.5].
        // Image [255, 0] gives x = [1, 0]: hidden [1, -0.75] -> ReLU [1, 0]; output [1, 0.5]: 0.
        // Image [0, 255] gives x = [0, 1]: hidden [2, 0.75]; output [2, 1.25]: class 0.
        // Image [0, 0] gives hidden [0, 0.25]; output [0, 0.75]: class 1.
        let params = [1.0, -1.0, 2.0, 0.5, 0.0, 0.25, 1.0, 0.0, 0.0, 1.0, 0.0, 0.5];
        let images = [255, 0, 0, 255, 0, 0];
        assert_eq!(
            reference_predictions(&params, &[2, 2, 2], &images),
            [0, 0, 1]
        );
        // Ties go to the first class; the last layer has no ReLU (negative logits stay).
        let single = [0.0, 0.0, -1.0, -1.0];
        assert_eq!(reference_predictions(&single, &[1, 2], &[7]), [0]);
    }

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        // From the FNV reference (draft-eastlake-fnv): "" and "a" under FNV-1a 64.
        assert_eq!(fnv1a([]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(*b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(*b"foobar"), 0x8594_4171_f739_67e8);
    }

    /// `smoke`'s metric lines for `SMOKE` with the blobs' digest replaced by `blobs_digest`.
    fn smoke_output(blobs_digest: u64) -> String {
        format!(
            "metric xor_loss {}\nmetric xor_correct {}\nmetric xor_weights_fnv1a {}\n\
             metric blobs_test_correct {}\nmetric blobs_weights_fnv1a {blobs_digest}\n",
            SMOKE.xor_loss, SMOKE.xor_correct, SMOKE.xor_weights.0, SMOKE.blobs_correct
        )
    }

    #[test]
    fn smoke_results_are_read_as_pinned_and_each_difference_is_named() {
        let row = |text: &str| Row {
            program: "smoke".into(),
            metrics: metrics(text),
            ..Row::default()
        };
        let good = row(&smoke_output(SMOKE.blobs_weights.0));
        assert_eq!(SmokeResults::printed(&good).unwrap(), SMOKE.named());
        assert_eq!(differences(&SMOKE.named(), &SMOKE.named()), Ok(()));
        // One bit of the blobs' weights: the digest is named with both values, in hex.
        let bad = row(&smoke_output(SMOKE.blobs_weights.0 ^ 1));
        let got = SmokeResults::printed(&bad).unwrap();
        assert_eq!(
            differences(&SMOKE.named(), &got).unwrap_err(),
            format!(
                "blobs_weights_fnv1a: expected {:?}, got {:?}",
                SMOKE.blobs_weights,
                Digest(SMOKE.blobs_weights.0 ^ 1)
            )
        );
        // Two values off: both are listed, in order.
        let mut two = got.clone();
        two[0].1 = "0.00202".into();
        let message = differences(&SMOKE.named(), &two).unwrap_err();
        assert!(
            message.starts_with(&format!(
                "xor_loss: expected {}, got 0.00202; blobs_weights_fnv1a: expected",
                SMOKE.xor_loss
            )),
            "{message}"
        );
        // A missing line is a failure of its own.
        let cut = row(&smoke_output(0).replace("metric xor_correct 4\n", ""));
        assert_eq!(
            SmokeResults::printed(&cut).unwrap_err().reason,
            "smoke: no `metric xor_correct` line"
        );
        let failure = pinned_mismatch("SMOKE", &message, "the output");
        assert!(failure.reason.contains("pinned in SMOKE"));
        assert!(failure.reason.ends_with(&message));
        assert_eq!(failure.detail, "the output");
    }

    #[test]
    fn digests_show_in_hex_and_runs_name_their_constants() {
        assert_eq!(format!("{:?}", Digest(0x2d03)), "0x0000000000002d03");
        assert_eq!(
            format!("{:?}", CNN_FULL.weights),
            "0x10dbdde59d6c4200",
            "README.md quotes this digest"
        );
        for (run, name) in [(SHORT, "SHORT"), (FULL, "FULL")] {
            assert_eq!(run.constant, name);
            assert!(run.test_correct <= 10_000);
        }
        for (run, name) in [(CNN_SHORT, "CNN_SHORT"), (CNN_FULL, "CNN_FULL")] {
            assert_eq!(run.constant, name);
            assert!(run.test_correct <= run.tested as u64);
        }
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(438_930), "438,930");
        assert_eq!(thousands(26_335_800_000), "26,335,800,000");
    }
}
