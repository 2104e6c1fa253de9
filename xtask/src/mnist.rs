//! The end-to-end MNIST check of `cargo xtask ci`: train with the book's defaults, eval, gradcheck.

use crate::run::{self, Failure, Report};
use std::fs;

/// The lowest final test accuracy CI accepts for the book protocol (the book's own code ends
/// between 0.9676 and 0.9725 over 14 runs).
pub const MIN_TEST_ACCURACY: f64 = 0.965;

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
        if trained < MIN_TEST_ACCURACY {
            return Err(Failure::msg(format!(
                "final test accuracy {trained} is below {MIN_TEST_ACCURACY}"
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
        let worst = ["W1:", "b1:", "W2:", "b2:"]
            .iter()
            .filter_map(|t| number_after(&log, &format!("{t} mean |diff| ")))
            .fold(0.0f64, f64::max);
        Ok(Some(format!("largest mean |diff| {worst:.1e}")))
    })
}

#[cfg(test)]
mod tests {
    use super::number_after;

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
}
