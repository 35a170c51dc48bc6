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
    /// Bytes from one k step's NR values to the next.
    const STEP: usize;
    /// `p` itself, when the values are f32.
    fn as_f32(p: *const Self) -> Option<*const f32>;
}

impl Lanes for f32 {
    #[inline(always)]
    unsafe fn load16(p: *const f32) -> __m512 {
        _mm512_loadu_ps(p)
    }
    const STEP: usize = 4 * NR;
    fn as_f32(p: *const f32) -> Option<*const f32> {
        Some(p)
    }
}

impl Lanes for half::f16 {
    #[inline(always)]
    unsafe fn load16(p: *const half::f16) -> __m512 {
        _mm512_cvtph_ps(_mm256_loadu_si256(p.cast()))
    }
    const STEP: usize = 2 * NR;
    fn as_f32(_: *const half::f16) -> Option<*const f32> {
        None
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
    /// A whole MR×NR tile's accumulators over `kc` steps.
    ///
    /// # Safety
    /// As [`tile`]'s, for MR rows and kc·NR values of B.
    unsafe fn full_tile<B: Lanes>(self, kc: usize, b: *const B) -> [[__m512; 2]; MR];
    /// The packed micro-panel, when A is one.
    fn panel(self) -> Option<*const f32> {
        None
    }
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
    #[inline(always)]
    unsafe fn full_tile<B: Lanes>(self, kc: usize, b: *const B) -> [[__m512; 2]; MR] {
        full_tile_panel(kc, self.0, b)
    }
    fn panel(self) -> Option<*const f32> {
        Some(self.0)
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
    #[inline(always)]
    unsafe fn full_tile<B: Lanes>(self, kc: usize, b: *const B) -> [[__m512; 2]; MR] {
        let (a, ld) = (self.ptr, self.ld);
        full_tile_rows(kc, a, a.offset(3 * ld), a.offset(6 * ld), a.offset(9 * ld), ld * 4, b)
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
    let narrow = match (a.panel(), B::as_f32(b)) {
        (Some(a), Some(b)) if V == 1 && nr <= NARROW => Some((a, b)),
        _ => None,
    };
    if let Some((a, b)) = narrow {
        let cols = narrow_tile(kc, a, b);
        for (row, f) in acc.iter_mut().zip(cols) {
            row[0] = f;
        }
    } else if R == MR && V == 2 {
        for (row, f) in acc.iter_mut().zip(a.full_tile(kc, b)) {
            row.copy_from_slice(&f[..V]);
        }
    } else {
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
    }
    // Most tiles store a partial sum of whole rows: no bias, residual,
    // clamp, rounding or mask. The general store below tests each of
    // those per row and masks every access, which cost 2-4% of a
    // 197×768×768 product.
    let plain = epi.row_bias.is_null() && epi.col_bias.is_null() && epi.residual.is_null() && !epi.clamp && !epi.round;
    if plain && nr == 16 * V {
        let store = |i: usize, row: [__m512; V]| {
            let cp = c.add(i * ldc);
            for (v, mut x) in row.into_iter().enumerate() {
                let p = cp.add(16 * v);
                if add {
                    x = _mm512_add_ps(x, _mm512_loadu_ps(p));
                }
                _mm512_storeu_ps(p, x);
            }
        };
        macro_rules! rows {
            ($($i:literal)*) => { $( if $i < R { store($i, acc[$i]); } )* };
        }
        rows!(0 1 2 3 4 5 6 7 8 9 10 11);
        return;
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

/// Widest tile [`narrow_tile`] takes.
const NARROW: usize = 4;

/// A tile at most [`NARROW`] columns wide, such as the last 4 of a 14×14
/// plane's 196, from a packed A panel and an f32 B panel. The row-vector
/// kernel would spend 12 FMAs a k step on 16 lanes of which 4 hold
/// columns; here the vectors run down A's 12 rows instead, one FMA per
/// column (two k steps in flight, for eight independent sums), and the
/// sums are transposed into C's rows at the end. In-process A/B: a 3x3
/// conv 256->256 and a 1x1 conv 256->256 on 14x14 3-4% faster, ResNet-18 1%.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn narrow_tile(kc: usize, a: *const f32, b: *const f32) -> [__m512; MR] {
    // 12 of 16 lanes: the masked load never reads past the panel.
    let rows = lane_mask(MR);
    let step = |k: usize, sum: &mut [__m512; NARROW]| {
        let col = _mm512_maskz_loadu_ps(rows, a.add(k * MR));
        for (j, s) in sum.iter_mut().enumerate() {
            // B's panel is NR wide, zero past its columns.
            *s = _mm512_fmadd_ps(col, _mm512_set1_ps(*b.add(k * NR + j)), *s);
        }
    };
    let (mut even, mut odd) = ([_mm512_setzero_ps(); NARROW], [_mm512_setzero_ps(); NARROW]);
    for k in (0..kc / 2).map(|k| 2 * k) {
        step(k, &mut even);
        step(k + 1, &mut odd);
    }
    if kc % 2 == 1 {
        step(kc - 1, &mut even);
    }
    let mut by_col = [[0.0f32; 16]; NARROW];
    for (j, dst) in by_col.iter_mut().enumerate() {
        _mm512_storeu_ps(dst.as_mut_ptr(), _mm512_add_ps(even[j], odd[j]));
    }
    std::array::from_fn(|i| {
        let mut row = [0.0f32; 16];
        for (j, v) in row[..NARROW].iter_mut().enumerate() {
            *v = by_col[j][i];
        }
        _mm512_loadu_ps(row.as_ptr())
    })
}

/// Defines a function that runs a whole MR×NR tile's k loop in assembly,
/// for one way of addressing A's twelve values per k step: `[bases]`
/// advance `step` bytes a step, `(args)` are fixed, and each row's address
/// comes with its two accumulators.
///
/// The compiler's own loop (the generic one in [`sized`]) recomputed the
/// row addresses through a chain of `lea`s every step and widened fp16 B
/// in a separate instruction. Measured on one core (peak 280 GFLOP/s),
/// a 197×768×768 product with a packed fp16 B: 260 GFLOP/s with that
/// loop, 265 with this one, 275 with the plain store in [`sized`] too;
/// MLAS's reaches 277. One widening load per B vector, one broadcast per
/// row, and one pointer bump per base of three rows.
macro_rules! full_tile_asm {
    ($name:ident, [$($base:ident)*] step $astep:literal, ($($arg:ident: $ty:ty),*), $($addr:literal $c0:literal $c1:literal)*) => {
        #[target_feature(enable = "avx512f")]
        #[inline]
        unsafe fn $name<B: Lanes>(kc: usize, $($base: *const f32,)* $($arg: $ty,)* b: *const B) -> [[__m512; 2]; MR] {
            macro_rules! run {
                ($load:literal, $bstep:literal) => {{
                    let (c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11): (__m512, __m512, __m512, __m512, __m512, __m512, __m512, __m512, __m512, __m512, __m512, __m512);
                    let (c12, c13, c14, c15, c16, c17, c18, c19, c20, c21, c22, c23): (__m512, __m512, __m512, __m512, __m512, __m512, __m512, __m512, __m512, __m512, __m512, __m512);
                    std::arch::asm!(
                        "vpxord zmm0, zmm0, zmm0", "vpxord zmm1, zmm1, zmm1", "vpxord zmm2, zmm2, zmm2", "vpxord zmm3, zmm3, zmm3",
                        "vpxord zmm4, zmm4, zmm4", "vpxord zmm5, zmm5, zmm5", "vpxord zmm6, zmm6, zmm6", "vpxord zmm7, zmm7, zmm7",
                        "vpxord zmm8, zmm8, zmm8", "vpxord zmm9, zmm9, zmm9", "vpxord zmm10, zmm10, zmm10", "vpxord zmm11, zmm11, zmm11",
                        "vpxord zmm12, zmm12, zmm12", "vpxord zmm13, zmm13, zmm13", "vpxord zmm14, zmm14, zmm14", "vpxord zmm15, zmm15, zmm15",
                        "vpxord zmm16, zmm16, zmm16", "vpxord zmm17, zmm17, zmm17", "vpxord zmm18, zmm18, zmm18", "vpxord zmm19, zmm19, zmm19",
                        "vpxord zmm20, zmm20, zmm20", "vpxord zmm21, zmm21, zmm21", "vpxord zmm22, zmm22, zmm22", "vpxord zmm23, zmm23, zmm23",
                        "test {k}, {k}",
                        "jz 3f",
                        "2:",
                        $load,
                        full_tile_asm!(@rows $($addr $c0 $c1)*),
                        concat!("add {b}, ", $bstep),
                        $(concat!("add {", stringify!($base), "}, ", $astep),)*
                        "dec {k}",
                        "jnz 2b",
                        "3:",
                        k = inout(reg) kc => _,
                        b = inout(reg) b => _,
                        $($base = inout(reg) $base => _,)*
                        $($arg = in(reg) $arg,)*
                        out("zmm0") c0, out("zmm1") c1, out("zmm2") c2, out("zmm3") c3, out("zmm4") c4, out("zmm5") c5,
                        out("zmm6") c6, out("zmm7") c7, out("zmm8") c8, out("zmm9") c9, out("zmm10") c10, out("zmm11") c11,
                        out("zmm12") c12, out("zmm13") c13, out("zmm14") c14, out("zmm15") c15, out("zmm16") c16, out("zmm17") c17,
                        out("zmm18") c18, out("zmm19") c19, out("zmm20") c20, out("zmm21") c21, out("zmm22") c22, out("zmm23") c23,
                        out("zmm24") _, out("zmm25") _, out("zmm26") _,
                        options(nostack, readonly),
                    );
                    [[c0, c1], [c2, c3], [c4, c5], [c6, c7], [c8, c9], [c10, c11], [c12, c13], [c14, c15], [c16, c17], [c18, c19], [c20, c21], [c22, c23]]
                }};
            }
            if B::STEP == 2 * NR {
                run!("vcvtph2ps zmm24, ymmword ptr [{b}]\nvcvtph2ps zmm25, ymmword ptr [{b}+32]", "64")
            } else {
                run!("vmovups zmm24, zmmword ptr [{b}]\nvmovups zmm25, zmmword ptr [{b}+64]", "128")
            }
        }
    };
    (@rows $($addr:literal $c0:literal $c1:literal)*) => {
        concat!($("vbroadcastss zmm26, dword ptr ", $addr, "\nvfmadd231ps ", $c0, ", zmm26, zmm24\nvfmadd231ps ", $c1, ", zmm26, zmm25\n",)*)
    };
}

full_tile_asm!(full_tile_panel, [a] step "48", (),
    "[{a}]" "zmm0" "zmm1" "[{a}+4]" "zmm2" "zmm3" "[{a}+8]" "zmm4" "zmm5" "[{a}+12]" "zmm6" "zmm7" "[{a}+16]" "zmm8" "zmm9" "[{a}+20]" "zmm10" "zmm11" "[{a}+24]" "zmm12" "zmm13" "[{a}+28]" "zmm14" "zmm15" "[{a}+32]" "zmm16" "zmm17" "[{a}+36]" "zmm18" "zmm19" "[{a}+40]" "zmm20" "zmm21" "[{a}+44]" "zmm22" "zmm23");
full_tile_asm!(full_tile_rows, [a a3 a6 a9] step "4", (ld: isize),
    "[{a}]" "zmm0" "zmm1" "[{a}+{ld}]" "zmm2" "zmm3" "[{a}+{ld}*2]" "zmm4" "zmm5" "[{a3}]" "zmm6" "zmm7" "[{a3}+{ld}]" "zmm8" "zmm9" "[{a3}+{ld}*2]" "zmm10" "zmm11" "[{a6}]" "zmm12" "zmm13" "[{a6}+{ld}]" "zmm14" "zmm15" "[{a6}+{ld}*2]" "zmm16" "zmm17" "[{a9}]" "zmm18" "zmm19" "[{a9}+{ld}]" "zmm20" "zmm21" "[{a9}+{ld}*2]" "zmm22" "zmm23");

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
