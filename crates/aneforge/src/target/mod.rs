//! Targets in the core: per-family validation, target-driven rewrites, the
//! graph → cost mapping for the estimator, and the compile breaker.
//!
//! The numbers and gates live in the `aneforge-target` crate (one data file);
//! this module only applies them to a [`Graph`]:
//!
//! * [`validate`] walks every node and returns *every* violation at once,
//!   each with the op, shapes, the user's file:line, the first family that
//!   supports it and a decomposition hint ([`Report`]).
//! * [`legalize`] rewrites what it can instead of refusing (sin/cos below H15
//!   as a polynomial, reductions over a too-long axis as tiles, nearest
//!   upsampling below H14 as a repeat, a too-wide patchify conv as
//!   space-to-depth + a 1x1 conv) and says what it rewrote, so the compile
//!   report can show it.
//! * [`program_cost`] / [`estimate_graph`] turn a graph into the estimator's
//!   [`ProgramCost`] and a latency *projection*.
//! * [`check`] is the cross-compile check: legalize + validate + estimate,
//!   on any host (no Mac, no system compiler needed).
//! * [`run_in_breaker`] wraps the part of a compile that would call the
//!   system compiler in the process-wide compile breaker.

mod cost;
mod rewrite;
mod validate;

pub use aneforge_target as table;
pub use aneforge_target::{Estimate, Target, TargetError};
pub use cost::{estimate_graph, op_kind, program_cost};
pub use rewrite::{legalize, Rewrite};
pub use validate::{channel_axis, required_capability, validate, Report, Violation};

use crate::error::{Error, Result};
use crate::graph::Graph;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Converts a target-crate error into the core's error (each maps to one
/// Python exception: unknown names → TargetError, backoff →
/// CompileBackoffError, a malformed environment variable → ValueError).
pub fn target_err(e: TargetError) -> Error {
    match e {
        TargetError::CompileBackoff { .. } => Error::CompileBackoff(e.to_string()),
        TargetError::InvalidEnv { .. } => Error::value("compile", e.to_string()),
        TargetError::UnknownTarget { .. } | TargetError::UnknownChip { .. } => Error::Target(e.to_string()),
    }
}

/// Resolves a user-given target: a target name in any case (`"h16s"`) or a
/// chip name (`"M5 Pro"`, which brings that chip's bandwidth and floor).
pub fn resolve(name: &str) -> Result<Target> {
    aneforge_target::profile(name).map_err(target_err)
}

/// The target used when the user names none: the host's (`ANEFORGE_TARGET`
/// overrides), or None off a Mac (then compile does not validate).
pub fn detect() -> Result<Option<Target>> {
    aneforge_target::detect_family().map(|t| t.cloned()).map_err(target_err)
}

/// The estimator's target when the user names none and the host has no
/// engine: the base M4 (`h16g`), a current mid-range part. Documented in the
/// README; every estimate names the target it used.
pub const DEFAULT_ESTIMATE_TARGET: &str = "h16g";

/// The target for an estimate: the given name, else the host's, else
/// [`DEFAULT_ESTIMATE_TARGET`].
pub fn estimate_target(name: Option<&str>) -> Result<Target> {
    match name {
        Some(n) => resolve(n),
        None => match detect()? {
            Some(t) => Ok(t),
            None => resolve(DEFAULT_ESTIMATE_TARGET),
        },
    }
}

/// The cross-compile check: what compiling for `target` would do, without
/// compiling. Rewrites are applied (and listed as warnings), every remaining
/// violation is listed, and the estimate is of the program that would run
/// (after the optimisation passes), so it works on any host.
pub fn check(g: Graph, target: &Target) -> Result<(Graph, Report)> {
    let (g, rewrites) = legalize(g, target)?;
    let mut report = validate(&g, target);
    report.warnings = rewrites.iter().map(|r| r.to_string()).collect();
    let optimized = crate::passes::optimize(g.clone())?;
    report.estimate = Some(estimate_graph(&optimized, target));
    Ok((g, report))
}

/// What `compile()` runs before lowering when a target is given: legalize,
/// then validate; any violation left refuses the compile with one
/// [`Error::Target`] listing them all. Returns the graph to lower and the
/// compile report (its `warnings` say what was rewritten).
pub fn prepare(g: Graph, target: Option<&Target>) -> Result<(Graph, Option<Report>)> {
    let Some(t) = target else { return Ok((g, None)) };
    let (g, rewrites) = legalize(g, t)?;
    let mut report = validate(&g, t);
    report.warnings = rewrites.iter().map(|r| r.to_string()).collect();
    if !report.ok() {
        return Err(Error::Target(report.error_message()));
    }
    Ok((g, Some(report)))
}

static INJECTED_FAILURES: AtomicUsize = AtomicUsize::new(0);

/// Test hook: the next `n` compiles that run inside the breaker fail with
/// [`Error::Compile`] as if the system compiler had refused them. This is
/// how the breaker's behaviour (wait, strict error, reset) is exercised from
/// Python on a host without the system compiler; nothing else calls it.
pub fn inject_compile_failures(n: usize) {
    INJECTED_FAILURES.store(n, Ordering::SeqCst);
}

fn take_injected_failure() -> bool {
    INJECTED_FAILURES.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
}

/// Runs `lower` (the part of a compile that would reach the system compiler)
/// inside the process-wide compile breaker when a target is given: after a
/// failed compile the next one waits `ANEFORGE_COMPILE_BACKOFF` seconds, or
/// fails with [`Error::CompileBackoff`] in strict mode. Validation runs
/// before this, so a refused graph (a user error, retried at once) never
/// trips the breaker. Without a target nothing is gated: the sim has no
/// system compiler to protect.
pub fn run_in_breaker<T>(target: Option<&Target>, lower: impl FnOnce() -> Result<T>) -> Result<T> {
    if target.is_none() {
        return lower();
    }
    aneforge_target::run_compile(|| {
        if take_injected_failure() {
            return Err(Error::Compile("injected compile failure (test hook inject_compile_failures)".into()));
        }
        lower()
    })
    .map_err(target_err)?
}

/// [`run_in_breaker`] on a caller-owned breaker (fake clock and sleeper in
/// tests), with an explicit configuration.
pub fn run_in<C, S, T>(
    breaker: &table::CompileBreaker<C, S>,
    cfg: &table::BreakerConfig,
    lower: impl FnOnce() -> Result<T>,
) -> Result<T>
where
    C: table::breaker::Clock,
    S: table::breaker::Sleeper,
{
    breaker.run(cfg, lower).map_err(target_err)?
}

/// `af.reset_compile_breaker()`.
pub fn reset_compile_breaker() {
    aneforge_target::reset_compile_breaker();
}

#[cfg(test)]
mod tests;
