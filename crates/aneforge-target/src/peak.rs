//! Theoretical peak of a target, for `af.project_peak(arch)`.

use crate::error::TargetError;
use crate::table::{lookup, Target};

/// MACs per neural-engine core per cycle at fp16 (512 at int8) [M6].
pub const FP16_MACS_PER_CORE: f64 = 256.0;

/// The theoretical peak of one program on one engine. It is an upper bound,
/// not a prediction: whole networks reach 10-70% of it (see the estimator).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Peak {
    /// fp16 TFLOP/s = 2 x 256 MAC x cores x fmax.
    pub tflops_fp16: f64,
    /// int8 TOPS: 2 x fp16 from H16 on (W8A8), equal to fp16 before.
    pub tops_int8: f64,
    /// Neural-engine cores.
    pub cores: u32,
    /// Clock used, GHz (the compiler's fmax).
    pub ghz: f64,
}

/// Peak of a target by name (any case); unknown names are refused.
pub fn project_peak(arch: &str) -> Result<Peak, TargetError> {
    Ok(peak_of(lookup(arch)?))
}

/// Peak of a target row. Computed from cores and clock rather than read from
/// the table's `fp16_tflops` column, so the formula is the single truth and a
/// test keeps the column honest.
pub fn peak_of(t: &Target) -> Peak {
    let tflops_fp16 = 2.0 * FP16_MACS_PER_CORE * f64::from(t.cores) * t.fmax_ghz / 1000.0;
    let int8_factor = if t.tier >= 16 { 2.0 } else { 1.0 };
    Peak {
        tflops_fp16,
        tops_int8: tflops_fp16 * int8_factor,
        cores: t.cores,
        ghz: t.fmax_ghz,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn formula_reproduces_targets_md_figures() {
        // TARGETS.md / ane-performance.md §3: formula vs Apple's TOPS.
        let p = project_peak("h11").expect("h11");
        assert!(close(p.tflops_fp16, 5.2, 0.05), "{p:?}");
        assert_eq!(p.cores, 8);
        assert!(close(
            project_peak("H13").expect("").tflops_fp16,
            11.7,
            0.05
        ));
        assert!(close(
            project_peak("h14").expect("").tflops_fp16,
            15.9,
            0.05
        ));
        assert!(close(
            project_peak("h15").expect("").tflops_fp16,
            16.9,
            0.05
        ));
        let h16 = project_peak("h16").expect("");
        assert!(close(h16.tflops_fp16, 17.7, 0.05), "{h16:?}");
        assert!(close(h16.tops_int8, 35.4, 0.1), "{h16:?}");
        let h16s = project_peak("h16s").expect("");
        assert!(close(h16s.tflops_fp16, 19.4, 0.05));
        assert!(close(h16s.tops_int8, 38.7, 0.1));
        assert_eq!(h16s.cores, 16);
        assert!(close(h16s.ghz, 2.364, 1e-9));
    }

    #[test]
    fn int8_doubles_only_from_h16() {
        let h15 = project_peak("h15c").expect("");
        assert_eq!(h15.tops_int8, h15.tflops_fp16);
        let h17 = project_peak("h17").expect("");
        assert!(close(h17.tops_int8, 2.0 * h17.tflops_fp16, 1e-12));
    }

    #[test]
    fn m11_is_one_core_at_half_a_gigahertz() {
        let p = project_peak("m11").expect("");
        assert_eq!(p.cores, 1);
        assert!(close(p.tflops_fp16, 0.256, 1e-9));
    }

    #[test]
    fn unknown_arch_is_refused() {
        assert!(project_peak("m5").is_err());
    }
}
