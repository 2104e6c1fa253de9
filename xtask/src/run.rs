//! Running commands: where the workspace is, how cargo is called, one status line per step.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The workspace root: the parent of this crate's manifest directory, whatever the cwd.
pub fn root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let here = Path::new(env!("CARGO_MANIFEST_DIR"));
        here.parent().unwrap_or(here).to_path_buf()
    })
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` (relative to the cwd) or `<root>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => std::env::current_dir()
            .map(|cwd| cwd.join(&dir))
            .unwrap_or_else(|_| PathBuf::from(dir)),
        _ => root().join("target"),
    }
}

/// `$CARGO` (set when run through `cargo xtask`) or plain `cargo`, started in the root, with
/// the [`defaults`] in its environment.
pub fn cargo() -> Command {
    let program = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(program);
    cmd.current_dir(root()).envs(defaults().iter().cloned());
    for var in cargo_run_vars() {
        cmd.env_remove(var);
    }
    cmd
}

/// Variables `cargo run` sets for xtask itself (`CARGO_MANIFEST_DIR`, `CARGO_PKG_*`, …), which a
/// nested cargo would pass on to build scripts: ring's reruns when `CARGO_MANIFEST_DIR`
/// changes, so a build started from here and one started from a shell would rebuild each
/// other's dependencies every time.
pub fn cargo_run_vars() -> Vec<String> {
    const SET_BY_CARGO_RUN: &[&str] = &[
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
        "CARGO_CRATE_NAME",
        "CARGO_BIN_NAME",
        "CARGO_PRIMARY_PACKAGE",
    ];
    std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| SET_BY_CARGO_RUN.contains(&k.as_str()) || k.starts_with("CARGO_PKG_"))
        .collect()
}

/// The variables of `crate::ENV_DEFAULTS` that are unset here and whose folder exists (paths
/// relative to the root), made absolute: cargo commands get them, so `cargo xtask ci` finds
/// what `.ci/run` would have pointed to.
pub fn defaults() -> &'static [(String, PathBuf)] {
    static DEFAULTS: OnceLock<Vec<(String, PathBuf)>> = OnceLock::new();
    DEFAULTS.get_or_init(|| {
        crate::ENV_DEFAULTS
            .iter()
            .filter(|(var, _)| std::env::var_os(var).is_none())
            .filter_map(|(var, rel)| {
                let path = fs::canonicalize(root().join(rel)).ok()?;
                path.is_dir().then(|| (var.to_string(), path))
            })
            .collect()
    })
}

/// Any program, started in the workspace root.
pub fn program(name: &str) -> Command {
    let mut cmd = Command::new(name);
    cmd.current_dir(root());
    cmd
}

/// The command line as a person would type it (environment assignments first, the
/// [`defaults`] left out: they are printed once).
pub fn show(cmd: &Command) -> String {
    let mut parts: Vec<String> = cmd
        .get_envs()
        .filter(|(k, _)| !defaults().iter().any(|(d, _)| k.to_str() == Some(d)))
        .filter_map(|(k, v)| Some(format!("{}={:?}", k.to_string_lossy(), v?)))
        .collect();
    let program = cmd.get_program().to_string_lossy();
    // `$CARGO` is a full path; `cargo` reads better and runs the same toolchain from the root.
    parts.push(
        if Path::new(&*program).file_name() == Some("cargo".as_ref()) {
            "cargo".to_string()
        } else {
            program.into_owned()
        },
    );
    for a in cmd.get_args() {
        let a = a.to_string_lossy();
        if a.is_empty() || a.contains([' ', '"', '\'', '$', '*']) {
            parts.push(format!("{a:?}"));
        } else {
            parts.push(a.into_owned());
        }
    }
    parts.join(" ")
}

