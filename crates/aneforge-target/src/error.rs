//! Errors of this crate. The core maps each variant to one Python exception.

use thiserror::Error;

/// Everything that can go wrong here is a user-facing input problem (a name,
/// an environment variable) or the compile breaker refusing to wait.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum TargetError {
    /// The system compiler silently compiles for the host on an unknown
    /// target name, so we refuse it ourselves and say what would be valid.
    #[error("unknown ANE target {name:?}{}; valid targets: {valid}", did_you_mean(.suggestion))]
    UnknownTarget {
        /// The name as the user wrote it.
        name: String,
        /// The closest valid name (or the target of a chip name), if any.
        suggestion: Option<String>,
        /// Every valid name, lower case, space-separated.
        valid: String,
    },
    /// A chip name that is not in the chip table.
    #[error("unknown chip {name:?}; known chips: {valid}")]
    UnknownChip {
        /// The name as the user wrote it.
        name: String,
        /// Every known chip, comma-separated.
        valid: String,
    },
    /// An environment variable we read holds something we cannot use; we say
    /// so instead of silently falling back to a default.
    #[error("environment variable {var}={value:?} is invalid: {expected}")]
    InvalidEnv {
        /// The variable's name.
        var: &'static str,
        /// Its value.
        value: String,
        /// What would have been accepted.
        expected: &'static str,
    },
    /// Strict mode of the compile breaker: a compile failed recently and the
    /// caller asked for an error instead of a sleep (`af.CompileBackoffError`).
    #[error(
        "a compile failed {since_failure_s:.1} s ago; the compile breaker asks to wait \
         {remaining_s:.1} s more (ANEFORGE_COMPILE_BREAKER_STRICT=1 turns this wait into an error; \
         call reset_compile_breaker() to clear it)"
    )]
    CompileBackoff {
        /// Seconds still to wait before the next compile.
        remaining_s: f64,
        /// Seconds since the failed compile.
        since_failure_s: f64,
    },
}

fn did_you_mean(s: &Option<String>) -> String {
    match s {
        Some(s) => format!(" (did you mean {s:?}?)"),
        None => String::new(),
    }
}
