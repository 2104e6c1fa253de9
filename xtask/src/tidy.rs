//! Tidy: house-style checks that need no compiler (`//!` headers, documented features, gradient checks).
//!
//! - Every `.rs` file under `crates/`, `benches/` and `xtask/` starts with a `//!` summary line.
//! - Every feature in a crate's `[features]` table (except `default`) is named in backticks in
//!   the `# Features` section of the crate root's `//!` docs (`src/lib.rs`, else `src/main.rs`).
//! - Every file in `crates/layers/src` with a public backward pass has a test that checks it
//!   against central differences (`numeric_grad`).
//! - `crates/layers/src` has at most one `pub fn train_step`: one training entry point whose
//!   input, target and update are options, not a method per combination.
//! - Every `--option` README.md names for a task (`cargo xtask bench --cnn`) is in that task's
//!   `--help`, and every one it names for the `manabi` binary (`manabi train --resume`,
//!   `cargo run --release -- train --seed 2`, or a bare `` `--seed N` `` in the text, which
//!   belongs to the paragraph's last `manabi` command, else to `train`) is in that
//!   subcommand's `manabi <sub> --help`.
//!
//! The same checks run as `cargo xtask tidy`, as a step of `cargo xtask ci` and as the
//! `workspace_is_tidy` test, except the `manabi` options: those need the CLI built
//! ([`readme_options`]), so only the task runs them.

use crate::run::{self, Failure};
use clap::CommandFactory as _;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// The folders whose Rust files and crates are checked, relative to the workspace root.
pub const DIRS: &[&str] = &["crates", "benches", "xtask"];

/// How many public functions in `text` have a name that starts with `train_step` (so
/// `train_step_sparse` counts too: each is another entry point).
pub fn train_step_count(text: &str) -> usize {
    text.matches("pub fn train_step").count()
}

/// The layer files that define `train_step` (path and count) must hold one in all.
pub fn one_train_step(found: &[(String, usize)]) -> Result<(), String> {
    let total: usize = found.iter().map(|(_, n)| n).sum();
    if total <= 1 {
        return Ok(());
    }
    let files: Vec<String> = found.iter().map(|(f, n)| format!("{f} ({n})")).collect();
    Err(format!(
        "{total} `pub fn train_step…` definitions ({}); keep one entry point and make the rest options",
        files.join(", ")
    ))
}

/// Every problem found under `root`, one line each (empty when tidy).
pub fn check(root: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let mut files = Vec::new();
    for dir in DIRS {
        collect_rs(&root.join(dir), &mut files);
    }
    files.sort();
    let layers_src = root.join(LAYERS_SRC);
    let mut train_steps = Vec::new();
    for f in &files {
        let text = fs::read_to_string(f).unwrap_or_default();
        if let Err(p) = header(&text) {
            problems.push(format!("{}: {p}", rel(root, f)));
        }
        if f.parent() == Some(layers_src.as_path())
            && let Err(p) = gradient_checked(&text)
        {
            problems.push(format!("{}: {p}", rel(root, f)));
        }
        if f.parent() == Some(layers_src.as_path()) {
            let n = train_step_count(&text);
            if n > 0 {
                train_steps.push((rel(root, f), n));
            }
        }
    }
    if let Err(p) = one_train_step(&train_steps) {
        problems.push(format!("{LAYERS_SRC}: {p}"));
    }
    for krate in crate_dirs(root) {
        problems.extend(
            features_documented(&krate)
                .into_iter()
                .map(|p| format!("{}: {p}", rel(root, &krate))),
        );
    }
    let readme = fs::read_to_string(root.join(README)).unwrap_or_default();
    let tasks: Vec<Mention> = readme_mentions(&readme)
        .into_iter()
        .filter(|m| m.program == Program::Xtask)
        .collect();
    problems.extend(first_missing(&tasks, &mut |_, path| xtask_help(path)));
    problems
}

/// Where the layers live: each file there with a backward pass needs a gradient check.
const LAYERS_SRC: &str = "crates/layers/src";

