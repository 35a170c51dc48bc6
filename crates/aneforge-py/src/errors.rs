//! The one place core errors become Python exceptions. The classes live in
//! `aneforge/exceptions.py` so they can also derive from ValueError /
//! TypeError; this looks them up by name.

use aneforge::Error;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyType;

fn class_name(e: &Error) -> &'static str {
    match e {
        Error::Shape { .. } => "ShapeError",
        Error::DType { .. } => "DTypeError",
        Error::UnsupportedOp { .. } => "UnsupportedOpError",
        Error::Value { .. } => "ValueError_",
        Error::Target(_) => "TargetError",
        Error::Compile(_) => "CompileError",
        Error::CompileBackoff(_) => "CompileBackoffError",
        Error::BackendUnavailable(_) => "BackendUnavailableError",
        Error::Memory { .. } => "ResourceError",
        Error::File { .. } => "FileFormatError",
        Error::Runtime(_) => "AneForgeError",
    }
}

/// Converts a core error to the matching `af.` exception.
pub fn to_py(e: Error) -> PyErr {
    let msg = e.to_string();
    to_py_msg(&e, msg)
}

/// The exception class of `e` carrying another message (e.g. the error
/// wrapped with the ONNX node it came from).
pub fn to_py_msg(e: &Error, msg: String) -> PyErr {
    Python::attach(|py| {
        let name = class_name(e);
        if name == "ValueError_" {
            return PyValueError::new_err(msg);
        }
        match py.import("aneforge.exceptions").and_then(|m| m.getattr(name)) {
            Ok(cls) => match cls.cast_into::<PyType>() {
                Ok(t) => PyErr::from_type(t, msg),
                Err(_) => PyRuntimeError::new_err(msg),
            },
            Err(_) => PyRuntimeError::new_err(msg),
        }
    })
}

/// `?`-friendly conversion for core results.
pub trait IntoPy<T> {
    fn py(self) -> PyResult<T>;
}

impl<T> IntoPy<T> for Result<T, Error> {
    fn py(self) -> PyResult<T> {
        self.map_err(to_py)
    }
}

/// An `af.` exception raised from binding code (argument checks).
pub fn af_err(name: &str, msg: impl Into<String>) -> PyErr {
    let msg = msg.into();
    Python::attach(|py| match py.import("aneforge.exceptions").and_then(|m| m.getattr(name)) {
        Ok(cls) => match cls.cast_into::<PyType>() {
            Ok(t) => PyErr::from_type(t, msg),
            Err(_) => PyRuntimeError::new_err(msg),
        },
        Err(_) => PyRuntimeError::new_err(msg),
    })
}
/// Runs `f`, turning a Rust panic into af.AneForgeError: no panic may
/// reach Python as a PanicException.
pub(crate) fn guard<T>(what: &str, f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default();
            Err(af_err("AneForgeError", format!("{what}: internal error ({msg}); please report it with the graph that caused it")))
        }
    }
}
