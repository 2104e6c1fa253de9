//! `cargo xtask bench`: the criterion benches, whole `manabi train` runs, and a summary of time,
//! GFLOP/s and percentage of this machine's measured peak, next to the performance targets.
//!
//! Criterion 0.8 writes, for every benchmark, `<target>/criterion/<group>/<function>/<value>/new/`
//! with `benchmark.json` (the ids as given: `group_id`, `function_id`, `value_str`),
//! `estimates.json` (`median.point_estimate` in nanoseconds) and `sample.json` (`iters` and
//! `times` per sample). The table takes the results this run wrote and reads the arithmetic from
//! the id: `m<M> k<K> n<N>` tokens mean `2·M·K·N` flops, a `flop<F>` token means `F`; ids with
//! neither get a time but no GFLOP/s. A `t<N>` token says the row ran on `N` threads (else 1).
//!
//! The run, in order:
//! 1. every bench with `OPENBLAS_NUM_THREADS=1` (rows compare per core);
//! 2. with OpenBLAS and two or more cores, the `step` bench again with `OPENBLAS_NUM_THREADS=2`
//!    (OpenBLAS reads it once, when the library loads, so this takes a second process);
//! 3. `manabi train` with the book's defaults, `--e2e-runs` times per build (the default
//!    build and, with OpenBLAS, the `blas` one), interleaved, each timed as a whole process.
//!
//! The `peak` bench's FMA loop gives the limit: its best sample (the fastest per-iteration
//! time, the least disturbed by other work) on one core for single-thread rows, on two for
//! `t2` rows; f64 rows are compared with half of it (half the lanes per FMA).

use crate::provision::Provides;
use crate::run::{self, Failure};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde::de::DeserializeOwned;

/// The package holding the benches.
const PACKAGE: &str = "manabi-benches";
/// Criterion arguments that `--quick` adds: short warm-up and measurement, the fewest samples.
pub const QUICK: &[&str] = &[
    "--warm-up-time",
    "0.2",
    "--measurement-time",
    "0.5",
    "--sample-size",
    "10",
];
/// Whole training runs per build, unless `--e2e-runs` says otherwise.
const E2E_RUNS: usize = 5;
/// Whole training runs per build with `--quick`.
const E2E_RUNS_QUICK: usize = 1;
/// Groups in the order the summary lists them; others follow in run order.
const GROUP_ORDER: &[&str] = &[
    "peak",
    "gemm",
    "layers",
    "step",
    "step-fused",
    "step-sparse",
    "eval",
    "eval-sparse",
    "gradient",
    "conv",
    "pool",
    "cnn-step",
    "cnn-eval",
];

/// A build of the CLI timed end to end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Build {
    /// `default`, `gemm` or `blas`: names the binary and the output folder.
    name: &'static str,
    /// `--features` for cargo, if any.
    features: Option<&'static str>,
    /// The GEMM backend this build trains with.
    backend: &'static str,
}

const DEFAULT_BUILD: Build = Build {
    name: "default",
    features: None,
    backend: "matrixmultiply",
};
const GEMM_BUILD: Build = Build {
    name: "gemm",
    features: Some("gemm"),
    backend: "gemm",
};
const BLAS_BUILD: Build = Build {
    name: "blas",
    features: Some("blas"),
    backend: "openblas",
};

/// What a target is measured on.
#[derive(Clone, Copy, Debug)]
enum Measure {
    /// A bench row: group, function (backend) and threads.
    Row(&'static str, &'static str, usize),
    /// The median wall time of a build's training runs.
    Train(&'static str),
}

/// What a target asks for.
#[derive(Clone, Copy, Debug)]
enum Goal {
    /// A time of at most this many nanoseconds.
    AtMostNs(f64),
    /// At least this many GFLOP/s.
    AtLeastGflops(f64),
}

/// One performance target.
#[derive(Clone, Copy, Debug)]
struct Target {
    what: &'static str,
    measure: Measure,
    goal: Goal,
}

/// The performance targets: the whole book protocol in a few seconds, and the step and
/// evaluation speeds that get it there.
const TARGETS: &[Target] = &[
    Target {
        what: "manabi train, default build: median wall",
        measure: Measure::Train("default"),
        goal: Goal::AtMostNs(4e9),
    },
    Target {
        what: "manabi train, blas build: median wall",
        measure: Measure::Train("blas"),
        goal: Goal::AtMostNs(2.5e9),
    },
    Target {
        what: "training step (fused SGD, dense rows), matrixmultiply, 1 thread",
        measure: Measure::Row("step-fused", "matrixmultiply", 1),
        goal: Goal::AtMostNs(400e3),
    },
    Target {
        what: "training step (fused SGD, dense rows), openblas, 1 thread",
        measure: Measure::Row("step-fused", "openblas", 1),
        goal: Goal::AtMostNs(250e3),
    },
    Target {
        what: "training step as manabi train runs MNIST (sparse rows), matrixmultiply, 1 thread",
        measure: Measure::Row("step-sparse", "matrixmultiply", 1),
        goal: Goal::AtMostNs(400e3),
    },
    Target {
        what: "training step as manabi train runs MNIST (sparse rows), openblas, 1 thread",
        measure: Measure::Row("step-sparse", "openblas", 1),
        goal: Goal::AtMostNs(250e3),
    },
    Target {
        what: "eval of 70,000 images, matrixmultiply, 2 threads",
        measure: Measure::Row("eval", "matrixmultiply", 2),
        goal: Goal::AtLeastGflops(60.0),
    },
    Target {
        what: "eval of 70,000 images, openblas, 2 threads",
        measure: Measure::Row("eval", "openblas", 2),
        goal: Goal::AtLeastGflops(60.0),
    },
];

/// The options after `bench`.
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
pub struct Options {
    /// Short criterion runs (0.2 s warm-up, 0.5 s measurement, 10 samples) and one training
    /// run per build
    #[arg(long)]
    pub quick: bool,
    /// Whole training runs per build; 0 skips them [default: 5, 1 with --quick, 3 with --cnn]
    #[arg(long, value_name = "N")]
    pub e2e_runs: Option<usize>,
    /// The SimpleConvNet protocol against PyTorch instead (target/bench/cnn-summary.md); it runs
    /// its own benches, so it takes no criterion arguments
    #[arg(long, conflicts_with = "criterion")]
    pub cnn: bool,
    /// Arguments for criterion, after `--`: a filter (`-- gemm`) or criterion's own options
    #[arg(last = true, value_name = "CRITERION ARGS")]
    pub criterion: Vec<String>,
}

impl Options {
    /// Whole training runs per build: as given, else the default for `--cnn` or `--quick`.
    pub fn e2e_runs(&self) -> usize {
        let default = match (self.cnn, self.quick) {
            (true, _) => crate::bench_cnn::RUNS,
            (false, true) => E2E_RUNS_QUICK,
            (false, false) => E2E_RUNS,
        };
        self.e2e_runs.unwrap_or(default)
    }

