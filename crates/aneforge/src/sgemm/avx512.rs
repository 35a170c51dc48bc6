//! The AVX-512 register kernel: an MR×NR = 12×32 tile of C held in 24 zmm
//! accumulators; per k step two vector loads of B and twelve broadcasts of
//! A feed 24 FMAs, so the loop is bound by the FMA ports, not by loads.
//! The full tile's k loop is written in assembly (see `full_tile_fn`);
//! edge tiles run the same loop compiled from Rust.

use super::{ATile, BTile, TileEpi, MR, NR};

// `tile` stores its rows by literal index (see the end of it).
const _: () = assert!(MR == 12, "update the row list in `tile`");
use std::arch::x86_64::*;

/// One k step of the full tile, as assembly text: B's two vectors (`f32`,
/// or `f16` widened in the load) into zmm24/25, then per row a broadcast
/// and two FMAs into that row's accumulators (zmm 2i, 2i+1). Rows are
/// addressed from four bases three rows apart plus 0, 1 or 2 row strides,
/// and k steps by displacement, so the loop computes no addresses.
macro_rules! kstep {
    (f32 $u:literal) => { kstep!(@rows $u, "vmovups zmm24, zmmword ptr [{b} + ", $u, "*128]\n", "vmovups zmm25, zmmword ptr [{b} + ", $u, "*128 + 64]\n") };
    (f16 $u:literal) => { kstep!(@rows $u, "vcvtph2ps zmm24, ymmword ptr [{b} + ", $u, "*64]\n", "vcvtph2ps zmm25, ymmword ptr [{b} + ", $u, "*64 + 32]\n") };
    (@rows $u:literal, $($load:literal),*) => {
        concat!(
            $($load,)*
            kstep!(@row $u, "{p0}", "0", "1", "26"),
            kstep!(@row $u, "{p0} + {rs}", "2", "3", "27"),
            kstep!(@row $u, "{p0} + 2*{rs}", "4", "5", "26"),
            kstep!(@row $u, "{p3}", "6", "7", "27"),
            kstep!(@row $u, "{p3} + {rs}", "8", "9", "26"),
            kstep!(@row $u, "{p3} + 2*{rs}", "10", "11", "27"),
            kstep!(@row $u, "{p6}", "12", "13", "26"),
            kstep!(@row $u, "{p6} + {rs}", "14", "15", "27"),
            kstep!(@row $u, "{p6} + 2*{rs}", "16", "17", "26"),
            kstep!(@row $u, "{p9}", "18", "19", "27"),
            kstep!(@row $u, "{p9} + {rs}", "20", "21", "26"),
            kstep!(@row $u, "{p9} + 2*{rs}", "22", "23", "27"),
        )
    };
    (@row $u:literal, $addr:literal, $c0:literal, $c1:literal, $t:literal) => {
        concat!(
            "vbroadcastss zmm", $t, ", dword ptr [", $addr, " + ", $u, "*{ks}]\n",
            "vfmadd231ps zmm", $c0, ", zmm24, zmm", $t, "\n",
            "vfmadd231ps zmm", $c1, ", zmm25, zmm", $t, "\n",
        )
    };
}

/// The k loop around a step macro (`kstep` or `kstep_narrow`), as
/// assembly text: four steps a trip by displacement, then single ones;
/// the row bases and B advance once per trip.
macro_rules! k_loop {
    ($step:ident, $kind:tt, $bk:literal) => {
        concat!(
            "test {n4}, {n4}\n",
            "jz 3f\n",
            "2:\n",
            $step!($kind "0"),
            $step!($kind "1"),
            $step!($kind "2"),
            $step!($kind "3"),
            "add {p0}, 4*{ks}\n",
            "add {p3}, 4*{ks}\n",
            "add {p6}, 4*{ks}\n",
            "add {p9}, 4*{ks}\n",
            "add {b}, 4*", $bk, "\n",
            "dec {n4}\n",
            "jnz 2b\n",
            "3:\n",
            "test {n1}, {n1}\n",
            "jz 5f\n",
            "4:\n",
            $step!($kind "0"),
            "add {p0}, {ks}\n",
            "add {p3}, {ks}\n",
            "add {p6}, {ks}\n",
            "add {p9}, {ks}\n",
            "add {b}, ", $bk, "\n",
            "dec {n1}\n",
            "jnz 4b\n",
            "5:\n",
        )
    };
}

