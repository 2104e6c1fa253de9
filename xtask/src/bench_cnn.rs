//! `cargo xtask bench --cnn`: the book's SimpleConvNet protocol end to end, manabi beside PyTorch on the CPU, alternating runs, with the conv benches and the step's share of the peak.
//!
//! The run, in order:
//! 1. the `peak` and `cnn` criterion benches on one thread (`OPENBLAS_NUM_THREADS=1`);
//! 2. the CLI built as shipped (`gemm` is a convolutional network's default backend) and, with
//!    OpenBLAS installed, with `--features blas`;
//! 3. a venv under `target/pytorch-venv` with `pip install torch` (skipped, with the reason,
//!    where pip cannot reach the package);
//! 4. `--e2e-runs N` rounds (default 3), each one whole process of every entrant in turn:
//!    `manabi train --model simple-cnn --backend B` per build, then
//!    `benches/pytorch/simple_cnn.py`; both use the machine's cores (manabi: the batch split
//!    over two threads; PyTorch: its intra-op threads).
//!
//! The summary (`target/bench/cnn-summary.md`) gives each entrant's median wall time, the
//! protocol's arithmetic over it in GFLOP/s and as a share of the two-core peak, manabi's
//! speed-up over PyTorch, and the one-thread step against three times the time its arithmetic
//! needs at the one-core peak.

use crate::bench::{
    self, Peaks, Row, cpu_description, human_time, load_average, markdown_table, median,
    number_after, number_after_word, run_cargo, utc_now,
};
use crate::provision::Provides;
use crate::run::{self, Failure};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

/// Rounds of alternating runs unless `--e2e-runs` says otherwise.
pub const RUNS: usize = 3;
/// The book's protocol: 20 epochs of 600 iterations at batch 100.
const ITERS: u64 = 12_000;
const BATCH: u64 = 100;
/// Evaluated images: 1,000 training and 1,000 test images after iterations 1, 601, …
/// (20 points), then the whole test set.
const EVAL_IMAGES: u64 = 20 * 2_000 + 10_000;

/// SimpleConvNet's product flops per image (2 per multiply-add): the forward pass, and a
/// training step (forward; conv `dW` but no `dx` for the input; both affine layers' `dW` and
/// `dx`).
pub fn simple_cnn_flops() -> (u64, u64) {
    let conv = 2 * 30 * (5 * 5) * (24 * 24);
    let fc1 = 2 * (30 * 12 * 12) * 100;
    let fc2 = 2 * 100 * 10;
    (conv + fc1 + fc2, 2 * conv + 3 * fc1 + 3 * fc2)
}

/// The arithmetic of the whole protocol: training steps and evaluations.
pub fn protocol_flops() -> f64 {
    let (forward, step) = simple_cnn_flops();
    (ITERS * BATCH * step + EVAL_IMAGES * forward) as f64
}

/// One entrant's runs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Entrant {
    /// `manabi (default build)`, `manabi (blas build)`, `PyTorch 2.x`.
    pub name: String,
    /// Backend and threads as shown.
    pub how: String,
    /// Whole-process wall time of each run, s.
    pub walls: Vec<f64>,
    /// Final test accuracy of each run.
    pub accuracies: Vec<f64>,
}

/// What the PyTorch script prints: `final test acc A; iterations N; seconds S; threads T`.
pub fn parse_pytorch(line: &str) -> Option<(f64, u64, f64, usize)> {
    let field = |key: &str| {
        line.split(';')
            .map(str::trim)
            .find_map(|f| f.strip_prefix(key))
            .map(str::trim)
    };
    Some((
        field("final test acc")?.parse().ok()?,
        field("iterations")?.parse().ok()?,
        field("seconds")?.parse().ok()?,
        field("threads")?.parse().ok()?,
    ))
}

