//! The CLI's error: one readable line for the user, built from the library errors.

use std::fmt;

/// An error to print as one line before exiting non-zero. The variant says what kind of thing
/// went wrong (so a caller or a test can match on it); the text names the file, value or
/// iteration involved.
#[derive(Debug)]
#[non_exhaustive]
pub enum CliError {
    /// The MNIST files could not be found, read or trusted (the data error names the file).
    Data(manabi_data::DataError),
    /// The network cannot be planned: a zero width, an overflow, an arena too small.
    Plan(manabi_tensor::Error),
    /// An operation failed: what was being done (`writing runs/x/model.safetensors`) and the
    /// underlying error's message. Built by [`Context::context`].
    Failed {
        /// What was being done, naming the file.
        doing: String,
        /// Why it failed.
        cause: String,
    },
    /// A weights or checkpoint file is malformed, lies about its contents or does not fit the
    /// network or data: the message names the file and the tensor or field.
    BadFile(String),
    /// The output directory cannot take this run's files (not writable, no room) or a chart
    /// cannot be drawn.
    Output(String),
    /// An option or a combination this build cannot honour (e.g. a checkpoint's backend that was
    /// not compiled in).
    Usage(String),
    /// Training stopped because the loss or a weight became NaN or infinite: the iteration and
    /// the value.
    Diverged(String),
    /// Backprop and the numerical gradient disagree beyond the tolerance.
    GradCheck(String),
    /// A worker thread stopped before its work was done (it panicked or its channel closed).
    Worker(&'static str),
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Data(e) => write!(f, "{e}"),
            CliError::Plan(e) => write!(f, "{e}"),
            CliError::Failed { doing, cause } => write!(f, "{doing}: {cause}"),
            CliError::BadFile(m)
            | CliError::Output(m)
            | CliError::Usage(m)
            | CliError::Diverged(m)
            | CliError::GradCheck(m) => f.write_str(m),
            CliError::Worker(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for CliError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CliError::Data(e) => Some(e),
            CliError::Plan(e) => Some(e),
            _ => None,
        }
    }
}

impl From<manabi_data::DataError> for CliError {
    fn from(e: manabi_data::DataError) -> Self {
        CliError::Data(e)
    }
}

impl From<manabi_tensor::Error> for CliError {
    fn from(e: manabi_tensor::Error) -> Self {
        CliError::Plan(e)
    }
}

/// Adds what was being done to an error: `context(|| format!("writing {}", p.display()))`.
pub trait Context<T> {
    /// Wraps the error as [`CliError::Failed`], with `what` as what was being done.
    fn context(self, what: impl FnOnce() -> String) -> Result<T, CliError>;
}

impl<T, E: fmt::Display> Context<T> for Result<T, E> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, CliError> {
        self.map_err(|e| CliError::Failed {
            doing: what(),
            cause: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn one_line_each_and_library_errors_kept_as_sources() {
        let plan = CliError::from(manabi_tensor::Error::Zero { what: "batch size" });
        assert!(matches!(plan, CliError::Plan(_)));
        assert_eq!(
            plan.to_string(),
            manabi_tensor::Error::Zero { what: "batch size" }.to_string()
        );
        assert!(plan.source().is_some());

        let failed: Result<(), CliError> =
            Err::<(), _>("disk full").context(|| "writing out/model.safetensors".into());
        let failed = failed.unwrap_err();
        assert_eq!(
            failed.to_string(),
            "writing out/model.safetensors: disk full"
        );
        assert!(
            matches!(&failed, CliError::Failed { doing, .. } if doing.ends_with("safetensors"))
        );
        assert!(failed.source().is_none());

        for e in [
            CliError::BadFile("w.safetensors: tensor W1 has shape [3]".into()),
            CliError::Diverged("training diverged at iteration 7: loss NaN".into()),
            CliError::Worker("the batch thread stopped"),
        ] {
            let line = e.to_string();
            assert!(!line.is_empty() && !line.contains('\n'), "{line:?}");
        }
    }
}
