//! One error type for everything that can go wrong while opening a model folder.
//!
//! Every variant carries the path of the file at fault, because "invalid JSON"
//! is useless when a folder holds six JSON files. The Python binding maps
//! these variants onto `af.` exception classes in one place.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong while reading a Hugging Face model folder.
///
/// Messages name the file and say what to do, so they can be shown to a user
/// as they are.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file the loader needs is absent; `what` says why it was wanted.
    #[error("{}: not found; {what}", path.display())]
    MissingFile {
        /// The path that was looked for.
        path: PathBuf,
        /// What the file would have provided.
        what: String,
    },

    /// The file exists but could not be read or mapped.
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        /// The file being read.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A JSON file is malformed or lacks a required field.
    #[error("{}: invalid JSON: {source}", path.display())]
    Json {
        /// The JSON file.
        path: PathBuf,
        /// The parse error, with line and column.
        #[source]
        source: serde_json::Error,
    },

    /// A config parses but holds a value the loader cannot honour
    /// (zero heads, hidden size not divisible by heads, ...).
    #[error("{}: {message}", path.display())]
    InvalidConfig {
        /// The config file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },

    /// The folder holds a model this crate does not know how to build.
    #[error("{}: unsupported architecture: {message}", path.display())]
    UnsupportedArchitecture {
        /// The config (or modules.json) that names the architecture.
        path: PathBuf,
        /// Which feature is unsupported and what is supported instead.
        message: String,
    },

    /// The weights file is not a valid safetensors file (truncated, bad
    /// header, offsets out of range).
    #[error("{}: corrupt safetensors file: {message}", path.display())]
    CorruptSafetensors {
        /// The safetensors file.
        path: PathBuf,
        /// The problem found in it.
        message: String,
    },

    /// Only a pickle checkpoint is present. Pickle can execute code on load,
    /// so it is never read; the user has to convert it.
    #[error(
        "{}: this is a pickle checkpoint, which is never loaded (it can run code); \
         convert it to model.safetensors (e.g. with the `safetensors` Python package) and retry",
        path.display()
    )]
    PickleRefused {
        /// The pickle file found.
        path: PathBuf,
    },

    /// A tensor name is not in the weights; `near` lists the closest names,
    /// which usually reveals a prefix or spelling mismatch.
    #[error(
        "{}: no tensor named `{name}`; nearest names: {}",
        path.display(),
        if near.is_empty() { "(file holds no tensors)".to_string() } else { near.join(", ") }
    )]
    TensorNotFound {
        /// The weights file searched.
        path: PathBuf,
        /// The name asked for.
        name: String,
        /// Up to five names from the file closest to `name`.
        near: Vec<String>,
    },

    /// A tensor's dtype has no lossless-enough route to f32.
    #[error("{}: tensor `{name}` has dtype {dtype}, which cannot be converted to f32", path.display())]
    UnsupportedDtype {
        /// The weights file.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// The safetensors dtype, as spelled in the header.
        dtype: String,
    },

    /// A tensor has a shape other than the one the architecture requires.
    #[error("{}: tensor `{name}` has shape {actual:?}, expected {expected:?}", path.display())]
    ShapeMismatch {
        /// The weights file.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// Shape required by the config.
        expected: Vec<usize>,
        /// Shape found in the file.
        actual: Vec<usize>,
    },

    /// tokenizer.json could not be loaded or an input could not be encoded.
    #[error("{}: tokenizer: {message}", path.display())]
    Tokenizer {
        /// The tokenizer.json file.
        path: PathBuf,
        /// The tokenizers crate's message.
        message: String,
    },

    /// The core compiler refused the encoder graph or failed to plan it
    /// (e.g. a bucket too large for the simulator's memory limit).
    #[error("{0}")]
    Core(#[from] aneforge::Error),

    /// A caller-supplied option is out of range (e.g. a max_length beyond the
    /// model's position table).
    #[error("invalid option `{option}`: {message}")]
    InvalidOption {
        /// The option name as the user spells it.
        option: &'static str,
        /// Why it was refused.
        message: String,
    },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if source.kind() == std::io::ErrorKind::NotFound {
            Error::MissingFile {
                path,
                what: format!("{source}"),
            }
        } else {
            Error::Io { path, source }
        }
    }

    pub(crate) fn invalid_config(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::InvalidConfig {
            path: path.into(),
            message: message.into(),
        }
    }

    pub(crate) fn unsupported(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::UnsupportedArchitecture {
            path: path.into(),
            message: message.into(),
        }
    }
}
