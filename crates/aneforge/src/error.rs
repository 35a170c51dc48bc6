//! One error type for the core. Each variant maps to one Python exception
//! class in the binding, so the variant *is* the classification; the message
//! carries the op, the shapes and the fix.

use std::cell::RefCell;

#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum Error {
    #[error("{op}: {msg}")]
    Shape { op: String, msg: String },
    #[error("{op}: {msg}")]
    DType { op: String, msg: String },
    #[error("{op}: {msg}")]
    UnsupportedOp { op: String, msg: String },
    /// A bad argument that is not a shape or dtype problem (maps to ValueError).
    #[error("{op}: {msg}")]
    Value { op: String, msg: String },
    #[error("{0}")]
    Target(String),
    #[error("{0}")]
    Compile(String),
    /// The compile breaker refused a compile in strict mode (a compile failed
    /// moments ago; maps to `af.CompileBackoffError`).
    #[error("{0}")]
    CompileBackoff(String),
    #[error("{0}")]
    BackendUnavailable(String),
    /// A size the host cannot hold; refused before anything is allocated.
    #[error("{op}: {msg}")]
    Memory { op: String, msg: String },
    #[error("{path}: {msg}")]
    File { path: String, msg: String },
    #[error("{0}")]
    Runtime(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

thread_local! {
    static ORIGIN: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Runs `f` with `origin` ("file.py:12") recorded as the place the user's
/// code is building nodes, so errors and nodes can point back at it.
pub fn with_origin<T>(origin: Option<String>, f: impl FnOnce() -> T) -> T {
    let prev = ORIGIN.with(|o| o.replace(origin));
    let out = f();
    ORIGIN.with(|o| *o.borrow_mut() = prev);
    out
}

/// [`with_origin`] for a builder call: an error that does not yet say where
/// it was built gets `origin` appended, so every builder error (also those
/// raised by composite builders before any node exists) names the user's
/// line.
pub fn build_at<T>(origin: Option<String>, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let tag = origin.clone();
    with_origin(origin, f).map_err(|e| e.at(tag.as_deref()))
}

pub fn current_origin() -> Option<String> {
    ORIGIN.with(|o| o.borrow().clone())
}

impl Error {
    pub fn shape(op: impl Into<String>, msg: impl Into<String>) -> Error {
        Error::Shape { op: op.into(), msg: msg.into() }
    }
    pub fn dtype(op: impl Into<String>, msg: impl Into<String>) -> Error {
        Error::DType { op: op.into(), msg: msg.into() }
    }
    pub fn value(op: impl Into<String>, msg: impl Into<String>) -> Error {
        Error::Value { op: op.into(), msg: msg.into() }
    }
    pub fn unsupported(op: impl Into<String>, msg: impl Into<String>) -> Error {
        Error::UnsupportedOp { op: op.into(), msg: msg.into() }
    }

    /// Appends "(built at file:line)" so the user finds the offending line.
    /// An error already tagged keeps its first (innermost) location.
    pub fn at(self, origin: Option<&str>) -> Error {
        let Some(o) = origin else { return self };
        if self.to_string().contains(" (built at ") {
            return self;
        }
        let tag = format!(" (built at {o})");
        match self {
            Error::Shape { op, msg } => Error::Shape { op, msg: msg + &tag },
            Error::DType { op, msg } => Error::DType { op, msg: msg + &tag },
            Error::UnsupportedOp { op, msg } => Error::UnsupportedOp { op, msg: msg + &tag },
            Error::Value { op, msg } => Error::Value { op, msg: msg + &tag },
            Error::Memory { op, msg } => Error::Memory { op, msg: msg + &tag },
            other => other,
        }
    }
}

/// Early return with a shape error: `bail_shape!("conv", "x has rank {}", r)`.
#[macro_export]
macro_rules! bail_shape {
    ($op:expr, $($arg:tt)*) => { return Err($crate::error::Error::shape($op, format!($($arg)*))) };
}

#[macro_export]
macro_rules! bail_value {
    ($op:expr, $($arg:tt)*) => { return Err($crate::error::Error::value($op, format!($($arg)*))) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_errors_name_the_building_line_once() {
        // Bug: errors raised by composite builders (conv's rank check,
        // linear, the norms, ...) before any node was built carried no
        // location at all.
        let e = build_at::<()>(Some("model.py:7".into()), || Err(Error::shape("linear", "weight must be [out, in]"))).unwrap_err();
        assert_eq!(e.to_string(), "linear: weight must be [out, in] (built at model.py:7)");
        let twice = e.clone().at(Some("other.py:1"));
        assert_eq!(twice, e);
    }
}