    /// The command as a person would type it, for the summary.
    pub fn command_line(&self) -> String {
        let mut words = vec!["cargo xtask bench".to_string()];
        if self.quick {
            words.push("--quick".into());
        }
        if self.cnn {
            words.push("--cnn".into());
        }
        if let Some(n) = self.e2e_runs {
            words.push(format!("--e2e-runs {n}"));
        }
        if !self.criterion.is_empty() {
            words.push("--".into());
        }
        words.extend(self.criterion.iter().map(|a| {
            if a.is_empty() || a.contains([' ', '"', '\'', '$', '*', '^']) {
                format!("{a:?}")
            } else {
                a.clone()
            }
        }));
        words.join(" ")
    }
}

/// One benchmark's result.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Criterion's group (`gemm`, `step`, …).
    pub group: String,
    /// The function id: the backend (`-` for rows without a product; the ISA for `peak`).
    pub function: String,
    /// The value string: what ran, with its dimensions.
    pub value: String,
    /// Median time per iteration, ns.
    pub median_ns: f64,
    /// Fastest sample's time per iteration, ns (from sample.json).
    pub best_ns: Option<f64>,
    /// Floating-point operations per iteration, if the id says.
    pub flops: Option<f64>,
    /// Threads the row ran on (its `t<N>` token, else 1).
    pub threads: usize,
    /// When estimates.json was written (orders the table as the benches ran).
    pub written: SystemTime,
}

impl Row {
    /// GFLOP/s at the median time.
    pub fn gflops(&self) -> Option<f64> {
        self.flops.map(|f| f / self.median_ns)
    }

    /// Whether the row computes in f64 (its id says `f64`).
    fn is_f64(&self) -> bool {
        tokens(&self.value).any(|t| t == "f64")
    }
}

/// Whole `manabi train` runs of one build.
#[derive(Clone, Debug, PartialEq)]
pub struct E2e {
    /// `default` or `blas`.
    pub build: String,
    /// Its GEMM backend.
    pub backend: String,
    /// Wall time of each run, s.
    pub walls: Vec<f64>,
    /// The "training took" time each run printed, s.
    pub train_secs: Vec<f64>,
    /// The final test accuracy each run printed.
    pub accuracies: Vec<f64>,
}

/// The median of some values (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// Runs the bench task with the options after `bench`.
pub fn bench(opts: &Options) -> Result<(), Failure> {
    if opts.cnn {
        return crate::bench_cnn::bench_cnn(
            &opts.command_line(),
            opts.e2e_runs().max(1),
            opts.quick,
        );
    }
    let load_before = load_average();
    let blas = Provides::Library("libopenblas.so").present();
    if !blas {
        println!(
            "note: libopenblas.so not found, so no openblas rows (apt-get install libopenblas-dev)"
        );
    }
    let quick: &[&str] = if opts.quick { QUICK } else { &[] };
    // Criterion stamps files with whole seconds on some filesystems: allow for that.
    let started = SystemTime::now() - Duration::from_secs(1);

    // 1. Everything on one thread per backend.
    let mut cmd = run::cargo();
    // The gemm crate's backend is pure Rust, so it is always there; OpenBLAS only if installed.
    let features = if blas { "blas,gemm" } else { "gemm" };
    cmd.args(["bench", "-p", PACKAGE, "--features", features]);
    cmd.arg("--").args(quick).args(&opts.criterion);
    cmd.env("OPENBLAS_NUM_THREADS", "1")
        .env("MATMUL_NUM_THREADS", "1");
    run_cargo(&mut cmd)?;

    // 2. The OpenBLAS step on two threads, in a process that loads OpenBLAS with two.
    if blas && logical_cpus() >= 2 {
        let mut cmd = run::cargo();
        cmd.args([
            "bench",
            "-p",
            PACKAGE,
            "--features",
            features,
            "--bench",
            "step",
            "--",
        ])
        .args(quick);
        if opts.criterion.is_empty() {
            cmd.arg("^step(-fused)?/openblas/");
        } else {
            cmd.args(&opts.criterion);
        }
        cmd.env("OPENBLAS_NUM_THREADS", "2")
            .env("MATMUL_NUM_THREADS", "1");
        run_cargo(&mut cmd)?;
    }

    let criterion = run::target_dir().join("criterion");
    let mut rows = collect(&criterion, started);
    if rows.is_empty() {
        return Err(Failure::msg(format!(
            "no criterion results written under {} by this run (did the filter match nothing?)",
            criterion.display()
        )));
    }
    rows.sort_by_key(|r| group_rank(&r.group));
    // A filter may have left the peak out: then the last one measured stands in, flagged.
    let mut peak_note = "measured by this run";
    let mut peaks = Peaks::from_rows(&rows);
    if peaks.one.is_none() {
        let old: Vec<Row> = collect(&criterion, UNIX_EPOCH)
            .into_iter()
            .filter(|r| r.group == "peak")
            .collect();
        peaks = Peaks::from_rows(&old);
        peak_note = "from an earlier run (the filter left the peak bench out)";
    }

    // 3. Whole training runs.
    let builds: Vec<Build> = if blas {
        vec![DEFAULT_BUILD, GEMM_BUILD, BLAS_BUILD]
    } else {
        vec![DEFAULT_BUILD, GEMM_BUILD]
    };
    let (e2e, e2e_note) = if opts.e2e_runs() == 0 {
        (Vec::new(), "skipped (--e2e-runs 0)".to_string())
    } else {
        match data_dir() {
            Some(data) => (
                end_to_end(&builds, opts.e2e_runs(), &data)?,
                format!("MANABI_DATA={}", data.display()),
            ),
            None => (
                Vec::new(),
                "skipped: no MNIST (set MANABI_DATA to the folder with the four files)".into(),
            ),
        }
    };

    let info = Info {
        command: opts.command_line(),
        cpu: cpu_description(),
        date: utc_now(),
        load_before,
        load_after: load_average(),
        backends: if blas {
            "naive, matrixmultiply, gemm, openblas"
        } else {
            "naive, matrixmultiply, gemm"
        },
        peak_note,
        e2e_note,
        e2e_env: std::env::var("OPENBLAS_NUM_THREADS")
            .map_or("OPENBLAS_NUM_THREADS unset".into(), |v| {
                format!("OPENBLAS_NUM_THREADS={v}")
            }),
    };
    let md = summary(&info, &rows, &peaks, &e2e);
    println!("\n{md}");
    let out = run::target_dir().join("bench").join("summary.md");
    fs::create_dir_all(out.parent().unwrap_or(Path::new(".")))
        .and_then(|()| fs::write(&out, &md))
        .map_err(|e| Failure::msg(format!("cannot write {}: {e}", out.display())))?;
    println!("written to {}", out.display());
    Ok(())
}

