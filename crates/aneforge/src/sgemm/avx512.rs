//! The AVX-512 register kernel: an MR×NR = 12×32 tile of C held in 24 zmm
//! accumulators; per k step two vector loads of B and twelve broadcasts of
//! A feed 24 FMAs, so the loop is bound by the FMA ports, not by loads.

use super::{ATile, BTile, TileEpi, MR, NR};

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

/// A B element the kernel loads 16 at a time: f32, or fp16 widened in the
/// load itself. The widening runs beside the FMAs (measured: fp16 and f32
/// panels give the same GFLOP/s), so fp16 weights need no widening pass
/// and keep half the memory traffic.
trait Lanes: Copy {
    /// Sixteen consecutive values at `p`, as f32.
    ///
    /// # Safety
    /// `p` addresses 16 values; AVX-512F is available.
    unsafe fn load16(p: *const Self) -> __m512;
}

impl Lanes for f32 {
    #[inline(always)]
    unsafe fn load16(p: *const f32) -> __m512 {
        _mm512_loadu_ps(p)
    }
}

impl Lanes for half::f16 {
    #[inline(always)]
    unsafe fn load16(p: *const half::f16) -> __m512 {
        _mm512_cvtph_ps(_mm256_loadu_si256(p.cast()))
    }
}

/// Where the kernel finds A's value for row `i` at the current k step.
trait Rows: Copy {
    /// # Safety
    /// `i` is below the tile's rows and the current k step is below kc.
    unsafe fn get(self, i: usize) -> f32;
    /// The next k step.
    ///
    /// # Safety
    /// The current k step is below kc.
    unsafe fn step(self) -> Self;
}

/// A packed micro-panel: [kc][MR].
#[derive(Clone, Copy)]
struct PanelA(*const f32);

impl Rows for PanelA {
    #[inline(always)]
    unsafe fn get(self, i: usize) -> f32 {
        *self.0.add(i)
    }
    #[inline(always)]
    unsafe fn step(self) -> Self {
        PanelA(self.0.add(MR))
    }
}

/// Rows of a row-major A read where they are (row stride `ld`), as
/// MLAS does: packing an activation A costs ~4 cycles a value (a strided
/// transpose), 14% of a 197×768×768 product, while twelve row streams
/// broadcast from L2 as fast as one packed panel.
#[derive(Clone, Copy)]
struct RowsA {
    ptr: *const f32,
    ld: isize,
}

impl Rows for RowsA {
    #[inline(always)]
    unsafe fn get(self, i: usize) -> f32 {
        *self.ptr.offset(i as isize * self.ld)
    }
    #[inline(always)]
    unsafe fn step(self) -> Self {
        RowsA { ptr: self.ptr.add(1), ..self }
    }
}

/// C tile (mr×nr valid of MR×NR, row stride ldc) = or += A's rows (a
/// packed micro-panel [kc][MR], or rows in place) · B's packed micro-panel
/// [kc][NR] (f32 or fp16).
///
/// Edge tiles run a kernel sized to them (rows, and one or two vectors of
/// columns): a 49-column GEMM's last panel of 17 columns, or a 4-row tail
/// of 256 rows, would otherwise cost a whole 12×32 tile each.
///
/// # Safety
/// `a` addresses mr rows of kc values, `b` kc·NR values, `c` an mr×nr
/// tile; the caller has checked AVX-512F is available.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) unsafe fn tile(kc: usize, a: ATile, b: BTile, c: *mut f32, ldc: usize, mr: usize, nr: usize, add: bool, epi: &TileEpi) {
    match (a, b) {
        (ATile::Panel(a), BTile::F32(b)) => sized_to(kc, PanelA(a), b, c, ldc, mr, nr, add, epi),
        (ATile::Panel(a), BTile::F16(b)) => sized_to(kc, PanelA(a), b, c, ldc, mr, nr, add, epi),
        (ATile::Rows { ptr, ld }, BTile::F32(b)) => sized_to(kc, RowsA { ptr, ld }, b, c, ldc, mr, nr, add, epi),
        (ATile::Rows { ptr, ld }, BTile::F16(b)) => sized_to(kc, RowsA { ptr, ld }, b, c, ldc, mr, nr, add, epi),
    }
}