/// Defines `$name`, [`Lanes::full_tile`] in assembly for B of `$elem`
/// (`$kind`, `$bk` bytes a k step): four k steps a trip, then single
/// ones. The compiled loop spent a dozen integer adds per k step walking
/// twelve row pointers, which on Intel cores compete with the FMAs for
/// issue slots and ports: this loop ran 5-20% faster on an Ice Lake Xeon
/// (ViT-B/16 13% faster, in A/B). A function of its own because zmm
/// operands need the `avx512f` feature on the function that holds them
/// (a build for a baseline CPU has it nowhere else).
macro_rules! full_tile_fn {
    ($name:ident, $elem:ty, $kind:tt, $bk:literal) => {
        tile_fn!($name, $elem, $kind, $bk, kstep, [[__m512; 2]; MR],
            [[c0, c1], [c2, c3], [c4, c5], [c6, c7], [c8, c9], [c10, c11], [c12, c13], [c14, c15], [c16, c17], [c18, c19], [c20, c21], [c22, c23]],
            inout("zmm0") *c0, inout("zmm1") *c1, inout("zmm2") *c2, inout("zmm3") *c3,
            inout("zmm4") *c4, inout("zmm5") *c5, inout("zmm6") *c6, inout("zmm7") *c7,
            inout("zmm8") *c8, inout("zmm9") *c9, inout("zmm10") *c10, inout("zmm11") *c11,
            inout("zmm12") *c12, inout("zmm13") *c13, inout("zmm14") *c14, inout("zmm15") *c15,
            inout("zmm16") *c16, inout("zmm17") *c17, inout("zmm18") *c18, inout("zmm19") *c19,
            inout("zmm20") *c20, inout("zmm21") *c21, inout("zmm22") *c22, inout("zmm23") *c23,
            out("zmm24") _, out("zmm25") _, out("zmm26") _, out("zmm27") _,
        );
    };
}

/// A tile's k loop in assembly (see [`full_tile_fn`]): `$step` for B of
/// `$elem`, accumulators `$acc` bound by `$pat` to the zmm operands that
/// follow.
macro_rules! tile_fn {
    ($name:ident, $elem:ty, $kind:tt, $bk:literal, $step:ident, $acc:ty, $pat:pat, $($zmm:tt)*) => {
        #[target_feature(enable = "avx512f")]
        #[inline]
        unsafe fn $name<const KS: usize>(kc: usize, a: *const f32, rs: isize, b: *const $elem, acc: &mut $acc) {
            let $pat = acc;
            std::arch::asm!(
                k_loop!($step, $kind, $bk),
                p0 = inout(reg) a => _,
                p3 = inout(reg) a.byte_offset(3 * rs) => _,
                p6 = inout(reg) a.byte_offset(6 * rs) => _,
                p9 = inout(reg) a.byte_offset(9 * rs) => _,
                rs = in(reg) rs,
                b = inout(reg) b => _,
                n4 = inout(reg) kc / 4 => _,
                n1 = inout(reg) kc % 4 => _,
                ks = const KS,
                $($zmm)*
                options(nostack, readonly),
            );
        }
    };
}

full_tile_fn!(full_tile_f32, f32, f32, 128);
full_tile_fn!(full_tile_f16, half::f16, f16, 64);

/// One k step of the 12×16 tile (one vector of B), as [`kstep`]: B's
/// vector into zmm24, then per row one FMA that broadcasts A's value from
/// memory itself (`{1to16}`), so a step is 12 FMAs and one load.
macro_rules! kstep_narrow {
    (f32 $u:literal) => { kstep_narrow!(@rows $u, "vmovups zmm24, zmmword ptr [{b} + ", $u, "*128]\n") };
    (f16 $u:literal) => { kstep_narrow!(@rows $u, "vcvtph2ps zmm24, ymmword ptr [{b} + ", $u, "*64]\n") };
    (@rows $u:literal, $($load:literal),*) => {
        concat!(
            $($load,)*
            kstep_narrow!(@row $u, "{p0}", "0"),
            kstep_narrow!(@row $u, "{p0} + {rs}", "1"),
            kstep_narrow!(@row $u, "{p0} + 2*{rs}", "2"),
            kstep_narrow!(@row $u, "{p3}", "3"),
            kstep_narrow!(@row $u, "{p3} + {rs}", "4"),
            kstep_narrow!(@row $u, "{p3} + 2*{rs}", "5"),
            kstep_narrow!(@row $u, "{p6}", "6"),
            kstep_narrow!(@row $u, "{p6} + {rs}", "7"),
            kstep_narrow!(@row $u, "{p6} + 2*{rs}", "8"),
            kstep_narrow!(@row $u, "{p9}", "9"),
            kstep_narrow!(@row $u, "{p9} + {rs}", "10"),
            kstep_narrow!(@row $u, "{p9} + 2*{rs}", "11"),
        )
    };
    (@row $u:literal, $addr:literal, $c:literal) => {
        concat!("vfmadd231ps zmm", $c, ", zmm24, dword ptr [", $addr, " + ", $u, "*{ks}]{{1to16}}\n")
    };
}