/// A layer file that defines a public backward pass (`pub fn backward…`) must test it against
/// central differences: its tests (after `#[cfg(test)]`) call `numeric_grad(` (house style,
/// section 9). The network's own gradient is checked in `crates/layers/tests`.
pub fn gradient_checked(text: &str) -> Result<(), &'static str> {
    if !text.contains("pub fn backward") {
        return Ok(());
    }
    let tests = text.find("#[cfg(test)]").map(|at| &text[at..]);
    match tests {
        Some(t) if t.contains("numeric_grad(") => Ok(()),
        _ => Err("defines a backward pass but no test checks it with numeric_grad"),
    }
}

fn rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root).unwrap_or(p).display().to_string()
}

/// `.rs` files under `dir`, skipping build output (`target`) and hidden folders.
fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name();
        let name = name.to_string_lossy();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                collect_rs(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

/// Folders holding a crate: each `DIRS` entry with a Cargo.toml, and its direct subfolders with one.
fn crate_dirs(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in DIRS {
        let d = root.join(dir);
        if d.join("Cargo.toml").is_file() {
            out.push(d.clone());
        }
        if let Ok(entries) = fs::read_dir(&d) {
            for e in entries.flatten() {
                if e.path().join("Cargo.toml").is_file() {
                    out.push(e.path());
                }
            }
        }
    }
    out.sort();
    out
}

/// The first line must be a `//!` line with a summary after it.
pub fn header(text: &str) -> Result<(), &'static str> {
    let first = text.lines().next().unwrap_or("");
    match first.strip_prefix("//!") {
        None => Err("does not start with a `//!` summary line"),
        Some(rest) if rest.trim().is_empty() => Err("the first `//!` line is empty"),
        Some(_) => Ok(()),
    }
}

/// The part of a Cargo.toml that tidy reads.
#[derive(Deserialize)]
struct Manifest {
    #[serde(default)]
    features: BTreeMap<String, Vec<String>>,
}

/// The keys of a Cargo.toml's `[features]` table, sorted, `default` left out.
pub fn features(manifest: &str) -> Result<Vec<String>, String> {
    let manifest: Manifest = toml::from_str(manifest).map_err(|e| e.message().to_string())?;
    Ok(manifest
        .features
        .into_keys()
        .filter(|k| k != "default")
        .collect())
}

/// The text of the `# Features` section in the leading `//!` docs, if there is one: the lines
/// after the heading up to the next heading or the end of the `//!` block.
pub fn features_section(root_src: &str) -> Option<String> {
    let docs = root_src
        .lines()
        .map(str::trim_start)
        .take_while(|l| l.starts_with("//!"))
        .map(|l| l.trim_start_matches("//!").trim());
    let mut section: Option<String> = None;
    for line in docs {
        match &mut section {
            None if line.trim_start_matches('#').trim() == "Features" && line.starts_with('#') => {
                section = Some(String::new());
            }
            None => {}
            Some(_) if line.starts_with('#') => break,
            Some(s) => {
                s.push_str(line);
                s.push('\n');
            }
        }
    }
    section
}

/// Problems with one crate's feature docs.
fn features_documented(krate: &Path) -> Vec<String> {
    let manifest = fs::read_to_string(krate.join("Cargo.toml")).unwrap_or_default();
    let feats = match features(&manifest) {
        Ok(f) => f,
        Err(e) => return vec![format!("Cargo.toml does not parse: {e}")],
    };
    if feats.is_empty() {
        return Vec::new();
    }
    let Some(src_path) = ["src/lib.rs", "src/main.rs"]
        .iter()
        .map(|p| krate.join(p))
        .find(|p| p.is_file())
    else {
        return vec!["has features but no src/lib.rs or src/main.rs".to_string()];
    };
    let src = fs::read_to_string(&src_path).unwrap_or_default();
    let file = src_path.file_name().unwrap_or_default().to_string_lossy();
    let Some(section) = features_section(&src) else {
        return vec![format!(
            "src/{file} has no `# Features` section in its `//!` docs for features {}",
            feats.join(", ")
        )];
    };
    feats
        .iter()
        .filter(|f| !section.contains(&format!("`{f}`")))
        .map(|f| {
            format!("feature `{f}` is not named (in backticks) under `# Features` in src/{file}")
        })
        .collect()
}

