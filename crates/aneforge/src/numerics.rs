//! fp16 arithmetic on f32 lanes.
//!
//! The sim keeps values in f32 buffers but every fp16-typed value is exactly
//! an fp16 number: after an op computes in f32 its output is rounded to the
//! nearest fp16 (ties to even; overflow saturates to ±inf, as on the engine).
//! Holding fp16 values in f32 lanes is bit-for-bit the same numerics as fp16
//! storage and lets kernels (GEMM above all) run at f32 speed.

use half::f16;
use crate::parallel::{per_thread, SPLIT_MIN};
use rayon::prelude::*;

/// Rounds one value to fp16 precision.
#[inline]
pub fn round_f16(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

/// Rounds to fp16 precision with integer and float ops only, so loops over
/// it vectorise (the reductions' fp16 accumulators use it). Bit-exact with
/// IEEE conversion: ties to even, overflow to ±inf, fp16 subnormals kept.
#[inline(always)]
pub fn round_f16_fast(x: f32) -> f32 {
    let b = x.to_bits();
    let sign = b & 0x8000_0000;
    let abs = b & 0x7fff_ffff;
    // Normal fp16 range: keep 10 mantissa bits, round half to even.
    let r = (abs + 0x0fff + ((abs >> 13) & 1)) & !0x1fff;
    let normal = if r > 0x477f_e000 { 0x7f80_0000 } else { r };
    // Subnormal range: adding 0.5 makes the f32 ulp 2^-24, the fp16 subnormal step.
    let sub = ((f32::from_bits(abs) + 0.5) - 0.5).to_bits();
    let out = if abs >= 0x7f80_0000 {
        abs | (b & 0x0040_0000) | if abs > 0x7f80_0000 { 0x0040_0000 } else { 0 }
    } else if abs < 0x3880_0000 {
        sub
    } else {
        normal
    };
    f32::from_bits(sign | out)
}

/// Sum with 16 independent accumulators (vectorises; f32 statistics).
#[inline]
pub fn sum_f32(xs: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let mut c = xs.chunks_exact(16);
    for v in &mut c {
        for k in 0..16 {
            acc[k] += v[k];
        }
    }
    let mut s: f32 = c.remainder().iter().sum();
    for a in acc {
        s += a;
    }
    s
}

/// Max with 16 independent lanes. A plain compare (not `f32::max`, whose
/// NaN rule costs a blend per lane); NaN inputs still surface through the
/// exp/sum that follow it in softmax.
#[inline]
pub fn max_f32(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 16];
    let mut c = xs.chunks_exact(16);
    for v in &mut c {
        for k in 0..16 {
            acc[k] = if v[k] > acc[k] { v[k] } else { acc[k] };
        }
    }
    let mut m = c.remainder().iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
    for a in acc {
        m = m.max(a);
    }
    m
}

/// [`SPLIT_MIN`] for a caller outside the thread pool (the engine path's
/// port I/O): handing work to the pool from outside costs a wake-up and a
/// blocking wait, more than converting a few hundred thousand values.
const PAR_MIN_OUTSIDE_POOL: usize = 1 << 22;

/// Whether a conversion of `len` values is worth splitting across threads
/// (in one part per thread, see [`crate::parallel`]).
fn parallel(len: usize) -> bool {
    len >= if rayon::current_thread_index().is_some() { SPLIT_MIN } else { PAR_MIN_OUTSIDE_POOL }
}

/// `f` over `src` and `dst` (as long as `src`), in one part per thread
/// when [`parallel`] says so: the shape of every port conversion.
fn convert<S: Sync, D: Send>(src: &[S], dst: &mut [D], f: impl Fn(&[S], &mut [D]) + Sync + Send) {
    if parallel(src.len()) {
        let part = per_thread(src.len());
        src.par_chunks(part).zip(dst.par_chunks_mut(part)).for_each(|(s, d)| f(s, d));
    } else {
        f(src, dst);
    }
}