/// Prints and runs a cargo command (without [`run::cargo_run_vars`]); a failure names its exit
/// status.
pub fn run_cargo(cmd: &mut Command) -> Result<(), Failure> {
    for var in run::cargo_run_vars() {
        cmd.env_remove(var);
    }
    println!("$ {}", run::show(cmd));
    let status = cmd
        .status()
        .map_err(|e| Failure::msg(format!("cannot start cargo: {e}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(Failure::msg(format!(
            "`{}` exited with {status}",
            run::show(cmd)
        )))
    }
}

/// `$MANABI_DATA`, else the default folder if it exists.
pub fn data_dir() -> Option<PathBuf> {
    std::env::var_os("MANABI_DATA")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            run::defaults()
                .iter()
                .find(|(var, _)| var == "MANABI_DATA")
                .map(|(_, path)| path.clone())
        })
}

/// Builds each variant of the CLI, then times `runs` whole `manabi train` runs of each with
/// the book's defaults, interleaved so that a burst of other work hits both builds alike.
fn end_to_end(builds: &[Build], runs: usize, data: &Path) -> Result<Vec<E2e>, Failure> {
    let mut bins = Vec::new();
    for b in builds {
        bins.push(build_cli(b.name, b.features)?);
    }
    let mut results: Vec<E2e> = builds
        .iter()
        .map(|b| E2e {
            build: b.name.to_string(),
            backend: b.backend.to_string(),
            walls: Vec::new(),
            train_secs: Vec::new(),
            accuracies: Vec::new(),
        })
        .collect();
    for i in 1..=runs {
        for ((b, bin), result) in builds.iter().zip(&bins).zip(&mut results) {
            let out = run::target_dir()
                .join("bench")
                .join(format!("e2e-{}", b.name));
            let mut cmd = run::program(&bin.to_string_lossy());
            // The build's backend by name: with gemm in the default build, an MLP's default
            // is matrixmultiply whatever else is built.
            cmd.args(["train", "--backend", b.backend])
                .arg("--out")
                .arg(&out)
                .env("MANABI_DATA", data);
            let line = run::show(&cmd);
            let start = Instant::now();
            let output = cmd
                .output()
                .map_err(|e| Failure::msg(format!("cannot start `{line}`: {e}")))?;
            let wall = start.elapsed().as_secs_f64();
            let stdout = String::from_utf8_lossy(&output.stdout);
            if !output.status.success() {
                return Err(Failure::msg(format!(
                    "`{line}` exited with {}:\n{stdout}{}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr)
                )));
            }
            let acc = number_after(&stdout, "final test acc ").ok_or_else(|| {
                Failure::msg(format!("no `final test acc` line from `{line}`:\n{stdout}"))
            })?;
            let took = number_after_word(&stdout, "training took ");
            println!(
                "e2e {} run {i}/{runs}: {wall:.2} s wall{}, final test acc {acc:.4}",
                b.name,
                took.map_or(String::new(), |t| format!(" ({t:.2} s training)"))
            );
            result.walls.push(wall);
            result.accuracies.push(acc);
            result.train_secs.extend(took);
        }
    }
    Ok(results)
}