/// The README whose options are checked, relative to the root.
const README: &str = "README.md";

/// Options README.md writes bare that belong to cargo, not to `manabi` (`--features blas`).
const CARGO_OPTIONS: &[&str] = &["--features", "--release"];

/// The program a README option is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Program {
    /// The CLI, `manabi <sub>` (or `cargo run -- <sub>`).
    Manabi,
    /// `cargo xtask <task>`.
    Xtask,
}

impl Program {
    fn name(self) -> &'static str {
        match self {
            Program::Manabi => "manabi",
            Program::Xtask => "cargo xtask",
        }
    }
}

/// One `--option` README.md names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mention {
    /// README line (from 1).
    pub line: usize,
    /// Whose option it is.
    pub program: Program,
    /// The words after the program up to the first option: the subcommand, maybe followed by
    /// nested subcommands or positional arguments (the check keeps the subcommands).
    pub words: Vec<String>,
    /// The option, `--name` (without `=value`).
    pub option: String,
}

/// Every option README.md names: in fenced code blocks, commands line by line; in the text,
/// commands and bare options in backticks. See the module docs for whose option is whose.
pub fn readme_mentions(readme: &str) -> Vec<Mention> {
    let mut out = Vec::new();
    let mut fenced = false;
    // The paragraph so far: its text and the line each of its lines starts.
    let mut para = String::new();
    let mut starts: Vec<(usize, usize)> = Vec::new();
    let flush = |para: &mut String, starts: &mut Vec<(usize, usize)>, out: &mut Vec<_>| {
        paragraph_mentions(para, starts, out);
        para.clear();
        starts.clear();
    };
    for (i, line) in readme.lines().enumerate() {
        let number = i + 1;
        if line.trim_start().starts_with("```") {
            flush(&mut para, &mut starts, &mut out);
            fenced = !fenced;
        } else if fenced {
            // A shell line: the prompt and the comment are not the command.
            let code = line.trim_start().trim_start_matches("$ ");
            let code = code.split(" #").next().unwrap_or(code);
            let tokens = tokens_at(code, 0);
            if let Some(command) = command(&tokens, &[]) {
                out.extend(command.mentions(|_| number));
            }
        } else if line.trim().is_empty() {
            flush(&mut para, &mut starts, &mut out);
        } else if line.trim_start().starts_with('|') {
            // A table row stands alone: a row names its own command, or is about `train`.
            flush(&mut para, &mut starts, &mut out);
            starts.push((0, number));
            para.push_str(line);
            flush(&mut para, &mut starts, &mut out);
        } else {
            starts.push((para.len(), number));
            para.push_str(line);
            para.push('\n');
        }
    }
    flush(&mut para, &mut starts, &mut out);
    out
}

/// The mentions in one paragraph's code spans, in order.
fn paragraph_mentions(para: &str, starts: &[(usize, usize)], out: &mut Vec<Mention>) {
    let line_at = |offset: usize| {
        starts
            .iter()
            .take_while(|(at, _)| *at <= offset)
            .last()
            .map_or(0, |(_, n)| *n)
    };
    let mut context = vec!["train".to_string()];
    for (start, span) in code_spans(para) {
        let tokens = tokens_at(span, start);
        let Some(command) = command(&tokens, &context) else {
            continue;
        };
        // `manabi` alone (the binary's name in the text) says nothing about a subcommand.
        if command.program == Program::Manabi && command.explicit && !command.words.is_empty() {
            context.clone_from(&command.words);
        }
        out.extend(command.mentions(line_at));
    }
}