#[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
mod simd {
    use std::arch::x86_64::*;
    const RNE: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    pub const LANES: usize = 16;

    #[inline]
    fn rnd(x: __m512) -> __m512 {
        // SAFETY: avx512f is enabled at compile time.
        unsafe { _mm512_cvtph_ps(_mm512_cvtps_ph::<RNE>(x)) }
    }

    /// The first `n` lanes (all for n >= 16).
    #[inline]
    fn mask(n: usize) -> __mmask16 {
        if n >= LANES {
            0xffff
        } else {
            ((1u32 << n) - 1) as __mmask16
        }
    }

    #[inline]
    pub fn round(xs: &mut [f32]) {
        // A masked last vector: kernels round rows as short as a few
        // dozen values, where a scalar tail would cost as much as the rest.
        for i in (0..xs.len()).step_by(LANES) {
            let m = mask(xs.len() - i);
            // SAFETY: the masked lanes lie inside `xs`; avx512f is enabled at compile time.
            unsafe {
                let p = xs.as_mut_ptr().add(i);
                _mm512_mask_storeu_ps(p, m, rnd(_mm512_maskz_loadu_ps(m, p)));
            }
        }
    }

    #[inline]
    pub fn copy_rounded(src: &[f32], dst: &mut [f32]) {
        assert!(src.len() >= dst.len());
        for i in (0..dst.len()).step_by(LANES) {
            let m = mask(dst.len() - i);
            // SAFETY: the masked lanes lie inside `src` and `dst`; avx512f is enabled at compile time.
            unsafe { _mm512_mask_storeu_ps(dst.as_mut_ptr().add(i), m, rnd(_mm512_maskz_loadu_ps(m, src.as_ptr().add(i)))) };
        }
    }

    #[inline]
    pub fn add_residual(out: &mut [f32], r: &[f32], clamp: Option<(f32, f32)>, round: bool) {
        assert!(r.len() >= out.len());
        let f = |x: __m512| if round { rnd(x) } else { x };
        let (lo, hi) = clamp.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
        // SAFETY: avx512f is enabled at compile time.
        let (vlo, vhi) = unsafe { (_mm512_set1_ps(lo), _mm512_set1_ps(hi)) };
        for i in (0..out.len()).step_by(LANES) {
            let m = mask(out.len() - i);
            // SAFETY: the masked lanes lie inside `out` and `r`.
            unsafe {
                let p = out.as_mut_ptr().add(i);
                let mut v = f(_mm512_add_ps(f(_mm512_maskz_loadu_ps(m, p)), _mm512_maskz_loadu_ps(m, r.as_ptr().add(i))));
                if clamp.is_some() {
                    v = _mm512_min_ps(_mm512_max_ps(v, vlo), vhi);
                }
                _mm512_mask_storeu_ps(p, m, f(v));
            }
        }
    }

    #[inline]
    pub fn to_f32(src: &[half::f16], dst: &mut [f32]) {
        let mut s = src.chunks_exact(LANES);
        let mut d = dst.chunks_exact_mut(LANES);
        for (a, b) in (&mut s).zip(&mut d) {
            // SAFETY: 16 f16 in, 16 f32 out.
            unsafe {
                let h = _mm256_loadu_si256(a.as_ptr() as *const __m256i);
                _mm512_storeu_ps(b.as_mut_ptr(), _mm512_cvtph_ps(h));
            }
        }
        for (a, b) in s.remainder().iter().zip(d.into_remainder()) {
            *b = a.to_f32();
        }
    }

