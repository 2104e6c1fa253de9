//! manabi's task runner: `cargo xtask <task>`; `cargo xtask` alone lists the tasks.
//!
//! It depends on none of the workspace's own crates, so it builds even when the library crates
//! do not; its crates.io dependencies (see xtask/Cargo.toml) are the CLI's argument parser
//! (`clap`), the readers for what other tools write (`serde_json` for criterion's results and
//! cargo's messages, `safetensors` for trained weights, `toml` for manifests) and `humantime`
//! for the date on bench summaries. All but `toml` and `humantime` are in the tree for the CLI.
//! It runs cargo from `$CARGO` (else `cargo`) in the workspace root, whatever the cwd.
//!
//! What CI does is the data at the top of this file: the provisioning list, the lint jobs, the
//! test matrix, the no_std builds and the docs job. Adding a row is a one-line change.

mod bench;
mod bench_cnn;
mod embedded;
mod fuzz;
mod mnist;
mod provision;
mod run;
mod tidy;

use clap::{CommandFactory as _, Parser, Subcommand};
use provision::{Provides, Requirement};
use run::{Failure, Report};
use std::process::ExitCode;

/// What the machine needs for CI. Missing Rust targets are added with rustup; missing Debian
/// packages are installed with apt-get when running as root (otherwise the command is printed).
const REQUIREMENTS: &[Requirement] = &[
    Requirement::RustTarget("thumbv7em-none-eabihf"),
    Requirement::RustTarget("thumbv6m-none-eabi"),
    Requirement::Deb {
        package: "libopenblas-dev",
        provides: Provides::Library("libopenblas.so"),
    },
    // Runs the firmware (`cargo xtask embedded`).
    Requirement::Deb {
        package: "qemu-system-arm",
        provides: Provides::Program("qemu-system-arm"),
    },
];

/// Environment for cargo commands when unset and the folder exists (relative to the root):
/// the same default as `.ci/run`, so a plain `cargo xtask ci` runs the tests that read it.
const ENV_DEFAULTS: &[(&str, &str)] = &[("MANABI_DATA", "../shared/data/mnist")];

/// Formatting and lints, cheapest first.
const LINT: &[Job] = &[
    job(
        "fmt",
        &["fmt", "--all", "--check", "--", "--color", "never"],
    ),
    job(
        "clippy",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    ),
    // The optional backends, in the library and in the benches that time them.
    job(
        "clippy blas gemm",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--features",
            "manabi-matmul/blas,manabi-matmul/gemm,manabi-benches/blas,manabi-benches/gemm,manabi-cli/blas,manabi-cli/gemm",
            "--",
            "-D",
            "warnings",
        ],
    ),
];

/// The test matrix, run in order: one row per feature set worth testing.
#[rustfmt::skip]
const TEST_MATRIX: &[Job] = &[
    // matmul without matrixmultiply, so DefaultGemm is Naive; a debug build keeps debug_assert!s on.
    job("test naive only", &["test", "-p", "manabi-tensor", "-p", "manabi-matmul", "--no-default-features", "--features", "std"]),
    // Release: the heavy tests (gradient checks, training) run many times faster and the build costs about the same.
    job("test default", &["test", "--workspace", "--release", "--no-fail-fast"]),
    job("test blas", &["test", "--release", "--no-fail-fast", "-p", "manabi-matmul", "--features", "blas"]),
    // OpenBLAS's pinned SimpleConvNet run, beside the other backends' (crates/cli/tests/pins.rs).
    job("test blas pins", &["test", "--release", "--no-fail-fast", "-p", "manabi-cli", "--features", "blas", "--test", "pins", "--", "simple_cnn"]),
    // The gemm crate's backend, which is also DefaultGemm in this build.
    job("test gemm", &["test", "--release", "--no-fail-fast", "-p", "manabi-matmul", "--features", "gemm"]),
];

