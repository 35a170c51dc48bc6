//! fp16 arithmetic on f32 lanes.
//!
//! The sim keeps values in f32 buffers but every fp16-typed value is exactly
//! an fp16 number: after an op computes in f32 its output is rounded to the
//! nearest fp16 (ties to even; overflow saturates to ±inf, as on the engine).
//! Holding fp16 values in f32 lanes is bit-for-bit the same numerics as fp16
//! storage and lets kernels (GEMM above all) run at f32 speed.

use half::slice::HalfFloatSliceExt;
use half::f16;
use rayon::prelude::*;

/// Rounds one value to fp16 precision.
#[inline]
pub fn round_f16(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

const CHUNK: usize = 1024;

/// Rounds a slice in place to fp16 precision. Uses half's slice
/// conversions, which pick F16C at run time, through a stack buffer.
pub fn round_f16_slice(xs: &mut [f32]) {
    let work = |c: &mut [f32]| {
        let mut tmp = [f16::ZERO; CHUNK];
        for part in c.chunks_mut(CHUNK) {
            let t = &mut tmp[..part.len()];
            t.convert_from_f32_slice(part);
            t.convert_to_f32_slice(part);
        }
    };
    if xs.len() >= 1 << 16 {
        xs.par_chunks_mut(1 << 14).for_each(work);
    } else {
        work(xs);
    }
}

/// Rounds to the nearest value of an integer type, saturating (casts).
#[inline]
pub fn round_int(x: f32, lo: f32, hi: f32) -> f32 {
    if x.is_nan() {
        return 0.0;
    }
    x.round_ties_even().clamp(lo, hi)
}

/// The error function, |error| < 1.2e-7 (ample for fp16 outputs).
/// Computed in f64 with the erfc continued-fraction-free Chebyshev fit of
/// Numerical Recipes' `erfcc` form, which is accurate across the range.
#[inline]
pub fn erf(x: f32) -> f32 {
    let z = (x as f64).abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.26551223
        + t * (1.00002368
            + t * (0.37409196
                + t * (0.09678418
                    + t * (-0.18628806
                        + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
    let erfc = t * poly.exp();
    let r = 1.0 - erfc;
    (if x >= 0.0 { r } else { -r }) as f32
}

/// Adds in fp16, rounding after each step like the engine's reduce unit.
#[inline]
pub fn add_f16(acc: f32, x: f32) -> f32 {
    round_f16(acc + x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_matches_ieee_half() {
        let xs = [0.1f32, 1.0 / 3.0, 65504.0, 65520.0, 1e-8, -2.5e-5, 2049.0];
        let mut v = xs.to_vec();
        round_f16_slice(&mut v);
        for (a, b) in xs.iter().zip(&v) {
            assert_eq!(f16::from_f32(*a).to_f32().to_bits(), b.to_bits());
        }
        assert!(v[3].is_infinite(), "65520 rounds to inf in fp16");
        assert_eq!(v[6], 2048.0, "ties go to even");
    }

    #[test]
    fn erf_is_accurate() {
        // Reference values of erf from tables.
        for (x, e) in [(0.0, 0.0), (0.5, 0.520_499_9), (1.0, 0.842_700_8), (2.0, 0.995_322_3), (-1.5, -0.966_105_1)] {
            assert!((erf(x) - e).abs() < 2e-7, "erf({x}) = {} vs {e}", erf(x));
        }
    }

    #[test]
    fn fp16_accumulation_stalls_at_2048() {
        let mut acc = 0.0;
        for _ in 0..3000 {
            acc = add_f16(acc, 1.0);
        }
        assert_eq!(acc, 2048.0);
    }
}