/// The code spans of a paragraph (text between backtick runs of the same length), each with
/// its byte offset.
fn code_spans(text: &str) -> Vec<(usize, &str)> {
    let mut spans = Vec::new();
    let mut rest = 0;
    while let Some(open) = text[rest..].find('`').map(|i| rest + i) {
        let ticks = text[open..].len() - text[open..].trim_start_matches('`').len();
        let fence = &text[open..open + ticks];
        let inner = open + ticks;
        // The closing run: the same number of backticks, not part of a longer run.
        let mut search = inner;
        let close = loop {
            match text[search..].find(fence).map(|i| search + i) {
                None => break None,
                Some(at) if text[at + ticks..].starts_with('`') => {
                    search = at + ticks + text[at + ticks..].len()
                        - text[at + ticks..].trim_start_matches('`').len();
                }
                Some(at) => break Some(at),
            }
        };
        let Some(close) = close else { break };
        spans.push((inner, &text[inner..close]));
        rest = close + ticks;
    }
    spans
}

/// Whitespace-separated words of `text`, each with its byte offset plus `base`.
fn tokens_at(text: &str, base: usize) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices().chain([(text.len(), ' ')]) {
        match (c.is_whitespace(), start) {
            (true, Some(s)) => {
                out.push((base + s, &text[s..i]));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    out
}

/// A command found in a code span or line: whose, the words naming the subcommand, and the
/// options after them (with their offsets).
struct Command<'a> {
    program: Program,
    words: Vec<String>,
    /// Named with the program (or a subcommand word), not a bare option in the text.
    explicit: bool,
    options: Vec<(usize, &'a str)>,
}

impl Command<'_> {
    fn mentions(&self, line_at: impl Fn(usize) -> usize) -> Vec<Mention> {
        self.options
            .iter()
            .map(|&(at, option)| Mention {
                line: line_at(at),
                program: self.program,
                words: self.words.clone(),
                option: option.to_string(),
            })
            .collect()
    }
}

/// `--name` at the start of a token (after `[` or `(`), without `=value` or punctuation.
fn option_name(token: &str) -> Option<&str> {
    let t = token.trim_start_matches(['[', '(']);
    let name = t.strip_prefix("--")?;
    let len = name
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .unwrap_or(name.len());
    (len > 0 && name.as_bytes()[0].is_ascii_alphanumeric()).then(|| &t[..len + 2])
}

/// Reads a command from a span's tokens: `manabi SUB …`, `cargo run [cargo options] -- SUB …`
/// (the workspace's default binary; other packages, binaries or examples are skipped),
/// `cargo xtask TASK …`, `SUB --option …` (a subcommand word first) or bare options, which go
/// to the `context` subcommand. Other cargo commands and plain code give `None`.
fn command<'a>(tokens: &[(usize, &'a str)], context: &[String]) -> Option<Command<'a>> {
    let words: Vec<&str> = tokens.iter().map(|(_, t)| *t).collect();
    let after = |program: Program, at: usize| {
        let mut i = at;
        let mut named = Vec::new();
        while let Some(w) = words
            .get(i)
            .filter(|w| option_name(w).is_none() && **w != "--")
        {
            named.push(w.trim_end_matches([',', ';', ':', '.', ')']).to_string());
            i += 1;
        }
        // Options up to a lone `--`: after it, the arguments are another program's.
        let options = tokens[i..]
            .iter()
            .take_while(|(_, t)| *t != "--")
            .filter_map(|&(at, t)| option_name(t).map(|o| (at, o)))
            .collect();
        Command {
            program,
            words: named,
            explicit: true,
            options,
        }
    };
    // The program comes first, after any `VAR=value` assignments (`MANABI_DATA=… cargo …`).
    let i = words
        .iter()
        .take_while(|w| w.split_once('=').is_some_and(|(k, _)| is_env_name(k)))
        .count();
    match (words.get(i).copied(), words.get(i + 1).copied()) {
        (Some("manabi"), _) => return Some(after(Program::Manabi, i + 1)),
        (Some("cargo"), Some("xtask")) => return Some(after(Program::Xtask, i + 2)),
        (Some("cargo"), Some("run")) => {
            let end = words.iter().position(|w| *w == "--")?;
            let cargo_args = &words[i + 2..end];
            let other = cargo_args.windows(2).any(|p| {
                matches!((p[0], p[1]), ("-p" | "--package", v) if v != "manabi-cli")
                    || matches!((p[0], p[1]), ("--bin", v) if v != "manabi")
            }) || cargo_args.contains(&"--example");
            return (!other).then(|| after(Program::Manabi, end + 1));
        }
        (Some("cargo"), _) => return None,
        _ => {}
    }
    let first = words.first()?;
    if option_name(first).is_some() {
        if CARGO_OPTIONS.contains(&option_name(first)?) {
            return None;
        }
        let mut c = after(Program::Manabi, 0);
        c.words = context.to_vec();
        c.explicit = false;
        return Some(c);
    }
    let word_then_option = first.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')
        && words.get(1).is_some_and(|w| option_name(w).is_some());
    word_then_option.then(|| after(Program::Manabi, 0))
}