/// no_std library builds: (package, features, target), always with `--no-default-features`.
#[rustfmt::skip]
const NO_STD: &[NoStd] = &[
    NoStd("manabi-tensor", "", THUMBV7EM),
    NoStd("manabi-matmul", "", THUMBV7EM),
    NoStd("manabi-layers", "", THUMBV7EM),
    NoStd("manabi-optim", "", THUMBV7EM),
    // matrixmultiply needs alloc; a library builds without a global allocator.
    NoStd("manabi-matmul", "matrixmultiply", THUMBV7EM),
    NoStd("manabi-tensor", "", THUMBV6M),
    NoStd("manabi-matmul", "", THUMBV6M),
    NoStd("manabi-layers", "", THUMBV6M),
    NoStd("manabi-optim", "", THUMBV6M),
];

/// API docs with every rustdoc warning (broken intra-doc links among them) an error.
const DOCS: &[Job] = &[Job {
    name: "docs",
    args: &["doc", "--workspace", "--no-deps"],
    env: &[("RUSTDOCFLAGS", "-D warnings")],
}];

/// `cargo xtask ci`, cheapest first; it stops at the first failure.
const CI: &[Stage] = &[
    Stage::Provision,
    Stage::Jobs(LINT),
    Stage::Tidy,
    Stage::Jobs(TEST_MATRIX),
    Stage::NoStd(NO_STD),
    Stage::Jobs(DOCS),
    Stage::Mnist,
    Stage::Embedded(embedded::Scope::Ci),
];

const THUMBV7EM: &str = "thumbv7em-none-eabihf";
const THUMBV6M: &str = "thumbv6m-none-eabi";

/// One cargo invocation: a name for its status line, the arguments after `cargo`, extra env.
#[derive(Clone, Copy, Debug)]
struct Job {
    name: &'static str,
    args: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
}