    #[inline]
    pub fn to_f16(src: &[f32], dst: &mut [half::f16]) {
        let mut s = src.chunks_exact(LANES);
        let mut d = dst.chunks_exact_mut(LANES);
        for (a, b) in (&mut s).zip(&mut d) {
            // SAFETY: 16 f32 in, 16 f16 out.
            unsafe {
                let x = _mm512_loadu_ps(a.as_ptr());
                _mm256_storeu_si256(b.as_mut_ptr() as *mut __m256i, _mm512_cvtps_ph::<RNE>(x));
            }
        }
        for (a, b) in s.remainder().iter().zip(d.into_remainder()) {
            *b = half::f16::from_f32(*a);
        }
    }
}

#[cfg(not(all(target_arch = "x86_64", target_feature = "avx512f")))]
mod simd {
    use half::slice::HalfFloatSliceExt;
    /// Portable rounding through half's slice conversions (F16C/NEON when present).
    #[inline]
    pub fn round(xs: &mut [f32]) {
        let mut tmp = [half::f16::ZERO; 256];
        for part in xs.chunks_mut(256) {
            let t = &mut tmp[..part.len()];
            t.convert_from_f32_slice(part);
            t.convert_to_f32_slice(part);
        }
    }
    #[inline]
    pub fn copy_rounded(src: &[f32], dst: &mut [f32]) {
        dst.copy_from_slice(&src[..dst.len()]);
        round(dst);
    }
    #[inline]
    pub fn add_residual(out: &mut [f32], r: &[f32], clamp: Option<(f32, f32)>, round: bool) {
        let f = |x: f32| if round { super::round_f16(x) } else { x };
        for (o, &y) in out.iter_mut().zip(r) {
            let mut v = f(f(*o) + y);
            if let Some((lo, hi)) = clamp {
                v = v.max(lo).min(hi);
            }
            *o = f(v);
        }
    }
    #[inline]
    pub fn to_f32(src: &[half::f16], dst: &mut [f32]) {
        src.convert_to_f32_slice(dst)
    }
    #[inline]
    pub fn to_f16(src: &[f32], dst: &mut [half::f16]) {
        dst.convert_from_f32_slice(src)
    }
}

/// Rounds a slice in place to fp16 precision (ties to even, overflow → ±inf).
pub fn round_f16_slice(xs: &mut [f32]) {
    if parallel(xs.len()) {
        xs.par_chunks_mut(per_thread(xs.len())).for_each(simd::round);
    } else {
        simd::round(xs);
    }
}

/// [`round_f16_slice`] on the calling thread only (for kernels already
/// running on a pool worker, a block at a time).
pub fn round_f16_slice_serial(xs: &mut [f32]) {
    simd::round(xs);
}

/// f32 values into `dst` (as long as `src`), rounded to fp16 when `round`
/// (an fp16 port fed float32): one pass, split like the other port
/// conversions.
pub fn copy_f32(src: &[f32], dst: &mut [f32], round: bool) {
    convert(src, dst, |s, d| if round { simd::copy_rounded(s, d) } else { d.copy_from_slice(s) });
}

/// A residual `r` added to an op's finished values `out` as a separate add
/// would store it, then a clamp, in one pass on the calling thread: with
/// `round`, out = rnd(clamp(rnd(rnd(out) + r))), rnd being fp16 rounding.
pub fn add_residual_serial(out: &mut [f32], r: &[f32], clamp: Option<(f32, f32)>, round: bool) {
    simd::add_residual(out, r, clamp, round);
}

/// fp16 → f32 on the calling thread only (for kernels already running
/// on a pool worker).
pub fn f16_to_f32_serial(src: &[f16], dst: &mut [f32]) {
    simd::to_f32(src, dst);
}

/// fp16 → f32 for port I/O.
pub fn f16_to_f32(src: &[f16], dst: &mut [f32]) {
    convert(src, dst, simd::to_f32);
}

/// f32 → fp16 (round to nearest even) on the calling thread only.
pub fn f32_to_f16_serial(src: &[f32], dst: &mut [f16]) {
    simd::to_f16(src, dst);
}

/// f32 → fp16 (round to nearest even) for port I/O.
pub fn f32_to_f16(src: &[f32], dst: &mut [f16]) {
    convert(src, dst, simd::to_f16);
}