/// As [`full_tile_fn`], for the 12×16 edge tile: a 196-wide product's last
/// 4 columns (a 14×14 conv) or a 784-wide one's last 16. The compiled
/// loop for it took 0.8 of a full tile's time for half its work.
macro_rules! narrow_tile_fn {
    ($name:ident, $elem:ty, $kind:tt, $bk:literal) => {
        tile_fn!($name, $elem, $kind, $bk, kstep_narrow, [__m512; MR],
            [c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11],
            inout("zmm0") *c0, inout("zmm1") *c1, inout("zmm2") *c2, inout("zmm3") *c3,
            inout("zmm4") *c4, inout("zmm5") *c5, inout("zmm6") *c6, inout("zmm7") *c7,
            inout("zmm8") *c8, inout("zmm9") *c9, inout("zmm10") *c10, inout("zmm11") *c11,
            out("zmm24") _,
        );
    };
}

narrow_tile_fn!(narrow_tile_f32, f32, f32, 128);
narrow_tile_fn!(narrow_tile_f16, half::f16, f16, 64);

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
/// load itself, so fp16 weights need no widening pass and keep half the
/// memory traffic. The widening is not free: a compute-bound tile ran
/// ~13% slower on fp16 B than on f32 (best of noisy single-thread runs;
/// see `F32_RHS_ROWS` for when B is packed as f32 instead).
trait Lanes: Copy {
    /// Sixteen consecutive values at `p`, as f32.
    ///
    /// # Safety
    /// `p` addresses 16 values; AVX-512F is available.
    unsafe fn load16(p: *const Self) -> __m512;
    /// The k loop of a full tile: `acc` += `kc` steps of rows (the first
    /// at `a`, `rs` bytes apart, `KS` bytes from one k step to the next)
    /// times B's micro-panel at `b`.
    ///
    /// # Safety
    /// As [`sized`]'s, for a full MR×NR tile.
    unsafe fn full_tile<const KS: usize>(kc: usize, a: *const f32, rs: isize, b: *const Self, acc: &mut [[__m512; 2]; MR]);
    /// The same for a 12×16 tile (B's first vector only).
    ///
    /// # Safety
    /// As [`sized`]'s, for an MR×16 tile.
    unsafe fn narrow_tile<const KS: usize>(kc: usize, a: *const f32, rs: isize, b: *const Self, acc: &mut [__m512; MR]);
}

impl Lanes for f32 {
    #[inline(always)]
    unsafe fn full_tile<const KS: usize>(kc: usize, a: *const f32, rs: isize, b: *const f32, acc: &mut [[__m512; 2]; MR]) {
        full_tile_f32::<KS>(kc, a, rs, b, acc)
    }
    #[inline(always)]
    unsafe fn narrow_tile<const KS: usize>(kc: usize, a: *const f32, rs: isize, b: *const f32, acc: &mut [__m512; MR]) {
        narrow_tile_f32::<KS>(kc, a, rs, b, acc)
    }
    #[inline(always)]
    unsafe fn load16(p: *const f32) -> __m512 {
        _mm512_loadu_ps(p)
    }
}

impl Lanes for half::f16 {
    #[inline(always)]
    unsafe fn full_tile<const KS: usize>(kc: usize, a: *const f32, rs: isize, b: *const half::f16, acc: &mut [[__m512; 2]; MR]) {
        full_tile_f16::<KS>(kc, a, rs, b, acc)
    }
    #[inline(always)]
    unsafe fn narrow_tile<const KS: usize>(kc: usize, a: *const f32, rs: isize, b: *const half::f16, acc: &mut [__m512; MR]) {
        narrow_tile_f16::<KS>(kc, a, rs, b, acc)
    }
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
    /// The first row's current value, and the byte distance from one row to the next.
    fn base(self) -> (*const f32, isize);
    /// Bytes from one k step to the next.
    const K_BYTES: usize;
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
    fn base(self) -> (*const f32, isize) {
        (self.0, 4)
    }
    const K_BYTES: usize = 4 * MR;
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
    fn base(self) -> (*const f32, isize) {
        (self.ptr, 4 * self.ld)
    }
    const K_BYTES: usize = 4;
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
    let mut steps = kc;
    if R == MR && V == 2 {
        // SAFETY: with these R and V `acc` is a [[__m512; 2]; MR].
        let full = &mut *(acc.as_mut_ptr() as *mut [[__m512; 2]; MR]);
        let (base, rs) = a.base();
        if A::K_BYTES == 4 {
            B::full_tile::<4>(kc, base, rs, b, full);
        } else {
            B::full_tile::<{ 4 * MR }>(kc, base, rs, b, full);
        }
        steps = 0;
    }
    if R == MR && V == 1 {
        // SAFETY: with these R and V `acc` is a [[__m512; 1]; MR], laid out as [__m512; MR].
        let narrow = &mut *(acc.as_mut_ptr() as *mut [__m512; MR]);
        let (base, rs) = a.base();
        if A::K_BYTES == 4 {
            B::narrow_tile::<4>(kc, base, rs, b, narrow);
        } else {
            B::narrow_tile::<{ 4 * MR }>(kc, base, rs, b, narrow);
        }
        steps = 0;
    }
    for _ in 0..steps {
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

