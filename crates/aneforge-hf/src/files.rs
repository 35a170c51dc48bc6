//! Small file helpers that attach the path to every failure.

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// Read a JSON file into `T`; `what` explains, in the error, why the file was
/// wanted (e.g. "the model's config.json").
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path, what: &str) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            Error::MissingFile {
                path: path.to_path_buf(),
                what: format!("needed for {what}"),
            }
        } else {
            Error::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    })?;
    serde_json::from_slice(&bytes).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })
}
