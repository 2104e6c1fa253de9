//! The end-to-end MNIST check of `cargo xtask ci`: train with the book's defaults, eval, gradcheck.

use crate::run::{self, Failure, Report};
use std::fs;

/// The book protocol's final test accuracy with `--backend naive` (seed 1), the same on every
/// CPU; crates/cli/tests/pins.rs pins it, and the default backend's bytes where recorded.
pub const NAIVE_TEST_ACCURACY: f64 = 0.9705;

/// How far the default backend's result may lie from [`NAIVE_TEST_ACCURACY`]: its products
/// round differently (summation order, FMA), which after 10,000 steps moves a few test images
/// (it ends at 0.9704 on AVX-512 machines). The same bound as the CLI tests'
/// `FAST_BACKEND_ACCURACY`.
pub const FAST_BACKEND_ACCURACY: f64 = 0.003;

/// The number after `prefix` on the first log line starting with it.
fn number_after(log: &str, prefix: &str) -> Option<f64> {
    log.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// `cargo run --release -p manabi-cli -- <args>`, logged under `name`; returns the log text.
fn manabi(name: &str, args: &[&str]) -> Result<String, Failure> {
    let mut cmd = run::cargo();
    cmd.args(["run", "--release", "--quiet", "-p", "manabi-cli", "--"])
        .args(args);
    let log = run::log_path(name);
    run::logged(&mut cmd, &log)?;
    fs::read_to_string(&log)
        .map_err(|e| Failure::msg(format!("cannot read {}: {e}", log.display())))
}

/// Runs the three MNIST steps, each with its own status line.
pub fn steps(report: &mut Report) -> Result<(), Failure> {
    let out = run::target_dir().join("ci").join("mnist");
    let out_text = out.display().to_string();
    let weights = out.join("model.safetensors").display().to_string();
    let mut trained = 0.0;
    report.step("mnist train", || {
        let log = manabi("mnist train", &["train", "--out", &out_text])?;
        trained = number_after(&log, "final test acc ")
            .ok_or_else(|| Failure::msg("no `final test acc` line in the training output"))?;
        if (trained - NAIVE_TEST_ACCURACY).abs() > FAST_BACKEND_ACCURACY {
            return Err(Failure::msg(format!(
                "final test accuracy {trained} is not within {FAST_BACKEND_ACCURACY} of the naive \
                 backend's {NAIVE_TEST_ACCURACY}"
            )));
        }
        Ok(Some(format!("final test accuracy {trained:.4}")))
    })?;
    report.step("mnist eval", || {
        let log = manabi("mnist eval", &["eval", "--weights", &weights])?;
        let evaluated = number_after(&log, "test accuracy ")
            .ok_or_else(|| Failure::msg("no `test accuracy` line in the eval output"))?;
        if format!("{evaluated:.4}") != format!("{trained:.4}") {
            return Err(Failure::msg(format!(
                "eval reports {evaluated:.4}, training reported {trained:.4}"
            )));
        }
        Ok(Some(format!("test accuracy {evaluated:.4}")))
    })?;
    report.step("mnist gradcheck", || {
        let log = manabi("mnist gradcheck", &["gradcheck"])?;
        let worst = largest_max_diff(&log)?;
        Ok(Some(format!("largest max |diff| {worst:.1e}")))
    })
}

/// The book's parameter tensors, whose lines `manabi gradcheck` prints.
const GRADCHECK_TENSORS: [&str; 4] = ["W1", "b1", "W2", "b2"];

/// The largest element difference in a `manabi gradcheck` log: every tensor's line must be
/// there and within [`MAX_ELEMENT_DIFF`], and the run must say it passed.
fn largest_max_diff(log: &str) -> Result<f64, Failure> {
    let mut worst = 0.0f64;
    for t in GRADCHECK_TENSORS {
        let line = log
            .lines()
            .find(|l| l.starts_with(&format!("{t}: ")))
            .ok_or_else(|| Failure::msg(format!("no `{t}:` line in the gradcheck output")))?;
        let max = line
            .split_once("max |diff| ")
            .and_then(|(_, rest)| rest.split_whitespace().next()?.parse::<f64>().ok())
            .ok_or_else(|| Failure::msg(format!("no max |diff| on the line `{line}`")))?;
        if max.is_nan() || max > MAX_ELEMENT_DIFF {
            return Err(Failure::msg(format!(
                "{t}: max |diff| {max:e} exceeds {MAX_ELEMENT_DIFF:e}"
            )));
        }
        worst = worst.max(max);
    }
    if !log.lines().any(|l| l.starts_with("gradient check passed")) {
        return Err(Failure::msg(
            "no `gradient check passed` line in the gradcheck output",
        ));
    }
    Ok(worst)
}

/// The largest element difference CI accepts on the book's network: the CLI's own gate is
/// `1e-7 + 1e-5·|g|` per element; a correct backward leaves about 1e-10, so anything near
/// the CLI's floor already says something changed.
pub const MAX_ELEMENT_DIFF: f64 = 1e-8;

#[cfg(test)]
mod tests {
    use super::{largest_max_diff, number_after};

    #[test]
    fn reads_the_number_after_a_prefix() {
        let log = "epoch 1\nfinal test acc 0.9706 after 10000 iterations\n";
        assert_eq!(number_after(log, "final test acc "), Some(0.9706));
        assert_eq!(number_after(log, "missing "), None);
        assert_eq!(
            number_after("W1: mean |diff| 3.775e-12  max", "W1: mean |diff| "),
            Some(3.775e-12)
        );
    }

    const PASSED: &str = "W1: mean |diff| 3.780e-12  max |diff| 7.882e-11  max rel 2.086e-5
b1: mean |diff| 1.882e-11  max |diff| 6.788e-11  max rel 6.329e-7
W2: mean |diff| 1.260e-11  max |diff| 6.586e-11  max rel 4.556e-7
b2: mean |diff| 2.878e-11  max |diff| 4.273e-11  max rel 4.273e-10
gradient check passed (every element within 1.0e-7 + 1.0e-5·max(|backprop|, |numerical|))
";

    #[test]
    fn the_gradcheck_step_gates_on_every_tensors_largest_element() {
        assert_eq!(largest_max_diff(PASSED).unwrap(), 7.882e-11);
        // One element far off, though the mean is small.
        let one_bad = PASSED.replace("max |diff| 6.586e-11", "max |diff| 3.500e-3");
        let e = largest_max_diff(&one_bad).unwrap_err();
        assert_eq!(e.reason, "W2: max |diff| 3.5e-3 exceeds 1e-8");
        let nan = PASSED.replace("max |diff| 6.586e-11", "max |diff| NaN");
        assert!(largest_max_diff(&nan).is_err());
    }

    #[test]
    fn a_gradcheck_log_that_does_not_parse_fails_the_step() {
        assert_eq!(
            largest_max_diff("").unwrap_err().reason,
            "no `W1:` line in the gradcheck output"
        );
        let no_b2: String = PASSED
            .lines()
            .filter(|l| !l.starts_with("b2"))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            largest_max_diff(&no_b2)
                .unwrap_err()
                .reason
                .contains("`b2:`")
        );
        let garbled = PASSED.replace("max |diff| 4.273e-11", "max |diff| lots");
        assert!(
            largest_max_diff(&garbled)
                .unwrap_err()
                .reason
                .contains("no max |diff|")
        );
        let unfinished = PASSED.replace("gradient check passed", "gradient check");
        assert!(
            largest_max_diff(&unfinished)
                .unwrap_err()
                .reason
                .contains("passed")
        );
    }
}