// Branch-free transcendental functions. Their error (a few f32 ulps) is far
// below the fp16 rounding that follows, and loops over them vectorise,
// unlike calls into libm.

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;

/// a·b + c, fused where the target has FMA: Horner steps at half the
/// instructions (exp's polynomial was most of softmax's time), and one
/// rounding instead of two. Plain multiply-add elsewhere, where `mul_add`
/// would be a libm call.
#[inline(always)]
fn madd(a: f32, b: f32, c: f32) -> f32 {
    if cfg!(target_feature = "fma") {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// e^x, relative error < 2e-7; overflow → +inf, underflow → 0.
/// Only float ops and selects (rounding by the 1.5·2²³ trick, no libm
/// calls), so loops over it vectorise.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23: adding it rounds to an integer
    let xc = x.max(-87.0).min(88.0);
    let n = (xc * LOG2E + MAGIC) - MAGIC;
    let r = madd(-n, LN2_LO, madd(-n, LN2_HI, xc));
    let p = madd(madd(madd(madd(madd(madd(madd(1.0 / 5040.0, r, 1.0 / 720.0), r, 1.0 / 120.0), r, 1.0 / 24.0), r, 1.0 / 6.0), r, 0.5), r, 1.0), r, 1.0);
    // 2^n built in the exponent field. n + 127 is an integer in [40, 215];
    // adding 2^23 puts it in the low mantissa bits, read without a float→int
    // conversion (which would not vectorise).
    let biased = (n + (127.0 + 8_388_608.0)).to_bits() - 0x4B00_0000;
    let scale = f32::from_bits(biased << 23);
    let y = p * scale;
    let y = if x > 88.7 { f32::INFINITY } else { y };
    let y = if x < -87.3 { 0.0 } else { y };
    if x.is_nan() {
        x
    } else {
        y
    }
}

#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// tanh: a Taylor series near 0 (no cancellation), exp form elsewhere.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    let a = x.abs();
    let x2 = x * x;
    let small = x * (1.0 + x2 * (-1.0 / 3.0 + x2 * (2.0 / 15.0 + x2 * (-17.0 / 315.0 + x2 * (62.0 / 2835.0 + x2 * (-1382.0 / 155925.0))))));
    let e = exp(-2.0 * a);
    let big = ((1.0 - e) / (1.0 + e)).copysign(x);
    if a < 0.4 {
        small
    } else {
        big
    }
}