/// A job without extra environment.
const fn job(name: &'static str, args: &'static [&'static str]) -> Job {
    Job {
        name,
        args,
        env: &[],
    }
}

/// `cargo build -p <package> --no-default-features [--features <f>] --target <target>`.
#[derive(Clone, Copy, Debug)]
struct NoStd(&'static str, &'static str, &'static str);

impl NoStd {
    fn name(&self) -> String {
        let NoStd(package, features, target) = *self;
        let target = target.split('-').next().unwrap_or(target);
        let package = package.trim_start_matches("manabi-");
        if features.is_empty() {
            format!("no-std {package} {target}")
        } else {
            format!("no-std {package}+{features} {target}")
        }
    }
}

/// A part of a task.
#[derive(Clone, Copy, Debug)]
enum Stage {
    /// Check REQUIREMENTS and install what is missing.
    Provision,
    /// Cargo jobs, one status line each.
    Jobs(&'static [Job]),
    /// The tidy checks, in process.
    Tidy,
    /// no_std builds, one status line each.
    NoStd(&'static [NoStd]),
    /// The book protocol on the real MNIST files, then eval and gradcheck.
    Mnist,
    /// Firmware built and run on QEMU (see embedded.rs).
    Embedded(embedded::Scope),
}

impl Stage {
    fn names(&self) -> Vec<String> {
        match self {
            Stage::Provision => vec!["provision".into()],
            Stage::Jobs(jobs) => jobs.iter().map(|j| j.name.to_string()).collect(),
            Stage::Tidy => vec!["tidy".into()],
            Stage::NoStd(rows) => rows.iter().map(NoStd::name).collect(),
            Stage::Mnist => ["mnist train", "mnist eval", "mnist gradcheck"]
                .map(String::from)
                .to_vec(),
            Stage::Embedded(scope) => scope.names(),
        }
    }

    fn run(&self, report: &mut Report) -> Result<(), Failure> {
        match self {
            Stage::Provision => report.step("provision", || provision::provision(REQUIREMENTS)),
            Stage::Tidy => report.step("tidy", || {
                let problems = tidy_problems()?;
                if problems.is_empty() {
                    Ok(None)
                } else {
                    Err(Failure {
                        reason: format!("{} problem(s)", problems.len()),
                        detail: problems.join("\n"),
                    })
                }
            }),
            Stage::Jobs(jobs) => jobs.iter().try_for_each(|j| {
                report.step(j.name, || {
                    let mut cmd = run::cargo();
                    cmd.args(j.args).envs(j.env.iter().copied());
                    run::logged(&mut cmd, &run::log_path(j.name)).map(|()| None)
                })
            }),
            Stage::Mnist => mnist::steps(report),
            Stage::Embedded(scope) => scope.run(report),
            Stage::NoStd(rows) => rows.iter().try_for_each(|row| {
                let name = row.name();
                report.step(&name, || {
                    let NoStd(package, features, target) = *row;
                    let mut cmd = run::cargo();
                    cmd.args(["build", "-p", package, "--no-default-features"]);
                    if !features.is_empty() {
                        cmd.args(["--features", features]);
                    }
                    cmd.args(["--target", target]);
                    run::logged(&mut cmd, &run::log_path(&name)).map(|()| None)
                })
            }),
        }
    }
}

/// Runs stages in order with one status line per step and a summary line at the end.
fn run_stages(task: &str, stages: &[Stage]) -> ExitCode {
    let names: Vec<String> = stages.iter().flat_map(Stage::names).collect();
    let mut report = Report::new(names.iter().map(String::len).max().unwrap_or(0));
    for (var, path) in run::defaults() {
        println!("{var}={} (default; set {var} to override)", path.display());
    }
    for stage in stages {
        if stage.run(&mut report).is_err() {
            println!(
                "{task}: FAILED after {} ({} of {} steps ok)",
                report.elapsed(),
                report.passed,
                names.len()
            );
            return ExitCode::FAILURE;
        }
    }
    println!(
        "{task}: all {} steps ok in {}",
        report.passed,
        report.elapsed()
    );
    // `TEST_MATRIX` is a const, so its address can differ between uses: compare job names.
    let ran_tests = |jobs: &[Job]| {
        jobs.iter()
            .any(|j| TEST_MATRIX.iter().any(|t| t.name == j.name))
    };
    if stages
        .iter()
        .any(|s| matches!(s, Stage::Jobs(jobs) if ran_tests(jobs)))
    {
        // One plain closing line for whoever reads only the end of the output.
        let logs = TEST_MATRIX
            .iter()
            .map(|j| std::fs::read_to_string(run::log_path(j.name)).unwrap_or_default());
        let (passed, failed) = logs
            .map(|l| test_totals(&l))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        println!("tests: {passed} passed, {failed} failed");
    }
    ExitCode::SUCCESS
}

/// Sums the `test result: … N passed; M failed; …` lines of a cargo test log.
fn test_totals(log: &str) -> (usize, usize) {
    let count = |line: &str, word: &str| -> usize {
        let words: Vec<&str> = line.split_whitespace().collect();
        words
            .windows(2)
            .find(|w| w[1].trim_end_matches(';') == word)
            .and_then(|w| w[0].parse().ok())
            .unwrap_or(0)
    };
    log.lines()
        .filter(|l| l.starts_with("test result:"))
        .map(|l| (count(l, "passed"), count(l, "failed")))
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
}

/// The command line: a task and its options; `cargo xtask <task> --help` shows them.
#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "manabi's task runner",
    after_help = "`cargo xtask <task> --help` shows a task's options."
)]
struct Cli {
    /// What to run; none lists the tasks.
    #[command(subcommand)]
    task: Option<Task>,
}

/// The tasks, in the order `cargo xtask` lists them.
#[derive(Debug, PartialEq, Subcommand)]
enum Task {
    /// Provision, then fmt, clippy, tidy, test matrix, no_std builds, docs, MNIST end to end,
    /// firmware on QEMU (what CI runs)
    Ci,
    /// The cargo test rows of the feature matrix
    TestMatrix,
    /// Build the no_std crates for the thumb targets
    NoStd,
    /// cargo-fuzz (nightly) each target for N seconds: IDX raw/gzip, weights, checkpoint
    Fuzz(fuzz::Options),
    /// House-style checks: //! headers, documented features, gradient checks, README options
    Tidy,
    /// Train the book's network on MNIST (>= 0.965 test accuracy), eval, gradcheck
    Mnist,
    /// Criterion benches, peak, timed `manabi train` runs; summary against the targets
    /// (target/bench/summary.md); with --cnn SimpleConvNet against PyTorch
    Bench(bench::Options),
    /// Firmware on QEMU: smoke tests (M4F, M0), MNIST and a CNN trained on the device, host
    /// weights on it
    Embedded(embedded::Options),
}

/// The tidy stage: the checks on files, then README's options against the programs' help.
fn tidy_problems() -> Result<Vec<String>, Failure> {
    let mut problems = tidy::check(run::root());
    problems.extend(tidy::readme_options(run::root())?);
    Ok(problems)
}

fn main() -> ExitCode {
    let Some(task) = Cli::parse().task else {
        // `cargo xtask` alone: the list of tasks, as `--help` prints it.
        let _ = Cli::command().print_help();
        return ExitCode::SUCCESS;
    };
    match task {
        Task::Ci => run_stages("ci", CI),
        Task::TestMatrix => {
            run_stages("test-matrix", &[Stage::Provision, Stage::Jobs(TEST_MATRIX)])
        }
        Task::NoStd => run_stages("no-std", &[Stage::Provision, Stage::NoStd(NO_STD)]),
        Task::Tidy => run_stages("tidy", &[Stage::Tidy]),
        Task::Mnist => run_stages("mnist", &[Stage::Mnist]),
        Task::Bench(opts) => match bench::bench(&opts) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench: {}", e.reason);
                ExitCode::FAILURE
            }
        },
        Task::Embedded(opts) => run_stages(
            "embedded",
            &[Stage::Provision, Stage::Embedded(opts.scope())],
        ),
        Task::Fuzz(opts) => match fuzz::fuzz(&opts) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("fuzz: {}", e.reason);
                if !e.detail.is_empty() {
                    eprintln!("{}", e.detail);
                }
                ExitCode::FAILURE
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_totals_sum_every_result_line() {
        let log = "running 3 tests\ntest result: ok. 3 passed; 0 failed; 0 ignored; 0 measured\n\
                   test result: FAILED. 10 passed; 2 failed; 0 ignored\nnot a result: 7 passed\n";
        assert_eq!(test_totals(log), (13, 2));
        assert_eq!(test_totals(""), (0, 0));
    }

    #[test]
    fn step_names_are_unique() {
        let names: Vec<String> = CI.iter().flat_map(Stage::names).collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len(), "{names:?}");
    }

    #[test]
    fn no_std_rows_are_named_for_package_features_and_target() {
        assert_eq!(
            NoStd("manabi-matmul", "matrixmultiply", THUMBV7EM).name(),
            "no-std matmul+matrixmultiply thumbv7em"
        );
        assert_eq!(
            NoStd("manabi-tensor", "", THUMBV6M).name(),
            "no-std tensor thumbv6m"
        );
    }

    #[test]
    fn ci_checks_every_target_it_builds_for() {
        for NoStd(_, _, target) in NO_STD {
            assert!(
                REQUIREMENTS
                    .iter()
                    .any(|r| matches!(r, Requirement::RustTarget(t) if t == target)),
                "{target} is built but not provisioned"
            );
        }
    }

    fn parse(args: &[&str]) -> Result<Option<Task>, clap::Error> {
        Cli::try_parse_from(std::iter::once("cargo xtask").chain(args.iter().copied()))
            .map(|cli| cli.task)
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
        assert_eq!(parse(&[]).unwrap(), None);
        assert_eq!(parse(&["ci"]).unwrap(), Some(Task::Ci));
        assert_eq!(parse(&["no-std"]).unwrap(), Some(Task::NoStd));
        assert_eq!(parse(&["test-matrix"]).unwrap(), Some(Task::TestMatrix));
        assert!(parse(&["nope"]).is_err());
        assert!(parse(&["tidy", "--fast"]).is_err());
        // `--help` and `help` print the list (clap reports them as a "help" outcome).
        for help in [
            &["--help"][..],
            &["help"],
            &["bench", "--help"],
            &["help", "fuzz"],
        ] {
            assert_eq!(
                parse(help).unwrap_err().kind(),
                clap::error::ErrorKind::DisplayHelp,
                "{help:?}"
            );
        }
    }

    #[test]
    fn bench_options_parse() {
        let bench = |args: &[&str]| match parse(&[&["bench"], args].concat()) {
            Ok(Some(Task::Bench(o))) => Ok(o),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.kind()),
        };
        let o = bench(&[]).unwrap();
        assert_eq!((o.quick, o.cnn, o.e2e_runs()), (false, false, 5));
        let o = bench(&["--quick"]).unwrap();
        assert_eq!((o.quick, o.e2e_runs()), (true, 1));
        assert_eq!(bench(&["--cnn"]).unwrap().e2e_runs(), 3);
        let o = bench(&["--quick", "--e2e-runs", "3", "--", "step", "--x"]).unwrap();
        assert_eq!((o.quick, o.e2e_runs()), (true, 3));
        assert_eq!(o.criterion, ["step", "--x"]);
        assert_eq!(
            o.command_line(),
            "cargo xtask bench --quick --e2e-runs 3 -- step --x"
        );
        assert_eq!(bench(&["--e2e-runs=0"]).unwrap().e2e_runs(), 0);
        assert!(bench(&["--e2e-runs"]).is_err());
        assert!(bench(&["--e2e-runs", "x"]).is_err());
        assert!(bench(&["--fast"]).is_err());
        // Criterion arguments come after `--` only.
        assert!(bench(&["gemm"]).is_err());
        assert_eq!(
            bench(&["--cnn", "--", "gemm"]).unwrap_err(),
            clap::error::ErrorKind::ArgumentConflict
        );
        let o = bench(&["--", "^step/a b"]).unwrap();
        assert_eq!(o.command_line(), r#"cargo xtask bench -- "^step/a b""#);
    }

    #[test]
    fn fuzz_and_embedded_options_parse() {
        let fuzz = |args: &[&str]| match parse(&[&["fuzz"], args].concat()) {
            Ok(Some(Task::Fuzz(o))) => Ok((o.seconds, o.targets())),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.kind()),
        };
        let all: Vec<String> = fuzz::TARGETS.iter().map(|t| t.to_string()).collect();
        assert_eq!(fuzz(&[]).unwrap(), (60, all));
        assert_eq!(
            fuzz(&["--seconds", "5", "weights"]).unwrap(),
            (5, vec!["weights".to_string()])
        );
        assert_eq!(fuzz(&["--seconds=7"]).unwrap().0, 7);
        assert!(fuzz(&["--seconds", "0"]).is_err());
        assert!(fuzz(&["--seconds"]).is_err());
        assert_eq!(
            fuzz(&["nope"]).unwrap_err(),
            clap::error::ErrorKind::InvalidValue
        );
        let scope = |args: &[&str]| match parse(&[&["embedded"], args].concat()) {
            Ok(Some(Task::Embedded(o))) => Ok(o.scope()),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.kind()),
        };
        assert_eq!(scope(&[]), Ok(embedded::Scope::All));
        assert_eq!(scope(&["--full"]), Ok(embedded::Scope::Full));
        assert!(scope(&["--fast"]).is_err());
    }

    #[test]
    fn the_matrix_tests_the_whole_workspace() {
        assert!(
            TEST_MATRIX
                .iter()
                .any(|j| j.args.first() == Some(&"test") && j.args.contains(&"--workspace"))
        );
    }
}
