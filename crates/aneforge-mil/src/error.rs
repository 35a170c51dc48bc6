//! The crate's error type.

/// What went wrong while building, checking or writing a MIL program.
///
/// Messages name the function, op and value involved, because the caller is
/// usually a lowering pass several layers away from the user's code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The program, a tensor or an argument is malformed.
    #[error("invalid MIL: {0}")]
    Invalid(String),
    /// The program is well formed but cannot be expressed in the requested
    /// output (a dtype a model description cannot carry, a dtype a blob
    /// cannot hold, ...).
    #[error("unsupported in MIL output: {0}")]
    Unsupported(String),
    /// Writing a file or directory failed.
    #[error("I/O error at {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }

    pub(crate) fn unsupported(msg: impl Into<String>) -> Self {
        Error::Unsupported(msg.into())
    }

    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// Result with the crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