/// [`tile`] for one kind of A and of B: picks the kernel sized to the tile.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn sized_to<A: Rows, B: Lanes>(kc: usize, a: A, b: *const B, c: *mut f32, ldc: usize, mr: usize, nr: usize, add: bool, epi: &TileEpi) {
    macro_rules! dispatch {
        ($($r:literal)*) => {
            match (mr, nr > 16) {
                $( ($r, true) => sized::<A, B, $r, 2>(kc, a, b, c, ldc, nr, add, epi), ($r, false) => sized::<A, B, $r, 1>(kc, a, b, c, ldc, nr, add, epi), )*
                _ => unreachable!("tile rows {mr} outside 1..={MR}"),
            }
        };
    }
    dispatch!(1 2 3 4 5 6 7 8 9 10 11 12)
}

/// [`tile`] for R rows and V vectors (16 columns each) of C.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
unsafe fn sized<A: Rows, B: Lanes, const R: usize, const V: usize>(kc: usize, a: A, b: *const B, c: *mut f32, ldc: usize, nr: usize, add: bool, epi: &TileEpi) {
    let mut acc = [[_mm512_setzero_ps(); V]; R];
    let mut ap = a;
    let mut bp = b;
    for _ in 0..kc {
        let mut bv = [_mm512_setzero_ps(); V];
        for (v, x) in bv.iter_mut().enumerate() {
            *x = B::load16(bp.add(16 * v));
        }
        for (i, row) in acc.iter_mut().enumerate() {
            let ai = _mm512_set1_ps(ap.get(i));
            for (r, &x) in row.iter_mut().zip(&bv) {
                *r = _mm512_fmadd_ps(ai, x, *r);
            }
        }
        ap = ap.step();
        bp = bp.add(NR);
    }
    let masks = row_masks(nr);
    let masks = [masks.0, masks.1];
    let mut cb = [_mm512_setzero_ps(); V];
    if !epi.col_bias.is_null() {
        for (v, x) in cb.iter_mut().enumerate() {
            *x = _mm512_maskz_loadu_ps(masks[v], epi.col_bias.wrapping_add(16 * v));
        }
    }
    let (lo, hi) = (_mm512_set1_ps(epi.lo), _mm512_set1_ps(epi.hi));
    let round = |x: __m512| _mm512_cvtph_ps(_mm512_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x));
    let store = |i: usize, row: [__m512; V]| {
        let cp = c.add(i * ldc);
        // In the order of the unfused ops: (acc + b), stored; plus the
        // residual, stored; then clamp, then fp16.
        let rb = if epi.row_bias.is_null() { _mm512_setzero_ps() } else { _mm512_set1_ps(*epi.row_bias.add(i)) };
        for (v, mut x) in row.into_iter().enumerate() {
            let p = cp.wrapping_add(16 * v);
            if add {
                x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(masks[v], p));
            }
            x = _mm512_add_ps(x, _mm512_add_ps(rb, cb[v]));
            if !epi.residual.is_null() {
                if epi.res_round {
                    x = round(x);
                }
                x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(masks[v], epi.residual.wrapping_add(i * ldc + 16 * v)));
                if epi.res_round {
                    x = round(x);
                }
            }
            if epi.clamp {
                x = _mm512_min_ps(_mm512_max_ps(x, lo), hi);
            }
            if epi.round {
                x = round(x);
            }
            _mm512_mask_storeu_ps(p, masks[v], x);
        }
    };
    // Constant row indices keep the accumulators in registers; a loop to a
    // runtime row count made the compiler keep them in (and clear) a stack
    // array on every call, which cost 10% on Winograd's short-K GEMMs.
    macro_rules! rows {
        ($($i:literal)*) => { $( if $i < R { store($i, acc[$i]); } )* };
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