/// `MANABI_DATA`, `RUSTFLAGS`: an environment variable's name as a shell line sets it.
fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// What a `--help` lists: the long options and the subcommands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Help {
    /// `--name` of every option.
    pub options: Vec<String>,
    /// The subcommands under `Commands:` (without clap's `help`).
    pub subcommands: Vec<String>,
}

/// Reads clap's help text: option lines start with `-` (`-h, --help`, `--data-dir <DIR>`),
/// subcommands are the first word of each line under `Commands:`.
pub fn parse_help(text: &str) -> Help {
    let mut help = Help::default();
    let mut in_commands = false;
    for line in text.lines() {
        let t = line.trim();
        if !line.starts_with(' ') {
            in_commands = t == "Commands:";
            continue;
        }
        if t.starts_with('-') {
            if let Some(o) = t.split([' ', ',']).find_map(option_name) {
                help.options.push(o.to_string());
            }
        } else if in_commands
            && let Some(word) = t.split_whitespace().next()
            && word != "help"
        {
            help.subcommands.push(word.to_string());
        }
    }
    help
}

/// `cargo xtask <path…> --help`, from xtask's own parser.
fn xtask_help(path: &[String]) -> Result<Help, String> {
    let args = ["cargo xtask"]
        .into_iter()
        .chain(path.iter().map(String::as_str))
        .chain(["--help"]);
    match crate::Cli::command().try_get_matches_from(args) {
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelp => {
            Ok(parse_help(&e.render().to_string()))
        }
        _ => Err(format!(
            "`cargo xtask {} --help` printed no help",
            path.join(" ")
        )),
    }
}

/// Gives the help of a program's subcommand path (empty: the program's own), or why not.
pub type HelpOf<'a> = dyn FnMut(Program, &[String]) -> Result<Help, String> + 'a;

