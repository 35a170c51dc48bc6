//! One error type for everything the ONNX front end can refuse.
//!
//! Every variant names what the user can act on: the file, the node, the
//! attribute or the tensor, so a failed import points at the line of the
//! model to look at rather than at our internals.

use std::path::PathBuf;

/// Why an ONNX model (or part of one) could not be read, checked or folded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OnnxError {
    /// The file could not be read at all.
    #[error("cannot read ONNX model {path}: {source}")]
    Io {
        /// The file that was asked for.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },

    /// The bytes are not a well-formed ONNX protobuf.
    #[error(
        "{path} is not a readable ONNX model (protobuf decoding failed: {source}); \
         the file is probably truncated or corrupt, or not an ONNX file"
    )]
    Decode {
        /// The file that failed to decode.
        path: PathBuf,
        /// prost's description of the first malformed field.
        #[source]
        source: prost::DecodeError,
    },

    /// The protobuf decoded but holds something an ONNX model never does
    /// (no graph, no default-domain opset, negative dims…).
    #[error("{path} is not a valid ONNX model: {reason}")]
    Malformed {
        /// The file in question.
        path: PathBuf,
        /// What is missing or inconsistent.
        reason: String,
    },

    /// The model targets an opset outside the range the importer implements.
    #[error(
        "{path} uses ONNX opset {found}; ANEForge imports opsets {min} to {max}. \
         Re-export the model with opset_version between {min} and {max} \
         (or convert it with onnx.version_converter)"
    )]
    UnsupportedOpset {
        /// The file in question.
        path: PathBuf,
        /// The default-domain opset the model imports.
        found: i64,
        /// Lowest opset accepted.
        min: i64,
        /// Highest opset accepted.
        max: i64,
    },

    /// A tensor's element type is one ANEForge has no array type for.
    #[error("tensor \"{tensor}\" has element type {dtype}, which ANEForge does not support")]
    UnsupportedDType {
        /// Name of the initializer / constant.
        tensor: String,
        /// The ONNX name of the data type (e.g. `DOUBLE`, `STRING`).
        dtype: String,
    },

    /// The tensor's bytes live in a side file; we only read self-contained models.
    #[error(
        "tensor \"{tensor}\" stores its data in the external file \"{location}\"; ANEForge reads \
         only self-contained models. Re-save it with the weights inside, e.g. \
         onnx.save(onnx.load(path), out, save_as_external_data=False) (models under 2 GB)"
    )]
    ExternalData {
        /// Name of the tensor.
        tensor: String,
        /// The `location` entry of its external_data, if any.
        location: String,
    },

    /// The tensor's payload does not match its declared shape and type.
    #[error("tensor \"{tensor}\" is malformed: {reason}")]
    BadTensor {
        /// Name of the tensor.
        tensor: String,
        /// What does not add up (element count, byte length…).
        reason: String,
    },

    /// The model uses ops the importer does not implement. Lists all of them
    /// at once so a user sees every gap in one go, not one per attempt.
    #[error(
        "{path} uses ops ANEForge cannot import yet: {}",
        ops.iter().map(|(op, n)| format!("{op} (x{n})")).collect::<Vec<_>>().join(", ")
    )]
    UnsupportedOps {
        /// The file in question.
        path: PathBuf,
        /// Each unsupported op (`domain::Op` outside the default domain) and its node count.
        ops: Vec<(String, usize)>,
    },

    /// A node attribute is missing, of the wrong kind, or has a bad value.
    #[error("node {node}: attribute \"{attr}\" {problem}")]
    Attribute {
        /// Human label of the node (name and op type).
        node: String,
        /// The attribute name.
        attr: String,
        /// What is wrong with it.
        problem: AttrProblem,
    },

    /// A node the importer understands but cannot map in this form
    /// (runtime shape inputs, unsupported modes, symbolic input dims…).
    #[error("cannot import node {node}: {reason}")]
    Import {
        /// Human label of the node (or graph input).
        node: String,
        /// What is not supported and, where possible, what to change.
        reason: String,
    },

    /// The core graph builder refused a node (its error carries op, shapes and fix).
    #[error("cannot import node {node}: {source}")]
    Core {
        /// Human label of the node (or graph input).
        node: String,
        /// The core's error.
        #[source]
        source: aneforge::Error,
    },

    /// A node whose inputs were constant could not be evaluated at import.
    #[error("node {node}: cannot fold at import: {reason}")]
    Fold {
        /// Human label of the node (name and op type).
        node: String,
        /// Why evaluation failed (bad shapes, out-of-range index…).
        reason: String,
    },
}

/// What is wrong with an attribute, kept separate so callers can match on it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttrProblem {
    /// The attribute is required and absent.
    #[error("is required but missing")]
    Missing,
    /// The attribute exists with a different kind.
    #[error("should be {expected} but is {found}")]
    WrongType {
        /// The kind the op needs (`INT`, `FLOATS`…).
        expected: &'static str,
        /// The kind the model stores.
        found: String,
    },
    /// The attribute has the right kind but a value the op cannot use.
    #[error("has an invalid value: {0}")]
    Invalid(String),
}

/// Shorthand used throughout the crate.
pub type Result<T, E = OnnxError> = std::result::Result<T, E>;