/// Builds the CLI in release with `features` and keeps a copy of the binary as
/// `target/bench/bin/manabi-<name>` (every build writes target/release/manabi).
pub fn build_cli(name: &str, features: Option<&str>) -> Result<PathBuf, Failure> {
    let bin_dir = run::target_dir().join("bench").join("bin");
    fs::create_dir_all(&bin_dir)
        .map_err(|e| Failure::msg(format!("cannot create {}: {e}", bin_dir.display())))?;
    let exe = format!("manabi{}", std::env::consts::EXE_SUFFIX);
    let mut cmd = run::cargo();
    cmd.args(["build", "--release", "-p", "manabi-cli"]);
    if let Some(f) = features {
        cmd.args(["--features", f]);
    }
    run_cargo(&mut cmd)?;
    let built = run::target_dir().join("release").join(&exe);
    let kept = bin_dir.join(format!("manabi-{name}{}", std::env::consts::EXE_SUFFIX));
    fs::copy(&built, &kept).map_err(|e| {
        Failure::msg(format!(
            "cannot copy {} to {}: {e}",
            built.display(),
            kept.display()
        ))
    })?;
    Ok(kept)
}

/// The number after `prefix` at the start of the first line that has it.
pub fn number_after(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.trim_start().strip_prefix(prefix))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The number after `phrase` anywhere in the text (its first occurrence).
pub fn number_after_word(text: &str, phrase: &str) -> Option<f64> {
    let at = text.find(phrase)? + phrase.len();
    text[at..]
        .split_whitespace()
        .next()
        .and_then(|v| v.trim_end_matches([',', ';']).parse().ok())
}

/// Results under `criterion` whose estimates were written at or after `since`, in run order:
/// groups, then values, then functions, each by when it first appeared.
pub fn collect(criterion: &Path, since: SystemTime) -> Vec<Row> {
    let mut dirs = Vec::new();
    find_new_dirs(criterion, &mut dirs);
    let mut rows: Vec<Row> = dirs
        .iter()
        .filter_map(|d| read_row(d))
        .filter(|r| r.written >= since)
        .collect();
    let first = |same: &dyn Fn(&Row) -> bool| {
        rows.iter()
            .filter(|r| same(r))
            .map(|r| r.written)
            .min()
            .unwrap_or(UNIX_EPOCH)
    };
    let mut keyed: Vec<((SystemTime, SystemTime, SystemTime), Row)> = rows
        .iter()
        .map(|r| {
            let g = first(&|o| o.group == r.group);
            let v = first(&|o| o.group == r.group && o.value == r.value);
            let f = first(&|o| o.group == r.group && o.function == r.function);
            ((g, v, f), r.clone())
        })
        .collect();
    keyed.sort_by_key(|(key, _)| *key);
    rows = keyed.into_iter().map(|(_, r)| r).collect();
    rows
}

/// Where a group goes in the summary: [`GROUP_ORDER`], then the rest.
fn group_rank(group: &str) -> usize {
    GROUP_ORDER
        .iter()
        .position(|g| *g == group)
        .unwrap_or(GROUP_ORDER.len())
}

/// Every `new` folder (criterion's latest results) below `dir`.
fn find_new_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if !p.is_dir() {
            continue;
        }
        if e.file_name() == "new" {
            out.push(p);
        } else if e.file_name() != "report" {
            find_new_dirs(&p, out);
        }
    }
}

/// criterion's `benchmark.json`: the ids as given (function and value may be null).
#[derive(Deserialize)]
struct BenchmarkId {
    group_id: String,
    function_id: Option<String>,
    value_str: Option<String>,
}

/// The part of criterion's `estimates.json` the table uses.
#[derive(Deserialize)]
struct Estimates {
    median: Estimate,
}

#[derive(Deserialize)]
struct Estimate {
    /// Nanoseconds per iteration.
    point_estimate: f64,
}

/// criterion's `sample.json`: iterations and total time (ns) per sample.
#[derive(Deserialize)]
struct Sample {
    iters: Vec<f64>,
    times: Vec<f64>,
}

/// A JSON file read into `T`, if it is there and has that shape.
fn read_json<T: DeserializeOwned>(path: &Path) -> Option<T> {
    serde_json::from_slice(&fs::read(path).ok()?).ok()
}

/// One result from a `new` folder, if its files are there and readable.
fn read_row(new: &Path) -> Option<Row> {
    let est_path = new.join("estimates.json");
    let written = fs::metadata(&est_path).and_then(|m| m.modified()).ok()?;
    let est: Estimates = read_json(&est_path)?;
    let id: BenchmarkId = read_json(&new.join("benchmark.json"))?;
    let function = id.function_id.unwrap_or_default();
    let value = id.value_str.unwrap_or_default();
    let best_ns = read_json(&new.join("sample.json")).and_then(|s| best_per_iteration(&s));
    let flops = flops_of(&value).or_else(|| flops_of(&function));
    let threads = threads_of(&value)
        .or_else(|| threads_of(&function))
        .unwrap_or(1);
    Some(Row {
        group: id.group_id,
        function,
        value,
        median_ns: est.median.point_estimate,
        best_ns,
        flops,
        threads,
        written,
    })
}

/// The fastest `times[i] / iters[i]` of a criterion sample.json.
fn best_per_iteration(sample: &Sample) -> Option<f64> {
    sample
        .iters
        .iter()
        .zip(&sample.times)
        .filter(|(i, _)| **i > 0.0)
        .map(|(i, t)| t / i)
        .min_by(f64::total_cmp)
}

/// The tokens of an id: split at spaces, commas and slashes.
fn tokens(id: &str) -> impl Iterator<Item = &str> {
    id.split(|c: char| c.is_whitespace() || c == ',' || c == '/')
        .filter(|t| !t.is_empty())
}

