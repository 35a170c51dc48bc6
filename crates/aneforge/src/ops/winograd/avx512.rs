//! AVX-512 forms of the two transforms whose data moves with stride 4
//! (tile tx owns columns 4tx..4tx+5 of a row): 16 tiles per vector, with
//! the de-interleave (input) and interleave (output) done by lane shuffles
//! instead of the scalar gathers and scatters the compiler emits.

use super::{A, R};
use crate::sgemm::lane_mask;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Lanes 0..8 of `permutex2var(z0, idx, z1)` pick phase `s` of tiles 0..8.
#[inline(always)]
unsafe fn phase_index(s: i32) -> __m512i {
    _mm512_setr_epi32(s, 4 + s, 8 + s, 12 + s, 16 + s, 20 + s, 24 + s, 28 + s, s, 4 + s, 8 + s, 12 + s, 16 + s, 20 + s, 24 + s, 28 + s)
}

/// Phase `s` (column 4j + s) of the 16 tiles held in z[0..4].
#[inline(always)]
unsafe fn phase(z: &[__m512; 4], idx: __m512i) -> __m512 {
    let lo = _mm512_permutex2var_ps(z[0], idx, z[1]);
    let hi = _mm512_permutex2var_ps(z[2], idx, z[3]);
    _mm512_shuffle_f32x4::<0x44>(lo, hi)
}

/// Bᵀ across tiles of one column-transformed row (see `input_row`).
///
/// # Safety
/// AVX-512F is available and `tr` holds at least 4·tw.next_multiple_of(16) + 4 floats.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn input_row(tr: &[f32], v: &mut [&mut [f32]; A]) {
    let tw = v[0].len();
    debug_assert!(tr.len() >= R * tw.next_multiple_of(16) + R);
    let idx = [phase_index(0), phase_index(1), phase_index(2), phase_index(3)];
    let (c2, c4, c5) = (_mm512_set1_ps(2.0), _mm512_set1_ps(4.0), _mm512_set1_ps(5.0));
    for tx0 in (0..tw).step_by(16) {
        let p = tr.as_ptr().add(R * tx0);
        let z = [_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16)), _mm512_loadu_ps(p.add(32)), _mm512_loadu_ps(p.add(48))];
        let zs = [_mm512_loadu_ps(p.add(4)), _mm512_loadu_ps(p.add(20)), _mm512_loadu_ps(p.add(36)), _mm512_loadu_ps(p.add(52))];
        let (a0, a1, a2, a3) = (phase(&z, idx[0]), phase(&z, idx[1]), phase(&z, idx[2]), phase(&z, idx[3]));
        let (a4, a5) = (phase(&zs, idx[0]), phase(&zs, idx[1]));
        let a24 = _mm512_sub_ps(a4, a2);
        let out = [
            _mm512_add_ps(_mm512_fnmadd_ps(c5, a2, _mm512_mul_ps(c4, a0)), a4),
            _mm512_fnmadd_ps(c4, _mm512_add_ps(a1, a2), _mm512_add_ps(a3, a4)),
            _mm512_fmadd_ps(c4, _mm512_sub_ps(a1, a2), _mm512_sub_ps(a4, a3)),
            _mm512_fmadd_ps(c2, _mm512_sub_ps(a3, a1), a24),
            _mm512_fmadd_ps(c2, _mm512_sub_ps(a1, a3), a24),
            _mm512_add_ps(_mm512_fnmadd_ps(c5, a3, _mm512_mul_ps(c4, a1)), a5),
        ];
        let mask = lane_mask(tw - tx0);
        for (dst, val) in v.iter_mut().zip(out) {
            _mm512_mask_storeu_ps(dst.as_mut_ptr().add(tx0), mask, val);
        }
    }
}

