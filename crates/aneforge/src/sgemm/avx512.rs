//! The AVX-512 register kernel: an MR×NR = 12×32 tile of C held in 24 zmm
//! accumulators; per k step two vector loads of B and twelve broadcasts of
//! A feed 24 FMAs, so the loop is bound by the FMA ports, not by loads.

use super::{TileEpi, MR, NR};

// `tile` stores its rows by literal index (see the end of it).
const _: () = assert!(MR == 12, "update the row list in `tile`");
use std::arch::x86_64::*;

/// The first `n` (of 16) lanes of a vector.
#[inline(always)]
pub(crate) fn lane_mask(n: usize) -> __mmask16 {
    if n >= 16 {
        0xffff
    } else {
        ((1u32 << n) - 1) as u16
    }
}

/// Masks for the valid columns (the first `cols` of NR) of a row's two vectors.
#[inline(always)]
fn row_masks(cols: usize) -> (__mmask16, __mmask16) {
    (lane_mask(cols), lane_mask(cols.saturating_sub(16)))
}

/// C tile (mr×nr valid of MR×NR, row stride ldc) = or += packed A
/// micro-panel [kc][MR] · packed B micro-panel [kc][NR].
///
/// # Safety
/// `a` holds kc·MR floats, `b` kc·NR floats, `c` an mr×nr tile; the caller
/// has checked AVX-512F is available.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn tile(kc: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, mr: usize, nr: usize, add: bool, epi: &TileEpi) {
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    let mut ap = a;
    let mut bp = b;
    for _ in 0..kc {
        let b0 = _mm512_loadu_ps(bp);
        let b1 = _mm512_loadu_ps(bp.add(16));
        for (i, row) in acc.iter_mut().enumerate() {
            let ai = _mm512_set1_ps(*ap.add(i));
            row[0] = _mm512_fmadd_ps(ai, b0, row[0]);
            row[1] = _mm512_fmadd_ps(ai, b1, row[1]);
        }
        ap = ap.add(MR);
        bp = bp.add(NR);
    }
    let (m0, m1) = row_masks(nr);
    let (cb0, cb1) = if epi.col_bias.is_null() {
        (_mm512_setzero_ps(), _mm512_setzero_ps())
    } else {
        (_mm512_maskz_loadu_ps(m0, epi.col_bias), _mm512_maskz_loadu_ps(m1, epi.col_bias.wrapping_add(16)))
    };
    let (lo, hi) = (_mm512_set1_ps(epi.lo), _mm512_set1_ps(epi.hi));
    let store = |i: usize, row: [__m512; 2]| {
        let cp = c.add(i * ldc);
        let [mut v0, mut v1] = row;
        if add {
            v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, cp));
            v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, cp.wrapping_add(16)));
        }
        // Bias and clamp in the same order as the unfused ops: (acc + b), then clamp.
        let rb = if epi.row_bias.is_null() { _mm512_setzero_ps() } else { _mm512_set1_ps(*epi.row_bias.add(i)) };
        v0 = _mm512_add_ps(v0, _mm512_add_ps(rb, cb0));
        v1 = _mm512_add_ps(v1, _mm512_add_ps(rb, cb1));
        if epi.clamp {
            v0 = _mm512_min_ps(_mm512_max_ps(v0, lo), hi);
            v1 = _mm512_min_ps(_mm512_max_ps(v1, lo), hi);
        }
        _mm512_mask_storeu_ps(cp, m0, v0);
        _mm512_mask_storeu_ps(cp.wrapping_add(16), m1, v1);
    };
    // Constant row indices keep the accumulators in registers; a loop to a
    // runtime `mr` made the compiler keep them in (and clear) a stack array
    // on every call, which cost 10% on Winograd's short-K GEMMs.
    macro_rules! rows {
        ($($i:literal)*) => { $( if $i < mr { store($i, acc[$i]); } )* };
    }
    rows!(0 1 2 3 4 5 6 7 8 9 10 11);
}

/// One NR-column micro-panel of a row-major B: `kc` rows of `cols` (≤ NR)
/// floats at stride `rs`, zero-padded to NR. Two vector moves per row; a
/// `copy_from_slice` here costs a libc call per 128 bytes.
///
/// # Safety
/// AVX-512F is available; `src` addresses kc rows of `cols` floats at
/// stride `rs`; `dst` holds kc·NR floats.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn pack_b_panel(src: *const f32, rs: isize, kc: usize, cols: usize, dst: &mut [f32]) {
    debug_assert!(dst.len() >= kc * NR && cols <= NR);
    let (m0, m1) = row_masks(cols);
    let d = dst.as_mut_ptr();
    for kk in 0..kc {
        let s = src.offset(kk as isize * rs);
        _mm512_storeu_ps(d.add(kk * NR), _mm512_maskz_loadu_ps(m0, s));
        _mm512_storeu_ps(d.add(kk * NR + 16), _mm512_maskz_loadu_ps(m1, s.wrapping_add(16)));
    }
}