/// Runs `cmd` and returns its stdout if it exited 0.
pub fn stdout_of(cmd: &mut Command) -> Option<String> {
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Why a step failed: a one-line reason and, for commands, where their output went.
#[derive(Debug)]
pub struct Failure {
    /// What went wrong, in one line (the command line for a command that failed).
    pub reason: String,
    /// Text to show under the status line: the command's output or a list of problems.
    pub detail: String,
}

impl Failure {
    /// A failure that is just a message.
    pub fn msg(reason: impl Into<String>) -> Self {
        Failure {
            reason: reason.into(),
            detail: String::new(),
        }
    }
}

/// Runs `cmd` with stdout and stderr (interleaved, in order) going to `log`; a non-zero exit
/// becomes a [`Failure`] carrying the command line and the log's text.
pub fn logged(cmd: &mut Command, log: &Path) -> Result<(), Failure> {
    let line = show(cmd);
    let open = || -> io::Result<(File, File)> {
        if let Some(dir) = log.parent() {
            fs::create_dir_all(dir)?;
        }
        let mut f = File::create(log)?;
        writeln!(f, "$ {line}")?;
        let g = f.try_clone()?;
        Ok((f, g))
    };
    let (out, err) =
        open().map_err(|e| Failure::msg(format!("cannot write {}: {e}", log.display())))?;
    let status = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .status()
        .map_err(|e| Failure::msg(format!("cannot start `{line}`: {e}")))?;
    if status.success() {
        return Ok(());
    }
    let text = fs::read_to_string(log).unwrap_or_default();
    Err(Failure {
        reason: format!("`{line}` exited with {status}"),
        detail: clip(&text, log),
    })
}

/// Long logs keep their head (first errors) and tail (test summaries); the file has it all.
fn clip(text: &str, log: &Path) -> String {
    const HEAD: usize = 150;
    const TAIL: usize = 250;
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() <= HEAD + TAIL {
        return text.trim_end().to_string();
    }
    format!(
        "{}\n[... {} lines cut; the whole log is {} ...]\n{}",
        lines[..HEAD].join("\n"),
        lines.len() - HEAD - TAIL,
        log.display(),
        lines[lines.len() - TAIL..].join("\n")
    )
}

/// Prints the status lines of a run of steps and keeps the count for the summary.
pub struct Report {
    /// Width of the name column.
    pub width: usize,
    /// Steps that passed so far.
    pub passed: usize,
    started: Instant,
}

impl Report {
    /// A report whose names are padded to `width`.
    pub fn new(width: usize) -> Self {
        Report {
            width,
            passed: 0,
            started: Instant::now(),
        }
    }

    /// Runs one step, prints `ok/FAIL  name  time` and, on failure, why.
    pub fn step(
        &mut self,
        name: &str,
        f: impl FnOnce() -> Result<Option<String>, Failure>,
    ) -> Result<(), Failure> {
        let start = Instant::now();
        let result = f();
        let took = secs(start.elapsed());
        let width = self.width;
        match &result {
            Ok(note) => {
                self.passed += 1;
                let note = note
                    .as_deref()
                    .map(|n| format!("  ({n})"))
                    .unwrap_or_default();
                println!("ok    {name:<width$} {took:>7}{note}");
            }
            Err(e) => {
                println!("FAIL  {name:<width$} {took:>7}");
                println!("      {}", e.reason);
                if !e.detail.is_empty() {
                    println!("{}", e.detail);
                }
            }
        }
        let _ = io::stdout().flush();
        result.map(|_| ())
    }

    /// Time since the report was made, formatted like the step times.
    pub fn elapsed(&self) -> String {
        secs(self.started.elapsed())
    }
}

/// `12.3s`
pub fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// A file name for a step's log: letters and digits kept, everything else `-`.
pub fn log_path(name: &str) -> PathBuf {
    let file: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    target_dir().join("xtask").join(format!("{file}.log"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_holds_the_workspace_manifest() {
        let manifest: toml::Table =
            toml::from_str(&fs::read_to_string(root().join("Cargo.toml")).unwrap()).unwrap();
        let members = manifest["workspace"]["members"].as_array().unwrap();
        assert!(members.iter().any(|m| m.as_str() == Some("xtask")));
        assert!(root().join("xtask").is_dir());
    }

    #[test]
    fn show_quotes_what_a_shell_would_split() {
        let mut cmd = Command::new("cargo");
        cmd.args(["test", "-p", "a b", ""])
            .env("RUSTDOCFLAGS", "-D warnings");
        assert_eq!(
            show(&cmd),
            r#"RUSTDOCFLAGS="-D warnings" cargo test -p "a b" """#
        );
    }

    #[test]
    fn logged_keeps_output_and_reports_the_exit() {
        let log = std::env::temp_dir().join(format!("xtask-run-test-{}.log", std::process::id()));
        let mut fail = Command::new("sh");
        fail.args(["-c", "echo out; echo err >&2; exit 3"]);
        let e = logged(&mut fail, &log).unwrap_err();
        assert!(e.reason.contains("exit status: 3"), "{}", e.reason);
        assert!(e.detail.contains("out\nerr"), "{}", e.detail);
        let mut pass = Command::new("true");
        assert!(logged(&mut pass, &log).is_ok());
        let _ = fs::remove_file(&log);
    }

    #[test]
    fn clip_keeps_head_and_tail() {
        let text: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        let out = clip(&text, Path::new("x.log"));
        assert!(out.starts_with("line 0\n"));
        assert!(out.ends_with("line 999"));
        assert!(out.contains("[... 600 lines cut; the whole log is x.log ...]"));
        assert!(!out.contains("line 500\n"));
        assert_eq!(clip("a\nb\n", Path::new("x.log")), "a\nb");
    }
}