/// Aᵀ M A for a row of tiles and every output row it covers, plus bias,
/// clamped: `me[e]` holds GEMM result e for the row's `tw` tiles, `rows`
/// gives up to four output rows (each `wo` wide).
///
/// # Safety
/// AVX-512F is available; every `me[e]` holds tw floats.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn output_rows(me: &[&[f32]; A * A], rows: &mut [&mut [f32]], bias: f32, lo: f32, hi: f32) {
    let tw = me[0].len();
    let (vb, vlo, vhi) = (_mm512_set1_ps(bias), _mm512_set1_ps(lo), _mm512_set1_ps(hi));
    let (c2, c4, c8) = (_mm512_set1_ps(2.0), _mm512_set1_ps(4.0), _mm512_set1_ps(8.0));
    for tx0 in (0..tw).step_by(16) {
        let mask = lane_mask(tw - tx0);
        // cols[r][s]: row r of Aᵀ applied down column s of the 6x6 tiles.
        let mut cols = [[_mm512_setzero_ps(); A]; R];
        for s in 0..A {
            let m: [__m512; A] = std::array::from_fn(|k| _mm512_maskz_loadu_ps(mask, me[k * A + s].as_ptr().add(tx0)));
            let (p12, m12) = (_mm512_add_ps(m[1], m[2]), _mm512_sub_ps(m[1], m[2]));
            let (p34, m34) = (_mm512_add_ps(m[3], m[4]), _mm512_sub_ps(m[3], m[4]));
            cols[0][s] = _mm512_add_ps(_mm512_add_ps(m[0], p12), p34);
            cols[1][s] = _mm512_fmadd_ps(c2, m34, m12);
            cols[2][s] = _mm512_fmadd_ps(c4, p34, p12);
            cols[3][s] = _mm512_add_ps(_mm512_fmadd_ps(c8, m34, m12), m[5]);
        }
        for (r, drow) in rows.iter_mut().enumerate() {
            let c = &cols[r];
            let (p12, m12) = (_mm512_add_ps(c[1], c[2]), _mm512_sub_ps(c[1], c[2]));
            let (p34, m34) = (_mm512_add_ps(c[3], c[4]), _mm512_sub_ps(c[3], c[4]));
            let fin = |y: __m512| _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(y, vb), vlo), vhi);
            let y0 = fin(_mm512_add_ps(_mm512_add_ps(c[0], p12), p34));
            let y1 = fin(_mm512_fmadd_ps(c2, m34, m12));
            let y2 = fin(_mm512_fmadd_ps(c4, p34, p12));
            let y3 = fin(_mm512_add_ps(_mm512_fmadd_ps(c8, m34, m12), c[5]));
            // Interleave: output column 4j + q is y_q[j]. After the unpacks,
            // 128-bit lane l of e/f/g/h holds tile 4l/4l+1/4l+2/4l+3.
            let (a, b) = (_mm512_unpacklo_ps(y0, y1), _mm512_unpackhi_ps(y0, y1));
            let (cc, d) = (_mm512_unpacklo_ps(y2, y3), _mm512_unpackhi_ps(y2, y3));
            let e = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(a), _mm512_castps_pd(cc)));
            let f = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(a), _mm512_castps_pd(cc)));
            let g = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(b), _mm512_castps_pd(d)));
            let h = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(b), _mm512_castps_pd(d)));
            let (p, q) = (_mm512_shuffle_f32x4::<0x44>(e, f), _mm512_shuffle_f32x4::<0x44>(g, h));
            let (rr, ss) = (_mm512_shuffle_f32x4::<0xEE>(e, f), _mm512_shuffle_f32x4::<0xEE>(g, h));
            let out = [
                _mm512_shuffle_f32x4::<0x88>(p, q),
                _mm512_shuffle_f32x4::<0xDD>(p, q),
                _mm512_shuffle_f32x4::<0x88>(rr, ss),
                _mm512_shuffle_f32x4::<0xDD>(rr, ss),
            ];
            let wo = drow.len();
            for (k, val) in out.into_iter().enumerate() {
                let col = R * tx0 + 16 * k;
                if col >= wo {
                    break;
                }
                _mm512_mask_storeu_ps(drow.as_mut_ptr().add(col), lane_mask(wo - col), val);
            }
        }
    }
}
