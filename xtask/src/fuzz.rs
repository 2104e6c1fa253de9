//! `cargo xtask fuzz [--seconds N] [TARGET…]`: each cargo-fuzz target for N seconds, then executions and findings.
//!
//! The targets live in `fuzz/` (its own workspace, excluded from the main one, because
//! cargo-fuzz needs a nightly toolchain for the sanitizer). cargo-fuzz is installed with
//! `cargo install cargo-fuzz` when `cargo +nightly fuzz` is missing. Each target runs on
//! `fuzz/corpus/<target>` (grown by the run, not committed) seeded from `fuzz/seeds/<target>`
//! (committed); crashes land in `fuzz/artifacts/<target>/`, and any crash fails the task.

use crate::run::{self, Failure};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

/// The fuzz targets, in the order they run.
pub const TARGETS: &[&str] = &["idx_raw", "idx_gzip", "weights", "checkpoint"];

/// Seconds per target when `--seconds` is not given.
const DEFAULT_SECONDS: u64 = 60;

/// What the command line asked for.
#[derive(Debug, PartialEq, Eq, clap::Args)]
pub struct Options {
    /// Seconds per target
    #[arg(
        long,
        value_name = "N",
        default_value_t = DEFAULT_SECONDS,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub seconds: u64,
    /// Targets to run [default: all]
    #[arg(value_name = "TARGET", value_parser = clap::builder::PossibleValuesParser::new(TARGETS))]
    pub targets: Vec<String>,
}

impl Options {
    /// The targets named, or all of them when none were.
    pub fn targets(&self) -> Vec<String> {
        if self.targets.is_empty() {
            TARGETS.iter().map(|t| t.to_string()).collect()
        } else {
            self.targets.clone()
        }
    }
}

/// What libFuzzer reported for one run.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Inputs executed.
    pub executions: Option<u64>,
    /// Executions per second, averaged over the run.
    pub per_second: Option<u64>,
    /// Inputs added to the corpus because they reached new code.
    pub new_units: Option<u64>,
    /// Peak resident memory, MB.
    pub peak_rss_mb: Option<u64>,
}

/// Reads the `stat::name: value` lines that `-print_final_stats=1` prints at the end.
pub fn parse_stats(log: &str) -> Stats {
    let mut s = Stats::default();
    for line in log.lines() {
        let Some((key, value)) = line.trim().rsplit_once(':') else {
            continue;
        };
        let value = value.trim().parse::<u64>().ok();
        match key {
            "stat::number_of_executed_units" => s.executions = value,
            "stat::average_exec_per_sec" => s.per_second = value,
            "stat::new_units_added" => s.new_units = value,
            "stat::peak_rss_mb" => s.peak_rss_mb = value,
            _ => {}
        }
    }
    s
}

/// `cargo +nightly …`, started in the root, without the variables the outer (stable) cargo
/// set for xtask, which would otherwise pick the stable toolchain's tools.
fn nightly_cargo() -> Command {
    let mut cmd = run::program("cargo");
    cmd.arg("+nightly");
    for var in [
        "CARGO",
        "RUSTC",
        "RUSTDOC",
        "RUSTUP_TOOLCHAIN",
        "RUSTC_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// `cargo +nightly fuzz --version`, if it runs.
fn cargo_fuzz_version() -> Option<String> {
    run::stdout_of(nightly_cargo().args(["fuzz", "--version"])).map(|v| v.trim().to_string())
}

/// Installs cargo-fuzz if `cargo +nightly fuzz` does not run.
fn ensure_cargo_fuzz() -> Result<(), Failure> {
    if let Some(version) = cargo_fuzz_version() {
        println!("{version}");
        return Ok(());
    }
    if run::stdout_of(nightly_cargo().arg("--version")).is_none() {
        return Err(Failure::msg(
            "no nightly toolchain: cargo-fuzz needs one (rustup toolchain install nightly)",
        ));
    }
    println!("cargo-fuzz is missing: cargo install cargo-fuzz");
    let mut cmd = run::program("cargo");
    cmd.args(["install", "cargo-fuzz"]);
    run::logged(&mut cmd, &run::log_path("fuzz install"))?;
    cargo_fuzz_version()
        .map(|v| println!("{v}"))
        .ok_or_else(|| {
            Failure::msg("cargo install cargo-fuzz ran, but `cargo +nightly fuzz` still does not")
        })
}

/// Files in `dir` (0 if it does not exist).
fn count_files(dir: &Path) -> usize {
    fs::read_dir(dir).map_or(0, |d| d.flatten().filter(|e| e.path().is_file()).count())
}

/// Files in `dir` modified at or after `since`: the crashes of this run.
fn new_files(dir: &Path, since: SystemTime) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| {
            e.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t >= since)
        })
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// One target's result, as a table row.
struct Row {
    target: String,
    stats: Stats,
    corpus: usize,
    findings: Vec<PathBuf>,
    log: PathBuf,
}

