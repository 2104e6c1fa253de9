//! Tidy: house-style checks that need no compiler (`//!` headers, documented features, gradient checks).
//!
//! - Every `.rs` file under `crates/`, `benches/` and `xtask/` starts with a `//!` summary line.
//! - Every feature in a crate's `[features]` table (except `default`) is named in backticks in
//!   the `# Features` section of the crate root's `//!` docs (`src/lib.rs`, else `src/main.rs`).
//! - Every file in `crates/layers/src` with a public backward pass has a test that checks it
//!   against central differences (`numeric_grad`).
//! - `crates/layers/src` has at most one `pub fn train_step`: one training entry point whose
//!   input, target and update are options, not a method per combination.
//!
//! The same check runs as `cargo xtask tidy`, as a step of `cargo xtask ci` and as the
//! `workspace_is_tidy` test.

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

/// The keys of a Cargo.toml's `[features]` table, in order, `default` left out.
///
/// Line-based: a key is `name = ...` at the top level of the table; multi-line arrays are
/// followed by counting brackets outside strings.
pub fn features(manifest: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    let mut depth: i32 = 0;
    for line in manifest.lines() {
        let code = strip_comment(line);
        let t = code.trim();
        if depth == 0 && t.starts_with('[') {
            inside = t == "[features]";
            continue;
        }
        if !inside {
            continue;
        }
        if depth == 0 {
            if let Some((key, _)) = t.split_once('=') {
                let key = key.trim().trim_matches('"');
                if !key.is_empty() && key != "default" {
                    out.push(key.to_string());
                }
            }
        }
        depth += brackets(code);
    }
    out
}

/// A line without its `#` comment (a `#` inside a string is kept).
fn strip_comment(line: &str) -> &str {
    let mut in_str = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => in_str = !in_str,
            '#' if !in_str => return &line[..i],
            _ => {}
        }
    }
    line
}

/// Opening minus closing brackets outside strings.
fn brackets(code: &str) -> i32 {
    let mut in_str = false;
    let mut n = 0;
    for c in code.chars() {
        match c {
            '"' => in_str = !in_str,
            '[' if !in_str => n += 1,
            ']' if !in_str => n -= 1,
            _ => {}
        }
    }
    n
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
    let feats = features(&manifest);
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
    fn features_are_read_by_hand() {
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
        assert_eq!(features(toml), ["alloc", "std", "blas-system", "blas"]);
        assert!(features("[package]\nname = \"x\"\n").is_empty());
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
}