/// The number after `prefix` if the whole token is the prefix and digits.
fn numbered(tok: &str, prefix: &str) -> Option<u64> {
    let d = tok.strip_prefix(prefix)?;
    (!d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        .then(|| d.parse().ok())
        .flatten()
}

/// The flops an id announces: `m.. k.. n..` → `2·m·k·n`, or `flop..` as given.
pub fn flops_of(id: &str) -> Option<f64> {
    let (mut m, mut k, mut n, mut direct) = (None, None, None, None);
    for tok in tokens(id) {
        if let Some(f) = numbered(tok, "flop") {
            direct = Some(f as f64);
        } else if let Some(v) = numbered(tok, "m") {
            m = Some(v as f64);
        } else if let Some(v) = numbered(tok, "k") {
            k = Some(v as f64);
        } else if let Some(v) = numbered(tok, "n") {
            n = Some(v as f64);
        }
    }
    direct.or(match (m, k, n) {
        (Some(m), Some(k), Some(n)) => Some(2.0 * m * k * n),
        _ => None,
    })
}

/// The threads an id announces with a `t<N>` token.
pub fn threads_of(id: &str) -> Option<usize> {
    tokens(id)
        .find_map(|t| numbered(t, "t"))
        .map(|n| n as usize)
}

/// The id as shown: without the `flop<F>` and `t<N>` tokens, which have their own columns.
fn shown(id: &str) -> String {
    id.split(' ')
        .filter(|t| numbered(t, "flop").is_none() && numbered(t, "t").is_none())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The measured limits, GFLOP/s (f32).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Peaks {
    /// One core.
    pub one: Option<f64>,
    /// Two cores.
    pub two: Option<f64>,
    /// The FMA loop's instruction set (the peak row's function id).
    pub isa: Option<&'static str>,
}

impl Peaks {
    /// The `peak` rows' best samples: flops over the fastest per-iteration time.
    pub fn from_rows(rows: &[Row]) -> Self {
        let at = |threads: usize| {
            rows.iter()
                .find(|r| r.group == "peak" && r.threads == threads)
                .and_then(|r| Some(r.flops? / r.best_ns.unwrap_or(r.median_ns)))
        };
        let isa = rows
            .iter()
            .find(|r| r.group == "peak")
            .map(|r| match r.function.as_str() {
                "avx512f" => "avx512f",
                "avx2-fma" => "avx2-fma",
                _ => "portable",
            });
        Peaks {
            one: at(1),
            two: at(2),
            isa,
        }
    }

    /// The peak a row is compared with: its thread count's, halved for f64.
    pub fn for_row(&self, r: &Row) -> Option<f64> {
        let p = match r.threads {
            1 => self.one,
            2 => self.two,
            _ => None,
        }?;
        Some(if r.is_f64() { p / 2.0 } else { p })
    }
}

/// A time in ns as `850 ns`, `12.3 µs`, `4.56 ms` or `1.20 s`.
pub fn human_time(ns: f64) -> String {
    if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{:.1} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

/// A Markdown table with padded columns; `right` marks the columns aligned right (numbers).
pub fn markdown_table(cells: &[Vec<String>], right: &[bool]) -> String {
    let cols = cells.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            cells
                .iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (i, row) in cells.iter().enumerate() {
        out.push('|');
        for (c, w) in widths.iter().enumerate() {
            let cell = row.get(c).map_or("", String::as_str);
            let pad = " ".repeat(w - cell.chars().count());
            if right.get(c).copied().unwrap_or(false) {
                let _ = write!(out, " {pad}{cell} |");
            } else {
                let _ = write!(out, " {cell}{pad} |");
            }
        }
        out.push('\n');
        if i == 0 {
            out.push('|');
            for (c, w) in widths.iter().enumerate() {
                let dashes = "-".repeat(*w);
                if right.get(c).copied().unwrap_or(false) {
                    let _ = write!(out, " {dashes}:|");
                } else {
                    let _ = write!(out, " {dashes} |");
                }
            }
            out.push('\n');
        }
    }
    out
}

/// The results table: benchmark, backend, threads, median, GFLOP/s, % of peak.
pub fn table(rows: &[Row], peaks: &Peaks) -> String {
    let mut cells: Vec<Vec<String>> = vec![
        [
            "benchmark",
            "backend",
            "threads",
            "median",
            "GFLOP/s",
            "% peak",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for r in rows {
        let value = shown(&r.value);
        let bench = match (r.group.as_str(), value.is_empty()) {
            (g, true) => g.to_string(),
            ("gemm", false) => value,
            (g, false) => format!("{g}: {value}"),
        };
        let gflops = r.gflops();
        let pct = gflops
            .zip(peaks.for_row(r))
            .map_or("-".into(), |(g, p)| format!("{:.0}%", 100.0 * g / p));
        cells.push(vec![
            bench,
            r.function.clone(),
            r.threads.to_string(),
            human_time(r.median_ns),
            gflops.map_or("-".into(), |g| format!("{g:.1}")),
            pct,
        ]);
    }
    markdown_table(&cells, &[false, false, true, true, true, true])
}

/// `met`, or `missed by …`, or `not measured`.
fn verdict(goal: Goal, measured: Option<f64>) -> String {
    match (goal, measured) {
        (_, None) => "not measured".into(),
        (Goal::AtMostNs(g), Some(m)) if m <= g => "met".into(),
        (Goal::AtMostNs(g), Some(m)) => format!("missed by {}", human_time(m - g)),
        (Goal::AtLeastGflops(g), Some(m)) if m >= g => "met".into(),
        (Goal::AtLeastGflops(g), Some(m)) => format!("missed by {:.1} GFLOP/s", g - m),
    }
}

/// The targets table: what, measured, goal, verdict.
fn targets_table(rows: &[Row], e2e: &[E2e]) -> String {
    let mut cells: Vec<Vec<String>> = vec![
        ["target", "measured", "goal", "verdict"]
            .map(String::from)
            .to_vec(),
    ];
    for t in TARGETS {
        let measured = match t.measure {
            Measure::Train(build) => e2e
                .iter()
                .find(|e| e.build == build)
                .and_then(|e| median(&e.walls))
                .map(|s| s * 1e9),
            Measure::Row(group, function, threads) => rows
                .iter()
                .find(|r| r.group == group && r.function == function && r.threads == threads)
                .and_then(|r| match t.goal {
                    Goal::AtMostNs(_) => Some(r.median_ns),
                    Goal::AtLeastGflops(_) => r.gflops(),
                }),
        };
        let (shown, goal) = match t.goal {
            Goal::AtMostNs(g) => (measured.map(human_time), format!("≤ {}", human_time(g))),
            Goal::AtLeastGflops(g) => (
                measured.map(|m| format!("{m:.1} GFLOP/s")),
                format!("≥ {g:.0} GFLOP/s"),
            ),
        };
        cells.push(vec![
            t.what.to_string(),
            shown.unwrap_or_else(|| "-".into()),
            goal,
            verdict(t.goal, measured),
        ]);
    }
    markdown_table(&cells, &[false, true, true, false])
}

/// The end-to-end table: one line per build.
fn e2e_table(e2e: &[E2e]) -> String {
    let mut cells: Vec<Vec<String>> = vec![
        [
            "build",
            "backend",
            "runs",
            "median wall",
            "min",
            "max",
            "training (median)",
            "final test acc",
        ]
        .map(String::from)
        .to_vec(),
    ];
    let secs = |v: Option<f64>| v.map_or("-".into(), |s| format!("{s:.2} s"));
    let lo = |v: &[f64]| v.iter().copied().min_by(f64::total_cmp);
    let hi = |v: &[f64]| v.iter().copied().max_by(f64::total_cmp);
    for e in e2e {
        let acc = match (lo(&e.accuracies), hi(&e.accuracies)) {
            (Some(a), Some(b)) if a == b => format!("{a:.4}"),
            (Some(a), Some(b)) => format!("{a:.4}–{b:.4}"),
            _ => "-".into(),
        };
        cells.push(vec![
            e.build.clone(),
            e.backend.clone(),
            e.walls.len().to_string(),
            secs(median(&e.walls)),
            secs(lo(&e.walls)),
            secs(hi(&e.walls)),
            secs(median(&e.train_secs)),
            acc,
        ]);
    }
    markdown_table(&cells, &[false, false, true, true, true, true, true, true])
}

/// The numerical gradient's time over backprop's, per backend that has both.
fn gradient_lines(rows: &[Row]) -> Vec<String> {
    let find = |function: &str, what: &str| {
        rows.iter()
            .find(|r| r.group == "gradient" && r.function == function && r.value.starts_with(what))
    };
    let mut out = Vec::new();
    for r in rows.iter().filter(|r| r.group == "gradient") {
        if !r.value.starts_with("numerical") {
            continue;
        }
        if let Some(b) = find(&r.function, "backprop") {
            out.push(format!(
                "- numerical gradient / backprop = {:.0}× ({} against {}; {}, {})",
                r.median_ns / b.median_ns,
                human_time(r.median_ns),
                human_time(b.median_ns),
                r.function,
                shown(r.value.trim_start_matches("numerical ")),
            ));
        }
    }
    out
}

/// What the summary's header says about the run.
struct Info {
    command: String,
    cpu: String,
    date: String,
    load_before: String,
    load_after: String,
    backends: &'static str,
    peak_note: &'static str,
    e2e_note: String,
    e2e_env: String,
}

/// The whole summary, Markdown.
fn summary(info: &Info, rows: &[Row], peaks: &Peaks, e2e: &[E2e]) -> String {
    let gf = |p: Option<f64>| p.map_or("not measured".into(), |g| format!("{g:.1} GFLOP/s"));
    let mut md = String::new();
    let _ = writeln!(md, "# manabi benchmarks\n");
    let _ = writeln!(md, "- CPU: {}", info.cpu);
    let _ = writeln!(md, "- date: {}", info.date);
    let _ = writeln!(md, "- command: `{}`", info.command);
    let _ = writeln!(
        md,
        "- load average (1, 5, 15 min): {} before, {} after",
        info.load_before, info.load_after
    );
    let _ = writeln!(md, "- backends: {}", info.backends);
    let _ = writeln!(
        md,
        "- peak (f32 FMA loop, {}, best sample; {}): 1 core {}, 2 cores {}",
        peaks.isa.unwrap_or("-"),
        info.peak_note,
        gf(peaks.one),
        gf(peaks.two)
    );
    let _ = writeln!(
        md,
        "- f32 unless the id says f64 (compared with half the peak); time = median of \
         criterion's samples; GFLOP/s = GEMM flops / median; rows run with \
         OPENBLAS_NUM_THREADS=1 except those with 2 threads; % peak against the peak of as \
         many cores as threads"
    );
    let _ = writeln!(
        md,
        "- end to end: `manabi train` with the book's defaults, whole process; {}; {}\n",
        info.e2e_note, info.e2e_env
    );
    let _ = writeln!(md, "## Targets (issue 5)\n");
    md.push_str(&targets_table(rows, e2e));
    if !e2e.is_empty() {
        let _ = writeln!(md, "\n## End to end\n");
        md.push_str(&e2e_table(e2e));
    }
    let grad = gradient_lines(rows);
    if !grad.is_empty() {
        let _ = writeln!(md, "\n## Numerical gradient against backprop\n");
        for l in grad {
            let _ = writeln!(md, "{l}");
        }
    }
    let _ = writeln!(md, "\n## All results\n");
    md.push_str(&table(rows, peaks));
    md
}

/// The first three fields of /proc/loadavg.
pub fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// A field of the first processor in /proc/cpuinfo.
fn cpuinfo_field(info: &str, key: &str) -> Option<String> {
    info.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_string())
    })
}

/// "model name (family F model M; avx2 fma …), N logical CPUs", from /proc/cpuinfo.
pub fn cpu_description() -> String {
    let info = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo_field(&info, "model name").unwrap_or_else(|| "unknown".into());
    let flags = cpuinfo_field(&info, "flags").unwrap_or_default();
    let simd: Vec<&str> = ["avx2", "fma", "avx512f"]
        .into_iter()
        .filter(|f| flags.split_whitespace().any(|x| x == *f))
        .collect();
    let mut extra = Vec::new();
    if let (Some(f), Some(m)) = (
        cpuinfo_field(&info, "cpu family"),
        cpuinfo_field(&info, "model"),
    ) {
        extra.push(format!("family {f} model {m}"));
    }
    if !simd.is_empty() {
        extra.push(simd.join(" "));
    }
    let extra = if extra.is_empty() {
        String::new()
    } else {
        format!(" ({})", extra.join("; "))
    };
    format!("{model}{extra}, {} logical CPUs", logical_cpus())
}

fn logical_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Now, as `YYYY-MM-DD HH:MM UTC`.
pub fn utc_now() -> String {
    utc_minutes(SystemTime::now())
}

/// A time as `YYYY-MM-DD HH:MM UTC`: humantime's RFC 3339 form (`YYYY-MM-DDTHH:MM:SSZ`) cut to
/// the minute. humantime formats the years 1970 to 9999 only (it panics before, fails after).
pub fn utc_minutes(t: SystemTime) -> String {
    let mut rfc3339 = String::new();
    if t < UNIX_EPOCH || write!(rfc3339, "{}", humantime::format_rfc3339_seconds(t)).is_err() {
        return "unknown (the clock is outside 1970-9999)".into();
    }
    let (date, time) = rfc3339.split_once('T').unwrap_or((&rfc3339, ""));
    format!("{date} {} UTC", time.get(..5).unwrap_or(time))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flops_and_threads_come_from_the_id() {
        // 2·100·784·50 = 7 840 000.
        assert_eq!(flops_of("forward m100 k784 n50"), Some(7_840_000.0));
        assert_eq!(flops_of("dW1 m784 k100 n50 At"), Some(7_840_000.0));
        assert_eq!(flops_of("train step flop16000000"), Some(16e6));
        assert_eq!(flops_of("whole run"), None);
        assert_eq!(flops_of("m3 k4"), None);
        // Words that merely start with m/k/n/t are not dimensions or threads.
        assert_eq!(flops_of("mnist naive"), None);
        assert_eq!(flops_of("m1x k2 n3"), None);
        assert_eq!(threads_of("784-50-10 f32 b100 t2 flop15980000"), Some(2));
        assert_eq!(threads_of("70000 images t1"), Some(1));
        assert_eq!(threads_of("train test"), None);
        assert_eq!(
            shown("784-50-10 f32 b100 t2 flop15980000"),
            "784-50-10 f32 b100"
        );
    }

    #[test]
    fn medians_and_verdicts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(verdict(Goal::AtMostNs(400e3), Some(350e3)), "met");
        assert_eq!(
            verdict(Goal::AtMostNs(400e3), Some(561.8e3)),
            "missed by 161.8 µs"
        );
        assert_eq!(verdict(Goal::AtLeastGflops(60.0), Some(61.0)), "met");
        assert_eq!(
            verdict(Goal::AtLeastGflops(60.0), Some(22.5)),
            "missed by 37.5 GFLOP/s"
        );
        assert_eq!(verdict(Goal::AtMostNs(1.0), None), "not measured");
    }

    #[test]
    fn numbers_are_read_from_the_training_output() {
        let out =
            "epoch 1 ...\nfinal test acc 0.9706 after 10000 iterations; training took 2.34 s\n";
        assert_eq!(number_after(out, "final test acc "), Some(0.9706));
        assert_eq!(number_after_word(out, "training took "), Some(2.34));
        assert_eq!(number_after(out, "missing "), None);
    }

    #[test]
    fn times_read_well() {
        assert_eq!(human_time(850.0), "850 ns");
        assert_eq!(human_time(12_345.0), "12.3 µs");
        assert_eq!(human_time(4_560_000.0), "4.56 ms");
        assert_eq!(human_time(1.2e9), "1.20 s");
    }

    #[test]
    fn dates_match_known_days() {
        let at = |secs: u64| utc_minutes(UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01 00:00 UTC");
        // 2000-02-29 is day 11 016 (30 years incl. 7 leap days = 10 957, + 31 + 28); 23:59:59.
        assert_eq!(at(11_016 * 86_400 + 86_399), "2000-02-29 23:59 UTC");
        assert_eq!(at(11_017 * 86_400), "2000-03-01 00:00 UTC");
        // 2024-12-31: 54 years incl. 13 leap days = 19 723 days to 2024-01-01, + 365; 19:12.
        assert_eq!(
            at(20_088 * 86_400 + 19 * 3600 + 12 * 60 + 30),
            "2024-12-31 19:12 UTC"
        );
        assert_eq!(
            utc_minutes(UNIX_EPOCH - Duration::from_secs(1)),
            "unknown (the clock is outside 1970-9999)"
        );
    }

    fn write_result(dir: &Path, group: &str, function: &str, value: &str, median: f64) {
        let new = dir.join(group).join(function).join(value).join("new");
        fs::create_dir_all(&new).unwrap();
        fs::write(
            new.join("benchmark.json"),
            format!(
                r#"{{"group_id":"{group}","function_id":"{function}","value_str":"{value}","throughput":null,"full_id":"x","directory_name":"x","title":"x"}}"#
            ),
        )
        .unwrap();
        fs::write(
            new.join("estimates.json"),
            format!(
                r#"{{"mean":{{"point_estimate":1.0}},"median":{{"confidence_interval":{{"lower_bound":0.0}},"point_estimate":{median}}}}}"#
            ),
        )
        .unwrap();
        // Samples of 10 and 20 iterations; the second is the faster per iteration (0.9·median).
        fs::write(
            new.join("sample.json"),
            format!(
                r#"{{"sampling_mode":"Linear","iters":[10.0,20.0],"times":[{},{}]}}"#,
                10.0 * median,
                18.0 * median
            ),
        )
        .unwrap();
        // Distinct modification times for the ordering.
        std::thread::sleep(Duration::from_millis(20));
    }

    #[test]
    fn results_are_collected_in_run_order_and_tabulated() {
        let dir = std::env::temp_dir().join(format!("xtask-bench-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        write_result(&dir, "gemm", "naive", "old m1 k1 n1", 1.0);
        std::thread::sleep(Duration::from_millis(50));
        let since = SystemTime::now();
        // File times come from a coarse clock that can lag `now` by a tick.
        std::thread::sleep(Duration::from_millis(30));
        write_result(&dir, "gemm", "naive", "b m10 k10 n10", 1000.0);
        write_result(&dir, "gemm", "naive", "a m100 k10 n10", 2000.0);
        write_result(&dir, "gemm", "fast", "b m10 k10 n10", 100.0);
        write_result(&dir, "gemm", "fast", "a m100 k10 n10", 200.0);
        // The peak: 9000 flops per iteration at best 0.9·100 ns = 100 GFLOP/s on one core.
        write_result(&dir, "peak", "avx2-fma", "1 core t1 flop9000", 100.0);
        write_result(&dir, "step", "fast", "net t2 flop4000", 100.0);
        let mut rows = collect(&dir, since);
        rows.sort_by_key(|r| group_rank(&r.group));
        let order: Vec<(&str, &str)> = rows
            .iter()
            .map(|r| (r.value.as_str(), r.function.as_str()))
            .collect();
        assert_eq!(
            order,
            [
                ("1 core t1 flop9000", "avx2-fma"),
                ("b m10 k10 n10", "naive"),
                ("b m10 k10 n10", "fast"),
                ("a m100 k10 n10", "naive"),
                ("a m100 k10 n10", "fast"),
                ("net t2 flop4000", "fast"),
            ]
        );
        // 2·10·10·10 = 2000 flops in 100 ns = 20 GFLOP/s.
        assert_eq!(rows[2].gflops(), Some(20.0));
        assert_eq!(rows[2].best_ns, Some(90.0));
        let peaks = Peaks::from_rows(&rows);
        assert_eq!((peaks.one, peaks.two), (Some(100.0), None));
        assert_eq!(peaks.isa, Some("avx2-fma"));
        let t = table(&rows, &peaks);
        // 20 GFLOP/s of a 100 GFLOP/s core = 20 %; the two-thread row has no peak to compare.
        assert!(
            t.contains("| b m10 k10 n10  | fast     |       1 | 100 ns |    20.0 |    20% |"),
            "{t}"
        );
        assert!(
            t.contains("| step: net      | fast     |       2 | 100 ns |    40.0 |      - |"),
            "{t}"
        );
        assert!(t.lines().nth(1).unwrap().starts_with("| ---"), "{t}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn targets_and_ratios_are_summarized() {
        let row = |group: &str, function: &str, value: &str, median_ns: f64| Row {
            group: group.into(),
            function: function.into(),
            value: value.into(),
            median_ns,
            best_ns: None,
            flops: flops_of(value),
            threads: threads_of(value).unwrap_or(1),
            written: UNIX_EPOCH,
        };
        let rows = [
            row("step-fused", "matrixmultiply", "net t1 flop15980000", 380e3),
            row("step-fused", "openblas", "net t1 flop15980000", 300e3),
            row("step-sparse", "matrixmultiply", "net t1 flop3278000", 60e3),
            // 5.558 GFLOP in 100 ms = 55.58 GFLOP/s.
            row("eval", "openblas", "70000 images t2 flop5558000000", 100e6),
            row("gradient", "matrixmultiply", "backprop net f64 b3", 100e3),
            row("gradient", "matrixmultiply", "numerical net f64 b3", 2.5e9),
        ];
        let e2e = [E2e {
            build: "blas".into(),
            backend: "openblas".into(),
            walls: vec![2.6, 2.2, 2.4],
            train_secs: vec![1.5, 1.4, 1.6],
            accuracies: vec![0.97, 0.97, 0.97],
        }];
        let t = targets_table(&rows, &e2e);
        let line = |what: &str| t.lines().find(|l| l.contains(what)).unwrap().to_string();
        assert!(
            line("blas build").contains(" 2.40 s |     ≤ 2.50 s | met "),
            "{t}"
        );
        assert!(line("default build").contains("not measured"), "{t}");
        assert!(line("dense rows), matrixmultiply").contains("| met"), "{t}");
        assert!(
            line("dense rows), openblas").contains("missed by 50.0 µs"),
            "{t}"
        );
        assert!(
            line("(sparse rows), matrixmultiply").contains("| met"),
            "{t}"
        );
        assert!(
            line("(sparse rows), openblas").contains("not measured"),
            "{t}"
        );
        assert!(
            line("eval of 70,000 images, openblas").contains("55.6 GFLOP/s"),
            "{t}"
        );
        assert!(line("eval of 70,000 images, openblas").contains("missed by 4.4 GFLOP/s"));
        let g = gradient_lines(&rows);
        assert_eq!(
            g,
            [
                "- numerical gradient / backprop = 25000× (2.50 s against 100.0 µs; matrixmultiply, net f64 b3)"
            ]
        );
        let e = e2e_table(&e2e);
        assert!(
            e.contains("| blas  | openblas |    3 |      2.40 s | 2.20 s | 2.60 s |            1.50 s |         0.9700 |"),
            "{e}"
        );
    }
}
