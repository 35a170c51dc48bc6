//! ANEForge compiler targets.
//!
//! Everything ANEForge knows about the 28 Apple Neural Engine compiler targets
//! lives in this leaf crate so that the validator, the estimator, the CLI and
//! the Python binding all read the same table:
//!
//! * [`targets`], [`lookup`], [`chip_profile`] — the target table (one data
//!   file, `data/targets.tsv`, with a source note per row); unknown names are
//!   refused with the valid list and a did-you-mean.
//! * [`Capability`] and [`Target::supports`] / [`Target::limits`] — the
//!   per-family gates the core validator checks.
//! * [`detect_family`] — the host's target (`ANEFORGE_TARGET` overrides).
//! * [`project_peak`] — theoretical peak (2 × 256 MAC × cores × fmax).
//! * [`estimate()`] — a latency *projection* for one program, calibrated on
//!   published measurements ([`calibration_report`] shows the error).
//! * [`breaker`] — the compile breaker (backoff after a failed compile).
//!
//! Numbers are provisional; see `shared/design/TARGETS.md` and the source
//! column of the data file.
//!
//! ```
//! use aneforge_target::{lookup, estimate, Capability, OpCost, OpKind, ProgramCost};
//!
//! let t = lookup("h14")?; // any case; unknown names are refused
//! if !t.supports(Capability::SinCos) {
//!     // "first supported on H15": rewrite sin as a polynomial, say so in the report
//!     assert_eq!(Capability::SinCos.first_family(), "H15");
//! }
//! let violations = t.check_shape(&[1, 64, 1, 20_000], Some(1));
//! assert_eq!(violations[0].first_family.as_deref(), Some("H16"));
//!
//! let program = ProgramCost {
//!     ops: vec![OpCost::new("fc", OpKind::Conv, 2.0 * 768.0 * 768.0 * 128.0,
//!                           768.0 * 768.0 * 2.0, 768.0 * 128.0 * 2.0, 768.0 * 128.0 * 2.0)],
//!     ..ProgramCost::default()
//! };
//! let e = estimate(t, &program);
//! assert!(e.is_projection && e.latency_us > t.floor_us);
//! # Ok::<(), aneforge_target::TargetError>(())
//! ```

#![deny(missing_docs)]

pub mod breaker;
pub mod calibration;
mod capability;
mod detect;
mod error;
pub mod estimate;
mod peak;
mod table;

pub use breaker::{reset_compile_breaker, run_compile, BreakerConfig, CompileBreaker, Gate};
pub use calibration::{calibration_report, format_report, CalibrationRow};
pub use capability::{
    first_family_for_axis, first_family_for_conv_kernel_width, Capability, LimitKind,
    LimitViolation, Limits,
};
pub use detect::{detect_family, resolve as resolve_target, target_for_brand, TARGET_ENV};
pub use error::TargetError;
pub use estimate::{
    estimate, estimate_with, Bound, Estimate, EstimatorParams, OpCost, OpEstimate, OpKind,
    ProgramCost,
};
pub use peak::{peak_of, project_peak, Peak};
pub use table::{
    calibration_points, chip, chip_profile, chips, lookup, profile, targets, valid_names,
    CalibrationPoint, Chip, Target,
};
