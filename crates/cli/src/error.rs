//! The CLI's error: one readable line for the user, built from the library errors.

use std::fmt;

/// An error to print as one line before exiting non-zero.
#[derive(Debug)]
pub struct CliError(pub String);

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CliError {}

impl From<manabi_data::DataError> for CliError {
    fn from(e: manabi_data::DataError) -> Self {
        CliError(e.to_string())
    }
}

impl From<manabi_tensor::Error> for CliError {
    fn from(e: manabi_tensor::Error) -> Self {
        CliError(e.to_string())
    }
}

/// Adds what was being done to an error: `context("writing out/x.csv")`.
pub trait Context<T> {
    /// Prefixes the error with `what`.
    fn context(self, what: impl FnOnce() -> String) -> Result<T, CliError>;
}

impl<T, E: fmt::Display> Context<T> for Result<T, E> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, CliError> {
        self.map_err(|e| CliError(format!("{}: {e}", what())))
    }
}