/// The error function: Taylor series near 0, Abramowitz–Stegun 7.1.26
/// (|error| < 1.5e-7) elsewhere.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    let x2 = x * x;
    let small = std::f32::consts::FRAC_2_SQRT_PI
        * x
        * (1.0 + x2 * (-1.0 / 3.0 + x2 * (1.0 / 10.0 + x2 * (-1.0 / 42.0 + x2 * (1.0 / 216.0 + x2 * (-1.0 / 1320.0))))));
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t * (0.254_829_6 + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let big = (1.0 - poly * exp(-x2)).copysign(x);
    if a < 0.5 {
        small
    } else {
        big
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
        for (x, e) in [(0.0, 0.0), (0.1, 0.112_462_92), (0.5, 0.520_499_9), (1.0, 0.842_700_8), (2.0, 0.995_322_3), (-1.5, -0.966_105_1)] {
            assert!((erf(x) - e).abs() < 3e-7, "erf({x}) = {} vs {e}", erf(x));
        }
    }

    #[test]
    fn fast_transcendentals_match_libm() {
        for i in -2000..2000 {
            let x = i as f32 * 0.01;
            let rel = |a: f32, b: f32| ((a - b) / b.abs().max(1e-30)).abs();
            assert!(rel(exp(x), x.exp()) < 4e-7, "exp({x})");
            assert!(rel(tanh(x), x.tanh()) < 1e-6 || (tanh(x) - x.tanh()).abs() < 1e-7, "tanh({x})");
            assert!((sigmoid(x) - 1.0 / (1.0 + (-x).exp())).abs() < 1e-6, "sigmoid({x})");
        }
        assert_eq!(exp(100.0), f32::INFINITY);
        assert_eq!(exp(-100.0), 0.0);
        assert!(exp(f32::NAN).is_nan());
    }

    #[test]
    fn fast_rounding_is_bit_exact() {
        let mut x = 1.0e-9f32;
        while x < 1.0e6 {
            for v in [x, -x, x * 1.000_31, x * 0.999_7] {
                assert_eq!(round_f16_fast(v).to_bits(), round_f16(v).to_bits(), "{v:e}");
            }
            x *= 1.013;
        }
        for v in [65504.0f32, 65519.0, 65520.0, f32::INFINITY, -f32::INFINITY, 0.0, -0.0, 6.1e-5, 5.96e-8, 2.98e-8, 2.99e-8] {
            assert_eq!(round_f16_fast(v).to_bits(), round_f16(v).to_bits(), "{v:e}");
        }
        assert!(round_f16_fast(f32::NAN).is_nan());
    }

    #[test]
    fn residual_add_rounds_as_the_separate_ops_would() {
        let f = |x: f32| f16::from_f32(x).to_f32();
        for n in [1usize, 15, 16, 17, 40] {
            let out: Vec<f32> = (0..n).map(|i| i as f32 * 0.3371 - 4.0).collect();
            let mut r: Vec<f32> = (0..n).map(|i| 3.9 - i as f32 * 0.1113).collect();
            r[0] = f32::NAN;
            for clamp in [None, Some((0.0, 6.0))] {
                for round in [false, true] {
                    let mut got = out.clone();
                    add_residual_serial(&mut got, &r, clamp, round);
                    for i in 0..n {
                        let g = |x: f32| if round { f(x) } else { x };
                        let mut want = g(g(out[i]) + r[i]);
                        if let Some((lo, hi)) = clamp {
                            // The engine's clamp (max, then min) maps NaN to the low bound.
                            want = if want.is_nan() { lo } else { want.max(lo).min(hi) };
                        }
                        let want = g(want);
                        assert!(got[i].to_bits() == want.to_bits() || (got[i].is_nan() && want.is_nan()), "n={n} i={i} {clamp:?} round={round}: {} vs {want}", got[i]);
                    }
                }
            }
        }
    }

    #[test]
    fn io_conversions_round_trip() {
        let xs: Vec<f32> = (0..1000).map(|i| i as f32 * 0.37 - 100.0).collect();
        let mut h = vec![f16::ZERO; xs.len()];
        f32_to_f16(&xs, &mut h);
        let mut back = vec![0.0; xs.len()];
        f16_to_f32(&h, &mut back);
        for (a, b) in xs.iter().zip(&back) {
            assert_eq!(round_f16(*a), *b);
        }
    }

    /// A float32 port's copy: rounded like `round_f16` (NaN stays NaN)
    /// when asked, bit for bit otherwise, at lengths with a vector tail and
    /// (run inside the pool, as the sim runs it) above the split into parts.
    #[test]
    fn f32_port_copies_round_when_asked() {
        for n in [1, 17, 1000, (1 << 16) + 5] {
            let xs: Vec<f32> = (0..n).map(|i| if i % 97 == 5 { f32::NAN } else { (i as f32 * 0.37 - 100.0) * 1.000_1 }).collect();
            for round in [false, true] {
                let mut got = vec![0.0; n];
                rayon::scope(|_| copy_f32(&xs, &mut got, round));
                for (i, (&x, &g)) in xs.iter().zip(&got).enumerate() {
                    let want = if round { round_f16(x) } else { x };
                    assert!(g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan()), "n={n} i={i} round={round}: {g} vs {want}");
                }
            }
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
