//! The engine path on hosts without one: the same API as `apple.rs`, and
//! every entry point says what would be needed.

use crate::{AneError, Surfaces};

/// Never constructed here; exists so `Model` has the same shape everywhere.
pub struct Loaded(());

pub fn available() -> bool {
    false
}

pub fn unavailable_reason() -> String {
    format!(
        "backend=\"ane\" needs macOS on Apple silicon with a Neural Engine; this host is {} {}. Use backend=\"sim\" (the default here) to run the same program on the CPU with the engine's numerics, or af.export(...) to write the .mlpackage / MIL for a Mac",
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

pub fn compile(_: &str, _: &[(String, Vec<u8>)], _: &Surfaces) -> Result<Loaded, AneError> {
    Err(AneError::Unavailable(unavailable_reason()))
}

pub fn eval(_: &Loaded, _: &[Vec<u8>], _: &Surfaces) -> Result<Vec<Vec<u8>>, AneError> {
    Err(AneError::Unavailable(unavailable_reason()))
}