/// The venv's python with torch importable, or why there is none.
fn pytorch() -> Result<(PathBuf, String), String> {
    let venv = run::target_dir().join("pytorch-venv");
    let python = venv.join("bin").join("python");
    let version = |python: &Path| {
        run::stdout_of(
            Command::new(python)
                .args(["-c", "import torch; print(torch.__version__)"])
                .env("PYTHONWARNINGS", "ignore"),
        )
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
    };
    if let Some(v) = version(&python) {
        return Ok((python, v));
    }
    println!("$ python3 -m venv {}", venv.display());
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .map_err(|e| format!("cannot run python3: {e}"))?;
    if !made.success() {
        return Err(format!("`python3 -m venv` exited with {made}"));
    }
    let pip = venv.join("bin").join("pip");
    println!("$ {} install torch", pip.display());
    let out = Command::new(&pip)
        .args(["install", "--quiet", "torch"])
        .output()
        .map_err(|e| format!("cannot run pip: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(format!("pip could not install torch: {}", last.trim()));
    }
    version(&python)
        .map(|v| (python, v))
        .ok_or_else(|| "torch installed but does not import".into())
}

/// Runs `cmd`, returning its wall time and stdout, or a failure naming it.
fn timed(cmd: &mut Command) -> Result<(f64, String), Failure> {
    let line = run::show(cmd);
    let start = Instant::now();
    let output = cmd
        .output()
        .map_err(|e| Failure::msg(format!("cannot start `{line}`: {e}")))?;
    let wall = start.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        return Err(Failure::msg(format!(
            "`{line}` exited with {}:\n{stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    Ok((wall, stdout))
}

/// Runs the CNN bench; `command` for the summary, `runs` rounds, `quick` for short criterion
/// runs.
pub fn bench_cnn(command: &str, runs: usize, quick: bool) -> Result<(), Failure> {
    let load_before = load_average();
    let blas = Provides::Library("libopenblas.so").present();
    let started = SystemTime::now() - Duration::from_secs(1);
    let features = if blas { "blas,gemm" } else { "gemm" };
    let mut cmd = run::cargo();
    cmd.args(["bench", "-p", "manabi-benches", "--features", features])
        .args(["--bench", "peak", "--bench", "cnn", "--"]);
    if quick {
        cmd.args(bench::QUICK);
    }
    cmd.env("OPENBLAS_NUM_THREADS", "1")
        .env("MATMUL_NUM_THREADS", "1");
    run_cargo(&mut cmd)?;
    let rows: Vec<Row> = bench::collect(&run::target_dir().join("criterion"), started);
    let peaks = Peaks::from_rows(&rows);

    let data = bench::data_dir().ok_or_else(|| {
        Failure::msg("no MNIST: set MANABI_DATA to the folder with the four files")
    })?;
    let mut builds = vec![("default", None, "gemm")];
    if blas {
        builds.push(("blas", Some("blas"), "openblas"));
    }
    let mut entrants: Vec<(Command, Entrant)> = Vec::new();
    for (name, features, backend) in builds {
        let bin = bench::build_cli(name, features)?;
        let mut cmd = run::program(&bin.to_string_lossy());
        cmd.args([
            "train",
            "--model",
            "simple-cnn",
            "--backend",
            backend,
            "--out",
        ])
        .arg(run::target_dir().join("bench").join(format!("cnn-{name}")))
        .env("MANABI_DATA", &data);
        entrants.push((
            cmd,
            Entrant {
                name: format!("manabi ({name} build)"),
                how: format!("{backend}, 2 threads (data-parallel halves)"),
                ..Entrant::default()
            },
        ));
    }
    let script = run::root()
        .join("benches")
        .join("pytorch")
        .join("simple_cnn.py");
    let torch_note = match pytorch() {
        Ok((python, version)) => {
            let mut cmd = Command::new(python);
            cmd.arg(&script)
                .env("MANABI_DATA", &data)
                .env("PYTHONWARNINGS", "ignore");
            entrants.push((
                cmd,
                Entrant {
                    name: format!("PyTorch {version}"),
                    how: "CPU".into(),
                    ..Entrant::default()
                },
            ));
            format!(
                "PyTorch {version} from {}",
                run::target_dir().join("pytorch-venv").display()
            )
        }
        Err(why) => {
            println!("note: no PyTorch column: {why}");
            format!("no PyTorch column: {why}")
        }
    };
    for i in 1..=runs {
        for (cmd, e) in &mut entrants {
            let (wall, stdout) = timed(cmd)?;
            let acc = if e.name.starts_with("PyTorch") {
                let line = stdout.lines().find(|l| l.starts_with("final test acc"));
                let (acc, iters, _, threads) = line.and_then(parse_pytorch).ok_or_else(|| {
                    Failure::msg(format!("no result line from the PyTorch script:\n{stdout}"))
                })?;
                if iters != ITERS {
                    return Err(Failure::msg(format!(
                        "the PyTorch script ran {iters} iterations, not {ITERS}"
                    )));
                }
                e.how = format!("CPU, {threads} threads");
                acc
            } else {
                number_after(&stdout, "final test acc ").ok_or_else(|| {
                    Failure::msg(format!("no `final test acc` line from manabi:\n{stdout}"))
                })?
            };
            let took = number_after_word(&stdout, "training took ");
            println!(
                "cnn {} run {i}/{runs}: {wall:.2} s wall{}, final test acc {acc:.4}",
                e.name,
                took.map_or(String::new(), |t| format!(" ({t:.2} s training)"))
            );
            e.walls.push(wall);
            e.accuracies.push(acc);
        }
    }
    let entrants: Vec<Entrant> = entrants.into_iter().map(|(_, e)| e).collect();
    let mut md = String::new();
    let _ = writeln!(md, "# manabi SimpleConvNet against PyTorch\n");
    let _ = writeln!(md, "- CPU: {}", cpu_description());
    let _ = writeln!(md, "- date: {}", utc_now());
    let _ = writeln!(md, "- command: `{command}`");
    let _ = writeln!(
        md,
        "- load average (1, 5, 15 min): {load_before} before, {} after",
        load_average()
    );
    let gf = |p: Option<f64>| p.map_or("not measured".into(), |g| format!("{g:.1} GFLOP/s"));
    let _ = writeln!(
        md,
        "- peak (f32 FMA loop, best sample): 1 core {}, 2 cores {}",
        gf(peaks.one),
        gf(peaks.two)
    );
    let _ = writeln!(
        md,
        "- protocol: conv 30@5x5, ReLU, max-pool 2x2, affine 100, ReLU, affine 10; Adam lr \
         0.001; batch 100; {ITERS} iterations; 2,000 images evaluated per epoch and the test \
         set at the end: {:.2} TFLOP of products; whole process, {runs} rounds alternating \
         entrants; {torch_note}\n",
        protocol_flops() / 1e12
    );
    md.push_str(&entrant_table(&entrants, peaks.two));
    md.push('\n');
    for line in verdicts(&entrants, &rows, &peaks) {
        let _ = writeln!(md, "- {line}");
    }
    let _ = writeln!(md, "\n## Criterion (one thread)\n");
    md.push_str(&bench::table(&rows, &peaks));
    println!("\n{md}");
    let out = run::target_dir().join("bench").join("cnn-summary.md");
    fs::create_dir_all(out.parent().unwrap_or(Path::new(".")))
        .and_then(|()| fs::write(&out, &md))
        .map_err(|e| Failure::msg(format!("cannot write {}: {e}", out.display())))?;
    println!("written to {}", out.display());
    Ok(())
}

/// The side-by-side table: medians, spread, accuracy, GFLOP/s, share of the two-core peak.
pub fn entrant_table(entrants: &[Entrant], peak_two: Option<f64>) -> String {
    let mut cells: Vec<Vec<String>> = vec![
        [
            "entrant",
            "backend, threads",
            "runs",
            "median wall",
            "min",
            "max",
            "final test acc",
            "GFLOP/s",
            "% 2-core peak",
        ]
        .map(String::from)
        .to_vec(),
    ];
    let secs = |v: Option<f64>| v.map_or("-".into(), |s| format!("{s:.1} s"));
    for e in entrants {
        let lo = e.walls.iter().copied().min_by(f64::total_cmp);
        let hi = e.walls.iter().copied().max_by(f64::total_cmp);
        let wall = median(&e.walls);
        let gflops = wall.map(|w| protocol_flops() / w / 1e9);
        let acc = e
            .accuracies
            .iter()
            .map(|a| format!("{a:.4}"))
            .collect::<Vec<_>>()
            .join(", ");
        cells.push(vec![
            e.name.clone(),
            e.how.clone(),
            e.walls.len().to_string(),
            secs(wall),
            secs(lo),
            secs(hi),
            acc,
            gflops.map_or("-".into(), |g| format!("{g:.1}")),
            gflops
                .zip(peak_two)
                .map_or("-".into(), |(g, p)| format!("{:.1}%", 100.0 * g / p)),
        ]);
    }
    markdown_table(
        &cells,
        &[false, false, true, true, true, true, false, true, true],
    )
}

/// manabi against PyTorch (median walls), and the one-thread step against 3× its arithmetic
/// at the one-core peak.
pub fn verdicts(entrants: &[Entrant], rows: &[Row], peaks: &Peaks) -> Vec<String> {
    let mut out = Vec::new();
    let torch = entrants.iter().find(|e| e.name.starts_with("PyTorch"));
    for e in entrants.iter().filter(|e| e.name.starts_with("manabi")) {
        if let (Some(m), Some(t)) = (median(&e.walls), torch.and_then(|t| median(&t.walls))) {
            let verdict = if m < t {
                "faster: met"
            } else {
                "not faster: missed"
            };
            out.push(format!(
                "{} against PyTorch: {m:.1} s vs {t:.1} s median wall, {:.2}× ({verdict})",
                e.name,
                t / m
            ));
        }
    }
    let step_flops = (simple_cnn_flops().1 * BATCH) as f64;
    if let Some(peak) = peaks.one {
        let needs = step_flops / peak;
        let budget = 3.0 * needs;
        for r in rows.iter().filter(|r| r.group == "cnn-step") {
            let ns = r.median_ns;
            out.push(format!(
                "training step at batch 100, {}, 1 thread: {} = {:.1}× the {} its {:.1} MFLOP \
                 need at the 1-core peak ({:.0}% of peak); 3× is {}: {}",
                r.function,
                human_time(ns),
                ns / needs,
                human_time(needs),
                step_flops / 1e6,
                100.0 * needs / ns,
                human_time(budget),
                if ns <= budget { "met" } else { "missed" }
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_protocol_arithmetic_is_the_books_net() {
        // Forward: 864,000 (conv) + 864,000 (affine 4320→100) + 2,000 (affine 100→10).
        assert_eq!(simple_cnn_flops(), (1_730_000, 4_326_000));
        // 12,000 steps of 100 images and 50,000 evaluated images.
        assert_eq!(
            protocol_flops(),
            (12_000u64 * 100 * 4_326_000 + 50_000 * 1_730_000) as f64
        );
    }

    #[test]
    fn the_pytorch_line_parses() {
        let line = "final test acc 0.9887; iterations 12000; seconds 161.62; threads 2";
        assert_eq!(parse_pytorch(line), Some((0.9887, 12_000, 161.62, 2)));
        assert_eq!(
            parse_pytorch("final test acc 0.9887; iterations 12000"),
            None
        );
    }

    #[test]
    fn verdicts_compare_medians_and_the_step_budget() {
        let e = |name: &str, walls: &[f64]| Entrant {
            name: name.into(),
            how: String::new(),
            walls: walls.to_vec(),
            accuracies: vec![0.99; walls.len()],
        };
        let entrants = [
            e("manabi (default build)", &[80.0, 90.0, 70.0]),
            e("PyTorch 2", &[160.0, 150.0, 170.0]),
        ];
        let peaks = Peaks {
            one: Some(432.6),
            two: Some(865.2),
            isa: None,
        };
        let row = Row {
            group: "cnn-step".into(),
            function: "gemm".into(),
            value: String::new(),
            median_ns: 2.5e6,
            best_ns: None,
            flops: None,
            threads: 1,
            written: SystemTime::UNIX_EPOCH,
        };
        let v = verdicts(&entrants, &[row], &peaks);
        assert_eq!(v.len(), 2);
        assert!(
            v[0].contains("80.0 s vs 160.0 s")
                && v[0].contains("2.00×")
                && v[0].ends_with("(faster: met)"),
            "{}",
            v[0]
        );
        // 432.6 MFLOP at 432.6 GFLOP/s is 1 ms; 3 ms is the budget and 2.5 ms meets it.
        assert!(
            v[1].contains("2.5× the 1.00 ms") && v[1].ends_with("3.00 ms: met"),
            "{}",
            v[1]
        );
        let table = entrant_table(&entrants, peaks.two);
        assert!(
            table.contains("|      80.0 s |") && table.contains("|    66.0 |"),
            "{table}"
        );
    }
}