/// The first mention whose option is not in its subcommand's help, as one problem line
/// (counting the others); `help` gives the help of a program's subcommand path.
pub fn first_missing(mentions: &[Mention], help: &mut HelpOf<'_>) -> Option<String> {
    let mut cache: BTreeMap<(String, Vec<String>), Result<Help, String>> = BTreeMap::new();
    let mut get = |program: Program, path: &[String]| {
        cache
            .entry((program.name().to_string(), path.to_vec()))
            .or_insert_with(|| help(program, path))
            .clone()
    };
    let mut problems = mentions.iter().filter_map(|m| {
        let mut path: Vec<String> = Vec::new();
        let mut h = get(m.program, &path);
        for w in &m.words {
            match &h {
                Ok(known) if known.subcommands.contains(w) => {
                    path.push(w.clone());
                    h = get(m.program, &path);
                }
                _ => break,
            }
        }
        let shown = |path: &[String]| {
            std::iter::once(m.program.name())
                .chain(path.iter().map(String::as_str))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let problem = match h {
            Err(e) => e,
            Ok(_) if path.is_empty() && !m.words.is_empty() => format!(
                "`{}` is not a subcommand (README names `{} {}`)",
                shown(&m.words[..1]),
                shown(&m.words),
                m.option
            ),
            Ok(known) if known.options.contains(&m.option) => return None,
            Ok(_) => format!("`{}` is not in `{} --help`", m.option, shown(&path)),
        };
        Some(format!("{README}:{}: {problem}", m.line))
    });
    let first = problems.next()?;
    let more = problems.count();
    Some(if more == 0 {
        first
    } else {
        format!("{first} (and {more} more)")
    })
}

/// README.md's options for the `manabi` binary against its help: builds the CLI (release, as
/// the MNIST step and the benches run it) and runs `manabi <sub> --help` per subcommand named.
pub fn readme_options(root: &Path) -> Result<Vec<String>, Failure> {
    let readme = fs::read_to_string(root.join(README))
        .map_err(|e| Failure::msg(format!("cannot read {README}: {e}")))?;
    let mentions: Vec<Mention> = readme_mentions(&readme)
        .into_iter()
        .filter(|m| m.program == Program::Manabi)
        .collect();
    if mentions.is_empty() {
        return Ok(Vec::new());
    }
    let exe = build_manabi()?;
    let mut help = |_: Program, path: &[String]| {
        let text = run::stdout_of(std::process::Command::new(&exe).args(path).arg("--help"))
            .ok_or_else(|| format!("`manabi {} --help` failed", path.join(" ")))?;
        Ok(parse_help(&text))
    };
    Ok(first_missing(&mentions, &mut help).into_iter().collect())
}

/// A line of `cargo build --message-format json`: the binary's path is in the artifact message.
#[derive(Deserialize)]
struct CargoMessage {
    reason: String,
    target: Option<CargoTarget>,
    executable: Option<PathBuf>,
}

#[derive(Deserialize)]
struct CargoTarget {
    name: String,
}

/// `cargo build --release -p manabi-cli`; the path of the `manabi` binary it reports.
fn build_manabi() -> Result<PathBuf, Failure> {
    let mut cmd = run::cargo();
    cmd.args([
        "build",
        "--release",
        "--quiet",
        "-p",
        "manabi-cli",
        "--message-format",
        "json",
    ]);
    let line = run::show(&cmd);
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| Failure::msg(format!("cannot start `{line}`: {e}")))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(Failure {
            reason: format!("`{line}` exited with {}", out.status),
            detail: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<CargoMessage>(l).ok())
        .filter(|m| m.reason == "compiler-artifact")
        .filter(|m| m.target.as_ref().is_some_and(|t| t.name == "manabi"))
        .find_map(|m| m.executable)
        .ok_or_else(|| Failure::msg(format!("`{line}` reported no `manabi` executable")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_is_tidy() {
        let problems = check(crate::run::root());
        assert!(
            problems.is_empty(),
            "tidy found {} problem(s):\n{}",
            problems.len(),
            problems.join("\n")
        );
    }

    #[test]
    fn backward_passes_need_a_gradient_check() {
        assert!(gradient_checked("//! Glue.\npub fn forward() {}").is_ok());
        let layer = "//! A layer.\npub fn backward() {}\n";
        assert!(gradient_checked("//! A net.\nfn backward_logits() {}").is_ok());
        assert!(gradient_checked(layer).is_err());
        let by_hand = format!("{layer}#[cfg(test)]\nmod tests {{ fn t() {{ by_hand(); }} }}");
        assert!(gradient_checked(&by_hand).is_err());
        // A call outside the tests does not count.
        let outside = format!("{layer}fn numeric_grad() {{}}\n#[cfg(test)]\nmod tests {{}}");
        assert!(gradient_checked(&outside).is_err());
        let checked =
            format!("{layer}#[cfg(test)]\nmod tests {{ fn t() {{ numeric_grad(f, &x, &r); }} }}");
        assert!(gradient_checked(&checked).is_ok());
    }

    #[test]
    fn headers_need_a_summary() {
        assert!(header("//! Does things.\nfn main() {}").is_ok());
        assert!(header("//!\n//! late summary").is_err());
        assert!(header("// plain comment\n").is_err());
        assert!(header("").is_err());
        assert!(header("\n//! too late").is_err());
    }

    #[test]
    fn features_are_read_from_the_table() {
        let toml = r#"
[package]
name = "x" # a [features] mention in a comment
[features]
default = ["std", "fast"]
## The heap.
alloc = []
std = ["alloc", "dep:foo"]   # trailing comment
"blas-system" = [
    "blas",
    "other = 1",
]
blas = []
[dependencies]
foo = { version = "1", optional = true }
[dev-dependencies.features]
"#;
        assert_eq!(
            features(toml).unwrap(),
            ["alloc", "blas", "blas-system", "std"]
        );
        assert!(features("[package]\nname = \"x\"\n").unwrap().is_empty());
        assert!(features("[features]\na = [\n").is_err());
    }

    #[test]
    fn more_than_one_train_step_is_reported() {
        let one = "impl N {\n    pub fn train_step(&mut self) {}\n}\n";
        let two = "pub fn train_step(&mut self) {}\npub fn train_step_sparse(&mut self) {}\n";
        assert_eq!(train_step_count(one), 1);
        assert_eq!(train_step_count(two), 2);
        assert_eq!(train_step_count("fn train_step() {}\n"), 0);
        assert!(one_train_step(&[]).is_ok());
        assert!(one_train_step(&[("a.rs".into(), 1)]).is_ok());
        let e = one_train_step(&[("a.rs".into(), 1), ("b.rs".into(), 2)]).unwrap_err();
        assert!(
            e.starts_with("3 ") && e.contains("a.rs (1), b.rs (2)"),
            "{e}"
        );
    }

    #[test]
    fn the_features_section_ends_at_the_next_heading() {
        let src = "//! Crate.\n//!\n//! # Features\n//! - `std` (default): things.\n//! - `alloc`\n//!\n//! # Safety\n//! `blas` here does not count.\n#![no_std]\n//! nor here `fast`\n";
        let s = features_section(src).unwrap();
        assert!(s.contains("`std`") && s.contains("`alloc`"));
        assert!(!s.contains("`blas`") && !s.contains("`fast`"));
        assert_eq!(features_section("//! No section.\n"), None);
        // `## Features` counts as well.
        assert!(
            features_section("//! x\n//! ## Features\n//! `a`\n")
                .unwrap()
                .contains("`a`")
        );
    }

    #[test]
    fn undocumented_features_are_reported() {
        let dir = std::env::temp_dir().join(format!("xtask-tidy-{}", std::process::id()));
        fs::create_dir_all(dir.join("src")).unwrap();
        fs::write(
            dir.join("Cargo.toml"),
            "[features]\ndefault = [\"a\"]\na = []\nb = []\n",
        )
        .unwrap();
        fs::write(
            dir.join("src/lib.rs"),
            "//! X.\n//! # Features\n//! - `a`: yes.\n",
        )
        .unwrap();
        let problems = features_documented(&dir);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("`b`"));
        fs::write(dir.join("src/lib.rs"), "//! X without a section.\n").unwrap();
        assert!(features_documented(&dir)[0].contains("no `# Features` section"));
        fs::remove_dir_all(&dir).unwrap();
    }

    const README_SAMPLE: &str = "\
# x

```sh
cargo run --release -- train --seed 2   # a comment --not-an-option
$ MANABI_DATA=/d cargo xtask bench --cnn -- --criterion-own
cargo run -p manabi-layers --example device_cnn -- --skipped
```

Text with `--hidden 100,50` and `--lr`, then `manabi eval --weights W` and
`--backend naive` for eval; `--features blas` is cargo's; `not a manabi option --x`.

`--threads` again belongs to train, as does `train --resume`; `cargo xtask fuzz [--seconds N]`
and `manabi data fetch --no-verify`, a span `--lines
across` lines and ``--ticks``.
| `manabi predict --weights W` | `--out` |
";

    #[test]
    fn readme_options_are_attributed_to_their_subcommand() {
        let got: Vec<(usize, Program, String, String)> = readme_mentions(README_SAMPLE)
            .into_iter()
            .map(|m| (m.line, m.program, m.words.join(" "), m.option))
            .collect();
        let want = [
            (4, Program::Manabi, "train", "--seed"),
            (5, Program::Xtask, "bench", "--cnn"),
            (9, Program::Manabi, "train", "--hidden"),
            (9, Program::Manabi, "train", "--lr"),
            (9, Program::Manabi, "eval", "--weights"),
            (10, Program::Manabi, "eval", "--backend"),
            (12, Program::Manabi, "train", "--threads"),
            (12, Program::Manabi, "train", "--resume"),
            (12, Program::Xtask, "fuzz", "--seconds"),
            (13, Program::Manabi, "data fetch", "--no-verify"),
            (13, Program::Manabi, "data fetch", "--lines"),
            (14, Program::Manabi, "data fetch", "--ticks"),
            (15, Program::Manabi, "predict", "--weights"),
            // A row's bare option belongs to the row's command.
            (15, Program::Manabi, "predict", "--out"),
        ]
        .map(|(l, p, w, o)| (l, p, w.to_string(), o.to_string()));
        assert_eq!(got, want);
    }

    #[test]
    fn clap_help_gives_options_and_subcommands() {
        let help = "Train a network\n\nUsage: manabi [OPTIONS] <COMMAND>\n\nCommands:\n  \
                    train  Train\n  data   Data\n  help   Print this message\n\nOptions:\n  \
                    -h, --help  Print help (see --long)\n      --data-dir <DIR>  Where\n          \
                    continued text with --not-this\n      --f64\n";
        assert_eq!(
            parse_help(help),
            Help {
                options: ["--help", "--data-dir", "--f64"].map(String::from).to_vec(),
                subcommands: ["train", "data"].map(String::from).to_vec(),
            }
        );
    }

    #[test]
    fn the_first_missing_option_is_reported_with_its_line() {
        let mentions = readme_mentions(README_SAMPLE);
        let mut help = |program: Program, path: &[String]| -> Result<Help, String> {
            let words: Vec<&str> = path.iter().map(String::as_str).collect();
            let (options, subcommands): (&[&str], &[&str]) = match (program, &words[..]) {
                (Program::Xtask, []) => (&[], &["bench", "fuzz"]),
                (Program::Xtask, ["bench"]) => (&["--cnn"], &[]),
                (Program::Xtask, ["fuzz"]) => (&["--seconds"], &[]),
                (Program::Manabi, []) => (&[], &["train", "eval", "data", "predict"]),
                (Program::Manabi, ["train"]) => (
                    &[
                        "--seed",
                        "--hidden",
                        "--lr",
                        "--threads",
                        "--resume",
                        "--out",
                    ],
                    &[],
                ),
                (Program::Manabi, ["eval"]) => (&["--weights", "--backend"], &[]),
                (Program::Manabi, ["data"]) => (&[], &["fetch"]),
                (Program::Manabi, ["data", "fetch"]) => {
                    (&["--no-verify", "--lines", "--ticks"], &[])
                }
                (Program::Manabi, ["predict"]) => (&[], &[]),
                _ => return Err(format!("no help for {path:?}")),
            };
            let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
            Ok(Help {
                options: owned(options),
                subcommands: owned(subcommands),
            })
        };
        assert_eq!(
            first_missing(&mentions, &mut help).unwrap(),
            "README.md:15: `--weights` is not in `manabi predict --help` (and 1 more)"
        );
        let mut train_only = |_: Program, path: &[String]| -> Result<Help, String> {
            Ok(Help {
                options: vec!["--seed".into()],
                subcommands: if path.is_empty() {
                    vec!["train".into()]
                } else {
                    vec![]
                },
            })
        };
        let manabi: Vec<Mention> = mentions
            .iter()
            .filter(|m| m.program == Program::Manabi)
            .cloned()
            .collect();
        assert_eq!(
            first_missing(&manabi, &mut train_only).unwrap(),
            "README.md:9: `--hidden` is not in `manabi train --help` (and 10 more)"
        );
        let eval = [Mention {
            line: 3,
            program: Program::Manabi,
            words: vec!["evaluate".into()],
            option: "--x".into(),
        }];
        assert_eq!(
            first_missing(&eval, &mut train_only).unwrap(),
            "README.md:3: `manabi evaluate` is not a subcommand (README names `manabi evaluate --x`)"
        );
        assert_eq!(first_missing(&manabi[..1], &mut train_only), None);
    }
}