fn cell(v: Option<u64>) -> String {
    v.map_or_else(|| "?".to_string(), |v| v.to_string())
}

/// `cargo xtask fuzz`.
pub fn fuzz(opts: &Options) -> Result<(), Failure> {
    ensure_cargo_fuzz()?;
    let root = run::root();
    let fuzz_dir = root.join("fuzz");
    let mut rows = Vec::new();
    for target in &opts.targets() {
        let corpus = fuzz_dir.join("corpus").join(target);
        let seeds = fuzz_dir.join("seeds").join(target);
        let artifacts = fuzz_dir.join("artifacts").join(target);
        fs::create_dir_all(&corpus)
            .map_err(|e| Failure::msg(format!("creating {}: {e}", corpus.display())))?;
        // Whole-second timestamps on some filesystems: allow for that.
        let started = SystemTime::now() - std::time::Duration::from_secs(1);
        let log = run::log_path(&format!("fuzz {target}"));
        let mut cmd = nightly_cargo();
        cmd.args(["fuzz", "run", target])
            .arg(&corpus)
            .arg(&seeds)
            .arg("--")
            .arg(format!("-max_total_time={}", opts.seconds))
            .args(["-print_final_stats=1", "-timeout=10"]);
        println!("fuzz {target}: {} s ({})", opts.seconds, run::show(&cmd));
        let status = run::logged(&mut cmd, &log);
        let text = fs::read_to_string(&log).unwrap_or_default();
        let mut findings = new_files(&artifacts, started);
        if let Err(e) = status
            && findings.is_empty()
        {
            // Not a crash libFuzzer recorded: the build or the tool failed.
            if parse_stats(&text).executions.is_none() {
                return Err(e);
            }
            findings.push(log.clone());
        }
        rows.push(Row {
            target: target.clone(),
            stats: parse_stats(&text),
            corpus: count_files(&corpus),
            findings,
            log,
        });
    }
    println!();
    println!(
        "| target | seconds | executions | exec/s | new units | corpus | peak RSS MB | findings |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            r.target,
            opts.seconds,
            cell(r.stats.executions),
            cell(r.stats.per_second),
            cell(r.stats.new_units),
            r.corpus,
            cell(r.stats.peak_rss_mb),
            r.findings.len()
        );
    }
    let found: Vec<String> = rows
        .iter()
        .flat_map(|r| {
            r.findings.iter().map(move |f| {
                format!(
                    "{}: {} (reproduce: cargo +nightly fuzz run {} {}; log {})",
                    r.target,
                    f.display(),
                    r.target,
                    f.display(),
                    r.log.display()
                )
            })
        })
        .collect();
    if found.is_empty() {
        println!("\nno findings");
        Ok(())
    } else {
        Err(Failure {
            reason: format!(
                "{} finding(s): turn each into a regression test",
                found.len()
            ),
            detail: found.join("\n"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_stats_are_read_from_the_log() {
        // The shape of libFuzzer's `-print_final_stats=1` output.
        let log = "#1048576\tpulse  cov: 10 ft: 20\nDone 2000 runs in 2 second(s)\n\
                   stat::number_of_executed_units: 2000\nstat::average_exec_per_sec:     1000\n\
                   stat::new_units_added:          7\nstat::slowest_unit_time_sec:    0\n\
                   stat::peak_rss_mb:              41\n";
        assert_eq!(
            parse_stats(log),
            Stats {
                executions: Some(2000),
                per_second: Some(1000),
                new_units: Some(7),
                peak_rss_mb: Some(41),
            }
        );
        assert_eq!(parse_stats("no stats here"), Stats::default());
    }
}
